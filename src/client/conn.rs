//! One multiplexed connection to a gateway. Each request writes its own frame (through
//! the shared [`FrameWriter`]); a reader task hands each answer to the request waiting
//! for its id; a keepalive task pings after a silence. Answers may come in any order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{oneshot, watch};

use crate::transport::{
    self, ClientStream, ConnectError, Frame, FrameReader, FrameWriter, Refusal, read_frame,
    until_true,
};

/// What became of one request on a connection.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The gateway's sealed answer.
    Response(Vec<u8>),
    /// The gateway refused the request (or the whole connection).
    Refused(Refusal),
    /// The connection was lost before an answer came.
    Lost,
    /// No answer within the time allowed.
    TimedOut,
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// No TCP connection, or it timed out: the gateway is unreachable.
    Unreachable(ConnectError),
    /// TLS or HNGard refused this facility: certificate, revocation, protocol.
    Refused(String),
}

pub(crate) struct Connection {
    gateway: String,
    writer: FrameWriter<WriteHalf<ClientStream>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_id: AtomicU64,
    alive: AtomicBool,
    /// Becomes true when the connection closes, so its tasks stop at once.
    closed: watch::Sender<bool>,
}

impl Connection {
    /// Connects, completes TLS, and waits for the gateway to accept the certificate.
    pub(crate) async fn open(
        gateway: &str,
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        keepalive: Duration,
        max_frame: usize,
    ) -> Result<Arc<Self>, OpenError> {
        let stream = match transport::connect(gateway, tls, connect_timeout).await {
            Ok(s) => s,
            Err(ConnectError::Handshake(e)) => {
                return Err(OpenError::Refused(format!("TLS handshake: {e}")));
            }
            Err(e) => return Err(OpenError::Unreachable(e)),
        };
        let (mut reader, writer) = tokio::io::split(stream);
        // In TLS 1.3 the gateway judges the client's certificate after the client has
        // finished its handshake; its verdict is the first frame (or an alert).
        match tokio::time::timeout(connect_timeout, read_frame(&mut reader, max_frame)).await {
            Ok(Ok(Some(Frame::Accepted))) => {}
            Ok(Ok(Some(Frame::Refused { reason, .. }))) => {
                return Err(OpenError::Refused(reason.to_string()));
            }
            Ok(Ok(Some(other))) => {
                return Err(OpenError::Refused(format!(
                    "unexpected first frame {other:?}"
                )));
            }
            Ok(Ok(None)) => {
                return Err(OpenError::Refused(
                    "the gateway closed the connection".into(),
                ));
            }
            Ok(Err(e)) => return Err(OpenError::Refused(e.to_string())),
            Err(_) => return Err(OpenError::Unreachable(ConnectError::Timeout)),
        }
        let connection = Arc::new(Self {
            gateway: gateway.to_owned(),
            writer: FrameWriter::new(writer),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            alive: AtomicBool::new(true),
            closed: watch::Sender::new(false),
        });
        tokio::spawn(read_loop(connection.clone(), reader, keepalive, max_frame));
        tokio::spawn(keepalive_loop(connection.clone(), keepalive));
        log::info!("connected to gateway {gateway}");
        Ok(connection)
    }

    pub(crate) fn gateway(&self) -> &str {
        &self.gateway
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Sends one sealed request and waits up to `timeout` for what becomes of it.
    pub(crate) async fn call(&self, envelope: Vec<u8>, timeout: Duration) -> Reply {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(id, tx);
        if !self.is_alive() {
            self.lock_pending().remove(&id);
            return Reply::Lost;
        }
        let frame = Frame::Request {
            id,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            envelope,
        };
        let exchange = async {
            if let Err(e) = self.writer.send(&frame).await {
                log::warn!("writing to gateway {} failed: {e}", self.gateway);
                self.close(|| Reply::Lost);
            }
            rx.await.unwrap_or(Reply::Lost)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(reply) => reply,
            Err(_) => {
                // A late answer finds no one waiting and is dropped.
                self.lock_pending().remove(&id);
                Reply::TimedOut
            }
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Reply>>> {
        // A panic while holding this lock cannot leave the map inconsistent: every
        // operation on it is a single insert or remove.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deliver(&self, id: u64, reply: Reply) {
        if let Some(waiting) = self.lock_pending().remove(&id) {
            let _ = waiting.send(reply);
        }
    }

    /// Marks the connection dead and tells every waiting request.
    fn close(&self, why: impl Fn() -> Reply) {
        if self.alive.swap(false, Ordering::AcqRel) {
            log::info!("connection to gateway {} closed", self.gateway);
        }
        self.closed.send_replace(true);
        let waiting: Vec<_> = self.lock_pending().drain().collect();
        for (_, tx) in waiting {
            let _ = tx.send(why());
        }
    }

    /// Closes the connection politely: waiting requests are told it is lost, and the TLS
    /// session is ended with a close_notify.
    pub(crate) async fn shutdown(&self) {
        self.close(|| Reply::Lost);
        self.writer.shutdown().await;
    }
}

/// Pings the gateway after `keepalive` without a frame sent, so that a dead peer or a
/// silently dropped connection is noticed (the reader closes after long silence).
async fn keepalive_loop(connection: Arc<Connection>, keepalive: Duration) {
    let mut closed = connection.closed.subscribe();
    let mut ping = 0u64;
    loop {
        let wait = keepalive
            .saturating_sub(connection.writer.idle())
            .max(Duration::from_millis(100));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = until_true(&mut closed) => break,
        }
        if connection.writer.idle() >= keepalive {
            ping += 1;
            if connection
                .writer
                .send(&Frame::Ping { id: ping })
                .await
                .is_err()
            {
                connection.close(|| Reply::Lost);
                break;
            }
        }
    }
    connection.writer.shutdown().await;
}

async fn read_loop(
    connection: Arc<Connection>,
    reader: ReadHalf<ClientStream>,
    keepalive: Duration,
    max_frame: usize,
) {
    let mut reader = FrameReader::new(reader, max_frame);
    // The keepalive task pings after `keepalive` of silence; a live gateway answers at once.
    let silence = keepalive * 2 + Duration::from_secs(10);
    let mut closed = connection.closed.subscribe();
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(silence, reader.next()) => next,
            () = until_true(&mut closed) => return,
        };
        let frame = match next {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                log::warn!("gateway {}: {e}", connection.gateway);
                break;
            }
            Err(_) => {
                log::warn!(
                    "gateway {} silent for {} s; closing",
                    connection.gateway,
                    silence.as_secs()
                );
                break;
            }
        };
        match frame {
            Frame::Response { id, envelope } => connection.deliver(id, Reply::Response(envelope)),
            Frame::Refused { id: 0, reason } => {
                log::warn!(
                    "gateway {} closed the connection: {reason}",
                    connection.gateway
                );
                connection.close(|| Reply::Refused(reason));
                return;
            }
            Frame::Refused { id, reason } => connection.deliver(id, Reply::Refused(reason)),
            Frame::Pong { .. } => {}
            other => {
                log::warn!(
                    "gateway {} sent an unexpected {other:?}; closing",
                    connection.gateway
                );
                break;
            }
        }
    }
    connection.close(|| Reply::Lost);
}
