//! The fuzz targets: one function per parser of untrusted bytes, shared by the cargo-fuzz
//! binaries in `fuzz/` and by the corpus replay that runs with the unit tests.
//!
//! Not part of the public API: compiled for `cargo test` and with the `fuzzing` feature only.
//! Each function takes arbitrary bytes and panics only when polycache breaks a promise
//! (a crash, a value lost, a password shown); an error for bad input is the expected outcome.
//! See docs/fuzzing.md for what each covers.

use crate::{Cache, Caches, Envelope, Expiry, Location, Options};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fuzz target: takes arbitrary bytes, panics only on a broken promise.
pub type Target = fn(&[u8]);

/// The targets, by the name of their `fuzz/fuzz_targets/*.rs` binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("location", location),
    ("open_url", open_url),
    ("config", config),
    ("envelope", envelope),
    ("memcached_reply", memcached_reply),
    ("file_entry", file_entry),
];

/// A directory of its own under the system's temporary directory, removed on drop.
///
/// The `open_url` and `file_entry` targets write only inside it. Fuzz binaries keep theirs in
/// a `static` (never dropped): `make fuzz` removes `polycache-fuzz-*` afterwards.
#[derive(Debug)]
pub struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    /// Creates a new empty sandbox directory.
    ///
    /// # Panics
    /// When the temporary directory is not writable.
    pub fn new() -> Sandbox {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "polycache-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("create the fuzz sandbox directory");
        Sandbox { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The process-wide sandbox the fuzz binaries use.
    pub fn shared() -> &'static Sandbox {
        static SHARED: std::sync::OnceLock<Sandbox> = std::sync::OnceLock::new();
        SHARED.get_or_init(Sandbox::new)
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `Location::parse`, redaction and every typed option getter on arbitrary text.
pub fn location(data: &[u8]) {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let shown = crate::redact(url);
    assert_eq!(crate::redact(&shown), shown, "redaction is not idempotent");
    let Ok(loc) = Location::parse(url) else {
        return;
    };
    assert!(!loc.scheme().bytes().any(|b| b.is_ascii_uppercase()));
    if loc.password().is_some() {
        // The redacted form is a URL whose password is the mask, whatever the original was.
        let again = Location::parse(&loc.redacted()).expect("the redacted URL parses");
        assert_eq!(again.password(), Some("***"), "{:?}", loc.redacted());
        assert_eq!(again.hosts(), loc.hosts());
    }
    let _ = format!("{loc:?} {loc}");
    for (name, _) in loc.options() {
        let _ = Options::new(&loc).positive_u64(name);
        let _ = Options::new(&loc).i64(name);
        let _ = Options::new(&loc).bool(name);
        let _ = Options::new(&loc).seconds(name);
        let mut all = Options::new(&loc);
        all.take(name);
        let _ = all.finish();
    }
}

/// Schemes whose backends do no I/O when opened (they connect on first use), or that the
/// target points into its sandbox. A scheme added to polycache is skipped until it is
/// judged safe here: opening one must never touch a network or a path outside the sandbox.
const OFFLINE_SCHEMES: &[&str] = &[
    "dummy",
    "memory",
    "memcached",
    "redis",
    "rediss",
    "unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
    "postgres",
    "postgresql",
];

/// The URL to open for `url`: the same when opening it does no I/O, pointed into `sandbox`
/// for the file and SQLite schemes, `None` when it cannot be opened safely.
fn offline_url(url: &str, sandbox: &Path) -> Option<String> {
    let Ok(loc) = Location::parse(url) else {
        return Some(url.to_owned()); // fails before any backend runs
    };
    let query = url.trim().find('?').map_or("", |i| &url.trim()[i..]);
    let scheme = loc.scheme();
    let known = crate::SCHEMES
        .iter()
        .any(|s| s.strip_suffix("://") == Some(scheme));
    let opts = loc.options();
    let opt = |name: &'static str| opts.iter().filter(move |(k, _)| k == name);
    match scheme {
        "file" => Some(format!("file://{}/files{query}", sandbox.display())),
        "sqlite" => Some(format!("sqlite://:memory:{query}")),
        "tiered" => {
            let nested_ok = opt("l1")
                .chain(opt("l2"))
                .all(|(_, v)| offline_url(v, sandbox).as_deref() == Some(v.as_str()));
            let bus_ok =
                opt("bus").all(|(_, v)| v.is_empty() || v == "none" || v.starts_with("local:"));
            (nested_ok && bus_ok).then(|| url.to_owned())
        }
        s if OFFLINE_SCHEMES.contains(&s) || !known => Some(url.to_owned()),
        _ => None,
    }
}

/// `Cache::open` on arbitrary text: URL parsing, the options every URL takes, and each
/// backend's own option parsing through the one scheme dispatch. Never connects anywhere;
/// file:// and sqlite:// are pointed into the shared [`Sandbox`].
pub fn open_url(data: &[u8]) {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let Some(url) = offline_url(url, Sandbox::shared().path()) else {
        return;
    };
    let cache = match Cache::open(&url) {
        Ok(cache) => cache,
        Err(err) => {
            if let Ok(loc) = Location::parse(&url) {
                assert_password_hidden(&loc, &url, &err.to_string());
            }
            return;
        }
    };
    // Only local backends run operations: the others would connect.
    if cache.backend().is_local() || url.starts_with("file://") || url.starts_with("sqlite://") {
        let _ = cache.set("fuzz", b"value", Expiry::Never);
        if let Ok(Some(v)) = cache.get("fuzz") {
            assert_eq!(&*v, b"value");
        }
        let _ = cache.delete("fuzz");
    }
}

/// Fails when `message` shows the password of `loc`, unless the password is too short to
/// tell or also written elsewhere in the URL (then the message may show that other part).
fn assert_password_hidden(loc: &Location, url: &str, message: &str) {
    let Some(pw) = loc.password().filter(|pw| pw.len() >= 8) else {
        return;
    };
    let elsewhere = loc.path().contains(pw)
        || loc.username().is_some_and(|u| u.contains(pw))
        || loc.hosts().iter().any(|h| h.contains(pw))
        || loc
            .options()
            .iter()
            .any(|(k, v)| k.contains(pw) || v.contains(pw))
        || url.replacen(pw, "", 1).contains(pw);
    if !elsewhere {
        assert!(
            !message.contains(pw),
            "the error shows the password: {message}"
        );
    }
}

/// `Caches::from_json` and `Caches::from_toml` on arbitrary text: the Django-shaped
/// configuration of named caches. Skipped when a cache would do I/O when opened (see
/// [`open_url`]).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sandbox = Sandbox::shared().path();
    let json = serde_json::from_str::<serde_json::Value>(text);
    if json.as_ref().map_or(true, |j| json_is_offline(j, sandbox)) {
        if let Ok(caches) = Caches::from_json(text) {
            assert!(caches.get("default").is_some());
        }
    }
    let toml = toml::from_str::<toml::Table>(text)
        .ok()
        .map(serde_json::to_value);
    if let Some(Ok(j)) = &toml {
        if !json_is_offline(j, sandbox) {
            return;
        }
    }
    if let Ok(caches) = Caches::from_toml(text) {
        assert!(caches.get("default").is_some());
    }
}

/// True when no LOCATION of `json` needs to be pointed elsewhere and no option names a file
/// or another cache.
fn json_is_offline(json: &serde_json::Value, sandbox: &Path) -> bool {
    use serde_json::Value as Json;
    match json {
        Json::Object(map) => map.iter().all(|(k, v)| {
            let k = k.to_ascii_lowercase();
            let url_ok = match (k.as_str(), v) {
                ("location", Json::String(url)) => {
                    offline_url(url, sandbox).as_deref() == Some(url.as_str())
                }
                ("l1" | "l2" | "bus", _) => false,
                _ => true,
            };
            url_ok && json_is_offline(v, sandbox)
        }),
        Json::Array(items) => items.iter().all(|v| json_is_offline(v, sandbox)),
        _ => true,
    }
}

/// `Envelope::decode` on arbitrary stored bytes: a decoded envelope re-encodes to the very
/// same bytes, and its time arithmetic never panics. The tag header of tagged entries is
/// read from the same bytes (see `cache/tags.rs`).
pub fn envelope(data: &[u8]) {
    crate::cache::fuzz_tag_header(data);
    let Some((env, payload)) = Envelope::decode(data) else {
        return;
    };
    assert_eq!(env.encode(payload), data);
    for now in [
        0,
        1,
        u64::MAX / 2,
        u64::MAX,
        env.fresh_until,
        env.expires_at,
    ] {
        let _ = env.is_stale(now);
        let _ = env.remaining(now);
    }
    // What incr reads from a shared store: parsing never panics and agrees with std.
    if let Some(n) = crate::parse_i64(payload) {
        assert_eq!(
            std::str::from_utf8(payload)
                .ok()
                .and_then(|s| s.parse().ok()),
            Some(n)
        );
    }
}

/// The memcached reply parser on an arbitrary byte stream, reply after reply, as a
/// connection reads them: every range it returns lies inside the buffer, every complete
/// reply consumes bytes, and an incomplete one asks for more than it has.
pub fn memcached_reply(data: &[u8]) {
    #[cfg(feature = "memcached")]
    {
        use crate::backend::memcached::protocol::{parse, Parse};
        let mut rest = data;
        loop {
            match parse(rest) {
                Ok(Parse::Complete(reply)) => {
                    assert!(reply.consumed > 0 && reply.consumed <= rest.len());
                    for r in [&reply.data, &reply.name] {
                        assert!(r.start <= r.end && r.end <= reply.consumed, "{reply:?}");
                    }
                    rest = &rest[reply.consumed..];
                }
                Ok(Parse::Incomplete(need)) => {
                    assert!(
                        need > rest.len(),
                        "asks for {need} bytes with {}",
                        rest.len()
                    );
                    break;
                }
                Err(err) => {
                    assert!(!err.to_string().is_empty());
                    break;
                }
            }
        }
    }
    #[cfg(not(feature = "memcached"))]
    let _ = data;
}

/// The value every `file_entry` run stores, to find its entry file by content.
#[cfg(feature = "file")]
const FILE_MARKER: &[u8] = b"polycache-fuzz-file-entry-marker";

/// A `file://` entry file replaced by arbitrary bytes, then read and written through the
/// Backend API: no panic, no hang, a clear error or a miss, and the cache still works.
///
/// Independent of the entry format: the entry file is found as the file that holds the
/// stored value, so the target keeps working when the format changes.
pub fn file_entry(data: &[u8]) {
    #[cfg(feature = "file")]
    {
        let dir = Sandbox::shared().path().join("entries");
        let cache = Cache::open(&format!("file://{}", dir.display())).expect("open file://");
        cache.set("k", FILE_MARKER, Expiry::Never).expect("set");
        let entries = files_containing(&dir, FILE_MARKER);
        assert!(!entries.is_empty(), "no entry file holds the stored value");
        for path in &entries {
            fs::write(path, data).expect("overwrite the entry file");
        }
        if let Ok(Some(v)) = cache.get("k") {
            // Bytes that happen to form a valid entry for this key may read as a value.
            let _ = v;
        }
        let _ = cache.has_key("k");
        let _ = cache.touch("k", Expiry::Never);
        let _ = cache.incr("k", 1);
        let _ = cache.add("k", b"added", Expiry::Never);
        // Whatever the file held, a set replaces it and reads back.
        cache
            .set("k", b"fresh", Expiry::Never)
            .expect("set over a damaged entry");
        assert_eq!(cache.get("k").expect("get").as_deref(), Some(&b"fresh"[..]));
        assert!(cache.delete("k").expect("delete"));
        assert_eq!(cache.get("k").expect("get").as_deref(), None);
    }
    #[cfg(not(feature = "file"))]
    let _ = data;
}

#[cfg(feature = "file")]
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(feature = "file")]
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for entry in rd.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && fs::read(&path).is_ok_and(|b| contains(&b, needle)) {
                out.push(path);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every saved input of every target, as `cargo fuzz` would replay it.
    #[test]
    fn replay_saved_corpus() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut failed = Vec::new();
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let mut files: Vec<_> = fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert!(files.len() >= 5, "{name}: only {} seeds", files.len());
            for file in files {
                let data = fs::read(&file).unwrap();
                if std::panic::catch_unwind(|| target(&data)).is_err() {
                    failed.push(format!(
                        "{name}/{}",
                        file.file_name().unwrap().to_string_lossy()
                    ));
                }
            }
        }
        // The shared sandbox is a static, never dropped: remove it here.
        let _ = fs::remove_dir_all(Sandbox::shared().path());
        assert!(failed.is_empty(), "failing inputs: {failed:?}");
    }

    /// The memcached reply parser reads back every well-formed reply stream, whole or cut
    /// anywhere; the command encoders frame values so that the data block is intact.
    #[cfg(feature = "memcached")]
    mod memcached_protocol {
        use crate::backend::memcached::protocol::{self, parse, Kind, Parse};
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Reply {
            Va(Vec<u8>),
            Item(Vec<u8>, u32, Vec<u8>, Option<u64>),
            Stat(Vec<u8>, Vec<u8>),
            Simple(&'static str, Kind),
            ServerError(Vec<u8>),
        }

        fn token() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(0x21u8..=0x7e, 1..20)
        }

        fn reply() -> impl Strategy<Value = Reply> {
            let data = proptest::collection::vec(any::<u8>(), 0..300);
            prop_oneof![
                data.clone().prop_map(Reply::Va),
                (
                    token(),
                    any::<u32>(),
                    data,
                    proptest::option::of(any::<u64>())
                )
                    .prop_map(|(k, f, d, c)| Reply::Item(k, f, d, c)),
                (token(), proptest::collection::vec(0x20u8..=0x7e, 0..20))
                    .prop_map(|(n, v)| Reply::Stat(n, v)),
                prop_oneof![
                    Just(("HD", Kind::Hit)),
                    Just(("EN", Kind::Miss)),
                    Just(("NF", Kind::NotFound)),
                    Just(("NS", Kind::NotStored)),
                    Just(("EX", Kind::Exists)),
                    Just(("MN", Kind::NoOp)),
                    Just(("OK", Kind::Ok)),
                    Just(("END", Kind::End)),
                    Just(("ERROR", Kind::Error)),
                ]
                .prop_map(|(w, k)| Reply::Simple(w, k)),
                proptest::collection::vec(0x20u8..=0x7e, 0..40).prop_map(Reply::ServerError),
            ]
        }

        fn write(r: &Reply, out: &mut Vec<u8>) {
            match r {
                Reply::Va(d) => {
                    out.extend_from_slice(format!("VA {} t5\r\n", d.len()).as_bytes());
                    out.extend_from_slice(d);
                    out.extend_from_slice(b"\r\n");
                }
                Reply::Item(k, f, d, c) => {
                    out.extend_from_slice(b"VALUE ");
                    out.extend_from_slice(k);
                    out.extend_from_slice(format!(" {f} {}", d.len()).as_bytes());
                    if let Some(c) = c {
                        out.extend_from_slice(format!(" {c}").as_bytes());
                    }
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(d);
                    out.extend_from_slice(b"\r\n");
                }
                Reply::Stat(n, v) => {
                    out.extend_from_slice(b"STAT ");
                    out.extend_from_slice(n);
                    out.push(b' ');
                    out.extend_from_slice(v);
                    out.extend_from_slice(b"\r\n");
                }
                Reply::Simple(w, _) => out.extend_from_slice(format!("{w}\r\n").as_bytes()),
                Reply::ServerError(m) => {
                    out.extend_from_slice(b"SERVER_ERROR ");
                    out.extend_from_slice(m);
                    out.extend_from_slice(b"\r\n");
                }
            }
        }

        fn check(r: &Reply, buf: &[u8], got: &protocol::Reply) -> Result<(), TestCaseError> {
            let (kind, data, name): (Kind, &[u8], &[u8]) = match r {
                Reply::Va(d) => (Kind::Value, d, b"t5"), // a VA's name: its flags
                Reply::Item(k, _, d, _) => (Kind::Item, d, k),
                Reply::Stat(n, v) => (Kind::Stat, v, n),
                Reply::Simple(_, k) => (*k, b"", b""),
                Reply::ServerError(m) => (Kind::ServerError, m, b""),
            };
            prop_assert_eq!(got.kind, kind);
            prop_assert_eq!(&buf[got.data.clone()], data);
            prop_assert_eq!(&buf[got.name.clone()], name);
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn reply_streams_parse_back(
                replies in proptest::collection::vec(reply(), 1..8),
                cut in any::<proptest::sample::Index>(),
            ) {
                let mut buf = Vec::new();
                for r in &replies {
                    write(r, &mut buf);
                }
                // Whole: every reply, in order, consuming everything.
                let mut at = 0;
                for r in &replies {
                    let Parse::Complete(got) = parse(&buf[at..]).unwrap() else {
                        return Err(TestCaseError::fail(format!("incomplete at {at}")));
                    };
                    check(r, &buf[at..], &got)?;
                    at += got.consumed;
                }
                prop_assert_eq!(at, buf.len());
                // Cut anywhere: the replies wholly before the cut, then a request for more.
                let cut = cut.index(buf.len());
                let mut at = 0;
                loop {
                    match parse(&buf[at..cut]).unwrap() {
                        Parse::Complete(got) => at += got.consumed,
                        Parse::Incomplete(need) => {
                            prop_assert!(at + need > cut && at + need <= buf.len() + 1);
                            break;
                        }
                    }
                }
            }

            #[test]
            fn store_frames_the_value(
                key in token(),
                value in proptest::collection::vec(any::<u8>(), 0..300),
                exptime in any::<u64>(),
                add in any::<bool>(),
                opaque in proptest::option::of(any::<u64>()),
            ) {
                let mut out = Vec::new();
                protocol::store(&mut out, &key, &value, exptime, add, opaque);
                let eol = out.windows(2).position(|w| w == b"\r\n").unwrap();
                let line = std::str::from_utf8(&out[..eol]).unwrap();
                let mut words = line.split(' ');
                prop_assert_eq!(words.next(), Some("ms"));
                prop_assert_eq!(words.next().map(str::as_bytes), Some(&key[..]));
                let len_word = value.len().to_string();
                prop_assert_eq!(words.next(), Some(len_word.as_str()));
                let exptime_word = format!("T{exptime}");
                prop_assert_eq!(words.next(), Some(exptime_word.as_str()));
                if add {
                    prop_assert_eq!(words.next(), Some("ME"));
                }
                let opaque_word = opaque.map(|o| format!("O{o}"));
                prop_assert_eq!(words.next(), opaque_word.as_deref());
                prop_assert_eq!(words.next(), None);
                prop_assert_eq!(&out[eol + 2..out.len() - 2], &value[..]);
                prop_assert!(out.ends_with(b"\r\n"));
            }

            #[test]
            fn decimal_counters_round_trip(n in any::<u64>()) {
                let mut out = Vec::new();
                protocol::push_u64(&mut out, n);
                prop_assert_eq!(protocol::parse_counter(&out), Some(n));
            }
        }
    }
}
