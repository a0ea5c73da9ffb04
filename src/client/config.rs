//! `client.toml`: what the client core needs to reach the gateway, and what the client
//! daemon (`hnsecure client --config`) listens on.
//!
//! ```toml
//! facility = "BC00000098"             # this facility's id (MSH-4 of what it sends)
//! credential = "credential.toml"      # from `hnsecure client register`; relative to this file
//! # credential_readable_by_others = false  # true accepts a credential its group or others may read
//! gateways = ["gate1.example:7443", "gate2.example:7443"]   # tried in order on connection loss
//! timeout_secs = 70                   # per transaction, unless the caller gives one (Volume 5, 2.6)
//! # connect_timeout_secs = 10         # TCP connect and TLS handshake, per gateway
//! # keepalive_secs = 30               # ping an idle connection this often
//! # max_frame_bytes = 8388608         # the largest frame sent or accepted
//!
//! # The library's legacy mode: speak HL7Xfer to an HNClient (an old HNCLIENT.EXE, or
//! # `hnsecure client`) instead of TLS to a gateway; credential and gateways are not used.
//! # transport = "hl7xfer"
//! # hnclient = "127.0.0.1:19430"
//!
//! # The client daemon's listeners (`hnsecure client --config`); leave one out to disable it.
//! [listen]
//! hl7xfer = "127.0.0.1:19430"         # legacy HNClient applications (HL7Xfer)
//! mllp = "127.0.0.1:2575"             # integration engines (MLLP)
//! # allow_list = "allow.txt"          # other hosts allowed to connect: one IP or CIDR a line
//! # allow_loopback = true             # 127.0.0.1 and ::1 connect without being listed
//! # read_timeout_secs = 30            # a peer silent this long mid-message is answered and closed
//! # idle_timeout_secs = 300           # an MLLP connection with no message this long is closed
//! # max_message_bytes = 8388608       # larger messages are refused (XFER003E)
//! # max_connections = 1000            # beyond this, new connections are closed at once
//! # max_connections_per_address = 500 # one address's (IPv6: one /64's) share; default half
//! # shutdown_grace_secs = 30          # on SIGINT/SIGTERM, running transactions get this long
//!
//! # TLS on the MLLP listener, for engines on other hosts (free engines lack it otherwise).
//! # [listen.mllp_tls]
//! # certificate = "mllp.pem"          # this listener's certificate chain (PEM)
//! # private_key = "mllp-key.pem"      # its private key (PEM)
//! # client_ca = "engines-ca.pem"      # CA of the engines' client certificates
//! # require_client_cert = false       # refuse engines without a certificate from client_ca
//! # allowed_subjects = ["CN=lab-1", "dns:lab.example", "ip:10.1.2.3"]   # and not listed
//! # tls13_only = false                # true: refuse TLS 1.2 clients (alert protocol_version)
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, parse_toml, read_toml, resolve};
use crate::transport::DEFAULT_MAX_FRAME;

/// The default transaction timeout, as Volume 5 (2.6) recommends: 70 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(70);

/// How the client core reaches the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TLS to hnsecure gateways, with the facility's credential (the default).
    Gateway,
    /// HL7Xfer to an HNClient at `HOST:PORT` (an old HNCLIENT.EXE, or the client daemon).
    Hl7Xfer(String),
}

/// The client core's configuration.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// This facility's id.
    pub facility: String,
    /// The credential file, resolved against the configuration file's folder (required
    /// for [`Transport::Gateway`]).
    pub credential: Option<PathBuf>,
    /// Accept a credential file that its group or other users may read (never one they
    /// may write). False by default: such a credential is refused.
    pub credential_readable_by_others: bool,
    /// Gateways as `HOST:PORT`, tried in order (required for [`Transport::Gateway`]).
    pub gateways: Vec<String>,
    /// How the network is reached.
    pub transport: Transport,
    /// How long a transaction may take when the caller gives no timeout.
    pub timeout: Duration,
    /// How long connecting to one gateway (TCP and TLS) may take.
    pub connect_timeout: Duration,
    /// How often an idle connection is pinged.
    pub keepalive: Duration,
    /// The largest frame sent or accepted.
    pub max_frame_bytes: usize,
    /// The client daemon's listeners, when configured.
    pub listen: Option<ListenConfig>,
}

