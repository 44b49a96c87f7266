//! `file:///dir`: a directory cache that several processes may share.
//!
//! Layout of a cache directory (see `docs/backends/file.md`):
//!
//! ```text
//! dir/packs/0 … f         16 pack files: a header, an open-addressing index, then records
//! dir/ab/<32 hex>         a large entry (over SMALL_MAX bytes) in a file of its own, named by
//!                         the xxh3-128 hash of the full key; `ab` is the hash's first byte
//! dir/.locks/00 … 0f      one advisory lock file per pack (its large files included), `evict`
//! dir/.polycache-index    when the last full scan ran
//! ```
//!
//! A pack is `header (64 bytes) | index (cap × 8-byte slots) | records`. A slot holds 16 bits
//! of the key's hash, the record's length and its offset; records are appended and never
//! changed in place, so a reader that follows a slot sees a whole record or (after a crash) one
//! whose checksum fails. Writers of a pack serialize on its lock (a mutex in the process,
//! `flock` across processes), append the record, update the header, then flip the slot with
//! one aligned 8-byte write. Readers take no lock: they verify what they read (checksum, the
//! full key) and retry under the lock when anything looks torn. When dead records or the
//! index fill up, the writer rebuilds the pack into a new file and renames it over the old
//! one, marking the old one's slots as moved so readers reopen.
//!
//! A record: `magic "pc", version u8, flags u8, crc32 u32, expires_at u48, written_at u48,
//! key_len u16, value_len u16`, then key and value (little-endian; times in unix ms, 0 =
//! never). A large entry file keeps the 40-byte `PCFE` header of format 1.

mod evict;
mod files;
mod format;
mod keys;
mod lock;
mod locked;
mod pack;

use super::{apply_delta, not_found, Backend, KeyScan};
use crate::clock::unix_ms;
use crate::error::{Error, Result};
use crate::expiry::TimeToLive;
use crate::location::{Location, Options};
use crate::pattern::KeyPattern;
use crate::value::Value;
use evict::EvictState;
use files::{io_error, make_dir, probe_umask};
use format::{hash_key, pack_of};
use keys::FileScan;
use lock::{open_lock_file, LockFile};
use locked::Locked;
use pack::{PackFile, Probe};
use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The on-disk format's decoders and sizes, for this crate's own tests (`core/tests/file.rs`
/// reads and damages entry files and pack records with them). Not an API: hidden from the
/// docs, and it changes whenever the format does.
#[doc(hidden)]
pub mod testing {
    pub use super::format::{
        decode_entry, decode_record, Record, ENTRY_HEADER_LEN, RECORD_HEADER_LEN, SMALL_MAX,
    };
}

/// The byte bound of a `file://` cache when neither `max_entries` nor `max_bytes` is given.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// How often (at most) some process sharing the directory rescans it to correct the counters.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(300);

/// Shard directories of large entry files (the hash's first byte).
const SHARDS: usize = 256;
/// What reading a large entry file starts with.
const FIRST_READ: usize = 4096;

/// Pack files; each is also the lock domain of the large entries whose hash starts with it.
const PACKS: usize = 16;
const PACK_DIR: &str = "packs";
/// Slots read by one `pread` while probing.
const PROBE_CHUNK: u64 = 16;
/// Dead record bytes a pack may hold before it is rebuilt (and at most half its records).
const DEAD_SLACK: u64 = 64 << 10;
/// A reader re-checks that its pack file is still current every this many reads.
const RECHECK_EVERY: u32 = 1024;

const INDEX_FILE: &str = ".polycache-index";
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
/// Writes between two refreshes of the other packs' counters (and reconciliation checks).
const REFRESH_EVERY: u32 = 64;

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
    /// At most this many bytes of entries (record or file header, key and value; index and
    /// disk blocks not counted). [`DEFAULT_MAX_BYTES`] when neither bound is given.
    pub max_bytes: Option<u64>,
    /// Django's `CULL_FREQUENCY`: when a write of a new key finds `max_entries` entries,
    /// remove `entries / n` of them (expired first, then oldest); `0` clears the cache. `None`
    /// (the default) trims to 90% of the bounds instead.
    pub cull_frequency: Option<u64>,
    /// `fsync` each write before it returns (default: off).
    pub fsync: bool,
    /// How often some process rescans the whole directory to correct the counters.
    pub reconcile_interval: Duration,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            max_entries: None,
            max_bytes: None,
            cull_frequency: None,
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
    /// Bounds the cache by the bytes of its entries.
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = Some(n);
        self
    }
    /// Culls `entries / n` entries (0: all) when a new key finds the cache at `max_entries`.
    pub fn cull_frequency(mut self, n: u64) -> Self {
        self.cull_frequency = Some(n);
        self
    }
    /// Syncs every write to disk before it returns.
    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }
    /// How often the directory is rescanned to correct the counters.
    pub fn reconcile_interval(mut self, every: Duration) -> Self {
        self.reconcile_interval = every;
        self
    }
}

