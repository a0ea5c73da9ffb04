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

use std::fmt::{self, Write as _};
use std::io::{Read, Write};
use std::path::Path;

use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

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

impl Drop for CredentialFile {
    /// The secrets are taken out with `mem::take`; whatever is left (on an error) is wiped.
    fn drop(&mut self) {
        self.envelope_key.zeroize();
        self.private_key.zeroize();
    }
}

impl Credential {
    /// Reads a credential file that only its owner may read: [`Credential::read_with`]
    /// with `readable_by_others = false`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        Self::read_with(path, false)
    }

    /// Reads a credential file, refusing it (before reading a byte of it) when other
    /// users may change it — the file is writable by its group or others, or its folder
    /// is writable by others and not sticky — and, unless `readable_by_others`, when its
    /// group or others may read it. On Windows the file's access control list is checked
    /// instead of its mode: refused when an account other than its owner, `SYSTEM` and
    /// Administrators may change it, or (unless `readable_by_others`) read it. (On
    /// Windows the folder is not checked.)
    pub fn read_with(path: &Path, readable_by_others: bool) -> Result<Self, ConfigError> {
        let read_error = |error| ConfigError::Read {
            path: path.to_owned(),
            error,
        };
        let mut file = std::fs::File::open(path).map_err(read_error)?;
        check_folder(path, FolderUse::Read)?;
        let metadata = file.metadata().map_err(read_error)?;
        check_file(path, &file, &metadata, readable_by_others)?;
        // One allocation of the final size, so no reallocation leaves a copy behind.
        let capacity = usize::try_from(metadata.len())
            .unwrap_or(0)
            .saturating_add(1);
        let mut text = Zeroizing::new(String::with_capacity(capacity));
        file.read_to_string(&mut text).map_err(read_error)?;
        let mut file: CredentialFile = crate::config::parse_toml(&text, path)?;
        let envelope_key = Zeroizing::new(std::mem::take(&mut file.envelope_key));
        let key = decode_hex_key(&envelope_key).ok_or_else(|| {
            ConfigError::invalid(path, "envelope_key", "must be 64 hexadecimal digits")
        })?;
        let credential = Self {
            facility: std::mem::take(&mut file.facility),
            key: MasterKey::new(file.key_id, *key),
            certificate_pem: std::mem::take(&mut file.certificate),
            private_key_pem: Zeroizing::new(std::mem::take(&mut file.private_key)),
            ca_pem: std::mem::take(&mut file.ca),
        };
        credential
            .check()
            .map_err(|e| ConfigError::invalid(path, "certificate", e.to_string()))?;
        Ok(credential)
    }

    /// Checks that the certificate, key and CA parse, wiping the parsed key afterwards.
    fn check(&self) -> Result<(), tls::TlsError> {
        let mut parts = self.tls_parts()?;
        parts.key.zeroize();
        Ok(())
    }

    /// The credential file's text. Written straight into one buffer, reserved large
    /// enough up front, that is wiped when dropped: no temporary string holds a secret.
    fn to_toml(&self) -> Zeroizing<String> {
        let capacity = self.toml_capacity();
        let mut text = Zeroizing::new(String::with_capacity(capacity));
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "# hnsecure credential for facility {}. Secret: keep it readable by its owner only.",
            self.facility.escape_debug()
        );
        text.push_str("facility = ");
        push_toml_string(&mut text, &self.facility);
        let _ = writeln!(text, "\nkey_id = {}", self.key.id());
        text.push_str("envelope_key = \"");
        for b in self.key.as_bytes() {
            let _ = write!(text, "{b:02x}");
        }
        text.push_str("\"\ncertificate = ");
        push_toml_string(&mut text, &self.certificate_pem);
        text.push_str("\nprivate_key = ");
        push_toml_string(&mut text, &self.private_key_pem);
        text.push_str("\nca = ");
        push_toml_string(&mut text, &self.ca_pem);
        text.push('\n');
        debug_assert!(text.len() <= capacity);
        text
    }

    /// More than the credential's text can take: escaping makes a byte at most 6
    /// ("\u0001"), and the facility is written twice (comment and key).
    fn toml_capacity(&self) -> usize {
        512 + 6
            * (2 * self.facility.len()
                + self.certificate_pem.len()
                + self.private_key_pem.len()
                + self.ca_pem.len())
    }

    /// Writes the credential to `path` with [`write_private`]: through a new file with a
    /// random name, mode 0600 from its creation, renamed into place. `Ok` means `path`
    /// now is that file and its mode is 0600; a folder other users can write (and not
    /// sticky) is refused.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        write_private(path, self.to_toml().as_bytes())
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
///
/// `rustls_pki_types::PrivateKeyDer` is not wiped when dropped (it implements `Zeroize`
/// only): call `parts.key.zeroize()` when the key is not handed on to rustls.
pub struct TlsParts {
    /// The facility's certificate (chain).
    pub chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// The facility's private key.
    pub key: rustls_pki_types::PrivateKeyDer<'static>,
    /// HNGard's CA.
    pub ca: Vec<rustls_pki_types::CertificateDer<'static>>,
}

