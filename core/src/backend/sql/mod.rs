//! `sqlite://` and `postgres://`: one cache table, modelled on Rails Solid Cache.
//!
//! Both backends keep every entry in one table:
//!
//! | column | SQLite | PostgreSQL | what |
//! |---|---|---|---|
//! | `id` | `INTEGER PRIMARY KEY` | `BIGSERIAL PRIMARY KEY` | insertion order, for FIFO trimming |
//! | `key_hash` | `INTEGER` | `BIGINT` | [`key_hash`] of the key, `UNIQUE` index |
//! | `key` | `BLOB` | `BYTEA` | the full key, compared on every read |
//! | `value` | `BLOB` | `BYTEA` | the value bytes |
//! | `expires_at` | `INTEGER` | `BIGINT` | unix milliseconds, `NULL` never expires |
//! | `byte_size` | `INTEGER` | `BIGINT` | `len(key) + len(value)`, checked on read |
//!
//! `set` is one upsert on the hash (`INSERT … ON CONFLICT (key_hash) DO UPDATE`); `add`,
//! `touch`, `incr`/`decr` and `delete` are each one atomic statement; the many-key
//! operations are one statement each (IN lists on SQLite, arrays on PostgreSQL). Every
//! statement also compares the key itself, so a hash collision can never return another
//! key's value: the colliding write replaces the row (a cache may forget), the read misses.
//!
//! A row whose value is `NULL` or whose `byte_size` does not match its key and value is
//! corrupt: it reads as a miss and is removed.
//!
//! The size bounds (`max_entries`, `max_bytes`) are kept without a `COUNT(*)` per write:
//! every so many writes (a few percent of the bound, at most 1,000) one writer estimates the
//! table's size from a sample of the `key_hash` index (hashes are uniform, so the share of
//! the hash space the top 1,024 hashes cover gives the row count; their average size gives
//! the bytes) and deletes the oldest rows by `id`, in batches, until the estimate is back
//! under the bound. The same pass purges expired rows from a moving window of the table.
//!
//! With `cull_frequency=N` (Django's `CULL_FREQUENCY`, which needs `max_entries`) the entry
//! bound is exact instead, as Django's database cache keeps it: a write of a new key that
//! finds `max_entries` rows first deletes 1/N of them (at least one: the expired rows, then
//! the oldest by `id`), or all of them with N = 0, in the same write transaction. The row
//! count comes from a counter row in `{table}_count` that triggers on the cache table keep
//! exact in the writing statement's own transaction, whoever writes (created with the
//! table by the first opener with `cull_frequency`), so the check costs one primary-key
//! read, never a `COUNT(*)`.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use self::postgres::PostgresBackend;
#[cfg(feature = "sqlite")]
pub use self::sqlite::SqliteBackend;

/// The table a SQL cache uses unless the URL names another (`?table=…`).
pub const DEFAULT_TABLE: &str = "polycache_cache";

/// The byte bound of a SQL cache when neither `max_entries` nor `max_bytes` is given:
/// 256 MiB of keys and values, Solid Cache's default.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// Rows of the `key_hash` index read to estimate the table's size.
const SAMPLES: usize = 1024;
/// Rows one trimming statement looks at or deletes.
const TRIM_BATCH: i64 = 1000;
/// Trimming batches one pass may delete before it yields to other writers.
const MAX_TRIM_BATCHES: usize = 100;
/// Estimate-and-delete rounds one trimming pass makes at most.
const TRIM_ROUNDS: usize = 3;
/// The most writes between two size checks.
const MAX_CHECK_INTERVAL: u64 = 1000;

