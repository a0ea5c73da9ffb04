//! The client daemon (`hnsecure client`) end to end: an HL7Xfer originator written here
//! from the protocol description (DESIGN 3.3; not the library's codec), MLLP engines
//! with and without TLS, HNAPI in legacy mode, the allow-list — all against a sandbox
//! gateway over real TLS on loopback.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{FACILITY, System, get, request};
use hnapi::client::daemon::Relay;
use hnapi::client::{Client, ClientConfig};
use hnapi::hl7::{Message, NetworkCode};

// ---------------------------------------------------------------------------------------
// An HL7Xfer originator, from DESIGN 3.3
// ---------------------------------------------------------------------------------------

/// `b[0] ^= seed; b[i] ^= b[i-1]` with the already-scrambled previous byte.
fn scramble(block: &mut [u8], seed: u8) {
    let mut previous = seed;
    for b in block {
        *b ^= previous;
        previous = *b;
    }
}

fn unscramble(block: &mut [u8], seed: u8) {
    let mut previous = seed;
    for b in block {
        let scrambled = *b;
        *b ^= previous;
        previous = scrambled;
    }
}

fn scrambled(block: &[u8], seed: u8) -> Vec<u8> {
    let mut b = block.to_vec();
    scramble(&mut b, seed);
    b
}

/// How the originator misbehaves, if at all.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    WrongEcho,
    /// A length with a letter in it.
    BadLength,
    /// Announces this many bytes.
    Announce(u64),
    /// Sends the handshake and station id, then nothing.
    Stall,
}

/// One HL7Xfer connection as an originator.
struct Originator {
    stream: TcpStream,
    challenge: [u8; 8],
}

impl Originator {
    fn connect(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut greeting = [0u8; 20];
        stream.read_exact(&mut greeting).unwrap();
        assert_eq!(
            &greeting[..12],
            b"HS0000000008",
            "the listener speaks first"
        );
        let mut challenge = [0u8; 8];
        challenge.copy_from_slice(&greeting[12..]);
        Self { stream, challenge }
    }

    /// The connection's seed: the last byte of the scrambled challenge.
    fn seed(&self) -> u8 {
        scrambled(&self.challenge, 0)[7]
    }

    /// Everything the originator sends for `message`, as separate blocks.
    fn blocks(&self, message: &[u8], fault: Fault) -> Vec<Vec<u8>> {
        let mut echo = scrambled(&self.challenge, 0);
        if fault == Fault::WrongEcho {
            echo[3] ^= 0x55;
        }
        let k = self.seed();
        let mut station = format!("A{:<16}{:<15}", "TESTHOST", "127.0.0.1").into_bytes();
        station.truncate(32);
        let length = match fault {
            Fault::BadLength => "DT00000001x0".to_owned(),
            Fault::Announce(n) => format!("DT{n:010}"),
            _ => format!("DT{:010}", message.len()),
        };
        let mut blocks = vec![
            [&b"HS0000000008"[..], &echo].concat(),
            scrambled(b"SI0000000032", k),
            scrambled(&station, k),
        ];
        if fault != Fault::Stall {
            blocks.push(scrambled(length.as_bytes(), k));
            blocks.push(scrambled(message, k));
        }
        blocks
    }

    /// Sends `message` (whole blocks, or one byte per write) and returns the decoded
    /// response: `DT` + 10-digit length, then the body, each unscrambled on its own.
    fn exchange(mut self, message: &[u8], fault: Fault, byte_by_byte: bool) -> Vec<u8> {
        for block in self.blocks(message, fault) {
            if byte_by_byte {
                for b in block {
                    self.stream.write_all(&[b]).unwrap();
                }
            } else {
                self.stream.write_all(&block).unwrap();
            }
        }
        let mut all = Vec::new();
        self.stream.read_to_end(&mut all).unwrap();
        assert!(all.len() >= 12, "a response, not {} bytes", all.len());
        let (header, body) = all.split_at_mut(12);
        // Each block scrambled on its own, with the seed a correct originator holds.
        let k = self.seed();
        unscramble(header, k);
        unscramble(body, k);
        assert_eq!(&header[..2], b"DT", "{:?}", String::from_utf8_lossy(header));
        let length: usize = std::str::from_utf8(&header[2..]).unwrap().parse().unwrap();
        assert_eq!(length, body.len(), "the length announces the body");
        body.to_vec()
    }
}

