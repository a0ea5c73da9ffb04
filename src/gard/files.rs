//! The files of a directory: their names, and reading and writing them with the right
//! permissions from the first byte on. On Windows a private file is instead created
//! owned by the current user with a protected access control list naming only that user
//! (see `crate::ffi::windows_acl`), and refused on reading when the list lets another
//! account (other than `SYSTEM` and Administrators) read or change it; the directory
//! itself keeps the access its parent gives.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::GardError;

/// The directory database.
pub(crate) const DB: &str = "gard.db";
/// The CA certificate (PEM).
pub(crate) const CA_CERT: &str = "ca.pem";
/// The CA private key (PKCS#8 PEM).
pub(crate) const CA_KEY: &str = "ca.key";
/// The gateway's TLS certificate (PEM).
pub(crate) const GATE_CERT: &str = "gate.pem";
/// The gateway's private key (PKCS#8 PEM).
pub(crate) const GATE_KEY: &str = "gate.key";
/// The 32 bytes that seal the envelope keys in the database.
pub(crate) const STORAGE_KEY: &str = "storage.key";

/// Every file `init` may make: with SQLite `gard.db`, with PostgreSQL `gard.toml`.
pub(crate) const ALL: [&str; 7] = [
    CA_KEY,
    CA_CERT,
    GATE_KEY,
    GATE_CERT,
    STORAGE_KEY,
    DB,
    super::config::CONFIG_FILE,
];

/// Permission bits of private files and of the directory.
pub(crate) const PRIVATE: u32 = 0o600;
/// Permission bits of certificates, which are public.
pub(crate) const PUBLIC: u32 = 0o644;
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;

/// Permission bits that make a private file unsafe: any access by other users, or write
/// access by the group. (Group read is allowed, for a gateway run under its own account in
/// the operators' group.)
#[cfg(unix)]
const UNSAFE: u32 = 0o027;

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> GardError {
    let path = path.to_owned();
    move |source| GardError::Io {
        path,
        action,
        source,
    }
}

/// Makes `dir` with mode 0700, or takes an existing directory holding none of the
/// directory's files and sets it to 0700. Returns whether it made the directory.
pub(crate) fn prepare_dir(dir: &Path) -> Result<bool, GardError> {
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut builder = DirBuilder::new();
    #[cfg(unix)]
    builder.mode(DIR_MODE);
    match builder.create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {
            for name in ALL {
                let path = dir.join(name);
                if path.symlink_metadata().is_ok() {
                    return Err(GardError::AlreadyInitialised { path });
                }
            }
            #[cfg(unix)]
            fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
                .map_err(io_error(dir, "set the permissions of"))?;
            Ok(false)
        }
        Err(e) => Err(io_error(dir, "create the directory")(e)),
    }
}

/// Writes a new file (never replacing one) created with `mode`, and flushes it to disk.
/// On Windows, `PRIVATE` makes it owned by the current user with an access control list
/// naming only that user; `PUBLIC` gives it the access its folder gives.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), GardError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    let opened = options.mode(mode).open(path);
    #[cfg(windows)]
    let opened = if mode == PRIVATE {
        crate::ffi::windows_acl::create_owner_only(path)
    } else {
        options.open(path)
    };
    #[cfg(not(any(unix, windows)))]
    let opened = {
        let _ = mode;
        options.open(path)
    };
    let mut file = opened.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            GardError::AlreadyInitialised {
                path: path.to_owned(),
            }
        } else {
            io_error(path, "create")(e)
        }
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error(path, "write"))
}

/// Flushes the directory entry of `dir` (the names of the files just made). On Windows
/// a folder cannot be opened as a file to flush it (NTFS journals its entries itself):
/// nothing to do.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), GardError> {
    #[cfg(windows)]
    {
        let _ = dir;
        Ok(())
    }
    #[cfg(not(windows))]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "flush"))
}

/// The bytes of a public file.
pub(crate) fn read_public(path: &Path) -> Result<Vec<u8>, GardError> {
    fs::read(path).map_err(io_error(path, "read"))
}

