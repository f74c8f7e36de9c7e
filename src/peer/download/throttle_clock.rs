//! How long a download has waited on this peer's own download limit, in
//! wall-clock time: the time during which at least one of its workers
//! waited, however many waited side by side. The stall rules (`stall`)
//! take this time off the neighbours' account. A sum of every worker's
//! wait would count four workers throttled for a second as four seconds,
//! and so see a stalled download up to four times later than it should.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The download's clock of time spent on its own download limit.
#[derive(Debug, Default)]
pub struct ThrottleClock {
    waits: Mutex<Waits>,
}

#[derive(Debug, Default)]
struct Waits {
    /// Workers waiting now.
    waiting: usize,
    /// When the current stretch of waiting began (while `waiting > 0`).
    since: Option<Instant>,
    /// The stretches of waiting that have ended.
    ended: Duration,
}

impl ThrottleClock {
    /// Runs `wait` (a worker waiting on the limit) on the clock; what it
    /// gave, and how long it took.
    pub fn time<T>(&self, wait: impl FnOnce() -> T) -> (T, Duration) {
        let began = Instant::now();
        self.begin(began);
        let result = wait();
        let ended = Instant::now();
        self.end(ended);
        (result, ended.saturating_duration_since(began))
    }

    /// A worker starts waiting at `now`.
    fn begin(&self, now: Instant) {
        let mut waits = self.waits.lock();
        if waits.waiting == 0 {
            waits.since = Some(now);
        }
        waits.waiting += 1;
    }

    /// A worker stops waiting at `now`.
    fn end(&self, now: Instant) {
        let mut waits = self.waits.lock();
        waits.waiting = waits.waiting.saturating_sub(1);
        if waits.waiting == 0 {
            if let Some(since) = waits.since.take() {
                waits.ended += now.saturating_duration_since(since);
            }
        }
    }

    /// The time spent waiting up to `now`, the stretch going on included.
    pub fn total(&self, now: Instant) -> Duration {
        let waits = self.waits.lock();
        let current = waits
            .since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        waits.ended + current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn workers_waiting_side_by_side_count_once() {
        let clock = ThrottleClock::default();
        let t0 = Instant::now();
        // Four workers wait from t0 to t0 + 1 s, together.
        for _ in 0..4 {
            clock.begin(t0);
        }
        assert_eq!(clock.total(t0 + SECOND / 2), SECOND / 2, "while they wait");
        for _ in 0..4 {
            clock.end(t0 + SECOND);
        }
        assert_eq!(clock.total(t0 + 5 * SECOND), SECOND);
    }

    #[test]
    fn overlapping_and_separate_waits_add_up_as_wall_time() {
        let clock = ThrottleClock::default();
        let t0 = Instant::now();
        // One worker 0-2 s, another 1-3 s (overlapping: 3 s), then one
        // alone 10-11 s.
        clock.begin(t0);
        clock.begin(t0 + SECOND);
        clock.end(t0 + 2 * SECOND);
        clock.end(t0 + 3 * SECOND);
        assert_eq!(clock.total(t0 + 9 * SECOND), 3 * SECOND);
        clock.begin(t0 + 10 * SECOND);
        clock.end(t0 + 11 * SECOND);
        assert_eq!(clock.total(t0 + 20 * SECOND), 4 * SECOND);
    }

    #[test]
    fn time_runs_the_wait_on_the_clock() {
        let clock = ThrottleClock::default();
        let before = Instant::now();
        let (answer, took) = clock.time(|| {
            std::thread::sleep(Duration::from_millis(20));
            42
        });
        assert_eq!(answer, 42);
        let total = clock.total(Instant::now());
        assert_eq!(total, took);
        assert!(total >= Duration::from_millis(20), "{total:?}");
        assert!(total <= before.elapsed(), "{total:?}");
    }
}
