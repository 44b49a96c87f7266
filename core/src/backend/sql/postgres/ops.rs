//! Every operation of the postgres:// backend, written once as a future over a [`Link`].
//!
//! The synchronous API drives these futures on a blocking connection's own runtime, the
//! async API awaits them on a connection that polycache's runtime drives (see `conn.rs`);
//! `mod.rs` adds the pool, the retries and the table creation around them.

use super::conn::{describe, sqlstate, Link, PgError, Tx};
use super::queries::Q;
use super::Inner;
use crate::backend::sql::{
    byte_size, expires_at, id_span, key_hash, now_ms, time_to_live, Cull, Estimate, Found,
    OldestWalk, MAX_TRIM_BATCHES, SAMPLES, TRIM_BATCH, TRIM_ROUNDS,
};
use crate::backend::{apply_delta, not_found, parse_i64, BoxFuture};
use crate::error::{Error, ErrorKind};
use crate::expiry::TimeToLive;
use crate::value::Value;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio_postgres::Statement;

/// A failure inside an operation: the server's, or one of ours (bad integer, …).
pub(super) enum Fail {
    Pg(PgError),
    Cache(Error),
}

impl From<PgError> for Fail {
    fn from(e: PgError) -> Self {
        Fail::Pg(e)
    }
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(PgError::Pg(e))
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Cache(e)
    }
}

/// One operation: its arguments `A` borrowed for the length of one attempt, which may be
/// run again on another connection (see `PostgresBackend::run`).
pub(super) type Op<A, T> =
    for<'c> fn(&'c Inner, &'c mut Link, &'c A) -> BoxFuture<'c, Result<T, Fail>>;

/// The rows of a `set`, `add` or `set_many`.
pub(super) struct Write<'a> {
    /// `(key_hash, key, value)`, one row per key (a statement may not update a row twice;
    /// the last value wins): in caller order when culling, else in key-hash order, so that
    /// many-row writers that lock rows in one order cannot deadlock each other.
    rows: Vec<(i64, &'a [u8], &'a [u8])>,
    exp: Option<i64>,
    now: i64,
    /// Only when absent (`add`, one row).
    add: bool,
    cull: Option<Cull>,
}

impl<'a> Write<'a> {
    pub(super) fn set(
        items: &[(&'a [u8], &'a [u8])],
        ttl: Option<Duration>,
        cull: Option<Cull>,
    ) -> Write<'a> {
        let mut rows: Vec<(i64, &[u8], &[u8])> = match items {
            // A single set, the common case: nothing to deduplicate or order.
            [(k, v)] => vec![(key_hash(k), *k, *v)],
            _ => {
                let mut last: HashMap<&[u8], usize> = HashMap::with_capacity(items.len());
                for (i, (k, _)) in items.iter().enumerate() {
                    last.insert(k, i);
                }
                items
                    .iter()
                    .enumerate()
                    .filter(|(i, (k, _))| last[k] == *i)
                    .map(|(_, (k, v))| (key_hash(k), *k, *v))
                    .collect()
            }
        };
        if cull.is_none() && rows.len() > 1 {
            rows.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        }
        let now = now_ms();
        Write {
            rows,
            exp: expires_at(now, ttl),
            now,
            add: false,
            cull,
        }
    }

    pub(super) fn add(
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
        cull: Option<Cull>,
    ) -> Write<'a> {
        let now = now_ms();
        Write {
            rows: vec![(key_hash(key), key, value)],
            exp: expires_at(now, ttl),
            now,
            add: true,
            cull,
        }
    }

    pub(super) fn is_add(&self) -> bool {
        self.add
    }

    /// How many rows it writes.
    pub(super) fn len(&self) -> u64 {
        self.rows.len() as u64
    }
}

