//! The pool threads of a download, and what passes between them and the
//! coordinator: a [`Job`] in (fetch these pieces from that neighbour, or
//! exchange BufferMaps with it), an [`Outcome`] out (none for a
//! [`Job::StartWriteback`]). A worker owns nothing but the job in hand:
//! it takes the neighbour's connection ([`LinkSlot`]), sends one `REQF`
//! for the batch, checks each piece's SHA-256 against the manifest as it
//! arrives, and writes the good ones at their offset.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::debug;
use parking_lot::Mutex;

use crate::peer::library::SharedFile;
use crate::peer::link::{LinkCloser, LinkError, PeerLink, PieceAnswer, MIN_PIECE_RATE};
use crate::peer::ratelimit::RateLimiter;
use crate::pieces::Bitmap;
use crate::protocol::{PeerId, PeerRequest};

use super::speed::Tally;
use super::throttle_clock::ThrottleClock;

/// Time allowed for any batch of pieces, on top of the time the bytes take
/// at [`MIN_PIECE_RATE`].
const BATCH_ALLOWANCE: Duration = Duration::from_secs(60);

/// How long a batch of `bytes` may take: [`BATCH_ALLOWANCE`] plus the
/// bytes at [`MIN_PIECE_RATE`]. A peer slower than that is dropped.
pub(super) fn batch_deadline(bytes: u64) -> Duration {
    BATCH_ALLOWANCE + Duration::from_secs(bytes / MIN_PIECE_RATE)
}

/// Which connection a job runs on: a neighbour, and one of its lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub(super) neighbour: usize,
    pub(super) lane: usize,
}

/// Work for a worker thread.
pub(super) enum Job {
    /// Fetch these pieces from this neighbour.
    Fetch {
        at: Place,
        link: Arc<LinkSlot>,
        peer: PeerId,
        indices: Vec<u32>,
        /// The neighbour's counters (see [`super::speed::Speed`]).
        tally: Arc<Tally>,
    },
    /// Exchange BufferMaps with this neighbour.
    Bitmap {
        at: Place,
        link: Arc<LinkSlot>,
        peer: PeerId,
        /// The exchange's deadline: short for a peer not heard from yet.
        within: Duration,
    },
    /// Start writing the pieces stored so far out to the disk (the file is
    /// to be flushed at the end): no outcome.
    StartWriteback,
}

/// What a worker reports back.
pub(super) enum Outcome {
    Fetched {
        at: Place,
        /// The pieces the job asked for.
        asked: Vec<u32>,
        pieces: Vec<(u32, PieceResult)>,
        /// Time from the request to the first answer.
        latency: Option<Duration>,
        /// The connection failed or the peer misbehaved after these pieces.
        error: Option<LinkError>,
        /// Writing to our own disk failed: the download cannot go on.
        disk_error: Option<io::Error>,
    },
    Bitmap {
        at: Place,
        result: Result<Bitmap, LinkError>,
    },
}

/// What became of one requested piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PieceResult {
    /// Verified and written.
    Stored,
    /// The neighbour said it does not have it.
    Missing,
    /// Its hash did not match: thrown away.
    Corrupt,
    /// Already here (an endgame duplicate): thrown away.
    Duplicate,
}

/// A neighbour's connection: the link a worker uses, and a closer the
/// coordinator can use while a worker is blocked on the link.
#[derive(Default)]
pub(super) struct LinkSlot {
    link: Mutex<Option<PeerLink>>,
    closer: Mutex<Closer>,
}

/// The closer of a slot's current link, and whether a new link may be
/// opened.
#[derive(Default)]
struct Closer {
    current: Option<LinkCloser>,
    /// Set while the neighbour is dropped: a worker that takes a job left
    /// in the queue for it must not connect to it again (until
    /// [`LinkSlot::reopen`]).
    paused: bool,
    /// Set when the download ends: no new link may be opened any more.
    closed: bool,
}

impl LinkSlot {
    /// Closes the connection, waking a worker blocked on it, and opens no
    /// other until [`LinkSlot::reopen`] (the neighbour was dropped).
    pub(super) fn close(&self) {
        let mut closer = self.closer.lock();
        closer.paused = true;
        if let Some(current) = closer.current.take() {
            current.close();
        }
    }

    /// Lets a new connection be opened after [`LinkSlot::close`] (the
    /// neighbour is tried again).
    pub(super) fn reopen(&self) {
        self.closer.lock().paused = false;
    }

