//! The limit on failed registration attempts: after [`MAX_FAILURES`] failures within
//! [`WINDOW`] for one facility id, or from one address, further attempts for it are
//! refused until the oldest failures age out. Kept in memory: it guards the gateway
//! process that answers registrations.
//!
//! IPv6 addresses count per /64, the block one host usually controls; IPv4-mapped IPv6
//! addresses count as their IPv4 address.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failed attempts allowed within [`WINDOW`].
pub(crate) const MAX_FAILURES: usize = 5;

/// How long a failure counts.
pub(crate) const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Above this many tracked keys, every key is pruned at the next failure, so that the
/// map stays bounded by what [`WINDOW`] holds.
const PRUNE_ALL_ABOVE: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Facility(String),
    Peer(IpAddr),
}

/// Failures per facility id and per address.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    failures: HashMap<Key, VecDeque<Instant>>,
}

impl Limiter {
    /// Whether an attempt for `facility` from `peer` must be refused at `now`.
    pub(crate) fn limited(&mut self, facility: &str, peer: IpAddr, now: Instant) -> bool {
        keys(facility, peer).into_iter().any(|key| {
            self.failures.get_mut(&key).is_some_and(|times| {
                prune(times, now);
                times.len() >= MAX_FAILURES
            })
        })
    }

    /// Counts a failed attempt for `facility` from `peer` at `now`.
    pub(crate) fn failed(&mut self, facility: &str, peer: IpAddr, now: Instant) {
        if self.failures.len() > PRUNE_ALL_ABOVE {
            self.failures.retain(|_, times| {
                prune(times, now);
                !times.is_empty()
            });
        }
        for key in keys(facility, peer) {
            let times = self.failures.entry(key).or_default();
            prune(times, now);
            // More than the limit need not be kept: it only decides how long the key stays
            // limited, and the newest failures decide that.
            if times.len() >= MAX_FAILURES {
                times.pop_front();
            }
            times.push_back(now);
        }
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|&t| now.saturating_duration_since(t) >= WINDOW)
    {
        times.pop_front();
    }
}

fn keys(facility: &str, peer: IpAddr) -> Vec<Key> {
    let mut keys = vec![Key::Peer(peer_block(peer))];
    // Only something shaped like a facility id is tracked by id, so a flood of junk ids
    // cannot fill the map with long strings.
    if super::check_facility_id(facility).is_ok() {
        keys.push(Key::Facility(facility.to_owned()));
    }
    keys
}

fn peer_block(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn gard_limit_counts_per_facility_and_per_address() {
        let mut limiter = Limiter::default();
        let start = Instant::now();
        for i in 0..MAX_FAILURES {
            assert!(!limiter.limited("BC1", ip("10.0.0.1"), start));
            limiter.failed("BC1", ip(&format!("10.0.0.{}", i + 1)), start);
        }
        // The facility is limited from any address ...
        assert!(limiter.limited("BC1", ip("192.0.2.7"), start));
        // ... but another facility from a fresh address is not.
        assert!(!limiter.limited("BC2", ip("192.0.2.7"), start));

        for _ in 0..MAX_FAILURES {
            limiter.failed("X", ip("192.0.2.8"), start);
        }
        assert!(limiter.limited("BC2", ip("192.0.2.8"), start));
    }

    #[test]
    fn gard_limit_ends_when_failures_age_out() {
        let mut limiter = Limiter::default();
        let start = Instant::now();
        for i in 0..MAX_FAILURES {
            limiter.failed(
                "BC1",
                ip("10.0.0.1"),
                start + Duration::from_secs(60 * i as u64),
            );
        }
        assert!(limiter.limited(
            "BC1",
            ip("10.0.0.2"),
            start + WINDOW - Duration::from_secs(1)
        ));
        // The first failure ages out: four remain.
        assert!(!limiter.limited("BC1", ip("10.0.0.2"), start + WINDOW));
        limiter.failed("BC1", ip("10.0.0.1"), start + WINDOW);
        assert!(limiter.limited("BC1", ip("10.0.0.2"), start + WINDOW));
    }

    #[test]
    fn gard_limit_counts_ipv6_per_64_and_mapped_ipv4_as_ipv4() {
        let mut limiter = Limiter::default();
        let now = Instant::now();
        for i in 0..MAX_FAILURES {
            limiter.failed("-bad id-", ip(&format!("2001:db8:1:2::{}", i + 1)), now);
        }
        assert!(limiter.limited("BC1", ip("2001:db8:1:2:ffff::9"), now));
        assert!(!limiter.limited("BC1", ip("2001:db8:1:3::1"), now));

        for _ in 0..MAX_FAILURES {
            limiter.failed("-bad id-", ip("::ffff:198.51.100.4"), now);
        }
        assert!(limiter.limited("BC1", ip("198.51.100.4"), now));
    }

    #[test]
    fn gard_limit_stays_bounded() {
        let mut limiter = Limiter::default();
        let start = Instant::now();
        for i in 0..(PRUNE_ALL_ABOVE as u32 + 10) {
            limiter.failed("?", IpAddr::from(i.to_be_bytes()), start);
        }
        let later = start + WINDOW;
        limiter.failed("?", ip("10.9.9.9"), later);
        assert_eq!(limiter.failures.len(), 1);
    }
}
