//! `file:///dir`: a directory of entry files that several processes may share.
//!
//! Layout of a cache directory (see `docs/backends/file.md`):
//!
//! ```text
//! dir/.polycache-index    shared counters: entries, bytes, time of the last full scan
//! dir/.locks/00 … ff      one advisory lock file per shard, plus `evict`
//! dir/ab/<32 hex>         one entry file per key, named by the xxh3-128 hash of the full key;
//!                         `ab` is the hash's first byte (256 shard directories)
//! dir/ab/.tmp.*           a write in progress (renamed over the entry when complete)
//! ```
//!
//! An entry file is a 40-byte header, then the key, then the value. All numbers little-endian:
//!
//! ```text
//!  0  magic "PCFE"        4  format version u16   6  reserved u16 (0)
//!  8  expires at, unix ms u64 (0 = never)          16 written at, unix ms u64
//! 24  key length u32      28  crc32 of every other byte of the file
//! 32  value length u64    40  key, then value
//! ```
//!
//! A key never becomes a path, so no key can name a file outside the directory; the stored
//! key detects hash collisions. Readers take no lock: a writer renames a complete temporary
//! file over the entry, so a reader sees the old file or the new one, never a mix. Writers of
//! one shard serialize on the shard's lock (a mutex in the process, `flock` across
//! processes), which makes `incr`, `add` and `touch` atomic everywhere and keeps the size
//! counters exact between processes that share the directory.

use super::{apply_delta, not_found, Backend};
use crate::error::{Error, ErrorKind, Result};
use crate::location::{Location, Options};
use crate::value::Value;
use std::collections::VecDeque;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt as _, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The byte bound of a `file://` cache when neither `max_entries` nor `max_bytes` is given.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// How often (at most) some process sharing the directory rescans it to correct the counters.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(300);

const MAGIC: [u8; 4] = *b"PCFE";
const FORMAT_VERSION: u16 = 1;
/// Bytes before the key in an entry file.
pub const HEADER_LEN: usize = 40;
const SHARDS: usize = 256;
/// What a `get` reads in its first `read`: most entries fit, so a hit costs one `read`.
const FIRST_READ: usize = 4096;

const INDEX_FILE: &str = ".polycache-index";
const INDEX_MAGIC: [u8; 4] = *b"PCFI";
const INDEX_LEN: usize = 64;
const LOCK_DIR: &str = ".locks";
const EVICT_LOCK: &str = "evict";
const TEMP_PREFIX: &str = ".tmp.";
/// A temporary file this old is left over from a killed writer; scans remove it.
const STALE_TEMP: Duration = Duration::from_secs(600);
/// Eviction stops at this fraction of the bound, so that it runs in batches.
const LOW_WATER: f64 = 0.9;
/// Over the bound by this factor, a writer waits for a running eviction instead of going on.
const HIGH_WATER: f64 = 1.04;
/// Candidates for eviction kept from one scan (the oldest ones).
const MAX_CANDIDATES: usize = 200_000;

/// The settings of a `file://` cache.
///
/// ```
/// use polycache::backend::file::{FileBackend, FileOptions};
/// let dir = std::env::temp_dir().join(format!("polycache-doc-{}", std::process::id()));
/// let backend = FileBackend::new(&dir, &FileOptions::default().max_entries(10_000)).unwrap();
/// # drop(backend); std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct FileOptions {
    /// At most this many entries.
    pub max_entries: Option<u64>,
    /// At most this many bytes of entry files (header, key and value; disk blocks not counted).
    /// [`DEFAULT_MAX_BYTES`] when neither bound is given.
    pub max_bytes: Option<u64>,
    /// `fsync` each entry and its directory before a write returns (default: off).
    pub fsync: bool,
    /// How often some process rescans the whole directory to correct the shared counters.
    pub reconcile_interval: Duration,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            max_entries: None,
            max_bytes: None,
            fsync: false,
            reconcile_interval: DEFAULT_RECONCILE_INTERVAL,
        }
    }
}

impl FileOptions {
    /// Bounds the cache by entry count.
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = Some(n);
        self
    }
    /// Bounds the cache by the bytes of its entry files.
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = Some(n);
        self
    }
    /// Syncs every write to disk before it returns.
    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }
    /// How often the directory is rescanned to correct the shared counters.
    pub fn reconcile_interval(mut self, every: Duration) -> Self {
        self.reconcile_interval = every;
        self
    }
}

/// The backend behind `file:///absolute/dir`.
///
/// One file per entry in 256 shard directories, written to a temporary file and renamed into
/// place; reads take no lock. The size bound is kept with counters shared through a small
/// index file rather than by listing the directory on each write; a full scan corrects them
/// at open and every `reconcile_interval`, in a background thread. Over the bound, a writer
/// evicts expired entries first, then the oldest, down to 90% of the bound.
///
/// `Send + Sync`; cloning shares the open directory. Several processes (and several
/// `FileBackend`s of one process) may use the same directory at once. Unix only.
#[derive(Clone)]
pub struct FileBackend {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// `root` as text, for building entry paths in one allocation.
    root_str: String,
    max_entries: Option<u64>,
    max_bytes: Option<u64>,
    fsync: bool,
    reconcile_interval_ms: u64,
    /// A `fchmod` after each create, for a umask that strips the owner's bits.
    fix_modes: bool,
    /// Writes between two updates of the shared counters.
    flush_every: u32,
    locks: Box<[Mutex<Option<LockFile>>]>,
    index: Mutex<Option<LockFile>>,
    /// The shared counters as last read, and this process's changes not yet added to them.
    shared_entries: AtomicI64,
    shared_bytes: AtomicI64,
    pending_entries: AtomicI64,
    pending_bytes: AtomicI64,
    pending_writes: AtomicU32,
    evict: Mutex<EvictState>,
    evictions: AtomicU64,
}