/// The 64-bit hash a key is indexed by: the first 8 bytes of its SHA-256, read as a signed
/// big-endian integer, exactly as Rails Solid Cache computes `key_hash`.
///
/// ```
/// use polycache::backend::sql::key_hash;
/// // int.from_bytes(hashlib.sha256(b":1:k").digest()[:8], "big", signed=True) in Python
/// assert_eq!(key_hash(b":1:k"), 3_536_781_329_338_843_721);
/// ```
pub fn key_hash(key: &[u8]) -> i64 {
    let digest = Sha256::digest(key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

pub(crate) use crate::backend::server::{column_problems, Column};

/// The problem of a cache table without its unique index on `key_hash`.
pub(crate) fn missing_unique_index(table: &str) -> String {
    format!(
        "the table {table} has no unique index on key_hash: every write fails (ON CONFLICT); \
         run `polycache create-table` or create it"
    )
}

/// The blocking pool of a SQL backend: at most `max` connections, a caller waiting `wait`
/// for one while all are in use.
pub(crate) fn blocking_pool<C>(max: usize, wait: Duration) -> crate::pool::Pool<C> {
    crate::pool::Pool::new(
        crate::pool::Limits::bounded(max, Some(wait)),
        |max, wait| {
            Error::new(
                crate::error::ErrorKind::Timeout,
                format!("all {max} connections of the pool stayed busy for {wait:?}"),
            )
        },
    )
}

/// Milliseconds since the unix epoch, the unit of `expires_at`.
pub(crate) fn now_ms() -> i64 {
    i64::try_from(crate::clock::unix_ms()).unwrap_or(i64::MAX)
}

/// The `expires_at` of an entry written at `now` with `ttl`; `None` never expires.
pub(crate) fn expires_at(now: i64, ttl: Option<Duration>) -> Option<i64> {
    let ttl = ttl?;
    let ms = i64::try_from(ttl.as_millis()).ok()?.max(1);
    now.checked_add(ms)
}

/// True when an entry with `expires_at` is still live at `now`.
#[inline]
pub(crate) fn live(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.map_or(true, |t| t > now)
}

/// The `byte_size` a row of `key` and `value` must carry.
#[inline]
/// What `ttl` answers for the `expires_at` of a live row (`None`: no row), at `now`.
pub(crate) fn time_to_live(found: Option<Option<i64>>, now: i64) -> crate::expiry::TimeToLive {
    use crate::expiry::TimeToLive;
    match found {
        None => TimeToLive::Missing,
        Some(None) => TimeToLive::Forever,
        Some(Some(at)) => match u64::try_from(at.saturating_sub(now)) {
            Ok(ms) if ms > 0 => TimeToLive::Left(Duration::from_millis(ms)),
            _ => TimeToLive::Missing,
        },
    }
}

pub(crate) fn byte_size(key: &[u8], value: &[u8]) -> i64 {
    (key.len() as i64).saturating_add(value.len() as i64)
}

/// What a read found under a key.
pub(crate) enum Found {
    Live(Vec<u8>),
    Missing,
    /// A row that fails its checks, by id.
    Corrupt(i64),
}

impl Found {
    /// Files one row of a `get_many`: a live value goes into `out` at each of `positions`
    /// (a key asked for more than once has several), a corrupt row's id into `corrupt`.
    pub(crate) fn place(
        self,
        positions: &[usize],
        out: &mut [Option<crate::value::Value>],
        corrupt: &mut Vec<i64>,
    ) {
        match self {
            Found::Live(v) => {
                let v = crate::value::Value::from(v);
                for &p in positions {
                    out[p] = Some(v.clone());
                }
            }
            Found::Missing => {}
            Found::Corrupt(id) => corrupt.push(id),
        }
    }

    /// Checks a row: its value must be present and its size match; then its expiry decides.
    pub(crate) fn check(
        key: &[u8],
        value: Option<&[u8]>,
        expires: Option<i64>,
        size: i64,
        now: i64,
        id: i64,
    ) -> Found {
        match value {
            Some(v) if size == byte_size(key, v) => {
                if live(expires, now) {
                    Found::Live(v.to_vec())
                } else {
                    Found::Missing
                }
            }
            _ => Found::Corrupt(id),
        }
    }
}

/// A validated table name, ready to splice into SQL.
#[derive(Debug, Clone)]
pub(crate) struct TableName {
    /// The quoted, possibly schema-qualified name: `"polycache_cache"`.
    pub quoted: String,
    /// The quoted name of the unique `key_hash` index, without the schema.
    pub index: String,
    /// The index, schema-qualified, for catalog look-ups.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub qualified_index: String,
    /// The quoted, schema-qualified name of the row-counter table `{table}_count`.
    pub count_table: String,
    /// `{table}_count` unquoted and unqualified: the stem of its triggers' names.
    pub count_stem: String,
}

impl TableName {
    /// Validates `raw` (default [`DEFAULT_TABLE`]): letters, digits and `_`, not starting
    /// with a digit, at most 50 bytes; `schema.table` when `allow_schema`.
    pub(crate) fn parse(raw: Option<String>, allow_schema: bool, scheme: &str) -> Result<Self> {
        let raw = raw.unwrap_or_else(|| DEFAULT_TABLE.to_owned());
        let parts: Vec<&str> = raw.split('.').collect();
        let valid_ident = |s: &str| {
            !s.is_empty()
                && s.len() <= 50
                && !s.as_bytes()[0].is_ascii_digit()
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        let ok = match parts.as_slice() {
            [t] => valid_ident(t),
            [s, t] => allow_schema && valid_ident(s) && valid_ident(t),
            _ => false,
        };
        if !ok {
            let form = if allow_schema {
                "a table name of letters, digits and '_' (at most 50), optionally schema.table"
            } else {
                "a table name of letters, digits and '_' (at most 50)"
            };
            return Err(Error::config(format!(
                "invalid value {raw:?} for option 'table' of {scheme}://: expected {form}"
            )));
        }
        let table = parts[parts.len() - 1];
        let index = format!("\"{table}_key_hash\"");
        let count_stem = format!("{table}_count");
        let (quoted, qualified_index, count_table) = match parts.as_slice() {
            [s, t] => (
                format!("\"{s}\".\"{t}\""),
                format!("\"{s}\".{index}"),
                format!("\"{s}\".\"{count_stem}\""),
            ),
            _ => (
                format!("\"{table}\""),
                index.clone(),
                format!("\"{count_stem}\""),
            ),
        };
        Ok(TableName {
            quoted,
            index,
            qualified_index,
            count_table,
            count_stem,
        })
    }
}

/// The size bounds of a SQL cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// The estimated entry bound the trimmer keeps (`None` under an exact [`Cull`]).
    pub max_entries: Option<u64>,
    pub max_bytes: Option<u64>,
    /// Django's exact cull, when `cull_frequency` is given.
    pub cull: Option<Cull>,
}

impl Bounds {
    /// Reads `max_entries`, `max_bytes` and `cull_frequency`; with no bound at all, the
    /// byte bound is [`DEFAULT_MAX_BYTES`].
    pub(crate) fn take(options: &mut crate::Options, scheme: &str) -> Result<Bounds> {
        let max_entries = options.positive_u64("max_entries")?;
        let max_bytes = options.positive_u64("max_bytes")?;
        let cull = match (options.u64("cull_frequency")?, max_entries) {
            (None, _) => None,
            (Some(frequency), Some(max_entries)) => Some(Cull {
                max_entries,
                frequency,
            }),
            (Some(_), None) => {
                return Err(options.error(
                    "cull_frequency",
                    format!("option 'cull_frequency' of {scheme}:// needs max_entries"),
                ))
            }
        };
        Ok(Bounds {
            max_entries: max_entries.filter(|_| cull.is_none()),
            max_bytes: if max_entries.is_none() && max_bytes.is_none() {
                Some(DEFAULT_MAX_BYTES)
            } else {
                max_bytes
            },
            cull,
        })
    }
}

/// Django's cull: the exact entry bound of a SQL cache with `cull_frequency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cull {
    pub max_entries: u64,
    /// 1/`frequency` of the rows go when the table is full; 0 empties it.
    pub frequency: u64,
}

impl Cull {
    /// What a write of a new key into a table of `rows` rows must remove first: nothing,
    /// `Some(n)` rows (expired ones, then the oldest), or `None` for all of them.
    pub(crate) fn share(&self, rows: u64) -> Option<u64> {
        if rows < self.max_entries {
            Some(0)
        } else {
            // A frequency of 0 (no quotient) empties the table.
            rows.checked_div(self.frequency).map(|n| n.max(1))
        }
    }
}

/// The table's size as the trimmer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Estimate {
    pub entries: u64,
    pub bytes: u64,
}

