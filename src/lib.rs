//! swarmline: a small peer-to-peer file-sharing system with a plain-text
//! line protocol, built on blocking `std::net` sockets and one OS thread per
//! connection, so that every step can be followed in a debugger.
//!
//! A tracker remembers who shares what; peers share files and download them
//! piece by piece from several peers at once, checking every piece against
//! the file's manifest. The wire protocol is documented in `protocol.md`.
//!
//! # Layout
//!
//! | module | its job |
//! |---|---|
//! | [`protocol`] | every message, parsed and formatted; pure, no I/O |
//! | [`pieces`] | bitmaps (BufferMaps) and manifests (piece hashes, file key) |
//! | [`wire`] | framed reads and writes on a stream: capped lines, exact payloads |
//! | [`server`] | the accept loop: a named thread per connection, cap, joined shutdown |
//! | [`service`] | the per-connection loop: read a line, answer it, flush, until done |
//! | [`tracker`] | the tracker's registry, request handler and connection loop |
//! | [`ring`] | the Chord ring: ids, look-ups, records, the monitor |
//! | [`peer`] | a peer: library, mini-server, tracker session, downloads |
//! | [`config`] | ini files and flags to typed, validated settings |
//! | [`logging`] | terminal + file logs with timestamps and thread names |
//! | [`units`] | byte sizes with units (`256KiB`, `25MB`) |
//!
//! The inner workings are the point, so read these pages with the private
//! items too: `cargo doc --document-private-items --open`.

// Public pages link to the private items that do the work; with
// `--document-private-items` those links resolve.
#![allow(rustdoc::private_intra_doc_links)]

pub mod config;
pub mod logging;
pub mod peer;
pub mod pieces;
pub mod protocol;
pub mod ring;
pub mod server;
pub mod service;
pub mod tracker;
pub mod units;
pub mod wire;
