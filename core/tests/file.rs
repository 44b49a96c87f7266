//! The `file://` backend: its on-disk guarantees (packs and large files, formats, damage,
//! bounds and culls, modes, paths) and several processes sharing one directory (child
//! processes re-run this test binary in a worker mode). Every operation of the backend
//! contract runs in `contract.rs`.
#![cfg(feature = "file")]

use polycache::backend::file::testing::{
    decode_entry, decode_record, ENTRY_HEADER_LEN, RECORD_HEADER_LEN, SMALL_MAX,
};
use polycache::backend::file::{FileBackend, FileOptions};
use polycache::{Backend, Cache, ErrorKind, Expiry};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// A TTL long enough that a loaded machine's slow writes do not expire it before the check
/// that follows, and the wait that surely passes it.
const SHORT: Expiry = Expiry::After(Duration::from_millis(700));
const SHORT_WAIT: Duration = Duration::from_millis(900);

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "polycache-file-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    /// A path inside this directory that does not exist yet: the cache creates it.
    fn cache_dir(&self) -> PathBuf {
        self.0.join("cache")
    }
    fn url(&self, query: &str) -> String {
        format!("file://{}{query}", self.cache_dir().display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A value too large for a pack: it gets a file of its own.
fn large(fill: u8) -> Vec<u8> {
    vec![fill; SMALL_MAX + 100]
}

/// Options without the background scan, for tests that damage files while caches are open
/// (a scan rewriting a pack between the test's read and write would undo its writes).
fn no_scan() -> FileOptions {
    FileOptions::default().reconcile_interval(Duration::MAX)
}

/// The entries and bytes the packs' headers count (exact).
fn counts(dir: &Path) -> (u64, u64) {
    FileBackend::new(dir, &no_scan()).unwrap().estimate()
}

/// The position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Every large entry file (32-hex names in shard directories) under `dir`.
fn entry_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(shards) = fs::read_dir(dir) else {
        return out;
    };
    for shard in shards {
        let shard = shard.unwrap().path();
        if !shard.is_dir() || shard.file_name().unwrap().len() != 2 {
            continue;
        }
        for f in fs::read_dir(&shard).unwrap() {
            let f = f.unwrap().path();
            if f.file_name().unwrap().len() == 32 {
                out.push(f);
            }
        }
    }
    out
}

fn every_file(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            every_file(&p, out);
        }
        out.push(p);
    }
}

#[test]
fn small_values_live_in_packs_and_large_ones_in_files_of_their_own() {
    let tmp = TempDir::new("ops");
    let c = Cache::open(&tmp.url("?max_entries=1000")).unwrap();
    assert_eq!(c.backend().name(), "file");
    // Empty, at the pack threshold, and large values (files of their own).
    c.set("empty", b"", Expiry::Never).unwrap();
    assert_eq!(c.get("empty").unwrap().as_deref(), Some(&b""[..]));
    let edge = vec![7u8; SMALL_MAX - RECORD_HEADER_LEN - ":1:edge".len()];
    c.set("edge", &edge, Expiry::Never).unwrap();
    assert_eq!(c.get("edge").unwrap().as_deref(), Some(&edge[..]));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    c.set("big", &big, Expiry::Never).unwrap();
    assert_eq!(c.get("big").unwrap().as_deref(), Some(&big[..]));
    assert_eq!(
        entry_files(&tmp.cache_dir()).len(),
        1,
        "only the large value has a file"
    );
    // A key that changes between small and large keeps exactly one live value.
    c.set("flip", &large(1), Expiry::Never).unwrap();
    c.set("flip", b"small", Expiry::Never).unwrap();
    assert_eq!(c.get("flip").unwrap().as_deref(), Some(&b"small"[..]));
    assert_eq!(
        entry_files(&tmp.cache_dir()).len(),
        1,
        "the old large file is gone"
    );
    c.set("flip", &large(2), Expiry::Never).unwrap();
    assert_eq!(c.get("flip").unwrap().as_deref(), Some(&large(2)[..]));
    // A large value with a TTL lapses, and its file goes.
    c.set("bigshort", &large(3), SHORT).unwrap();
    thread::sleep(SHORT_WAIT);
    assert_eq!(c.get("bigshort").unwrap(), None);
    assert_eq!(entry_files(&tmp.cache_dir()).len(), 2);

    c.clear().unwrap();
    assert!(c.get("big").unwrap().is_none());
    assert!(entry_files(&tmp.cache_dir()).is_empty());
    assert_eq!(counts(&tmp.cache_dir()), (0, 0));
}

