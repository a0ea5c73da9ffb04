//! The exported functions called as a C host calls them, through raw pointers, with no
//! socket and no runtime: these are the tests `cargo +nightly miri test --lib
//! --no-default-features -- ffi::` runs under Miri (test.sh), which checks every pointer
//! the unsafe code here reads or writes, the lengths it copies, and the atomics of the log
//! callback's grace period.

use std::ffi::{CStr, c_char, c_void};
use std::ptr;
use std::sync::Mutex;

use super::boundary::{Buffer, bytes, text};
use super::client::{
    HnapiClient, hnapi_client_close, hnapi_client_open, hnapi_client_open_toml,
    hnapi_client_shutdown, hnapi_receive, hnapi_send, hnapi_send_receive,
};
use super::codes::HnetRtrn;
use super::log::hnapi_set_log_callback;
use super::server::{HnapiServer, hnapi_server_close, hnapi_server_open, hnapi_server_respond};
use super::{hnapi_code_name, hnapi_last_error, hnapi_version};

const INVALID: i32 = HnetRtrn::HNET_RTRN_INVALIDPARAMETER as i32;
const CONFIG: i32 = HnetRtrn::HNET_RTRN_CONFIGERROR as i32;

fn c_text(p: *const c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: the functions under test return static NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned()
}

