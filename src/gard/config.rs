//! `DIR/gard.toml`: where a directory keeps its records. Without the file (or with
//! `store = "sqlite"`) they are in `DIR/gard.db`; with
//!
//! ```toml
//! store = "postgres://hngard@db.example:5432/hngard"
//! password_file = "pg-password"    # optional; relative to DIR; mode 0600
//! ```
//!
//! they are in a PostgreSQL database that several gateways can share. The URL never holds
//! the password: it comes from `password_file` (a private file, refused when other users
//! may read it) or else from the environment variable `PGPASSWORD`, or none is sent.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use super::{GardError, files};

/// The name of the file in a directory.
pub const CONFIG_FILE: &str = "gard.toml";

/// The environment variable read for the PostgreSQL password when no `password_file` is
/// given.
pub const PASSWORD_ENV: &str = "PGPASSWORD";

/// Where a directory keeps its records (`DIR/gard.toml`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StoreConfig {
    /// `DIR/gard.db`, the default.
    #[default]
    Sqlite,
    /// A PostgreSQL database, possibly shared by several gateways.
    Postgres {
        /// `postgres://USER@HOST:PORT/DBNAME` (or `postgresql://`), without a password.
        url: String,
        /// The file holding the password, relative to the directory unless absolute.
        password_file: Option<PathBuf>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    store: String,
    password_file: Option<PathBuf>,
}

impl StoreConfig {
    /// Reads `DIR/gard.toml`; [`StoreConfig::Sqlite`] when there is none.
    pub fn read(dir: &Path) -> Result<Self, GardError> {
        let path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::Sqlite),
            Err(source) => {
                return Err(GardError::Io {
                    path,
                    action: "read",
                    source,
                });
            }
        };
        Self::parse(&text).map_err(|reason| GardError::Config { path, reason })
    }

    /// The settings in the text of a `gard.toml`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        Self::new(&file.store, file.password_file)
    }

    /// The settings for `store` (`sqlite`, or a PostgreSQL URL without a password) and an
    /// optional password file.
    pub fn new(store: &str, password_file: Option<PathBuf>) -> Result<Self, String> {
        if store == "sqlite" {
            if password_file.is_some() {
                return Err("password_file is only for a PostgreSQL store".to_owned());
            }
            return Ok(Self::Sqlite);
        }
        check_url(store)?;
        if password_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err("password_file is empty".to_owned());
        }
        Ok(Self::Postgres {
            url: store.to_owned(),
            password_file,
        })
    }

    /// The text of a `gard.toml` holding these settings.
    pub fn to_toml(&self) -> String {
        let mut text = String::from(
            "# Where this HNGard directory keeps its records (see `hnsecure gard --help`).\n",
        );
        match self {
            Self::Sqlite => text.push_str("store = \"sqlite\"\n"),
            Self::Postgres { url, password_file } => {
                text.push_str(&format!("store = {}\n", toml_string(url)));
                if let Some(file) = password_file {
                    text.push_str(&format!(
                        "password_file = {}\n",
                        toml_string(&file.to_string_lossy())
                    ));
                }
            }
        }
        text
    }

    /// The PostgreSQL password: the password file's first line, else `PGPASSWORD`, else
    /// none. Always `None` for SQLite.
    pub(crate) fn password(&self, dir: &Path) -> Result<Option<Zeroizing<String>>, GardError> {
        let Self::Postgres { password_file, .. } = self else {
            return Ok(None);
        };
        let Some(file) = password_file else {
            return Ok(std::env::var(PASSWORD_ENV)
                .ok()
                .filter(|p| !p.is_empty())
                .map(Zeroizing::new));
        };
        let path = dir.join(file);
        let bytes = files::read_private(&path)?;
        let bad = || GardError::BadFile {
            path: path.clone(),
            expected: "a password on its first line",
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
        let line = text.lines().next().unwrap_or("");
        if line.is_empty() {
            return Err(bad());
        }
        Ok(Some(Zeroizing::new(line.to_owned())))
    }
}

/// A PostgreSQL URL that names no password.
fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(
            "store must be \"sqlite\" or a URL postgres://USER@HOST:PORT/DBNAME".to_owned(),
        );
    }
    // The parse error could quote the URL; say what is wrong without it.
    let config: postgres::Config = url
        .parse()
        .map_err(|_| "store is not a valid PostgreSQL URL (postgres://USER@HOST:PORT/DBNAME)")?;
    if config.get_password().is_some() {
        return Err(
            "the PostgreSQL URL holds a password: remove it, and put it in a file named by \
             password_file (mode 0600) or in the environment variable PGPASSWORD"
                .to_owned(),
        );
    }
    if config.get_hosts().is_empty() {
        return Err("the PostgreSQL URL names no host".to_owned());
    }
    if config.get_dbname().is_none_or(str::is_empty) {
        return Err("the PostgreSQL URL names no database".to_owned());
    }
    Ok(())
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gard_config_reads_sqlite_and_postgres_settings() {
        assert_eq!(
            StoreConfig::parse("store = \"sqlite\"\n").unwrap(),
            StoreConfig::Sqlite
        );
        let pg = StoreConfig::parse(
            "store = \"postgres://hngard@db.example:5432/hngard\"\npassword_file = \"pg-password\"\n",
        )
        .unwrap();
        assert_eq!(
            pg,
            StoreConfig::Postgres {
                url: "postgres://hngard@db.example:5432/hngard".to_owned(),
                password_file: Some(PathBuf::from("pg-password")),
            }
        );
        assert_eq!(StoreConfig::parse(&pg.to_toml()).unwrap(), pg);
        assert_eq!(
            StoreConfig::parse(&StoreConfig::Sqlite.to_toml()).unwrap(),
            StoreConfig::Sqlite
        );
    }

    #[test]
    fn gard_config_refuses_passwords_in_urls_and_unknown_settings() {
        for (text, expected) in [
            ("store = \"postgres://u:s3cret@h/db\"", "holds a password"),
            (
                "store = \"postgresql://u@h/db?password=s3cret\"",
                "holds a password",
            ),
            ("store = \"mysql://u@h/db\"", "must be \"sqlite\" or a URL"),
            ("store = \"host=h user=u\"", "must be \"sqlite\" or a URL"),
            ("store = \"postgres://u@h/\"", "names no database"),
            ("store = \"postgres://u@h/db\"\nport = 5", "unknown field"),
            ("password_file = \"x\"", "missing field"),
            (
                "store = \"sqlite\"\npassword_file = \"x\"",
                "only for a PostgreSQL",
            ),
        ] {
            let e = StoreConfig::parse(text).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }
}
