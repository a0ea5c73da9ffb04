//! `client.toml`: what the client core needs to reach the gateway.
//!
//! ```toml
//! facility = "BC00000098"             # this facility's id (MSH-4 of what it sends)
//! credential = "credential.toml"      # from `hnsecure client register`; relative to this file
//! gateways = ["gate1.example:7443", "gate2.example:7443"]   # tried in order on connection loss
//! timeout_secs = 70                   # per transaction, unless the caller gives one (Volume 5, 2.6)
//! # connect_timeout_secs = 10         # TCP connect and TLS handshake, per gateway
//! # keepalive_secs = 30               # ping an idle connection this often
//! # max_frame_bytes = 8388608         # the largest frame sent or accepted
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, parse_toml, read_toml, resolve};
use crate::transport::DEFAULT_MAX_FRAME;

/// The default transaction timeout, as Volume 5 (2.6) recommends: 70 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(70);

/// The client core's configuration.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// This facility's id.
    pub facility: String,
    /// The credential file, resolved against the configuration file's folder.
    pub credential: PathBuf,
    /// Gateways as `HOST:PORT`, tried in order.
    pub gateways: Vec<String>,
    /// How long a transaction may take when the caller gives no timeout.
    pub timeout: Duration,
    /// How long connecting to one gateway (TCP and TLS) may take.
    pub connect_timeout: Duration,
    /// How often an idle connection is pinged.
    pub keepalive: Duration,
    /// The largest frame sent or accepted.
    pub max_frame_bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    facility: String,
    credential: PathBuf,
    gateways: Vec<String>,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
    #[serde(default = "default_connect_timeout_secs")]
    connect_timeout_secs: u64,
    #[serde(default = "default_keepalive_secs")]
    keepalive_secs: u64,
    #[serde(default = "default_max_frame_bytes")]
    max_frame_bytes: usize,
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
        if file.gateways.is_empty() {
            return Err(ConfigError::invalid(
                path,
                "gateways",
                "name at least one gateway, as HOST:PORT",
            ));
        }
        for (i, gateway) in file.gateways.iter().enumerate() {
            let port_ok = gateway.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !port_ok {
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
        Ok(Self {
            facility: file.facility,
            credential: resolve(path, &file.credential),
            gateways: file.gateways,
            timeout: positive("timeout_secs", file.timeout_secs)?,
            connect_timeout: positive("connect_timeout_secs", file.connect_timeout_secs)?,
            keepalive: positive("keepalive_secs", file.keepalive_secs)?,
            max_frame_bytes: file.max_frame_bytes,
        })
    }
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
        assert_eq!(c.credential, Path::new("/etc/hnsecure/cred.toml"));
        assert_eq!(c.timeout, Duration::from_secs(70));
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.max_frame_bytes, 8 * 1024 * 1024);
    }

    #[test]
    fn mistakes_are_named() {
        let base = Path::new("/x");
        let cases = [
            (
                "facility = \"F\"\ncredential = \"c\"\ngateways = []\n",
                "gateways",
            ),
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
        ];
        for (text, key) in cases {
            let e = ClientConfig::from_toml(text, base).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }
}
