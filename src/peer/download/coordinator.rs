//! The coordinator: the download's own thread, which decides and never
//! waits on a socket. It keeps every neighbour's BufferMap, picks which
//! pieces to ask whom for (focus window first, then rarest first, then
//! the endgame's second copies), hands the batches to the worker pool
//! ([`super::worker`]), and settles what the workers report: pieces
//! stored, refused or corrupt, neighbours dropped, retried or banned.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, info, warn};
use parking_lot::Mutex;

use crate::peer::library::SharedFile;
use crate::peer::link::{LinkError, BITMAP_DEADLINE, FIRST_ANSWER_DEADLINE};
use crate::pieces::Bitmap;
use crate::protocol::{ErrorCode, PeerId};

use super::in_flight::InFlight;
use super::rarity::{sample_rarest, Rarity};
use super::speed::Speed;
use super::stall::{Stall, StallWatch};
use super::standing::Standing;
use super::throttle_clock::ThrottleClock;
use super::worker::{batch_deadline, Job, LinkSlot, Outcome, PieceResult, Place, Worker};
use super::{
    save_progress, Controls, DownloadContext, DownloadPlan, DownloadStatus, SourceStatus,
    FOCUS_PIECES,
};

/// How many peers may be asked for the same piece in the endgame.
const ENDGAME_COPIES: usize = 2;
/// How often each neighbour's throughput is sampled.
const SPEED_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// How often a download's progress is saved for a restart.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// When the file is to be flushed at the end (`sync_on_finish`), the
/// write-out to the disk is started each time a sixteenth of the file
/// more is stored, at most this much apart, so that the disk works while
/// the rest arrives and the final flush has only the last of it left.
const WRITEBACK_AT_MOST: u64 = 64 << 20;
/// Neighbours of one download not banned at once (live, or out for a
/// while and to be tried again): a newly listed peer waits until one is
/// banned or given up. Anyone may offer a file at the tracker, so the list
/// a look-up returns cannot be trusted to stay small; and since a
/// neighbour out for a while comes back on its own, it keeps its place.
const MAX_NEIGHBOURS: usize = 64;
/// Neighbours of one download ever, banned ones included (each keeps its
/// place: its index names it in the bookkeeping). Past this, the
/// download goes on with the ones it has.
const MAX_NEIGHBOURS_EVER: usize = 4096;

/// One connection to a neighbour, and whether a worker is using it.
struct Lane {
    link: Arc<LinkSlot>,
    busy: bool,
    /// An exchange on it has succeeded.
    worked: bool,
    /// Given up for this download: the neighbour was at its connection
    /// cap (`ERRR 500`) while another lane to it worked. One connection
    /// fewer is no reason to stop using the neighbour.
    retired: bool,
}

/// One neighbour, from the coordinator's point of view.
struct Neighbour {
    peer: PeerId,
    /// Its connections (`lanes_per_peer` of them), each used by one worker
    /// at a time: pieces of one neighbour are fetched, checked and written
    /// on several cores at once.
    lanes: Vec<Lane>,
    /// Its BufferMap, less the pieces it failed to give.
    bitmap: Bitmap,
    /// Pieces it answered as missing or sent bad: never asked of it again,
    /// whatever its next BufferMaps claim. A bit per piece, as a BufferMap
    /// (a set of indices would take megabytes for a peer that refuses a
    /// large file's every piece); of no length until the first refusal.
    refused: Bitmap,
    /// When its BufferMap was last asked for (`None`: never).
    bitmap_at: Option<Instant>,
    /// Its throughput and latency.
    speed: Speed,
    /// Pieces asked of it and not answered yet.
    asked: usize,
    /// Live, out for a while, given up, or banned.
    standing: Standing,
    /// It has answered an exchange in this download: it gets the full
    /// deadline for its BufferMap (one not heard from yet gets
    /// [`FIRST_ANSWER_DEADLINE`], so that peers that take connections and
    /// never answer hold the workers only a moment).
    answered: bool,
}

