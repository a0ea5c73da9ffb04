//! The C ABI called as C calls it (the `extern "C"` functions, raw pointers), for the
//! cases that need a Rust harness: races between threads on one handle, a handle's
//! address reused by the allocator, shutting down a handle others wait on.
#![allow(unsafe_code)]

mod common;

use std::ffi::CString;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{System, get, request};
use hnapi::ffi::client::{
    HnapiClient, hnapi_client_close, hnapi_client_open, hnapi_client_open_toml,
    hnapi_client_shutdown, hnapi_receive, hnapi_send, hnapi_send_receive,
};
use hnapi::ffi::codes::HnetRtrn::{self, *};
use hnapi::ffi::server::{
    HnapiServer, hnapi_server_close, hnapi_server_open, hnapi_server_receive, hnapi_server_respond,
    hnapi_server_shutdown,
};

fn code(rc: i32) -> HnetRtrn {
    HnetRtrn::from_i32(rc).unwrap_or_else(|| panic!("unknown code {rc}"))
}

fn c_path(path: &std::path::Path) -> CString {
    CString::new(path.to_str().unwrap()).unwrap()
}

fn open_client(system: &System) -> *mut HnapiClient {
    let path = c_path(&system.client_config());
    let mut client = ptr::null_mut();
    // SAFETY: valid C string and out-pointer.
    assert_eq!(
        code(unsafe { hnapi_client_open(path.as_ptr(), &mut client) }),
        HNET_RTRN_SUCCESS
    );
    client
}

/// A handle that may cross threads in a test (the C ABI promises it is thread-safe).
struct Shared<T>(*mut T);
impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shared<T> {}
// SAFETY: HnapiClient and HnapiServer are documented thread-safe; tests close them only
// after every thread using them has been joined.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

#[test]
fn a_kept_answer_belongs_to_its_client_even_at_the_same_address() {
    let system = System::start("ffikept");
    let message = request("RAIEND-PYR-RL", "R35", "PID||9029274643^^^BC^PH\r");
    let mut tiny = [0u8; 8];
    let mut len = 0usize;
    let first = open_client(&system);
    // SAFETY: live client, valid buffers.
    let rc = unsafe {
        hnapi_send_receive(
            first,
            message.as_ptr(),
            message.len(),
            0,
            tiny.as_mut_ptr(),
            tiny.len(),
            &mut len,
        )
    };
    assert_eq!(code(rc), HNET_RTRN_BUFFERTOOSMALL);
    // SAFETY: closed once.
    unsafe { hnapi_client_close(first) };

    // A second client that cannot reach any gateway, maybe at the same address.
    let toml = CString::new(format!(
        "facility = \"BC00000098\"\ncredential = \"{}\"\ngateways = [\"127.0.0.1:1\"]\nconnect_timeout_secs = 1\n",
        system.credential().display()
    ))
    .unwrap();
    let mut second = ptr::null_mut();
    // SAFETY: valid strings and out-pointer.
    assert_eq!(
        code(unsafe { hnapi_client_open_toml(toml.as_ptr(), ptr::null(), &mut second) }),
        HNET_RTRN_SUCCESS
    );
    let mut buf = vec![0u8; 4096];
    // SAFETY: live client, valid buffers.
    let rc = unsafe {
        hnapi_send_receive(
            second,
            message.as_ptr(),
            message.len(),
            3000,
            buf.as_mut_ptr(),
            buf.len(),
            &mut len,
        )
    };
    assert_eq!(code(rc), HNET_RTRN_SUCCESS);
    let answer = &buf[..len];
    assert_eq!(
        get(answer, "MSH-3"),
        "HNAPI",
        "sent (and failed), not the first client's kept answer"
    );
    assert!(get(answer, "MSA-3").starts_with("TXFR024E"));
    // SAFETY: closed once.
    unsafe { hnapi_client_close(second) };
}

