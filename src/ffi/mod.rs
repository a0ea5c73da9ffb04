//! The C ABI of `libhnapi`: what C/C++, .NET (P/Invoke) and Java (JNA) applications call.
//! `include/hnapi.h` is generated from this module by cbindgen; its opening comment is
//! the ABI contract (see `cbindgen.toml`).
//!
//! This module holds every `extern "C"` item and nothing else: each function checks its
//! pointers, runs inside a panic boundary, and hands over to `crate::client`. The three
//! that cannot fail have no boundary because nothing in them can panic: `hnapi_version`
//! and `hnapi_code_name` return static strings, `hnapi_last_error` makes a bounded copy
//! of a thread-local that it reads without panicking even while its thread is torn down.
//! One file per C type: [`client`] (`HnapiClient`), [`server`] (`HnapiServer`); and
//! [`codes`], [`boundary`], [`log`].
//!
//! Two modules here are no part of the C ABI: `windows_acl` (Windows only), the Windows
//! security API calls that give private files owner-only access, and [`heap`] (`server`
//! feature), glibc's `malloc_trim` for the gateway. They are here because they need
//! `unsafe`, which lives in this module only; they expose safe functions.

pub mod boundary;
pub mod client;
pub mod codes;
#[cfg(feature = "server")]
pub mod heap;
pub mod log;
pub mod server;
#[cfg(windows)]
pub(crate) mod windows_acl;

use std::ffi::c_char;

use boundary::last_error;
use codes::HnetRtrn;

/// The library's version, e.g. `"hnsecure 0.1.0"`: a static NUL-terminated string.
#[unsafe(no_mangle)]
pub extern "C" fn hnapi_version() -> *const c_char {
    concat!("hnsecure ", env!("CARGO_PKG_VERSION"), "\0")
        .as_ptr()
        .cast()
}

/// The name of a return code (`"HNET_RTRN_SUCCESS"`, …), or `"HNET_RTRN_UNKNOWN"`: a
/// static NUL-terminated string.
#[unsafe(no_mangle)]
pub extern "C" fn hnapi_code_name(code: i32) -> *const c_char {
    HnetRtrn::from_i32(code)
        .map_or(&b"HNET_RTRN_UNKNOWN\0"[..], HnetRtrn::c_name)
        .as_ptr()
        .cast()
}

/// This thread's last error: one sentence explaining the last non-zero code an hnapi
/// call returned on this thread (empty after a success). Copies it, NUL-terminated and
/// cut to fit, into `buf` when `cap` > 0, and returns its full length in bytes without
/// the NUL (so a `buf` of that length + 1 holds it all).
///
/// # Safety
/// `buf` is NULL or writable for `cap` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hnapi_last_error(buf: *mut c_char, cap: usize) -> usize {
    let message = last_error();
    let bytes = message.as_bytes();
    if !buf.is_null() && cap > 0 {
        let n = bytes.len().min(cap - 1);
        // SAFETY: `buf` is writable for `cap` bytes per the contract; n + 1 <= cap.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), n);
            buf.add(n).write(0);
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests;