#[test]
fn many_entries_survive_growth_and_compaction_under_concurrent_readers() {
    let tmp = TempDir::new("grow");
    let c = Arc::new(Cache::open(&tmp.url("?max_entries=100000")).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Readers check every value they see while the writer grows and compacts the packs.
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (c, stop) = (c.clone(), stop.clone());
            thread::spawn(move || {
                let mut rng = Rng(7 + r);
                let mut seen = 0;
                while !stop.load(Ordering::Relaxed) {
                    let i = rng.below(3000);
                    if let Some(v) = c.get(&format!("k{i}")).unwrap() {
                        check_pattern(&v).unwrap();
                        seen += 1;
                    }
                }
                seen
            })
        })
        .collect();
    for round in 0..4u64 {
        for i in 0..3000u64 {
            let len = (i * 7 + round) as usize % 300;
            c.set(
                &format!("k{i}"),
                &pattern_value(i ^ round << 32, len),
                Expiry::Never,
            )
            .unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let seen: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(seen > 0, "the readers read something");
    for i in 0..3000u64 {
        let v = c.get(&format!("k{i}")).unwrap().unwrap();
        check_pattern(&v).unwrap();
        assert_eq!(
            v[8..16],
            (i ^ 3 << 32).to_le_bytes(),
            "k{i} holds its last value"
        );
    }
    assert_eq!(counts(&tmp.cache_dir()).0, 3000);
    // Rebuilds left no dead weight beyond their slack: 16 packs of about 190 records.
    let packs: u64 = fs::read_dir(tmp.cache_dir().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        packs < 3000 * 400 + 16 * (64 << 10) * 2,
        "{packs} bytes of packs"
    );
}

#[test]
fn url_forms_and_options() {
    for bad in [
        "file://",
        "file://./relative",
        "file://relative/dir",
        "file://host/dir",
        "file:///",
    ] {
        let err = Cache::open(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration, "{bad}");
        assert!(err.to_string().contains(bad), "{bad}: {err}");
    }
    let tmp = TempDir::new("url");
    let err = Cache::open(&tmp.url("?max_entires=5")).unwrap_err();
    assert!(err.to_string().contains("max_entires"), "{err}");
    let err = Cache::open(&tmp.url("?max_bytes=0")).unwrap_err();
    assert!(err.is_configuration(), "{err}");
    let err = Cache::open(&tmp.url("?fsync=maybe")).unwrap_err();
    assert!(err.to_string().contains("fsync"), "{err}");
    let err = Cache::open(&tmp.url("?max_entries=5&cull_frequency=-1")).unwrap_err();
    assert!(err.to_string().contains("cull_frequency"), "{err}");
    let err = Cache::open(&tmp.url("?cull_frequency=3")).unwrap_err();
    assert!(err.to_string().contains("max_entries"), "{err}");
    let c = Cache::open(&tmp.url(
        "?max_entries=10&max_bytes=100000&cull_frequency=2&fsync=true&reconcile_interval=30&key_prefix=p",
    ))
    .unwrap();
    c.set("k", b"v", Expiry::Never).unwrap();
    c.set("big", &large(0), Expiry::Never).unwrap();
    assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(c.get("big").unwrap().as_deref(), Some(&large(0)[..]));
    let local = format!("file://localhost{}", tmp.cache_dir().display());
    let c2 = Cache::builder(&local).key_prefix("p").build().unwrap();
    assert_eq!(c2.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    // Percent-encoded paths are decoded.
    let spaced = tmp.0.join("with space");
    let enc = format!("file://{}/with%20space", tmp.0.display());
    Cache::open(&enc)
        .unwrap()
        .set("k", b"v", Expiry::Never)
        .unwrap();
    assert_eq!(counts(&spaced).0, 1);
}

#[test]
fn files_and_directories_are_private() {
    let tmp = TempDir::new("modes");
    let c = Cache::open(&tmp.url("")).unwrap();
    c.set("k", b"v", Expiry::Never).unwrap();
    c.set("big", &large(0), Expiry::Never).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tmp.cache_dir()), 0o700);
    let files = entry_files(&tmp.cache_dir());
    assert_eq!(files.len(), 1);
    let mut all = Vec::new();
    every_file(&tmp.cache_dir(), &mut all);
    assert!(all.len() > 4);
    for p in all {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&p), want, "{}", p.display());
    }
}

