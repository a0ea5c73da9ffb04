//! Figures, not tests: how fast each store appends audit records and checks duplicates.
//! Ignored by `cargo test`; run with
//!
//! ```text
//! cargo test --release --test gard_store_rate -- --ignored --nocapture
//! ```
//!
//! PostgreSQL runs on a private server (`common_pg`) with `fsync = on`, on this machine.

// Unix only: `common_pg` starts a private PostgreSQL server with initdb, as the user
// nobody, through Unix permissions and ownership; the Windows builds do not run it.
#![cfg(unix)]

mod common_pg;
mod common_store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use hnapi::gard::{PostgresStore, SqliteStore, Store};
use jiff::{SignedDuration, Timestamp};

fn rates(name: &str, store: Arc<dyn Store>) {
    let record = common_store::record(1_800_000_000, "BC00000098", "AA", "C1");

    for batch in [1usize, 100] {
        let records = vec![record.clone(); batch];
        let rounds = if batch == 1 { 2000 } else { 100 };
        let started = Instant::now();
        for _ in 0..rounds {
            store.append_audit(&records).unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{name:10} append_audit, batches of {batch:3}: {:9.0} records/s ({:7.1} µs per call)",
            (rounds * batch) as f64 / seconds,
            seconds * 1e6 / rounds as f64
        );
    }

    for threads in [1usize, 4] {
        let per_thread = 2000;
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let store = store.clone();
                s.spawn(move || {
                    for i in 0..per_thread {
                        let now = Timestamp::now();
                        let key = common_store::key(&format!("{threads}-{t}-{i}"));
                        store
                            .check_duplicate(&key, now, now - SignedDuration::from_mins(10))
                            .unwrap();
                    }
                });
            }
        });
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{name:10} check_duplicate, {threads} thread(s): {:9.0} checks/s ({:7.1} µs per check per thread)",
            (threads * per_thread) as f64 / seconds,
            seconds * 1e6 / per_thread as f64
        );
    }

    store
        .add_facility(
            &common_store::facility("BC1"),
            &common_store::code(1, 2_000_000_000),
        )
        .unwrap();
    let rounds = 5000;
    let started = Instant::now();
    for _ in 0..rounds {
        store.credential("BC1").unwrap().unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{name:10} credential (one authenticate's read): {:7.1} µs",
        seconds * 1e6 / rounds as f64
    );
}

#[test]
#[ignore = "prints figures; run with --ignored --nocapture"]
fn store_rates() {
    let dir: PathBuf = std::env::temp_dir().join(format!("hnsecure-rate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let sqlite = SqliteStore::create(&dir.join("gard.db")).unwrap();
    rates("sqlite", Arc::new(sqlite));
    let _ = std::fs::remove_dir_all(&dir);

    if let Some(pg) = common_pg::Postgres::start_with("rate", true) {
        let store = PostgresStore::create(&pg.database("rate"), None).unwrap();
        rates("postgres", Arc::new(store));
    }
}
