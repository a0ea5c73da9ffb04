//! `gate.toml`: where the gateway listens, where HNGard's directory is, and the routes.
//!
//! ```toml
//! listen = "0.0.0.0:7443"            # the secure port (TLS 1.3 only)
//! gard = "gard"                      # HNGard's directory; relative to this file
//! facility = "BC01000018"            # HNGATE's network facility id (MSH-4 of its ACKs)
//! # handshake_timeout_secs = 10      # TLS handshake, and a registration's one frame
//! # idle_timeout_secs = 300          # a connection with no frame for this long is closed
//! # max_frame_bytes = 8388608        # larger frames are refused and the connection closed
//! # max_connections = 10000          # beyond this, new connections are closed at once
//! # max_unauthenticated = 5000       # of those, at most this many not yet authenticated
//! #                                  # (TLS handshake, registration): the rest is kept
//! #                                  # for authenticated facilities
//! # max_unauthenticated_per_source = 32 # not yet authenticated, from one address (IPv6: one /64)
//! # envelope_window_secs = 300       # an envelope's time stamp may differ this much from now
//! # replay_capacity = 1000000        # nonces remembered within the window
//! # revocation_poll_ms = 1000        # how often HNGard is asked for revocations
//! # shutdown_grace_secs = 30         # on SIGINT/SIGTERM, running transactions get this long
//! # rate_limit_per_sec = 0           # requests a second per facility (0: no limit); beyond, HNPS008E
//! # rate_limit_burst = 0             # requests allowed at once above the rate (0: twice the rate)
//! # trace_messages = false           # log message bodies (PHI!) at debug level; troubleshooting only
//! # metrics = "127.0.0.1:9464"       # Prometheus text format at GET /metrics (keep it local)
//! # audit_retention_days = 365       # audit rows older than this are deleted (0: kept for ever)
//! # audit = "required"               # a transaction's answer leaves only once its journal row is
//! #                                  # committed; without the journal, AR HNPS013E ("best-effort":
//! #                                  # rows are written behind the traffic and may be lost)
//! # audit_sync = "normal"            # "full": every journal commit also reaches the disk (survives
//! #                                  # a power cut, not only the gateway's death); slower
//! # blocking_threads = 8             # threads for directory work (authenticating a certificate,
//! #                                  # registering, renewing): a burst of connections queues for
//! #                                  # them instead of starting more; read at start only
//!
//! [[route]]                          # the first route that matches wins
//! application = "RAIRCRD-NW-PRSN"    # MSH-5, or "*" for any
//! # facility = "BC0003000"           # MSH-6, when given
//! # message_type = "R02"             # MSH-9.1, or the whole MSH-9 (`R46^Z26`), when given
//! destination = "sim"                # the built-in simulator, or "app:NAME": an HNAPI server
//!                                    # application connected to the gateway that serves NAME,
//!                                    # or "mllp://HOST:PORT" / "mllps://HOST:PORT": a receiving system
//! # timeout_secs = 70                # the destination must answer within this (and the sender's timeout)
//! # duplicate_window_secs = 0        # > 0: a request whose MSH-10, MSH-4 and MSH-3 were seen within
//! #                                  # this long is answered AE HNPS009E, not passed on (2.4.8)
//! # not_connected_hint = "…"         # app: routes: when no server application serving NAME is
//! #                                  # connected, the HNPS007E answer adds an ERR with this text
//! #                                  # (how to start one; printable ASCII, at most 72 characters)
//! # pool_size = 4                    # MLLP: idle connections kept open to the destination
//! # tls_ca = "receiver-ca.pem"       # mllps: the CA of the receiving system's certificate (required)
//! # tls_certificate = "gate.pem"     # mllps: the gateway's client certificate, when the receiver asks
//! # tls_private_key = "gate-key.pem" # mllps: its private key
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, parse_toml, read_toml, resolve};
use crate::hl7::Message;
use crate::transport::DEFAULT_MAX_FRAME;

/// How long audit rows are kept unless `audit_retention_days` says otherwise.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u64 = 365;

/// Idle connections kept open to an MLLP destination unless `pool_size` says otherwise.
pub const DEFAULT_POOL_SIZE: usize = 4;