/// A PKCS#8 private key (DER) as PEM, written straight into a buffer wiped when dropped
/// (`rcgen::KeyPair::serialize_pem` goes through the `pem` crate, whose buffers are not).
pub(crate) fn pkcs8_pem(der: &[u8]) -> Zeroizing<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let encoded = der.len().div_ceil(3) * 4;
    let mut pem = Zeroizing::new(String::with_capacity(64 + encoded + encoded.div_ceil(64)));
    pem.push_str("-----BEGIN PRIVATE KEY-----\n");
    let mut column = 0;
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let sextets = [
            b[0] >> 2,
            (b[0] & 0x03) << 4 | b[1] >> 4,
            (b[1] & 0x0f) << 2 | b[2] >> 6,
            b[2] & 0x3f,
        ];
        for (i, &s) in sextets.iter().enumerate() {
            let c = if i <= chunk.len() {
                ALPHABET[usize::from(s)] as char
            } else {
                '='
            };
            pem.push(c);
            column += 1;
            if column == 64 {
                pem.push('\n');
                column = 0;
            }
        }
    }
    if column != 0 {
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// Appends `s` as a TOML basic string: quotes, backslashes and control characters escaped.
fn push_toml_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn decode_hex_key(hex: &str) -> Option<Zeroizing<[u8; 32]>> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut key = Zeroizing::new([0u8; 32]);
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |b: u8| char::from(b).to_digit(16);
        key[i] = u8::try_from(digit(pair[0])? << 4 | digit(pair[1])?).ok()?;
    }
    Some(key)
}

/// The folder `path` is in (`.` for a bare name).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether a folder is checked to read from it or to write into it (the messages differ).
#[derive(Clone, Copy)]
enum FolderUse {
    Read,
    Write,
}

/// Refuses the folder of `path` when users other than its owner can write into it and
/// it is not sticky: they could replace the file. A sticky folder (`/tmp`, 1777) is
/// accepted: there, only a file's owner can rename or remove it. When `path` is reached
/// through symbolic links, the folder it really is in is checked too.
fn check_folder(path: &Path, usage: FolderUse) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut folders = vec![folder_of(path).to_path_buf()];
        if let Ok(real) = std::fs::canonicalize(path)
            && let Some(parent) = real.parent()
            && !folders.iter().any(|f| f == parent)
        {
            folders.push(parent.to_path_buf());
        }
        for folder in folders {
            let metadata = std::fs::metadata(&folder).map_err(|error| ConfigError::Read {
                path: folder.clone(),
                error,
            })?;
            let mode = metadata.permissions().mode() & 0o7777;
            if mode & 0o022 != 0 && mode & 0o1000 == 0 {
                let fix = match usage {
                    FolderUse::Read => format!(
                        "they could replace {}: keep it in a folder only its owner can write (chmod go-w the folder)",
                        path.display()
                    ),
                    FolderUse::Write => format!(
                        "they could replace {} once written: chmod go-w the folder, or choose another",
                        path.display()
                    ),
                };
                return Err(ConfigError::Permissions {
                    path: folder,
                    mode,
                    problem: "is a folder other users can write to",
                    fix,
                });
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, usage);
    Ok(())
}