/// The client daemon's listeners (`[listen]`).
#[derive(Clone, Debug)]
pub struct ListenConfig {
    /// The HL7Xfer listener, for legacy HNClient applications.
    pub hl7xfer: Option<SocketAddr>,
    /// The MLLP listener, for integration engines.
    pub mllp: Option<SocketAddr>,
    /// TLS on the MLLP listener.
    pub mllp_tls: Option<MllpTls>,
    /// The allow-list file: other hosts allowed to connect.
    pub allow_list: Option<PathBuf>,
    /// 127.0.0.1 and ::1 connect without being on the allow-list (`allow_loopback`,
    /// default true). False on a shared terminal server, where every local user could
    /// otherwise send as the facility.
    pub allow_loopback: bool,
    /// A peer silent this long in the middle of a message is answered and closed.
    pub read_timeout: Duration,
    /// An MLLP connection that sends no message for this long is closed
    /// (`idle_timeout_secs`, default 300). HL7Xfer connections carry one transaction and
    /// are bounded by `read_timeout` and the transaction timeout instead.
    pub idle_timeout: Duration,
    /// The largest message accepted.
    pub max_message_bytes: usize,
    /// Connections beyond this are closed at once.
    pub max_connections: usize,
    /// Connections from one address (IPv4) or one /64 (IPv6) beyond this are closed at
    /// once, so that one host cannot take every connection (default: half of
    /// `max_connections`, rounded up).
    pub max_connections_per_address: usize,
    /// On shutdown, how long running transactions may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for ListenConfig {
    /// What the daemon listens on when client.toml has no `[listen]`: both listeners, on
    /// loopback, at their customary ports.
    fn default() -> Self {
        Self {
            hl7xfer: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_HL7XFER_PORT))),
            mllp: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_MLLP_PORT))),
            mllp_tls: None,
            allow_list: None,
            allow_loopback: true,
            read_timeout: DEFAULT_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_message_bytes: DEFAULT_MAX_FRAME,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS.div_ceil(2),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// The HL7Xfer listener's customary port (HNClient 4.1.d).
pub const DEFAULT_HL7XFER_PORT: u16 = crate::xfer::hl7xfer::DEFAULT_PORT;
/// The MLLP listener's customary port.
pub const DEFAULT_MLLP_PORT: u16 = 2575;
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_MAX_CONNECTIONS: usize = 1000;
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// TLS on the MLLP listener (`[listen.mllp_tls]`).
#[derive(Clone, Debug)]
pub struct MllpTls {
    /// The listener's certificate chain (PEM file).
    pub certificate: PathBuf,
    /// Its private key (PEM file).
    pub private_key: PathBuf,
    /// The CA of the engines' client certificates (PEM file).
    pub client_ca: Option<PathBuf>,
    /// Refuse engines without a client certificate from `client_ca`.
    pub require_client_cert: bool,
    /// When set, an engine's certificate must also match one of these
    /// (`allowed_subjects`); otherwise any certificate from `client_ca` is taken.
    pub allowed_subjects: Option<Vec<SubjectPattern>>,
    /// Offer TLS 1.3 only (`tls13_only`, default false: TLS 1.2 or 1.3). A TLS 1.2
    /// client is then refused in the handshake with the alert `protocol_version`.
    pub tls13_only: bool,
}

/// One entry of `[listen.mllp_tls] allowed_subjects`: what an engine's client
/// certificate must show.
///
/// - `CN=lab-1`: a common name of the certificate's subject, exactly (case and all);
/// - `dns:lab.example`: a DNS name among its subject alternative names, ASCII case
///   ignored (no wildcards: `*.example` matches only a certificate naming `*.example`);
/// - `ip:10.1.2.3`: an IP address among its subject alternative names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectPattern {
    /// `CN=…`
    CommonName(String),
    /// `dns:…`
    Dns(String),
    /// `ip:…`
    Ip(IpAddr),
}

impl SubjectPattern {
    /// Parses `CN=name`, `dns:name` or `ip:address`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let nonempty = |rest: &str, what: &str| {
            if rest.is_empty() {
                Err(format!("{text:?} names no {what}"))
            } else {
                Ok(rest.to_owned())
            }
        };
        if let Some(rest) = text.strip_prefix("CN=") {
            Ok(Self::CommonName(nonempty(rest, "common name")?))
        } else if let Some(rest) = text.strip_prefix("dns:") {
            Ok(Self::Dns(nonempty(rest, "DNS name")?))
        } else if let Some(rest) = text.strip_prefix("ip:") {
            rest.parse()
                .map(Self::Ip)
                .map_err(|_| format!("{rest:?} is not an IP address"))
        } else {
            Err(format!(
                "{text:?}: write CN=common-name, dns:dns-name or ip:address"
            ))
        }
    }
}

