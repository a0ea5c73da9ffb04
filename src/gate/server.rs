//! The gateway's network side: the accept loop, one task per connection, one task per
//! transaction.
//!
//! The accept loop never waits on a client: the TLS handshake happens in the
//! connection's task, under a timeout; an accept error is logged and backed off. A
//! connection without a client certificate may only register. Any other connection is
//! authenticated once with HNGard (certificate, facility active), then carries many
//! transactions at once, each answered on its own ([`transaction`]: the envelope, then
//! [`admit`](crate::gate::admit), which alone decides what is forwarded, then delivery).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::GateError;
use super::audit::AuditWriter;
use super::config::{Destination, GateConfig};
use super::metrics::{Metrics, Refused};
use super::mllp::{MllpDestinations, MllpFailure};
use super::sim::Simulator;
use crate::envelope::{self, Direction, MasterKey, ReplayGuard};
use crate::gard::{AuthError, DuplicateKey, Gard, Peer, RegisterError, Role};
use crate::hl7::{self, Message, NetworkCode, NetworkComponent, Path};
use crate::transport::{
    Frame, FrameError, FrameReader, FrameWriter, Refusal, ServerStream, read_frame, tls, until_true,
};

mod transaction;

/// A gateway bound to its port, ready to [`run`](Gate::run).
pub struct Gate {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    metrics_listener: Option<TcpListener>,
    state: Arc<State>,
}

/// What every connection shares.
struct State {
    /// The configuration in force, replaced whole by [`Gate::reload`]; a connection or a
    /// transaction takes it once and keeps that snapshot.
    settings: RwLock<Arc<Settings>>,
    gard: Arc<Gard>,
    sim: Simulator,
    /// Each facility's replay guard: one facility cannot fill another's.
    replay: Mutex<HashMap<String, ReplayGuard>>,
    /// Per-facility request rate, across reloads.
    rates: Mutex<HashMap<String, Bucket>>,
    metrics: Arc<Metrics>,
    audit: AuditWriter,
    /// Live authenticated connections by facility, to close them on revocation or when
    /// the credential they hold is superseded.
    live: Mutex<HashMap<String, HashMap<u64, Live>>>,
    /// Connected server applications by the application names they serve.
    apps: Mutex<HashMap<String, Vec<Arc<AppLink>>>>,
    /// Turns between several server applications serving the same name.
    next_app: AtomicUsize,
    connections: AtomicUsize,
    /// Connections not yet authenticated, by source (an IPv4 address or an IPv6 /64),
    /// and in all.
    unauthenticated: Mutex<HashMap<std::net::IpAddr, usize>>,
    unauthenticated_total: AtomicUsize,
    next_connection: AtomicU64,
}

/// A connection's place among those not yet authenticated; given back when it
/// authenticates or closes.
struct Unauthenticated {
    state: Arc<State>,
    source: Option<std::net::IpAddr>,
}

impl Unauthenticated {
    /// A place for a connection from `peer`, or `None` when its source or all
    /// unauthenticated connections are at their limit.
    fn take(state: &Arc<State>, peer: SocketAddr, limits: &super::Limits) -> Option<Self> {
        // Counted as registration failures are: per IPv4 address, or per IPv6 /64.
        let source = crate::transport::peer_block(peer.ip());
        let mut by_source = state
            .unauthenticated
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let total = state.unauthenticated_total.load(Ordering::Relaxed);
        let of_source = by_source.get(&source).copied().unwrap_or(0);
        if total >= limits.max_unauthenticated || of_source >= limits.max_unauthenticated_per_source
        {
            return None;
        }
        *by_source.entry(source).or_default() += 1;
        state.unauthenticated_total.fetch_add(1, Ordering::Relaxed);
        Some(Self {
            state: state.clone(),
            source: Some(source),
        })
    }

    /// Gives the place back now (the connection authenticated).
    fn release(&mut self) {
        let Some(source) = self.source.take() else {
            return;
        };
        let mut by_source = self
            .state
            .unauthenticated
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                by_source.remove(&source);
            }
        }
        self.state
            .unauthenticated_total
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.release();
    }
}

/// A live authenticated connection, as the directory watcher sees it.
struct Live {
    /// Set to the reason when the connection must close.
    close: watch::Sender<Option<Supersede>>,
    /// The serial of the certificate it authenticated with (upper-case hex).
    serial: String,
    /// The envelope key id it uses.
    key_id: u32,
}

/// Why the directory ends a live connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Supersede {
    /// The facility is revoked.
    Revoked,
    /// Its certificate or envelope key is no longer the facility's current one
    /// (renewed, or registered again), or the facility is gone.
    Superseded,
}

/// A connected server application: where its requests go and its answers come from.
struct AppLink {
    connection: u64,
    facility: String,
    key: MasterKey,
    writer: Arc<FrameWriter<WriteHalf<ServerStream>>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>,
    next_id: AtomicU64,
}