#[derive(Default)]
struct EvictState {
    lock_file: Option<LockFile>,
    /// Entries seen by the last scan, expired first, then oldest first.
    candidates: VecDeque<Candidate>,
}

struct Candidate {
    hash: u128,
    written_at: u64,
    expires_at: u64,
}

#[derive(Clone, Copy)]
struct Header {
    expires_at: u64,
    written_at: u64,
    key_len: usize,
    value_len: usize,
}

impl Header {
    fn total(&self) -> usize {
        HEADER_LEN + self.key_len + self.value_len
    }
    fn expired(&self, now: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now
    }
}

/// Parses the fixed header; `None` for anything that is not a version-1 entry.
fn parse_header(buf: &[u8]) -> Option<Header> {
    if buf.len() < HEADER_LEN || buf[0..4] != MAGIC {
        return None;
    }
    let u16_at = |i: usize| u16::from_le_bytes([buf[i], buf[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
    if u16_at(4) != FORMAT_VERSION || u16_at(6) != 0 {
        return None;
    }
    let key_len = usize::try_from(u32_at(24)).ok()?;
    let value_len = usize::try_from(u64_at(32)).ok()?;
    key_len.checked_add(value_len)?.checked_add(HEADER_LEN)?;
    Some(Header {
        expires_at: u64_at(8),
        written_at: u64_at(16),
        key_len,
        value_len,
    })
}

fn checksum(file: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&file[..28]);
    h.update(&file[32..]);
    h.finalize()
}

/// The bytes of an entry file.
fn encode(key: &[u8], value: &[u8], expires_at: u64, written_at: u64) -> Result<Vec<u8>> {
    let key_len = u32::try_from(key.len())
        .map_err(|_| Error::new(ErrorKind::InvalidKey, "key is too long for a file:// cache"))?;
    let mut buf = Vec::with_capacity(HEADER_LEN + key.len() + value.len());
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes());
    buf.extend_from_slice(&expires_at.to_le_bytes());
    buf.extend_from_slice(&written_at.to_le_bytes());
    buf.extend_from_slice(&key_len.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    let crc = checksum(&buf);
    buf[28..32].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// Decodes a whole entry file: header, key and value, or `None` when it is not one.
pub fn decode_entry(file: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let h = parse_header(file)?;
    if file.len() != h.total() {
        return None;
    }
    let crc = u32::from_le_bytes(file[28..32].try_into().expect("4 bytes"));
    if checksum(file) != crc {
        return None;
    }
    let key = &file[HEADER_LEN..HEADER_LEN + h.key_len];
    Some((h.expires_at, key, &file[HEADER_LEN + h.key_len..]))
}

thread_local! {
    /// The buffer of a `get`'s first read, reused so that a hit allocates only its value.
    static READ_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; FIRST_READ].into_boxed_slice());
}

/// What reading an entry file found.
enum Load {
    Missing,
    /// Truncated, corrupt or foreign: the caller removes it (the handle identifies the inode).
    Bad(File),
    Found(Loaded),
}

struct Loaded {
    header: Header,
    /// The whole file.
    buf: Vec<u8>,
}

impl Loaded {
    fn key(&self) -> &[u8] {
        &self.buf[HEADER_LEN..HEADER_LEN + self.header.key_len]
    }
    fn value(&self) -> &[u8] {
        &self.buf[HEADER_LEN + self.header.key_len..]
    }
    fn into_value(mut self) -> Value {
        let start = HEADER_LEN + self.header.key_len;
        if self.buf.len() - start <= 256 {
            Value::from(&self.buf[start..])
        } else {
            self.buf.drain(..start);
            Value::from(self.buf)
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn deadline(ttl: Option<Duration>, now: u64) -> u64 {
    match ttl {
        None => 0,
        Some(d) => {
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
            now.saturating_add(ms)
        }
    }
}

fn hash_key(key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key)
}

fn shard_of(hash: u128) -> usize {
    (hash >> 120) as usize
}

fn io_error(what: &str, path: &Path, err: io::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("file:// cache: cannot {what} {}", path.display()),
    )
    .with_source(err)
}

/// `errno` values (the same on Linux, the BSDs and macOS) that std names only from 1.83 on.
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;

/// "No such file", or a path component that is not a directory (`ENOTDIR`): no entry.
fn is_absent(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(ENOTDIR)
}

fn is_entry_name(name: &[u8]) -> bool {
    name.len() == 32
        && name
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

fn parse_hex(name: &[u8]) -> Option<u128> {
    u128::from_str_radix(std::str::from_utf8(name).ok()?, 16).ok()
}

/// Unique among the processes sharing a directory: pid, a per-process nonce, a sequence.
fn temp_name() -> String {
    static NONCE: OnceLock<u64> = OnceLock::new();
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nonce = *NONCE.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = format!("{}:{t}:{:p}", std::process::id(), &SEQ);
        xxhash_rust::xxh3::xxh3_64(seed.as_bytes())
    });
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{}.{nonce:016x}.{seq}", std::process::id())
}

fn flock(file: &File) -> io::Result<()> {
    fs4::FileExt::lock(file)
}

fn funlock(file: &File) {
    let _ = fs4::FileExt::unlock(file);
}

/// An open lock file and the process that opened it.
///
/// `flock` locks belong to an open file description, which a forked child shares with its
/// parent: both would "hold" the same lock at once. So a process that finds a handle opened
/// by another pid (its parent, before a fork) opens the file again for itself.
struct LockFile {
    pid: u32,
    file: File,
}

/// The lock file in `slot`, opened (again) by this process when needed.
fn own_lock_file(
    slot: &mut Option<LockFile>,
    open: impl FnOnce() -> Result<File>,
) -> Result<&File> {
    let pid = std::process::id();
    if slot.as_ref().map_or(true, |l| l.pid != pid) {
        *slot = Some(LockFile { pid, file: open()? });
    }
    Ok(&slot.as_ref().expect("set above").file)
}

/// Holds one shard's lock: the process mutex and the `flock` on the shard's lock file.
struct ShardGuard<'a> {
    guard: MutexGuard<'a, Option<LockFile>>,
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.guard.as_ref() {
            funlock(&l.file);
        }
    }
}

