//! Third-party software against hnsecure, as partners run it (issue 16): OpenSSL's
//! `s_client` on the client daemon's TLS MLLP listener (TLS 1.2 and 1.3, with and without
//! a client certificate, `tls13_only`), all against a sandbox gateway over real TLS on
//! loopback.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{FACILITY, System, get, request};
use hnapi::client::ClientConfig;
use hnapi::client::daemon::Relay;

// ---------------------------------------------------------------------------------------
// The client daemon, in process, and its TLS material
// ---------------------------------------------------------------------------------------

struct Daemon {
    mllp: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Daemon {
    /// A daemon for the system's facility whose MLLP listener has `mllp_tls` (the lines of
    /// `[listen.mllp_tls]`, or nothing for plain MLLP).
    fn start(system: &System, mllp_tls: &str) -> Self {
        let mut text = format!(
            "facility = \"{FACILITY}\"\ncredential = \"credential.toml\"\ngateways = [\"{}\"]\n\
             [listen]\nmllp = \"127.0.0.1:0\"\n",
            system.addr()
        );
        if !mllp_tls.is_empty() {
            text += &format!("[listen.mllp_tls]\n{mllp_tls}\n");
        }
        let config = ClientConfig::from_toml(&text, &system.dir).unwrap();
        let relay = system.runtime.block_on(Relay::bind(config)).unwrap();
        let mllp = relay.mllp_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = system.runtime.spawn(relay.run(async {
            let _ = stopped.await;
        }));
        Self {
            mllp,
            stop: Some(stop),
            done: Some(done),
        }
    }

    fn stop(&mut self, system: &System) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            system.runtime.block_on(done).unwrap();
        }
    }
}

/// `[listen.mllp_tls]` lines requiring a client certificate from `ca.pem`.
const REQUIRE_CERT: &str = "certificate = \"mllp.pem\"\nprivate_key = \"mllp-key.pem\"\n\
                            client_ca = \"ca.pem\"\nrequire_client_cert = true\n";

/// A CA (`ca.pem`), the listener's certificate for 127.0.0.1 (`mllp.pem`) and an engine's
/// client certificate (`engine.pem`, DNS name engine.example), with their keys, in `dir`.
fn certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Names of their own: with rcgen's one default name for all, OpenSSL takes each
    // certificate for a self-signed one.
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "interop test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    for (name, stem) in [("127.0.0.1", "mllp"), ("engine.example", "engine")] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, stem);
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}-key.pem")), key.serialize_pem()).unwrap();
    }
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
}

fn mllp_frame(message: &[u8]) -> Vec<u8> {
    [&[0x0B][..], message, &[0x1C, 0x0D]].concat()
}

fn echo_request(body: &str) -> Vec<u8> {
    request("HNSIM-ECHO", "R03", body)
}

// ---------------------------------------------------------------------------------------
// OpenSSL
// ---------------------------------------------------------------------------------------

/// What `openssl s_client` did.
struct SClient {
    /// The MLLP answer's message, when one came.
    answer: Option<Vec<u8>>,
    /// Its standard error (the handshake's outcome, an alert's description and number).
    stderr: String,
}