/// The gateway's configuration.
#[derive(Clone, Debug)]
pub struct GateConfig {
    /// The secure port's address.
    pub listen: SocketAddr,
    /// HNGard's directory.
    pub gard: PathBuf,
    /// HNGATE's network facility id.
    pub facility: String,
    /// Limits and timeouts.
    pub limits: Limits,
    /// The routes, in order.
    pub routes: Vec<Route>,
    /// Log message bodies at debug level. They hold PHI: for troubleshooting only.
    pub trace_messages: bool,
    /// Where the Prometheus metrics are served, when they are.
    pub metrics: Option<SocketAddr>,
    /// Audit rows older than this are deleted; `None` keeps them for ever.
    pub audit_retention: Option<Duration>,
    /// Whether an answer waits for its journal row (`audit`).
    pub audit: AuditMode,
    /// How far a journal commit goes before it counts as done (`audit_sync`).
    pub audit_sync: AuditSync,
    /// The most threads the gateway's runtime starts for blocking work (the directory:
    /// authenticating certificates, registrations, renewals, revocation checks). Read when
    /// the process starts; a reload keeps the old value.
    pub blocking_threads: usize,
}

/// `blocking_threads` when not given: the directory serialises its work on one database
/// connection, so more threads than this only wait, each holding its stack.
pub const DEFAULT_BLOCKING_THREADS: usize = 8;
/// The most `blocking_threads` may say (tokio's own default).
pub const MAX_BLOCKING_THREADS: usize = 512;

/// `audit`: what the journal promises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditMode {
    /// A transaction's answer is released only once its row is committed; when the
    /// journal cannot be written, requests are answered AR `HNPS013E` and not forwarded.
    #[default]
    Required,
    /// Rows are written behind the traffic, in batches; when the store falls behind or
    /// fails, rows are dropped (counted and logged) and traffic goes on.
    BestEffort,
}

/// `audit_sync`: how durable a journal commit is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditSync {
    /// Committed rows survive the gateway's process being killed; a power cut or an
    /// operating system crash may lose the last ones (SQLite `synchronous = NORMAL` in WAL
    /// mode, PostgreSQL `synchronous_commit = off`).
    #[default]
    Normal,
    /// Every commit is on disk before it counts (SQLite `synchronous = FULL`, PostgreSQL
    /// `synchronous_commit = on`).
    Full,
}

/// The gateway's limits and timeouts.
#[derive(Clone, Debug)]
pub struct Limits {
    /// TLS handshake, and a registration's one frame.
    pub handshake_timeout: Duration,
    /// A connection with no frame for this long is closed.
    pub idle_timeout: Duration,
    /// The largest frame accepted.
    pub max_frame_bytes: usize,
    /// Connections beyond this are closed at once.
    pub max_connections: usize,
    /// Connections not yet authenticated (in their TLS handshake, or registering)
    /// beyond this are closed at once; the rest of `max_connections` is kept for
    /// authenticated facilities.
    pub max_unauthenticated: usize,
    /// Connections not yet authenticated from one address (IPv6: one /64) beyond this
    /// are closed at once.
    pub max_unauthenticated_per_source: usize,
    /// How far an envelope's time stamp may be from now.
    pub envelope_window: Duration,
    /// How many nonces the replay guard remembers.
    pub replay_capacity: usize,
    /// How often HNGard is asked for revocations.
    pub revocation_poll: Duration,
    /// On shutdown, how long running transactions may take to finish.
    pub shutdown_grace: Duration,
    /// Requests a second per facility; 0 for no limit.
    pub rate_limit_per_sec: f64,
    /// Requests a facility may send at once before the rate applies.
    pub rate_limit_burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_frame_bytes: DEFAULT_MAX_FRAME,
            max_connections: 10_000,
            max_unauthenticated: 5_000,
            max_unauthenticated_per_source: 32,
            envelope_window: Duration::from_secs(300),
            replay_capacity: 1_000_000,
            revocation_poll: Duration::from_millis(1000),
            shutdown_grace: Duration::from_secs(30),
            rate_limit_per_sec: 0.0,
            rate_limit_burst: 0.0,
        }
    }
}

/// Where requests for a receiving application go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// MSH-5 to match, or `None` for any (`*`).
    pub application: Option<String>,
    /// MSH-6 to match, when given.
    pub facility: Option<String>,
    /// MSH-9 to match, when given: the message type alone (`R02`), or the whole field (`R46^Z26`).
    pub message_type: Option<String>,
    /// Where matching requests go.
    pub destination: Destination,
    /// How long the destination may take.
    pub timeout: Duration,
    /// When set, requests seen again within this long are answered as duplicates.
    pub duplicate_window: Option<Duration>,
    /// `app:` routes: the text of the ERR the `HNPS007E` answer adds when no server
    /// application serving the name is connected (how to start one, say).
    pub not_connected_hint: Option<String>,
}

