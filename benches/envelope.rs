//! Envelope throughput on 1 KiB and 64 KiB messages.
//!
//! `cargo bench --bench envelope` prints MB/s of plaintext for:
//! - `seal`: derive the keys, encrypt with TDES-EDE3-CBC, HMAC the envelope;
//! - `open`: parse, derive the keys, verify the tag, decrypt;
//! - `seal+open`: both, as one request travels from a client to the gateway;
//! - `tdes-ede3-cbc`: bare TDES-EDE3-CBC + PKCS#7 encryption of the same bytes into a
//!   reused buffer (key schedule included), the ceiling the envelope stands under.

use std::hint::black_box;

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeEncrypt, KeyIvInit};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hnapi::envelope::{self, Direction, MasterKey, NONCE_LEN};

const NOW: u64 = 1_700_000_000_000;

fn message(size: usize) -> Vec<u8> {
    b"MSH|^~\\&|HNWEB|VIHA|RAIGT-PRSN-DMGR|BC00001013|20170125122125|train96|R03|20170125122125|D|2.4\r"
        .iter()
        .copied()
        .cycle()
        .take(size)
        .collect()
}

fn bench(c: &mut Criterion) {
    let key = MasterKey::new(42, [0x5a; 32]);
    let zero = [0u8; NONCE_LEN];
    for (label, size) in [("1KiB", 1024), ("64KiB", 64 * 1024)] {
        let plaintext = message(size);
        let sealed =
            envelope::seal(&key, "VIHA", Direction::Request, &zero, NOW, &plaintext).expect("seal");

        let mut group = c.benchmark_group(format!("envelope/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function("seal", |b| {
            b.iter(|| {
                envelope::seal(
                    &key,
                    "VIHA",
                    Direction::Request,
                    &zero,
                    NOW,
                    black_box(&plaintext),
                )
                .expect("seal")
            })
        });
        group.bench_function("open", |b| {
            b.iter(|| {
                envelope::open(&key, black_box(&sealed.bytes), Direction::Request).expect("open")
            })
        });
        group.bench_function("seal+open", |b| {
            b.iter(|| {
                let s = envelope::seal(
                    &key,
                    "VIHA",
                    Direction::Request,
                    &zero,
                    NOW,
                    black_box(&plaintext),
                )
                .expect("seal");
                envelope::open(&key, &s.bytes, Direction::Request).expect("open")
            })
        });
        let tdes_key = [0x11u8; 24];
        let iv = [0x22u8; 8];
        let mut out = vec![0u8; (size / 8 + 1) * 8];
        group.bench_function("tdes-ede3-cbc", |b| {
            b.iter(|| {
                cbc::Encryptor::<des::TdesEde3>::new_from_slices(&tdes_key, &iv)
                    .expect("key and IV lengths")
                    .encrypt_padded_b2b::<Pkcs7>(black_box(&plaintext), &mut out)
                    .expect("room for the padding")
                    .len()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