#[test]
fn record_and_file_formats_are_the_documented_ones() {
    let tmp = TempDir::new("format");
    let c = Cache::open(&tmp.url("")).unwrap();
    let backend = FileBackend::new(&tmp.cache_dir(), &FileOptions::default()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    c.set("k", b"value", Expiry::After(Duration::from_secs(60)))
        .unwrap();
    let pack = fs::read(backend.pack_path(b":1:k")).unwrap();
    assert_eq!(&pack[..4], b"PCPK");
    let at = find(&pack, b":1:kvalue").unwrap() - RECORD_HEADER_LEN;
    let rec = &pack[at..at + RECORD_HEADER_LEN + ":1:k".len() + 5];
    assert_eq!(&rec[..3], b"pc\x01");
    let r = decode_record(rec).unwrap();
    assert_eq!((r.key, r.value), (&b":1:k"[..], &b"value"[..]));
    assert!(r.expires_at > now + 50_000 && r.expires_at <= now + 70_000);
    assert!(r.written_at >= now && r.written_at < now + 20_000);

    c.set("big", &large(9), Expiry::Never).unwrap();
    let bytes = fs::read(backend.entry_path(b":1:big")).unwrap();
    assert_eq!(&bytes[..4], b"PCFE");
    assert_eq!(
        bytes.len(),
        ENTRY_HEADER_LEN + ":1:big".len() + large(9).len()
    );
    let (expires_at, key, value) = decode_entry(&bytes).unwrap();
    assert_eq!((expires_at, key, value), (0, &b":1:big"[..], &large(9)[..]));
}

#[test]
fn corrupt_records_read_as_misses_and_are_removed() {
    let tmp = TempDir::new("corrupt-record");
    let c = Cache::open(&tmp.url("?reconcile_interval=none")).unwrap();
    let backend = FileBackend::new(&tmp.cache_dir(), &no_scan()).unwrap();
    c.set("bystander", b"untouched", Expiry::Never).unwrap();
    for (i, what) in ["value byte", "header byte", "key byte"]
        .into_iter()
        .enumerate()
    {
        let key = format!("victim{i}");
        c.set(&key, b"precious value", Expiry::Never).unwrap();
        let path = backend.pack_path(format!(":1:{key}").as_bytes());
        let mut pack = fs::read(&path).unwrap();
        let full = format!(":1:{key}precious value");
        let at = find(&pack, full.as_bytes()).unwrap();
        let hit = match i {
            0 => at + full.len() - 1,
            1 => at - RECORD_HEADER_LEN + 9,
            _ => at + 1,
        };
        pack[hit] ^= 0x20;
        fs::write(&path, &pack).unwrap();
        let before = counts(&tmp.cache_dir()).0;
        assert_eq!(c.get(key.as_str()).unwrap(), None, "{what}");
        assert_eq!(counts(&tmp.cache_dir()).0, before - 1, "{what}: removed");
        assert_eq!(
            c.incr(key.as_str(), 1).unwrap_err().kind(),
            ErrorKind::NotFound,
            "{what}"
        );
        assert!(
            c.add(key.as_str(), b"fresh", Expiry::Never).unwrap(),
            "{what}"
        );
        assert_eq!(c.get(key.as_str()).unwrap().as_deref(), Some(&b"fresh"[..]));
    }
    assert_eq!(
        c.get("bystander").unwrap().as_deref(),
        Some(&b"untouched"[..])
    );
}

#[test]
fn truncated_corrupt_and_foreign_pack_files_read_as_misses() {
    let tmp = TempDir::new("corrupt-pack");
    let c = Cache::open(&tmp.url("?reconcile_interval=none")).unwrap();
    let backend = FileBackend::new(&tmp.cache_dir(), &no_scan()).unwrap();
    type Damage = fn(&mut Vec<u8>);
    let damage: [(&str, Damage); 6] = [
        ("truncated in the records", |b| b.truncate(b.len() - 3)),
        ("truncated in the index", |b| b.truncate(100)),
        ("header only", |b| b.truncate(64)),
        ("empty", |b| b.clear()),
        ("header flipped", |b| b[20] ^= 1),
        ("foreign", |b| {
            *b = b"<html>not a cache pack</html>".to_vec()
        }),
    ];
    for (what, damage) in damage {
        let key = format!("victim-{what}");
        c.set(&key, b"precious value", Expiry::Never).unwrap();
        let path = backend.pack_path(format!(":1:{key}").as_bytes());
        let mut bytes = fs::read(&path).unwrap();
        damage(&mut bytes);
        // Replaced whole, as another program would write it (a rename).
        let staged = tmp.0.join("staged");
        fs::write(&staged, &bytes).unwrap();
        fs::rename(&staged, &path).unwrap();
        // Fresh caches (processes) and the one that had it open: misses, never errors.
        let fresh = Cache::open(&tmp.url("?reconcile_interval=none")).unwrap();
        assert_eq!(fresh.get(key.as_str()).unwrap(), None, "{what}");
        assert_eq!(
            fresh.incr(key.as_str(), 1).unwrap_err().kind(),
            ErrorKind::NotFound,
            "{what}"
        );
        assert!(!c.delete(key.as_str()).unwrap(), "{what}");
        assert!(
            c.add(key.as_str(), b"fresh", Expiry::Never).unwrap(),
            "{what}"
        );
        assert_eq!(c.get(key.as_str()).unwrap().as_deref(), Some(&b"fresh"[..]));
        assert_eq!(
            fresh.get(key.as_str()).unwrap().as_deref(),
            Some(&b"fresh"[..])
        );
    }
}

#[test]
fn corrupt_truncated_and_foreign_large_files_read_as_misses_and_are_removed() {
    let tmp = TempDir::new("corrupt");
    let c = Cache::open(&tmp.url("?reconcile_interval=none")).unwrap();
    let backend = FileBackend::new(&tmp.cache_dir(), &no_scan()).unwrap();
    type Damage = fn(&mut Vec<u8>);
    let damage: [(&str, Damage); 6] = [
        ("truncated", |b| b.truncate(b.len() - 3)),
        ("header only", |b| b.truncate(ENTRY_HEADER_LEN)),
        ("empty", |b| b.clear()),
        ("flipped bit", |b| {
            let n = b.len();
            b[n - 1] ^= 1
        }),
        ("trailing bytes", |b| b.extend_from_slice(b"xx")),
        ("foreign", |b| {
            *b = b"<html>not a cache entry</html>".to_vec()
        }),
    ];
    for (what, damage) in damage {
        let key = format!("victim-{what}");
        c.set(&key, &large(5), Expiry::Never).unwrap();
        let path = backend.entry_path(&c.make_key(key.as_str()).unwrap());
        let mut bytes = fs::read(&path).unwrap();
        damage(&mut bytes);
        fs::write(&path, &bytes).unwrap();
        assert_eq!(c.get(key.as_str()).unwrap(), None, "{what}");
        assert!(!path.exists(), "{what}: the bad file is removed");
        // The other operations treat it as absent too, without an error.
        c.set(&key, &large(5), Expiry::Never).unwrap();
        fs::write(&path, &bytes).unwrap();
        assert_eq!(
            c.incr(key.as_str(), 1).unwrap_err().kind(),
            ErrorKind::NotFound,
            "{what}"
        );
        c.set(&key, &large(5), Expiry::Never).unwrap();
        fs::write(&path, &bytes).unwrap();
        assert!(
            c.add(key.as_str(), b"fresh", Expiry::Never).unwrap(),
            "{what}"
        );
        assert_eq!(c.get(key.as_str()).unwrap().as_deref(), Some(&b"fresh"[..]));
    }
    // A huge length in a header of a small file is not an allocation.
    c.set("liar", &large(1), Expiry::Never).unwrap();
    let path = backend.entry_path(b":1:liar");
    let mut bytes = fs::read(&path).unwrap();
    bytes[32..40].copy_from_slice(&(1u64 << 60).to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    assert_eq!(c.get("liar").unwrap(), None);
    assert!(!path.exists());
}

#[test]
fn a_directory_at_an_entry_path_is_a_miss() {
    let tmp = TempDir::new("dir-entry");
    let c = Cache::open(&tmp.url("?reconcile_interval=none")).unwrap();
    let backend = FileBackend::new(&tmp.cache_dir(), &no_scan()).unwrap();
    c.set("k", &large(1), Expiry::Never).unwrap();
    let path = backend.entry_path(b":1:k");
    fs::remove_file(&path).unwrap();
    fs::create_dir_all(&path).unwrap();
    assert_eq!(c.get("k").unwrap(), None);
    assert_eq!(c.incr("k", 1).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn decoding_random_damage_never_panics_nor_accepts_it() {
    let tmp = TempDir::new("fuzz");
    let c = Cache::open(&tmp.url("")).unwrap();
    let backend = FileBackend::new(&tmp.cache_dir(), &FileOptions::default()).unwrap();
    c.set("some key", b"some value of a few bytes", Expiry::Never)
        .unwrap();
    c.set("large key", &large(3), Expiry::Never).unwrap();
    let pack = fs::read(backend.pack_path(b":1:some key")).unwrap();
    let at = find(&pack, b":1:some key").unwrap() - RECORD_HEADER_LEN;
    let record = pack[at..at + RECORD_HEADER_LEN + 11 + 25].to_vec();
    assert!(decode_record(&record).is_some());
    let file = fs::read(backend.entry_path(b":1:large key")).unwrap();
    assert!(decode_entry(&file).is_some());
    let mut rng = Rng(0x5eed);
    for (name, good) in [("record", &record), ("file", &file)] {
        for round in 0..10_000 {
            let mut b = good.clone();
            match rng.below(4) {
                0 => {
                    let i = rng.below(b.len() as u64) as usize;
                    b[i] = rng.next() as u8;
                }
                1 => b.truncate(rng.below(b.len() as u64) as usize),
                2 => {
                    let i = rng.below(ENTRY_HEADER_LEN as u64) as usize;
                    b[i] ^= 1 << rng.below(8);
                }
                _ => b = (0..rng.below(200)).map(|_| rng.next() as u8).collect(),
            }
            let accepted = if name == "record" {
                decode_record(&b).is_some()
            } else {
                decode_entry(&b).is_some()
            };
            assert!(
                !accepted || &b == good,
                "{name} round {round}: accepted damage"
            );
        }
    }
}

#[test]
fn an_old_format_directory_reads_as_misses_and_is_cleaned_up() {
    let tmp = TempDir::new("migrate");
    let dir = tmp.cache_dir();
    // What the one-file-per-entry format left: entry files in shard directories, counters.
    // (Made without a background scan, which would race the removal of the directory.)
    let c = Cache::open(&tmp.url("?reconcile_interval=none")).unwrap();
    c.set("big", &large(4), Expiry::Never).unwrap();
    let backend = FileBackend::new(&dir, &no_scan()).unwrap();
    let entry = fs::read(backend.entry_path(b":1:big")).unwrap();
    drop((c, backend));
    fs::remove_dir_all(&dir).unwrap();
    let old_path = dir.join(format!("{:02x}", 0xab)).join("ab".repeat(16));
    fs::create_dir_all(old_path.parent().unwrap()).unwrap();
    fs::write(&old_path, &entry).unwrap();
    fs::write(dir.join(".polycache-index"), [7u8; 64]).unwrap();
    fs::create_dir_all(dir.join(".locks")).unwrap();
    fs::write(dir.join(".locks").join("ff"), b"").unwrap();

    let c = Cache::open(&tmp.url("")).unwrap();
    assert_eq!(c.get("big").unwrap(), None);
    c.set("new", b"works", Expiry::Never).unwrap();
    assert_eq!(c.get("new").unwrap().as_deref(), Some(&b"works"[..]));
    let backend = FileBackend::new(&dir, &FileOptions::default()).unwrap();
    let (entries, _) = backend.reconcile().unwrap();
    assert_eq!(entries, 1);
    assert!(!old_path.exists(), "the old entry file is cleaned up");
    assert_eq!(c.get("new").unwrap().as_deref(), Some(&b"works"[..]));
}

#[test]
fn expired_entries_are_removed_on_read() {
    let tmp = TempDir::new("expired");
    let c = Cache::open(&tmp.url("")).unwrap();
    c.set("k", b"v", SHORT).unwrap();
    c.set("big", &large(1), SHORT).unwrap();
    assert_eq!(counts(&tmp.cache_dir()).0, 2);
    thread::sleep(SHORT_WAIT);
    assert!(c.get("k").unwrap().is_none());
    assert!(c.get("big").unwrap().is_none());
    assert_eq!(counts(&tmp.cache_dir()), (0, 0));
    assert!(entry_files(&tmp.cache_dir()).is_empty());
}

#[test]
fn keys_never_escape_the_directory() {
    let tmp = TempDir::new("traversal");
    let c = Cache::open(&tmp.url("")).unwrap();
    let evil = [
        "../../etc/passwd",
        "../../../../../../tmp/owned",
        "/etc/passwd",
        "a/../../b",
        "..",
        "\0nul",
        "C:\\Windows\\system32",
        "~/.ssh/id_rsa",
    ];
    for (i, &k) in evil.iter().enumerate() {
        c.set(k, k.as_bytes(), Expiry::Never).unwrap();
        c.set(&format!("{k}{i}"), &large(i as u8), Expiry::Never)
            .unwrap();
    }
    for (i, &k) in evil.iter().enumerate() {
        assert_eq!(c.get(k).unwrap().as_deref(), Some(k.as_bytes()), "{k}");
        assert_eq!(
            c.get(&format!("{k}{i}")).unwrap().as_deref(),
            Some(&large(i as u8)[..])
        );
    }
    // Only the cache directory appeared beside it, and every file is an entry or ours.
    let beside: Vec<_> = fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["cache"]);
    let root = fs::canonicalize(tmp.cache_dir()).unwrap();
    let mut all = Vec::new();
    every_file(&root, &mut all);
    for p in &all {
        assert!(fs::canonicalize(p).unwrap().starts_with(&root));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(
            name.bytes().all(|b| b.is_ascii_hexdigit())
                || name.starts_with('.')
                || name == "packs"
                || p.parent().unwrap().ends_with(".locks"),
            "unexpected file {}",
            p.display()
        );
    }
    assert_eq!(entry_files(&root).len(), evil.len());
}

#[test]
fn unwritable_directory_is_a_clear_io_error() {
    let tmp = TempDir::new("unwritable");
    // A path below a regular file cannot be created, even by root.
    let file = tmp.0.join("plain-file");
    fs::write(&file, b"x").unwrap();
    let url = format!("file://{}/cache", file.display());
    let err = Cache::open(&url).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().contains("plain-file"), "{err}");

    // A read-only directory (meaningful when not running as root, who may write anyway).
    let ro = tmp.0.join("read-only");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o500)).unwrap();
    let probe = fs::write(ro.join("probe"), b"x").is_ok();
    if !probe {
        let err = Cache::open(&format!("file://{}", ro.display())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        assert!(err.to_string().contains("read-only"), "{err}");
    }
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o700)).unwrap();

    // The directory vanishing under an open cache: writes fail with Io (never into the
    // removed files), and reads do not fail. (No background scan: one writing into the
    // directory would race the removal below.)
    let c = Cache::open(&tmp.url("?reconcile_interval=none")).unwrap();
    c.set("k", b"v", Expiry::Never).unwrap();
    fs::remove_dir_all(tmp.cache_dir()).unwrap();
    fs::write(tmp.cache_dir(), b"now a file").unwrap();
    c.get("k").unwrap();
    let err = c.set("k", b"v", Expiry::Never).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().contains("cache"), "{err}");
}

