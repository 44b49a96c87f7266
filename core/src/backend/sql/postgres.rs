//! `postgres://user:password@host:5432/db`: the cache table in a PostgreSQL database.

use super::pg_client::{PgClient, PgError, PgTx, RoundTrips};
use super::pg_tls::PgTls;
use super::{
    byte_size, expires_at, key_hash, now_ms, Bounds, Cull, Estimate, Found, OldestWalk, Pool,
    Pooled, TableName, Trimmer, MAX_TRIM_BATCHES, SAMPLES, TRIM_BATCH, TRIM_ROUNDS,
};
use crate::backend::{apply_delta, not_found, parse_i64, Backend};
use crate::error::{Error, ErrorKind, Result};
use crate::location::{Location, Options};
use crate::value::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::{Config, NoTls, Statement};

/// How long opening a connection may take unless `connect_timeout` says otherwise: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one reply may take unless `socket_timeout` or `statement_timeout` says
/// otherwise: 30 s.
pub const DEFAULT_SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections one backend opens at most unless `pool_size` says otherwise.
const DEFAULT_POOL_SIZE: usize = 16;
/// How often a statement the server rolled back to break a deadlock is run again.
const MAX_DEADLOCK_RETRIES: u32 = 3;
/// The port when the URL names none.
const DEFAULT_PORT: u16 = 5432;

/// The `postgres://` backend: one table in a PostgreSQL database, shared by every process
/// that opens the same URL.
///
/// Connections come from a small pool (`pool_size`, default 16) and are re-opened by
/// themselves after the server restarts: a read or an idempotent write that finds its pooled
/// connection broken retries once on a new one; `add` and `incr`, which must not run twice,
/// report the [`ErrorKind::Connection`] error instead and the next call reconnects.
/// Unreachable servers give [`ErrorKind::Connection`], `connect_timeout`,
/// `statement_timeout` and `socket_timeout` (the client's deadline for each reply, which also
/// ends a wait on a frozen server) give [`ErrorKind::Timeout`], so the cache's failure policy (fail open,
/// circuit breaker) applies. The table is created on first use, or explicitly with
/// [`PostgresBackend::create_table`]; with `unlogged=true` it is an `UNLOGGED` table (faster
/// writes, emptied after a crash).
///
/// TLS with `sslmode=require|verify-ca|verify-full` (and `prefer`) and
/// `sslrootcert=/path/ca.pem` (or `system`), as libpq reads them; without `sslmode`
/// connections are not encrypted (loopback, a private network or a unix socket such as
/// `postgres://user@%2Fvar%2Frun%2Fpostgresql/db`).
///
/// `Send + Sync`; clones share the pool. No method panics.
///
/// ```no_run
/// use polycache::{Cache, Expiry};
/// let cache = Cache::open("postgres://app:secret@127.0.0.1:5432/app?table=app_cache&unlogged=true").unwrap();
/// cache.set("k", b"v", Expiry::Never).unwrap();
/// assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"v"[..]));
/// ```
#[derive(Clone)]
pub struct PostgresBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    tls: PgTls,
    location: String,
    /// How long connecting may take in all (`None`: as long as it takes).
    connect_bound: Option<Duration>,
    /// How long one reply may take (`socket_timeout`; `None`: as long as it takes).
    socket_timeout: Option<Duration>,
    q: Queries,
    pool: Pool<PgConn>,
    pool_wait: Duration,
    ready: AtomicBool,
    create_lock: Mutex<()>,
    trim: Trimmer,
    cull: Option<Cull>,
    /// Advisory lock keys that serialize table creation and trimming across processes.
    create_key: i64,
    trim_key: i64,
}

/// A connection with the statements it has prepared.
struct PgConn {
    client: PgClient,
    stmts: Vec<Option<Statement>>,
}

/// The statements, by index into [`Queries::sql`].
#[derive(Debug, Clone, Copy)]
enum Q {
    Get,
    Set,
    Add,
    Delete,
    HasKey,
    Touch,
    Incr,
    DeleteCorrupt,
    GetMany,
    SetMany,
    DeleteMany,
    ClearAll,
    ClearPrefix,
    Count,
    TryLock,
    SweepEnd,
    SweepDelete,
    Sample,
    IdSpan,
    Oldest,
    DeleteUpto,
    HashExists,
    CountRead,
    CullExpired,
    CullOldest,
}

const N_QUERIES: usize = Q::CullOldest as usize + 1;

fn valid(q: &str) -> String {
    format!("({q}value IS NOT NULL AND {q}byte_size = length({q}key) + length({q}value))")
}

fn alive(q: &str, now: &str) -> String {
    format!("({q}expires_at IS NULL OR {q}expires_at > {now})")
}

struct Queries {
    table: TableName,
    create: String,
    /// The row counter of Django's cull: its table, its first value, its triggers.
    count_create: String,
    sql: Vec<String>,
}