/// A receiving system.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destination {
    /// The built-in simulator of the Ministry's applications.
    Sim,
    /// An HNAPI server application connected to the gateway, serving this name.
    App(String),
    /// A receiving system speaking MLLP, plain or over TLS.
    Mllp(MllpTarget),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sim => f.write_str("sim"),
            Self::App(name) => write!(f, "app:{name}"),
            Self::Mllp(t) => {
                let scheme = if t.tls.is_some() { "mllps" } else { "mllp" };
                write!(f, "{scheme}://{}", t.address)
            }
        }
    }
}

/// An MLLP receiving system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MllpTarget {
    /// `HOST:PORT`.
    pub address: String,
    /// TLS, for `mllps://`.
    pub tls: Option<MllpTlsFiles>,
    /// Idle connections kept open.
    pub pool_size: usize,
}

/// The files of an `mllps://` destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MllpTlsFiles {
    /// The CA of the receiving system's certificate (PEM).
    pub ca: PathBuf,
    /// The gateway's client certificate and key (PEM), when the receiver asks for one.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl Route {
    /// True when the request's MSH-5, MSH-6 and MSH-9 match this route.
    pub fn matches(&self, request: &Message<'_>) -> bool {
        let field = |n| {
            request
                .msh(n)
                .data()
                .map(<[u8]>::to_vec)
                .unwrap_or_default()
        };
        if let Some(app) = &self.application
            && field(5) != app.as_bytes()
        {
            return false;
        }
        if let Some(facility) = &self.facility
            && field(6) != facility.as_bytes()
        {
            return false;
        }
        if let Some(wanted) = &self.message_type {
            let whole = field(9);
            let first = request
                .value(&crate::hl7::Path::new(*b"MSH", 9).with_component(1))
                .data()
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            if whole != wanted.as_bytes() && first != wanted.as_bytes() {
                return false;
            }
        }
        true
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GateFile {
    listen: String,
    gard: PathBuf,
    facility: String,
    handshake_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_frame_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_unauthenticated: Option<usize>,
    max_unauthenticated_per_source: Option<usize>,
    envelope_window_secs: Option<u64>,
    replay_capacity: Option<usize>,
    revocation_poll_ms: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    rate_limit_per_sec: Option<f64>,
    rate_limit_burst: Option<f64>,
    #[serde(default)]
    trace_messages: bool,
    metrics: Option<String>,
    audit_retention_days: Option<u64>,
    #[serde(default)]
    audit: AuditMode,
    #[serde(default)]
    audit_sync: AuditSync,
    blocking_threads: Option<usize>,
    #[serde(default, rename = "route")]
    routes: Vec<RouteFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    application: String,
    facility: Option<String>,
    message_type: Option<String>,
    destination: String,
    timeout_secs: Option<u64>,
    duplicate_window_secs: Option<u64>,
    not_connected_hint: Option<String>,
    pool_size: Option<usize>,
    tls_ca: Option<PathBuf>,
    tls_certificate: Option<PathBuf>,
    tls_private_key: Option<PathBuf>,
}

/// The longest `not_connected_hint`: the answer's ERR-1.4.2 carries it, and an error's
/// text is at most 72 characters (DESIGN §2).
pub const MAX_HINT: usize = 72;

/// A route's `not_connected_hint`: printable ASCII, not blank, at most [`MAX_HINT`]
/// characters (it is written into an ACK, escaped as any text is).
fn check_hint(hint: &str) -> Result<String, String> {
    let hint = hint.trim();
    if hint.is_empty() {
        return Err("may not be blank; leave the key out instead".to_owned());
    }
    if let Some(c) = hint.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!("must be printable ASCII, not {c:?}"));
    }
    if hint.len() > MAX_HINT {
        return Err(format!("is {} characters, at most {MAX_HINT}", hint.len()));
    }
    Ok(hint.to_owned())
}

