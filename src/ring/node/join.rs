//! Getting into the ring: choosing an id (the hash of the address, a
//! given one, or the hash service's), asking a welcome service for a member
//! (or using the member given), and finding the successor by a look-up
//! through it. Also the welcome service's list kept right: a member found
//! dead is taken off it.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicBool;

use log::{info, warn};
use parking_lot::{Mutex, RwLock};

use crate::protocol::course::{CourseAddr, CourseReply, CourseRequest};
use crate::protocol::ring::{Member, Via};

use crate::ring::client::{RingClient, RingError, CONNECT_TIMEOUT};
use crate::ring::records::RecordStore;
use crate::ring::space::RingSpace;

use super::routing::Routing;
use super::{fits, Entry, IdChoice, RingNode, RingSettings};

/// How many ids are tried when the address's hash is taken.
const ID_ATTEMPTS: u64 = 64;
/// How many members gone a join takes off the welcome service's list
/// before it gives up (each found by one attempt).
const MAX_CLEARED: u32 = 1000;
/// How many times a peer whose id the ring still gives to its own entry
/// from before (a crash, and a restart at once) waits for the ring to
/// drop that entry, a few stabilisation rounds each time.
const OWN_ENTRY_WAITS: u32 = 10;
/// How many times a peer waits, a few stabilisation rounds each, for the
/// ring to drop a member gone that a look-up met on its way.
const GONE_WAITS: u32 = 10;

/// Members of the welcome service's list asked at most, when one that
/// answers is looked for (its ring's size, or which port is `ring_port`).
const LISTED_ASKED: usize = 10;

impl RingNode {
    /// Gets into the ring: chooses an id, asks the entry for a member (or
    /// learns it is the first), and finds its successor by a look-up
    /// through that member. `listen` is the mini-server's address; when
    /// it is the wildcard address, the IP that reaches the entry is used.
    /// Nothing is running yet: serve the node, then start its rounds.
    pub fn join(settings: RingSettings, listen: SocketAddr) -> Result<RingNode, RingError> {
        let space = settings.space;
        let contact = match settings.entry {
            Entry::Welcome(addr) | Entry::Member(addr) => addr,
        };
        let addr = if listen.ip().is_unspecified() {
            SocketAddr::new(local_ip_towards(contact)?, listen.port())
        } else {
            listen
        };
        let client = RingClient::from_ip(addr.ip());
        let mut id = match settings.id {
            IdChoice::Fixed(id) if space.contains(id) => id,
            IdChoice::Fixed(id) => {
                return Err(RingError::Failed(format!(
                    "ring id {id} is outside the ring (0 to {})",
                    space.size() - 1
                )))
            }
            IdChoice::FromAddress => space.id_of(&addr.to_string()),
            IdChoice::HashService(service) => ask_hash_service(&client, service, addr, &space)?,
        };
        let probing = settings.id == IdChoice::FromAddress;
        let mut size_checked = false;
        let (mut own_entry_waits, mut gone_waits) = (0, 0);
        let (mut ids_refused, mut cleared) = (0, 0);
        let mut ring_port = RingPort::default();
        while ids_refused < ID_ATTEMPTS {
            let attempted = attempt(&client, &settings, id, addr, &mut ring_port)?;
            // A ring of another size answers every id with `wrq`, as if
            // taken: at the first refusal, a listed member is asked its
            // ring's size.
            if let (Attempt::NextId, Entry::Welcome(welcome), false) =
                (&attempted, settings.entry, size_checked)
            {
                size_checked = true;
                same_size_as_listed(&client, welcome, &space, addr.port())?;
            }
            let successors = match attempted {
                Attempt::Placed(successors) => successors,
                Attempt::NextId if probing => {
                    ids_refused += 1;
                    id = space.add(id, 1);
                    continue;
                }
                Attempt::NextId => {
                    return Err(RingError::Failed(format!(
                        "ring id {id} is taken (or outside the welcome service's ring)"
                    )))
                }
                // A member gone, taken off the welcome list: not an id
                // refused (a list of crashed members can be long).
                Attempt::Again if cleared < MAX_CLEARED => {
                    cleared += 1;
                    continue;
                }
                Attempt::Again => {
                    return Err(RingError::Failed(format!(
                        "the welcome service named {MAX_CLEARED} members in a row that are gone (each taken off its list); try again, or join through a member you know (ring_join)"
                    )))
                }
                Attempt::OwnEntry if own_entry_waits < OWN_ENTRY_WAITS => {
                    own_entry_waits += 1;
                    // Its address answers as no member now: the members
                    // drop it within a round or two.
                    std::thread::sleep(ring_settle_time(&settings));
                    continue;
                }
                Attempt::OwnEntry => {
                    return Err(RingError::Failed(format!(
                        "the ring still holds this peer's own entry from before it stopped, at {addr}; try again in a minute, once the ring has dropped it"
                    )))
                }
                Attempt::GoneOnTheWay(_) if gone_waits < GONE_WAITS => {
                    gone_waits += 1;
                    std::thread::sleep(ring_settle_time(&settings));
                    continue;
                }
                Attempt::GoneOnTheWay(gone) => {
                    return Err(RingError::Failed(format!(
                        "{gone}, on the way to this peer's place in the ring, does not answer as a member, and the ring has not dropped it after {GONE_WAITS} waits; try again in a minute, or join through another member (ring_join)"
                    )))
                }
            };
            let me = Member { id, addr };
            info!(
                "ring: joined as {me}, successor {}",
                successors
                    .first()
                    .map_or_else(|| "me (first peer)".to_string(), ToString::to_string)
            );
            return Ok(RingNode {
                routing: RwLock::new(Routing::new(&space, me, successors)),
                records: Mutex::new(RecordStore::new()),
                client,
                welcome: match settings.entry {
                    Entry::Welcome(welcome) => Some(welcome),
                    Entry::Member(_) => None,
                },
                homes_gone: Mutex::new(std::collections::HashSet::new()),
                settings,
                rounds: Mutex::new(None),
                stopping: AtomicBool::new(false),
            });
        }
        Err(RingError::Failed(format!(
            "{ID_ATTEMPTS} ids in a row were refused: taken, or outside the welcome service's ring (is its size this peer's ring_size, {}?); set ring_size, or ring_id",
            space.size()
        )))
    }
}