/// Writes the rows; returns how many the server wrote (for `add`: 0 when the key was live).
pub(super) fn write<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    w: &'c Write<'_>,
) -> BoxFuture<'c, Result<u64, Fail>> {
    Box::pin(async move {
        if let Some(cull) = w.cull {
            return Ok(culled(i, c, w, cull).await?);
        }
        Ok(match w.rows.as_slice() {
            [] => 0,
            [(h, k, v)] if w.add => {
                let s = c.stmt(Q::Add, &i.q).await?;
                c.trips()
                    .execute(&s, &[h, k, v, &w.exp, &byte_size(k, v), &w.now])
                    .await?
            }
            [(h, k, v)] => {
                let s = c.stmt(Q::Set, &i.q).await?;
                c.trips()
                    .execute(&s, &[h, k, v, &w.exp, &byte_size(k, v)])
                    .await?
            }
            rows => {
                let hashes: Vec<i64> = rows.iter().map(|r| r.0).collect();
                let ks: Vec<&[u8]> = rows.iter().map(|r| r.1).collect();
                let vs: Vec<&[u8]> = rows.iter().map(|r| r.2).collect();
                let s = c.stmt(Q::SetMany, &i.q).await?;
                c.trips().execute(&s, &[&hashes, &ks, &vs, &w.exp]).await?
            }
        })
    })
}

/// Writes the rows in one transaction, Django's cull making room before each new key when
/// the table is full (see the [module](crate::backend::sql)).
async fn culled(i: &Inner, c: &mut Link, w: &Write<'_>, cull: Cull) -> Result<u64, PgError> {
    let put = if w.add { Q::Add } else { Q::Set };
    let [exists, count, clear, expired, oldest, put] = c
        .stmts(
            [
                Q::HashExists,
                Q::CountRead,
                Q::ClearAll,
                Q::CullExpired,
                Q::CullOldest,
                put,
            ],
            &i.q,
        )
        .await?;
    let tx = c.transaction().await?;
    let (mut written, mut culled) = (0, 0);
    for (h, k, v) in &w.rows {
        if tx.query_opt(&exists, &[h]).await?.is_none() {
            let rows: i64 = tx.query_one(&count, &[]).await?.get(0);
            culled += match cull.share(rows.max(0) as u64) {
                Some(0) => 0,
                None => tx.execute(&clear, &[]).await?,
                Some(share) => {
                    let gone = tx.execute(&expired, &[&now_ms()]).await?;
                    match share.checked_sub(gone) {
                        Some(n) if n > 0 => gone + tx.execute(&oldest, &[&(n as i64)]).await?,
                        _ => gone,
                    }
                }
            };
        }
        let size = byte_size(k, v);
        written += if w.add {
            tx.execute(&put, &[h, k, v, &w.exp, &size, &w.now]).await?
        } else {
            tx.execute(&put, &[h, k, v, &w.exp, &size]).await?
        };
    }
    tx.commit().await?;
    i.trim.evicted(culled);
    Ok(written)
}

pub(super) fn get<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    key: &'c &[u8],
) -> BoxFuture<'c, Result<Option<Value>, Fail>> {
    Box::pin(async move {
        Ok(match read(i, c, key_hash(key), key, now_ms()).await? {
            Found::Live(v) => Some(Value::from(v)),
            Found::Missing => None,
            Found::Corrupt(id) => {
                remove_corrupt(i, c, id).await;
                None
            }
        })
    })
}

pub(super) fn delete<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    key: &'c &[u8],
) -> BoxFuture<'c, Result<bool, Fail>> {
    Box::pin(async move {
        let s = c.stmt(Q::Delete, &i.q).await?;
        Ok(c.trips()
            .query_opt(&s, &[&key_hash(key), key, &now_ms()])
            .await?
            .is_some_and(|r| r.get::<_, Option<bool>>(0).unwrap_or(false)))
    })
}