fn originate(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    Originator::connect(addr).exchange(message, Fault::None, false)
}

// ---------------------------------------------------------------------------------------
// MLLP
// ---------------------------------------------------------------------------------------

fn mllp_frame(message: &[u8]) -> Vec<u8> {
    [&[0x0B][..], message, &[0x1C, 0x0D]].concat()
}

/// Reads one MLLP frame's message from `stream`.
fn mllp_read(stream: &mut impl Read) -> Vec<u8> {
    let mut all = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = stream.read(&mut byte).unwrap();
        assert_eq!(
            n,
            1,
            "the frame ended early: {:?}",
            String::from_utf8_lossy(&all)
        );
        all.push(byte[0]);
        if all.ends_with(&[0x1C, 0x0D]) {
            break;
        }
    }
    assert_eq!(all[0], 0x0B);
    all[1..all.len() - 2].to_vec()
}

// ---------------------------------------------------------------------------------------
// The daemon, in process
// ---------------------------------------------------------------------------------------

struct Daemon {
    hl7xfer: SocketAddr,
    mllp: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Daemon {
    /// A daemon for the system's facility, with `extra` client.toml lines (before
    /// `[listen]`) and `listen` lines.
    fn start(system: &System, extra: &str, listen: &str) -> Self {
        let text = format!(
            "facility = \"{FACILITY}\"\ncredential = \"credential.toml\"\ngateways = [\"{}\"]\n{extra}\n\
             [listen]\nhl7xfer = \"127.0.0.1:0\"\nmllp = \"127.0.0.1:0\"\n{listen}\n",
            system.addr()
        );
        Self::start_toml(system, &text)
    }

    fn start_toml(system: &System, text: &str) -> Self {
        let config = ClientConfig::from_toml(text, &system.dir).unwrap();
        let relay = system.runtime.block_on(Relay::bind(config)).unwrap();
        let ready = relay.ready_line();
        let hl7xfer = relay.hl7xfer_addr().unwrap();
        let mllp = relay.mllp_addr().unwrap();
        assert_eq!(ready, format!("ready hl7xfer={hl7xfer} mllp={mllp}"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = system.runtime.spawn(relay.run(async {
            let _ = stopped.await;
        }));
        Self {
            hl7xfer,
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

/// The ACK at `bytes` is from `HNCLIENT` for the system's facility, AR with `code`.
fn assert_hnclient_ar(bytes: &[u8], code: NetworkCode) {
    assert_ar(bytes, "HNCLIENT", code);
    assert_eq!(get(bytes, "MSH-4"), FACILITY);
}

/// The ACK at `bytes` is an AR from `component` with `code`.
fn assert_ar(bytes: &[u8], component: &str, code: NetworkCode) {
    let text = String::from_utf8_lossy(bytes);
    assert_eq!(get(bytes, "MSH-3"), component, "{text}");
    assert_eq!(get(bytes, "MSA-1"), "AR", "{text}");
    assert!(
        get(bytes, "MSA-3").starts_with(code.code()),
        "{} expected: {text}",
        code.code()
    );
}

fn echo_request(body: &str) -> Vec<u8> {
    request("HNSIM-ECHO", "R03", body)
}

// ---------------------------------------------------------------------------------------
// HL7Xfer
// ---------------------------------------------------------------------------------------

#[test]
fn hl7xfer_exact_exchange_whole_and_byte_by_byte() {
    let system = System::start("relay-xfer");
    let mut daemon = Daemon::start(&system, "", "");
    let one = Originator::connect(daemon.hl7xfer);
    let two = Originator::connect(daemon.hl7xfer);
    assert_ne!(
        one.challenge, two.challenge,
        "a fresh random challenge each time"
    );
    for (originator, byte_by_byte) in [(one, false), (two, true)] {
        let req = common::example("v5_2_5_5_request");
        let answer = originator.exchange(&req, Fault::None, byte_by_byte);
        assert_eq!(
            get(&answer, "MSA-1"),
            "AA",
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(get(&answer, "MSA-2"), get(&req, "MSH-10"));
        assert_eq!(
            get(&answer, "MSH-3"),
            get(&req, "MSH-5"),
            "the receiver's own answer"
        );
    }
    // The receiver's bytes unchanged: HNSIM-ECHO returns the request's segments.
    let req = echo_request("NTE|||Plain text\\T\\ with escapes ~ and & \r");
    let answer = originate(daemon.hl7xfer, &req);
    assert!(answer.ends_with(b"NTE|||Plain text\\T\\ with escapes ~ and & \r"));
    daemon.stop(&system);
}

#[test]
fn hl7xfer_failures_are_answered_and_the_daemon_keeps_serving() {
    let system = System::start("relay-xfer-bad");
    let mut daemon = Daemon::start(
        &system,
        "",
        "read_timeout_secs = 1\nmax_message_bytes = 4096",
    );
    let req = echo_request("PID||9029274643^^^BC^PH\r");
    let cases = [
        (Fault::WrongEcho, NetworkCode::Xfer001E),
        (Fault::BadLength, NetworkCode::Xfer002E),
        (Fault::Announce(5000), NetworkCode::Xfer003E),
        (Fault::Stall, NetworkCode::Txfr039E),
    ];
    for (fault, code) in cases {
        let started = Instant::now();
        let answer = Originator::connect(daemon.hl7xfer).exchange(&req, fault, false);
        assert_hnclient_ar(&answer, code);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // A length above the maximum names both numbers.
    let answer = Originator::connect(daemon.hl7xfer).exchange(&req, Fault::Announce(5000), true);
    assert!(
        get(&answer, "MSA-3").contains("5000 > 4096"),
        "{}",
        get(&answer, "MSA-3")
    );
    // A peer that stops after the HS header, one byte at a time (a slow peer).
    let mut slow = Originator::connect(daemon.hl7xfer);
    for b in b"HS0000" {
        slow.stream.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut rest = Vec::new();
    slow.stream.read_to_end(&mut rest).unwrap();
    let (header, body) = rest.split_at_mut(12);
    let k = slow.seed();
    unscramble(header, k);
    unscramble(body, k);
    assert_hnclient_ar(body, NetworkCode::Txfr039E);
    // Not HL7 at all: the VLDT/HNPS codes of DESIGN 3.1, from HNCLIENT.
    let answer = originate(daemon.hl7xfer, b"PID||9029274643^^^BC^PH\r");
    assert_hnclient_ar(&answer, NetworkCode::Vldt007E);
    let answer = originate(daemon.hl7xfer, b"");
    assert_hnclient_ar(&answer, NetworkCode::Vldt004E);
    // And it still serves.
    let answer = originate(daemon.hl7xfer, &req);
    assert_eq!(get(&answer, "MSA-1"), "AA");
    daemon.stop(&system);
}

#[test]
fn timeouts_and_unreachable_gateways_are_answered() {
    let system = System::start("relay-timeout");
    // The receiver never answers: the gateway's AR comes back, unchanged.
    let mut daemon = Daemon::start(&system, "timeout_secs = 3", "");
    let req = request("HNSIM-NORESPONSE", "R03", "PID||9029274643^^^BC^PH\r");
    let started = Instant::now();
    let answer = originate(daemon.hl7xfer, &req);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_ar(&answer, "HNGATE", NetworkCode::Txfr024E);
    assert_eq!(get(&answer, "MSA-2"), get(&req, "MSH-10"));
    daemon.stop(&system);

    let daemon_for = |gateway: SocketAddr| {
        Daemon::start_toml(
            &system,
            &format!(
                "facility = \"{FACILITY}\"\ncredential = \"credential.toml\"\ngateways = [\"{gateway}\"]\n\
                 timeout_secs = 3\nconnect_timeout_secs = 10\n\
                 [listen]\nhl7xfer = \"127.0.0.1:0\"\nmllp = \"127.0.0.1:0\"\n"
            ),
        )
    };
    // A gateway that accepts and never speaks: the daemon's own TXFR024E, one second
    // inside the configured timeout so that an application waiting that long hears it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut daemon = daemon_for(silent.local_addr().unwrap());
    let req = echo_request("");
    let started = Instant::now();
    let answer = originate(daemon.hl7xfer, &req);
    let took = started.elapsed();
    assert_hnclient_ar(&answer, NetworkCode::Txfr024E);
    assert_eq!(get(&answer, "MSA-2"), get(&req, "MSH-10"));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    daemon.stop(&system);
    drop(silent);

    // No gateway at all, through both listeners.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = closed.local_addr().unwrap();
    drop(closed);
    let mut daemon = daemon_for(nobody);
    let answer = originate(daemon.hl7xfer, &req);
    assert_hnclient_ar(&answer, NetworkCode::Txfr024E);
    let mut mllp = TcpStream::connect(daemon.mllp).unwrap();
    mllp.write_all(&mllp_frame(&req)).unwrap();
    assert_hnclient_ar(&mllp_read(&mut mllp), NetworkCode::Txfr024E);
    daemon.stop(&system);
}

#[test]
fn two_hundred_concurrent_legacy_connections() {
    let system = System::start("relay-200");
    let mut daemon = Daemon::start(&system, "", "");
    let addr = daemon.hl7xfer;
    let barrier = Arc::new(std::sync::Barrier::new(200));
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let originator = Originator::connect(addr);
                // All 200 connected at once before any sends.
                barrier.wait();
                let req = echo_request(&format!("NTE|||thread {i}\r"));
                let answer = originator.exchange(&req, Fault::None, false);
                assert_eq!(get(&answer, "MSA-1"), "AA");
                assert_eq!(get(&answer, "MSA-2"), get(&req, "MSH-10"));
                assert!(answer.ends_with(format!("NTE|||thread {i}\r").as_bytes()));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    daemon.stop(&system);
}

// ---------------------------------------------------------------------------------------
// MLLP
// ---------------------------------------------------------------------------------------

#[test]
fn twenty_mllp_connections_of_a_hundred_messages() {
    let system = System::start("relay-mllp");
    let mut daemon = Daemon::start(&system, "", "");
    let addr = daemon.mllp;
    let threads: Vec<_> = (0..20)
        .map(|c| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_nodelay(true).unwrap();
                for m in 0..100 {
                    let req = echo_request(&format!("NTE|||connection {c} message {m}\r"));
                    stream.write_all(&mllp_frame(&req)).unwrap();
                    let answer = mllp_read(&mut stream);
                    assert_eq!(get(&answer, "MSA-2"), get(&req, "MSH-10"));
                    assert!(
                        answer.ends_with(format!("NTE|||connection {c} message {m}\r").as_bytes())
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Pipelined: three frames in one write, answered in order.
    let mut stream = TcpStream::connect(addr).unwrap();
    let requests: Vec<_> = (0..3)
        .map(|i| echo_request(&format!("NTE|||{i}\r")))
        .collect();
    let all: Vec<u8> = requests.iter().flat_map(|r| mllp_frame(r)).collect();
    stream.write_all(&all).unwrap();
    for req in &requests {
        assert_eq!(get(&mllp_read(&mut stream), "MSA-2"), get(req, "MSH-10"));
    }
    daemon.stop(&system);
}

#[test]
fn mllp_passes_iso_8859_1_and_utf8_bytes_unchanged() {
    let system = System::start("relay-charset");
    let mut daemon = Daemon::start(&system, "", "");
    let latin1 = b"NTE|||Caf\xe9 cr\xe8me, \xc5sa\r".to_vec();
    let utf8 = "NTE|||Café crème, Åsa, 東京\r".as_bytes().to_vec();
    for (charset, body) in [("8859/1", latin1), ("UNICODE UTF-8", utf8)] {
        let head = String::from_utf8(echo_request("")).unwrap();
        let head = head.trim_end_matches('\r').to_owned() + &format!("||||||{charset}\r");
        let req = [head.as_bytes(), &body].concat();
        assert_eq!(get(&req, "MSH-18"), charset);
        let mut stream = TcpStream::connect(daemon.mllp).unwrap();
        stream.write_all(&mllp_frame(&req)).unwrap();
        let answer = mllp_read(&mut stream);
        assert!(
            answer.ends_with(&body),
            "{charset}: {:?}",
            String::from_utf8_lossy(&answer)
        );
        // Through HL7Xfer too.
        let answer = originate(daemon.hl7xfer, &req);
        assert!(answer.ends_with(&body), "{charset}");
    }
    // The daemon's own ACK keeps the request's character set.
    let head = String::from_utf8(request("HNSIM-NORESPONSE", "R03", "")).unwrap();
    let req = head.trim_end_matches('\r').to_owned() + "||||||8859/1\rNTE|||\u{e9}\r";
    let text = format!(
        "facility = \"{FACILITY}\"\ncredential = \"credential.toml\"\ngateways = [\"{}\"]\ntimeout_secs = 2\n\
         [listen]\nmllp = \"127.0.0.1:0\"\nhl7xfer = \"127.0.0.1:0\"\n",
        system.addr()
    );
    let mut short = Daemon::start_toml(&system, &text);
    let mut stream = TcpStream::connect(short.mllp).unwrap();
    stream.write_all(&mllp_frame(req.as_bytes())).unwrap();
    let answer = mllp_read(&mut stream);
    assert_ar(&answer, "HNGATE", NetworkCode::Txfr024E);
    assert_eq!(get(&answer, "MSH-18"), "8859/1");
    short.stop(&system);
    daemon.stop(&system);
}

#[test]
fn mllp_framing_errors_are_answered_then_closed() {
    let system = System::start("relay-mllp-bad");
    let mut daemon = Daemon::start(
        &system,
        "",
        "read_timeout_secs = 1\nmax_message_bytes = 2048",
    );
    let close_after = |stream: &mut TcpStream| {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "closed after the AR");
    };
    // Bytes outside a frame.
    let mut s = TcpStream::connect(daemon.mllp).unwrap();
    s.write_all(b"MSH|^~\\&|no frame\r").unwrap();
    assert_hnclient_ar(&mllp_read(&mut s), NetworkCode::Xfer004E);
    close_after(&mut s);
    // A frame above the maximum.
    let mut s = TcpStream::connect(daemon.mllp).unwrap();
    let big = echo_request(&format!("NTE|||{}\r", "x".repeat(3000)));
    s.write_all(&mllp_frame(&big)).unwrap();
    assert_hnclient_ar(&mllp_read(&mut s), NetworkCode::Xfer003E);
    // A frame begun and never finished: stalled.
    let mut s = TcpStream::connect(daemon.mllp).unwrap();
    let started = Instant::now();
    s.write_all(&[0x0B]).unwrap();
    s.write_all(b"MSH|^~\\&|A|B").unwrap();
    assert_hnclient_ar(&mllp_read(&mut s), NetworkCode::Txfr039E);
    assert!(started.elapsed() < Duration::from_secs(4));
    close_after(&mut s);
    // An idle engine between messages is left alone past the read timeout.
    let mut s = TcpStream::connect(daemon.mllp).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let req = echo_request("");
    s.write_all(&mllp_frame(&req)).unwrap();
    assert_eq!(get(&mllp_read(&mut s), "MSA-1"), "AA");
    // Not HL7 inside a good frame: answered, and the connection stays.
    s.write_all(&mllp_frame(b"hello")).unwrap();
    assert_hnclient_ar(&mllp_read(&mut s), NetworkCode::Vldt007E);
    s.write_all(&mllp_frame(&req)).unwrap();
    assert_eq!(get(&mllp_read(&mut s), "MSA-1"), "AA");
    daemon.stop(&system);
}

/// A CA, a server certificate for 127.0.0.1 and an engine's client certificate, as PEM
/// files in `dir`; returns the CA for the engine's trust.
fn mllp_certificates(dir: &Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf = |names: Vec<String>, stem: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}-key.pem")), key.serialize_pem()).unwrap();
    };
    leaf(vec!["127.0.0.1".into()], "mllp");
    leaf(vec!["engine.example".into()], "engine");
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    ca.pem()
}

#[test]
fn mllp_over_tls_with_client_certificates() {
    use hnapi::transport::tls;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let system = System::start("relay-mllps");
    mllp_certificates(&system.dir);
    let mut daemon = Daemon::start(
        &system,
        "",
        "[listen.mllp_tls]\ncertificate = \"mllp.pem\"\nprivate_key = \"mllp-key.pem\"\n\
         client_ca = \"ca.pem\"\nrequire_client_cert = true",
    );
    let read = |name: &str| std::fs::read(system.dir.join(name)).unwrap();
    let ca = tls::certificates_from_pem(&read("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca[0].clone()).unwrap();
    let engine = |with_cert: bool| {
        let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone());
        let config = if with_cert {
            builder
                .with_client_auth_cert(
                    tls::certificates_from_pem(&read("engine.pem")).unwrap(),
                    tls::private_key_from_pem(&read("engine-key.pem")).unwrap(),
                )
                .unwrap()
        } else {
            builder.with_no_client_auth()
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    };
    let addr = daemon.mllp;
    let req = echo_request("NTE|||over TLS\r");
    let answer = system.runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = tls::server_name("127.0.0.1:0").unwrap();
        let mut s = engine(true).connect(name, tcp).await.unwrap();
        s.write_all(&mllp_frame(&req)).await.unwrap();
        let mut buf = Vec::new();
        while !buf.ends_with(&[0x1C, 0x0D]) {
            let mut piece = [0u8; 4096];
            let n = s.read(&mut piece).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&piece[..n]);
        }
        buf
    });
    let answer = &answer[1..answer.len() - 2];
    assert_eq!(get(answer, "MSA-2"), get(&req, "MSH-10"));
    assert!(answer.ends_with(b"NTE|||over TLS\r"));
    // Without a client certificate: refused.
    let refused = system.runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = tls::server_name("127.0.0.1:0").unwrap();
        let mut s = match engine(false).connect(name, tcp).await {
            Ok(s) => s,
            Err(_) => return true,
        };
        // TLS 1.3: the refusal arrives after the client's side of the handshake.
        let _ = s.write_all(&mllp_frame(&req)).await;
        let mut piece = [0u8; 64];
        !matches!(s.read(&mut piece).await, Ok(n) if n > 0)
    });
    assert!(
        refused,
        "an engine without a certificate must not be served"
    );
    // Plain MLLP to a TLS listener gets nothing.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain.write_all(&mllp_frame(&req)).unwrap();
    let mut buf = [0u8; 64];
    assert!(!matches!(plain.read(&mut buf), Ok(n) if n > 0 && buf[0] == 0x0B));
    daemon.stop(&system);
}

// ---------------------------------------------------------------------------------------
// The allow-list
// ---------------------------------------------------------------------------------------

#[test]
fn other_hosts_only_when_listed() {
    let system = System::start("relay-allow");
    let allow = system.dir.join("allow.txt");
    std::fs::write(&allow, "# other hosts allowed to connect\n").unwrap();
    let mut daemon = Daemon::start(&system, "", "allow_list = \"allow.txt\"");
    // From 127.0.0.2: the connection is closed without a word.
    let from_2 = |addr: SocketAddr| -> Vec<u8> {
        system.runtime.block_on(async {
            use tokio::io::AsyncReadExt;
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut s = socket.connect(addr).await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while got.len() < 20 {
                match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            got
        })
    };
    assert!(
        from_2(daemon.hl7xfer).is_empty(),
        "127.0.0.2 is not 127.0.0.1"
    );
    // 127.0.0.1 always.
    assert_eq!(
        get(&originate(daemon.hl7xfer, &echo_request("")), "MSA-1"),
        "AA"
    );
    std::fs::write(&allow, "# other hosts allowed to connect\n127.0.0.2\n").unwrap();
    let greeting = from_2(daemon.hl7xfer);
    assert!(
        greeting.starts_with(b"HS0000000008"),
        "listed now: {greeting:?}"
    );
    std::fs::write(&allow, "10.0.0.0/8\n").unwrap();
    assert!(from_2(daemon.hl7xfer).is_empty(), "removed again");
    daemon.stop(&system);
}

// ---------------------------------------------------------------------------------------
// HNAPI in legacy mode
// ---------------------------------------------------------------------------------------

#[test]
fn library_in_legacy_mode_through_the_daemon_to_the_gateway() {
    let system = System::start("relay-legacy");
    let mut daemon = Daemon::start(&system, "timeout_secs = 3", "");
    let config = ClientConfig::from_toml(
        &format!(
            "facility = \"{FACILITY}\"\ntransport = \"hl7xfer\"\nhnclient = \"{}\"\n",
            daemon.hl7xfer
        ),
        &system.dir,
    )
    .unwrap();
    let client = Client::open(config).unwrap();
    let req = common::example("v5_2_5_4_request");
    let answer = client.send_receive(&req, None).unwrap();
    assert_eq!(answer.network_error, None);
    assert_eq!(get(&answer.bytes, "MSA-1"), "AA");
    assert_eq!(get(&answer.bytes, "MSA-2"), get(&req, "MSH-10"));
    // Many at once, each its own connection.
    let tickets: Vec<_> = (0..50)
        .map(|i| {
            let req = echo_request(&format!("NTE|||{i}\r"));
            (client.send(&req, None).unwrap(), req)
        })
        .collect();
    for (ticket, req) in tickets {
        let answer = client
            .receive(ticket, Duration::from_secs(30))
            .unwrap()
            .unwrap();
        assert_eq!(get(&answer.bytes, "MSA-2"), get(&req, "MSH-10"));
    }
    // The daemon's TXFR024E reaches the application as the daemon made it.
    let config = ClientConfig::from_toml(
        &format!(
            "facility = \"{FACILITY}\"\ntransport = \"hl7xfer\"\nhnclient = \"{}\"\ntimeout_secs = 3\n",
            daemon.hl7xfer
        ),
        &system.dir,
    )
    .unwrap();
    drop(client);
    let client = Client::open(config).unwrap();
    let req = request("HNSIM-NORESPONSE", "R03", "");
    let answer = client.send_receive(&req, None).unwrap();
    assert_ar(&answer.bytes, "HNGATE", NetworkCode::Txfr024E);
    assert_eq!(
        answer.network_error, None,
        "the gateway's answer, passed on"
    );
    daemon.stop(&system);
}

/// Field by field, everything but MSH-7 (the time).
fn assert_same_ack(ours: &[u8], expected: &[u8]) {
    let (a, b) = (
        Message::parse(ours).unwrap(),
        Message::parse(expected).unwrap(),
    );
    for path in [
        "MSH-1", "MSH-2", "MSH-3", "MSH-4", "MSH-5", "MSH-6", "MSH-8", "MSH-9", "MSH-10", "MSH-11",
        "MSH-12", "MSA-1", "MSA-2", "MSA-3",
    ] {
        let p = path.parse().unwrap();
        assert_eq!(a.value(&p), b.value(&p), "{path}");
    }
    assert_eq!(a.segment_count(), 2);
}

#[test]
fn legacy_mode_without_an_hnclient_answers_recv022e_as_2_5_1() {
    let data = |name: &str| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data")
                .join(name),
        )
        .unwrap()
    };
    let request = data("v5_2_5_1_request.hl7");
    let expected = data("v5_2_5_1_response.hl7");
    // Nobody listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = closed.local_addr().unwrap();
    drop(closed);
    // Somebody who accepts and never speaks.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let dir = common::temp_dir("relay-recv022e");
    for (addr, wait) in [
        (nobody, Duration::ZERO),
        (silent_addr, Duration::from_secs(1)),
    ] {
        let config = ClientConfig::from_toml(
            &format!("facility = \"BC00000098\"\ntransport = \"hl7xfer\"\nhnclient = \"{addr}\"\n"),
            &dir,
        )
        .unwrap();
        let client = Client::open(config).unwrap();
        let started = Instant::now();
        let answer = client
            .send_receive(&request, Some(Duration::from_secs(1)))
            .unwrap();
        assert!(started.elapsed() >= wait && started.elapsed() < Duration::from_secs(2));
        assert_eq!(answer.network_error, Some(NetworkCode::Recv022E));
        assert_same_ack(&answer.bytes, &expected);
    }
    drop(silent);
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------

#[test]
fn the_binary_prints_ready_and_finishes_transactions_on_sigterm() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let system = System::start("relay-bin");
    let config = system.dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "facility = \"{FACILITY}\"\ncredential = \"credential.toml\"\ngateways = [\"{}\"]\ntimeout_secs = 3\n\
             [listen]\nhl7xfer = \"127.0.0.1:0\"\n",
            system.addr()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hnsecure"))
        .args(["client", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .strip_prefix("ready hl7xfer=")
        .and_then(|rest| rest.trim_end().strip_suffix(" mllp=off"))
        .unwrap_or_else(|| panic!("ready line: {line:?}"))
        .parse()
        .unwrap();
    // A transaction that takes the daemon's whole timeout, then SIGTERM in its middle.
    let req = request("HNSIM-NORESPONSE", "R03", "PID||9029274643^^^BC^PH\r");
    let pending = {
        let req = req.clone();
        std::thread::spawn(move || originate(addr, &req))
    };
    std::thread::sleep(Duration::from_millis(500));
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let answer = pending.join().unwrap();
    assert_ar(&answer, "HNGATE", NetworkCode::Txfr024E);
    assert_eq!(get(&answer, "MSA-2"), get(&req, "MSH-10"));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("control_id=") && log.contains("TXFR024E"),
        "{log}"
    );
    assert!(!log.contains("9029274643"), "no PHI in the log: {log}");
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
}

#[test]
fn the_binary_refuses_a_bad_configuration_clearly() {
    let dir = common::temp_dir("relay-badconfig");
    let config = dir.join("client.toml");
    std::fs::write(
        &config,
        "facility = \"F\"\ncredential = \"missing.toml\"\ngateways = [\"127.0.0.1:1\"]\n[listen]\nmllp = \"127.0.0.1:0\"\nallow_list = \"nope.txt\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hnsecure"))
        .args(["client", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.txt"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
