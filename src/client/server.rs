//! A server application: a receiving system that takes its requests from the gateway
//! instead of listening for them (DESIGN 3.7, destination `app:NAME`).
//!
//! It connects out to the gateway with its own facility's credential (registered in
//! HNGard with the role `server`), asks for the requests to its application names, and
//! keeps that connection up — reconnecting, with failover between gateways, for as long
//! as it is open. Each request arrives sealed for this facility and each answer goes
//! back sealed, bound to its request.
//!
//! ```toml
//! # server.toml
//! facility = "BC00000099"              # this receiving system's facility id (role server)
//! credential = "server-credential.toml"  # from `hnsecure client register`; relative to this file
//! # credential_readable_by_others = false  # true accepts a credential its group or others may read
//! gateways = ["gate1.example:7443", "gate2.example:7443"]
//! applications = ["HNAPI-DEMO"]        # the MSH-5 names whose requests it answers
//! # connect_timeout_secs = 10
//! # keepalive_secs = 30
//! # max_frame_bytes = 8388608
//! # envelope_window_secs = 300      # a request's time stamp may differ this much from now
//! # replay_capacity = 100000        # request nonces remembered within the window
//! ```
//!
//! Requests are checked as the gateway checks its own (DESIGN 3.5): an envelope sealed
//! for another facility, stamped outside the window, or whose nonce was already taken
//! is refused and logged, and never reaches the application — so that even a party that
//! could write into the gateway's channel could not make it act on one request twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::mpsc;

use super::ClientError;
use super::conn::{Connection, Dialer, Inbound, Serving};
use crate::config::{ConfigError, read_toml, resolve};
use crate::envelope::{self, Direction, MasterKey, Nonce, ReplayGuard};
use crate::hl7::Message;
use crate::transport::{DEFAULT_MAX_FRAME, Frame};

/// A server application's configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This receiving system's facility id.
    pub facility: String,
    /// The credential file, resolved against the configuration file's folder.
    pub credential: PathBuf,
    /// Accept a credential file that its group or other users may read (never one they
    /// may write). False by default.
    pub credential_readable_by_others: bool,
    /// Gateways as `HOST:PORT`, tried in order.
    pub gateways: Vec<String>,
    /// The application names (MSH-5) whose requests it answers.
    pub applications: Vec<String>,
    /// How long connecting to one gateway may take.
    pub connect_timeout: Duration,
    /// How often an idle connection is pinged.
    pub keepalive: Duration,
    /// The largest frame sent or accepted.
    pub max_frame_bytes: usize,
    /// How far a request's time stamp may be from now.
    pub envelope_window: Duration,
    /// How many request nonces are remembered within the window; when that many are,
    /// further requests are refused until the oldest expire.
    pub replay_capacity: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    facility: String,
    credential: PathBuf,
    #[serde(default)]
    credential_readable_by_others: bool,
    gateways: Vec<String>,
    applications: Vec<String>,
    connect_timeout_secs: Option<u64>,
    keepalive_secs: Option<u64>,
    max_frame_bytes: Option<usize>,
    envelope_window_secs: Option<u64>,
    replay_capacity: Option<usize>,
}

