//! Jobs after django-cacheback, with no task queue: a stale value is served at once while
//! one background refresh runs on a small pool of threads in the core.
//!
//! A [`Job`] stores each value in an [`Envelope`] whose `fresh_until` is the soft
//! `lifetime` and whose entry TTL is the hard `ttl`. A read finds one of three things:
//!
//! - **hit**: a fresh value, returned as is;
//! - **stale**: a value past its lifetime, returned at once while one refresh runs in the
//!   background (refreshes of one key are deduplicated, across processes too when the
//!   cache's [`RefreshPolicy`] has `lease`). A failed refresh is logged and the stale
//!   value keeps being served (stale-while-error) and refreshed again on the next read, until
//!   it is `max_stale` past its lifetime: then the caller fetches synchronously;
//! - **miss**: no value; with `fetch_on_miss` the caller fetches synchronously (callers of
//!   one key share one fetch), else it gets `None` and a refresh is scheduled.
//!
//! The refresh pool is process-wide: [`REFRESH_THREADS`] threads fed by a bounded queue of
//! [`REFRESH_QUEUE`] tasks. When the queue is full a refresh is dropped (logged), and the next
//! read of the stale value schedules it again. At process exit [`stop_refreshes`] drops the
//! queued refreshes and waits for the running ones. A child of `fork()` starts its own pool
//! (and its own flights: a refresh its parent was running is not waited for).

use crate::cache::{Cache, Key, TagStamp};
use crate::clock::unix_ms;
use crate::envelope::{after_ms, Envelope};
use crate::error::Result;
use crate::expiry::Ttl;
use crate::flight::{LeaderGuard, RefreshPolicy};
use crate::value::Value;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod asynchronous;
pub use asynchronous::AsyncFetch;

/// Threads in the process-wide refresh pool.
pub const REFRESH_THREADS: usize = 4;
/// Refreshes the pool's queue holds before it drops new ones.
pub const REFRESH_QUEUE: usize = 4096;

type Task = Box<dyn FnOnce() + Send>;

/// The pool of this process: one started in a parent before `fork()` has no threads here.
struct Pool {
    generation: u64,
    tx: SyncSender<Task>,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn pool() -> SyncSender<Task> {
    let generation = crate::fork::generation();
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pool.as_ref().filter(|p| p.generation == generation) {
        return p.tx.clone();
    }
    if let Some(inherited) = pool.take() {
        // Its threads and running refreshes stayed in the parent; leave its queue alone.
        std::mem::forget(inherited);
        RUNNING.store(0, Ordering::SeqCst);
    }
    let (tx, rx) = sync_channel::<Task>(REFRESH_QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..REFRESH_THREADS {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("polycache-refresh-{i}"))
            .spawn(move || worker(&rx));
        if let Err(e) = spawned {
            log::error!("polycache: could not start a refresh thread: {e}");
        }
    }
    *pool = Some(Pool {
        generation,
        tx: tx.clone(),
    });
    tx
}

/// Set by [`stop_refreshes`]: queued refreshes are dropped, none starts.
static STOPPED: AtomicBool = AtomicBool::new(false);
/// Refreshes running on the pool now.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

fn worker(rx: &Mutex<Receiver<Task>>) {
    loop {
        let task = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(task) => task,
            Err(_) => return,
        };
        RUNNING.fetch_add(1, Ordering::SeqCst);
        if !STOPPED.load(Ordering::SeqCst) && catch_unwind(AssertUnwindSafe(task)).is_err() {
            log::error!("polycache: a background refresh panicked");
        }
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// For process exit: from now on queued and new background refreshes are dropped (the stale
/// values stay; nothing is logged), and this waits up to `timeout` for the running ones to
/// finish. True when none is left running. There is no restart: call it once, at exit.
pub fn stop_refreshes(timeout: Duration) -> bool {
    STOPPED.store(true, Ordering::SeqCst);
    let generation = crate::fork::generation();
    let ours = POOL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|p| p.generation == generation);
    if !ours {
        // No pool in this process (a parent's, inherited through fork, runs nothing here).
        return true;
    }
    let deadline = Instant::now() + timeout;
    loop {
        if RUNNING.load(Ordering::SeqCst) == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Queues `task` on the refresh pool; false when the queue is full.
pub(crate) fn submit(task: Task) -> bool {
    if STOPPED.load(Ordering::Relaxed) {
        return false;
    }
    match pool().try_send(task) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            log::warn!("polycache: the refresh queue is full; a refresh was dropped");
            false
        }
        Err(TrySendError::Disconnected(_)) => false,
    }
}

/// What a job's read found: a fresh value, a stale one, or nothing.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheStatus {
    /// A fresh value.
    Hit,
    /// A value past its lifetime (served while a refresh runs, or refetched synchronously).
    Stale,
    /// No value.
    Miss,
}

