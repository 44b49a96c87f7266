//! `postgres://user:password@host:5432/db`: the cache table in a PostgreSQL database.

mod conn;
mod ops;
mod queries;
mod run;
mod tls;

use self::conn::{describe, kind_of, Connect, PgConn, PgError};
use self::ops::{Lookup, Removal, Write};
use self::queries::Queries;
use self::tls::PgTls;
use super::{blocking_pool, key_hash, Bounds, Cull, Estimate, TableName, Trimmer};
use crate::backend::{not_found, AsyncAccess, AsyncBackend, Backend, BoxFuture};
use crate::error::{Error, ErrorKind, Result};
use crate::expiry::TimeToLive;
use crate::location::{Location, Options};
use crate::pool::{Limits, Pool};
use crate::value::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::{Config, NoTls};

/// How long opening a connection may take unless `connect_timeout` says otherwise: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one reply may take unless `socket_timeout` or `statement_timeout` says
/// otherwise: 30 s.
pub const DEFAULT_SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections one backend opens at most unless `pool_size` says otherwise.
const DEFAULT_POOL_SIZE: usize = 16;
/// How often a statement the server rolled back to break a deadlock is run again.
pub(super) const MAX_DEADLOCK_RETRIES: u32 = 3;
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
/// circuit breaker) applies. Opening writes nothing, and neither do reads: the table is
/// created by the first write (until then reads answer misses), or explicitly with
/// [`PostgresBackend::create_table`]; with `unlogged=true` it is an `UNLOGGED` table (faster
/// writes, emptied after a crash).
///
/// TLS with `sslmode=require|verify-ca|verify-full` (and `prefer`) and
/// `sslrootcert=/path/ca.pem` (or `system`), as libpq reads them; without `sslmode`
/// connections are not encrypted (loopback, a private network or a unix socket such as
/// `postgres://user@%2Fvar%2Frun%2Fpostgresql/db`).
///
/// Awaited calls ([`AsyncBackend`]) run the same operations on a second pool of at most
/// `pool_size` connections whose tasks run on polycache's runtime; a future dropped
/// mid-operation leaves its connection usable and its transaction rolled back.
///
/// `Send + Sync`; clones share the pools. No method panics.
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
    /// Blocking connections, for the synchronous API.
    pool: Pool<PgConn>,
    /// Connections driven by polycache's runtime, for the async API.
    async_pool: Pool<PgConn>,
    ready: AtomicBool,
    create_lock: Mutex<()>,
    trim: Trimmer,
    cull: Option<Cull>,
    /// Advisory lock keys that serialize table creation and trimming across processes.
    create_key: i64,
    trim_key: i64,
}

/// A claimed trimming pass; ended (with no new estimate) if it is dropped unfinished.
struct TrimPass<'a> {
    trim: &'a Trimmer,
    done: bool,
}

impl TrimPass<'_> {
    fn finish(mut self, location: &str, result: &Result<Option<Estimate>>) {
        if let Err(e) = result {
            log::warn!("polycache: trimming {location} failed: {e}");
        }
        self.done = true;
        self.trim.finish(result.as_ref().ok().copied().flatten());
    }
}

