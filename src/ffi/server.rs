//! `HnapiServer`: a receiving application's side of the C ABI.

use std::collections::VecDeque;
use std::ffi::c_char;
use std::path::Path;
use std::sync::Mutex;

use super::boundary::{
    Buffer, Failure, boundary, boundary_void, bytes, checked_out, object, text, wait, write,
};
use super::codes::HnetRtrn;
use crate::client::{Request, Server, ServerConfig};

/// A server application: receives the requests the gateway routes to its application
/// names and responds to each. Thread-safe. Created by `hnapi_server_open`, released by
/// `hnapi_server_close`.
pub struct HnapiServer {
    server: Server,
    /// Requests whose buffer was too small, handed out first by the next receives (a
    /// queue: several threads may be receiving at once).
    held: Mutex<VecDeque<Request>>,
}

/// Opens a server application from the `server.toml` at `config_path`; it connects to
/// the gateway in the background and keeps the connection up until closed.
///
/// # Safety
/// `config_path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hnapi_server_open(
    config_path: *const c_char,
    out: *mut *mut HnapiServer,
) -> i32 {
    boundary("hnapi_server_open", || {
        // SAFETY: per this function's contract.
        let path = unsafe { text(config_path, "config_path") }?;
        let out_server = checked_out(out, "out")?;
        let config = ServerConfig::from_file(Path::new(path))
            .map_err(|e| Failure::new(HnetRtrn::HNET_RTRN_CONFIGERROR, e.to_string()))?;
        let handle = Box::new(HnapiServer {
            server: Server::open(config)?,
            held: Mutex::new(VecDeque::new()),
        });
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { write(out_server, Box::into_raw(handle)) };
        Ok(())
    })
}

/// Waits up to `wait_ms` (0 only looks) for a gateway to accept this server application:
/// `HNET_RTRN_SUCCESS` when it is serving, `HNET_RTRN_PENDING` when not yet (until then
/// requests to its names are answered `HNPS007E` by the gateway).
///
/// # Safety
/// `s` is NULL or a live server.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hnapi_server_wait_connected(s: *mut HnapiServer, wait_ms: u32) -> i32 {
    boundary("hnapi_server_wait_connected", || {
        // SAFETY: per this function's contract.
        let server = unsafe { object(s, "server") }?;
        if server.server.wait_connected(wait(wait_ms))? {
            Ok(())
        } else {
            Err(Failure::new(
                HnetRtrn::HNET_RTRN_PENDING,
                "not connected to a gateway yet",
            ))
        }
    })
}

/// The next request, waiting up to `wait_ms` (0 polls; `UINT32_MAX` waits until one
/// comes). On success the request is in `buf`, `*len` is its length and `*request_id` is
/// what to respond with. `HNET_RTRN_PENDING` when none came; `HNET_RTRN_BUFFERTOOSMALL`
/// with `*len` the size needed (the request is kept for the next call).
///
/// # Safety
/// `s` is NULL or a live server; `request_id` and `len` are NULL or writable; `buf` is
/// NULL (with `cap` 0) or writable for `cap` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hnapi_server_receive(
    s: *mut HnapiServer,
    wait_ms: u32,
    request_id: *mut u64,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> i32 {
    boundary("hnapi_server_receive", || {
        // SAFETY: per this function's contract.
        let server = unsafe { object(s, "server") }?;
        let request_id = checked_out(request_id, "request_id")?;
        let buffer = Buffer::new(buf, cap, len)?;
        let held = server
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        let request = match held {
            Some(request) => request,
            None => match server.server.receive(wait(wait_ms))? {
                Some(request) => request,
                None => {
                    return Err(Failure::new(
                        HnetRtrn::HNET_RTRN_PENDING,
                        "no request came within the wait",
                    ));
                }
            },
        };
        if !buffer.fits(request.bytes.len()) {
            // SAFETY: the buffer's pointers are valid per the contract.
            let failure = unsafe { buffer.too_small(request.bytes.len()) };
            server
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_front(request);
            return Err(failure);
        }
        // SAFETY: the pointers are valid per the contract, and the request fits.
        unsafe {
            buffer.fill(&request.bytes);
            write(request_id, request.id);
        }
        Ok(())
    })
}

/// Sends `msg` as the answer to `request_id`. The answer must be HL7 with a usable MSH.
///
/// # Safety
/// `s` is NULL or a live server; `msg` is NULL or `msg_len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hnapi_server_respond(
    s: *mut HnapiServer,
    request_id: u64,
    msg: *const u8,
    msg_len: usize,
) -> i32 {
    boundary("hnapi_server_respond", || {
        // SAFETY: per this function's contract.
        let (server, answer) = unsafe { (object(s, "server")?, bytes(msg, msg_len, "msg")?) };
        server.server.respond(request_id, answer)?;
        Ok(())
    })
}

/// Shuts a server application down without releasing it: every call waiting on it, in
/// any thread, returns `HNET_RTRN_SHUTDOWN` at once, and so does every later call. Call it
/// before `hnapi_server_close` when other threads may be waiting in
/// `hnapi_server_receive`; close once they have returned. NULL does nothing.
///
/// # Safety
/// `s` is NULL or a live server.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hnapi_server_shutdown(s: *mut HnapiServer) {
    boundary_void("hnapi_server_shutdown", || {
        // SAFETY: per this function's contract.
        if let Ok(server) = unsafe { object(s, "server") } {
            server.server.shutdown();
        }
    });
}

/// Closes a server application: its connection to the gateway ends, and the gateway
/// answers what it still waited for with an AR (`TXFR024E`). It returns once the server
/// application's threads have finished their work (within about a second) and no call of
/// the log callback is running, however long the host's callback takes (called from
/// inside the log callback, it cannot wait for that call). `hnapi_server_close(NULL)`
/// does nothing.
///
/// # Safety
/// `s` is NULL or a server from `hnapi_server_open`, not used by any thread after this.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hnapi_server_close(s: *mut HnapiServer) {
    boundary_void("hnapi_server_close", || {
        if !s.is_null() {
            // SAFETY: a pointer from `Box::into_raw` in `hnapi_server_open`, closed once.
            drop(unsafe { Box::from_raw(s) });
            // A library thread may still be inside the host's log callback: the host
            // may unload the library once this returns, so wait for it.
            super::log::wait_for_callbacks();
        }
    });
}
