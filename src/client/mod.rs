//! The client core: what HNClient did. It seals each request in its own envelope,
//! carries it over mutual TLS to a gateway, and opens the answer (DESIGN 1, 3.4, 3.5).
//!
//! The rule of Volume 5 (2.1.2) holds here: when any HL7 answer exists — the receiver's,
//! or a network ACK from `HNAPI` for a timeout or a lost connection — the transaction
//! succeeds with that answer. An error means no valid answer could be formed: input
//! without a usable MSH, an envelope the gateway refused, bad configuration.
//!
//! | what happens                                   | the answer                          |
//! |------------------------------------------------|-------------------------------------|
//! | the receiver answers                           | its bytes, unchanged                |
//! | no gateway reachable, or the transaction times out, or the connection is lost | AR from `HNAPI`, `TXFR024E` |
//! | TLS or HNGard refuses this facility            | AR from `HNAPI`, `TXFR029E`         |
//! | the gateway refuses the envelope (replay, MAC) | [`ClientError::Encryption`]         |
//! | the input has no usable MSH                    | [`ClientError::InvalidFormat`]      |
//! | legacy mode: the HNClient is unreachable or silent | AR from `HNAPI`, `RECV022E` (2.5.1) |
//!
//! In legacy mode (`transport = "hl7xfer"`) requests go over HL7Xfer to an HNClient —
//! an old HNCLIENT.EXE or `hnsecure client` — instead of TLS to a gateway (DESIGN 3.3).
//!
//! [`AsyncClient`] is the core, for code that runs its own tokio runtime (the client
//! daemon). [`Client`] wraps it with a small runtime of its own, for threads that block
//! (the C ABI, `hnsecure send`); both are safe to share between threads.
#![forbid(unsafe_code)]

mod config;
mod conn;
pub mod credential;
pub mod daemon;
mod legacy;
mod register;
mod server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use config::{ClientConfig, DEFAULT_TIMEOUT, ListenConfig, MllpTls, Transport};
pub use credential::Credential;
pub use register::{RegisterError, register, renew};
pub use server::{Request, Server, ServerConfig};

use crate::config::ConfigError;
use crate::envelope::{self, Direction, EnvelopeError, MasterKey};
use crate::hl7::{self, Message, NetworkCode, NetworkComponent, ParseError};
use crate::transport::{Refusal, tls};
use conn::{Connection, DialError, Dialer, Reply};

/// An answer to a request: the receiver's bytes, or a network ACK made by this library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The HL7 answer, byte for byte as its author wrote it.
    pub bytes: Vec<u8>,
    /// When the library itself answered (a network ACK from `HNAPI`), the condition.
    pub network_error: Option<NetworkCode>,
}

