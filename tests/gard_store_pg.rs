//! The PostgreSQL store on a private PostgreSQL server (`common_pg`): the same store
//! behaviours as SQLite (`common_store`), and several gateways' directories — copies of
//! one directory's files — sharing one database, through the library and the CLI.
//!
//! Needs the PostgreSQL server binaries (Debian: `postgresql`); see `common_pg`.

// Unix only: `common_pg` starts a private PostgreSQL server with initdb, as the user
// nobody, through Unix permissions and ownership; the Windows builds do not run it.
#![cfg(unix)]

mod common_pg;
mod common_store;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use common_pg::{Postgres, copy_directory};
use hnapi::gard::{
    AuditFilter, AuditKind, AuditRecord, AuthError, DuplicateKey, Gard, GardError, InitOptions,
    PostgresStore, Role, Status, Store, StoreConfig,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "hnsecure-gard-pg-{name}-{}-{:016x}",
            std::process::id(),
            u64::from_le_bytes(random)
        ));
        fs::create_dir(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn csr() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec()
}

fn postgres_config(url: &str) -> StoreConfig {
    StoreConfig::Postgres {
        url: url.to_owned(),
        password_file: None,
    }
}

#[test]
fn postgres_store_behaves_as_the_sqlite_store() {
    let Some(pg) = Postgres::start("conformance") else {
        return;
    };
    let store = PostgresStore::create(&pg.database("directory"), None).unwrap();
    common_store::directory(&store);
    let store = PostgresStore::create(&pg.database("renewal"), None).unwrap();
    common_store::renewal(&store);
    let store = PostgresStore::create(&pg.database("audit"), None).unwrap();
    common_store::audit(&store);
    let store = PostgresStore::create(&pg.database("duplicates"), None).unwrap();
    common_store::duplicates(&store);
    let store = PostgresStore::create(&pg.database("serves"), None).unwrap();
    common_store::serves(&store);
    let store = PostgresStore::create(&pg.database("failures"), None).unwrap();
    common_store::failures(&store);

    // Two stores (two processes' worth of connections) on one database race on keys.
    let url = pg.database("race");
    let a = PostgresStore::create(&url, None).unwrap();
    let b = PostgresStore::open(&url, None).unwrap();
    common_store::duplicate_race(Arc::new(a), Arc::new(b));

    // The schema is versioned; init refuses a database that already holds a directory,
    // and a newer schema is refused with a clear sentence.
    let version: i32 = pg
        .client("race")
        .query_one("SELECT version FROM schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(version as u32, PostgresStore::schema_version());
    let e = PostgresStore::create(&url, None).err().unwrap().to_string();
    assert!(e.contains("already holds an HNGard directory"), "{e}");
    pg.client("race")
        .batch_execute("UPDATE schema_version SET version = 99")
        .unwrap();
    let e = PostgresStore::open(&url, None).err().unwrap().to_string();
    assert!(e.contains("schema version 99 is newer"), "{e}");
    assert!(e.contains(&url), "{e}");
}

#[test]
fn postgres_store_migrates_a_first_version_directory() {
    let Some(pg) = Postgres::start("migrate") else {
        return;
    };
    let url = pg.database("migrate");
    drop(PostgresStore::create(&url, None).unwrap());
    // Back to the first schema version: without what version 2 added.
    pg.client("migrate")
        .batch_execute(
            "DROP TABLE facility_serves; DROP TABLE registration_failures;
             UPDATE schema_version SET version = 1;
             INSERT INTO facilities (id, name, role, status, created_at)
             VALUES ('BC1', 'Server', 'server', 'pending', 1700000000)",
        )
        .unwrap();
    let store = PostgresStore::open(&url, None).unwrap();
    let version: i32 = pg
        .client("migrate")
        .query_one("SELECT version FROM schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(version as u32, PostgresStore::schema_version());
    let f = store.facility("BC1").unwrap().unwrap();
    assert_eq!((f.role, f.serves.len()), (Role::Server, 0));
    let names = vec!["HNAPI-DEMO".to_owned()];
    store.set_serves("BC1", &names).unwrap();
    assert_eq!(store.credential("BC1").unwrap().unwrap().serves, names);
    let now = jiff::Timestamp::now();
    store
        .record_failures(&["address:192.0.2.1".to_owned()], now, now)
        .unwrap();
    assert_eq!(store.failures("address:192.0.2.1", now).unwrap(), 1);
}

#[test]
fn gateways_sharing_a_postgres_directory_share_served_names_and_registration_limits() {
    let Some(pg) = Postgres::start("limits") else {
        return;
    };
    let tmp = TempDir::new("limits");
    let (a, b) = gard_pair(&pg, &tmp, "limits");
    let ip = |text: &str| -> std::net::IpAddr { text.parse().unwrap() };

    // Served names set through A are what B authenticates.
    let code = a
        .add_facility_serving(
            "BC00000099",
            "Demo server",
            Role::Server,
            &["HNAPI-DEMO".to_owned()],
            WEEK,
        )
        .unwrap();
    let registration = b
        .register("BC00000099", &code, &csr(), ip("10.0.0.1"))
        .unwrap();
    let cert = CertificateDer::from_pem_slice(registration.certificate_pem.as_bytes()).unwrap();
    assert_eq!(b.authenticate(&cert).unwrap().serves, ["HNAPI-DEMO"]);
    let g = b.generation().unwrap();
    a.set_serves(
        "BC00000099",
        &["HNAPI-LAB".to_owned(), "HNAPI-DEMO".to_owned()],
    )
    .unwrap();
    assert!(b.generation().unwrap() > g);
    assert_eq!(
        b.authenticate(&cert).unwrap().serves,
        ["HNAPI-DEMO", "HNAPI-LAB"]
    );

    // Failures through A lock the address for B too, and for a restarted gateway.
    let code = a.add_facility("BC1", "Clinic", Role::Client, WEEK).unwrap();
    for _ in 0..5 {
        let _ = a.register("BC1", "AAAA-AAAA-AAAA-AAAA", &csr(), ip("192.0.2.66"));
    }
    assert!(matches!(
        b.register("BC1", &code, &csr(), ip("192.0.2.66")),
        Err(hnapi::gard::RegisterError::RateLimited)
    ));
    drop(b);
    let restarted = Gard::open(&tmp.0.join("b")).unwrap();
    assert!(matches!(
        restarted.register("BC1", &code, &csr(), ip("192.0.2.66")),
        Err(hnapi::gard::RegisterError::RateLimited)
    ));
    // The facility, attacked from that address, still registers from another one.
    let started = std::time::Instant::now();
    restarted
        .register("BC1", &code, &csr(), ip("198.51.100.1"))
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "slowed down"
    );
}

#[test]
fn postgres_store_reconnects_after_the_server_restarts() {
    let Some(pg) = Postgres::start("restart") else {
        return;
    };
    let url = pg.database("restart");
    let store = PostgresStore::create(&url, None).unwrap();
    // Use every connection, so that each holds a connection the restart breaks.
    let stores: Vec<_> = (0..8).map(|_| &store).collect();
    std::thread::scope(|s| {
        for store in &stores {
            s.spawn(|| store.generation().unwrap());
        }
    });
    assert!(
        store
            .add_facility(
                &common_store::facility("BC1"),
                &common_store::code(1, 2_000_000_000)
            )
            .unwrap()
    );

    pg.stop();
    let e = store.generation().err().unwrap().to_string();
    assert!(e.contains(&url), "{e}");
    pg.restart();
    // Each connection broken by the restart is replaced on its next use: no call fails.
    for i in 0..12 {
        assert_eq!(store.generation().unwrap(), 1, "call {i}");
        assert!(
            !store
                .check_duplicate(
                    &common_store::key(&format!("R{i}")),
                    jiff::Timestamp::now(),
                    jiff::Timestamp::now(),
                )
                .unwrap()
        );
    }
}

fn gard_pair(pg: &Postgres, tmp: &TempDir, db: &str) -> (Gard, Gard) {
    let url = pg.database(db);
    let dir_a = tmp.0.join("a");
    let a = Gard::init_with_store(&dir_a, &InitOptions::default(), &postgres_config(&url)).unwrap();
    assert!(!dir_a.join("gard.db").exists());
    assert!(dir_a.join("gard.toml").is_file());
    let dir_b = tmp.0.join("b");
    copy_directory(&dir_a, &dir_b);
    let b = Gard::open(&dir_b).unwrap();
    assert_eq!(b.store_config().unwrap(), postgres_config(&url));
    (a, b)
}

#[test]
fn gateways_sharing_a_postgres_directory_see_each_others_changes() {
    let Some(pg) = Postgres::start("shared") else {
        return;
    };
    let tmp = TempDir::new("shared");
    let (admin, gateway) = gard_pair(&pg, &tmp, "shared");

    // Registered through one gateway, authenticated by the other.
    let g0 = gateway.generation().unwrap();
    let code = admin
        .add_facility("BC00000098", "Royal Jubilee Lab", Role::Client, WEEK)
        .unwrap();
    assert!(gateway.generation().unwrap() > g0, "B sees A's change");
    let registration = gateway
        .register("BC00000098", &code, &csr(), "10.0.0.1".parse().unwrap())
        .unwrap();
    assert_eq!(
        admin.facility("BC00000098").unwrap().unwrap().status,
        Status::Active
    );
    let cert = CertificateDer::from_pem_slice(registration.certificate_pem.as_bytes()).unwrap();
    let peer = admin.authenticate(&cert).unwrap();
    assert_eq!(peer.key.as_bytes(), registration.key.as_bytes());
    assert_eq!(
        gateway.authenticate(&cert).unwrap().key.as_bytes(),
        registration.key.as_bytes()
    );

    // A revocation made through A: B refuses the facility at once, and its generation moved.
    let g1 = gateway.generation().unwrap();
    admin.revoke("BC00000098").unwrap();
    assert!(gateway.generation().unwrap() > g1);
    assert_eq!(gateway.revoked().unwrap(), ["BC00000098"]);
    assert!(matches!(
        gateway.authenticate(&cert),
        Err(AuthError::Revoked)
    ));

    // A duplicate key recorded through A is a duplicate for B.
    let key = DuplicateKey {
        control_id: "20261123100000".to_owned(),
        facility: "BC00000098".to_owned(),
        application: "LABAPP".to_owned(),
    };
    let window = Duration::from_secs(600);
    assert!(!admin.check_duplicate(&key, window).unwrap());
    assert!(gateway.check_duplicate(&key, window).unwrap());
    assert_eq!(admin.prune_duplicates(window).unwrap(), 0);

    // One audit journal.
    let record = AuditRecord {
        at: jiff::Timestamp::now()
            .round(jiff::Unit::Microsecond)
            .unwrap(),
        kind: AuditKind::Security,
        facility: "BC00000098".to_owned(),
        peer: "10.0.0.1:40000".to_owned(),
        sending_application: String::new(),
        control_id: String::new(),
        message_type: String::new(),
        route: String::new(),
        destination: String::new(),
        outcome: "refused".to_owned(),
        code: "revoked".to_owned(),
        latency_ms: 0,
        request_bytes: 0,
        answer_bytes: 0,
        detail: "the facility is revoked".to_owned(),
    };
    gateway.record_audit(std::slice::from_ref(&record)).unwrap();
    assert_eq!(admin.audit(&AuditFilter::default()).unwrap(), [record]);
    assert_eq!(admin.prune_audit(Duration::from_secs(3600)).unwrap(), 0);

    // A key file that does not belong to the database is caught when a key is unsealed.
    fs::write(tmp.0.join("b").join("storage.key"), [7u8; 32]).unwrap();
    let code = admin
        .add_facility("BC2", "Second", Role::Client, WEEK)
        .unwrap();
    let registration = admin
        .register("BC2", &code, &csr(), "10.0.0.1".parse().unwrap())
        .unwrap();
    let stranger = Gard::open(&tmp.0.join("b")).unwrap();
    let cert = CertificateDer::from_pem_slice(registration.certificate_pem.as_bytes()).unwrap();
    assert!(matches!(
        stranger.authenticate(&cert),
        Err(AuthError::Store(GardError::SealedKey { .. }))
    ));
}

#[test]
fn a_postgres_directory_opens_and_works_inside_an_async_runtime() {
    let Some(pg) = Postgres::start("async") else {
        return;
    };
    let tmp = TempDir::new("async");
    let (admin, _) = gard_pair(&pg, &tmp, "async");
    drop(admin);
    let dir = tmp.0.join("b");
    // As the gateway does: open the directory in async code, call it from tasks.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let gard = Gard::open(&dir).unwrap();
        gard.add_facility("BC1", "Clinic", Role::Client, WEEK)
            .unwrap();
        assert_eq!(gard.facilities().unwrap().len(), 1);
        let gard = Arc::new(gard);
        let task = tokio::spawn({
            let gard = gard.clone();
            async move { gard.generation().unwrap() }
        });
        assert_eq!(task.await.unwrap(), 1);
    });
}

