//! How `RQFS` and `LSTF` criteria select files: plain words, name globs,
//! kind, size bounds and user. Pure functions over a file's metadata.

use crate::protocol::{Criterion, FileMeta, SearchCriteria, UserName};

/// True when the file passes every criterion. `held_by` answers whether a
/// given user holds the file.
pub fn matches(
    meta: &FileMeta,
    criteria: &SearchCriteria,
    held_by: impl Fn(&UserName) -> bool,
) -> bool {
    // Lower-cased once, and only if a criterion looks at the name (a
    // search by key, the commonest from peers, does not).
    let lowered = std::cell::OnceCell::new();
    let lower_name = || lowered.get_or_init(|| meta.name.as_str().to_lowercase());
    criteria.0.iter().all(|criterion| match criterion {
        Criterion::Word(word) => lower_name().contains(&word.to_lowercase()),
        Criterion::NameGlob(glob) => glob_matches(&glob.to_lowercase(), lower_name()),
        Criterion::Kind(kind) => meta.kind == *kind,
        Criterion::MinSize(min) => meta.size >= *min,
        Criterion::MaxSize(max) => meta.size <= *max,
        Criterion::User(user) => held_by(user),
        Criterion::Key(key) => meta.key == *key,
    })
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
    use super::glob_matches;

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
