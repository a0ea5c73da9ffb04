//! MLLP destinations: receiving systems the gateway reaches over MLLP, plain
//! (`mllp://`) or over TLS (`mllps://`).
//!
//! Each destination keeps a small pool of idle connections; a request takes one (or
//! opens one), writes its frame, and reads one answer within the route's timeout. An
//! answer is handed to its sender only when its MSA-2 is the request's MSH-10: a late
//! answer, an answer to another request, or anything unexpected on an idle connection
//! ends that connection, so no answer can ever reach the wrong sender. A connection that
//! timed out, broke, or carried a wrong answer is never reused.
//!
//! Just before an idle connection carries a request it is checked, and dropped (the
//! request then takes another, or a new one) when the receiver sent anything on it since
//! its last answer: bytes, or a close. The check asks the socket itself, not tokio's
//! record of its readiness, which lags when the reactor has not run since the bytes came;
//! over TLS it also looks at what rustls has decrypted and not yet handed over.
//!
//! No check can see a close the receiver has not made yet. Many receivers close after
//! each answer (python's hl7apy `MLLPServer` among them), some a little while after
//! writing it: hl7apy's socket is only closed when its handler's buffered files are, and
//! on a busy machine that can come a few milliseconds after the answer, after a quick
//! sender's next request was written. That request reached the receiver's socket but never
//! its application, which then closes the connection with unread data: a reset, and an
//! AR `TXFR024E` although the receiver never saw the request. So each destination learns
//! its receiver's habit ([`Habit`]): until a connection has been seen kept open after an
//! answer, an idle connection is reused only once it has waited [`SETTLE`] (time for a
//! closing receiver's close to arrive, and be seen by the check; a request that finds only
//! younger ones waits for the oldest, once); once a connection was found closed soon after
//! its answer, or lost on reuse, connections are not kept at all for [`RELEARN`], then the
//! habit is learnt again.
//!
//! A receiver that answers another request on a kept connection (node-hl7-server 2.5
//! keeps what it read on a connection and answers its second message with the first one's
//! MSA-2) has that answer refused (`TXFR024E`, as any wrong answer) and, since it would do
//! so again, no connection to it is kept from then on ([`Habit::Mixes`]), for as long as
//! the gateway runs: each request then has a connection of its own.
//!
//! A request that certainly did not reach the receiver — the connection failed while it
//! was being written, so its frame's end never left — is sent once more, on a new
//! connection. One that may have arrived (written whole, then the connection closed or
//! reset with nothing read back) is never sent twice (Volume 5, 2.4.8): it is answered
//! `TXFR024E`.
//!
//! A request that MLLP cannot frame unambiguously (one holding `0x0B` or `0x1C`) is not
//! sent: [`MllpFailure::Unframeable`].
//!
//! When connecting fails, the destination backs off (250 ms, doubling to 5 s): requests
//! in that time are answered at once (`TXFR024E` from HNGATE) rather than each waiting
//! for a connect timeout.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::config::MllpTarget;
use crate::hl7::{Message, Path};
use crate::transport::tls;
use crate::xfer::mllp::{self, EncodeError, MllpReader};

/// A connection to a receiving system, plain or TLS: a type of its own rather than a
/// boxed stream, so the pool can look beneath the TLS layer at the socket.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What an idle connection shows when it is about to be reused.
#[derive(Debug)]
enum IdleState {
    /// Nothing came since its last answer: it may carry a request.
    Quiet,
    /// Bytes came (or lie read and not yet taken, in the reader's buffer or in rustls).
    Bytes,
    /// The receiver closed it.
    Closed,
    /// The socket reports an error.
    Failed(io::Error),
}

/// Whether anything came on `reader` since its last answer, without waiting and without
/// taking anything. Each layer is asked in turn, from the top: the MLLP reader's buffer,
/// then (TLS) rustls' plaintext and close_notify, then the socket itself.
fn idle_state(reader: &mut MllpReader<Stream>) -> IdleState {
    if !reader.is_between_frames() {
        return IdleState::Bytes;
    }
    let tcp = match reader.get_mut() {
        Stream::Plain(tcp) => &*tcp,
        Stream::Tls(tls) => {
            let (tcp, conn) = tls.get_ref();
            // After the handshake rustls wants to read unless it holds plaintext not yet
            // handed over, or the receiver sent close_notify.
            if !conn.wants_read() {
                return IdleState::Bytes;
            }
            tcp
        }
    };
    // Bytes of a TLS record that carries no data (a session ticket, a key update) count
    // too: dropping such a connection costs a handshake, keeping a wrong one an answer.
    match peek(tcp) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => IdleState::Quiet,
        Ok(0) => IdleState::Closed,
        Ok(_) => IdleState::Bytes,
        Err(e) => IdleState::Failed(e),
    }
}