/// Why no HL7 answer could be formed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The input has no usable MSH segment, so no answer can name it.
    InvalidFormat(ParseError),
    /// The request is larger than a frame may be.
    TooLarge {
        /// The request's size.
        size: usize,
        /// The largest allowed.
        max: usize,
    },
    /// The gateway refused the envelope (replay, time window, MAC), or the answer's
    /// envelope did not open.
    Encryption(String),
    /// The configuration or credential cannot be used.
    Config(ConfigError),
    /// The configuration names one facility and the credential is another's.
    DomainMismatch {
        /// The facility of the credential.
        credential: String,
        /// The facility of the configuration.
        configured: String,
    },
    /// The ticket is unknown, or its answer was already received.
    UnknownTicket,
    /// A server application answered a request id it does not have (unknown, already
    /// answered, or given up on by the gateway).
    UnknownRequest,
    /// The connection a server application's request came on is gone, so its answer
    /// cannot be delivered.
    Connection(String),
    /// The client or server was shut down ([`Client::shutdown`], [`Server::shutdown`]).
    ShutDown,
    /// The client could not start (its runtime, or its TLS configuration).
    Internal(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidFormat(e) => {
                write!(f, "the input is not an HL7 message with a usable MSH: {e}")
            }
            Self::TooLarge { size, max } => {
                write!(f, "the message is {size} bytes; at most {max} may be sent")
            }
            Self::Encryption(why) => write!(f, "encryption failed: {why}"),
            Self::Config(e) => write!(f, "{e}"),
            Self::DomainMismatch {
                credential,
                configured,
            } => write!(
                f,
                "the credential is for facility {credential}, but the configuration says {configured}"
            ),
            Self::UnknownTicket => {
                f.write_str("unknown ticket, or its answer was already received")
            }
            Self::UnknownRequest => f.write_str(
                "unknown request id: never received, already answered, or no longer awaited",
            ),
            Self::Connection(why) => write!(f, "{why}"),
            Self::ShutDown => {
                f.write_str("shut down: no call waits any more, and none is accepted")
            }
            Self::Internal(why) => write!(f, "internal error: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<ConfigError> for ClientError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// The asynchronous client core. Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct AsyncClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    /// Who signs the network ACKs this core makes: `HNAPI` in an application, `HNCLIENT`
    /// in the client daemon.
    component: NetworkComponent,
    /// MSH-4 of those ACKs: blank for `HNAPI` (2.5.1), the facility for `HNCLIENT`.
    ack_facility: String,
    route: Route,
}

/// How requests leave this core.
enum Route {
    /// TLS to the gateways, with the facility's credential.
    Gateway(GatewayRoute),
    /// HL7Xfer to an HNClient (legacy mode).
    Hl7Xfer(legacy::Hnclient),
}

struct GatewayRoute {
    facility: String,
    key: MasterKey,
    /// The credential file, and the TLS configuration made from it: read again when the
    /// file changes (a renewed certificate), at the next connection.
    credential: std::path::PathBuf,
    /// client.toml's `credential_readable_by_others`.
    readable_by_others: bool,
    tls: Mutex<(Option<FileStamp>, Arc<rustls::ClientConfig>)>,
    /// The live connection, if any.
    current: Mutex<Option<Arc<Connection>>>,
    /// Held while connecting, so concurrent requests share one attempt.
    dialer: tokio::sync::Mutex<Dialer>,
}

/// A file's modification time and size, to notice that it changed.
type FileStamp = (std::time::SystemTime, u64);

fn stamp(path: &std::path::Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl GatewayRoute {
    /// The TLS configuration to connect with: the credential file's, read again if it
    /// changed since. A file that now holds another facility or another envelope key (a
    /// new registration) is not taken up while running: that needs a restart.
    fn tls(&self) -> Arc<rustls::ClientConfig> {
        let mut tls = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamp(&self.credential);
        if now.is_some() && now != tls.0 {
            tls.0 = now;
            match facility_tls(&self.facility, &self.credential, self.readable_by_others) {
                Ok((credential, config))
                    if credential.key.id() == self.key.id()
                        && credential.key.as_bytes() == self.key.as_bytes() =>
                {
                    log::info!(
                        "credential {} changed: new connections use its certificate",
                        self.credential.display()
                    );
                    tls.1 = config;
                }
                Ok(_) => log::warn!(
                    "credential {} now holds another envelope key (a new registration): restart to use it",
                    self.credential.display()
                ),
                Err(e) => log::warn!(
                    "credential {} changed but cannot be used ({e}); the one read before stays",
                    self.credential.display()
                ),
            }
        }
        tls.1.clone()
    }
}

/// The facility's credential at `path` (refused when other users may change it, or read
/// it unless `readable_by_others`), checked to be `facility`'s, and a TLS client
/// configuration presenting its certificate and trusting only HNGard's CA.
fn facility_tls(
    facility: &str,
    path: &std::path::Path,
    readable_by_others: bool,
) -> Result<(Credential, Arc<rustls::ClientConfig>), ClientError> {
    let credential = Credential::read_with(path, readable_by_others)?;
    if credential.facility != facility {
        return Err(ClientError::DomainMismatch {
            credential: credential.facility,
            configured: facility.to_owned(),
        });
    }
    let invalid = |key: &str, e: tls::TlsError| {
        ClientError::Config(ConfigError::invalid(path, key, e.to_string()))
    };
    let parts = credential
        .tls_parts()
        .map_err(|e| invalid("certificate", e))?;
    let tls = tls::client_config(&parts.ca, Some((parts.chain, parts.key)))
        .map_err(|e| invalid("private_key", e))?;
    Ok((credential, tls))
}

impl AsyncClient {
    /// A client for `config`, as an application's library (its network ACKs come from
    /// `HNAPI`): reads the credential and prepares TLS, or in legacy mode notes the
    /// HNClient. It connects on the first request, not before.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        Self::answering_as(config, NetworkComponent::Hnapi)
    }

    /// A client whose network ACKs come from `component`: `HNAPI` (blank MSH-4, as
    /// 2.5.1 shows) or `HNCLIENT`/`HNGATE` (MSH-4 the configured facility).
    pub fn answering_as(
        config: ClientConfig,
        component: NetworkComponent,
    ) -> Result<Self, ClientError> {
        let route = match &config.transport {
            Transport::Gateway => {
                let Some(path) = config.credential.as_deref() else {
                    return Err(ClientError::Config(ConfigError::invalid(
                        std::path::Path::new("client.toml"),
                        "credential",
                        "name the credential file from `hnsecure client register`",
                    )));
                };
                let read_at = stamp(path);
                let (credential, tls) =
                    facility_tls(&config.facility, path, config.credential_readable_by_others)?;
                Route::Gateway(GatewayRoute {
                    facility: credential.facility.clone(),
                    key: credential.key.clone(),
                    credential: path.to_path_buf(),
                    readable_by_others: config.credential_readable_by_others,
                    tls: Mutex::new((read_at, tls)),
                    current: Mutex::new(None),
                    dialer: tokio::sync::Mutex::new(Dialer::new(&config.gateways)),
                })
            }
            Transport::Hl7Xfer(address) => Route::Hl7Xfer(legacy::Hnclient::new(
                address.clone(),
                config.connect_timeout,
                config.max_frame_bytes,
            )),
        };
        let ack_facility = match component {
            NetworkComponent::Hnapi => String::new(),
            _ => config.facility.clone(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                component,
                ack_facility,
                route,
            }),
        })
    }

    /// The configuration this client runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The network ACK this core gives for `request` (or for no readable request).
    fn network_ack(&self, request: Option<&Message<'_>>, code: NetworkCode) -> Answer {
        Answer {
            bytes: hl7::network_ack(
                request,
                self.inner.component,
                &self.inner.ack_facility,
                code,
                None,
                &hl7::now_pacific(),
            ),
            network_error: Some(code),
        }
    }

    /// Sends `message` and returns its answer, within `timeout` (the configured default
    /// when `None`).
    pub async fn send_receive(
        &self,
        message: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Answer, ClientError> {
        let request = Message::parse(message).map_err(ClientError::InvalidFormat)?;
        self.check_size(message)?;
        crate::test_panic("transaction");
        let timeout = timeout.unwrap_or(self.inner.config.timeout);
        let deadline = Instant::now() + timeout;
        match &self.inner.route {
            Route::Gateway(route) => {
                let code = match self.through_gateway(route, message, deadline).await? {
                    Ok(answer) => return Ok(answer),
                    Err(code) => code,
                };
                Ok(self.network_ack(Some(&request), code))
            }
            Route::Hl7Xfer(hnclient) => match hnclient.exchange(message, deadline).await {
                Ok(bytes) => Ok(Answer {
                    bytes,
                    network_error: None,
                }),
                Err(e) => {
                    log::warn!("HNCLIENT {}: {e}", hnclient.address());
                    Ok(self.network_ack(Some(&request), NetworkCode::Recv022E))
                }
            },
        }
    }

    /// Like [`AsyncClient::send_receive`], but every outcome is an HL7 answer: what
    /// cannot be sent is answered with an AR from this core's component, naming why
    /// (the client daemon's rule: no request goes unanswered).
    ///
    /// | error | code |
    /// |---|---|
    /// | no usable MSH | `VLDT004E`, `VLDT007E` or `HNPS002E` |
    /// | too large | `XFER003E` |
    /// | envelope refused | `TXFR029E` |
    /// | anything else | `TXFR024E` |
    pub async fn answer(&self, message: &[u8], timeout: Option<Duration>) -> Answer {
        let error = match self.send_receive(message, timeout).await {
            Ok(answer) => return answer,
            Err(e) => e,
        };
        let request = Message::parse(message).ok();
        let code = match &error {
            ClientError::InvalidFormat(e) => e.network_code(),
            ClientError::TooLarge { .. } => NetworkCode::Xfer003E,
            ClientError::Encryption(_) => NetworkCode::Txfr029E,
            _ => NetworkCode::Txfr024E,
        };
        if !matches!(error, ClientError::InvalidFormat(_)) {
            log::warn!("a request could not be sent: {error}");
        }
        self.network_ack(request.as_ref(), code)
    }

    /// One transaction through the gateway: the answer, or the network code to answer
    /// with, or an error.
    async fn through_gateway(
        &self,
        route: &GatewayRoute,
        message: &[u8],
        deadline: Instant,
    ) -> Result<Result<Answer, NetworkCode>, ClientError> {
        let connection = match self.connection(route, deadline).await {
            Ok(c) => c,
            Err(DialError::Unreachable) => return Ok(Err(NetworkCode::Txfr024E)),
            Err(DialError::Refused) => return Ok(Err(NetworkCode::Txfr029E)),
        };
        let sealed = envelope::seal(
            &route.key,
            &route.facility,
            Direction::Request,
            &[0; envelope::NONCE_LEN],
            envelope::now_ms(),
            message,
        )
        .map_err(|e| ClientError::Encryption(e.to_string()))?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        match connection.call(sealed.bytes, remaining).await {
            Reply::Response(sealed_answer) => {
                let opened = envelope::open(&route.key, &sealed_answer, Direction::Response)
                    .map_err(|e: EnvelopeError| {
                        ClientError::Encryption(format!("the answer's envelope: {e}"))
                    })?;
                if opened.header.reply_to != sealed.nonce {
                    return Err(ClientError::Encryption(
                        "the answer is not for this request".into(),
                    ));
                }
                Ok(Ok(Answer {
                    bytes: opened.plaintext,
                    network_error: None,
                }))
            }
            Reply::Refused(reason) if reason.is_envelope() => {
                Err(ClientError::Encryption(reason.to_string()))
            }
            Reply::Refused(Refusal::ShuttingDown) => Ok(Err(NetworkCode::Txfr024E)),
            // The gateway refused it unopened; the AR is built here, in the gateway's
            // name (MSH-3 HNGATE; its facility id is not known here, so MSH-4 is blank).
            Reply::Refused(Refusal::RateLimited) => Ok(Ok(Answer {
                bytes: hl7::network_ack(
                    Message::parse(message).ok().as_ref(),
                    hl7::NetworkComponent::Hngate,
                    "",
                    NetworkCode::Hnps008E,
                    None,
                    &hl7::now_pacific(),
                ),
                network_error: Some(NetworkCode::Hnps008E),
            })),
            Reply::Refused(reason) => {
                log::warn!(
                    "gateway {} refused a request: {reason}",
                    connection.gateway()
                );
                Ok(Err(NetworkCode::Txfr029E))
            }
            Reply::Lost | Reply::TimedOut => Ok(Err(NetworkCode::Txfr024E)),
        }
    }

    /// Refuses a message too large for one frame (its envelope adds a header, a MAC and
    /// up to 8 bytes of padding; 512 bytes cover them).
    pub(crate) fn check_size(&self, message: &[u8]) -> Result<(), ClientError> {
        let max = self.inner.config.max_frame_bytes - 512;
        if message.len() > max {
            return Err(ClientError::TooLarge {
                size: message.len(),
                max,
            });
        }
        Ok(())
    }

    /// The live connection, or a new one (see [`Dialer`]).
    async fn connection(
        &self,
        route: &GatewayRoute,
        deadline: Instant,
    ) -> Result<Arc<Connection>, DialError> {
        if let Some(c) = route.live() {
            return Ok(c);
        }
        let Ok(mut dialer) = tokio::time::timeout_at(deadline.into(), route.dialer.lock()).await
        else {
            return Err(DialError::Unreachable);
        };
        if let Some(c) = route.live() {
            return Ok(c); // another request connected while this one waited
        }
        let config = &self.inner.config;
        let connection = dialer
            .dial(deadline, config.connect_timeout, |addr, budget| {
                let tls = route.tls();
                async move {
                    Connection::open(
                        &addr,
                        tls,
                        budget,
                        config.keepalive,
                        config.max_frame_bytes,
                        None,
                    )
                    .await
                }
            })
            .await?;
        *route.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(connection.clone());
        Ok(connection)
    }

    /// Closes the connection to the gateway, if any (the next request connects again).
    pub async fn close(&self) {
        let Route::Gateway(route) = &self.inner.route else {
            return; // legacy mode holds no connection between transactions
        };
        let current = route
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(connection) = current {
            connection.shutdown().await;
        }
    }
}

