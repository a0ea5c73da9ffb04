//! `HnapiClient`: a sending application's side of the C ABI.

use std::collections::HashMap;
use std::ffi::c_char;
use std::path::Path;
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use super::boundary::{
    Buffer, Failure, boundary, boundary_void, bytes, checked_out, object, text, timeout, wait,
    write,
};
use super::codes::HnetRtrn;
use crate::client::{Answer, Client, ClientConfig, Ticket};

/// A client: sends requests to the gateway and receives their answers. Thread-safe:
/// share one between all the threads of a process. Created by `hnapi_client_open`,
/// released by `hnapi_client_close`.
pub struct HnapiClient {
    client: Client,
    /// Answers whose buffer was too small, kept for the next `hnapi_receive`.
    kept: Mutex<HashMap<u64, Answer>>,
    /// `hnapi_send_receive` answers whose buffer was too small, by calling thread: the
    /// same call again from that thread (same message, within a minute) returns it
    /// instead of sending the message a second time. Freed with the client.
    kept_by_thread: Mutex<HashMap<ThreadId, KeptAnswer>>,
}

/// An answer from `hnapi_send_receive` whose buffer was too small.
struct KeptAnswer {
    request: Vec<u8>,
    answer: Answer,
    until: Instant,
}

/// How long a kept answer waits for the call to be repeated with a bigger buffer.
const KEEP_FOR: Duration = Duration::from_secs(60);

fn open(config: ClientConfig, out_ptr: *mut *mut HnapiClient) -> Result<(), Failure> {
    let client = Client::open(config)?;
    let handle = Box::new(HnapiClient {
        client,
        kept: Mutex::new(HashMap::new()),
        kept_by_thread: Mutex::new(HashMap::new()),
    });
    // SAFETY: `out_ptr` was checked non-NULL by the caller.
    unsafe { write(out_ptr, Box::into_raw(handle)) };
    Ok(())
}

/// Opens a client from the `client.toml` at `config_path`. On success `*out` is the
/// client; on failure it is not written and the last error says why.
///
/// # Safety
/// `config_path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hnapi_client_open(
    config_path: *const c_char,
    out: *mut *mut HnapiClient,
) -> i32 {
    boundary("hnapi_client_open", || {
        // SAFETY: per this function's contract.
        let path = unsafe { text(config_path, "config_path") }?;
        let out_client = checked_out(out, "out")?;
        let config = ClientConfig::from_file(Path::new(path))
            .map_err(|e| Failure::new(HnetRtrn::HNET_RTRN_CONFIGERROR, e.to_string()))?;
        open(config, out_client)
    })
}

/// Opens a client from configuration text (the contents of a `client.toml`); relative
/// paths in it are taken from `base_dir` (the current directory when NULL).
///
/// # Safety
/// `config_toml` is NULL or a NUL-terminated string; `base_dir` likewise; `out` is NULL
/// or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hnapi_client_open_toml(
    config_toml: *const c_char,
    base_dir: *const c_char,
    out: *mut *mut HnapiClient,
) -> i32 {
    boundary("hnapi_client_open_toml", || {
        // SAFETY: per this function's contract.
        let toml = unsafe { text(config_toml, "config_toml") }?;
        let base = if base_dir.is_null() {
            "."
        } else {
            // SAFETY: per this function's contract.
            unsafe { text(base_dir, "base_dir") }?
        };
        let out_client = checked_out(out, "out")?;
        let config = ClientConfig::from_toml(toml, Path::new(base))
            .map_err(|e| Failure::new(HnetRtrn::HNET_RTRN_CONFIGERROR, e.to_string()))?;
        open(config, out_client)
    })
}

/// Starts a transaction and returns at once: `*ticket` is what to receive its answer
/// with. `timeout_ms` 0 means the configured default (70 s). A message without a usable
/// MSH is refused here (`HNET_RTRN_INVALIDFORMATERROR`).
///
/// # Safety
/// `c` is NULL or a live client; `msg` is NULL or `msg_len` readable bytes; `ticket` is
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hnapi_send(
    c: *mut HnapiClient,
    msg: *const u8,
    msg_len: usize,
    timeout_ms: u32,
    ticket: *mut u64,
) -> i32 {
    boundary("hnapi_send", || {
        // SAFETY: per this function's contract.
        let (client, message) = unsafe { (object(c, "client")?, bytes(msg, msg_len, "msg")?) };
        let ticket = checked_out(ticket, "ticket")?;
        let sent = client.client.send(message, timeout(timeout_ms))?;
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { write(ticket, sent.0) };
        Ok(())
    })
}