pub(super) struct Coordinator<'a> {
    context: &'a DownloadContext,
    plan: &'a DownloadPlan,
    shared: &'a Arc<SharedFile>,
    status: &'a Mutex<DownloadStatus>,
    controls: Controls<'a>,
    neighbours: Vec<Neighbour>,
    /// The pieces verified here so far.
    have: Bitmap,
    /// Pieces asked for, and from which neighbours.
    in_flight: InFlight,
    /// How many live neighbours hold each piece.
    rarity: Rarity,
    /// Bytes stored since the write-out to disk was last started.
    not_written_out: u64,
    /// How many bytes stored start the write-out again (see
    /// [`WRITEBACK_AT_MOST`]).
    writeback_every: u64,
    rng: fastrand::Rng,
    /// Time the workers spent on this peer's own download limit.
    throttle: Arc<ThrottleClock>,
}

impl<'a> Coordinator<'a> {
    pub(super) fn new(
        context: &'a DownloadContext,
        plan: &'a DownloadPlan,
        shared: &'a Arc<SharedFile>,
        status: &'a Mutex<DownloadStatus>,
        controls: Controls<'a>,
        peers: Vec<PeerId>,
    ) -> Coordinator<'a> {
        let pieces = shared.manifest.piece_count();
        let mut coordinator = Coordinator {
            context,
            plan,
            shared,
            status,
            controls,
            neighbours: Vec::new(),
            have: shared.bitmap(),
            in_flight: InFlight::new(pieces),
            rarity: Rarity::new(pieces),
            not_written_out: 0,
            writeback_every: (shared.manifest.size() / 16)
                .max(u64::from(shared.manifest.piece_size()))
                .min(WRITEBACK_AT_MOST),
            rng: fastrand::Rng::new(),
            throttle: Arc::default(),
        };
        for peer in peers {
            coordinator.add_neighbour(peer, pieces);
        }
        coordinator
    }

    /// Neighbours holding a place (see [`MAX_NEIGHBOURS`]).
    fn places_taken(&self) -> usize {
        self.neighbours
            .iter()
            .filter(|n| n.standing.holds_place())
            .count()
    }

    fn add_neighbour(&mut self, peer: PeerId, pieces: usize) {
        if self.neighbours.iter().any(|n| n.peer == peer)
            || !admits_neighbour(self.places_taken(), self.neighbours.len())
        {
            return;
        }
        debug!("{}: new neighbour {peer}", self.plan.name.as_str());
        self.neighbours.push(Neighbour {
            peer,
            lanes: (0..self.context.settings.lanes_per_peer.max(1))
                .map(|_| Lane {
                    link: Arc::new(LinkSlot::default()),
                    busy: false,
                    worked: false,
                    retired: false,
                })
                .collect(),
            bitmap: Bitmap::empty(pieces),
            refused: Bitmap::empty(0),
            bitmap_at: None,
            speed: Speed::default(),
            asked: 0,
            standing: Standing::default(),
            answered: false,
        });
    }

    /// Runs the pool until every piece is here, or the download fails.
    pub(super) fn run(mut self) -> Result<(), String> {
        let settings = &self.context.settings;
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
        let (outcome_tx, outcome_rx) = crossbeam_channel::unbounded::<Outcome>();
        let winding_down = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(settings.pool_size);
        for i in 0..settings.pool_size {
            let worker = Worker {
                shared: Arc::clone(self.shared),
                limit: Arc::clone(&self.context.download_limit),
                throttle: Arc::clone(&self.throttle),
                winding_down: Arc::clone(&winding_down),
                jobs: job_rx.clone(),
                outcomes: outcome_tx.clone(),
            };
            let spawned = thread::Builder::new()
                .name(format!("fetch-{}-{i}", self.plan.name.as_str()))
                .spawn(move || worker.run());
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) if workers.is_empty() => {
                    return Err(format!("cannot start a worker thread: {e}"))
                }
                Err(e) => warn!("pool smaller than configured: {e}"),
            }
        }
        drop((job_rx, outcome_tx));
        let result = self.coordinate(&job_tx, &outcome_rx);
        // (Published every SPEED_SAMPLE_INTERVAL meanwhile; now as it ends.)
        self.publish();
        // Closing the job channel ends idle workers; closing every link
        // wakes those still blocked on a slow or silent peer, and those
        // paying the download limit for a piece stop waiting. Then join.
        winding_down.store(true, Ordering::SeqCst);
        drop(job_tx);
        for lane in self.neighbours.iter().flat_map(|n| &n.lanes) {
            lane.link.close_for_good();
        }
        for worker in workers {
            let _ = worker.join();
        }
        result
    }

    fn coordinate(
        &mut self,
        jobs: &Sender<Job>,
        outcomes: &Receiver<Outcome>,
    ) -> Result<(), String> {
        let interval = self.context.settings.bitmap_interval;
        let mut last_round = Instant::now();
        let mut last_sample = Instant::now();
        let mut last_save = (Instant::now(), self.have.count());
        let mut save_failing = false;
        let mut stall = StallWatch::new(
            self.context.settings.stall_timeout,
            self.quiet_limit(),
            self.pieces_stored(),
            self.time_throttled(),
            Instant::now(),
        );
        loop {
            if self.controls.cancel.load(Ordering::SeqCst) {
                return Err("cancelled".into());
            }
            if self.have.is_complete() {
                return Ok(());
            }
            if last_sample.elapsed() >= SPEED_SAMPLE_INTERVAL {
                last_sample = Instant::now();
                for n in &mut self.neighbours {
                    n.speed.sample(last_sample);
                }
                self.publish();
            }
            if last_round.elapsed() >= interval {
                last_round = Instant::now();
                self.periodic_round();
            }
            if last_save.0.elapsed() >= SAVE_INTERVAL {
                // Pieces written into a file no longer at its path could
                // never get the final name.
                if !self.shared.is_still_at_its_path() {
                    return Err(format!(
                        "{} was deleted, moved or replaced during the download; download \
                         it again to start over",
                        self.shared.path().display()
                    ));
                }
                if last_save.1 != self.have.count() {
                    save_progress(self.context, self.shared, &mut save_failing);
                }
                last_save = (Instant::now(), self.have.count());
            }
            self.start_writeback_if_due(jobs)?;
            self.assign(jobs);
            // Stalled? (See `stall`; BufferMap exchanges go on meanwhile,
            // and may give something to ask for.)
            let stalled = stall.look(
                Instant::now(),
                self.pieces_stored(),
                self.time_throttled(),
                self.awaits_a_neighbour_that_may_answer(),
            );
            if let Some(stalled) = stalled {
                return Err(self.stall_message(stalled));
            }
            match outcomes.recv_timeout(interval.min(Duration::from_millis(250))) {
                Ok(outcome) => self.handle(outcome)?,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err("every worker thread stopped".into())
                }
            }
        }
    }

    /// Has a worker start the write-out to disk when the file is to be
    /// flushed at the end and another `writeback_every` bytes are stored
    /// (Linux only: elsewhere the job would do nothing).
    fn start_writeback_if_due(&mut self, jobs: &Sender<Job>) -> Result<(), String> {
        let due =
            self.context.settings.sync_on_finish && self.not_written_out >= self.writeback_every;
        if cfg!(target_os = "linux") && due {
            self.not_written_out = 0;
            jobs.send(Job::StartWriteback)
                .map_err(|_| "every worker thread stopped".to_string())?;
        }
        Ok(())
    }

    /// Every BufferMap interval: take in the peers the housekeeping thread
    /// found, give dropped (not banned) neighbours another chance after a
    /// pause, and those given up one more try now and then while they are
    /// still listed.
    fn periodic_round(&mut self) {
        let (interval, now) = (self.context.settings.bitmap_interval, Instant::now());
        // Progress reports and peer look-ups are the housekeeping thread's
        // job: here only what it found is read, without waiting.
        let listed: Vec<PeerId> = match self.plan.only_from {
            Some(peer) => vec![peer],
            None => self.context.discovery.peers(&self.shared.key),
        };
        let is_listed: HashSet<PeerId> = listed.iter().copied().collect();
        let mut in_use = self.places_taken();
        for index in 0..self.neighbours.len() {
            let n = &mut self.neighbours[index];
            let back = if n.standing.holds_place() {
                n.standing.retry_if_due(interval, now)
            } else {
                // Given up (or banned, which never comes back): it takes
                // a place again if there is one.
                let again = in_use < MAX_NEIGHBOURS
                    && is_listed.contains(&n.peer)
                    && n.standing.retry_given_up_if_due(now);
                in_use += usize::from(again);
                again
            };
            if back {
                self.bring_back(index);
            }
        }
        let pieces = self.have.len();
        for peer in listed {
            self.add_neighbour(peer, pieces);
        }
    }

    /// A neighbour out until now is live again: its connections are
    /// opened anew and its BufferMap asked for at once.
    fn bring_back(&mut self, neighbour: usize) {
        let pieces = self.have.len();
        let n = &mut self.neighbours[neighbour];
        debug!(
            "{}: trying neighbour {} again",
            self.plan.name.as_str(),
            n.peer
        );
        if n.bitmap.len() != pieces {
            // Given up, its BufferMap was dropped: none until it sends one.
            n.bitmap = Bitmap::empty(pieces);
        }
        n.bitmap_at = None;
        n.speed.reset_rate();
        // Every lane afresh: a cap it was at may be gone, and old
        // successes say nothing of now.
        for lane in &mut n.lanes {
            lane.link.reopen();
            lane.worked = false;
            lane.retired = false;
        }
        self.rarity.add_holder(&n.bitmap);
    }

    /// Gives work to every idle lane of every live neighbour: its BufferMap
    /// when that is due, else the next pieces. Faster neighbours choose
    /// first, and each is asked for no more than it gives in half a second
    /// ([`Speed::allowance`]).
    fn assign(&mut self, jobs: &Sender<Job>) {
        if self.rarity.refresh(&self.have) {
            let live = self.neighbours.iter().filter(|n| n.standing.is_live());
            debug_assert!(
                self.rarity.agrees_with(live.map(|n| &n.bitmap)),
                "piece counts drifted from the live neighbours' BufferMaps"
            );
        }
        // Whether any missing piece is not asked for yet (else: endgame).
        // Taken once per round: the next round sees the pieces assigned now.
        let fresh_left = self
            .have
            .missing()
            .any(|i| !self.in_flight.contains(i as u32));
        // Unmeasured neighbours first (to measure them), then the fastest.
        let mut order: Vec<usize> = (0..self.neighbours.len()).collect();
        let speed_of = |n: &Neighbour| n.speed.rate().unwrap_or(f64::INFINITY);
        order.sort_by(|&a, &b| {
            speed_of(&self.neighbours[b]).total_cmp(&speed_of(&self.neighbours[a]))
        });
        // Peers not heard from yet are asked on at most half the workers
        // at once: those that take connections and never answer cannot
        // keep the others from the peers that do.
        let most_probes = (self.context.settings.pool_size / 2).max(1);
        let is_probe = |n: &Neighbour| !n.answered && n.lanes.iter().any(|l| l.busy);
        let mut probes = self.neighbours.iter().filter(|n| is_probe(n)).count();
        for id in order {
            for lane in 0..self.neighbours[id].lanes.len() {
                let n = &self.neighbours[id];
                if n.lanes[lane].busy || n.lanes[lane].retired || !n.standing.is_live() {
                    continue;
                }
                if !n.answered && probes >= most_probes {
                    break;
                }
                let at = Place {
                    neighbour: id,
                    lane,
                };
                let Some(job) = self.job_for(at, fresh_left, &mut probes) else {
                    break;
                };
                self.neighbours[id].lanes[lane].busy = true;
                if jobs.send(job).is_err() {
                    return;
                }
            }
        }
    }

    /// The next job for a neighbour's free lane `at`: its BufferMap when
    /// one is due (a first one counts among the `probes`), else the next
    /// pieces to ask of it, as many as its speed warrants. `None` when it
    /// is to be asked nothing more this round.
    fn job_for(&mut self, at: Place, fresh_left: bool, probes: &mut usize) -> Option<Job> {
        let settings = &self.context.settings;
        let depth = settings.queue_depth;
        let most = settings.lanes_per_peer.max(1) * depth;
        let n = &self.neighbours[at.neighbour];
        let (link, peer) = (Arc::clone(&n.lanes[at.lane].link), n.peer);
        if n.bitmap_at
            .is_none_or(|t| t.elapsed() >= settings.bitmap_interval)
        {
            let within = if n.answered {
                BITMAP_DEADLINE
            } else {
                *probes += 1;
                FIRST_ANSWER_DEADLINE
            };
            self.neighbours[at.neighbour].bitmap_at = Some(Instant::now());
            return Some(Job::Bitmap {
                at,
                link,
                peer,
                within,
            });
        }
        let piece_len = self.shared.manifest.piece_size();
        let allowance = n.speed.allowance(piece_len, depth, most);
        let room = allowance.saturating_sub(n.asked).min(depth);
        if room == 0 {
            return None;
        }
        let indices = self.pick(at.neighbour, fresh_left, room);
        if indices.is_empty() {
            return None;
        }
        for &index in &indices {
            self.in_flight.add(index, at.neighbour);
        }
        let n = &mut self.neighbours[at.neighbour];
        n.asked += indices.len();
        Some(Job::Fetch {
            at,
            link,
            peer,
            indices,
            tally: n.speed.tally(),
        })
    }

    /// The pieces a player needs next (see [`super::Download::focus_on`]).
    fn focus_window(&self) -> Option<std::ops::Range<u32>> {
        let focus = self.controls.focus.load(Ordering::Relaxed);
        let first = u32::try_from(focus).ok()?;
        Some(first..first.saturating_add(FOCUS_PIECES))
    }

    /// The next pieces (at most `room`) to ask neighbour `id` for:
    /// 1. the missing pieces of the focus window that it has, in order; one
    ///    already asked of a much slower neighbour is asked of this one too
    ///    (stolen), so that playback does not wait on a slow peer;
    /// 2. then the rarest missing pieces it has that nobody is fetching,
    ///    random among equally rare; or, in the endgame (everything missing
    ///    is being fetched), pieces another neighbour is fetching, as a
    ///    second copy.
    ///
    /// The rarest pieces are first sought by drawing pieces at random
    /// ([`sample_rarest`]); only when that finds too few is every missing
    /// piece listed.
    fn pick(&mut self, id: usize, fresh_left: bool, room: usize) -> Vec<u32> {
        let window = self.focus_window().unwrap_or(0..0);
        let pieces = self.have.len();
        let n = &self.neighbours[id];
        let wanted = |i: usize| i < pieces && !self.have.has(i) && n.bitmap.has(i);
        // (tier, then order within the tier, then a random tie-break, index)
        let mut candidates: Vec<(u8, u64, u64, u32)> = Vec::new();
        for index in window.clone().filter(|&i| wanted(i as usize)) {
            let askers = self.in_flight.askers(index);
            let take = askers.is_empty()
                || (askers.len() < ENDGAME_COPIES
                    && !askers.contains(&id)
                    && askers
                        .iter()
                        .all(|&a| self.neighbours[a].speed.is_much_slower_than(n.speed.rate())));
            if take {
                candidates.push((0, u64::from(index - window.start), 0, index));
            }
        }
        let outside = |i: u32| !window.contains(&i);
        let fresh = |i: usize| wanted(i) && !self.in_flight.contains(i as u32) && outside(i as u32);
        if fresh_left {
            let rarity = &self.rarity;
            let sampled = rarity.rarest().and_then(|rarest| {
                sample_rarest(&mut self.rng, pieces, room, |i| {
                    fresh(i) && rarity.of(i) == rarest
                })
                .map(|sampled| (u64::from(rarest), sampled))
            });
            match sampled {
                // No fresh piece is rarer than these: nothing else to see.
                Some((rarest, sampled)) => {
                    candidates.extend(sampled.into_iter().map(|index| (1, rarest, 0, index)));
                }
                None => {
                    for i in self.have.missing().filter(|&i| fresh(i)) {
                        let rarity = u64::from(rarity.of(i));
                        candidates.push((1, rarity, self.rng.u64(..), i as u32));
                    }
                    // Perhaps every piece as rare as `rarest` is here by
                    // now: find the rarest again before the next pick.
                    self.rarity.mark_stale();
                }
            }
        } else {
            for (index, askers) in self.in_flight.iter() {
                if outside(index)
                    && wanted(index as usize)
                    && askers.len() < ENDGAME_COPIES
                    && !askers.contains(&id)
                {
                    let rarity = u64::from(self.rarity.of(index as usize));
                    candidates.push((1, rarity, self.rng.u64(..), index));
                }
            }
        }
        // Only the first `room` are wanted: select them, then sort those.
        if candidates.len() > room {
            candidates.select_nth_unstable(room);
            candidates.truncate(room);
        }
        candidates.sort_unstable();
        candidates.into_iter().map(|(.., i)| i).collect()
    }

    fn handle(&mut self, outcome: Outcome) -> Result<(), String> {
        match outcome {
            Outcome::Bitmap { at, result } => {
                let neighbour = at.neighbour;
                self.neighbours[neighbour].lanes[at.lane].busy = false;
                match result {
                    Ok(mut bitmap) => {
                        let n = &mut self.neighbours[neighbour];
                        for index in n.refused.held() {
                            bitmap.clear(index);
                        }
                        // A dropped neighbour's pieces are not counted
                        // until it is back (see `periodic_round`); a
                        // banned one's are not kept at all.
                        if n.standing.is_live() {
                            self.rarity.update(&n.bitmap, &bitmap);
                        }
                        if n.standing.holds_place() {
                            n.bitmap = bitmap;
                        }
                        n.lanes[at.lane].worked = true;
                        n.answered = true;
                    }
                    Err(e) => self.lane_failed(at, e),
                }
            }
            Outcome::Fetched {
                at,
                asked,
                pieces,
                latency,
                error,
                disk_error,
            } => {
                let neighbour = at.neighbour;
                let n = &mut self.neighbours[neighbour];
                n.lanes[at.lane].busy = false;
                n.asked = n.asked.saturating_sub(asked.len());
                if let Some(latency) = latency {
                    n.speed.answered_after(latency, Instant::now());
                }
                for (index, result) in pieces {
                    self.settle(neighbour, index, result);
                }
                // Pieces asked for but not answered go back to the pool
                // (for the answered ones, settling did it already).
                for index in asked {
                    self.in_flight.remove(index, neighbour);
                }
                if let Some(e) = disk_error {
                    return Err(format!(
                        "cannot write to {}: {e}",
                        self.shared.path().display()
                    ));
                }
                match error {
                    Some(e) => self.lane_failed(at, e),
                    None => self.neighbours[neighbour].lanes[at.lane].worked = true,
                }
            }
        }
        Ok(())
    }

    /// An exchange on one lane failed. A neighbour at its connection cap
    /// (`ERRR 500`) that serves this download on another lane keeps
    /// serving it there, one lane fewer; any other failure drops it.
    fn lane_failed(&mut self, at: Place, error: LinkError) {
        let n = &mut self.neighbours[at.neighbour];
        let at_its_cap = matches!(
            error,
            LinkError::Refused {
                code: ErrorCode::Busy,
                ..
            }
        );
        let another_works = n
            .lanes
            .iter()
            .enumerate()
            .any(|(lane, l)| lane != at.lane && l.worked && !l.retired);
        if at_its_cap && another_works {
            debug!(
                "{}: {} is at its connection cap; one lane fewer ({error})",
                self.plan.name.as_str(),
                n.peer
            );
            n.lanes[at.lane].retired = true;
            return;
        }
        self.drop_neighbour(at.neighbour, error);
    }

    fn settle(&mut self, neighbour: usize, index: u32, result: PieceResult) {
        self.in_flight.remove(index, neighbour);
        let n = &mut self.neighbours[neighbour];
        match result {
            PieceResult::Stored => {
                n.standing.gave_piece();
                self.have.set(index as usize);
                let len = self.shared.manifest.piece_len(index as usize).unwrap_or(0);
                self.not_written_out += u64::from(len);
            }
            // Here already: another worker stored it, and its own report
            // (at the end of its batch) may be still to come. Counted as
            // here now, or the endgame would ask for it again and again.
            PieceResult::Duplicate => self.have.set(index as usize),
            PieceResult::Missing => self.refuse(neighbour, index),
            // From one banned already (a batch its other lanes had under
            // way): struck once is enough.
            PieceResult::Corrupt if self.neighbours[neighbour].standing.is_banned() => {}
            PieceResult::Corrupt => {
                // Never ask it for this piece again: another peer must give it.
                self.refuse(neighbour, index);
                let n = &mut self.neighbours[neighbour];
                let strikes = n.standing.strike();
                let max = self.context.settings.max_bad_pieces;
                warn!(
                    "{}: piece {index} from {} failed its hash check ({strikes} of {max} strikes)",
                    self.plan.name.as_str(),
                    n.peer,
                );
                if strikes >= max {
                    let reason =
                        format!("banned: sent {strikes} pieces that failed their hash check");
                    self.change_standing(neighbour, |s, now| s.ban(reason, now));
                }
            }
        }
    }

    /// The neighbour does not give piece `index` (it said so, or sent it
    /// corrupt): it is never asked for it again, whatever its next
    /// BufferMaps claim.
    fn refuse(&mut self, neighbour: usize, index: u32) {
        let n = &mut self.neighbours[neighbour];
        if !n.standing.holds_place() {
            // Not asked again for now (its BufferMap is gone already).
            return;
        }
        if n.refused.is_empty() {
            n.refused = Bitmap::empty(self.shared.manifest.piece_count());
        }
        n.refused.set(index as usize);
        if n.standing.is_live() && n.bitmap.has(index as usize) {
            self.rarity.remove_piece(index as usize);
        }
        n.bitmap.clear(index as usize);
    }

    /// Stops using a neighbour after a failed exchange: for good if it
    /// misbehaved `max_bad_pieces` times; given up if it failed
    /// [`MAX_FAILURES`] times in a row; for a while otherwise.
    ///
    /// [`MAX_FAILURES`]: super::standing::MAX_FAILURES
    fn drop_neighbour(&mut self, neighbour: usize, error: LinkError) {
        let live = self.neighbours[neighbour].standing.is_live();
        let (reason, for_good) = match &error {
            // Out already: its other connections were closed by us, and a
            // reply cut short there (a line ended early) is no breach.
            LinkError::Misbehaved(what) if !live => (format!("disconnected: {what}"), false),
            LinkError::Misbehaved(what) => {
                let strikes = self.neighbours[neighbour].standing.strike();
                if strikes >= self.context.settings.max_bad_pieces {
                    (format!("banned: {what}"), true)
                } else {
                    (format!("disconnected: {what}"), false)
                }
            }
            other => (format!("dropped: {other}"), false),
        };
        self.change_standing(neighbour, |standing, now| {
            if for_good {
                standing.ban(reason, now)
            } else {
                standing.fail(reason, now)
            }
        });
    }

    /// Applies `change` to a neighbour's standing. If that changed it (took
    /// it out, or banned it while out), says so in the log; if it was live
    /// until then, closes its connections and stops counting its pieces.
    fn change_standing(
        &mut self,
        neighbour: usize,
        change: impl FnOnce(&mut Standing, Instant) -> bool,
    ) {
        let n = &mut self.neighbours[neighbour];
        let was_live = n.standing.is_live();
        if !change(&mut n.standing, Instant::now()) {
            return;
        }
        let (name, reason) = (self.plan.name.as_str(), n.standing.reason().unwrap_or(""));
        if n.standing.holds_place() {
            info!("{name}: neighbour {} {reason}", n.peer);
        } else {
            warn!("{name}: neighbour {} {reason}", n.peer);
        }
        if was_live {
            self.rarity.remove_holder(&n.bitmap);
            for lane in &n.lanes {
                lane.link.close();
            }
        }
        if !n.standing.holds_place() {
            // Not asked for anything until it is tried again, if ever:
            // what it holds and what it refused need not be kept (a
            // BufferMap is up to 128 KiB).
            n.bitmap = Bitmap::empty(0);
            n.refused = Bitmap::empty(0);
        }
    }

    /// Copies the progress into the shared status.
    fn publish(&self) {
        let mut status = self.status.lock();
        status.have.clone_from(&self.have);
        status.in_flight = self.in_flight.iter().map(|(index, _)| index).collect();
        status.sources = self
            .neighbours
            .iter()
            .map(|n| SourceStatus {
                peer: n.peer,
                // Counted by the workers as pieces are stored, so a piece
                // whose batch had not reported when the download ended
                // still counts.
                pieces: n.speed.pieces(),
                bytes: n.speed.bytes(),
                rate: n.speed.rate(),
                latency: n.speed.latency(),
                dropped: n.standing.reason().map(str::to_owned),
            })
            .collect();
    }

    /// Whether a piece is asked of a live neighbour that is not on trial.
    /// One given up and back for one more try, with no piece given since
    /// ([`Standing::is_on_trial`]), does not count: a peer that takes
    /// requests and never answers them would keep the download waiting
    /// for ever, each try ending in a timeout and the next one starting.
    fn awaits_a_neighbour_that_may_answer(&self) -> bool {
        self.neighbours
            .iter()
            .any(|n| n.asked > 0 && n.standing.is_live() && !n.standing.is_on_trial())
    }

    /// The longest the download goes without storing a piece, whatever
    /// its neighbours seem to be doing (time spent on this peer's own
    /// download limit aside): the stall timeout plus the time one piece
    /// may take from the slowest peer kept ([`batch_deadline`]).
    /// A peer that takes every request and refuses each just before its
    /// deadline (no failure, so never on trial) cannot keep a download
    /// going for days.
    fn quiet_limit(&self) -> Duration {
        let piece = u64::from(self.shared.manifest.piece_size());
        self.context.settings.stall_timeout + batch_deadline(piece)
    }

    /// Time the workers spent on this peer's own download limit so far
    /// (as wall time: workers waiting side by side count once).
    fn time_throttled(&self) -> Duration {
        self.throttle.total(Instant::now())
    }

    /// Pieces the neighbours gave that were stored, counted by the workers
    /// piece by piece (the batches' reports come at their end).
    fn pieces_stored(&self) -> u64 {
        self.neighbours.iter().map(|n| n.speed.pieces()).sum()
    }

    /// Why the download cannot finish (see [`Stall`]): which pieces no
    /// peer that may answer has, or that none came for too long, or that
    /// no peer holding the file was found at all; and why the neighbours
    /// that give nothing give nothing.
    fn stall_message(&self, stall: Stall) -> String {
        let (done, pieces) = (self.have.count(), self.have.len());
        if self.neighbours.is_empty() {
            return format!(
                "stalled at {done} of {pieces} pieces: no peer holding {} ({}) was found in {} s. \
                 If the tracker answers and lists another file under that name now, \
                 delete {} and download the name again to fetch that one",
                self.plan.name.as_str(),
                self.shared.key,
                self.context.settings.stall_timeout.as_secs(),
                self.shared.path().display()
            );
        }
        // Why the others give nothing, for the first few.
        let why: Vec<String> = self
            .neighbours
            .iter()
            .filter_map(|n| Some(format!("{} {}", n.peer, n.standing.why_not_giving()?)))
            .collect();
        let mut whys: String = why.iter().take(3).map(|w| format!("; {w}")).collect();
        if why.len() > 3 {
            whys.push_str(&format!("; {} more out", why.len() - 3));
        }
        let may_answer = |n: &&Neighbour| n.standing.is_live() && !n.standing.is_on_trial();
        let answering = self.neighbours.iter().filter(may_answer).count();
        let of = self.neighbours.len();
        if stall == Stall::NothingCame {
            return format!(
                "stalled at {done} of {pieces} pieces: no piece came in {} s, though {answering} \
                 of {of} neighbours took requests{whys}",
                self.quiet_limit().as_secs()
            );
        }
        let held: HashSet<usize> = self
            .neighbours
            .iter()
            .filter(may_answer)
            .flat_map(|n| n.bitmap.held())
            .collect();
        let lacking: Vec<usize> = self.have.missing().filter(|i| !held.contains(i)).collect();
        let shown: Vec<String> = lacking.iter().take(20).map(ToString::to_string).collect();
        let more = if lacking.len() > 20 {
            format!(" and {} more", lacking.len() - 20)
        } else {
            String::new()
        };
        format!(
            "stalled at {done} of {pieces} pieces: no peer that answers has piece(s) {}{more} \
             ({answering} of {of} neighbours answering{whys})",
            shown.join(", ")
        )
    }
}

/// Whether a download with `in_use` neighbours not banned and `ever` in
/// all may take one more: see [`MAX_NEIGHBOURS`] and
/// [`MAX_NEIGHBOURS_EVER`].
fn admits_neighbour(in_use: usize, ever: usize) -> bool {
    in_use < MAX_NEIGHBOURS && ever < MAX_NEIGHBOURS_EVER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_are_capped_at_once_and_in_all() {
        assert!(admits_neighbour(0, 0));
        assert!(admits_neighbour(MAX_NEIGHBOURS - 1, 1000));
        // Full: a new one waits until one is banned or given up.
        assert!(!admits_neighbour(MAX_NEIGHBOURS, MAX_NEIGHBOURS));
        assert!(admits_neighbour(MAX_NEIGHBOURS - 1, MAX_NEIGHBOURS));
        // Banned ones count in all, so a stream of bad peers ends.
        assert!(!admits_neighbour(1, MAX_NEIGHBOURS_EVER));
    }
}
