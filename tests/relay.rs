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
        captured::install();
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

/// A CA, a server certificate for 127.0.0.1 and engines' client certificates, as PEM
/// files in `dir`: `engine` (DNS name engine.example), `lab1` (CN=lab-1) and `other`
/// (CN=other-lab, DNS name other.example). Returns the CA for the engines' trust.
fn mllp_certificates(dir: &Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf = |names: Vec<String>, cn: Option<&str>, stem: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        if let Some(cn) = cn {
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}-key.pem")), key.serialize_pem()).unwrap();
    };
    leaf(vec!["127.0.0.1".into()], None, "mllp");
    leaf(vec!["engine.example".into()], None, "engine");
    leaf(Vec::new(), Some("lab-1"), "lab1");
    leaf(vec!["other.example".into()], Some("other-lab"), "other");
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

/// The daemon's log, caught in process: every test's daemon logs here, so a test looks
/// for lines with something of its own (its folder, its peer's port, its names).
mod captured {
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= log::Level::Info && metadata.target().starts_with("hnapi")
        }

        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                let line = format!("{} {}", record.level(), record.args());
                LINES.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        }

        fn flush(&self) {}
    }

    pub fn install() {
        static ONCE: OnceLock<()> = OnceLock::new();
        ONCE.get_or_init(|| {
            log::set_logger(&Capture).unwrap();
            log::set_max_level(log::LevelFilter::Info);
        });
    }

    /// The lines so far that contain every one of `needles`.
    pub fn lines(needles: &[&str]) -> Vec<String> {
        LINES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .cloned()
            .collect()
    }

    /// The first line with every one of `needles`, waiting up to `within` for it.
    pub fn wait_for(needles: &[&str], within: Duration) -> Option<String> {
        let until = Instant::now() + within;
        loop {
            if let Some(line) = lines(needles).into_iter().next() {
                return Some(line);
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A connection to `to` from the local address `from` (127.0.0.2 and the like stand for
/// other hosts).
async fn connect_from(from: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends `message` in an MLLP frame and reads the answer; `None` when the daemon
/// closed the connection instead (or sent nothing within 10 s).
async fn mllp_ask<S>(stream: &mut S, message: &[u8]) -> Option<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(&mllp_frame(message)).await.ok()?;
    let mut all = Vec::new();
    while !all.ends_with(&[0x1C, 0x0D]) {
        let mut piece = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut piece)).await {
            Ok(Ok(n)) if n > 0 => all.extend_from_slice(&piece[..n]),
            _ => return None,
        }
    }
    assert_eq!(all[0], 0x0B);
    Some(all[1..all.len() - 2].to_vec())
}

/// True when the daemon closes `stream` within `within` (end of stream or reset),
/// false when it stays open and silent; panics on bytes.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut piece = [0u8; 64];
    match tokio::time::timeout(within, stream.read(&mut piece)).await {
        Err(_) => false,
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", &piece[..n]),
    }
}

/// The HL7Xfer greeting on a fresh connection from `from`, or less (nothing when the
/// connection is refused).
async fn hl7xfer_greeting(from: &str, to: SocketAddr) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut s = connect_from(from, to).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 20 {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    (s, got)
}

fn served(answer: Option<Vec<u8>>) -> bool {
    answer.is_some_and(|a| get(&a, "MSA-1") == "AA")
}

#[test]
fn deleting_the_allow_list_refuses_the_listed_host_and_closes_its_connections() {
    let system = System::start("relay-allow-deleted");
    let allow = system.dir.join("allow.txt");
    std::fs::write(&allow, "127.0.0.2\n").unwrap();
    let mut daemon = Daemon::start(&system, "", "allow_list = \"allow.txt\"");
    let (hl7xfer, mllp) = (daemon.hl7xfer, daemon.mllp);
    system.runtime.block_on(async {
        let mut engine = connect_from("127.0.0.2", mllp).await;
        assert!(
            served(mllp_ask(&mut engine, &echo_request("")).await),
            "listed"
        );
        let (mut legacy, greeting) = hl7xfer_greeting("127.0.0.2", hl7xfer).await;
        assert!(greeting.starts_with(b"HS0000000008"), "{greeting:?}");
        let engine_port = engine.local_addr().unwrap().port().to_string();

        std::fs::remove_file(&allow).unwrap();
        let started = Instant::now();
        assert!(
            closed_within(&mut engine, Duration::from_secs(3)).await,
            "MLLP closed"
        );
        assert!(
            closed_within(&mut legacy, Duration::from_secs(3)).await,
            "HL7Xfer closed"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        let (_, greeting) = hl7xfer_greeting("127.0.0.2", hl7xfer).await;
        assert!(greeting.is_empty(), "refused now: {greeting:?}");
        let mut again = connect_from("127.0.0.2", mllp).await;
        assert!(mllp_ask(&mut again, &echo_request("")).await.is_none());
        // Loopback still.
        let mut local = connect_from("127.0.0.1", mllp).await;
        assert!(served(mllp_ask(&mut local, &echo_request("")).await));
        let peer = format!("127.0.0.2:{engine_port}");
        assert!(
            captured::wait_for(&[&peer, "no longer allowed"], Duration::from_secs(2)).is_some(),
            "the closing is logged with the peer"
        );
    });
    let error = captured::wait_for(
        &["ERROR", &allow.display().to_string(), "cannot be read"],
        Duration::from_secs(2),
    );
    assert!(error.is_some_and(|e| e.contains("only 127.0.0.1 and ::1")));
    daemon.stop(&system);
}

#[test]
fn a_new_allow_list_with_one_bad_line_means_loopback_only() {
    let system = System::start("relay-allow-bad");
    let allow = system.dir.join("allow.txt");
    std::fs::write(&allow, "127.0.0.2\n127.0.0.3\n").unwrap();
    let mut daemon = Daemon::start(&system, "", "allow_list = \"allow.txt\"");
    let mllp = daemon.mllp;
    system.runtime.block_on(async {
        let mut open = connect_from("127.0.0.2", mllp).await;
        assert!(served(mllp_ask(&mut open, &echo_request("")).await));
        // Still names 127.0.0.2, but line 3 is wrong: the whole list is void.
        std::fs::write(&allow, "# lab\n127.0.0.2\n127.0.0.3/40\n").unwrap();
        assert!(closed_within(&mut open, Duration::from_secs(3)).await);
        for from in ["127.0.0.2", "127.0.0.3"] {
            let mut s = connect_from(from, mllp).await;
            assert!(
                mllp_ask(&mut s, &echo_request("")).await.is_none(),
                "{from}"
            );
        }
        let mut local = connect_from("127.0.0.1", mllp).await;
        assert!(served(mllp_ask(&mut local, &echo_request("")).await));
    });
    let error = captured::wait_for(
        &["ERROR", &allow.display().to_string(), "line 3"],
        Duration::from_secs(2),
    );
    assert!(error.is_some(), "the bad line is logged with its number");
    // Mended: listed again.
    std::fs::write(&allow, "127.0.0.2\n").unwrap();
    let (_, greeting) = system
        .runtime
        .block_on(hl7xfer_greeting("127.0.0.2", daemon.hl7xfer));
    assert!(greeting.starts_with(b"HS0000000008"));
    daemon.stop(&system);
}

#[test]
fn a_bad_allow_list_at_start_means_loopback_only_and_is_logged() {
    let system = System::start("relay-allow-start");
    let allow = system.dir.join("allow.txt");
    std::fs::write(&allow, "127.0.0.2\nlab-pc\n").unwrap();
    let mut daemon = Daemon::start(&system, "", "allow_list = \"allow.txt\"");
    let error = captured::lines(&["ERROR", &allow.display().to_string(), "line 2"]);
    assert_eq!(error.len(), 1, "{error:?}");
    let (_, greeting) = system
        .runtime
        .block_on(hl7xfer_greeting("127.0.0.2", daemon.hl7xfer));
    assert!(greeting.is_empty(), "{greeting:?}");
    assert_eq!(
        get(&originate(daemon.hl7xfer, &echo_request("")), "MSA-1"),
        "AA"
    );
    daemon.stop(&system);
}

#[test]
fn a_removed_hosts_open_connections_are_closed_after_the_reload() {
    let system = System::start("relay-allow-removed");
    mllp_certificates(&system.dir);
    let allow = system.dir.join("allow.txt");
    std::fs::write(&allow, "127.0.0.2\n127.0.0.3\n").unwrap();
    let mut plain = Daemon::start(&system, "", "allow_list = \"allow.txt\"");
    let mut tls = Daemon::start(
        &system,
        "",
        "allow_list = \"allow.txt\"\n[listen.mllp_tls]\ncertificate = \"mllp.pem\"\n\
         private_key = \"mllp-key.pem\"\nclient_ca = \"ca.pem\"\nrequire_client_cert = true",
    );
    let connector = tls_engine(&system.dir, "engine");
    let (plain_mllp, tls_mllp) = (plain.mllp, tls.mllp);
    system.runtime.block_on(async {
        let name = hnapi::transport::tls::server_name("127.0.0.1:0").unwrap();
        let mut removed = connect_from("127.0.0.2", plain_mllp).await;
        let mut kept = connect_from("127.0.0.3", plain_mllp).await;
        let mut removed_tls = connector
            .connect(name.clone(), connect_from("127.0.0.2", tls_mllp).await)
            .await
            .unwrap();
        let mut kept_tls = connector
            .connect(name, connect_from("127.0.0.3", tls_mllp).await)
            .await
            .unwrap();
        for s in [&mut removed, &mut kept] {
            assert!(served(mllp_ask(s, &echo_request("")).await));
        }
        for s in [&mut removed_tls, &mut kept_tls] {
            assert!(served(mllp_ask(s, &echo_request("")).await));
        }
        let removed_peer = removed.local_addr().unwrap().to_string();
        // No new connection arrives: the daemons notice the change by themselves.
        std::fs::write(&allow, "127.0.0.3\n").unwrap();
        let started = Instant::now();
        assert!(closed_within(&mut removed, Duration::from_secs(3)).await);
        assert!(closed_within(&mut removed_tls, Duration::from_secs(3)).await);
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{:?}",
            started.elapsed()
        );
        assert!(
            served(mllp_ask(&mut kept, &echo_request("")).await),
            "still listed"
        );
        assert!(served(mllp_ask(&mut kept_tls, &echo_request("")).await));
        assert!(
            captured::wait_for(
                &["WARN", &format!("mllp {removed_peer}"), "no longer allowed"],
                Duration::from_secs(2)
            )
            .is_some()
        );
    });
    plain.stop(&system);
    tls.stop(&system);
}

#[test]
fn an_allow_list_with_a_byte_order_mark_works() {
    let system = System::start("relay-allow-bom");
    let allow = system.dir.join("allow.txt");
    // As Notepad saves it: a byte-order mark, Windows line ends.
    std::fs::write(&allow, b"\xEF\xBB\xBF127.0.0.2\r\n# the lab\r\n").unwrap();
    let mut daemon = Daemon::start(&system, "", "allow_list = \"allow.txt\"");
    let (_, greeting) = system
        .runtime
        .block_on(hl7xfer_greeting("127.0.0.2", daemon.hl7xfer));
    assert!(greeting.starts_with(b"HS0000000008"), "{greeting:?}");
    let path = allow.display().to_string();
    assert!(captured::lines(&["ERROR", &path]).is_empty());
    assert_eq!(captured::lines(&[&path, "1 entries"]).len(), 1);
    daemon.stop(&system);
}

#[test]
fn allow_loopback_false_refuses_127_0_0_1_unless_listed() {
    let system = System::start("relay-no-loopback");
    let allow = system.dir.join("allow.txt");
    std::fs::write(&allow, "127.0.0.2\n").unwrap();
    let mut daemon = Daemon::start(
        &system,
        "",
        "allow_list = \"allow.txt\"\nallow_loopback = false",
    );
    let (hl7xfer, mllp) = (daemon.hl7xfer, daemon.mllp);
    system.runtime.block_on(async {
        let (_, greeting) = hl7xfer_greeting("127.0.0.1", hl7xfer).await;
        assert!(greeting.is_empty(), "{greeting:?}");
        let mut s = connect_from("127.0.0.1", mllp).await;
        assert!(mllp_ask(&mut s, &echo_request("")).await.is_none());
        let mut other = connect_from("127.0.0.2", mllp).await;
        assert!(served(mllp_ask(&mut other, &echo_request("")).await));
        std::fs::write(&allow, "127.0.0.2\n127.0.0.1\n").unwrap();
        let (_, greeting) = hl7xfer_greeting("127.0.0.1", hl7xfer).await;
        assert!(
            greeting.starts_with(b"HS0000000008"),
            "listed: {greeting:?}"
        );
        let mut s = connect_from("127.0.0.1", mllp).await;
        assert!(served(mllp_ask(&mut s, &echo_request("")).await));
    });
    assert!(!captured::lines(&["allow_loopback = false", "refused"]).is_empty());
    daemon.stop(&system);
}

// ---------------------------------------------------------------------------------------
// Idle and greedy peers
// ---------------------------------------------------------------------------------------

#[test]
fn five_silent_connections_from_one_address_do_not_lock_out_another() {
    let system = System::start("relay-per-address");
    std::fs::write(system.dir.join("allow.txt"), "127.0.0.2\n").unwrap();
    let mut daemon = Daemon::start(
        &system,
        "",
        "allow_list = \"allow.txt\"\nmax_connections = 5",
    );
    let mllp = daemon.mllp;
    system.runtime.block_on(async {
        let mut silent = Vec::new();
        for _ in 0..5 {
            silent.push(connect_from("127.0.0.1", mllp).await);
        }
        let mut open = Vec::new();
        for mut s in silent {
            if !closed_within(&mut s, Duration::from_millis(500)).await {
                open.push(s);
            }
        }
        assert_eq!(open.len(), 3, "half of max_connections, rounded up");
        let mut other = connect_from("127.0.0.2", mllp).await;
        assert!(
            served(mllp_ask(&mut other, &echo_request("")).await),
            "not locked out"
        );
        // A place given back is taken again.
        drop(open.pop());
        let mut served_again = false;
        for _ in 0..20 {
            let mut s = connect_from("127.0.0.1", mllp).await;
            if served(mllp_ask(&mut s, &echo_request("")).await) {
                served_again = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(served_again);
    });
    assert!(!captured::lines(&["refused", "max_connections_per_address"]).is_empty());
    daemon.stop(&system);
}

#[test]
fn an_idle_mllp_connection_is_closed_after_idle_timeout_secs() {
    let system = System::start("relay-idle");
    let mut daemon = Daemon::start(&system, "", "idle_timeout_secs = 2\nread_timeout_secs = 1");
    let mllp = daemon.mllp;
    system.runtime.block_on(async {
        // Messages every second keep a connection open well past the idle timeout.
        let mut busy = connect_from("127.0.0.1", mllp).await;
        for _ in 0..4 {
            assert!(served(mllp_ask(&mut busy, &echo_request("")).await));
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        // Silent after its answer: closed after about two seconds.
        let mut idle = connect_from("127.0.0.1", mllp).await;
        assert!(served(mllp_ask(&mut idle, &echo_request("")).await));
        let answered = Instant::now();
        assert!(
            !closed_within(&mut idle, Duration::from_millis(1500)).await,
            "not yet"
        );
        assert!(
            closed_within(&mut idle, Duration::from_secs(2)).await,
            "closed"
        );
        let after = answered.elapsed();
        assert!(
            after >= Duration::from_secs(2) && after < Duration::from_millis(3500),
            "{after:?}"
        );
        // Line ends between frames are not messages.
        let mut chatty = connect_from("127.0.0.1", mllp).await;
        let started = Instant::now();
        loop {
            use tokio::io::AsyncWriteExt;
            if chatty.write_all(b"\r\n").await.is_err()
                || started.elapsed() > Duration::from_secs(6)
            {
                break;
            }
            if closed_within(&mut chatty, Duration::from_millis(300)).await {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    });
    assert!(!captured::lines(&["no message for 2 s", "idle_timeout_secs"]).is_empty());
    daemon.stop(&system);
}

// ---------------------------------------------------------------------------------------
// TLS MLLP: client certificate subjects
// ---------------------------------------------------------------------------------------

/// An engine's TLS connector with the client certificate `stem`.pem from
/// [`mllp_certificates`].
fn tls_engine(dir: &Path, stem: &str) -> tokio_rustls::TlsConnector {
    use hnapi::transport::tls;
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(tls::certificates_from_pem(&read("ca.pem")).unwrap()[0].clone())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            tls::certificates_from_pem(&read(&format!("{stem}.pem"))).unwrap(),
            tls::private_key_from_pem(&read(&format!("{stem}-key.pem"))).unwrap(),
        )
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[test]
fn mllp_tls_client_subjects_must_be_listed() {
    let system = System::start("relay-subjects");
    mllp_certificates(&system.dir);
    let mut daemon = Daemon::start(
        &system,
        "",
        "[listen.mllp_tls]\ncertificate = \"mllp.pem\"\nprivate_key = \"mllp-key.pem\"\n\
         client_ca = \"ca.pem\"\nrequire_client_cert = true\n\
         allowed_subjects = [\"CN=lab-1\", \"dns:ENGINE.example\"]",
    );
    let addr = daemon.mllp;
    let ask = |stem: &str| {
        let connector = tls_engine(&system.dir, stem);
        system.runtime.block_on(async {
            let tcp = connect_from("127.0.0.1", addr).await;
            let peer = tcp.local_addr().unwrap();
            let name = hnapi::transport::tls::server_name("127.0.0.1:0").unwrap();
            let answer = match connector.connect(name, tcp).await {
                Ok(mut s) => mllp_ask(&mut s, &echo_request("NTE|||subjects\r")).await,
                Err(_) => None,
            };
            (peer, answer)
        })
    };
    let (peer, answer) = ask("lab1");
    assert!(served(answer), "CN=lab-1 is listed");
    let line = captured::wait_for(
        &[&format!("mllp {peer}:"), "TLS established"],
        Duration::from_secs(2),
    );
    assert!(line.is_some_and(|l| l.contains("client certificate CN=lab-1")));
    let (_, answer) = ask("engine");
    assert!(served(answer), "dns:engine.example, case aside");
    let (peer, answer) = ask("other");
    assert!(answer.is_none(), "CN=other-lab is not listed");
    let line = captured::wait_for(&[&format!("mllp {peer}:")], Duration::from_secs(2)).unwrap();
    assert!(
        line.starts_with("WARN")
            && line.contains("CN=other-lab, dns:other.example")
            && line.contains("allowed_subjects"),
        "{line}"
    );
    assert!(captured::lines(&[&format!("mllp {peer}:"), "TLS established"]).is_empty());
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
    // A missing allow-list does not stop the daemon (it means loopback only, and is
    // logged); the missing credential does, and the error names it.
    assert!(
        err.contains("nope.txt") && err.contains("cannot be read"),
        "{err}"
    );
    assert!(err.contains("missing.toml"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// HNClient V2's point-of-service sender writes a length before the message
/// (`00000352MSH|…`), and HNClient V2's listener dropped everything before `MSH`: so does
/// this one, logging how many bytes, never what they were.
#[test]
fn hl7xfer_drops_bytes_before_the_first_msh_as_hnclient_v2_did() {
    let system = System::start("relay-xfer-prefix");
    let mut daemon = Daemon::start(&system, "", "");
    let req = echo_request("NTE|||after a length prefix\r");
    let prefixed = [format!("{:08}", req.len()).as_bytes(), &req].concat();
    let answer = originate(daemon.hl7xfer, &prefixed);
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(get(&answer, "MSA-1"), "AA", "{text}");
    assert_eq!(get(&answer, "MSA-2"), get(&req, "MSH-10"), "{text}");
    // The receiver got the message from its MSH on: the echo ends with its segments.
    assert!(answer.ends_with(b"NTE|||after a length prefix\r"), "{text}");
    let line = captured::wait_for(
        &[
            "hl7xfer 127.0.0.1:",
            "8 byte(s) before the first MSH dropped",
        ],
        Duration::from_secs(5),
    )
    .expect("a warning in the log");
    assert!(line.starts_with("WARN "), "{line}");
    assert!(!line.contains(&format!("{:08}", req.len())), "{line}");
    daemon.stop(&system);
}

/// A sender silent in the middle of a message is answered `read_timeout_secs` after its
/// last byte, as the README says, on both listeners (the MLLP listener took up to twice
/// as long).
#[test]
fn a_sender_silent_mid_message_is_answered_after_read_timeout_secs_on_both_listeners() {
    let system = System::start("relay-stall-timing");
    let mut daemon = Daemon::start(&system, "", "read_timeout_secs = 2");
    let req = echo_request("NTE|||stalls\r");
    let within =
        |took: Duration| took >= Duration::from_millis(1900) && took < Duration::from_millis(2900);

    // MLLP: half a frame, then nothing.
    let mut mllp = TcpStream::connect(daemon.mllp).unwrap();
    mllp.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let frame = mllp_frame(&req);
    // A first message whole, so that the wait for the next began before it (the old
    // listener counted from there, and answered up to twice read_timeout_secs late).
    mllp.write_all(&frame).unwrap();
    assert_eq!(get(&mllp_read(&mut mllp), "MSA-1"), "AA");
    std::thread::sleep(Duration::from_millis(500));
    mllp.write_all(&frame[..frame.len() / 2]).unwrap();
    let started = Instant::now();
    let answer = mllp_read(&mut mllp);
    let took = started.elapsed();
    assert_hnclient_ar(&answer, NetworkCode::Txfr039E);
    assert!(within(took), "MLLP: {took:?}");

    // HL7Xfer: a length announcing more than comes.
    let started = Instant::now();
    let answer = Originator::connect(daemon.hl7xfer).exchange(
        &req,
        Fault::Announce(req.len() as u64 + 100),
        false,
    );
    let took = started.elapsed();
    assert_hnclient_ar(&answer, NetworkCode::Txfr039E);
    assert!(within(took), "HL7Xfer: {took:?}");
    daemon.stop(&system);
}
