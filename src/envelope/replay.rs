//! The replay guard: a receiver refuses an envelope whose nonce it has seen, or whose
//! timestamp is too far from its own clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::fmt;
use std::time::Duration;

use super::{EnvelopeError, Header, Nonce};

/// Refuses replayed nonces and timestamps outside a window, in bounded memory.
///
/// An envelope is accepted when its timestamp is within ± the window of the receiver's
/// clock and its nonce has not been accepted before. An accepted nonce is remembered
/// until its timestamp is older than the window; from then on the timestamp alone
/// refuses the envelope, so forgetting the nonce is safe. At most `capacity` nonces are
/// remembered: when that many are unexpired, new envelopes are refused with
/// [`EnvelopeError::ReplayCacheFull`] rather than forgetting one (fail closed).
///
/// Pass only envelopes that [`open`](super::open) accepted: a forged header must not
/// take a place in the cache. Nonces are random, so one guard can serve every
/// facility; a gateway that keeps one per facility stops one facility from filling the
/// cache of the others. Each remembered nonce costs about 45 bytes, up to twice that
/// while the tables grow.
pub struct ReplayGuard {
    window_ms: u64,
    capacity: usize,
    seen: HashSet<Nonce>,
    /// The remembered nonces by the time they expire (timestamp + window), soonest first.
    expiries: BinaryHeap<Reverse<(u64, Nonce)>>,
}

