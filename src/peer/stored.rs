//! The binary records the peer keeps in its state folder (the manifest
//! cache, the state of unfinished downloads): serde + bincode, read back
//! under a size limit, and a record that does not decode described in
//! words rather than by the decoder's internals.

use std::io;

/// `value` as a record's bytes.
pub fn encode<T: serde::Serialize>(value: &T) -> io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(io::Error::other)
}

/// The record in `bytes`, which must be all of it and decode within
/// `LIMIT` bytes of memory. The error is a phrase for the user; what the
/// decoder said is logged (debug).
pub fn decode<T: serde::de::DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<T, String> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    match bincode::serde::decode_from_slice(bytes, config) {
        Ok((value, used)) if used == bytes.len() => Ok(value),
        Ok(_) => Err("bytes after its end: damaged".into()),
        Err(e) => {
            log::debug!("undecodable record: {e:?}");
            Err("damaged, or written by another version".into())
        }
    }
}

/// The number a record starts with (its format's version, in every
/// record that has one), read without decoding the rest: a record of a
/// newer format is told apart from a damaged one even when its layout
/// changed.
pub fn leading_version(bytes: &[u8]) -> Option<u32> {
    bincode::serde::decode_from_slice::<u32, _>(bytes, bincode::config::standard())
        .ok()
        .map(|(version, _)| version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_damage_is_said_in_words() {
        let bytes = encode(&("song.mp3".to_string(), 42u64)).unwrap();
        let back: (String, u64) = decode::<_, 1024>(&bytes).unwrap();
        assert_eq!(back, ("song.mp3".to_string(), 42));

        let mut longer = bytes.clone();
        longer.push(0);
        let error = decode::<(String, u64), 1024>(&longer).unwrap_err();
        assert_eq!(error, "bytes after its end: damaged");

        let garbage = [0x08, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8, 1];
        let error = decode::<(String, u64), 1024>(&garbage).unwrap_err();
        assert_eq!(error, "damaged, or written by another version");
    }
}
