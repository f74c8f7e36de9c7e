//! A token bucket: caps the bytes per second a peer sends, across all its
//! connections at once (each connection thread takes from the same bucket
//! before it writes a piece).

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A shared byte-rate limit. A rate of 0 means no limit.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_second: u64,
    state: Mutex<Bucket>,
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
        }
    }

    /// The configured rate (0: unlimited).
    pub fn rate(&self) -> u64 {
        self.bytes_per_second
    }

    /// Waits until `bytes` may be sent. Large writes go at once and are paid
    /// for by waiting before the next one, so the average rate holds
    /// whatever the piece size.
    pub fn take(&self, bytes: u64) {
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
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
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
