//! Single-flight loading: when many callers miss one key, one computes and the others wait
//! for its result; an optional lease in the backend does the same across processes; and
//! optional XFetch early refresh recomputes hot keys before they expire.
//!
//! In process, each [`Cache`] keeps a map of the keys being computed, each with a slot
//! (mutex + condition variable) that the computing caller fills. Across processes, the
//! computing caller first takes a lease: `add` of the key `{full key}:__lock__` with a short
//! TTL (`lease_ttl`). `add` is atomic on every backend, so one process wins; the others poll
//! the key with backoff until the value appears, and take over when the lease disappears
//! (released by a computing caller that failed, or expired with a caller that died). Every
//! wait is bounded by `flight_timeout`, after which a waiter computes the value itself.

use crate::cache::{check_tags, Cache, Key, TagStamp};
use crate::clock::unix_ms;
use crate::envelope::{after_ms, Envelope};
use crate::error::{Error, Result};
use crate::expiry::{Expiry, Ttl};
use crate::location::Options;
use crate::value::Value;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

mod asynchronous;

/// How [`Cache::get_or_set_with`], the decorators and jobs compute missing values.
///
/// URL options (every scheme): `single_flight=true|false`, `lease=true|false`,
/// `lease_ttl=SECONDS`, `flight_timeout=SECONDS`, `xfetch_beta=NUMBER`.
///
/// - `single_flight` (default on): concurrent callers of one cache that miss one key share
///   one computation.
/// - `lease` (default off): the computing caller also takes a lease in the backend, so
///   callers in other processes sharing the backend wait for it too.
/// - `lease_ttl` (default 10 s): how long a lease lives if its holder never releases it.
/// - `flight_timeout` (default 10 s): the longest a caller waits for another's computation
///   before computing the value itself.
/// - `xfetch_beta` (default 0, off): XFetch early refresh. Values are then stored in an
///   [`Envelope`] with their expiry and compute time `delta`, and a caller that reads one
///   recomputes it early with probability rising as expiry nears: when
///   `now - delta * beta * ln(rand()) >= expiry`. 1.0 is the paper's choice; more refreshes
///   earlier.
///
/// `Clone`, `Send + Sync`.
///
/// ```
/// use polycache::{Cache, RefreshPolicy};
/// use std::time::Duration;
/// let cache = Cache::builder("memory://")
///     .refresh_policy(RefreshPolicy::default().lease(true).xfetch_beta(1.0))
///     .build()
///     .unwrap();
/// assert!(cache.refresh_policy().lease);
/// let same = Cache::open("memory://?lease=true&lease_ttl=5&xfetch_beta=1").unwrap();
/// assert_eq!(same.refresh_policy().lease_ttl, Duration::from_secs(5));
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshPolicy {
    /// Concurrent misses of one key in this cache share one computation.
    pub single_flight: bool,
    /// The computing caller takes a lease in the backend, for callers in other processes.
    pub lease: bool,
    /// The TTL of a lease.
    pub lease_ttl: Duration,
    /// The longest a caller waits for another's computation.
    pub flight_timeout: Duration,
    /// XFetch's beta; 0 turns early refresh off.
    pub xfetch_beta: f64,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            single_flight: true,
            lease: false,
            lease_ttl: Duration::from_secs(10),
            flight_timeout: Duration::from_secs(10),
            xfetch_beta: 0.0,
        }
    }
}