impl Estimate {
    /// Estimates the table from the rows with the highest `key_hash` values.
    ///
    /// `sample` holds `(key_hash, byte_size)` in descending hash order, as many as
    /// [`SAMPLES`] or the whole table when it is smaller. `id_span` (`max(id) - min(id) + 1`)
    /// is an upper bound of the row count that is exact when no row in the middle was
    /// deleted: it wins when the sample (±3% at one sigma) puts the count within 12.5% of
    /// it, the sample wins when it finds many fewer rows.
    pub(crate) fn from_sample(sample: &[(i64, i64)], id_span: Option<u64>) -> Estimate {
        let k = sample.len();
        let sum: u64 = sample.iter().map(|&(_, s)| s.max(0) as u64).sum();
        if k < SAMPLES {
            return Estimate {
                entries: k as u64,
                bytes: sum,
            };
        }
        let cutoff = sample[k - 1].0;
        // The k highest of n uniform hashes span about k/n of the hash space.
        let covered = (i64::MAX as f64 - cutoff as f64 + 1.0) / 18_446_744_073_709_551_616.0;
        let mut entries = if covered > 0.0 {
            ((k - 1) as f64 / covered) as u64
        } else {
            u64::MAX
        };
        if let Some(span) = id_span {
            // The span is exact unless rows in the middle went away (deletes, or ids a
            // PostgreSQL upsert consumed); within the sample's noise, trust it.
            if entries >= span - span / 8 {
                entries = span;
            }
        }
        entries = entries.max(k as u64);
        let bytes = (sum as f64 / k as f64 * entries as f64) as u64;
        Estimate { entries, bytes }
    }
}

