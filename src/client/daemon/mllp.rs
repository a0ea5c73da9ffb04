//! The MLLP listener, for integration engines: many messages per connection, each
//! answered before the next is read (so answers come in order), optionally over TLS.
//!
//! The bytes of a message are never decoded: whatever MSH-18 names (UTF-8, ISO-8859-1,
//! …) reaches the receiver unchanged, and its answer comes back unchanged.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{State, log_transaction};
use crate::hl7::{self, NetworkCode, NetworkComponent};
use crate::xfer::mllp::{self, MllpError, MllpReadError, MllpReader};

/// Serves one MLLP connection (after TLS, when the listener has it) until the engine
/// closes it, a framing error, or shutdown.
pub(super) async fn serve(
    state: &State,
    tcp: TcpStream,
    peer: SocketAddr,
    stopping: watch::Receiver<bool>,
) {
    let Some(acceptor) = &state.tls else {
        return exchange(state, tcp, peer, stopping).await;
    };
    match tokio::time::timeout(state.listen.read_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            let who = tls
                .get_ref()
                .1
                .peer_certificates()
                .map_or("no client certificate", |_| "client certificate verified");
            log::info!("mllp {peer}: TLS established ({who})");
            exchange(state, tls, peer, stopping).await;
        }
        Ok(Err(e)) => log::warn!("mllp {peer}: TLS handshake failed: {e}"),
        Err(_) => log::warn!("mllp {peer}: TLS handshake timed out"),
    }
}

/// How a wait for the next message ended.
enum Next {
    Message(Vec<u8>),
    /// The engine closed the connection between messages.
    Closed,
    /// The daemon is shutting down and the engine is between messages.
    Stopping,
    /// The engine stopped sending in the middle of a message.
    Stalled,
    /// The engine sent a message so slowly that it did not arrive within the
    /// transaction's time (a peer dribbling a byte at a time).
    TooSlow,
    Failed(MllpReadError),
}