impl ServerConfig {
    /// Reads `server.toml` at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let file: ServerFile = read_toml(path)?;
        if file.gateways.is_empty() {
            return Err(ConfigError::invalid(
                path,
                "gateways",
                "name at least one gateway, as HOST:PORT",
            ));
        }
        if file.applications.is_empty() || file.applications.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(
                path,
                "applications",
                "name the applications (MSH-5) to serve",
            ));
        }
        let secs = |key: &str, v: Option<u64>, default: u64| match v {
            Some(0) => Err(ConfigError::invalid(path, key, "must be at least 1")),
            Some(n) => Ok(Duration::from_secs(n)),
            None => Ok(Duration::from_secs(default)),
        };
        Ok(Self {
            facility: file.facility,
            credential: resolve(path, &file.credential),
            credential_readable_by_others: file.credential_readable_by_others,
            gateways: file.gateways,
            applications: file.applications,
            connect_timeout: secs("connect_timeout_secs", file.connect_timeout_secs, 10)?,
            keepalive: secs("keepalive_secs", file.keepalive_secs, 30)?,
            max_frame_bytes: file.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME).max(1024),
            envelope_window: secs("envelope_window_secs", file.envelope_window_secs, 300)?,
            replay_capacity: match file.replay_capacity {
                Some(0) => {
                    return Err(ConfigError::invalid(
                        path,
                        "replay_capacity",
                        "must be at least 1",
                    ));
                }
                Some(n) => n,
                None => DEFAULT_REPLAY_CAPACITY,
            },
        })
    }
}

/// How many request nonces a server application remembers by default: a day's worth
/// of a busy application's requests within the five-minute window, a few megabytes.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// A request routed to this server application.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// The id to answer it with ([`Server::respond`]).
    pub id: u64,
    /// The HL7 request, as its sender wrote it.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Request {{ id: {}, bytes: {} }}",
            self.id,
            self.bytes.len()
        )
    }
}

/// A request received and not yet answered: where its answer must go.
struct Outstanding {
    connection: Arc<Connection>,
    gateway_id: u64,
    nonce: Nonce,
    deadline: Instant,
}

struct Core {
    facility: String,
    key: MasterKey,
    outstanding: Mutex<HashMap<u64, Outstanding>>,
    /// The nonces of the requests taken within the window: the same guard as the
    /// gateway's, for this facility (the only one whose key opens its requests).
    replay: Mutex<ReplayGuard>,
    next_id: AtomicU64,
    /// True while a gateway has accepted this application's `Serve`.
    connected: tokio::sync::watch::Sender<bool>,
}

