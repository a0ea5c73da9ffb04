//! The load program: the whole system on loopback under load, with its ceilings.
//!
//! ```sh
//! cargo build --release --bin hnsecure --example load
//! target/release/examples/load [--seconds 10] [--senders 4] [--quick]
//! ```
//!
//! It makes HNGard's directory and registers a facility, then starts, each as its own
//! process: two gateways (`hnsecure gate`) sharing the directory, a client daemon
//! (`hnsecure client`, both listeners) and an MLLP receiving system (this program again,
//! `--role receiver`). Every gateway routes `LOADMLLP` to the receiving system and
//! everything else to its simulator (`HNSIM-ECHO`, which answers as large as it is asked).
//!
//! Senders, N of each kind, each with one request in flight, alternating the simulator
//! and the receiving system:
//! - **library**: the client core (what `hnapi_send_receive` runs), half of them listing
//!   gateway A first and half gateway B first;
//! - **hl7xfer**: the client core in legacy mode, to the client daemon over HL7Xfer (one
//!   connection per transaction, as HNClient applications do);
//! - **mllp**: one MLLP connection each to the client daemon (which lists gateway A first).
//!
//! For 1 KiB and 64 KiB requests it prints transactions a second, p50/p99/p999 latency
//! per kind, and each process's CPU time and peak resident memory; then the ceilings,
//! measured in the same run: a bare rustls echo over loopback (TLS 1.3, mutual
//! authentication, N×3 connections) and the 3DES envelope alone (seal and open of the
//! request and of the answer, on every core). Then a run at 1 KiB during which gateway A
//! is killed (SIGKILL) and started again, and one during which the directory's database
//! is locked by another connection for a third of the run (at least 3 s).
//!
//! Checked, and the exit status is 1 when not so: every request got exactly one answer
//! and its MSA-2 is the request's MSH-10; while A is down every kind of sender is still
//! served by the receivers (failover); A serves again after its restart; while the
//! database is locked requests are answered `HNPS013E`, and the receivers answer again
//! after; every request of the whole run that got its receiver's answer has exactly one
//! journal row (facility, control id, outcome AA), and no control id has two.
//!
//! `--quick` (1 s phases, 2 senders of each kind) is how the test command runs it.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hnapi::client::{AsyncClient, ClientConfig};
use hnapi::envelope::{self, Direction, MasterKey};
use hnapi::hl7;
use hnapi::transport;
use hnapi::xfer::mllp::{self, MllpReader};
use support::{FACILITY, Proc, cpu_time, field, message, quantile_ms, reset_peak, status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The receiving system's application name: gateways route it over MLLP.
const MLLP_APPLICATION: &str = "LOADMLLP";
/// Every transaction's timeout, as configured for the senders, the daemon and the routes.
const TIMEOUT_SECS: u64 = 10;

fn main() {
    let args = support::arguments();
    if args.get("role").map(String::as_str) == Some("receiver") {
        receiver();
        return;
    }
    let quick = args.contains_key("quick");
    let options = Options {
        seconds: support::number(&args, "seconds", if quick { 1 } else { 10 }),
        senders: support::number(&args, "senders", if quick { 2 } else { 4 }).max(2) as usize,
        hnsecure: support::hnsecure_binary(&args),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = support::work_dir("load");
    let outcome = runtime.block_on(run(&options, &dir));
    drop(runtime);
    match outcome {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
            println!("\nevery request got exactly one answer, its MSA-2 the request's MSH-10");
        }
        Err(failures) => {
            eprintln!("\nFAILED (logs kept in {}):", dir.display());
            for f in failures {
                eprintln!("  {f}");
            }
            std::process::exit(1);
        }
    }
}

struct Options {
    seconds: u64,
    senders: usize,
    hnsecure: PathBuf,
}

/// The processes of the system under test.
struct System {
    dir: PathBuf,
    hnsecure: PathBuf,
    /// Killed and started again mid-run, hence the lock.
    gate_a: std::sync::Mutex<Proc>,
    gate_b: Proc,
    daemon: Proc,
    receiver: Proc,
    /// Gateway A's address: kept when it is started again.
    a: String,
    b: String,
}

impl System {
    async fn start(options: &Options, dir: &Path) -> System {
        support::make_directory(dir).await;
        let exe = std::env::current_exe().expect("this program's path");
        let mut command = Command::new(exe);
        command.args(["--role", "receiver"]);
        let receiver = Proc::start("MLLP receiver", command, &dir.join("receiver.log"));
        let receiver_addr = receiver.ready["mllp"].clone();
        let (a, b) = (
            format!("127.0.0.1:{}", support::free_port()),
            format!("127.0.0.1:{}", support::free_port()),
        );
        for (name, addr) in [("a", &a), ("b", &b)] {
            std::fs::write(
                dir.join(format!("gate-{name}.toml")),
                format!(
                    "listen = \"{addr}\"\ngard = \"gard\"\nfacility = \"HNGATE-LOAD-{}\"\n\
                     max_connections = 20000\nmax_unauthenticated = 20000\n\
                     max_unauthenticated_per_source = 20000\n\n\
                     [[route]]\napplication = \"{MLLP_APPLICATION}\"\ndestination = \"mllp://{receiver_addr}\"\n\
                     timeout_secs = {TIMEOUT_SECS}\npool_size = 32\n\n\
                     [[route]]\napplication = \"*\"\ndestination = \"sim\"\ntimeout_secs = {TIMEOUT_SECS}\n",
                    name.to_uppercase()
                ),
            )
            .expect("gate.toml");
        }
        std::fs::write(
            dir.join("daemon.toml"),
            format!(
                "{}\n[listen]\nhl7xfer = \"127.0.0.1:0\"\nmllp = \"127.0.0.1:0\"\nmax_connections = 20000\n",
                client_toml(&[&a, &b])
            ),
        )
        .expect("daemon.toml");
        let hnsecure = options.hnsecure.clone();
        let gate_a = start_gate(&hnsecure, dir, "a");
        let gate_b = start_gate(&hnsecure, dir, "b");
        let mut command = Command::new(&hnsecure);
        command.args(["client", "--log-level", "warn", "--config"]);
        command.arg(dir.join("daemon.toml"));
        let daemon = Proc::start("client daemon", command, &dir.join("daemon.log"));
        System {
            dir: dir.to_path_buf(),
            hnsecure,
            gate_a: std::sync::Mutex::new(gate_a),
            gate_b,
            daemon,
            receiver,
            a,
            b,
        }
    }

    fn processes(&self) -> [(&'static str, u32); 4] {
        [
            ("gateway A", self.gate_a.lock().expect("gateway A").pid()),
            ("gateway B", self.gate_b.pid()),
            ("client daemon", self.daemon.pid()),
            ("MLLP receiver", self.receiver.pid()),
        ]
    }

    /// The library client core, listing these gateways in this order.
    fn library(&self, gateways: &[&str]) -> AsyncClient {
        let config = ClientConfig::from_toml(&client_toml(gateways), &self.dir).expect("client");
        AsyncClient::new(config).expect("client core")
    }

    /// The client core in legacy mode, to the daemon's HL7Xfer listener.
    fn legacy(&self) -> AsyncClient {
        let toml = format!(
            "facility = \"{FACILITY}\"\ntransport = \"hl7xfer\"\nhnclient = \"{}\"\ntimeout_secs = {TIMEOUT_SECS}\n",
            self.daemon.ready["hl7xfer"]
        );
        AsyncClient::new(ClientConfig::from_toml(&toml, &self.dir).expect("legacy")).expect("core")
    }
}

fn client_toml(gateways: &[&str]) -> String {
    let list: Vec<String> = gateways.iter().map(|g| format!("\"{g}\"")).collect();
    format!(
        "facility = \"{FACILITY}\"\ncredential = \"credential.toml\"\ngateways = [{}]\n\
         timeout_secs = {TIMEOUT_SECS}\nconnect_timeout_secs = 2\n",
        list.join(", ")
    )
}

fn start_gate(hnsecure: &Path, dir: &Path, name: &str) -> Proc {
    let mut command = Command::new(hnsecure);
    command.args(["gate", "--log-level", "warn", "--config"]);
    command.arg(dir.join(format!("gate-{name}.toml")));
    Proc::start(
        &format!("gateway {}", name.to_uppercase()),
        command,
        &dir.join(format!("gate-{name}.log")),
    )
}

/// How one request ended.
#[derive(Clone, Debug)]
enum Outcome {
    /// The receiver's answer (AA).
    Receiver,
    /// A network ACK (or a receiver's AR/AE) with this condition code.
    Ack(String),
    /// No answer at all: the one thing that must never happen.
    Missing(String),
    /// An answer whose MSA-2 is not the request's MSH-10.
    Mismatch(String),
}

struct Record {
    kind: &'static str,
    /// The request's MSH-10.
    control: String,
    /// When the request was sent, from the run's start.
    sent: Duration,
    latency: Duration,
    outcome: Outcome,
}

fn judge(request: &[u8], answer: &[u8]) -> Outcome {
    let id = field(request, "MSH-10").unwrap_or_default();
    match field(answer, "MSA-2") {
        None => Outcome::Mismatch(format!("not HL7: {} bytes", answer.len())),
        Some(msa2) if msa2 != id => Outcome::Mismatch(format!("MSA-2 {msa2:?} for {id:?}")),
        Some(_) if field(answer, "MSA-1").as_deref() == Some("AA") => Outcome::Receiver,
        Some(_) => {
            let msa3 = field(answer, "MSA-3").unwrap_or_default();
            let code = hl7::condition_code(msa3.as_bytes())
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .unwrap_or_else(|| field(answer, "MSA-1").unwrap_or_default());
            Outcome::Ack(code)
        }
    }
}

fn destination(n: usize) -> &'static str {
    if n.is_multiple_of(2) {
        hnapi::gate::sim::ECHO_APPLICATION
    } else {
        MLLP_APPLICATION
    }
}

/// One sender through a client core (library or legacy): one request in flight until
/// `deadline`.
async fn core_sender(
    kind: &'static str,
    client: AsyncClient,
    start: Instant,
    deadline: Instant,
    size: usize,
    offset: usize,
) -> Vec<Record> {
    let mut records = Vec::new();
    let mut n = offset;
    while Instant::now() < deadline {
        let request = message(destination(n), size);
        n += 1;
        let t = Instant::now();
        let outcome = match client.send_receive(&request, None).await {
            Ok(answer) => judge(&request, &answer.bytes),
            Err(e) => Outcome::Missing(e.to_string()),
        };
        records.push(Record {
            kind,
            control: field(&request, "MSH-10").unwrap_or_default(),
            sent: t - start,
            latency: t.elapsed(),
            outcome,
        });
    }
    records
}

/// One sender on its own MLLP connection to the client daemon.
async fn mllp_sender(
    addr: String,
    start: Instant,
    deadline: Instant,
    size: usize,
    offset: usize,
) -> Vec<Record> {
    let mut records = Vec::new();
    let mut n = offset;
    let mut connection: Option<MllpReader<tokio::net::TcpStream>> = None;
    let mut out = Vec::new();
    let patience = Duration::from_secs(TIMEOUT_SECS + 2);
    while Instant::now() < deadline {
        let request = message(destination(n), size);
        n += 1;
        let t = Instant::now();
        if connection.is_none() {
            match tokio::net::TcpStream::connect(&addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    connection = Some(MllpReader::new(tcp, 16 << 20));
                }
                Err(e) => {
                    records.push(Record {
                        kind: "mllp",
                        control: field(&request, "MSH-10").unwrap_or_default(),
                        sent: t - start,
                        latency: t.elapsed(),
                        outcome: Outcome::Missing(format!("connect: {e}")),
                    });
                    continue;
                }
            }
        }
        let reader = connection.as_mut().expect("connected");
        out.clear();
        mllp::encode(&request, &mut out).expect("the load program's requests hold no framing byte");
        let exchange = async {
            reader
                .get_mut()
                .write_all(&out)
                .await
                .map_err(|e| e.to_string())?;
            match reader.next().await {
                Ok(Some(answer)) => Ok(answer),
                Ok(None) => Err("the daemon closed the connection".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        };
        let outcome = match tokio::time::timeout(patience, exchange).await {
            Ok(Ok(answer)) => judge(&request, &answer),
            Ok(Err(e)) => {
                connection = None;
                Outcome::Missing(e)
            }
            Err(_) => {
                connection = None;
                Outcome::Missing(format!("no answer in {patience:?}"))
            }
        };
        records.push(Record {
            kind: "mllp",
            control: field(&request, "MSH-10").unwrap_or_default(),
            sent: t - start,
            latency: t.elapsed(),
            outcome,
        });
    }
    // Exactly one answer: nothing more may come on the connection.
    if let Some(mut reader) = connection {
        let mut byte = [0u8; 1];
        let extra =
            tokio::time::timeout(Duration::from_millis(200), reader.get_mut().read(&mut byte))
                .await;
        if let Ok(Ok(n)) = extra
            && n > 0
        {
            records.push(Record {
                kind: "mllp",
                control: String::new(),
                sent: start.elapsed(),
                latency: Duration::ZERO,
                outcome: Outcome::Mismatch("an answer nobody asked for".into()),
            });
        }
    }
    records
}

/// Runs every sender for `seconds`; returns each request's record and the time taken.
async fn load(
    system: &System,
    options: &Options,
    size: usize,
    seconds: u64,
) -> (Vec<Record>, Duration) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let lib_ab = system.library(&[&system.a, &system.b]);
    let lib_ba = system.library(&[&system.b, &system.a]);
    let legacy = system.legacy();
    let mut tasks = Vec::new();
    for i in 0..options.senders {
        let lib = if i % 2 == 0 { &lib_ab } else { &lib_ba };
        tasks.push(tokio::spawn(core_sender(
            "library",
            lib.clone(),
            start,
            deadline,
            size,
            i,
        )));
        tasks.push(tokio::spawn(core_sender(
            "hl7xfer",
            legacy.clone(),
            start,
            deadline,
            size,
            i,
        )));
        tasks.push(tokio::spawn(mllp_sender(
            system.daemon.ready["mllp"].clone(),
            start,
            deadline,
            size,
            i,
        )));
    }
    let mut records = Vec::new();
    for t in tasks {
        records.extend(t.await.expect("a sender"));
    }
    let elapsed = start.elapsed();
    lib_ab.close().await;
    lib_ba.close().await;
    (records, elapsed)
}

/// CPU time and peak memory of the processes over one phase.
struct Usage {
    cpu: Vec<(String, u32, Duration)>,
}

impl Usage {
    fn begin(pids: &[(&str, u32)]) -> Usage {
        for (_, pid) in pids {
            reset_peak(*pid);
        }
        Usage {
            cpu: pids
                .iter()
                .map(|(name, pid)| (name.to_string(), *pid, cpu_time(*pid)))
                .collect(),
        }
    }

    fn print(&self, transactions: usize, elapsed: Duration) {
        println!(
            "  {:<26} {:>8} {:>12} {:>14} {:>14}",
            "process", "CPU s", "% of a core", "CPU µs per tx", "peak RSS MiB"
        );
        for (name, pid, before) in &self.cpu {
            let used = cpu_time(*pid).saturating_sub(*before);
            println!(
                "  {:<26} {:>8.2} {:>12.0} {:>14.0} {:>14.1}",
                name,
                used.as_secs_f64(),
                100.0 * used.as_secs_f64() / elapsed.as_secs_f64(),
                used.as_micros() as f64 / transactions.max(1) as f64,
                status(*pid, "VmHWM") as f64 / 1024.0
            );
        }
    }
}

/// Prints the table of one phase and returns what went wrong.
fn report(records: &[Record], elapsed: Duration) -> Vec<String> {
    println!(
        "  {:<26} {:>8} {:>8} {:>9} {:>9} {:>9}   answers",
        "sender", "requests", "tx/s", "p50 ms", "p99 ms", "p999 ms"
    );
    let mut failures = Vec::new();
    for kind in ["library", "hl7xfer", "mllp", "all"] {
        let mine: Vec<&Record> = records
            .iter()
            .filter(|r| kind == "all" || r.kind == kind)
            .collect();
        let mut latencies: Vec<Duration> = mine.iter().map(|r| r.latency).collect();
        latencies.sort();
        let mut answers: BTreeMap<String, usize> = BTreeMap::new();
        for r in &mine {
            let key = match &r.outcome {
                Outcome::Receiver => "receiver's".to_owned(),
                Outcome::Ack(code) => code.clone(),
                Outcome::Missing(why) => {
                    failures.push(format!("{}: no answer: {why}", r.kind));
                    "NO ANSWER".to_owned()
                }
                Outcome::Mismatch(why) => {
                    failures.push(format!("{}: wrong answer: {why}", r.kind));
                    "WRONG ANSWER".to_owned()
                }
            };
            *answers.entry(key).or_default() += 1;
        }
        let answers: Vec<String> = answers.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!(
            "  {:<26} {:>8} {:>8.0} {:>9.2} {:>9.2} {:>9.2}   {}",
            match kind {
                "library" => "library (client core)",
                "hl7xfer" => "HL7Xfer via daemon",
                "mllp" => "MLLP via daemon",
                _ => "all",
            },
            mine.len(),
            mine.len() as f64 / elapsed.as_secs_f64(),
            quantile_ms(&latencies, 0.50),
            quantile_ms(&latencies, 0.99),
            quantile_ms(&latencies, 0.999),
            answers.join(", ")
        );
    }
    if !records
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Receiver))
    {
        failures.push("no request was answered by a receiver".into());
    }
    failures.sort();
    failures.dedup();
    failures
}