impl AppLink {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Vec<u8>>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a server application gave no answer.
enum AppFailure {
    /// None is connected for the name.
    NotConnected,
    /// It did not answer in time, or its connection went away.
    NoAnswer,
    /// Its answer's envelope did not open, or was not for this request.
    Envelope,
    /// Its answer is not HL7 with a usable MSH.
    NotHl7,
}

/// A configuration and what is made from it.
struct Settings {
    config: GateConfig,
    mllp: MllpDestinations,
}

/// A token bucket: `tokens` refill at the configured rate up to the burst.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl State {
    /// The configuration in force.
    fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes one request from `facility`'s allowance; false when it is over its rate.
    fn within_rate(&self, facility: &str, per_sec: f64, burst: f64) -> bool {
        let now = Instant::now();
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = rates.entry(facility.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * per_sec;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Passes an authentic request envelope's header through `facility`'s replay guard
    /// (made at its first request, with `replay_capacity` places).
    fn replay_check(
        &self,
        facility: &str,
        header: &envelope::Header,
        limits: &super::Limits,
    ) -> Result<(), envelope::EnvelopeError> {
        let mut guards = self.replay.lock().unwrap_or_else(|e| e.into_inner());
        let guard = match guards.get_mut(facility) {
            Some(guard) => guard,
            None => guards.entry(facility.to_owned()).or_insert_with(|| {
                ReplayGuard::new(limits.envelope_window, limits.replay_capacity)
            }),
        };
        guard.check(header, envelope::now_ms())
    }

    /// Forgets expired nonces, and the guards and rate buckets left with nothing to
    /// remember, so that both maps stay as large as the facilities active lately.
    fn forget_idle(&self) {
        let now = envelope::now_ms();
        self.replay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, guard| {
                guard.forget_expired(now);
                !guard.is_empty()
            });
        let settings = self.settings();
        let limits = &settings.config.limits;
        // A bucket idle long enough to have refilled is the same as a new one.
        let refill = if limits.rate_limit_per_sec > 0.0 {
            limits.rate_limit_burst / limits.rate_limit_per_sec
        } else {
            0.0
        };
        self.rates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, bucket| bucket.at.elapsed().as_secs_f64() < refill);
    }

    /// A connected server application for `name`, in turn when there are several.
    fn app(&self, name: &str) -> Option<Arc<AppLink>> {
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let links = apps.get(name).filter(|l| !l.is_empty())?;
        let turn = self.next_app.fetch_add(1, Ordering::Relaxed);
        Some(links[turn % links.len()].clone())
    }

    /// Sends `request` to a server application serving `name`, and waits for its answer.
    async fn deliver_to_app(
        &self,
        name: &str,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, AppFailure> {
        let link = self.app(name).ok_or(AppFailure::NotConnected)?;
        let sealed = envelope::seal(
            &link.key,
            &link.facility,
            Direction::Request,
            &[0; envelope::NONCE_LEN],
            envelope::now_ms(),
            request,
        )
        .map_err(|_| AppFailure::Envelope)?;
        let id = link.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        link.pending().insert(id, tx);
        let frame = Frame::Request {
            id,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            envelope: sealed.bytes,
        };
        let exchange = async {
            link.writer
                .send(&frame)
                .await
                .map_err(|_| AppFailure::NoAnswer)?;
            rx.await.map_err(|_| AppFailure::NoAnswer)
        };
        let answer = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(AppFailure::NoAnswer),
        };
        link.pending().remove(&id);
        let opened = envelope::open(&link.key, &answer?, Direction::Response).map_err(|e| {
            log::warn!(
                "security: an answer from server application {} did not open: {e}",
                link.facility
            );
            AppFailure::Envelope
        })?;
        if opened.header.reply_to != sealed.nonce {
            log::warn!(
                "security: server application {} answered another request",
                link.facility
            );
            return Err(AppFailure::Envelope);
        }
        if Message::parse(&opened.plaintext).is_err() {
            log::warn!(
                "server application {} answered something that is not HL7",
                link.facility
            );
            return Err(AppFailure::NotHl7);
        }
        Ok(opened.plaintext)
    }
}

