//! How fast a neighbour gives pieces: a running estimate of its throughput
//! and of its latency (request to first answer), so a download sends more
//! requests to faster peers and takes stuck pieces away from slow ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Weight of the newest latency sample in its running average.
const NEW_SAMPLE_WEIGHT: f64 = 0.5;
/// Time constant of the throughput average: a sample counts less the
/// shorter the time it covers, so that the estimate follows a peer that
/// slows down within a few seconds, whatever the sampling rhythm, and one
/// piece arriving just before or after a sample does not swing it.
const RATE_MEMORY_SECS: f64 = 2.0;
/// Seconds of a neighbour's throughput the requests sent to it may cover.
/// A peer giving 200 KB/s gets one piece at a time; one giving 100 MB/s
/// gets every request slot there is. Short, so that what is asked of a
/// slow peer is chosen with fresh knowledge of who has what: a piece asked
/// of a seeder seconds before it is sent may be in the swarm by then, and
/// the seeder's upload is what a swarm waits on (BENCHMARKS.md, S3). Still
/// far longer than a LAN's round trip, so the requests keep a peer busy.
const REQUEST_HORIZON_SECS: f64 = 0.5;

/// What the workers count for one neighbour as each piece arrives.
#[derive(Debug, Default)]
pub struct Tally {
    /// Bytes received from it (verified pieces and duplicates alike: all
    /// of them crossed the network).
    pub bytes: AtomicU64,
    /// Pieces it gave that were verified and stored here.
    pub pieces: AtomicU64,
}

/// The throughput and latency of one neighbour, as one download sees them.
#[derive(Debug, Clone)]
pub struct Speed {
    tally: Arc<Tally>,
    /// `bytes` when the throughput was last sampled, and when.
    sampled: (u64, Instant),
    /// Bytes per second (`None` until the first sample).
    rate: Option<f64>,
    /// Time from a request to its first answer.
    latency: Option<Duration>,
}

impl Default for Speed {
    fn default() -> Speed {
        Speed {
            tally: Arc::default(),
            sampled: (0, Instant::now()),
            rate: None,
            latency: None,
        }
    }
}

impl Speed {
    /// The counters a worker adds each piece to.
    pub fn tally(&self) -> Arc<Tally> {
        Arc::clone(&self.tally)
    }

    /// Pieces it gave that were stored here.
    pub fn pieces(&self) -> u64 {
        self.tally.pieces.load(Ordering::Relaxed)
    }

    /// Takes a latency sample from a batch answered at `now`. The first
    /// answer also gives the first throughput sample, at once rather than
    /// at the next tick of [`Speed::sample`]: until then the neighbour is
    /// held to one batch ([`Speed::allowance`]), and a fast peer would
    /// serve one batch at a time for a whole tick (a fifth of a 1 GiB
    /// download on loopback).
    pub fn answered_after(&mut self, latency: Duration, now: Instant) {
        if self.rate.is_none() {
            self.sample(now);
        }
        self.latency = Some(match self.latency {
            None => latency,
            Some(old) => old.mul_f64(1.0 - NEW_SAMPLE_WEIGHT) + latency.mul_f64(NEW_SAMPLE_WEIGHT),
        });
    }

    /// Takes a throughput sample: the bytes since the last one, over the
    /// time since (a few times a second).
    pub fn sample(&mut self, now: Instant) {
        let (bytes_then, then) = self.sampled;
        let secs = now.duration_since(then).as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let bytes = self.bytes();
        if self.rate.is_none() && bytes == bytes_then {
            // Nothing has come yet: the first sample will cover the time
            // from the start to the first bytes, however long it is.
            return;
        }
        let newest = bytes.saturating_sub(bytes_then) as f64 / secs;
        let weight = 1.0 - (-secs / RATE_MEMORY_SECS).exp();
        self.rate = Some(match self.rate {
            None => newest,
            Some(old) => old * (1.0 - weight) + newest * weight,
        });
        self.sampled = (bytes, now);
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.tally.bytes.load(Ordering::Relaxed)
    }

