//! What the tracker answers to each request: one request in, the reply lines
//! out. No sockets here: the connection loop ([`super::connection`]) reads
//! and writes, this module decides, so every answer is testable directly.

use std::net::{IpAddr, SocketAddr};

use parking_lot::RwLock;

use crate::protocol::{FileKey, ProtocolError, Reply, SearchCriteria, TrackerRequest};

use super::registry::{first_files, first_shares, Registry, RegistryError, SessionId};
use super::TrackerOptions;

/// Files a search looks at under one hold of the registry's lock. A
/// search of every file takes it once a slice, so the sessions opening,
/// offering and closing meanwhile wait for a slice at most, not for the
/// whole search (the lock is fair: a writer waiting holds back every
/// reader after it too). A file added or withdrawn while a search runs
/// may or may not be in its answer.
const SEARCH_SLICE: usize = 4096;

/// A search (`RQFS` or `LSTF`): `after` answers one slice of the files
/// (see `Registry::slice`: a narrow search is one slice), each under its
/// own hold of the lock, going on from the last key the one before looked
/// at; `first` merges the answers, so no more than `limit` are held.
fn in_slices<T>(
    registry: &RwLock<Registry>,
    criteria: &SearchCriteria,
    limit: usize,
    after: impl Fn(
        &Registry,
        Option<FileKey>,
        usize,
        &SearchCriteria,
        usize,
    ) -> (Vec<T>, Option<FileKey>),
    first: impl Fn(Vec<T>, Vec<T>, usize) -> Vec<T>,
) -> Vec<T> {
    let (mut best, mut last) = (Vec::new(), None);
    loop {
        let (found, next) = after(&registry.read(), last, SEARCH_SLICE, criteria, limit);
        best = if best.is_empty() {
            found
        } else {
            first(best, found, limit)
        };
        match next {
            Some(key) => last = Some(key),
            None => return best,
        }
    }
}

/// The reply lines for one request, and whether to close afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub lines: Vec<Reply>,
    pub close: bool,
}

impl Answer {
    fn one(reply: Reply) -> Answer {
        Answer {
            lines: vec![reply],
            close: false,
        }
    }

    /// The lines of a listing, then `END`, in one allocation.
    fn listing(items: impl ExactSizeIterator<Item = Reply>) -> Answer {
        let mut lines = Vec::with_capacity(items.len() + 1);
        lines.extend(items);
        lines.push(Reply::End);
        Answer {
            lines,
            close: false,
        }
    }

    /// The `ERRR` answer to a line that did not parse.
    pub fn protocol_error(error: &ProtocolError) -> Answer {
        Answer::one(Reply::from_error(error))
    }

    fn refused(error: RegistryError) -> Answer {
        Answer::one(Reply::error(error.code(), error.to_string()))
    }
}

