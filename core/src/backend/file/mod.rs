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

use super::{apply_delta, not_found, Backend, KeyScan};
use crate::clock::unix_ms;
use crate::error::{Error, ErrorKind, Result};
use crate::expiry::TimeToLive;
use crate::location::{Location, Options};
use crate::pattern::KeyPattern;
use crate::value::Value;
use std::collections::{HashMap, VecDeque};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt as _, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, TryLockError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The byte bound of a `file://` cache when neither `max_entries` nor `max_bytes` is given.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// How often (at most) some process sharing the directory rescans it to correct the counters.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(300);

const MAGIC: [u8; 4] = *b"PCFE";
const FORMAT_VERSION: u16 = 1;
/// Bytes before the key in a large entry's own file.
pub const HEADER_LEN: usize = 40;
/// Shard directories of large entry files (the hash's first byte).
const SHARDS: usize = 256;
/// What reading a large entry file starts with.
const FIRST_READ: usize = 4096;

/// Pack files; each is also the lock domain of the large entries whose hash starts with it.
const PACKS: usize = 16;
const PACK_DIR: &str = "packs";
const PACK_MAGIC: [u8; 4] = *b"PCPK";
const PACK_VERSION: u16 = 1;
const PACK_HEADER_LEN: u64 = 64;
const RETIRED: u16 = 1;
/// Bytes before the key in a pack record.
pub const RECORD_HEADER_LEN: usize = 24;
const RECORD_MAGIC: [u8; 2] = *b"pc";
const RECORD_VERSION: u8 = 1;
/// Entries whose record (header, key and value) is at most this many bytes go into a pack;
/// larger ones get a file of their own, as diskcache does above its threshold.
pub const SMALL_MAX: usize = 2048;
const MIN_CAP: u64 = 64;
const MAX_CAP: u64 = 1 << 28;
/// Record offsets are stored in 4-byte units in a `u32`: 16 GiB of records per pack.
const UNIT: u64 = 4;
const MAX_DATA: u64 = (u32::MAX as u64) * UNIT;
const SLOT_EMPTY: u64 = 0;
const SLOT_TOMB: u64 = 1;
const SLOT_MOVED: u64 = u64::MAX;
/// Slots read by one `pread` while probing.
const PROBE_CHUNK: u64 = 16;
/// Dead record bytes a pack may hold before it is rebuilt (and at most half its records).
const DEAD_SLACK: u64 = 64 << 10;
/// A reader re-checks that its pack file is still current every this many reads.
const RECHECK_EVERY: u32 = 1024;
const MAX_U48: u64 = (1 << 48) - 1;

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

struct PackFile {
    file: File,
    cap: u64,
    /// The inode it was opened as, to notice the path now naming another file (or none).
    ino: u64,
    reads: AtomicU32,
}

impl PackFile {
    fn new(file: File, cap: u64) -> PackFile {
        let ino = file.metadata().map_or(0, |m| m.ino());
        PackFile {
            file,
            cap,
            ino,
            reads: AtomicU32::new(0),
        }
    }

    /// True when `path` still names this file.
    fn is_at(&self, path: &Path) -> bool {
        fs::metadata(path).is_ok_and(|m| m.ino() == self.ino)
    }
}

/// How long eviction candidates stay in their order (see `EvictState::collected_at`).
const CANDIDATES_FRESH_MS: u64 = 250;

#[derive(Default)]
struct EvictState {
    lock_file: Option<LockFile>,
    /// Entries seen by the last scan, expired first, then oldest first.
    candidates: VecDeque<Candidate>,
    /// When (ms) the candidates were collected: an older list no longer puts the entries
    /// that have expired since first, so eviction collects anew.
    collected_at: u64,
}

struct Candidate {
    key: Box<[u8]>,
    written_at: u64,
    expires_at: u64,
}

/// The header of a pack file.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct PackHeader {
    retired: bool,
    cap: u64,
    data_end: u64,
    live_entries: u64,
    live_bytes: u64,
    dead_bytes: u64,
    /// Slots that are not empty: live entries and tombstones.
    used: u64,
}

fn data_start(cap: u64) -> u64 {
    PACK_HEADER_LEN + cap * 8
}

fn align(n: u64) -> u64 {
    n.div_ceil(UNIT) * UNIT
}

impl PackHeader {
    fn empty(cap: u64) -> PackHeader {
        PackHeader {
            cap,
            data_end: data_start(cap),
            ..PackHeader::default()
        }
    }