    /// Closes the connection for good: no new one may be opened.
    pub(super) fn close_for_good(&self) {
        let mut closer = self.closer.lock();
        closer.closed = true;
        if let Some(current) = closer.current.take() {
            current.close();
        }
    }
}

/// A pool thread: takes jobs until the channel closes.
pub(super) struct Worker {
    pub(super) shared: Arc<SharedFile>,
    /// The peer's download limit: each piece received is paid for here,
    /// a block at a time as it is read.
    pub(super) limit: Arc<RateLimiter>,
    /// The download's clock of time spent waiting on that limit (shared
    /// by its workers; see the coordinator's stall check).
    pub(super) throttle: Arc<ThrottleClock>,
    /// Set when the pool winds down (the download finished, failed or was
    /// cancelled): a wait for the limit ends then, as the piece it pays
    /// for is no longer needed (at a low limit the debt of one batch is
    /// minutes; the debt itself stays, for the peer's next downloads).
    pub(super) winding_down: Arc<AtomicBool>,
    pub(super) jobs: Receiver<Job>,
    pub(super) outcomes: Sender<Outcome>,
}

impl Worker {
    pub(super) fn run(self) {
        let mut buf = Vec::new();
        for job in self.jobs.iter() {
            let outcome = match job {
                Job::Fetch {
                    at,
                    link,
                    peer,
                    indices,
                    tally,
                } => self.fetch(at, &link, peer, indices, &tally, &mut buf),
                Job::Bitmap {
                    at,
                    link,
                    peer,
                    within,
                } => {
                    let mut guard = link.link.lock();
                    let pieces = self.shared.manifest.piece_count();
                    let result = connected(&mut guard, &link, peer)
                        .and_then(|l| l.exchange_bitmaps(self.shared.key, None, pieces, within));
                    if result.is_err() {
                        *guard = None;
                    }
                    Outcome::Bitmap { at, result }
                }
                Job::StartWriteback => {
                    // Only a head start: the final flush reports any error.
                    if let Err(e) = self.shared.start_writeback() {
                        debug!("{}: early write-out: {e}", self.shared.name.as_str());
                    }
                    continue;
                }
            };
            if self.outcomes.send(outcome).is_err() {
                return;
            }
        }
    }

    fn fetch(
        &self,
        at: Place,
        link: &LinkSlot,
        peer: PeerId,
        indices: Vec<u32>,
        tally: &Tally,
        buf: &mut Vec<u8>,
    ) -> Outcome {
        let mut pieces = Vec::with_capacity(indices.len());
        let mut disk_error = None;
        let mut latency = None;
        let mut guard = link.link.lock();
        let key = self.shared.key;
        let manifest = &self.shared.manifest;
        let result = connected(&mut guard, link, peer).and_then(|l| {
            let bytes: u64 = indices
                .iter()
                .map(|&i| u64::from(manifest.piece_len(i as usize).unwrap_or(0)))
                .sum();
            l.set_deadline(Some(batch_deadline(bytes)));
            l.send(&PeerRequest::Reqf {
                key,
                indices: indices.clone(),
            })?;
            let asked_at = Instant::now();
            // Time spent waiting on this peer's own download limit: this
            // side's time, not the neighbour's.
            let mut paid = Duration::ZERO;
            for &index in &indices {
                let answer = self.receive(l, index, buf, tally, &mut paid)?;
                latency.get_or_insert_with(|| asked_at.elapsed().saturating_sub(paid));
                match self.settle(index, answer, buf, tally) {
                    Ok(result) => pieces.push((index, result)),
                    Err(e) => {
                        disk_error = Some(e);
                        break;
                    }
                }
            }
            Ok(())
        });
        let error = result.err();
        // A batch not read to its end (a broken link, or a disk error that
        // stopped the loop) leaves answers on the link: it is not reused.
        if error.is_some() || disk_error.is_some() {
            *guard = None;
        }
        Outcome::Fetched {
            at,
            asked: indices,
            pieces,
            latency,
            error,
            disk_error,
        }
    }