/// A server application: receive the requests routed to it, respond to each. Share one
/// between threads; not for use inside an async task.
pub struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    threads: super::Threads,
    core: Arc<Core>,
    /// An async lock: a waiting receive holds it while it waits, and a poll does not
    /// queue behind it (it finds the lock taken and returns at once).
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<Request>>,
    /// Becomes true at [`Server::shutdown`]: every waiting call returns at once.
    shut: tokio::sync::watch::Sender<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    connecting: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Opens a server application: reads the credential, and starts connecting to the
    /// gateways in the background (it keeps trying until it is closed).
    pub fn open(config: ServerConfig) -> Result<Self, ClientError> {
        let (credential, tls) = super::facility_tls(
            &config.facility,
            &config.credential,
            config.credential_readable_by_others,
        )?;
        let (runtime, threads) = super::Threads::runtime("hnapi-server").map_err(|e| {
            ClientError::Internal(format!("cannot start the server's runtime: {e}"))
        })?;
        let core = Arc::new(Core {
            facility: credential.facility.clone(),
            key: credential.key.clone(),
            outstanding: Mutex::new(HashMap::new()),
            replay: Mutex::new(ReplayGuard::new(
                config.envelope_window,
                config.replay_capacity,
            )),
            next_id: AtomicU64::new(1),
            connected: tokio::sync::watch::Sender::new(false),
        });
        let (to_inbox, inbox) = mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let connecting =
            runtime.spawn(keep_connected(core.clone(), config, tls, to_inbox, stopped));
        Ok(Self {
            runtime: Some(runtime),
            threads,
            core,
            inbox: tokio::sync::Mutex::new(inbox),
            shut: tokio::sync::watch::Sender::new(false),
            stop: Some(stop),
            connecting: Some(connecting),
        })
    }

    /// Opens a server application from the `server.toml` at `path`.
    pub fn open_file(path: &Path) -> Result<Self, ClientError> {
        Self::open(ServerConfig::from_file(path)?)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    /// Makes every call waiting on this server, in any thread, return
    /// [`ClientError::ShutDown`] at once, and every later call too.
    pub fn shutdown(&self) {
        self.shut.send_replace(true);
    }

    /// Waits up to `wait` for a gateway to accept this application (zero only looks):
    /// true when it is serving. Until then requests to its names are answered `HNPS007E`.
    pub fn wait_connected(&self, wait: Duration) -> Result<bool, ClientError> {
        let mut connected = self.core.connected.subscribe();
        if *connected.borrow() || wait.is_zero() {
            return Ok(*connected.borrow());
        }
        let mut shut = self.shut.subscribe();
        self.runtime().block_on(async {
            tokio::select! {
                _ = tokio::time::timeout(wait, crate::transport::until_true(&mut connected)) => {}
                () = crate::transport::until_true(&mut shut) => return Err(ClientError::ShutDown),
            }
            Ok(*connected.borrow())
        })
    }

    /// The next request, waiting up to `wait` (zero polls); `Ok(None)` when none came.
    /// Requests whose sender has already stopped waiting are skipped.
    pub fn receive(&self, wait: Duration) -> Result<Option<Request>, ClientError> {
        let mut shut = self.shut.subscribe();
        if *shut.borrow() {
            return Err(ClientError::ShutDown);
        }
        let deadline = Instant::now() + wait;
        loop {
            let next = if wait.is_zero() {
                // Another thread waiting holds the inbox: it takes what comes first.
                match self.inbox.try_lock() {
                    Ok(mut inbox) => inbox.try_recv().ok(),
                    Err(_) => None,
                }
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                self.runtime().block_on(async {
                    let next = async { self.inbox.lock().await.recv().await };
                    tokio::select! {
                        next = tokio::time::timeout(left, next) => Ok(next.ok().flatten()),
                        () = crate::transport::until_true(&mut shut) => Err(ClientError::ShutDown),
                    }
                })?
            };
            let Some(request) = next else {
                return Ok(None);
            };
            let live = self
                .core
                .outstanding
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&request.id)
                .is_some_and(|o| o.deadline > Instant::now());
            if live {
                return Ok(Some(request));
            }
            self.core.forget(request.id);
        }
    }

    /// Sends `answer` for the request `id`. The answer must be HL7 with a usable MSH.
    pub fn respond(&self, id: u64, answer: &[u8]) -> Result<(), ClientError> {
        if *self.shut.borrow() {
            return Err(ClientError::ShutDown);
        }
        Message::parse(answer).map_err(ClientError::InvalidFormat)?;
        let Some(outstanding) = self.core.take(id) else {
            return Err(ClientError::UnknownRequest);
        };
        let sealed = envelope::seal(
            &self.core.key,
            &self.core.facility,
            Direction::Response,
            &outstanding.nonce,
            envelope::now_ms(),
            answer,
        )
        .map_err(|e| ClientError::Encryption(e.to_string()))?;
        let frame = Frame::Response {
            id: outstanding.gateway_id,
            envelope: sealed.bytes,
        };
        self.runtime()
            .block_on(outstanding.connection.send(&frame))
            .map_err(|e| {
                ClientError::Connection(format!(
                    "the request's connection to the gateway is gone: {e}"
                ))
            })
    }
}

impl Core {
    /// The checks the gateway makes of its own requests: sealed for this facility, within
    /// the window, and a nonce not taken before.
    fn admit(&self, header: &envelope::Header) -> Result<(), String> {
        if header.facility != self.facility {
            return Err(format!(
                "sealed for facility {}, not this one",
                crate::hl7::printable(header.facility.as_bytes(), 32)
            ));
        }
        self.replay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(header, envelope::now_ms())
            .map_err(|e| e.to_string())
    }