impl Gate {
    /// Opens HNGard's directory, prepares TLS and binds the listening socket.
    pub async fn bind(config: GateConfig) -> Result<Self, GateError> {
        let gard = Arc::new(Gard::open(&config.gard).map_err(GateError::Gard)?);
        let material = gard.server_material().map_err(GateError::Gard)?;
        let server = tls::server_config(material.chain, material.key, &[material.ca])
            .map_err(GateError::Tls)?;
        let listener = listen(config.listen).map_err(|e| GateError::Bind(config.listen, e))?;
        let mllp = MllpDestinations::new(&config.routes, config.limits.max_frame_bytes, None)
            .map_err(GateError::Destination)?;
        let metrics_listener = match config.metrics {
            Some(addr) => Some(
                super::metrics::bind(addr)
                    .await
                    .map_err(|e| GateError::Bind(addr, e))?,
            ),
            None => None,
        };
        gard.set_journal_sync(config.audit_sync == super::config::AuditSync::Full)
            .map_err(|e| GateError::Destination(format!("the audit journal: {e}")))?;
        let audit = AuditWriter::start(gard.clone(), config.audit)
            .map_err(|e| GateError::Destination(format!("cannot start the audit writer: {e}")))?;
        let metrics = Arc::new(Metrics::default());
        metrics.watch_journal(audit.gauge());
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(server),
            metrics_listener,
            state: Arc::new(State {
                metrics,
                audit,
                settings: RwLock::new(Arc::new(Settings { config, mllp })),
                gard,
                sim: Simulator::new(),
                replay: Mutex::new(HashMap::new()),
                rates: Mutex::new(HashMap::new()),
                live: Mutex::new(HashMap::new()),
                apps: Mutex::new(HashMap::new()),
                next_app: AtomicUsize::new(0),
                connections: AtomicUsize::new(0),
                unauthenticated: Mutex::new(HashMap::new()),
                unauthenticated_total: AtomicUsize::new(0),
                next_connection: AtomicU64::new(1),
            }),
        })
    }

    /// Checks `config` as [`Gate::bind`] would use it — HNGard's directory and its
    /// gateway certificate, the destinations' TLS files — without listening. Returns a
    /// summary for people.
    pub fn check(config: &GateConfig) -> Result<String, GateError> {
        let gard = Gard::open(&config.gard).map_err(GateError::Gard)?;
        let material = gard.server_material().map_err(GateError::Gard)?;
        tls::server_config(material.chain, material.key, &[material.ca]).map_err(GateError::Tls)?;
        MllpDestinations::new(&config.routes, config.limits.max_frame_bytes, None)
            .map_err(GateError::Destination)?;
        let facilities = gard.facilities().map_err(GateError::Gard)?.len();
        Ok(format!(
            "listen {}, HNGard {} ({facilities} facilities), {} route(s)",
            config.listen,
            config.gard.display(),
            config.routes.len()
        ))
    }

    /// The address the gateway listens on (the real port when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.settings().config.listen)
    }

    /// Where the metrics are served, when they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// A handle that replaces the configuration of the running gateway (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            state: self.state.clone(),
        }
    }

    /// HNGard's directory, as the gateway opened it.
    pub fn gard(&self) -> &Arc<Gard> {
        &self.state.gard
    }

    /// Serves until `shutdown` completes; then stops accepting, lets running
    /// transactions finish for up to the configured grace, and returns.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), GateError> {
        let Self {
            listener,
            acceptor,
            metrics_listener,
            state,
        } = self;
        let metrics_server =
            metrics_listener.map(|l| tokio::spawn(super::metrics::serve(l, state.metrics.clone())));
        let (stop, stopping) = watch::channel(false);
        let watcher = tokio::spawn(watch_revocations(state.clone(), stopping.clone()));
        let upkeep = tokio::spawn(maintain(state.clone(), stopping.clone()));
        let memory = tokio::spawn(give_back_memory(state.clone(), stopping.clone()));
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        let mut accept_errors = 0u32;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        accept_errors = 0;
                        let settings = state.settings();
                        let limits = &settings.config.limits;
                        let count = state.connections.load(Ordering::Relaxed);
                        if count >= limits.max_connections {
                            log::warn!("connection from {peer} refused: {count} connections already open");
                            state.metrics.refused(Refused::MaxConnections);
                            continue;
                        }
                        let Some(place) = Unauthenticated::take(&state, peer, limits) else {
                            // No log line each time: a flood would fill the log.
                            log::debug!("connection from {peer} refused: too many not yet authenticated");
                            state.metrics.refused(Refused::Unauthenticated);
                            continue;
                        };
                        state.connections.fetch_add(1, Ordering::Relaxed);
                        state.metrics.connected();
                        let state = state.clone();
                        let acceptor = acceptor.clone();
                        let stopping = stopping.clone();
                        connections.spawn(async move {
                            handle_connection(&state, acceptor, tcp, peer, place, stopping).await;
                            state.connections.fetch_sub(1, Ordering::Relaxed);
                            state.metrics.disconnected();
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait, never give up.
                        accept_errors = (accept_errors + 1).min(10);
                        log::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10 << accept_errors)).await;
                    }
                },
            }
        }
        drop(listener);
        let open = connections.len();
        let limits = state.settings().config.limits.clone();
        log::info!(
            "shutting down: no new connections; {open} open, waiting up to {} s",
            limits.shutdown_grace.as_secs()
        );
        let _ = stop.send(true);
        let grace = limits.shutdown_grace + Duration::from_secs(1);
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
        watcher.abort();
        upkeep.abort();
        memory.abort();
        let flushing = state.clone();
        let _ =
            tokio::task::spawn_blocking(move || flushing.audit.flush(Duration::from_secs(5))).await;
        if let Some(m) = metrics_server {
            m.abort();
        }
        log::info!("gateway stopped");
        Ok(())
    }
}

/// Connections the kernel keeps for the accept loop to take (Linux caps it at
/// `net.core.somaxconn`). The standard library's 128 overflows in a burst of connections,
/// and the kernel then drops SYNs: every sender caught in it, well-behaved or not, waits
/// a second for its SYN to be sent again.
const BACKLOG: u32 = 1024;

/// The secure port's listening socket, with room for a burst of connections.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As the standard library does on Unix, so that a restarted gateway binds at once; on
    // Windows it would let another process take the port over.
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Replaces a running gateway's configuration (see [`Gate::reloader`]).
#[derive(Clone)]
pub struct Reloader {
    state: Arc<State>,
}