/// `max(id) - min(id) + 1`: an upper bound of the row count (ids are unique).
pub(crate) fn id_span(lo: Option<i64>, hi: Option<i64>) -> Option<u64> {
    match (lo, hi) {
        (Some(lo), Some(hi)) => Some(hi.saturating_sub(lo).saturating_add(1).max(0) as u64),
        _ => Some(0),
    }
}

/// How much a trimming pass has to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Excess {
    pub entries: u64,
    pub bytes: u64,
}

impl Excess {
    pub(crate) fn is_none(&self) -> bool {
        self.entries == 0 && self.bytes == 0
    }
}

/// When to trim, and what trimming has done: shared by both SQL backends.
///
/// Each backend instance counts its own writes; once they reach the next check, one
/// thread runs a trimming pass (the others carry on). The pass itself is serialized
/// across processes by the database (SQLite's write lock, a PostgreSQL advisory lock).
#[derive(Debug)]
pub(crate) struct Trimmer {
    bounds: Bounds,
    writes: AtomicU64,
    next_check: AtomicU64,
    running: AtomicBool,
    /// The `id` the next purge of expired rows starts after.
    cursor: AtomicI64,
    evictions: AtomicU64,
}

impl Trimmer {
    pub(crate) fn new(bounds: Bounds) -> Trimmer {
        let t = Trimmer {
            bounds,
            writes: AtomicU64::new(0),
            next_check: AtomicU64::new(1),
            running: AtomicBool::new(false),
            cursor: AtomicI64::new(0),
            evictions: AtomicU64::new(0),
        };
        t.reschedule(Estimate::default());
        t
    }

    /// Counts `n` writes; true when the caller should run a trimming pass now (it then
    /// owns the pass and must call [`Trimmer::finish`]).
    #[inline]
    pub(crate) fn note_writes(&self, n: u64) -> bool {
        let total = self.writes.fetch_add(n, Ordering::Relaxed) + n;
        total >= self.next_check.load(Ordering::Relaxed)
            && !self.running.swap(true, Ordering::Acquire)
    }

    /// Claims a pass regardless of the write count; false when one is running.
    pub(crate) fn claim(&self) -> bool {
        !self.running.swap(true, Ordering::Acquire)
    }

