//! HL7 parse and write throughput on 1 KiB and 64 KiB healthnetBC-like messages.
//!
//! `cargo bench --bench hl7` prints MB/s for:
//! - `parse`: index every segment and field, then read a deep value (the last ZIA's
//!   city, component 21 of field 6), escapes decoded;
//! - `parse+check`: the same and all HealthnetBC checks;
//! - `write`: write a built message as canonical ER7 into a reused buffer;
//! - `memchr-scan`: only count CR and `|` with memchr, the floor any parser stands on.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hnapi::hl7::{self, Message, MessageBuilder, Path};

/// A Record New Person request (Volume 5, 2.5.3) grown with ZIA and NTE segments to
/// at least `size` bytes.
fn message(size: usize) -> Vec<u8> {
    let mut m =
        b"MSH|^~\\&|ADT1|NF20|RAIRCRD-NW-PRSN|BC0003000|19990531144853|TRAIN96|R02|19980915000020|D|2.3\r\
ZHD|19990531144853|^00000010|TRAININGADMIN\r\
ZTL||N\r\
PID||9865821574^^^BC^PH^MOH|||19730515|M\r"
            .to_vec();
    let mut n = 0;
    while m.len() < size {
        n += 1;
        let segment = if n % 3 == 0 {
            format!(
                "NTE|{n}||Comment number {n} with an escaped \\T\\ ampersand and some mixed-case text\r"
            )
        } else {
            format!(
                "ZIA|||||DONOGHUE^JAMES^JOE^^^L|{n} MICHIGAN ST^^^^^^^^^^^^^^^^^^^^VICTORIA^BC^V8V1S9^CAN^H|^PRN^PH^^250^9526579|||||N\r"
            )
        };
        m.extend_from_slice(segment.as_bytes());
    }
    m
}

fn bench(c: &mut Criterion) {
    for (label, size) in [("1KiB", 1024), ("64KiB", 64 * 1024)] {
        let input = message(size);
        let zias = input
            .split(|&b| b == b'\r')
            .filter(|s| s.starts_with(b"ZIA"))
            .count() as u32;
        let deep = Path::new(*b"ZIA", 6)
            .with_occurrence(zias)
            .with_component(21);
        assert_eq!(
            Message::parse(&input).unwrap().value(&deep).text(),
            "VICTORIA"
        );

        let mut group = c.benchmark_group(format!("hl7/{label}"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function("parse", |b| {
            b.iter(|| {
                let m = Message::parse(black_box(&input)).unwrap();
                black_box(m.value(&deep));
            })
        });
        group.bench_function("parse+check", |b| {
            b.iter(|| {
                let m = Message::parse(black_box(&input)).unwrap();
                black_box(hl7::check(&m));
            })
        });
        let built = MessageBuilder::from_message(&Message::parse(&input).unwrap());
        let mut out = Vec::with_capacity(input.len() * 2);
        group.bench_function("write", |b| {
            b.iter(|| {
                out.clear();
                black_box(&built).write(&mut out);
                black_box(out.len());
            })
        });
        group.bench_function("memchr-scan", |b| {
            b.iter(|| black_box(memchr::memchr2_iter(b'\r', b'|', black_box(&input)).count()))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
