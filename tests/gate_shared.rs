//! Two gateways sharing one directory in PostgreSQL (a private server started by the
//! test): a facility registered through gateway A is served by gateway B, a duplicate
//! seen by A is answered as such by B, and a revocation made on A refuses the facility on
//! B — its live connection closed within five seconds, as it is when the facility
//! registers again.

// Unix only: `common_pg` starts a private PostgreSQL server with initdb, as the user
// nobody, through Unix permissions and ownership; the Windows builds do not run it.
#![cfg(unix)]

mod common;
mod common_pg;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{FACILITY, get};
use common_pg::{Postgres, copy_directory};
use hnapi::client::Client;
use hnapi::gard::{Gard, InitOptions, Role, StoreConfig};
use hnapi::gate::{Gate, GateConfig};
use hnapi::hl7::NetworkCode;

/// Starts a gateway on the directory `gard`; returns its address and its stop switch.
fn start_gate(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    name: &str,
    gard: &Path,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let path = dir.join(format!("{name}.toml"));
    fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\ngard = \"{}\"\nfacility = \"HNGATE-{name}\"\nrevocation_poll_ms = 200\n\
             [[route]]\napplication = \"HNSIM-ECHO\"\ndestination = \"sim\"\nduplicate_window_secs = 600\n",
            gard.display()
        ),
    )
    .unwrap();
    let gate = runtime
        .block_on(Gate::bind(GateConfig::from_file(&path).unwrap()))
        .unwrap();
    let addr = gate.local_addr().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(gate.run(async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn client_for(dir: &Path, gate: &str) -> Client {
    let path = dir.join(format!("client-{}.toml", gate.replace([':', '.'], "-")));
    fs::write(
        &path,
        format!(
            "facility = \"{FACILITY}\"\ncredential = \"credential.toml\"\ngateways = [\"{gate}\"]\n\
             timeout_secs = 10\nconnect_timeout_secs = 2\n"
        ),
    )
    .unwrap();
    Client::open_file(&path).unwrap()
}

fn echo(control: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|LAB|{FACILITY}|HNSIM-ECHO|BC0003000|20261123120000||R03|{control}|D|2.3\rNTE|||x\r"
    )
    .into_bytes()
}

#[test]
fn two_gateways_share_facilities_duplicates_and_revocations() {
    let Some(pg) = Postgres::start("gate-shared") else {
        return;
    };
    let url = pg.database("hngard_shared");
    let dir = common::temp_dir("gate-shared");
    let (dir_a, dir_b) = (dir.join("gard-a"), dir.join("gard-b"));
    let store = StoreConfig::Postgres {
        url,
        password_file: None,
    };
    let gard_a = Gard::init_with_store(&dir_a, &InitOptions::default(), &store).unwrap();
    copy_directory(&dir_a, &dir_b);
    let code = gard_a
        .add_facility(
            FACILITY,
            "Victoria Clinic",
            Role::Client,
            Duration::from_secs(3600),
        )
        .unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (addr_a, stop_a) = start_gate(&runtime, &dir, "A", &dir_a);
    let (addr_b, stop_b) = start_gate(&runtime, &dir, "B", &dir_b);

    // Registered through A...
    let ca = gard_a.ca_pem().unwrap();
    let credential = runtime
        .block_on(hnapi::client::register(
            &addr_a,
            FACILITY,
            &code,
            &ca,
            Duration::from_secs(10),
        ))
        .unwrap();
    credential.write(&dir.join("credential.toml")).unwrap();
    let via_a = client_for(&dir, &addr_a);
    let via_b = client_for(&dir, &addr_b);

    // ...served by both; a duplicate seen by A is answered as such by B.
    let control = format!("SHARED{}", hnapi::hl7::new_control_id());
    let first = via_a.send_receive(&echo(&control), None).unwrap().bytes;
    assert_eq!(get(&first, "MSA-1"), "AA");
    let again = via_b.send_receive(&echo(&control), None).unwrap().bytes;
    assert_eq!(get(&again, "MSH-3"), "HNGATE");
    assert_eq!(get(&again, "MSH-4"), "HNGATE-B", "answered by B");
    assert_eq!(get(&again, "MSA-1"), "AE");
    assert!(get(&again, "MSA-3").starts_with("HNPS009E"));
    let fresh = format!("FRESH{}", hnapi::hl7::new_control_id());
    assert_eq!(
        get(
            &via_b.send_receive(&echo(&fresh), None).unwrap().bytes,
            "MSA-1"
        ),
        "AA"
    );

    // One journal: B's transactions are seen through A's copy.
    let started = Instant::now();
    while !gard_a
        .audit(&hnapi::gard::AuditFilter::default())
        .unwrap()
        .iter()
        .any(|r| r.control_id == fresh)
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B's row never reached the journal"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Registered again through A (a new certificate and envelope key): B closes the live
    // connection holding the old ones within 5 s, and journals it; the running client
    // (which keeps the key it read until restarted) is refused from then on.
    let code = gard_a.new_code(FACILITY, Duration::from_secs(600)).unwrap();
    let credential = runtime
        .block_on(hnapi::client::register(
            &addr_a,
            FACILITY,
            &code,
            &ca,
            Duration::from_secs(10),
        ))
        .unwrap();
    credential.write(&dir.join("credential.toml")).unwrap();
    // One row from each gateway: A closes via_a's connection, B via_b's.
    let started = Instant::now();
    while gard_a
        .audit(&hnapi::gard::AuditFilter::default())
        .unwrap()
        .iter()
        .filter(|r| r.code == "superseded" && r.facility == FACILITY)
        .count()
        < 2
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B kept a live connection holding a superseded credential"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stale = via_b
        .send_receive(&echo(&hnapi::hl7::new_control_id()), None)
        .unwrap();
    assert_eq!(stale.network_error, Some(NetworkCode::Txfr029E));
    let via_b = client_for(&dir, &addr_b);
    assert_eq!(
        get(
            &via_b
                .send_receive(&echo(&hnapi::hl7::new_control_id()), None)
                .unwrap()
                .bytes,
            "MSA-1"
        ),
        "AA",
        "restarted, the client uses the new credential through B"
    );

    // Revoked on A: B closes the facility's live connection and refuses it within 5 s.
    gard_a.revoke(FACILITY).unwrap();
    let started = Instant::now();
    loop {
        let answer = via_b
            .send_receive(&echo(&hnapi::hl7::new_control_id()), None)
            .unwrap();
        if answer.network_error == Some(NetworkCode::Txfr029E) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B still serves a facility revoked on A"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = stop_a.send(());
    let _ = stop_b.send(());
    drop(runtime);
    let _ = fs::remove_dir_all(dir);
}