    /// Ends a pass: schedules the next check from the size the table has now.
    pub(crate) fn finish(&self, after: Option<Estimate>) {
        self.writes.store(0, Ordering::Relaxed);
        if let Some(est) = after {
            self.reschedule(est);
        }
        self.running.store(false, Ordering::Release);
    }

    /// What a table of size `est` must lose: down to 99% of each bound it exceeds, so the
    /// next few writes do not trigger another pass at once.
    pub(crate) fn excess(&self, est: Estimate) -> Excess {
        let over = |have: u64, bound: Option<u64>| match bound {
            Some(b) if have > b => have - (b - b / 100),
            _ => 0,
        };
        Excess {
            entries: over(est.entries, self.bounds.max_entries),
            bytes: over(est.bytes, self.bounds.max_bytes),
        }
    }

    /// Checks again after a quarter of the room left (several processes may be writing),
    /// but at least every 2.5% of the bound and at most every [`MAX_CHECK_INTERVAL`] writes.
    fn reschedule(&self, est: Estimate) {
        let avg = est
            .bytes
            .checked_div(est.entries)
            .map_or(1024, |a| a.max(1));
        let cap = self
            .bounds
            .max_entries
            .unwrap_or(u64::MAX)
            .min(self.bounds.max_bytes.map_or(u64::MAX, |b| b / avg));
        let room = cap.saturating_sub(est.entries);
        let next = (room / 4).max(cap / 40).clamp(1, MAX_CHECK_INTERVAL);
        self.next_check.store(next, Ordering::Relaxed);
    }

    /// Where the purge of expired rows goes on from.
    pub(crate) fn cursor(&self) -> i64 {
        self.cursor.load(Ordering::Relaxed)
    }

    pub(crate) fn set_cursor(&self, id: i64) {
        self.cursor.store(id, Ordering::Relaxed);
    }