impl CacheStatus {
    /// `"hit"`, `"stale"` or `"miss"`: the same words in Rust, C and Python.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Stale => "stale",
            CacheStatus::Miss => "miss",
        }
    }
}

/// The outcome of [`Job::get`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    /// The value: `None` only after a miss without `fetch_on_miss`.
    pub value: Option<Value>,
    /// What the cache held.
    pub status: CacheStatus,
    /// True when this call fetched (or waited for a fetch of) the value it returns.
    pub fetched: bool,
}

/// A fetched value, with an optional lifetime of its own (cacheback's `expiry(*args)`).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// How long it stays fresh; `None`: the job's `lifetime`.
    pub fresh_for: Option<Duration>,
}

impl Fetched {
    /// `value`, fresh for `fresh_for` (`None`: the job's lifetime).
    pub fn new(value: Vec<u8>, fresh_for: Option<Duration>) -> Fetched {
        Fetched { value, fresh_for }
    }
}

impl From<Vec<u8>> for Fetched {
    fn from(value: Vec<u8>) -> Self {
        Fetched::new(value, None)
    }
}

/// How a job computes one key's value: what a cacheback job's `fetch(*args)` is, bound to
/// its arguments. Closures `Fn() -> Result<Vec<u8>>` implement it.
///
/// It is called on the caller's thread for synchronous fetches and on a refresh-pool thread
/// for background refreshes, so it is `Send + Sync + 'static`.
pub trait Fetch: Send + Sync + 'static {
    /// Computes the value.
    fn fetch(&self) -> Result<Fetched>;
    /// Asked when the value has been stale for `stale_for` (and is within `max_stale`): true
    /// makes the caller fetch now instead of getting the stale value (cacheback's
    /// `should_stale_item_be_fetched_synchronously(delta, …)`).
    fn should_fetch_synchronously(&self, stale_for: Duration) -> bool {
        let _ = stale_for;
        false
    }
}

impl<F, T> Fetch for F
where
    F: Fn() -> Result<T> + Send + Sync + 'static,
    T: Into<Fetched>,
{
    fn fetch(&self) -> Result<Fetched> {
        self().map(Into::into)
    }
}

/// The settings of a [`Job`].
///
/// ```
/// use polycache::JobOptions;
/// use std::time::Duration;
/// let o = JobOptions::default().lifetime(Duration::from_secs(60)).max_stale(Some(Duration::from_secs(600)));
/// assert!(o.fetch_on_miss);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOptions {
    /// The soft lifetime: how long a value is fresh (default 600 s, cacheback's).
    pub lifetime: Duration,
    /// The hard TTL of the entry; `None` never expires (default 30 days, cacheback's).
    pub ttl: Option<Duration>,
    /// On a miss, fetch in the caller (default); when false, return `None` and refresh in
    /// the background.
    pub fetch_on_miss: bool,
    /// How long past its lifetime a stale value may still be served while refreshes fail;
    /// past it the caller fetches synchronously. `None` (default): until the hard TTL.
    pub max_stale: Option<Duration>,
    /// The tags every value of the job carries (default none): [`Cache::invalidate_tags`] of
    /// one makes the job's values misses. Their versions are read before each fetch.
    pub tags: Vec<String>,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            lifetime: Duration::from_secs(600),
            ttl: Some(Duration::from_secs(30 * 86_400)),
            fetch_on_miss: true,
            max_stale: None,
            tags: Vec::new(),
        }
    }
}

impl JobOptions {
    /// Sets the soft lifetime.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }
    /// Sets the hard TTL (`None`: never expires).
    pub fn ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl;
        self
    }
    /// Sets `fetch_on_miss`.
    pub fn fetch_on_miss(mut self, on: bool) -> Self {
        self.fetch_on_miss = on;
        self
    }
    /// Sets the staleness bound.
    pub fn max_stale(mut self, bound: Option<Duration>) -> Self {
        self.max_stale = bound;
        self
    }
    /// Sets the tags every value of the job carries.
    pub fn tags<T: Into<String>>(mut self, tags: impl IntoIterator<Item = T>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }
}

