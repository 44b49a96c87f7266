//! polycache: one cache engine for Rust, C and Python.
//!
//! A [`Cache`] is a backend opened from a URL plus Django's key policy
//! (`{key_prefix}:{version}:{key}`), a default TTL and statistics. [`Caches`] holds named
//! caches configured like Django's `CACHES`. Values are bytes; integers are ASCII decimal.
//!
//! ```
//! use polycache::{Cache, Expiry};
//!
//! let cache = Cache::open("memory://?max_entries=10000").unwrap();
//! cache.set("answer", b"42", Expiry::Default).unwrap();
//! assert_eq!(cache.incr("answer", 1).unwrap(), 43);
//! let v = cache.get_or_set("slow", || Ok(b"computed".to_vec()), Expiry::Never).unwrap();
//! assert_eq!(&*v, b"computed");
//! ```
#![warn(missing_docs)]
// Without memory:// a build has dummy:// alone: it exists to check the feature plumbing, and
// the clock and expiry helpers that only memory:// (and the other stores) use lie idle.
#![cfg_attr(not(feature = "memory"), allow(dead_code, unused_variables))]

pub mod backend;
mod bus;
mod cache;
mod clock;
mod codec;
pub mod completion;
mod envelope;
mod error;
mod expiry;
mod flight;
mod fork;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod jobs;
mod location;
mod options;
#[cfg(feature = "otel")]
pub mod otel;
mod pattern;
mod policy;
#[cfg(any(
    feature = "redis",
    feature = "memcached",
    feature = "sqlite",
    feature = "postgres"
))]
mod pool;
#[cfg(feature = "redis")]
mod redis_bus;
#[cfg(feature = "redis")]
mod redis_tracking;
pub mod runtime;
mod service;
pub mod settings;
#[cfg(feature = "redis")]
mod signals;
mod stats;
mod structures;
mod tiered;
mod value;

pub use backend::Marked;
pub use backend::ServerInfo;
pub use backend::{parse_i64, AsyncAccess, AsyncBackend, Backend, BoxFuture};
pub use backend::{AsyncKeyScan, BlockingPoolScan, CollectedKeys, KeyScan};
pub use bus::{Invalidation, InvalidationBus, InvalidationHandler, InvalidationTarget, LocalBus};
pub use cache::{check_tags, TagStamp, MAX_TAGS, MAX_TAG_LEN, TAG_MAGIC};
pub use cache::{AsyncKeyIter, KeyIter, DEFAULT_ITERSIZE, MAX_ITERSIZE};
pub use cache::{
    Cache, CacheBuilder, Key, DEFAULT_MAX_VALUE_SIZE, DEFAULT_TIMEOUT, MAX_KEY_LEN, SERIALIZERS,
};
pub use cache::{Lock, LockGuard, LockOptions};
pub use codec::{COMPRESSED_MAGIC, DEFAULT_COMPRESS_LEVEL, SIGNED_MAGIC};
pub use envelope::{Envelope, ENVELOPE_HEADER, ENVELOPE_MAGIC};
pub use error::{Error, ErrorKind, Result};
pub use expiry::{Expiry, TimeToLive};
pub use flight::{Lookup, RefreshPolicy};
pub use jobs::{
    stop_refreshes, AsyncFetch, CacheStatus, Fetch, Fetched, Job, JobOptions, JobResult,
    REFRESH_QUEUE, REFRESH_THREADS,
};
pub use location::{redact, Location, Options, SECRET_OPTIONS};
pub use options::{CacheOption, CacheOptions, OptionSource, OptionValue};
pub use pattern::{escape_glob, KeyPattern};
pub use policy::FailurePolicy;
#[cfg(feature = "redis")]
pub use redis_bus::{RedisBus, INVALIDATION_CHANNEL_PREFIX};
#[cfg(feature = "redis")]
pub use redis_tracking::TrackingBus;
pub use service::{CacheConfig, Caches};
pub use stats::{render_prometheus, StatsSnapshot};
pub use stats::{OpSnapshot, Operation, LATENCY_BOUNDS_NS, LATENCY_BUCKETS, OPERATIONS};
pub use structures::{CallArg, RedisArg, RedisCall, RedisCommand, RedisReply};
pub use tiered::{TieredBackend, DEFAULT_L1_TIMEOUT};
pub use value::Value;

use std::sync::Arc;

/// Whether a bridge from Rust's `log` to another language's logging (Python's `logging`,
/// a C callback) passes a record on: every record of polycache's own modules, and records of
/// the libraries under it (redis, rustls, …) from `Warn` up, whose debug output is theirs.
pub fn log_bridged(metadata: &log::Metadata<'_>) -> bool {
    let ours = metadata.target().split("::").next() == Some("polycache");
    ours || metadata.level() <= log::Level::Warn
}