/// Peeks at `tcp`'s socket without waiting: `WouldBlock` when nothing is there, `Ok(0)`
/// when the peer closed. tokio's `peek` and `try_read` answer from the reactor's record of
/// readiness, which can be behind the socket; a duplicate of the descriptor asks the
/// socket itself (the duplicate shares the socket and its non-blocking mode, and closing
/// it leaves the socket open).
fn peek(tcp: &TcpStream) -> io::Result<usize> {
    #[cfg(unix)]
    let owned = std::os::fd::AsFd::as_fd(tcp).try_clone_to_owned()?;
    #[cfg(windows)]
    let owned = std::os::windows::io::AsSocket::as_socket(tcp).try_clone_to_owned()?;
    let socket = std::net::TcpStream::from(owned);
    // Already so (tokio's sockets are non-blocking); set again so a peek can never wait.
    socket.set_nonblocking(true)?;
    socket.peek(&mut [0u8; 1])
}

/// An idle connection waiting in the pool.
struct Idle {
    reader: MllpReader<Stream>,
    since: Instant,
}

/// How long a connection may sit idle in the pool before it is closed.
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// While a destination's [`Habit`] is unknown, how long an idle connection waits in the
/// pool before it may carry a request: a receiver that closes after each answer has
/// closed it by then.
const SETTLE: Duration = Duration::from_millis(200);
/// A connection found closed within this time of its answer shows a receiver that closes
/// after each answer (one that closes idle connections takes longer).
const CLOSE_EVIDENCE: Duration = Duration::from_secs(2);
/// How long a destination whose receiver closes after each answer keeps no connections
/// before trying again (the receiving system may have been replaced).
const RELEARN: Duration = Duration::from_secs(600);
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why a destination gave no answer. Each is answered `TXFR024E` by HNGATE, except
/// `NotHl7`.
#[derive(Debug, PartialEq, Eq)]
pub enum MllpFailure {
    /// The request holds a byte that MLLP framing cannot carry (`0x0B` or `0x1C`); it was
    /// not sent. Admission refuses such requests before they come here.
    Unframeable(EncodeError),
    /// It could not be reached (or is in its backoff after failing to be).
    Unreachable(String),
    /// It did not answer within the timeout.
    TimedOut,
    /// The connection broke, or closed before a whole answer.
    Closed(String),
    /// It answered another request (MSA-2 is not the request's MSH-10).
    WrongAnswer {
        /// The MSA-2 it gave.
        msa2: String,
    },
    /// The answer is not HL7 with an MSA segment.
    NotHl7,
}

impl std::fmt::Display for MllpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unframeable(e) => write!(f, "not sent: {e}"),
            Self::Unreachable(why) => write!(f, "unreachable: {why}"),
            Self::TimedOut => f.write_str("no answer within the route's timeout"),
            Self::Closed(why) => write!(f, "connection lost before a whole answer: {why}"),
            Self::WrongAnswer { msa2 } => write!(
                f,
                "answered another request (MSA-2 {msa2:?}); connection dropped"
            ),
            Self::NotHl7 => f.write_str("answered something that is not an HL7 ACK"),
        }
    }
}

/// What a destination has seen its receiver do with a connection after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Habit {
    /// Nothing yet: an idle connection is reused only after [`SETTLE`].
    Unknown,
    /// A connection was kept open after an answer and carried another request: idle
    /// connections are reused at once.
    Keeps,
    /// A connection was found closed soon after its answer, or lost on reuse, at this
    /// time: no connection is kept until [`RELEARN`] has passed.
    Closes(Instant),
    /// A kept connection carried an answer to another request (node-hl7-server 2.5 keeps
    /// what it read on a connection and answers the second message with the first one's
    /// MSA-2): no connection is kept for the destination's life.
    Mixes,
}

impl Habit {
    /// The habit as it stands now (a `Closes` older than [`RELEARN`] is forgotten).
    fn now(self) -> Self {
        match self {
            Self::Closes(since) if since.elapsed() >= RELEARN => Self::Unknown,
            other => other,
        }
    }
}