/// The answer for `ticket`, waiting up to `wait_ms` (0 polls; `UINT32_MAX` waits until
/// it exists — every transaction ends by its timeout). `HNET_RTRN_PENDING` when it is not
/// there yet (the ticket stays valid); `HNET_RTRN_BUFFERTOOSMALL` with `*len` the size
/// needed (the answer stays with the ticket for the next call).
///
/// # Safety
/// `c` is NULL or a live client; `buf` is NULL (with `cap` 0) or writable for `cap`
/// bytes; `len` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hnapi_receive(
    c: *mut HnapiClient,
    ticket: u64,
    wait_ms: u32,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> i32 {
    boundary("hnapi_receive", || {
        // SAFETY: per this function's contract.
        let client = unsafe { object(c, "client") }?;
        let buffer = Buffer::new(buf, cap, len)?;
        let kept = client
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ticket);
        let answer = match kept {
            Some(answer) => answer,
            None => match client.client.receive(Ticket(ticket), wait(wait_ms))? {
                Some(answer) => answer,
                None => {
                    return Err(Failure::new(
                        HnetRtrn::HNET_RTRN_PENDING,
                        "the answer has not arrived yet; the ticket stays valid",
                    ));
                }
            },
        };
        if !buffer.fits(answer.bytes.len()) {
            // SAFETY: the buffer's pointers are valid per the contract.
            let failure = unsafe { buffer.too_small(answer.bytes.len()) };
            client
                .kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(ticket, answer);
            return Err(failure);
        }
        // SAFETY: the buffer's pointers are valid per the contract, and the answer fits.
        unsafe { buffer.fill(&answer.bytes) };
        Ok(())
    })
}

/// Sends `msg` and waits for its answer (at most `timeout_ms`; 0 means the configured
/// default). On success the answer — the receiver's, or a network ACK from HNAPI — is in
/// `buf` and `*len` is its length. On `HNET_RTRN_BUFFERTOOSMALL`, `*len` is the size
/// needed: call again from the same thread with the same message and a bigger buffer
/// (within a minute), and the kept answer is returned without sending the message again.
///
/// # Safety
/// `c` is NULL or a live client; `msg` is NULL or `msg_len` readable bytes; `buf` is NULL
/// (with `cap` 0) or writable for `cap` bytes; `len` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hnapi_send_receive(
    c: *mut HnapiClient,
    msg: *const u8,
    msg_len: usize,
    timeout_ms: u32,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> i32 {
    boundary("hnapi_send_receive", || {
        // SAFETY: per this function's contract.
        let (client, message) = unsafe { (object(c, "client")?, bytes(msg, msg_len, "msg")?) };
        let buffer = Buffer::new(buf, cap, len)?;
        let thread = std::thread::current().id();
        let kept = {
            let mut by_thread = client
                .kept_by_thread
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Any call from this thread forgets what it kept; expired answers go too.
            let now = Instant::now();
            by_thread.retain(|_, k| k.until > now);
            by_thread
                .remove(&thread)
                .filter(|k| k.request == message)
                .map(|k| k.answer)
        };
        let answer = match kept {
            Some(answer) => answer,
            None => client.client.send_receive(message, timeout(timeout_ms))?,
        };
        if !buffer.fits(answer.bytes.len()) {
            // SAFETY: the buffer's pointers are valid per the contract.
            let failure = unsafe { buffer.too_small(answer.bytes.len()) };
            let kept = KeptAnswer {
                request: message.to_vec(),
                answer,
                until: Instant::now() + KEEP_FOR,
            };
            client
                .kept_by_thread
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(thread, kept);
            return Err(failure);
        }
        // SAFETY: the buffer's pointers are valid per the contract, and the answer fits.
        unsafe { buffer.fill(&answer.bytes) };
        Ok(())
    })
}

/// Shuts a client down without releasing it: every call waiting on it, in any thread,
/// returns `HNET_RTRN_SHUTDOWN` at once, and so does every later call. Call it before
/// `hnapi_client_close` when other threads may be waiting in `hnapi_receive` or
/// `hnapi_send_receive`; close once they have returned. NULL does nothing.
///
/// # Safety
/// `c` is NULL or a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hnapi_client_shutdown(c: *mut HnapiClient) {
    boundary_void("hnapi_client_shutdown", || {
        // SAFETY: per this function's contract.
        if let Ok(client) = unsafe { object(c, "client") } {
            client.client.shutdown();
        }
    });
}

/// Closes a client: its connection ends, answers not yet received are dropped. It
/// returns once the client's threads have finished their work (within about a second)
/// and no call of the log callback is running, however long the host's callback takes
/// (called from inside the log callback, it cannot wait for that call), so the host may
/// unload the library afterwards. `hnapi_client_close(NULL)` does nothing.
///
/// # Safety
/// `c` is NULL or a client from `hnapi_client_open*`, not used by any thread after this.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hnapi_client_close(c: *mut HnapiClient) {
    boundary_void("hnapi_client_close", || {
        if !c.is_null() {
            // SAFETY: a pointer from `Box::into_raw` in `open`, closed once per contract.
            drop(unsafe { Box::from_raw(c) });
            // A library thread may still be inside the host's log callback: the host
            // may unload the library once this returns, so wait for it.
            super::log::wait_for_callbacks();
        }
    });
}
