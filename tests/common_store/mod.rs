//! One set of behaviours every [`Store`] must have, run against each implementation
//! (SQLite in `gard_store.rs`, PostgreSQL in `gard_store_pg.rs`). Each function takes a
//! fresh, empty store.
#![allow(dead_code)]

use std::sync::{Arc, Barrier};

use hnapi::gard::{
    AuditFilter, AuditKind, AuditRecord, CodeRecord, Completion, DuplicateKey, Facility, Role,
    SealedKey, Status, Store,
};
use jiff::{SignedDuration, Timestamp};

pub fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

pub fn facility(id: &str) -> Facility {
    Facility {
        id: id.to_owned(),
        name: "A clinic".to_owned(),
        role: Role::Client,
        status: Status::Pending,
        created_at: at(1_700_000_000),
        registered_at: None,
        cert_serial: None,
        cert_not_after: None,
        key_id: None,
        serves: Vec::new(),
    }
}

pub fn code(hash: u8, expires: i64) -> CodeRecord {
    CodeRecord {
        hash: [hash; 32],
        created_at: at(1_700_000_000),
        expires_at: at(expires),
        used_at: None,
    }
}

/// Facilities, codes, registration, credentials, revocation and the generation counter.
pub fn directory(store: &dyn Store) {
    assert_eq!(store.generation().unwrap(), 0);
    assert!(store.facilities().unwrap().is_empty());
    assert!(
        store
            .add_facility(&facility("BC2"), &code(1, 2_000_000_000))
            .unwrap()
    );
    let mut server = facility("BC1");
    server.role = Role::Server;
    server.name = "Pharmacie Éloïse".to_owned();
    assert!(
        store
            .add_facility(&server, &code(1, 2_000_000_000))
            .unwrap()
    );
    assert!(
        !store
            .add_facility(&facility("BC2"), &code(2, 2_000_000_000))
            .unwrap(),
        "an id is taken once"
    );
    assert_eq!(store.generation().unwrap(), 2);
    let all = store.facilities().unwrap();
    assert_eq!(all, [server.clone(), facility("BC2")]);
    assert_eq!(store.facility("BC1").unwrap(), Some(server));
    assert_eq!(store.facility("BC9").unwrap(), None);
    assert_eq!(store.registration_state("BC9").unwrap().map(|_| ()), None);
    assert_eq!(store.credential("BC9").unwrap().map(|_| ()), None);

    let state = store.registration_state("BC2").unwrap().unwrap();
    assert_eq!((state.status, state.key_id), (Status::Pending, None));
    assert_eq!(state.code, Some(code(1, 2_000_000_000)));
    let credential = store.credential("BC2").unwrap().unwrap();
    assert_eq!(
        (credential.role, credential.status, credential.key_id),
        (Role::Client, Status::Pending, None)
    );
    assert!(credential.sealed_key.is_none() && credential.cert_serial.is_none());

    let completion = Completion {
        facility: "BC2".to_owned(),
        code_hash: [1; 32],
        previous_key_id: None,
        key_id: 1,
        sealed_key: SealedKey {
            nonce: [7; 12],
            ciphertext: vec![9; 48],
        },
        cert_serial: "0A1B".to_owned(),
        cert_not_after: at(1_800_000_000),
        at: at(1_700_000_100),
        peer: "192.0.2.7".parse().unwrap(),
    };
    // A wrong hash, or a stale key id, changes nothing.
    let wrong = Completion {
        code_hash: [2; 32],
        ..completion.clone()
    };
    assert!(!store.complete_registration(&wrong).unwrap());
    let stale = Completion {
        previous_key_id: Some(4),
        ..completion.clone()
    };
    assert!(!store.complete_registration(&stale).unwrap());
    let unknown = Completion {
        facility: "BC9".to_owned(),
        ..completion.clone()
    };
    assert!(!store.complete_registration(&unknown).unwrap());
    assert_eq!(store.generation().unwrap(), 2);
    let state = store.registration_state("BC2").unwrap().unwrap();
    assert_eq!(state.status, Status::Pending);
    assert!(state.code.unwrap().used_at.is_none());

    assert!(store.complete_registration(&completion).unwrap());
    assert!(
        !store.complete_registration(&completion).unwrap(),
        "a code works once"
    );
    assert_eq!(store.generation().unwrap(), 3);
    let f = store.facility("BC2").unwrap().unwrap();
    assert_eq!((f.status, f.key_id), (Status::Active, Some(1)));
    assert_eq!(f.registered_at, Some(at(1_700_000_100)));
    assert_eq!(f.cert_serial.as_deref(), Some("0A1B"));
    assert_eq!(f.cert_not_after, Some(at(1_800_000_000)));
    let state = store.registration_state("BC2").unwrap().unwrap();
    assert_eq!(state.code.unwrap().used_at, Some(at(1_700_000_100)));
    let credential = store.credential("BC2").unwrap().unwrap();
    assert_eq!(credential.status, Status::Active);
    assert_eq!(credential.key_id, Some(1));
    assert_eq!(credential.sealed_key, Some(completion.sealed_key.clone()));
    assert_eq!(credential.cert_serial.as_deref(), Some("0A1B"));
    assert_eq!(credential.cert_not_after, Some(at(1_800_000_000)));

    // An expired code is not consumed, even with the right hash.
    assert_eq!(
        store.set_code("BC2", &code(3, 1_700_000_100)).unwrap(),
        Some(Status::Active)
    );
    assert_eq!(store.generation().unwrap(), 4);
    let late = Completion {
        code_hash: [3; 32],
        previous_key_id: Some(1),
        key_id: 2,
        sealed_key: SealedKey {
            nonce: [8; 12],
            ciphertext: vec![10; 48],
        },
        ..completion.clone()
    };
    assert!(!store.complete_registration(&late).unwrap());
    // A live code rotates the key; the credential names the new one.
    assert_eq!(
        store.set_code("BC2", &code(3, 2_000_000_000)).unwrap(),
        Some(Status::Active)
    );
    assert!(store.complete_registration(&late).unwrap());
    let credential = store.credential("BC2").unwrap().unwrap();
    assert_eq!(credential.key_id, Some(2));
    assert_eq!(credential.sealed_key, Some(late.sealed_key.clone()));
    assert_eq!(store.set_code("NOPE", &code(3, 0)).unwrap(), None);
    let g = store.generation().unwrap();
    assert_eq!(g, 6);

    // Revocation: final, counted once, listed; a revoked facility keeps its old code and
    // cannot complete a registration.
    assert!(store.revoked().unwrap().is_empty());
    assert_eq!(
        store.revoke("BC2", at(1_700_000_200)).unwrap(),
        Some(Status::Active)
    );
    assert_eq!(
        store.revoke("BC2", at(1_700_000_300)).unwrap(),
        Some(Status::Revoked)
    );
    assert_eq!(store.revoke("BC9", at(1_700_000_300)).unwrap(), None);
    assert_eq!(store.generation().unwrap(), g + 1);
    assert_eq!(store.revoked().unwrap(), ["BC2"]);
    assert_eq!(
        store.set_code("BC2", &code(4, 2_000_000_000)).unwrap(),
        Some(Status::Revoked)
    );
    assert_eq!(
        store.registration_state("BC2").unwrap().unwrap().code,
        Some(CodeRecord {
            used_at: Some(at(1_700_000_100)),
            ..code(3, 2_000_000_000)
        })
    );
    assert_eq!(
        store.set_code("BC1", &code(5, 2_000_000_000)).unwrap(),
        Some(Status::Pending)
    );
    store.revoke("BC1", at(1_700_000_400)).unwrap();
    let revoked_registration = Completion {
        facility: "BC1".to_owned(),
        code_hash: [5; 32],
        ..completion
    };
    assert!(!store.complete_registration(&revoked_registration).unwrap());
    assert_eq!(store.revoked().unwrap(), ["BC1", "BC2"]);
    assert_eq!(
        store.credential("BC2").unwrap().unwrap().status,
        Status::Revoked
    );
}