/// How one attempt to carry a request ended without an answer.
enum Attempt {
    /// The connection failed while the request was written: its frame's end never left,
    /// so the receiver cannot have taken it.
    NotSent(String),
    /// Anything else: the receiver may have taken the request.
    Failed(MllpFailure),
}

struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

/// One MLLP receiving system, its pool and its backoff.
pub struct MllpDestination {
    target: MllpTarget,
    name: String,
    tls: Option<(TlsConnector, rustls_pki_types::ServerName<'static>)>,
    max_frame: usize,
    pool: Mutex<Vec<Idle>>,
    habit: Mutex<Habit>,
    backoff: Mutex<Backoff>,
}

impl MllpDestination {
    /// A destination for `target`, reading its TLS files now (so a mistake stops the
    /// gateway at start, not at the first request).
    pub fn new(target: &MllpTarget, max_frame: usize) -> Result<Self, String> {
        let tls = match &target.tls {
            None => None,
            Some(files) => {
                let read = |p: &std::path::Path| {
                    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
                };
                let ca = tls::certificates_from_pem(&read(&files.ca)?)
                    .map_err(|e| format!("{}: {e}", files.ca.display()))?;
                let identity = match &files.client {
                    None => None,
                    Some((cert, key)) => Some((
                        tls::certificates_from_pem(&read(cert)?)
                            .map_err(|e| format!("{}: {e}", cert.display()))?,
                        tls::private_key_from_pem(&read(key)?)
                            .map_err(|e| format!("{}: {e}", key.display()))?,
                    )),
                };
                let config = tls::mllp_client_config(&ca, identity).map_err(|e| e.to_string())?;
                let name = tls::server_name(&target.address).map_err(|e| e.to_string())?;
                Some((TlsConnector::from(config), name))
            }
        };
        let scheme = if tls.is_some() { "mllps" } else { "mllp" };
        Ok(Self {
            name: format!("{scheme}://{}", target.address),
            target: target.clone(),
            tls,
            max_frame,
            pool: Mutex::new(Vec::new()),
            habit: Mutex::new(Habit::Unknown),
            backoff: Mutex::new(Backoff {
                failures: 0,
                until: None,
            }),
        })
    }

