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
//!
//! [`AsyncClient`] is the core, for code that runs its own tokio runtime (the client
//! daemon). [`Client`] wraps it with a small runtime of its own, for threads that block
//! (the C ABI, `hnsecure send`); both are safe to share between threads.

mod config;
mod conn;
pub mod credential;
mod register;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use config::{ClientConfig, DEFAULT_TIMEOUT};
pub use credential::Credential;
pub use register::{RegisterError, register};

use crate::config::ConfigError;
use crate::envelope::{self, Direction, EnvelopeError, MasterKey};
use crate::hl7::{self, Message, NetworkCode, NetworkComponent, ParseError};
use crate::transport::{Refusal, tls};
use conn::{Connection, OpenError, Reply};

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
    /// The ticket is unknown, or its answer was already received.
    UnknownTicket,
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
            Self::UnknownTicket => {
                f.write_str("unknown ticket, or its answer was already received")
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
    facility: String,
    key: MasterKey,
    tls: Arc<rustls::ClientConfig>,
    /// The live connection, if any.
    current: Mutex<Option<Arc<Connection>>>,
    /// Held while connecting, so concurrent requests share one attempt.
    link: tokio::sync::Mutex<Link>,
}

/// Which gateways to try, and when each may be tried again.
struct Link {
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

/// What connecting found.
enum LinkError {
    /// No gateway answered in time.
    Unreachable,
    /// A gateway was reached but refused this facility (TLS, certificate, revocation).
    Refused,
}

impl AsyncClient {
    /// A client for `config`: reads the credential and prepares TLS. It connects on the
    /// first request, not before.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let credential = Credential::read(&config.credential)?;
        if credential.facility != config.facility {
            return Err(ClientError::Config(ConfigError::invalid(
                &config.credential,
                "facility",
                format!(
                    "the credential is for {}, but the configuration says {}",
                    credential.facility, config.facility
                ),
            )));
        }
        let parts = credential.tls_parts().map_err(|e| {
            ClientError::Config(ConfigError::invalid(
                &config.credential,
                "certificate",
                e.to_string(),
            ))
        })?;
        let tls = tls::client_config(&parts.ca, Some((parts.chain, parts.key))).map_err(|e| {
            ClientError::Config(ConfigError::invalid(
                &config.credential,
                "private_key",
                e.to_string(),
            ))
        })?;
        let now = Instant::now();
        let link = Link {
            gateways: config
                .gateways
                .iter()
                .map(|addr| GatewayState {
                    addr: addr.clone(),
                    next_attempt: now,
                    backoff: FIRST_BACKOFF,
                })
                .collect(),
            preferred: 0,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                facility: credential.facility.clone(),
                key: credential.key.clone(),
                config,
                tls,
                current: Mutex::new(None),
                link: tokio::sync::Mutex::new(link),
            }),
        })
    }

    /// The configuration this client runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Sends `message` and returns its answer, within `timeout` (the configured default
    /// when `None`).
    pub async fn send_receive(
        &self,
        message: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Answer, ClientError> {
        let request = Message::parse(message).map_err(ClientError::InvalidFormat)?;
        if message.len() + 512 > self.inner.config.max_frame_bytes {
            return Err(ClientError::TooLarge {
                size: message.len(),
                max: self.inner.config.max_frame_bytes - 512,
            });
        }
        let timeout = timeout.unwrap_or(self.inner.config.timeout);
        let deadline = Instant::now() + timeout;
        let network = |code| Answer {
            bytes: hl7::network_ack(
                Some(&request),
                NetworkComponent::Hnapi,
                "",
                code,
                None,
                &hl7::now_pacific(),
            ),
            network_error: Some(code),
        };

        let connection = match self.connection(deadline).await {
            Ok(c) => c,
            Err(LinkError::Unreachable) => return Ok(network(NetworkCode::Txfr024E)),
            Err(LinkError::Refused) => return Ok(network(NetworkCode::Txfr029E)),
        };
        let inner = &self.inner;
        let sealed = envelope::seal(
            &inner.key,
            &inner.facility,
            Direction::Request,
            &[0; envelope::NONCE_LEN],
            envelope::now_ms(),
            message,
        )
        .map_err(|e| ClientError::Encryption(e.to_string()))?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        match connection.call(sealed.bytes, remaining).await {
            Reply::Response(sealed_answer) => {
                let opened = envelope::open(&inner.key, &sealed_answer, Direction::Response)
                    .map_err(|e: EnvelopeError| {
                        ClientError::Encryption(format!("the answer's envelope: {e}"))
                    })?;
                if opened.header.reply_to != sealed.nonce {
                    return Err(ClientError::Encryption(
                        "the answer is not for this request".into(),
                    ));
                }
                Ok(Answer {
                    bytes: opened.plaintext,
                    network_error: None,
                })
            }
            Reply::Refused(reason) if reason.is_envelope() => {
                Err(ClientError::Encryption(reason.to_string()))
            }
            Reply::Refused(Refusal::ShuttingDown) => Ok(network(NetworkCode::Txfr024E)),
            Reply::Refused(reason) => {
                log::warn!(
                    "gateway {} refused a request: {reason}",
                    connection.gateway()
                );
                Ok(network(NetworkCode::Txfr029E))
            }
            Reply::Lost | Reply::TimedOut => Ok(network(NetworkCode::Txfr024E)),
        }
    }

    /// The live connection, or a new one: gateways in order from the last one that
    /// worked, skipping any that failed too recently (backing off up to 5 s).
    async fn connection(&self, deadline: Instant) -> Result<Arc<Connection>, LinkError> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let inner = &self.inner;
        let Ok(mut link) = tokio::time::timeout_at(deadline.into(), inner.link.lock()).await else {
            return Err(LinkError::Unreachable);
        };
        if let Some(c) = self.live() {
            return Ok(c); // another request connected while this one waited
        }
        let count = link.gateways.len();
        let mut refused = false;
        for step in 0..count {
            let index = (link.preferred + step) % count;
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if link.gateways[index].next_attempt > now {
                continue;
            }
            let addr = link.gateways[index].addr.clone();
            let budget = inner.config.connect_timeout.min(deadline - now);
            let opened = Connection::open(
                &addr,
                inner.tls.clone(),
                budget,
                inner.config.keepalive,
                inner.config.max_frame_bytes,
            )
            .await;
            let gateway = &mut link.gateways[index];
            match opened {
                Ok(connection) => {
                    gateway.backoff = FIRST_BACKOFF;
                    link.preferred = index;
                    *inner.current.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(connection.clone());
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
            LinkError::Refused
        } else {
            LinkError::Unreachable
        })
    }

    /// Closes the connection to the gateway, if any (the next request connects again).
    pub async fn close(&self) {
        let current = self
            .inner
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(connection) = current {
            connection.shutdown().await;
        }
    }

    fn live(&self) -> Option<Arc<Connection>> {
        let current = self.inner.current.lock().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|c| c.is_alive()).cloned()
    }
}