/// Fails when the first member on the welcome service's list that answers
/// is in a ring of another size than `space` (the usual slip: a peer
/// started without the tracker's `--ring-size`). Members that do not
/// answer are passed over, up to [`LISTED_ASKED`] asked in all. An
/// empty list, or one whose members do not answer, passes: nothing to
/// compare with. A member listed without a port is on `usual_port` (the
/// course's rule).
fn same_size_as_listed(
    client: &RingClient,
    welcome: SocketAddr,
    space: &RingSpace,
    usual_port: u16,
) -> Result<(), RingError> {
    let Ok(listed) = client.welcome_list(welcome) else {
        return Ok(());
    };
    for (_, at) in listed.into_iter().take(LISTED_ASKED) {
        let Ok(view) = client.info(at.socket(usual_port)) else {
            continue;
        };
        if view.size != space.size() {
            return Err(RingError::Failed(format!(
                "the welcome service {welcome} lists {}, in a ring of size {}; this peer's ring_size is {} (--ring-size {} joins that ring)",
                view.me,
                view.size,
                space.size(),
                view.size
            )));
        }
        return Ok(());
    }
    Ok(())
}

/// What one attempt to join with an id came to.
enum Attempt {
    /// In: these are the successor and the peers after it (none: the
    /// first peer of the ring).
    Placed(Vec<Member>),
    /// The id is taken: another is needed.
    NextId,
    /// Something stale was cleared (a crashed member, our own old entry on
    /// the welcome list): the same id may be tried again.
    Again,
    /// The ring still holds this very address as a member (with the id
    /// tried, or on the way to it): this peer's own entry from before a
    /// crash, which the ring has yet to drop.
    OwnEntry,
    /// A member gone was met on a look-up's way (not the one the welcome
    /// service named): the ring has yet to drop it.
    GoneOnTheWay(SocketAddr),
}

