//! What the tracker answers to each request: one request in, the reply lines
//! out. No sockets here: the connection loop ([`super::connection`]) reads
//! and writes, this module decides, so every answer is testable directly.

use std::net::{IpAddr, SocketAddr};

use parking_lot::RwLock;

use crate::protocol::{ProtocolError, Reply, TrackerRequest};

use super::registry::{Registry, RegistryError, SessionId};
use super::TrackerOptions;

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
            registry
                .read()
                .search(criteria, limits.max_results)
                .into_iter()
                .map(Reply::File),
        )),
        TrackerRequest::Lstf(criteria) => Ok(Answer::listing(
            registry
                .read()
                .shares(criteria, limits.max_results)
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