impl RefreshPolicy {
    /// Turns single-flight on or off.
    pub fn single_flight(mut self, on: bool) -> Self {
        self.single_flight = on;
        self
    }
    /// Turns the cross-process lease on or off.
    pub fn lease(mut self, on: bool) -> Self {
        self.lease = on;
        self
    }
    /// Sets the lease TTL (at least 1 ms).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(1));
        self
    }
    /// Sets the longest wait for another caller's computation.
    pub fn flight_timeout(mut self, timeout: Duration) -> Self {
        self.flight_timeout = timeout;
        self
    }
    /// Sets XFetch's beta (0 or less, or NaN: early refresh off).
    pub fn xfetch_beta(mut self, beta: f64) -> Self {
        self.xfetch_beta = if beta.is_finite() && beta > 0.0 {
            beta
        } else {
            0.0
        };
        self
    }

    /// Reads the policy's URL options, leaving defaults for the ones not given.
    pub(crate) fn take(options: &mut Options) -> Result<RefreshPolicy> {
        let mut p = RefreshPolicy::default();
        if let Some(v) = options.bool("single_flight")? {
            p.single_flight = v;
        }
        if let Some(v) = options.bool("lease")? {
            p.lease = v;
        }
        if let Some(v) = options.seconds("lease_ttl")? {
            match v {
                Some(d) if !d.is_zero() => p.lease_ttl = d,
                _ => {
                    return Err(Error::config(
                        "invalid value for option 'lease_ttl': expected a number of seconds > 0",
                    ))
                }
            }
        }
        if let Some(v) = options.seconds("flight_timeout")? {
            p.flight_timeout = v.unwrap_or(Duration::from_secs(86_400 * 365));
        }
        if let Some(v) = options.take("xfetch_beta") {
            match v.trim().parse::<f64>() {
                Ok(b) if b.is_finite() && b >= 0.0 => p.xfetch_beta = b,
                _ => {
                    return Err(Error::config(format!(
                        "invalid value {v:?} for option 'xfetch_beta': expected a number >= 0"
                    )))
                }
            }
        }
        Ok(p)
    }

    /// XFetch: true when a value with `env` should be recomputed now, ahead of its expiry.
    pub(crate) fn refresh_early(&self, env: &Envelope, now_ms: u64) -> bool {
        if self.xfetch_beta <= 0.0 || env.fresh_until == 0 {
            return false;
        }
        let delta_ms = env.delta_us as f64 / 1000.0;
        // -ln(u) for u in (0, 1] is an exponential variable: usually small, sometimes large.
        let gap = delta_ms * self.xfetch_beta * -unit_random().ln();
        now_ms as f64 + gap >= env.fresh_until as f64
    }
}

/// A uniform random number in (0, 1], from a per-thread xorshift generator.
pub(crate) fn unit_random() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    let x = STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    });
    ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS once per process and varies per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(unix_ms());
    h.finish() | 1
}

/// A random token that identifies one lease holder.
pub(crate) fn random_token() -> String {
    let a = (unit_random() * (1u64 << 53) as f64) as u64;
    let b = (unit_random() * (1u64 << 53) as f64) as u64;
    format!("{a:014x}{b:014x}")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves consistent data: continue with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The keys being computed in one cache.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<Box<[u8]>, Arc<Flight>>>,
}

/// One computation in progress; its followers wait on it.
pub(crate) struct Flight {
    state: Mutex<State>,
    done: Condvar,
    /// Wakes the followers that await (async callers); `done` wakes the ones that block.
    notify: tokio::sync::Notify,
    /// The thread computing, when it is a caller (not a pool thread).
    leader: Option<ThreadId>,
    /// [`crate::fork::generation`] when it started: a flight of the parent's, inherited
    /// through `fork()`, has nobody computing it in the child.
    generation: u64,
}

enum State {
    Running,
    /// `Some` with the value; `None` when the computation failed (followers retry).
    Done(Option<Value>),
}

/// What joining a key's flight made of the caller.
pub(crate) enum Join {
    /// Compute, then [`LeaderGuard::complete`].
    Lead(LeaderGuard),
    /// Wait for the running computation.
    Follow(Arc<Flight>),
}

/// What a follower's wait gave.
pub(crate) enum Waited {
    Value(Value),
    Failed,
    TimedOut,
}

impl Flights {
    fn lead(self: &Arc<Self>, key: &[u8], leader: Option<ThreadId>) -> Join {
        let generation = crate::fork::generation();
        let mut map = lock(&self.map);
        if let Some(f) = map.get(key).filter(|f| f.generation == generation) {
            return Join::Follow(f.clone());
        }
        let flight = Arc::new(Flight {
            state: Mutex::new(State::Running),
            done: Condvar::new(),
            notify: tokio::sync::Notify::new(),
            leader,
            generation,
        });
        map.insert(key.into(), flight.clone());
        Join::Lead(LeaderGuard {
            flights: self.clone(),
            key: key.into(),
            flight,
            finished: false,
        })
    }

    /// Leads the computation of `key` if nobody does, else follows it.
    pub(crate) fn join(self: &Arc<Self>, key: &[u8]) -> Join {
        self.lead(key, Some(thread::current().id()))
    }