impl std::fmt::Display for SubjectPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CommonName(cn) => write!(f, "CN={cn}"),
            Self::Dns(name) => write!(f, "dns:{name}"),
            Self::Ip(ip) => write!(f, "ip:{ip}"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    facility: String,
    credential: Option<PathBuf>,
    #[serde(default)]
    credential_readable_by_others: bool,
    #[serde(default)]
    gateways: Vec<String>,
    transport: Option<String>,
    hnclient: Option<String>,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
    #[serde(default = "default_connect_timeout_secs")]
    connect_timeout_secs: u64,
    #[serde(default = "default_keepalive_secs")]
    keepalive_secs: u64,
    #[serde(default = "default_max_frame_bytes")]
    max_frame_bytes: usize,
    listen: Option<ListenFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenFile {
    hl7xfer: Option<String>,
    mllp: Option<String>,
    mllp_tls: Option<MllpTlsFile>,
    allow_list: Option<PathBuf>,
    allow_loopback: Option<bool>,
    read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_message_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    shutdown_grace_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MllpTlsFile {
    certificate: PathBuf,
    private_key: PathBuf,
    client_ca: Option<PathBuf>,
    #[serde(default)]
    require_client_cert: bool,
    allowed_subjects: Option<Vec<String>>,
    #[serde(default)]
    tls13_only: bool,
}

fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT.as_secs()
}
fn default_connect_timeout_secs() -> u64 {
    10
}
fn default_keepalive_secs() -> u64 {
    30
}
fn default_max_frame_bytes() -> usize {
    DEFAULT_MAX_FRAME
}

/// True for `HOST:PORT` with a host and a port from 1 to 65535.
fn host_port(text: &str) -> bool {
    text.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

impl ClientConfig {
    /// Reads `client.toml` at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_parsed(read_toml(path)?, path)
    }

    /// Reads configuration text; relative paths in it are taken from `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let path = base_dir.join("client.toml");
        Self::from_parsed(parse_toml(text, Path::new("<inline client.toml>"))?, &path)
    }

    fn from_parsed(file: ClientFile, path: &Path) -> Result<Self, ConfigError> {
        if file.facility.is_empty() {
            return Err(ConfigError::invalid(path, "facility", "may not be empty"));
        }
        let transport = match file.transport.as_deref() {
            None | Some("gateway") => Transport::Gateway,
            Some("hl7xfer") => match file.hnclient {
                Some(hnclient) if host_port(&hnclient) => Transport::Hl7Xfer(hnclient),
                Some(hnclient) => {
                    return Err(ConfigError::invalid(
                        path,
                        "hnclient",
                        format!("{hnclient:?} is not HOST:PORT"),
                    ));
                }
                None => {
                    return Err(ConfigError::invalid(
                        path,
                        "hnclient",
                        "transport = \"hl7xfer\" needs the HNClient's HOST:PORT",
                    ));
                }
            },
            Some(other) => {
                return Err(ConfigError::invalid(
                    path,
                    "transport",
                    format!("{other:?}: use \"gateway\" (the default) or \"hl7xfer\""),
                ));
            }
        };
        if transport == Transport::Gateway {
            if file.credential.is_none() {
                return Err(ConfigError::invalid(
                    path,
                    "credential",
                    "name the credential file from `hnsecure client register`",
                ));
            }
            if file.gateways.is_empty() {
                return Err(ConfigError::invalid(
                    path,
                    "gateways",
                    "name at least one gateway, as HOST:PORT",
                ));
            }
        }
        for (i, gateway) in file.gateways.iter().enumerate() {
            if !host_port(gateway) {
                return Err(ConfigError::invalid(
                    path,
                    format!("gateways[{i}]"),
                    format!("{gateway:?} is not HOST:PORT"),
                ));
            }
        }
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(ConfigError::invalid(path, key, "must be at least 1"))
            } else {
                Ok(Duration::from_secs(v))
            }
        };
        if file.max_frame_bytes < 1024 {
            return Err(ConfigError::invalid(
                path,
                "max_frame_bytes",
                "must be at least 1024",
            ));
        }
        let listen = file.listen.map(|l| listen_config(l, path)).transpose()?;
        Ok(Self {
            facility: file.facility,
            credential: file.credential.map(|c| resolve(path, &c)),
            credential_readable_by_others: file.credential_readable_by_others,
            gateways: file.gateways,
            transport,
            timeout: positive("timeout_secs", file.timeout_secs)?,
            connect_timeout: positive("connect_timeout_secs", file.connect_timeout_secs)?,
            keepalive: positive("keepalive_secs", file.keepalive_secs)?,
            max_frame_bytes: file.max_frame_bytes,
            listen,
        })
    }
}