/// Holds the eviction lock of the directory (process mutex and `flock`).
struct EvictGuard<'a> {
    state: MutexGuard<'a, EvictState>,
}

impl Drop for EvictGuard<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.state.lock_file.as_ref() {
            funlock(&l.file);
        }
    }
}

/// The change one operation made to the size counters.
#[derive(Default, Clone, Copy)]
struct Delta {
    entries: i64,
    bytes: i64,
}

impl Delta {
    fn replaced(old: Option<u64>, new: usize) -> Delta {
        Delta {
            entries: i64::from(old.is_none()),
            bytes: new as i64 - old.map_or(0, |n| n as i64),
        }
    }
    fn removed(bytes: u64) -> Delta {
        Delta {
            entries: -1,
            bytes: -(bytes as i64),
        }
    }
}

/// The counters of a full scan.
#[derive(Default)]
struct ScanTotals {
    entries: i64,
    bytes: i64,
}

impl FileBackend {
    /// Opens `file:///absolute/dir?max_entries=N&max_bytes=N&fsync=false&reconcile_interval=S`.
    pub fn open(location: &Location, options: &mut Options) -> Result<FileBackend> {
        match location.hosts() {
            [] => {}
            [h] if h.eq_ignore_ascii_case("localhost") => {}
            _ => {
                return Err(Error::config(format!(
                    "file:// takes an absolute directory path (file:///var/cache/app), not a \
                     host or relative path: {}",
                    location.redacted()
                )))
            }
        }
        let path = location.path();
        if path.is_empty() || !path.starts_with('/') {
            return Err(Error::config(format!(
                "file:// needs an absolute directory path such as file:///var/cache/app: {}",
                location.redacted()
            )));
        }
        if Path::new(path).parent().is_none() {
            return Err(Error::config(format!(
                "file:// refuses the filesystem root as a cache directory: {}",
                location.redacted()
            )));
        }
        let mut opts = FileOptions {
            max_entries: options.positive_u64("max_entries")?,
            max_bytes: options.positive_u64("max_bytes")?,
            ..FileOptions::default()
        };
        if let Some(v) = options.bool("fsync")? {
            opts.fsync = v;
        }
        if let Some(v) = options.seconds("reconcile_interval")? {
            opts.reconcile_interval = v.unwrap_or(Duration::MAX);
        }
        FileBackend::new(Path::new(path), &opts)
    }

