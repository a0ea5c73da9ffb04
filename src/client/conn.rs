//! One multiplexed connection to a gateway. Each request writes its own frame (through
//! the shared [`FrameWriter`]); a reader task hands each answer to the request waiting
//! for its id; a keepalive task pings after a silence. Answers may come in any order.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

use crate::transport::{
    self, ClientStream, ConnectError, Frame, FrameError, FrameReader, FrameWriter, Refusal,
    read_frame, until_true,
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

/// A request the gateway sent to this connection (a server application's connection).
pub(crate) struct Inbound {
    pub(crate) id: u64,
    pub(crate) timeout_ms: u32,
    pub(crate) envelope: Vec<u8>,
}

/// What a server application's connection serves, and where its requests go.
pub(crate) struct Serving<'a> {
    pub(crate) applications: &'a [String],
    pub(crate) inbound: mpsc::UnboundedSender<Inbound>,
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
    /// Where requests from the gateway go, on a server application's connection.
    inbound: Option<mpsc::UnboundedSender<Inbound>>,
}

impl Connection {
    /// Connects, completes TLS, and waits for the gateway to accept the certificate;
    /// with `serving`, also asks for the requests to its applications. All of it within
    /// `budget`: one deadline for every phase, so a gateway slow at each of them cannot
    /// stretch a transaction past its timeout.
    pub(crate) async fn open(
        gateway: &str,
        tls: Arc<rustls::ClientConfig>,
        budget: Duration,
        keepalive: Duration,
        max_frame: usize,
        serving: Option<Serving<'_>>,
    ) -> Result<Arc<Self>, OpenError> {
        let deadline = Instant::now() + budget;
        let stream = match transport::connect(gateway, tls, budget).await {
            Ok(s) => s,
            Err(ConnectError::Handshake(e)) => {
                return Err(OpenError::Refused(format!("TLS handshake: {e}")));
            }
            Err(e) => return Err(OpenError::Unreachable(e)),
        };
        let (mut reader, writer) = tokio::io::split(stream);
        let writer = FrameWriter::new(writer);
        // In TLS 1.3 the gateway judges the client's certificate after the client has
        // finished its handshake; its verdict is the first frame (or an alert). A server
        // application then asks for its applications and waits for the second verdict.
        verdict(&mut reader, deadline, max_frame).await?;
        let inbound = match serving {
            Some(serving) => {
                let serve = Frame::Serve {
                    applications: serving.applications.to_vec(),
                };
                writer
                    .send(&serve)
                    .await
                    .map_err(|e| OpenError::Refused(format!("sending Serve: {e}")))?;
                verdict(&mut reader, deadline, max_frame).await?;
                Some(serving.inbound)
            }
            None => None,
        };
        let connection = Arc::new(Self {
            gateway: gateway.to_owned(),
            writer,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            alive: AtomicBool::new(true),
            closed: watch::Sender::new(false),
            inbound,
        });
        tokio::spawn(read_loop(connection.clone(), reader, keepalive, max_frame));
        tokio::spawn(keepalive_loop(connection.clone(), keepalive));
        log::info!("connected to gateway {gateway}");
        Ok(connection)
    }

    /// Sends a frame of this side's own (a server application's answers).
    pub(crate) async fn send(&self, frame: &Frame) -> std::io::Result<()> {
        let sent = self.writer.send(frame).await;
        if sent.is_err() {
            self.close(|| Reply::Lost);
        }
        sent
    }