    /// `mllp://HOST:PORT` or `mllps://HOST:PORT`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `request` (whose MSH-10 is `control_id`) and returns the receiver's answer,
    /// within `timeout`. A request that certainly did not reach the receiver is sent once
    /// more, on a new connection (see the module's documentation).
    pub async fn call(
        &self,
        request: &[u8],
        control_id: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, MllpFailure> {
        let deadline = Instant::now() + timeout;
        // Framed before any connection is taken: a request that cannot be framed opens none.
        let mut frame = Vec::with_capacity(request.len() + 3);
        mllp::encode(request, &mut frame).map_err(MllpFailure::Unframeable)?;
        let (reader, reused) = match self.idle(deadline).await {
            Some(reader) => (reader, true),
            None => (self.connect(deadline).await?, false),
        };
        let why = match self.attempt(reader, &frame, control_id, deadline).await {
            Ok(answer) => {
                if reused {
                    self.learn(Habit::Keeps);
                }
                return Ok(answer);
            }
            Err(Attempt::Failed(failure)) => {
                if reused {
                    match failure {
                        MllpFailure::Closed(_) => self.learn(Habit::Closes(Instant::now())),
                        MllpFailure::WrongAnswer { .. } => self.learn(Habit::Mixes),
                        _ => {}
                    }
                }
                return Err(failure);
            }
            Err(Attempt::NotSent(why)) => why,
        };
        if reused {
            self.learn(Habit::Closes(Instant::now()));
        }
        log::info!(
            "{}: the connection failed while a request was written ({why}); sent again on a new connection",
            self.name
        );
        let reader = self.connect(deadline).await?;
        match self.attempt(reader, &frame, control_id, deadline).await {
            Ok(answer) => Ok(answer),
            Err(Attempt::Failed(failure)) => Err(failure),
            Err(Attempt::NotSent(why)) => Err(MllpFailure::Closed(why)),
        }
    }

    /// Writes `frame` on `reader` and reads its answer, within `deadline`; gives the
    /// connection back to the pool when the answer is the request's.
    async fn attempt(
        &self,
        mut reader: MllpReader<Stream>,
        frame: &[u8],
        control_id: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, Attempt> {
        let exchange = async {
            let written = async {
                let stream = reader.get_mut();
                stream.write_all(frame).await?;
                // Over TLS the last records may still be in rustls: a failure to send
                // them is a failure while writing too.
                stream.flush().await
            };
            if let Err(e) = written.await {
                return Err(Attempt::NotSent(e.to_string()));
            }
            match reader.next().await {
                Ok(Some(answer)) => Ok(answer),
                Ok(None) => Err(Attempt::Failed(MllpFailure::Closed(
                    "closed by the receiver".into(),
                ))),
                Err(e) => Err(Attempt::Failed(MllpFailure::Closed(e.to_string()))),
            }
        };
        let answer = match tokio::time::timeout_at(deadline.into(), exchange).await {
            Ok(result) => result?,
            // Dropping the connection here is what keeps the late answer from anyone.
            Err(_) => return Err(Attempt::Failed(MllpFailure::TimedOut)),
        };
        let Ok(parsed) = Message::parse(&answer) else {
            return Err(Attempt::Failed(MllpFailure::NotHl7));
        };
        let Some(msa2) = parsed.raw(&Path::new(*b"MSA", 2)).map(<[u8]>::to_vec) else {
            return Err(Attempt::Failed(MllpFailure::NotHl7));
        };
        // MSA-2 may carry components in some systems; the first is the control id.
        let first = msa2
            .split(|&b| b == parsed.delimiters().component)
            .next()
            .unwrap_or_default();
        if first != control_id {
            return Err(Attempt::Failed(MllpFailure::WrongAnswer {
                msa2: String::from_utf8_lossy(&msa2).into_owned(),
            }));
        }
        self.give_back(reader);
        Ok(answer)
    }

    /// Records what the receiver was seen to do; learning that it closes, or mixes up
    /// answers on kept connections, empties the pool. [`Habit::Mixes`] is never unlearnt.
    fn learn(&self, seen: Habit) {
        let mut habit = self.habit.lock().unwrap_or_else(|e| e.into_inner());
        let before = habit.now();
        if before == Habit::Mixes {
            return;
        }
        *habit = seen;
        drop(habit);
        match (before, seen) {
            (Habit::Closes(_), Habit::Closes(_)) | (Habit::Keeps, Habit::Keeps) => {}
            (_, Habit::Mixes) => {
                log::warn!(
                    "{}: the receiver answered another request on a kept connection; connections to it are no longer kept (give its route pool_size = 0)",
                    self.name
                );
                self.pool.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
            (_, Habit::Closes(_)) => {
                log::info!(
                    "{}: the receiver closes its connections after an answer; none kept for {} s",
                    self.name,
                    RELEARN.as_secs()
                );
                self.pool.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
            (_, _) => log::debug!("{}: the receiver keeps its connections open", self.name),
        }
    }

    fn habit(&self) -> Habit {
        self.habit.lock().unwrap_or_else(|e| e.into_inner()).now()
    }

    /// An idle connection that is still open and quiet, if the pool has one. Anything
    /// the receiver sent while the connection was idle (a close, stray bytes, an answer
    /// nobody waits for any more) disqualifies it; the caller writes at once after this.
    /// Unless the receiver is known to keep its connections, only one that has waited
    /// [`SETTLE`] is taken: when all are younger, this waits for the oldest to be old
    /// enough (once in a destination's life, or after [`RELEARN`]), unless that is past
    /// `deadline`.
    async fn idle(&self, deadline: Instant) -> Option<MllpReader<Stream>> {
        enum Pick {
            Take(Idle),
            WaitUntil(Instant),
        }
        loop {
            let keeps = self.habit() == Habit::Keeps;
            let pick = {
                let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                if keeps {
                    Pick::Take(pool.pop()?)
                } else if let Some(i) = pool.iter().rposition(|i| i.since.elapsed() >= SETTLE) {
                    Pick::Take(pool.remove(i))
                } else {
                    Pick::WaitUntil(pool.iter().map(|i| i.since).min()? + SETTLE)
                }
            };
            let idle = match pick {
                Pick::Take(idle) => idle,
                Pick::WaitUntil(when) if when < deadline => {
                    tokio::time::sleep_until(when.into()).await;
                    continue;
                }
                Pick::WaitUntil(_) => return None,
            };
            if idle.since.elapsed() > IDLE_LIMIT {
                continue;
            }
            let mut reader = idle.reader;
            match idle_state(&mut reader) {
                IdleState::Quiet => return Some(reader),
                IdleState::Closed => {
                    log::debug!("{}: an idle connection was closed", self.name);
                    if idle.since.elapsed() < CLOSE_EVIDENCE {
                        self.learn(Habit::Closes(Instant::now()));
                    }
                }
                IdleState::Bytes => log::warn!(
                    "{}: unexpected bytes on an idle connection; connection dropped",
                    self.name
                ),
                IdleState::Failed(e) => {
                    log::debug!("{}: an idle connection failed: {e}", self.name);
                }
            }
        }
    }

    fn give_back(&self, reader: MllpReader<Stream>) {
        if !reader.is_between_frames() || matches!(self.habit(), Habit::Closes(_) | Habit::Mixes) {
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        // Connections that waited too long are closed here too: while the habit is
        // unknown, young ones are passed over and may otherwise linger.
        pool.retain(|i| i.since.elapsed() <= IDLE_LIMIT);
        if pool.len() < self.target.pool_size {
            pool.push(Idle {
                reader,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self, deadline: Instant) -> Result<MllpReader<Stream>, MllpFailure> {
        {
            let backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(until) = backoff.until
                && Instant::now() < until
            {
                return Err(MllpFailure::Unreachable(format!(
                    "backing off for {} ms after {} failed attempt(s)",
                    (until - Instant::now()).as_millis(),
                    backoff.failures
                )));
            }
        }
        let attempt = async {
            let tcp = TcpStream::connect(self.target.address.as_str())
                .await
                .map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            let io = match &self.tls {
                None => Stream::Plain(tcp),
                Some((connector, name)) => Stream::Tls(Box::new(
                    connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| format!("TLS: {e}"))?,
                )),
            };
            Ok::<_, String>(io)
        };
        let outcome = match tokio::time::timeout_at(deadline.into(), attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err("no connection before the timeout".to_owned()),
        };
        let mut backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(io) => {
                if backoff.failures > 0 {
                    log::info!("{}: reachable again", self.name);
                }
                backoff.failures = 0;
                backoff.until = None;
                Ok(MllpReader::new(io, self.max_frame))
            }
            Err(why) => {
                backoff.failures = backoff.failures.saturating_add(1);
                let wait = BACKOFF_FIRST
                    .saturating_mul(1 << backoff.failures.saturating_sub(1).min(5))
                    .min(BACKOFF_MAX);
                backoff.until = Some(Instant::now() + wait);
                log::warn!(
                    "{}: cannot connect ({why}); next attempt in {} ms",
                    self.name,
                    wait.as_millis()
                );
                Err(MllpFailure::Unreachable(why))
            }
        }
    }
}

/// The MLLP destinations of a configuration, one per distinct target (routes naming the
/// same target share its pool).
pub struct MllpDestinations {
    by_target: Vec<(MllpTarget, Arc<MllpDestination>)>,
}

impl MllpDestinations {
    /// Prepares every MLLP destination of `routes`, taking over those of `previous`
    /// (with their open connections) whose target did not change.
    pub fn new(
        routes: &[super::Route],
        max_frame: usize,
        previous: Option<&MllpDestinations>,
    ) -> Result<Self, String> {
        let mut by_target: Vec<(MllpTarget, Arc<MllpDestination>)> = Vec::new();
        for route in routes {
            if let super::Destination::Mllp(target) = &route.destination
                && !by_target.iter().any(|(t, _)| t == target)
            {
                let destination = match previous.and_then(|p| p.get(target)) {
                    Some(d) if d.max_frame == max_frame => d.clone(),
                    _ => Arc::new(
                        MllpDestination::new(target, max_frame)
                            .map_err(|e| format!("destination {}: {e}", route.destination))?,
                    ),
                };
                by_target.push((target.clone(), destination));
            }
        }
        Ok(Self { by_target })
    }

    /// The destination for `target`.
    pub fn get(&self, target: &MllpTarget) -> Option<&Arc<MllpDestination>> {
        self.by_target
            .iter()
            .find(|(t, _)| t == target)
            .map(|(_, d)| d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::config::MllpTlsFiles;

    #[test]
    fn a_missing_tls_file_is_named_at_start() {
        let target = MllpTarget {
            address: "127.0.0.1:6661".into(),
            tls: Some(MllpTlsFiles {
                ca: "/nonexistent/receiver-ca.pem".into(),
                client: None,
            }),
            pool_size: 1,
        };
        let e = MllpDestination::new(&target, 1024).err().unwrap();
        assert!(e.contains("/nonexistent/receiver-ca.pem"), "{e}");
        let plain = MllpDestination::new(
            &MllpTarget {
                tls: None,
                ..target
            },
            1024,
        )
        .unwrap();
        assert_eq!(plain.name(), "mllp://127.0.0.1:6661");
    }

    fn plain(address: String) -> MllpDestination {
        MllpDestination::new(
            &MllpTarget {
                address,
                tls: None,
                pool_size: 1,
            },
            1024,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_request_that_cannot_be_framed_is_not_sent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let d = plain(listener.local_addr().unwrap().to_string());
        for (request, byte, offset) in [
            (
                &b"MSH|^~\\&|A|B|C|D|1||R01|1|P|2.3\rOBX|1|ST|X||\x1c\r"[..],
                0x1C,
                44,
            ),
            (b"MSH|^~\\&|A|B|C|D|1||R01|1|P|2.3\r\x0bMSH|", 0x0B, 32),
        ] {
            assert_eq!(
                d.call(request, b"1", Duration::from_secs(1)).await,
                Err(MllpFailure::Unframeable(EncodeError::FramingByte {
                    byte,
                    offset
                }))
            );
        }
        // No connection was opened for them.
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was opened");
    }

    /// The idle state of a fresh plain connection, and its peer.
    async fn connected() -> (MllpReader<Stream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (MllpReader::new(Stream::Plain(client), 1024), server)
    }

    /// Polls `idle_state` until it is not `Quiet` (bytes take a moment to cross).
    async fn settled(reader: &mut MllpReader<Stream>) -> IdleState {
        for _ in 0..200 {
            match idle_state(reader) {
                IdleState::Quiet => tokio::time::sleep(Duration::from_millis(5)).await,
                other => return other,
            }
        }
        IdleState::Quiet
    }

    #[tokio::test]
    async fn the_idle_check_sees_bytes_and_closes_without_taking_anything() {
        let (mut reader, mut server) = connected().await;
        assert!(matches!(idle_state(&mut reader), IdleState::Quiet));
        // Even white space, which the decoder would pass over, is something sent.
        server.write_all(b"\r\n").await.unwrap();
        assert!(matches!(settled(&mut reader).await, IdleState::Bytes));
        // Peeking took nothing: the bytes are still there to be read.
        let mut two = [0u8; 2];
        tokio::io::AsyncReadExt::read_exact(reader.get_mut(), &mut two)
            .await
            .unwrap();
        assert_eq!(&two, b"\r\n");
        assert!(matches!(idle_state(&mut reader), IdleState::Quiet));

        let (mut reader, server) = connected().await;
        drop(server);
        assert!(matches!(settled(&mut reader).await, IdleState::Closed));

        // Bytes already in the reader's buffer: a frame's start after an answer.
        let (mut reader, mut server) = connected().await;
        server
            .write_all(b"\x0bMSH|A\x1c\r\x0bMSH|stray")
            .await
            .unwrap();
        assert_eq!(reader.next().await.unwrap().as_deref(), Some(&b"MSH|A"[..]));
        assert!(matches!(idle_state(&mut reader), IdleState::Bytes));
    }

    #[tokio::test]
    async fn an_unreachable_destination_backs_off() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = MllpDestination::new(
            &MllpTarget {
                address: format!("127.0.0.1:{port}"),
                tls: None,
                pool_size: 1,
            },
            1024,
        )
        .unwrap();
        let first = d
            .call(
                b"MSH|^~\\&|A|B|C|D|1||R01|1|P|2.3\r",
                b"1",
                Duration::from_secs(1),
            )
            .await;
        assert!(
            matches!(first, Err(MllpFailure::Unreachable(_))),
            "{first:?}"
        );
        let second = d
            .call(
                b"MSH|^~\\&|A|B|C|D|1||R01|2|P|2.3\r",
                b"2",
                Duration::from_secs(1),
            )
            .await;
        match second {
            Err(MllpFailure::Unreachable(why)) => assert!(why.contains("backing off"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