/// A cacheback-style job over a cache: serves stale values while one background refresh
/// runs, with no task queue.
///
/// `Clone` (clones share the cache), `Send + Sync`. Values are stored in an [`Envelope`]:
/// a plain `get` of a job's key returns the envelope (see [`Envelope::decode`]).
///
/// ```
/// use polycache::{Cache, CacheStatus, Job, JobOptions};
/// use std::time::Duration;
///
/// let job = Job::new(Cache::open("memory://").unwrap(), JobOptions::default().lifetime(Duration::from_millis(20)));
/// let fetch = || Ok(b"report".to_vec());
/// assert_eq!(job.get("r", fetch).unwrap().status, CacheStatus::Miss); // fetched now
/// assert_eq!(job.get("r", fetch).unwrap().status, CacheStatus::Hit);
/// std::thread::sleep(Duration::from_millis(30));
/// let stale = job.get("r", fetch).unwrap();                          // served at once,
/// assert_eq!(stale.status, CacheStatus::Stale);                         // refreshed behind
/// assert_eq!(stale.value.as_deref(), Some(&b"report"[..]));
/// ```
#[derive(Clone)]
pub struct Job {
    cache: Cache,
    options: JobOptions,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("cache", &self.cache)
            .field("options", &self.options)
            .finish()
    }
}

impl Job {
    /// A job storing its values in `cache`.
    pub fn new(cache: Cache, options: JobOptions) -> Job {
        Job { cache, options }
    }

    /// The job's cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The job's settings.
    pub fn options(&self) -> &JobOptions {
        &self.options
    }

    fn policy(&self) -> &RefreshPolicy {
        self.cache.refresh_policy()
    }

