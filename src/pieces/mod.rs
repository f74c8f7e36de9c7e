//! Files cut into pieces: which pieces a peer holds ([`Bitmap`], the
//! BufferMap), what every piece must hash to ([`Manifest`], whose own hash
//! is the file's key), and reading and writing pieces on disk
//! ([`PieceFile`]).

pub mod bitmap;
pub mod manifest;
pub mod store;

pub use bitmap::{Bitmap, BitmapError};
pub use manifest::{Manifest, ManifestError};
pub use store::{file_identity, Changed, Fingerprint, PieceFile};