/// The receiving-application names of server facilities: written with the facility,
/// replaced at once (moving the generation), read back ordered by `facility`,
/// `facilities` and `credential`; a client's or a revoked facility's are never changed.
pub fn serves(store: &dyn Store) {
    let names = |v: &[&str]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let mut server = facility("SV1");
    server.role = Role::Server;
    server.serves = names(&["A LAB", "HNAPI-DEMO"]);
    assert!(
        store
            .add_facility(&server, &code(1, 2_000_000_000))
            .unwrap()
    );
    assert!(
        store
            .add_facility(&facility("CL1"), &code(1, 2_000_000_000))
            .unwrap()
    );
    assert_eq!(store.facility("SV1").unwrap().unwrap(), server);
    assert_eq!(store.facilities().unwrap()[1], server);
    assert_eq!(
        store.credential("SV1").unwrap().unwrap().serves,
        ["A LAB", "HNAPI-DEMO"]
    );
    assert!(store.credential("CL1").unwrap().unwrap().serves.is_empty());

    let g = store.generation().unwrap();
    assert_eq!(
        store.set_serves("SV1", &names(&["HNAPI-LAB"])).unwrap(),
        Some((Role::Server, Status::Pending))
    );
    assert_eq!(store.generation().unwrap(), g + 1);
    assert_eq!(
        store.credential("SV1").unwrap().unwrap().serves,
        ["HNAPI-LAB"]
    );
    assert_eq!(
        store.facility("SV1").unwrap().unwrap().serves,
        ["HNAPI-LAB"]
    );
    assert_eq!(
        store.set_serves("SV1", &[]).unwrap(),
        Some((Role::Server, Status::Pending))
    );
    assert!(store.facility("SV1").unwrap().unwrap().serves.is_empty());
    assert_eq!(store.generation().unwrap(), g + 2);

    // Refused, changing nothing: a client, an unknown facility, a revoked server.
    assert_eq!(
        store.set_serves("CL1", &names(&["X"])).unwrap(),
        Some((Role::Client, Status::Pending))
    );
    assert!(store.facility("CL1").unwrap().unwrap().serves.is_empty());
    assert_eq!(store.set_serves("NOPE", &names(&["X"])).unwrap(), None);
    store.set_serves("SV1", &names(&["KEPT"])).unwrap();
    store.revoke("SV1", at(1_700_000_500)).unwrap();
    let g = store.generation().unwrap();
    assert_eq!(
        store.set_serves("SV1", &names(&["X"])).unwrap(),
        Some((Role::Server, Status::Revoked))
    );
    assert_eq!(store.generation().unwrap(), g);
    assert_eq!(store.facility("SV1").unwrap().unwrap().serves, ["KEPT"]);
}

