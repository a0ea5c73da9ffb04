//! Reading TOML configuration files with errors that name the file and the key.
//!
//! Every configuration struct denies unknown keys, so a misspelt key is an error that
//! says which key and where, not a silently ignored line.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration file could not be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not valid TOML for this configuration: an unknown key, a wrong type,
    /// a missing key. The message names the key and the line.
    Parse {
        /// The file, or `<inline>` for text given directly.
        path: PathBuf,
        /// toml's description, with line and column.
        message: String,
    },
    /// A value is of the right type but unusable.
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, e.g. `gateways` or `route[2].destination`.
        key: String,
        /// What is wrong with it.
        why: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            Self::Parse { path, message } => {
                write!(f, "{}: {}", path.display(), message.trim_end())
            }
            Self::Invalid { path, key, why } => write!(f, "{}: {key}: {why}", path.display()),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An [`ConfigError::Invalid`] for `key` in `path`.
    pub fn invalid(path: &Path, key: impl Into<String>, why: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_owned(),
            key: key.into(),
            why: why.into(),
        }
    }
}

/// Parses `text` as the configuration `T`; `path` names it in errors.
pub fn parse_toml<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Reads and parses the configuration file at `path`.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse_toml(&text, path)
}

/// `relative` resolved against the folder of the configuration file `config`.
pub fn resolve(config: &Path, relative: &Path) -> PathBuf {
    if relative.is_absolute() {
        return relative.to_owned();
    }
    config.parent().unwrap_or(Path::new(".")).join(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        count: u32,
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_line() {
        let e = parse_toml::<Sample>("name = \"x\"\ncount = 1\ncolour = 2\n", Path::new("x.toml"))
            .unwrap_err();
        let shown = e.to_string();
        assert!(shown.starts_with("x.toml: "), "{shown}");
        assert!(
            shown.contains("colour") && shown.contains("line 3"),
            "{shown}"
        );

        let e = parse_toml::<Sample>("name = \"x\"\ncount = \"many\"\n", Path::new("x.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("count"), "{e}");

        let e = read_toml::<Sample>(Path::new("/no/such/file.toml")).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot read /no/such/file.toml"),
            "{e}"
        );
    }

    #[test]
    fn paths_resolve_against_the_config_folder() {
        assert_eq!(
            resolve(Path::new("/etc/hn/client.toml"), Path::new("cred.toml")),
            Path::new("/etc/hn/cred.toml")
        );
        assert_eq!(
            resolve(Path::new("/etc/hn/client.toml"), Path::new("/abs/c")),
            Path::new("/abs/c")
        );
        assert_eq!(
            resolve(Path::new("client.toml"), Path::new("c")),
            Path::new("c")
        );
    }
}
