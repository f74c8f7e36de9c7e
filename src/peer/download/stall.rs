//! When a download is stalled. Two rules, either of which ends it:
//! - for the stall timeout, no piece was stored and none was asked of a
//!   neighbour that may answer (no such neighbour has the missing pieces);
//! - for longer still (the coordinator's quiet limit), no piece was
//!   stored, whatever was asked: a peer that takes every request and
//!   refuses each just before its deadline never fails.
//!
//! Time spent waiting on this peer's own download limit is not the
//! neighbours' and does not count. Pure bookkeeping with the clock passed
//! in, as in `standing`: the coordinator tells it what it sees, so the
//! rules are tested here alone.

use std::time::{Duration, Instant};

/// Which of the two rules says a download is stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// For the stall timeout, nothing was asked of a peer that may answer:
    /// no such peer has the missing pieces.
    NothingToAsk,
    /// No piece was stored for the quiet limit, though requests were out.
    NothingCame,
}

/// What the stall rules remember between two looks.
#[derive(Debug)]
pub struct StallWatch {
    stall_timeout: Duration,
    quiet_limit: Duration,
    /// Pieces stored at the last look.
    stored: u64,
    /// When a piece was last stored, and the time spent on this peer's
    /// own download limit by then.
    last_piece: (Instant, Duration),
    /// Since when no piece has been stored or asked of a neighbour that
    /// may answer (`None`: one is).
    idle_since: Option<Instant>,
}

impl StallWatch {
    /// Starts watching at `now`, with `stored` pieces stored and
    /// `throttled` spent on the download limit so far.
    pub fn new(
        stall_timeout: Duration,
        quiet_limit: Duration,
        stored: u64,
        throttled: Duration,
        now: Instant,
    ) -> StallWatch {
        StallWatch {
            stall_timeout,
            quiet_limit,
            stored,
            last_piece: (now, throttled),
            idle_since: None,
        }
    }

    /// Looks at the download at `now`: `stored` pieces so far, `throttled`
    /// spent on its own download limit so far, and whether a piece is
    /// asked of a neighbour that may answer (`awaiting`). The rule that
    /// says it is stalled, if one does.
    pub fn look(
        &mut self,
        now: Instant,
        stored: u64,
        throttled: Duration,
        awaiting: bool,
    ) -> Option<Stall> {
        let progressed = stored != self.stored;
        self.stored = stored;
        if progressed {
            self.last_piece = (now, throttled);
        }
        if progressed || awaiting {
            self.idle_since = None;
        } else {
            let since = *self.idle_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.stall_timeout {
                return Some(Stall::NothingToAsk);
            }
        }
        let (at, throttled_then) = self.last_piece;
        let ours = throttled.saturating_sub(throttled_then);
        let quiet = now.saturating_duration_since(at).saturating_sub(ours);
        (quiet >= self.quiet_limit).then_some(Stall::NothingCame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn watch(t0: Instant) -> StallWatch {
        StallWatch::new(10 * SECOND, 60 * SECOND, 0, Duration::ZERO, t0)
    }

    #[test]
    fn nothing_to_ask_for_the_stall_timeout_is_a_stall_and_a_piece_restarts_it() {
        let t0 = Instant::now();
        let mut w = watch(t0);
        assert_eq!(w.look(t0, 0, Duration::ZERO, false), None);
        assert_eq!(w.look(t0 + 9 * SECOND, 0, Duration::ZERO, false), None);
        // A piece stored: the wait starts again, at the next look that
        // finds nothing asked (the coordinator looks a few times a second).
        assert_eq!(w.look(t0 + 9 * SECOND, 1, Duration::ZERO, false), None);
        assert_eq!(w.look(t0 + 10 * SECOND, 1, Duration::ZERO, false), None);
        assert_eq!(w.look(t0 + 19 * SECOND, 1, Duration::ZERO, false), None);
        assert_eq!(
            w.look(t0 + 20 * SECOND, 1, Duration::ZERO, false),
            Some(Stall::NothingToAsk)
        );
        // Asking a neighbour that may answer holds it off too.
        let mut w = watch(t0);
        assert_eq!(w.look(t0 + 30 * SECOND, 0, Duration::ZERO, true), None);
    }

    #[test]
    fn no_piece_for_the_quiet_limit_is_a_stall_whatever_is_asked() {
        let t0 = Instant::now();
        let mut w = watch(t0);
        assert_eq!(w.look(t0 + 59 * SECOND, 0, Duration::ZERO, true), None);
        assert_eq!(
            w.look(t0 + 60 * SECOND, 0, Duration::ZERO, true),
            Some(Stall::NothingCame)
        );
        // Time on this peer's own download limit is not the neighbours'.
        let mut w = watch(t0);
        assert_eq!(w.look(t0 + 70 * SECOND, 0, 20 * SECOND, true), None);
        assert_eq!(
            w.look(t0 + 80 * SECOND, 0, 20 * SECOND, true),
            Some(Stall::NothingCame)
        );
        // A piece restarts the count.
        let mut w = watch(t0);
        assert_eq!(w.look(t0 + 50 * SECOND, 1, Duration::ZERO, true), None);
        assert_eq!(w.look(t0 + 100 * SECOND, 1, Duration::ZERO, true), None);
    }
}