impl Queries {
    fn new(table: TableName, unlogged: bool) -> Queries {
        let t = &table.quoted;
        let on_conflict = "ON CONFLICT (key_hash) DO UPDATE SET key = EXCLUDED.key, \
             value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, \
             byte_size = EXCLUDED.byte_size";
        let upsert = format!(
            "INSERT INTO {t} AS t (key_hash, key, value, expires_at, byte_size) \
             VALUES ($1, $2, $3, $4, $5) {on_conflict}"
        );
        // The integer the value holds, only evaluated on rows that pass the pattern.
        let sum = "(encode(value, 'escape')::bigint + $3)::text";
        let mut sql = vec![String::new(); N_QUERIES];
        let mut put = |q: Q, s: String| sql[q as usize] = s;
        put(
            Q::Get,
            format!(
                "SELECT id, value, expires_at, byte_size FROM {t} WHERE key_hash = $1 AND key = $2"
            ),
        );
        put(
            Q::Add,
            format!(
                "{upsert} WHERE NOT (t.key = EXCLUDED.key AND {} AND {})",
                alive("t.", "$6"),
                valid("t.")
            ),
        );
        put(Q::Set, upsert);
        put(
            Q::Delete,
            format!(
                "DELETE FROM {t} WHERE key_hash = $1 AND key = $2 RETURNING {} AND {}",
                alive("", "$3"),
                valid("")
            ),
        );
        put(
            Q::HasKey,
            format!(
                "SELECT 1 FROM {t} WHERE key_hash = $1 AND key = $2 AND {} AND {}",
                alive("", "$3"),
                valid("")
            ),
        );
        put(
            Q::Touch,
            format!(
                "UPDATE {t} SET expires_at = $3 WHERE key_hash = $1 AND key = $2 AND {} AND {}",
                alive("", "$4"),
                valid("")
            ),
        );
        // One statement, atomic under the row lock. Only plain decimal (what `parse_i64`
        // accepts) passes the pattern; a refusal or an out-of-range error is classified by
        // reading the row.
        put(
            Q::Incr,
            format!(
                "UPDATE {t} SET value = convert_to({sum}, 'UTF8'), \
                   byte_size = length(key) + octet_length({sum}) \
                 WHERE key_hash = $1 AND key = $2 AND {} AND {} \
                   AND encode(value, 'escape') ~ '^[+-]?[0-9]{{1,20}}$' \
                 RETURNING value",
                alive("", "$4"),
                valid("")
            ),
        );
        put(
            Q::DeleteCorrupt,
            format!("DELETE FROM {t} WHERE id = $1 AND NOT {}", valid("")),
        );
        put(
            Q::GetMany,
            format!(
                "SELECT key, value, expires_at, byte_size, id FROM {t} WHERE key_hash = ANY($1)"
            ),
        );
        put(
            Q::SetMany,
            format!(
                "INSERT INTO {t} AS t (key_hash, key, value, expires_at, byte_size) \
                 SELECT h, k, v, $4::bigint, length(k) + length(v) \
                 FROM unnest($1::bigint[], $2::bytea[], $3::bytea[]) AS u(h, k, v) \
                 {on_conflict}"
            ),
        );
        put(
            Q::DeleteMany,
            format!(
                "DELETE FROM {t} WHERE key_hash = ANY($1) AND key = ANY($2) RETURNING {} AND {}",
                alive("", "$3"),
                valid("")
            ),
        );
        put(Q::ClearAll, format!("DELETE FROM {t}"));
        // Exact and case-sensitive, unlike LIKE, and nothing to escape.
        put(
            Q::ClearPrefix,
            format!("DELETE FROM {t} WHERE substring(key FROM 1 FOR $1) = $2"),
        );
        put(Q::Count, format!("SELECT count(*) FROM {t}"));
        put(
            Q::TryLock,
            "SELECT pg_try_advisory_xact_lock($1)".to_owned(),
        );
        put(
            Q::SweepEnd,
            format!(
                "SELECT max(id) FROM (SELECT id FROM {t} WHERE id > $1 ORDER BY id LIMIT $2) s"
            ),
        );
        put(
            Q::SweepDelete,
            format!(
                "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} \
                 WHERE id > $1 AND id <= $2 AND expires_at <= $3 FOR UPDATE SKIP LOCKED)"
            ),
        );
        put(
            Q::Sample,
            format!("SELECT key_hash, byte_size FROM {t} ORDER BY key_hash DESC LIMIT $1"),
        );
        put(Q::IdSpan, format!("SELECT min(id), max(id) FROM {t}"));
        put(
            Q::Oldest,
            format!("SELECT id, byte_size FROM {t} WHERE id > $1 ORDER BY id LIMIT $2"),
        );
        // Trimming skips rows other statements hold: it never waits on a lock, so it cannot
        // deadlock with a set_many (what it skips, the next pass deletes).
        put(
            Q::DeleteUpto,
            format!(
                "DELETE FROM {t} WHERE id IN \
                 (SELECT id FROM {t} WHERE id <= $1 FOR UPDATE SKIP LOCKED)"
            ),
        );
        let ct = &table.count_table;
        put(
            Q::HashExists,
            format!("SELECT 1 FROM {t} WHERE key_hash = $1"),
        );
        // FOR UPDATE: writers of new keys take turns, so the count they act on is exact.
        put(
            Q::CountRead,
            format!("SELECT n FROM {ct} WHERE id = 0 FOR UPDATE"),
        );
        // SKIP LOCKED: a row another writer holds is that writer's to finish; waiting for it
        // while holding the counter row could deadlock with that writer's count trigger.
        put(
            Q::CullExpired,
            format!(
                "DELETE FROM {t} WHERE id IN \
                 (SELECT id FROM {t} WHERE expires_at <= $1 FOR UPDATE SKIP LOCKED)"
            ),
        );
        put(
            Q::CullOldest,
            format!(
                "DELETE FROM {t} WHERE id IN \
                 (SELECT id FROM {t} ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)"
            ),
        );
        // Run under the creation lock, with the cache table locked against writes so that
        // no row comes or goes between the count and the triggers that keep it. Statement
        // triggers over transition tables: one counter update per statement, not per row.
        let stem = &table.count_stem;
        let count_create = format!(
            "CREATE TABLE IF NOT EXISTS {ct} (\
               id INTEGER PRIMARY KEY CHECK (id = 0), n BIGINT NOT NULL); \
             LOCK TABLE {t} IN SHARE ROW EXCLUSIVE MODE; \
             INSERT INTO {ct} (id, n) SELECT 0, count(*) FROM {t} ON CONFLICT (id) DO NOTHING; \
             CREATE OR REPLACE FUNCTION {ct}() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF TG_OP = 'INSERT' THEN \
                 UPDATE {ct} SET n = n + (SELECT count(*) FROM polycache_rows) WHERE id = 0; \
               ELSE \
                 UPDATE {ct} SET n = n - (SELECT count(*) FROM polycache_rows) WHERE id = 0; \
               END IF; \
               RETURN NULL; \
             END $$; \
             DROP TRIGGER IF EXISTS \"{stem}_insert\" ON {t}; \
             CREATE TRIGGER \"{stem}_insert\" AFTER INSERT ON {t} \
               REFERENCING NEW TABLE AS polycache_rows \
               FOR EACH STATEMENT EXECUTE FUNCTION {ct}(); \
             DROP TRIGGER IF EXISTS \"{stem}_delete\" ON {t}; \
             CREATE TRIGGER \"{stem}_delete\" AFTER DELETE ON {t} \
               REFERENCING OLD TABLE AS polycache_rows \
               FOR EACH STATEMENT EXECUTE FUNCTION {ct}();"
        );
        let create = format!(
            "CREATE {}TABLE IF NOT EXISTS {t} (\
               id BIGSERIAL PRIMARY KEY, \
               key_hash BIGINT NOT NULL, \
               key BYTEA NOT NULL, \
               value BYTEA NOT NULL, \
               expires_at BIGINT, \
               byte_size BIGINT NOT NULL); \
             CREATE UNIQUE INDEX IF NOT EXISTS {} ON {t} (key_hash);",
            if unlogged { "UNLOGGED " } else { "" },
            table.index
        );
        Queries {
            table,
            create,
            count_create,
            sql,
        }
    }
}

