//! The client daemon (`hnsecure client --config client.toml`): a local HNCLIENT for
//! software that cannot link HNAPI (DESIGN 3.3).
//!
//! Two listeners carry requests into the client core, which takes them through the
//! secure transport to a gateway (or, in legacy mode, to another HNClient):
//!
//! - **HL7Xfer** ([`hl7xfer`](self::hl7xfer)), for applications written for HNCLIENT.EXE:
//!   one transaction per connection, the daemon speaks first.
//! - **MLLP** ([`mllp`](self::mllp)), for integration engines: many messages per
//!   connection, answered in order, optionally over TLS.
//!
//! Every request gets one answer: the receiver's bytes unchanged, or an AR from
//! `HNCLIENT` that says what went wrong (`TXFR024E` for a timeout or an unreachable
//! gateway, the `VLDT`/`HNPS` codes for input that is not HL7, `XFER…` for broken
//! framing). Only a peer that vanished goes unanswered. Hosts other than 127.0.0.1 and
//! ::1 (and those too with `allow_loopback = false`) connect only when the allow-list
//! names them ([`allow`]); a connection whose peer a reload of the list removes is
//! closed within about a second.
//!
//! Connections are bounded: `max_connections` in all, `max_connections_per_address`
//! from one address (IPv6: one /64), an MLLP connection with no message for
//! `idle_timeout_secs` is closed, and with `[listen.mllp_tls] allowed_subjects` an
//! engine's client certificate must name a listed subject.
//!
//! One log line per transaction: peer, control id, message type, outcome, latency.
//! Never a message body.
#![forbid(unsafe_code)]

pub mod allow;
mod hl7xfer;
mod mllp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::{Answer, AsyncClient, ClientConfig, ClientError, ListenConfig};
use crate::hl7::{Message, NetworkComponent, Path};
use crate::transport::tls;
use allow::AllowList;

/// Why the daemon could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum RelayError {
    /// The client core could not be made (credential, configuration).
    Client(ClientError),
    // `AllowList(String)` is retired: a missing or bad allow-list no longer stops the
    // daemon; it is logged and means loopback only (see `allow`).
    /// The MLLP listener's TLS material cannot be used.
    Tls(String),
    /// A listener could not bind its address.
    Bind {
        /// `hl7xfer` or `mllp`.
        listener: &'static str,
        /// The address.
        address: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client(e) => write!(f, "{e}"),
            Self::Tls(e) => write!(f, "listen.mllp_tls: {e}"),
            Self::Bind {
                listener,
                address,
                error,
            } => write!(f, "cannot listen for {listener} on {address}: {error}"),
        }
    }
}

impl std::error::Error for RelayError {}

/// The client daemon with its listeners bound, ready to [`run`](Relay::run).
pub struct Relay {
    hl7xfer: Option<TcpListener>,
    mllp: Option<TcpListener>,
    state: Arc<State>,
}

/// What every connection shares.
struct State {
    core: AsyncClient,
    listen: ListenConfig,
    allow: AllowList,
    /// TLS on the MLLP listener.
    tls: Option<TlsAcceptor>,
    /// The daemon's own transaction timeout: one second inside the configured one, so
    /// that an application waiting the configured time hears the daemon's `TXFR024E`
    /// rather than timing out itself.
    timeout: Duration,
    connections: AtomicUsize,
    /// Open connections by source (IPv4 address, IPv6 /64), for
    /// `max_connections_per_address`.
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

/// How often the allow-list file is read again without a new connection: the bound on
/// how long a removed host's open connection lasts.
const ALLOW_LIST_RECHECK: Duration = Duration::from_secs(1);

/// One open connection's place in the counts; given back when dropped, however the
/// connection's task ends.
struct Slot {
    state: Arc<State>,
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.connections.fetch_sub(1, Ordering::Relaxed);
        let mut per_source = self
            .state
            .per_source
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                per_source.remove(&self.source);
            }
        }
    }
}

impl State {
    /// Takes a place for a connection from `peer`, or says which limit is reached.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, String> {
        let source = crate::transport::peer_block(peer);
        let mut per_source = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
        let count = self.connections.load(Ordering::Relaxed);
        if count >= self.listen.max_connections {
            return Err(format!(
                "{count} connections already open (max_connections)"
            ));
        }
        let from_source = per_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.listen.max_connections_per_address {
            return Err(format!(
                "{from_source} connections already open from {source} (max_connections_per_address)"
            ));
        }
        *per_source.entry(source).or_insert(0) += 1;
        self.connections.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            state: self.clone(),
            source,
        })
    }

    /// False, with the closing logged, when a reload of the allow-list no longer
    /// allows `peer` of a `kind` connection.
    fn still_allowed(&self, kind: &str, peer: SocketAddr) -> bool {
        if self.allow.allows(peer.ip()) {
            return true;
        }
        log::warn!(
            "{kind} {peer}: closed: no longer allowed by the allow-list{}",
            self.allow
                .path()
                .map(|p| format!(" ({})", p.display()))
                .unwrap_or_default()
        );
        false
    }
}