    /// Completes when the connection has closed.
    pub(crate) async fn wait_closed(&self) {
        let mut closed = self.closed.subscribe();
        until_true(&mut closed).await;
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
            Frame::Request {
                id,
                timeout_ms,
                envelope,
            } if connection.inbound.is_some() => {
                if let Some(inbound) = &connection.inbound {
                    let _ = inbound.send(Inbound {
                        id,
                        timeout_ms,
                        envelope,
                    });
                }
            }
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

/// Reads the gateway's verdict on what was just sent: `Accepted`, or why not.
async fn verdict(
    reader: &mut ReadHalf<ClientStream>,
    deadline: Instant,
    max_frame: usize,
) -> Result<(), OpenError> {
    match tokio::time::timeout_at(deadline.into(), read_frame(reader, max_frame)).await {
        Ok(Ok(Some(Frame::Accepted))) => Ok(()),
        Ok(Ok(Some(Frame::Refused { reason, .. }))) => Err(OpenError::Refused(reason.to_string())),
        Ok(Ok(Some(other))) => Err(OpenError::Refused(format!("unexpected frame {other:?}"))),
        // The connection ended before a verdict: lost, not refused (a refusal is a frame,
        // or a TLS alert, which reads as `InvalidData`).
        Ok(Ok(None) | Err(FrameError::TruncatedLength | FrameError::TruncatedBody)) => Err(
            OpenError::Unreachable(ConnectError::Lost(std::io::ErrorKind::UnexpectedEof.into())),
        ),
        Ok(Err(FrameError::Io(e))) if e.kind() != std::io::ErrorKind::InvalidData => {
            Err(OpenError::Unreachable(ConnectError::Lost(e)))
        }
        Ok(Err(e)) => Err(OpenError::Refused(e.to_string())),
        Err(_) => Err(OpenError::Unreachable(ConnectError::Timeout)),
    }
}

/// What dialling found.
pub(crate) enum DialError {
    /// No gateway answered in time.
    Unreachable,
    /// A gateway was reached but refused this facility (TLS, certificate, revocation).
    Refused,
}

/// The gateways to try, in order from the last that worked, each skipped for a while
/// after it failed (backing off from 250 ms to 5 s) — Volume 5, 2.6: "make use of
/// alternate connections".
pub(crate) struct Dialer {
    gateways: Vec<GatewayState>,
    preferred: usize,
}

struct GatewayState {
    addr: String,
    next_attempt: Instant,
    backoff: Duration,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Dialer {
    pub(crate) fn new(gateways: &[String]) -> Self {
        let now = Instant::now();
        Self {
            gateways: gateways
                .iter()
                .map(|addr| GatewayState {
                    addr: addr.clone(),
                    next_attempt: now,
                    backoff: FIRST_BACKOFF,
                })
                .collect(),
            preferred: 0,
        }
    }

    /// Opens a connection with `open(gateway, time allowed)`, trying the gateways in turn
    /// until one works or `deadline` passes.
    pub(crate) async fn dial<F, Fut>(
        &mut self,
        deadline: Instant,
        connect_timeout: Duration,
        mut open: F,
    ) -> Result<Arc<Connection>, DialError>
    where
        F: FnMut(String, Duration) -> Fut,
        Fut: Future<Output = Result<Arc<Connection>, OpenError>>,
    {
        let count = self.gateways.len();
        let mut refused = false;
        for step in 0..count {
            let index = (self.preferred + step) % count;
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if self.gateways[index].next_attempt > now {
                continue;
            }
            let addr = self.gateways[index].addr.clone();
            let opened = open(addr.clone(), connect_timeout.min(deadline - now)).await;
            let gateway = &mut self.gateways[index];
            match opened {
                Ok(connection) => {
                    gateway.backoff = FIRST_BACKOFF;
                    self.preferred = index;
                    return Ok(connection);
                }
                Err(e) => {
                    match &e {
                        OpenError::Unreachable(why) => log::warn!("gateway {addr}: {why}"),
                        OpenError::Refused(why) => {
                            log::warn!("gateway {addr} refused this facility: {why}");
                            refused = true;
                        }
                    }
                    gateway.next_attempt = Instant::now() + gateway.backoff;
                    gateway.backoff = (gateway.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        Err(if refused {
            DialError::Refused
        } else {
            DialError::Unreachable
        })
    }

    /// How long until some gateway may be tried again.
    pub(crate) fn wait(&self) -> Duration {
        let now = Instant::now();
        self.gateways
            .iter()
            .map(|g| g.next_attempt.saturating_duration_since(now))
            .min()
            .unwrap_or(FIRST_BACKOFF)
    }
}