/// Opens the backend a location names; the one place schemes are dispatched.
pub(crate) fn open_backend(location: &Location, options: &mut Options) -> Result<Arc<dyn Backend>> {
    match location.scheme() {
        "dummy" => Ok(Arc::new(backend::dummy::DummyBackend)),
        #[cfg(feature = "memory")]
        "memory" => Ok(Arc::new(backend::memory::MemoryBackend::open(
            location, options,
        )?)),
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "unix" | "redis+cluster" | "rediss+cluster" | "redis+sentinel"
        | "rediss+sentinel" => Ok(Arc::new(backend::redis::RedisBackend::open(
            location, options,
        )?)),
        #[cfg(feature = "memcached")]
        "memcached" => Ok(Arc::new(backend::memcached::MemcachedBackend::open(
            location, options,
        )?)),
        #[cfg(feature = "file")]
        "file" => Ok(Arc::new(backend::file::FileBackend::open(
            location, options,
        )?)),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(backend::sql::SqliteBackend::open(
            location, options,
        )?)),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(backend::sql::PostgresBackend::open(
            location, options,
        )?)),
        other => Err(Error::config(format!(
            "unknown cache scheme '{other}' in {}: expected one of {}",
            location.redacted(),
            SCHEMES.join(", ")
        ))),
    }
}

/// Creates the cache table (and its index) that `url` names, if it does not exist yet.
///
/// The explicit twin of the creation on first use, like Django's `createcachetable`: run it
/// at deploy time when the application's database user may not create tables. Accepts every
/// option a cache URL accepts and validates them all. A scheme without a table (or a SQL
/// scheme this build leaves out) is a configuration error.
///
/// ```
/// # #[cfg(feature = "sqlite")] {
/// let dir = std::env::temp_dir().join(format!("polycache-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let url = format!("sqlite://{}/cache.db?table=my_cache", dir.display());
/// polycache::create_table(&url).unwrap();
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # }
/// ```
pub fn create_table(url: &str) -> Result<()> {
    let location = table_location(url)?;
    match location.scheme() {
        #[cfg(feature = "sqlite")]
        "sqlite" => backend::sql::SqliteBackend::open(&location, &mut Options::new(&location))?
            .create_table(),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => {
            backend::sql::PostgresBackend::open(&location, &mut Options::new(&location))?
                .create_table()
        }
        other => Err(no_table(other, &location)),
    }
}

/// The SQL statements [`create_table`] runs for `url` when its table is missing, without
/// running them: for a deploy's dry run or a database administrator. Validates `url` as
/// [`create_table`] does, and neither connects nor writes.
///
/// ```
/// # #[cfg(feature = "sqlite")] {
/// let dir = std::env::temp_dir().join(format!("polycache-doc-sql-{}", std::process::id()));
/// let url = format!("sqlite://{}/cache.db?table=my_cache", dir.display());
/// let sql = polycache::create_table_sql(&url).unwrap();
/// assert!(sql[0].starts_with("CREATE TABLE IF NOT EXISTS \"my_cache\""));
/// assert!(!dir.exists());
/// # }
/// ```
pub fn create_table_sql(url: &str) -> Result<Vec<String>> {
    let location = table_location(url)?;
    match location.scheme() {
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(
            backend::sql::SqliteBackend::open(&location, &mut Options::new(&location))?
                .create_table_sql(),
        ),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(backend::sql::PostgresBackend::open(
            &location,
            &mut Options::new(&location),
        )?
        .create_table_sql()),
        other => Err(no_table(other, &location)),
    }
}

/// `url` validated in full (every option, including the ones the cache itself takes), then
/// parsed for [`create_table`] and [`create_table_sql`].
fn table_location(url: &str) -> Result<Location> {
    drop(Cache::builder(url).build()?);
    Location::parse(url)
}

fn no_table(scheme: &str, location: &Location) -> Error {
    Error::config(format!(
        "create_table needs a sqlite:// or postgres:// URL enabled in this build, not \
         {scheme}:// ({})",
        location.redacted()
    ))
}

/// The URL schemes this build can open.
pub const SCHEMES: &[&str] = &[
    "dummy://",
    #[cfg(feature = "memory")]
    "memory://",
    "tiered://",
    #[cfg(feature = "redis")]
    "redis://",
    #[cfg(feature = "redis")]
    "rediss://",
    #[cfg(feature = "redis")]
    "unix://",
    #[cfg(feature = "redis")]
    "redis+cluster://",
    #[cfg(feature = "redis")]
    "rediss+cluster://",
    #[cfg(feature = "redis")]
    "redis+sentinel://",
    #[cfg(feature = "redis")]
    "rediss+sentinel://",
    #[cfg(feature = "memcached")]
    "memcached://",
    #[cfg(feature = "file")]
    "file://",
    #[cfg(feature = "sqlite")]
    "sqlite://",
    #[cfg(feature = "postgres")]
    "postgres://",
    #[cfg(feature = "postgres")]
    "postgresql://",
];
