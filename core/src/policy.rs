//! What a cache does when its backend fails: fail open or closed, and a circuit breaker so a
//! dead server costs microseconds per call rather than a connect timeout.

use crate::backend::{AsyncAccess, AsyncBackend, Backend, BoxFuture};
use crate::clock;
use crate::error::{Error, ErrorKind, Result};
use crate::expiry::TimeToLive;
use crate::location::Options;
use crate::stats::BreakerCounts;
use crate::value::Value;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How a cache reacts to backend failures (connection errors and timeouts).
///
/// With `fail_open`, reads answer a miss and writes report that nothing was stored instead of
/// returning the error; a warning is logged and `stats().errors` counts it. The circuit
/// breaker opens after `breaker_threshold` consecutive failures: for `breaker_cooldown`
/// every call fails at once (or misses, when failing open) without touching the network;
/// then one call probes the server, and its success closes the breaker again.
///
/// URL options: `fail_open=true`, `breaker_threshold=N` (0 turns the breaker off),
/// `breaker_cooldown=SECONDS`. Local backends (`memory://`, `dummy://`) never fail this way
/// and are not wrapped.
///
/// ```
/// use polycache::FailurePolicy;
/// let p = FailurePolicy::default();
/// assert!(!p.fail_open);
/// assert_eq!(p.breaker_threshold, 3);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Answer misses and report unstored writes instead of raising backend failures.
    pub fail_open: bool,
    /// Consecutive failures that open the breaker; 0 disables it.
    pub breaker_threshold: u32,
    /// How long an open breaker fails calls before letting one probe through.
    pub breaker_cooldown: Duration,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            fail_open: false,
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(1),
        }
    }
}

impl FailurePolicy {
    /// Reads the policy's URL options, leaving defaults for the ones not given.
    pub(crate) fn take(options: &mut Options) -> Result<FailurePolicy> {
        let mut p = FailurePolicy::default();
        if let Some(v) = options.bool("fail_open")? {
            p.fail_open = v;
        }
        if let Some(v) = options.i64("breaker_threshold")? {
            p.breaker_threshold = u32::try_from(v).map_err(|_| {
                options.error(
                    "breaker_threshold",
                    format!("invalid value {v} for option 'breaker_threshold': expected 0 or more"),
                )
            })?;
        }
        if let Some(v) = options.seconds("breaker_cooldown")? {
            p.breaker_cooldown = v.unwrap_or(Duration::MAX);
        }
        Ok(p)
    }
}

/// True for the failures the policy is about: the server is unreachable or too slow.
pub(crate) fn is_outage(err: &Error) -> bool {
    matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout)
}

/// A lock-free circuit breaker: closed, open until a deadline, then one probe at a time.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown_ticks: u64,
    failures: AtomicU32,
    /// Coarse-clock deadline while open; 0 when closed.
    open_until: AtomicU64,
    probing: AtomicBool,
    /// State changes, for the cache's stats.
    transitions: Arc<BreakerCounts>,
}

impl Breaker {
    pub(crate) fn new(policy: &FailurePolicy) -> Breaker {
        Breaker {
            threshold: policy.breaker_threshold,
            cooldown_ticks: clock::ticks_of(policy.breaker_cooldown),
            ..Default::default()
        }
    }

    /// Runs `call` unless the breaker is open; records its outcome.
    pub(crate) fn call<T>(&self, backend: &str, call: impl FnOnce() -> Result<T>) -> Result<T> {
        let admitted = self.admit(backend)?;
        let result = call();
        admitted.record(backend, &result);
        result
    }

    /// Lets a call through unless the breaker is open (or claims the one probe after the
    /// cooldown). The call's outcome goes to [`Admitted::record`]; an admission dropped
    /// without it (a cancelled future) releases the probe it may hold.
    pub(crate) fn admit(&self, backend: &str) -> Result<Admitted<'_>> {
        if self.threshold == 0 {
            return Ok(Admitted {
                breaker: self,
                open_until: 0,
                probe: false,
            });
        }
        let open_until = self.open_until.load(Ordering::Acquire);
        let mut probe = false;
        if open_until != 0 {
            let claimed = clock::ticks() >= open_until
                && self
                    .probing
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
            if !claimed {
                return Err(Error::new(
                    ErrorKind::Connection,
                    format!(
                        "the {backend} backend is unavailable: the circuit breaker is open after {} consecutive \
                         failures; it lets one call through to probe the server after its cooldown",
                        self.failures.load(Ordering::Relaxed)
                    ),
                ));
            }
            probe = true;
            self.transitions.half_opened.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Admitted {
            breaker: self,
            open_until,
            probe,
        })
    }

    /// True while calls are being failed without reaching the backend.
    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }
}

