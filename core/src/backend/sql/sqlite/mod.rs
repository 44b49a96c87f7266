//! `sqlite:///path/to/cache.db`: the cache table in a SQLite database in WAL mode.

mod conn;
mod queries;

use super::{
    blocking_pool, byte_size, expires_at, id_span, key_hash, now_ms, Bounds, Cull, Estimate, Found,
    OldestWalk, TableName, Trimmer, MAX_TRIM_BATCHES, SAMPLES, TRIM_BATCH, TRIM_ROUNDS,
};
use crate::backend::{apply_delta, not_found, parse_i64, Backend, IdScan, KeyScan};
use crate::error::{Error, ErrorKind, Result};
use crate::expiry::TimeToLive;
use crate::location::{Location, Options};
use crate::pattern::KeyPattern;
use crate::pool::Pool;
use crate::value::Value;
use queries::Queries;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a statement waits for another connection's write lock unless `busy_timeout`
/// says otherwise: 5 seconds.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections one backend opens at most unless `pool_size` says otherwise.
const DEFAULT_POOL_SIZE: usize = 16;
/// Keys per `IN (…)` list (SQLite allows 32,766 parameters per statement).
const IN_CHUNK: usize = 500;
/// Rows per multi-row `INSERT` (five parameters each).
const VALUES_CHUNK: usize = 500;

/// The `sqlite://` backend: one table in a SQLite database file.
///
/// The database runs in WAL mode with `synchronous=NORMAL` (a crash loses at most the last
/// commits, never consistency) and a busy timeout after which a locked database reports
/// [`ErrorKind::Timeout`]. Several threads and several processes may share one file: each
/// statement is atomic, `incr` is one `UPDATE` and `add` one upsert.
///
/// Opening writes nothing: the database file, its missing parent directories (mode `0700`,
/// as `file://` creates its directory) and the table are created by the first write, or
/// explicitly by [`SqliteBackend::create_table`]. Until then reads answer misses.
///
/// `Send + Sync`; clones share the connection pool. No method panics.
///
/// ```
/// use polycache::{Cache, Expiry};
/// let dir = std::env::temp_dir().join(format!("polycache-sqlite-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let cache = Cache::open(&format!("sqlite://{}/cache.db?max_entries=1000", dir.display())).unwrap();
/// cache.set("k", b"v", Expiry::Never).unwrap();
/// assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"v"[..]));
/// cache.set("n", b"41", Expiry::Never).unwrap();
/// assert_eq!(cache.incr("n", 1).unwrap(), 42);
/// # drop(cache);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Clone)]
pub struct SqliteBackend {
    inner: Arc<Inner>,
}

struct Inner {
    /// A file path, or `:memory:`.
    path: String,
    location: String,
    busy_timeout: Duration,
    synchronous: &'static str,
    q: Queries,
    pool: Pool<Connection>,
    trim: Trimmer,
    cull: Option<Cull>,
    /// The table is known to exist (opening found it, or a write created it).
    ready: AtomicBool,
}

/// Reads a row's value, expiry and size, checking them.
fn decode(
    key: &[u8],
    value: ValueRef<'_>,
    expires: ValueRef<'_>,
    size: ValueRef<'_>,
    now: i64,
    id: i64,
) -> Found {
    let expires = match expires {
        ValueRef::Null => None,
        ValueRef::Integer(t) => Some(t),
        _ => return Found::Corrupt(id),
    };
    let ValueRef::Integer(size) = size else {
        return Found::Corrupt(id);
    };
    let value = match value {
        ValueRef::Blob(b) | ValueRef::Text(b) => Some(b),
        _ => None,
    };
    Found::check(key, value, expires, size, now, id)
}

fn int_or_zero(v: ValueRef<'_>) -> i64 {
    match v {
        ValueRef::Integer(i) => i,
        _ => 0,
    }
}

/// Settings of a [`SqliteBackend`], as read from its URL.
struct Settings {
    path: String,
    location: String,
    table: TableName,
    bounds: Bounds,
    busy_timeout: Duration,
    synchronous: &'static str,
    pool_size: usize,
}

