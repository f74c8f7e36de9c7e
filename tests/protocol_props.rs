//! Property tests of the pure protocol code:
//! - every message type round-trips: `parse(format(m)) == m`;
//! - arbitrary text and bytes never panic a parser: they give `Ok` or a
//!   typed error with a defined code;
//! - a stream of messages cut into arbitrary chunks reads back in order;
//! - a manifest has exactly one encoding.

use proptest::collection::vec;
use proptest::prelude::*;

use swarmline::pieces::Manifest;
use swarmline::protocol::fields::{MAX_PIECES, MIN_PIECE_SIZE};
use swarmline::protocol::*;
use swarmline::wire::LineReader;

fn key() -> impl Strategy<Value = FileKey> {
    any::<[u8; 32]>().prop_map(FileKey)
}

fn user() -> impl Strategy<Value = UserName> {
    "[A-Za-z0-9][A-Za-z0-9_-]{0,31}".prop_map(|u| UserName::parse(&u).unwrap())
}

fn name() -> impl Strategy<Value = FileName> {
    "[^\\pC/\\\\]{1,40}".prop_filter_map("not a file name", |n| FileName::new(&n).ok())
}

fn path() -> impl Strategy<Value = SharedPath> {
    "[^\\pC]{1,80}".prop_map(|p| SharedPath::new(&p).unwrap())
}

fn kind() -> impl Strategy<Value = MediaKind> {
    prop_oneof![
        Just(MediaKind::Audio),
        Just(MediaKind::Video),
        Just(MediaKind::Other)
    ]
}

fn bitmap() -> impl Strategy<Value = BitmapField> {
    vec(any::<u8>(), 0..64).prop_map(BitmapField)
}

fn peer_id() -> impl Strategy<Value = PeerId> {
    prop_oneof![
        (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, port)| PeerId::from((ip, port))),
        (any::<[u16; 8]>(), 1u16..).prop_map(|(ip, port)| PeerId::from((ip, port))),
    ]
}

/// Size and piece size of a file within the protocol's limits.
fn file_shape() -> impl Strategy<Value = (u64, u32)> {
    (14u32..=24).prop_flat_map(|bits| {
        let piece_size = 1u32 << bits;
        (0..=MAX_PIECES * u64::from(piece_size), Just(piece_size))
    })
}

fn criterion() -> impl Strategy<Value = Criterion> {
    prop_oneof![
        "[^\\pC]{1,20}".prop_map(Criterion::Word),
        "[^\\pC]{1,20}".prop_map(Criterion::NameGlob),
        kind().prop_map(Criterion::Kind),
        any::<u64>().prop_map(Criterion::MinSize),
        any::<u64>().prop_map(Criterion::MaxSize),
        user().prop_map(Criterion::User),
        key().prop_map(Criterion::Key),
    ]
}

fn tracker_request() -> impl Strategy<Value = TrackerRequest> {
    prop_oneof![
        (1u16.., proptest::option::of(user()))
            .prop_map(|(port, user)| TrackerRequest::Helo { port, user }),
        (key(), name(), file_shape(), kind(), path()).prop_map(
            |(key, name, (size, piece_size), kind, path)| {
                TrackerRequest::Addf(FileOffer {
                    key,
                    name,
                    size,
                    piece_size,
                    kind,
                    path,
                })
            }
        ),
        key().prop_map(|key| TrackerRequest::Rmvf { key }),
        vec(criterion(), 0..6).prop_map(|c| TrackerRequest::Rqfs(SearchCriteria(c))),
        vec(criterion(), 0..6).prop_map(|c| TrackerRequest::Lstf(SearchCriteria(c))),
        key().prop_map(|key| TrackerRequest::Reqf { key }),
        (key(), bitmap()).prop_map(|(key, bitmap)| TrackerRequest::Bitf { key, bitmap }),
        Just(TrackerRequest::Usrs),
        Just(TrackerRequest::Ping),
        Just(TrackerRequest::Quit),
    ]
}

fn peer_request() -> impl Strategy<Value = PeerRequest> {
    prop_oneof![
        (key(), proptest::option::of(bitmap()))
            .prop_map(|(key, bitmap)| PeerRequest::Bitf { key, bitmap }),
        key().prop_map(|key| PeerRequest::Manf { key }),
        (key(), vec(any::<u32>(), 1..=MAX_REQUEST_INDICES))
            .prop_map(|(key, indices)| PeerRequest::Reqf { key, indices }),
        Just(PeerRequest::Lstf),
        Just(PeerRequest::Ping),
        Just(PeerRequest::Quit),
    ]
}

