//! Windows access control for private files (credential, keys): the Windows counterpart
//! of creating a file with mode 0600 and refusing one whose mode lets others in.
//!
//! This is no part of the C ABI; it is here because calling the Windows security API
//! needs `unsafe`, and `unsafe` lives in `ffi` only. Everything it exposes is safe: open
//! files and paths in, `io::Result` out.
//!
//! - [`create_owner_only`] creates a new file whose security descriptor, from its creation
//!   on, names the current user as owner and has a *protected* DACL (nothing inherited
//!   from the folder) with one entry: the current user, full access.
//! - [`others_access`] reads the DACL of an open file and says who, besides its owner,
//!   `SYSTEM` and `BUILTIN\Administrators`, may read or change it. A missing (NULL)
//!   DACL grants everyone everything and is reported as such. Deny entries are not
//!   credited: a file that an allow entry opens to others is reported even when a deny
//!   entry before it would refuse them, which can only make the check stricter.
//! - [`check_owner_only`] (the check after writing, and tests): the owner is the current
//!   user and the DACL is exactly one allow entry for that user.
#![cfg(windows)]

use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::os::windows::ffi::OsStrExt;
#[cfg(test)]
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle};
use std::path::Path;
use std::ptr;

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, INVALID_HANDLE_VALUE, LocalFree};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, GetSecurityInfo, SE_FILE_OBJECT,
};
use windows_sys::Win32::Security::{
    ACCESS_ALLOWED_ACE, ACE_HEADER, ACL, ACL_REVISION, AddAccessAllowedAceEx,
    DACL_SECURITY_INFORMATION, GetAce, GetLengthSid, GetTokenInformation, INHERIT_ONLY_ACE,
    InitializeAcl, InitializeSecurityDescriptor, OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR,
    PSID, SE_DACL_PROTECTED, SECURITY_ATTRIBUTES, SECURITY_DESCRIPTOR,
    SetSecurityDescriptorControl, SetSecurityDescriptorDacl, SetSecurityDescriptorOwner,
    TOKEN_QUERY, TOKEN_USER, TokenUser,
};
use windows_sys::Win32::Storage::FileSystem::{
    CREATE_NEW, CreateFileW, FILE_ATTRIBUTE_NORMAL, FILE_SHARE_DELETE, FILE_SHARE_READ,
    FILE_SHARE_WRITE,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

// Access rights (winnt.h); fixed values of the Windows ABI.
const FILE_READ_DATA: u32 = 0x0001;
const FILE_WRITE_DATA: u32 = 0x0002;
const FILE_APPEND_DATA: u32 = 0x0004;
const DELETE: u32 = 0x0001_0000;
#[cfg(test)]
const READ_CONTROL: u32 = 0x0002_0000;
const WRITE_DAC: u32 = 0x0004_0000;
const WRITE_OWNER: u32 = 0x0008_0000;
const FILE_ALL_ACCESS: u32 = 0x001F_01FF;
const GENERIC_ALL: u32 = 0x1000_0000;
const GENERIC_WRITE: u32 = 0x4000_0000;
const GENERIC_READ: u32 = 0x8000_0000;
const FILE_GENERIC_READ: u32 = 0x0012_0089;
const FILE_GENERIC_WRITE: u32 = 0x0012_0116;

/// Rights that let a holder read the contents.
const READ_RIGHTS: u32 = FILE_READ_DATA | GENERIC_READ | GENERIC_ALL;
/// Rights that let a holder change the contents, replace or delete the file, or give
/// themselves any other right (`WRITE_DAC`, `WRITE_OWNER`).
const WRITE_RIGHTS: u32 = FILE_WRITE_DATA
    | FILE_APPEND_DATA
    | DELETE
    | WRITE_DAC
    | WRITE_OWNER
    | GENERIC_WRITE
    | GENERIC_ALL;

// ACE types (winnt.h).
const ACCESS_ALLOWED_ACE_TYPE: u8 = 0;
const ACCESS_DENIED_ACE_TYPE: u8 = 1;
const SYSTEM_AUDIT_ACE_TYPE: u8 = 2;
const SYSTEM_ALARM_ACE_TYPE: u8 = 3;
const ACCESS_ALLOWED_CALLBACK_ACE_TYPE: u8 = 9;
const ACCESS_DENIED_CALLBACK_ACE_TYPE: u8 = 10;
const SYSTEM_MANDATORY_LABEL_ACE_TYPE: u8 = 0x11;

/// `SYSTEM` and `BUILTIN\Administrators`: they can take any file anyway.
const TRUSTED: [&str; 2] = ["S-1-5-18", "S-1-5-32-544"];

/// Who besides the owner, `SYSTEM` and Administrators may read or change a file: the
/// string SID (`S-1-1-0`, …) of the first such account found, for the message.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Others {
    /// An account that may read it.
    pub read: Option<String>,
    /// An account that may change, replace or delete it, or change its access.
    pub write: Option<String>,
}

