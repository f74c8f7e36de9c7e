//! What kind of media a file is, and the client profiles that filter by it.
//!
//! A file's kind (`audio`, `video` or `other`, as the tracker stores it)
//! comes from its first bytes where they carry a known signature (the
//! `infer` crate knows the containers), else from its extension (the
//! `mime_guess` crate's table). The same look-up gives the MIME type the
//! web page serves the file with, so a browser's player knows what it is.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::protocol::MediaKind;

/// How many first bytes are read to recognise a container (MP4's `ftyp`
/// box and Matroska's doc type sit within the first few dozen).
pub const HEAD_BYTES: usize = 8 * 1024;

/// A file's kind and MIME type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    pub kind: MediaKind,
    pub mime: String,
}

/// The media type of the file at `path`: from its first bytes, else from
/// its name. A file that cannot be read is judged by its name.
pub fn detect(path: &Path) -> MediaType {
    let mut head = Vec::with_capacity(HEAD_BYTES);
    if let Ok(file) = File::open(path) {
        let _ = file.take(HEAD_BYTES as u64).read_to_end(&mut head);
    }
    from_head(&head).unwrap_or_else(|| from_name(path))
}

/// The media type told by a file's first bytes, when they are a known
/// audio or video signature.
pub fn from_head(head: &[u8]) -> Option<MediaType> {
    let found = infer::get(head)?;
    let kind = match found.matcher_type() {
        infer::MatcherType::Audio => MediaKind::Audio,
        infer::MatcherType::Video => MediaKind::Video,
        _ => return None,
    };
    Some(MediaType {
        kind,
        mime: found.mime_type().to_string(),
    })
}

/// The media type told by a file's extension.
pub fn from_name(path: &Path) -> MediaType {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let kind = match mime.type_() {
        mime_guess::mime::AUDIO => MediaKind::Audio,
        mime_guess::mime::VIDEO => MediaKind::Video,
        _ => MediaKind::Other,
    };
    MediaType {
        kind,
        mime: mime.essence_str().to_string(),
    }
}

/// Which files a client shows and offers to download (`--profile`): an
/// audio client never lists a video file, and the reverse. It still relays
/// pieces of anything it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Audio,
    Video,
    All,
}

impl Profile {
    /// Parses `audio`, `video` or `all`.
    pub fn parse(text: &str) -> Result<Profile, String> {
        match text {
            "audio" => Ok(Profile::Audio),
            "video" => Ok(Profile::Video),
            "all" => Ok(Profile::All),
            _ => Err("must be audio, video or all".into()),
        }
    }

    /// Whether a client of this profile shows files of `kind`.
    pub fn shows(self, kind: MediaKind) -> bool {
        self.kind().is_none_or(|shown| shown == kind)
    }

    /// The one kind this profile shows (`None` for `all`).
    pub fn kind(self) -> Option<MediaKind> {
        match self {
            Profile::Audio => Some(MediaKind::Audio),
            Profile::Video => Some(MediaKind::Video),
            Profile::All => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Audio => "audio",
            Profile::Video => "video",
            Profile::All => "all",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of_head(head: &[u8]) -> Option<MediaKind> {
        from_head(head).map(|t| t.kind)
    }

    #[test]
    fn containers_are_told_by_their_first_bytes() {
        assert_eq!(
            kind_of_head(b"ID3\x04\0\0\0\0\0\0rest"),
            Some(MediaKind::Audio)
        );
        assert_eq!(kind_of_head(b"fLaC\0\0\0\x22"), Some(MediaKind::Audio));
        let wav = b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0";
        assert_eq!(kind_of_head(wav), Some(MediaKind::Audio));
        let avi = b"RIFF\x24\0\0\0AVI LIST\0\0\0\0";
        assert_eq!(kind_of_head(avi), Some(MediaKind::Video));
        let mp4 = b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2";
        assert_eq!(kind_of_head(mp4), Some(MediaKind::Video));
        let m4a = b"\0\0\0\x20ftypM4A \0\0\0\0M4A mp42";
        assert_eq!(kind_of_head(m4a), Some(MediaKind::Audio));
        let mut webm = vec![0x1a, 0x45, 0xdf, 0xa3, 0x9f, 0x42, 0x86, 0x81, 0x01];
        webm.extend_from_slice(b"\x42\x82\x84webm\x42\x87\x81\x02");
        // (infer wants a few hundred bytes of a Matroska header.)
        webm.resize(512, 0);
        assert_eq!(kind_of_head(&webm), Some(MediaKind::Video));
        assert_eq!(kind_of_head(b"hello, plain text"), None);
        // A picture is a known signature, but not media: left to the name.
        assert_eq!(kind_of_head(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), None);
    }

    #[test]
    fn names_tell_the_kind_when_the_bytes_do_not() {
        let kind = |name: &str| from_name(Path::new(name)).kind;
        for audio in [
            "a/Song.MP3",
            "x.flac",
            "x.ogg",
            "x.opus",
            "x.wav",
            "x.m4a",
            "x.aac",
        ] {
            assert_eq!(kind(audio), MediaKind::Audio, "{audio}");
        }
        for video in ["clip.webm", "x.mp4", "x.m4v", "x.mkv", "x.avi", "x.mov"] {
            assert_eq!(kind(video), MediaKind::Video, "{video}");
        }
        assert_eq!(kind("notes"), MediaKind::Other);
        assert_eq!(kind("notes.txt"), MediaKind::Other);
        assert_eq!(from_name(Path::new("x.webm")).mime, "video/webm");
    }

    #[test]
    fn profiles_show_their_own_kind() {
        let audio = Profile::parse("audio").unwrap();
        assert!(audio.shows(MediaKind::Audio));
        assert!(!audio.shows(MediaKind::Video));
        assert!(!Profile::Video.shows(MediaKind::Audio));
        assert!(Profile::All.shows(MediaKind::Other));
        assert!(Profile::parse("music").is_err());
    }
}