impl PgConn {
    /// The prepared statement for `q`, preparing it on first use on this connection.
    fn stmt(&mut self, q: Q, queries: &Queries) -> Result<Statement, PgError> {
        if let Some(s) = &self.stmts[q as usize] {
            return Ok(s.clone());
        }
        let s = self.client.prepare(&queries.sql[q as usize])?;
        self.stmts[q as usize] = Some(s.clone());
        Ok(s)
    }
}

/// A failure inside a pooled call: the server's, or one of ours (bad integer, …).
enum Fail {
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

/// The SQLSTATE of a server error, if it is one.
fn sqlstate(e: &PgError) -> Option<&str> {
    match e {
        PgError::Pg(e) => e.code().map(|c| c.code()),
        PgError::TimedOut(_) | PgError::Runtime(_) => None,
    }
}

fn io_cause(e: &tokio_postgres::Error) -> Option<&std::io::Error> {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cause = c.source();
    }
    None
}

/// True when the connection itself is gone (server restarted or unreachable) or owes a
/// reply it did not send in time.
fn connection_lost(e: &PgError) -> bool {
    match (e, sqlstate(e)) {
        (_, Some(code)) => {
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
        }
        (PgError::Pg(e), None) => e.is_closed() || io_cause(e).is_some(),
        (PgError::TimedOut(_) | PgError::Runtime(_), None) => true,
    }
}

/// The polycache kind of a PostgreSQL failure.
fn kind_of(e: &PgError) -> ErrorKind {
    let e = match e {
        PgError::TimedOut(_) => return ErrorKind::Timeout,
        PgError::Runtime(_) => return ErrorKind::Connection,
        PgError::Pg(e) => e,
    };
    match e.code().map(|c| c.code()) {
        // query_canceled (statement_timeout) and lock_not_available (lock_timeout).
        Some("57014" | "55P03") => ErrorKind::Timeout,
        Some(code) if code.starts_with("08") => ErrorKind::Connection,
        Some("57P01" | "57P02" | "57P03" | "53300") => ErrorKind::Connection,
        // Bad credentials or an unknown database: the URL is wrong.
        Some(code) if code.starts_with("28") || code == "3D000" => ErrorKind::Configuration,
        Some("54000") => ErrorKind::ValueTooLarge,
        Some(_) => ErrorKind::Backend,
        None if e.is_closed() => ErrorKind::Connection,
        None => match io_cause(e).map(std::io::Error::kind) {
            Some(std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
                ErrorKind::Timeout
            }
            Some(_) => ErrorKind::Connection,
            None => ErrorKind::Backend,
        },
    }
}