/// Failed registration attempts: counted per key from an instant on, pruned past the
/// window, never moving the generation.
pub fn failures(store: &dyn Store) {
    let keys = |v: &[&str]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let g = store.generation().unwrap();
    assert_eq!(store.failures("address:192.0.2.1", at(0)).unwrap(), 0);
    for second in [100, 200, 300] {
        store
            .record_failures(
                &keys(&["address:192.0.2.1", "facility:BC1"]),
                at(1_700_000_000 + second),
                at(1_700_000_000),
            )
            .unwrap();
    }
    store
        .record_failures(&keys(&["address:192.0.2.2"]), at(1_700_000_300), at(0))
        .unwrap();
    assert_eq!(store.failures("address:192.0.2.1", at(0)).unwrap(), 3);
    assert_eq!(
        store.failures("facility:BC1", at(1_700_000_200)).unwrap(),
        2
    );
    assert_eq!(
        store.failures("facility:BC1", at(1_700_000_301)).unwrap(),
        0
    );
    assert_eq!(store.failures("address:192.0.2.2", at(0)).unwrap(), 1);
    assert_eq!(store.failures("facility:BC2", at(0)).unwrap(), 0);
    // Recording prunes every key's failures from before the window.
    store
        .record_failures(
            &keys(&["facility:BC3"]),
            at(1_700_000_400),
            at(1_700_000_250),
        )
        .unwrap();
    assert_eq!(store.failures("address:192.0.2.1", at(0)).unwrap(), 1);
    assert_eq!(store.failures("facility:BC1", at(0)).unwrap(), 1);
    assert_eq!(store.failures("address:192.0.2.2", at(0)).unwrap(), 1);
    assert_eq!(store.failures("facility:BC3", at(0)).unwrap(), 1);
    assert_eq!(store.generation().unwrap(), g);
}