async fn run(options: &Options, dir: &Path) -> Result<(), Vec<String>> {
    let system = System::start(options, dir).await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "hnsecure load: {} senders of each kind, {} s a phase, {cores} core(s), every process on this machine",
        options.senders, options.seconds
    );
    println!(
        "  gateways A {} and B {} (one HNGard directory), client daemon hl7xfer={} mllp={}, MLLP receiver {}",
        system.a,
        system.b,
        system.daemon.ready["hl7xfer"],
        system.daemon.ready["mllp"],
        system.receiver.ready["mllp"]
    );
    // Warm up: connections made, pools filled.
    let _ = load(&system, options, 1024, 1).await;

    let mut failures = Vec::new();
    // Every request of every phase, for the journal's check at the end.
    let mut all = Vec::new();
    for size in [1024usize, 64 * 1024] {
        println!("\n{} KiB requests and answers", size / 1024);
        let mut pids = system.processes().to_vec();
        pids.push(("senders (this program)", std::process::id()));
        let usage = Usage::begin(&pids);
        let (records, elapsed) = load(&system, options, size, options.seconds).await;
        failures.extend(report(&records, elapsed));
        usage.print(records.len(), elapsed);
        let transactions = records.len();
        let connections = 3 * options.senders;
        let echo = tls_echo(
            connections,
            Duration::from_secs(options.seconds.div_ceil(2)),
            size,
        )
        .await;
        let env = envelope_ceiling(
            cores,
            Duration::from_secs(options.seconds.div_ceil(2)),
            size,
        );
        println!(
            "  ceiling: bare rustls echo, {connections} connections: {:.0} tx/s (p50 {:.2} ms); \
             3DES envelope alone (4 operations a transaction, {cores} threads): {env:.0} tx/s",
            echo.0, echo.1
        );
        println!(
            "  the system ran at {:.0}% of the envelope's ceiling and {:.1}% of the TLS echo's",
            100.0 * transactions as f64 / elapsed.as_secs_f64() / env,
            100.0 * transactions as f64 / elapsed.as_secs_f64() / echo.0
        );
        all.extend(records);
    }

    let (problems, records) = failover(&system, options).await;
    failures.extend(problems);
    all.extend(records);
    let (problems, records) = store_failure(&system, options).await;
    failures.extend(problems);
    all.extend(records);
    failures.extend(journal_check(&system, &all));
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// A 1 KiB run during which gateway A is killed at a third and started at two thirds.
async fn failover(system: &System, options: &Options) -> (Vec<String>, Vec<Record>) {
    let seconds = options.seconds.max(3) * 3 / 2;
    println!(
        "\nfailover: 1 KiB for {seconds} s; gateway A killed (SIGKILL) at a third, started again at two thirds"
    );
    let third = Duration::from_secs_f64(seconds as f64 / 3.0);
    let chaos = async {
        let t0 = Instant::now();
        tokio::time::sleep(third).await;
        system.gate_a.lock().expect("gateway A").kill();
        let killed = t0.elapsed();
        tokio::time::sleep(third).await;
        let again = start_gate(&system.hnsecure, &system.dir, "a");
        *system.gate_a.lock().expect("gateway A") = again;
        (killed, t0.elapsed())
    };
    let ((records, elapsed), (killed, restarted)) =
        tokio::join!(load(system, options, 1024, seconds), chaos);
    let mut failures = report(&records, elapsed);
    // Served while A was down: requests sent a moment after the kill and answered by a
    // receiver before the restart.
    let outage_start = killed + Duration::from_millis(500);
    for kind in ["library", "hl7xfer", "mllp"] {
        let served = records
            .iter()
            .filter(|r| r.kind == kind && r.sent >= outage_start && r.sent + r.latency < restarted)
            .filter(|r| matches!(r.outcome, Outcome::Receiver))
            .count();
        let acked = records
            .iter()
            .filter(|r| r.kind == kind && matches!(r.outcome, Outcome::Ack(_)))
            .count();
        println!(
            "  {kind:<8} {served} answered by receivers while A was down (killed at {:.1} s, back at {:.1} s); {acked} network ACKs in the run",
            killed.as_secs_f64(),
            restarted.as_secs_f64()
        );
        if served == 0 {
            failures.push(format!(
                "{kind}: not served while gateway A was down (no failover)"
            ));
        }
    }
    let only_a = system.library(&[&system.a]);
    let request = message(hnapi::gate::sim::ECHO_APPLICATION, 1024);
    match only_a.send_receive(&request, None).await {
        Ok(answer) if matches!(judge(&request, &answer.bytes), Outcome::Receiver) => {
            println!("  gateway A serves again after its restart");
        }
        other => failures.push(format!(
            "gateway A does not serve after its restart: {other:?}"
        )),
    }
    only_a.close().await;
    for (name, pid) in system.processes() {
        if std::fs::metadata(format!("/proc/{pid}")).is_err() {
            failures.push(format!("{name} died"));
        }
    }
    (failures, records)
}

