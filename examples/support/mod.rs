//! What the load and scale programs share: the system's processes, what /proc says about
//! them, requests of a given size, and latency percentiles.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hnapi::hl7::{self, Message};
use hnapi::sandbox::{Sandbox, SandboxOptions};
use hnapi::transport::tls;

/// The facility the sandbox registers, as every request's MSH-4.
pub const FACILITY: &str = "BC00000098";

/// Reads `--NAME VALUE` options; a flag with no value is `"true"`.
pub fn arguments() -> HashMap<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut map = HashMap::new();
    let mut i = 0;
    while i < args.len() {
        if let Some(name) = args[i].strip_prefix("--") {
            match args.get(i + 1).filter(|v| !v.starts_with("--")) {
                Some(value) => {
                    map.insert(name.to_owned(), value.clone());
                    i += 2;
                }
                None => {
                    map.insert(name.to_owned(), "true".to_owned());
                    i += 1;
                }
            }
        } else {
            i += 1;
        }
    }
    map
}

/// The number option `name`, or `default`.
pub fn number(args: &HashMap<String, String>, name: &str, default: u64) -> u64 {
    match args.get(name) {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("--{name} takes a whole number, not {v:?}");
            std::process::exit(2)
        }),
    }
}

/// The `hnsecure` binary: `--hnsecure PATH`, or the one built next to this program
/// (`target/PROFILE/examples/NAME` → `target/PROFILE/hnsecure`).
pub fn hnsecure_binary(args: &HashMap<String, String>) -> PathBuf {
    let path = match args.get("hnsecure") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("hnsecure")))
            .unwrap_or_else(|| PathBuf::from("hnsecure")),
    };
    if !path.exists() {
        eprintln!(
            "{} is missing: build it first (cargo build --release --bin hnsecure), or name it with --hnsecure PATH",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

/// A fresh private folder for this run's directory, configurations and logs.
pub fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hnsecure-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Makes HNGard's directory in `dir/gard` and registers the facility (its credential in
/// `dir/credential.toml`), the way `hnsecure sandbox` does; the sandbox's own gateway is
/// stopped again, so that the programs can run theirs as processes.
pub async fn make_directory(dir: &Path) {
    let mut sandbox = Sandbox::start(&SandboxOptions {
        dir: dir.to_path_buf(),
        port: 0,
        facility: FACILITY.to_owned(),
        demo_server: false,
    })
    .await
    .unwrap_or_else(|e| panic!("the directory cannot be made: {e}"));
    sandbox.stop().await;
}

/// A free port on 127.0.0.1 (free when asked; a gateway that is restarted keeps it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A process of the system under test: killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    /// The `key=value` pairs of its `ready …` line.
    pub ready: HashMap<String, String>,
}

impl Proc {
    /// Starts `command` (standard error to `log`), and waits up to 60 s for its `ready …` line.
    pub fn start(name: &str, mut command: Command, log: &Path) -> Proc {
        let log_file = std::fs::File::create(log).expect("log file");
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            // Keep reading so that the process never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(line)) if line.starts_with("ready ") => line,
            other => {
                let _ = child.kill();
                let log_text = std::fs::read_to_string(log).unwrap_or_default();
                panic!("{name} did not get ready ({other:?}); its log:\n{log_text}");
            }
        };
        let ready = line
            .trim_start_matches("ready ")
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Proc {
            name: name.to_owned(),
            child,
            ready,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it at once (SIGKILL: no grace, as a crash or a power cut).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// True while it runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// User + system CPU time of process `pid` so far, from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// A field of /proc/PID/status as a number (kB for the memory fields).
pub fn status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Starts measuring process `pid`'s peak resident memory afresh (VmHWM := VmRSS).
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// A request of about `size` bytes (at least about 150) to `application` from the
/// facility, with a new control id.
pub fn message(application: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "MSH|^~\\&|LOAD|{FACILITY}|{application}|BC0003000|{}|LOAD|R03|{}|D|2.3\rPID||9029274643^^^BC^PH\r",
        hl7::now_pacific(),
        hl7::new_control_id()
    );
    let mut n = 0;
    while m.len() + 90 < size {
        n += 1;
        m.push_str(&format!(
            "NTE|{n}||FILLER TEXT SO THAT THE MESSAGE IS AS LARGE AS THE RUN ASKS {n:06}\r"
        ));
    }
    // The last bytes lengthen the last segment's text (a line of its own would be a
    // segment without an id, which the gateway refuses).
    m.pop();
    while m.len() + 1 < size {
        m.push('X');
    }
    m.push('\r');
    m.into_bytes()
}

/// The value at `path` (`MSH-10`, `MSA-2`) of an HL7 message; `None` when it is not one.
pub fn field(bytes: &[u8], path: &str) -> Option<String> {
    let m = Message::parse(bytes).ok()?;
    Some(m.value(&path.parse().ok()?).text().into_owned())
}

/// The `p` quantile (0..=1) of sorted durations, in milliseconds.
pub fn quantile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// A TLS configuration pair as HNGard makes them (a CA, a server certificate for
/// 127.0.0.1, a client certificate; ECDSA P-256, TLS 1.3, mutual authentication) for
/// the reference servers the figures are compared with.
pub fn tls_pair() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(names)
            .expect("leaf")
            .signed_by(&key, &issuer)
            .expect("leaf");
        (
            vec![cert.der().clone()],
            tls::private_key_from_pem(key.serialize_pem().as_bytes()).expect("key"),
        )
    };
    let (server_chain, server_key) = leaf(vec!["127.0.0.1".into()]);
    let (client_chain, client_key) = leaf(vec!["client".into()]);
    let ca = vec![ca_cert.der().clone()];
    (
        tls::server_config(server_chain, server_key, &ca).expect("server"),
        tls::client_config(&ca, Some((client_chain, client_key))).expect("client"),
    )
}
