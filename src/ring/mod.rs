//! The ring: trackerless discovery over a Chord ring.
//!
//! Peers form a circle ordered by id; each knows its predecessor, a list of
//! successors and a routing table of fingers, and finds who owns any id in
//! a few hops. Files are announced as records stored at the owner of their
//! key (and name), replicated on its successors.
//!
//! - [`space`]: ids, intervals on the circle, the course's routing table;
//! - [`client`]: one request to another ring peer, and whole look-ups;
//! - [`records`]: the records this peer stores for the ring, with expiry;
//! - [`node`]: this peer's place in the ring, kept right by periodic rounds;
//! - [`monitor`]: walks a ring, checks it, draws it (text and SVG).
//!
//! The wire grammar is in [`crate::protocol::ring`] (native) and
//! [`crate::protocol::course`] (the course's tools).

pub mod client;
#[cfg(test)]
pub(crate) mod fake;
pub mod monitor;
pub mod node;
pub mod records;
pub mod space;

pub use client::{NodeView, RingClient, RingError, Trace};
pub use node::{Entry, IdChoice, RingNode, RingSettings};
pub use space::RingSpace;