/// A 1 KiB run during which the directory's database is locked (another connection's
/// exclusive transaction, as a stuck backup holds it) from a third to two thirds: every
/// request is answered — `HNPS013E` from the gateways while their journal cannot be
/// written — and the receivers answer again, journaled, once it is released.
async fn store_failure(system: &System, options: &Options) -> (Vec<String>, Vec<Record>) {
    // The lock must outlast the journal's wait for it (2 s) to make it fail.
    let seconds = (options.seconds.max(3) * 3 / 2).max(10);
    println!(
        "
store failure: 1 KiB for {seconds} s; the directory's database locked at a third, released at two thirds"
    );
    let third = Duration::from_secs_f64(seconds as f64 / 3.0);
    let db = system.dir.join("gard").join("gard.db");
    let chaos = async {
        let t0 = Instant::now();
        tokio::time::sleep(third).await;
        let lock = tokio::task::spawn_blocking(move || {
            let c = rusqlite::Connection::open(&db).expect("the directory's database");
            c.busy_timeout(Duration::from_secs(10))
                .expect("busy timeout");
            c.execute_batch("BEGIN EXCLUSIVE").expect("the lock");
            c
        })
        .await
        .expect("locking");
        let locked = t0.elapsed();
        tokio::time::sleep(third).await;
        lock.execute_batch("ROLLBACK").expect("the release");
        (locked, t0.elapsed())
    };
    let ((records, elapsed), (locked, released)) =
        tokio::join!(load(system, options, 1024, seconds), chaos);
    let mut failures = report(&records, elapsed);
    let refused = records
        .iter()
        .filter(|r| matches!(&r.outcome, Outcome::Ack(code) if code == "HNPS013E"))
        .count();
    let after = records
        .iter()
        .filter(|r| r.sent > released + Duration::from_millis(1500))
        .filter(|r| matches!(r.outcome, Outcome::Receiver))
        .count();
    let others: BTreeMap<String, usize> = records
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Ack(code) if code != "HNPS013E" => Some(code.clone()),
            _ => None,
        })
        .fold(BTreeMap::new(), |mut m, c| {
            *m.entry(c).or_default() += 1;
            m
        });
    println!(
        "  locked at {:.1} s, released at {:.1} s: {refused} answered HNPS013E, {after} answered by receivers after; other network ACKs: {others:?}",
        locked.as_secs_f64(),
        released.as_secs_f64()
    );
    if refused == 0 {
        failures.push(
            "store failure: no request was answered HNPS013E while the journal was locked".into(),
        );
    }
    if after == 0 {
        failures.push("store failure: the receivers did not answer again after the release".into());
    }
    (failures, records)
}

