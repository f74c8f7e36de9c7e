//! The JSON API behind the page, usable with `curl` (README, section API).
//! Each handler takes the running [`Peer`] and returns a status code and a
//! JSON body, or an [`ApiError`] whose message is meant for a person.

use serde_json::{json, Value};

use crate::peer::download::{Download, DownloadState, DownloadStatus};
use crate::peer::media::Profile;
use crate::peer::{Peer, PeerError};
use crate::protocol::{Criterion, FileKey, MediaKind, SearchCriteria, MAX_CRITERIA};

/// A failed API call: an HTTP status and a sentence.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// The body sent for it: `{"error": "..."}`.
    pub fn body(&self) -> Value {
        json!({ "error": self.message })
    }
}

pub type ApiResult = Result<(u16, Value), ApiError>;

/// A peer error as the page shows it: the tracker out of reach is a bad
/// gateway; anything else the peer refused is the request's fault.
fn peer_error(e: PeerError) -> ApiError {
    match e {
        PeerError::TrackerUnreachable { .. }
        | PeerError::TrackerTooSlow { .. }
        | PeerError::TrackerProtocol(_) => ApiError::new(502, e.to_string()),
        PeerError::NotFound(_) => ApiError::new(404, e.to_string()),
        PeerError::Busy(_) => ApiError::new(409, e.to_string()),
        PeerError::TrackerRefused { .. } => ApiError::new(400, e.to_string()),
        PeerError::File { .. } | PeerError::Failed(_) => ApiError::new(500, e.to_string()),
    }
}

/// `GET /api/info`
pub fn info(peer: &Peer) -> ApiResult {
    let config = peer.config();
    Ok((
        200,
        json!({
            "profile": config.profile.as_str(),
            "peer": peer.listen_addr().to_string(),
            "tracker": config.tracker.to_string(),
            "user": config.user.as_ref().map(|u| u.as_str()),
        }),
    ))
}

/// `GET /api/files?q=words`: the swarm's files of this peer's kind.
pub fn files(peer: &Peer, words: &str) -> ApiResult {
    let mut criteria: Vec<Criterion> = words
        .split_whitespace()
        .map(|w| Criterion::Word(w.to_string()))
        .collect();
    if let Some(kind) = peer.config().profile.kind() {
        criteria.push(Criterion::Kind(kind));
    }
    if criteria.len() > MAX_CRITERIA {
        let words = MAX_CRITERIA - usize::from(peer.config().profile.kind().is_some());
        return Err(ApiError::new(
            400,
            format!("at most {words} words in a search"),
        ));
    }
    let criteria = SearchCriteria(criteria);
    // `RQFS`, a space, the words encoded, and the line's end.
    let line = "RQFS ".len() + criteria.to_string().len() + 2;
    if line > crate::protocol::DEFAULT_MAX_LINE {
        return Err(ApiError::new(
            400,
            format!(
                "a search too long: {line} bytes once encoded, and a tracker takes lines of {}",
                crate::protocol::DEFAULT_MAX_LINE
            ),
        ));
    }
    let found = peer.search(&criteria).map_err(peer_error)?;
    let files: Vec<Value> = found
        .iter()
        .map(|f| {
            let here = peer.library().get(&f.key).map(|file| {
                if file.is_complete() {
                    "complete"
                } else {
                    "partial"
                }
            });
            json!({
                "key": f.key.to_string(), "name": f.name.as_str(), "size": f.size,
                "kind": f.kind.as_str(), "seeders": f.seeders, "leechers": f.leechers,
                "here": here,
            })
        })
        .collect();
    Ok((200, json!({ "files": files })))
}

/// `POST /api/downloads` with `{"key": "<64 hex digits>"}`.
pub fn start_download(peer: &Peer, body: &[u8]) -> ApiResult {
    let asked: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            format!("the body must be JSON like {{\"key\": \"...\"}}: {e}"),
        )
    })?;
    let text = asked
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::new(400, "the body must have a \"key\" (64 hex digits)"))?;
    let key = FileKey::parse(text).map_err(|e| ApiError::new(400, e.to_string()))?;
    let entry = peer.find_file(&key.to_string()).map_err(peer_error)?;
    let profile = peer.config().profile;
    if !profile.shows(entry.kind) {
        return Err(ApiError::new(
            403,
            format!(
                "{} is {}, and this is {} client",
                entry.name.as_str(),
                match entry.kind {
                    MediaKind::Audio => "an audio file",
                    MediaKind::Video => "a video file",
                    MediaKind::Other => "neither audio nor video",
                },
                profile_article(profile)
            ),
        ));
    }
    if peer.library().get(&key).is_some_and(|f| f.is_complete()) {
        return Err(ApiError::new(
            409,
            format!("{} is already here", entry.name.as_str()),
        ));
    }
    peer.download_file(entry, None).map_err(peer_error)?;
    Ok((202, json!({ "key": key.to_string() })))
}

fn profile_article(profile: Profile) -> &'static str {
    match profile {
        Profile::Audio => "an audio",
        Profile::Video => "a video",
        Profile::All => "an all-files",
    }
}

/// The download of `key` under way, if any.
pub fn running(peer: &Peer, key: FileKey) -> Option<std::sync::Arc<Download>> {
    peer.downloads()
        .into_iter()
        .rev()
        .find(|d| !d.is_finished() && d.key() == key)
}