impl Reloader {
    /// Puts `config` in force for new connections and transactions, keeping live
    /// connections and the pools of MLLP destinations that did not change. What cannot
    /// change while running (`listen`, `gard`, `replay_capacity`, `blocking_threads`) keeps its old value, with
    /// a warning. A configuration whose destinations cannot be prepared is refused, and
    /// the old one stays. Returns a summary for the log.
    pub fn reload(&self, mut config: GateConfig) -> Result<String, GateError> {
        let old = self.state.settings();
        let mut kept = Vec::new();
        if config.listen != old.config.listen {
            kept.push(format!(
                "listen stays {} (restart to change it)",
                old.config.listen
            ));
            config.listen = old.config.listen;
        }
        if config.gard != old.config.gard {
            kept.push(format!(
                "gard stays {} (restart to change it)",
                old.config.gard.display()
            ));
            config.gard = old.config.gard.clone();
        }
        if config.blocking_threads != old.config.blocking_threads {
            kept.push(format!(
                "blocking_threads stays {} (restart to change it)",
                old.config.blocking_threads
            ));
            config.blocking_threads = old.config.blocking_threads;
        }
        if config.limits.replay_capacity != old.config.limits.replay_capacity {
            kept.push("replay_capacity stays as it was (restart to change it)".to_owned());
            config.limits.replay_capacity = old.config.limits.replay_capacity;
        }
        let mllp = MllpDestinations::new(
            &config.routes,
            config.limits.max_frame_bytes,
            Some(&old.mllp),
        )
        .map_err(GateError::Destination)?;
        let summary = format!(
            "{} route(s) in force{}",
            config.routes.len(),
            if kept.is_empty() {
                String::new()
            } else {
                format!("; {}", kept.join("; "))
            }
        );
        *self
            .state
            .settings
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(Settings { config, mllp });
        Ok(summary)
    }
}

async fn handle_connection(
    state: &Arc<State>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    place: Unauthenticated,
    stopping: watch::Receiver<bool>,
) {
    // Every connection's task lives as long as the connection, and its size is what the
    // futures it awaits inline add up to (a future's layout does not reuse the room of
    // one that has finished): the handshake's (1.3 KB, with its TLS state), the TLS
    // stream (1.2 KB) and the session's, which held the stream again — 8.9 KB per idle
    // connection. So the handshake runs boxed, freed when done, and the session is boxed
    // and takes the stream boxed, which it moves out at once: 2.0 KB of task and
    // session in all.
    let Some(stream) = Box::pin(handshake(state, acceptor, tcp, peer)).await else {
        return;
    };
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec());
    match certificate {
        None => Box::pin(registration(state, *stream, peer)).await,
        Some(der) => Box::pin(session(state, stream, der, peer, place, stopping)).await,
    }
}

/// The TLS handshake, within the configured time; `None` (logged, counted and, when the
/// client's certificate was refused, journaled) when it failed.
async fn handshake(
    state: &Arc<State>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<Box<ServerStream>> {
    let _ = tcp.set_nodelay(true);
    let timeout = state.settings().config.limits.handshake_timeout;
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(Box::new(stream)),
        Ok(Err(e)) => {
            log::info!("TLS handshake with {peer} failed: {e}");
            state.metrics.refused(Refused::Handshake);
            if let Some(code) = refused_certificate(&e) {
                state.audit.security(
                    "",
                    &peer.to_string(),
                    code,
                    format!("TLS handshake refused the client certificate: {e}"),
                );
            }
            None
        }
        Err(_) => {
            log::info!("TLS handshake with {peer} timed out");
            state.metrics.refused(Refused::Handshake);
            None
        }
    }
}

/// The audit code of a TLS handshake that failed on the client's certificate (one that
/// does not chain to HNGard's CA, has expired, or cannot be read); `None` for any other
/// failure — no TLS at all, an old version, a connection dropped half-way — which the
/// log and the metrics count but the journal does not (a port scan would fill it).
fn refused_certificate(e: &std::io::Error) -> Option<&'static str> {
    use rustls::CertificateError;
    let rustls::Error::InvalidCertificate(why) = e.get_ref()?.downcast_ref::<rustls::Error>()?
    else {
        return None;
    };
    Some(match why {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
        CertificateError::Revoked => "revoked",
        _ => "certificate-refused",
    })
}

/// The largest frame a peer without a certificate may send: a registration (a facility
/// id, a code and a certificate signing request) takes about 1 KiB.
const MAX_REGISTRATION_FRAME: usize = 64 * 1024;

