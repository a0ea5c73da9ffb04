//! A private PostgreSQL server for tests: `initdb` into a fresh temporary folder, started
//! with `pg_ctl` on a free 127.0.0.1 port with its socket in that folder, stopped and
//! removed when dropped. PostgreSQL refuses to run as root, so when the tests run as root
//! the folder belongs to `nobody` and the server programs run through `runuser`.
//!
//! The server binaries come from `HNSECURE_PG_BIN` if set, else the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package). Without them a test fails
//! and says to install `postgresql`, unless `HNSECURE_SKIP_POSTGRES=1`, when it says
//! loudly that it skipped and passes.
//!
//! Authentication: `trust` on loopback, except the role [`PASSWORD_ROLE`], which must give
//! its password ([`PASSWORD`], SCRAM).
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A role that must authenticate with [`PASSWORD`].
pub const PASSWORD_ROLE: &str = "hnpw";
/// Its password.
pub const PASSWORD: &str = "pw-Zq81-secret";

/// The account the server runs as when the tests run as root.
const SERVER_USER: &str = "nobody";

pub struct Postgres {
    root: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    as_user: Option<&'static str>,
    pub port: u16,
}

fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HNSECURE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

impl Postgres {
    /// A running private server, or `None` when PostgreSQL is missing and
    /// `HNSECURE_SKIP_POSTGRES=1` says to skip.
    pub fn start(name: &str) -> Option<Self> {
        Self::start_with(name, false)
    }

    /// [`Postgres::start`]; `durable`: flush commits to disk (`fsync = on`) as a
    /// production server does, for measurements. Tests do without.
    pub fn start_with(name: &str, durable: bool) -> Option<Self> {
        let Some(bin) = bin_dir().filter(|b| b.join("pg_ctl").is_file()) else {
            if std::env::var("HNSECURE_SKIP_POSTGRES").as_deref() == Ok("1") {
                eprintln!(
                    "\n!!!!! SKIPPED {name}: the PostgreSQL server binaries are missing \
                     (HNSECURE_SKIP_POSTGRES=1) !!!!!\n"
                );
                return None;
            }
            panic!(
                "the PostgreSQL server binaries (initdb, pg_ctl) are not installed: install the \
                 Debian package postgresql (apt-get install postgresql), point HNSECURE_PG_BIN \
                 at their folder, or set HNSECURE_SKIP_POSTGRES=1 to skip these tests"
            );
        };
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "hnsecure-pg-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir(&root).unwrap();
        let is_root = fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let as_user = is_root.then_some(SERVER_USER);
        if as_user.is_some() {
            let status = Command::new("chown")
                .arg(SERVER_USER)
                .arg(&root)
                .status()
                .unwrap();
            assert!(status.success(), "chown {SERVER_USER} {}", root.display());
        }
        let data = root.join("data");
        let mut server = Self {
            root,
            data,
            bin,
            as_user,
            port: 0,
        };
        server.run(
            "initdb",
            &[
                "-D",
                server.data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--no-instructions",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        fs::write(
            server.data.join("pg_hba.conf"),
            format!(
                "local all all trust\n\
                 host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n\
                 host all all 127.0.0.1/32 trust\n"
            ),
        )
        .unwrap();
        // A free port: the one the system hands out now, tried again if another process
        // took it before the server bound it.
        for attempt in 0.. {
            server.port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync={} -c max_connections=60 \
                 -c shared_buffers=16MB",
                server.port,
                server.root.display(),
                if durable { "on" } else { "off" }
            );
            let log = server.root.join("server.log");
            if server.try_run(
                "pg_ctl",
                &[
                    "-D",
                    server.data.to_str().unwrap(),
                    "-l",
                    log.to_str().unwrap(),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &options,
                    "start",
                ],
            ) {
                break;
            }
            assert!(
                attempt < 3,
                "the PostgreSQL server does not start: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let mut admin = server.client("postgres");
        admin
            .batch_execute(&format!(
                "CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'"
            ))
            .unwrap();
        Some(server)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn try_run(&self, program: &str, args: &[&str]) -> bool {
        let out = self.command(program).args(args).output().unwrap();
        if !out.status.success() {
            eprintln!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out.status.success()
    }

    fn run(&self, program: &str, args: &[&str]) {
        assert!(self.try_run(program, args), "{program} failed");
    }

    /// A client connected as the superuser `postgres` to `dbname`.
    pub fn client(&self, dbname: &str) -> postgres::Client {
        postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname={dbname}",
                self.port
            ),
            postgres::NoTls,
        )
        .unwrap()
    }

    /// Makes a new, empty database, owned by `owner` (a role), and returns the URL a
    /// store uses for it as that role.
    pub fn database_for(&self, name: &str, owner: &str) -> String {
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {owner}"))
            .unwrap();
        format!("postgres://{owner}@127.0.0.1:{}/{name}", self.port)
    }

    /// Makes a new, empty database and returns its URL (user `postgres`, no password).
    pub fn database(&self, name: &str) -> String {
        self.database_for(name, "postgres")
    }

    /// The server's folder (its socket is there).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stops the server at once; a new connection fails until [`Postgres::restart`].
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    /// Starts the stopped server again on the same port.
    pub fn restart(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60",
            self.port,
            self.root.display()
        );
        let log = self.root.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Copies a directory's files with their modes, as an operator copies HNGard's
/// directory to another gateway (`cp -a`).
pub fn copy_directory(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir(to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o700)).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        fs::copy(entry.path(), &target).unwrap();
        let mode = entry.metadata().unwrap().permissions().mode();
        fs::set_permissions(&target, fs::Permissions::from_mode(mode)).unwrap();
    }
}