impl SqliteBackend {
    /// Opens `sqlite:///absolute/path.db` (or `sqlite://:memory:`) with the options
    /// `table`, `max_entries`, `max_bytes`, `cull_frequency` (Django's exact cull, see the
    /// [module](super)), `busy_timeout` (seconds), `synchronous` (`off`, `normal`, `full`)
    /// and `pool_size`. Writes nothing (see the type's docs).
    ///
    /// Errors: [`ErrorKind::Configuration`] for a bad URL or option, an existing file that
    /// cannot be opened as a database, or a path whose directory cannot be created;
    /// [`ErrorKind::Timeout`] when the database stays locked.
    pub fn open(location: &Location, options: &mut Options) -> Result<SqliteBackend> {
        let redacted = location.redacted();
        if location.username().is_some() || location.password().is_some() {
            return Err(Error::config(format!(
                "sqlite:// takes no user or password: {redacted}"
            )));
        }
        let path = match (location.hosts(), location.path()) {
            ([], p) if p.len() > 1 => p.to_owned(),
            ([h], "" | "/") if h == ":memory:" => ":memory:".to_owned(),
            _ => {
                return Err(Error::config(format!(
                    "sqlite:// takes an absolute file path, as in sqlite:///var/cache/app.db, \
                     or sqlite://:memory:; got {redacted}"
                )))
            }
        };
        let table = TableName::parse(options.take("table"), false, "sqlite")
            .map_err(|e| options.blame("table", e))?;
        let bounds = Bounds::take(options, "sqlite")?;
        let busy_timeout = match options.seconds("busy_timeout")? {
            None => DEFAULT_BUSY_TIMEOUT,
            Some(Some(d)) => d,
            Some(None) => {
                return Err(options.error(
                    "busy_timeout",
                    "invalid value for option 'busy_timeout' of sqlite://: expected a number \
                     of seconds",
                ))
            }
        };
        let synchronous = match options.take("synchronous").as_deref().map(str::trim) {
            None => "NORMAL",
            Some(v) if v.eq_ignore_ascii_case("normal") => "NORMAL",
            Some(v) if v.eq_ignore_ascii_case("full") => "FULL",
            Some(v) if v.eq_ignore_ascii_case("off") => "OFF",
            Some(v) => {
                return Err(options.error(
                    "synchronous",
                    format!(
                        "invalid value {v:?} for option 'synchronous' of sqlite://: expected \
                         off, normal or full"
                    ),
                ))
            }
        };
        let pool_size = options
            .positive_u64("pool_size")?
            .map_or(DEFAULT_POOL_SIZE, |n| n.min(1024) as usize);
        SqliteBackend::with_settings(Settings {
            path,
            location: redacted,
            table,
            bounds,
            busy_timeout,
            synchronous,
            pool_size,
        })
    }

    fn with_settings(s: Settings) -> Result<SqliteBackend> {
        // An in-memory database lives in its one connection.
        let pool_size = if s.path == ":memory:" { 1 } else { s.pool_size };
        let inner = Inner {
            path: s.path,
            location: s.location,
            busy_timeout: s.busy_timeout,
            synchronous: s.synchronous,
            q: Queries::new(s.table),
            // Waiting for a connection is bounded as a statement's wait for a lock is.
            pool: blocking_pool(pool_size, s.busy_timeout.max(Duration::from_secs(1))),
            trim: Trimmer::new(s.bounds),
            cull: s.bounds.cull,
            ready: AtomicBool::new(false),
        };
        let backend = SqliteBackend {
            inner: Arc::new(inner),
        };
        let opening = |e: Error| {
            if e.kind() == ErrorKind::Timeout {
                e
            } else {
                Error::config(format!(
                    "cannot open the SQLite database of {}",
                    backend.inner.location
                ))
                .with_source(e)
            }
        };
        if backend.inner.path == ":memory:" {
            // Nothing outlives the process: the table is made at once.
            let conn = backend.connect().map_err(opening)?;
            backend.create_on(&conn)?;
            backend.inner.ready.store(true, Ordering::Release);
            backend.inner.pool.seed(conn);
        } else if Path::new(&backend.inner.path).exists() {
            let conn = backend.connect().map_err(opening)?;
            let found = backend.table_exists(&conn).map_err(opening)?;
            backend.inner.ready.store(found, Ordering::Release);
            backend.inner.pool.seed(conn);
        } else {
            backend.check_creatable()?;
        }
        Ok(backend)
    }

