//! HNAPI's legacy mode: one HL7Xfer transaction per TCP connection to an HNClient — an
//! old HNCLIENT.EXE or `hnsecure client` (DESIGN 3.3). This side is the originator.
#![forbid(unsafe_code)]

use std::fmt;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::xfer::hl7xfer::{Hl7XferError, Originator, StationId};

/// The HNClient requests go to.
pub(crate) struct Hnclient {
    address: String,
    connect_timeout: Duration,
    max_response: usize,
    /// This host's name, for the station id block.
    host: String,
}

/// Why an HNClient gave no answer.
#[derive(Debug)]
pub(crate) enum LegacyError {
    /// It could not be reached.
    Unreachable(std::io::Error),
    /// Connecting took longer than the connect timeout.
    ConnectTimedOut(Duration),
    /// No complete answer came before the transaction's deadline.
    TimedOut(Hl7XferError),
    /// It broke the protocol, or ended the connection early.
    Protocol(Hl7XferError),
    /// The connection failed.
    Io(std::io::Error),
}

impl fmt::Display for LegacyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "cannot connect: {e}"),
            Self::ConnectTimedOut(t) => write!(f, "no connection within {} ms", t.as_millis()),
            Self::TimedOut(e) => write!(f, "timed out: {e}"),
            Self::Protocol(e) => write!(f, "HL7Xfer exchange failed: {e}"),
            Self::Io(e) => write!(f, "connection error: {e}"),
        }
    }
}

impl Hnclient {
    /// An HNClient at `address` (`HOST:PORT`); connects per transaction.
    pub(crate) fn new(address: String, connect_timeout: Duration, max_response: usize) -> Self {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        Self {
            address,
            connect_timeout,
            max_response,
            host,
        }
    }

    /// Where the HNClient is.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Sends `message` and returns the HNClient's response, byte for byte, by `deadline`.
    pub(crate) async fn exchange(
        &self,
        message: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, LegacyError> {
        let connect_by = deadline.min(Instant::now() + self.connect_timeout);
        let stream = match tokio::time::timeout_at(
            connect_by.into(),
            TcpStream::connect(self.address.as_str()),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(LegacyError::Unreachable(e)),
            Err(_) => return Err(LegacyError::ConnectTimedOut(self.connect_timeout)),
        };
        let _ = stream.set_nodelay(true);
        let ip = stream
            .local_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let station = StationId::new(self.host.clone(), ip);
        let mut originator = Some(Originator::new(station, self.max_response));
        let talk = async {
            let mut stream = stream;
            let mut buf = vec![0u8; 16 * 1024];
            let mut out = Vec::new();
            loop {
                let n = stream.read(&mut buf).await.map_err(LegacyError::Io)?;
                let state = originator.take().expect("put back after every step");
                if n == 0 {
                    let ended = state.ended().unwrap_or(Hl7XferError::Ended {
                        stage: state.stage(),
                        received: 0,
                    });
                    return Err(LegacyError::Protocol(ended));
                }
                let state = state
                    .feed(&buf[..n], message, &mut out)
                    .map_err(LegacyError::Protocol)?;
                if !out.is_empty() {
                    stream.write_all(&out).await.map_err(LegacyError::Io)?;
                    out.clear();
                }
                match state {
                    // The listener closes after the response; no need to wait for it.
                    Originator::Responded(r) => return Ok(r.into_response()),
                    other => originator = Some(other),
                }
            }
        };
        let outcome = tokio::time::timeout_at(deadline.into(), talk).await;
        match outcome {
            Ok(result) => result,
            Err(_) => Err(LegacyError::TimedOut(
                originator.as_ref().and_then(Originator::stalled).unwrap_or(
                    Hl7XferError::Stalled {
                        stage: crate::xfer::hl7xfer::Stage::Handshake,
                        received: 0,
                    },
                ),
            )),
        }
    }
}