#[test]
fn clear_with_a_prefix_removes_only_that_prefix() {
    let tmp = TempDir::new("clear");
    let url = tmp.url("");
    let a = Cache::builder(&url).key_prefix("a").build().unwrap();
    let b = Cache::builder(&url).key_prefix("b").build().unwrap();
    for i in 0..50 {
        a.set(&format!("k{i}"), b"a", Expiry::Never).unwrap();
        b.set(&format!("k{i}"), b"b", Expiry::Never).unwrap();
    }
    a.set("big", &large(1), Expiry::Never).unwrap();
    b.set("big", &large(2), Expiry::Never).unwrap();
    a.clear().unwrap();
    assert_eq!(counts(&tmp.cache_dir()).0, 51);
    assert_eq!(entry_files(&tmp.cache_dir()).len(), 1);
    for i in 0..50 {
        assert!(a.get(&format!("k{i}")).unwrap().is_none());
    }
    for i in 0..50 {
        assert_eq!(b.get(&format!("k{i}")).unwrap().as_deref(), Some(&b"b"[..]));
    }
    assert_eq!(b.get("big").unwrap().as_deref(), Some(&large(2)[..]));
    let all = Cache::open(&url).unwrap();
    all.clear().unwrap();
    assert!(entry_files(&tmp.cache_dir()).is_empty());
    let backend = FileBackend::new(&tmp.cache_dir(), &FileOptions::default()).unwrap();
    assert_eq!(backend.reconcile().unwrap(), (0, 0));
}