impl GatewayRoute {
    fn live(&self) -> Option<Arc<Connection>> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|c| c.is_alive()).cloned()
    }
}

/// A ticket for an answer still to come ([`Client::send`], [`Client::receive`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(pub u64);

type Outcome = Result<Answer, ClientError>;

/// A transaction started with [`Client::send`]: its outcome once it has one. Shared, so
/// that several threads may wait on the same ticket.
struct Slot {
    outcome: Mutex<Option<Outcome>>,
    done: tokio::sync::watch::Sender<bool>,
}

/// Completes its slot when dropped: with the outcome given, or — should the task end
/// without one (a panic) — with an internal error, so no ticket waits forever.
struct Completion(Arc<Slot>);

impl Completion {
    fn complete(self, outcome: Outcome) {
        *self.0.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let mut outcome = self.0.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if outcome.is_none() {
            *outcome = Some(Err(ClientError::Internal(
                "the transaction ended without an answer".into(),
            )));
        }
        drop(outcome);
        self.0.done.send_replace(true);
    }
}

/// The blocking client: [`AsyncClient`] on a small runtime of its own. Share one
/// between threads; every method may be called from many threads at once (but not from
/// inside an async task: use [`AsyncClient`] there).
pub struct Client {
    runtime: Option<tokio::runtime::Runtime>,
    threads: Threads,
    core: AsyncClient,
    tickets: Mutex<HashMap<u64, Arc<Slot>>>,
    next_ticket: AtomicU64,
    /// Becomes true at [`Client::shutdown`]: every waiting call returns at once.
    shut: tokio::sync::watch::Sender<bool>,
}