/// The backend behind `file:///absolute/dir`.
///
/// Small entries are records in 16 pack files (an index of hashed slots, then appended
/// records); large ones are files of their own in 256 shard directories. Reads take no lock;
/// writes of a pack serialize on its lock, in the process and across processes. Each pack's
/// header counts its entries and bytes exactly, so the bounds are kept without listing the
/// directory; over a bound a writer evicts expired entries first, then the oldest, down to
/// 90% of it (or culls, with `cull_frequency`).
///
/// `Send + Sync`; cloning shares the open directory. Several processes (and several
/// `FileBackend`s of one process) may use the same directory at once. Unix only.
#[derive(Clone)]
pub struct FileBackend {
    inner: Arc<Inner>,
}

impl Drop for FileBackend {
    /// The last handle stops the background scan and waits for it (one pack's work at
    /// most), so nothing writes into the directory once the cache is gone.
    fn drop(&mut self) {
        let scanners = self.inner.scanners.load(Ordering::SeqCst);
        if Arc::strong_count(&self.inner) > 1 + scanners {
            return; // another handle still uses it
        }
        self.inner.closing.store(true, Ordering::SeqCst);
        let scans = std::mem::take(&mut self.inner.own_scans().1);
        for scan in scans {
            let _ = scan.join();
        }
    }
}

struct Inner {
    root: PathBuf,
    /// `root` as text, for building entry paths in one allocation.
    root_str: String,
    max_entries: Option<u64>,
    max_bytes: Option<u64>,
    cull_frequency: Option<u64>,
    fsync: bool,
    reconcile_interval_ms: u64,
    /// A `fchmod` after each create, for a umask that strips the owner's bits.
    fix_modes: bool,
    packs: Box<[Pack]>,
    index: Mutex<Option<LockFile>>,
    writes: AtomicU32,
    evict: Mutex<EvictState>,
    evictions: AtomicU64,
    /// Set when the last handle goes: a background scan stops at its next step.
    closing: AtomicBool,
    /// Background scans running (each holds a reference to this state).
    scanners: AtomicUsize,
    /// Their threads, joined when the last handle goes, and the fork generation they belong
    /// to (a child of `fork()` must not join its parent's threads).
    scans: Mutex<(u64, Vec<std::thread::JoinHandle<()>>)>,
}

/// One pack as this process sees it.
struct Pack {
    /// The process half of the pack's lock, and the lock file for the `flock` half.
    lock: Mutex<Option<LockFile>>,
    /// The open pack file, shared by readers and writers of this process.
    file: RwLock<Option<Arc<PackFile>>>,
    /// The pack header's counters when this process last read or wrote it.
    entries: AtomicI64,
    bytes: AtomicI64,
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

impl FileBackend {
    /// Opens `file:///absolute/dir?max_entries=N&max_bytes=N&cull_frequency=N&fsync=false&reconcile_interval=S`.
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
        if let Some(n) = options.i64("cull_frequency")? {
            let n = u64::try_from(n).map_err(|_| {
                options.error(
                    "cull_frequency",
                    format!(
                        "invalid value {n} for option 'cull_frequency' of file://: expected an \
                         integer >= 0 (0 clears the cache when it is full)"
                    ),
                )
            })?;
            opts.cull_frequency = Some(n);
        }
        if let Some(v) = options.bool("fsync")? {
            opts.fsync = v;
        }
        if let Some(v) = options.seconds("reconcile_interval")? {
            opts.reconcile_interval = v.unwrap_or(Duration::MAX);
        }
        if opts.cull_frequency.is_some() && opts.max_entries.is_none() {
            return Err(options.error(
                "cull_frequency",
                "file:// cull_frequency applies to max_entries: give max_entries too",
            ));
        }
        FileBackend::new(Path::new(path), &opts)
    }

