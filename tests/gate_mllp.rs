//! The gateway in front of MLLP receiving systems (DESIGN 3.7): a receiving system
//! written here, plain and over TLS, that answers, answers late, answers another
//! request, hangs, closes mid-answer or answers nonsense — each case asserted through
//! the real client core, TLS and gateway.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{FACILITY, PeerReceiver, System, get};
use hnapi::client::Client;

/// A receiving system: what it does with a request depends on its MSH-10's prefix.
///
/// | prefix | behaviour |
/// |---|---|
/// | `ok` | answers AA at once |
/// | `late` | answers after 3 s |
/// | `wrong` | answers with another MSA-2 |
/// | `hang` | never answers |
/// | `cut` | writes half an answer and closes |
/// | `junk` | answers a frame that is not HL7 |
/// | `close` | answers AA, then closes (as python's hl7apy MLLPServer does) |
/// | `lazyclose-N` | answers AA, then closes N % 10 ms later (as hl7apy does on a busy machine) |
/// | `stray-now` | answers AA with the start of another frame in the same write |
/// | `stray-later` | answers AA, then 50 ms later writes the start of another frame |
/// | `stray-space` | answers AA, then 50 ms later writes CR LF |
struct Receiver {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

/// The server side of TLS, for the `mllps` receiver.
type Tls = Arc<rustls::ServerConfig>;

impl Receiver {
    fn start(tls: Option<Tls>) -> Self {
        Self::start_on("127.0.0.1:0", tls)
    }