impl Drop for TrimPass<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.trim.finish(None);
        }
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
        let table = TableName::parse(options.take("table"), true, &scheme)
            .map_err(|e| options.blame("table", e))?;
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
                location: redacted.clone(),
                connect_bound,
                socket_timeout,
                q: Queries::new(table, unlogged),
                pool: blocking_pool(pool_size, pool_wait),
                async_pool: Pool::new(
                    Limits::bounded(pool_size, Some(pool_wait)),
                    move |max, wait| {
                        Error::new(
                            ErrorKind::Timeout,
                            format!("all {max} async connections to {redacted} stayed busy for {wait:?}"),
                        )
                    },
                ),
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
        self.run_or("counting rows", true, &(), ops::count, Some(|_| Ok(0)))
    }

    /// Runs a trimming pass now: purges a window of expired rows and, when the table is
    /// over a bound, deletes the oldest rows. Writes run one on their own every so often.
    pub fn trim(&self) -> Result<()> {
        if !self.inner.trim.claim() {
            return Ok(());
        }
        let pass = self.trim_pass();
        let result = self.run("trimming", true, &(), ops::trim_pass);
        pass.finish(&self.inner.location, &result);
        result.map(drop)
    }

    fn trim_pass(&self) -> TrimPass<'_> {
        TrimPass {
            trim: &self.inner.trim,
            done: false,
        }
    }

    fn connector<T>(&self, tls: T) -> Connect<T> {
        let i = &self.inner;
        Connect {
            config: i.config.clone(),
            tls,
            bound: i.connect_bound,
            socket_timeout: i.socket_timeout,
        }
    }

    /// A blocking connection.
    fn connect(&self) -> Result<PgConn> {
        match &self.inner.tls {
            PgTls::Off => self.connector(NoTls).blocking(),
            PgTls::Rustls(tls) => self.connector(tls.clone()).blocking(),
        }
        .map_err(|e| self.connect_failed(e))
    }

    /// An async connection.
    async fn connect_async(&self) -> Result<PgConn> {
        match &self.inner.tls {
            PgTls::Off => self.connector(NoTls).on_runtime().await,
            PgTls::Rustls(tls) => self.connector(tls.clone()).on_runtime().await,
        }
        .map_err(|e| self.connect_failed(e))
    }

    #[cold]
    fn connect_failed(&self, e: PgError) -> Error {
        match e {
            // The deadline of the whole connect (TCP, TLS, authentication), which the
            // server's own connect_timeout does not cover past the TCP handshake.
            PgError::TimedOut(d) => Error::new(
                ErrorKind::Timeout,
                format!(
                    "postgres connecting failed on {}: no answer within connect_timeout ({} s)",
                    self.inner.location,
                    d.as_secs_f64()
                ),
            ),
            e => self.fail("connecting", &e),
        }
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

    /// Counts writes and runs a trimming pass when one is due; its failure is only logged.
    #[inline]
    fn wrote(&self, n: u64) {
        if self.inner.trim.note_writes(n) {
            let pass = self.trim_pass();
            let result = self.run("trimming", true, &(), ops::trim_pass);
            pass.finish(&self.inner.location, &result);
        }
    }

    /// The async twin of `wrote`.
    async fn wrote_async(&self, n: u64) {
        if self.inner.trim.note_writes(n) {
            let pass = self.trim_pass();
            let result = self.run_async("trimming", true, &(), ops::trim_pass).await;
            pass.finish(&self.inner.location, &result);
        }
    }

    fn write(&self, what: &str, w: &Write<'_>) -> Result<u64> {
        let n = self.run(what, !w.is_add(), w, ops::write)?;
        self.wrote(n.min(w.len()));
        Ok(n)
    }

    async fn write_async(&self, what: &str, w: &Write<'_>) -> Result<u64> {
        let n = self.run_async(what, !w.is_add(), w, ops::write).await?;
        self.wrote_async(n.min(w.len())).await;
        Ok(n)
    }
}

/// What `incr` answers when there is no table: the key is missing.
fn incr_missing(&(key, _): &(&[u8], i64)) -> Result<i64> {
    Err(not_found(key))
}

/// The prefix of a `clear` with its length, as the statement takes it.
fn clearing(prefix: &[u8]) -> Result<(i32, &[u8])> {
    let len = i32::try_from(prefix.len())
        .map_err(|_| Error::new(ErrorKind::InvalidKey, "clear prefix is too long"))?;
    Ok((len, prefix))
}

