//! A neighbour's standing in one download: live; out for a while after a
//! failed exchange (tried again after a pause that doubles with each
//! failure in a row); given up after [`MAX_FAILURES`] failures in a row
//! (tried once more every [`GIVEN_UP_RETRY`] while the peer look-up still
//! lists it: a peer restarted at the same address comes back; on trial
//! until it gives a piece); or banned
//! for good, for bad pieces or a broken protocol. Pure bookkeeping with
//! the clock passed in: the coordinator tells it what happened and asks
//! whether the neighbour may be used, so the rules are tested here alone.

use std::time::{Duration, Instant};

/// Failed exchanges in a row (no piece between them) after which a
/// neighbour is given up.
pub const MAX_FAILURES: u32 = 4;

/// How long a neighbour given up waits before it is tried once more (if
/// the peer look-up still lists it). One more failure gives it up again.
pub const GIVEN_UP_RETRY: Duration = Duration::from_secs(15);

/// The longest pause before a neighbour is tried again.
const LONGEST_PAUSE: Duration = Duration::from_secs(120);

/// Whether a neighbour may be used, and its record.
#[derive(Debug, Default)]
pub struct Standing {
    /// Why it is out, since when, and for how long (`None`: live).
    out: Option<Out>,
    /// Pieces that failed their hash check and protocol breaches so far.
    strikes: u32,
    /// Failed exchanges since the last piece it gave.
    failures: u32,
    /// Why the last of those failed (kept once it is back).
    last_failure: Option<String>,
    /// Given up, and back for one more try with no piece given since: it
    /// has failed [`MAX_FAILURES`] times in a row without a piece.
    on_trial: bool,
}

#[derive(Debug)]
struct Out {
    reason: String,
    since: Instant,
    kind: OutKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutKind {
    /// Tried again after a pause.
    Paused,
    /// Tried again only if still listed, every [`GIVEN_UP_RETRY`].
    GivenUp,
    /// Never asked for anything again.
    Banned,
}

impl Standing {
    /// Whether the neighbour may be asked for anything.
    pub fn is_live(&self) -> bool {
        self.out.is_none()
    }

    /// Whether it is out for the rest of the download.
    pub fn is_banned(&self) -> bool {
        self.is(OutKind::Banned)
    }

    /// Whether it keeps its place among the download's neighbours: live,
    /// or out for a pause and coming back on its own. One given up or
    /// banned leaves its place (and its BufferMap) to others.
    pub fn holds_place(&self) -> bool {
        !self.is(OutKind::GivenUp) && !self.is(OutKind::Banned)
    }

    fn is(&self, kind: OutKind) -> bool {
        self.out.as_ref().is_some_and(|out| out.kind == kind)
    }

    /// Why it is out, in words for the user (`None`: live).
    pub fn reason(&self) -> Option<&str> {
        self.out.as_ref().map(|out| out.reason.as_str())
    }

    /// Whether it was given up and is back for one more try, with no piece
    /// given since: until it gives one, a download does not count as
    /// waiting on it (see the coordinator's stall check).
    pub fn is_on_trial(&self) -> bool {
        self.on_trial
    }

    /// Why it gives nothing: why it is out, or, back on trial, why it
    /// failed last (`None`: neither).
    pub fn why_not_giving(&self) -> Option<&str> {
        let on_trial = self.last_failure.as_deref().filter(|_| self.on_trial);
        self.reason().or(on_trial)
    }

    /// One more strike; returns how many it has now.
    pub fn strike(&mut self) -> u32 {
        self.strikes += 1;
        self.strikes
    }

    /// It gave a good piece: its failures in a row are over.
    pub fn gave_piece(&mut self) {
        self.failures = 0;
        self.last_failure = None;
        self.on_trial = false;
    }