/// Completes when the allow-list in force has changed and no longer allows `peer`
/// (logged); never when there is no list to change.
async fn revoked(state: &State, kind: &str, peer: SocketAddr, changes: &mut watch::Receiver<u64>) {
    loop {
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !state.still_allowed(kind, peer) {
            return;
        }
    }
}

impl State {
    /// MSH-4 of the daemon's own ACKs.
    fn facility(&self) -> &str {
        &self.core.config().facility
    }
}

async fn bind(
    listener: &'static str,
    address: Option<SocketAddr>,
) -> Result<Option<TcpListener>, RelayError> {
    let Some(address) = address else {
        return Ok(None);
    };
    TcpListener::bind(address)
        .await
        .map(Some)
        .map_err(|error| RelayError::Bind {
            listener,
            address,
            error,
        })
}

fn mllp_tls(listen: &ListenConfig) -> Result<Option<TlsAcceptor>, RelayError> {
    let Some(t) = &listen.mllp_tls else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| RelayError::Tls(format!("{}: {e}", path.display())))
    };
    let named = |path: &std::path::Path, e: tls::TlsError| {
        RelayError::Tls(format!("{}: {e}", path.display()))
    };
    let chain =
        tls::certificates_from_pem(&read(&t.certificate)?).map_err(|e| named(&t.certificate, e))?;
    let key =
        tls::private_key_from_pem(&read(&t.private_key)?).map_err(|e| named(&t.private_key, e))?;
    let ca = match &t.client_ca {
        Some(path) => Some(tls::certificates_from_pem(&read(path)?).map_err(|e| named(path, e))?),
        None => None,
    };
    let config = tls::mllp_server_config(
        chain,
        key,
        ca.as_deref(),
        t.require_client_cert,
        t.tls13_only,
    )
    .map_err(|e| RelayError::Tls(e.to_string()))?;
    Ok(Some(TlsAcceptor::from(config)))
}