/// The bytes of a private file, refused when other users may read or change it; zeroed
/// when dropped.
pub(crate) fn read_private(path: &Path) -> Result<Zeroizing<Vec<u8>>, GardError> {
    let mut file = File::open(path).map_err(io_error(path, "read"))?;
    let metadata = file.metadata().map_err(io_error(path, "read"))?;
    #[cfg(unix)]
    {
        let mode = metadata.permissions().mode();
        if mode & UNSAFE != 0 {
            return Err(GardError::InsecurePermissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    #[cfg(windows)]
    {
        let others =
            crate::ffi::windows_acl::others_access(&file).map_err(io_error(path, "read"))?;
        let who = match (others.write, others.read) {
            (Some(sid), _) => Some(format!("{sid} may change it")),
            (None, Some(sid)) => Some(format!("{sid} may read it")),
            (None, None) => None,
        };
        if let Some(who) = who {
            return Err(GardError::InsecureAccess {
                path: path.to_owned(),
                who,
            });
        }
    }
    // One allocation of the final size, so no copy of the secret is left behind by a
    // reallocation.
    let capacity = usize::try_from(metadata.len())
        .unwrap_or(0)
        .saturating_add(1);
    let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
    file.read_to_end(&mut bytes)
        .map_err(io_error(path, "read"))?;
    Ok(bytes)
}

/// Removes what a failed `init` made, newest first. Errors are ignored: the original
/// failure is what gets reported.
pub(crate) fn remove_all(made: &[PathBuf], dir_made: Option<&Path>) {
    for path in made.iter().rev() {
        let _ = fs::remove_file(path);
        if path.file_name().is_some_and(|n| n == DB) {
            for suffix in ["-wal", "-shm"] {
                let mut side = path.clone().into_os_string();
                side.push(suffix);
                let _ = fs::remove_file(side);
            }
        }
    }
    if let Some(dir) = dir_made {
        let _ = fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "hnsecure-gard-{name}-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ))
    }

    #[cfg(unix)]
    #[test]
    fn gard_private_files_are_refused_when_others_can_read_them() {
        let dir = new_dir("files");
        assert!(prepare_dir(&dir).unwrap());
        let path = dir.join(STORAGE_KEY);
        write_new(&path, b"secret", PRIVATE).unwrap();
        assert_eq!(&**read_private(&path).unwrap(), b"secret");
        assert!(matches!(
            write_new(&path, b"again", PRIVATE),
            Err(GardError::AlreadyInitialised { .. })
        ));

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read_private(&path).is_ok(), "group read is allowed");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
        let e = read_private(&path).err().unwrap().to_string();
        assert!(
            e.contains("storage.key is accessible to other users (mode 0604)"),
            "{e}"
        );

        remove_all(&[path], Some(&dir));
        assert!(!dir.exists());
    }

    /// Windows: a private file is made owned by the current user with a protected access
    /// control list naming that user alone; one that lets Everyone read or change it is
    /// refused; a public file keeps what its folder gives.
    #[cfg(windows)]
    #[test]
    fn gard_private_files_are_owner_only_and_refused_when_others_can_use_them() {
        use crate::ffi::windows_acl::{READ, WRITE, check_owner_only, grant};
        let dir = new_dir("acl");
        assert!(prepare_dir(&dir).unwrap());
        let path = dir.join(STORAGE_KEY);
        write_new(&path, b"secret", PRIVATE).unwrap();
        check_owner_only(&File::open(&path).unwrap()).unwrap();
        // Wine 8 does not report SE_DACL_PROTECTED back: asserted on Windows only.
        if std::env::var_os("WINEPREFIX").is_none() {
            let file = File::open(&path).unwrap();
            assert!(crate::ffi::windows_acl::is_protected(&file).unwrap());
        }
        assert_eq!(&**read_private(&path).unwrap(), b"secret");
        assert!(matches!(
            write_new(&path, b"again", PRIVATE),
            Err(GardError::AlreadyInitialised { .. })
        ));
        let public = dir.join(CA_CERT);
        write_new(&public, b"certificate", PUBLIC).unwrap();
        assert_eq!(read_public(&public).unwrap(), b"certificate");

        grant(&path, "S-1-1-0", READ).unwrap();
        let e = read_private(&path).err().unwrap().to_string();
        assert!(
            e.contains("storage.key is accessible to other users (S-1-1-0 may read it)"),
            "{e}"
        );
        grant(&path, "S-1-1-0", WRITE).unwrap();
        let e = read_private(&path).err().unwrap().to_string();
        assert!(e.contains("(S-1-1-0 may change it)"), "{e}");
        // Not under Wine, which maps a DACL to a Unix mode (no Users; Everyone read
        // whatever is set later).
        if !crate::ffi::windows_acl::under_wine() {
            grant(&path, "S-1-5-32-545", WRITE).unwrap(); // BUILTIN\Users
            let e = read_private(&path).err().unwrap().to_string();
            assert!(e.contains("(S-1-5-32-545 may change it)"), "{e}");
            // SYSTEM and Administrators are not "other users".
            grant(&path, "S-1-5-18", WRITE).unwrap();
            assert!(read_private(&path).is_ok());
            grant(&path, "S-1-5-32-544", WRITE | READ).unwrap();
            assert!(read_private(&path).is_ok());
        }

        remove_all(&[path, public], Some(&dir));
        assert!(!dir.exists());
    }
}
