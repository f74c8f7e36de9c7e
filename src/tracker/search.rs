//! How `RQFS` and `LSTF` criteria select files: plain words, name globs,
//! kind, size bounds and user. Pure functions over a file's metadata; a
//! [`Matcher`] prepares a search's criteria once for the many files it
//! tests.

use std::collections::HashMap;

use crate::protocol::names::folded;
use crate::protocol::{Criterion, FileMeta, SearchCriteria, UserName};

/// A search's criteria, ready to test many files: the words and globs
/// are folded (composed and lower-cased, see [`folded`]) once per search,
/// not once per file, and each glob is cut into its pieces once.
pub struct Matcher<'c> {
    criteria: &'c [Criterion],
    /// Each word and glob among `criteria`, folded, in their order (none
    /// for a search by key alone: nothing allocated).
    texts: Vec<Text>,
}

/// A word or a glob of a search, ready to test names.
enum Text {
    Word(String),
    Glob(Glob),
}

impl<'c> Matcher<'c> {
    pub fn new(criteria: &'c SearchCriteria) -> Matcher<'c> {
        let texts = criteria
            .0
            .iter()
            .filter_map(|criterion| match criterion {
                Criterion::Word(text) => Some(Text::Word(folded(text))),
                Criterion::NameGlob(text) => Some(Text::Glob(Glob::new(&folded(text)))),
                _ => None,
            })
            .collect();
        Matcher {
            criteria: &criteria.0,
            texts,
        }
    }

    /// True when the file passes every criterion. `held_by` answers
    /// whether a given user holds the file.
    pub fn matches(&self, meta: &FileMeta, held_by: impl Fn(&UserName) -> bool) -> bool {
        // Folded once, and only if a criterion looks at the name (a
        // search by key, the commonest from peers, does not); cut into
        // characters once too, if a glob looks at it.
        let folded_name = std::cell::OnceCell::new();
        let name = || folded_name.get_or_init(|| folded(meta.name.as_str()));
        let cut_name = std::cell::OnceCell::new();
        let cut = || cut_name.get_or_init(|| Name::new(name()));
        // One text per word or glob, in their order: the `next()` below
        // is always the criterion's own (built so in `new`).
        let mut texts = self.texts.iter();
        self.criteria.iter().all(|criterion| match criterion {
            Criterion::Word(_) | Criterion::NameGlob(_) => match texts.next() {
                Some(Text::Word(word)) => name().contains(word.as_str()),
                Some(Text::Glob(glob)) => glob.matches(cut()),
                None => false,
            },
            Criterion::Kind(kind) => meta.kind == *kind,
            Criterion::MinSize(min) => meta.size >= *min,
            Criterion::MaxSize(max) => meta.size <= *max,
            Criterion::User(user) => held_by(user),
            Criterion::Key(key) => meta.key == *key,
        })
    }
}

/// A whole-string glob: `*` matches any run of characters (also none), `?`
/// exactly one; everything else matches itself. Cut once into the pieces
/// between its stars, which a name must hold in order: the first at its
/// start and the last at its end (unless the glob starts or ends with a
/// star), the others each as early as it can, which is never worse for
/// the pieces after it. Each piece is looked for in one pass over the
/// name. (A search runs under the registry's lock: a glob written to cost
/// a pass per character of the name, `*aaa...ab`, times every file, held
/// it for seconds with the backtracking walk this replaces.)
pub struct Glob {
    pieces: Vec<Piece>,
    /// Whether the glob starts, and ends, with a star.
    open_start: bool,
    open_end: bool,
    /// The fewest characters a name it matches has (its pieces').
    least: usize,
}

/// A name as globs look at it: its characters, and the byte offset of
/// each (and of its end).
pub struct Name<'t> {
    text: &'t str,
    chars: Vec<char>,
    bytes: Vec<usize>,
}

impl<'t> Name<'t> {
    pub fn new(text: &'t str) -> Name<'t> {
        let (mut bytes, chars): (Vec<usize>, Vec<char>) = text.char_indices().unzip();
        bytes.push(text.len());
        Name { text, chars, bytes }
    }
}

/// A run of characters and `?` between two stars of a glob.
struct Piece {
    chars: Vec<char>,
    /// Without `?`, the piece as text, found by the standard library's
    /// substring search (linear); with, by shift-and ([`find_wild`]).
    literal: Option<String>,
    /// For shift-and: the positions of the piece that each character
    /// matches (those that are it, and the `?`s), as bits: position `j`
    /// is bit `j % 64` of word `j / 64`. `words` words a character, the
    /// ASCII ones in a table, the others in a map (and a character not
    /// in the piece matches only the `?`s: `wild`).
    words: usize,
    ascii: Vec<u64>,
    others: HashMap<char, Vec<u64>>,
    wild: Vec<u64>,
}

impl Piece {
    fn new(text: &str) -> Piece {
        let chars: Vec<char> = text.chars().collect();
        let literal = (!chars.contains(&'?')).then(|| text.to_string());
        let words = chars.len().div_ceil(64);
        let positions = |hit: &dyn Fn(char) -> bool| {
            let mut bits = vec![0u64; words];
            for (j, &p) in chars.iter().enumerate() {
                if hit(p) {
                    bits[j / 64] |= 1 << (j % 64);
                }
            }
            bits
        };
        let (mut ascii, mut others, mut wild) = (Vec::new(), HashMap::new(), Vec::new());
        if literal.is_none() {
            wild = positions(&|p| p == '?');
            ascii = (0..128u8)
                .flat_map(|b| positions(&|p| p == '?' || p == char::from(b)))
                .collect();
            for &c in chars.iter().filter(|c| !c.is_ascii()) {
                others
                    .entry(c)
                    .or_insert_with(|| positions(&|p| p == '?' || p == c));
            }
        }
        Piece {
            chars,
            literal,
            words,
            ascii,
            others,
            wild,
        }
    }