/// `GET /api/downloads`: the latest download of each file of this peer's
/// kind, newest last. The page shows one box per file; a file downloaded
/// into two folders (the shell can) is shown by its latest download.
pub fn downloads(peer: &Peer) -> ApiResult {
    let profile = peer.config().profile;
    let mut seen = std::collections::HashSet::new();
    let mut latest: Vec<_> = peer
        .downloads()
        .into_iter()
        .rev()
        .filter(|d| seen.insert(d.key()))
        .collect();
    latest.reverse();
    let list: Vec<Value> = latest
        .iter()
        .map(|d| (d.status(), d.was_cancelled()))
        .filter(|(s, _)| profile.shows(s.kind))
        .map(|(s, cancelled)| download_json(&s, cancelled))
        .collect();
    Ok((200, json!({ "downloads": list })))
}

/// A download as the page shows it; `cancelled`: it was asked to stop
/// (whatever words its end was told in).
fn download_json(s: &DownloadStatus, cancelled: bool) -> Value {
    let (state, error) = match &s.state {
        DownloadState::Starting => ("starting", None),
        DownloadState::Fetching => ("downloading", None),
        DownloadState::Finishing => ("finishing", None),
        DownloadState::Done(_) => ("done", None),
        DownloadState::Failed(_) if cancelled => ("cancelled", None),
        DownloadState::Failed(reason) => ("failed", Some(reason.as_str())),
    };
    let done = s.bytes_done();
    let progress = s.fraction_done();
    let eta = s
        .rate()
        .filter(|&r| r > 0.0 && !s.state.is_over())
        .map(|r| s.size.saturating_sub(done) as f64 / r);
    let peers: Vec<Value> = s
        .sources
        .iter()
        .map(|p| {
            json!({
                "addr": p.peer.to_string(), "pieces": p.pieces, "bytes": p.bytes,
                "rate": if s.state.is_over() { 0.0 } else { p.rate.unwrap_or(0.0) },
                "latency_ms": p.latency.map(|l| l.as_secs_f64() * 1000.0),
                "state": p.dropped.as_deref().unwrap_or("ok"),
            })
        })
        .collect();
    json!({
        "key": s.key.to_string(), "name": s.name, "kind": s.kind.as_str(), "size": s.size,
        "state": state, "error": error, "bytes_done": done,
        "pieces": s.pieces_total(), "have": s.pieces_done(), "progress": progress,
        "speed": if s.state.is_over() { 0.0 } else { s.rate().unwrap_or(0.0) },
        "eta_secs": eta, "chunks": chunk_map(s), "peers": peers,
    })
}

/// One character per piece: `#` here, `>` asked for, `.` missing.
fn chunk_map(s: &DownloadStatus) -> String {
    if matches!(s.state, DownloadState::Done(_)) {
        return "#".repeat(s.pieces_total().min(MAX_CHUNK_CELLS));
    }
    let mut map: Vec<u8> = (0..s.pieces_total())
        .map(|i| {
            if s.have.len() > i && s.have.has(i) {
                b'#'
            } else {
                b'.'
            }
        })
        .collect();
    for &i in &s.in_flight {
        if let Some(c @ b'.') = map.get_mut(i as usize) {
            *c = b'>';
        }
    }
    String::from_utf8(cells_of(&map, MAX_CHUNK_CELLS)).unwrap_or_default()
}

/// Most characters of a download's `chunks`: a file of more pieces (up to
/// 261,632) has one per run of pieces, as the page would draw it anyway
/// (a screen has fewer pixels), rather than 256 KB sent every second.
const MAX_CHUNK_CELLS: usize = 2048;

/// `map` (a character per piece) in at most `most` cells, each one run of
/// pieces: `>` if one is in flight, `#` if all are here, else `.` (the
/// page's own rule when it draws several pieces in one cell).
fn cells_of(map: &[u8], most: usize) -> Vec<u8> {
    if map.len() <= most {
        return map.to_vec();
    }
    (0..most)
        .map(|cell| {
            let run = &map[cell * map.len() / most..(cell + 1) * map.len() / most];
            if run.contains(&b'>') {
                b'>'
            } else if run.iter().all(|&c| c == b'#') {
                b'#'
            } else {
                b'.'
            }
        })
        .collect()
}

/// `GET /api/shares`: the files this peer serves, of its kind.
pub fn shares(peer: &Peer) -> ApiResult {
    let profile = peer.config().profile;
    let list: Vec<Value> = peer
        .files()
        .iter()
        .filter(|f| profile.shows(f.kind))
        .map(|f| {
            json!({
                "key": f.key.to_string(), "name": f.name.as_str(), "kind": f.kind.as_str(),
                "size": f.manifest.size(), "complete": f.is_complete(),
                "uploaded": f.uploaded().1, "path": f.path().display().to_string(),
            })
        })
        .collect();
    Ok((200, json!({ "shares": list })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_chunk_map_is_cut_into_runs_as_the_page_draws_them() {
        assert_eq!(cells_of(b"#.>#", 8), b"#.>#");
        // Four runs: all here; one missing; one in flight; two missing.
        assert_eq!(cells_of(b"####.#>#..", 4), b"#.>.");
        assert_eq!(
            cells_of(&[b'#'; 10_000], MAX_CHUNK_CELLS).len(),
            MAX_CHUNK_CELLS
        );
    }
}