/// The text of a PostgreSQL failure, with the server's message and SQLSTATE when it sent one.
fn describe(e: &PgError) -> String {
    let e = match e {
        PgError::TimedOut(d) => {
            return format!("no reply within socket_timeout ({} s)", d.as_secs_f64())
        }
        PgError::Runtime(e) => return format!("cannot start the connection's runtime: {e}"),
        PgError::Pg(e) => e,
    };
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// Splits `host[:port]` (IPv6 in brackets); a host starting with `/` is a socket directory.
fn host_port(h: &str, redacted: &str) -> Result<(String, u16)> {
    let bad = || {
        Error::config(format!(
            "invalid host {h:?} in {redacted}: expected host, host:port or [ipv6]:port"
        ))
    };
    if let Some(rest) = h.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        return match after {
            "" => Ok((addr.to_owned(), DEFAULT_PORT)),
            _ => {
                let port = after.strip_prefix(':').ok_or_else(bad)?;
                Ok((addr.to_owned(), port.parse().map_err(|_| bad())?))
            }
        };
    }
    match h.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
        }
        Some(_) => Err(bad()),
        None => Ok((h.to_owned(), DEFAULT_PORT)),
    }
}

impl PostgresBackend {
    /// Opens `postgres://user[:password]@host[:port][,host2[:port]]/dbname` (also
    /// `postgresql://`) with the options `table`, `unlogged`, `max_entries`, `max_bytes`,
    /// `cull_frequency` (Django's exact cull, see the [module](super)),
    /// `connect_timeout`, `statement_timeout`, `socket_timeout` (seconds), `pool_size`,
    /// `sslmode` and `sslrootcert`.
    ///
    /// Does not connect: the first operation does, and creates the table if needed.
    /// Errors: [`ErrorKind::Configuration`] for a bad URL or option, never with the password.
    pub fn open(location: &Location, options: &mut Options) -> Result<PostgresBackend> {
        let redacted = location.redacted();
        let scheme = location.scheme().to_owned();
        if location.hosts().is_empty() {
            return Err(Error::config(format!(
                "{scheme}:// needs a host, as in postgres://user:password@127.0.0.1:5432/dbname; \
                 got {redacted}"
            )));
        }
        let mut config = Config::new();
        for h in location.hosts() {
            let (host, port) = host_port(h, &redacted)?;
            if host.starts_with('/') {
                config.host_path(&host);
            } else {
                config.host(&host);
            }
            config.port(port);
        }
        let user = location.username().unwrap_or("postgres");
        config.user(user);
        if let Some(password) = location.password() {
            config.password(password);
        }
        let dbname = location.path().trim_start_matches('/');
        if dbname.contains('/') {
            return Err(Error::config(format!(
                "{scheme}:// takes one database name as its path; got {redacted}"
            )));
        }
        config.dbname(if dbname.is_empty() { user } else { dbname });
        config.application_name("polycache");
        let table = TableName::parse(options.take("table"), true, &scheme)?;
        let unlogged = options.bool("unlogged")?.unwrap_or(false);
        let bounds = Bounds::take(options, "postgres")?;
        let connect_timeout = options
            .seconds("connect_timeout")?
            .unwrap_or(Some(DEFAULT_CONNECT_TIMEOUT));
        if let Some(t) = connect_timeout {
            config.connect_timeout(t.max(Duration::from_millis(1)));
        }
        let statement_timeout = options.seconds("statement_timeout")?.flatten();
        if let Some(t) = statement_timeout {
            // 0 would mean "no timeout" to the server; the smallest real one is 1 ms.
            let ms = t.as_millis().clamp(1, i32::MAX as u128);
            config.options(format!("-c statement_timeout={ms}"));
        }
        // The client's own bound on each reply, for a server that cannot answer at all
        // (frozen, or gone without a reset): by default the server's statement_timeout
        // plus a second for its answer to arrive.
        let socket_timeout = options.seconds("socket_timeout")?.unwrap_or(Some(
            statement_timeout.map_or(DEFAULT_SOCKET_TIMEOUT, |t| {
                t.saturating_add(Duration::from_secs(1))
            }),
        ));
        let tls = PgTls::take(options, &mut config)?;
        let pool_size = options
            .positive_u64("pool_size")?
            .map_or(DEFAULT_POOL_SIZE, |n| n.min(1024) as usize);
        // Connecting goes through the hosts in turn, each with connect_timeout; the whole
        // (TLS and authentication included) is bounded by their sum.
        let hosts = u32::try_from(location.hosts().len()).unwrap_or(u32::MAX);
        let connect_bound = connect_timeout.map(|t| t.saturating_mul(hosts));
        let pool_wait = connect_bound
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
            .saturating_add(socket_timeout.unwrap_or(DEFAULT_SOCKET_TIMEOUT));
        let name = table.quoted.clone();
        Ok(PostgresBackend {
            inner: Arc::new(Inner {
                config,
                tls,
                location: redacted,
                connect_bound,
                socket_timeout,
                q: Queries::new(table, unlogged),
                pool: Pool::new(pool_size),
                pool_wait,
                ready: AtomicBool::new(false),
                create_lock: Mutex::new(()),
                trim: Trimmer::new(bounds),
                cull: bounds.cull,
                create_key: key_hash(format!("polycache:create:{name}").as_bytes()),
                trim_key: key_hash(format!("polycache:trim:{name}").as_bytes()),
            }),
        })
    }