/// One attempt to join with `id` at `addr`: a member to join through (from
/// the welcome service, or the one given), then our place, found through
/// it. The welcome service's list is left as it was when the attempt fails.
fn attempt(
    client: &RingClient,
    settings: &RingSettings,
    id: u64,
    addr: SocketAddr,
    ring_port: &mut RingPort,
) -> Result<Attempt, RingError> {
    // The member sent to was written without a port (on `ring_port`).
    let mut sent_to_bare = false;
    let member = match settings.entry {
        Entry::Member(member) => member,
        Entry::Welcome(welcome) => match welcome_join(client, welcome, id, addr)? {
            Welcomed::First => return Ok(Attempt::Placed(Vec::new())),
            // Our own entry from before, under another id: off the list.
            Welcomed::Through { member, bare }
                if member == addr && (!bare || ring_port.is_mine(client, welcome, addr)) =>
            {
                info!("ring: the welcome service lists this peer's own old entry; taking it off");
                // Not taken off (the list not read, say): waited on, a
                // few times, as an own entry the ring has yet to drop.
                if forget_at_welcome(client, welcome, member, true) == 0 {
                    return Ok(Attempt::OwnEntry);
                }
                return Ok(Attempt::Again);
            }
            Welcomed::Through { member, bare } => {
                sent_to_bare = bare;
                member
            }
            Welcomed::Taken if stale_at_welcome(client, welcome, id, addr, ring_port) => {
                // Our own entry from before a crash, or a peer gone since.
                let _ = client.course(welcome, &CourseRequest::Leave { hash: id });
                return Ok(Attempt::Again);
            }
            Welcomed::Taken => return Ok(Attempt::NextId),
        },
    };
    let place = find_place(client, &settings.space, member, id);
    if let (Entry::Welcome(welcome), false) = (settings.entry, matches!(place, Ok(Place::Free(_))))
    {
        // The welcome service has us on its list: off it again.
        let _ = client.course(welcome, &CourseRequest::Leave { hash: id });
    }
    match place {
        Ok(Place::Free(owners)) => Ok(Attempt::Placed(owners)),
        Ok(Place::Taken(by)) if by.addr == addr => {
            info!("ring: id {id} is still this peer's own entry from before it stopped; waiting for the ring to drop it");
            Ok(Attempt::OwnEntry)
        }
        // The look-up went through this very address: this peer's own
        // entry, which answers as no member now.
        Err(e) if e.is_not_a_member() && e.addr() == Some(addr) => {
            info!("ring: the ring still routes through this peer's own entry from before it stopped; waiting for it to drop it");
            Ok(Attempt::OwnEntry)
        }
        Ok(Place::Taken(by)) => {
            info!("ring: id {id} is taken by {by}");
            Ok(Attempt::NextId)
        }
        // A member the welcome service still lists, but gone (a crash, or
        // its address now answers as no member): off its list, and ask
        // again for another.
        Err(e) if e.is_not_a_member() => {
            let gone = e.addr().unwrap_or(member);
            match settings.entry {
                // Sent to a member written without a port, silent on this
                // peer's port, and no other member written so answers
                // there: gone, or on another port (the ring_port) than
                // this peer's. Nothing tells which; taken off the list
                // wrongly, a live member would leave the next newcomers a
                // second ring.
                Entry::Welcome(welcome)
                    if gone == member
                        && sent_to_bare
                        && !ring_port.is_mine(client, welcome, addr) =>
                {
                    Err(RingError::Failed(format!(
                        "the welcome service {welcome} sent this peer to member {} (written \
                         without a port: on the tracker's ring_port), which does not answer on \
                         this peer's port {}: if this peer is not on the ring_port, start it \
                         there (--port) or join through a member you know (ring_join); if that \
                         member is gone, take it off the list (`a+:<its id>` to the welcome \
                         service) and start again",
                        member.ip(),
                        addr.port()
                    )))
                }
                Entry::Welcome(welcome) => {
                    let named = gone == member;
                    if forget_at_welcome(client, welcome, gone, named) > 0 {
                        warn!("ring: {gone} does not answer as a member ({e}); taken off the welcome service's list");
                        return Ok(Attempt::Again);
                    }
                    if named {
                        // Not under that address on the list: asked again,
                        // it would name it again, a thousand times.
                        return Err(RingError::Failed(format!(
                            "the welcome service {welcome} sent this peer to {gone}, which does \
                             not answer as a member ({e}), and could not be made to take it off \
                             its list: take it off by hand (`a+:<its id>`) and start again, or \
                             join through a member you know (ring_join)"
                        )));
                    }
                    // Met on the way (a successor crashed): the ring drops
                    // it within a few rounds.
                    info!("ring: {gone} does not answer as a member ({e}); waiting for the ring to drop it");
                    Ok(Attempt::GoneOnTheWay(gone))
                }
                Entry::Member(_) => Err(RingError::Failed(format!(
                    "the member {gone} to join through does not answer as a member: {e}"
                ))),
            }
        }
        Err(e) => Err(e),
    }
}