#[test]
fn requests_too_big_for_two_waiting_threads_are_both_kept() {
    let system = System::start("ffiheld");
    let path = c_path(&system.sandbox().server_config());
    let mut server: *mut HnapiServer = ptr::null_mut();
    // SAFETY: valid C string and out-pointer.
    assert_eq!(
        code(unsafe { hnapi_server_open(path.as_ptr(), &mut server) }),
        HNET_RTRN_SUCCESS
    );
    let server = Shared(server);
    let client = Shared(open_client(&system));
    let answered = Arc::new(AtomicUsize::new(0));

    // Two threads receive with tiny buffers; both get BUFFERTOOSMALL, then each takes a
    // kept request with a big enough buffer and answers it.
    let receivers: Vec<_> = (0..2)
        .map(|_| {
            let answered = answered.clone();
            std::thread::spawn(move || {
                let server = server;
                let (mut id, mut len) = (0u64, 0usize);
                let mut tiny = [0u8; 16];
                loop {
                    // SAFETY: live server, valid buffers.
                    let rc = unsafe {
                        hnapi_server_receive(
                            server.0,
                            5000,
                            &mut id,
                            tiny.as_mut_ptr(),
                            tiny.len(),
                            &mut len,
                        )
                    };
                    if code(rc) == HNET_RTRN_BUFFERTOOSMALL {
                        break;
                    }
                }
                let mut buf = vec![0u8; len];
                // SAFETY: as above.
                let rc = unsafe {
                    hnapi_server_receive(
                        server.0,
                        5000,
                        &mut id,
                        buf.as_mut_ptr(),
                        buf.len(),
                        &mut len,
                    )
                };
                assert_eq!(code(rc), HNET_RTRN_SUCCESS);
                let request = &buf[..len];
                let ack = format!(
                    "MSH|^~\\&|HNAPI-DEMO|BC00000099|TEST|BC00000098|1||ACK|A1|D|2.3\rMSA|AA|{}\r",
                    get(request, "MSH-10")
                );
                // SAFETY: live server, valid message.
                let rc = unsafe { hnapi_server_respond(server.0, id, ack.as_ptr(), ack.len()) };
                assert_eq!(code(rc), HNET_RTRN_SUCCESS);
                answered.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    // Two senders, started together so that both requests arrive while both wait.
    let senders: Vec<_> = (0..2)
        .map(|n| {
            std::thread::spawn(move || {
                let client = client;
                let message = request("HNAPI-DEMO", "R03", "");
                let mut buf = vec![0u8; 4096];
                let mut len = 0usize;
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    // SAFETY: live client, valid buffers.
                    let rc = unsafe {
                        hnapi_send_receive(
                            client.0,
                            message.as_ptr(),
                            message.len(),
                            5000,
                            buf.as_mut_ptr(),
                            buf.len(),
                            &mut len,
                        )
                    };
                    assert_eq!(code(rc), HNET_RTRN_SUCCESS);
                    let msa3 = get(&buf[..len], "MSA-3");
                    if !msa3.starts_with("HNPS007E") || Instant::now() > deadline {
                        assert_eq!(get(&buf[..len], "MSA-1"), "AA", "request {n}: {msa3}");
                        assert_eq!(get(&buf[..len], "MSA-2"), get(&message, "MSH-10"));
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    for t in senders.into_iter().chain(receivers) {
        t.join().unwrap();
    }
    assert_eq!(answered.load(Ordering::Relaxed), 2);
    // SAFETY: every thread is joined; closed once.
    unsafe {
        hnapi_client_close(client.0);
        hnapi_server_close(server.0);
    }
}

#[test]
fn shutdown_wakes_waiting_calls_then_close_is_safe() {
    let system = System::start("ffishutdown");
    let client = Shared(open_client(&system));
    let message = request("HNSIM-NORESPONSE", "R03", "");
    let mut ticket = 0u64;
    // SAFETY: live client, valid message and out-pointer.
    assert_eq!(
        code(unsafe {
            hnapi_send(
                client.0,
                message.as_ptr(),
                message.len(),
                60_000,
                &mut ticket,
            )
        }),
        HNET_RTRN_SUCCESS
    );
    let waiting = std::thread::spawn(move || {
        let client = client;
        let mut buf = [0u8; 256];
        let mut len = 0usize;
        let started = Instant::now();
        // SAFETY: live client until this thread is joined.
        let rc = unsafe {
            hnapi_receive(
                client.0,
                ticket,
                u32::MAX,
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
            )
        };
        (code(rc), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: live client.
    unsafe { hnapi_client_shutdown(client.0) };
    let (rc, waited) = waiting.join().unwrap();
    assert_eq!(rc, HNET_RTRN_SHUTDOWN);
    assert!(
        waited < Duration::from_secs(5),
        "woken at once, not at the 60 s timeout: {waited:?}"
    );
    let mut buf = [0u8; 256];
    let mut len = 0usize;
    // SAFETY: live client.
    let later = unsafe {
        hnapi_send_receive(
            client.0,
            message.as_ptr(),
            message.len(),
            0,
            buf.as_mut_ptr(),
            buf.len(),
            &mut len,
        )
    };
    assert_eq!(code(later), HNET_RTRN_SHUTDOWN);
    // SAFETY: the waiting thread is joined; closed once.
    unsafe { hnapi_client_close(client.0) };

    // The same for a server application waiting for requests.
    let path = c_path(&system.sandbox().server_config());
    let mut server: *mut HnapiServer = ptr::null_mut();
    // SAFETY: valid C string and out-pointer.
    assert_eq!(
        code(unsafe { hnapi_server_open(path.as_ptr(), &mut server) }),
        HNET_RTRN_SUCCESS
    );
    let server = Shared(server);
    let waiting = std::thread::spawn(move || {
        let server = server;
        let (mut id, mut len) = (0u64, 0usize);
        let mut buf = [0u8; 256];
        // SAFETY: live server until this thread is joined.
        code(unsafe {
            hnapi_server_receive(
                server.0,
                u32::MAX,
                &mut id,
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
            )
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: live server.
    unsafe { hnapi_server_shutdown(server.0) };
    assert_eq!(waiting.join().unwrap(), HNET_RTRN_SHUTDOWN);
    // SAFETY: the waiting thread is joined; closed once.
    unsafe { hnapi_server_close(server.0) };
}

fn last_error() -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: a buffer of its stated size.
    let n = unsafe { hnapi::ffi::hnapi_last_error(buf.as_mut_ptr().cast(), buf.len()) };
    String::from_utf8_lossy(&buf[..n.min(buf.len() - 1)]).into_owned()
}

#[cfg(unix)]
fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[test]
fn a_credential_other_users_can_change_or_read_is_a_config_error_at_open() {
    let system = System::start("fficredmode");
    let path = c_path(&system.client_config());
    let credential = system.credential().display().to_string();
    for (mode, problem) in [
        (0o666, "is writable by other users (mode 666): chmod 600 it"),
        (0o644, "is readable by other users (mode 644)"),
    ] {
        set_mode(&system.credential(), mode);
        let mut client = ptr::null_mut();
        // SAFETY: valid C string and out-pointer.
        let rc = unsafe { hnapi_client_open(path.as_ptr(), &mut client) };
        assert_eq!(code(rc), HNET_RTRN_CONFIGERROR);
        assert!(client.is_null(), "no handle on failure");
        let error = last_error();
        assert!(
            error.contains(&format!("{credential} {problem}")),
            "{mode:o}: {error}"
        );
    }
    // A folder other users can write: refused too, naming the folder.
    set_mode(&system.credential(), 0o600);
    set_mode(&system.dir, 0o777);
    let mut client = ptr::null_mut();
    // SAFETY: valid C string and out-pointer.
    let rc = unsafe { hnapi_client_open(path.as_ptr(), &mut client) };
    set_mode(&system.dir, 0o700);
    assert_eq!(code(rc), HNET_RTRN_CONFIGERROR);
    let error = last_error();
    assert!(
        error.contains(&format!(
            "{} is a folder other users can write to (mode 777)",
            system.dir.display()
        )),
        "{error}"
    );
    // Put right, it opens.
    let client = open_client(&system);
    // SAFETY: a handle from open, closed once.
    unsafe { hnapi_client_close(client) };
}

#[test]
fn a_bad_credential_file_never_shows_its_secrets() {
    let system = System::start("ffisecret");
    let text = std::fs::read_to_string(system.credential()).unwrap();
    // An invalid escape inside the private key's value: a TOML syntax error there.
    let broken = text.replacen(
        "-----BEGIN PRIVATE KEY-----",
        "\\q-----BEGIN PRIVATE KEY-----",
        1,
    );
    let path = system.dir.join("broken-credential.toml");
    std::fs::write(&path, broken).unwrap();
    #[cfg(unix)]
    set_mode(&path, 0o600);
    let toml = CString::new(format!(
        "facility = \"BC00000098\"\ncredential = \"{}\"\ngateways = [\"{}\"]\n",
        path.display(),
        system.addr()
    ))
    .unwrap();
    let mut client = ptr::null_mut();
    // SAFETY: valid strings and out-pointer.
    let rc = unsafe { hnapi_client_open_toml(toml.as_ptr(), ptr::null(), &mut client) };
    assert_eq!(code(rc), HNET_RTRN_CONFIGERROR);
    let error = last_error();
    assert!(
        !error.contains("PRIVATE KEY") && !error.contains('\n'),
        "{error}"
    );
    assert!(
        error.contains("broken-credential.toml") && error.contains("private_key"),
        "{error}"
    );
}

#[test]
fn waiting_threads_do_not_block_others() {
    let system = System::start("ffiwaiting");
    let path = c_path(&system.sandbox().server_config());
    let mut server: *mut HnapiServer = ptr::null_mut();
    // SAFETY: valid C string and out-pointer.
    assert_eq!(
        code(unsafe { hnapi_server_open(path.as_ptr(), &mut server) }),
        HNET_RTRN_SUCCESS
    );
    // SAFETY: live server.
    assert_eq!(
        code(unsafe { hnapi::ffi::server::hnapi_server_wait_connected(server, 10_000) }),
        HNET_RTRN_SUCCESS
    );
    let server = Shared(server);

    // One thread waits 3 s for a request; a poll from another returns at once.
    let waiting = std::thread::spawn(move || {
        let server = server;
        let (mut id, mut len) = (0u64, 0usize);
        let mut buf = [0u8; 256];
        // SAFETY: live server until joined.
        code(unsafe {
            hnapi_server_receive(
                server.0,
                3000,
                &mut id,
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
            )
        })
    });
    std::thread::sleep(Duration::from_millis(200));
    let (mut id, mut len) = (0u64, 0usize);
    let mut buf = [0u8; 256];
    let started = Instant::now();
    // SAFETY: live server.
    let polled = unsafe {
        hnapi_server_receive(server.0, 0, &mut id, buf.as_mut_ptr(), buf.len(), &mut len)
    };
    assert_eq!(code(polled), HNET_RTRN_PENDING);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a poll does not wait: {:?}",
        started.elapsed()
    );
    assert_eq!(waiting.join().unwrap(), HNET_RTRN_PENDING);

    // A ticket one thread waits on is still pending, not unknown, to another.
    let client = Shared(open_client(&system));
    let message = request("HNSIM-NORESPONSE", "R03", "");
    let mut ticket = 0u64;
    // SAFETY: live client, valid message and out-pointer.
    assert_eq!(
        code(unsafe { hnapi_send(client.0, message.as_ptr(), message.len(), 2000, &mut ticket) }),
        HNET_RTRN_SUCCESS
    );
    let waiter = std::thread::spawn(move || {
        let client = client;
        let (mut buf, mut len) = ([0u8; 4096], 0usize);
        // SAFETY: live client until joined.
        code(unsafe {
            hnapi_receive(
                client.0,
                ticket,
                u32::MAX,
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
            )
        })
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut big = [0u8; 4096];
    // SAFETY: live client.
    let polled =
        unsafe { hnapi_receive(client.0, ticket, 0, big.as_mut_ptr(), big.len(), &mut len) };
    assert_eq!(code(polled), HNET_RTRN_PENDING);
    assert_eq!(
        waiter.join().unwrap(),
        HNET_RTRN_SUCCESS,
        "the waiter gets the answer (an AR at the timeout)"
    );
    // SAFETY: every thread joined; closed once.
    unsafe {
        hnapi_client_close(client.0);
        hnapi_server_close(server.0);
    }
}

#[test]
fn a_message_too_large_is_refused_when_sent() {
    let system = System::start("ffilarge");
    let client = open_client(&system);
    let mut message = request("HNSIM-ECHO", "R03", "");
    message.resize(9 << 20, b'X');
    let mut ticket = 0u64;
    // SAFETY: live client, valid message and out-pointer.
    let rc = unsafe { hnapi_send(client, message.as_ptr(), message.len(), 0, &mut ticket) };
    assert_eq!(code(rc), HNET_RTRN_TOOLARGE);
    // SAFETY: closed once.
    unsafe { hnapi_client_close(client) };
}

extern "C" fn resetting_callback(
    _level: i32,
    _line: *const std::ffi::c_char,
    ctx: *mut std::ffi::c_void,
) {
    // SAFETY: the test passes a pointer to a static counter.
    let calls = unsafe { &*(ctx as *const AtomicUsize) };
    calls.fetch_add(1, Ordering::Relaxed);
    // Setting a callback from inside one must not deadlock.
    // SAFETY: same function and context.
    unsafe { hnapi::ffi::log::hnapi_set_log_callback(Some(resetting_callback), ctx, 3) };
}

#[test]
fn a_log_callback_may_set_the_callback() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let system = System::start("ffilog");
    // SAFETY: a static counter outlives the callback.
    unsafe {
        hnapi::ffi::log::hnapi_set_log_callback(
            Some(resetting_callback),
            &CALLS as *const AtomicUsize as *mut std::ffi::c_void,
            3,
        );
    }
    let client = open_client(&system);
    let message = request("RAIEND-PYR-RL", "R35", "PID||9029274643^^^BC^PH\r");
    let (mut buf, mut len) = ([0u8; 4096], 0usize);
    let done = std::sync::mpsc::channel();
    let client = Shared(client);
    let sender = done.0.clone();
    std::thread::spawn(move || {
        let client = client;
        // SAFETY: live client.
        let rc = unsafe {
            hnapi_send_receive(
                client.0,
                message.as_ptr(),
                message.len(),
                0,
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
            )
        };
        let _ = sender.send(rc);
    });
    let rc = done
        .1
        .recv_timeout(Duration::from_secs(20))
        .expect("no deadlock");
    assert_eq!(code(rc), HNET_RTRN_SUCCESS);
    assert!(CALLS.load(Ordering::Relaxed) > 0);
    // SAFETY: turning the callback off; the client is closed once.
    unsafe {
        hnapi::ffi::log::hnapi_set_log_callback(None, ptr::null_mut(), 0);
        hnapi_client_close(client.0);
    }
}