    /// Opens (creating it if needed, mode `0700`) the cache directory `dir`.
    ///
    /// Fails with [`ErrorKind::Io`](crate::ErrorKind::Io) when the directory cannot be created or written, and with
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) for `cull_frequency` without `max_entries`.
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
        if options.cull_frequency.is_some() && max_entries.is_none() {
            return Err(Error::config(
                "file:// cull_frequency applies to max_entries: give max_entries too",
            ));
        }
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
        make_dir(&root.join(PACK_DIR), fix_modes)?;
        let index_path = root.join(INDEX_FILE);
        let index = open_lock_file(&index_path)
            .map_err(|e| io_error("open the index file", &index_path, e))?;
        let backend = FileBackend {
            inner: Arc::new(Inner {
                root,
                root_str,
                max_entries,
                max_bytes,
                cull_frequency: options.cull_frequency,
                fsync: options.fsync,
                reconcile_interval_ms: u64::try_from(options.reconcile_interval.as_millis())
                    .unwrap_or(u64::MAX),
                fix_modes,
                packs: (0..PACKS)
                    .map(|_| Pack {
                        lock: Mutex::new(None),
                        file: RwLock::new(None),
                        entries: AtomicI64::new(0),
                        bytes: AtomicI64::new(0),
                    })
                    .collect(),
                index: Mutex::new(Some(LockFile {
                    pid: std::process::id(),
                    file: index,
                })),
                writes: AtomicU32::new(0),
                evict: Mutex::new(EvictState::default()),
                evictions: AtomicU64::new(0),
                closing: AtomicBool::new(false),
                scanners: AtomicUsize::new(0),
                scans: Mutex::new((crate::fork::generation(), Vec::new())),
            }),
        };
        backend.inner.refresh_counts();
        if backend.inner.scan_due()? {
            backend.spawn_reconcile();
        }
        Ok(backend)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// The entry count and bytes, as the packs' headers count them now (expired entries not
    /// yet removed included).
    pub fn estimate(&self) -> (u64, u64) {
        self.inner.refresh_counts();
        let (e, b) = self.inner.counters();
        (e.max(0) as u64, b.max(0) as u64)
    }

    /// Scans the whole directory now: removes expired entries, corrupt records and files,
    /// orphaned large files and stale temporary files, sets the packs' counters to what it
    /// found, then evicts if over the bound. Returns the entries and bytes found. Runs by
    /// itself in the background at open and every `reconcile_interval`.
    pub fn reconcile(&self) -> Result<(u64, u64)> {
        let mut guard = self.inner.lock_evict(true)?.expect("blocking lock");
        let totals = self.inner.scan(&mut guard.state)?;
        self.inner.evict_locked(&mut guard.state)?;
        Ok(totals)
    }

    /// The path of the file that holds `key` if its entry is large (whether or not it exists).
    pub fn entry_path(&self, key: &[u8]) -> PathBuf {
        self.inner.entry_path(hash_key(key))
    }

    /// The pack file that indexes `key` (and holds it if it is small).
    pub fn pack_path(&self, key: &[u8]) -> PathBuf {
        self.inner.pack_path(pack_of(hash_key(key)))
    }

    /// Runs a write of a key under its pack's lock: `op` gets the pack and the probe for the
    /// key, and answers with its result or asks for a cull first (a new key at the bound).
    fn write<T>(
        &self,
        key: &[u8],
        now: u64,
        mut op: impl FnMut(&mut Locked<'_>, Probe) -> Result<T>,
    ) -> Result<T> {
        let hash = hash_key(key);
        let pack = pack_of(hash);
        let mut culled = false;
        loop {
            let step = {
                let mut locked = self.inner.lock_pack(pack, true)?.expect("created");
                locked.maybe_rebuild(now)?;
                let probe = locked.find(hash, key, now)?;
                let cull =
                    !culled && matches!(probe, Probe::Absent { .. }) && self.inner.at_cull_bound();
                if cull {
                    None
                } else {
                    Some(op(&mut locked, probe)?)
                }
            };
            match step {
                None => {
                    culled = true;
                    self.inner.cull()?;
                }
                Some(t) => {
                    self.after_write();
                    return Ok(t);
                }
            }
        }
    }
}

