//! Glob patterns over full keys, with Redis' rules: what `keys`, `iter_keys` and
//! `delete_pattern` match.
//!
//! The syntax is Redis' (`SCAN … MATCH`), which django-redis passes through: `*` any run of
//! bytes, `?` one byte, `[abc]`, `[a-z]` and `[^a-z]` one byte of (not of) a class, `\x` the
//! byte `x` itself. Matching is byte for byte and case-sensitive on every backend; `?` and a
//! class match one *byte*, as on Redis (a character outside ASCII is several bytes).

/// A glob pattern over full keys (`{key_prefix}:{version}:{key}`), parsed once.
///
/// `Send + Sync`; never panics, whatever the bytes (an unclosed `[` runs to the end of the
/// pattern and a trailing `\` is a literal backslash, as on Redis).
///
/// ```
/// use polycache::KeyPattern;
/// let p = KeyPattern::new(b"app:1:user:[0-9]*".to_vec());
/// assert!(p.matches(b"app:1:user:42"));
/// assert!(!p.matches(b"app:1:user:x"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    glob: Vec<u8>,
    toks: Vec<Tok>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Star,
    Any,
    Lit(u8),
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

impl Tok {
    fn accepts(&self, b: u8) -> bool {
        match self {
            Tok::Any => true,
            Tok::Lit(l) => *l == b,
            Tok::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= b && b <= hi) != *negated
            }
            Tok::Star => true,
        }
    }
}

fn parse(glob: &[u8]) -> Vec<Tok> {
    let mut toks = Vec::with_capacity(glob.len());
    let mut i = 0;
    while i < glob.len() {
        match glob[i] {
            b'*' => {
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
            }
            b'?' => toks.push(Tok::Any),
            b'\\' if i + 1 < glob.len() => {
                i += 1;
                toks.push(Tok::Lit(glob[i]));
            }
            b'[' => {
                i += 1;
                let negated = glob.get(i) == Some(&b'^');
                if negated {
                    i += 1;
                }
                let mut ranges = Vec::new();
                while i < glob.len() && glob[i] != b']' {
                    let mut lo = glob[i];
                    if lo == b'\\' && i + 1 < glob.len() {
                        i += 1;
                        lo = glob[i];
                    }
                    if glob.get(i + 1) == Some(&b'-') && i + 2 < glob.len() && glob[i + 2] != b']' {
                        let hi = glob[i + 2];
                        ranges.push((lo.min(hi), lo.max(hi)));
                        i += 3;
                    } else {
                        ranges.push((lo, lo));
                        i += 1;
                    }
                }
                toks.push(Tok::Class { negated, ranges });
            }
            b => toks.push(Tok::Lit(b)),
        }
        i += 1;
    }
    toks
}