/// A ticket for an answer still to come ([`Client::send`], [`Client::receive`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(pub u64);

type Outcome = Result<Answer, ClientError>;

/// The blocking client: [`AsyncClient`] on a small runtime of its own. Share one
/// between threads; every method may be called from many threads at once (but not from
/// inside an async task: use [`AsyncClient`] there).
pub struct Client {
    runtime: Option<tokio::runtime::Runtime>,
    core: AsyncClient,
    tickets: Mutex<HashMap<u64, oneshot::Receiver<Outcome>>>,
    next_ticket: AtomicU64,
}

impl Client {
    /// Opens a client for `config`.
    pub fn open(config: ClientConfig) -> Result<Self, ClientError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hnapi-client")
            .enable_all()
            .build()
            .map_err(|e| {
                ClientError::Internal(format!("cannot start the client's runtime: {e}"))
            })?;
        let core = {
            let _entered = runtime.enter();
            AsyncClient::new(config)?
        };
        Ok(Self {
            runtime: Some(runtime),
            core,
            tickets: Mutex::new(HashMap::new()),
            next_ticket: AtomicU64::new(1),
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
        self.runtime()
            .block_on(self.core.send_receive(message, timeout))
    }

    /// Starts a transaction and returns at once with its ticket. A message without a
    /// usable MSH is refused here, not later.
    pub fn send(&self, message: &[u8], timeout: Option<Duration>) -> Result<Ticket, ClientError> {
        Message::parse(message).map_err(ClientError::InvalidFormat)?;
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock_tickets().insert(ticket, rx);
        let core = self.core.clone();
        let message = message.to_vec();
        self.runtime().spawn(async move {
            let _ = tx.send(core.send_receive(&message, timeout).await);
        });
        Ok(Ticket(ticket))
    }

    /// The answer for `ticket`, waiting up to `wait` (zero polls). `Ok(None)` when it is
    /// not there yet; the ticket stays valid. Every transaction ends by its timeout.
    pub fn receive(&self, ticket: Ticket, wait: Duration) -> Result<Option<Answer>, ClientError> {
        let Some(mut rx) = self.lock_tickets().remove(&ticket.0) else {
            return Err(ClientError::UnknownTicket);
        };
        let ended = || ClientError::Internal("the transaction ended without an answer".into());
        let outcome = if wait.is_zero() {
            match rx.try_recv() {
                Ok(result) => Some(result),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => return Err(ended()),
            }
        } else {
            // The timer must be made inside the runtime, so the future is built there.
            match self
                .runtime()
                .block_on(async { tokio::time::timeout(wait, &mut rx).await })
            {
                Ok(Ok(result)) => Some(result),
                Ok(Err(_)) => return Err(ended()),
                Err(_) => None,
            }
        };
        match outcome {
            Some(result) => result.map(Some),
            None => {
                self.lock_tickets().insert(ticket.0, rx);
                Ok(None)
            }
        }
    }

    fn lock_tickets(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Receiver<Outcome>>> {
        self.tickets.lock().unwrap_or_else(|e| e.into_inner())
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
            runtime.shutdown_background();
        }
    }
}