    /// Leads the computation of `key` for an async caller (no thread to mark), else follows.
    pub(crate) fn join_async(self: &Arc<Self>, key: &[u8]) -> Join {
        self.lead(key, None)
    }

    /// Leads the computation of `key` for a background thread, unless one is running.
    pub(crate) fn try_lead(self: &Arc<Self>, key: &[u8]) -> Option<LeaderGuard> {
        match self.lead(key, None) {
            Join::Lead(guard) => Some(guard),
            Join::Follow(_) => None,
        }
    }

    /// The running computation of `key`, if any.
    pub(crate) fn running(&self, key: &[u8]) -> Option<Arc<Flight>> {
        lock(&self.map).get(key).cloned()
    }

    /// How many keys are being computed.
    pub(crate) fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

impl Flight {
    /// What the computation gave, if it has finished.
    fn outcome(&self) -> Option<Waited> {
        match &*lock(&self.state) {
            State::Done(v) => Some(v.clone().map_or(Waited::Failed, Waited::Value)),
            State::Running => None,
        }
    }

    /// Waits until the computation finishes or `deadline` passes.
    pub(crate) fn wait(&self, deadline: Instant) -> Waited {
        let mut state = lock(&self.state);
        loop {
            if let State::Done(v) = &*state {
                return v.clone().map_or(Waited::Failed, Waited::Value);
            }
            let now = Instant::now();
            if now >= deadline {
                return Waited::TimedOut;
            }
            state = self
                .done
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// True when the calling thread is the one computing (a loader that re-enters).
    pub(crate) fn led_by_current_thread(&self) -> bool {
        self.leader == Some(thread::current().id())
    }
}

/// The right and duty to finish one flight; dropping it unfinished fails the flight, so a
/// loader that panics or errors never leaves followers waiting for nothing.
pub(crate) struct LeaderGuard {
    flights: Arc<Flights>,
    key: Box<[u8]>,
    flight: Arc<Flight>,
    finished: bool,
}

impl LeaderGuard {
    /// Hands `value` (`None`: failed) to every follower and ends the flight.
    pub(crate) fn complete(mut self, value: Option<Value>) {
        self.finish(value);
    }

    fn finish(&mut self, value: Option<Value>) {
        if self.finished {
            return;
        }
        self.finished = true;
        {
            let mut map = lock(&self.flights.map);
            if map
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                map.remove(&self.key);
            }
        }
        *lock(&self.flight.state) = State::Done(value);
        self.flight.done.notify_all();
        self.flight.notify.notify_waiters();
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// What a lookup found: the split of [`Cache::get_or_set_with`] that bindings use to keep
/// the hit path apart from the (possibly blocking) load path.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A value to return as it is (an envelope's payload, already unwrapped).
    Hit(Value),
    /// No value: call [`Cache::load`] with no current value.
    Miss,
    /// A value XFetch chose to recompute early: call [`Cache::load`] with it as the current
    /// value (returned if another caller is already refreshing it, or if the refresh fails).
    RefreshEarly(Value),
}

/// The lease of one computation across processes.
pub(crate) enum Lease {
    Held {
        lock: Vec<u8>,
        token: String,
    },
    /// The value appeared while waiting for another holder.
    Found(Value),
    /// No lease (backend error, or timed out waiting): compute without one.
    Unavailable,
}

/// What a read found, for `get_or_set_with`: a hit (an envelope unwrapped), a miss, or a
/// value XFetch chose to refresh early.
fn classify(found: Option<Value>, policy: &RefreshPolicy) -> Lookup {
    let Some(v) = found else {
        return Lookup::Miss;
    };
    let Some((env, p)) = Envelope::decode(&v) else {
        return Lookup::Hit(v);
    };
    let current = Value::from(p);
    if policy.refresh_early(&env, unix_ms()) {
        Lookup::RefreshEarly(current)
    } else {
        Lookup::Hit(current)
    }
}

/// The key of the lease of `full`.
fn lease_key(full: &[u8]) -> Vec<u8> {
    let mut lock = Vec::with_capacity(full.len() + 9);
    lock.extend_from_slice(full);
    lock.extend_from_slice(b":__lock__");
    lock
}

/// The next wait of a lease poll: jittered exponential backoff, so that waiting processes
/// do not poll in step; `None` past `deadline`.
fn lease_backoff(backoff: &mut Duration, deadline: Instant) -> Option<Duration> {
    let now = Instant::now();
    if now >= deadline {
        return None;
    }
    let jitter = 0.5 + unit_random();
    let wait = backoff.mul_f64(jitter).min(deadline - now);
    *backoff = (*backoff * 2).min(Duration::from_millis(50));
    Some(wait)
}

#[cold]
fn warn_lease_timeout(policy: &RefreshPolicy, full: &[u8]) {
    log::warn!(
        "polycache: waited {:?} for the lease of {:?}; computing without it",
        policy.flight_timeout,
        String::from_utf8_lossy(full)
    );
}

#[cold]
fn warn_flight_timeout(policy: &RefreshPolicy, full: &[u8]) {
    log::warn!(
        "polycache: waited {:?} for another caller computing {:?}; computing it here",
        policy.flight_timeout,
        String::from_utf8_lossy(full)
    );
}

#[cold]
fn warn_early_refresh(full: &[u8], e: &Error) {
    log::warn!(
        "polycache: early refresh of {:?} failed, keeping the current value: {e}",
        String::from_utf8_lossy(full)
    );
}

/// The payload of a stored value: an envelope's content, or the value itself.
pub(crate) fn payload(v: Value) -> Value {
    match Envelope::decode(&v) {
        Some((_, p)) => Value::from(p),
        None => v,
    }
}

impl Cache {
    /// The value under `key`; on a miss, one caller runs `loader` and stores its result while
    /// concurrent callers for the same key wait for it (single-flight).
    ///
    /// Unlike [`Cache::get_or_set`] (Django's: every caller that misses computes, and the
    /// first `add` wins), `get_or_set_with` runs `loader` once for all the callers of this
    /// cache that miss the key at the same time, and stores its result with `set`. It follows
    /// the cache's [`RefreshPolicy`]: with `lease` the computing caller also takes a lease in
    /// the backend so that other processes wait too; with `xfetch_beta` the value is stored in
    /// an [`Envelope`] and recomputed early as its expiry nears. Waits are bounded by
    /// `flight_timeout`, after which a waiter computes the value itself.
    ///
    /// A `loader` error is returned to its caller and nothing is stored; the callers that
    /// were waiting then retry (one of them runs its own loader). A loader that calls
    /// `get_or_set_with` for its own key runs its loader directly rather than deadlock.
    ///
    /// ```
    /// use polycache::{Cache, Expiry};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::time::Duration;
    ///
    /// let cache = Cache::open("memory://").unwrap();
    /// let calls = AtomicUsize::new(0);
    /// std::thread::scope(|s| {
    ///     for _ in 0..8 {
    ///         s.spawn(|| {
    ///             let v = cache.get_or_set_with("report", || {
    ///                 calls.fetch_add(1, Ordering::SeqCst);
    ///                 std::thread::sleep(Duration::from_millis(50));
    ///                 Ok(b"expensive".to_vec())
    ///             }, Expiry::Default).unwrap();
    ///             assert_eq!(&*v, b"expensive");
    ///         });
    ///     }
    /// });
    /// assert_eq!(calls.load(Ordering::SeqCst), 1);
    /// assert_eq!(cache.stats().refreshes, 1);
    /// ```
    pub fn get_or_set_with<'k, F>(
        &self,
        key: impl Into<Key<'k>>,
        loader: F,
        expiry: Expiry,
    ) -> Result<Value>
    where
        F: FnOnce() -> Result<Vec<u8>>,
    {
        let policy = self.refresh_policy();
        let key = key.into();
        match self.lookup(key, policy)? {
            Lookup::Hit(v) => Ok(v),
            Lookup::Miss => self.load(key, loader, expiry, policy, None),
            Lookup::RefreshEarly(current) => self.load(key, loader, expiry, policy, Some(current)),
        }
    }

    /// [`Cache::get_or_set_with`] with another [`RefreshPolicy`] than the cache's.
    pub fn get_or_set_with_policy<'k, F>(
        &self,
        key: impl Into<Key<'k>>,
        loader: F,
        expiry: Expiry,
        policy: &RefreshPolicy,
    ) -> Result<Value>
    where
        F: FnOnce() -> Result<Vec<u8>>,
    {
        let key = key.into();
        match self.lookup(key, policy)? {
            Lookup::Hit(v) => Ok(v),
            Lookup::Miss => self.load(key, loader, expiry, policy, None),
            Lookup::RefreshEarly(current) => self.load(key, loader, expiry, policy, Some(current)),
        }
    }