    /// Creates the table and its index if they do not exist (the first write also does
    /// this), and with `cull_frequency` the row counter; creates the database file and its
    /// missing directories first.
    pub fn create_table(&self) -> Result<()> {
        self.prepare().map(drop)
    }

    /// The statements [`SqliteBackend::create_table`] runs, without running them.
    pub fn create_table_sql(&self) -> Vec<String> {
        let mut sql = vec![self.inner.q.create.clone()];
        if self.inner.cull.is_some() {
            sql.push(self.inner.q.count_create.clone());
        }
        sql
    }

    /// True when the table (and with `cull_frequency` its row counter) exists.
    fn table_exists(&self, conn: &Connection) -> Result<bool> {
        let t = &self.inner.q.table;
        let mut tables = vec![&t.quoted];
        if self.inner.cull.is_some() {
            tables.push(&t.count_table);
        }
        for table in tables {
            match conn.prepare(&format!("SELECT 1 FROM {table} LIMIT 0")) {
                Ok(_) => {}
                Err(e) if e.to_string().contains("no such table") => return Ok(false),
                Err(e) => return Err(self.fail("looking for the table", e)),
            }
        }
        Ok(true)
    }

    /// Fails unless the database's directory exists or can be created: the nearest existing
    /// ancestor must be a directory. A missing path is reported at open, not at first write.
    fn check_creatable(&self) -> Result<()> {
        let path = Path::new(&self.inner.path);
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d.as_os_str().is_empty() {
                break;
            }
            match std::fs::metadata(d) {
                Ok(m) if m.is_dir() => return Ok(()),
                Ok(_) => {
                    return Err(Error::config(format!(
                        "cannot create the SQLite database of {}: {} is not a directory",
                        self.inner.location,
                        d.display()
                    )))
                }
                Err(_) => dir = d.parent(),
            }
        }
        Ok(())
    }

    /// Creates the database's missing parent directories, mode 0700 (as `file://` does).
    fn create_dirs(&self) -> Result<()> {
        let Some(dir) = Path::new(&self.inner.path).parent() else {
            return Ok(());
        };
        if dir.as_os_str().is_empty() || dir.is_dir() {
            return Ok(());
        }
        let created = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)));
        created.map_err(|e| {
            Error::config(format!(
                "cannot create the directory {} of the SQLite database of {}: {e}",
                dir.display(),
                self.inner.location
            ))
        })
    }

    fn create_on(&self, conn: &Connection) -> Result<()> {
        // One transaction: a caller that finds the table must find its unique index too, or
        // its upsert fails ("ON CONFLICT clause does not match any PRIMARY KEY or UNIQUE
        // constraint": a reader marked the table ready between the two statements).
        let created =
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {} COMMIT;", self.inner.q.create));
        if created.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        created.map_err(|e| self.fail("creating the table", e))?;
        if self.inner.cull.is_some() {
            conn.execute_batch(&self.inner.q.count_create)
                .map_err(|e| self.fail("creating the row counter", e))?;
        }
        Ok(())
    }

    /// Runs the write statement `sql` of `key` (an upsert); when this cache culls, in a
    /// transaction that makes room first. Returns the rows written.
    fn write_row(
        &self,
        conn: &mut Connection,
        what: &str,
        sql: &str,
        key: &[u8],
        row: &[&dyn rusqlite::ToSql],
    ) -> Result<usize> {
        match self.inner.cull {
            Some(cull) => self.culled(conn, cull, what, key, |tx| {
                tx.prepare_cached(sql)?.execute(row)
            }),
            None => conn
                .prepare_cached(sql)
                .and_then(|mut s| s.execute(row))
                .map_err(|e| self.fail(what, e)),
        }
    }

    /// Runs `write` of `key` in one write transaction, after Django's cull made room when
    /// the key is new and the table full.
    fn culled<T>(
        &self,
        conn: &mut Connection,
        cull: Cull,
        what: &str,
        key: &[u8],
        write: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let run = || -> rusqlite::Result<(T, u64)> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let culled = self.make_room(&tx, cull, key)?;
            let out = write(&tx)?;
            tx.commit()?;
            Ok((out, culled))
        };
        let (out, culled) = run().map_err(|e| self.fail(what, e))?;
        self.inner.trim.evicted(culled);
        Ok(out)
    }

    /// Django's cull before a write of `key`: when no row holds its hash (the write adds a
    /// row) and the counter says the table is full, deletes the share of rows [`Cull`]
    /// names, expired ones first. Returns how many rows went.
    fn make_room(&self, tx: &Transaction<'_>, cull: Cull, key: &[u8]) -> rusqlite::Result<u64> {
        let q = &self.inner.q;
        if tx.prepare_cached(&q.hash_exists)?.exists([key_hash(key)])? {
            return Ok(0);
        }
        let rows: i64 = tx
            .prepare_cached(&q.count_read)?
            .query_row([], |r| r.get(0))?;
        Ok(match cull.share(rows.max(0) as u64) {
            Some(0) => 0,
            None => tx.prepare_cached(&q.clear_all)?.execute([])? as u64,
            Some(share) => {
                let expired = tx.prepare_cached(&q.cull_expired)?.execute([now_ms()])? as u64;
                let oldest = match share.checked_sub(expired) {
                    Some(n) if n > 0 => tx.prepare_cached(&q.cull_oldest)?.execute([n as i64])?,
                    _ => 0,
                };
                expired + oldest as u64
            }
        })
    }

    /// The exact number of rows in the table, expired ones included (a `COUNT(*)`: for
    /// monitoring and tests, not for every write).
    pub fn entry_count(&self) -> Result<u64> {
        let Some(conn) = self.read_conn()? else {
            return Ok(0);
        };
        conn.query_row(&self.inner.q.count, [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.fail("counting rows", e))
    }

    /// Runs a trimming pass now: purges a window of expired rows and, when the table is
    /// over a bound, deletes the oldest rows. Writes run one on their own every so often.
    pub fn trim(&self) -> Result<()> {
        if !self.inner.trim.claim() {
            return Ok(());
        }
        let Some(mut conn) = self.read_conn()? else {
            self.inner.trim.finish(None);
            return Ok(());
        };
        match self.trim_pass(&mut conn) {
            Ok(est) => {
                self.inner.trim.finish(Some(est));
                Ok(())
            }
            Err(e) => {
                self.inner.trim.finish(None);
                Err(e)
            }
        }
    }

    fn read(&self, conn: &Connection, hash: i64, key: &[u8], now: i64) -> rusqlite::Result<Found> {
        let mut stmt = conn.prepare_cached(&self.inner.q.get)?;
        let mut rows = stmt.query(params![hash, key])?;
        match rows.next()? {
            None => Ok(Found::Missing),
            Some(r) => Ok(decode(
                key,
                r.get_ref(1)?,
                r.get_ref(2)?,
                r.get_ref(3)?,
                now,
                r.get(0)?,
            )),
        }
    }

    /// Removes a row that failed its checks, if it still fails them; best effort.
    #[cold]
    fn remove_corrupt(&self, conn: &Connection, id: i64) {
        log::warn!(
            "polycache: removing a corrupt row (id {id}) from {}",
            self.inner.location
        );
        if let Err(e) = conn
            .prepare_cached(&self.inner.q.delete_corrupt)
            .and_then(|mut s| s.execute([id]))
        {
            log::warn!("polycache: could not remove a corrupt row: {e}");
        }
    }

    /// Counts writes and runs a trimming pass when one is due; its failure is only logged.
    #[inline]
    fn wrote(&self, conn: &mut Connection, n: u64) {
        if self.inner.trim.note_writes(n) {
            match self.trim_pass(conn) {
                Ok(est) => self.inner.trim.finish(Some(est)),
                Err(e) => {
                    self.inner.trim.finish(None);
                    log::warn!("polycache: trimming {} failed: {e}", self.inner.location);
                }
            }
        }
    }

    /// One trimming pass in one write transaction, so passes of several processes
    /// serialize; returns the table's estimated size afterwards.
    fn trim_pass(&self, conn: &mut Connection) -> Result<Estimate> {
        let q = &self.inner.q;
        let trim = &self.inner.trim;
        let run = |conn: &mut Connection| -> rusqlite::Result<Estimate> {
            let now = now_ms();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let cursor = trim.cursor();
            let end: Option<i64> = tx
                .prepare_cached(&q.sweep_end)?
                .query_row(params![cursor, TRIM_BATCH], |r| r.get(0))?;
            match end {
                Some(end) => {
                    tx.prepare_cached(&q.sweep_delete)?
                        .execute(params![cursor, end, now])?;
                    trim.set_cursor(end);
                }
                None => trim.set_cursor(0),
            }
            let estimate = |tx: &rusqlite::Transaction<'_>| -> rusqlite::Result<Estimate> {
                let sample = tx
                    .prepare_cached(&q.sample)?
                    .query_map([SAMPLES as i64], |r| {
                        Ok((int_or_zero(r.get_ref(0)?), int_or_zero(r.get_ref(1)?)))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let (lo, hi): (Option<i64>, Option<i64>) = tx
                    .prepare_cached(&q.id_span)?
                    .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(Estimate::from_sample(&sample, id_span(lo, hi)))
            };
            let mut est = estimate(&tx)?;
            // A sample's error is a share of the whole table: after a big cut, look again.
            for _ in 0..TRIM_ROUNDS {
                let excess = trim.excess(est);
                if excess.is_none() {
                    break;
                }
                let mut walk = OldestWalk::default();
                let mut last = i64::MIN;
                for _ in 0..MAX_TRIM_BATCHES {
                    let rows = tx
                        .prepare_cached(&q.oldest)?
                        .query_map(params![last, TRIM_BATCH], |r| {
                            Ok((r.get::<_, i64>(0)?, int_or_zero(r.get_ref(1)?)))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    let (cutoff, done) = walk.take(&rows, excess);
                    if let Some(cutoff) = cutoff {
                        let n = tx.prepare_cached(&q.delete_upto)?.execute([cutoff])?;
                        trim.evicted(n as u64);
                        last = cutoff;
                    }
                    if done || (rows.len() as i64) < TRIM_BATCH {
                        break;
                    }
                }
                est = estimate(&tx)?;
            }
            tx.commit()?;
            Ok(est)
        };
        run(conn).map_err(|e| self.fail("trimming", e))
    }
}

impl Backend for SqliteBackend {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        let hash = key_hash(key);
        let Some(conn) = self.read_conn()? else {
            return Ok(None);
        };
        match self
            .read(&conn, hash, key, now_ms())
            .map_err(|e| self.fail("get", e))?
        {
            Found::Live(v) => Ok(Some(Value::from(v))),
            Found::Missing => Ok(None),
            Found::Corrupt(id) => {
                self.remove_corrupt(&conn, id);
                Ok(None)
            }
        }
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let hash = key_hash(key);
        let exp = expires_at(now_ms(), ttl);
        let mut conn = self.conn()?;
        let row = params![hash, key, value, exp, byte_size(key, value)];
        self.write_row(&mut conn, "set", &self.inner.q.set, key, row)?;
        self.wrote(&mut conn, 1);
        Ok(())
    }

    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let hash = key_hash(key);
        let now = now_ms();
        let exp = expires_at(now, ttl);
        let mut conn = self.conn()?;
        let row = params![hash, key, value, exp, byte_size(key, value), now];
        let n = self.write_row(&mut conn, "add", &self.inner.q.add, key, row)?;
        if n > 0 {
            self.wrote(&mut conn, 1);
        }
        Ok(n > 0)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        let Some(conn) = self.read_conn()? else {
            return Ok(false);
        };
        conn.prepare_cached(&self.inner.q.delete)
            .and_then(|mut s| {
                s.query_row(params![key_hash(key), key, now_ms()], |r| {
                    r.get::<_, bool>(0)
                })
                .optional()
            })
            .map(|found| found.unwrap_or(false))
            .map_err(|e| self.fail("delete", e))
    }

    fn has_key(&self, key: &[u8]) -> Result<bool> {
        let Some(conn) = self.read_conn()? else {
            return Ok(false);
        };
        conn.prepare_cached(&self.inner.q.has_key)
            .and_then(|mut s| s.exists(params![key_hash(key), key, now_ms()]))
            .map_err(|e| self.fail("has_key", e))
    }

    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let now = now_ms();
        let Some(conn) = self.read_conn()? else {
            return Ok(false);
        };
        conn.prepare_cached(&self.inner.q.touch)
            .and_then(|mut s| s.execute(params![key_hash(key), key, expires_at(now, ttl), now]))
            .map(|n| n > 0)
            .map_err(|e| self.fail("touch", e))
    }

    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        let hash = key_hash(key);
        let Some(conn) = self.read_conn()? else {
            return Err(not_found(key));
        };
        // A refusal is classified by reading the row; if it changed meanwhile so that the
        // update would now succeed, try again (bounded).
        for _ in 0..16 {
            let now = now_ms();
            let updated: Option<Vec<u8>> = conn
                .prepare_cached(&self.inner.q.incr)
                .and_then(|mut s| {
                    s.query_row(params![hash, key, delta, now], |r| r.get(0))
                        .optional()
                })
                .map_err(|e| self.fail("incr", e))?;
            if let Some(v) = updated {
                return parse_i64(&v).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Backend,
                        "incr stored a value that is not decimal",
                    )
                });
            }
            match self
                .read(&conn, hash, key, now)
                .map_err(|e| self.fail("incr", e))?
            {
                Found::Live(v) => {
                    apply_delta(&v, delta)?;
                }
                Found::Missing => return Err(not_found(key)),
                Found::Corrupt(id) => {
                    self.remove_corrupt(&conn, id);
                    return Err(not_found(key));
                }
            }
        }
        Err(Error::new(
            ErrorKind::Backend,
            "incr lost the race with concurrent writers 16 times in a row",
        ))
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>> {
        let mut out: Vec<Option<Value>> = vec![None; keys.len()];
        if keys.is_empty() {
            return Ok(out);
        }
        let mut wanted: HashMap<&[u8], Vec<usize>> = HashMap::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            wanted.entry(*k).or_default().push(i);
        }
        let unique: Vec<&[u8]> = {
            let mut seen = std::collections::HashSet::with_capacity(keys.len());
            keys.iter().copied().filter(|k| seen.insert(*k)).collect()
        };
        let now = now_ms();
        let Some(conn) = self.read_conn()? else {
            return Ok(out);
        };
        let mut corrupt = Vec::new();
        for chunk in unique.chunks(IN_CHUNK) {
            let mut run = || -> rusqlite::Result<()> {
                let mut stmt = conn.prepare_cached(&self.inner.q.get_many(chunk.len()))?;
                for (i, k) in chunk.iter().enumerate() {
                    stmt.raw_bind_parameter(i + 1, key_hash(k))?;
                }
                let mut rows = stmt.raw_query();
                while let Some(r) = rows.next()? {
                    let ValueRef::Blob(key) = r.get_ref(0)? else {
                        continue;
                    };
                    let Some(positions) = wanted.get(key) else {
                        continue;
                    };
                    let found = decode(
                        key,
                        r.get_ref(1)?,
                        r.get_ref(2)?,
                        r.get_ref(3)?,
                        now,
                        r.get(4)?,
                    );
                    found.place(positions, &mut out, &mut corrupt);
                }
                Ok(())
            };
            run().map_err(|e| self.fail("get_many", e))?;
        }
        for id in corrupt {
            self.remove_corrupt(&conn, id);
        }
        Ok(out)
    }

    fn set_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<Vec<usize>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        // The last value given for a key wins, as with separate sets.
        let mut last: HashMap<&[u8], usize> = HashMap::with_capacity(items.len());
        for (i, (k, _)) in items.iter().enumerate() {
            last.insert(k, i);
        }
        let rows: Vec<&(&[u8], &[u8])> = items
            .iter()
            .enumerate()
            .filter(|(i, (k, _))| last[k] == *i)
            .map(|(_, item)| item)
            .collect();
        let exp = expires_at(now_ms(), ttl);
        let mut conn = self.conn()?;
        if let Some(cull) = self.inner.cull {
            // Row by row, each new key culling as Django's database cache does.
            let mut culled = 0;
            let mut run = || -> rusqlite::Result<()> {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                for (k, v) in &rows {
                    culled += self.make_room(&tx, cull, k)?;
                    tx.prepare_cached(&self.inner.q.set)?.execute(params![
                        key_hash(k),
                        k,
                        v,
                        exp,
                        byte_size(k, v)
                    ])?;
                }
                tx.commit()
            };
            run().map_err(|e| self.fail("set_many", e))?;
            self.inner.trim.evicted(culled);
            self.wrote(&mut conn, rows.len() as u64);
            return Ok(Vec::new());
        }
        let run = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for chunk in rows.chunks(VALUES_CHUNK) {
                let mut stmt = tx.prepare_cached(&self.inner.q.set_many(chunk.len()))?;
                for (i, (k, v)) in chunk.iter().enumerate() {
                    let at = i * 5;
                    stmt.raw_bind_parameter(at + 1, key_hash(k))?;
                    stmt.raw_bind_parameter(at + 2, k)?;
                    stmt.raw_bind_parameter(at + 3, v)?;
                    stmt.raw_bind_parameter(at + 4, exp)?;
                    stmt.raw_bind_parameter(at + 5, byte_size(k, v))?;
                }
                stmt.raw_execute()?;
            }
            tx.commit()
        };
        run(&mut conn).map_err(|e| self.fail("set_many", e))?;
        self.wrote(&mut conn, rows.len() as u64);
        Ok(Vec::new())
    }

    fn delete_many(&self, keys: &[&[u8]]) -> Result<usize> {
        let unique: Vec<&[u8]> = {
            let mut seen = std::collections::HashSet::with_capacity(keys.len());
            keys.iter().copied().filter(|k| seen.insert(*k)).collect()
        };
        if unique.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let Some(mut conn) = self.read_conn()? else {
            return Ok(0);
        };
        let run = |conn: &mut Connection| -> rusqlite::Result<usize> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut n = 0;
            for chunk in unique.chunks(IN_CHUNK) {
                let mut stmt = tx.prepare_cached(&self.inner.q.delete_many(chunk.len()))?;
                for (i, k) in chunk.iter().enumerate() {
                    stmt.raw_bind_parameter(i + 1, key_hash(k))?;
                    stmt.raw_bind_parameter(chunk.len() + i + 1, k)?;
                }
                stmt.raw_bind_parameter(2 * chunk.len() + 1, now)?;
                let mut rows = stmt.raw_query();
                while let Some(r) = rows.next()? {
                    n += usize::from(r.get::<_, bool>(0)?);
                }
            }
            tx.commit()?;
            Ok(n)
        };
        run(&mut conn).map_err(|e| self.fail("delete_many", e))
    }

    fn clear(&self, prefix: &[u8]) -> Result<()> {
        let Some(conn) = self.read_conn()? else {
            return Ok(());
        };
        let result = if prefix.is_empty() {
            conn.execute(&self.inner.q.clear_all, [])
        } else {
            conn.execute(
                &self.inner.q.clear_prefix,
                params![prefix.len() as i64, prefix],
            )
        };
        result.map(drop).map_err(|e| self.fail("clear", e))
    }

    fn evictions(&self) -> u64 {
        self.inner.trim.evictions()
    }

    fn ttl(&self, key: &[u8]) -> Result<TimeToLive> {
        let now = now_ms();
        let Some(conn) = self.read_conn()? else {
            return Ok(TimeToLive::Missing);
        };
        let found: Option<Option<i64>> = conn
            .prepare_cached(&self.inner.q.ttl)
            .and_then(|mut s| {
                s.query_row(params![key_hash(key), key, now], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.fail("ttl", e))?;
        Ok(super::time_to_live(found, now))
    }

    fn replace(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let hash = key_hash(key);
        let now = now_ms();
        let exp = expires_at(now, ttl);
        let Some(mut conn) = self.read_conn()? else {
            return Ok(false);
        };
        let row = params![hash, key, value, exp, byte_size(key, value), now];
        let n = conn
            .prepare_cached(&self.inner.q.replace)
            .and_then(|mut s| s.execute(row))
            .map_err(|e| self.fail("replace", e))?;
        if n > 0 {
            self.wrote(&mut conn, 1);
        }
        Ok(n > 0)
    }

    /// Walks the table by id, `count` rows a page, with SQLite's `GLOB` selecting the
    /// candidates ([`KeyPattern::to_sqlite_glob`]) and the pattern itself deciding.
    fn scan_keys(self: Arc<Self>, pattern: &KeyPattern, count: usize) -> Result<Box<dyn KeyScan>> {
        let glob = pattern.to_sqlite_glob();
        Ok(Box::new(IdScan::new(
            pattern,
            count,
            move |_, after, limit| self.scan_page(&glob, after, limit),
        )))
    }

    fn delete_if_equals(&self, key: &[u8], expected: &[u8]) -> Result<bool> {
        let Some(conn) = self.read_conn()? else {
            return Ok(false);
        };
        conn.prepare_cached(&self.inner.q.delete_if_equals)
            .and_then(|mut s| s.execute(params![key_hash(key), key, expected, now_ms()]))
            .map(|n| n > 0)
            .map_err(|e| self.fail("delete_if_equals", e))
    }

    fn extend_if_equals(
        &self,
        key: &[u8],
        expected: &[u8],
        ttl: Duration,
        replace: bool,
    ) -> Result<bool> {
        let Some(conn) = self.read_conn()? else {
            return Ok(false);
        };
        let ms = i64::try_from(ttl.as_millis())
            .unwrap_or(i64::MAX / 4)
            .max(1);
        let args = params![key_hash(key), key, ms, now_ms(), replace, expected];
        conn.prepare_cached(&self.inner.q.extend_if_equals)
            .and_then(|mut s| s.execute(args))
            .map(|n| n > 0)
            .map_err(|e| self.fail("extend_if_equals", e))
    }

    /// The SQLite library's version, the journal mode, the file's size and the table's shape.
    fn server_info(&self) -> Result<crate::backend::ServerInfo> {
        let conn = self.pooled()?;
        let table = self.inner.q.table.quoted.trim_matches('"').to_owned();
        let read = || -> rusqlite::Result<crate::backend::ServerInfo> {
            let mut info = crate::backend::ServerInfo::new("sqlite");
            info.version = Some(rusqlite::version().to_owned());
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            let bytes: i64 = conn.query_row(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                [],
                |r| r.get(0),
            )?;
            info.details.push(("journal_mode".into(), mode));
            info.details.push(("file_bytes".into(), bytes.to_string()));
            let mut stmt =
                conn.prepare("SELECT name, type, \"notnull\" FROM pragma_table_info(?1)")?;
            let columns = stmt
                .query_map([&table], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get::<_, bool>(2)?))
                })?
                .collect::<rusqlite::Result<Vec<(String, String, bool)>>>()?;
            info.problems
                .extend(super::column_problems(&table, SQLITE_COLUMNS, &columns));
            if !columns.is_empty() {
                let unique: bool = conn.query_row(
                    "SELECT EXISTS (SELECT 1 FROM pragma_index_list(?1) AS l, \
                       pragma_index_info(l.name) AS i WHERE l.\"unique\" AND i.name = 'key_hash')",
                    [&table],
                    |r| r.get(0),
                )?;
                if !unique {
                    info.problems.push(super::missing_unique_index(&table));
                }
            }
            Ok(info)
        };
        read().map_err(|e| self.fail("reading the server information", e))
    }
}

/// The columns of the SQLite cache table as `PRAGMA table_info` spells them.
const SQLITE_COLUMNS: &[super::Column] = &[
    ("id", "INTEGER", false),
    ("key_hash", "INTEGER", true),
    ("key", "BLOB", true),
    ("value", "BLOB", true),
    ("expires_at", "INTEGER", false),
    ("byte_size", "INTEGER", true),
];

impl SqliteBackend {
    /// Up to `limit` live rows after id `after` whose key passes `glob`: `(id, key)`.
    fn scan_page(&self, glob: &str, after: i64, limit: usize) -> Result<crate::backend::IdRows> {
        let Some(conn) = self.read_conn()? else {
            return Ok(Vec::new());
        };
        let run = || -> rusqlite::Result<crate::backend::IdRows> {
            let mut stmt = conn.prepare_cached(&self.inner.q.scan)?;
            let rows = stmt.query_map(params![after, glob, limit as i64, now_ms()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect()
        };
        run().map_err(|e| self.fail("keys", e))
    }
}