#[test]
fn entry_bound_evicts_expired_first_then_oldest() {
    let tmp = TempDir::new("evict");
    let c = Cache::open(&tmp.url("?max_entries=100")).unwrap();
    for i in 0..20 {
        c.set(&format!("short{i}"), b"v", SHORT).unwrap();
    }
    for i in 0..75 {
        c.set(&format!("old{i}"), b"v", Expiry::Never).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(SHORT_WAIT);
    for i in 0..10 {
        c.set(&format!("new{i}"), b"v", Expiry::Never).unwrap();
    }
    // Over 100: the expired entries went first, and no live entry was needed to reach 90.
    // (A writer that finds another eviction or scan running goes on without waiting, so the
    // bound holds within the 10% the backend promises, not to the entry.)
    let n = counts(&tmp.cache_dir()).0;
    assert!((85..=110).contains(&n), "{n} entries");
    assert!(c.get("old0").unwrap().is_some());
    for i in 0..10 {
        assert!(c.get(&format!("new{i}")).unwrap().is_some());
    }
    // Far over: the oldest go, the newest stay.
    for i in 0..100 {
        c.set(&format!("newer{i}"), b"v", Expiry::Never).unwrap();
    }
    let n = counts(&tmp.cache_dir()).0;
    assert!(n <= 110, "{n} entries");
    assert!(c.get("old0").unwrap().is_none());
    assert!(c.get("newer99").unwrap().is_some());
    assert!(c.backend().evictions() > 0);
}

/// Django's `test_cull`: MAX_ENTRIES 30, CULL_FREQUENCY 3, 49 sets leave exactly 29.
#[test]
fn cull_frequency_culls_like_django() {
    let tmp = TempDir::new("cull");
    let c = Cache::open(&tmp.url("?max_entries=30&cull_frequency=3")).unwrap();
    for i in 1..50 {
        c.set(&format!("cull{i}"), b"value", Expiry::Never).unwrap();
    }
    let present = (1..50)
        .filter(|i| c.has_key(&format!("cull{i}")).unwrap())
        .count();
    assert_eq!(present, 29);
    assert_eq!(counts(&tmp.cache_dir()).0, 29);
    // The oldest went: the last writes are all there.
    for i in 41..50 {
        assert!(c.has_key(&format!("cull{i}")).unwrap(), "cull{i}");
    }
    // Rewriting a present key at the bound is not a new key: nothing is culled.
    let before = c.backend().evictions();
    c.set("cull49", b"again", Expiry::Never).unwrap();
    assert_eq!(c.backend().evictions(), before);
}

/// Django's `test_zero_cull`: CULL_FREQUENCY 0 clears the cache when it is full.
#[test]
fn cull_frequency_zero_clears_like_django() {
    let tmp = TempDir::new("zero-cull");
    let c = Cache::open(&tmp.url("?max_entries=30&cull_frequency=0")).unwrap();
    for i in 1..50 {
        c.set(&format!("cull{i}"), b"value", Expiry::Never).unwrap();
    }
    let present = (1..50)
        .filter(|i| c.has_key(&format!("cull{i}")).unwrap())
        .count();
    assert_eq!(present, 19);
    assert!(c.has_key("cull49").unwrap());
    assert!(!c.has_key("cull30").unwrap());
}

#[test]
fn cull_takes_expired_entries_first() {
    let tmp = TempDir::new("cull-expired");
    let c = Cache::open(&tmp.url("?max_entries=30&cull_frequency=3")).unwrap();
    for i in 0..20 {
        c.set(&format!("old{i}"), b"v", Expiry::Never).unwrap();
    }
    for i in 0..10 {
        c.set(&format!("short{i}"), b"v", SHORT).unwrap();
    }
    thread::sleep(SHORT_WAIT);
    c.set("new", b"v", Expiry::Never).unwrap();
    // 30 present at the new key: 10 culled, all of them the expired ones.
    for i in 0..20 {
        assert!(c.has_key(&format!("old{i}")).unwrap(), "old{i}");
    }
    assert!(c.has_key("new").unwrap());
    assert_eq!(counts(&tmp.cache_dir()).0, 21);
}

#[test]
fn byte_bound_holds_within_ten_percent() {
    let tmp = TempDir::new("bytes");
    let max = 200_000u64;
    let c = Cache::open(&tmp.url(&format!("?max_bytes={max}"))).unwrap();
    for i in 0..1000 {
        let len = if i % 10 == 0 { 5000 } else { 1000 + i % 500 };
        c.set(&format!("k{i}"), &vec![b'x'; len], Expiry::Never)
            .unwrap();
    }
    let (_, bytes) = counts(&tmp.cache_dir());
    assert!(bytes <= max * 11 / 10, "{bytes} bytes");
    assert!(bytes >= max / 2, "{bytes} bytes: evicted far too much");
    let files: u64 = entry_files(&tmp.cache_dir())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(files <= bytes, "large files are counted");
    assert!(c.get("k999").unwrap().is_some());
    let err = c.set("huge", &vec![0; 300_000], Expiry::Never).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge);
}