impl Backend for FileBackend {
    fn name(&self) -> &'static str {
        "file"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        let hash = hash_key(key);
        let now = unix_ms();
        match self.inner.read_unlocked(hash, key)? {
            Some(Some(f)) if !f.expired(now) => return Ok(Some(f.into_value())),
            Some(None) => return Ok(None),
            // Expired (removed below), or something to look at under the lock.
            Some(Some(_)) | None => {}
        }
        self.inner
            .with_live(hash, key, now, || Ok(None), |_, f| Ok(Some(f.into_value())))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.inner.check_size(key, value)?;
        let hash = hash_key(key);
        let now = unix_ms();
        let expires_at = deadline(ttl, now);
        self.write(key, now, |locked, probe| {
            locked.store(hash, key, value, expires_at, now, probe)
        })
    }

    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.inner.check_size(key, value)?;
        let hash = hash_key(key);
        let now = unix_ms();
        let expires_at = deadline(ttl, now);
        // A live key is not new: the cull check applies only when the probe finds none.
        self.write(key, now, |locked, probe| match probe {
            Probe::Found(f) if !f.expired(now) => Ok(false),
            probe => {
                locked.store(hash, key, value, expires_at, now, probe)?;
                Ok(true)
            }
        })
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        let hash = hash_key(key);
        let now = unix_ms();
        let present = {
            let Some(mut locked) = self.inner.lock_pack(pack_of(hash), false)? else {
                return Ok(false);
            };
            match locked.find(hash, key, now)? {
                Probe::Found(f) => {
                    let live = !f.expired(now);
                    locked.remove(f)?;
                    live
                }
                _ => false,
            }
        };
        Ok(present)
    }

    fn has_key(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let hash = hash_key(key);
        let now = unix_ms();
        let touched = self.inner.with_live(
            hash,
            key,
            now,
            || Ok(false),
            |locked, f| {
                let value = f.record().value.to_vec();
                locked.store(hash, key, &value, deadline(ttl, now), now, Probe::Found(f))?;
                Ok(true)
            },
        )?;
        self.after_write();
        Ok(touched)
    }

    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        let hash = hash_key(key);
        let now = unix_ms();
        let n = self.inner.with_live(
            hash,
            key,
            now,
            || Err(not_found(key)),
            |locked, f| {
                let r = f.record();
                let n = apply_delta(r.value, delta)?;
                let expires_at = r.expires_at;
                let text = n.to_string();
                locked.store(hash, key, text.as_bytes(), expires_at, now, Probe::Found(f))?;
                Ok(n)
            },
        )?;
        self.after_write();
        Ok(n)
    }

    fn clear(&self, prefix: &[u8]) -> Result<()> {
        self.inner.clear(prefix)
    }

    fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    fn ttl(&self, key: &[u8]) -> Result<TimeToLive> {
        let hash = hash_key(key);
        let now = unix_ms();
        let expires_at = match self.inner.read_unlocked(hash, key)? {
            Some(Some(f)) if !f.expired(now) => Some(f.record().expires_at),
            Some(None) => None,
            Some(Some(_)) | None => self.inner.with_live(
                hash,
                key,
                now,
                || Ok(None),
                |_, f| Ok(Some(f.record().expires_at)),
            )?,
        };
        Ok(match expires_at {
            None => TimeToLive::Missing,
            Some(0) => TimeToLive::Forever,
            Some(at) => TimeToLive::until(Duration::from_millis(at), Duration::from_millis(now)),
        })
    }

    fn replace(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.inner.check_size(key, value)?;
        let hash = hash_key(key);
        let now = unix_ms();
        let stored = self.inner.with_live(
            hash,
            key,
            now,
            || Ok(false),
            |locked, f| {
                locked.store(hash, key, value, deadline(ttl, now), now, Probe::Found(f))?;
                Ok(true)
            },
        )?;
        self.after_write();
        Ok(stored)
    }

    /// Reads one pack (and its large entries) at a time under that pack's lock, so a writer
    /// waits for at most one pack's walk; see `FileScan` in `keys.rs`.
    fn scan_keys(self: Arc<Self>, pattern: &KeyPattern, count: usize) -> Result<Box<dyn KeyScan>> {
        Ok(Box::new(FileScan {
            backend: self,
            pattern: pattern.clone(),
            count: count.max(1),
            next_pack: 0,
            found: Vec::new().into_iter(),
        }))
    }

    /// Compares and deletes under the pack's lock, which every process takes to write.
    fn delete_if_equals(&self, key: &[u8], expected: &[u8]) -> Result<bool> {
        let hash = hash_key(key);
        self.inner.with_live(
            hash,
            key,
            unix_ms(),
            || Ok(false),
            |locked, f| {
                if f.record().value != expected {
                    return Ok(false);
                }
                locked.remove(f)?;
                Ok(true)
            },
        )
    }

    /// Compares and rewrites the entry with its new deadline under the pack's lock.
    fn extend_if_equals(
        &self,
        key: &[u8],
        expected: &[u8],
        ttl: Duration,
        replace: bool,
    ) -> Result<bool> {
        let hash = hash_key(key);
        let now = unix_ms();
        let extended = self.inner.with_live(
            hash,
            key,
            now,
            || Ok(false),
            |locked, f| {
                let r = f.record();
                if r.value != expected {
                    return Ok(false);
                }
                let left = (r.expires_at != 0)
                    .then(|| Duration::from_millis(r.expires_at.saturating_sub(now)));
                let Some(ttl) = super::extended_ttl(left, ttl, replace) else {
                    return Ok(false);
                };
                let value = r.value.to_vec();
                locked.store(
                    hash,
                    key,
                    &value,
                    deadline(Some(ttl), now),
                    now,
                    Probe::Found(f),
                )?;
                Ok(true)
            },
        )?;
        if extended {
            self.after_write();
        }
        Ok(extended)
    }
}
