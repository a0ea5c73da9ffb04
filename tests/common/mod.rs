//! A whole system for end-to-end tests: HNGard, a gateway on 127.0.0.1 with an
//! ephemeral port, and a registered facility — the real parts, over real TLS.
#![allow(dead_code)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use hnapi::hl7::{self, Message, MessageBuilder};
use hnapi::sandbox::{Sandbox, SandboxOptions};

pub const FACILITY: &str = "BC00000098";

/// A running sandbox, stopped and removed when dropped.
pub struct System {
    pub runtime: tokio::runtime::Runtime,
    pub sandbox: Option<Sandbox>,
    pub dir: PathBuf,
}

/// A fresh folder under the system's temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hnsecure-test-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl System {
    /// A sandbox whose routes all go to the simulator.
    pub fn start(name: &str) -> Self {
        Self::start_with(name, None)
    }

    /// A sandbox with this `gate.toml` (its `listen` is replaced by an ephemeral port).
    pub fn start_with(name: &str, gate_toml: Option<&str>) -> Self {
        let dir = temp_dir(name);
        if let Some(text) = gate_toml {
            std::fs::write(dir.join("gate.toml"), text).unwrap();
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let options = SandboxOptions {
            dir: dir.clone(),
            port: 0,
            facility: FACILITY.to_owned(),
            demo_server: false,
        };
        let sandbox = runtime
            .block_on(Sandbox::start(&options))
            .expect("the sandbox starts");
        Self {
            runtime,
            sandbox: Some(sandbox),
            dir,
        }
    }

    pub fn sandbox(&self) -> &Sandbox {
        self.sandbox.as_ref().unwrap()
    }

    pub fn addr(&self) -> String {
        self.sandbox().addr().to_string()
    }

    pub fn client_config(&self) -> PathBuf {
        self.sandbox().client_config()
    }

    pub fn gard_dir(&self) -> PathBuf {
        self.dir.join("gard")
    }

    pub fn credential(&self) -> PathBuf {
        self.dir.join("credential.toml")
    }

    /// A client.toml for the facility with these gateways, next to the credential.
    pub fn client_config_with(&self, gateways: &[String]) -> PathBuf {
        let list: Vec<String> = gateways.iter().map(|g| format!("\"{g}\"")).collect();
        let path = self
            .dir
            .join(format!("client-{}.toml", hl7::new_control_id()));
        std::fs::write(
            &path,
            format!(
                "facility = \"{FACILITY}\"\ncredential = \"credential.toml\"\ngateways = [{}]\ntimeout_secs = 10\nconnect_timeout_secs = 2\n",
                list.join(", ")
            ),
        )
        .unwrap();
        path
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if let Some(mut sandbox) = self.sandbox.take() {
            self.runtime.block_on(sandbox.stop());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Volume 5 example from `tests/data`, as `FACILITY` sends it, with a new control id.
pub fn example(name: &str) -> Vec<u8> {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(format!("{name}.hl7")),
    )
    .unwrap();
    let msg = Message::parse(&bytes).unwrap();
    let mut b = MessageBuilder::from_message(&msg);
    b.set(&"MSH-4".parse().unwrap(), FACILITY)
        .set(&"MSH-10".parse().unwrap(), hl7::new_control_id());
    b.to_bytes()
}

/// A minimal request from `FACILITY` to `application`.
pub fn request(application: &str, kind: &str, body: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|TEST|{FACILITY}|{application}|BC0003000|{}|TRAIN96|{kind}|{}|D|2.3\r{body}",
        hl7::now_pacific(),
        hl7::new_control_id()
    )
    .into_bytes()
}

/// The value at `path` as text.
pub fn get(bytes: &[u8], path: &str) -> String {
    let m = Message::parse(bytes)
        .unwrap_or_else(|e| panic!("not HL7 ({e}): {:?}", String::from_utf8_lossy(bytes)));
    m.value(&path.parse().unwrap()).text().into_owned()
}

/// A running `hnsecure` process (the real binary, its files its own), killed when dropped.
pub struct Process {
    pub child: Child,
    /// Its `ready …` line.
    pub ready: String,
    /// Its standard error.
    pub log: PathBuf,
}

impl Process {
    /// Starts `hnsecure ARGS CONFIG` (standard error to `log`) and reads its `ready …` line.
    pub fn start(args: &[&str], config: &Path, log: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hnsecure"))
            .args(args)
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert!(
            ready.starts_with("ready "),
            "{ready:?}; its log: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        Self {
            child,
            ready: ready.trim().to_owned(),
            log: log.to_owned(),
        }
    }

    /// `hnsecure gate --config CONFIG`.
    pub fn gate(config: &Path, log: &Path) -> Self {
        Self::start(&["gate", "--config"], config, log)
    }

    /// The value after `key=` in the ready line.
    pub fn value(&self, key: &str) -> String {
        self.ready
            .split(' ')
            .find_map(|part| part.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} in {:?}", self.ready))
            .to_owned()
    }

    /// The address after `key=` in the ready line.
    pub fn addr(&self, key: &str) -> SocketAddr {
        self.value(key).parse().unwrap()
    }

    /// Resident memory in KiB, from /proc; the process must be running.
    pub fn rss_kib(&mut self) -> u64 {
        assert!(self.child.try_wait().unwrap().is_none(), "the process died");
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Its open files, from /proc.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// Where a gateway's metrics are served, from its log.
    pub fn metrics(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap();
        text.split("metrics at http://")
            .nth(1)
            .and_then(|rest| rest.split("/metrics").next())
            .unwrap_or_else(|| panic!("{text}"))
            .to_owned()
    }

    /// Sends it the signal `name` (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
pub mod differential;

/// The security rows of the journal in `gard_dir` for which `wanted` holds, once there are
/// at least `n` (the gateway writes them in batches, from a thread of its own).
pub fn security_rows(
    gard_dir: &Path,
    n: usize,
    wanted: impl Fn(&hnapi::gard::AuditRecord) -> bool,
) -> Vec<hnapi::gard::AuditRecord> {
    let gard = hnapi::gard::Gard::open(gard_dir).unwrap();
    let filter = hnapi::gard::AuditFilter {
        kind: Some(hnapi::gard::AuditKind::Security),
        ..hnapi::gard::AuditFilter::default()
    };
    let started = std::time::Instant::now();
    loop {
        let all = gard.audit(&filter).unwrap();
        let rows: Vec<hnapi::gard::AuditRecord> =
            all.iter().filter(|r| wanted(r)).cloned().collect();
        if rows.len() >= n {
            return rows;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{} of {n} rows; the security journal: {all:#?}",
            rows.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A receiving system of other software, run as a process that prints `ready PORT` on
/// standard output once it listens on 127.0.0.1; killed when dropped.
pub struct PeerReceiver {
    child: Child,
    pub addr: SocketAddr,
}

impl PeerReceiver {
    /// Starts `command` and waits for its ready line; `what` names it in a failure.
    pub fn start(mut command: Command, what: &str) -> Self {
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{what}: no ready line: {line:?}"));
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for PeerReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