    /// The value of `key`: fresh (hit), stale while one background refresh runs, or fetched
    /// now on a miss (see the module documentation). Counted in the cache's stats as a hit,
    /// a stale hit, or a miss.
    pub fn get<'k, F: Fetch>(&self, key: impl Into<Key<'k>>, fetch: F) -> Result<JobResult> {
        let full = self.cache.make_key(key)?;
        // With the job's tags' versions in the same request.
        let raw = self.cache.full_get_tagged(&full, &self.tag_names())?;
        match self.plan(raw, &|stale_for| {
            fetch.should_fetch_synchronously(stale_for)
        }) {
            Plan::Answer(r) => Ok(r),
            Plan::Schedule(r) => {
                self.schedule(full, fetch);
                Ok(r)
            }
            Plan::Fetch { status, fallback } => {
                self.fetched(&full, status, fallback, self.fetch_shared(&full, &fetch))
            }
        }
    }

    /// What `get` does with what the cache holds (`raw`), counted in the stats: answer at
    /// once, answer and refresh in the background, or fetch now. `sync_wanted` is asked only
    /// of a stale value within `max_stale`, with how long it has been stale.
    fn plan(&self, raw: Option<Value>, sync_wanted: &dyn Fn(Duration) -> bool) -> Plan {
        let stats = self.cache.stats_ref();
        let now = unix_ms();
        let Some(raw) = raw else {
            stats.miss(1);
            if !self.options.fetch_on_miss {
                return Plan::Schedule(result(None, CacheStatus::Miss, false));
            }
            return Plan::Fetch {
                status: CacheStatus::Miss,
                fallback: None,
            };
        };
        let Some((env, payload)) = Envelope::decode(&raw) else {
            // A plain value (written by `set`, not by a job): fresh, with no lifetime.
            stats.hit(1);
            return Plan::Answer(result(Some(raw), CacheStatus::Hit, false));
        };
        if !env.is_stale(now) {
            stats.hit(1);
            return Plan::Answer(result(Some(Value::from(payload)), CacheStatus::Hit, false));
        }
        let stale_for = Duration::from_millis(now.saturating_sub(env.fresh_until));
        let too_stale = self.options.max_stale.is_some_and(|m| stale_for > m);
        if too_stale || sync_wanted(stale_for) {
            stats.miss(1);
            return Plan::Fetch {
                status: CacheStatus::Stale,
                fallback: (!too_stale).then(|| Value::from(payload)),
            };
        }
        stats.stale_hit(1);
        Plan::Schedule(result(
            Some(Value::from(payload)),
            CacheStatus::Stale,
            false,
        ))
    }

    /// The answer of a fetch `get` made now: its value, or on failure the stale `fallback`
    /// (logged), or the error when there is none.
    fn fetched(
        &self,
        full: &[u8],
        status: CacheStatus,
        fallback: Option<Value>,
        fetched: Result<Value>,
    ) -> Result<JobResult> {
        match (fetched, fallback) {
            (Ok(v), _) => Ok(result(Some(v), status, true)),
            (Err(e), Some(stale)) => {
                log::warn!(
                    "polycache: fetching {:?} failed, serving the stale value: {e}",
                    String::from_utf8_lossy(full)
                );
                Ok(result(Some(stale), CacheStatus::Stale, false))
            }
            (Err(e), None) => Err(e),
        }
    }

    /// Fetches `key` now, stores it and returns it (cacheback's `refresh`).
    pub fn refresh<'k, F: Fetch>(&self, key: impl Into<Key<'k>>, fetch: F) -> Result<Value> {
        let full = self.cache.make_key(key)?;
        self.fetch_and_store(&full, &fetch)
    }

    /// Stores `value` as fresh for `fresh_for` (`None`: the job's lifetime).
    pub fn set<'k>(
        &self,
        key: impl Into<Key<'k>>,
        value: &[u8],
        fresh_for: Option<Duration>,
    ) -> Result<bool> {
        let full = self.cache.make_key(key)?;
        let stamp = self.stamp()?;
        self.store(&full, value, fresh_for, 0, &stamp)
    }

    /// The job's tags.
    fn tag_names(&self) -> Vec<&str> {
        self.options.tags.iter().map(String::as_str).collect()
    }

    /// The current versions of the job's tags (none: an empty stamp, no I/O).
    fn stamp(&self) -> Result<TagStamp> {
        self.cache.tag_stamp(&self.tag_names())
    }

    /// Marks `key` stale and schedules a background refresh; true when a value was present.
    ///
    /// Until the refresh lands, reads get the old value as stale. The mark is a read and a
    /// rewrite of the entry, not atomic: a refresh finishing in between may be marked stale
    /// again (and so refreshed once more).
    pub fn invalidate<'k, F: Fetch>(&self, key: impl Into<Key<'k>>, fetch: F) -> Result<bool> {
        let full = self.cache.make_key(key)?;
        // Read first: an invalidation of a tag after it leaves the marked entry a miss.
        let stamp = self.stamp()?;
        let present = match self.cache.full_get(&full)? {
            None => false,
            Some(raw) => {
                let (marked, ttl) = self.mark_stale(&raw);
                self.cache.full_set(&full, &stamp.wrap(&marked), ttl)?;
                true
            }
        };
        self.schedule(full, fetch);
        Ok(present)
    }

    /// `raw` (a job's envelope, or a plain value) marked stale now, and its remaining TTL.
    fn mark_stale(&self, raw: &[u8]) -> (Vec<u8>, Ttl) {
        let now = unix_ms();
        let (env, payload) = match Envelope::decode(raw) {
            Some((env, payload)) => (env, payload),
            None => (Envelope::new(now, self.expires_at(now), 0), raw),
        };
        let ttl = match env.remaining(now) {
            None => Ttl::Never,
            Some(d) if d.is_zero() => Ttl::Expired,
            Some(d) => Ttl::After(d),
        };
        let marked = Envelope::new(env.fresh_until.min(now), env.expires_at, env.delta_us);
        (marked.encode(payload), ttl)
    }

    /// Removes `key`; true when it was present.
    pub fn delete<'k>(&self, key: impl Into<Key<'k>>) -> Result<bool> {
        self.cache.delete(key)
    }

    /// True while a refresh (background or synchronous) of `key` runs in this process.
    pub fn is_refreshing<'k>(&self, key: impl Into<Key<'k>>) -> Result<bool> {
        let full = self.cache.make_key(key)?;
        Ok(self.cache.flights().running(&full).is_some())
    }

    fn expires_at(&self, now: u64) -> u64 {
        self.options.ttl.map_or(0, |d| after_ms(now, d))
    }

    /// Fetches under single-flight (and the lease): callers of one key share one fetch.
    fn fetch_shared<F: Fetch>(&self, full: &[u8], fetch: &F) -> Result<Value> {
        let policy = self.policy();
        if !policy.single_flight {
            return self.fetch_and_store(full, fetch);
        }
        self.cache
            .single_flight(full, policy, &fresh, || self.fetch_and_store(full, fetch))
    }

    fn fetch_and_store<F: Fetch + ?Sized>(&self, full: &[u8], fetch: &F) -> Result<Value> {
        // The tags' versions are read before the fetch: see `Cache::get_or_set_with_tags`.
        let stamp = self.stamp()?;
        let started = Instant::now();
        let fetched = fetch.fetch()?;
        let delta = started.elapsed().as_micros() as u64;
        self.cache.stats_ref().refresh(1);
        self.store(full, &fetched.value, fetched.fresh_for, delta, &stamp)?;
        Ok(Value::from(fetched.value))
    }

    fn store(
        &self,
        full: &[u8],
        value: &[u8],
        fresh_for: Option<Duration>,
        delta_us: u64,
        stamp: &TagStamp,
    ) -> Result<bool> {
        let (wrapped, ttl) = self.wrap(value, fresh_for, delta_us);
        self.cache.full_set(full, &stamp.wrap(&wrapped), ttl)
    }

    /// A job's value as stored: in an envelope with its freshness, and the entry's TTL.
    fn wrap(&self, value: &[u8], fresh_for: Option<Duration>, delta_us: u64) -> (Vec<u8>, Ttl) {
        let now = unix_ms();
        let fresh_until = after_ms(now, fresh_for.unwrap_or(self.options.lifetime));
        let env = Envelope::new(fresh_until, self.expires_at(now), delta_us);
        let ttl = match self.options.ttl {
            None => Ttl::Never,
            Some(d) if d.is_zero() => Ttl::Expired,
            Some(d) => Ttl::After(d),
        };
        (env.encode(value), ttl)
    }

    /// Queues one background refresh of `full`, unless one is running already.
    fn schedule<F: Fetch>(&self, full: Vec<u8>, fetch: F) {
        let Some(guard) = self.cache.flights().try_lead(&full) else {
            return;
        };
        let job = self.clone();
        // If the queue is full the task is dropped, and its guard with it: the flight ends
        // as failed and the next read schedules the refresh again.
        submit(Box::new(move || {
            job.refresh_in_background(&full, &fetch, guard)
        }));
    }

    fn refresh_in_background<F: Fetch>(&self, full: &[u8], fetch: &F, guard: LeaderGuard) {
        let policy = self.policy();
        let lease = if policy.lease {
            match self.cache.try_lease(full, policy.lease_ttl) {
                Some(lease) => Some(lease),
                // Another process is refreshing this key.
                None => return guard.complete(None),
            }
        } else {
            None
        };
        let refreshed = match self.cache.full_get(full).ok().flatten().and_then(fresh) {
            Some(v) => Ok(v),
            None => self.fetch_and_store(full, fetch),
        };
        self.finish_background(full, refreshed, guard);
        if let Some(lease) = &lease {
            self.cache.end_lease(lease);
        }
    }

    /// Ends a background refresh: its flight's waiters get the value, or a failure is logged
    /// and the stale value kept.
    ///
    /// A refresh that found the value fresh again did not fetch: a read that saw it stale can
    /// schedule a refresh just after another one landed, and fetching again would replace a
    /// value that is fresh (a job with a counter in its fetch saw 2 → 6, skipping 4).
    fn finish_background(&self, full: &[u8], refreshed: Result<Value>, guard: LeaderGuard) {
        match refreshed {
            Ok(v) => guard.complete(Some(v)),
            Err(e) => {
                log::warn!(
                    "polycache: background refresh of {:?} failed; the stale value is kept: {e}",
                    String::from_utf8_lossy(full)
                );
                guard.complete(None);
            }
        }
    }
}