    fn start_on(addr: &str, tls: Option<Tls>) -> Self {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopping) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        tcp.set_nonblocking(false).unwrap();
                        count.fetch_add(1, Ordering::Relaxed);
                        let tls = tls.clone();
                        let stopping = stopping.clone();
                        std::thread::spawn(move || match tls {
                            None => serve(tcp, &stopping),
                            Some(config) => {
                                let conn = rustls::ServerConnection::new(config).unwrap();
                                serve(rustls::StreamOwned::new(conn, tcp), &stopping);
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            addr,
            connections,
            stop,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Let the accept loop see the flag and release the port.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads MLLP frames and answers each as its control id says.
fn serve(mut stream: impl Read + Write, stopping: &AtomicBool) {
    let mut buf = Vec::new();
    let mut piece = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(2).position(|w| w == [0x1C, 0x0D]) else {
            match stream.read(&mut piece) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&piece[..n]),
            }
            continue;
        };
        let frame: Vec<u8> = buf.drain(..end + 2).collect();
        let start = frame.iter().position(|&b| b == 0x0B).unwrap();
        let request = &frame[start + 1..frame.len() - 2];
        let control = get(request, "MSH-10");
        let ack = |msa2: &str| {
            format!(
                "MSH|^~\\&|LABRECV|LABFAC|{}|{}|20261123120000||ACK|A{control}|P|2.3\rMSA|AA|{msa2}\r",
                get(request, "MSH-3"),
                get(request, "MSH-4")
            )
            .into_bytes()
        };
        let frame_of = |m: &[u8]| [&[0x0B][..], m, &[0x1C, 0x0D]].concat();
        let reply = if control.starts_with("ok")
            || control.starts_with("close")
            || control.starts_with("lazyclose")
        {
            frame_of(&ack(&control))
        } else if control.starts_with("late") {
            std::thread::sleep(Duration::from_secs(3));
            frame_of(&ack(&control))
        } else if control.starts_with("wrong") {
            frame_of(&ack("someone-else"))
        } else if control.starts_with("hang") {
            while !stopping.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        } else if control.starts_with("stray") {
            let mut reply = frame_of(&ack(&control));
            let later = if control.starts_with("stray-now") {
                reply.extend_from_slice(STRAY);
                None
            } else if control.starts_with("stray-space") {
                Some(&b"\r\n"[..])
            } else {
                Some(STRAY)
            };
            if stream.write_all(&reply).is_err() || stream.flush().is_err() {
                return;
            }
            if let Some(bytes) = later {
                std::thread::sleep(Duration::from_millis(50));
                if stream.write_all(bytes).is_err() || stream.flush().is_err() {
                    return;
                }
            }
            continue;
        } else if control.starts_with("cut") {
            let whole = frame_of(&ack(&control));
            let _ = stream.write_all(&whole[..whole.len() / 2]);
            let _ = stream.flush();
            return;
        } else {
            frame_of(b"this is not HL7")
        };
        if stream.write_all(&reply).is_err() || stream.flush().is_err() {
            return;
        }
        if control.starts_with("close") {
            return;
        }
        if let Some(n) = control.strip_prefix("lazyclose-") {
            let n: u64 = n.parse().unwrap_or(0);
            std::thread::sleep(Duration::from_millis(n % 10));
            return;
        }
    }
}

/// What a `stray` receiver writes after its answer: the start of a frame that never ends,
/// the worst case (a reader that took it would prefix the next answer with it).
const STRAY: &[u8] = b"\x0bMSH|^~\\&|LABRECV|LABFAC|||20261123120000||ACK|stray|P|2.3\r";

fn request(application: &str, control: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|LABAPP|{FACILITY}|{application}|LABFAC|20261123120000||ORU^R01|{control}|P|2.3\rOBX|1|ST|X||1\r"
    )
    .into_bytes()
}

fn gate_toml(routes: &str) -> String {
    format!("listen = \"127.0.0.1:0\"\ngard = \"gard\"\nfacility = \"HNGATE01\"\n{routes}")
}

fn mllp_route(application: &str, addr: SocketAddr, extra: &str) -> String {
    format!(
        "[[route]]\napplication = \"{application}\"\ndestination = \"mllp://{addr}\"\ntimeout_secs = 2\n{extra}\n"
    )
}

fn assert_hngate_ar(answer: &[u8], code: &str, control: &str) {
    let text = String::from_utf8_lossy(answer);
    assert_eq!(get(answer, "MSH-3"), "HNGATE", "{text}");
    assert_eq!(get(answer, "MSA-1"), "AR", "{text}");
    assert_eq!(get(answer, "MSA-2"), control, "{text}");
    assert!(get(answer, "MSA-3").starts_with(code), "{code}: {text}");
}

fn assert_answered(answer: &[u8], control: &str) {
    let text = String::from_utf8_lossy(answer);
    assert!(
        answer.starts_with(b"MSH|") && text.matches("MSH|").count() == 1,
        "the answer, nothing before it: {text}"
    );
    assert_eq!(
        get(answer, "MSH-3"),
        "LABRECV",
        "the receiver's own answer: {text}"
    );
    assert_eq!(get(answer, "MSA-2"), control, "{text}");
}

#[test]
fn answers_go_to_their_senders_whatever_the_receiver_does() {
    let receiver = Receiver::start(None);
    let system = System::start_with(
        "gate-mllp",
        Some(&gate_toml(&mllp_route(
            "LAB",
            receiver.addr,
            "pool_size = 2",
        ))),
    );
    let client = Client::open_file(&system.client_config()).unwrap();
    let send = |control: &str| {
        client
            .send_receive(&request("LAB", control), None)
            .unwrap()
            .bytes
    };

    // Ten in a row share one pooled connection.
    for i in 0..10 {
        assert_answered(&send(&format!("ok-{i}")), &format!("ok-{i}"));
    }
    assert_eq!(receiver.connections.load(Ordering::Relaxed), 1, "pooled");

    // Late: the sender hears TXFR024E at the route's timeout; the late answer goes to nobody.
    let started = Instant::now();
    assert_hngate_ar(&send("late-1"), "TXFR024E", "late-1");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_answered(&send("ok-after-late"), "ok-after-late");
    std::thread::sleep(Duration::from_millis(1500)); // the late answer is written by now
    assert_answered(&send("ok-after-late-2"), "ok-after-late-2");

    // Another request's answer is never handed over.
    assert_hngate_ar(&send("wrong-1"), "TXFR024E", "wrong-1");
    assert_answered(&send("ok-after-wrong"), "ok-after-wrong");

    // Hang: the timeout. Cut mid-answer: at once.
    let started = Instant::now();
    assert_hngate_ar(&send("hang-1"), "TXFR024E", "hang-1");
    assert!(started.elapsed() >= Duration::from_millis(1900));
    let started = Instant::now();
    assert_hngate_ar(&send("cut-1"), "TXFR024E", "cut-1");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // Not HL7.
    assert_hngate_ar(&send("junk-1"), "VLDT014E", "junk-1");
    assert_answered(&send("ok-last"), "ok-last");
}

#[test]
fn many_senders_at_once_each_get_their_own_answer() {
    let receiver = Receiver::start(None);
    let system = System::start_with(
        "gate-mllp-many",
        Some(&gate_toml(&mllp_route("LAB", receiver.addr, ""))),
    );
    let client = Arc::new(Client::open_file(&system.client_config()).unwrap());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    // Some requests fail in between; none may disturb the others.
                    let control = if i % 10 == 3 {
                        format!("wrong-{t}-{i}")
                    } else {
                        format!("ok-{t}-{i}")
                    };
                    let answer = client
                        .send_receive(&request("LAB", &control), None)
                        .unwrap()
                        .bytes;
                    assert_eq!(get(&answer, "MSA-2"), control);
                    if control.starts_with("ok") {
                        assert_answered(&answer, &control);
                    } else {
                        assert_hngate_ar(&answer, "TXFR024E", &control);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_receiver_that_is_down_is_answered_at_once_and_found_again() {
    // A port with nobody on it, to be used again later.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let system = System::start_with(
        "gate-mllp-down",
        Some(&gate_toml(&mllp_route("LAB", addr, ""))),
    );
    let client = Client::open_file(&system.client_config()).unwrap();
    let send = |control: &str| {
        client
            .send_receive(&request("LAB", control), None)
            .unwrap()
            .bytes
    };
    for i in 0..3 {
        let started = Instant::now();
        assert_hngate_ar(
            &send(&format!("ok-down-{i}")),
            "TXFR024E",
            &format!("ok-down-{i}"),
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "in its backoff: at once"
        );
    }
    let receiver = Receiver::start_on(&addr.to_string(), None);
    // Backoff is at most 5 s; then the receiver is found again.
    let started = Instant::now();
    loop {
        let answer = send("ok-up");
        if get(&answer, "MSH-3") == "LABRECV" {
            assert_answered(&answer, "ok-up");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "never reconnected"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(receiver);
}

/// A CA, and certificates it signs, as PEM files in `dir`.
fn certificates(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    for (stem, name) in [("receiver", "127.0.0.1"), ("gate", "hngate.example")] {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}-key.pem")), key.serialize_pem()).unwrap();
    }
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    dir.to_owned()
}

#[test]
fn mllps_with_a_client_certificate() {
    use hnapi::transport::tls;
    let dir = certificates(&common::temp_dir("gate-mllps-certs"));
    let other = certificates(&common::temp_dir("gate-mllps-other"));
    let read = |p: PathBuf| std::fs::read(p).unwrap();
    let ca = tls::certificates_from_pem(&read(dir.join("ca.pem"))).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca[0].clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        tls::provider(),
    )
    .build()
    .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            tls::certificates_from_pem(&read(dir.join("receiver.pem"))).unwrap(),
            tls::private_key_from_pem(&read(dir.join("receiver-key.pem"))).unwrap(),
        )
        .unwrap();
    let receiver = Receiver::start(Some(Arc::new(server)));
    let tls_route = |application: &str, ca: &Path| {
        format!(
            "[[route]]\napplication = \"{application}\"\ndestination = \"mllps://{}\"\ntimeout_secs = 2\n\
             tls_ca = \"{}\"\ntls_certificate = \"{}\"\ntls_private_key = \"{}\"\n",
            receiver.addr,
            ca.display(),
            dir.join("gate.pem").display(),
            dir.join("gate-key.pem").display()
        )
    };
    let routes = tls_route("LABS", &dir.join("ca.pem"))
        + &tls_route("LABS-WRONG-CA", &other.join("ca.pem"))
        + &format!(
            "[[route]]\napplication = \"LABS-NO-CERT\"\ndestination = \"mllps://{}\"\ntimeout_secs = 2\ntls_ca = \"{}\"\n",
            receiver.addr,
            dir.join("ca.pem").display()
        );
    let system = System::start_with("gate-mllps", Some(&gate_toml(&routes)));
    let client = Client::open_file(&system.client_config()).unwrap();
    let send = |app: &str, control: &str| {
        client
            .send_receive(&request(app, control), None)
            .unwrap()
            .bytes
    };
    assert_answered(&send("LABS", "ok-tls-1"), "ok-tls-1");
    assert_answered(&send("LABS", "ok-tls-2"), "ok-tls-2");
    // A receiver whose certificate is not from the configured CA is not talked to.
    assert_hngate_ar(&send("LABS-WRONG-CA", "ok-tls-3"), "TXFR024E", "ok-tls-3");
    // Without the gateway's client certificate, the receiver refuses the handshake.
    assert_hngate_ar(&send("LABS-NO-CERT", "ok-tls-4"), "TXFR024E", "ok-tls-4");
    assert_answered(&send("LABS", "ok-tls-5"), "ok-tls-5");
    // Over TLS too, an idle connection with stray bytes, or closed, is not reused.
    let connections = || receiver.connections.load(Ordering::Relaxed);
    for stray in ["stray-later-tls", "stray-space-tls", "stray-now-tls"] {
        assert_answered(&send("LABS", stray), stray);
        std::thread::sleep(Duration::from_millis(300));
        let before = connections();
        let next = format!("ok-after-{stray}");
        assert_answered(&send("LABS", &next), &next);
        assert_eq!(connections(), before + 1, "{stray}: a new connection");
    }
    let before = connections();
    for i in 0..10 {
        let control = format!("close-tls-{i}");
        assert_answered(&send("LABS", &control), &control);
    }
    // The first went on the pooled connection of the request before.
    assert_eq!(connections(), before + 9);
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(other);
}

#[test]
fn stray_bytes_on_an_idle_connection_retire_it() {
    let receiver = Receiver::start(None);
    let system = System::start_with(
        "gate-mllp-stray",
        Some(&gate_toml(&mllp_route(
            "LAB",
            receiver.addr,
            "pool_size = 2",
        ))),
    );
    let client = Client::open_file(&system.client_config()).unwrap();
    let send = |control: &str| {
        client
            .send_receive(&request("LAB", control), None)
            .unwrap()
            .bytes
    };
    let connections = || receiver.connections.load(Ordering::Relaxed);
    assert_answered(&send("ok-1"), "ok-1");
    assert_eq!(connections(), 1);
    let mut expected = 1;
    for stray in ["stray-now", "stray-later", "stray-space"] {
        // The answer itself comes before the stray bytes, and is right.
        assert_answered(&send(stray), stray);
        // Time for the bytes written 50 ms after the answer to arrive.
        std::thread::sleep(Duration::from_millis(300));
        let next = format!("ok-after-{stray}");
        assert_answered(&send(&next), &next);
        expected += 1;
        assert_eq!(connections(), expected, "{stray}: a new connection");
        // And that new one is pooled.
        let again = format!("ok-again-{stray}");
        assert_answered(&send(&again), &again);
        assert_eq!(connections(), expected, "{stray}: pooled");
    }
}

#[test]
fn a_receiver_that_closes_after_each_answer_answers_every_request() {
    let receiver = Receiver::start(None);
    let system = System::start_with(
        "gate-mllp-close",
        Some(&gate_toml(&mllp_route("LAB", receiver.addr, ""))),
    );
    let client = Client::open_file(&system.client_config()).unwrap();
    for i in 0..50 {
        let control = format!("close-{i}");
        let answer = client
            .send_receive(&request("LAB", &control), None)
            .unwrap()
            .bytes;
        assert_answered(&answer, &control);
    }
    assert_eq!(receiver.connections.load(Ordering::Relaxed), 50);
}

/// A receiver that closes a little while after each answer: the close is not there yet
/// when a quick sender's next request comes, so no check before reuse can see it. The
/// destination learns that its receiver closes and keeps no connection: a thousand
/// requests, every one answered by the receiver, none `TXFR024E`.
#[test]
fn a_receiver_that_closes_a_while_after_each_answer_answers_a_thousand_requests() {
    let receiver = Receiver::start(None);
    let system = System::start_with(
        "gate-mllp-lazyclose",
        Some(&gate_toml(&mllp_route("LAB", receiver.addr, ""))),
    );
    let client = Client::open_file(&system.client_config()).unwrap();
    for i in 0..1000 {
        let control = format!("lazyclose-{i}");
        let answer = client
            .send_receive(&request("LAB", &control), None)
            .unwrap()
            .bytes;
        assert_answered(&answer, &control);
    }
    // Each on a connection of its own, none on a connection the receiver was closing.
    assert_eq!(receiver.connections.load(Ordering::Relaxed), 1000);
}

/// A receiver that answers another request on a kept connection (as node-hl7-server 2.5
/// does, tests/interop.rs) has that answer refused, and no connection to it is kept from
/// then on: each later request has a connection of its own.
#[test]
fn a_wrong_answer_on_a_kept_connection_stops_pooling_for_that_destination() {
    let receiver = Receiver::start(None);
    let system = System::start_with(
        "gate-mllp-mixes",
        Some(&gate_toml(&mllp_route("LAB", receiver.addr, ""))),
    );
    let client = Client::open_file(&system.client_config()).unwrap();
    let ask = |control: &str| {
        client
            .send_receive(&request("LAB", control), None)
            .unwrap()
            .bytes
    };
    assert_answered(&ask("ok-0"), "ok-0");
    // On ok-0's connection, kept in the pool.
    assert_hngate_ar(&ask("wrong-1"), "TXFR024E", "wrong-1");
    assert_eq!(receiver.connections.load(Ordering::Relaxed), 1);
    for i in 2..22 {
        let control = format!("ok-{i}");
        assert_answered(&ask(&control), &control);
    }
    // Pooling would have carried them all on one new connection.
    assert_eq!(receiver.connections.load(Ordering::Relaxed), 21);
}

/// A receiving system written in Python, `tests/python/receivers.py KIND`.
fn python_receiver(kind: &str) -> PeerReceiver {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/receivers.py");
    let mut command = std::process::Command::new(common::differential::python());
    command.arg(script).arg(kind);
    PeerReceiver::start(command, kind)
}

/// Sends `n` requests to `application` one after another (each as soon as the one before
/// is answered) and returns the receiver's MSH-10s (which count its connections).
fn send_in_a_row(system: &System, application: &str, n: usize) -> Vec<String> {
    let client = Client::open_file(&system.client_config()).unwrap();
    (0..n)
        .map(|i| {
            let control = format!("{application}-{i}");
            let answer = client
                .send_receive(&request(application, &control), None)
                .unwrap()
                .bytes;
            let text = String::from_utf8_lossy(&answer);
            assert_ne!(get(&answer, "MSH-3"), "HNGATE", "request {i}: {text}");
            assert_eq!(get(&answer, "MSA-1"), "AA", "{text}");
            assert_eq!(get(&answer, "MSA-2"), control, "{text}");
            get(&answer, "MSH-10")
        })
        .collect()
}

/// hl7apy's own `MLLPServer` (which closes after each answer) behind a pooled route, and
/// python-hl7's asyncio server (which keeps its connections) behind another: every
/// request answered by the receiver; the one that keeps its connections is sent them all
/// on one.
#[test]
fn python_receiving_systems_of_each_kind_behind_pooled_routes() {
    let closes = python_receiver("hl7apy");
    let keeps = python_receiver("hl7");
    let routes = mllp_route("HL7APY", closes.addr, "") + &mllp_route("PYHL7", keeps.addr, "");
    let system = System::start_with("gate-mllp-python", Some(&gate_toml(&routes)));
    let connections = send_in_a_row(&system, "HL7APY", 1000);
    // hl7apy answers one message a connection.
    let distinct: std::collections::BTreeSet<_> = connections.iter().collect();
    assert_eq!(distinct.len(), 1000);
    let connections = send_in_a_row(&system, "PYHL7", 200);
    assert!(
        connections.iter().all(|c| c == "C1"),
        "one pooled connection: {connections:?}"
    );
}

#[test]
fn the_differential_receiver_logs_what_each_parser_read() {
    use common::differential::{Differential, Reading};
    let receiver = Differential::start();
    let mut tcp = std::net::TcpStream::connect(receiver.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let one = format!(
        "MSH|^~\\&|LABAPP|{FACILITY}|LAB|LABFAC|20261123120000||ORU^R01|C1|P|2.4\rOBX|1|ST|X||1\r"
    );
    // Two MSH segments in one frame, the first sender with a component.
    let two = format!(
        "MSH|^~\\&|LABAPP|{FACILITY}^X|LAB|LABFAC|20261123120000||ORU^R01|C2|P|2.4\r\
         MSH|^~\\&|LABAPP|OTHER|LAB|LABFAC|20261123120000||ORU^R01|C3|P|2.4\r"
    );
    let mut wire = Vec::new();
    for m in [&one, &two] {
        wire.push(0x0B);
        wire.extend_from_slice(m.as_bytes());
        wire.extend_from_slice(&[0x1C, 0x0D]);
    }
    tcp.write_all(&wire).unwrap();
    let mut answers = Vec::new();
    let mut piece = [0u8; 4096];
    while answers.windows(2).filter(|w| *w == [0x1C, 0x0D]).count() < 2 {
        let n = tcp.read(&mut piece).unwrap();
        assert!(n > 0, "closed: {}", receiver.stderr());
        answers.extend_from_slice(&piece[..n]);
    }
    let answers: Vec<&[u8]> = answers
        .split(|&b| b == 0x1C)
        .filter_map(|a| a.strip_prefix(b"\r").unwrap_or(a).strip_prefix(&[0x0B]))
        .collect();
    assert_eq!(answers.len(), 2);
    assert_eq!(get(answers[0], "MSA-2"), "C1");
    assert_eq!(get(answers[1], "MSA-2"), "C2");
    assert_eq!(get(answers[1], "MSH-5"), "LABAPP");

    let records = receiver.wait_for(2, Duration::from_secs(5));
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!((records[0].index, records[1].index), (0, 1));
    assert_eq!((records[0].connection, records[1].connection), (0, 0));
    assert_eq!(records[0].length, one.len() as u64);
    assert_eq!(
        records[0].agreed(),
        Some(&Reading {
            msh_count: Some(1),
            msh4: Some(FACILITY.into()),
            msh4_1: Some(FACILITY.into()),
            msh10: Some("C1".into()),
            error: None,
        }),
        "{:?}",
        records[0]
    );
    for (parser, reading) in records[1].readings() {
        assert_eq!(reading.error, None, "{parser}");
        assert_eq!(reading.msh_count, Some(2), "{parser}");
        assert_eq!(
            reading.msh4.as_deref(),
            Some(&*format!("{FACILITY}^X")),
            "{parser}"
        );
        assert_eq!(reading.msh4_1.as_deref(), Some(FACILITY), "{parser}");
        assert_eq!(reading.msh10.as_deref(), Some("C2"), "{parser}");
    }
}