/// Every request of the run that got a receiver's answer has exactly one row in the
/// journal (facility, control id, outcome), and no row is there twice.
fn journal_check(system: &System, records: &[Record]) -> Vec<String> {
    let gard = match hnapi::gard::Gard::open(&system.dir.join("gard")) {
        Ok(gard) => gard,
        Err(e) => return vec![format!("journal: the directory does not open: {e}")],
    };
    let filter = hnapi::gard::AuditFilter {
        kind: Some(hnapi::gard::AuditKind::Transaction),
        facility: Some(FACILITY.to_owned()),
        ..hnapi::gard::AuditFilter::default()
    };
    let rows = match gard.audit(&filter) {
        Ok(rows) => rows,
        Err(e) => return vec![format!("journal: cannot be read: {e}")],
    };
    let mut by_control: BTreeMap<&str, Vec<&hnapi::gard::AuditRecord>> = BTreeMap::new();
    for row in &rows {
        by_control
            .entry(row.control_id.as_str())
            .or_default()
            .push(row);
    }
    let mut failures = Vec::new();
    let mut answered = 0;
    for r in records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Receiver))
    {
        answered += 1;
        match by_control.get(r.control.as_str()).map(Vec::as_slice) {
            Some([row]) if row.outcome == "AA" => {}
            found => failures.push(format!(
                "journal: {} request {} answered by its receiver has {} row(s)",
                r.kind,
                r.control,
                found.map_or(0, <[_]>::len)
            )),
        }
    }
    let twice = by_control.values().filter(|v| v.len() > 1).count();
    if twice > 0 {
        failures.push(format!(
            "journal: {twice} control id(s) journaled more than once"
        ));
    }
    println!(
        "
journal: {answered} requests answered by their receivers in the run, {} rows; {} without exactly one row, {twice} journaled twice",
        rows.len(),
        failures.len().saturating_sub(usize::from(twice > 0))
    );
    failures.truncate(10);
    failures
}