/// A value found while waiting for a fetch, or before a background refresh fetches, if it
/// will do: a fresh one, or a plain one.
fn fresh(v: Value) -> Option<Value> {
    match Envelope::decode(&v) {
        Some((env, p)) if !env.is_stale(unix_ms()) => Some(Value::from(p)),
        Some(_) => None,
        None => Some(v),
    }
}

/// What [`Job::get`] does after its read; see `Job::plan`.
enum Plan {
    Answer(JobResult),
    Schedule(JobResult),
    Fetch {
        status: CacheStatus,
        fallback: Option<Value>,
    },
}

fn result(value: Option<Value>, status: CacheStatus, fetched: bool) -> JobResult {
    JobResult {
        value,
        status,
        fetched,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// The scenario no public call can stage on demand: a refresh scheduled by a read that saw
    /// the value stale, arriving after another refresh made it fresh again.
    #[test]
    fn a_refresh_scheduled_after_another_landed_does_not_fetch_again() {
        let cache = Cache::open("memory://").unwrap();
        let job = Job::new(cache, JobOptions::default());
        assert!(job.set("k", b"landed", None).unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let full = job.cache.make_key("k").unwrap();
        job.schedule(full, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(b"again".to_vec())
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while job.is_refreshing("k").unwrap() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!job.is_refreshing("k").unwrap());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let got = job.get("k", || Ok(b"unused".to_vec())).unwrap();
        assert_eq!(got.value.as_deref(), Some(&b"landed"[..]));
        // A stale value is still refreshed.
        job.invalidate("k", || Ok(b"refetched".to_vec())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while job
            .cache
            .get("k")
            .unwrap()
            .is_some_and(|v| !v.ends_with(b"refetched"))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let got = job.get("k", || Ok(b"unused".to_vec())).unwrap();
        assert_eq!(got.value.as_deref(), Some(&b"refetched"[..]));
    }
}