impl Backend for PostgresBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn async_access(self: Arc<Self>) -> AsyncAccess {
        AsyncAccess::Native(self)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        self.run_or("get", true, &key, ops::get, Some(|_| Ok(None)))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let w = Write::set(&[(key, value)], ttl, self.inner.cull);
        self.write("set", &w).map(drop)
    }

    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let w = Write::add(key, value, ttl, self.inner.cull);
        Ok(self.write("add", &w)? > 0)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        self.run_or("delete", true, &key, ops::delete, Some(|_| Ok(false)))
    }

    fn delete_if_equals(&self, key: &[u8], expected: &[u8]) -> Result<bool> {
        let args = (key, expected);
        self.run_or(
            "delete",
            true,
            &args,
            ops::delete_if_equals,
            Some(|_| Ok(false)),
        )
    }

    fn has_key(&self, key: &[u8]) -> Result<bool> {
        self.run_or("has_key", true, &key, ops::has_key, Some(|_| Ok(false)))
    }

    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let args = (key, ttl);
        self.run_or("touch", true, &args, ops::touch, Some(|_| Ok(false)))
    }

    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        let args = (key, delta);
        self.run_or("incr", false, &args, ops::incr, Some(incr_missing))
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let lookup = Lookup::new(keys);
        self.run_or(
            "get_many",
            true,
            &lookup,
            ops::get_many,
            Some(Lookup::misses),
        )
    }

    fn set_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<Vec<usize>> {
        if !items.is_empty() {
            self.write("set_many", &Write::set(items, ttl, self.inner.cull))?;
        }
        Ok(Vec::new())
    }

    fn delete_many(&self, keys: &[&[u8]]) -> Result<usize> {
        let r = Removal::new(keys);
        if r.is_empty() {
            return Ok(0);
        }
        self.run_or("delete_many", true, &r, ops::delete_many, Some(|_| Ok(0)))
    }

    fn clear(&self, prefix: &[u8]) -> Result<()> {
        self.run_or(
            "clear",
            true,
            &clearing(prefix)?,
            ops::clear,
            Some(|_| Ok(())),
        )
    }

    fn evictions(&self) -> u64 {
        self.inner.trim.evictions()
    }

    fn ttl(&self, key: &[u8]) -> Result<TimeToLive> {
        self.run_or(
            "ttl",
            true,
            &key,
            ops::ttl,
            Some(|_| Ok(TimeToLive::Missing)),
        )
    }

    fn replace(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let args = (key, value, ttl);
        self.run_or("replace", true, &args, ops::replace, Some(|_| Ok(false)))
    }

    /// Walks the table by id, `count` rows a page, with an escaped `LIKE` selecting the
    /// candidates ([`crate::KeyPattern::to_like`]) and the pattern itself deciding.
    fn scan_keys(
        self: Arc<Self>,
        pattern: &crate::KeyPattern,
        count: usize,
    ) -> Result<Box<dyn crate::KeyScan>> {
        let like = pattern.to_like();
        Ok(Box::new(crate::backend::IdScan::new(
            pattern,
            count,
            move |_, after, limit| {
                let args = (after, like.clone(), limit as i64);
                self.run("keys", true, &args, ops::scan)
            },
        )))
    }

    fn extend_if_equals(
        &self,
        key: &[u8],
        expected: &[u8],
        ttl: Duration,
        replace: bool,
    ) -> Result<bool> {
        // Adding time twice is not harmless: only a replacing extend is retried.
        let args = (key, expected, ttl, replace);
        self.run("extend", replace, &args, ops::extend_if_equals)
    }

    /// The server's version and clock, whether this connection is encrypted, and the
    /// table's shape (read from the catalogs; a missing table is a problem, not created).
    fn server_info(&self) -> Result<crate::backend::ServerInfo> {
        let facts = self.run_or(
            "reading the server information",
            true,
            &(),
            ops::server_facts,
            Some(|_| {
                Err(Error::new(
                    ErrorKind::Backend,
                    "the catalogs were not readable",
                ))
            }),
        )?;
        let mut info = crate::backend::ServerInfo::new("postgresql");
        info.version = Some(facts.version);
        info.tls = Some(facts.ssl);
        let ms = u64::try_from(facts.now_ms).unwrap_or(0);
        info.set_time(
            std::time::UNIX_EPOCH + Duration::from_millis(ms),
            facts.took,
        );
        let table = &self.inner.q.table.quoted;
        info.problems.extend(super::column_problems(
            table,
            POSTGRES_COLUMNS,
            &facts.columns,
        ));
        if !facts.columns.is_empty() && !facts.unique_index {
            info.problems.push(super::missing_unique_index(table));
        }
        Ok(info)
    }
}

/// The columns of the PostgreSQL cache table as `format_type` spells them.
const POSTGRES_COLUMNS: &[super::Column] = &[
    ("id", "bigint", true),
    ("key_hash", "bigint", true),
    ("key", "bytea", true),
    ("value", "bytea", true),
    ("expires_at", "bigint", false),
    ("byte_size", "bigint", true),
];