/// A call the breaker let through; see [`Breaker::admit`].
pub(crate) struct Admitted<'b> {
    breaker: &'b Breaker,
    /// The deadline the breaker had when the call was admitted (0: closed).
    open_until: u64,
    /// This call is the one probe of an open breaker.
    probe: bool,
}

impl Admitted<'_> {
    /// Records the call's outcome: an outage counts towards opening the breaker (a failed
    /// probe re-opens it at once); anything else closes it.
    pub(crate) fn record<T>(mut self, backend: &str, result: &Result<T>) {
        let b = self.breaker;
        if b.threshold == 0 {
            return;
        }
        match result {
            // Congestion in this process, not an answer of the server: counted neither way.
            Err(e) if e.is_pool_busy() => {}
            Err(e) if is_outage(e) => {
                let failures = b.failures.fetch_add(1, Ordering::AcqRel).saturating_add(1);
                if self.probe || failures >= b.threshold {
                    let was = b.open_until.swap(
                        clock::ticks().saturating_add(b.cooldown_ticks).max(1),
                        Ordering::AcqRel,
                    );
                    // Closed or half-open before: a state change (calls admitted before
                    // it opened and failing after only move the deadline).
                    if was == 0 || self.probe {
                        b.transitions.opened.fetch_add(1, Ordering::Relaxed);
                    }
                    if !self.probe {
                        log::warn!("polycache: {backend} backend failed {failures} times in a row; circuit breaker open");
                    }
                }
            }
            _ => {
                if b.failures.load(Ordering::Relaxed) != 0 || self.open_until != 0 {
                    if self.open_until != 0 {
                        log::info!(
                            "polycache: {backend} backend answers again; circuit breaker closed"
                        );
                    }
                    b.failures.store(0, Ordering::Release);
                    if b.open_until.swap(0, Ordering::AcqRel) != 0 {
                        b.transitions.closed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        self.release_probe();
    }

    fn release_probe(&mut self) {
        if std::mem::take(&mut self.probe) {
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.release_probe();
    }
}

/// The breaker for callers whose outcomes arrive as separate events rather than through an
/// [`Admitted`]: memcached's per-server health, where a pipelined batch admits a server
/// first and learns its connection's fate later, in another place. It shares the state and
/// the meaning of [`Breaker::admit`]'s breaker (outages in a row open it for a cooldown,
/// then one call probes, a success closes it); the probe is claimed by moving the deadline
/// one cooldown on, so a probe whose outcome never comes holds the breaker open for one
/// more cooldown at most.
#[cfg(feature = "memcached")]
impl Breaker {
    /// A breaker that opens after `threshold` outages in a row (0: never) for
    /// `cooldown_ticks` coarse-clock ticks.
    pub(crate) fn with_limits(threshold: u32, cooldown_ticks: u64) -> Breaker {
        Breaker {
            threshold,
            cooldown_ticks,
            ..Default::default()
        }
    }

    /// True when a call may go: the breaker is closed, or it is open past its deadline and
    /// this caller claimed the probe.
    pub(crate) fn pass(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = clock::ticks();
        now >= until
            && self
                .open_until
                .compare_exchange(
                    until,
                    now.saturating_add(self.cooldown_ticks).max(1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Counts an outage; answers the outages in a row when this one opened the breaker.
    pub(crate) fn failed(&self) -> Option<u32> {
        let n = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if self.threshold > 0 && n >= self.threshold {
            let until = clock::ticks().saturating_add(self.cooldown_ticks).max(1);
            if self.open_until.swap(until, Ordering::AcqRel) == 0 {
                return Some(n);
            }
        }
        None
    }

    /// Counts a success: the breaker closes. True when it was open.
    #[inline]
    pub(crate) fn succeeded(&self) -> bool {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Release);
        }
        if self.open_until.load(Ordering::Relaxed) != 0 {
            self.open_until.store(0, Ordering::Release);
            return true;
        }
        false
    }

    /// The outages in a row counted so far.
    pub(crate) fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// A remote backend behind a circuit breaker; what [`crate::Cache`] opens for non-local schemes.
pub(crate) struct Guarded {
    inner: Arc<dyn Backend>,
    breaker: Arc<Breaker>,
}

impl Guarded {
    pub(crate) fn new(inner: Arc<dyn Backend>, policy: &FailurePolicy) -> Guarded {
        Guarded {
            inner,
            breaker: Arc::new(Breaker::new(policy)),
        }
    }

    /// A guarded backend whose breaker counts its state changes in `transitions` (the
    /// cache's stats).
    pub(crate) fn counted(
        inner: Arc<dyn Backend>,
        policy: &FailurePolicy,
        transitions: Arc<BreakerCounts>,
    ) -> Guarded {
        Guarded {
            inner,
            breaker: Arc::new(Breaker {
                transitions,
                ..Breaker::new(policy)
            }),
        }
    }
}

/// The async side of a [`Guarded`] backend with a native async side: the same breaker.
struct GuardedAsync {
    inner: Arc<dyn AsyncBackend>,
    breaker: Arc<Breaker>,
    name: &'static str,
}

impl GuardedAsync {
    fn guard<'a, T: Send + 'a>(
        &'a self,
        call: BoxFuture<'a, Result<T>>,
    ) -> BoxFuture<'a, Result<T>> {
        Box::pin(async move {
            let admitted = match self.breaker.admit(self.name) {
                Ok(admitted) => admitted,
                Err(e) => {
                    // An open breaker answers without I/O, so a task retrying in a loop would
                    // never yield: count the call against tokio's cooperative budget (a no-op
                    // outside a runtime) so the runtime's other tasks still run.
                    tokio::task::consume_budget().await;
                    return Err(e);
                }
            };
            let result = call.await;
            admitted.record(self.name, &result);
            result
        })
    }
}

impl AsyncBackend for GuardedAsync {
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<Value>>> {
        self.guard(self.inner.get(key))
    }
    fn set<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        self.guard(self.inner.set(key, value, ttl))
    }
    fn add<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>> {
        self.guard(self.inner.add(key, value, ttl))
    }
    fn delete<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        self.guard(self.inner.delete(key))
    }
    fn delete_if_equals<'a>(
        &'a self,
        key: &'a [u8],
        expected: &'a [u8],
    ) -> BoxFuture<'a, Result<bool>> {
        self.guard(self.inner.delete_if_equals(key, expected))
    }
    fn has_key<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        self.guard(self.inner.has_key(key))
    }
    fn touch<'a>(&'a self, key: &'a [u8], ttl: Option<Duration>) -> BoxFuture<'a, Result<bool>> {
        self.guard(self.inner.touch(key, ttl))
    }
    fn incr<'a>(&'a self, key: &'a [u8], delta: i64) -> BoxFuture<'a, Result<i64>> {
        self.guard(self.inner.incr(key, delta))
    }
    fn get_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<Vec<Option<Value>>>> {
        self.guard(self.inner.get_many(keys))
    }
    fn set_many<'a>(
        &'a self,
        items: &'a [(&'a [u8], &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Vec<usize>>> {
        self.guard(self.inner.set_many(items, ttl))
    }
    fn delete_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<usize>> {
        self.guard(self.inner.delete_many(keys))
    }
    fn clear<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        self.guard(self.inner.clear(prefix))
    }

    fn ttl<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<TimeToLive>> {
        self.guard(self.inner.ttl(key))
    }
    fn replace<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>> {
        self.guard(self.inner.replace(key, value, ttl))
    }
    fn redis_command<'a>(
        &'a self,
        call: &'a crate::RedisCall,
    ) -> BoxFuture<'a, Result<crate::RedisReply>> {
        self.guard(self.inner.redis_command(call))
    }

    fn extend_if_equals<'a>(
        &'a self,
        key: &'a [u8],
        expected: &'a [u8],
        ttl: Duration,
        replace: bool,
    ) -> BoxFuture<'a, Result<bool>> {
        self.guard(self.inner.extend_if_equals(key, expected, ttl, replace))
    }

    /// As on the synchronous side: starting a scan passes the breaker, its pages do not.
    fn scan_keys(
        self: Arc<Self>,
        sync: Arc<dyn Backend>,
        pattern: &crate::KeyPattern,
        count: usize,
    ) -> Result<Box<dyn crate::AsyncKeyScan>> {
        self.breaker.call(self.name, || {
            Arc::clone(&self.inner).scan_keys(sync, pattern, count)
        })
    }
}