    /// Reads the answer for piece `index` into `buf`. Under a download
    /// limit each block first waits out those read before it; the time
    /// waited is added to `paid` (this side's time, not the neighbour's).
    fn receive(
        &self,
        link: &mut PeerLink,
        index: u32,
        buf: &mut Vec<u8>,
        tally: &Tally,
        paid: &mut Duration,
    ) -> Result<PieceAnswer, LinkError> {
        let key = self.shared.key;
        let len = self.shared.manifest.piece_len(index as usize).unwrap_or(0);
        let answer = if self.limit.rate() == 0 {
            link.read_piece(key, index, len, buf, None)?
        } else {
            let mut pay = |bytes| {
                let ((), waited) = self
                    .throttle
                    .time(|| self.limit.take_unless(bytes, &self.winding_down));
                *paid += waited;
                waited
            };
            link.read_piece(key, index, len, buf, Some(&mut pay))?
        };
        if answer == PieceAnswer::Received {
            tally.bytes.fetch_add(u64::from(len), Ordering::Relaxed);
        }
        Ok(answer)
    }

    /// What becomes of piece `index` as answered: checked against the
    /// manifest and written at its offset, unless it was missing, is here
    /// already, or is corrupt. A disk error is the caller's to report.
    fn settle(
        &self,
        index: u32,
        answer: PieceAnswer,
        piece: &[u8],
        tally: &Tally,
    ) -> io::Result<PieceResult> {
        let at = index as usize;
        Ok(match answer {
            PieceAnswer::Missing => PieceResult::Missing,
            PieceAnswer::Received if self.shared.has_piece(at) => PieceResult::Duplicate,
            PieceAnswer::Received if !self.shared.manifest.verify_piece(at, piece) => {
                PieceResult::Corrupt
            }
            PieceAnswer::Received => {
                if !self.shared.store_piece(at, piece)? {
                    return Ok(PieceResult::Duplicate);
                }
                tally.pieces.fetch_add(1, Ordering::Relaxed);
                PieceResult::Stored
            }
        })
    }
}

/// The link in `slot`, connecting first if there is none, or if the one
/// there was closed by the coordinator (and leaving a closer for the
/// coordinator in `owner`). Refused while the slot is paused or closed.
fn connected<'s>(
    slot: &'s mut Option<PeerLink>,
    owner: &LinkSlot,
    peer: PeerId,
) -> Result<&'s mut PeerLink, LinkError> {
    let refused = |closer: &Closer| {
        let why = if closer.closed {
            "the download is over"
        } else {
            "the neighbour is dropped"
        };
        LinkError::Io(io::Error::other(why))
    };
    {
        let closer = owner.closer.lock();
        if closer.closed || closer.paused {
            return Err(refused(&closer));
        }
        // No closer left: the coordinator closed this link while no worker
        // was using it (the neighbour was dropped, and is now tried
        // again). It is dead; using it would fail at once and count as a
        // new failure.
        if closer.current.is_none() {
            *slot = None;
        }
    }
    // A link left unused past the peer's idle deadline was closed by it
    // (with an `ERRR 303` farewell): a new one, rather than a request
    // answered with that farewell and counted as the peer's failure.
    if slot.as_ref().is_some_and(PeerLink::went_stale) {
        *slot = None;
    }
    if slot.is_none() {
        let link = PeerLink::connect(peer)?;
        let mut closer = owner.closer.lock();
        if closer.closed || closer.paused {
            return Err(refused(&closer));
        }
        closer.current = Some(link.closer()?);
        *slot = Some(link);
    }
    Ok(slot.as_mut().expect("just connected"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_closed_link_is_replaced_only_once_reopened_and_never_after_the_end() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = listener.local_addr().unwrap();
        let slot = LinkSlot::default();
        let mut guard = slot.link.lock();
        connected(&mut guard, &slot, peer).unwrap();
        let (_first, first_from) = listener.accept().unwrap();
        listener.set_nonblocking(true).unwrap();
        let no_new_connection = |listener: &TcpListener| {
            std::thread::sleep(Duration::from_millis(100));
            matches!(listener.accept(), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        };
        // Used again as it is.
        connected(&mut guard, &slot, peer).unwrap();
        assert!(no_new_connection(&listener));
        // The neighbour is dropped while no worker holds the link: a job
        // still queued for it must not connect again.
        slot.close();
        assert!(connected(&mut guard, &slot, peer).is_err());
        assert!(no_new_connection(&listener));
        // Tried again: a new connection replaces the dead one.
        slot.reopen();
        connected(&mut guard, &slot, peer).unwrap();
        let second_from = loop {
            match listener.accept() {
                Ok((_, from)) => break from,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_ne!(first_from, second_from, "a new connection");
        slot.close_for_good();
        slot.reopen();
        assert!(
            connected(&mut guard, &slot, peer).is_err(),
            "the end is final"
        );
        assert!(no_new_connection(&listener));
    }
}