    /// Creates the table and its index if they do not exist (the first operation also does).
    ///
    /// Safe to run from several processes at once: creation is serialized by an advisory
    /// lock. A table that exists is left as it is (also when `unlogged` differs).
    pub fn create_table(&self) -> Result<()> {
        let _guard = self
            .inner
            .create_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.create_now()?;
        self.inner.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// The statements [`PostgresBackend::create_table`] runs when the table is missing,
    /// without running them (or connecting).
    pub fn create_table_sql(&self) -> Vec<String> {
        let mut sql = vec![self.inner.q.create.clone()];
        if self.inner.cull.is_some() {
            sql.push(self.inner.q.count_create.clone());
        }
        sql
    }

    /// The exact number of rows in the table, expired ones included (a `COUNT(*)`: for
    /// monitoring and tests, not for every write).
    pub fn entry_count(&self) -> Result<u64> {
        self.run("counting rows", true, |c| {
            let s = c.stmt(Q::Count, &self.inner.q)?;
            let n: i64 = c.client.query_one(&s, &[])?.get(0);
            Ok(n.max(0) as u64)
        })
    }

    /// Runs a trimming pass now: purges a window of expired rows and, when the table is
    /// over a bound, deletes the oldest rows. Writes run one on their own every so often.
    pub fn trim(&self) -> Result<()> {
        if !self.inner.trim.claim() {
            return Ok(());
        }
        let result = self.run("trimming", true, |c| Ok(self.trim_pass(c)?));
        self.inner
            .trim
            .finish(result.as_ref().ok().copied().flatten());
        result.map(drop)
    }

    fn connect(&self) -> Result<PgConn> {
        let i = &self.inner;
        let client = match &i.tls {
            PgTls::Off => PgClient::connect(&i.config, NoTls, i.connect_bound, i.socket_timeout),
            PgTls::Rustls(tls) => {
                PgClient::connect(&i.config, tls.clone(), i.connect_bound, i.socket_timeout)
            }
        }
        .map_err(|e| match e {
            // The deadline of the whole connect (TCP, TLS, authentication), which the
            // server's own connect_timeout does not cover past the TCP handshake.
            PgError::TimedOut(d) => Error::new(
                ErrorKind::Timeout,
                format!(
                    "postgres connecting failed on {}: no answer within connect_timeout ({} s)",
                    i.location,
                    d.as_secs_f64()
                ),
            ),
            e => self.fail("connecting", &e),
        })?;
        Ok(PgConn {
            client,
            stmts: vec![None; N_QUERIES],
        })
    }

    #[cold]
    fn fail(&self, what: &str, e: &PgError) -> Error {
        Error::new(
            kind_of(e),
            format!(
                "postgres {what} failed on {}: {}",
                self.inner.location,
                describe(e)
            ),
        )
    }

    fn checkout(&self) -> Result<(Pooled<'_, PgConn>, bool)> {
        self.inner.pool.get(self.inner.pool_wait, || self.connect())
    }

    /// Creates the table unless it exists, under an advisory lock.
    fn create_now(&self) -> Result<()> {
        let (mut conn, _) = self.checkout()?;
        let q = &self.inner.q;
        let key = self.inner.create_key;
        let result = (|| -> Result<(), PgError> {
            // The counter is looked for only when this cache culls (the table's name stands
            // in for it otherwise).
            let count_table = if self.inner.cull.is_some() {
                &q.table.count_table
            } else {
                &q.table.quoted
            };
            let exists: bool = conn
                .client
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL \
                       AND to_regclass($3) IS NOT NULL",
                    &[&q.table.quoted, &q.table.qualified_index, count_table],
                )?
                .get(0);
            if exists {
                return Ok(());
            }
            let mut tx = conn.client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])?;
            tx.batch_execute(&q.create)?;
            if self.inner.cull.is_some() {
                tx.batch_execute(&q.count_create)?;
            }
            tx.commit()
        })();
        result.map_err(|e| {
            if connection_lost(&e) {
                conn.discard();
                self.inner.pool.clear_idle();
            }
            self.fail("creating the table", &e)
        })
    }

    fn ensure_table(&self) -> Result<()> {
        if self.inner.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _guard = self
            .inner
            .create_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.inner.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        self.create_now()?;
        self.inner.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Runs `f` on a pooled connection. A broken connection is dropped with every idle one;
    /// when `retry_safe` (running `f` twice does no harm) and the connection came from the
    /// pool, `f` runs once more on a new connection; a `retry_safe` `f` that the server
    /// rolled back to break a deadlock runs again (up to [`MAX_DEADLOCK_RETRIES`] times). A missing table is created and
    /// `f` retried.
    fn run<T>(
        &self,
        what: &str,
        retry_safe: bool,
        mut f: impl FnMut(&mut PgConn) -> Result<T, Fail>,
    ) -> Result<T> {
        self.ensure_table()?;
        let mut first = true;
        let mut deadlocks = 0;
        loop {
            let (mut conn, fresh) = self.checkout()?;
            let e = match f(&mut conn) {
                Ok(v) => return Ok(v),
                Err(Fail::Cache(e)) => return Err(e),
                Err(Fail::Pg(e)) => e,
            };
            if connection_lost(&e) || conn.client.is_closed() {
                conn.discard();
                self.inner.pool.clear_idle();
                if retry_safe && !fresh && first {
                    first = false;
                    continue;
                }
            } else if sqlstate(&e) == Some("40P01")
                && retry_safe
                && deadlocks < MAX_DEADLOCK_RETRIES
            {
                // A deadlock with another many-row statement (a trim, a delete_many): the
                // server rolled this one back, and running it again does no harm; under
                // heavy contention the new attempt may meet another one.
                deadlocks += 1;
                continue;
            } else if sqlstate(&e) == Some("42P01") && first {
                // The table went away (or never was): create it, forget the statements.
                first = false;
                conn.stmts.iter_mut().for_each(|s| *s = None);
                drop(conn);
                self.inner.ready.store(false, Ordering::Release);
                self.ensure_table()?;
                continue;
            }
            return Err(self.fail(what, &e));
        }
    }

    /// Runs `write` of `keys` in one transaction, Django's cull making room before each
    /// new key when the table is full (see the [module](super)).
    fn culled(
        &self,
        what: &str,
        retry_safe: bool,
        cull: Cull,
        keys: &[&[u8]],
        write: impl Fn(&mut PgTx<'_>, usize) -> Result<u64, PgError>,
    ) -> Result<u64> {
        let q = &self.inner.q;
        let (written, culled) = self.run(what, retry_safe, |c| {
            let stmts = [
                Q::HashExists,
                Q::CountRead,
                Q::ClearAll,
                Q::CullExpired,
                Q::CullOldest,
            ]
            .map(|which| c.stmt(which, q));
            let [exists, count, clear, expired, oldest] = stmts;
            let (exists, count, clear, expired, oldest) =
                (exists?, count?, clear?, expired?, oldest?);
            let mut tx = c.client.transaction()?;
            let (mut written, mut culled) = (0, 0);
            for (i, key) in keys.iter().enumerate() {
                if tx.query_opt(&exists, &[&key_hash(key)])?.is_none() {
                    let rows: i64 = tx.query_one(&count, &[])?.get(0);
                    culled += match cull.share(rows.max(0) as u64) {
                        Some(0) => 0,
                        None => tx.execute(&clear, &[])?,
                        Some(share) => {
                            let gone = tx.execute(&expired, &[&now_ms()])?;
                            match share.checked_sub(gone) {
                                Some(n) if n > 0 => gone + tx.execute(&oldest, &[&(n as i64)])?,
                                _ => gone,
                            }
                        }
                    };
                }
                written += write(&mut tx, i)?;
            }
            tx.commit()?;
            Ok((written, culled))
        })?;
        self.inner.trim.evicted(culled);
        Ok(written)
    }

    /// Counts writes and runs a trimming pass when one is due; its failure is only logged.
    #[inline]
    fn wrote(&self, n: u64) {
        if self.inner.trim.note_writes(n) {
            let result = self.run("trimming", true, |c| Ok(self.trim_pass(c)?));
            if let Err(e) = &result {
                log::warn!("polycache: trimming {} failed: {e}", self.inner.location);
            }
            self.inner.trim.finish(result.ok().flatten());
        }
    }

    /// One trimming pass in one transaction under an advisory lock (skipped when another
    /// process holds it); returns the table's estimated size afterwards.
    fn trim_pass(&self, c: &mut PgConn) -> Result<Option<Estimate>, PgError> {
        let q = &self.inner.q;
        let trim = &self.inner.trim;
        let [lock, sweep_end, sweep_delete, sample, id_span, oldest, delete_upto] = [
            Q::TryLock,
            Q::SweepEnd,
            Q::SweepDelete,
            Q::Sample,
            Q::IdSpan,
            Q::Oldest,
            Q::DeleteUpto,
        ]
        .map(|s| c.stmt(s, q));
        let (lock, sweep_end, sweep_delete, sample, id_span, oldest, delete_upto) = (
            lock?,
            sweep_end?,
            sweep_delete?,
            sample?,
            id_span?,
            oldest?,
            delete_upto?,
        );
        let now = now_ms();
        let mut tx = c.client.transaction()?;
        let locked: bool = tx.query_one(&lock, &[&self.inner.trim_key])?.get(0);
        if !locked {
            return Ok(None);
        }
        let cursor = trim.cursor();
        let end: Option<i64> = tx.query_one(&sweep_end, &[&cursor, &TRIM_BATCH])?.get(0);
        match end {
            Some(end) => {
                tx.execute(&sweep_delete, &[&cursor, &end, &now])?;
                trim.set_cursor(end);
            }
            None => trim.set_cursor(0),
        }
        let estimate = |tx: &mut PgTx<'_>| -> Result<Estimate, PgError> {
            let rows: Vec<(i64, i64)> = tx
                .query(&sample, &[&(SAMPLES as i64)])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let span = tx.query_one(&id_span, &[])?;
            Ok(Estimate::from_sample(
                &rows,
                super::id_span(span.get(0), span.get(1)),
            ))
        };
        let mut est = estimate(&mut tx)?;
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
                    .query(&oldest, &[&last, &TRIM_BATCH])?
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect();
                let (cutoff, done) = walk.take(&rows, excess);
                if let Some(cutoff) = cutoff {
                    let n = tx.execute(&delete_upto, &[&cutoff])?;
                    trim.evicted(n);
                    last = cutoff;
                }
                if done || (rows.len() as i64) < TRIM_BATCH {
                    break;
                }
            }
            est = estimate(&mut tx)?;
        }
        tx.commit()?;
        Ok(Some(est))
    }

    fn read(&self, c: &mut PgConn, hash: i64, key: &[u8], now: i64) -> Result<Found, PgError> {
        let s = c.stmt(Q::Get, &self.inner.q)?;
        Ok(match c.client.query_opt(&s, &[&hash, &key])? {
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
    fn remove_corrupt(&self, c: &mut PgConn, id: i64) {
        log::warn!(
            "polycache: removing a corrupt row (id {id}) from {}",
            self.inner.location
        );
        let result = c
            .stmt(Q::DeleteCorrupt, &self.inner.q)
            .and_then(|s| c.client.execute(&s, &[&id]));
        if let Err(e) = result {
            log::warn!(
                "polycache: could not remove a corrupt row: {}",
                describe(&e)
            );
        }
    }
}

/// The keys of `set_many`'s rows, in their order.
fn rows_keys<'a>(rows: &[(i64, &'a [u8], &[u8])]) -> Vec<&'a [u8]> {
    rows.iter().map(|r| r.1).collect()
}