/// `(key, expected)`: deletes the key only while it holds `expected`, in one statement.
pub(super) fn delete_if_equals<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    (key, expected): &'c (&[u8], &[u8]),
) -> BoxFuture<'c, Result<bool, Fail>> {
    Box::pin(async move {
        let s = c.stmt(Q::DeleteIfEquals, &i.q).await?;
        Ok(c.trips()
            .execute(&s, &[&key_hash(key), key, expected, &now_ms()])
            .await?
            > 0)
    })
}

/// `(key, expected, ttl, replace)`: gives the key more time only while it holds
/// `expected`, in one statement.
pub(super) fn extend_if_equals<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    (key, expected, ttl, replace): &'c (&[u8], &[u8], Duration, bool),
) -> BoxFuture<'c, Result<bool, Fail>> {
    Box::pin(async move {
        let ms = i64::try_from(ttl.as_millis())
            .unwrap_or(i64::MAX / 4)
            .max(1);
        let s = c.stmt(Q::ExtendIfEquals, &i.q).await?;
        Ok(c.trips()
            .execute(
                &s,
                &[&key_hash(key), key, &ms, &now_ms(), replace, expected],
            )
            .await?
            > 0)
    })
}

pub(super) fn has_key<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    key: &'c &[u8],
) -> BoxFuture<'c, Result<bool, Fail>> {
    Box::pin(async move {
        let s = c.stmt(Q::HasKey, &i.q).await?;
        Ok(c.trips()
            .query_opt(&s, &[&key_hash(key), key, &now_ms()])
            .await?
            .is_some())
    })
}

pub(super) fn touch<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    (key, ttl): &'c (&[u8], Option<Duration>),
) -> BoxFuture<'c, Result<bool, Fail>> {
    Box::pin(async move {
        let now = now_ms();
        let s = c.stmt(Q::Touch, &i.q).await?;
        Ok(c.trips()
            .execute(&s, &[&key_hash(key), key, &expires_at(now, *ttl), &now])
            .await?
            > 0)
    })
}

/// `(key, delta)`: one statement, atomic under the row lock.
pub(super) fn incr<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    &(key, delta): &'c (&[u8], i64),
) -> BoxFuture<'c, Result<i64, Fail>> {
    Box::pin(async move {
        let hash = key_hash(key);
        let s = c.stmt(Q::Incr, &i.q).await?;
        // A refusal is classified by reading the row; if it changed meanwhile so that the
        // update would now succeed, try again (bounded).
        for _ in 0..16 {
            let now = now_ms();
            match c.trips().query_opt(&s, &[&hash, &key, &delta, &now]).await {
                Ok(Some(row)) => {
                    let v: &[u8] = row.get(0);
                    return parse_i64(v).ok_or_else(|| {
                        Fail::Cache(Error::new(
                            ErrorKind::Backend,
                            "incr stored a value that is not decimal",
                        ))
                    });
                }
                Ok(None) => {}
                // numeric_value_out_of_range: the sum, or the stored number, is past i64.
                Err(e) if sqlstate(&e) == Some("22003") => {}
                Err(e) => return Err(e.into()),
            }
            match read(i, c, hash, key, now).await? {
                Found::Live(v) => {
                    apply_delta(&v, delta)?;
                }
                Found::Missing => return Err(not_found(key).into()),
                Found::Corrupt(id) => {
                    remove_corrupt(i, c, id).await;
                    return Err(not_found(key).into());
                }
            }
        }
        Err(Error::new(
            ErrorKind::Backend,
            "incr lost the race with concurrent writers 16 times in a row",
        )
        .into())
    })
}

/// The keys of a `get_many`: each distinct key with its positions in the caller's list.
pub(super) struct Lookup<'a> {
    len: usize,
    wanted: HashMap<&'a [u8], Vec<usize>>,
    hashes: Vec<i64>,
}