/// A renewed certificate replaces the current one only when it is still the current one
/// and the facility is active.
pub fn renewal(store: &dyn Store) {
    assert!(
        store
            .add_facility(&facility("BR1"), &code(1, 2_000_000_000))
            .unwrap()
    );
    assert!(
        !store
            .renew_certificate("BR1", "", "0C", at(1_900_000_000))
            .unwrap(),
        "not registered yet"
    );
    let completion = Completion {
        facility: "BR1".to_owned(),
        code_hash: [1; 32],
        previous_key_id: None,
        key_id: 1,
        sealed_key: SealedKey {
            nonce: [7; 12],
            ciphertext: vec![9; 48],
        },
        cert_serial: "0A".to_owned(),
        cert_not_after: at(1_800_000_000),
        at: at(1_700_000_100),
        peer: "192.0.2.7".parse().unwrap(),
    };
    assert!(store.complete_registration(&completion).unwrap());
    let generation = store.generation().unwrap();
    assert!(
        !store
            .renew_certificate("BR1", "0B", "0C", at(1_900_000_000))
            .unwrap()
    );
    assert!(
        !store
            .renew_certificate("BR9", "0A", "0C", at(1_900_000_000))
            .unwrap()
    );
    assert_eq!(store.generation().unwrap(), generation, "nothing changed");
    assert!(
        store
            .renew_certificate("BR1", "0A", "0C", at(1_900_000_000))
            .unwrap()
    );
    assert!(store.generation().unwrap() > generation);
    let c = store.credential("BR1").unwrap().unwrap();
    assert_eq!(c.cert_serial.as_deref(), Some("0C"));
    assert_eq!(c.cert_not_after, Some(at(1_900_000_000)));
    assert_eq!(
        (c.key_id, c.status),
        (Some(1), Status::Active),
        "the key stays"
    );
    assert!(
        !store
            .renew_certificate("BR1", "0A", "0D", at(1_900_000_000))
            .unwrap(),
        "the old serial lost the race"
    );
    store.revoke("BR1", at(1_700_000_200)).unwrap();
    assert!(
        !store
            .renew_certificate("BR1", "0C", "0D", at(1_900_000_000))
            .unwrap()
    );
}

pub fn record(second: i64, facility: &str, outcome: &str, control_id: &str) -> AuditRecord {
    AuditRecord {
        at: at(second),
        kind: if outcome == "refused" {
            AuditKind::Security
        } else {
            AuditKind::Transaction
        },
        facility: facility.to_owned(),
        peer: "192.0.2.7:50123".to_owned(),
        sending_application: "LABAPP".to_owned(),
        control_id: control_id.to_owned(),
        message_type: "R46^Z26".to_owned(),
        route: "*".to_owned(),
        destination: "mllp://10.1.2.3:2575".to_owned(),
        outcome: outcome.to_owned(),
        code: if outcome == "AA" { "" } else { "TXFR024E" }.to_owned(),
        latency_ms: 12,
        request_bytes: 1024,
        answer_bytes: 333,
        detail: "the destination timed out".to_owned(),
    }
}

fn ids(records: &[AuditRecord]) -> Vec<&str> {
    records.iter().map(|r| r.control_id.as_str()).collect()
}