impl Client {
    /// Opens a client for `config`.
    pub fn open(config: ClientConfig) -> Result<Self, ClientError> {
        let (runtime, threads) = Threads::runtime("hnapi-client").map_err(|e| {
            ClientError::Internal(format!("cannot start the client's runtime: {e}"))
        })?;
        let core = {
            let _entered = runtime.enter();
            AsyncClient::new(config)?
        };
        Ok(Self {
            runtime: Some(runtime),
            threads,
            core,
            tickets: Mutex::new(HashMap::new()),
            next_ticket: AtomicU64::new(1),
            shut: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Makes every call waiting on this client, in any thread, return
    /// [`ClientError::ShutDown`] at once, and every later call too; transactions in flight
    /// are abandoned (their answers, if they come, are dropped).
    pub fn shutdown(&self) {
        self.shut.send_replace(true);
    }

    fn is_shut(&self) -> bool {
        *self.shut.borrow()
    }

    /// Runs `work` on the runtime unless or until the client is shut down.
    fn until_shutdown<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let mut shut = self.shut.subscribe();
        self.runtime().block_on(async move {
            tokio::select! {
                result = work => result,
                () = crate::transport::until_true(&mut shut) => Err(ClientError::ShutDown),
            }
        })
    }

    /// Opens a client from the `client.toml` at `path`.
    pub fn open_file(path: &std::path::Path) -> Result<Self, ClientError> {
        Self::open(ClientConfig::from_file(path)?)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    /// The asynchronous core.
    pub fn core(&self) -> &AsyncClient {
        &self.core
    }

    /// Sends `message` and waits for its answer (see [`AsyncClient::send_receive`]).
    pub fn send_receive(
        &self,
        message: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Answer, ClientError> {
        self.until_shutdown(self.core.send_receive(message, timeout))
    }

    /// Starts a transaction and returns at once with its ticket. A message without a
    /// usable MSH, or too large to send, is refused here, not later.
    pub fn send(&self, message: &[u8], timeout: Option<Duration>) -> Result<Ticket, ClientError> {
        if self.is_shut() {
            return Err(ClientError::ShutDown);
        }
        Message::parse(message).map_err(ClientError::InvalidFormat)?;
        self.core.check_size(message)?;
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            outcome: Mutex::new(None),
            done: tokio::sync::watch::Sender::new(false),
        });
        self.lock_tickets().insert(ticket, slot.clone());
        let core = self.core.clone();
        let message = message.to_vec();
        self.runtime().spawn(async move {
            // Whatever happens to this task, the slot is completed (see `Completion`).
            let completion = Completion(slot);
            let outcome = core.send_receive(&message, timeout).await;
            completion.complete(outcome);
        });
        Ok(Ticket(ticket))
    }

    /// The answer for `ticket`, waiting up to `wait` (zero polls). `Ok(None)` when it is
    /// not there yet; the ticket stays valid, for this thread and any other. Every
    /// transaction ends by its timeout. Once one caller has the answer, the ticket is gone.
    pub fn receive(&self, ticket: Ticket, wait: Duration) -> Result<Option<Answer>, ClientError> {
        if self.is_shut() {
            return Err(ClientError::ShutDown);
        }
        let Some(slot) = self.lock_tickets().get(&ticket.0).cloned() else {
            return Err(ClientError::UnknownTicket);
        };
        if !*slot.done.borrow() && !wait.is_zero() {
            let mut done = slot.done.subscribe();
            // The timer must be made inside the runtime, so the future is built there.
            self.until_shutdown(async move {
                let _ = tokio::time::timeout(wait, crate::transport::until_true(&mut done)).await;
                Ok(())
            })?;
        }
        if !*slot.done.borrow() {
            return Ok(None);
        }
        let taken = slot
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match taken {
            Some(outcome) => {
                self.lock_tickets().remove(&ticket.0);
                outcome.map(Some)
            }
            // Another thread took the answer a moment ago.
            None => Err(ClientError::UnknownTicket),
        }
    }

    fn lock_tickets(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.tickets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The threads of a client's or server application's runtime, counted as they start
/// and stop, so that stopping the runtime can wait until none is left.
#[derive(Clone, Default)]
pub(crate) struct Threads(Arc<(Mutex<usize>, std::sync::Condvar)>);

impl Threads {
    /// A small runtime (two workers) whose threads are named `name` and counted.
    pub(crate) fn runtime(name: &str) -> std::io::Result<(tokio::runtime::Runtime, Self)> {
        let threads = Self::default();
        let (started, stopped) = (threads.clone(), threads.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .on_thread_start(move || *started.count() += 1)
            .on_thread_stop(move || {
                *stopped.count() -= 1;
                stopped.0.1.notify_all();
            })
            .build()?;
        Ok((runtime, threads))
    }

    fn count(&self) -> std::sync::MutexGuard<'_, usize> {
        self.0.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every thread has stopped, however long that takes.
    fn wait_stopped(&self) {
        let mut count = self.count();
        while *count > 0 {
            count = self.0.1.wait(count).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Stops a client's or server application's runtime. Outside an async runtime it gives
/// the runtime's tasks a second to finish, then waits for its threads to end, however
/// long that takes (a thread may be inside the host's log callback, or in a name
/// lookup), so that a host may unload the library once `*_close` has returned and
/// opening and closing in a loop leaves no threads behind. Inside an async runtime (one
/// of its own threads included), where blocking is not allowed, it lets them finish
/// alone.
pub(crate) fn stop_runtime(runtime: tokio::runtime::Runtime, threads: &Threads) {
    if tokio::runtime::Handle::try_current().is_err() {
        runtime.shutdown_timeout(Duration::from_secs(1));
        threads.wait_stopped();
    } else {
        runtime.shutdown_background();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Say goodbye to the gateway (TLS close_notify), briefly, unless this thread
            // is inside an async runtime, where blocking is not allowed.
            if tokio::runtime::Handle::try_current().is_err() {
                let core = self.core.clone();
                runtime.block_on(async move {
                    let _ = tokio::time::timeout(Duration::from_millis(500), core.close()).await;
                });
            }
            stop_runtime(runtime, &self.threads);
        }
    }
}