/// Free text as it round-trips: no control characters, no leading or
/// trailing spaces, single spaces between words.
fn free_text() -> impl Strategy<Value = String> {
    vec("[^\\pC ]{1,12}", 0..5).prop_map(|words| words.join(" "))
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        free_text().prop_map(Reply::Ok),
        (any::<u16>(), free_text()).prop_map(|(n, text)| Reply::Error {
            code: ErrorCode::from_number(n),
            text
        }),
        Just(Reply::End),
        (
            key(),
            name(),
            file_shape(),
            kind(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(key, name, (size, piece_size), kind, seeders, leechers)| {
                Reply::File(FileEntry {
                    key,
                    name,
                    size,
                    piece_size,
                    kind,
                    seeders,
                    leechers,
                })
            }),
        (key(), proptest::option::of(user()), peer_id(), path()).prop_map(
            |(key, user, peer, path)| Reply::Share(ShareEntry {
                key,
                user,
                peer,
                path
            })
        ),
        (
            peer_id(),
            proptest::option::of(user()),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(|(peer, user, seeder, pieces)| {
                let role = if seeder { Role::Seeder } else { Role::Leecher };
                Reply::Peer(PeerEntry {
                    peer,
                    user,
                    role,
                    pieces,
                })
            }),
        (user(), peer_id()).prop_map(|(user, peer)| Reply::User { user, peer }),
        (key(), bitmap()).prop_map(|(key, bitmap)| Reply::Bitmap { key, bitmap }),
        (key(), any::<u32>(), any::<u32>()).prop_map(|(key, index, length)| Reply::Piece {
            key,
            index,
            length
        }),
        (key(), any::<u32>()).prop_map(|(key, length)| Reply::Manifest { key, length }),
    ]
}

/// Checks a parse result: any error must carry a defined code.
fn typed<T>(result: Result<T, ProtocolError>) {
    if let Err(error) = result {
        assert!(ErrorCode::ALL.contains(&error.code()), "{error:?}");
        assert!(!error.to_string().contains('\n'));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tracker_requests_round_trip(request in tracker_request()) {
        let line = request.to_string();
        prop_assert!(line.is_ascii() && !line.contains(['\n', '\r']), "{}", line);
        prop_assert_eq!(TrackerRequest::parse(&line).unwrap(), request);
    }

    #[test]
    fn peer_requests_round_trip(request in peer_request()) {
        let line = request.to_string();
        prop_assert!(!line.contains(['\n', '\r']));
        prop_assert_eq!(PeerRequest::parse(&line).unwrap(), request);
    }

    #[test]
    fn replies_round_trip(reply in reply()) {
        let line = reply.to_string();
        prop_assert!(!line.contains(['\n', '\r']));
        prop_assert_eq!(Reply::parse(&line).unwrap(), reply);
    }

    #[test]
    fn any_text_gives_ok_or_a_typed_error(line in "\\PC{0,200}|[A-Z]{4}( [^ ]{0,70}){0,8}") {
        typed(TrackerRequest::parse(&line));
        typed(PeerRequest::parse(&line));
        typed(Reply::parse(&line));
    }

    #[test]
    fn mutated_good_lines_give_ok_or_a_typed_error(
        request in tracker_request(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = request.to_string().into_bytes();
        for (at, byte) in edits {
            let at = at.index(bytes.len() + 1);
            if at < bytes.len() && byte % 3 == 0 { bytes.remove(at); } else { bytes.insert(at, byte % 128); }
        }
        let line = String::from_utf8_lossy(&bytes);
        typed(TrackerRequest::parse(&line));
        typed(PeerRequest::parse(&line));
        typed(Reply::parse(&line));
    }

    #[test]
    fn any_bytes_through_the_line_reader_never_panic(
        bytes in vec(any::<u8>(), 0..4000),
        max_line in 2usize..300,
    ) {
        let mut reader = LineReader::new(&bytes[..], max_line);
        while let Some(line) = reader.read_line().unwrap() {
            match line {
                Ok(text) => {
                    prop_assert!(text.len() < max_line);
                    typed(TrackerRequest::parse(text));
                    typed(Reply::parse(text));
                }
                Err(error) => {
                    let framing_error =
                        matches!(error, ProtocolError::LineTooLong { .. } | ProtocolError::NotText);
                    prop_assert!(framing_error, "{:?}", error);
                }
            }
        }
    }

    #[test]
    fn a_stream_of_messages_reads_back_in_order_however_it_is_cut(
        requests in vec(tracker_request(), 1..20),
        chunk in 1usize..50,
    ) {
        let stream: Vec<u8> = requests.iter().flat_map(|r| format!("{r}\r\n").into_bytes()).collect();
        let chunked = Chunked { data: &stream, chunk };
        let mut reader = LineReader::new(chunked, 1 << 20);
        for request in &requests {
            let line = reader.read_line().unwrap().unwrap().unwrap();
            prop_assert_eq!(&TrackerRequest::parse(line).unwrap(), request);
        }
        prop_assert!(reader.read_line().unwrap().is_none());
    }

    #[test]
    fn a_manifest_has_exactly_one_encoding(
        data in vec(any::<u8>(), 0..70_000),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let manifest = Manifest::build(&data[..], MIN_PIECE_SIZE, |_| {}).unwrap();
        let mut bytes = manifest.to_string().into_bytes();
        for (at, byte) in edits {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        if let Ok(parsed) = Manifest::parse(&bytes) {
            // Whatever parses is the canonical text of what it parsed to.
            prop_assert_eq!(parsed.to_string().into_bytes(), bytes);
        }
    }
}

/// A reader that hands out at most `chunk` bytes per read.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl std::io::Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}