    fn take(&self, id: u64) -> Option<Outstanding> {
        self.outstanding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    fn forget(&self, id: u64) {
        self.take(id);
    }

    /// Opens a request from the gateway and puts it in the inbox.
    fn accept(
        &self,
        connection: &Arc<Connection>,
        inbound: Inbound,
        inbox: &mpsc::UnboundedSender<Request>,
    ) {
        let opened = match envelope::open(&self.key, &inbound.envelope, Direction::Request) {
            Ok(opened) => opened,
            Err(e) => {
                log::warn!(
                    "security: a request from gateway {} did not open: {e}",
                    connection.gateway()
                );
                return;
            }
        };
        if let Err(why) = self.admit(&opened.header) {
            // The request is not answered: its sender (if there is a genuine one) was
            // answered the first time, and the gateway answers a timeout otherwise.
            log::warn!(
                "security: a request from gateway {} refused ({why}): facility {}, key {}, \
                 sealed at {} ms, nonce {}",
                connection.gateway(),
                crate::hl7::printable(opened.header.facility.as_bytes(), 32),
                opened.header.key_id,
                opened.header.timestamp_ms,
                hex(&opened.header.nonce),
            );
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut outstanding = self.outstanding.lock().unwrap_or_else(|e| e.into_inner());
        if outstanding.len() >= 4096 {
            // Requests never answered: the gateway gave up on them long ago.
            outstanding.retain(|_, o| o.deadline > now);
        }
        outstanding.insert(
            id,
            Outstanding {
                connection: connection.clone(),
                gateway_id: inbound.id,
                nonce: opened.header.nonce,
                deadline: now + Duration::from_millis(u64::from(inbound.timeout_ms)),
            },
        );
        drop(outstanding);
        let _ = inbox.send(Request {
            id,
            bytes: opened.plaintext,
        });
    }
}

/// Keeps one connection to a gateway up until `stopped`, handing its requests on.
async fn keep_connected(
    core: Arc<Core>,
    config: ServerConfig,
    tls: Arc<rustls::ClientConfig>,
    inbox: mpsc::UnboundedSender<Request>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut dialer = Dialer::new(&config.gateways);
    loop {
        let (to_requests, mut requests) = mpsc::unbounded_channel::<Inbound>();
        let dialled = dialer
            .dial(
                Instant::now() + config.connect_timeout * 2,
                config.connect_timeout,
                |addr, budget| {
                    let tls = tls.clone();
                    let serving = Serving {
                        applications: &config.applications,
                        inbound: to_requests.clone(),
                    };
                    let (keepalive, max_frame) = (config.keepalive, config.max_frame_bytes);
                    async move {
                        Connection::open(&addr, tls, budget, keepalive, max_frame, Some(serving))
                            .await
                    }
                },
            )
            .await;
        drop(to_requests);
        let Ok(connection) = dialled else {
            tokio::select! {
                () = tokio::time::sleep(dialer.wait().max(Duration::from_millis(100))) => continue,
                _ = &mut stopped => return,
            }
        };
        log::info!(
            "serving {:?} through gateway {}",
            config.applications,
            connection.gateway()
        );
        core.connected.send_replace(true);
        loop {
            tokio::select! {
                next = requests.recv() => match next {
                    Some(inbound) => core.accept(&connection, inbound, &inbox),
                    None => break, // the connection closed
                },
                () = connection.wait_closed() => break,
                _ = &mut stopped => {
                    connection.shutdown().await;
                    return;
                }
            }
        }
        core.connected.send_replace(false);
        log::warn!(
            "lost the connection to gateway {}; reconnecting",
            connection.gateway()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            if let Some(connecting) = self.connecting.take()
                && tokio::runtime::Handle::try_current().is_err()
            {
                // Let the connection say goodbye (TLS close_notify), briefly.
                runtime.block_on(async {
                    let _ = tokio::time::timeout(Duration::from_millis(500), connecting).await;
                });
            }
            super::stop_runtime(runtime, &self.threads);
        }
    }
}

/// A nonce as hexadecimal, for a log line.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
