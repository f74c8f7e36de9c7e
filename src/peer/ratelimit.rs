//! A token bucket: caps the bytes per second a peer sends or receives,
//! across all its connections at once. A peer has two: the upload limit,
//! which each mini-server connection pays before it writes a block of a
//! piece, and the download limit, which each download worker pays as it
//! reads a block of a piece (each block first waits out those before it,
//! and the wait leaves the bytes in the socket, so the sender is held back
//! too). Both pay [`PAID_BLOCK`] bytes at a
//! time: with large pieces and a low limit the bytes still flow steadily,
//! where a whole piece at once and then minutes of silence would look to
//! the other side like a peer gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Under a limit, a piece is paid for, and sent or read, this many bytes
/// at a time.
pub const PAID_BLOCK: usize = 64 * 1024;

/// A shared byte-rate limit. A rate of 0 means no limit.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_second: u64,
    state: Mutex<Bucket>,
    /// Set at shutdown: nobody waits any more.
    closed: AtomicBool,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may go now; negative when a large write ran ahead.
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A limiter of `bytes_per_second` (0: unlimited).
    pub fn new(bytes_per_second: u64) -> RateLimiter {
        RateLimiter {
            bytes_per_second,
            state: Mutex::new(Bucket {
                tokens: 0.0,
                last: Instant::now(),
            }),
            closed: AtomicBool::new(false),
        }
    }

    /// The configured rate (0: unlimited).
    pub fn rate(&self) -> u64 {
        self.bytes_per_second
    }

    /// Waits until `bytes` may go (be sent, or counted as received). Large
    /// amounts go at once and are paid for by waiting before the next one,
    /// so the average rate holds whatever the piece size.
    pub fn take(&self, bytes: u64) {
        self.take_unless(bytes, &AtomicBool::new(false));
    }

    /// Like [`RateLimiter::take`], but the wait also ends when `stop` is
    /// set (a download's pool winding down: its workers must not wait out
    /// a debt for pieces no longer needed; the debt itself stays).
    pub fn take_unless(&self, bytes: u64, stop: &AtomicBool) {
        if self.bytes_per_second == 0 {
            return;
        }
        let rate = self.bytes_per_second as f64;
        // At most an eighth of a second's worth saved up: smooth, not bursty.
        let burst = rate / 8.0;
        let wait = {
            let mut bucket = self.state.lock();
            let now = Instant::now();
            let elapsed = now.duration_since(bucket.last).as_secs_f64();
            bucket.last = now;
            bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
            let wait = if bucket.tokens < 0.0 {
                -bucket.tokens / rate
            } else {
                0.0
            };
            bucket.tokens -= bytes as f64;
            wait
        };
        // Sleep in short slices, so a shutdown never waits out the debt.
        let until = Instant::now() + Duration::from_secs_f64(wait);
        while !self.closed.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    /// Releases every waiting and future `take` at once (for shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_rate_holds() {
        let limiter = RateLimiter::new(1_000_000);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.take(100_000);
        }
        limiter.take(0);
        // 500 kB at 1 MB/s takes at least ~0.4 s (the first write is free).
        assert!(
            start.elapsed() >= Duration::from_millis(350),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn close_releases_a_long_wait() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1000));
        limiter.take(1_000_000); // a debt of 1000 s
        let waiter = std::thread::spawn({
            let limiter = std::sync::Arc::clone(&limiter);
            move || limiter.take(1)
        });
        std::thread::sleep(Duration::from_millis(50));
        limiter.close();
        waiter.join().unwrap(); // returns: the test would hang otherwise
    }

    #[test]
    fn a_stop_flag_releases_a_wait() {
        use std::sync::Arc;
        let limiter = Arc::new(RateLimiter::new(1000));
        limiter.take(1_000_000); // a debt of 1000 s
        let stop = Arc::new(AtomicBool::new(false));
        let waiter = std::thread::spawn({
            let (limiter, stop) = (Arc::clone(&limiter), Arc::clone(&stop));
            move || limiter.take_unless(1, &stop)
        });
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        waiter.join().unwrap(); // returns: the test would hang otherwise
    }

    #[test]
    fn zero_is_unlimited() {
        let limiter = RateLimiter::new(0);
        let start = Instant::now();
        limiter.take(u64::MAX);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no wait without a limit"
        );
    }
}