    fn encode(&self) -> [u8; PACK_HEADER_LEN as usize] {
        let mut b = [0u8; PACK_HEADER_LEN as usize];
        b[0..4].copy_from_slice(&PACK_MAGIC);
        b[4..6].copy_from_slice(&PACK_VERSION.to_le_bytes());
        let flags = if self.retired { RETIRED } else { 0 };
        b[6..8].copy_from_slice(&flags.to_le_bytes());
        for (i, v) in [
            self.cap,
            self.data_end,
            self.live_entries,
            self.live_bytes,
            self.dead_bytes,
            self.used,
        ]
        .into_iter()
        .enumerate()
        {
            b[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&b[..56]);
        b[56..60].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks a header; `None` for anything that is not a sane version-1 pack.
    fn decode(b: &[u8]) -> Option<PackHeader> {
        if b.len() < PACK_HEADER_LEN as usize || b[0..4] != PACK_MAGIC {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(b[56..60].try_into().expect("4 bytes"));
        if b[4..6] != PACK_VERSION.to_le_bytes()
            || crc32fast::hash(&b[..56]) != crc
            || b[60..64] != [0; 4]
        {
            return None;
        }
        let flags = u16::from_le_bytes([b[6], b[7]]);
        let h = PackHeader {
            retired: flags & RETIRED != 0,
            cap: u64_at(8),
            data_end: u64_at(16),
            live_entries: u64_at(24),
            live_bytes: u64_at(32),
            dead_bytes: u64_at(40),
            used: u64_at(48),
        };
        let sane = flags & !RETIRED == 0
            && h.cap.is_power_of_two()
            && (MIN_CAP..=MAX_CAP).contains(&h.cap)
            && h.data_end >= data_start(h.cap)
            && h.data_end <= MAX_DATA
            && h.data_end % UNIT == 0
            && h.used <= h.cap
            && h.live_entries <= h.used;
        sane.then_some(h)
    }
}

/// A slot of a small record: 16 bits of the key's hash, the record's length, its offset.
fn slot_small(tag: u16, len: usize, off: u64) -> u64 {
    (u64::from(tag) << 48) | ((len as u64) << 32) | (off / UNIT)
}

/// A slot of a large entry (length 0): 48 bits of the key's hash.
fn slot_large(hash: u128) -> u64 {
    (u64::from(tag_of(hash)) << 48) | u64::from(check_of(hash))
}

fn slot_is_large(slot: u64) -> bool {
    (slot >> 32) & 0xffff == 0
}

fn slot_len(slot: u64) -> usize {
    ((slot >> 32) & 0xffff) as usize
}

fn slot_off(slot: u64) -> u64 {
    (slot & 0xffff_ffff) * UNIT
}

fn tag_of(hash: u128) -> u16 {
    (hash >> 64) as u16
}

/// 32 more bits of the hash for large slots; never 0 or 1 (the empty and tombstone slots).
fn check_of(hash: u128) -> u32 {
    ((hash >> 80) as u32).max(2)
}

fn pack_of(hash: u128) -> usize {
    (hash >> 124) as usize
}

fn home(hash: u128, cap: u64) -> u64 {
    (hash as u64) & (cap - 1)
}

/// True when `slot` (not empty, tombstone or moved) may belong to the key hashed `hash`.
fn slot_matches(slot: u64, hash: u128) -> bool {
    if (slot >> 48) as u16 != tag_of(hash) {
        return false;
    }
    if slot_is_large(slot) {
        slot & 0xffff_ffff == u64::from(check_of(hash))
    } else {
        true
    }
}

fn fits_in_pack(key: &[u8], value: &[u8]) -> bool {
    RECORD_HEADER_LEN + key.len() + value.len() <= SMALL_MAX
}

fn record_checksum(rec: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&rec[..4]);
    h.update(&rec[8..]);
    h.finalize()
}

/// The bytes of a pack record; the caller checked [`fits_in_pack`].
fn encode_record(key: &[u8], value: &[u8], expires_at: u64, written_at: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(RECORD_HEADER_LEN + key.len() + value.len());
    b.extend_from_slice(&RECORD_MAGIC);
    b.push(RECORD_VERSION);
    b.push(0);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&expires_at.min(MAX_U48).to_le_bytes()[..6]);
    b.extend_from_slice(&written_at.min(MAX_U48).to_le_bytes()[..6]);
    b.extend_from_slice(&(key.len() as u16).to_le_bytes());
    b.extend_from_slice(&(value.len() as u16).to_le_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(value);
    let crc = record_checksum(&b);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

/// A decoded pack record.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Record<'a> {
    /// Unix milliseconds; 0 = never.
    pub expires_at: u64,
    /// Unix milliseconds.
    pub written_at: u64,
    /// The full key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
}

/// Decodes one whole pack record, or `None` when the bytes are not exactly one.
pub fn decode_record(b: &[u8]) -> Option<Record<'_>> {
    if b.len() < RECORD_HEADER_LEN || b[0..2] != RECORD_MAGIC || b[2] != RECORD_VERSION || b[3] != 0
    {
        return None;
    }
    let u48_at = |i: usize| {
        let mut x = [0u8; 8];
        x[..6].copy_from_slice(&b[i..i + 6]);
        u64::from_le_bytes(x)
    };
    let key_len = usize::from(u16::from_le_bytes([b[20], b[21]]));
    let value_len = usize::from(u16::from_le_bytes([b[22], b[23]]));
    if b.len() != RECORD_HEADER_LEN + key_len + value_len {
        return None;
    }
    let crc = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
    if record_checksum(b) != crc {
        return None;
    }
    let key_end = RECORD_HEADER_LEN + key_len;
    Some(Record {
        expires_at: u48_at(8),
        written_at: u48_at(14),
        key: &b[RECORD_HEADER_LEN..key_end],
        value: &b[key_end..],
    })
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

/// What reading an entry file found.
enum Load {
    Missing,
    /// Truncated, corrupt or foreign.
    Bad,
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

/// An entry found through a pack's index.
struct Found {
    /// Its slot's position and value.
    pos: u64,
    slot: u64,
    stored: Stored,
}

enum Stored {
    /// A pack record (the whole record).
    Small(Vec<u8>),
    /// A file of its own.
    Large(Loaded),
}

impl Found {
    fn record(&self) -> Record<'_> {
        match &self.stored {
            Stored::Small(b) => decode_record(b).expect("verified when read"),
            Stored::Large(e) => Record {
                expires_at: e.header.expires_at,
                written_at: e.header.written_at,
                key: e.key(),
                value: e.value(),
            },
        }
    }
    fn expired(&self, now: u64) -> bool {
        let e = self.record().expires_at;
        e != 0 && e <= now
    }
    /// What the entry counts against `max_bytes`.
    fn size(&self) -> u64 {
        match &self.stored {
            Stored::Small(b) => b.len() as u64,
            Stored::Large(e) => e.buf.len() as u64,
        }
    }
    fn into_value(self) -> Value {
        match self.stored {
            Stored::Small(b) => Value::from(decode_record(&b).expect("verified").value),
            Stored::Large(e) => e.into_value(),
        }
    }
}

/// What probing a pack's index for a key found.
enum Probe {
    Found(Found),
    /// Not there; a new entry goes to slot `at` (`fresh`: an empty slot, not a tombstone).
    Absent {
        at: u64,
        fresh: bool,
    },
    /// The pack file was replaced: reopen it (lock-free reads only).
    Moved,
    /// Something did not verify: look again under the lock (lock-free reads only).
    Suspect,
}

/// One live entry of a pack, as a walk over its whole index finds it.
struct Walked {
    pos: u64,
    slot: u64,
    hash: u128,
    found: Found,
}

/// A slot whose entry is missing, truncated or corrupt (found under the lock).
struct BadSlot {
    pos: u64,
    slot: u64,
}

fn pread_exact(file: &File, buf: &mut [u8], off: u64) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn read_header(file: &File) -> io::Result<Option<PackHeader>> {
    let mut b = [0u8; PACK_HEADER_LEN as usize];
    Ok(if pread_exact(file, &mut b, 0)? {
        PackHeader::decode(&b)
    } else {
        None
    })
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
                Error::config(format!(
                    "invalid value {n} for option 'cull_frequency' of file://: expected an \
                     integer >= 0 (0 clears the cache when it is full)"
                ))
            })?;
            opts.cull_frequency = Some(n);
        }
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
    /// Fails with [`ErrorKind::Io`] when the directory cannot be created or written, and with
    /// [`ErrorKind::Configuration`] for `cull_frequency` without `max_entries`.
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
        let (e, b) = self.inner.estimate();
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

    fn spawn_reconcile(&self) {
        let inner = self.inner.clone();
        inner.scanners.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("polycache-file-scan".into())
            .spawn(move || {
                if let Ok(Some(mut guard)) = inner.lock_evict(false) {
                    let result = inner.scan(&mut guard.state).and_then(|_| {
                        if inner.closing.load(Ordering::SeqCst) {
                            return Ok(());
                        }
                        inner.evict_locked(&mut guard.state)
                    });
                    if let Err(e) = result {
                        log::warn!(
                            "polycache: file:// scan of {} failed: {e}",
                            inner.root.display()
                        );
                    }
                }
                // No file is touched after this: a closing handle need not wait any more.
                inner.scanners.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(handle) => {
                let handles = &mut self.inner.own_scans().1;
                handles.retain(|h| !h.is_finished());
                handles.push(handle);
            }
            Err(e) => {
                self.inner.scanners.fetch_sub(1, Ordering::SeqCst);
                log::warn!("polycache: cannot start the file:// scan thread: {e}");
            }
        }
    }

    /// Refreshes the other packs' counters every few writes, and evicts when over a bound.
    /// Called with no pack lock held.
    fn after_write(&self) {
        let inner = &self.inner;
        let writes = inner.writes.fetch_add(1, Ordering::Relaxed) + 1;
        if writes % REFRESH_EVERY == 0 {
            inner.refresh_counts();
            match inner.scan_due() {
                Ok(true) => self.spawn_reconcile(),
                Ok(false) => {}
                Err(e) => log::warn!("polycache: file:// scan schedule not shared: {e}"),
            }
        }
        let (entries, bytes) = inner.estimate();
        if inner.over(entries, bytes, 1.0) {
            // Other processes may have evicted meanwhile: decide on fresh counters.
            inner.refresh_counts();
            let (entries, bytes) = inner.estimate();
            if !inner.over(entries, bytes, 1.0) {
                return;
            }
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

fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// What opening a pack for a lock-free read found.
enum Handle {
    Open(Arc<PackFile>),
    /// No pack file yet: every key of the pack is a miss.
    Missing,
    /// A header that does not verify: the locked path repairs it.
    Invalid,
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

    fn pack_path(&self, pack: usize) -> PathBuf {
        self.root.join(PACK_DIR).join(format!("{pack:x}"))
    }

    fn estimate(&self) -> (i64, i64) {
        self.packs.iter().fold((0, 0), |(e, b), p| {
            (
                e + p.entries.load(Ordering::Relaxed),
                b + p.bytes.load(Ordering::Relaxed),
            )
        })
    }

    fn over(&self, entries: i64, bytes: i64, factor: f64) -> bool {
        let entries_over = self.cull_frequency.is_none()
            && self
                .max_entries
                .is_some_and(|m| entries as f64 > m as f64 * factor);
        entries_over
            || self
                .max_bytes
                .is_some_and(|m| bytes as f64 > m as f64 * factor)
    }

    /// With `cull_frequency`: true when a new key would find `max_entries` entries.
    fn at_cull_bound(&self) -> bool {
        match (self.cull_frequency, self.max_entries) {
            (Some(_), Some(max)) => self.estimate().0 >= max as i64,
            _ => false,
        }
    }

    /// Reads every pack's header (without its lock) into this process's counters.
    fn refresh_counts(&self) {
        for (i, pack) in self.packs.iter().enumerate() {
            let pf = match self.handle(i) {
                Handle::Open(pf) => pf,
                Handle::Missing => {
                    pack.entries.store(0, Ordering::Relaxed);
                    pack.bytes.store(0, Ordering::Relaxed);
                    continue;
                }
                Handle::Invalid => continue,
            };
            // A header torn by a concurrent write fails its checksum: try again, then skip.
            for _ in 0..3 {
                match read_header(&pf.file) {
                    Ok(Some(h)) if !h.retired => {
                        pack.entries.store(h.live_entries as i64, Ordering::Relaxed);
                        pack.bytes.store(h.live_bytes as i64, Ordering::Relaxed);
                        break;
                    }
                    Ok(Some(_)) => {
                        self.forget(i, &pf);
                        break;
                    }
                    _ => {}
                }
            }
        }
    }

    /// The open pack file for a lock-free read.
    fn handle(&self, pack: usize) -> Handle {
        let slot = &self.packs[pack].file;
        if let Some(pf) = slot.read().unwrap_or_else(PoisonError::into_inner).as_ref() {
            let n = pf.reads.fetch_add(1, Ordering::Relaxed);
            // A rebuild that died between renaming the new file and marking the old one's
            // slots leaves the old file current for its old readers: look now and then.
            let stale = n % RECHECK_EVERY == RECHECK_EVERY - 1
                && (matches!(read_header(&pf.file), Ok(Some(h)) if h.retired)
                    || !pf.is_at(&self.pack_path(pack)));
            if !stale {
                return Handle::Open(pf.clone());
            }
        }
        let mut slot = slot.write().unwrap_or_else(PoisonError::into_inner);
        let path = self.pack_path(pack);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if is_absent(&e) => return Handle::Missing,
            Err(_) => return Handle::Invalid,
        };
        match read_header(&file) {
            Ok(Some(h)) => {
                let pf = Arc::new(PackFile::new(file, h.cap));
                *slot = Some(pf.clone());
                Handle::Open(pf)
            }
            _ => Handle::Invalid,
        }
    }

    /// Drops this process's handle of a pack file if it is still `pf` (it was replaced).
    fn forget(&self, pack: usize, pf: &Arc<PackFile>) {
        let mut slot = self.packs[pack]
            .file
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, pf)) {
            *slot = None;
        }
    }

    /// Probes `pf`'s index for `key` (hashed `hash`). Under the lock (`bad` given), entries
    /// that do not verify are collected in `bad` and skipped; without it, they make the probe
    /// `Suspect`.
    fn probe(
        &self,
        pf: &PackFile,
        hash: u128,
        key: &[u8],
        mut bad: Option<&mut Vec<BadSlot>>,
    ) -> Result<Probe> {
        let cap = pf.cap;
        let mut pos = home(hash, cap);
        let mut first_tomb = None;
        let mut seen = 0;
        let mut chunk = [0u8; PROBE_CHUNK as usize * 8];
        while seen < cap {
            let n = PROBE_CHUNK.min(cap - pos).min(cap - seen);
            let buf = &mut chunk[..n as usize * 8];
            let path_of = || self.root.join(PACK_DIR);
            if !pread_exact(&pf.file, buf, PACK_HEADER_LEN + pos * 8)
                .map_err(|e| io_error("read", &path_of(), e))?
            {
                // The index is cut short: a truncated pack.
                return Ok(Probe::Suspect);
            }
            for i in 0..n {
                let at = pos + i;
                let raw = &buf[i as usize * 8..i as usize * 8 + 8];
                let slot = u64::from_le_bytes(raw.try_into().expect("8 bytes"));
                match slot {
                    SLOT_EMPTY => {
                        return Ok(match first_tomb {
                            Some(t) => Probe::Absent {
                                at: t,
                                fresh: false,
                            },
                            None => Probe::Absent { at, fresh: true },
                        })
                    }
                    SLOT_TOMB => {
                        first_tomb.get_or_insert(at);
                        continue;
                    }
                    SLOT_MOVED if bad.is_none() => return Ok(Probe::Moved),
                    _ => {}
                }
                if !slot_matches(slot, hash) {
                    continue;
                }
                match self.load_slot(pf, slot, hash)? {
                    Some(stored) => {
                        let found = Found {
                            pos: at,
                            slot,
                            stored,
                        };
                        if found.record().key == key {
                            return Ok(Probe::Found(found));
                        }
                    }
                    None => match bad.as_deref_mut() {
                        Some(bad) => bad.push(BadSlot { pos: at, slot }),
                        None => return Ok(Probe::Suspect),
                    },
                }
            }
            seen += n;
            pos = (pos + n) & (cap - 1);
        }
        // A full index (only a damaged one): no room to insert.
        Ok(match first_tomb {
            Some(t) => Probe::Absent {
                at: t,
                fresh: false,
            },
            None => Probe::Suspect,
        })
    }

    /// The record or file a slot points to, verified; `None` when it does not verify.
    fn load_slot(&self, pf: &PackFile, slot: u64, hash: u128) -> Result<Option<Stored>> {
        if slot_is_large(slot) {
            return Ok(match self.load(&self.entry_path(hash))? {
                Load::Found(e) => Some(Stored::Large(e)),
                Load::Missing | Load::Bad => None,
            });
        }
        let len = slot_len(slot);
        let off = slot_off(slot);
        if len < RECORD_HEADER_LEN || off < data_start(pf.cap) {
            return Ok(None);
        }
        let mut buf = vec![0u8; len];
        let whole = pread_exact(&pf.file, &mut buf, off)
            .map_err(|e| io_error("read", &self.root.join(PACK_DIR), e))?;
        Ok((whole && decode_record(&buf).is_some()).then_some(Stored::Small(buf)))
    }

    /// A lock-free read of `key`: `Ok(Some(found))`, `Ok(None)` for a miss, `Err(())`-like
    /// `None` inside when the locked path must decide.
    fn read_unlocked(&self, hash: u128, key: &[u8]) -> Result<Option<Option<Found>>> {
        let pack = pack_of(hash);
        for _ in 0..3 {
            let pf = match self.handle(pack) {
                Handle::Open(pf) => pf,
                Handle::Missing => return Ok(Some(None)),
                Handle::Invalid => return Ok(None),
            };
            match self.probe(&pf, hash, key, None)? {
                Probe::Found(f) => return Ok(Some(Some(f))),
                Probe::Absent { .. } => return Ok(Some(None)),
                Probe::Moved => self.forget(pack, &pf),
                Probe::Suspect => return Ok(None),
            }
        }
        Ok(None)
    }

    fn lock_shard(&self, pack: usize) -> Result<ShardGuard<'_>> {
        let mut guard = self.packs[pack]
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let file = own_lock_file(&mut guard, || {
            let path = self.root.join(LOCK_DIR).join(format!("{pack:02x}"));
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

    /// Takes a pack's lock and opens its current file, creating it (`create`) when missing
    /// and replacing it when its header does not verify. `None`: no pack file, not created.
    fn lock_pack(&self, pack: usize, create: bool) -> Result<Option<Locked<'_>>> {
        let guard = self.lock_shard(pack)?;
        let mut locked = Locked {
            inner: self,
            pack,
            pf: None,
            h: PackHeader::empty(MIN_CAP),
            _guard: guard,
        };
        let path = self.pack_path(pack);
        for _ in 0..4 {
            let cached = self.packs[pack]
                .file
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let cached = cached.filter(|pf| {
                // Removed or replaced behind the cache's back: open what the path names now.
                let current = pf.is_at(&path);
                if !current {
                    self.forget(pack, pf);
                }
                current
            });
            let (file, cached) = match cached {
                Some(pf) => (None, Some(pf)),
                None => match OpenOptions::new().read(true).write(true).open(&path) {
                    Ok(file) => (Some(file), None),
                    Err(e) if is_absent(&e) && !create => return Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        locked.write_pack(&PackImage::new(MIN_CAP))?;
                        continue;
                    }
                    Err(e) => return Err(io_error("open", &path, e)),
                },
            };
            let header = match (&file, &cached) {
                (Some(f), _) => read_header(f),
                (None, Some(pf)) => read_header(&pf.file),
                (None, None) => unreachable!("one of them is open"),
            }
            .map_err(|e| io_error("read", &path, e))?;
            match header {
                Some(h) if h.retired && cached.is_some() => {
                    // Replaced by another process's rebuild: open the new file.
                    self.forget(pack, cached.as_ref().expect("cached"));
                }
                Some(h) => {
                    let pf = match (file, cached) {
                        (Some(file), _) => {
                            let pf = Arc::new(PackFile::new(file, h.cap));
                            *self.packs[pack]
                                .file
                                .write()
                                .unwrap_or_else(PoisonError::into_inner) = Some(pf.clone());
                            pf
                        }
                        (None, Some(pf)) => pf,
                        (None, None) => unreachable!("one of them is open"),
                    };
                    locked.pf = Some(pf);
                    locked.h = h;
                    if h.retired {
                        // The file at the path, marked by a rebuild that died before its
                        // rename: it is the current one after all.
                        locked.h.retired = false;
                        locked.write_header()?;
                    }
                    locked.publish_counts();
                    return Ok(Some(locked));
                }
                None => {
                    // Truncated, corrupt or foreign: its entries are lost; start it afresh.
                    if let Some(pf) = &cached {
                        self.forget(pack, pf);
                    }
                    locked.pf = None;
                    locked.write_pack(&PackImage::new(MIN_CAP))?;
                }
            }
        }
        Err(Error::new(
            ErrorKind::Io,
            format!(
                "file:// cache: the pack file {} keeps changing under its lock",
                path.display()
            ),
        ))
    }

    /// Runs `live` on the live entry of `key` under its pack's lock, or `absent` when there
    /// is none (an expired one is removed first).
    fn with_live<T>(
        &self,
        hash: u128,
        key: &[u8],
        now: u64,
        absent: impl FnOnce() -> Result<T>,
        live: impl FnOnce(&mut Locked<'_>, Found) -> Result<T>,
    ) -> Result<T> {
        let Some(mut locked) = self.lock_pack(pack_of(hash), false)? else {
            return absent();
        };
        match locked.find_live(hash, key, now)? {
            Some(f) => live(&mut locked, f),
            None => absent(),
        }
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

    /// True when a reconciling scan is due (and this caller has claimed it): the time of the
    /// last one is shared through the index file.
    fn scan_due(&self) -> Result<bool> {
        self.update_index(|last_scan, now| {
            let due = now.saturating_sub(*last_scan) >= self.reconcile_interval_ms;
            if due {
                *last_scan = now;
            }
            due
        })
    }

    /// Runs `f(last_scan_ms, now_ms)` on the index file under its lock.
    fn update_index<R>(&self, f: impl FnOnce(&mut u64, u64) -> R) -> Result<R> {
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
            let mut last_scan = if n == INDEX_LEN && buf[0..4] == INDEX_MAGIC {
                u64::from_le_bytes(buf[24..32].try_into().expect("8 bytes"))
            } else {
                0
            };
            let r = f(&mut last_scan, unix_ms());
            let mut out = [0u8; INDEX_LEN];
            out[0..4].copy_from_slice(&INDEX_MAGIC);
            out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
            out[24..32].copy_from_slice(&last_scan.to_le_bytes());
            file.write_all_at(&out, 0)
                .map_err(|e| io_error("write", &path, e))?;
            Ok(r)
        })();
        funlock(file);
        result
    }

    /// Reads the large entry file at `path`. I/O errors other than "not there" are errors.
    fn load(&self, path: &Path) -> Result<Load> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if is_absent(&e) => return Ok(Load::Missing),
            Err(e) => return Err(io_error("open", path, e)),
        };
        self.read_entry(file, path)
    }

    /// Reads the large entry file `file`, opened from `path`, from the start.
    fn read_entry(&self, mut file: File, path: &Path) -> Result<Load> {
        let mut buf = vec![0u8; FIRST_READ];
        let mut n = 0;
        loop {
            let got = match file.read(&mut buf[n..]) {
                Ok(g) => g,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A directory where an entry belongs: foreign, not an I/O failure.
                Err(e) if e.raw_os_error() == Some(EISDIR) => return Ok(Load::Bad),
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
                return Ok(Load::Bad);
            };
            let total = header.total();
            if n == total {
                buf.truncate(n);
                let crc = u32::from_le_bytes(buf[28..32].try_into().expect("4 bytes"));
                if checksum(&buf) != crc {
                    return Ok(Load::Bad);
                }
                return Ok(Load::Found(Loaded { header, buf }));
            }
            if n > total {
                return Ok(Load::Bad);
            }
            if buf.len() < total {
                // Size the buffer from the file, never from the header alone.
                let size = file
                    .metadata()
                    .map_err(|e| io_error("inspect", path, e))?
                    .len();
                if size != total as u64 {
                    return Ok(Load::Bad);
                }
                buf.resize(total, 0);
            }
        }
        Ok(Load::Bad)
    }

    /// Writes `bytes` as the large entry file at `path` (temporary file, then rename). Call
    /// with the pack's lock held.
    fn write_entry(&self, shard: usize, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().expect("entry paths have a directory");
        let (tmp, mut file) =
            self.create_temp(dir, || make_dir(&self.shard_dir(shard), self.fix_modes))?;
        let written = (|| {
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
        self.rename_into_place(&tmp, path, dir)
    }

    /// Creates a new temporary file (mode 0600) in `dir`, calling `make` to create `dir` once
    /// when it is missing.
    fn create_temp(
        &self,
        dir: &Path,
        make: impl FnOnce() -> Result<()>,
    ) -> Result<(PathBuf, File)> {
        let mut make = Some(make);
        loop {
            let tmp = dir.join(temp_name());
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(f) => {
                    if self.fix_modes {
                        f.set_permissions(fs::Permissions::from_mode(0o600))
                            .map_err(|e| io_error("set the mode of", &tmp, e))?;
                    }
                    return Ok((tmp, f));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => match make.take() {
                    Some(make) => make()?,
                    None => return Err(io_error("create", &tmp, e)),
                },
                // A name left by a killed process whose pid came back: take the next one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error("create", &tmp, e)),
            }
        }
    }

    fn rename_into_place(&self, tmp: &Path, path: &Path, dir: &Path) -> Result<()> {
        if let Err(e) = fs::rename(tmp, path) {
            let _ = fs::remove_file(tmp);
            return Err(io_error("rename into place", path, e));
        }
        if self.fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("sync", dir, e))?;
        }
        Ok(())
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
            _ if key.len() > u32::MAX as usize => Err(Error::new(
                ErrorKind::InvalidKey,
                "key is too long for a file:// cache",
            )),
            _ => Ok(()),
        }
    }

    /// Lists one shard directory of large files: the hashes of the entry files in it, and
    /// removes stale temporary files.
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
                remove_if_stale(&entry);
            }
        }
        Ok(out)
    }

    /// Removes the stale temporary files of the pack directory.
    fn sweep_pack_temps(&self) {
        let dir = self.root.join(PACK_DIR);
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .as_encoded_bytes()
                    .starts_with(TEMP_PREFIX.as_bytes())
                {
                    remove_if_stale(&entry);
                }
            }
        }
    }

    /// The background scans' threads of this process: a child of `fork()` forgets its
    /// parent's (they are not here to join).
    fn own_scans(&self) -> MutexGuard<'_, (u64, Vec<std::thread::JoinHandle<()>>)> {
        let mut scans = self.scans.lock().unwrap_or_else(PoisonError::into_inner);
        let (generation, handles) = &mut *scans;
        crate::fork::forget_inherited(generation, handles);
        scans
    }

    /// Scans every pack: removes expired entries, corrupt records and files, orphaned large
    /// files (and old-format entry files), sets each pack's counters to what is left, and
    /// refills the eviction candidates (expired first, then oldest). Holds the eviction lock
    /// (the caller's `state`). Returns the entries and bytes found.
    fn scan(&self, state: &mut EvictState) -> Result<(u64, u64)> {
        let now = unix_ms();
        let mut totals = (0, 0);
        let mut candidates = Vec::new();
        self.sweep_pack_temps();
        for pack in 0..PACKS {
            if self.closing.load(Ordering::Relaxed) {
                // The cache was dropped: leave the rest for the next scan.
                return Ok(totals);
            }
            let Some(mut locked) = self.lock_pack(pack, false)? else {
                self.remove_orphans(pack, None)?;
                continue;
            };
            let live = locked.sweep(now)?;
            for w in &live {
                let r = w.found.record();
                candidates.push(Candidate {
                    key: r.key.into(),
                    written_at: r.written_at,
                    expires_at: r.expires_at,
                });
            }
            self.remove_orphans(pack, Some(&mut locked))?;
            totals.0 += locked.h.live_entries;
            totals.1 += locked.h.live_bytes;
        }
        state.candidates = order_candidates(candidates, now);
        state.collected_at = now;
        Ok(totals)
    }

    /// Removes the large files of `pack` that its index does not point to, with the pack's
    /// lock held (`locked`; `None`: the pack has no file, so none is pointed to).
    fn remove_orphans(&self, pack: usize, mut locked: Option<&mut Locked<'_>>) -> Result<()> {
        for shard in pack * (SHARDS / PACKS)..(pack + 1) * (SHARDS / PACKS) {
            for hash in self.list_shard(shard)? {
                let path = self.entry_path(hash);
                let keep = match (self.load(&path)?, locked.as_deref_mut()) {
                    (Load::Found(e), Some(l)) if hash_key(e.key()) == hash => {
                        let key = e.key().to_vec();
                        let pf = l.pf().clone();
                        matches!(
                            self.probe(&pf, hash, &key, Some(&mut Vec::new()))?,
                            Probe::Found(Found {
                                stored: Stored::Large(_),
                                ..
                            })
                        )
                    }
                    _ => false,
                };
                if !keep {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }

    /// Collects eviction candidates from every pack (expired first, then oldest).
    fn collect_candidates(&self, state: &mut EvictState) -> Result<()> {
        let now = unix_ms();
        let mut candidates = Vec::new();
        for pack in 0..PACKS {
            let Some(mut locked) = self.lock_pack(pack, false)? else {
                continue;
            };
            let (live, _bad) = locked.walk()?;
            for w in live {
                let r = w.found.record();
                candidates.push(Candidate {
                    key: r.key.into(),
                    written_at: r.written_at,
                    expires_at: r.expires_at,
                });
            }
        }
        state.candidates = order_candidates(candidates, now);
        state.collected_at = now;
        Ok(())
    }

    /// Removes `c` if it still holds the entry the scan saw. True when it did.
    fn remove_candidate(&self, c: &Candidate) -> Result<bool> {
        let hash = hash_key(&c.key);
        let Some(mut locked) = self.lock_pack(pack_of(hash), false)? else {
            return Ok(false);
        };
        match locked.find(hash, &c.key, unix_ms())? {
            Probe::Found(f) => {
                let r = f.record();
                if r.written_at == c.written_at && r.expires_at == c.expires_at {
                    locked.remove(f)?;
                    return Ok(true);
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Evicts until the counters are at 90% of the bounds. Holds the eviction lock.
    fn evict_locked(&self, state: &mut EvictState) -> Result<()> {
        self.refresh_counts();
        if unix_ms().saturating_sub(state.collected_at) > CANDIDATES_FRESH_MS {
            state.candidates.clear();
        }
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
                self.collect_candidates(state)?;
                scanned = true;
                continue;
            };
            if self.remove_candidate(&c)? {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Django's cull: at `max_entries` entries, removes `entries / cull_frequency` of them
    /// (expired first, then oldest), or all of them for a frequency of 0.
    fn cull(&self) -> Result<()> {
        let (Some(frequency), Some(max)) = (self.cull_frequency, self.max_entries) else {
            return Ok(());
        };
        let mut guard = self.lock_evict(true)?.expect("blocking lock");
        self.refresh_counts();
        let (entries, _) = self.estimate();
        let entries = entries.max(0) as u64;
        if entries < max {
            return Ok(());
        }
        if frequency == 0 {
            self.clear(b"")?;
            self.evictions.fetch_add(entries, Ordering::Relaxed);
            return Ok(());
        }
        self.collect_candidates(&mut guard.state)?;
        let mut removed = 0;
        while removed < entries / frequency {
            let Some(c) = guard.state.candidates.pop_front() else {
                break;
            };
            if self.remove_candidate(&c)? {
                removed += 1;
            }
        }
        self.evictions.fetch_add(removed, Ordering::Relaxed);
        guard.state.candidates.clear();
        Ok(())
    }

    /// Removes every entry whose key starts with `prefix` (all of them for an empty prefix),
    /// and every corrupt record or file.
    fn clear(&self, prefix: &[u8]) -> Result<()> {
        let now = unix_ms();
        for pack in 0..PACKS {
            let Some(mut locked) = self.lock_pack(pack, false)? else {
                if prefix.is_empty() {
                    self.remove_orphans(pack, None)?;
                }
                continue;
            };
            locked.rebuild(now, &|key: &[u8]| !key.starts_with(prefix))?;
            if prefix.is_empty() {
                self.remove_orphans(pack, Some(&mut locked))?;
            }
        }
        Ok(())
    }
}

/// Expired candidates first, then the oldest; at most [`MAX_CANDIDATES`].
fn order_candidates(mut candidates: Vec<Candidate>, now: u64) -> VecDeque<Candidate> {
    candidates.sort_unstable_by_key(|c| {
        let live = c.expires_at == 0 || c.expires_at > now;
        (live, c.written_at)
    });
    candidates.truncate(MAX_CANDIDATES);
    candidates.into()
}

fn remove_if_stale(entry: &fs::DirEntry) {
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

/// A pack file being built in memory: header, index, records.
struct PackImage {
    h: PackHeader,
    index: Vec<u64>,
    data: Vec<u8>,
}

impl PackImage {
    fn new(cap: u64) -> PackImage {
        PackImage {
            h: PackHeader::empty(cap),
            index: vec![SLOT_EMPTY; cap as usize],
            data: Vec::new(),
        }
    }

    /// Adds an entry: a record (small) or the slot of a large file.
    fn add(&mut self, hash: u128, found: &Found) {
        let cap = self.h.cap;
        let slot = match &found.stored {
            Stored::Small(rec) => {
                let off = data_start(cap) + self.data.len() as u64;
                self.data.extend_from_slice(rec);
                self.data.resize(align(self.data.len() as u64) as usize, 0);
                slot_small(tag_of(hash), rec.len(), off)
            }
            Stored::Large(_) => found.slot,
        };
        let mut pos = home(hash, cap);
        while self.index[pos as usize] != SLOT_EMPTY {
            pos = (pos + 1) & (cap - 1);
        }
        self.index[pos as usize] = slot;
        self.h.live_entries += 1;
        self.h.used += 1;
        self.h.live_bytes += found.size();
        self.h.data_end = data_start(cap) + self.data.len() as u64;
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.h.data_end as usize);
        out.extend_from_slice(&self.h.encode());
        for s in &self.index {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend_from_slice(&self.data);
        out
    }
}

/// A pack under its lock, with its header as read; the operations of one write.
struct Locked<'a> {
    inner: &'a Inner,
    pack: usize,
    pf: Option<Arc<PackFile>>,
    h: PackHeader,
    _guard: ShardGuard<'a>,
}

impl Locked<'_> {
    fn pf(&self) -> &Arc<PackFile> {
        self.pf.as_ref().expect("an open pack")
    }

    fn path(&self) -> PathBuf {
        self.inner.pack_path(self.pack)
    }

    fn publish_counts(&self) {
        let p = &self.inner.packs[self.pack];
        p.entries
            .store(self.h.live_entries as i64, Ordering::Relaxed);
        p.bytes.store(self.h.live_bytes as i64, Ordering::Relaxed);
    }

    fn write_header(&mut self) -> Result<()> {
        self.pf()
            .file
            .write_all_at(&self.h.encode(), 0)
            .map_err(|e| io_error("write", &self.path(), e))?;
        self.publish_counts();
        Ok(())
    }

    fn write_slot(&self, pos: u64, slot: u64) -> Result<()> {
        let pf = self.pf();
        pf.file
            .write_all_at(&slot.to_le_bytes(), PACK_HEADER_LEN + pos * 8)
            .map_err(|e| io_error("write", &self.path(), e))?;
        if self.inner.fsync {
            pf.file
                .sync_data()
                .map_err(|e| io_error("sync", &self.path(), e))?;
        }
        Ok(())
    }

    /// Probes for `key` under the lock; corrupt entries met on the way are removed first.
    /// The answer is `Found` or `Absent`, never `Moved` or `Suspect`.
    fn find(&mut self, hash: u128, key: &[u8], _now: u64) -> Result<Probe> {
        let pf = self.pf().clone();
        let mut bad = Vec::new();
        let mut probe = self.inner.probe(&pf, hash, key, Some(&mut bad))?;
        if !bad.is_empty() {
            self.remove_bad(&bad, hash)?;
            let pf = self.pf().clone();
            probe = self.inner.probe(&pf, hash, key, Some(&mut Vec::new()))?;
        }
        match probe {
            Probe::Suspect | Probe::Moved => {
                // Only a damaged index gets here (cut short, or full): rebuild it from
                // what verifies, then look again.
                self.rebuild(unix_ms(), &|_| true)?;
                let pf = self.pf().clone();
                match self.inner.probe(&pf, hash, key, Some(&mut Vec::new()))? {
                    Probe::Suspect | Probe::Moved => Err(Error::new(
                        ErrorKind::Io,
                        format!(
                            "file:// cache: the index of {} stays unreadable after a rebuild",
                            self.path().display()
                        ),
                    )),
                    p => Ok(p),
                }
            }
            p => Ok(p),
        }
    }

    /// Removes the entries of `bad` (they failed their checks) from the index and counters.
    fn remove_bad(&mut self, bad: &[BadSlot], hash: u128) -> Result<()> {
        for b in bad {
            self.h.live_entries = self.h.live_entries.saturating_sub(1);
            if !slot_is_large(b.slot) {
                let len = slot_len(b.slot) as u64;
                self.h.live_bytes = self.h.live_bytes.saturating_sub(len);
                self.h.dead_bytes += align(len);
            }
        }
        self.write_header()?;
        for b in bad {
            self.write_slot(b.pos, SLOT_TOMB)?;
            if slot_is_large(b.slot) {
                let _ = fs::remove_file(self.inner.entry_path(hash));
            }
        }
        Ok(())
    }

    /// The live entry of `key`, removing it first when it has expired.
    fn find_live(&mut self, hash: u128, key: &[u8], now: u64) -> Result<Option<Found>> {
        match self.find(hash, key, now)? {
            Probe::Found(f) if f.expired(now) => {
                self.remove(f)?;
                Ok(None)
            }
            Probe::Found(f) => Ok(Some(f)),
            _ => Ok(None),
        }
    }

    /// Appends a record after the last one; returns its offset. The header is updated in
    /// memory only: the caller writes it before it points a slot at the record.
    fn append(&mut self, rec: &[u8]) -> Result<u64> {
        let off = self.h.data_end;
        let end = off + align(rec.len() as u64);
        if end > MAX_DATA {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "file:// cache: pack file {} is full (16 GiB)",
                    self.path().display()
                ),
            ));
        }
        self.pf()
            .file
            .write_all_at(rec, off)
            .map_err(|e| io_error("write", &self.path(), e))?;
        self.h.data_end = end;
        Ok(off)
    }

    /// Stores `key` (hashed `hash`) where `probe` found it or found room for it.
    fn store(
        &mut self,
        hash: u128,
        key: &[u8],
        value: &[u8],
        expires_at: u64,
        now: u64,
        probe: Probe,
    ) -> Result<()> {
        let (pos, old) = match probe {
            Probe::Found(f) => (f.pos, Some(f)),
            Probe::Absent { at, fresh } => {
                self.h.used += u64::from(fresh);
                self.h.live_entries += 1;
                (at, None)
            }
            // `find` never answers these; an error rather than a panic all the same.
            Probe::Moved | Probe::Suspect => {
                return Err(Error::new(
                    ErrorKind::Io,
                    "file:// cache: an undecided index probe reached a write",
                ))
            }
        };
        let old_large = old
            .as_ref()
            .is_some_and(|f| matches!(f.stored, Stored::Large(_)));
        if let Some(f) = &old {
            self.h.live_bytes = self.h.live_bytes.saturating_sub(f.size());
            if let Stored::Small(rec) = &f.stored {
                self.h.dead_bytes += align(rec.len() as u64);
            }
        }
        let slot = if fits_in_pack(key, value) {
            let rec = encode_record(key, value, expires_at, now);
            let off = self.append(&rec)?;
            self.h.live_bytes += rec.len() as u64;
            slot_small(tag_of(hash), rec.len(), off)
        } else {
            let bytes = encode(key, value, expires_at, now)?;
            let path = self.inner.entry_path(hash);
            self.inner.write_entry(shard_of(hash), &path, &bytes)?;
            self.h.live_bytes += bytes.len() as u64;
            slot_large(hash)
        };
        self.write_header()?;
        if old.as_ref().map(|f| f.slot) != Some(slot) {
            self.write_slot(pos, slot)?;
        }
        if old_large && !slot_is_large(slot) {
            let _ = fs::remove_file(self.inner.entry_path(hash));
        }
        Ok(())
    }

    /// Removes an entry found under this lock.
    fn remove(&mut self, f: Found) -> Result<()> {
        self.h.live_entries = self.h.live_entries.saturating_sub(1);
        self.h.live_bytes = self.h.live_bytes.saturating_sub(f.size());
        if let Stored::Small(rec) = &f.stored {
            self.h.dead_bytes += align(rec.len() as u64);
        }
        self.write_header()?;
        self.write_slot(f.pos, SLOT_TOMB)?;
        if let Stored::Large(e) = &f.stored {
            let _ = fs::remove_file(self.inner.entry_path(hash_key(e.key())));
        }
        Ok(())
    }

    /// Rebuilds the pack first when its index is three quarters full or half its records
    /// are dead.
    fn maybe_rebuild(&mut self, now: u64) -> Result<()> {
        let h = &self.h;
        let data = h.data_end - data_start(h.cap);
        let crowded = (h.used + 1) * 4 > h.cap * 3;
        let wasteful = h.dead_bytes > DEAD_SLACK && h.dead_bytes * 2 > data;
        let full = h.data_end + SMALL_MAX as u64 > MAX_DATA;
        if crowded || wasteful || full {
            self.rebuild(now, &|_| true)?;
        }
        Ok(())
    }

    /// Every slot of the pack's index, read in one go.
    fn read_index(&self) -> Result<Vec<u64>> {
        let cap = self.pf().cap;
        let mut raw = vec![0u8; cap as usize * 8];
        let whole = pread_exact(&self.pf().file, &mut raw, PACK_HEADER_LEN)
            .map_err(|e| io_error("read", &self.path(), e))?;
        if !whole {
            raw.fill(0);
        }
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }

    /// Every entry the index points to, verified, and the slots that do not verify.
    fn walk(&mut self) -> Result<(Vec<Walked>, Vec<BadSlot>)> {
        let index = self.read_index()?;
        let pf = self.pf().clone();
        let start = data_start(pf.cap);
        let len = self.h.data_end.saturating_sub(start);
        let mut data = vec![0u8; len as usize];
        let got = pf
            .file
            .read_at(&mut data, start)
            .map_err(|e| io_error("read", &self.path(), e))?;
        data.truncate(got);
        let mut live = Vec::new();
        let mut bad = Vec::new();
        let mut large_files = None;
        for (pos, &slot) in index.iter().enumerate() {
            let pos = pos as u64;
            if slot == SLOT_EMPTY || slot == SLOT_TOMB {
                continue;
            }
            let found = if slot == SLOT_MOVED {
                None
            } else if slot_is_large(slot) {
                let files = match &mut large_files {
                    Some(files) => files,
                    None => large_files.insert(self.large_files()?),
                };
                self.large_of_slot(files, pos, slot)?
            } else {
                let off = slot_off(slot).wrapping_sub(start) as usize;
                data.get(off..off.saturating_add(slot_len(slot)))
                    .filter(|rec| decode_record(rec).is_some())
                    .map(|rec| Found {
                        pos,
                        slot,
                        stored: Stored::Small(rec.to_vec()),
                    })
            };
            match found {
                Some(found) => {
                    let hash = hash_key(found.record().key);
                    if pack_of(hash) == self.pack && slot_matches(slot, hash) {
                        live.push(Walked {
                            pos,
                            slot,
                            hash,
                            found,
                        });
                    } else {
                        bad.push(BadSlot { pos, slot });
                    }
                }
                None => bad.push(BadSlot { pos, slot }),
            }
        }
        // Oldest first, the order the records were written in.
        live.sort_by_key(|w| (w.found.record().written_at, slot_off(w.slot)));
        Ok((live, bad))
    }

    /// The large entry files of this pack, by the 48 bits of their hash that slots hold.
    fn large_files(&self) -> Result<HashMap<u64, Vec<u128>>> {
        let mut files: HashMap<u64, Vec<u128>> = HashMap::new();
        let first = self.pack * (SHARDS / PACKS);
        for shard in first..first + SHARDS / PACKS {
            for hash in self.inner.list_shard(shard)? {
                files.entry(slot_large(hash)).or_default().push(hash);
            }
        }
        Ok(files)
    }

    /// The large entry a slot points to. A large slot holds only 48 bits of its key's hash:
    /// the file is the one whose name shares them and whose key hashes to its name.
    fn large_of_slot(
        &self,
        files: &HashMap<u64, Vec<u128>>,
        pos: u64,
        slot: u64,
    ) -> Result<Option<Found>> {
        for &hash in files.get(&slot).map_or(&[][..], Vec::as_slice) {
            if let Load::Found(e) = self.inner.load(&self.inner.entry_path(hash))? {
                if hash_key(e.key()) == hash {
                    return Ok(Some(Found {
                        pos,
                        slot,
                        stored: Stored::Large(e),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Removes expired entries and slots that do not verify, and sets the header's counters
    /// to what is left. Returns the live entries (oldest first).
    fn sweep(&mut self, now: u64) -> Result<Vec<Walked>> {
        let (live, bad) = self.walk()?;
        let (live, expired): (Vec<_>, Vec<_>) =
            live.into_iter().partition(|w| !w.found.expired(now));
        let small_live: u64 = live
            .iter()
            .filter(|w| !slot_is_large(w.slot))
            .map(|w| align(slot_len(w.slot) as u64))
            .sum();
        let index = self.read_index()?;
        let h = &mut self.h;
        h.live_entries = live.len() as u64;
        h.live_bytes = live.iter().map(|w| w.found.size()).sum();
        h.used = index.iter().filter(|&&s| s != SLOT_EMPTY).count() as u64;
        h.dead_bytes = (h.data_end - data_start(h.cap)).saturating_sub(small_live);
        self.write_header()?;
        for b in &bad {
            self.write_slot(b.pos, SLOT_TOMB)?;
        }
        for w in &expired {
            self.write_slot(w.pos, SLOT_TOMB)?;
            if slot_is_large(w.slot) {
                let _ = fs::remove_file(self.inner.entry_path(w.hash));
            }
        }
        self.maybe_rebuild(now)?;
        Ok(live)
    }

    /// Writes a new pack file with the live entries whose key `keep` accepts (dropping
    /// expired and corrupt ones and every dead record) and renames it over the old one.
    fn rebuild(&mut self, now: u64, keep: &dyn Fn(&[u8]) -> bool) -> Result<()> {
        let (live, _bad) = self.walk()?;
        let (kept, dropped): (Vec<_>, Vec<_>) = live
            .into_iter()
            .partition(|w| !w.found.expired(now) && keep(w.found.record().key));
        let want = (kept.len() as u64 * 2 + 2).next_power_of_two();
        let mut image = PackImage::new(want.clamp(MIN_CAP, MAX_CAP));
        let mut by_age: Vec<&Walked> = kept.iter().collect();
        by_age.sort_by_key(|w| slot_off(w.slot));
        for w in by_age {
            image.add(w.hash, &w.found);
        }
        self.write_pack(&image)?;
        for w in dropped {
            if slot_is_large(w.slot) {
                let _ = fs::remove_file(self.inner.entry_path(w.hash));
            }
        }
        Ok(())
    }

    /// Replaces the pack file by `image`: a temporary file renamed over it. The old file is
    /// marked retired first and its slots moved after, so that every process reopens.
    fn write_pack(&mut self, image: &PackImage) -> Result<()> {
        let dir = self.inner.root.join(PACK_DIR);
        let path = self.path();
        let (tmp, mut file) = self
            .inner
            .create_temp(&dir, || make_dir(&dir, self.inner.fix_modes))?;
        let written = (|| {
            file.write_all(&image.bytes())?;
            if self.inner.fsync {
                file.sync_data()?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("write", &tmp, e));
        }
        if let Some(old) = self.pf.clone() {
            let mut retired = self.h;
            retired.retired = true;
            let _ = old.file.write_all_at(&retired.encode(), 0);
        }
        self.inner.rename_into_place(&tmp, &path, &dir)?;
        if let Some(old) = self.pf.take() {
            let moved = vec![0xffu8; old.cap as usize * 8];
            let _ = old.file.write_all_at(&moved, PACK_HEADER_LEN);
        }
        let pf = Arc::new(PackFile::new(file, image.h.cap));
        *self.inner.packs[self.pack]
            .file
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(pf.clone());
        self.pf = Some(pf);
        self.h = image.h;
        self.publish_counts();
        Ok(())
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
    /// waits for at most one pack's walk; see [`FileScan`].
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

/// A `file://` key scan: the packs in turn, each walked whole under its lock, its matching
/// live keys then handed out `count` at a time. Every key lives in one pack (by its hash),
/// so a key present for the whole scan is returned exactly once; a key written or removed
/// meanwhile is returned if its pack had it when the scan reached that pack.
struct FileScan {
    backend: Arc<FileBackend>,
    pattern: KeyPattern,
    count: usize,
    next_pack: usize,
    found: std::vec::IntoIter<Vec<u8>>,
}

impl KeyScan for FileScan {
    fn next_page(&mut self) -> Result<Option<Vec<Vec<u8>>>> {
        while self.found.len() == 0 && self.next_pack < PACKS {
            let keys = self
                .backend
                .inner
                .pack_keys(self.next_pack, &self.pattern)?;
            self.next_pack += 1;
            self.found = keys.into_iter();
        }
        let page: Vec<Vec<u8>> = self.found.by_ref().take(self.count).collect();
        Ok((!page.is_empty()).then_some(page))
    }
}

impl Inner {
    /// The live keys of `pack` that match `pattern`, read under the pack's lock.
    fn pack_keys(&self, pack: usize, pattern: &KeyPattern) -> Result<Vec<Vec<u8>>> {
        let Some(mut locked) = self.lock_pack(pack, false)? else {
            return Ok(Vec::new());
        };
        let now = unix_ms();
        let (live, _bad) = locked.walk()?;
        Ok(live
            .iter()
            .filter(|w| !w.found.expired(now))
            .map(|w| w.found.record().key)
            .filter(|k| pattern.matches(k))
            .map(<[u8]>::to_vec)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every single-byte flip, truncation and extension of `bytes` fails `accepts`.
    fn assert_rejects_damage(bytes: &[u8], accepts: impl Fn(&[u8]) -> bool) {
        assert!(accepts(bytes));
        for i in 0..bytes.len() {
            let mut bad = bytes.to_vec();
            bad[i] ^= 0x41;
            assert!(!accepts(&bad), "flipped byte {i}");
        }
        for n in 0..bytes.len() {
            assert!(!accepts(&bytes[..n]), "truncated to {n}");
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(!accepts(&long), "extended");
    }

    #[test]
    fn entry_round_trips_and_rejects_damage() {
        let bytes = encode(b"k", b"value", 7, 3).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 1 + 5);
        assert_eq!(decode_entry(&bytes), Some((7, &b"k"[..], &b"value"[..])));
        assert_rejects_damage(&bytes, |b| decode_entry(b).is_some());
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

    #[test]
    fn records_round_trip_and_reject_damage() {
        let rec = encode_record(b"key", b"value", 5, 9);
        assert_eq!(rec.len(), RECORD_HEADER_LEN + 8);
        let r = decode_record(&rec).unwrap();
        assert_eq!(
            (r.expires_at, r.written_at, r.key, r.value),
            (5, 9, &b"key"[..], &b"value"[..])
        );
        assert_rejects_damage(&rec, |b| decode_record(b).is_some());
        // Deadlines past the 48-bit field are "in 8,000 years", not wrapped around.
        let far = encode_record(b"k", b"v", u64::MAX, 1);
        assert_eq!(decode_record(&far).unwrap().expires_at, MAX_U48);
    }

    #[test]
    fn pack_headers_round_trip_and_reject_nonsense() {
        let h = PackHeader {
            retired: true,
            cap: 1024,
            data_end: data_start(1024) + 400,
            live_entries: 3,
            live_bytes: 300,
            dead_bytes: 100,
            used: 5,
        };
        assert_eq!(PackHeader::decode(&h.encode()), Some(h));
        for i in 0..PACK_HEADER_LEN as usize {
            let mut bad = h.encode();
            bad[i] ^= 0x04;
            assert_eq!(PackHeader::decode(&bad), None, "flipped byte {i}");
        }
        let odd = PackHeader { cap: 1000, ..h };
        assert_eq!(PackHeader::decode(&odd.encode()), None);
        let short = PackHeader { data_end: 10, ..h };
        assert_eq!(PackHeader::decode(&short.encode()), None);
    }

    #[test]
    fn slots_keep_their_fields_apart() {
        let hash = hash_key(b"some key");
        let small = slot_small(tag_of(hash), 2000, data_start(64) + 4 * 1000);
        assert!(!slot_is_large(small) && slot_matches(small, hash));
        assert_eq!(
            (slot_len(small), slot_off(small)),
            (2000, data_start(64) + 4000)
        );
        let large = slot_large(hash);
        assert!(slot_is_large(large) && slot_matches(large, hash));
        assert!(![SLOT_EMPTY, SLOT_TOMB, SLOT_MOVED].contains(&large));
        assert!(!slot_matches(large, hash_key(b"another key")));
        assert_eq!(pack_of(hash), shard_of(hash) >> 4);
    }
}
