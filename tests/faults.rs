//! Network faults between the parts (issue 7, section 2): a proxy (`common/proxy.rs`)
//! between two parts delays, stalls, cuts mid-frame, resets and corrupts. For each
//! fault the sender gets an answer within its timeout plus one second, the answer says
//! what happened, no daemon dies, and a gateway's memory returns to its level after
//! many faults.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{FACILITY, Process, System, get, request};
use hnapi::client::daemon::Relay;
use hnapi::client::{AsyncClient, Client, ClientConfig};
use hnapi::hl7::{Message, NetworkCode};
use proxy::{Fault, Proxy};

/// Every sender's timeout in these tests: short, so that "within the timeout plus one
/// second" means something and the tests stay quick.
const TIMEOUT: Duration = Duration::from_secs(3);
const ONE_SECOND: Duration = Duration::from_secs(1);

/// What a sender must hear.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The receiver's own AA.
    Answered,
    /// An AR from this component with this code.
    Ar(&'static str, NetworkCode),
}

/// One fault and what the sender must hear.
struct Case {
    name: &'static str,
    up: Fault,
    down: Fault,
    expect: Expect,
}

const fn case(name: &'static str, fault: Fault, expect: Expect) -> Case {
    Case {
        name,
        up: fault,
        down: fault,
        expect,
    }
}

/// Prints what a sender heard, for the record (`--nocapture`).
fn show(case: &str, answer: &[u8], took: Duration) {
    eprintln!(
        "{case}: {} from {}: {} in {} ms",
        get(answer, "MSA-1"),
        get(answer, "MSH-3"),
        get(answer, "MSA-3"),
        took.as_millis()
    );
}