/// The audit journal: exact round trip, order, every filter, limit and pruning.
pub fn audit(store: &dyn Store) {
    let generation = store.generation().unwrap();
    store.append_audit(&[]).unwrap();
    assert!(store.audit(&AuditFilter::default()).unwrap().is_empty());

    // Appended out of time order, in two batches; two records share an instant.
    let mut precise = record(1_800_000_000, "BC1", "AA", "C3");
    precise.at = "2027-01-15T08:06:40.123456Z".parse().unwrap();
    precise.latency_ms = u64::try_from(i64::MAX).unwrap();
    precise.detail = "détail: «ok»".to_owned();
    store
        .append_audit(&[
            record(1_800_000_300, "BC2", "AR", "C5"),
            record(1_800_000_100, "BC1", "AE", "C1"),
            record(1_800_000_100, "BC2", "AA", "C2"),
        ])
        .unwrap();
    store
        .append_audit(&[precise.clone(), record(1_800_000_200, "", "refused", "C4")])
        .unwrap();

    let all = store.audit(&AuditFilter::default()).unwrap();
    assert_eq!(ids(&all), ["C1", "C2", "C4", "C5", "C3"]);
    assert_eq!(all[4], precise, "a record reads back exactly");
    assert_eq!(all[0], record(1_800_000_100, "BC1", "AE", "C1"));
    assert_eq!(all[2].kind, AuditKind::Security);

    let select = |filter: AuditFilter| ids(&store.audit(&filter).unwrap()).join(" ");
    assert_eq!(
        select(AuditFilter {
            since: Some(at(1_800_000_200)),
            ..AuditFilter::default()
        }),
        "C4 C5 C3"
    );
    assert_eq!(
        select(AuditFilter {
            facility: Some("BC2".to_owned()),
            ..AuditFilter::default()
        }),
        "C2 C5"
    );
    assert_eq!(
        select(AuditFilter {
            outcome: Some("AR".to_owned()),
            ..AuditFilter::default()
        }),
        "C5"
    );
    assert_eq!(
        select(AuditFilter {
            outcome: Some("ar".to_owned()),
            ..AuditFilter::default()
        }),
        "",
        "the outcome matches exactly"
    );
    assert_eq!(
        select(AuditFilter {
            kind: Some(AuditKind::Security),
            ..AuditFilter::default()
        }),
        "C4"
    );
    assert_eq!(
        select(AuditFilter {
            kind: Some(AuditKind::Transaction),
            facility: Some("BC1".to_owned()),
            since: Some(at(1_800_000_101)),
            ..AuditFilter::default()
        }),
        "C3"
    );
    // The newest N, still oldest first.
    assert_eq!(
        select(AuditFilter {
            limit: Some(2),
            ..AuditFilter::default()
        }),
        "C5 C3"
    );
    assert_eq!(
        select(AuditFilter {
            limit: Some(2),
            facility: Some("BC2".to_owned()),
            ..AuditFilter::default()
        }),
        "C2 C5"
    );
    assert_eq!(
        select(AuditFilter {
            limit: Some(1),
            since: Some(at(1_800_000_100)),
            outcome: Some("AA".to_owned()),
            ..AuditFilter::default()
        }),
        "C3"
    );
    assert_eq!(
        select(AuditFilter {
            limit: Some(0),
            ..AuditFilter::default()
        }),
        ""
    );

    // A NUL character (which PostgreSQL text cannot hold) becomes U+FFFD in every store,
    // in the record and in a filter alike.
    let mut nul = record(1_800_000_150, "BC\0NUL", "AA", "C\0-NUL");
    store.append_audit(std::slice::from_ref(&nul)).unwrap();
    nul.control_id = "C\u{FFFD}-NUL".to_owned();
    nul.facility = "BC\u{FFFD}NUL".to_owned();
    let found = store
        .audit(&AuditFilter {
            facility: Some("BC\0NUL".to_owned()),
            ..AuditFilter::default()
        })
        .unwrap();
    assert_eq!(found, [nul]);

    // Pruning deletes what is strictly older, and says how much.
    assert_eq!(store.prune_audit(at(1_800_000_100)).unwrap(), 0);
    assert_eq!(store.prune_audit(at(1_800_000_201)).unwrap(), 4);
    assert_eq!(select(AuditFilter::default()), "C5 C3");
    assert_eq!(store.prune_audit(at(1_800_000_201)).unwrap(), 0);
    assert_eq!(
        store.generation().unwrap(),
        generation,
        "the journal does not move the generation"
    );
}