/// A connection without a certificate: one registration, then close.
async fn registration(state: &Arc<State>, mut stream: ServerStream, peer: SocketAddr) {
    let settings = state.settings();
    let limits = &settings.config.limits;
    let frame = match tokio::time::timeout(
        limits.handshake_timeout,
        read_frame(
            &mut stream,
            limits.max_frame_bytes.min(MAX_REGISTRATION_FRAME),
        ),
    )
    .await
    {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            log::info!("registration from {peer}: {e}");
            return;
        }
        Err(_) => {
            log::info!("registration from {peer}: nothing sent in time");
            return;
        }
    };
    let answer = match frame {
        Frame::RegisterRequest {
            facility,
            code,
            csr,
        } => {
            let gard = state.gard.clone();
            // The id is the sender's claim: logged as it is only when it is an id.
            let who = if crate::gard::check_facility_id(&facility).is_ok() {
                facility.clone()
            } else {
                format!("{:?}", super::admit::printable(facility.as_bytes(), 64))
            };
            let outcome = tokio::task::spawn_blocking(move || {
                gard.register(&facility, &code, &csr, peer.ip())
            })
            .await;
            match outcome {
                Ok(Ok(registration)) => {
                    log::info!(
                        "facility {who} registered from {peer} (key id {})",
                        registration.key.id()
                    );
                    state.audit.record(crate::gard::AuditRecord::security(
                        &who,
                        &peer.to_string(),
                        "registered",
                        "registered",
                        format!("registered (key id {})", registration.key.id()),
                    ));
                    Frame::RegisterResponse {
                        certificate_pem: registration.certificate_pem,
                        ca_pem: registration.ca_pem,
                        key_id: registration.key.id(),
                        key: zeroize::Zeroizing::new(*registration.key.as_bytes()),
                    }
                }
                Ok(Err(e)) => {
                    log::warn!("registration of {who} from {peer} refused: {e}");
                    let code = match e {
                        RegisterError::RateLimited => Some("registration-limited"),
                        RegisterError::Store(_) => None,
                        _ => Some("registration-refused"),
                    };
                    if let Some(code) = code {
                        // The id is the sender's claim: journaled only when it is one.
                        let claimed = if who.starts_with('"') {
                            ""
                        } else {
                            who.as_str()
                        };
                        state
                            .audit
                            .security(claimed, &peer.to_string(), code, e.to_string());
                    }
                    Frame::Refused {
                        id: 0,
                        reason: register_refusal(&e),
                    }
                }
                Err(e) => {
                    log::error!("registration of {who} from {peer} failed: {e}");
                    Frame::Refused {
                        id: 0,
                        reason: Refusal::Internal,
                    }
                }
            }
        }
        other => {
            log::warn!("{peer} sent {other:?} without a client certificate; refused");
            state.audit.security(
                "",
                &peer.to_string(),
                "not-authenticated",
                "a frame other than a registration without a client certificate".into(),
            );
            Frame::Refused {
                id: 0,
                reason: Refusal::NotAuthenticated,
            }
        }
    };
    let _ = crate::transport::write_frame(&mut stream, &answer).await;
    let _ = stream.shutdown().await;
}

/// How long the certificate `der` is valid from `now` (zero when it has expired);
/// `None` when it cannot be read (authentication refuses it then anyway).
fn time_left(der: &[u8], now: jiff::Timestamp) -> Option<Duration> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let left = not_after.saturating_sub(now.as_second());
    Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
}

fn register_refusal(e: &RegisterError) -> Refusal {
    match e {
        RegisterError::Expired => Refusal::RegistrationExpired,
        RegisterError::RateLimited => Refusal::RegistrationRateLimited,
        RegisterError::Revoked => Refusal::Revoked,
        RegisterError::BadCsr => Refusal::BadCertificateRequest,
        RegisterError::Refused => Refusal::RegistrationRefused,
        _ => Refusal::Internal,
    }
}

fn auth_refusal(e: &AuthError) -> Refusal {
    match e {
        AuthError::Revoked => Refusal::Revoked,
        AuthError::Expired => Refusal::CertificateExpired,
        AuthError::UnknownCertificate | AuthError::NotRegistered => Refusal::UnknownCertificate,
        _ => Refusal::Internal,
    }
}

