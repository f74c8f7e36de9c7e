//! Files cut into pieces: which pieces a peer holds ([`Bitmap`], the
//! BufferMap) and what every piece must hash to ([`Manifest`], whose own hash
//! is the file's key).
//!
//! Pure data and hashing; the on-disk piece store and resume state join this
//! module with the peer.

pub mod bitmap;
pub mod manifest;

pub use bitmap::{Bitmap, BitmapError};
pub use manifest::{Manifest, ManifestError};