/// This thread's last error through the C call, with a buffer of exactly its size.
fn last_error_c() -> String {
    // SAFETY: NULL with cap 0 asks for the length only.
    let len = unsafe { hnapi_last_error(ptr::null_mut(), 0) };
    let mut buf = vec![0x55u8; len + 1];
    // SAFETY: `buf` is writable for its length.
    let again = unsafe { hnapi_last_error(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(again, len);
    assert_eq!(buf[len], 0, "NUL-terminated");
    String::from_utf8(buf[..len].to_vec()).unwrap()
}

#[test]
fn version_and_code_names_are_static_c_strings() {
    assert_eq!(
        c_text(hnapi_version()),
        format!("hnsecure {}", env!("CARGO_PKG_VERSION"))
    );
    for code in HnetRtrn::ALL {
        let name = c_text(hnapi_code_name(code as i32));
        assert!(name.starts_with("HNET_RTRN_"), "{name}");
        assert_eq!(name, format!("{code:?}"));
    }
    assert_eq!(c_text(hnapi_code_name(-1)), "HNET_RTRN_UNKNOWN");
    assert_eq!(c_text(hnapi_code_name(i32::MAX)), "HNET_RTRN_UNKNOWN");
}

#[test]
fn the_last_error_is_cut_to_the_buffer_and_always_terminated() {
    // SAFETY: NULL arguments are part of every function's contract.
    let code = unsafe { hnapi_client_open(ptr::null(), ptr::null_mut()) };
    assert_eq!(code, INVALID);
    let message = last_error_c();
    assert_eq!(message, "config_path is NULL");

    // A buffer of 5 holds 4 bytes and the NUL; the bytes after it are not touched.
    let mut small = [0x55u8; 8];
    // SAFETY: writable for 5 of its 8 bytes.
    let len = unsafe { hnapi_last_error(small.as_mut_ptr().cast(), 5) };
    assert_eq!(len, message.len(), "the full length, whatever the buffer");
    assert_eq!(&small[..5], b"conf\0");
    assert_eq!(&small[5..], [0x55; 3]);

    // A buffer of 1 holds the NUL alone; NULL with a capacity writes nothing.
    let mut one = [0x55u8; 1];
    // SAFETY: writable for 1 byte.
    assert_eq!(unsafe { hnapi_last_error(one.as_mut_ptr().cast(), 1) }, len);
    assert_eq!(one, [0]);
    // SAFETY: NULL is allowed whatever `cap` says.
    assert_eq!(unsafe { hnapi_last_error(ptr::null_mut(), 100) }, len);

    // A configuration error names what is wrong.
    let mut out: *mut HnapiClient = ptr::null_mut();
    // SAFETY: a valid out pointer; an invalid configuration text.
    let code = unsafe { hnapi_client_open_toml(c"facility = 3".as_ptr(), ptr::null(), &mut out) };
    assert_eq!(code, CONFIG);
    assert!(out.is_null(), "a failed open leaves *out unwritten");
    assert!(last_error_c().contains("facility"), "{}", last_error_c());
}

#[test]
fn text_arguments_must_be_utf8_and_out_pointers_not_null() {
    let not_utf8 = [0xffu8, 0xfe, 0];
    let mut out: *mut HnapiClient = ptr::null_mut();
    // SAFETY: NUL-terminated bytes that are not UTF-8.
    let code = unsafe { hnapi_client_open_toml(not_utf8.as_ptr().cast(), ptr::null(), &mut out) };
    assert_eq!(code, INVALID);
    assert_eq!(last_error_c(), "config_toml is not UTF-8");
    // SAFETY: a valid string, a NULL out pointer.
    let code = unsafe { hnapi_client_open_toml(c"".as_ptr(), ptr::null(), ptr::null_mut()) };
    assert_eq!(code, INVALID);
    assert_eq!(last_error_c(), "out is NULL");
}

#[test]
#[cfg_attr(miri, ignore = "opens a file, which Miri's isolation refuses")]
fn a_server_application_without_its_file_is_a_configuration_error() {
    // SAFETY: a valid path, a NULL out pointer.
    let code = unsafe { hnapi_server_open(c"/nonexistent/server.toml".as_ptr(), ptr::null_mut()) };
    assert_eq!(code, INVALID);
    let mut server: *mut HnapiServer = ptr::null_mut();
    // SAFETY: a path that does not exist, a valid out pointer.
    let code = unsafe { hnapi_server_open(c"/nonexistent/server.toml".as_ptr(), &mut server) };
    assert_eq!(code, CONFIG);
    assert!(server.is_null());
}

#[test]
fn calls_on_a_null_handle_are_refused_and_write_nothing() {
    let msg = b"MSH|^~\\&|A|B|C|D|20260101||R03|1|P|2.3\r";
    let mut ticket = 0x5555_u64;
    let mut buf = [0x55u8; 16];
    let mut len = 0x5555_usize;
    // SAFETY: a NULL handle is refused before any other argument is used.
    unsafe {
        assert_eq!(
            hnapi_send(ptr::null_mut(), msg.as_ptr(), msg.len(), 0, &mut ticket),
            INVALID
        );
        assert_eq!(last_error_c(), "client is NULL");
        assert_eq!(
            hnapi_receive(ptr::null_mut(), 1, 0, buf.as_mut_ptr(), buf.len(), &mut len),
            INVALID
        );
        assert_eq!(
            hnapi_send_receive(
                ptr::null_mut(),
                msg.as_ptr(),
                msg.len(),
                0,
                buf.as_mut_ptr(),
                buf.len(),
                &mut len
            ),
            INVALID
        );
        assert_eq!(
            hnapi_server_respond(ptr::null_mut(), 1, msg.as_ptr(), msg.len()),
            INVALID
        );
        // Closing and shutting down NULL do nothing.
        hnapi_client_shutdown(ptr::null_mut());
        hnapi_client_close(ptr::null_mut());
        hnapi_server_close(ptr::null_mut());
    }
    assert_eq!(ticket, 0x5555);
    assert_eq!(len, 0x5555);
    assert_eq!(buf, [0x55; 16]);
}

#[test]
fn buffers_take_exactly_what_fits_and_say_what_is_needed() {
    let mut store = [0x55u8; 8];
    let mut len = 0usize;
    let buffer = Buffer::new(store.as_mut_ptr(), 6, &mut len).ok().unwrap();
    assert!(buffer.fits(6));
    assert!(!buffer.fits(7));
    // SAFETY: the pointers given to `new` are valid for 6 bytes and one usize.
    let failure = unsafe { buffer.too_small(7) };
    assert_eq!(failure.code, HnetRtrn::HNET_RTRN_BUFFERTOOSMALL);
    assert_eq!(len, 7, "the size needed");
    assert_eq!(store, [0x55; 8], "nothing copied when it does not fit");
    let buffer = Buffer::new(store.as_mut_ptr(), 6, &mut len).ok().unwrap();
    // SAFETY: as above; 6 bytes fit.
    unsafe { buffer.fill(b"MSH|^~") };
    assert_eq!(len, 6);
    assert_eq!(&store, b"MSH|^~\x55\x55");
    // An empty answer into an empty buffer with no storage at all.
    let buffer = Buffer::new(ptr::null_mut(), 0, &mut len).ok().unwrap();
    // SAFETY: nothing is copied; `len` is valid.
    unsafe { buffer.fill(b"") };
    assert_eq!(len, 0);
}

#[test]
fn byte_and_text_arguments_are_read_in_place() {
    let data = *b"abc\0def";
    // SAFETY: `data` is readable for its length and lives through the test.
    unsafe {
        assert_eq!(bytes(data.as_ptr(), 7, "msg").ok(), Some(&data[..]));
        assert_eq!(bytes(data.as_ptr(), 0, "msg").ok(), Some(&[][..]));
        assert_eq!(text(data.as_ptr().cast(), "x").ok(), Some("abc"));
        let impossible = bytes(data.as_ptr(), usize::MAX, "msg").err().unwrap();
        assert_eq!(impossible.code, HnetRtrn::HNET_RTRN_INVALIDPARAMETER);
    }
}

/// What the test callback received: (level, line, ctx).
static LINES: Mutex<Vec<(i32, String, usize)>> = Mutex::new(Vec::new());

extern "C" fn record(level: i32, line: *const c_char, ctx: *mut c_void) {
    // SAFETY: the library passes a NUL-terminated line valid during the call.
    let line = unsafe { CStr::from_ptr(line) }
        .to_string_lossy()
        .into_owned();
    if line.contains("ffi-test-marker") {
        LINES.lock().unwrap().push((level, line, ctx as usize));
    }
}

#[test]
fn the_log_callback_gets_lines_at_its_level_with_its_context_until_replaced() {
    let mut ctx_target = 7u8;
    let ctx: *mut c_void = (&raw mut ctx_target).cast();
    // SAFETY: `record` may be called from any thread; `ctx` outlives the callback,
    // which is removed before the test returns.
    unsafe { hnapi_set_log_callback(Some(record), ctx, 2) };
    log::warn!(target: "hnapi::ffi::tests", "ffi-test-marker warn");
    log::info!(target: "hnapi::ffi::tests", "ffi-test-marker info, above the level");
    // Another crate's lines stop at warn whatever the host asked: here, at warn.
    log::error!(target: "rustls::x", "ffi-test-marker from rustls");
    let from_thread = std::thread::spawn(|| {
        log::error!(target: "hnapi::ffi::tests", "ffi-test-marker from a thread");
    });
    from_thread.join().unwrap();
    // SAFETY: NULL removes the callback; when it returns no call of `record` runs.
    unsafe { hnapi_set_log_callback(None, ptr::null_mut(), 5) };
    log::error!(target: "hnapi::ffi::tests", "ffi-test-marker after removal");

    let lines = std::mem::take(&mut *LINES.lock().unwrap());
    let seen: Vec<(i32, bool)> = lines
        .iter()
        .map(|(level, _, c)| (*level, *c == ctx as usize))
        .collect();
    assert_eq!(seen, [(2, true), (1, true), (1, true)], "{lines:?}");
    assert!(lines[0].1.contains("ffi-test-marker warn"));
    assert!(lines[1].1.contains("from rustls"));
    assert!(lines[2].1.contains("from a thread"));
}