/// Refuses a credential file other users may change, or read unless `readable_by_others`.
fn check_file(
    path: &Path,
    file: &std::fs::File,
    metadata: &std::fs::Metadata,
    readable_by_others: bool,
) -> Result<(), ConfigError> {
    if !metadata.is_file() {
        return Err(ConfigError::invalid(path, "credential", "is not a file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(ConfigError::Permissions {
                path: path.to_owned(),
                mode,
                problem: "is writable by other users",
                fix: "chmod 600 it".into(),
            });
        }
        if mode & 0o044 != 0 && !readable_by_others {
            return Err(ConfigError::Permissions {
                path: path.to_owned(),
                mode,
                problem: "is readable by other users",
                fix: "it holds the facility's private key and envelope key: chmod 600 it \
                      (or set credential_readable_by_others = true in the configuration)"
                    .into(),
            });
        }
    }
    #[cfg(unix)]
    let _ = file;
    #[cfg(windows)]
    {
        let denied = |problem: String, fix: &str| ConfigError::Access {
            path: path.to_owned(),
            problem,
            fix: fix.to_owned(),
        };
        let others =
            crate::ffi::windows_acl::others_access(file).map_err(|error| ConfigError::Read {
                path: path.to_owned(),
                error,
            })?;
        if let Some(who) = others.write {
            return Err(denied(
                format!("is writable by {who}, not only by its owner"),
                "remove that account's access (Properties, Security), or write the credential again with `hnsecure register`",
            ));
        }
        if let Some(who) = others.read
            && !readable_by_others
        {
            return Err(denied(
                format!("is readable by {who}, not only by its owner"),
                "it holds the facility's private key and envelope key: remove that account's access \
                 (or set credential_readable_by_others = true in the configuration)",
            ));
        }
    }
    #[cfg(not(any(unix, windows)))]
    let _ = (path, file, readable_by_others);
    Ok(())
}

/// Creates the new file `path` for writing, readable and writable by its owner only.
///
/// The file is made new (`O_CREAT | O_EXCL`): an existing file or symbolic link at `path`
/// makes it fail with `AlreadyExists` instead of being followed or truncated. On Unix the
/// mode is 0600 from the creation on (less if the umask takes more away), so the file is
/// never readable by others, even briefly; [`write_private`] then sets it to exactly 0600.
/// On Windows the file is made owned by the current user with a protected access control
/// list (nothing inherited from the folder) whose one entry is the current user.
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    #[cfg(windows)]
    return crate::ffi::windows_acl::create_owner_only(path);
    #[cfg(not(windows))]
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(path)
    }
}

/// How many random temporary names [`write_private`] tries before giving up.
const TEMPORARY_ATTEMPTS: usize = 8;

/// Writes `bytes` to `path`, replacing it: through a new file with a random name in the
/// same folder ([`create_private`]), set to mode 0600, flushed to disk, checked, and
/// renamed into place, so a reader never sees half a file and no symbolic link planted
/// in the folder can redirect the secret.
///
/// Refused (`PermissionDenied`, naming the folder and its mode) when the folder is
/// writable by other users and not sticky. `Ok` means `path` is now the file written and
/// its mode is 0600 (on Unix), or its access control list is its owner's alone (on Windows).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_private_via(path, bytes, &mut random_temporary_name)
}

/// Checks that [`write_private`] would write into the folder of `path`: it exists and
/// other users cannot write into it (unless it is sticky). For checking before work that
/// cannot be repeated — a registration code is used once.
pub fn check_destination(path: &Path) -> std::io::Result<()> {
    check_folder(path, FolderUse::Write).map_err(|e| match e {
        ConfigError::Read { error, .. } => error,
        other => std::io::Error::new(std::io::ErrorKind::PermissionDenied, other),
    })
}

fn random_temporary_name(target: &str) -> std::io::Result<String> {
    let mut random = [0u8; 12];
    getrandom::fill(&mut random).map_err(std::io::Error::other)?;
    let mut name = String::with_capacity(target.len() + 30);
    name.push('.');
    name.push_str(target);
    name.push('.');
    for b in random {
        let _ = write!(name, "{b:02x}");
    }
    name.push_str(".tmp");
    Ok(name)
}

