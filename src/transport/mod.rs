//! The secure transport between the client core and the gateway (DESIGN 3.4): TLS 1.3
//! with mutual authentication ([`tls`]), carrying length-prefixed [`frame`]s with request
//! ids so that many transactions share one connection and answers may come back out of
//! order. Timeouts are applied here: connect, handshake, and (by the callers) idle.
#![forbid(unsafe_code)]

pub mod frame;
pub mod tls;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, watch};
use tokio_rustls::TlsConnector;

pub use frame::{
    DEFAULT_MAX_FRAME, Frame, FrameError, FrameReader, Refusal, read_frame, write_frame,
};

/// A client's TLS connection to a gateway.
pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;
/// A gateway's TLS connection from a client.
pub type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The source a limit counts against: an IPv4 address, or an IPv6 /64 (the block one
/// host usually controls); an IPv4-mapped IPv6 address counts as its IPv4 address.
pub(crate) fn peer_block(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
    }
}

/// Why a connection to a gateway could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// The address is malformed or its name does not resolve.
    Address(String),
    /// No TCP connection: refused, unreachable.
    Unreachable(std::io::Error),
    /// The connection or handshake took longer than allowed.
    Timeout,
    /// The TLS handshake failed: the gateway's certificate is not trusted, or the gateway
    /// refused ours, or it does not speak TLS 1.3.
    Handshake(std::io::Error),
    /// The connection was closed or reset in the middle of the TLS handshake: the network
    /// (or a gateway at its connection limit) failed, not TLS.
    Lost(std::io::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Address(why) => write!(f, "bad gateway address: {why}"),
            Self::Unreachable(e) => write!(f, "gateway unreachable: {e}"),
            Self::Timeout => f.write_str("connecting to the gateway timed out"),
            Self::Handshake(e) => write!(f, "TLS handshake with the gateway failed: {e}"),
            Self::Lost(e) => write!(f, "connection lost during the TLS handshake: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Connects to the gateway at `addr` (`HOST:PORT`) and completes the TLS handshake,
/// all within `timeout`. Every address the name resolves to is tried in turn.
pub async fn connect(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<ClientStream, ConnectError> {
    let name = tls::server_name(addr).map_err(|e| ConnectError::Address(e.to_string()))?;
    let attempt = async {
        let targets = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| ConnectError::Address(format!("{addr}: {e}")))?;
        let mut last = None;
        for target in targets {
            match TcpStream::connect(target).await {
                Ok(tcp) => {
                    // Frames are written whole; waiting to coalesce only adds latency.
                    let _ = tcp.set_nodelay(true);
                    return TlsConnector::from(config.clone())
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(handshake_error);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => ConnectError::Unreachable(e),
            None => ConnectError::Address(format!("{addr} resolves to no address")),
        })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(ConnectError::Timeout))
}

/// What a failed TLS handshake means: tokio-rustls reports what TLS itself refused
/// (a certificate, an alert, a malformed or altered record) as `InvalidData`; any other
/// kind is the connection ending under it (EOF, reset), which says nothing about TLS.
fn handshake_error(e: std::io::Error) -> ConnectError {
    if e.kind() == std::io::ErrorKind::InvalidData {
        ConnectError::Handshake(e)
    } else {
        ConnectError::Lost(e)
    }
}

/// The sending side of a connection, shared by every task that answers or asks on it.
///
/// The task that has a frame writes it itself, under an async lock, rather than handing
/// it to a writer task: one thread wake-up less per frame, which is most of what a
/// transaction costs besides its cryptography.
pub struct FrameWriter<W> {
    inner: Mutex<Writing<W>>,
    started: Instant,
    /// Milliseconds since `started` of the last write, for keepalive.
    last_write_ms: AtomicU64,
}

struct Writing<W> {
    writer: W,
    failed: bool,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer over `writer`.
    pub fn new(writer: W) -> Self {
        Self {
            inner: Mutex::new(Writing {
                writer,
                failed: false,
            }),
            started: Instant::now(),
            last_write_ms: AtomicU64::new(0),
        }
    }

    /// Writes `frame` and flushes. After one failure every later call fails too.
    pub async fn send(&self, frame: &Frame) -> std::io::Result<()> {
        let mut w = self.inner.lock().await;
        if w.failed {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let Writing { writer, failed } = &mut *w;
        // A buffer for this frame only: one kept between frames would be 4 KiB more on
        // every idle connection (thousands of them on a gateway), for a saving of one
        // allocation per frame.
        let mut buffer = Vec::with_capacity(4096);
        frame.encode(&mut buffer);
        let result = async {
            writer.write_all(&buffer).await?;
            writer.flush().await
        }
        .await;
        drop(buffer);
        if result.is_err() {
            *failed = true;
        }
        self.last_write_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        result
    }

    /// How long since the last frame was written.
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_write_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Ends the TLS session (close_notify) and the connection's sending side.
    pub async fn shutdown(&self) {
        let mut w = self.inner.lock().await;
        w.failed = true;
        let _ = w.writer.shutdown().await;
    }
}

/// Completes when the watched flag becomes true (or its sender is gone). Returns nothing,
/// so no borrow of the flag outlives it.
pub async fn until_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}