impl<'a> Lookup<'a> {
    pub(super) fn new(keys: &[&'a [u8]]) -> Lookup<'a> {
        let mut wanted: HashMap<&[u8], Vec<usize>> = HashMap::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            wanted.entry(*k).or_default().push(i);
        }
        let hashes = wanted.keys().map(|k| key_hash(k)).collect();
        Lookup {
            len: keys.len(),
            wanted,
            hashes,
        }
    }

    /// The answer of a lookup that finds nothing: a miss for every key.
    pub(super) fn misses(&self) -> crate::error::Result<Vec<Option<Value>>> {
        Ok(vec![None; self.len])
    }
}

pub(super) fn get_many<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    l: &'c Lookup<'_>,
) -> BoxFuture<'c, Result<Vec<Option<Value>>, Fail>> {
    Box::pin(async move {
        let now = now_ms();
        let s = c.stmt(Q::GetMany, &i.q).await?;
        let rows = c.trips().query(&s, &[&l.hashes]).await?;
        let mut out: Vec<Option<Value>> = vec![None; l.len];
        let mut corrupt = Vec::new();
        for r in &rows {
            let key: &[u8] = r.get(0);
            let Some(positions) = l.wanted.get(key) else {
                continue;
            };
            Found::check(key, r.get(1), r.get(2), r.get(3), now, r.get(4)).place(
                positions,
                &mut out,
                &mut corrupt,
            );
        }
        for id in corrupt {
            remove_corrupt(i, c, id).await;
        }
        Ok(out)
    })
}

/// The distinct keys of a `delete_many`, with their hashes.
pub(super) struct Removal<'a> {
    keys: Vec<&'a [u8]>,
    hashes: Vec<i64>,
}

impl<'a> Removal<'a> {
    pub(super) fn new(keys: &[&'a [u8]]) -> Removal<'a> {
        let mut seen = HashSet::with_capacity(keys.len());
        let keys: Vec<&[u8]> = keys.iter().copied().filter(|k| seen.insert(*k)).collect();
        let hashes = keys.iter().map(|k| key_hash(k)).collect();
        Removal { keys, hashes }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

pub(super) fn delete_many<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    r: &'c Removal<'_>,
) -> BoxFuture<'c, Result<usize, Fail>> {
    Box::pin(async move {
        let s = c.stmt(Q::DeleteMany, &i.q).await?;
        let rows = c
            .trips()
            .query(&s, &[&r.hashes, &r.keys, &now_ms()])
            .await?;
        Ok(rows
            .iter()
            .filter(|r| r.get::<_, Option<bool>>(0).unwrap_or(false))
            .count())
    })
}

/// `(prefix length, prefix)`; an empty prefix empties the table.
pub(super) fn clear<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    (len, prefix): &'c (i32, &[u8]),
) -> BoxFuture<'c, Result<(), Fail>> {
    Box::pin(async move {
        if prefix.is_empty() {
            let s = c.stmt(Q::ClearAll, &i.q).await?;
            c.trips().execute(&s, &[]).await?;
        } else {
            let s = c.stmt(Q::ClearPrefix, &i.q).await?;
            c.trips().execute(&s, &[len, prefix]).await?;
        }
        Ok(())
    })
}

pub(super) fn count<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    _: &'c (),
) -> BoxFuture<'c, Result<u64, Fail>> {
    Box::pin(async move {
        let s = c.stmt(Q::Count, &i.q).await?;
        let n: i64 = c.trips().query_one(&s, &[]).await?.get(0);
        Ok(n.max(0) as u64)
    })
}