    /// The positions of the piece that `c` matches (see `ascii`).
    fn mask(&self, c: char) -> &[u64] {
        if c.is_ascii() {
            let at = c as usize * self.words;
            &self.ascii[at..at + self.words]
        } else {
            self.others.get(&c).unwrap_or(&self.wild)
        }
    }

    /// Whether the piece is in `text` at character `at`.
    fn is_at(&self, text: &[char], at: usize) -> bool {
        text.get(at..at + self.chars.len()).is_some_and(|there| {
            self.chars
                .iter()
                .zip(there)
                .all(|(&p, &t)| p == '?' || p == t)
        })
    }

    /// Where the piece first is in `name`, between characters `from` and
    /// `to`.
    fn find(&self, name: &Name<'_>, from: usize, to: usize) -> Option<usize> {
        match &self.literal {
            Some(literal) => {
                let bytes = &name.bytes;
                let found = name.text[bytes[from]..bytes[to]].find(literal.as_str())?;
                // Back from a byte offset to a character one.
                bytes.binary_search(&(bytes[from] + found)).ok()
            }
            None => self.find_wild(&name.chars[from..to]).map(|at| from + at),
        }
    }

    /// Shift-and: one step per character of `text`, however the piece is
    /// written (`a?a?a?b` in `aaaa...`).
    fn find_wild(&self, text: &[char]) -> Option<usize> {
        let len = self.chars.len();
        if len == 0 || len > text.len() {
            return (len == 0).then_some(0);
        }
        let mut state = vec![0u64; self.words];
        let (last_word, last_bit) = ((len - 1) / 64, (len - 1) % 64);
        for (i, &c) in text.iter().enumerate() {
            let mask = self.mask(c);
            // state = ((state << 1) | 1) & mask, across the words.
            let mut carry = 1u64;
            for (word, m) in state.iter_mut().zip(mask) {
                let next_carry = *word >> 63;
                *word = ((*word << 1) | carry) & m;
                carry = next_carry;
            }
            if state[last_word] >> last_bit & 1 == 1 {
                return Some(i + 1 - len);
            }
        }
        None
    }
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        let pieces: Vec<Piece> = pattern
            .split('*')
            .filter(|piece| !piece.is_empty())
            .map(Piece::new)
            .collect();
        Glob {
            least: pieces.iter().map(|piece| piece.chars.len()).sum(),
            open_start: pattern.starts_with('*'),
            open_end: pattern.ends_with('*'),
            pieces,
        }
    }

    pub fn matches(&self, name: &Name<'_>) -> bool {
        let chars = &name.chars;
        if chars.len() < self.least {
            return false;
        }
        let mut pieces = self.pieces.as_slice();
        let (mut from, mut to) = (0, chars.len());
        if !self.open_start {
            let Some((first, rest)) = pieces.split_first() else {
                // No piece, no star: the empty glob.
                return chars.is_empty();
            };
            if !first.is_at(chars, 0) {
                return false;
            }
            from = first.chars.len();
            pieces = rest;
            if pieces.is_empty() && !self.open_end {
                // No star at all: the piece is the whole name.
                return from == chars.len();
            }
        }
        if !self.open_end {
            let Some((last, rest)) = pieces.split_last() else {
                // `abc*`: the start was all.
                return true;
            };
            let len = last.chars.len();
            if to < from + len || !last.is_at(chars, to - len) {
                return false;
            }
            to -= len;
            pieces = rest;
        }
        for piece in pieces {
            match piece.find(name, from, to) {
                Some(at) => from = at + piece.chars.len(),
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FileKey, FileName, MediaKind};

    fn glob_matches(pattern: &str, name: &str) -> bool {
        Glob::new(pattern).matches(&Name::new(name))
    }

    /// The plain backtracking walk, as the reference a glob must agree
    /// with.
    fn reference(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('*', rest)) => (0..=text.len()).any(|skip| reference(rest, &text[skip..])),
            Some((&p, rest)) => text
                .split_first()
                .is_some_and(|(&t, after)| (p == '?' || p == t) && reference(rest, after)),
        }
    }

    #[test]
    fn globs_agree_with_the_plain_walk() {
        let mut rng = fastrand::Rng::with_seed(7);
        let word = |rng: &mut fastrand::Rng, letters: &[char], most: usize| -> String {
            (0..rng.usize(0..=most))
                .map(|_| letters[rng.usize(..letters.len())])
                .collect()
        };
        for _ in 0..20_000 {
            let pattern = word(&mut rng, &['a', 'b', 'é', '?', '*'], 7);
            let text = word(&mut rng, &['a', 'b', 'é'], 9);
            let (p, t): (Vec<char>, Vec<char>) =
                (pattern.chars().collect(), text.chars().collect());
            assert_eq!(
                glob_matches(&pattern, &text),
                reference(&p, &t),
                "{pattern:?} on {text:?}"
            );
        }
        // A piece longer than a word of bits (64 positions), with `?`s.
        let long: String = "a?".repeat(40) + "b";
        assert!(glob_matches(&format!("*{long}*"), &("a".repeat(100) + "b")));
        assert!(!glob_matches(&format!("*{long}*"), &"a".repeat(200)));
    }

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
