//! Secure transactions on loopback, against their ceiling.
//!
//! `cargo bench --bench transaction [-- --senders N --seconds S --rounds R --size BYTES --only hnsecure|reference]`
//!
//! Each configuration runs R rounds (default 5) of S seconds (default 2), hnsecure and the
//! reference taking turns, and the rounds are added up: a shared machine's load drifts, and
//! taking turns lets the drift fall on both alike.
//!
//! - **hnsecure**: the sandbox's gateway (HNGard, TLS 1.3 mutual authentication, envelope
//!   both ways, HL7 checks, routing) and the simulator's `HNSIM-ECHO`, which answers with a
//!   message as large as the request; N tasks share one client core.
//! - **hnsecure, best-effort journal**: the same with `audit = "best-effort"`, whose answers
//!   do not wait for their journal rows (the default, `required`, commits each row, in
//!   groups, before its answer leaves): the difference is the journal's share.
//! - **reference**: a bare tokio-rustls echo over the same TLS configuration (TLS 1.3,
//!   ECDSA P-256, mutual authentication) that does the same four 3DES operations per
//!   transaction (seal and open the request, seal and open the answer) and nothing else;
//!   N connections, one transaction in flight on each.
//!
//! Sender and gateway share this machine's cores, so the figure that compares is CPU time
//! per transaction (the whole process's user + system time, from /proc/self/stat).

#[path = "../examples/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use hnapi::client::{AsyncClient, ClientConfig};
use hnapi::envelope::{self, Direction, MasterKey};
use hnapi::sandbox::{Sandbox, SandboxOptions};
use hnapi::transport::{self, Frame, read_frame};
use support::message;
use tokio::io::AsyncWriteExt;