/// An authenticated connection: many transactions until the client leaves, the idle
/// timeout passes, the facility is revoked, or the gateway shuts down.
async fn session(
    state: &Arc<State>,
    stream: Box<ServerStream>,
    certificate: Vec<u8>,
    address: SocketAddr,
    mut place: Unauthenticated,
    mut stopping: watch::Receiver<bool>,
) {
    let settings = state.settings();
    let limits = &settings.config.limits;
    // Moved out of its box in a block of its own, so that the box (1.2 KB) is freed
    // now, not when the session ends.
    let stream: ServerStream = {
        let boxed = stream;
        *boxed
    };
    let (reader, writer) = tokio::io::split(stream);
    let mut reader = FrameReader::new(reader, limits.max_frame_bytes);
    let writer = Arc::new(FrameWriter::new(writer));

    // The connection ends when its certificate expires, however busy it is.
    let expires_in = time_left(&certificate, jiff::Timestamp::now());
    let serial = certificate_serial(&certificate);
    let gard = state.gard.clone();
    let authenticated = tokio::task::spawn_blocking(move || gard.authenticate(&certificate)).await;
    let peer = match authenticated {
        Ok(Ok(peer)) => Arc::new(peer),
        Ok(Err(e)) => {
            log::warn!("connection from {address} refused: {e}");
            state.metrics.refused(Refused::Certificate);
            let code = match e {
                AuthError::Revoked => "revoked",
                AuthError::Expired => "expired",
                _ => "certificate-refused",
            };
            state
                .audit
                .security("", &address.to_string(), code, e.to_string());
            let refused = Frame::Refused {
                id: 0,
                reason: auth_refusal(&e),
            };
            let _ = writer.send(&refused).await;
            writer.shutdown().await;
            return;
        }
        Err(e) => {
            log::error!("authenticating {address} failed: {e}");
            return;
        }
    };
    if writer.send(&Frame::Accepted).await.is_err() {
        return;
    }
    // Authenticated: it counts against max_connections only from now on.
    place.release();
    let id = state.next_connection.fetch_add(1, Ordering::Relaxed);
    let (revoke, mut revoked) = watch::channel(None);
    state
        .live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(peer.facility.clone())
        .or_default()
        .insert(
            id,
            Live {
                close: revoke,
                serial: serial.unwrap_or_default(),
                key_id: peer.key.id(),
            },
        );
    log::info!("facility {} connected from {address}", peer.facility);

    let mut transactions = JoinSet::new();
    let mut serving: Option<Arc<AppLink>> = None;
    let mut end = "closed by the client";
    let expiry = tokio::time::sleep(expires_in.unwrap_or(Duration::from_secs(86_400 * 365 * 100)));
    tokio::pin!(expiry);
    loop {
        let next = tokio::select! {
            () = &mut expiry => {
                transactions.abort_all();
                let _ = writer.send(&Frame::Refused { id: 0, reason: Refusal::CertificateExpired }).await;
                end = "certificate expired";
                state.audit.security(
                    &peer.facility,
                    &address.to_string(),
                    "expired",
                    "live connection closed: its certificate expired".into(),
                );
                break;
            }
            next = tokio::time::timeout(limits.idle_timeout, reader.next()) => next,
            why = until_closed(&mut revoked) => {
                if why == Supersede::Revoked {
                    transactions.abort_all();
                    let _ = writer.send(&Frame::Refused { id: 0, reason: Refusal::Revoked }).await;
                    end = "facility revoked";
                    state.audit.security(
                        &peer.facility,
                        &address.to_string(),
                        "revoked",
                        "live connection closed on revocation".into(),
                    );
                } else {
                    // Renewed or registered again: what runs finishes (below), nothing
                    // more is taken, and the client connects again with its new files.
                    end = SUPERSEDED;
                    state.audit.security(
                        &peer.facility,
                        &address.to_string(),
                        "superseded",
                        "live connection closed: its certificate or envelope key was superseded".into(),
                    );
                }
                break;
            }
            () = until_true(&mut stopping) => { end = "gateway shutting down"; break; }
            Some(_) = transactions.join_next(), if !transactions.is_empty() => continue,
        };
        match next {
            Ok(Ok(Some(Frame::Request {
                id,
                timeout_ms,
                envelope,
            }))) => {
                let state = state.clone();
                let peer = peer.clone();
                let writer = writer.clone();
                let mut work = Box::pin(async move {
                    let answer =
                        transaction::transaction(&state, &peer, address, id, timeout_ms, envelope)
                            .await;
                    let _ = writer.send(&answer).await;
                });
                // Alone on the connection — nothing running, nothing else waiting to be
                // read — a transaction first runs here: most finish at once, and a thread
                // hand-over costs as much as all the checks and routing together. One that
                // must wait (a slow destination) moves to its own task. Under load each
                // gets a task, so their cryptography spreads over the cores.
                if transactions.is_empty() && !reader.has_buffered_frame() {
                    let finished = std::future::poll_fn(|cx| {
                        std::task::Poll::Ready(work.as_mut().poll(cx).is_ready())
                    })
                    .await;
                    if !finished {
                        transactions.spawn(work);
                    }
                } else {
                    transactions.spawn(work);
                }
            }
            Ok(Ok(Some(Frame::Ping { id }))) => {
                let _ = writer.send(&Frame::Pong { id }).await;
            }
            Ok(Ok(Some(Frame::RenewRequest { csr }))) => {
                let gard = state.gard.clone();
                let facility = peer.facility.clone();
                let renewed =
                    tokio::task::spawn_blocking(move || gard.renew(&facility, &csr)).await;
                let frame = match renewed {
                    Ok(Ok(renewal)) => {
                        log::info!(
                            "facility {} renewed its certificate (valid until {})",
                            peer.facility,
                            renewal.not_after
                        );
                        state.audit.record(crate::gard::AuditRecord::security(
                            &peer.facility,
                            &address.to_string(),
                            "renewed",
                            "renewed",
                            format!("new certificate valid until {}", renewal.not_after),
                        ));
                        Frame::RenewResponse {
                            certificate_pem: renewal.certificate_pem,
                        }
                    }
                    Ok(Err(e)) => {
                        log::warn!("facility {}: renewal refused: {e}", peer.facility);
                        Frame::Refused {
                            id: 0,
                            reason: register_refusal(&e),
                        }
                    }
                    Err(e) => {
                        log::error!("facility {}: renewal failed: {e}", peer.facility);
                        Frame::Refused {
                            id: 0,
                            reason: Refusal::Internal,
                        }
                    }
                };
                let _ = writer.send(&frame).await;
            }
            Ok(Ok(Some(Frame::Serve { applications }))) if serving.is_none() => {
                // Only the names HNGard records for this facility (`gard … --serves`).
                let not_served: Vec<&String> = applications
                    .iter()
                    .filter(|name| !peer.serves.contains(name))
                    .collect();
                let refusal = if peer.role != Role::Server {
                    Some(Refusal::NotAServer)
                } else if applications.is_empty() || !not_served.is_empty() {
                    Some(Refusal::NotServed)
                } else {
                    None
                };
                if let Some(reason) = refusal {
                    let names: Vec<String> = not_served
                        .iter()
                        .map(|n| super::admit::printable(n.as_bytes(), 64))
                        .collect();
                    log::warn!(
                        "security: facility {} asked to serve {names:?}, which HNGard does not record for it ({}); closing",
                        peer.facility,
                        peer.role
                    );
                    state.metrics.refused(Refused::Serve);
                    state.audit.security(
                        &peer.facility,
                        &address.to_string(),
                        "serve-refused",
                        format!(
                            "Serve refused: {reason}; names not recorded for it: {}",
                            names.join(", ")
                        ),
                    );
                    let _ = writer.send(&Frame::Refused { id: 0, reason }).await;
                    end = "refused to serve";
                    break;
                }
                let link = Arc::new(AppLink {
                    connection: id,
                    facility: peer.facility.clone(),
                    key: peer.key.clone(),
                    writer: writer.clone(),
                    pending: Mutex::new(HashMap::new()),
                    next_id: AtomicU64::new(1),
                });
                {
                    let mut apps = state.apps.lock().unwrap_or_else(|e| e.into_inner());
                    for name in &applications {
                        apps.entry(name.clone()).or_default().push(link.clone());
                    }
                }
                log::info!("facility {} serves {applications:?}", peer.facility);
                serving = Some(link);
                let _ = writer.send(&Frame::Accepted).await;
            }
            Ok(Ok(Some(Frame::Response { id, envelope }))) if serving.is_some() => {
                if let Some(link) = &serving {
                    let waiting = link.pending().remove(&id);
                    // An answer nobody waits for any more (too late) is dropped.
                    if let Some(waiting) = waiting {
                        let _ = waiting.send(envelope);
                    }
                }
            }
            Ok(Ok(Some(other))) => {
                log::warn!(
                    "facility {} sent an unexpected {other:?}; closing",
                    peer.facility
                );
                end = "protocol error";
                break;
            }
            Ok(Ok(None)) => break,
            Ok(Err(FrameError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                // The client went away without a TLS close_notify (a process that exits).
                break;
            }
            Ok(Err(e)) => {
                log::warn!("facility {} from {address}: {e}; closing", peer.facility);
                state.audit.security(
                    &peer.facility,
                    &address.to_string(),
                    "bad-frame",
                    format!("connection closed: {e}"),
                );
                end = "frame error";
                break;
            }
            Err(_) => {
                end = "idle timeout";
                break;
            }
        }
    }
    // Running transactions finish (they are bounded by their timeouts); the gateway's
    // shutdown bounds them by its grace.
    if let Some(link) = serving {
        state
            .apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, links| {
                links.retain(|l| l.connection != link.connection);
                !links.is_empty()
            });
        // Whatever it was still asked is answered now, as lost (TXFR024E).
        link.pending().clear();
    }
    if end == "gateway shutting down" || end == SUPERSEDED {
        // Running transactions finish and are answered; the shutdown grace bounds them
        // (and their own timeouts do).
        while transactions.join_next().await.is_some() {}
        if end == SUPERSEDED {
            let refused = Frame::Refused {
                id: 0,
                reason: Refusal::UnknownCertificate,
            };
            let _ = writer.send(&refused).await;
        }
    } else {
        // The client is gone (or revoked): no answer could reach it.
        transactions.shutdown().await;
    }
    writer.shutdown().await;
    let mut live = state.live.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(of_facility) = live.get_mut(&peer.facility) {
        of_facility.remove(&id);
        if of_facility.is_empty() {
            live.remove(&peer.facility);
        }
    }
    log::info!("facility {} disconnected: {end}", peer.facility);
}