#[test]
fn counters_are_shared_and_reconcile_cleans_up() {
    let tmp = TempDir::new("reconcile");
    let one = FileBackend::new(&tmp.cache_dir(), &FileOptions::default()).unwrap();
    let two = FileBackend::new(&tmp.cache_dir(), &FileOptions::default()).unwrap();
    for i in 0..300 {
        let b = if i % 2 == 0 { &one } else { &two };
        b.set(format!("k{i}").as_bytes(), b"0123456789", None)
            .unwrap();
    }
    for i in 0..10 {
        one.set(format!("big{i}").as_bytes(), &large(i), None)
            .unwrap();
    }
    // The packs' headers count every process's writes exactly.
    let small: u64 = (0..300)
        .map(|i| (RECORD_HEADER_LEN + format!("k{i}").len() + 10) as u64)
        .sum();
    let big_size = (ENTRY_HEADER_LEN + "big0".len() + large(0).len()) as u64;
    let (entries, bytes) = two.estimate();
    assert_eq!(entries, 310);
    let want = small + 10 * big_size;
    assert_eq!(bytes, want);
    // Large files removed behind the cache's back: the counters drift until a scan.
    for p in entry_files(&tmp.cache_dir()).iter().take(4) {
        fs::remove_file(p).unwrap();
    }
    // An orphan (a valid entry file no index points to) and temporary files.
    let orphan = one.entry_path(b"never-indexed");
    fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    fs::copy(one.entry_path(&entry_key_of(&tmp)), &orphan).unwrap();
    let packs = tmp.cache_dir().join("packs");
    let stale = packs.join(".tmp.1.dead.1");
    let f = fs::File::create(&stale).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    drop(f);
    let fresh = packs.join(".tmp.1.alive.1");
    fs::write(&fresh, b"in progress").unwrap();
    let (entries, bytes) = one.reconcile().unwrap();
    assert_eq!(entries, 306);
    assert_eq!(bytes, want - 4 * big_size);
    assert_eq!(two.estimate(), (entries, bytes));
    assert!(!orphan.exists());
    assert!(!stale.exists());
    assert!(fresh.exists());
    for i in 0..300 {
        assert!(two.get(format!("k{i}").as_bytes()).unwrap().is_some());
    }
}