struct Options {
    senders: usize,
    seconds: u64,
    rounds: u64,
    size: usize,
    /// `hnsecure`, `best-effort` or `reference` to run one side only (for profiling).
    only: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        senders: 16,
        seconds: 2,
        rounds: 5,
        size: 1024,
        only: None,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        if args[i] == "--only" {
            o.only = args.get(i + 1).cloned();
            i += 2;
            continue;
        }
        match (args[i].as_str(), value) {
            ("--senders", Some(v)) => o.senders = v.max(1) as usize,
            ("--seconds", Some(v)) => o.seconds = v.max(1),
            ("--rounds", Some(v)) => o.rounds = v.max(1),
            ("--size", Some(v)) => o.size = v.max(200) as usize,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// This process's CPU time (user + system) so far.
fn cpu_time() -> Duration {
    support::cpu_time(std::process::id())
}

#[derive(Default)]
struct Run {
    transactions: usize,
    elapsed: Duration,
    cpu: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn add(&mut self, other: Run) {
        self.transactions += other.transactions;
        self.elapsed += other.elapsed;
        self.cpu += other.cpu;
        self.latencies.extend(other.latencies);
    }

    fn row(&mut self, name: &str) {
        self.latencies.sort();
        let pct = |p: f64| {
            let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
            self.latencies.get(i).map_or(0, |d| d.as_micros())
        };
        let tps = self.transactions as f64 / self.elapsed.as_secs_f64();
        let cpu_per = self.cpu.as_micros() as f64 / self.transactions.max(1) as f64;
        println!(
            "{name:<28} {tps:>10.0} {:>10} {:>10} {cpu_per:>14.0}",
            pct(0.50),
            pct(0.99)
        );
    }
}

async fn hnsecure(client: &AsyncClient, senders: usize, duration: Duration, size: usize) -> Run {
    let cpu0 = cpu_time();
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let request = message(hnapi::gate::sim::ECHO_APPLICATION, size);
                    let t = Instant::now();
                    let answer = client.send_receive(&request, None).await.expect("answered");
                    latencies.push(t.elapsed());
                    assert_eq!(
                        answer.network_error,
                        None,
                        "{:?}",
                        String::from_utf8_lossy(&answer.bytes)
                    );
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    Run {
        transactions: latencies.len(),
        elapsed: started.elapsed(),
        cpu: cpu_time() - cpu0,
        latencies,
    }
}

/// The reference echo server: open the request, seal it back as the answer.
async fn echo_server(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    key: MasterKey,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let Ok(mut stream) = acceptor.accept(tcp).await else {
                return;
            };
            let mut out = Vec::new();
            while let Ok(Some(Frame::Request { id, envelope, .. })) =
                read_frame(&mut stream, transport::DEFAULT_MAX_FRAME).await
            {
                let opened = envelope::open(&key, &envelope, Direction::Request).unwrap();
                let sealed = envelope::seal(
                    &key,
                    "BENCH",
                    Direction::Response,
                    &opened.header.nonce,
                    envelope::now_ms(),
                    &opened.plaintext,
                )
                .unwrap();
                out.clear();
                Frame::Response {
                    id,
                    envelope: sealed.bytes,
                }
                .encode(&mut out);
                if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn reference(senders: usize, duration: Duration, size: usize) -> Run {
    let (server, client) = support::tls_pair();

    let key = MasterKey::generate(1).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server_task = tokio::spawn(echo_server(
        listener,
        tokio_rustls::TlsAcceptor::from(server),
        key.clone(),
    ));

    let cpu0 = cpu_time();
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let client = client.clone();
            let addr = addr.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let mut stream = transport::connect(&addr, client, Duration::from_secs(5))
                    .await
                    .unwrap();
                let mut latencies = Vec::new();
                let mut out = Vec::new();
                let mut id = 0;
                while Instant::now() < deadline {
                    let request = message("ECHO", size);
                    let t = Instant::now();
                    let sealed = envelope::seal(
                        &key,
                        "BENCH",
                        Direction::Request,
                        &[0; 16],
                        envelope::now_ms(),
                        &request,
                    )
                    .unwrap();
                    id += 1;
                    out.clear();
                    Frame::Request {
                        id,
                        timeout_ms: 70_000,
                        envelope: sealed.bytes,
                    }
                    .encode(&mut out);
                    stream.write_all(&out).await.unwrap();
                    stream.flush().await.unwrap();
                    let Some(Frame::Response { envelope, .. }) =
                        read_frame(&mut stream, transport::DEFAULT_MAX_FRAME)
                            .await
                            .unwrap()
                    else {
                        panic!("no echo");
                    };
                    let opened = envelope::open(&key, &envelope, Direction::Response).unwrap();
                    assert_eq!(opened.plaintext.len(), request.len());
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let run = Run {
        transactions: latencies.len(),
        elapsed: started.elapsed(),
        cpu: cpu_time() - cpu0,
        latencies,
    };
    server_task.abort();
    run
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let duration = Duration::from_secs(o.seconds);
    let dir = std::env::temp_dir().join(format!("hnsecure-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    runtime.block_on(async {
        let mut sandbox = Sandbox::start(&SandboxOptions {
            dir: dir.clone(),
            port: 0,
            facility: "BC00000098".into(),
            demo_server: false,
        })
        .await
        .expect("the sandbox starts");
        let config = ClientConfig::from_file(&sandbox.client_config()).unwrap();
        let client = AsyncClient::new(config).unwrap();
        // The same sandbox with the journal written behind the traffic.
        let best_effort_dir = dir.join("best-effort");
        std::fs::create_dir_all(&best_effort_dir).unwrap();
        let gate_toml = std::fs::read_to_string(sandbox.gate_config()).unwrap();
        std::fs::write(
            best_effort_dir.join("gate.toml"),
            format!("audit = \"best-effort\"\n{gate_toml}"),
        )
        .unwrap();
        let mut best_effort_sandbox = Sandbox::start(&SandboxOptions {
            dir: best_effort_dir,
            port: 0,
            facility: "BC00000098".into(),
            demo_server: false,
        })
        .await
        .expect("the second sandbox starts");
        let best_effort = AsyncClient::new(
            ClientConfig::from_file(&best_effort_sandbox.client_config()).unwrap(),
        )
        .unwrap();
        // Warm up: connect, fill caches.
        for _ in 0..50 {
            for c in [&client, &best_effort] {
                c.send_receive(&message(hnapi::gate::sim::ECHO_APPLICATION, o.size), None)
                    .await
                    .unwrap();
            }
        }
        let _ = reference(1, Duration::from_millis(300), o.size).await;

        println!(
            "secure transactions, {} B request and answer, {} rounds of {} s each, {} core(s)\n",
            o.size,
            o.rounds,
            o.seconds,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        println!(
            "{:<28} {:>10} {:>10} {:>10} {:>14}",
            "", "tx/s", "p50 µs", "p99 µs", "CPU µs per tx"
        );
        let run = |side: &str| o.only.as_deref().is_none_or(|only| only == side);
        for senders in [o.senders, 1] {
            let (mut ours, mut behind, mut echo) = (Run::default(), Run::default(), Run::default());
            for _ in 0..o.rounds {
                if run("hnsecure") {
                    ours.add(hnsecure(&client, senders, duration, o.size).await);
                }
                if run("best-effort") {
                    behind.add(hnsecure(&best_effort, senders, duration, o.size).await);
                }
                if run("reference") {
                    echo.add(reference(senders, duration, o.size).await);
                }
            }
            if run("hnsecure") {
                ours.row(&format!("hnsecure, {senders} in flight"));
            }
            if run("best-effort") {
                behind.row(&format!("best-effort journal, {senders}"));
            }
            if run("reference") {
                echo.row(&format!("reference, {senders} in flight"));
            }
        }
        sandbox.stop().await;
        best_effort_sandbox.stop().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