/// `openssl s_client` to `addr` with `args` (`-tls1_2`, `-cert`…), trusting `dir`/ca.pem,
/// writing `request` framed in MLLP: waits up to 20 s for a whole answer, or for
/// s_client to end (a refused handshake).
fn s_client(dir: &Path, addr: SocketAddr, args: &[&str], request: &[u8]) -> SClient {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .args(["-connect", &addr.to_string(), "-CAfile"])
        .arg(dir.join("ca.pem"))
        .args(["-verify_return_error", "-quiet", "-nocommands"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is needed (apt-get install openssl)");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(&mllp_frame(request));
    let _ = stdin.flush();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut piece = [0u8; 4096];
        loop {
            match stdout.read(&mut piece) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    all.extend_from_slice(&piece[..n]);
                    if all.ends_with(&[0x1C, 0x0D]) {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(all);
    });
    let out = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    // s_client keeps the connection open after the answer (it ignores the end of its
    // input with -quiet): it is ended here.
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    let stderr = err.join().unwrap();
    let answer = (out.first() == Some(&0x0B) && out.ends_with(&[0x1C, 0x0D]))
        .then(|| out[1..out.len() - 2].to_vec());
    SClient { answer, stderr }
}

/// An MLLP request through `openssl s_client` with the engine's client certificate, over
/// TLS 1.2 and over TLS 1.3, to a listener requiring one: answered, MSA-2 its MSH-10.
#[test]
fn openssl_s_client_with_a_client_certificate_is_answered_on_tls_1_2_and_1_3() {
    let system = System::start("interop-openssl");
    certificates(&system.dir);
    let mut daemon = Daemon::start(&system, REQUIRE_CERT);
    for version in ["-tls1_2", "-tls1_3"] {
        let req = echo_request("NTE|||openssl\r");
        let started = Instant::now();
        let out = s_client(
            &system.dir,
            daemon.mllp,
            &[version, "-cert", "engine.pem", "-key", "engine-key.pem"],
            &req,
        );
        let answer = out
            .answer
            .unwrap_or_else(|| panic!("{version}: no answer: {}", out.stderr));
        assert_eq!(get(&answer, "MSA-1"), "AA", "{version}");
        assert_eq!(get(&answer, "MSA-2"), get(&req, "MSH-10"), "{version}");
        assert!(answer.ends_with(b"NTE|||openssl\r"), "{version}");
        assert!(started.elapsed() < Duration::from_secs(15));
    }
    daemon.stop(&system);
}

/// What rustls sends a client that gives no certificate where one is required: the alert
/// `certificate_required` (116), defined by TLS 1.3 (RFC 8446), on TLS 1.2 too, where a
/// TLS 1.2 stack expects `handshake_failure` (40). Pinned so that a rustls upgrade that
/// changes it is noticed (and the README's TLS MLLP section updated).
#[test]
fn without_a_client_certificate_openssl_sees_certificate_required_on_tls_1_2_and_1_3() {
    let system = System::start("interop-openssl-nocert");
    certificates(&system.dir);
    let mut daemon = Daemon::start(&system, REQUIRE_CERT);
    for version in ["-tls1_2", "-tls1_3"] {
        let out = s_client(
            &system.dir,
            daemon.mllp,
            &[version],
            &echo_request("NTE|||no cert\r"),
        );
        assert!(
            out.answer.is_none(),
            "{version}: served without a certificate"
        );
        assert!(
            out.stderr.contains("alert certificate required")
                && out.stderr.contains("SSL alert number 116"),
            "{version}: {}",
            out.stderr
        );
    }
    daemon.stop(&system);
}

/// `tls13_only = true`: a TLS 1.2 client is refused in the handshake with the alert
/// `protocol_version` (70), a TLS 1.3 one served; without the option TLS 1.2 is served
/// (the other test).
#[test]
fn tls13_only_refuses_a_tls_1_2_client_with_protocol_version() {
    let system = System::start("interop-openssl-tls13");
    certificates(&system.dir);
    let mut daemon = Daemon::start(&system, &format!("{REQUIRE_CERT}tls13_only = true\n"));
    let cert = ["-cert", "engine.pem", "-key", "engine-key.pem"];
    let out = s_client(
        &system.dir,
        daemon.mllp,
        &[&["-tls1_2"][..], &cert].concat(),
        &echo_request("NTE|||1.2\r"),
    );
    assert!(out.answer.is_none(), "TLS 1.2 served: {}", out.stderr);
    assert!(
        out.stderr.contains("alert protocol version") && out.stderr.contains("SSL alert number 70"),
        "{}",
        out.stderr
    );
    let req = echo_request("NTE|||1.3\r");
    let out = s_client(
        &system.dir,
        daemon.mllp,
        &[&["-tls1_3"][..], &cert].concat(),
        &req,
    );
    let answer = out.answer.unwrap_or_else(|| panic!("{}", out.stderr));
    assert_eq!(get(&answer, "MSA-2"), get(&req, "MSH-10"));
    daemon.stop(&system);
}