/// The ceiling of TLS on this machine: `connections` tokio-rustls connections over
/// loopback (TLS 1.3, ECDSA P-256, mutual authentication, as the gateway's), each echoing
/// `size`-byte frames one at a time. Returns transactions a second and the p50 in ms.
async fn tls_echo(connections: usize, duration: Duration, size: usize) -> (f64, f64) {
    let (server, client) = support::tls_pair();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let addr = listener.local_addr().expect("address").to_string();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let server_task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let mut len = [0u8; 4];
                    if stream.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let n = u32::from_be_bytes(len) as usize;
                    if n > buf.len() || stream.read_exact(&mut buf[..n]).await.is_err() {
                        return;
                    }
                    if stream.write_all(&len).await.is_err()
                        || stream.write_all(&buf[..n]).await.is_err()
                        || stream.flush().await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, addr) = (client.clone(), addr.clone());
            tokio::spawn(async move {
                let mut stream = transport::connect(&addr, client, Duration::from_secs(5))
                    .await
                    .expect("echo connection");
                let request = message("ECHO", size);
                let mut frame = (request.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(&request);
                let mut back = vec![0u8; frame.len()];
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    stream.write_all(&frame).await.expect("echo write");
                    stream.flush().await.expect("echo flush");
                    stream.read_exact(&mut back).await.expect("echo read");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("echo"));
    }
    let elapsed = started.elapsed();
    server_task.abort();
    latencies.sort();
    (
        latencies.len() as f64 / elapsed.as_secs_f64(),
        quantile_ms(&latencies, 0.5),
    )
}