/// How long the ring takes to drop a member gone: a few stabilisation
/// rounds.
fn ring_settle_time(settings: &RingSettings) -> std::time::Duration {
    (settings.stabilize * 3).clamp(
        std::time::Duration::from_millis(300),
        std::time::Duration::from_secs(5),
    )
}

/// Where an id would go in the ring.
enum Place {
    /// Free: these are its owner-to-be (our successor) and the peers after.
    Free(Vec<Member>),
    /// A peer has this id already.
    Taken(Member),
}

/// Looks `id` up through `member`, checking that the ring has our size.
fn find_place(
    client: &RingClient,
    space: &RingSpace,
    member: SocketAddr,
    id: u64,
) -> Result<Place, RingError> {
    let view = client.info(member)?;
    if !fits(&view, space) {
        return Err(RingError::Failed(format!(
            "{} is in a ring of size {}; this peer's ring_size is {} (--ring-size {} joins that ring)",
            view.me,
            view.size,
            space.size(),
            view.size
        )));
    }
    let trace = client.trace(space, view.me, id, Via::Fingers)?;
    if trace.owner().id == id {
        Ok(Place::Taken(trace.owner()))
    } else {
        Ok(Place::Free(trace.owners))
    }
}

/// Takes the member at `gone` off the welcome service's list (the course's
/// `a+` has no owner check: anyone may say a peer left), and says how many
/// entries went. The list writes a member on the tracker's `ring_port`
/// without its port, a port this peer does not know: such an entry at
/// `gone`'s address is taken for it only when the welcome service
/// `named` `gone` itself (it gave that port) and lists it under no port.
fn forget_at_welcome(
    client: &RingClient,
    welcome: SocketAddr,
    gone: SocketAddr,
    named: bool,
) -> usize {
    let Ok(listed) = client.welcome_list(welcome) else {
        return 0;
    };
    let at_gone = |written: bool| {
        listed
            .iter()
            .filter(move |(_, at)| at.port.is_some() == written && at.socket(gone.port()) == gone)
            .map(|(hash, _)| *hash)
            .collect::<Vec<u64>>()
    };
    let mut entries = at_gone(true);
    if entries.is_empty() && named {
        entries = at_gone(false);
    }
    entries
        .into_iter()
        // (`wrq`: not there any more, or a welcome service that refuses.)
        .filter(|&hash| {
            client
                .course(welcome, &CourseRequest::Leave { hash })
                .is_ok_and(|answer| answer.trim() == "ok")
        })
        .count()
}