    pub(crate) fn evicted(&self, n: u64) {
        self.evictions.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

/// Walks the oldest rows, window by window, deciding how far to delete.
#[derive(Debug, Default)]
pub(crate) struct OldestWalk {
    pub removed: Estimate,
}

impl OldestWalk {
    /// Takes rows `(id, byte_size)` in id order until `excess` is covered; returns the id up
    /// to which rows go, and whether that covers the excess.
    pub(crate) fn take(&mut self, rows: &[(i64, i64)], excess: Excess) -> (Option<i64>, bool) {
        let mut cutoff = None;
        for &(id, size) in rows {
            if self.removed.entries >= excess.entries && self.removed.bytes >= excess.bytes {
                return (cutoff, true);
            }
            self.removed.entries += 1;
            self.removed.bytes += size.max(0) as u64;
            cutoff = Some(id);
        }
        let done = self.removed.entries >= excess.entries && self.removed.bytes >= excess.bytes;
        (cutoff, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_solid_caches() {
        // int.from_bytes(hashlib.sha256(b"hello").digest()[:8], "big", signed=True)
        assert_eq!(key_hash(b"hello"), 3_238_736_544_897_475_342);
        assert_eq!(key_hash(b""), -2_039_914_840_885_289_964);
    }

    #[test]
    fn expiry_arithmetic() {
        assert_eq!(expires_at(1000, None), None);
        assert_eq!(
            expires_at(1000, Some(Duration::from_micros(10))),
            Some(1001)
        );
        assert_eq!(expires_at(1000, Some(Duration::from_secs(2))), Some(3000));
        assert_eq!(expires_at(i64::MAX - 1, Some(Duration::from_secs(1))), None);
        assert_eq!(expires_at(0, Some(Duration::MAX)), None);
        assert!(live(None, 5) && live(Some(6), 5) && !live(Some(5), 5));
    }

    #[test]
    fn table_names_are_validated() {
        let t = TableName::parse(None, false, "sqlite").unwrap();
        assert_eq!(t.quoted, "\"polycache_cache\"");
        assert_eq!(t.index, "\"polycache_cache_key_hash\"");
        let t = TableName::parse(Some("app.cache".into()), true, "postgres").unwrap();
        assert_eq!(t.quoted, "\"app\".\"cache\"");
        assert_eq!(t.qualified_index, "\"app\".\"cache_key_hash\"");
        for bad in [
            "",
            "1abc",
            "a b",
            "x;drop table y",
            "a.b",
            "\"q\"",
            &"x".repeat(51),
        ] {
            let e = TableName::parse(Some(bad.into()), false, "sqlite").unwrap_err();
            assert!(
                e.is_configuration() && e.to_string().contains("table"),
                "{e}"
            );
        }
        assert!(TableName::parse(Some("a.b.c".into()), true, "postgres").is_err());
    }

    #[test]
    fn small_tables_are_counted_exactly() {
        let rows: Vec<(i64, i64)> = (0..10).map(|i| (100 - i, 7)).collect();
        assert_eq!(
            Estimate::from_sample(&rows, Some(99)),
            Estimate {
                entries: 10,
                bytes: 70
            }
        );
    }

    #[test]
    fn sampled_estimate_is_close_for_uniform_hashes() {
        let n = 200_000u64;
        let mut hashes: Vec<i64> = (0..n)
            .map(|i| key_hash(format!("key-{i}").as_bytes()))
            .collect();
        hashes.sort_unstable_by(|a, b| b.cmp(a));
        let sample: Vec<(i64, i64)> = hashes.iter().take(SAMPLES).map(|&h| (h, 100)).collect();
        let est = Estimate::from_sample(&sample, None);
        let err = (est.entries as f64 - n as f64).abs() / n as f64;
        assert!(err < 0.1, "estimated {} of {n}", est.entries);
        assert_eq!(est.bytes, est.entries * 100);
        // A span close to the sample's count is taken as exact; a much larger one is not.
        assert_eq!(
            Estimate::from_sample(&sample, Some(n + n / 20)).entries,
            n + n / 20
        );
        assert_eq!(Estimate::from_sample(&sample, Some(2 * n)), est);
    }

    #[test]
    fn excess_and_schedule() {
        let t = Trimmer::new(Bounds {
            max_entries: Some(1000),
            max_bytes: None,
            cull: None,
        });
        assert!(t
            .excess(Estimate {
                entries: 1000,
                bytes: 0
            })
            .is_none());
        assert_eq!(
            t.excess(Estimate {
                entries: 1100,
                bytes: 0
            }),
            Excess {
                entries: 110,
                bytes: 0
            }
        );
        // Empty table: a quarter of the room.
        t.finish(Some(Estimate::default()));
        assert_eq!(t.next_check.load(Ordering::Relaxed), 250);
        // Full table: 2.5% of the bound.
        t.finish(Some(Estimate {
            entries: 1000,
            bytes: 0,
        }));
        assert_eq!(t.next_check.load(Ordering::Relaxed), 25);
        assert!(!t.note_writes(24));
        assert!(t.note_writes(1));
        assert!(!t.note_writes(100), "a pass is already running");
        t.finish(None);
        assert!(t.note_writes(25));
    }

    #[test]
    fn cull_shares_are_djangos() {
        let cull = |frequency| Cull {
            max_entries: 30,
            frequency,
        };
        assert_eq!(cull(3).share(29), Some(0));
        assert_eq!(cull(3).share(30), Some(10));
        assert_eq!(cull(3).share(31), Some(10));
        assert_eq!(cull(100).share(30), Some(1));
        assert_eq!(cull(0).share(30), None);
        assert_eq!(cull(0).share(3), Some(0));
    }

    #[test]
    fn oldest_walk_stops_when_covered() {
        let mut w = OldestWalk::default();
        let rows = [(1, 10), (2, 10), (3, 10), (4, 10)];
        let need = Excess {
            entries: 1,
            bytes: 25,
        };
        assert_eq!(w.take(&rows, need), (Some(3), true));
        let mut w = OldestWalk::default();
        assert_eq!(
            w.take(
                &rows[..2],
                Excess {
                    entries: 3,
                    bytes: 0
                }
            ),
            (Some(2), false)
        );
        assert_eq!(
            w.take(
                &rows[2..],
                Excess {
                    entries: 3,
                    bytes: 0
                }
            ),
            (Some(3), true)
        );
    }
}