    /// An exchange with it failed at `now`: it is out for a while, or given
    /// up at the [`MAX_FAILURES`]th failure in a row. A failure while it
    /// is out already is the same failure seen on another of its
    /// connections (the first one's drop closed them all) and changes
    /// nothing. Returns whether the standing changed.
    pub fn fail(&mut self, reason: String, now: Instant) -> bool {
        if !self.is_live() {
            return false;
        }
        self.failures += 1;
        self.last_failure = Some(reason.clone());
        let (reason, kind) = if self.failures >= MAX_FAILURES {
            let reason =
                format!("given up after {MAX_FAILURES} failures in a row (last: {reason})");
            (reason, OutKind::GivenUp)
        } else {
            (reason, OutKind::Paused)
        };
        self.out = Some(Out {
            reason,
            since: now,
            kind,
        });
        true
    }

    /// Out for good from `now`, live or out for a while before. Returns
    /// whether the standing changed (not when it was banned already).
    pub fn ban(&mut self, reason: String, now: Instant) -> bool {
        if self.is_banned() {
            return false;
        }
        self.out = Some(Out {
            reason,
            since: now,
            kind: OutKind::Banned,
        });
        true
    }

    /// Brings it back if it is out for a while and its pause is over at
    /// `now`: one `interval` after the first failure in a row, doubling
    /// after each, at most two minutes (which only an `interval` over
    /// 30 s reaches before the [`MAX_FAILURES`]th failure gives it up).
    /// Returns whether it came back.
    pub fn retry_if_due(&mut self, interval: Duration, now: Instant) -> bool {
        let Some(out) = &self.out else {
            return false;
        };
        let doublings = self.failures.saturating_sub(1).min(6);
        let pause = (interval * 2u32.pow(doublings)).min(LONGEST_PAUSE);
        if out.kind != OutKind::Paused || now.saturating_duration_since(out.since) < pause {
            return false;
        }
        self.out = None;
        true
    }