#[test]
fn a_postgres_password_comes_from_a_private_file_or_pgpassword() {
    let Some(pg) = Postgres::start("password") else {
        return;
    };
    let url = pg.database_for("secured", common_pg::PASSWORD_ROLE);
    let tmp = TempDir::new("password");
    let dir = tmp.0.join("gard");
    fs::create_dir(&dir).unwrap();
    let password_file = dir.join("pg-password");
    fs::write(&password_file, format!("{}\n", common_pg::PASSWORD)).unwrap();
    fs::set_permissions(&password_file, fs::Permissions::from_mode(0o644)).unwrap();
    let config = StoreConfig::Postgres {
        url: url.clone(),
        password_file: Some(PathBuf::from("pg-password")),
    };

    // A password file others can read is refused, and init makes nothing.
    let e = Gard::init_with_store(&dir, &InitOptions::default(), &config)
        .err()
        .unwrap();
    assert!(matches!(e, GardError::InsecurePermissions { .. }), "{e}");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "only pg-password");

    // Without the password, the server refuses: the error names the database, not a secret.
    let none = postgres_config(&url);
    let e = Gard::init_with_store(&dir, &InitOptions::default(), &none)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(&url), "{e}");
    assert!(e.contains("password"), "{e}");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "init cleaned up");

    fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600)).unwrap();
    let gard = Gard::init_with_store(&dir, &InitOptions::default(), &config).unwrap();
    gard.add_facility("BC1", "Clinic", Role::Client, WEEK)
        .unwrap();
    let toml = fs::read_to_string(dir.join("gard.toml")).unwrap();
    assert!(toml.contains("password_file = \"pg-password\""), "{toml}");
    assert!(!toml.contains(common_pg::PASSWORD), "{toml}");

    // The CLI opens it with the file; with PGPASSWORD when gard.toml names no file.
    let list = |dir: &Path, password: Option<&str>| -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hnsecure"));
        command
            .args(["gard", "--dir", dir.to_str().unwrap(), "list"])
            .env_remove("PGPASSWORD");
        if let Some(password) = password {
            command.env("PGPASSWORD", password);
        }
        command.output().unwrap()
    };
    let o = list(&dir, None);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("BC1"));
    fs::write(dir.join("gard.toml"), postgres_config(&url).to_toml()).unwrap();
    let o = list(&dir, None);
    assert_eq!(o.status.code(), Some(1));
    let o = list(&dir, Some(common_pg::PASSWORD));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("BC1"));
}

