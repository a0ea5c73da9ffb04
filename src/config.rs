//! Reading TOML configuration files with errors that name the file and the key.
//!
//! Every configuration struct denies unknown keys, so a misspelt key is an error that
//! says which key and where, not a silently ignored line.
#![forbid(unsafe_code)]

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
    /// A file holding secrets, or the folder it is in, is open to other users: the mode
    /// is shown, never the contents.
    Permissions {
        /// The file or folder.
        path: PathBuf,
        /// Its permission bits (`st_mode & 0o7777`).
        mode: u32,
        /// What is wrong, e.g. "is writable by other users".
        problem: &'static str,
        /// What to do about it.
        fix: String,
    },
    /// On Windows: a file holding secrets is open to other users through its access
    /// control list. The account is named by its SID, never the contents shown.
    Access {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the account, e.g. "is writable by S-1-1-0".
        problem: String,
        /// What to do about it.
        fix: String,
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
            Self::Permissions {
                path,
                mode,
                problem,
                fix,
            } => write!(f, "{} {problem} (mode {mode:03o}): {fix}", path.display()),
            Self::Access { path, problem, fix } => {
                write!(f, "{} {problem}: {fix}", path.display())
            }
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
///
/// The error is one line naming the line and column and what is wrong, and never quotes
/// the file: a credential file holds secrets, and error texts reach logs.
pub fn parse_toml<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let what = redact_quoted(&e.message().replace(['\r', '\n'], " "));
        let message = match e.span() {
            Some(span) => {
                let start = span.start.min(text.len());
                let before = &text.as_bytes()[..start];
                let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
                // The key is what its line has before `=`: a name, never a value.
                let line_start = before
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let line_text = text[line_start..].lines().next().unwrap_or("");
                match line_text.split_once('=').map(|(k, _)| k.trim()) {
                    Some(key) if !key.is_empty() && !key.contains(['"', '\'', ' ']) => {
                        format!("line {line}, column {column}, key `{key}`: {what}")
                    }
                    _ => format!("line {line}, column {column}: {what}"),
                }
            }
            None => what,
        };
        ConfigError::Parse {
            path: path.to_owned(),
            message,
        }
    })
}

/// `text` with whatever stands between double quotes blanked out: serde quotes the
/// offending value (`invalid type: string "…"`), and a value may be a secret.
fn redact_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        if c == '"' {
            if inside {
                out.push('…');
            }
            inside = !inside;
            out.push(c);
        } else if !inside {
            out.push(c);
        }
    }
    out
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
        assert!(e.to_string().contains("key `count`"), "{e}");
        assert!(
            !e.to_string().contains("many"),
            "the value is not quoted: {e}"
        );

        // A secret in a bad value is never quoted, and the error is one line.
        let secret =
            "name = \"x\"\ncount = 1\nkey = \"\\q-----BEGIN PRIVATE KEY-----SECRETSECRET\"\n";
        let e = parse_toml::<Sample>(secret, Path::new("credential.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains("SECRET") && !e.contains("BEGIN") && !e.contains('\n'),
            "{e}"
        );
        assert!(e.starts_with("credential.toml: line 3, column"), "{e}");

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