impl ReplayGuard {
    /// A guard accepting timestamps within ± `window` of now and remembering at most
    /// `capacity` nonces (a capacity of 0 refuses everything).
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            capacity,
            seen: HashSet::new(),
            expiries: BinaryHeap::new(),
        }
    }

    /// Accepts `header` and remembers its nonce when its timestamp is within ± the
    /// window of `now_ms` and its nonce was not seen.
    ///
    /// # Errors
    /// [`EnvelopeError::OutsideWindow`] for a timestamp too old or too far in the
    /// future, [`EnvelopeError::Replayed`] for a nonce already accepted, and
    /// [`EnvelopeError::ReplayCacheFull`] when `capacity` unexpired nonces are remembered.
    pub fn check(&mut self, header: &Header, now_ms: u64) -> Result<(), EnvelopeError> {
        let timestamp = header.timestamp_ms;
        if timestamp < now_ms.saturating_sub(self.window_ms)
            || timestamp > now_ms.saturating_add(self.window_ms)
        {
            return Err(EnvelopeError::OutsideWindow);
        }
        self.forget_expired(now_ms);
        if self.seen.contains(&header.nonce) {
            return Err(EnvelopeError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(EnvelopeError::ReplayCacheFull);
        }
        self.seen.insert(header.nonce);
        self.expiries.push(Reverse((
            timestamp.saturating_add(self.window_ms),
            header.nonce,
        )));
        Ok(())
    }

    /// Forgets the nonces whose timestamps are older than the window at `now_ms`.
    pub fn forget_expired(&mut self, now_ms: u64) {
        while let Some(Reverse((expires, nonce))) = self.expiries.peek() {
            if *expires >= now_ms {
                break;
            }
            self.seen.remove(nonce);
            self.expiries.pop();
        }
        // Give memory back after a burst, without shrinking on every call.
        if self.seen.capacity() > 64 && self.seen.len() < self.seen.capacity() / 4 {
            self.seen.shrink_to(self.seen.len() * 2);
            self.expiries.shrink_to(self.seen.len() * 2);
        }
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// The accepted distance between a timestamp and now, either way.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    /// The most nonces remembered at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl fmt::Debug for ReplayGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayGuard")
            .field("window_ms", &self.window_ms)
            .field("capacity", &self.capacity)
            .field("len", &self.seen.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Direction, NONCE_LEN};

    const NOW: u64 = 1_700_000_000_000;
    const WINDOW: u64 = 300_000;

    fn header(n: u32, timestamp_ms: u64) -> Header {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&n.to_be_bytes());
        Header {
            version: 1,
            direction: Direction::Request,
            facility: "BC01000030".into(),
            key_id: 1,
            timestamp_ms,
            nonce,
            reply_to: [0; NONCE_LEN],
        }
    }

    fn guard(capacity: usize) -> ReplayGuard {
        ReplayGuard::new(Duration::from_millis(WINDOW), capacity)
    }

    #[test]
    fn the_same_nonce_twice_is_a_replay() {
        let mut g = guard(100);
        assert!(g.is_empty());
        g.check(&header(1, NOW), NOW).unwrap();
        assert_eq!(g.check(&header(1, NOW), NOW), Err(EnvelopeError::Replayed));
        // Even with another timestamp inside the window.
        assert_eq!(
            g.check(&header(1, NOW - 1000), NOW + 1000),
            Err(EnvelopeError::Replayed)
        );
        g.check(&header(2, NOW), NOW).unwrap();
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn timestamps_outside_the_window_are_refused() {
        let mut g = guard(100);
        assert_eq!(
            g.check(&header(1, NOW - WINDOW - 1), NOW),
            Err(EnvelopeError::OutsideWindow)
        );
        assert_eq!(
            g.check(&header(2, NOW + WINDOW + 1), NOW),
            Err(EnvelopeError::OutsideWindow)
        );
        assert_eq!(
            g.check(&header(3, 0), NOW),
            Err(EnvelopeError::OutsideWindow)
        );
        assert_eq!(
            g.check(&header(4, u64::MAX), NOW),
            Err(EnvelopeError::OutsideWindow)
        );
        assert!(g.is_empty(), "refused nonces are not remembered");
        g.check(&header(5, NOW - WINDOW), NOW).unwrap();
        g.check(&header(6, NOW + WINDOW), NOW).unwrap();
        // Clocks at the ends of the range do not overflow.
        ReplayGuard::new(Duration::MAX, 1)
            .check(&header(7, u64::MAX), 0)
            .unwrap();
        guard(1).check(&header(8, 0), 0).unwrap();
        guard(1).check(&header(9, u64::MAX), u64::MAX).unwrap();
    }

    #[test]
    fn expired_nonces_are_forgotten() {
        let mut g = guard(1000);
        for n in 0..1000 {
            g.check(&header(n, NOW), NOW).unwrap();
        }
        assert_eq!(g.len(), 1000);
        // Still remembered at the last instant the timestamp is inside the window.
        assert_eq!(
            g.check(&header(5, NOW), NOW + WINDOW),
            Err(EnvelopeError::Replayed)
        );
        g.check(&header(5000, NOW + 1), NOW + WINDOW + 1).unwrap();
        assert_eq!(g.len(), 1, "only the new nonce is left");
        // A forgotten nonce is refused by its timestamp instead.
        assert_eq!(
            g.check(&header(5, NOW), NOW + WINDOW + 1),
            Err(EnvelopeError::OutsideWindow)
        );
        assert!(g.seen.capacity() < 1000, "memory given back");
    }

    #[test]
    fn a_full_guard_fails_closed() {
        let mut g = guard(3);
        for n in 0..3 {
            g.check(&header(n, NOW + u64::from(n)), NOW).unwrap();
        }
        assert_eq!(
            g.check(&header(10, NOW), NOW),
            Err(EnvelopeError::ReplayCacheFull)
        );
        assert_eq!(g.len(), 3);
        // Nothing was forgotten to make room: every nonce is still a replay.
        for n in 0..3 {
            assert_eq!(g.check(&header(n, NOW), NOW), Err(EnvelopeError::Replayed));
        }
        // Once the oldest expires, one place frees up.
        g.check(&header(10, NOW + WINDOW), NOW + WINDOW + 1)
            .unwrap();
        assert_eq!(
            g.check(&header(11, NOW + WINDOW), NOW + WINDOW + 1),
            Err(EnvelopeError::ReplayCacheFull)
        );
        assert_eq!(
            guard(0).check(&header(1, NOW), NOW),
            Err(EnvelopeError::ReplayCacheFull)
        );
    }

    #[test]
    fn memory_stays_bounded_under_a_steady_stream() {
        let mut g = guard(100);
        // One envelope every 10 s for a day: at most 61 are ever inside the window.
        for n in 0..8640u32 {
            let now = NOW + u64::from(n) * 10_000;
            g.check(&header(n, now), now).unwrap();
            assert!(g.len() <= 61, "{}", g.len());
            assert_eq!(g.len(), g.expiries.len());
        }
    }
}
