//! Single-flight loading: when many callers miss one key, one computes and the others wait
//! for its result; an optional lease in the backend does the same across processes; and
//! optional XFetch early refresh recomputes hot keys before they expire.
//!
//! In process, each [`crate::Cache`] keeps a map of the keys being computed, each with a slot
//! (mutex + condition variable) that the computing caller fills. Across processes, the
//! computing caller first takes a lease: `add` of the key `{full key}:__lock__` with a short
//! TTL (`lease_ttl`). `add` is atomic on every backend, so one process wins; the others poll
//! the key with backoff until the value appears, and take over when the lease disappears
//! (released by a computing caller that failed, or expired with a caller that died). Every
//! wait is bounded by `flight_timeout`, after which a waiter computes the value itself.

use crate::clock::unix_ms;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::location::Options;
use crate::value::Value;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

mod asynchronous;

/// How [`crate::Cache::get_or_set_with`], the decorators and jobs compute missing values.
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
                    return Err(options.error(
                        "lease_ttl",
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
                    return Err(options.error(
                        "xfetch_beta",
                        format!(
                            "invalid value {v:?} for option 'xfetch_beta': expected a number >= 0"
                        ),
                    ))
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

/// What a lookup found: the split of [`crate::Cache::get_or_set_with`] that bindings use to keep
/// the hit path apart from the (possibly blocking) load path.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A value to return as it is (an envelope's payload, already unwrapped).
    Hit(Value),
    /// No value: call [`crate::Cache::load`] with no current value.
    Miss,
    /// A value XFetch chose to recompute early: call [`crate::Cache::load`] with it as the current
    /// value (returned if another caller is already refreshing it, or if the refresh fails).
    RefreshEarly(Value),
}

impl Lookup {
    /// `Ok` with the value to return on a hit; else `Err` with the current value to pass to
    /// [`crate::Cache::load`] (`None` after a miss).
    pub(crate) fn hit_or_current(self) -> std::result::Result<Value, Option<Value>> {
        match self {
            Lookup::Hit(v) => Ok(v),
            Lookup::Miss => Err(None),
            Lookup::RefreshEarly(current) => Err(Some(current)),
        }
    }
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
pub(crate) fn classify(found: Option<Value>, policy: &RefreshPolicy) -> Lookup {
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
pub(crate) fn lease_key(full: &[u8]) -> Vec<u8> {
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

/// What one `add` of a lease key answered: `Some(true)` taken, `Some(false)` held by another
/// caller, `None` no lease to be had (logged): compute without one.
pub(crate) fn lease_added(added: Result<bool>) -> Option<bool> {
    match added {
        Ok(taken) => Some(taken),
        Err(e) => {
            log::warn!("polycache: could not take a lease ({e}); computing without one");
            None
        }
    }
}

/// A read of the value while waiting for a lease another caller holds: `Some` ends the wait
/// with that lease (the value `accept`s appeared, or the backend failed).
pub(crate) fn lease_peek(
    found: Result<Option<Value>>,
    accept: &dyn Fn(Value) -> Option<Value>,
) -> Option<Lease> {
    match found {
        Ok(found) => found.and_then(accept).map(Lease::Found),
        Err(_) => Some(Lease::Unavailable),
    }
}

/// How long to wait before the next attempt at a lease, or `None` (logged) once `deadline`
/// has passed.
pub(crate) fn lease_wait(
    backoff: &mut Duration,
    deadline: Instant,
    policy: &RefreshPolicy,
    full: &[u8],
) -> Option<Duration> {
    let wait = lease_backoff(backoff, deadline);
    if wait.is_none() {
        warn_lease_timeout(policy, full);
    }
    wait
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
pub(crate) fn warn_flight_timeout(policy: &RefreshPolicy, full: &[u8]) {
    log::warn!(
        "polycache: waited {:?} for another caller computing {:?}; computing it here",
        policy.flight_timeout,
        String::from_utf8_lossy(full)
    );
}

/// How a leader ends its flight, the same in the sync and the awaited computations.
impl LeaderGuard {
    /// Hands `value` to every follower and returns it.
    pub(crate) fn complete_with(self, value: Value) -> Value {
        self.complete(Some(value.clone()));
        value
    }

    /// Hands a computation's value to every follower (its failure as a failed flight) and
    /// returns its result.
    pub(crate) fn complete_result(self, result: Result<Value>) -> Result<Value> {
        match result {
            Ok(v) => Ok(self.complete_with(v)),
            Err(e) => {
                self.complete(None);
                Err(e)
            }
        }
    }

    /// Ends an early (XFetch) refresh of `full`: the refreshed value, or after a failure
    /// (logged) the `current` one, for this caller and every follower.
    pub(crate) fn complete_early_refresh(
        self,
        full: &[u8],
        refreshed: Result<Value>,
        current: Value,
    ) -> Value {
        match refreshed {
            Ok(v) => self.complete_with(v),
            Err(e) => {
                warn_early_refresh(full, &e);
                self.complete_with(current)
            }
        }
    }
}

#[cold]
pub(crate) fn warn_early_refresh(full: &[u8], e: &Error) {
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