fn hnsecure(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hnsecure"))
        .args(["gard", "--dir", dir.to_str().unwrap()])
        .args(args)
        .env_remove("HNSECURE_GARD_DIR")
        .env_remove("PGPASSWORD")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn the_cli_initialises_a_postgres_directory_that_a_copy_shares() {
    let Some(pg) = Postgres::start("cli") else {
        return;
    };
    let url = pg.database("cli");
    let tmp = TempDir::new("cli");
    let first = tmp.0.join("first");
    let out = ok(&hnsecure(&first, &["init", "--store", &url]));
    assert!(
        out.contains(&first.join("gard.toml").display().to_string()),
        "{out}"
    );
    assert!(!out.contains("gard.db"), "{out}");
    assert!(out.contains(&format!("PostgreSQL database {url}")), "{out}");
    assert!(!first.join("gard.db").exists());

    let second = tmp.0.join("second");
    copy_directory(&first, &second);
    let code = ok(&hnsecure(
        &first,
        &["add", "BC00000098", "--name", "Royal Jubilee Lab"],
    ));
    assert_eq!(code.trim().len(), 19, "{code}");
    let list = ok(&hnsecure(&second, &["list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines[1].starts_with("BC00000098  client  pending  Royal Jubilee Lab"),
        "{list}"
    );
    ok(&hnsecure(&second, &["revoke", "BC00000098"]));
    assert!(ok(&hnsecure(&first, &["show", "BC00000098"])).contains("Status:            revoked"));
    assert_eq!(
        ok(&hnsecure(&second, &["audit", "--tsv"])).lines().count(),
        1
    );

    // The database is taken: a second init there is refused and leaves nothing behind.
    let third = tmp.0.join("third");
    let again = hnsecure(&third, &["init", "--store", &url]);
    assert_eq!(again.status.code(), Some(1));
    let told = String::from_utf8_lossy(&again.stderr);
    assert!(told.contains("already holds an HNGard directory"), "{told}");
    assert!(!third.exists());

    // A password in the URL is a usage error, and is not repeated.
    let with_password = format!("postgres://postgres:s3cret@127.0.0.1:{}/cli", pg.port);
    let refused = hnsecure(&third, &["init", "--store", &with_password]);
    assert_eq!(refused.status.code(), Some(2));
    let told = String::from_utf8_lossy(&refused.stderr);
    assert!(told.contains("holds a password"), "{told}");
    assert!(!told.contains("s3cret"), "{told}");
    assert!(!third.exists());
}