async fn next<R: AsyncRead + Unpin>(
    state: &State,
    reader: &mut MllpReader<R>,
    stopping: &mut watch::Receiver<bool>,
) -> Next {
    let mut seen = reader.bytes_read();
    // Shutdown closes an engine's connection between messages, not in the middle of one.
    let mut watch_stop = true;
    // A message, once begun, must arrive whole within the transaction's time, as an
    // HL7Xfer request must: each read within the read timeout is not enough, since a peer
    // that dribbles a byte at a time would hold the connection for ever. The begin is
    // known to within one read timeout: the start of the wait in which it was first seen.
    let mut began: Option<Instant> = None;
    loop {
        let waiting_since = Instant::now();
        let by = match began {
            Some(began) => (began + state.timeout).min(waiting_since + state.listen.read_timeout),
            None => waiting_since + state.listen.read_timeout,
        };
        tokio::select! {
            read = tokio::time::timeout_at(by.into(), reader.next()) => match read {
                Ok(Ok(Some(message))) => return Next::Message(message),
                Ok(Ok(None)) => return Next::Closed,
                Ok(Err(e)) => return Next::Failed(e),
                Err(_) => {
                    // Idle between messages is normal for an engine; silence in the
                    // middle of one is not.
                    let progress = reader.bytes_read();
                    if !reader.is_between_frames() {
                        if progress == seen {
                            return Next::Stalled;
                        }
                        if began.get_or_insert(waiting_since).elapsed() >= state.timeout {
                            return Next::TooSlow;
                        }
                    }
                    seen = progress;
                }
            },
            () = crate::transport::until_true(stopping), if watch_stop => {
                if reader.is_between_frames() {
                    return Next::Stopping;
                }
                watch_stop = false;
            }
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    state: &State,
    stream: S,
    peer: SocketAddr,
    mut stopping: watch::Receiver<bool>,
) {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = MllpReader::new(reader, state.listen.max_message_bytes);
    let mut out = Vec::new();
    loop {
        let message = match next(state, &mut reader, &mut stopping).await {
            Next::Message(m) => m,
            Next::Closed => return,
            Next::Stopping => {
                log::debug!("mllp {peer}: closed for shutdown");
                let _ = writer.shutdown().await;
                return;
            }
            Next::Stalled => {
                let error = format!(
                    "stopped sending in the middle of a message for {} s",
                    state.listen.read_timeout.as_secs()
                );
                return refuse(state, reader, writer, peer, NetworkCode::Txfr039E, &error).await;
            }
            Next::TooSlow => {
                let error = format!(
                    "took more than {} s to send one message",
                    state.timeout.as_secs()
                );
                return refuse(state, reader, writer, peer, NetworkCode::Txfr039E, &error).await;
            }
            Next::Failed(MllpReadError::Io(e)) => {
                log::info!("mllp {peer}: connection failed: {e}");
                return;
            }
            Next::Failed(MllpReadError::Mllp(e)) => {
                let code = match e {
                    MllpError::TooLarge { .. } => NetworkCode::Xfer003E,
                    MllpError::EndedInFrame { .. } => NetworkCode::Txfr039E,
                    _ => NetworkCode::Xfer004E,
                };
                return refuse(state, reader, writer, peer, code, &e.to_string()).await;
            }
        };
        let started = Instant::now();
        let answer = state.core.answer(&message, Some(state.timeout)).await;
        log_transaction("mllp", peer, &message, &answer, started);
        out.clear();
        if let Err(e) = mllp::encode(&answer.bytes, &mut out) {
            // The receiver's answer holds a framing byte: framed as it is, the engine
            // would read something else. It hears an AR from HNCLIENT instead.
            log::warn!(
                "mllp {peer}: the answer cannot be framed ({e}); answered AR VLDT014E (HNCLIENT)"
            );
            let request = hl7::Message::parse(&message).ok();
            let ack = |request: Option<&hl7::Message<'_>>| {
                hl7::network_ack(
                    request,
                    NetworkComponent::Hnclient,
                    state.facility(),
                    NetworkCode::Vldt014E,
                    Some("the answer holds MLLP framing bytes"),
                    &hl7::now_pacific(),
                )
            };
            out.clear();
            if mllp::encode(&ack(request.as_ref()), &mut out).is_err() {
                // Fields copied from the request held one too: an ACK that names none.
                out.clear();
                if mllp::encode(&ack(None), &mut out).is_err() {
                    return;
                }
            }
        }
        let written = tokio::time::timeout(state.listen.read_timeout, writer.write_all(&out)).await;
        if !matches!(written, Ok(Ok(()))) {
            log::info!("mllp {peer}: gone before its answer was sent");
            return;
        }
    }
}

/// Answers broken framing with an AR from `HNCLIENT` (no message could be read, so
/// none is named), then closes: after a framing error the stream cannot be trusted.
async fn refuse<R, W>(
    state: &State,
    mut reader: MllpReader<R>,
    mut writer: W,
    peer: SocketAddr,
    code: NetworkCode,
    error: &str,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    log::warn!(
        "mllp {peer}: {error}; answered AR {} (HNCLIENT)",
        code.code()
    );
    let ack = hl7::network_ack(
        None,
        NetworkComponent::Hnclient,
        state.facility(),
        code,
        None,
        &hl7::now_pacific(),
    );
    let mut out = Vec::new();
    // Built from nothing the engine sent, the ACK holds no framing byte.
    if mllp::encode(&ack, &mut out).is_err() {
        return;
    }
    let written = tokio::time::timeout(state.listen.read_timeout, writer.write_all(&out)).await;
    if matches!(written, Ok(Ok(()))) {
        // As `close_gently`: unread bytes at close would reset the connection and could
        // destroy the answer before the engine reads it.
        let _ = writer.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            while matches!(reader.get_mut().read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}