/// Sends `request` with `send`, prints what the sender heard, and checks it against
/// `expect`, within `limit`; returns the answer.
fn hear(
    case: &str,
    request: &[u8],
    expect: Expect,
    limit: Duration,
    send: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Vec<u8> {
    let started = Instant::now();
    let answer = send(request);
    let took = started.elapsed();
    show(case, &answer, took);
    check(case, request, &answer, expect, took, limit);
    answer
}

/// Checks `answer` to `request` against `expect`; `took` within `limit`.
fn check(
    case: &str,
    request: &[u8],
    answer: &[u8],
    expect: Expect,
    took: Duration,
    limit: Duration,
) {
    let text = String::from_utf8_lossy(answer);
    assert!(
        took <= limit,
        "{case}: answered after {took:?} (limit {limit:?}): {text}"
    );
    assert!(Message::parse(answer).is_ok(), "{case}: not HL7: {text}");
    assert_eq!(
        get(answer, "MSA-2"),
        get(request, "MSH-10"),
        "{case}: the answer names the request: {text}"
    );
    match expect {
        Expect::Answered => {
            assert_eq!(get(answer, "MSA-1"), "AA", "{case}: {text}");
            assert_eq!(
                get(answer, "MSH-3"),
                get(request, "MSH-5"),
                "{case}: {text}"
            );
        }
        Expect::Ar(component, code) => {
            assert_eq!(get(answer, "MSH-9"), "ACK", "{case}: {text}");
            assert_eq!(get(answer, "MSH-3"), component, "{case}: {text}");
            assert_eq!(get(answer, "MSA-1"), "AR", "{case}: {text}");
            assert!(
                get(answer, "MSA-3").starts_with(&format!("{} ", code.code())),
                "{case}: {} expected: {text}",
                code.code()
            );
        }
    }
}

fn echo() -> Vec<u8> {
    request("HNSIM-ECHO", "R03", "NTE|||fault test\r")
}

/// Sends an echo request with `send` until the receiver answers AA, for up to 10 s (past
/// any backoff).
fn until_answered(what: &str, send: impl FnMut(&[u8]) -> Vec<u8>) {
    until_answered_to(what, echo, Duration::from_secs(10), send)
}

/// Sends requests made by `make` with `send` until the receiver answers AA, for up to
/// `patience`.
fn until_answered_to(
    what: &str,
    make: impl Fn() -> Vec<u8>,
    patience: Duration,
    mut send: impl FnMut(&[u8]) -> Vec<u8>,
) {
    let started = Instant::now();
    loop {
        let req = make();
        let answer = send(&req);
        if get(&answer, "MSA-1") == "AA" {
            assert_eq!(get(&answer, "MSA-2"), get(&req, "MSH-10"));
            return;
        }
        assert!(
            started.elapsed() < patience,
            "{what}: still {:?}",
            String::from_utf8_lossy(&answer)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client.toml for the system's facility with one gateway and [`TIMEOUT`].
fn client_toml(system: &System, gateway: SocketAddr, listen: &str) -> PathBuf {
    let path = system
        .dir
        .join(format!("client-{}.toml", hnapi::hl7::new_control_id()));
    std::fs::write(
        &path,
        format!(
            "facility = \"{FACILITY}\"\ncredential = \"credential.toml\"\ngateways = [\"{gateway}\"]\n\
             timeout_secs = {}\nconnect_timeout_secs = 2\n{listen}",
            TIMEOUT.as_secs()
        ),
    )
    .unwrap();
    path
}

fn hnapi_ar() -> Expect {
    Expect::Ar("HNAPI", NetworkCode::Txfr024E)
}

// ---------------------------------------------------------------------------------------
// 1. The library client and the gateway
// ---------------------------------------------------------------------------------------

/// Faults on a live connection, after its TLS handshake: each strikes the next request
/// or its answer.
fn live_connection_cases() -> Vec<Case> {
    vec![
        case(
            "delay 200 ms",
            Fault::Delay(Duration::from_millis(200)),
            Expect::Answered,
        ),
        case(
            "delay past the timeout",
            Fault::Delay(Duration::from_secs(4)),
            hnapi_ar(),
        ),
        case("stall", Fault::Stall, hnapi_ar()),
        case("cut mid-request", Fault::CutAfter(20), hnapi_ar()),
        case("reset mid-request", Fault::Reset(20), hnapi_ar()),
        case("corrupt the request", Fault::Corrupt(20), hnapi_ar()),
        Case {
            name: "corrupt the answer",
            up: Fault::Pass,
            down: Fault::Corrupt(20),
            expect: hnapi_ar(),
        },
        Case {
            name: "cut mid-answer",
            up: Fault::Pass,
            down: Fault::CutAfter(20),
            expect: hnapi_ar(),
        },
    ]
}

/// Faults in force when a connection opens: they strike its TLS handshake.
fn handshake_cases() -> Vec<Case> {
    vec![
        case("stall the handshake", Fault::Stall, hnapi_ar()),
        case("cut the handshake", Fault::CutAfter(100), hnapi_ar()),
        case("reset the handshake", Fault::Reset(100), hnapi_ar()),
        // A changed byte in the handshake is a TLS failure, and named so.
        Case {
            name: "corrupt the handshake",
            up: Fault::Corrupt(100),
            down: Fault::Pass,
            expect: Expect::Ar("HNAPI", NetworkCode::Txfr029E),
        },
    ]
}

#[test]
fn a_library_client_hears_every_fault_between_it_and_the_gateway() {
    let system = System::start("faults-client");
    let proxy = Proxy::start(system.sandbox().addr());
    let config = client_toml(&system, proxy.addr(), "");
    let client = Client::open_file(&config).unwrap();
    let send = |client: &Client, req: &[u8]| client.send_receive(req, None).unwrap().bytes;

    for case in live_connection_cases() {
        proxy.set(Fault::Pass);
        until_answered(case.name, |req| send(&client, req));
        proxy.set_each(case.up, case.down);
        hear(
            case.name,
            &echo(),
            case.expect,
            TIMEOUT + ONE_SECOND,
            |req| send(&client, req),
        );
        proxy.set(Fault::Pass);
        until_answered(case.name, |req| send(&client, req));
    }

    for case in handshake_cases() {
        // A new client, so that the fault meets a new connection.
        let fresh = Client::open_file(&config).unwrap();
        proxy.set_each(case.up, case.down);
        hear(
            case.name,
            &echo(),
            case.expect,
            TIMEOUT + ONE_SECOND,
            |req| send(&fresh, req),
        );
        proxy.set(Fault::Pass);
        until_answered(case.name, |req| send(&fresh, req));
    }
    // The gateway served every connection the proxy made, and still serves.
    until_answered("directly", |req| {
        let direct = Client::open_file(&system.client_config()).unwrap();
        send(&direct, req)
    });
}

/// One deadline for the whole transaction: a gateway slow at the TCP and TLS handshake
/// and slow again with its "Accepted" verdict cannot make the call last longer than its
/// timeout (plus one second), however long `connect_timeout_secs` is.
#[test]
fn one_deadline_bounds_connecting_the_verdict_and_the_answer() {
    let system = System::start("faults-deadline");
    let proxy = Proxy::start(system.sandbox().addr());
    let path = system.dir.join("client-deadline.toml");
    std::fs::write(
        &path,
        format!(
            "facility = \"{FACILITY}\"\ncredential = \"credential.toml\"\ngateways = [\"{}\"]\n\
             timeout_secs = {}\nconnect_timeout_secs = 30\n",
            proxy.addr(),
            TIMEOUT.as_secs()
        ),
    )
    .unwrap();
    // Each flight from the gateway is held 2.5 s: the handshake ends after 2.5 s, the
    // verdict comes 2.5 s later. Each phase alone is within the 3 s timeout; together
    // they are not.
    proxy.set_each(Fault::Pass, Fault::Delay(Duration::from_millis(2500)));
    let client = Client::open_file(&path).unwrap();
    hear(
        "slow handshake, slow verdict",
        &echo(),
        hnapi_ar(),
        TIMEOUT + ONE_SECOND,
        |req| client.send_receive(req, None).unwrap().bytes,
    );
    // The same through the async core, with a shorter timeout of its own.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let core = AsyncClient::new(ClientConfig::from_file(&path).unwrap()).unwrap();
    let limit = Duration::from_secs(2);
    hear(
        "slow handshake, slow verdict, 2 s",
        &echo(),
        hnapi_ar(),
        limit + ONE_SECOND,
        |req| runtime.block_on(core.answer(req, Some(limit))).bytes,
    );
    proxy.set(Fault::Pass);
    until_answered("after the delays", |req| {
        client.send_receive(req, None).unwrap().bytes
    });
}

// ---------------------------------------------------------------------------------------
// 2. The gateway and an MLLP receiving system
// ---------------------------------------------------------------------------------------

/// A receiving system that answers every MLLP frame at once with an AA naming it; a
/// frame it cannot read ends the connection.
struct Receiver {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        tcp.set_nonblocking(false).unwrap();
                        std::thread::spawn(move || receive(tcp));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { addr, stop }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn receive(mut stream: TcpStream) {
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
        let Some(request) = frame.strip_prefix(&[0x0B]) else {
            return;
        };
        let Ok(message) = Message::parse(&request[..request.len() - 2]) else {
            return;
        };
        let field = |path: &str| message.value(&path.parse().unwrap()).text().into_owned();
        let ack = format!(
            "\x0BMSH|^~\\&|{}|LABFAC|{}|{}|20261123120000||ACK|A{}|P|2.3\rMSA|AA|{}\r\x1C\r",
            field("MSH-5"),
            field("MSH-3"),
            field("MSH-4"),
            field("MSH-10"),
            field("MSH-10"),
        );
        if stream.write_all(ack.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn the_gateway_names_every_fault_between_it_and_an_mllp_receiver() {
    let receiver = Receiver::start();
    let proxy = Proxy::start(receiver.addr);
    let route_timeout = Duration::from_secs(2);
    let system = System::start_with(
        "faults-mllp",
        Some(&format!(
            "listen = \"127.0.0.1:0\"\ngard = \"gard\"\nfacility = \"HNGATE01\"\n\
             [[route]]\napplication = \"LAB\"\ndestination = \"mllp://{}\"\ntimeout_secs = {}\n",
            proxy.addr(),
            route_timeout.as_secs()
        )),
    );
    // The sender waits longer than the route: the gateway's answer is the one heard.
    let config = system.client_config_with(&[system.addr()]);
    let client = Client::open_file(&config).unwrap();
    let send = |req: &[u8]| client.send_receive(req, None).unwrap().bytes;
    let lab = || request("LAB", "ORU^R01", "OBX|1|ST|X||1\r");
    let gate_ar = |code| Expect::Ar("HNGATE", code);
    let cases = [
        case(
            "delay 200 ms",
            Fault::Delay(Duration::from_millis(200)),
            Expect::Answered,
        ),
        case(
            "delay past the timeout",
            Fault::Delay(Duration::from_secs(3)),
            gate_ar(NetworkCode::Txfr024E),
        ),
        case("stall", Fault::Stall, gate_ar(NetworkCode::Txfr024E)),
        case(
            "cut mid-request",
            Fault::CutAfter(20),
            gate_ar(NetworkCode::Txfr024E),
        ),
        case(
            "reset mid-request",
            Fault::Reset(20),
            gate_ar(NetworkCode::Txfr024E),
        ),
        Case {
            name: "cut mid-answer",
            up: Fault::Pass,
            down: Fault::CutAfter(20),
            expect: gate_ar(NetworkCode::Txfr024E),
        },
        Case {
            name: "reset mid-answer",
            up: Fault::Pass,
            down: Fault::Reset(20),
            expect: gate_ar(NetworkCode::Txfr024E),
        },
        // The answer's first letter changed: not HL7 any more.
        Case {
            name: "corrupt the answer",
            up: Fault::Pass,
            down: Fault::Corrupt(1),
            expect: gate_ar(NetworkCode::Vldt014E),
        },
    ];
    let until_lab = |what: &str| until_answered_to(what, lab, Duration::from_secs(10), &send);
    for case in cases {
        proxy.set(Fault::Pass);
        until_lab(case.name);
        proxy.set_each(case.up, case.down);
        hear(
            case.name,
            &lab(),
            case.expect,
            route_timeout + ONE_SECOND,
            |req| send(req),
        );
        proxy.set(Fault::Pass);
        until_lab(case.name);
    }
}

// ---------------------------------------------------------------------------------------
// 3. Legacy applications and MLLP engines, the client daemon, and the gateway
// ---------------------------------------------------------------------------------------

fn mllp_frame(message: &[u8]) -> Vec<u8> {
    [&[0x0B][..], message, &[0x1C, 0x0D]].concat()
}

/// Reads one MLLP frame's message, or `None` if the stream ends first.
fn mllp_read(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let mut byte = [0u8; 1];
    while !all.ends_with(&[0x1C, 0x0D]) {
        match stream.read(&mut byte) {
            Ok(1) => all.push(byte[0]),
            _ => return None,
        }
    }
    assert_eq!(all[0], 0x0B);
    Some(all[1..all.len() - 2].to_vec())
}

/// One MLLP exchange on a new connection.
fn mllp_send(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(&mllp_frame(message)).unwrap();
    mllp_read(&mut stream).expect("an answer")
}

/// `b[0] ^= seed; b[i] ^= b[i-1]`, the HL7Xfer scrambling (DESIGN 3.3).
fn scrambled(block: &[u8], seed: u8) -> Vec<u8> {
    let mut previous = seed;
    block
        .iter()
        .map(|b| {
            previous ^= b;
            previous
        })
        .collect()
}

fn unscramble(block: &mut [u8], seed: u8) {
    let mut previous = seed;
    for b in block {
        let scrambled = *b;
        *b ^= previous;
        previous = scrambled;
    }
}

/// One HL7Xfer exchange as an originator; the decoded answer.
fn hl7xfer_send(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut greeting = [0u8; 20];
    stream.read_exact(&mut greeting).unwrap();
    let echo = scrambled(&greeting[12..], 0);
    let k = echo[7];
    let mut station = format!("A{:<16}{:<15}", "TESTHOST", "127.0.0.1").into_bytes();
    station.truncate(32);
    for block in [
        [&b"HS0000000008"[..], &echo].concat(),
        scrambled(b"SI0000000032", k),
        scrambled(&station, k),
        scrambled(format!("DT{:010}", message.len()).as_bytes(), k),
        scrambled(message, k),
    ] {
        stream.write_all(&block).unwrap();
    }
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    assert!(all.len() > 12, "an answer, not {} bytes", all.len());
    let (header, body) = all.split_at_mut(12);
    unscramble(header, k);
    unscramble(body, k);
    assert_eq!(&header[..2], b"DT");
    body.to_vec()
}

/// The client daemon, in process, on the system's runtime.
struct Daemon {
    hl7xfer: SocketAddr,
    mllp: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Daemon {
    fn start(system: &System, gateway: SocketAddr) -> Self {
        let path = client_toml(
            system,
            gateway,
            "[listen]\nhl7xfer = \"127.0.0.1:0\"\nmllp = \"127.0.0.1:0\"\n",
        );
        let config = ClientConfig::from_file(&path).unwrap();
        let relay = system.runtime.block_on(Relay::bind(config)).unwrap();
        let hl7xfer = relay.hl7xfer_addr().unwrap();
        let mllp = relay.mllp_addr().unwrap();
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

    /// Stops the daemon; it must still be running (not ended by a fault).
    fn stop(&mut self, system: &System) {
        let done = self.done.take().unwrap();
        assert!(!done.is_finished(), "the daemon ended by itself");
        let _ = self.stop.take().unwrap().send(());
        system.runtime.block_on(done).unwrap();
    }
}

#[test]
fn the_client_daemon_answers_its_senders_through_every_fault() {
    let system = System::start("faults-daemon");
    let proxy = Proxy::start(system.sandbox().addr());
    let mut daemon = Daemon::start(&system, proxy.addr());
    let hnclient_ar = Expect::Ar("HNCLIENT", NetworkCode::Txfr024E);
    let mut cases = live_connection_cases();
    for case in &mut cases {
        if matches!(case.expect, Expect::Ar(..)) {
            case.expect = hnclient_ar;
        }
    }
    // The daemon's own connection to the gateway is the one the faults strike; it
    // answers both kinds of sender.
    type Send = fn(SocketAddr, &[u8]) -> Vec<u8>;
    let senders: [(&str, SocketAddr, Send); 2] = [
        ("mllp", daemon.mllp, mllp_send),
        ("hl7xfer", daemon.hl7xfer, hl7xfer_send),
    ];
    for (listener, addr, send) in senders {
        for case in &cases {
            let name = format!("{listener}: {}", case.name);
            proxy.set(Fault::Pass);
            until_answered(&name, |req| send(addr, req));
            proxy.set_each(case.up, case.down);
            let answer = hear(&name, &echo(), case.expect, TIMEOUT + ONE_SECOND, |req| {
                send(addr, req)
            });
            if let Expect::Ar(..) = case.expect {
                assert_eq!(get(&answer, "MSH-4"), FACILITY, "{name}");
            }
            proxy.set(Fault::Pass);
            until_answered(&name, |req| send(addr, req));
        }
    }

    // Between the sender and the daemon: a frame cut or reset in its middle ends that
    // connection, and the daemon goes on serving.
    for (listener, addr) in [("mllp", daemon.mllp), ("hl7xfer", daemon.hl7xfer)] {
        for fault in [Fault::CutAfter(40), Fault::Reset(40)] {
            let front = Proxy::start(addr);
            front.set(fault);
            let mut stream = TcpStream::connect(front.addr()).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            if listener == "hl7xfer" {
                let mut greeting = [0u8; 20];
                stream.read_exact(&mut greeting).unwrap();
                let echo = scrambled(&greeting[12..], 0);
                let k = echo[7];
                let _ = stream.write_all(&[&b"HS0000000008"[..], &echo].concat());
                let _ = stream.write_all(&scrambled(b"SI0000000032", k));
                let _ = stream.write_all(&scrambled(&[b'A'; 32], k));
            } else {
                let _ = stream.write_all(&mllp_frame(&echo()));
            }
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
            drop(front);
            until_answered(&format!("{listener} after {fault:?}"), |req| {
                mllp_send(daemon.mllp, req)
            });
            until_answered(&format!("{listener} after {fault:?}"), |req| {
                hl7xfer_send(daemon.hl7xfer, req)
            });
        }
    }
    daemon.stop(&system);
}

// ---------------------------------------------------------------------------------------
// 4. Memory: the gateway and the client daemon as processes, through many faults
// ---------------------------------------------------------------------------------------

/// How much resident memory may grow across the fault rounds.
const RSS_MARGIN_KIB: u64 = 8 * 1024;

/// The faults of the memory tests: each ends its transactions at once.
const QUICK_FAULTS: [(Fault, Fault); 5] = [
    (Fault::CutAfter(20), Fault::CutAfter(20)),
    (Fault::Reset(20), Fault::Reset(20)),
    (Fault::Corrupt(20), Fault::Corrupt(20)),
    (Fault::Pass, Fault::Corrupt(20)),
    (Fault::Pass, Fault::CutAfter(20)),
];

/// `clients` senders, each with its own connection through `proxy`.
struct Senders {
    runtime: tokio::runtime::Runtime,
    clients: Vec<AsyncClient>,
}

impl Senders {
    fn new(config: &Path, clients: usize) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = ClientConfig::from_file(config).unwrap();
        let clients = {
            let _entered = runtime.enter();
            (0..clients)
                .map(|_| AsyncClient::new(config.clone()).unwrap())
                .collect()
        };
        Self { runtime, clients }
    }

    /// One round: every sender is answered AA through a passing proxy; then with `fault`
    /// in force, every sender is answered an AR `TXFR024E` from `HNAPI` in time.
    fn round(&self, proxy: &Proxy, (up, down): (Fault, Fault)) {
        proxy.set(Fault::Pass);
        self.all(|client| async move {
            let started = Instant::now();
            loop {
                let req = echo();
                let answer = client.send_receive(&req, None).await.unwrap().bytes;
                if get(&answer, "MSA-1") == "AA" {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "never answered"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        proxy.set_each(up, down);
        self.all(move |client| async move {
            let req = echo();
            let started = Instant::now();
            let answer = client.send_receive(&req, None).await.unwrap().bytes;
            let name = format!("{up:?}/{down:?}");
            check(
                &name,
                &req,
                &answer,
                hnapi_ar(),
                started.elapsed(),
                TIMEOUT + ONE_SECOND,
            );
        });
    }

    /// Runs `work` for every sender at once.
    fn all<F, Fut>(&self, work: F)
    where
        F: Fn(AsyncClient) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for client in &self.clients {
                tasks.spawn(work(client.clone()));
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
        });
    }
}

#[test]
fn the_gateway_process_survives_many_faults_and_its_memory_returns() {
    let system = System::start("faults-gate-rss");
    let config = system.dir.join("gate-rss.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ngard = \"{}\"\nfacility = \"HNGATE01\"\nhandshake_timeout_secs = 2\n\
             [[route]]\napplication = \"HNSIM-ECHO\"\ndestination = \"sim\"\n",
            system.gard_dir().display()
        ),
    )
    .unwrap();
    let mut gate = Process::start(
        &["gate", "--config"],
        &config,
        &system.dir.join("gate-rss.log"),
    );
    let proxy = Proxy::start(gate.addr("gate"));
    let senders = Senders::new(&client_toml(&system, proxy.addr(), ""), 10);

    let rounds = |count: usize| {
        for _ in 0..count {
            for fault in QUICK_FAULTS {
                senders.round(&proxy, fault);
            }
        }
    };
    // Warm up with the same traffic, so that pools and caches have their size.
    rounds(10);
    let baseline = gate.rss_kib();
    rounds(50);
    // Handshakes that stall: the gateway holds them until its handshake timeout.
    let stalled: Vec<Client> = (0..20)
        .map(|_| Client::open_file(&client_toml(&system, proxy.addr(), "")).unwrap())
        .collect();
    proxy.set(Fault::Stall);
    std::thread::scope(|scope| {
        for client in &stalled {
            scope.spawn(move || {
                let req = echo();
                let started = Instant::now();
                let answer = client.send_receive(&req, None).unwrap().bytes;
                check(
                    "stall",
                    &req,
                    &answer,
                    hnapi_ar(),
                    started.elapsed(),
                    TIMEOUT + ONE_SECOND,
                );
            });
        }
    });
    proxy.set(Fault::Pass);
    std::thread::sleep(Duration::from_secs(3)); // past the handshake timeout
    let after = gate.rss_kib();
    eprintln!("gateway VmRSS: {baseline} KiB after warm-up, {after} KiB after the faults");
    assert!(
        after <= baseline + RSS_MARGIN_KIB,
        "gateway memory grew from {baseline} KiB to {after} KiB"
    );
    // Still alive, and still serving.
    let direct =
        Client::open_file(&system.client_config_with(&[gate.addr("gate").to_string()])).unwrap();
    until_answered("the gateway after the faults", |req| {
        direct.send_receive(req, None).unwrap().bytes
    });
    assert!(gate.child.try_wait().unwrap().is_none());
}

#[test]
fn the_client_daemon_process_survives_many_faults_and_its_memory_returns() {
    let system = System::start("faults-daemon-rss");
    let proxy = Proxy::start(system.sandbox().addr());
    let config = client_toml(&system, proxy.addr(), "[listen]\nmllp = \"127.0.0.1:0\"\n");
    let mut daemon = Process::start(
        &["client", "--config"],
        &config,
        &system.dir.join("daemon-rss.log"),
    );
    let mllp = daemon.addr("mllp");
    let rounds = |count: usize| {
        for _ in 0..count {
            for (up, down) in QUICK_FAULTS {
                proxy.set(Fault::Pass);
                until_answered("daemon", |req| mllp_send(mllp, req));
                proxy.set_each(up, down);
                let req = echo();
                let started = Instant::now();
                let answer = mllp_send(mllp, &req);
                let expect = Expect::Ar("HNCLIENT", NetworkCode::Txfr024E);
                let name = format!("{up:?}/{down:?}");
                check(
                    &name,
                    &req,
                    &answer,
                    expect,
                    started.elapsed(),
                    TIMEOUT + ONE_SECOND,
                );
            }
        }
    };
    rounds(10);
    let baseline = daemon.rss_kib();
    rounds(50);
    proxy.set(Fault::Pass);
    std::thread::sleep(Duration::from_secs(1));
    let after = daemon.rss_kib();
    eprintln!("client daemon VmRSS: {baseline} KiB after warm-up, {after} KiB after the faults");
    assert!(
        after <= baseline + RSS_MARGIN_KIB,
        "client daemon memory grew from {baseline} KiB to {after} KiB"
    );
    until_answered("the daemon after the faults", |req| mllp_send(mllp, req));
    assert!(daemon.child.try_wait().unwrap().is_none());
}

// ---------------------------------------------------------------------------------------
// 5. A server application and the gateway
// ---------------------------------------------------------------------------------------

#[test]
fn the_gateway_names_every_fault_between_it_and_a_server_application() {
    let system = System::start("faults-serverapp");
    let proxy = Proxy::start(system.sandbox().addr());
    let config = system.dir.join("server-faults.toml");
    std::fs::write(
        &config,
        format!(
            "facility = \"{}\"\ncredential = \"server-credential.toml\"\ngateways = [\"{}\"]\n\
             applications = [\"HNAPI-DEMO\"]\nconnect_timeout_secs = 2\n",
            hnapi::sandbox::SERVER_FACILITY,
            proxy.addr()
        ),
    )
    .unwrap();
    let server = Arc::new(hnapi::client::Server::open_file(&config).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Some(request)) = server.receive(Duration::from_millis(100)) {
                    let control = get(&request.bytes, "MSH-10");
                    let ack = format!(
                        "MSH|^~\\&|HNAPI-DEMO|BC00000099|TEST|{FACILITY}|20261123120000||ACK|A{control}|P|2.3\rMSA|AA|{control}\r"
                    );
                    // An answer whose connection is gone is refused; the sender hears
                    // the gateway's AR instead.
                    let _ = server.respond(request.id, ack.as_bytes());
                }
            }
        })
    };
    // The sender talks to the gateway directly, with the short timeout.
    let client = Client::open_file(&client_toml(&system, system.sandbox().addr(), "")).unwrap();
    let demo = || request("HNAPI-DEMO", "R03", "PID||9029274643^^^BC^PH\r");
    let send = |req: &[u8]| client.send_receive(req, None).unwrap().bytes;
    let until_served = |what: &str| until_answered_to(what, demo, Duration::from_secs(15), &send);
    let gate_ar = Expect::Ar("HNGATE", NetworkCode::Txfr024E);
    // Toward the server application ("down") goes the request; back comes its answer.
    let cases = [
        case(
            "delay 200 ms",
            Fault::Delay(Duration::from_millis(200)),
            Expect::Answered,
        ),
        case("stall", Fault::Stall, gate_ar),
        Case {
            name: "cut the request",
            up: Fault::Pass,
            down: Fault::CutAfter(20),
            expect: gate_ar,
        },
        Case {
            name: "reset the request",
            up: Fault::Pass,
            down: Fault::Reset(20),
            expect: gate_ar,
        },
        Case {
            name: "corrupt the request",
            up: Fault::Pass,
            down: Fault::Corrupt(20),
            expect: gate_ar,
        },
        Case {
            name: "cut the answer",
            up: Fault::CutAfter(20),
            down: Fault::Pass,
            expect: gate_ar,
        },
        Case {
            name: "corrupt the answer",
            up: Fault::Corrupt(20),
            down: Fault::Pass,
            expect: gate_ar,
        },
    ];
    for case in cases {
        proxy.set(Fault::Pass);
        until_served(case.name);
        proxy.set_each(case.up, case.down);
        hear(
            case.name,
            &demo(),
            case.expect,
            TIMEOUT + ONE_SECOND,
            |req| send(req),
        );
        proxy.set(Fault::Pass);
        until_served(case.name);
    }
    stop.store(true, Ordering::Relaxed);
    serving.join().unwrap();
}