/// The key of one of the remaining large files (whatever the test removed).
fn entry_key_of(tmp: &TempDir) -> Vec<u8> {
    let files = entry_files(&tmp.cache_dir());
    let bytes = fs::read(&files[0]).unwrap();
    let (_, key, _) = decode_entry(&bytes).unwrap();
    key.to_vec()
}

// --- several processes ----------------------------------------------------------------------

const WORKER_ENV: &str = "POLYCACHE_FILE_WORKER";

/// Runs this test binary again as a worker: `mode` and `arg` go through the environment.
fn spawn_worker(mode: &str, url: &str, id: usize) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_worker",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdout(Stdio::null())
        .env(WORKER_ENV, mode)
        .env("POLYCACHE_FILE_URL", url)
        .env("POLYCACHE_FILE_ID", id.to_string())
        .spawn()
        .unwrap()
}

/// Waits for every child, at most `limit`; each must exit successfully.
fn wait_all(children: Vec<Child>, limit: Duration) {
    let deadline = Instant::now() + limit;
    for mut child in children {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "a worker process failed: {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("a worker process did not finish within {limit:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A small deterministic generator (xorshift), so workers need no crate to be random.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A value that proves itself whole: a length, a seed, and bytes derived from the seed.
fn pattern_value(seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 16);
    v.extend_from_slice(&(len as u64).to_le_bytes());
    v.extend_from_slice(&seed.to_le_bytes());
    let mut r = Rng(seed | 1);
    v.extend((0..len).map(|_| r.next() as u8));
    v
}

fn check_pattern(v: &[u8]) -> Result<(), String> {
    if v.len() < 16 {
        return Err(format!("value of {} bytes", v.len()));
    }
    let len = u64::from_le_bytes(v[..8].try_into().unwrap()) as usize;
    let seed = u64::from_le_bytes(v[8..16].try_into().unwrap());
    if v.len() != len + 16 || pattern_value(seed, len) != v {
        return Err(format!(
            "torn value: {} bytes, header says {}",
            v.len(),
            len + 16
        ));
    }
    Ok(())
}

/// The child side of the multi-process tests; run only by them.
#[test]
#[ignore = "runs only as a child process of the multi-process tests"]
fn child_process_worker() {
    let mode = std::env::var(WORKER_ENV).expect("run by the multi-process tests");
    let url = std::env::var("POLYCACHE_FILE_URL").unwrap();
    let id: u64 = std::env::var("POLYCACHE_FILE_ID").unwrap().parse().unwrap();
    let c = Cache::open(&url).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id + 1).wrapping_mul(0x1234_5678_9abc_def1));
    match mode.as_str() {
        "incr" => {
            for _ in 0..1000 {
                c.incr("counter", 1).unwrap();
            }
        }
        "torn" => {
            for _ in 0..1500 {
                let key = format!("k{}", rng.below(32));
                if rng.below(2) == 0 {
                    let len = rng.below(20_000) as usize;
                    c.set(&key, &pattern_value(rng.next(), len), Expiry::Never)
                        .unwrap();
                } else if let Some(v) = c.get(&key).unwrap() {
                    check_pattern(&v).unwrap();
                }
            }
        }
        "writer" => {
            // Until killed (bounded anyway): rewrite 50 keys with large values.
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until {
                let key = format!("k{}", rng.below(50));
                c.set(&key, &pattern_value(rng.next(), 200_000), Expiry::Never)
                    .unwrap();
            }
        }
        "writer-small" => {
            // Until killed (bounded anyway): rewrite 50 keys with pack-sized values.
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until {
                let key = format!("k{}", rng.below(50));
                let len = 100 + rng.below(1500) as usize;
                c.set(&key, &pattern_value(rng.next(), len), Expiry::Never)
                    .unwrap();
            }
        }
        "fill" => {
            for i in 0..1500 {
                c.set(&format!("w{id}-{i}"), b"some small value", Expiry::Never)
                    .unwrap();
            }
        }
        other => panic!("unknown worker mode {other}"),
    }
}

#[test]
fn incr_from_four_processes_is_exact() {
    let tmp = TempDir::new("mp-incr");
    let url = tmp.url("");
    let c = Cache::open(&url).unwrap();
    c.set("counter", b"0", Expiry::Never).unwrap();
    let children = (0..4).map(|i| spawn_worker("incr", &url, i)).collect();
    wait_all(children, Duration::from_secs(120));
    assert_eq!(c.get("counter").unwrap().unwrap().as_i64(), Some(4000));
}