impl Backend for Guarded {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
    fn async_access(self: Arc<Self>) -> AsyncAccess {
        match Arc::clone(&self.inner).async_access() {
            AsyncAccess::Native(inner) => AsyncAccess::Native(Arc::new(GuardedAsync {
                inner,
                breaker: Arc::clone(&self.breaker),
                name: self.inner.name(),
            })),
            other => other,
        }
    }
    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        self.breaker.call(self.name(), || self.inner.get(key))
    }
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.breaker
            .call(self.name(), || self.inner.set(key, value, ttl))
    }
    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.breaker
            .call(self.name(), || self.inner.add(key, value, ttl))
    }
    fn delete(&self, key: &[u8]) -> Result<bool> {
        self.breaker.call(self.name(), || self.inner.delete(key))
    }
    fn delete_if_equals(&self, key: &[u8], expected: &[u8]) -> Result<bool> {
        self.breaker
            .call(self.name(), || self.inner.delete_if_equals(key, expected))
    }
    fn has_key(&self, key: &[u8]) -> Result<bool> {
        self.breaker.call(self.name(), || self.inner.has_key(key))
    }
    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.breaker
            .call(self.name(), || self.inner.touch(key, ttl))
    }
    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        self.breaker
            .call(self.name(), || self.inner.incr(key, delta))
    }
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>> {
        self.breaker.call(self.name(), || self.inner.get_many(keys))
    }
    fn set_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<Vec<usize>> {
        self.breaker
            .call(self.name(), || self.inner.set_many(items, ttl))
    }
    fn delete_many(&self, keys: &[&[u8]]) -> Result<usize> {
        self.breaker
            .call(self.name(), || self.inner.delete_many(keys))
    }
    fn clear(&self, prefix: &[u8]) -> Result<()> {
        self.breaker.call(self.name(), || self.inner.clear(prefix))
    }
    fn evictions(&self) -> u64 {
        self.inner.evictions()
    }

    fn ttl(&self, key: &[u8]) -> Result<TimeToLive> {
        self.breaker.call(self.name(), || self.inner.ttl(key))
    }
    fn replace(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.breaker
            .call(self.name(), || self.inner.replace(key, value, ttl))
    }
    fn redis_command(&self, call: &crate::RedisCall) -> Result<crate::RedisReply> {
        self.breaker
            .call(self.name(), || self.inner.redis_command(call))
    }

    /// Starting a scan passes the breaker; its pages go to the backend directly (a scan is
    /// one caller's long walk, not the traffic the breaker protects).
    fn scan_keys(
        self: Arc<Self>,
        pattern: &crate::KeyPattern,
        count: usize,
    ) -> Result<Box<dyn crate::KeyScan>> {
        self.breaker.call(self.name(), || {
            Arc::clone(&self.inner).scan_keys(pattern, count)
        })
    }

    fn extend_if_equals(
        &self,
        key: &[u8],
        expected: &[u8],
        ttl: Duration,
        replace: bool,
    ) -> Result<bool> {
        self.breaker.call(self.name(), || {
            self.inner.extend_if_equals(key, expected, ttl, replace)
        })
    }

    /// A diagnostic: not counted by the breaker, and answered even while it is open.
    fn server_info(&self) -> Result<crate::backend::ServerInfo> {
        self.inner.server_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A backend whose every call fails with a connection error while `down` is set.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        calls: AtomicUsize,
    }

    impl Flaky {
        fn hit(&self) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                Err(Error::new(ErrorKind::Connection, "connection refused"))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn opens_after_threshold_fails_fast_then_probes_and_closes() {
        let policy = FailurePolicy {
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_millis(50),
            ..Default::default()
        };
        let b = Breaker::new(&policy);
        let flaky = Flaky::default();
        flaky.down.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            assert!(b.call("t", || flaky.hit()).is_err());
        }
        assert!(b.is_open());
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
        for _ in 0..100 {
            assert!(b.call("t", || flaky.hit()).unwrap_err().is_connection());
        }
        assert_eq!(
            flaky.calls.load(Ordering::SeqCst),
            3,
            "an open breaker does not call the backend"
        );
        std::thread::sleep(Duration::from_millis(80));
        // A failed probe re-opens it for another cooldown.
        assert!(b.call("t", || flaky.hit()).is_err());
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
        assert!(b.call("t", || flaky.hit()).is_err());
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
        flaky.down.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(80));
        assert!(b.call("t", || flaky.hit()).is_ok());
        assert!(!b.is_open());
        assert!(b.call("t", || flaky.hit()).is_ok());
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 6);
        // Closed -> open, half-open (failed probe) -> open, half-open -> closed.
        let t = &b.transitions;
        let count = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(
            (count(&t.opened), count(&t.half_opened), count(&t.closed)),
            (2, 2, 1)
        );
    }

    #[test]
    fn other_errors_do_not_count() {
        let b = Breaker::new(&FailurePolicy {
            breaker_threshold: 1,
            ..Default::default()
        });
        let r: Result<()> = b.call("t", || Err(Error::new(ErrorKind::NotFound, "x")));
        assert!(r.is_err());
        assert!(!b.is_open());
    }

    #[test]
    fn a_call_that_waited_for_its_own_busy_pool_is_no_outage() {
        let b = Breaker::new(&FailurePolicy {
            breaker_threshold: 2,
            ..Default::default()
        });
        let busy = || Error::new(ErrorKind::Timeout, "all 16 stayed busy").pool_busy();
        for _ in 0..10 {
            let r: Result<()> = b.call("t", || Err(busy()));
            assert!(r.unwrap_err().is_timeout(), "the caller still gets it");
        }
        assert!(!b.is_open(), "congestion in the client opened the breaker");
        // Nor does it end a run of outages: the server has not answered.
        let down = || Err::<(), _>(Error::new(ErrorKind::Connection, "refused"));
        assert!(b.call("t", down).is_err());
        assert!(b.call("t", || Err::<(), _>(busy())).is_err());
        assert!(b.call("t", down).is_err());
        assert!(b.is_open());
    }

    #[test]
    fn threshold_zero_disables() {
        let b = Breaker::new(&FailurePolicy {
            breaker_threshold: 0,
            ..Default::default()
        });
        for _ in 0..10 {
            let r: Result<()> = b.call("t", || Err(Error::new(ErrorKind::Timeout, "slow")));
            assert!(r.unwrap_err().is_timeout());
        }
        assert!(!b.is_open());
    }

    #[test]
    #[cfg(feature = "memcached")]
    fn event_breaker_opens_claims_one_probe_and_closes() {
        let b = Breaker::with_limits(2, clock::ticks_of(Duration::from_millis(50)));
        assert!(b.pass());
        assert_eq!(b.failed(), None);
        assert_eq!(b.failed(), Some(2), "the second outage opens it");
        assert_eq!(b.failed(), None, "already open");
        assert!(!b.pass() && !b.pass(), "open: calls fail without trying");
        std::thread::sleep(Duration::from_millis(80));
        assert!(b.pass(), "past the cooldown one call probes");
        assert!(!b.pass(), "and only one");
        assert!(b.succeeded(), "a success closes it");
        assert!(b.pass() && b.pass());
        assert_eq!(b.failures(), 0);
        assert!(!b.succeeded());
    }

    #[test]
    #[cfg(feature = "memcached")]
    fn event_breaker_with_threshold_zero_never_opens() {
        let b = Breaker::with_limits(0, 1);
        for _ in 0..10 {
            assert_eq!(b.failed(), None);
        }
        assert!(b.pass());
        assert_eq!(b.failures(), 10);
    }
}