fn write_private_via(
    path: &Path,
    bytes: &[u8],
    temporary_name: &mut dyn FnMut(&str) -> std::io::Result<String>,
) -> std::io::Result<()> {
    let dir = folder_of(path);
    let target = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} names no file", path.display()),
            )
        })?;
    check_destination(path)?;
    let mut made = None;
    for _ in 0..TEMPORARY_ATTEMPTS {
        let temporary = dir.join(temporary_name(&target)?);
        match create_private(&temporary) {
            Ok(file) => {
                made = Some((temporary, file));
                break;
            }
            // Someone made this name first (a file or a planted link): another name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    let Some((temporary, mut file)) = made else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{TEMPORARY_ATTEMPTS} temporary names in {} were taken already",
                dir.display()
            ),
        ));
    };
    let written = (|| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Exactly 0600 whatever the umask took away at creation.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        verify_private(&file, &temporary)?;
        std::fs::rename(&temporary, path)?;
        verify_in_place(&file, path)?;
        // The new name on disk too (not every file system can flush a folder).
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Checks, on the open file itself (`fstat`), that it is a regular file with mode 0600;
/// on Windows, that it is owned by the current user and its protected access control
/// list is the current user's entry alone.
fn verify_private(file: &std::fs::File, path: &Path) -> std::io::Result<()> {
    let metadata = file.metadata()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o7777;
        if !metadata.is_file() || mode != 0o600 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} has mode {mode:03o} after it was set to 600; nothing was written in its place",
                    path.display()
                ),
            ));
        }
    }
    #[cfg(windows)]
    {
        if !metadata.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{} is not a file", path.display()),
            ));
        }
        crate::ffi::windows_acl::check_owner_only(file).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("{} {e}; nothing was written in its place", path.display()),
            )
        })?;
    }
    #[cfg(not(any(unix, windows)))]
    let _ = (metadata, path);
    Ok(())
}