#[test]
fn four_processes_never_see_a_torn_value() {
    let tmp = TempDir::new("mp-torn");
    let url = tmp.url("");
    let children = (0..4).map(|i| spawn_worker("torn", &url, i)).collect();
    wait_all(children, Duration::from_secs(120));
    let c = Cache::open(&url).unwrap();
    let mut present = 0;
    for i in 0..32 {
        if let Some(v) = c.get(&format!("k{i}")).unwrap() {
            check_pattern(&v).unwrap();
            present += 1;
        }
    }
    assert!(present > 16, "only {present} of 32 keys written");
}

/// A cache of 50 keys `k0`…`k49` holding pattern values of `len` bytes.
fn fifty_keys(tag: &str, len: usize) -> (TempDir, String, Cache) {
    let tmp = TempDir::new(tag);
    let url = tmp.url("");
    let c = Cache::open(&url).unwrap();
    for i in 0..50 {
        c.set(&format!("k{i}"), &pattern_value(i, len), Expiry::Never)
            .unwrap();
    }
    (tmp, url, c)
}

/// Each of the 50 keys holds a whole value; returns how many are longer than `long`.
fn all_whole(c: &Cache, round: usize, long: usize) -> usize {
    (0..50)
        .filter(|i| {
            let v = c.get(&format!("k{i}")).unwrap();
            let v = v.unwrap_or_else(|| panic!("round {round}: k{i} vanished"));
            check_pattern(&v).unwrap();
            v.len() > long
        })
        .count()
}

#[test]
fn a_writer_killed_mid_set_leaves_only_whole_values() {
    let (tmp, url, c) = fifty_keys("mp-kill", 100);
    for round in 0..3 {
        let mut child = spawn_worker("writer", &url, round);
        // Let it get well into its sets (each value is 200 KB), then SIGKILL it.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let temps = entry_files(&tmp.cache_dir())
                .iter()
                .filter_map(|p| fs::read(p).ok())
                .filter(|b| b.len() > 100_000)
                .count();
            if temps >= 5 {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(Duration::from_millis(30 + 20 * round as u64));
        child.kill().unwrap();
        child.wait().unwrap();
        let big = all_whole(&c, round, 1000);
        assert!(
            big >= 5,
            "round {round}: the writer wrote only {big} values"
        );
        for p in entry_files(&tmp.cache_dir()) {
            assert!(
                decode_entry(&fs::read(&p).unwrap()).is_some(),
                "{}",
                p.display()
            );
        }
    }
}

#[test]
fn a_writer_killed_mid_set_of_small_values_leaves_only_whole_values() {
    let (_tmp, url, c) = fifty_keys("mp-kill-small", 10);
    for round in 0..4 {
        let mut child = spawn_worker("writer-small", &url, round);
        // Let it rewrite the keys many times (packs get compacted meanwhile), then kill it.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            let rewritten = (0..50)
                .filter(|i| {
                    c.get(&format!("k{i}"))
                        .unwrap()
                        .is_some_and(|v| v.len() > 100)
                })
                .count();
            if rewritten >= 40 {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(Duration::from_millis(50 + 37 * round as u64));
        child.kill().unwrap();
        child.wait().unwrap();
        let rewritten = all_whole(&c, round, 100);
        assert!(rewritten > 0, "round {round}: the writer wrote nothing");
        // Another process sees whole values too, and can write after the kill.
        let fresh = Cache::open(&url).unwrap();
        all_whole(&fresh, round, 100);
        fresh.set("after", b"kill", Expiry::Never).unwrap();
    }
}

#[test]
fn entry_bound_holds_within_ten_percent_across_four_processes() {
    let tmp = TempDir::new("mp-bound");
    let max = 1000usize;
    let url = tmp.url(&format!("?max_entries={max}"));
    let children = (0..4).map(|i| spawn_worker("fill", &url, i)).collect();
    wait_all(children, Duration::from_secs(180));
    let n = counts(&tmp.cache_dir()).0 as usize;
    assert!(n <= max * 11 / 10, "{n} entries");
    assert!(n >= max / 2, "{n} entries: evicted far too much");
    // The survivors are the newest writes. However the processes interleaved, each wrote
    // 1,200 entries after its 300th, so its first 300 are never among the newest 1,100.
    let c = Cache::open(&url).unwrap();
    for id in 0..4 {
        for i in 0..300 {
            let key = format!("w{id}-{i}");
            assert!(
                c.get(&key).unwrap().is_none(),
                "{key} outlived newer entries"
            );
        }
    }
    let last: usize = (0..4)
        .map(|id| usize::from(c.get(&format!("w{id}-1499")).unwrap().is_some()))
        .sum();
    assert!(last >= 1, "the newest write of all survived");
}

#[test]
fn dropping_the_cache_stops_its_background_scan() {
    // A scan runs at every open here (reconcile_interval of 1 ms) over a few thousand
    // entries; once the cache is dropped nothing writes into the directory any more, so it
    // can be removed at once.
    for round in 0..10 {
        let tmp = TempDir::new("scan-stop");
        let dir = tmp.cache_dir();
        let filler = FileBackend::new(&dir, &no_scan()).unwrap();
        for i in 0..3000 {
            filler
                .set(format!("k{i}").as_bytes(), &[7u8; 200], None)
                .unwrap();
        }
        filler.set(b"big", &large(1), None).unwrap();
        drop(filler);
        let scanned = FileOptions::default().reconcile_interval(Duration::from_millis(1));
        let backend = FileBackend::new(&dir, &scanned).unwrap();
        drop(backend);
        if let Err(e) = fs::remove_dir_all(&dir) {
            panic!("round {round}: the directory could not be removed after the drop: {e}");
        }
    }
}