/// A buffer of the current user's `TOKEN_USER`, aligned for it.
struct CurrentUser {
    buffer: Vec<u64>,
}

impl CurrentUser {
    fn get() -> io::Result<Self> {
        let mut token: HANDLE = ptr::null_mut();
        // SAFETY: GetCurrentProcess returns a pseudo-handle; `token` is written on success.
        if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut needed = 0u32;
        // SAFETY: a size query (NULL buffer, length 0) writes only `needed`.
        unsafe { GetTokenInformation(token, TokenUser, ptr::null_mut(), 0, &mut needed) };
        let mut buffer = vec![0u64; (needed as usize).div_ceil(8).max(1)];
        let bytes = u32::try_from(buffer.len() * 8).unwrap_or(u32::MAX);
        // SAFETY: `buffer` is writable for `bytes` bytes and aligned for TOKEN_USER.
        let ok = unsafe {
            GetTokenInformation(
                token,
                TokenUser,
                buffer.as_mut_ptr().cast(),
                bytes,
                &mut needed,
            )
        };
        let error = io::Error::last_os_error();
        // SAFETY: `token` was opened above and is closed once.
        unsafe { CloseHandle(token) };
        if ok == 0 {
            return Err(error);
        }
        Ok(Self { buffer })
    }

    /// The user's SID; valid while `self` lives.
    fn sid(&self) -> PSID {
        // SAFETY: GetTokenInformation(TokenUser) filled the buffer with a TOKEN_USER whose
        // SID points into the same buffer.
        unsafe { (*self.buffer.as_ptr().cast::<TOKEN_USER>()).User.Sid }
    }
}