/// Checks that `path` is now the file written (not replaced between the rename and now).
fn verify_in_place(file: &std::fs::File, path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let ours = file.metadata()?;
        let there = std::fs::symlink_metadata(path)?;
        if ours.dev() != there.dev() || ours.ino() != there.ino() {
            return Err(std::io::Error::other(format!(
                "{} was replaced by another file while it was written",
                path.display()
            )));
        }
        verify_private(file, path)?;
    }
    // Windows: std has no stable file identity (volume serial and file index) to compare,
    // so only the access control list is checked again after the rename.
    #[cfg(windows)]
    verify_private(file, path)?;
    #[cfg(not(any(unix, windows)))]
    let _ = (file, path);
    Ok(())
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
        #[cfg(windows)]
        crate::ffi::windows_acl::check_owner_only(&std::fs::File::open(&path).unwrap()).unwrap();
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

    /// A fresh folder (mode 0700), removed when dropped.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random).unwrap();
            let dir = std::env::temp_dir().join(format!(
                "hnsecure-cred-{name}-{}-{:016x}",
                std::process::id(),
                u64::from_le_bytes(random)
            ));
            std::fs::create_dir(&dir).unwrap();
            #[cfg(unix)]
            set_mode(&dir, 0o700);
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            #[cfg(unix)]
            set_mode(&self.0, 0o700);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[cfg(unix)]
    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_private_key_pem_is_what_rcgen_writes_and_reads_back_at_every_length() {
        let key = rcgen::KeyPair::generate().unwrap();
        assert_eq!(
            *pkcs8_pem(key.serialized_der()),
            key.serialize_pem().replace("\r\n", "\n")
        );
        for n in 1..200 {
            let der: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            let pem = pkcs8_pem(&der);
            let back = tls::private_key_from_pem(pem.as_bytes()).unwrap();
            assert_eq!(back.secret_der(), &der[..], "{n} bytes: {}", *pem);
        }
    }

    #[cfg(unix)]
    #[test]
    fn create_private_never_follows_or_truncates_what_is_already_there() {
        let tmp = TempDir::new("create");
        let victim = tmp.0.join("victim");
        std::fs::write(&victim, "victim").unwrap();
        let link = tmp.0.join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let dangling = tmp.0.join("dangling");
        let nowhere = tmp.0.join("nowhere");
        std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
        for path in [&link, &dangling, &victim] {
            let e = create_private(path).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{path:?}");
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");
        assert!(!nowhere.exists(), "a dangling link's target is not created");
        let fresh = tmp.0.join("fresh");
        drop(create_private(&fresh).unwrap());
        assert_eq!(mode_of(&fresh), 0o600 & mode_of(&fresh));
    }

    #[cfg(unix)]
    #[test]
    fn no_planted_link_receives_the_credential() {
        let tmp = TempDir::new("links");
        let away = TempDir::new("links-away");
        let path = tmp.0.join("credential.toml");
        sample().write(&path).unwrap();
        // Links at the old predictable name (".NAME.<pid>.tmp"), at names of the new
        // form, and at the target's neighbours, some to an existing file and some dangling.
        let victim = away.0.join("victim");
        std::fs::write(&victim, "victim").unwrap();
        let mut planted = vec![
            format!(".credential.toml.{}.tmp", std::process::id()),
            ".credential.toml.tmp".to_owned(),
            "credential.toml.tmp".to_owned(),
            "credential.toml~".to_owned(),
        ];
        for _ in 0..200 {
            planted.push(random_temporary_name("credential.toml").unwrap());
        }
        for (i, name) in planted.iter().enumerate() {
            let target = if i % 2 == 0 {
                victim.clone()
            } else {
                away.0.join(format!("dangling-{i}"))
            };
            std::os::unix::fs::symlink(&target, tmp.0.join(name)).unwrap();
        }
        let mut renewed = sample();
        renewed.key = MasterKey::new(4, [0x5A; 32]);
        renewed.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");
        assert_eq!(
            std::fs::read_dir(&away.0).unwrap().count(),
            1,
            "no dangling link's target was made"
        );
        let back = Credential::read(&path).unwrap();
        assert_eq!(back.key.id(), 4);
        assert_eq!(mode_of(&path), 0o600);
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_file()
        );
        // Only the credential and the planted links are there: no temporary left.
        assert_eq!(
            std::fs::read_dir(&tmp.0).unwrap().count(),
            planted.len() + 1
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_link_at_the_chosen_temporary_name_is_never_followed() {
        let tmp = TempDir::new("chosen");
        let victim = tmp.0.join("victim");
        let path = tmp.0.join("credential.toml");
        std::os::unix::fs::symlink(&victim, tmp.0.join(".planted.tmp")).unwrap();
        // The first name tried is taken by a link: another is tried, and the link's
        // target is never made.
        let mut names = vec![".fresh.tmp", ".planted.tmp"];
        write_private_via(&path, b"secret", &mut |_| {
            Ok(names.pop().unwrap().to_owned())
        })
        .unwrap();
        assert!(!victim.exists());
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        assert_eq!(mode_of(&path), 0o600);
        // Every name tried is taken: nothing is written, anywhere.
        let other = tmp.0.join("other.toml");
        let e = write_private_via(&other, b"secret", &mut |_| Ok(".planted.tmp".to_owned()))
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        assert!(!victim.exists() && !other.exists());
    }

    #[cfg(unix)]
    #[test]
    fn credentials_others_may_change_or_read_are_refused_with_path_and_mode() {
        let tmp = TempDir::new("modes");
        let path = tmp.0.join("credential.toml");
        sample().write(&path).unwrap();
        assert!(Credential::read(&path).is_ok());
        let shown = path.display().to_string();
        for (mode, needle) in [
            (0o666, "is writable by other users (mode 666): chmod 600 it"),
            (0o620, "is writable by other users (mode 620)"),
            (0o602, "is writable by other users (mode 602)"),
            (0o644, "is readable by other users (mode 644)"),
            (0o640, "is readable by other users (mode 640)"),
            (0o604, "is readable by other users (mode 604)"),
        ] {
            set_mode(&path, mode);
            let e = Credential::read(&path).unwrap_err();
            assert!(matches!(e, ConfigError::Permissions { .. }), "{e:?}");
            let e = e.to_string();
            assert!(e.starts_with(&shown) && e.contains(needle), "{mode:o}: {e}");
            assert!(!e.contains("PRIVATE"), "{e}");
        }
        // Readable by others is allowed when the configuration says so; writable never.
        set_mode(&path, 0o644);
        assert!(Credential::read_with(&path, true).is_ok());
        set_mode(&path, 0o664);
        let e = Credential::read_with(&path, true).unwrap_err().to_string();
        assert!(e.contains("writable by other users (mode 664)"), "{e}");
        set_mode(&path, 0o400);
        assert!(
            Credential::read(&path).is_ok(),
            "read-only by its owner is fine"
        );
    }

    /// Windows: a credential written has a protected access control list naming its
    /// owner alone; one that lets Everyone (S-1-1-0) change it is refused, and one that
    /// lets Everyone or Users read it is refused unless `readable_by_others`.
    #[cfg(windows)]
    #[test]
    fn credentials_others_may_change_or_read_are_refused_by_their_access_list() {
        use crate::ffi::windows_acl::{READ, WRITE, check_owner_only, grant};
        let tmp = TempDir::new("acl");
        let path = tmp.0.join("credential.toml");
        sample().write(&path).unwrap();
        check_owner_only(&std::fs::File::open(&path).unwrap()).unwrap();
        // Exactly one entry, the owner's, and protected: on Windows only, as Wine 8 makes
        // descriptors from Unix modes (a SYSTEM entry, no protection bit).
        if !crate::ffi::windows_acl::under_wine() {
            use crate::ffi::windows_acl::{current_user, entries, is_protected};
            let file = std::fs::File::open(&path).unwrap();
            assert!(is_protected(&file).unwrap());
            let user = current_user().unwrap();
            assert_eq!(entries(&file).unwrap(), [format!("{user}:0x1f01ff")]);
        }
        assert!(Credential::read(&path).is_ok());
        let shown = path.display().to_string();

        grant(&path, "S-1-1-0", WRITE).unwrap();
        assert!(check_owner_only(&std::fs::File::open(&path).unwrap()).is_err());
        for readable_by_others in [false, true] {
            let e = Credential::read_with(&path, readable_by_others).unwrap_err();
            assert!(matches!(e, ConfigError::Access { .. }), "{e:?}");
            let e = e.to_string();
            assert!(
                e.starts_with(&shown)
                    && e.contains("is writable by S-1-1-0, not only by its owner"),
                "{e}"
            );
        }
        // Wine 8 maps a DACL to a Unix mode: it can show Everyone, not Users.
        let readers: &[&str] = if crate::ffi::windows_acl::under_wine() {
            &["S-1-1-0"]
        } else {
            &["S-1-1-0", "S-1-5-32-545"]
        };
        for &sid in readers {
            grant(&path, sid, READ).unwrap();
            let e = Credential::read(&path).unwrap_err().to_string();
            assert!(
                e.contains(&format!("is readable by {sid}, not only by its owner")),
                "{e}"
            );
            assert!(e.contains("credential_readable_by_others"), "{e}");
            assert!(Credential::read_with(&path, true).is_ok());
        }
        // SYSTEM and Administrators may use it: they are not "other users". (Not under
        // Wine, where any DACL set later becomes a mode with Everyone read.)
        if !crate::ffi::windows_acl::under_wine() {
            grant(&path, "S-1-5-18", WRITE | READ).unwrap();
            assert!(Credential::read(&path).is_ok());
        }
        // Writing it again makes it owner-only again.
        sample().write(&path).unwrap();
        check_owner_only(&std::fs::File::open(&path).unwrap()).unwrap();
        assert!(Credential::read(&path).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_folder_others_can_write_is_refused_for_reading_and_writing_unless_sticky() {
        let tmp = TempDir::new("folder");
        let path = tmp.0.join("credential.toml");
        sample().write(&path).unwrap();
        let folder = tmp.0.display().to_string();
        for mode in [0o777, 0o770, 0o703] {
            set_mode(&tmp.0, mode);
            let e = Credential::read_with(&path, true).unwrap_err();
            assert!(matches!(e, ConfigError::Permissions { .. }), "{e:?}");
            let e = e.to_string();
            assert!(
                e.starts_with(&format!(
                    "{folder} is a folder other users can write to (mode {mode:o})"
                )) && e.contains("credential.toml"),
                "{e}"
            );
            let before = std::fs::read(&path).unwrap();
            let e = sample().write(&path).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(e.to_string().contains(&format!("(mode {mode:o})")), "{e}");
            assert_eq!(std::fs::read(&path).unwrap(), before, "nothing was written");
            assert_eq!(std::fs::read_dir(&tmp.0).unwrap().count(), 1);
        }
        // Sticky (as /tmp is): others cannot rename or remove the owner's files.
        set_mode(&tmp.0, 0o1777);
        sample().write(&path).unwrap();
        assert!(Credential::read(&path).is_ok());
        // A credential reached through a link is judged by the folder it really is in.
        set_mode(&tmp.0, 0o777);
        let elsewhere = TempDir::new("folder-link");
        let link = elsewhere.0.join("credential.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = Credential::read(&link).unwrap_err().to_string();
        assert!(e.starts_with(&folder) && e.contains("mode 777"), "{e}");
    }

    #[test]
    fn the_credential_text_is_written_without_reallocating() {
        let mut c = sample();
        // Worst cases for escaping: control characters everywhere.
        c.facility = "\u{1}\u{2}\"\\".repeat(20);
        c.private_key_pem = Zeroizing::new(format!("{}\u{7f}\u{1}", *c.private_key_pem));
        for c in [sample(), c] {
            let text = c.to_toml();
            assert_eq!(
                text.capacity(),
                c.toml_capacity(),
                "the buffer never grew, so no copy of a secret was left behind"
            );
            assert_eq!(text.matches(&"a5".repeat(32)).count(), 1);
        }
    }
}