/// One trimming pass in one transaction under an advisory lock (skipped when another
/// process holds it); returns the table's estimated size afterwards.
pub(super) fn trim_pass<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    _: &'c (),
) -> BoxFuture<'c, Result<Option<Estimate>, Fail>> {
    Box::pin(async move {
        let trim = &i.trim;
        let [lock, sweep_end, sweep_delete, sample, id_span_q, oldest, delete_upto] = c
            .stmts(
                [
                    Q::TryLock,
                    Q::SweepEnd,
                    Q::SweepDelete,
                    Q::Sample,
                    Q::IdSpan,
                    Q::Oldest,
                    Q::DeleteUpto,
                ],
                &i.q,
            )
            .await?;
        let now = now_ms();
        let tx = c.transaction().await?;
        let locked: bool = tx.query_one(&lock, &[&i.trim_key]).await?.get(0);
        if !locked {
            return Ok(None);
        }
        let cursor = trim.cursor();
        let end: Option<i64> = tx
            .query_one(&sweep_end, &[&cursor, &TRIM_BATCH])
            .await?
            .get(0);
        match end {
            Some(end) => {
                tx.execute(&sweep_delete, &[&cursor, &end, &now]).await?;
                trim.set_cursor(end);
            }
            None => trim.set_cursor(0),
        }
        let mut est = estimate(&tx, &sample, &id_span_q).await?;
        // A sample's error is a share of the whole table: after a big cut, look again.
        for _ in 0..TRIM_ROUNDS {
            let excess = trim.excess(est);
            if excess.is_none() {
                break;
            }
            let mut walk = OldestWalk::default();
            let mut last = i64::MIN;
            for _ in 0..MAX_TRIM_BATCHES {
                let rows: Vec<(i64, i64)> = tx
                    .query(&oldest, &[&last, &TRIM_BATCH])
                    .await?
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect();
                let (cutoff, done) = walk.take(&rows, excess);
                if let Some(cutoff) = cutoff {
                    let n = tx.execute(&delete_upto, &[&cutoff]).await?;
                    trim.evicted(n);
                    last = cutoff;
                }
                if done || (rows.len() as i64) < TRIM_BATCH {
                    break;
                }
            }
            est = estimate(&tx, &sample, &id_span_q).await?;
        }
        tx.commit().await?;
        Ok(Some(est))
    })
}

async fn estimate(tx: &Tx<'_>, sample: &Statement, span: &Statement) -> Result<Estimate, PgError> {
    let rows: Vec<(i64, i64)> = tx
        .query(sample, &[&(SAMPLES as i64)])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let span = tx.query_one(span, &[]).await?;
    Ok(Estimate::from_sample(
        &rows,
        id_span(span.get(0), span.get(1)),
    ))
}

/// [`create`] as an operation.
pub(super) fn create_table<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    _: &'c (),
) -> BoxFuture<'c, Result<(), Fail>> {
    Box::pin(async move { Ok(create(i, c).await?) })
}

/// Creates the table unless it exists, under an advisory lock.
pub(super) async fn create(i: &Inner, c: &mut Link) -> Result<(), PgError> {
    let q = &i.q;
    // The counter is looked for only when this cache culls (the table's name stands in
    // for it otherwise).
    let count_table = if i.cull.is_some() {
        &q.table.count_table
    } else {
        &q.table.quoted
    };
    let exists: bool = c
        .trips()
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL \
               AND to_regclass($3) IS NOT NULL",
            &[&q.table.quoted, &q.table.qualified_index, count_table],
        )
        .await?
        .get(0);
    if exists {
        return Ok(());
    }
    let tx = c.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&i.create_key])
        .await?;
    tx.batch_execute(&q.create).await?;
    if i.cull.is_some() {
        tx.batch_execute(&q.count_create).await?;
    }
    tx.commit().await
}

async fn read(i: &Inner, c: &mut Link, hash: i64, key: &[u8], now: i64) -> Result<Found, PgError> {
    let s = c.stmt(Q::Get, &i.q).await?;
    Ok(match c.trips().query_opt(&s, &[&hash, &key]).await? {
        None => Found::Missing,
        Some(r) => Found::check(
            key,
            r.get::<_, Option<&[u8]>>(1),
            r.get(2),
            r.get(3),
            now,
            r.get(0),
        ),
    })
}