impl Relay {
    /// Makes the client core (its network ACKs from `HNCLIENT`), reads the allow-list and
    /// the MLLP listener's TLS material, and binds the listeners of `config.listen` (both,
    /// on loopback at 19430 and 2575, when there is no `[listen]`).
    pub async fn bind(config: ClientConfig) -> Result<Self, RelayError> {
        let listen = config.listen.clone().unwrap_or_default();
        let allow = AllowList::open(listen.allow_list.as_deref(), listen.allow_loopback);
        let tls = mllp_tls(&listen)?;
        let timeout = config
            .timeout
            .saturating_sub(Duration::from_secs(1))
            .max(Duration::from_secs(1));
        let core = AsyncClient::answering_as(config, NetworkComponent::Hnclient)
            .map_err(RelayError::Client)?;
        let hl7xfer = bind("hl7xfer", listen.hl7xfer).await?;
        let mllp = bind("mllp", listen.mllp).await?;
        Ok(Self {
            hl7xfer,
            mllp,
            state: Arc::new(State {
                core,
                listen,
                allow,
                tls,
                timeout,
                connections: AtomicUsize::new(0),
                per_source: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The HL7Xfer listener's address (the real port when the configuration said 0).
    pub fn hl7xfer_addr(&self) -> Option<SocketAddr> {
        self.hl7xfer.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The MLLP listener's address.
    pub fn mllp_addr(&self) -> Option<SocketAddr> {
        self.mllp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The line the daemon prints when it listens:
    /// `ready hl7xfer=ADDR mllp=ADDR` (`off` for a listener left out).
    pub fn ready_line(&self) -> String {
        let show = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
        format!(
            "ready hl7xfer={} mllp={}",
            show(self.hl7xfer_addr()),
            show(self.mllp_addr())
        )
    }

    /// Serves until `shutdown` completes; then stops accepting, lets running
    /// transactions finish for up to the configured grace, closes idle MLLP
    /// connections, and returns.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let Self {
            hl7xfer,
            mllp,
            state,
        } = self;
        let (stop, stopping) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        let mut accept_errors = 0u32;
        let mut recheck = tokio::time::interval(ALLOW_LIST_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (accepted, kind) = tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                _ = recheck.tick(), if state.allow.path().is_some() => {
                    // Open connections see the change and recheck their peers.
                    state.allow.refresh();
                    continue;
                }
                a = accept(hl7xfer.as_ref()) => (a, Kind::Hl7Xfer),
                a = accept(mllp.as_ref()) => (a, Kind::Mllp),
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => {
                    accept_errors = 0;
                    accepted
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait, never give up.
                    accept_errors = (accept_errors + 1).min(10);
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10 << accept_errors)).await;
                    continue;
                }
            };
            // Subscribed before the check, so that no change between the two is missed.
            let changes = state.allow.subscribe();
            state.allow.refresh();
            if !state.allow.allows(peer.ip()) {
                log::warn!(
                    "{kind} connection from {peer} refused: {}not on the allow-list{}",
                    if state.allow.allows_loopback() {
                        "not 127.0.0.1 or ::1, and "
                    } else {
                        "allow_loopback = false, and "
                    },
                    state
                        .allow
                        .path()
                        .map(|p| format!(" ({})", p.display()))
                        .unwrap_or_default()
                );
                continue;
            }
            let slot = match state.admit(peer.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    log::warn!("{kind} connection from {peer} refused: {why}");
                    continue;
                }
            };
            let state = state.clone();
            let stopping = stopping.clone();
            connections.spawn(async move {
                let _slot = slot;
                let _ = tcp.set_nodelay(true);
                match kind {
                    Kind::Hl7Xfer => hl7xfer::serve(&state, tcp, peer, changes).await,
                    Kind::Mllp => mllp::serve(&state, tcp, peer, stopping, changes).await,
                }
            });
        }
        drop(hl7xfer);
        drop(mllp);
        let grace = state.listen.shutdown_grace;
        log::info!(
            "shutting down: no new connections; {} open, waiting up to {} s",
            connections.len(),
            grace.as_secs()
        );
        let _ = stop.send(true);
        let drained = tokio::time::timeout(grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            log::warn!(
                "shutdown grace over; closing {} connections",
                connections.len()
            );
            connections.shutdown().await;
        }
        log::info!("client daemon stopped");
    }
}

/// Which listener a connection came to.
#[derive(Clone, Copy)]
enum Kind {
    Hl7Xfer,
    Mllp,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hl7Xfer => "hl7xfer",
            Self::Mllp => "mllp",
        })
    }
}

/// The next connection on `listener`; never, when there is none.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Ends the sending side, then reads and drops what the peer still sends, for at most
/// a second, before closing: closing with unread bytes would reset the connection and
/// could destroy the answer before the peer reads it.
async fn close_gently<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// A field for the log: at most 40 characters, control characters escaped.
fn loggable(raw: Option<&[u8]>) -> String {
    match raw {
        None => "-".to_owned(),
        Some(raw) => {
            let text = String::from_utf8_lossy(raw);
            let mut out: String = text
                .chars()
                .take(40)
                .flat_map(char::escape_default)
                .collect();
            if text.chars().count() > 40 {
                out.push('…');
            }
            out
        }
    }
}

/// The one log line of a transaction: peer, control id, message type, outcome
/// (the answer's MSA-1, and the code when the daemon answered itself), latency.
fn log_transaction(
    kind: &str,
    peer: SocketAddr,
    request: &[u8],
    answer: &Answer,
    started: Instant,
) {
    let request = Message::parse(request).ok();
    let field = |n| request.as_ref().and_then(|m| m.raw(&Path::new(*b"MSH", n)));
    let reply = Message::parse(&answer.bytes).ok();
    let msa = |n| reply.as_ref().and_then(|m| m.raw(&Path::new(*b"MSA", n)));
    let mut outcome = msa(1).map_or_else(|| "-".to_owned(), |v| loggable(Some(v)));
    // The condition code that starts MSA-3 (`TXFR024E…`, `HNHR517E…`), never its text.
    if let Some(code) = msa(3).and_then(crate::hl7::condition_code) {
        outcome.push(' ');
        outcome.push_str(&String::from_utf8_lossy(code));
    }
    if answer.network_error.is_some() {
        outcome.push_str(" (HNCLIENT)");
    }
    let level = if answer.network_error.is_some() {
        log::Level::Warn
    } else {
        log::Level::Info
    };
    log::log!(
        level,
        "{kind} {peer} control_id={} type={} outcome={outcome} latency_ms={}",
        loggable(field(10)),
        loggable(field(9)),
        started.elapsed().as_millis()
    );
}