    /// Opens (creating it if needed, mode `0700`) the cache directory `dir`.
    ///
    /// Fails with [`ErrorKind::Io`] when the directory cannot be created or written.
    pub fn new(dir: &Path, options: &FileOptions) -> Result<FileBackend> {
        if !dir.is_absolute() {
            return Err(Error::config(format!(
                "file:// needs an absolute directory path, not {}",
                dir.display()
            )));
        }
        let (max_entries, max_bytes) = match (options.max_entries, options.max_bytes) {
            (None, None) => (None, Some(DEFAULT_MAX_BYTES)),
            (Some(0), _) | (_, Some(0)) => {
                return Err(Error::config("file:// bounds must be positive"))
            }
            bounds => bounds,
        };
        let Some(root_str) = dir.to_str().map(|s| s.trim_end_matches('/').to_owned()) else {
            return Err(Error::config(format!(
                "file:// needs a UTF-8 directory path, not {}",
                dir.display()
            )));
        };
        let root = dir.to_path_buf();
        if !root.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&root)
                .map_err(|e| io_error("create the cache directory", &root, e))?;
            fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
                .map_err(|e| io_error("set the mode of", &root, e))?;
        }
        let fix_modes = probe_umask(&root)?;
        make_dir(&root.join(LOCK_DIR), fix_modes)?;
        let index_path = root.join(INDEX_FILE);
        let index = open_lock_file(&index_path)
            .map_err(|e| io_error("open the index file", &index_path, e))?;
        // Counters are shared every `flush_every` writes: small bounds flush often, so that
        // the processes' unshared changes stay a small part of the bound.
        let flush_every = max_entries.map_or(64, |n| (n / 256).clamp(1, 64)) as u32;
        let backend = FileBackend {
            inner: Arc::new(Inner {
                root,
                root_str,
                max_entries,
                max_bytes,
                fsync: options.fsync,
                reconcile_interval_ms: u64::try_from(options.reconcile_interval.as_millis())
                    .unwrap_or(u64::MAX),
                fix_modes,
                flush_every,
                locks: (0..SHARDS).map(|_| Mutex::new(None)).collect(),
                index: Mutex::new(Some(LockFile {
                    pid: std::process::id(),
                    file: index,
                })),
                shared_entries: AtomicI64::new(0),
                shared_bytes: AtomicI64::new(0),
                pending_entries: AtomicI64::new(0),
                pending_bytes: AtomicI64::new(0),
                pending_writes: AtomicU32::new(0),
                evict: Mutex::new(EvictState::default()),
                evictions: AtomicU64::new(0),
            }),
        };
        if backend.inner.sync_index()? {
            backend.spawn_reconcile();
        }
        Ok(backend)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// The entry count and bytes as the shared counters (plus this process's unshared
    /// changes) estimate them.
    pub fn estimate(&self) -> (u64, u64) {
        let (e, b) = self.inner.estimate();
        (e.max(0) as u64, b.max(0) as u64)
    }

    /// Scans the whole directory now: removes expired entries, corrupt files and stale
    /// temporary files, sets the shared counters to what it found, then evicts if over the
    /// bound. Returns the entries and bytes found. Runs by itself in the background at open
    /// and every `reconcile_interval`.
    pub fn reconcile(&self) -> Result<(u64, u64)> {
        let mut guard = self.inner.lock_evict(true)?.expect("blocking lock");
        let totals = self.inner.scan(&mut guard.state)?;
        self.inner.evict_locked(&mut guard.state)?;
        Ok((totals.entries.max(0) as u64, totals.bytes.max(0) as u64))
    }

    /// The path of the file that holds `key` (whether or not it exists).
    pub fn entry_path(&self, key: &[u8]) -> PathBuf {
        self.inner.entry_path(hash_key(key))
    }

    fn spawn_reconcile(&self) {
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("polycache-file-scan".into())
            .spawn(move || {
                if let Ok(Some(mut guard)) = inner.lock_evict(false) {
                    let result = inner
                        .scan(&mut guard.state)
                        .and_then(|_| inner.evict_locked(&mut guard.state));
                    if let Err(e) = result {
                        log::warn!(
                            "polycache: file:// scan of {} failed: {e}",
                            inner.root.display()
                        );
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("polycache: cannot start the file:// scan thread: {e}");
        }
    }

    /// Counts a change, shares the counters every few writes, and evicts when over a bound.
    /// Called with no shard lock held.
    fn after_write(&self, delta: Delta) {
        let inner = &self.inner;
        if delta.entries != 0 {
            inner
                .pending_entries
                .fetch_add(delta.entries, Ordering::Relaxed);
        }
        if delta.bytes != 0 {
            inner
                .pending_bytes
                .fetch_add(delta.bytes, Ordering::Relaxed);
        }
        let writes = inner.pending_writes.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes_due = inner.max_bytes.is_some_and(|max| {
            inner.pending_bytes.load(Ordering::Relaxed).unsigned_abs() > max / 256
        });
        if writes >= inner.flush_every || bytes_due {
            match inner.sync_index() {
                Ok(true) => self.spawn_reconcile(),
                Ok(false) => {}
                Err(e) => log::warn!("polycache: file:// counters not shared: {e}"),
            }
        }
        let (entries, bytes) = inner.estimate();
        if inner.over(entries, bytes, 1.0) {
            let wait = inner.over(entries, bytes, HIGH_WATER);
            match inner.lock_evict(wait) {
                Ok(Some(mut guard)) => {
                    if let Err(e) = inner.evict_locked(&mut guard.state) {
                        log::warn!("polycache: file:// eviction failed: {e}");
                    }
                }
                Ok(None) => {}
                Err(e) => log::warn!("polycache: file:// eviction lock failed: {e}"),
            }
        }
    }
}

/// True when a file created with mode 0600 does not get it (a umask that strips owner bits).
fn probe_umask(root: &Path) -> Result<bool> {
    let probe = root.join(temp_name());
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .map_err(|e| io_error("write in the cache directory", root, e))?;
    let mode = file.metadata().map(|m| m.mode() & 0o777);
    let _ = fs::remove_file(&probe);
    Ok(mode.map_err(|e| io_error("inspect a file in", root, e))? != 0o600)
}

fn make_dir(path: &Path, fix_modes: bool) -> Result<()> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {
            if fix_modes {
                fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                    .map_err(|e| io_error("set the mode of", path, e))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_error("create the directory", path, e)),
    }
}

impl Inner {
    fn shard_dir(&self, shard: usize) -> PathBuf {
        self.root.join(format!("{shard:02x}"))
    }

    fn entry_path(&self, hash: u128) -> PathBuf {
        use std::fmt::Write as _;
        // One allocation: `{root}/{shard}/{hash}`.
        let mut p = String::with_capacity(self.root_str.len() + 36);
        p.push_str(&self.root_str);
        let _ = write!(p, "/{:02x}/{hash:032x}", shard_of(hash));
        PathBuf::from(p)
    }

    fn estimate(&self) -> (i64, i64) {
        (
            self.shared_entries.load(Ordering::Relaxed)
                + self.pending_entries.load(Ordering::Relaxed),
            self.shared_bytes.load(Ordering::Relaxed) + self.pending_bytes.load(Ordering::Relaxed),
        )
    }

    fn over(&self, entries: i64, bytes: i64, factor: f64) -> bool {
        self.max_entries
            .is_some_and(|m| entries as f64 > m as f64 * factor)
            || self
                .max_bytes
                .is_some_and(|m| bytes as f64 > m as f64 * factor)
    }

    fn lock_shard(&self, shard: usize) -> Result<ShardGuard<'_>> {
        let mut guard = self.locks[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let file = own_lock_file(&mut guard, || {
            let path = self.root.join(LOCK_DIR).join(format!("{shard:02x}"));
            match open_lock_file(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    make_dir(&self.root.join(LOCK_DIR), self.fix_modes)?;
                    open_lock_file(&path)
                }
                other => other,
            }
            .map_err(|e| io_error("open the lock file", &path, e))
        })?;
        flock(file).map_err(|e| io_error("lock", &self.root.join(LOCK_DIR), e))?;
        Ok(ShardGuard { guard })
    }

    /// The eviction lock; `None` when `wait` is false and someone else holds it.
    fn lock_evict(&self, wait: bool) -> Result<Option<EvictGuard<'_>>> {
        let mut state = if wait {
            self.evict.lock().unwrap_or_else(PoisonError::into_inner)
        } else {
            match self.evict.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return Ok(None),
            }
        };
        let file = own_lock_file(&mut state.lock_file, || {
            let path = self.root.join(LOCK_DIR).join(EVICT_LOCK);
            open_lock_file(&path).map_err(|e| io_error("open the lock file", &path, e))
        })?;
        if wait {
            flock(file).map_err(|e| io_error("lock", &self.root.join(LOCK_DIR), e))?;
        } else {
            match fs4::FileExt::try_lock(file) {
                Ok(()) => {}
                Err(fs4::TryLockError::WouldBlock) => return Ok(None),
                Err(fs4::TryLockError::Error(e)) => {
                    return Err(io_error("lock", &self.root.join(LOCK_DIR), e))
                }
            }
        }
        Ok(Some(EvictGuard { state }))
    }

    /// Adds this process's pending changes to the shared counters and reads them back.
    /// True when a reconciling scan is due (and this caller has claimed it).
    fn sync_index(&self) -> Result<bool> {
        self.pending_writes.store(0, Ordering::Relaxed);
        let de = self.pending_entries.swap(0, Ordering::Relaxed);
        let db = self.pending_bytes.swap(0, Ordering::Relaxed);
        let result = self.update_index(|entries, bytes, last_scan, now| {
            *entries = entries.saturating_add(de).max(0);
            *bytes = bytes.saturating_add(db).max(0);
            let due = now.saturating_sub(*last_scan) >= self.reconcile_interval_ms;
            if due {
                *last_scan = now;
            }
            due
        });
        if result.is_err() {
            self.pending_entries.fetch_add(de, Ordering::Relaxed);
            self.pending_bytes.fetch_add(db, Ordering::Relaxed);
        }
        result
    }

    /// Runs `f(entries, bytes, last_scan_ms, now_ms)` on the index under its lock.
    fn update_index<R>(&self, f: impl FnOnce(&mut i64, &mut i64, &mut u64, u64) -> R) -> Result<R> {
        let mut slot = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        let path = self.root.join(INDEX_FILE);
        let file = own_lock_file(&mut slot, || {
            open_lock_file(&path).map_err(|e| io_error("open the index file", &path, e))
        })?;
        flock(file).map_err(|e| io_error("lock", &path, e))?;
        let result = (|| {
            let mut buf = [0u8; INDEX_LEN];
            let n = file
                .read_at(&mut buf, 0)
                .map_err(|e| io_error("read", &path, e))?;
            let (mut entries, mut bytes, mut last_scan) = if n == INDEX_LEN
                && buf[0..4] == INDEX_MAGIC
                && buf[4..6] == FORMAT_VERSION.to_le_bytes()
            {
                let i64_at = |i: usize| i64::from_le_bytes(buf[i..i + 8].try_into().expect("8"));
                (i64_at(8), i64_at(16), i64_at(24) as u64)
            } else {
                // New or unreadable: start from zero; the scan it makes due fixes the counts.
                (0, 0, 0)
            };
            let r = f(&mut entries, &mut bytes, &mut last_scan, now_ms());
            let mut out = [0u8; INDEX_LEN];
            out[0..4].copy_from_slice(&INDEX_MAGIC);
            out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
            out[8..16].copy_from_slice(&entries.to_le_bytes());
            out[16..24].copy_from_slice(&bytes.to_le_bytes());
            out[24..32].copy_from_slice(&last_scan.to_le_bytes());
            file.write_all_at(&out, 0)
                .map_err(|e| io_error("write", &path, e))?;
            self.shared_entries.store(entries, Ordering::Relaxed);
            self.shared_bytes.store(bytes, Ordering::Relaxed);
            Ok(r)
        })();
        funlock(file);
        result
    }

    /// Reads the entry file at `path`. I/O errors other than "not there" are errors.
    fn load(&self, path: &Path) -> Result<Load> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if is_absent(&e) => return Ok(Load::Missing),
            Err(e) => return Err(io_error("open", path, e)),
        };
        self.read_entry(file, path)
    }

    /// Reads the entry file `file`, opened from `path`, from its current position (the start).
    fn read_entry(&self, mut file: File, path: &Path) -> Result<Load> {
        let mut buf = vec![0u8; FIRST_READ];
        let mut n = 0;
        // One `read` for a small entry; more only for a large one (or a short read).
        loop {
            let got = match file.read(&mut buf[n..]) {
                Ok(g) => g,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A directory where an entry belongs: foreign, not an I/O failure.
                Err(e) if e.raw_os_error() == Some(EISDIR) => return Ok(Load::Bad(file)),
                Err(e) => return Err(io_error("read", path, e)),
            };
            n += got;
            if got == 0 {
                break;
            }
            if n < HEADER_LEN {
                continue;
            }
            let Some(header) = parse_header(&buf[..n]) else {
                return Ok(Load::Bad(file));
            };
            let total = header.total();
            if n == total {
                buf.truncate(n);
                return self.verified(file, header, buf);
            }
            if n > total {
                return Ok(Load::Bad(file));
            }
            if buf.len() < total {
                // Size the buffer from the file, never from the header alone.
                let size = file
                    .metadata()
                    .map_err(|e| io_error("inspect", path, e))?
                    .len();
                if size != total as u64 {
                    return Ok(Load::Bad(file));
                }
                buf.resize(total, 0);
            }
        }
        Ok(Load::Bad(file))
    }

    fn verified(&self, file: File, header: Header, buf: Vec<u8>) -> Result<Load> {
        let crc = u32::from_le_bytes(buf[28..32].try_into().expect("4 bytes"));
        if checksum(&buf) != crc {
            return Ok(Load::Bad(file));
        }
        Ok(Load::Found(Loaded { header, buf }))
    }

    /// Removes `path` if it is still the file `file` was opened from. Returns its size.
    fn remove_same(&self, path: &Path, file: &File) -> Option<u64> {
        let ours = file.metadata().ok()?;
        let theirs = fs::symlink_metadata(path).ok()?;
        if ours.ino() == theirs.ino() && ours.dev() == theirs.dev() && fs::remove_file(path).is_ok()
        {
            return Some(theirs.len());
        }
        None
    }

    /// Removes `path` if it still holds the entry written at `written_at`, expiring at
    /// `expires_at`. Call with the shard lock held. Returns its size.
    fn remove_if_unchanged(&self, path: &Path, written_at: u64, expires_at: u64) -> Option<u64> {
        match self.load(path).ok()? {
            Load::Found(e)
                if e.header.written_at == written_at && e.header.expires_at == expires_at =>
            {
                fs::remove_file(path).ok()?;
                Some(e.buf.len() as u64)
            }
            Load::Bad(file) => self.remove_same(path, &file),
            _ => None,
        }
    }

    /// Writes `bytes` as the entry at `path` (temporary file, then rename). Call with the
    /// shard lock held. Returns the size of the entry it replaced, if any.
    fn write_entry(&self, shard: usize, path: &Path, bytes: &[u8]) -> Result<Option<u64>> {
        let dir = path.parent().expect("entry paths have a directory");
        let mut tmp = dir.join(temp_name());
        let mut file = loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(f) => break f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    make_dir(&self.shard_dir(shard), self.fix_modes)?;
                    tmp = dir.join(temp_name());
                    let f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&tmp)
                        .map_err(|e| io_error("create", &tmp, e))?;
                    break f;
                }
                // A name left by a killed process whose pid came back: take the next one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tmp = dir.join(temp_name()),
                Err(e) => return Err(io_error("create", &tmp, e)),
            }
        };
        let written = (|| {
            if self.fix_modes {
                file.set_permissions(fs::Permissions::from_mode(0o600))?;
            }
            file.write_all(bytes)?;
            if self.fsync {
                file.sync_data()?;
            }
            Ok(())
        })();
        drop(file);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("write", &tmp, e));
        }
        let old = fs::symlink_metadata(path).ok().map(|m| m.len());
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("rename into place", path, e));
        }
        if self.fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("sync", dir, e))?;
        }
        Ok(old)
    }

    /// Writes an entry under the shard lock the caller holds; returns the counter change.
    fn put(
        &self,
        shard: usize,
        path: &Path,
        key: &[u8],
        value: &[u8],
        expires_at: u64,
        now: u64,
    ) -> Result<Delta> {
        let bytes = encode(key, value, expires_at, now)?;
        let old = self.write_entry(shard, path, &bytes)?;
        Ok(Delta::replaced(old, bytes.len()))
    }

    fn check_size(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let size = (HEADER_LEN + key.len()) as u64 + value.len() as u64;
        match self.max_bytes {
            Some(max) if size > max => Err(Error::new(
                ErrorKind::ValueTooLarge,
                format!(
                    "value of {} bytes is too large for this file:// cache (max_bytes={max})",
                    value.len()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Reads the live entry for `key` under the shard lock the caller holds, removing an
    /// expired or corrupt file. `Ok(None)` when there is none.
    fn load_live(&self, path: &Path, key: &[u8], now: u64) -> Result<(Option<Loaded>, Delta)> {
        match self.load(path)? {
            Load::Missing => Ok((None, Delta::default())),
            Load::Bad(file) => Ok((
                None,
                self.remove_same(path, &file)
                    .map_or_else(Delta::default, Delta::removed),
            )),
            Load::Found(e) if e.key() != key => Ok((None, Delta::default())),
            Load::Found(e) if e.header.expired(now) => {
                let delta = match fs::remove_file(path) {
                    Ok(()) => Delta::removed(e.buf.len() as u64),
                    Err(_) => Delta::default(),
                };
                Ok((None, delta))
            }
            Load::Found(e) => Ok((Some(e), Delta::default())),
        }
    }

    /// Removes a bad or expired file found by a lock-free read, after checking under the
    /// shard lock that it is still the same file.
    fn discard(&self, shard: usize, path: &Path, found: Discard) -> Delta {
        let Ok(_guard) = self.lock_shard(shard) else {
            return Delta::default();
        };
        let removed = match found {
            Discard::Bad(file) => self.remove_same(path, &file),
            Discard::Expired(h) => self.remove_if_unchanged(path, h.written_at, h.expires_at),
        };
        removed.map_or_else(Delta::default, Delta::removed)
    }

    /// Lists one shard: `(hash, file name)` of each entry file, and removes stale temps.
    fn list_shard(&self, shard: usize) -> Result<Vec<u128>> {
        let dir = self.shard_dir(shard);
        let entries = match fs::read_dir(&dir) {
            Ok(it) => it,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("list", &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &dir, e))?;
            let name = entry.file_name();
            let name = name.as_encoded_bytes();
            if is_entry_name(name) {
                if let Some(h) = parse_hex(name) {
                    out.push(h);
                }
            } else if name.starts_with(TEMP_PREFIX.as_bytes()) {
                let stale = entry
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_TEMP);
                if stale {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(out)
    }

    /// Scans every shard: removes expired and corrupt files, sets the shared counters to
    /// what is left, and refills the eviction candidates (oldest first). Holds the
    /// eviction lock (the caller's `state`).
    fn scan(&self, state: &mut EvictState) -> Result<ScanTotals> {
        // Changes made before the scan are in what it counts.
        self.pending_entries.store(0, Ordering::Relaxed);
        self.pending_bytes.store(0, Ordering::Relaxed);
        let now = now_ms();
        let mut totals = ScanTotals::default();
        let mut candidates = Vec::new();
        for shard in 0..SHARDS {
            for hash in self.list_shard(shard)? {
                let path = self.entry_path(hash);
                match self.load(&path) {
                    Ok(Load::Found(e)) if !e.header.expired(now) => {
                        totals.entries += 1;
                        totals.bytes += e.buf.len() as i64;
                        candidates.push(Candidate {
                            hash,
                            written_at: e.header.written_at,
                            expires_at: e.header.expires_at,
                        });
                    }
                    Ok(Load::Found(e)) => {
                        let _ = self.discard(shard, &path, Discard::Expired(e.header));
                    }
                    Ok(Load::Bad(file)) => {
                        let _ = self.discard(shard, &path, Discard::Bad(file));
                    }
                    Ok(Load::Missing) | Err(_) => {}
                }
            }
        }
        candidates.sort_unstable_by_key(|c| c.written_at);
        candidates.truncate(MAX_CANDIDATES);
        state.candidates = candidates.into();
        self.update_index(|entries, bytes, last_scan, now| {
            *entries = totals.entries;
            *bytes = totals.bytes;
            *last_scan = now;
        })?;
        Ok(totals)
    }

    /// Evicts the oldest entries until the estimate is at 90% of the bounds. Holds the
    /// eviction lock (the caller's `state`).
    fn evict_locked(&self, state: &mut EvictState) -> Result<()> {
        self.sync_index()?;
        let mut scanned = false;
        loop {
            let (entries, bytes) = self.estimate();
            if !self.over(entries, bytes, LOW_WATER) {
                break;
            }
            let Some(c) = state.candidates.pop_front() else {
                if scanned {
                    break;
                }
                self.scan(state)?;
                scanned = true;
                continue;
            };
            let shard = shard_of(c.hash);
            let path = self.entry_path(c.hash);
            let removed = {
                let _guard = self.lock_shard(shard)?;
                self.remove_if_unchanged(&path, c.written_at, c.expires_at)
            };
            if let Some(size) = removed {
                let d = Delta::removed(size);
                self.pending_entries.fetch_add(d.entries, Ordering::Relaxed);
                self.pending_bytes.fetch_add(d.bytes, Ordering::Relaxed);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
            if self.pending_writes.fetch_add(1, Ordering::Relaxed) + 1 >= self.flush_every {
                // Sees what the other processes evicted or wrote meanwhile.
                self.sync_index()?;
            }
        }
        self.sync_index()?;
        Ok(())
    }
}

enum Discard {
    Bad(File),
    Expired(Header),
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

impl Drop for Inner {
    fn drop(&mut self) {
        let pending = self.pending_entries.load(Ordering::Relaxed) != 0
            || self.pending_bytes.load(Ordering::Relaxed) != 0;
        if pending {
            let _ = self.sync_index();
        }
    }
}

impl Backend for FileBackend {
    fn name(&self) -> &'static str {
        "file"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        let hash = hash_key(key);
        let path = self.inner.entry_path(hash);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(io_error("open", &path, e)),
        };
        // The common case in one `read` into a reused buffer: a small, whole, live entry.
        let hit = READ_BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            let n = file.read(&mut buf[..]).ok()?;
            let file_bytes = &buf[..n];
            let header = parse_header(file_bytes)?;
            let crc = u32::from_le_bytes(file_bytes[28..32].try_into().ok()?);
            let fresh = header.expires_at == 0 || !header.expired(now_ms());
            let whole = header.total() == n && checksum(file_bytes) == crc;
            let ours = file_bytes.get(HEADER_LEN..HEADER_LEN + header.key_len) == Some(key);
            (whole && ours && fresh)
                .then(|| Value::from(&file_bytes[HEADER_LEN + header.key_len..]))
        });
        if hit.is_some() {
            return Ok(hit);
        }
        // Anything else (large, expired, bad, another key, a short read): read it again fully.
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io_error("read", &path, e))?;
        let found = match self.inner.read_entry(file, &path)? {
            Load::Missing => return Ok(None),
            Load::Found(e) if e.key() != key => return Ok(None),
            Load::Found(e) if !e.header.expired(now_ms()) => return Ok(Some(e.into_value())),
            Load::Found(e) => Discard::Expired(e.header),
            Load::Bad(file) => Discard::Bad(file),
        };
        let delta = self.inner.discard(shard_of(hash), &path, found);
        self.after_write(delta);
        Ok(None)
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.inner.check_size(key, value)?;
        let hash = hash_key(key);
        let shard = shard_of(hash);
        let path = self.inner.entry_path(hash);
        let now = now_ms();
        let bytes = encode(key, value, deadline(ttl, now), now)?;
        let old = {
            let _guard = self.inner.lock_shard(shard)?;
            self.inner.write_entry(shard, &path, &bytes)?
        };
        self.after_write(Delta::replaced(old, bytes.len()));
        Ok(())
    }

    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.inner.check_size(key, value)?;
        let hash = hash_key(key);
        let shard = shard_of(hash);
        let path = self.inner.entry_path(hash);
        let now = now_ms();
        let (stored, delta) = {
            let _guard = self.inner.lock_shard(shard)?;
            let (live, removed) = self.inner.load_live(&path, key, now)?;
            if live.is_some() {
                (false, removed)
            } else {
                let d = self
                    .inner
                    .put(shard, &path, key, value, deadline(ttl, now), now)?;
                (
                    true,
                    Delta {
                        entries: d.entries + removed.entries,
                        bytes: d.bytes + removed.bytes,
                    },
                )
            }
        };
        self.after_write(delta);
        Ok(stored)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        let hash = hash_key(key);
        let shard = shard_of(hash);
        let path = self.inner.entry_path(hash);
        let (present, delta) = {
            let _guard = self.inner.lock_shard(shard)?;
            let (live, mut delta) = self.inner.load_live(&path, key, now_ms())?;
            match live {
                Some(e) => match fs::remove_file(&path) {
                    Ok(()) => {
                        delta = Delta::removed(e.buf.len() as u64);
                        (true, delta)
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => (false, delta),
                    Err(err) => return Err(io_error("remove", &path, err)),
                },
                None => (false, delta),
            }
        };
        self.after_write(delta);
        Ok(present)
    }

    fn has_key(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let hash = hash_key(key);
        let shard = shard_of(hash);
        let path = self.inner.entry_path(hash);
        let now = now_ms();
        let (touched, delta) = {
            let _guard = self.inner.lock_shard(shard)?;
            match self.inner.load_live(&path, key, now)? {
                (Some(e), _) => {
                    let d =
                        self.inner
                            .put(shard, &path, key, e.value(), deadline(ttl, now), now)?;
                    (true, d)
                }
                (None, removed) => (false, removed),
            }
        };
        self.after_write(delta);
        Ok(touched)
    }

    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        let hash = hash_key(key);
        let shard = shard_of(hash);
        let path = self.inner.entry_path(hash);
        let now = now_ms();
        let (result, change) = {
            let _guard = self.inner.lock_shard(shard)?;
            match self.inner.load_live(&path, key, now)? {
                (Some(e), _) => {
                    let n = apply_delta(e.value(), delta)?;
                    let d = self.inner.put(
                        shard,
                        &path,
                        key,
                        n.to_string().as_bytes(),
                        e.header.expires_at,
                        now,
                    )?;
                    (Ok(n), d)
                }
                (None, removed) => (Err(not_found(key)), removed),
            }
        };
        self.after_write(change);
        result
    }

    fn clear(&self, prefix: &[u8]) -> Result<()> {
        let inner = &self.inner;
        let mut total = Delta::default();
        for shard in 0..SHARDS {
            let hashes = inner.list_shard(shard)?;
            if hashes.is_empty() {
                continue;
            }
            let _guard = inner.lock_shard(shard)?;
            for hash in hashes {
                let path = inner.entry_path(hash);
                let size = if prefix.is_empty() {
                    fs::symlink_metadata(&path).map(|m| m.len()).ok()
                } else {
                    match inner.load(&path)? {
                        Load::Found(e) if !e.key().starts_with(prefix) => None,
                        Load::Found(e) => Some(e.buf.len() as u64),
                        Load::Bad(file) => file.metadata().map(|m| m.len()).ok(),
                        Load::Missing => None,
                    }
                };
                if let Some(size) = size {
                    match fs::remove_file(&path) {
                        Ok(()) => {
                            total.entries -= 1;
                            total.bytes -= size as i64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_error("remove", &path, e)),
                    }
                }
            }
        }
        inner
            .pending_entries
            .fetch_add(total.entries, Ordering::Relaxed);
        inner
            .pending_bytes
            .fetch_add(total.bytes, Ordering::Relaxed);
        inner.sync_index()?;
        Ok(())
    }

    fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips_and_rejects_damage() {
        let bytes = encode(b"k", b"value", 7, 3).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 1 + 5);
        assert_eq!(decode_entry(&bytes), Some((7, &b"k"[..], &b"value"[..])));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert_eq!(decode_entry(&bad), None, "flipped byte {i}");
        }
        for n in 0..bytes.len() {
            assert_eq!(decode_entry(&bytes[..n]), None, "truncated to {n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode_entry(&long), None);
    }

    #[test]
    fn huge_lengths_in_a_header_do_not_overflow() {
        let mut bytes = encode(b"k", b"v", 0, 0).unwrap();
        bytes[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(decode_entry(&bytes), None);
        bytes[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_entry(&bytes), None);
    }

    #[test]
    fn names_are_hex_and_sharded_by_the_first_byte() {
        let h = hash_key(b"../../etc/passwd");
        let name = format!("{h:032x}");
        assert!(is_entry_name(name.as_bytes()));
        assert_eq!(parse_hex(name.as_bytes()), Some(h));
        assert_eq!(format!("{:02x}", shard_of(h)), name[..2]);
        assert!(!is_entry_name(b".tmp.1.2.3"));
        assert!(!is_entry_name(b"0123456789ABCDEF0123456789abcdef"));
    }
}