    /// Brings it back, for one more try, if it was given up at least
    /// [`GIVEN_UP_RETRY`] before `now` (the caller asks only for a peer
    /// the look-up still lists): its next failure gives it up again.
    /// Returns whether it came back.
    pub fn retry_given_up_if_due(&mut self, now: Instant) -> bool {
        let due = self.out.as_ref().is_some_and(|out| {
            out.kind == OutKind::GivenUp
                && now.saturating_duration_since(out.since) >= GIVEN_UP_RETRY
        });
        if due {
            self.out = None;
            self.failures = MAX_FAILURES - 1;
            self.on_trial = true;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn one_back_after_being_given_up_is_on_trial_until_it_gives_a_piece() {
        let (mut standing, mut now) = (Standing::default(), Instant::now());
        // Back after a pause: not on trial (a hiccup is no verdict).
        standing.fail("dropped: reset".into(), now);
        assert!(standing.retry_if_due(SECOND, now + SECOND));
        assert!(standing.is_live() && !standing.is_on_trial());
        assert_eq!(standing.why_not_giving(), None);
        // Given up, then back for one more try: on trial.
        for pause in [2, 4] {
            now += SECOND * pause;
            standing.fail("dropped: reset".into(), now);
            assert!(standing.retry_if_due(SECOND, now + SECOND * pause));
        }
        standing.fail("dropped: no answer for 30 s".into(), now);
        assert!(standing.reason().unwrap().starts_with("given up after 4"));
        assert!(standing.retry_given_up_if_due(now + GIVEN_UP_RETRY));
        assert!(standing.is_live() && standing.is_on_trial());
        assert_eq!(
            standing.why_not_giving(),
            Some("dropped: no answer for 30 s")
        );
        standing.gave_piece();
        assert!(!standing.is_on_trial() && standing.why_not_giving().is_none());
    }

    #[test]
    fn a_failure_is_counted_once_however_many_connections_it_broke() {
        let (mut standing, t0) = (Standing::default(), Instant::now());
        assert!(standing.is_live() && standing.reason().is_none());
        assert!(standing.fail("dropped: reset".into(), t0));
        assert!(!standing.is_live() && !standing.is_banned());
        // Its other three lanes fail too, closed by the drop.
        for _ in 0..3 {
            assert!(!standing.fail("dropped: closed".into(), t0));
        }
        assert_eq!(standing.reason(), Some("dropped: reset"));
        // So the pause is the first one: one interval.
        assert!(!standing.retry_if_due(SECOND, t0 + SECOND / 2));
        assert!(standing.retry_if_due(SECOND, t0 + SECOND));
        assert!(standing.is_live());
    }

    #[test]
    fn pauses_double_until_the_neighbour_is_given_up() {
        let (mut standing, mut now) = (Standing::default(), Instant::now());
        for pause in [1, 2, 4] {
            assert!(standing.fail(format!("dropped: try {pause}"), now));
            let due = now + pause * SECOND;
            assert!(!standing.retry_if_due(SECOND, due - SECOND / 10), "{pause}");
            assert!(standing.retry_if_due(SECOND, due), "{pause}");
            now = due;
        }
        assert!(standing.fail("dropped: refused".into(), now));
        assert!(!standing.holds_place() && !standing.is_banned());
        assert_eq!(
            standing.reason(),
            Some("given up after 4 failures in a row (last: dropped: refused)")
        );
        assert!(!standing.retry_if_due(SECOND, now + 3600 * SECOND));
    }

    #[test]
    fn a_neighbour_given_up_gets_one_more_try_now_and_then() {
        let (mut standing, t0) = (Standing::default(), Instant::now());
        for _ in 0..MAX_FAILURES {
            standing.retry_if_due(SECOND, t0 + 3600 * SECOND);
            standing.fail("dropped: refused".into(), t0);
        }
        assert!(!standing.holds_place());
        assert!(!standing.retry_given_up_if_due(t0 + GIVEN_UP_RETRY - SECOND));
        assert!(standing.retry_given_up_if_due(t0 + GIVEN_UP_RETRY));
        assert!(standing.is_live());
        // One more failure: given up again at once, not paused.
        let t1 = t0 + GIVEN_UP_RETRY;
        assert!(standing.fail("dropped: refused".into(), t1));
        assert!(!standing.holds_place());
        assert!(!standing.retry_given_up_if_due(t1 + SECOND));
        // A good piece after a retry: a live neighbour like any other.
        assert!(standing.retry_given_up_if_due(t1 + GIVEN_UP_RETRY));
        standing.gave_piece();
        assert!(standing.fail("dropped: reset".into(), t1 + GIVEN_UP_RETRY));
        assert!(standing.holds_place(), "the first failure of a new run");
    }

    #[test]
    fn a_good_piece_starts_the_failures_over() {
        let (mut standing, t0) = (Standing::default(), Instant::now());
        for _ in 0..3 {
            standing.fail("dropped".into(), t0);
            assert!(standing.retry_if_due(SECOND, t0 + 200 * SECOND));
        }
        standing.gave_piece();
        assert!(standing.fail("dropped".into(), t0));
        assert!(!standing.is_banned(), "the first failure of a new run");
        assert!(standing.retry_if_due(SECOND, t0 + SECOND));
    }

    #[test]
    fn a_ban_holds_whatever_came_before_or_after() {
        let (mut standing, t0) = (Standing::default(), Instant::now());
        assert!(standing.fail("dropped: timeout".into(), t0));
        // Bad pieces from it reported after it was dropped still ban it.
        assert_eq!(standing.strike(), 1);
        assert!(standing.ban("banned: bad pieces".into(), t0));
        assert!(!standing.ban("banned: again".into(), t0));
        assert!(!standing.fail("dropped: late".into(), t0));
        assert_eq!(standing.reason(), Some("banned: bad pieces"));
        assert!(!standing.retry_if_due(SECOND, t0 + 3600 * SECOND));
        assert!(!standing.retry_given_up_if_due(t0 + 3600 * SECOND));
        assert_eq!(standing.strike(), 2);
    }

    #[test]
    fn the_longest_pause_is_two_minutes() {
        let (mut standing, t0) = (Standing::default(), Instant::now());
        standing.fail("dropped".into(), t0);
        assert!(!standing.retry_if_due(1000 * SECOND, t0 + 119 * SECOND));
        assert!(standing.retry_if_due(1000 * SECOND, t0 + 120 * SECOND));
    }
}
