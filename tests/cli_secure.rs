//! The secure core from the command line, as an operator and a vendor use it: separate
//! processes, real files, real TLS on loopback, stopped with SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{get, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_hnsecure");

fn hnsecure(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A daemon started in the background, with the `ready …` line it printed.
/// A running `hnsecure` daemon. Its log goes to a file, shown only when the test fails:
/// the refusals these tests provoke on purpose are not bare WARN lines in a passing run.
struct Daemon {
    child: Child,
    ready: String,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(args: &[&str]) -> Self {
        let log = temp_dir("cli-daemon").join("stderr.log");
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("ready "),
            "expected a ready line, got {line:?}; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Self {
            child,
            ready: line.trim_end().to_owned(),
            log,
        }
    }

    /// The value of `key=` in the ready line.
    fn ready_value(&self, key: &str) -> String {
        self.ready
            .split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in {:?}", self.ready))
            .to_owned()
    }

    /// SIGTERM, then the exit status within 15 s.
    fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the daemon's log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        if let Some(dir) = self.log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{name}.hl7"))
        .display()
        .to_string()
}

#[test]
fn operator_and_vendor_from_the_readme() {
    let dir = temp_dir("cli-flow");
    let gard = dir.join("gard");
    let gard = gard.to_str().unwrap();

    // The operator makes the directory and records a facility.
    let o = hnsecure(&["gard", "--dir", gard, "init"], b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = hnsecure(
        &[
            "gard",
            "--dir",
            gard,
            "add",
            "BC00000098",
            "--name",
            "Test Clinic",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let code = text(&o.stdout).trim().to_owned();
    assert!(
        !code.is_empty() && !code.contains(' '),
        "the code alone on stdout: {code:?}"
    );
    // The command `gard add` tells the operator to hand over, run later as printed.
    let told = text(&o.stderr);
    let hint = told
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("hnsecure client register "))
        .unwrap_or_else(|| panic!("no register command in {told}"))
        .to_owned();

    // The gateway.
    std::fs::write(
        dir.join("gate.toml"),
        "listen = \"127.0.0.1:0\"\ngard = \"gard\"\nfacility = \"HNGATE01\"\n[[route]]\napplication = \"*\"\ndestination = \"sim\"\n",
    )
    .unwrap();
    let pid_file = dir.join("gate.pid");
    let gate = Daemon::start(&[
        "gate",
        "--config",
        dir.join("gate.toml").to_str().unwrap(),
        "--log-level",
        "warn",
        "--pid-file",
        pid_file.to_str().unwrap(),
    ]);
    let addr = gate.ready_value("gate");
    // The pid file names this gateway, for `kill -HUP "$(cat gate.pid)"`.
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", gate.child.id())
    );

    // The vendor registers with the command gard add printed, only the gateway's address
    // filled in, in a folder holding the code and the CA certificate it names.
    let credential = dir.join("credential.toml");
    std::fs::write(dir.join("code.txt"), format!("{code}\n")).unwrap();
    std::fs::copy(dir.join("gard/ca.pem"), dir.join("ca.pem")).unwrap();
    let hint = hint.replace("HOST:PORT", &addr);
    let o = Command::new(BIN)
        .args(["client", "register"])
        .args(hint.split_whitespace())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{hint}: {}", text(&o.stderr));
    assert!(
        credential.exists(),
        "{hint} wrote no {}",
        credential.display()
    );
    let suggested = text(&o.stdout);
    assert!(
        suggested.contains("facility = \"BC00000098\""),
        "{suggested}"
    );
    std::fs::write(dir.join("client.toml"), &suggested).unwrap();

    // The code worked once.
    let o = hnsecure(
        &[
            "client",
            "register",
            "--gate",
            &addr,
            "--facility",
            "BC00000098",
            "--code",
            &code,
            "--ca",
            dir.join("gard/ca.pem").to_str().unwrap(),
            "--out",
            dir.join("again.toml").to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "a used code is refused: {}",
        text(&o.stderr)
    );
    assert!(text(&o.stderr).contains("refused"), "{}", text(&o.stderr));

    // Two files, three messages; the answers in order, one LF between them.
    let two = dir.join("two.hl7");
    let joined = [
        std::fs::read(example("v5_2_5_4_request")).unwrap(),
        std::fs::read(example("v5_2_5_5_request")).unwrap(),
    ]
    .concat();
    std::fs::write(&two, joined).unwrap();
    let o = hnsecure(
        &[
            "send",
            "--config",
            dir.join("client.toml").to_str().unwrap(),
            two.to_str().unwrap(),
            &example("v5_2_5_3_request"),
        ],
        b"",
    );
    // The Volume 5 examples' MSH-4 is not this facility: the gateway says so (VLDT008E)
    // for the two that name another, and answers the one sent as BC00000098.
    assert!(o.status.success(), "{}", text(&o.stderr));
    let answers: Vec<&[u8]> = o.stdout.split(|&b| b == b'\n').collect();
    assert_eq!(answers.len(), 3, "{:?}", text(&o.stdout));
    assert_eq!(
        get(answers[0], "MSA-1"),
        "AA",
        "2.5.4 is sent by BC00000098"
    );
    assert_eq!(get(answers[0], "MSA-2"), "20010915000017");
    assert_eq!(get(answers[1], "MSA-1"), "AA");
    assert!(
        get(answers[2], "MSA-3").starts_with("VLDT008E"),
        "2.5.3 is sent by NF20: {}",
        get(answers[2], "MSA-3")
    );
    assert!(text(&o.stderr).contains("3 sent"), "{}", text(&o.stderr));

    // Revoked from the command line: the gateway refuses the facility.
    let o = hnsecure(&["gard", "--dir", gard, "revoke", "BC00000098"], b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = hnsecure(
            &[
                "send",
                "--config",
                dir.join("client.toml").to_str().unwrap(),
                &example("v5_2_5_4_request"),
            ],
            b"",
        );
        if get(&o.stdout, "MSA-3").starts_with("TXFR029E") {
            assert_eq!(get(&o.stdout, "MSH-3"), "HNAPI");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not refused 10 s after revocation"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    assert_eq!(
        gate.terminate().code(),
        Some(0),
        "the gateway exits 0 on SIGTERM"
    );
    assert!(!pid_file.exists(), "a clean stop removes the pid file");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sandbox_serves_then_stops_and_is_reused() {
    let dir = temp_dir("cli-sandbox");
    let sandbox_dir = dir.join("sandbox");
    let args = [
        "sandbox",
        "--dir",
        sandbox_dir.to_str().unwrap(),
        "--port",
        "0",
        "--log-level",
        "warn",
    ];
    let sandbox = Daemon::start(&args);
    let client_config = sandbox.ready_value("client_config");
    assert!(Path::new(&client_config).exists());
    // The ready line is a contract: exactly these keys, in this order.
    let gate: std::net::SocketAddr = sandbox.ready_value("gate").parse().unwrap();
    assert!(gate.ip().is_loopback() && gate.port() != 0, "{gate}");
    let server_config = sandbox.ready_value("server_config");
    assert_eq!(
        sandbox.ready,
        format!("ready gate={gate} client_config={client_config} server_config={server_config}")
    );
    assert_eq!(
        Path::new(&client_config).parent(),
        Some(sandbox_dir.as_path())
    );
    assert_eq!(
        Path::new(&server_config),
        sandbox_dir.join("server.toml").as_path()
    );
    let o = hnsecure(
        &["send", "--config", &client_config, "-"],
        &std::fs::read(example("v5_2_5_4_request")).unwrap(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(get(&o.stdout, "MSA-1"), "AA");
    // Into a pipe: the answer's bytes as received, CR segment ends, no newline added.
    assert!(o.stdout.starts_with(b"MSH|"), "{:?}", text(&o.stdout));
    assert!(
        o.stdout.contains(&b'\r') && !o.stdout.contains(&b'\n'),
        "{:?}",
        text(&o.stdout)
    );
    // A garbled input beside a good one: the summary counts only what left the machine.
    let garbled = dir.join("garbled.hl7");
    std::fs::write(&garbled, b"MSH garbled, no field separator\r").unwrap();
    let o = hnsecure(
        &[
            "send",
            "--config",
            &client_config,
            &example("v5_2_5_4_request"),
            garbled.to_str().unwrap(),
        ],
        b"",
    );
    let summary = text(&o.stderr);
    assert!(!o.status.success(), "{summary}");
    assert!(
        summary.contains("1 sent in ") && summary.contains("1 not sent (refused before leaving"),
        "{summary}"
    );
    assert!(!summary.contains("without an answer"), "{summary}");
    assert_eq!(sandbox.terminate().code(), Some(0));

    let credential = std::fs::read(sandbox_dir.join("credential.toml")).unwrap();
    let again = Daemon::start(&args);
    let o = hnsecure(
        &[
            "send",
            "--pretty",
            "--config",
            &again.ready_value("client_config"),
            &example("v5_2_5_5_request"),
        ],
        b"",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("   MSA|AA|"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(
        std::fs::read(sandbox_dir.join("credential.toml")).unwrap(),
        credential,
        "reused, not registered again"
    );
    assert_eq!(again.terminate().code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn demo_runs_the_volume5_transactions() {
    let o = hnsecure(&["demo"], b"");
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", text(&o.stderr));
    assert!(out.contains("All answers were as expected."), "{out}");
    assert!(out.contains("HNHR517E"), "the duplicate person: {out}");
    assert!(out.contains("TXFR024E"), "the timeout: {out}");
    assert!(
        !out.lines().any(|l| l.trim_start().starts_with('✗')),
        "{out}"
    );
    // It says what ✓ means, why the timeout step is early, and what to try next, with
    // commands that work (the samples it names exist).
    assert!(
        out.contains("✓ when the answer is the one that step"),
        "{out}"
    );
    assert!(out.contains("about 2.7 s, not 3"), "{out}");
    assert!(
        out.contains("hnsecure sandbox --dir hnsecure-sandbox --port 0"),
        "{out}"
    );
    assert!(out.contains("examples/messages/*.hl7"), "{out}");
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/messages/v5_2_5_4_end_payer_relationship.hl7")
            .exists()
    );
}

#[test]
fn gate_refuses_a_bad_config_clearly() {
    let dir = temp_dir("cli-badgate");
    std::fs::write(
        dir.join("gate.toml"),
        "listen = \"127.0.0.1:0\"\ngard = \"gard\"\nfacility = \"X\"\ncolour = 1\n",
    )
    .unwrap();
    let o = hnsecure(
        &["gate", "--config", dir.join("gate.toml").to_str().unwrap()],
        b"",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("colour"), "{}", text(&o.stderr));
    std::fs::write(
        dir.join("gate.toml"),
        "listen = \"127.0.0.1:0\"\ngard = \"gard\"\nfacility = \"X\"\n",
    )
    .unwrap();
    let o = hnsecure(
        &["gate", "--config", dir.join("gate.toml").to_str().unwrap()],
        b"",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("HNGard"),
        "names the missing directory: {}",
        text(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sandbox_refuses_a_bad_facility_before_making_its_folder_and_hints_at_port_0() {
    let dir = temp_dir("cli-sandbox-refusals");
    let sandbox_dir = dir.join("sandbox");
    let o = hnsecure(
        &[
            "sandbox",
            "--dir",
            sandbox_dir.to_str().unwrap(),
            "--port",
            "0",
            "--facility",
            "not a facility",
        ],
        b"",
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("--facility"),
        "{}",
        text(&o.stderr)
    );
    assert!(!sandbox_dir.exists(), "nothing made for a refused facility");

    // A busy port: the error says so and names the way out.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let o = hnsecure(
        &[
            "sandbox",
            "--dir",
            sandbox_dir.to_str().unwrap(),
            "--port",
            &port,
            "--log-level",
            "warn",
        ],
        b"",
    );
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("is in use") && err.contains("--port 0"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn hnapi_demo_is_answered_with_a_hint_then_by_the_demo_server() {
    let dir = temp_dir("cli-demo-server");
    let sandbox_dir = dir.join("sandbox");
    let start = |demo: bool| {
        let mut args = vec![
            "sandbox",
            "--dir",
            sandbox_dir.to_str().unwrap(),
            "--port",
            "0",
        ];
        args.extend(["--log-level", "warn"]);
        if demo {
            args.push("--demo-server");
        }
        Daemon::start(&args)
    };
    let request = "MSH|^~\\&|DEMO|BC00000098|HNAPI-DEMO|BC0003000|20261203101010|TRAIN96|R03|CTL-DEMO-1|D|2.3\r\
                   PID||9999999999^^^BC^PH\r";
    // Without the flag nothing serves HNAPI-DEMO: HNPS007E, and an ERR that says how to
    // start a server application.
    let plain = start(false);
    let o = hnsecure(
        &["send", "--config", &plain.ready_value("client_config"), "-"],
        request.as_bytes(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(get(&o.stdout, "MSA-1"), "AR", "{}", text(&o.stdout));
    assert!(
        get(&o.stdout, "MSA-3").starts_with("HNPS007E "),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(get(&o.stdout, "ERR-1.4.1"), "HNPS007E");
    assert_eq!(get(&o.stdout, "ERR-1.4.2"), hnapi::sandbox::DEMO_HINT);
    assert_eq!(plain.terminate().code(), Some(0));

    // With it, the sandbox's own server application answers AA.
    let demo = start(true);
    let o = hnsecure(
        &["send", "--config", &demo.ready_value("client_config"), "-"],
        request.as_bytes(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(get(&o.stdout, "MSA-1"), "AA", "{}", text(&o.stdout));
    assert_eq!(get(&o.stdout, "MSA-2"), "CTL-DEMO-1");
    assert_eq!(get(&o.stdout, "MSH-3"), "HNAPI-DEMO");
    assert_eq!(get(&o.stdout, "MSH-6"), "BC00000098");
    assert_eq!(get(&o.stdout, "ERR-1.4.1"), "HJMB001I");
    // The simulator's routes answer as before.
    let o = hnsecure(
        &[
            "send",
            "--config",
            &demo.ready_value("client_config"),
            &example("v5_2_5_4_request"),
        ],
        b"",
    );
    assert_eq!(get(&o.stdout, "MSA-1"), "AA", "{}", text(&o.stdout));
    assert_eq!(
        demo.terminate().code(),
        Some(0),
        "stops with its demo server"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_sample_messages_are_answered_aa_by_a_new_sandbox() {
    let dir = temp_dir("cli-samples");
    let sandbox = Daemon::start(&[
        "sandbox",
        "--dir",
        dir.join("sandbox").to_str().unwrap(),
        "--port",
        "0",
        "--log-level",
        "warn",
    ]);
    let client_config = sandbox.ready_value("client_config");
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/messages");
    let mut samples: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "hl7"))
        .collect();
    samples.sort();
    assert!(samples.len() >= 3, "{samples:?}");
    for sample in &samples {
        let o = hnsecure(
            &["send", "--config", &client_config, sample.to_str().unwrap()],
            b"",
        );
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert_eq!(
            get(&o.stdout, "MSA-1"),
            "AA",
            "{}: {}",
            sample.display(),
            text(&o.stdout)
        );
    }
    assert_eq!(sandbox.terminate().code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn one_sandbox_per_folder_and_the_second_names_the_first() {
    let dir = temp_dir("cli-sandbox-lock");
    let sandbox_dir = dir.join("sandbox");
    let args = [
        "sandbox",
        "--dir",
        sandbox_dir.to_str().unwrap(),
        "--port",
        "0",
        "--log-level",
        "warn",
    ];
    let first = Daemon::start(&args);
    let client_toml = std::fs::read(first.ready_value("client_config")).unwrap();
    let o = hnsecure(&args, b"");
    let err = text(&o.stderr);
    assert!(!o.status.success(), "a second sandbox started: {err}");
    assert!(
        err.contains("in use by another hnsecure sandbox")
            && err.contains(&format!("process {}", first.child.id())),
        "{err}"
    );
    assert_eq!(
        std::fs::read(sandbox_dir.join("client.toml")).unwrap(),
        client_toml,
        "the first sandbox's client.toml is untouched"
    );
    // Once the first has stopped, the folder is free again.
    assert_eq!(first.terminate().code(), Some(0));
    let again = Daemon::start(&args);
    assert_eq!(again.terminate().code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

/// The commands a text suggests: `quoted` ones, and lines indented as examples.
fn hints(text: &str) -> Vec<String> {
    let mut found: Vec<String> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("hnsecure "))
        .map(str::to_owned)
        .collect();
    found.extend(
        text.lines()
            .map(str::trim_start)
            .filter(|l| l.starts_with("hnsecure "))
            .map(str::to_owned),
    );
    found
}

/// Runs `command` as a user pastes it into a shell, in `cwd`, with this build's hnsecure.
fn paste(command: &str, cwd: &Path) -> Output {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(cwd)
        .env("PATH", path)
        .env_remove("HNSECURE_GARD_DIR")
        .output()
        .unwrap()
}

#[test]
fn the_hints_gard_prints_work_as_printed() {
    let dir = temp_dir("cli-hints");
    let sandbox_dir = dir.join("sandbox");
    let sandbox = Daemon::start(&[
        "sandbox",
        "--dir",
        sandbox_dir.to_str().unwrap(),
        "--port",
        "0",
        "--log-level",
        "warn",
    ]);
    let gate = sandbox.ready_value("gate");
    let gard_dir = sandbox_dir.join("gard");
    let work = dir.join("facility");
    std::fs::create_dir_all(&work).unwrap();
    let gard = |args: &[&str]| {
        let mut all = vec!["gard", "--dir", gard_dir.to_str().unwrap()];
        all.extend_from_slice(args);
        hnsecure(&all, b"")
    };

    // add: the registration the facility is told to run, with the code saved as told.
    let added = gard(&["add", "BC00000077", "--name", "Hint Lab"]);
    assert!(added.status.success(), "{}", text(&added.stderr));
    std::fs::write(work.join("code.txt"), &added.stdout).unwrap();
    let told = hints(&text(&added.stderr));
    assert_eq!(told.len(), 1, "{}", text(&added.stderr));
    let register = told[0].replace("HOST:PORT", &gate);
    assert!(!register.contains("--code "), "{register}");
    let o = paste(&register, &work);
    assert!(o.status.success(), "{register}\n{}", text(&o.stderr));
    assert!(work.join("credential.toml").is_file());

    // add again: the new code, saved where the registration reads it.
    let again = gard(&["add", "BC00000077", "--name", "Hint Lab"]);
    assert_eq!(again.status.code(), Some(1));
    let told = hints(&text(&again.stderr));
    assert_eq!(told.len(), 1, "{}", text(&again.stderr));
    std::fs::remove_file(work.join("code.txt")).unwrap();
    let o = paste(&told[0], &work);
    assert!(o.status.success(), "{}\n{}", told[0], text(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(work.join("code.txt"))
            .unwrap()
            .len(),
        20
    );

    // An unknown facility: the listing it points at.
    let unknown = gard(&["show", "BC00000055"]);
    assert_eq!(unknown.status.code(), Some(1));
    let told = hints(&text(&unknown.stderr));
    assert_eq!(told.len(), 1, "{}", text(&unknown.stderr));
    let o = paste(&told[0], &work);
    assert!(o.status.success(), "{}\n{}", told[0], text(&o.stderr));
    assert!(
        text(&o.stdout).contains("BC00000077"),
        "{}",
        text(&o.stdout)
    );

    assert_eq!(sandbox.terminate().code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}