/// The ceiling of the 3DES envelope on this machine: transactions a second when each of
/// `threads` threads does nothing but what the envelope costs a transaction — seal and
/// open the request, seal and open the answer.
fn envelope_ceiling(threads: usize, duration: Duration, size: usize) -> f64 {
    let key = MasterKey::generate(1).expect("key");
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (key, done) = (&key, done.clone());
            scope.spawn(move || {
                let request = message("ECHO", size);
                while started.elapsed() < duration {
                    let sealed = envelope::seal(
                        key,
                        FACILITY,
                        Direction::Request,
                        &[0; 16],
                        envelope::now_ms(),
                        &request,
                    )
                    .expect("seal");
                    let opened =
                        envelope::open(key, &sealed.bytes, Direction::Request).expect("open");
                    let answer = envelope::seal(
                        key,
                        FACILITY,
                        Direction::Response,
                        &opened.header.nonce,
                        envelope::now_ms(),
                        &opened.plaintext,
                    )
                    .expect("seal");
                    envelope::open(key, &answer.bytes, Direction::Response).expect("open");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// `--role receiver`: an MLLP receiving system on 127.0.0.1 that answers each request AA,
/// as large as the request, until its standard input closes (its parent is gone).
fn receiver() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener");
        println!("ready mllp={}", listener.local_addr().expect("address"));
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let mut reader = MllpReader::new(tcp, 16 << 20);
                let mut out = Vec::new();
                while let Ok(Some(request)) = reader.next().await {
                    let answer = receiver_answer(&request);
                    out.clear();
                    if mllp::encode(&answer, &mut out).is_err() {
                        return;
                    }
                    if reader.get_mut().write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// AA for `request`, padded with NTE segments to the request's size.
fn receiver_answer(request: &[u8]) -> Vec<u8> {
    let id = field(request, "MSH-10").unwrap_or_default();
    let sender = field(request, "MSH-3").unwrap_or_default();
    let facility = field(request, "MSH-4").unwrap_or_default();
    let mut m = format!(
        "MSH|^~\\&|{MLLP_APPLICATION}|BC0003000|{sender}|{facility}|{}||ACK|{}|D|2.3\rMSA|AA|{id}\r",
        hl7::now_pacific(),
        hl7::new_control_id()
    );
    let mut n = 0;
    while m.len() + 80 < request.len() {
        n += 1;
        m.push_str(&format!(
            "NTE|{n}||RECEIVED AND ACCEPTED, PADDED TO THE REQUEST'S SIZE {n:06}\r"
        ));
    }
    m.into_bytes()
}