/// Answers `request` from the connection whose session id is `session`
/// (open or not) and whose remote address is `remote_ip`. `limits` caps
/// the listings.
pub fn respond(
    registry: &RwLock<Registry>,
    session: SessionId,
    remote_ip: IpAddr,
    request: &TrackerRequest,
    limits: &TrackerOptions,
) -> Answer {
    let result = match request {
        TrackerRequest::Helo { port, user } => {
            // The IP always comes from the socket, never from the message.
            let peer = SocketAddr::new(remote_ip.to_canonical(), *port);
            registry
                .write()
                .open(session, peer, user.clone())
                .map(|()| Answer::one(Reply::ok(peer.to_string())))
        }
        TrackerRequest::Addf(offer) => registry
            .write()
            .offer(session, offer)
            .map(|()| Answer::one(Reply::ok(offer.key.to_string()))),
        TrackerRequest::Rmvf { key } => registry
            .write()
            .withdraw(session, *key)
            .map(|()| Answer::one(Reply::ok(key.to_string()))),
        TrackerRequest::Bitf { key, bitmap } => registry
            .write()
            .report(session, *key, bitmap)
            .map(|count| Answer::one(Reply::ok(format!("{key} {count}")))),
        TrackerRequest::Rqfs(criteria) => Ok(Answer::listing(
            in_slices(
                registry,
                criteria,
                limits.max_results,
                Registry::search_after,
                first_files,
            )
            .into_iter()
            .map(Reply::File),
        )),
        TrackerRequest::Lstf(criteria) => Ok(Answer::listing(
            in_slices(
                registry,
                criteria,
                limits.max_results,
                Registry::shares_after,
                first_shares,
            )
            .into_iter()
            .map(Reply::Share),
        )),
        TrackerRequest::Reqf { key } => registry
            .read()
            .holders(*key, session, remote_ip.to_canonical(), limits.max_peers)
            .map(|peers| Answer::listing(peers.map(Reply::Peer))),
        TrackerRequest::Usrs => Ok(Answer::listing(
            registry
                .read()
                .users()
                .into_iter()
                .map(|(user, peer)| Reply::User { user, peer }),
        )),
        TrackerRequest::Ping => Ok(Answer::one(Reply::ok("pong"))),
        TrackerRequest::Quit => {
            registry.write().close(session);
            Ok(Answer {
                lines: vec![Reply::ok("bye")],
                close: true,
            })
        }
    };
    result.unwrap_or_else(Answer::refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn ask(registry: &RwLock<Registry>, session: SessionId, line: &str) -> Vec<String> {
        let request = TrackerRequest::parse(line).unwrap();
        let ip = IpAddr::from([10, 0, 0, 7]);
        respond(registry, session, ip, &request, &TrackerOptions::default())
            .lines
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_search_of_every_file_in_slices_answers_as_one_in_one_go() {
        // Three sessions, 3,500 files each: more than two slices.
        let registry = RwLock::new(Registry::new(5000));
        for session in 1..=3u64 {
            ask(
                &registry,
                session,
                &format!("HELO {} user{session}", 7000 + session),
            );
            for i in 0..3500u64 {
                let n = session * 10_000 + i;
                let (name, kind) = match n % 3 {
                    0 => (format!("Song{n:05}.mp3"), "audio"),
                    1 => (format!("talk {n}.ogg"), "audio"),
                    _ => (format!("clip{n}.mkv"), "video"),
                };
                let name = name.replace(' ', "%20");
                let added = ask(
                    &registry,
                    session,
                    &format!("ADDF {n:064x} {name} {n} 16384 {kind} /f/{name}"),
                );
                assert!(added[0].starts_with("OK"), "{added:?}");
            }
        }
        let limits = TrackerOptions::default();
        for words in [
            "",
            "song",
            "name=*1?.mp3",
            "kind=video min=25000",
            "talk name=*9*",
        ] {
            let criteria =
                SearchCriteria::from_words(&words.split_whitespace().collect::<Vec<_>>()).unwrap();
            let sliced = ask(&registry, 9, &format!("RQFS {words}"));
            let whole: Vec<String> = registry
                .read()
                .search(&criteria, limits.max_results)
                .into_iter()
                .map(|entry| Reply::File(entry).to_string())
                .chain(["END".to_string()])
                .collect();
            assert_eq!(sliced, whole, "RQFS {words}");
            let sliced = ask(&registry, 9, &format!("LSTF {words}"));
            let whole: Vec<String> = registry
                .read()
                .shares(&criteria, limits.max_results)
                .into_iter()
                .map(|entry| Reply::Share(entry).to_string())
                .chain(["END".to_string()])
                .collect();
            assert_eq!(sliced, whole, "LSTF {words}");
        }
    }

    #[test]
    fn the_peer_ip_comes_from_the_socket() {
        let registry = RwLock::new(Registry::new(100));
        assert_eq!(ask(&registry, 1, "HELO 7001 alice"), ["OK 10.0.0.7:7001"]);
        let mapped: IpAddr = "::ffff:10.0.0.8".parse().unwrap();
        let request = TrackerRequest::parse("HELO 7002").unwrap();
        let answer = respond(&registry, 2, mapped, &request, &TrackerOptions::default());
        assert_eq!(answer.lines, [Reply::ok("10.0.0.8:7002")]);
    }

    #[test]
    fn requests_needing_a_session_say_so() {
        let registry = RwLock::new(Registry::new(100));
        let key = "ab".repeat(32);
        let answer = ask(&registry, 1, &format!("RMVF {key}"));
        assert!(answer[0].starts_with(&format!("ERRR {} ", ErrorCode::NoSession.number())));
        assert_eq!(ask(&registry, 1, "RQFS"), ["END"]);
    }

    #[test]
    fn quit_closes_the_session_and_the_connection() {
        let registry = RwLock::new(Registry::new(100));
        ask(&registry, 1, "HELO 7001 alice");
        let answer = respond(
            &registry,
            1,
            IpAddr::from([10, 0, 0, 7]),
            &TrackerRequest::Quit,
            &TrackerOptions::default(),
        );
        assert!(answer.close);
        assert_eq!(ask(&registry, 1, "USRS"), ["END"]);
    }
}
