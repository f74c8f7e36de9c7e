//! How names are compared: a file name made on macOS spells `é` as `e`
//! and a combining accent (Unicode's decomposed form, NFD), one typed on
//! Linux or Windows as one character (the composed form, NFC). Both look
//! the same, and a person searching `café` means either; so searches and
//! exact names compare names in the composed form. Names themselves are
//! kept and sent as they were given.

use std::borrow::Cow;

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// `text` in the composed form (NFC); borrowed when it is already so, as
/// every ASCII name is.
pub fn composed(text: &str) -> Cow<'_, str> {
    match is_nfc_quick(text.chars()) {
        IsNormalized::Yes => Cow::Borrowed(text),
        _ => Cow::Owned(text.nfc().collect()),
    }
}

/// `text` as searches compare it: composed, then lower-cased.
pub fn folded(text: &str) -> String {
    composed(text).to_lowercase()
}

/// Whether two names are the same once both are composed.
pub fn same_name(a: &str, b: &str) -> bool {
    a == b || composed(a) == composed(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: &str = "Cafe\u{301}.mp3"; // e and a combining acute accent
    const TYPED: &str = "Caf\u{e9}.mp3"; // é, one character

    #[test]
    fn a_decomposed_name_is_the_same_as_the_composed_one() {
        assert_ne!(MAC, TYPED, "not the same bytes");
        assert!(same_name(MAC, TYPED));
        assert_eq!(folded(MAC), "caf\u{e9}.mp3");
        assert!(!same_name("cafe.mp3", TYPED));
    }

    #[test]
    fn an_ascii_name_is_borrowed_as_it_is() {
        assert!(matches!(composed("notes.pdf"), Cow::Borrowed("notes.pdf")));
    }
}
