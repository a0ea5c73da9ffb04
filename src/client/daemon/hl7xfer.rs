//! The HL7Xfer listener: one transaction per connection, for applications written for
//! HNCLIENT.EXE (DESIGN 3.3). The protocol's steps are the explicit states of
//! [`crate::xfer::hl7xfer::Listener`]; this file moves bytes between them and the socket.
//!
//! A connection carries one transaction, so it needs no idle timeout: the request must
//! arrive whole within the transaction's time, each read within the read timeout.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{State, log_transaction, revoked};
use crate::hl7::now_pacific;
use crate::xfer::hl7xfer::{CHALLENGE_LEN, Listener, Rejected, greeting};

/// Serves one HL7Xfer connection: greeting, handshake, station id, message; then the
/// answer, or an AR from `HNCLIENT` when the exchange fails; then close. A peer that a
/// reload of the allow-list removes while its request arrives is closed without one
/// (a transaction already under way is finished).
pub(super) async fn serve(
    state: &State,
    mut tcp: TcpStream,
    peer: SocketAddr,
    mut changes: watch::Receiver<u64>,
) {
    let started = Instant::now();
    let mut challenge = [0u8; CHALLENGE_LEN];
    if let Err(e) = getrandom::fill(&mut challenge) {
        log::error!("hl7xfer {peer}: no random challenge ({e}); connection closed");
        return;
    }
    let listen = &state.listen;
    if !write_all(&mut tcp, &greeting(&challenge), state).await {
        log::info!("hl7xfer {peer}: gone before the greeting was sent");
        return;
    }
    // The whole request must arrive within the transaction's time; each read within the
    // read timeout (a peer that dribbles a byte at a time cannot hold the connection).
    let whole_by = started + state.timeout;
    let mut listener = Listener::new(challenge, listen.max_message_bytes);
    let mut buf = vec![0u8; 16 * 1024];
    let received = loop {
        let by = whole_by.min(Instant::now() + listen.read_timeout);
        let read = tokio::select! {
            read = tokio::time::timeout_at(by.into(), tcp.read(&mut buf)) => read,
            () = revoked(state, "hl7xfer", peer, &mut changes) => return,
        };
        let n = match read {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                log::info!(
                    "hl7xfer {peer}: connection failed during {}: {e}",
                    listener.stage()
                );
                return;
            }
            Err(_) => {
                let rejected = listener.stalled().expect("not yet received");
                return reject(state, tcp, peer, rejected).await;
            }
        };
        if n == 0 {
            // The peer closed its side; answer in case it still reads.
            let rejected = listener.ended().expect("not yet received");
            return reject(state, tcp, peer, rejected).await;
        }
        match listener.feed(&buf[..n]) {
            Ok(Listener::Received(r)) => break r,
            Ok(next) => listener = next,
            Err(rejected) => return reject(state, tcp, peer, rejected).await,
        }
    };
    let (mut message, station, responder) = received.into_parts();
    // HNClient V2's listener dropped everything before the first `MSH`, and its
    // point-of-service sender relies on it (it writes a length first: `00000352MSH|…`).
    // Logged by count only: the bytes may be anything.
    if let Some(start) = memchr::memmem::find(&message, b"MSH").filter(|&at| at > 0) {
        log::warn!(
            "hl7xfer {peer}: {start} byte(s) before the first MSH dropped, as HNClient V2 did"
        );
        message.drain(..start);
    }
    log::debug!(
        "hl7xfer {peer}: station {:?} at {:?}, {} bytes",
        station.host,
        station.ip,
        message.len()
    );
    let answer = state.core.answer(&message, Some(state.timeout)).await;
    let mut out = Vec::with_capacity(answer.bytes.len() + 12);
    if let Err(e) = responder.respond(&answer.bytes, &mut out) {
        log::error!("hl7xfer {peer}: the answer cannot be framed: {e}");
        return;
    }
    log_transaction("hl7xfer", peer, &message, &answer, started);
    if write_all(&mut tcp, &out, state).await {
        super::close_gently(tcp).await;
    } else {
        log::info!("hl7xfer {peer}: gone before its answer was sent");
    }
}

/// Answers a failed exchange with an AR from `HNCLIENT`, then closes.
async fn reject(state: &State, mut tcp: TcpStream, peer: SocketAddr, rejected: Rejected) {
    let error = rejected.error;
    log::warn!(
        "hl7xfer {peer}: {error}; answered AR {} (HNCLIENT)",
        error.network_code().code()
    );
    let mut out = Vec::new();
    rejected.answer(state.facility(), &now_pacific(), &mut out);
    if write_all(&mut tcp, &out, state).await {
        super::close_gently(tcp).await;
    }
}

/// Writes `bytes` within the read timeout; false when the peer is gone or stuck.
async fn write_all(tcp: &mut TcpStream, bytes: &[u8], state: &State) -> bool {
    matches!(
        tokio::time::timeout(state.listen.read_timeout, tcp.write_all(bytes)).await,
        Ok(Ok(()))
    )
}