/// The same operations awaited: the same futures (`ops.rs`) on connections that polycache's
/// runtime drives. A future dropped mid-operation leaves its connection usable (see
/// `Lease` in `pool.rs`).
impl AsyncBackend for PostgresBackend {
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<Value>>> {
        Box::pin(async move {
            self.run_or_async("get", true, &key, ops::get, Some(|_| Ok(None)))
                .await
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let w = Write::set(&[(key, value)], ttl, self.inner.cull);
            self.write_async("set", &w).await.map(drop)
        })
    }

    fn add<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let w = Write::add(key, value, ttl, self.inner.cull);
            Ok(self.write_async("add", &w).await? > 0)
        })
    }

    fn delete<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.run_or_async("delete", true, &key, ops::delete, Some(|_| Ok(false)))
                .await
        })
    }

    fn delete_if_equals<'a>(
        &'a self,
        key: &'a [u8],
        expected: &'a [u8],
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let args = (key, expected);
            self.run_or_async(
                "delete",
                true,
                &args,
                ops::delete_if_equals,
                Some(|_| Ok(false)),
            )
            .await
        })
    }

    fn has_key<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.run_or_async("has_key", true, &key, ops::has_key, Some(|_| Ok(false)))
                .await
        })
    }

    fn touch<'a>(&'a self, key: &'a [u8], ttl: Option<Duration>) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let args = (key, ttl);
            self.run_or_async("touch", true, &args, ops::touch, Some(|_| Ok(false)))
                .await
        })
    }

    fn incr<'a>(&'a self, key: &'a [u8], delta: i64) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async move {
            let args = (key, delta);
            self.run_or_async("incr", false, &args, ops::incr, Some(incr_missing))
                .await
        })
    }

    fn get_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<Vec<Option<Value>>>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let lookup = Lookup::new(keys);
            self.run_or_async(
                "get_many",
                true,
                &lookup,
                ops::get_many,
                Some(Lookup::misses),
            )
            .await
        })
    }

    fn set_many<'a>(
        &'a self,
        items: &'a [(&'a [u8], &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Vec<usize>>> {
        Box::pin(async move {
            if !items.is_empty() {
                let w = Write::set(items, ttl, self.inner.cull);
                self.write_async("set_many", &w).await?;
            }
            Ok(Vec::new())
        })
    }

    fn delete_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            let r = Removal::new(keys);
            if r.is_empty() {
                return Ok(0);
            }
            self.run_or_async("delete_many", true, &r, ops::delete_many, Some(|_| Ok(0)))
                .await
        })
    }

    fn clear<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let args = clearing(prefix)?;
            self.run_or_async("clear", true, &args, ops::clear, Some(|_| Ok(())))
                .await
        })
    }

    fn ttl<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<TimeToLive>> {
        Box::pin(async move {
            self.run_or_async(
                "ttl",
                true,
                &key,
                ops::ttl,
                Some(|_| Ok(TimeToLive::Missing)),
            )
            .await
        })
    }

    fn replace<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let args = (key, value, ttl);
            self.run_or_async("replace", true, &args, ops::replace, Some(|_| Ok(false)))
                .await
        })
    }

    fn extend_if_equals<'a>(
        &'a self,
        key: &'a [u8],
        expected: &'a [u8],
        ttl: Duration,
        replace: bool,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let args = (key, expected, ttl, replace);
            self.run_async("extend", replace, &args, ops::extend_if_equals)
                .await
        })
    }

    /// The synchronous side's page query (an escaped `LIKE` by increasing id), each page
    /// awaited on tokio-postgres (or read on the synchronous pool when a caller reads a page
    /// without awaiting it).
    fn scan_keys(
        self: Arc<Self>,
        _sync: Arc<dyn Backend>,
        pattern: &crate::KeyPattern,
        count: usize,
    ) -> Result<Box<dyn crate::AsyncKeyScan>> {
        let like = pattern.to_like();
        let (backend, blocking_like) = (Arc::clone(&self), like.clone());
        Ok(Box::new(crate::backend::AsyncIdScan::new(
            pattern,
            count,
            move |after, limit| {
                let (backend, args) = (Arc::clone(&self), (after, like.clone(), limit as i64));
                Box::pin(async move { backend.run_async("keys", true, &args, ops::scan).await })
            },
            move |after, limit| {
                let args = (after, blocking_like.clone(), limit as i64);
                backend.run("keys", true, &args, ops::scan)
            },
        )))
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