/// How a session ends when its credential was superseded.
const SUPERSEDED: &str = "credential superseded";

/// Waits until the directory watcher says why the connection must close.
async fn until_closed(flag: &mut watch::Receiver<Option<Supersede>>) -> Supersede {
    let why = flag.wait_for(Option::is_some).await.map(|why| *why);
    match why {
        Ok(why) => why.unwrap_or(Supersede::Superseded),
        // The watcher is gone only with the gateway: wait for the shutdown instead.
        Err(_) => std::future::pending().await,
    }
}

/// The serial of a DER certificate, upper-case hex, as HNGard records it.
fn certificate_serial(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(
        cert.raw_serial()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect(),
    )
}

/// Every `revocation_poll`, asks HNGard whether anything changed; then closes the live
/// connections of facilities revoked since, and those holding a certificate or an
/// envelope key that is no longer their facility's current one (renewed, registered
/// again).
async fn watch_revocations(state: Arc<State>, mut stopping: watch::Receiver<bool>) {
    let mut seen = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(state.settings().config.limits.revocation_poll) => {}
            () = until_true(&mut stopping) => return,
        }
        let gard = state.gard.clone();
        let Ok(Ok(generation)) = tokio::task::spawn_blocking(move || gard.generation()).await
        else {
            continue;
        };
        if seen == Some(generation) {
            continue;
        }
        let facilities: Vec<String> = state
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        let gard = state.gard.clone();
        // One query per facility with live connections (not per connection).
        let current = tokio::task::spawn_blocking(move || {
            facilities
                .into_iter()
                .map(|id| {
                    let record = gard.facility(&id)?;
                    Ok((id, record))
                })
                .collect::<Result<Vec<_>, crate::gard::GardError>>()
        })
        .await;
        let Ok(Ok(current)) = current else {
            // Asked again at the next poll: the generation is not marked seen.
            continue;
        };
        seen = Some(generation);
        let live = state.live.lock().unwrap_or_else(|e| e.into_inner());
        for (facility, record) in current {
            let Some(connections) = live.get(&facility) else {
                continue;
            };
            for connection in connections.values() {
                let why = match &record {
                    Some(f) if f.status == crate::gard::Status::Revoked => Some(Supersede::Revoked),
                    Some(f)
                        if f.cert_serial.as_deref() == Some(connection.serial.as_str())
                            && f.key_id == Some(connection.key_id) =>
                    {
                        None
                    }
                    _ => Some(Supersede::Superseded),
                };
                if let Some(why) = why
                    && connection.close.borrow().is_none()
                {
                    log::warn!(
                        "facility {facility}: closing a live connection ({})",
                        match why {
                            Supersede::Revoked => "revoked",
                            Supersede::Superseded => "its certificate or key was superseded",
                        }
                    );
                    let _ = connection.close.send(Some(why));
                }
            }
        }
    }
}