impl Backend for PostgresBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        let hash = key_hash(key);
        self.run("get", true, |c| {
            Ok(match self.read(c, hash, key, now_ms())? {
                Found::Live(v) => Some(Value::from(v)),
                Found::Missing => None,
                Found::Corrupt(id) => {
                    self.remove_corrupt(c, id);
                    None
                }
            })
        })
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let hash = key_hash(key);
        let exp = expires_at(now_ms(), ttl);
        let size = byte_size(key, value);
        if let Some(cull) = self.inner.cull {
            let sql = &self.inner.q.sql[Q::Set as usize];
            self.culled("set", true, cull, &[key], |tx, _| {
                tx.execute(sql.as_str(), &[&hash, &key, &value, &exp, &size])
            })?;
            self.wrote(1);
            return Ok(());
        }
        self.run("set", true, |c| {
            let s = c.stmt(Q::Set, &self.inner.q)?;
            c.client.execute(&s, &[&hash, &key, &value, &exp, &size])?;
            Ok(())
        })?;
        self.wrote(1);
        Ok(())
    }

    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let hash = key_hash(key);
        let now = now_ms();
        let exp = expires_at(now, ttl);
        let size = byte_size(key, value);
        let stored = match self.inner.cull {
            Some(cull) => {
                let sql = &self.inner.q.sql[Q::Add as usize];
                self.culled("add", false, cull, &[key], |tx, _| {
                    tx.execute(sql.as_str(), &[&hash, &key, &value, &exp, &size, &now])
                })? > 0
            }
            None => self.run("add", false, |c| {
                let s = c.stmt(Q::Add, &self.inner.q)?;
                Ok(c.client
                    .execute(&s, &[&hash, &key, &value, &exp, &size, &now])?
                    > 0)
            })?,
        };
        if stored {
            self.wrote(1);
        }
        Ok(stored)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        let hash = key_hash(key);
        self.run("delete", true, |c| {
            let s = c.stmt(Q::Delete, &self.inner.q)?;
            Ok(c.client
                .query_opt(&s, &[&hash, &key, &now_ms()])?
                .is_some_and(|r| r.get::<_, Option<bool>>(0).unwrap_or(false)))
        })
    }

    fn has_key(&self, key: &[u8]) -> Result<bool> {
        let hash = key_hash(key);
        self.run("has_key", true, |c| {
            let s = c.stmt(Q::HasKey, &self.inner.q)?;
            Ok(c.client.query_opt(&s, &[&hash, &key, &now_ms()])?.is_some())
        })
    }

    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let hash = key_hash(key);
        self.run("touch", true, |c| {
            let now = now_ms();
            let s = c.stmt(Q::Touch, &self.inner.q)?;
            Ok(c.client
                .execute(&s, &[&hash, &key, &expires_at(now, ttl), &now])?
                > 0)
        })
    }

    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        let hash = key_hash(key);
        self.run("incr", false, |c| {
            let s = c.stmt(Q::Incr, &self.inner.q)?;
            // A refusal is classified by reading the row; if it changed meanwhile so that
            // the update would now succeed, try again (bounded).
            for _ in 0..16 {
                let now = now_ms();
                match c.client.query_opt(&s, &[&hash, &key, &delta, &now]) {
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
                match self.read(c, hash, key, now)? {
                    Found::Live(v) => {
                        apply_delta(&v, delta)?;
                    }
                    Found::Missing => return Err(not_found(key).into()),
                    Found::Corrupt(id) => {
                        self.remove_corrupt(c, id);
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

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut wanted: HashMap<&[u8], Vec<usize>> = HashMap::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            wanted.entry(*k).or_default().push(i);
        }
        let hashes: Vec<i64> = wanted.keys().map(|k| key_hash(k)).collect();
        self.run("get_many", true, |c| {
            let now = now_ms();
            let s = c.stmt(Q::GetMany, &self.inner.q)?;
            let rows = c.client.query(&s, &[&hashes])?;
            let mut out: Vec<Option<Value>> = vec![None; keys.len()];
            let mut corrupt = Vec::new();
            for r in &rows {
                let key: &[u8] = r.get(0);
                let Some(positions) = wanted.get(key) else {
                    continue;
                };
                match Found::check(key, r.get(1), r.get(2), r.get(3), now, r.get(4)) {
                    Found::Live(v) => {
                        let v = Value::from(v);
                        for &p in positions {
                            out[p] = Some(v.clone());
                        }
                    }
                    Found::Missing => {}
                    Found::Corrupt(id) => corrupt.push(id),
                }
            }
            for id in corrupt {
                self.remove_corrupt(c, id);
            }
            Ok(out)
        })
    }

    fn set_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<Vec<usize>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        // One row per key (a statement may not update a row twice); the last value wins.
        let mut last: HashMap<&[u8], usize> = HashMap::with_capacity(items.len());
        for (i, (k, _)) in items.iter().enumerate() {
            last.insert(k, i);
        }
        let mut rows: Vec<(i64, &[u8], &[u8])> = items
            .iter()
            .enumerate()
            .filter(|(i, (k, _))| last[k] == *i)
            .map(|(_, (k, v))| (key_hash(k), *k, *v))
            .collect();
        let exp = expires_at(now_ms(), ttl);
        if let Some(cull) = self.inner.cull {
            // Row by row in caller order, each new key culling as Django's database cache
            // does (the counter row taken first serializes these writers).
            let sql = &self.inner.q.sql[Q::Set as usize];
            self.culled("set_many", true, cull, &rows_keys(&rows), |tx, i| {
                let (h, k, v) = rows[i];
                tx.execute(sql.as_str(), &[&h, &k, &v, &exp, &byte_size(k, v)])
            })?;
            self.wrote(rows.len() as u64);
            return Ok(Vec::new());
        }
        // Key-hash order: many-row writers that lock rows in one order cannot deadlock
        // each other (a deadlock with a statement that locks in another order, such as a
        // bitmap-scan delete_many, is rolled back by the server and retried in `run`).
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        let hashes: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let ks = rows_keys(&rows);
        let vs: Vec<&[u8]> = rows.iter().map(|r| r.2).collect();
        self.run("set_many", true, |c| {
            let s = c.stmt(Q::SetMany, &self.inner.q)?;
            c.client.execute(&s, &[&hashes, &ks, &vs, &exp])?;
            Ok(())
        })?;
        self.wrote(ks.len() as u64);
        Ok(Vec::new())
    }

    fn delete_many(&self, keys: &[&[u8]]) -> Result<usize> {
        let unique: Vec<&[u8]> = {
            let mut seen = HashSet::with_capacity(keys.len());
            keys.iter().copied().filter(|k| seen.insert(*k)).collect()
        };
        if unique.is_empty() {
            return Ok(0);
        }
        let hashes: Vec<i64> = unique.iter().map(|k| key_hash(k)).collect();
        self.run("delete_many", true, |c| {
            let s = c.stmt(Q::DeleteMany, &self.inner.q)?;
            let rows = c.client.query(&s, &[&hashes, &unique, &now_ms()])?;
            Ok(rows
                .iter()
                .filter(|r| r.get::<_, Option<bool>>(0).unwrap_or(false))
                .count())
        })
    }

    fn clear(&self, prefix: &[u8]) -> Result<()> {
        let len = i32::try_from(prefix.len())
            .map_err(|_| Error::new(ErrorKind::InvalidKey, "clear prefix is too long"))?;
        self.run("clear", true, |c| {
            if prefix.is_empty() {
                let s = c.stmt(Q::ClearAll, &self.inner.q)?;
                c.client.execute(&s, &[])?;
            } else {
                let s = c.stmt(Q::ClearPrefix, &self.inner.q)?;
                c.client.execute(&s, &[&len, &prefix])?;
            }
            Ok(())
        })
    }

    fn evictions(&self) -> u64 {
        self.inner.trim.evictions()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports() {
        let r = "postgres://x";
        assert_eq!(host_port("h", r).unwrap(), ("h".into(), 5432));
        assert_eq!(host_port("h:6000", r).unwrap(), ("h".into(), 6000));
        assert_eq!(host_port("[::1]:7", r).unwrap(), ("::1".into(), 7));
        assert_eq!(host_port("[::1]", r).unwrap(), ("::1".into(), 5432));
        assert_eq!(host_port("/run/pg", r).unwrap(), ("/run/pg".into(), 5432));
        for bad in ["h:x", ":5", "[::1", "[::1]x", "h:70000"] {
            assert!(host_port(bad, r).unwrap_err().is_configuration(), "{bad}");
        }
    }
}