impl GateConfig {
    /// Reads `gate.toml` at `path`; errors name the file and the key.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_parsed(read_toml(path)?, path)
    }

    /// Reads configuration text; relative paths in it are taken from `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let path = base_dir.join("gate.toml");
        Self::from_parsed(parse_toml(text, Path::new("<inline gate.toml>"))?, &path)
    }

    fn from_parsed(file: GateFile, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |key: &str, why: String| ConfigError::invalid(path, key, why);
        let listen = file
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| invalid("listen", format!("{:?} is not IP:PORT", file.listen)))?;
        if file.facility.is_empty() {
            return Err(invalid("facility", "may not be empty".into()));
        }
        let secs = |key: &str, v: Option<u64>, default: Duration| match v {
            None => Ok(default),
            Some(0) => Err(invalid(key, "must be at least 1".into())),
            Some(n) => Ok(Duration::from_secs(n)),
        };
        let d = Limits::default();
        let limits = Limits {
            handshake_timeout: secs(
                "handshake_timeout_secs",
                file.handshake_timeout_secs,
                d.handshake_timeout,
            )?,
            idle_timeout: secs("idle_timeout_secs", file.idle_timeout_secs, d.idle_timeout)?,
            max_frame_bytes: match file.max_frame_bytes {
                Some(n) if n < 1024 => {
                    return Err(invalid("max_frame_bytes", "must be at least 1024".into()));
                }
                Some(n) => n,
                None => d.max_frame_bytes,
            },
            max_connections: file.max_connections.unwrap_or(d.max_connections).max(1),
            // Half of max_connections unless said otherwise, and never more than all.
            max_unauthenticated: file
                .max_unauthenticated
                .unwrap_or_else(|| {
                    file.max_connections
                        .map_or(d.max_unauthenticated, |n| n.div_ceil(2))
                })
                .clamp(1, file.max_connections.unwrap_or(d.max_connections).max(1)),
            max_unauthenticated_per_source: file
                .max_unauthenticated_per_source
                .unwrap_or(d.max_unauthenticated_per_source)
                .max(1),
            envelope_window: secs(
                "envelope_window_secs",
                file.envelope_window_secs,
                d.envelope_window,
            )?,
            replay_capacity: file.replay_capacity.unwrap_or(d.replay_capacity).max(1),
            revocation_poll: match file.revocation_poll_ms {
                Some(0) => return Err(invalid("revocation_poll_ms", "must be at least 1".into())),
                Some(ms) => Duration::from_millis(ms),
                None => d.revocation_poll,
            },
            shutdown_grace: match file.shutdown_grace_secs {
                Some(s) => Duration::from_secs(s),
                None => d.shutdown_grace,
            },
            rate_limit_per_sec: match file.rate_limit_per_sec {
                Some(r) if !(r.is_finite() && r >= 0.0) => {
                    return Err(invalid(
                        "rate_limit_per_sec",
                        "must be 0 (no limit) or more".into(),
                    ));
                }
                Some(r) => r,
                None => d.rate_limit_per_sec,
            },
            rate_limit_burst: 0.0,
        };
        let mut limits = limits;
        limits.rate_limit_burst = match file.rate_limit_burst {
            Some(b) if !(b.is_finite() && b >= 0.0) => {
                return Err(invalid("rate_limit_burst", "must be 0 or more".into()));
            }
            Some(b) if b > 0.0 => b.max(1.0),
            _ => (2.0 * limits.rate_limit_per_sec).max(1.0),
        };
        let mut routes = Vec::with_capacity(file.routes.len());
        for (i, r) in file.routes.into_iter().enumerate() {
            let key = |k: &str| format!("route[{}].{k}", i + 1);
            let mllp = |address: &str, tls: bool| -> Result<Destination, ConfigError> {
                let host_port = address
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if !host_port {
                    return Err(ConfigError::invalid(
                        path,
                        key("destination"),
                        format!("{address:?} is not HOST:PORT"),
                    ));
                }
                let tls = if tls {
                    let Some(ca) = &r.tls_ca else {
                        return Err(ConfigError::invalid(
                            path,
                            key("tls_ca"),
                            "an mllps:// destination needs the CA of its certificate",
                        ));
                    };
                    let client = match (&r.tls_certificate, &r.tls_private_key) {
                        (Some(c), Some(k)) => Some((resolve(path, c), resolve(path, k))),
                        (None, None) => None,
                        _ => {
                            return Err(ConfigError::invalid(
                                path,
                                key("tls_certificate"),
                                "give tls_certificate and tls_private_key together",
                            ));
                        }
                    };
                    Some(MllpTlsFiles {
                        ca: resolve(path, ca),
                        client,
                    })
                } else {
                    if r.tls_ca.is_some()
                        || r.tls_certificate.is_some()
                        || r.tls_private_key.is_some()
                    {
                        return Err(ConfigError::invalid(
                            path,
                            key("tls_ca"),
                            "TLS files are for mllps:// destinations",
                        ));
                    }
                    None
                };
                Ok(Destination::Mllp(MllpTarget {
                    address: address.to_owned(),
                    tls,
                    pool_size: r.pool_size.unwrap_or(DEFAULT_POOL_SIZE),
                }))
            };
            let destination = match r.destination.as_str() {
                "sim" => Destination::Sim,
                app if app.starts_with("app:") && app.len() > 4 => {
                    Destination::App(app[4..].to_owned())
                }
                url if url.starts_with("mllp://") => mllp(&url[7..], false)?,
                url if url.starts_with("mllps://") => mllp(&url[8..], true)?,
                other => {
                    return Err(ConfigError::invalid(
                        path,
                        key("destination"),
                        format!(
                            "{other:?} is not a destination this gateway knows; use \"sim\", \"app:NAME\", \"mllp://HOST:PORT\" or \"mllps://HOST:PORT\""
                        ),
                    ));
                }
            };
            if r.pool_size.is_some() && !matches!(destination, Destination::Mllp(_)) {
                return Err(ConfigError::invalid(
                    path,
                    key("pool_size"),
                    "is for mllp:// and mllps:// destinations",
                ));
            }
            if r.application.is_empty() {
                return Err(ConfigError::invalid(
                    path,
                    key("application"),
                    "may not be empty; use \"*\" for any",
                ));
            }
            let not_connected_hint =
                match r.not_connected_hint {
                    Some(_) if !matches!(destination, Destination::App(_)) => {
                        return Err(ConfigError::invalid(
                            path,
                            key("not_connected_hint"),
                            "is for app:NAME destinations",
                        ));
                    }
                    Some(hint) => Some(check_hint(&hint).map_err(|why| {
                        ConfigError::invalid(path, key("not_connected_hint"), why)
                    })?),
                    None => None,
                };
            routes.push(Route {
                application: (r.application != "*").then_some(r.application),
                facility: r.facility,
                message_type: r.message_type,
                destination,
                timeout: match r.timeout_secs {
                    Some(0) => {
                        return Err(ConfigError::invalid(
                            path,
                            key("timeout_secs"),
                            "must be at least 1",
                        ));
                    }
                    Some(s) => Duration::from_secs(s),
                    None => crate::client::DEFAULT_TIMEOUT,
                },
                duplicate_window: r
                    .duplicate_window_secs
                    .filter(|&s| s > 0)
                    .map(Duration::from_secs),
                not_connected_hint,
            });
        }
        if routes.is_empty() {
            log::warn!(
                "{}: no [[route]]: every request will be answered HNPS005E",
                path.display()
            );
        }
        let metrics = file
            .metrics
            .map(|m| {
                m.parse::<SocketAddr>()
                    .map_err(|_| invalid("metrics", format!("{m:?} is not IP:PORT")))
            })
            .transpose()?;
        Ok(Self {
            listen,
            gard: resolve(path, &file.gard),
            facility: file.facility,
            limits,
            routes,
            trace_messages: file.trace_messages,
            metrics,
            audit_retention: match file.audit_retention_days {
                Some(0) => None,
                Some(days) => Some(Duration::from_secs(days.saturating_mul(86_400))),
                None => Some(Duration::from_secs(DEFAULT_AUDIT_RETENTION_DAYS * 86_400)),
            },
            audit: file.audit,
            audit_sync: file.audit_sync,
            blocking_threads: match file.blocking_threads {
                None => DEFAULT_BLOCKING_THREADS,
                Some(n @ 1..=MAX_BLOCKING_THREADS) => n,
                Some(_) => {
                    return Err(invalid(
                        "blocking_threads",
                        format!("must be from 1 to {MAX_BLOCKING_THREADS}"),
                    ));
                }
            },
        })
    }

    /// The first route that matches `request`.
    pub fn route(&self, request: &Message<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "hnsecure-gatecfg-{}-{}",
            std::process::id(),
            crate::hl7::new_control_id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gate.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    const BASE: &str = "listen = \"127.0.0.1:0\"\ngard = \"gard\"\nfacility = \"BC01000018\"\n";

    #[test]
    fn reads_routes_in_order() {
        let (dir, path) = write(&format!(
            "{BASE}[[route]]\napplication = \"RAIRCRD-NW-PRSN\"\nmessage_type = \"R02\"\ndestination = \"sim\"\ntimeout_secs = 5\n\
             [[route]]\napplication = \"HNAPI-DEMO\"\ndestination = \"app:HNAPI-DEMO\"\n\
             [[route]]\napplication = \"*\"\ndestination = \"sim\"\n\
             [[route]]\napplication = \"LAB\"\ndestination = \"mllp://receiver.example:2575\"\n\
             [[route]]\napplication = \"LABS\"\ndestination = \"mllps://10.0.0.7:6661\"\npool_size = 2\n\
             tls_ca = \"ca.pem\"\ntls_certificate = \"gate.pem\"\ntls_private_key = \"gate-key.pem\"\n"
        ));
        let c = GateConfig::from_file(&path).unwrap();
        assert_eq!(c.gard, dir.join("gard"));
        assert_eq!(c.routes.len(), 5);
        assert_eq!(c.routes[0].timeout, Duration::from_secs(5));
        assert_eq!(
            c.routes[1].destination,
            Destination::App("HNAPI-DEMO".into())
        );
        assert_eq!(c.routes[2].application, None);
        assert_eq!(c.routes[2].timeout, Duration::from_secs(70));
        assert_eq!(
            c.routes[3].destination,
            Destination::Mllp(MllpTarget {
                address: "receiver.example:2575".into(),
                tls: None,
                pool_size: 4,
            })
        );
        assert_eq!(
            c.routes[4].destination,
            Destination::Mllp(MllpTarget {
                address: "10.0.0.7:6661".into(),
                tls: Some(MllpTlsFiles {
                    ca: dir.join("ca.pem"),
                    client: Some((dir.join("gate.pem"), dir.join("gate-key.pem"))),
                }),
                pool_size: 2,
            })
        );
        assert_eq!(c.routes[4].destination.to_string(), "mllps://10.0.0.7:6661");

        let r02 = b"MSH|^~\\&|A|F|RAIRCRD-NW-PRSN|BC0003000|1||R02|1|P|2.3\r";
        let r03 = b"MSH|^~\\&|A|F|RAIRCRD-NW-PRSN|BC0003000|1||R03|1|P|2.3\r";
        let demo = b"MSH|^~\\&|A|F|HNAPI-DEMO|BC0003000|1||R03|1|P|2.3\r";
        assert_eq!(c.route(&Message::parse(r02).unwrap()), Some(&c.routes[0]));
        assert_eq!(c.route(&Message::parse(r03).unwrap()), Some(&c.routes[2]));
        assert_eq!(c.route(&Message::parse(demo).unwrap()), Some(&c.routes[1]));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn matches_application_facility_and_type() {
        let route = Route {
            application: Some("RAICOVPART-ENQ".into()),
            facility: Some("BC0003000".into()),
            message_type: Some("R46^Z26".into()),
            destination: Destination::Sim,
            timeout: Duration::from_secs(1),
            duplicate_window: None,
            not_connected_hint: None,
        };
        let matches = |s: &str| route.matches(&Message::parse(s.as_bytes()).unwrap());
        assert!(matches(
            "MSH|^~\\&|HR|F|RAICOVPART-ENQ|BC0003000|1||R46^Z26|1|D|2.3"
        ));
        assert!(!matches(
            "MSH|^~\\&|HR|F|RAICOVPART-ENQ|BC0003000|1||R46^Z27|1|D|2.3"
        ));
        assert!(!matches(
            "MSH|^~\\&|HR|F|RAICOVPART-ENQ|OTHER|1||R46^Z26|1|D|2.3"
        ));
        assert!(!matches(
            "MSH|^~\\&|HR|F|OTHER|BC0003000|1||R46^Z26|1|D|2.3"
        ));
    }

    #[test]
    fn not_connected_hint_is_checked() {
        let route = |hint: &str| {
            format!(
                "{BASE}[[route]]\napplication = \"D\"\ndestination = \"app:D\"\nnot_connected_hint = {hint:?}\n"
            )
        };
        let (dir, path) = write(&route("  start one: hnsecure sandbox --demo-server "));
        let c = GateConfig::from_file(&path).unwrap();
        assert_eq!(
            c.routes[0].not_connected_hint.as_deref(),
            Some("start one: hnsecure sandbox --demo-server")
        );
        std::fs::remove_dir_all(dir).unwrap();
        let (dir, path) = write(&format!(
            "{BASE}[[route]]\napplication = \"D\"\ndestination = \"app:D\"\n"
        ));
        assert_eq!(
            GateConfig::from_file(&path).unwrap().routes[0].not_connected_hint,
            None
        );
        std::fs::remove_dir_all(dir).unwrap();
        let longest = "x".repeat(MAX_HINT);
        let (dir, path) = write(&route(&longest));
        assert!(GateConfig::from_file(&path).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
        for (bad, why) in [
            ("   ".to_owned(), "blank"),
            ("tab\there".to_owned(), "printable"),
            ("é".to_owned(), "printable"),
            ("x".repeat(MAX_HINT + 1), "at most 72"),
        ] {
            let (dir, path) = write(&route(&bad));
            let e = GateConfig::from_file(&path).unwrap_err().to_string();
            assert!(
                e.contains("route[1].not_connected_hint") && e.contains(why),
                "{bad:?}: {e}"
            );
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn blocking_threads_has_a_default_and_bounds() {
        let base = GateConfig::from_toml(BASE, Path::new("/etc/hnsecure")).unwrap();
        assert_eq!(base.blocking_threads, DEFAULT_BLOCKING_THREADS);
        for n in [1, 3, MAX_BLOCKING_THREADS] {
            let text = format!("{BASE}blocking_threads = {n}\n");
            let config = GateConfig::from_toml(&text, Path::new("/etc/hnsecure")).unwrap();
            assert_eq!(config.blocking_threads, n);
        }
    }

    #[test]
    fn mistakes_name_the_file_and_key() {
        let cases = [
            (format!("{BASE}colour = 1\n"), "colour"),
            (
                "listen = \"nowhere\"\ngard = \"g\"\nfacility = \"F\"\n".to_owned(),
                "listen",
            ),
            (
                format!("{BASE}[[route]]\napplication = \"X\"\ndestination = \"ftp://x\"\n"),
                "route[1].destination",
            ),
            (
                format!(
                    "{BASE}[[route]]\napplication = \"X\"\ndestination = \"sim\"\ntimeout_secs = 0\n"
                ),
                "route[1].timeout_secs",
            ),
            (
                format!("{BASE}[[route]]\napplication = \"X\"\ndestination = \"sim\"\nwhat = 1\n"),
                "what",
            ),
            (
                format!("{BASE}idle_timeout_secs = 0\n"),
                "idle_timeout_secs",
            ),
            (format!("{BASE}blocking_threads = 0\n"), "blocking_threads"),
            (
                format!("{BASE}blocking_threads = 513\n"),
                "blocking_threads",
            ),
            (
                format!("{BASE}[[route]]\napplication = \"X\"\ndestination = \"mllps://h:1\"\n"),
                "route[1].tls_ca",
            ),
            (
                format!("{BASE}[[route]]\napplication = \"X\"\ndestination = \"mllp://h\"\n"),
                "route[1].destination",
            ),
            (
                format!(
                    "{BASE}[[route]]\napplication = \"X\"\ndestination = \"mllp://h:1\"\ntls_ca = \"ca.pem\"\n"
                ),
                "route[1].tls_ca",
            ),
            (
                format!(
                    "{BASE}[[route]]\napplication = \"X\"\ndestination = \"mllps://h:1\"\ntls_ca = \"ca.pem\"\ntls_certificate = \"c.pem\"\n"
                ),
                "route[1].tls_certificate",
            ),
            (
                format!(
                    "{BASE}[[route]]\napplication = \"X\"\ndestination = \"sim\"\npool_size = 2\n"
                ),
                "route[1].pool_size",
            ),
            (
                format!(
                    "{BASE}[[route]]\napplication = \"X\"\ndestination = \"sim\"\nnot_connected_hint = \"start it\"\n"
                ),
                "route[1].not_connected_hint",
            ),
        ];
        for (text, key) in cases {
            let (dir, path) = write(&text);
            let e = GateConfig::from_file(&path).unwrap_err().to_string();
            assert!(e.contains("gate.toml") && e.contains(key), "{text:?}: {e}");
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}