/// `text` with every glob metacharacter escaped, so that it matches only itself: how a key
/// prefix and a version go in front of the caller's pattern (`*?[]\` each get a `\`).
///
/// ```
/// assert_eq!(polycache::escape_glob(b"a*b[1]"), b"a\\*b\\[1\\]".to_vec());
/// ```
pub fn escape_glob(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 4);
    for &b in text {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

impl KeyPattern {
    /// The pattern `glob`, in Redis' syntax.
    pub fn new(glob: impl Into<Vec<u8>>) -> KeyPattern {
        let glob = glob.into();
        let toks = parse(&glob);
        KeyPattern { glob, toks }
    }

    /// The pattern as written: what `SCAN … MATCH` is sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.glob
    }

    /// True when `key` matches the whole pattern.
    pub fn matches(&self, key: &[u8]) -> bool {
        // Greedy with one backtrack point, the last `*`: enough for globs, linear per star.
        let (toks, mut t, mut k) = (&self.toks, 0, 0);
        let mut star: Option<(usize, usize)> = None;
        while k < key.len() {
            match toks.get(t) {
                Some(Tok::Star) => {
                    star = Some((t, k));
                    t += 1;
                }
                Some(tok) if tok.accepts(key[k]) => {
                    t += 1;
                    k += 1;
                }
                _ => match star {
                    Some((st, sk)) => {
                        star = Some((st, sk + 1));
                        t = st + 1;
                        k = sk + 1;
                    }
                    None => return false,
                },
            }
        }
        toks[t..].iter().all(|tok| *tok == Tok::Star)
    }

    /// The literal bytes every matching key starts with.
    pub fn literal_prefix(&self) -> Vec<u8> {
        self.toks
            .iter()
            .map_while(|t| match t {
                Tok::Lit(b) => Some(*b),
                _ => None,
            })
            .collect()
    }

    /// A `LIKE` pattern (escape character `\`) over bytes that every key this pattern
    /// matches also matches: `*` is `%`, `?` and a class are `_` (one byte in `bytea`), and
    /// `%`, `_` and `\` are escaped. It is exact but for classes, which the caller then
    /// checks with [`KeyPattern::matches`].
    pub fn to_like(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.glob.len() + 4);
        for t in &self.toks {
            match t {
                Tok::Star => out.push(b'%'),
                Tok::Any | Tok::Class { .. } => out.push(b'_'),
                Tok::Lit(b) => {
                    if matches!(b, b'%' | b'_' | b'\\') {
                        out.push(b'\\');
                    }
                    out.push(*b);
                }
            }
        }
        out
    }

    /// An SQLite `GLOB` pattern that every key this pattern matches also matches. SQLite's
    /// `GLOB` has no escape character (a literal `*`, `?` or `[` is written `[*]`, `[?]`,
    /// `[[]`) and its `?` is one *character*, so `?` and classes become `*`; the caller then
    /// checks each row with [`KeyPattern::matches`].
    pub fn to_sqlite_glob(&self) -> String {
        let mut out = Vec::with_capacity(self.glob.len() + 4);
        for t in &self.toks {
            match t {
                Tok::Star | Tok::Any | Tok::Class { .. } => {
                    if out.last() != Some(&b'*') {
                        out.push(b'*');
                    }
                }
                Tok::Lit(b) if matches!(b, b'*' | b'?' | b'[') => {
                    out.extend_from_slice(&[b'[', *b, b']']);
                }
                Tok::Lit(b) => out.push(*b),
            }
        }
        // Patterns come from `&str` keys and prefixes, so this is UTF-8; should a literal
        // split a character, `*` still selects a superset.
        String::from_utf8(out).unwrap_or_else(|_| "*".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, k: &str) -> bool {
        KeyPattern::new(p.as_bytes().to_vec()).matches(k.as_bytes())
    }

    #[test]
    fn redis_glob_rules() {
        assert!(m("*", ""));
        assert!(m("a*", "abc"));
        assert!(!m("a*", "ba"));
        assert!(m("a*c", "abbbc"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("[\\]]", "]"));
        assert!(m("[*]", "*"));
        assert!(!m("[*]", "x"));
        assert!(m("a\\", "a\\"));
        assert!(m("[abc", "b"));
        // `?` is one byte, as on Redis.
        assert!(m("??", "é"));
        assert!(!m("?", "é"));
    }

    #[test]
    fn escaped_prefixes_match_only_themselves() {
        for prefix in ["a*", "a?", "a[b]", "a\\", "[^x]", "p:q"] {
            let mut glob = escape_glob(prefix.as_bytes());
            glob.extend_from_slice(b":*");
            let p = KeyPattern::new(glob);
            assert!(p.matches(format!("{prefix}:k").as_bytes()), "{prefix}");
            for other in [
                "a:k", "ab:k", "a[b]x:k", "ax:k", "a\\\\:k", "b:k", "a?:k", "a*:k",
            ] {
                if other != format!("{prefix}:k") {
                    assert!(!p.matches(other.as_bytes()), "{prefix} matched {other}");
                }
            }
            assert_eq!(p.literal_prefix(), format!("{prefix}:").into_bytes());
        }
    }

    #[test]
    fn sql_translations_escape_their_own_metacharacters() {
        let p = KeyPattern::new(b"a%_\\\\[x-z]?*\\*".to_vec());
        assert_eq!(p.to_like(), b"a\\%\\_\\\\__%*".to_vec());
        assert_eq!(p.to_sqlite_glob(), "a%_\\*[*]");
        let q = KeyPattern::new(b"x[[]\\?".to_vec());
        assert_eq!(q.to_sqlite_glob(), "x*[?]");
    }
}