/// Whether the welcome service's entry for `id` is stale: this very
/// address (before a restart), or a peer that does not answer. An entry
/// without a port is on the tracker's `ring_port`, which this peer takes
/// to be its own port (the course's rule); but a silent one is taken off
/// only once another member listed so answers there: a peer started on
/// another port would otherwise find every such member silent, and take
/// live ones off the list.
fn stale_at_welcome(
    client: &RingClient,
    welcome: SocketAddr,
    id: u64,
    me: SocketAddr,
    ring_port: &mut RingPort,
) -> bool {
    let Ok(line) = client.course(welcome, &CourseRequest::AddressOf { hash: id }) else {
        return false;
    };
    let Some(at) = CourseAddr::parse(&line) else {
        return false;
    };
    let holder = at.socket(me.port());
    if holder == me {
        return true;
    }
    let silent = matches!(client.info(holder), Err(RingError::Unreachable { .. }));
    silent && (at.port.is_some() || ring_port.is_mine(client, welcome, me))
}

/// Whether this peer's port is the tracker's `ring_port`, as far as it
/// can tell: a member the welcome service lists without a port answers
/// on it (among the first [`LISTED_ASKED`] listed so). Found out once a
/// join, when first needed.
#[derive(Default)]
struct RingPort {
    mine: Option<bool>,
}

impl RingPort {
    fn is_mine(&mut self, client: &RingClient, welcome: SocketAddr, me: SocketAddr) -> bool {
        *self.mine.get_or_insert_with(|| {
            let Ok(listed) = client.welcome_list(welcome) else {
                return false;
            };
            listed
                .into_iter()
                .filter(|(_, at)| at.port.is_none())
                .map(|(_, at)| at.socket(me.port()))
                .filter(|addr| *addr != me)
                .take(LISTED_ASKED)
                .any(|addr| client.info(addr).is_ok())
        })
    }
}

/// What a welcome service said to `yo`.
enum Welcomed {
    First,
    /// Join through this member; `bare`: written without a port (taken
    /// to be on this peer's port, the course's rule).
    Through {
        member: SocketAddr,
        bare: bool,
    },
    Taken,
}

fn welcome_join(
    client: &RingClient,
    welcome: SocketAddr,
    id: u64,
    me: SocketAddr,
) -> Result<Welcomed, RingError> {
    let at = CourseAddr {
        ip: me.ip(),
        port: Some(me.port()),
    };
    let line = client.course(welcome, &CourseRequest::Join { hash: id, at })?;
    match CourseReply::parse_join_answer(&line) {
        Some(CourseReply::First) => Ok(Welcomed::First),
        Some(CourseReply::Wrong) => Ok(Welcomed::Taken),
        // A member without a port listens on ours (the course's rule).
        Some(CourseReply::Addr(member)) => Ok(Welcomed::Through {
            member: member.socket(me.port()),
            bare: member.port.is_none(),
        }),
        _ => {
            // Its own words, cut short: they may be 64 KiB.
            let mut shown: String = line.chars().take(80).collect();
            if shown.len() < line.len() {
                shown.push('…');
            }
            Err(RingError::Failed(format!(
                "the welcome service at {welcome} answered {shown:?} to yo"
            )))
        }
    }
}

fn ask_hash_service(
    client: &RingClient,
    service: SocketAddr,
    me: SocketAddr,
    space: &RingSpace,
) -> Result<u64, RingError> {
    let line = client.course(service, &CourseRequest::Hash { address: me.into() })?;
    match CourseReply::parse_id_answer(&line) {
        Some(CourseReply::Id(id)) if space.contains(id) => Ok(id),
        Some(CourseReply::AllTaken) => Err(RingError::Failed(format!(
            "the hash service at {service} has no id left (aht)"
        ))),
        _ => Err(RingError::Failed(format!(
            "the hash service at {service} answered {line:?}, not an id of a ring of size {}",
            space.size()
        ))),
    }
}

/// The local IP address that reaches `addr`.
fn local_ip_towards(addr: SocketAddr) -> Result<std::net::IpAddr, RingError> {
    TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .and_then(|stream| stream.local_addr())
        .map(|local| local.ip())
        .map_err(|error| RingError::Unreachable { addr, error })
}