    /// Bytes per second, once measured.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Time to the first answer, once measured.
    pub fn latency(&self) -> Option<Duration> {
        self.latency
    }

    /// Forgets the throughput (a neighbour dropped and tried again starts
    /// afresh).
    pub fn reset_rate(&mut self) {
        self.rate = None;
        self.sampled = (self.bytes(), Instant::now());
    }

    /// How many pieces of `piece_len` bytes may be asked of this neighbour
    /// at once, at most `most`: what it gives in [`REQUEST_HORIZON_SECS`]
    /// (at least one); `first` (one batch) until it is measured, so that a
    /// slow peer is not handed many pieces before anyone knows it is slow.
    pub fn allowance(&self, piece_len: u32, first: usize, most: usize) -> usize {
        match self.rate {
            None => first.min(most),
            Some(rate) => {
                let pieces = (rate * REQUEST_HORIZON_SECS / f64::from(piece_len.max(1))).ceil();
                (pieces as usize).clamp(1, most.max(1))
            }
        }
    }

    /// Whether this neighbour is clearly slower than one giving `rate`
    /// (less than half as fast): a piece stuck on it may be asked of the
    /// faster one too.
    pub fn is_much_slower_than(&self, rate: Option<f64>) -> bool {
        match (self.rate, rate) {
            (Some(mine), Some(theirs)) => mine * 2.0 < theirs,
            // Nothing measured here yet while the other gives: not known to
            // be slower.
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_peer_gets_few_requests_and_a_fast_one_many() {
        let start = Instant::now();
        let mut slow = Speed::default();
        let mut fast = Speed::default();
        // Unmeasured: one batch.
        assert_eq!(slow.allowance(256 * 1024, 4, 16), 4);
        slow.sampled = (0, start);
        fast.sampled = (0, start);
        slow.tally().bytes.fetch_add(200_000, Ordering::Relaxed);
        fast.tally().bytes.fetch_add(50_000_000, Ordering::Relaxed);
        let later = start + Duration::from_secs(1);
        slow.sample(later);
        fast.sample(later);
        assert_eq!(slow.rate(), Some(200_000.0));
        assert_eq!(slow.allowance(256 * 1024, 4, 16), 1);
        assert_eq!(fast.allowance(256 * 1024, 4, 16), 16);
        assert!(slow.is_much_slower_than(fast.rate()));
        assert!(!fast.is_much_slower_than(slow.rate()));
        // The estimate follows a peer that stops giving: after a second of
        // nothing it has lost 1 - e^(-1/2) of its value.
        slow.sample(later + Duration::from_secs(1));
        let rate = slow.rate().unwrap();
        assert!((rate - 200_000.0 * (-0.5f64).exp()).abs() < 1.0, "{rate}");
    }

    #[test]
    fn the_first_answer_measures_the_rate_at_once() {
        let start = Instant::now();
        let mut speed = Speed {
            sampled: (0, start),
            ..Speed::default()
        };
        // An answer with nothing received yet (a refused piece) measures
        // nothing.
        speed.answered_after(Duration::from_millis(5), start + Duration::from_millis(10));
        assert_eq!(speed.rate(), None);
        speed.tally().bytes.fetch_add(1_000_000, Ordering::Relaxed);
        let at = start + Duration::from_millis(20);
        speed.answered_after(Duration::from_millis(5), at);
        assert_eq!(speed.rate(), Some(50_000_000.0));
        // Once measured, answers leave the rate to the sampling ticks.
        speed.tally().bytes.fetch_add(1_000_000, Ordering::Relaxed);
        speed.answered_after(Duration::from_millis(5), at + Duration::from_millis(1));
        assert_eq!(speed.rate(), Some(50_000_000.0));
        assert_eq!(speed.allowance(256 * 1024, 4, 16), 16);
    }

    #[test]
    fn latency_is_a_running_average() {
        let mut speed = Speed::default();
        speed.answered_after(Duration::from_millis(100), Instant::now());
        speed.answered_after(Duration::from_millis(300), Instant::now());
        assert_eq!(speed.latency(), Some(Duration::from_millis(200)));
    }
}