    /// The first half of [`Cache::get_or_set_with`]: reads `key` (counted as a hit or a
    /// miss), unwraps an envelope, and decides on XFetch early refresh. Never blocks on
    /// other callers.
    #[inline]
    pub fn lookup<'k>(&self, key: impl Into<Key<'k>>, policy: &RefreshPolicy) -> Result<Lookup> {
        Ok(classify(self.get(key)?, policy))
    }

    /// The second half of [`Cache::get_or_set_with`], after a [`Cache::lookup`] that did not
    /// hit: computes the value with `loader` under single-flight (and the lease) and stores it.
    ///
    /// `current` is the value [`Lookup::RefreshEarly`] carried, `None` after a miss. With a
    /// current value, the caller refreshes only if no other caller is already doing so (else
    /// it returns `current` at once), and a failed refresh returns `current` too (logged).
    pub fn load<'k, F>(
        &self,
        key: impl Into<Key<'k>>,
        loader: F,
        expiry: Expiry,
        policy: &RefreshPolicy,
        current: Option<Value>,
    ) -> Result<Value>
    where
        F: FnOnce() -> Result<Vec<u8>>,
    {
        self.load_tagged(key, loader, expiry, policy, current, &[])
    }

    /// [`Cache::load`] whose stored value carries `tags`, their versions read just before
    /// `loader` runs (see [`Cache::get_or_set_with_tags`]).
    pub fn load_tagged<'k, F>(
        &self,
        key: impl Into<Key<'k>>,
        loader: F,
        expiry: Expiry,
        policy: &RefreshPolicy,
        current: Option<Value>,
        tags: &[&str],
    ) -> Result<Value>
    where
        F: FnOnce() -> Result<Vec<u8>>,
    {
        let full = self.make_key(key)?;
        if let Some(current) = current {
            // XFetch: this caller recomputes while the others keep reading the current value.
            let Some(guard) = self.flights().try_lead(&full) else {
                return Ok(current);
            };
            return match self.compute_and_store(&full, loader, expiry, policy, tags) {
                Ok(v) => {
                    guard.complete(Some(v.clone()));
                    Ok(v)
                }
                Err(e) => {
                    warn_early_refresh(&full, &e);
                    guard.complete(Some(current.clone()));
                    Ok(current)
                }
            };
        }
        if !policy.single_flight {
            return self.compute_and_store(&full, loader, expiry, policy, tags);
        }
        self.single_flight(&full, policy, &|v| Some(payload(v)), || {
            self.compute_and_store(&full, loader, expiry, policy, tags)
        })
    }

    /// Runs `compute` for `full` once for every caller of this cache that gets here at the
    /// same time (and, with the lease, once across processes); the others wait for its
    /// value. `accept` maps a stored value found meanwhile to the value to return, or `None`
    /// when it does not do (a job's stale value).
    pub(crate) fn single_flight<F>(
        &self,
        full: &[u8],
        policy: &RefreshPolicy,
        accept: &dyn Fn(Value) -> Option<Value>,
        compute: F,
    ) -> Result<Value>
    where
        F: FnOnce() -> Result<Value>,
    {
        let deadline = Instant::now() + policy.flight_timeout;
        let guard = loop {
            match self.flights().join(full) {
                Join::Lead(guard) => break Some(guard),
                Join::Follow(flight) if flight.led_by_current_thread() => break None,
                Join::Follow(flight) => match flight.wait(deadline) {
                    Waited::Value(v) => return Ok(v),
                    // The computing caller failed: lead or follow the next attempt.
                    Waited::Failed => continue,
                    Waited::TimedOut => {
                        warn_flight_timeout(policy, full);
                        break None;
                    }
                },
            }
        };
        let Some(guard) = guard else {
            return compute();
        };
        // Another caller may have stored the value between our miss and our lead.
        if let Some(v) = self.full_get(full)?.and_then(accept) {
            guard.complete(Some(v.clone()));
            return Ok(v);
        }
        let lease = if policy.lease {
            self.acquire_lease(full, deadline, policy, accept)
        } else {
            Lease::Unavailable
        };
        if let Lease::Found(v) = lease {
            guard.complete(Some(v.clone()));
            return Ok(v);
        }
        let result = compute();
        if let Lease::Held { lock, token } = &lease {
            self.release_lease(lock, token);
        }
        match result {
            Ok(v) => {
                guard.complete(Some(v.clone()));
                Ok(v)
            }
            Err(e) => {
                guard.complete(None);
                Err(e)
            }
        }
    }

    /// Runs `loader`, stores its value (in an envelope when XFetch is on) and counts a refresh.
    fn compute_and_store<F>(
        &self,
        full: &[u8],
        loader: F,
        expiry: Expiry,
        policy: &RefreshPolicy,
        tags: &[&str],
    ) -> Result<Value>
    where
        F: FnOnce() -> Result<Vec<u8>>,
    {
        // The tags' versions are read before the value is computed: an invalidation while
        // it is computed leaves it stamped with the old versions, a miss.
        let stamp = self.tag_stamp(tags)?;
        let started = Instant::now();
        let bytes = loader()?;
        self.store_computed(full, &bytes, expiry, policy, started.elapsed(), &stamp)?;
        Ok(Value::from(bytes))
    }

    /// Stores a value that a loader outside the cache computed in `delta`, as
    /// [`Cache::load`] stores one: in an [`Envelope`] when `policy` has XFetch on (so later
    /// [`Cache::lookup`]s can refresh it early), else plain; counted as a refresh.
    ///
    /// For callers that run the loader themselves, such as Python's `async` decorators.
    ///
    /// ```
    /// use polycache::{Cache, Expiry, Lookup, RefreshPolicy};
    /// use std::time::Duration;
    /// let cache = Cache::open("memory://").unwrap();
    /// let policy = RefreshPolicy::default().xfetch_beta(1e9);
    /// let ttl = Expiry::After(Duration::from_secs(60));
    /// cache.store_loaded("k", b"v", ttl, &policy, Duration::from_millis(50)).unwrap();
    /// // With such a beta, the next read is certain to be chosen to refresh early.
    /// assert!(matches!(cache.lookup("k", &policy).unwrap(), Lookup::RefreshEarly(_)));
    /// ```
    pub fn store_loaded<'k>(
        &self,
        key: impl Into<Key<'k>>,
        value: &[u8],
        expiry: Expiry,
        policy: &RefreshPolicy,
        delta: Duration,
    ) -> Result<()> {
        self.store_loaded_stamped(key, value, expiry, policy, delta, &TagStamp::default())
    }

    /// [`Cache::store_loaded`] with the tag versions of `stamp`, read with
    /// [`Cache::tag_stamp`] before the value was computed.
    pub fn store_loaded_stamped<'k>(
        &self,
        key: impl Into<Key<'k>>,
        value: &[u8],
        expiry: Expiry,
        policy: &RefreshPolicy,
        delta: Duration,
        stamp: &TagStamp,
    ) -> Result<()> {
        let full = self.make_key(key)?;
        self.store_computed(&full, value, expiry, policy, delta, stamp)
    }

    fn store_computed(
        &self,
        full: &[u8],
        bytes: &[u8],
        expiry: Expiry,
        policy: &RefreshPolicy,
        delta: Duration,
        stamp: &TagStamp,
    ) -> Result<()> {
        let (ttl, wrapped) = self.computed(bytes, expiry, policy, delta);
        self.full_set(full, &stamp.wrap(wrapped.as_deref().unwrap_or(bytes)), ttl)?;
        Ok(())
    }

    /// [`Cache::get_or_set_with`] whose stored value carries `tags`: their versions are read
    /// just before `loader` runs, so a value computed while one of them is invalidated is
    /// stored with the old version and reads as a miss.
    ///
    /// ```
    /// use polycache::{Cache, Expiry};
    /// let cache = Cache::open("memory://").unwrap();
    /// let v = cache
    ///     .get_or_set_with_tags("p42", || {
    ///         // The product changes while its page is rendered:
    ///         cache.invalidate_tags(&["product:42"]).unwrap();
    ///         Ok(b"old page".to_vec())
    ///     }, Expiry::Default, &["product:42"])
    ///     .unwrap();
    /// assert_eq!(&*v, b"old page"); // the caller gets its value ...
    /// assert_eq!(cache.get("p42").unwrap(), None); // ... but nobody is served it again
    /// ```
    pub fn get_or_set_with_tags<'k, F>(
        &self,
        key: impl Into<Key<'k>>,
        loader: F,
        expiry: Expiry,
        tags: &[&str],
    ) -> Result<Value>
    where
        F: FnOnce() -> Result<Vec<u8>>,
    {
        check_tags(tags)?;
        let policy = self.refresh_policy();
        let key = key.into();
        match self.lookup(key, policy)? {
            Lookup::Hit(v) => Ok(v),
            Lookup::Miss => self.load_tagged(key, loader, expiry, policy, None, tags),
            Lookup::RefreshEarly(current) => {
                self.load_tagged(key, loader, expiry, policy, Some(current), tags)
            }
        }
    }

    /// Counts a refresh and resolves how a computed value is stored: its TTL, and the value
    /// wrapped in an [`Envelope`] when XFetch is on (`None`: stored as it is).
    fn computed(
        &self,
        bytes: &[u8],
        expiry: Expiry,
        policy: &RefreshPolicy,
        delta: Duration,
    ) -> (Ttl, Option<Vec<u8>>) {
        self.stats_ref().refresh(1);
        let ttl = self.resolve_expiry(expiry);
        let wrapped = match ttl {
            Ttl::After(d) if policy.xfetch_beta > 0.0 => {
                let expires = after_ms(unix_ms(), d);
                let env = Envelope::new(expires, expires, delta.as_micros() as u64);
                Some(env.encode(bytes))
            }
            _ => None,
        };
        (ttl, wrapped)
    }

    /// Takes the lease of `full`, or waits for its holder's value, until `deadline`.
    fn acquire_lease(
        &self,
        full: &[u8],
        deadline: Instant,
        policy: &RefreshPolicy,
        accept: &dyn Fn(Value) -> Option<Value>,
    ) -> Lease {
        let lock = lease_key(full);
        let token = random_token();
        let mut backoff = Duration::from_millis(2);
        loop {
            match self.full_add(&lock, token.as_bytes(), policy.lease_ttl) {
                Ok(true) => {
                    // The previous holder may have stored the value just before releasing.
                    if let Ok(Some(v)) = self.full_get(full) {
                        if let Some(v) = accept(v) {
                            self.release_lease(&lock, &token);
                            return Lease::Found(v);
                        }
                    }
                    return Lease::Held { lock, token };
                }
                Ok(false) => {}
                Err(e) => {
                    log::warn!("polycache: could not take a lease ({e}); computing without one");
                    return Lease::Unavailable;
                }
            }
            match self.full_get(full) {
                Ok(Some(v)) => {
                    if let Some(v) = accept(v) {
                        return Lease::Found(v);
                    }
                }
                Ok(None) => {}
                Err(_) => return Lease::Unavailable,
            }
            let Some(wait) = lease_backoff(&mut backoff, deadline) else {
                warn_lease_timeout(policy, full);
                return Lease::Unavailable;
            };
            thread::sleep(wait);
        }
    }

    /// Releases a lease this caller holds (not one that expired and was taken by another):
    /// one atomic compare-and-delete where the backend has one (Redis).
    fn release_lease(&self, lock: &[u8], token: &str) {
        let _ = self.full_delete_if_equals(lock, token.as_bytes());
    }

    /// Tries once to take the lease of `full` without waiting; `Some((lock, token))` on
    /// success, `None` when another process holds it. Backend errors count as success, so a
    /// refresh is never skipped because the lease could not be checked.
    pub(crate) fn try_lease(&self, full: &[u8], ttl: Duration) -> Option<(Vec<u8>, String)> {
        let lock = lease_key(full);
        let token = random_token();
        match self.full_add(&lock, token.as_bytes(), ttl) {
            Ok(false) => None,
            _ => Some((lock, token)),
        }
    }

    /// Releases a lease from [`Cache::try_lease`].
    pub(crate) fn end_lease(&self, lease: &(Vec<u8>, String)) {
        self.release_lease(&lease.0, &lease.1);
    }

    /// How many keys of this cache are being computed right now (single-flight slots).
    pub fn flights_in_progress(&self) -> usize {
        self.flights().len()
    }
}
