//! The limits on failed registration attempts ([`Gard::register`](super::Gard::register)).
//!
//! - Per address: after [`MAX_FAILURES`] failures within [`WINDOW`] from one address,
//!   further attempts from it are refused until the oldest failures age out.
//! - Per facility id, from anywhere: after [`MAX_FAILURES`] failures within [`WINDOW`],
//!   each further attempt waits [`delay`] first — a slow-down, not a lock, so that an
//!   attacker spreading guesses over many addresses cannot keep the facility itself from
//!   registering from a clean address. (A code has 80 random bits: the limits keep
//!   guessing slow and visible; they are not what makes it hopeless.)
//!
//! The failures are kept in the directory's store under the keys [`address_key`] and
//! [`facility_key`], so every gateway sharing a directory counts the same failures and
//! a restart forgets none. Only the waits in progress are kept in memory ([`Waiting`]):
//! at most one per address and [`MAX_WAITING`] per process, so that a flood of
//! attempts cannot hold every blocking thread of a gateway.
//!
//! IPv6 addresses count per /64, the block one host usually controls; IPv4-mapped IPv6
//! addresses count as their IPv4 address.

use crate::transport::peer_block;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Failed attempts allowed within [`WINDOW`] before an address is refused or a facility
/// slowed down.
pub(crate) const MAX_FAILURES: u64 = 5;

/// How long a failure counts.
pub(crate) const WINDOW: Duration = Duration::from_secs(15 * 60);

/// The first wait of a slowed-down facility; it doubles with each further failure.
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(250);

/// The longest wait.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(4);

/// How many attempts one process lets wait at once.
pub(crate) const MAX_WAITING: usize = 64;

/// The store key of the failures from `peer`'s address (its /64 for IPv6).
pub(crate) fn address_key(peer: IpAddr) -> String {
    match peer_block(peer) {
        IpAddr::V4(v4) => format!("address:{v4}"),
        IpAddr::V6(v6) => format!("address:{v6}/64"),
    }
}

/// The store key of the failures for `facility`, or `None` when the text is not a
/// facility id: only something shaped like an id is tracked by id, so that junk cannot
/// fill the store with long strings (such an attempt still counts for its address).
pub(crate) fn facility_key(facility: &str) -> Option<String> {
    super::check_facility_id(facility)
        .ok()
        .map(|()| format!("facility:{facility}"))
}

/// How long an attempt for a facility with `failures` recent failures waits: nothing
/// below [`MAX_FAILURES`], then [`FIRST_DELAY`], doubling per failure, at most
/// [`MAX_DELAY`].
pub(crate) fn delay(failures: u64) -> Duration {
    let Some(extra) = failures.checked_sub(MAX_FAILURES) else {
        return Duration::ZERO;
    };
    let factor = 1u32 << extra.min(16);
    FIRST_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

/// The addresses with an attempt waiting in this process.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    blocks: HashSet<IpAddr>,
}

/// An attempt's place among the [`Waiting`]; given back when dropped.
pub(crate) struct Turn<'a> {
    waiting: &'a Mutex<Waiting>,
    block: IpAddr,
}

impl<'a> Turn<'a> {
    /// A place for an attempt from `peer`, or `None` when its address already has one
    /// waiting or [`MAX_WAITING`] attempts wait.
    pub(crate) fn take(waiting: &'a Mutex<Waiting>, peer: IpAddr) -> Option<Self> {
        let block = peer_block(peer);
        let mut w = lock(waiting);
        if w.blocks.len() >= MAX_WAITING || !w.blocks.insert(block) {
            return None;
        }
        Some(Self { waiting, block })
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        lock(self.waiting).blocks.remove(&self.block);
    }
}

fn lock(waiting: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    // A set of addresses: usable whatever a panic left.
    waiting.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn gard_limit_keys_count_ipv6_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(address_key(ip("192.0.2.7")), "address:192.0.2.7");
        assert_eq!(
            address_key(ip("::ffff:198.51.100.4")),
            "address:198.51.100.4"
        );
        assert_eq!(
            address_key(ip("2001:db8:1:2:ffff::9")),
            address_key(ip("2001:db8:1:2::1"))
        );
        assert_eq!(
            address_key(ip("2001:db8:1:2::1")),
            "address:2001:db8:1:2::/64"
        );
        assert_ne!(
            address_key(ip("2001:db8:1:3::1")),
            address_key(ip("2001:db8:1:2::1"))
        );
        assert_eq!(facility_key("BC1").as_deref(), Some("facility:BC1"));
        assert_eq!(facility_key("-bad id-"), None);
        assert_eq!(facility_key(&"A".repeat(33)), None);
    }

    #[test]
    fn gard_limit_delay_grows_and_is_capped() {
        for n in 0..MAX_FAILURES {
            assert_eq!(delay(n), Duration::ZERO);
        }
        assert_eq!(delay(MAX_FAILURES), FIRST_DELAY);
        assert_eq!(delay(MAX_FAILURES + 1), FIRST_DELAY * 2);
        assert_eq!(delay(MAX_FAILURES + 2), FIRST_DELAY * 4);
        assert_eq!(delay(MAX_FAILURES + 10), MAX_DELAY);
        assert_eq!(delay(u64::MAX), MAX_DELAY);
    }

    #[test]
    fn gard_limit_lets_one_attempt_per_address_wait() {
        let waiting = Mutex::new(Waiting::default());
        let first = Turn::take(&waiting, ip("2001:db8::1")).unwrap();
        assert!(Turn::take(&waiting, ip("2001:db8::2")).is_none());
        let other = Turn::take(&waiting, ip("192.0.2.1")).unwrap();
        drop(first);
        assert!(Turn::take(&waiting, ip("2001:db8::2")).is_some());
        drop(other);
        let turns: Vec<_> = (0..MAX_WAITING as u32)
            .map(|i| Turn::take(&waiting, IpAddr::from(i.to_be_bytes())).unwrap())
            .collect();
        assert!(Turn::take(&waiting, ip("10.255.0.1")).is_none());
        drop(turns);
        assert!(lock(&waiting).blocks.is_empty());
    }
}