/// Every minute (and at start): deletes audit rows past their retention and duplicate
/// keys past the longest duplicate window, so that both stay bounded.
async fn maintain(state: Arc<State>, mut stopping: watch::Receiver<bool>) {
    loop {
        let config = state.settings().config.clone();
        let gard = state.gard.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(retention) = config.audit_retention {
                match gard.prune_audit(retention) {
                    Ok(0) => {}
                    Ok(n) => log::info!("audit: {n} row(s) past retention deleted"),
                    Err(e) => log::error!("audit: pruning failed: {e}"),
                }
            }
            let window = config
                .routes
                .iter()
                .filter_map(|r| r.duplicate_window)
                .max();
            if let Some(window) = window
                && let Err(e) = gard.prune_duplicates(window)
            {
                log::error!("duplicate window: pruning failed: {e}");
            }
        })
        .await;
        state.forget_idle();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            () = until_true(&mut stopping) => return,
        }
    }
}

/// Gives the memory of closed connections back to the system: every few seconds, when
/// at least [`BURST`] connections (and half of the most seen) have closed since the last
/// time, the allocator's free pages are returned ([`crate::ffi::heap`]). Without it a
/// gateway stays at the peak of its largest burst (README, "Memory and scale").
async fn give_back_memory(state: Arc<State>, mut stopping: watch::Receiver<bool>) {
    /// Closed connections that make it worth a walk over the heap.
    const BURST: usize = 64;
    let mut peak = 0;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = until_true(&mut stopping) => return,
        }
        let now = state.connections.load(Ordering::Relaxed);
        peak = peak.max(now);
        if trim_due(peak, now, BURST) {
            let started = Instant::now();
            let released = tokio::task::spawn_blocking(crate::ffi::heap::release_free_memory)
                .await
                .unwrap_or(false);
            log::debug!(
                "{} connections closed since {peak} were open: freed memory {} in {} ms",
                peak - now,
                if released {
                    "given back"
                } else {
                    "kept (nothing to give)"
                },
                started.elapsed().as_millis()
            );
            peak = now;
        }
    }
}

/// True when `peak - now` connections closing is a burst worth giving memory back for:
/// at least `burst` of them, and at least half of the peak.
fn trim_due(peak: usize, now: usize, burst: usize) -> bool {
    let closed = peak.saturating_sub(now);
    closed >= burst && closed * 2 >= peak
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each connection's task lives as long as the connection: what it holds inline is
    /// memory for every idle connection (it was 8.9 KB, when the handshake's and the
    /// session's futures were inline; the session is boxed and counted by
    /// `examples/scale`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_s_task_holds_no_handshake_and_no_session_inline() {
        let dir = std::env::temp_dir().join(format!("hnsecure-task-size-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut sandbox = crate::sandbox::Sandbox::start(&crate::sandbox::SandboxOptions {
            dir: dir.clone(),
            port: 0,
            facility: "BC00000098".into(),
            demo_server: false,
        })
        .await
        .unwrap();
        let mut config = GateConfig::from_file(&sandbox.gate_config()).unwrap();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.metrics = None;
        let gate = Gate::bind(config).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, peer) = listener.accept().await.unwrap();
        let limits = gate.state.settings().config.limits.clone();
        let place = Unauthenticated::take(&gate.state, peer, &limits).unwrap();
        let (_stop, stopping) = watch::channel(false);
        let task = handle_connection(
            &gate.state,
            gate.acceptor.clone(),
            tcp,
            peer,
            place,
            stopping,
        );
        let size = std::mem::size_of_val(&task);
        assert!(size <= 512, "a connection's task holds {size} bytes inline");
        drop(task);
        sandbox.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn memory_is_given_back_after_a_burst_closes_not_after_a_few() {
        assert!(trim_due(10_000, 0, 64));
        assert!(trim_due(128, 64, 64));
        assert!(trim_due(100, 36, 64));
        assert!(!trim_due(100, 37, 64), "63 closed: fewer than a burst");
        assert!(!trim_due(1000, 900, 64), "100 of 1000 closed: not half");
        assert!(!trim_due(10, 0, 64));
        assert!(!trim_due(0, 0, 64));
    }

    #[test]
    fn a_connection_lasts_as_long_as_its_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
        let now = jiff::Timestamp::now();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = x509_parser::time::ASN1Time::from_timestamp(now.as_second() + 90)
            .unwrap()
            .to_datetime();
        let cert = params.self_signed(&key).unwrap();
        let left = time_left(cert.der(), now).unwrap();
        assert!(
            left <= Duration::from_secs(90) && left >= Duration::from_secs(89),
            "{left:?}"
        );
        let later = now + jiff::SignedDuration::from_secs(600);
        assert_eq!(
            time_left(cert.der(), later),
            Some(Duration::ZERO),
            "expired"
        );
        assert_eq!(time_left(b"not a certificate", now), None);
    }
}
