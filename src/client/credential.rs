//! A facility's credential: everything registration gives it, in one file (mode 0600).
//!
//! ```toml
//! # hnsecure credential for facility BC00000098. Secret: keep it readable by its owner only.
//! facility = "BC00000098"
//! key_id = 1
//! envelope_key = "<64 hexadecimal digits>"
//! certificate = """-----BEGIN CERTIFICATE----- …"""
//! private_key = """-----BEGIN PRIVATE KEY----- …"""
//! ca = """-----BEGIN CERTIFICATE----- …"""
//! ```

use std::fmt;
use std::io::Write;
use std::path::Path;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::config::ConfigError;
use crate::envelope::MasterKey;
use crate::transport::tls;

/// A facility's certificate, private key, HNGard's CA and the envelope master key.
#[derive(Clone)]
pub struct Credential {
    /// The facility id (the certificate's subject).
    pub facility: String,
    /// The envelope master key shared with HNGard.
    pub key: MasterKey,
    /// The facility's certificate, PEM.
    pub certificate_pem: String,
    /// The facility's private key, PEM.
    pub private_key_pem: Zeroizing<String>,
    /// HNGard's CA certificate, PEM: the only root the client trusts.
    pub ca_pem: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("facility", &self.facility)
            .field("key", &self.key)
            .field("private_key_pem", &"MASKED")
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialFile {
    facility: String,
    key_id: u32,
    envelope_key: String,
    certificate: String,
    private_key: String,
    ca: String,
}

impl Credential {
    /// Reads a credential file. Warns (through `log`) when others may read it.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                    path: path.to_owned(),
                    error,
                })?,
            );
        warn_if_readable_by_others(path);
        let file: CredentialFile = crate::config::parse_toml(&text, path)?;
        let envelope_key = Zeroizing::new(file.envelope_key);
        let key = decode_hex_key(&envelope_key).ok_or_else(|| {
            ConfigError::invalid(path, "envelope_key", "must be 64 hexadecimal digits")
        })?;
        let credential = Self {
            facility: file.facility,
            key: MasterKey::new(file.key_id, *key),
            certificate_pem: file.certificate,
            private_key_pem: Zeroizing::new(file.private_key),
            ca_pem: file.ca,
        };
        credential
            .tls_parts()
            .map_err(|e| ConfigError::invalid(path, "certificate", e.to_string()))?;
        Ok(credential)
    }

    /// Writes the credential to `path`, created with mode 0600 before any secret is in
    /// it, through a temporary file renamed into place so a reader never sees half.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut text = Zeroizing::new(String::new());
        text.push_str(&format!(
            "# hnsecure credential for facility {}. Secret: keep it readable by its owner only.\n",
            self.facility
        ));
        text.push_str(&format!("facility = {}\n", toml_string(&self.facility)));
        text.push_str(&format!("key_id = {}\n", self.key.id()));
        text.push_str("envelope_key = \"");
        for b in self.key.as_bytes() {
            text.push_str(&format!("{b:02x}"));
        }
        text.push_str("\"\n");
        text.push_str(&format!(
            "certificate = {}\n",
            toml_string(&self.certificate_pem)
        ));
        text.push_str(&format!(
            "private_key = {}\n",
            toml_string(&self.private_key_pem)
        ));
        text.push_str(&format!("ca = {}\n", toml_string(&self.ca_pem)));

        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut file = create_private(&temporary)?;
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all());
        drop(file);
        if let Err(e) = written.and_then(|()| std::fs::rename(&temporary, path)) {
            let _ = std::fs::remove_file(&temporary);
            return Err(e);
        }
        Ok(())
    }

    /// The certificate chain and private key for TLS, and the CA certificates.
    pub fn tls_parts(&self) -> Result<TlsParts, tls::TlsError> {
        Ok(TlsParts {
            chain: tls::certificates_from_pem(self.certificate_pem.as_bytes())?,
            key: tls::private_key_from_pem(self.private_key_pem.as_bytes())?,
            ca: tls::certificates_from_pem(self.ca_pem.as_bytes())?,
        })
    }
}

/// A credential's TLS material, parsed.
pub struct TlsParts {
    /// The facility's certificate (chain).
    pub chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// The facility's private key.
    pub key: rustls_pki_types::PrivateKeyDer<'static>,
    /// HNGard's CA.
    pub ca: Vec<rustls_pki_types::CertificateDer<'static>>,
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn decode_hex_key(hex: &str) -> Option<Zeroizing<[u8; 32]>> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut key = Zeroizing::new([0u8; 32]);
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        key[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(key)
}

/// Creates `path` for writing, readable and writable by its owner only (on Unix the
/// mode is set at creation, so the file is never readable by others, even briefly).
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            log::warn!(
                "{} can be read by other users (mode {:o}); it holds secrets: chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credential {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "BC00000098");
        let cert = params.self_signed(&key).unwrap();
        Credential {
            facility: "BC00000098".into(),
            key: MasterKey::new(3, [0xA5; 32]),
            certificate_pem: cert.pem(),
            private_key_pem: Zeroizing::new(key.serialize_pem()),
            ca_pem: cert.pem(),
        }
    }

    #[test]
    fn written_then_read_back() {
        let dir = std::env::temp_dir().join(format!("hnsecure-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credential.toml");
        let original = sample();
        original.write(&path).unwrap();
        let back = Credential::read(&path).unwrap();
        assert_eq!(back.facility, "BC00000098");
        assert_eq!(back.key.id(), 3);
        assert_eq!(back.key.as_bytes(), original.key.as_bytes());
        assert_eq!(back.certificate_pem, original.certificate_pem);
        assert_eq!(*back.private_key_pem, *original.private_key_pem);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(
            std::fs::read_dir(&dir).unwrap().count() == 1,
            "no temporary file left behind"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = sample();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("PRIVATE KEY") && !shown.contains("165") && shown.contains("MASKED"),
            "{shown}"
        );
    }

    #[test]
    fn a_bad_key_is_named() {
        let dir = std::env::temp_dir().join(format!("hnsecure-cred-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        let mut c = sample();
        c.key = MasterKey::new(1, [0; 32]);
        c.write(&path).unwrap();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(&"0".repeat(64), "zz");
        std::fs::write(&path, text).unwrap();
        let e = Credential::read(&path).unwrap_err().to_string();
        assert!(
            e.contains("envelope_key") && e.contains("64 hexadecimal"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
