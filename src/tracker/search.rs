//! How `RQFS` and `LSTF` criteria select files: plain words, name globs,
//! kind, size bounds and user. Pure functions over a file's metadata; a
//! [`Matcher`] prepares a search's criteria once for the many files it
//! tests.

use crate::protocol::names::folded;
use crate::protocol::{Criterion, FileMeta, SearchCriteria, UserName};

/// A search's criteria, ready to test many files: the words and globs
/// are folded (composed and lower-cased, see [`folded`]) once per search,
/// not once per file.
pub struct Matcher<'c> {
    criteria: &'c [Criterion],
    /// The text of each word and glob among `criteria`, folded, in
    /// their order (none for a search by key alone: nothing allocated).
    folded: Vec<String>,
}

impl<'c> Matcher<'c> {
    pub fn new(criteria: &'c SearchCriteria) -> Matcher<'c> {
        let texts = criteria
            .0
            .iter()
            .filter_map(|criterion| match criterion {
                Criterion::Word(text) | Criterion::NameGlob(text) => Some(folded(text)),
                _ => None,
            })
            .collect();
        Matcher {
            criteria: &criteria.0,
            folded: texts,
        }
    }

    /// True when the file passes every criterion. `held_by` answers
    /// whether a given user holds the file.
    pub fn matches(&self, meta: &FileMeta, held_by: impl Fn(&UserName) -> bool) -> bool {
        // Folded once, and only if a criterion looks at the name (a
        // search by key, the commonest from peers, does not).
        let folded_name = std::cell::OnceCell::new();
        let name = || folded_name.get_or_init(|| folded(meta.name.as_str()));
        // One folded text per word or glob, in their order: the `next()`
        // below is always `Some` (built so in `new`).
        let mut texts = self.folded.iter().map(String::as_str);
        self.criteria.iter().all(|criterion| match criterion {
            Criterion::Word(_) => texts.next().is_some_and(|word| name().contains(word)),
            Criterion::NameGlob(_) => texts.next().is_some_and(|glob| glob_matches(glob, name())),
            Criterion::Kind(kind) => meta.kind == *kind,
            Criterion::MinSize(min) => meta.size >= *min,
            Criterion::MaxSize(max) => meta.size <= *max,
            Criterion::User(user) => held_by(user),
            Criterion::Key(key) => meta.key == *key,
        })
    }
}

/// Whole-string glob match: `*` matches any run of characters (also none),
/// `?` exactly one; everything else matches itself.
///
/// The classic two-pointer walk with backtracking to the last `*`: linear
/// in practice, and never exponential whatever the pattern.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                last_star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match last_star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    last_star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FileKey, FileName, MediaKind};

    #[test]
    fn an_accented_letter_matches_however_it_is_written() {
        // As macOS names a file: e and a combining acute accent.
        let meta = FileMeta {
            key: FileKey([1; 32]),
            name: FileName::new("Cafe\u{301} del Mar.mp3").unwrap(),
            size: 10,
            piece_size: 16_384,
            kind: MediaKind::Audio,
        };
        // As typed elsewhere: é, one character.
        // (`?` is one letter: é, not e and then the accent.)
        for word in ["caf\u{e9}", "name=CAF\u{c9}*", "name=caf? del*"] {
            let criteria = SearchCriteria::from_words(&[word]).unwrap();
            assert!(Matcher::new(&criteria).matches(&meta, |_| false), "{word}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_matches("*.mp3", "song.mp3"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("s?ng*", "song.mp3"));
        assert!(glob_matches("*a*b*c", "xxaxxbxxc"));
        assert!(glob_matches("été*", "été à paris"));
        assert!(!glob_matches("*.mp3", "song.mp3.txt"));
        assert!(!glob_matches("?", ""));
        assert!(!glob_matches("a", "ab"));
        let long_a = "a".repeat(5000);
        assert!(!glob_matches(
            &"*a".repeat(50).replace("*a*a", "*a*b"),
            &long_a
        ));
    }
}