fn listen_config(file: ListenFile, path: &Path) -> Result<ListenConfig, ConfigError> {
    let address = |key: &str, text: Option<String>| -> Result<Option<SocketAddr>, ConfigError> {
        text.map(|t| {
            t.parse::<SocketAddr>().map_err(|_| {
                ConfigError::invalid(
                    path,
                    format!("listen.{key}"),
                    format!("{t:?} is not IP:PORT"),
                )
            })
        })
        .transpose()
    };
    let hl7xfer = address("hl7xfer", file.hl7xfer)?;
    let mllp = address("mllp", file.mllp)?;
    if hl7xfer.is_none() && mllp.is_none() {
        return Err(ConfigError::invalid(
            path,
            "listen",
            "name hl7xfer, mllp, or both",
        ));
    }
    if file.mllp_tls.is_some() && mllp.is_none() {
        return Err(ConfigError::invalid(
            path,
            "listen.mllp_tls",
            "there is no mllp listener to put TLS on",
        ));
    }
    let secs = |key: &str, v: Option<u64>, default: u64| match v {
        Some(0) => Err(ConfigError::invalid(
            path,
            format!("listen.{key}"),
            "must be at least 1",
        )),
        Some(n) => Ok(Duration::from_secs(n)),
        None => Ok(Duration::from_secs(default)),
    };
    let mllp_tls = file.mllp_tls.map(|t| {
        if t.require_client_cert && t.client_ca.is_none() {
            return Err(ConfigError::invalid(
                path,
                "listen.mllp_tls.client_ca",
                "require_client_cert needs the CA of the engines' certificates",
            ));
        }
        let allowed_subjects = match t.allowed_subjects {
            None => None,
            Some(list) => {
                let key = "listen.mllp_tls.allowed_subjects";
                if list.is_empty() {
                    return Err(ConfigError::invalid(
                        path,
                        key,
                        "name at least one subject, or leave allowed_subjects out",
                    ));
                }
                if !t.require_client_cert {
                    return Err(ConfigError::invalid(
                        path,
                        key,
                        "needs require_client_cert = true (an engine without a certificate has no subject to match)",
                    ));
                }
                let parsed = list
                    .iter()
                    .enumerate()
                    .map(|(i, entry)| {
                        SubjectPattern::parse(entry)
                            .map_err(|e| ConfigError::invalid(path, format!("{key}[{i}]"), e))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Some(parsed)
            }
        };
        Ok(MllpTls {
            certificate: resolve(path, &t.certificate),
            private_key: resolve(path, &t.private_key),
            client_ca: t.client_ca.map(|c| resolve(path, &c)),
            require_client_cert: t.require_client_cert,
            allowed_subjects,
            tls13_only: t.tls13_only,
        })
    });
    let max_connections = file
        .max_connections
        .unwrap_or(DEFAULT_MAX_CONNECTIONS)
        .max(1);
    let max_connections_per_address = match file.max_connections_per_address {
        Some(0) => {
            return Err(ConfigError::invalid(
                path,
                "listen.max_connections_per_address",
                "must be at least 1",
            ));
        }
        Some(n) => n.min(max_connections),
        None => max_connections.div_ceil(2),
    };
    Ok(ListenConfig {
        hl7xfer,
        mllp,
        mllp_tls: mllp_tls.transpose()?,
        allow_list: file.allow_list.map(|a| resolve(path, &a)),
        allow_loopback: file.allow_loopback.unwrap_or(true),
        read_timeout: secs(
            "read_timeout_secs",
            file.read_timeout_secs,
            DEFAULT_READ_TIMEOUT.as_secs(),
        )?,
        idle_timeout: secs(
            "idle_timeout_secs",
            file.idle_timeout_secs,
            DEFAULT_IDLE_TIMEOUT.as_secs(),
        )?,
        max_message_bytes: file
            .max_message_bytes
            .unwrap_or(DEFAULT_MAX_FRAME)
            .max(1024),
        max_connections,
        max_connections_per_address,
        shutdown_grace: file
            .shutdown_grace_secs
            .map_or(DEFAULT_SHUTDOWN_GRACE, Duration::from_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_relative_credential() {
        let c = ClientConfig::from_toml(
            "facility = \"BC00000098\"\ncredential = \"cred.toml\"\ngateways = [\"127.0.0.1:7443\"]\n",
            Path::new("/etc/hnsecure"),
        )
        .unwrap();
        assert_eq!(
            c.credential.as_deref(),
            Some(Path::new("/etc/hnsecure/cred.toml"))
        );
        assert_eq!(c.transport, Transport::Gateway);
        assert!(!c.credential_readable_by_others);
        assert_eq!(c.timeout, Duration::from_secs(70));
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.max_frame_bytes, 8 * 1024 * 1024);
        assert!(c.listen.is_none());
    }

    #[test]
    fn legacy_mode_needs_no_credential() {
        let c = ClientConfig::from_toml(
            "facility = \"BC00000098\"\ntransport = \"hl7xfer\"\nhnclient = \"127.0.0.1:19430\"\n",
            Path::new("/x"),
        )
        .unwrap();
        assert_eq!(c.transport, Transport::Hl7Xfer("127.0.0.1:19430".into()));
        assert_eq!(c.credential, None);
    }

    #[test]
    fn listeners() {
        let c = ClientConfig::from_toml(
            "facility = \"F\"\ncredential = \"c\"\ngateways = [\"h:1\"]\n\
             [listen]\nhl7xfer = \"127.0.0.1:19430\"\nallow_list = \"allow.txt\"\n\
             [listen.mllp_tls]\ncertificate = \"m.pem\"\nprivate_key = \"k.pem\"\n",
            Path::new("/etc/hn"),
        );
        let e = c.unwrap_err().to_string();
        assert!(
            e.contains("listen.mllp_tls") && e.contains("no mllp listener"),
            "{e}"
        );
        let c = ClientConfig::from_toml(
            "facility = \"F\"\ncredential = \"c\"\ngateways = [\"h:1\"]\n\
             [listen]\nhl7xfer = \"127.0.0.1:19430\"\nmllp = \"0.0.0.0:2575\"\nallow_list = \"allow.txt\"\n\
             [listen.mllp_tls]\ncertificate = \"m.pem\"\nprivate_key = \"k.pem\"\n",
            Path::new("/etc/hn"),
        )
        .unwrap();
        let listen = c.listen.unwrap();
        assert_eq!(listen.hl7xfer, Some("127.0.0.1:19430".parse().unwrap()));
        assert_eq!(
            listen.allow_list.as_deref(),
            Some(Path::new("/etc/hn/allow.txt"))
        );
        assert_eq!(
            listen.mllp_tls.unwrap().certificate,
            Path::new("/etc/hn/m.pem")
        );
        assert_eq!(listen.read_timeout, Duration::from_secs(30));
    }

    #[test]
    fn without_listen_the_daemon_takes_both_customary_ports_on_loopback() {
        let d = ListenConfig::default();
        assert_eq!(d.hl7xfer, Some("127.0.0.1:19430".parse().unwrap()));
        assert_eq!(d.mllp, Some("127.0.0.1:2575".parse().unwrap()));
        assert!(d.allow_list.is_none() && d.mllp_tls.is_none());
        assert_eq!(d.read_timeout, Duration::from_secs(30));
        assert!(d.allow_loopback);
        assert_eq!(d.idle_timeout, Duration::from_secs(300));
        assert_eq!(d.max_connections_per_address, 500);
    }

    #[test]
    fn listen_limits_loopback_and_client_subjects() {
        let head = "facility = \"F\"\ncredential = \"c\"\ngateways = [\"h:1\"]\n[listen]\nmllp = \"0.0.0.0:2575\"\n";
        let listen = |text: &str| {
            ClientConfig::from_toml(&format!("{head}{text}"), Path::new("/etc/hn"))
                .map(|c| c.listen.unwrap())
        };
        let l = listen("max_connections = 5\n").unwrap();
        assert_eq!(l.max_connections_per_address, 3, "half, rounded up");
        assert!(l.allow_loopback);
        let l =
            listen("max_connections = 1\nallow_loopback = false\nidle_timeout_secs = 7\n").unwrap();
        assert_eq!(l.max_connections_per_address, 1);
        assert!(!l.allow_loopback);
        assert_eq!(l.idle_timeout, Duration::from_secs(7));
        let l = listen("max_connections = 10\nmax_connections_per_address = 99\n").unwrap();
        assert_eq!(
            l.max_connections_per_address, 10,
            "never above max_connections"
        );
        let tls = "[listen.mllp_tls]\ncertificate = \"m.pem\"\nprivate_key = \"k.pem\"\nclient_ca = \"ca.pem\"\n";
        let l = listen(&format!(
            "{tls}require_client_cert = true\nallowed_subjects = [\"CN=lab-1\", \"dns:lab.example\", \"ip:10.1.2.3\"]\n"
        ))
        .unwrap();
        let t = l.mllp_tls.unwrap();
        assert!(!t.tls13_only, "TLS 1.2 and 1.3 unless tls13_only");
        assert_eq!(
            t.allowed_subjects.unwrap(),
            [
                SubjectPattern::CommonName("lab-1".into()),
                SubjectPattern::Dns("lab.example".into()),
                SubjectPattern::Ip("10.1.2.3".parse().unwrap()),
            ]
        );
        let l = listen(&format!(
            "{tls}tls13_only = true
"
        ))
        .unwrap();
        assert!(l.mllp_tls.unwrap().tls13_only);
        let cases = [
            (
                "max_connections_per_address = 0\n".to_owned(),
                "listen.max_connections_per_address",
            ),
            (
                "idle_timeout_secs = 0\n".to_owned(),
                "listen.idle_timeout_secs",
            ),
            ("allow_loopback = \"no\"\n".to_owned(), "allow_loopback"),
            (
                format!(
                    "{tls}require_client_cert = true\nallowed_subjects = [\"CN=a\", \"lab-1\"]\n"
                ),
                "listen.mllp_tls.allowed_subjects[1]",
            ),
            (
                format!("{tls}require_client_cert = true\nallowed_subjects = [\"ip:lab\"]\n"),
                "listen.mllp_tls.allowed_subjects[0]",
            ),
            (
                format!("{tls}require_client_cert = true\nallowed_subjects = []\n"),
                "listen.mllp_tls.allowed_subjects",
            ),
            (
                format!("{tls}allowed_subjects = [\"CN=lab-1\"]\n"),
                "require_client_cert",
            ),
        ];
        for (text, key) in cases {
            let e = listen(&text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        let base = Path::new("/x");
        let cases = [
            (
                "facility = \"F\"\ncredential = \"c\"\ngateways = []\n",
                "gateways",
            ),
            ("facility = \"F\"\ngateways = [\"h:1\"]\n", "credential"),
            (
                "facility = \"F\"\ncredential = \"c\"\ngateways = [\"nohost\"]\n",
                "gateways[0]",
            ),
            (
                "facility = \"F\"\ncredential = \"c\"\ngateways = [\"h:0\"]\n",
                "gateways[0]",
            ),
            (
                "facility = \"F\"\ncredential = \"c\"\ngateways = [\"h:1\"]\ntimeout_secs = 0\n",
                "timeout_secs",
            ),
            (
                "facility = \"F\"\ncredential = \"c\"\ngateways = [\"h:1\"]\ntimout_secs = 5\n",
                "timout_secs",
            ),
            ("credential = \"c\"\ngateways = [\"h:1\"]\n", "facility"),
            ("facility = \"F\"\ntransport = \"hl7xfer\"\n", "hnclient"),
            (
                "facility = \"F\"\ntransport = \"carrier pigeon\"\n",
                "transport",
            ),
            (
                "facility = \"F\"\ncredential = \"c\"\ngateways = [\"h:1\"]\n[listen]\n",
                "hl7xfer, mllp",
            ),
            (
                "facility = \"F\"\ncredential = \"c\"\ngateways = [\"h:1\"]\n[listen]\nmllp = \"nowhere\"\n",
                "listen.mllp",
            ),
        ];
        for (text, key) in cases {
            let e = ClientConfig::from_toml(text, base).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }
}