pub fn key(control_id: &str) -> DuplicateKey {
    DuplicateKey {
        control_id: control_id.to_owned(),
        facility: "BC00000098".to_owned(),
        application: "LABAPP".to_owned(),
    }
}

/// The duplicate window: within it, outside it, replacement, independence of the three
/// parts of the key, pruning.
pub fn duplicates(store: &dyn Store) {
    let generation = store.generation().unwrap();
    let t0 = at(1_800_000_000);
    let minutes = |n: i64| t0 + SignedDuration::from_mins(n);
    let window = SignedDuration::from_mins(10);
    let check =
        |k: &DuplicateKey, now: Timestamp| store.check_duplicate(k, now, now - window).unwrap();

    assert!(!check(&key("C1"), t0), "first seen");
    assert!(check(&key("C1"), minutes(1)), "again within the window");
    assert!(
        check(&key("C1"), minutes(10)),
        "recorded exactly at the start of the window"
    );
    // A duplicate changes nothing: the entry still dates from t0, so 10 minutes and a
    // second after t0 it is outside the window, is recorded again, and counts from then.
    let later = minutes(10) + SignedDuration::from_secs(1);
    assert!(!check(&key("C1"), later), "outside the window");
    assert!(check(&key("C1"), later + SignedDuration::from_mins(9)));
    assert!(!check(&key("C1"), later + SignedDuration::from_mins(11)));

    // Each part of the key counts.
    let mut other_facility = key("C1");
    other_facility.facility = "BC00000001".to_owned();
    let mut other_application = key("C1");
    other_application.application = "OTHER".to_owned();
    for k in [key("C2"), other_facility, other_application] {
        assert!(!check(&k, t0), "{k:?}");
        assert!(check(&k, minutes(5)), "{k:?}");
    }
    // Unusual but valid text in a key is kept exactly.
    let odd = DuplicateKey {
        control_id: "20261123'; --".to_owned(),
        facility: String::new(),
        application: "É".to_owned(),
    };
    assert!(!check(&odd, t0));
    assert!(check(&odd, t0));
    let nul = DuplicateKey {
        control_id: "C\0".to_owned(),
        ..key("C1")
    };
    assert!(!check(&nul, later), "a NUL is kept as U+FFFD");
    assert!(check(&nul, later));

    // Pruning forgets what was recorded before the instant given.
    assert_eq!(store.prune_duplicates(t0).unwrap(), 0);
    assert_eq!(store.prune_duplicates(minutes(1)).unwrap(), 4);
    assert!(!check(&key("C2"), minutes(5)), "forgotten, so new again");
    assert!(
        check(&key("C1"), later + SignedDuration::from_mins(12)),
        "C1 was recorded later and kept"
    );
    assert_eq!(store.generation().unwrap(), generation);
}

/// Two stores on one database check the same keys from several threads at once: for
/// each key, exactly one check finds it new.
pub fn duplicate_race(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    const THREADS: usize = 4;
    const KEYS: usize = 40;
    let barrier = Arc::new(Barrier::new(THREADS));
    let now = Timestamp::now();
    let since = now - SignedDuration::from_mins(10);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = if t % 2 == 0 { a.clone() } else { b.clone() };
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..KEYS)
                    .map(|k| {
                        !store
                            .check_duplicate(&key(&format!("RACE{k}")), now, since)
                            .unwrap()
                    })
                    .collect::<Vec<bool>>()
            })
        })
        .collect();
    let results: Vec<Vec<bool>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for k in 0..KEYS {
        let new = results.iter().filter(|r| r[k]).count();
        assert_eq!(new, 1, "key {k}: {new} checks found it new");
    }
}