/// The string form of a SID (`S-1-5-21-…`).
fn sid_string(sid: PSID) -> io::Result<String> {
    let mut wide: *mut u16 = ptr::null_mut();
    // SAFETY: `sid` is a valid SID; on success `wide` is a LocalAlloc'd NUL-terminated string.
    if unsafe { ConvertSidToStringSidW(sid, &mut wide) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut len = 0;
    // SAFETY: the string is NUL-terminated.
    while unsafe { *wide.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` u16s are readable at `wide`.
    let text = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(wide, len) });
    // SAFETY: allocated by ConvertSidToStringSidW, freed once.
    unsafe { LocalFree(wide.cast()) };
    Ok(text)
}

/// An ACL holding one allow entry: `sid`, all file rights. Aligned for `ACL`.
fn owner_only_acl(sid: PSID) -> io::Result<Vec<u64>> {
    // SAFETY: `sid` is a valid SID.
    let sid_len = unsafe { GetLengthSid(sid) } as usize;
    let size = size_of::<ACL>() + size_of::<ACCESS_ALLOWED_ACE>() + sid_len;
    let mut acl = vec![0u64; size.div_ceil(8)];
    let bytes = u32::try_from(acl.len() * 8).unwrap_or(u32::MAX);
    let pacl = acl.as_mut_ptr().cast::<ACL>();
    // SAFETY: `acl` is writable for `bytes` bytes, aligned for ACL, large enough for one
    // ACE with this SID.
    unsafe {
        if InitializeAcl(pacl, bytes, ACL_REVISION) == 0
            || AddAccessAllowedAceEx(pacl, ACL_REVISION, 0, FILE_ALL_ACCESS, sid) == 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(acl)
}

/// Creates the new file `path` for reading and writing (failing with `AlreadyExists`
/// when anything is there, links included: `CREATE_NEW`), owned by the current user,
/// whose only access entry is the current user's, not inherited from the folder.
pub(crate) fn create_owner_only(path: &Path) -> io::Result<File> {
    let user = CurrentUser::get()?;
    let mut acl = owner_only_acl(user.sid())?;
    // The descriptor is given at creation and not set again afterwards: with
    // SE_DACL_PROTECTED, Windows merges nothing inherited into it, and Wine 8 (which keeps
    // no descriptors, only Unix modes) widens a DACL set later to Everyone read.
    // SAFETY: a zeroed SECURITY_DESCRIPTOR is valid input for InitializeSecurityDescriptor.
    let mut descriptor: SECURITY_DESCRIPTOR = unsafe { std::mem::zeroed() };
    let pdescriptor: PSECURITY_DESCRIPTOR = (&raw mut descriptor).cast();
    // SAFETY: `descriptor`, `acl` and `user` outlive every use of the pointers below (the
    // CreateFileW call).
    unsafe {
        if InitializeSecurityDescriptor(pdescriptor, 1) == 0
            || SetSecurityDescriptorOwner(pdescriptor, user.sid(), 0) == 0
            || SetSecurityDescriptorDacl(pdescriptor, 1, acl.as_mut_ptr().cast(), 0) == 0
            || SetSecurityDescriptorControl(pdescriptor, SE_DACL_PROTECTED, SE_DACL_PROTECTED) == 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    let attributes = SECURITY_ATTRIBUTES {
        nLength: size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: pdescriptor,
        bInheritHandle: 0,
    };
    let wide: Vec<u16> = path.as_os_str().encode_wide().chain(Some(0)).collect();
    // SAFETY: `wide` is NUL-terminated and `attributes` points at the live descriptor.
    // Read and write; shared as std shares the files it opens.
    let handle = unsafe {
        CreateFileW(
            wide.as_ptr(),
            FILE_GENERIC_READ | FILE_GENERIC_WRITE,
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
            &attributes,
            CREATE_NEW,
            FILE_ATTRIBUTE_NORMAL,
            ptr::null_mut(),
        )
    };
    if handle == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a handle CreateFileW just opened, owned by nothing else.
    Ok(unsafe { File::from_raw_handle(handle) })
}

/// A file's owner and DACL, read from its handle; freed when dropped.
struct Security {
    descriptor: PSECURITY_DESCRIPTOR,
    owner: PSID,
    dacl: *mut ACL,
}

impl Security {
    fn of(file: &File) -> io::Result<Self> {
        let mut security = Security {
            descriptor: ptr::null_mut(),
            owner: ptr::null_mut(),
            dacl: ptr::null_mut(),
        };
        // SAFETY: the handle is open (READ_CONTROL comes with read access); the out
        // pointers are written on success and point into `descriptor`.
        let status = unsafe {
            GetSecurityInfo(
                file.as_raw_handle(),
                SE_FILE_OBJECT,
                OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
                &mut security.owner,
                ptr::null_mut(),
                &mut security.dacl,
                ptr::null_mut(),
                &mut security.descriptor,
            )
        };
        if status != 0 {
            return Err(io::Error::from_raw_os_error(status as i32));
        }
        Ok(security)
    }

    #[cfg(test)]
    fn protected(&self) -> io::Result<bool> {
        use windows_sys::Win32::Security::GetSecurityDescriptorControl;
        let mut control = 0u16;
        let mut revision = 0u32;
        // SAFETY: `descriptor` is the valid descriptor GetSecurityInfo returned.
        if unsafe { GetSecurityDescriptorControl(self.descriptor, &mut control, &mut revision) }
            == 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(control & SE_DACL_PROTECTED != 0)
    }

    /// The DACL's entries that apply to the file itself: (type, mask, SID string).
    fn entries(&self) -> io::Result<Vec<(u8, u32, String)>> {
        let mut out = Vec::new();
        if self.dacl.is_null() {
            return Ok(out);
        }
        // SAFETY: `dacl` is a valid ACL inside `descriptor`.
        let count = u32::from(unsafe { (*self.dacl).AceCount });
        for i in 0..count {
            let mut ace: *mut c_void = ptr::null_mut();
            // SAFETY: i < AceCount; `ace` points into the ACL on success.
            if unsafe { GetAce(self.dacl, i, &mut ace) } == 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: every ACE starts with an ACE_HEADER.
            let header = unsafe { *ace.cast::<ACE_HEADER>() };
            if u32::from(header.AceFlags) & INHERIT_ONLY_ACE != 0 {
                continue; // for children only, not this file
            }
            match header.AceType {
                ACCESS_ALLOWED_ACE_TYPE
                | ACCESS_DENIED_ACE_TYPE
                | ACCESS_ALLOWED_CALLBACK_ACE_TYPE
                | ACCESS_DENIED_CALLBACK_ACE_TYPE => {
                    // SAFETY: these types share ACCESS_ALLOWED_ACE's layout: header, mask,
                    // then the SID from SidStart.
                    let (mask, sid) = unsafe {
                        let allowed = ace.cast::<ACCESS_ALLOWED_ACE>();
                        (
                            (*allowed).Mask,
                            (&raw mut (*allowed).SidStart).cast::<c_void>(),
                        )
                    };
                    out.push((header.AceType, mask, sid_string(sid)?));
                }
                SYSTEM_AUDIT_ACE_TYPE | SYSTEM_ALARM_ACE_TYPE | SYSTEM_MANDATORY_LABEL_ACE_TYPE => {
                }
                // Object ACEs and others that do not belong on a file: not understood, so
                // counted as letting anyone in.
                other => out.push((
                    ACCESS_ALLOWED_ACE_TYPE,
                    GENERIC_ALL,
                    format!("an entry of type {other}"),
                )),
            }
        }
        Ok(out)
    }
}

impl Drop for Security {
    fn drop(&mut self) {
        // SAFETY: allocated by GetSecurityInfo, freed once.
        unsafe { LocalFree(self.descriptor) };
    }
}

/// Who besides its owner, `SYSTEM` and Administrators may read or change the open file.
pub(crate) fn others_access(file: &File) -> io::Result<Others> {
    let security = Security::of(file)?;
    let mut others = Others::default();
    if security.dacl.is_null() {
        let everyone = "S-1-1-0 (no access control list: everyone)".to_owned();
        others.read = Some(everyone.clone());
        others.write = Some(everyone);
        return Ok(others);
    }
    let owner = if security.owner.is_null() {
        None
    } else {
        Some(sid_string(security.owner)?)
    };
    for (kind, mask, sid) in security.entries()? {
        if kind != ACCESS_ALLOWED_ACE_TYPE && kind != ACCESS_ALLOWED_CALLBACK_ACE_TYPE {
            continue;
        }
        if owner.as_deref() == Some(sid.as_str()) || TRUSTED.contains(&sid.as_str()) {
            continue;
        }
        if mask & WRITE_RIGHTS != 0 && others.write.is_none() {
            others.write = Some(sid.clone());
        }
        if mask & READ_RIGHTS != 0 && others.read.is_none() {
            others.read = Some(sid);
        }
    }
    Ok(others)
}

/// Checks that the open file is owned by the current user, that its DACL gives that user
/// access, and that no one else but `SYSTEM` and Administrators may read or change it;
/// `PermissionDenied` saying what differs otherwise. (On Windows a file
/// [`create_owner_only`] made has exactly one entry, see [`entries`]; Wine 8 shows a
/// `SYSTEM` entry too, made from the Unix mode.)
pub(crate) fn check_owner_only(file: &File) -> io::Result<()> {
    let user = sid_string(CurrentUser::get()?.sid())?;
    let security = Security::of(file)?;
    let denied = |what: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, what));
    let owner = if security.owner.is_null() {
        String::new()
    } else {
        sid_string(security.owner)?
    };
    if owner != user {
        return denied(format!(
            "is owned by {owner}, not by the current user {user}"
        ));
    }
    if security.dacl.is_null() {
        return denied("has no access control list (everyone may use it)".into());
    }
    let entries = security.entries()?;
    let others = others_access(file)?;
    if let Some(who) = others.write.or(others.read) {
        return denied(format!("is open to {who}, not only to its owner"));
    }
    if !entries
        .iter()
        .any(|(kind, _, sid)| *kind == ACCESS_ALLOWED_ACE_TYPE && *sid == user)
    {
        return denied(format!("gives its owner {user} no access"));
    }
    Ok(())
}

/// For tests: the DACL's entries that apply to the file, as `SID:mask` (allow entries
/// only).
#[cfg(test)]
pub(crate) fn entries(file: &File) -> io::Result<Vec<String>> {
    Ok(Security::of(file)?
        .entries()?
        .into_iter()
        .filter(|(kind, _, _)| *kind == ACCESS_ALLOWED_ACE_TYPE)
        .map(|(_, mask, sid)| format!("{sid}:{mask:#x}"))
        .collect())
}

/// For tests: the current user's SID.
#[cfg(test)]
pub(crate) fn current_user() -> io::Result<String> {
    sid_string(CurrentUser::get()?.sid())
}

/// For tests: whether this runs under Wine (its environment carries `WINEPREFIX`, which
/// tools/windows.sh sets), where descriptors are made from Unix modes.
#[cfg(test)]
pub(crate) fn under_wine() -> bool {
    std::env::var_os("WINEPREFIX").is_some()
}

/// Whether the open file's DACL is protected (`SE_DACL_PROTECTED`: it inherits nothing
/// from its folder, now or when the folder's entries are propagated later).
#[cfg(test)]
pub(crate) fn is_protected(file: &File) -> io::Result<bool> {
    Security::of(file)?.protected()
}

#[cfg(test)]
/// For tests: replaces the file's DACL with the current user's full access plus an
/// allow entry for `sid` (a string SID such as `S-1-1-0`, Everyone) with `mask`
/// ([`READ`] or [`WRITE`]), not protected.
pub(crate) fn grant(path: &Path, sid: &str, mask: u32) -> io::Result<()> {
    use windows_sys::Win32::Security::Authorization::{ConvertStringSidToSidW, SetSecurityInfo};
    use windows_sys::Win32::Security::UNPROTECTED_DACL_SECURITY_INFORMATION;
    let user = CurrentUser::get()?;
    let wide: Vec<u16> = sid.encode_utf16().chain(Some(0)).collect();
    let mut other: PSID = ptr::null_mut();
    // SAFETY: `wide` is NUL-terminated; `other` is LocalAlloc'd on success.
    if unsafe { ConvertStringSidToSidW(wide.as_ptr(), &mut other) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        // SAFETY: both SIDs are valid.
        let size = size_of::<ACL>()
            + 2 * size_of::<ACCESS_ALLOWED_ACE>()
            + unsafe { GetLengthSid(user.sid()) + GetLengthSid(other) } as usize;
        let mut acl = vec![0u64; size.div_ceil(8)];
        let bytes = u32::try_from(acl.len() * 8).unwrap_or(u32::MAX);
        let pacl = acl.as_mut_ptr().cast::<ACL>();
        // SAFETY: `acl` is writable for `bytes` bytes and large enough for both entries.
        unsafe {
            if InitializeAcl(pacl, bytes, ACL_REVISION) == 0
                || AddAccessAllowedAceEx(pacl, ACL_REVISION, 0, FILE_ALL_ACCESS, user.sid()) == 0
                || AddAccessAllowedAceEx(pacl, ACL_REVISION, 0, mask, other) == 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        let file = std::fs::OpenOptions::new()
            .access_mode(READ_CONTROL | WRITE_DAC)
            .open(path)?;
        // SAFETY: the handle is open with WRITE_DAC; `acl` lives through the call.
        let status = unsafe {
            SetSecurityInfo(
                file.as_raw_handle(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION | UNPROTECTED_DACL_SECURITY_INFORMATION,
                ptr::null_mut(),
                ptr::null_mut(),
                pacl,
                ptr::null(),
            )
        };
        if status != 0 {
            return Err(io::Error::from_raw_os_error(status as i32));
        }
        Ok(())
    })();
    // SAFETY: allocated by ConvertStringSidToSidW, freed once.
    unsafe { LocalFree(other) };
    result
}

#[cfg(test)]
/// For [`grant`]: read access.
pub(crate) const READ: u32 = FILE_GENERIC_READ;
#[cfg(test)]
/// For [`grant`]: write access.
pub(crate) const WRITE: u32 = FILE_GENERIC_WRITE;