/// Removes a row that failed its checks, if it still fails them; best effort.
#[cold]
async fn remove_corrupt(i: &Inner, c: &mut Link, id: i64) {
    log::warn!(
        "polycache: removing a corrupt row (id {id}) from {}",
        i.location
    );
    let result = match c.stmt(Q::DeleteCorrupt, &i.q).await {
        Ok(s) => c.trips().execute(&s, &[&id]).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        log::warn!(
            "polycache: could not remove a corrupt row: {}",
            describe(&e)
        );
    }
}

/// The `expires_at` of the live row under `key`: `None` when there is none.
pub(super) fn ttl<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    key: &'c &[u8],
) -> BoxFuture<'c, Result<TimeToLive, Fail>> {
    Box::pin(async move {
        let now = now_ms();
        let s = c.stmt(Q::Ttl, &i.q).await?;
        let row = c
            .trips()
            .query_opt(&s, &[&key_hash(key), key, &now])
            .await?;
        Ok(time_to_live(row.map(|r| r.get::<_, Option<i64>>(0)), now))
    })
}

/// `(key, value, ttl)`: one `UPDATE` of a live row; true when there was one.
pub(super) fn replace<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    (key, value, ttl): &'c (&[u8], &[u8], Option<Duration>),
) -> BoxFuture<'c, Result<bool, Fail>> {
    Box::pin(async move {
        let now = now_ms();
        let s = c.stmt(Q::Replace, &i.q).await?;
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &key_hash(key),
            key,
            value,
            &expires_at(now, *ttl),
            &byte_size(key, value),
            &now,
        ];
        Ok(c.trips().execute(&s, &args).await? > 0)
    })
}

/// `(after id, LIKE pattern, limit)`: up to `limit` live rows after the id whose key passes
/// the pattern, `(id, key)` in id order.
pub(super) fn scan<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    (after, like, limit): &'c (i64, Vec<u8>, i64),
) -> BoxFuture<'c, Result<crate::backend::IdRows, Fail>> {
    Box::pin(async move {
        let s = c.stmt(Q::Scan, &i.q).await?;
        let rows = c
            .trips()
            .query(&s, &[after, like, limit, &now_ms()])
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    })
}

/// What `server_info` reads in one attempt: version, server time (unix ms) and the time
/// the query took, TLS, the table's columns, whether its `key_hash` index is unique.
pub(super) struct ServerFacts {
    pub version: String,
    pub now_ms: i64,
    pub took: Duration,
    pub ssl: bool,
    pub columns: Vec<(String, String, bool)>,
    pub unique_index: bool,
}

/// Reads [`ServerFacts`] from the catalogs; never touches the cache table's rows.
pub(super) fn server_facts<'c>(
    i: &'c Inner,
    c: &'c mut Link,
    _: &'c (),
) -> BoxFuture<'c, Result<ServerFacts, Fail>> {
    Box::pin(async move {
        let t = &i.q.table;
        let sent = std::time::Instant::now();
        let row = c
            .trips()
            .query_one(
                "SELECT current_setting('server_version'), \
                   (extract(epoch FROM clock_timestamp()) * 1000)::bigint, \
                   COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
                &[],
            )
            .await?;
        let took = sent.elapsed();
        let columns = c
            .trips()
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull \
                 FROM pg_attribute a WHERE a.attrelid = to_regclass($1) \
                   AND a.attnum > 0 AND NOT a.attisdropped",
                &[&t.quoted],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let unique_index: bool = c
            .trips()
            .query_one(
                "SELECT COALESCE((SELECT indisunique FROM pg_index \
                   WHERE indexrelid = to_regclass($1)), false)",
                &[&t.qualified_index],
            )
            .await?
            .get(0);
        Ok(ServerFacts {
            version: row.get(0),
            now_ms: row.get(1),
            took,
            ssl: row.get(2),
            columns,
            unique_index,
        })
    })
}
