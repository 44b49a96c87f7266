//! Tiered caches: an L1 `memory://` store in front of any L2 backend, with L1 copies
//! invalidated across caches through an [`InvalidationBus`].
//!
//! Reads try L1, then L2, and copy what L2 had into L1 (for at most `l1_timeout`). Writes
//! and deletes go to L2 first, then L1, then are published on the bus: every other cache on
//! the bus drops its L1 copy of the key. The consistency window is the bus's delivery time
//! (nothing with [`LocalBus`], which delivers before `publish` returns; one network hop with
//! [`crate::RedisBus`]), and `l1_timeout` bounds it when a message is lost (a bus that was
//! down, a cache without a bus).
//!
//! Extension point: a bus is any [`InvalidationBus`]. [`LocalBus`] connects the caches of
//! one process (tests, several caches over one L2); [`crate::RedisBus`] connects processes
//! over Redis pub/sub (URL `bus=redis` or `bus=<url-encoded redis URL>`).

use crate::backend::{AsyncAccess, AsyncBackend, Backend, BoxFuture, KeyParts, OnBlockingPool};
use crate::bus::{
    Invalidation, InvalidationBus, InvalidationHandler, InvalidationTarget, LocalBus,
};
use crate::error::{Error, Result};
use crate::expiry::TimeToLive;
use crate::location::{Location, Options};
use crate::policy::{FailurePolicy, Guarded};
use crate::stats::Operation as Op;
use crate::value::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The longest an entry lives in L1 unless configured otherwise.
pub const DEFAULT_L1_TIMEOUT: Duration = Duration::from_secs(60);

/// What a builder says about a tiered cache; the URL's options fill in what it does not.
#[derive(Default)]
pub(crate) struct TieredConfig {
    pub(crate) l1: Option<String>,
    pub(crate) l2: Option<String>,
    pub(crate) bus: Option<Arc<dyn InvalidationBus>>,
    pub(crate) l1_timeout: Option<Option<Duration>>,
    /// The cache's key prefix: it names the cache's Redis invalidation channel.
    pub(crate) key_prefix: Option<String>,
    /// Where the L2's circuit breaker counts its state changes (the cache's stats).
    pub(crate) breaker: Option<Arc<crate::stats::BreakerCounts>>,
}

/// A fresh id for a tiered cache, unique across processes and machines with overwhelming
/// probability (a randomly keyed hash of the process id and a counter); never 0, which
/// buses use for their own messages.
fn new_origin() -> u64 {
    use std::hash::BuildHasher;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = KEYS
        .get_or_init(Default::default)
        .hash_one((std::process::id(), n));
    id.max(1)
}

/// Orders L1 fills after concurrent writes and invalidations, so a fill from an L2 read
/// that raced with a write never leaves the old value in L1.
#[derive(Default)]
struct FillGate {
    /// Writes and invalidations in progress.
    busy: AtomicU64,
    /// Writes and invalidations finished.
    epoch: AtomicU64,
}

impl FillGate {
    fn snapshot(&self) -> Option<u64> {
        if self.busy.load(Ordering::SeqCst) != 0 {
            return None;
        }
        Some(self.epoch.load(Ordering::SeqCst))
    }
    fn still(&self, epoch: u64) -> bool {
        self.busy.load(Ordering::SeqCst) == 0 && self.epoch.load(Ordering::SeqCst) == epoch
    }
    fn write<T>(&self, f: impl FnOnce() -> T) -> T {
        self.busy.fetch_add(1, Ordering::SeqCst);
        let r = f();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.busy.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

/// The backend of a tiered cache (`tiered://` or [`crate::Cache::builder_tiered`]).
///
/// `Send + Sync`. Its L2 sits behind the cache's circuit breaker; L1 hits never touch it.
pub struct TieredBackend {
    l1: Arc<dyn Backend>,
    l2: Arc<dyn Backend>,
    l1_ttl: Option<Duration>,
    bus: Option<Arc<dyn InvalidationBus>>,
    subscription: Mutex<Option<u64>>,
    /// What the bus calls, kept to subscribe again in the child of a `fork()`.
    handler: Option<InvalidationHandler>,
    /// The fork generation the subscription belongs to (see [`TieredBackend::adopt_fork`]).
    generation: AtomicU64,
    origin: u64,
    gate: Arc<FillGate>,
    /// False while the bus is suspended: L1 is empty and is not filled.
    l1_live: Arc<AtomicBool>,
    /// The bus reports this cache's own writes (see [`InvalidationBus::tracks_writes`]).
    tracked: bool,
    /// What the spans of L1's and of L2's part of a call say about them.
    #[cfg(feature = "otel")]
    tier_targets: Option<Box<[crate::otel::SpanTarget; 2]>>,
}

/// One of the two stores of a tiered cache.
#[derive(Clone, Copy)]
enum Tier {
    L1 = 0,
    L2 = 1,
}

impl TieredBackend {
    /// A tiered backend over `l1` (a local backend: `memory://`) and `l2`, subscribed to
    /// `bus` if there is one.
    pub fn new(
        l1: Arc<dyn Backend>,
        l2: Arc<dyn Backend>,
        l1_timeout: Option<Duration>,
        bus: Option<Arc<dyn InvalidationBus>>,
    ) -> Result<TieredBackend> {
        if !l1.is_local() {
            return Err(Error::config(format!(
                "the l1 of a tiered cache must be an in-process store, not {}",
                l1.name()
            )));
        }
        let origin = new_origin();
        let tracked = bus.as_ref().is_some_and(|b| b.tracks_writes());
        let gate = Arc::new(FillGate::default());
        let l1_live = Arc::new(AtomicBool::new(true));
        let handler = match &bus {
            None => None,
            Some(_) => {
                let (l1, gate, live) = (l1.clone(), gate.clone(), l1_live.clone());
                let handler: InvalidationHandler = Arc::new(move |m: &Invalidation| {
                    if m.origin == origin {
                        return;
                    }
                    gate.write(|| match &m.target {
                        InvalidationTarget::Key(k) => drop(l1.delete(k)),
                        InvalidationTarget::Prefix(p) => drop(l1.clear(p)),
                        // Stop before dropping, so no copy lands after the drop.
                        InvalidationTarget::Suspend => {
                            live.store(false, Ordering::SeqCst);
                            drop(l1.clear(&[]));
                        }
                        InvalidationTarget::Resume => {
                            drop(l1.clear(&[]));
                            live.store(true, Ordering::SeqCst);
                        }
                    });
                });
                Some(handler)
            }
        };
        let subscription = match (&bus, &handler) {
            (Some(bus), Some(handler)) => Some(bus.subscribe(handler.clone())?),
            _ => None,
        };
        Ok(TieredBackend {
            l1,
            l2,
            l1_ttl: l1_timeout,
            bus,
            subscription: Mutex::new(subscription),
            handler,
            generation: AtomicU64::new(crate::fork::generation()),
            origin,
            gate,
            l1_live,
            tracked,
            #[cfg(feature = "otel")]
            tier_targets: None,
        })
    }

    /// Makes each tier a call reaches a span of its own, a child of the call's span, about
    /// the store at `l1` / `l2` (redacted locations).
    #[cfg(feature = "otel")]
    fn trace_tiers(&mut self, l1: &str, l2: &str) {
        self.tier_targets = Some(Box::new([
            crate::otel::SpanTarget::tier(l1, "l1"),
            crate::otel::SpanTarget::tier(l2, "l2"),
        ]));
    }

    /// `call` on `tier`, as operation `op`: under its own span when the tiered call it is
    /// part of is traced (feature `otel`, synchronous calls).
    #[inline]
    fn in_tier<T>(
        &self,
        tier: Tier,
        op: crate::stats::Operation,
        call: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        #[cfg(feature = "otel")]
        if let Some(span) = self
            .tier_targets
            .as_ref()
            .and_then(|t| crate::otel::tier_span(&t[tier as usize], op))
        {
            let result = call();
            span.finish(result.as_ref().err().map(Error::kind));
            return result;
        }
        let _ = (tier, op);
        call()
    }

    /// In the child of a `fork()`, a tracked cache's subscription is its parent's: the
    /// thread that delivered the server's notices does not exist there. Drops L1 and
    /// subscribes again (a tracking connection of this process) before L1 is read, without
    /// waiting for the new connection: until it tracks, L1 is bypassed (reads go to L2,
    /// nothing is filled).
    #[inline]
    fn adopt_fork(&self) {
        if self.tracked && crate::fork::generation() != self.generation.load(Ordering::Relaxed) {
            self.subscribe_again();
        }
    }

    #[cold]
    fn subscribe_again(&self) {
        let (Some(bus), Some(handler)) = (&self.bus, &self.handler) else {
            return;
        };
        let mut subscription = self.subscription.lock().unwrap_or_else(|e| e.into_inner());
        let now = crate::fork::generation();
        if self.generation.load(Ordering::Relaxed) == now {
            return;
        }
        handler(&Invalidation::new(0, InvalidationTarget::Suspend));
        self.generation.store(now, Ordering::Relaxed);
        match bus.subscribe_without_waiting(handler.clone()) {
            Ok(id) => *subscription = Some(id),
            Err(e) => log::warn!(
                "polycache: a tiered cache inherited through fork() cannot track its keys \
                 again; its L1 stays unused: {e}"
            ),
        }
    }

    /// The L1 store.
    pub fn l1(&self) -> &Arc<dyn Backend> {
        &self.l1
    }

    /// The L2 backend.
    pub fn l2(&self) -> &Arc<dyn Backend> {
        &self.l2
    }

    fn l1_ttl(&self, ttl: Option<Duration>) -> Option<Duration> {
        match (ttl, self.l1_ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Copies an L2 value into L1 unless a write or invalidation raced with the L2 read.
    fn fill(&self, key: &[u8], value: &[u8], epoch: Option<u64>) {
        let Some(epoch) = epoch else { return };
        if !self.gate.still(epoch) || !self.l1_live.load(Ordering::SeqCst) {
            return;
        }
        if self.l1.set(key, value, self.l1_ttl).is_ok() && !self.gate.still(epoch) {
            let _ = self.l1.delete(key);
        }
    }

    /// Puts a written value in L1 (or drops the old copy if L1 cannot hold it).
    fn write_l1(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) {
        if self.tracked || !self.l1_live.load(Ordering::SeqCst) {
            let _ = self.l1.delete(key);
            return;
        }
        // A suspension between the check and the copy: its clear may have run first.
        if self.l1.set(key, value, self.l1_ttl(ttl)).is_err()
            || !self.l1_live.load(Ordering::SeqCst)
        {
            let _ = self.l1.delete(key);
        }
    }

    fn publish(&self, target: InvalidationTarget) {
        if let Some(bus) = self.bus.as_ref().filter(|_| !self.tracked) {
            if let Err(e) = bus.publish(&Invalidation::new(self.origin, target)) {
                log::warn!("polycache: could not publish an L1 invalidation: {e}");
            }
        }
    }

    fn publish_key(&self, key: &[u8]) {
        if self.bus.is_some() && !self.tracked {
            self.publish(InvalidationTarget::Key(key.to_vec()));
        }
    }

    /// Publishes one invalidation per key, in one batch.
    fn publish_keys<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) {
        let Some(bus) = self.bus.as_ref().filter(|_| !self.tracked) else {
            return;
        };
        let messages: Vec<Invalidation> = keys
            .map(|k| Invalidation::new(self.origin, InvalidationTarget::Key(k.to_vec())))
            .collect();
        if let Err(e) = bus.publish_all(&messages) {
            log::warn!("polycache: could not publish L1 invalidations: {e}");
        }
    }
}

impl Drop for TieredBackend {
    fn drop(&mut self) {
        let id = *self
            .subscription
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        if let (Some(bus), Some(id)) = (&self.bus, id) {
            bus.unsubscribe(id);
        }
    }
}

impl Backend for TieredBackend {
    fn name(&self) -> &'static str {
        "tiered"
    }
    fn is_local(&self) -> bool {
        self.l2.is_local()
    }

    fn async_access(self: Arc<Self>) -> AsyncAccess {
        let l2 = match Arc::clone(&self.l2).async_access() {
            AsyncAccess::Inline => return AsyncAccess::Inline,
            AsyncAccess::Native(native) => native,
            _ => Arc::new(OnBlockingPool(Arc::clone(&self.l2))),
        };
        AsyncAccess::Native(Arc::new(TieredAsync {
            writes: OnBlockingPool(self.clone()),
            tiered: self,
            l2,
        }))
    }

    #[inline]
    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        self.get_parts(&KeyParts::whole(key))
    }

    fn get_with(&self, key: &[u8], visit: &mut dyn FnMut(&Value)) -> Result<bool> {
        self.get_parts_with(&KeyParts::whole(key), visit)
    }

    /// L1 reads the key's parts as they come (unjoined, for `memory://`); only a miss
    /// joins them, for L2.
    fn get_parts(&self, key: &KeyParts<'_>) -> Result<Option<Value>> {
        self.adopt_fork();
        // L1's answer is returned as it came (an error too), so that it is built in place.
        let found = self.in_tier(Tier::L1, Op::Get, || self.l1.get_parts(key));
        if !matches!(found, Ok(None)) {
            return found;
        }
        key.joined(|full| self.get_l2(full))
    }

    /// [`TieredBackend::get_parts`], L1 lending its bytes to `visit`.
    fn get_parts_with(&self, key: &KeyParts<'_>, visit: &mut dyn FnMut(&Value)) -> Result<bool> {
        self.adopt_fork();
        if self.in_tier(Tier::L1, Op::Get, || self.l1.get_parts_with(key, visit))? {
            return Ok(true);
        }
        crate::backend::lend(key.joined(|full| self.get_l2(full)), visit)
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.gate.write(|| {
            self.in_tier(Tier::L2, Op::Set, || self.l2.set(key, value, ttl))
                .inspect_err(|_| {
                    let _ = self.l1.delete(key);
                })?;
            self.write_l1(key, value, ttl);
            Ok::<(), Error>(())
        })?;
        self.publish_key(key);
        Ok(())
    }

    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let stored = self.gate.write(|| {
            let stored = self.in_tier(Tier::L2, Op::Add, || self.l2.add(key, value, ttl))?;
            if stored {
                self.write_l1(key, value, ttl);
            }
            Ok::<bool, Error>(stored)
        })?;
        if stored {
            self.publish_key(key);
        }
        Ok(stored)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        let r = self.gate.write(|| {
            let _ = self.l1.delete(key);
            self.in_tier(Tier::L2, Op::Delete, || self.l2.delete(key))
        });
        self.publish_key(key);
        r
    }

    fn delete_if_equals(&self, key: &[u8], expected: &[u8]) -> Result<bool> {
        let r = self.gate.write(|| {
            let _ = self.l1.delete(key);
            self.l2.delete_if_equals(key, expected)
        });
        self.publish_key(key);
        r
    }

    fn has_key(&self, key: &[u8]) -> Result<bool> {
        self.adopt_fork();
        Ok(self.in_tier(Tier::L1, Op::HasKey, || self.l1.has_key(key))?
            || self.in_tier(Tier::L2, Op::HasKey, || self.l2.has_key(key))?)
    }

    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let touched = self.in_tier(Tier::L2, Op::Touch, || self.l2.touch(key, ttl))?;
        if touched {
            let _ = self.l1.touch(key, self.l1_ttl(ttl));
        } else {
            let _ = self.l1.delete(key);
        }
        // Other caches' copies may outlive a shortened TTL.
        self.publish_key(key);
        Ok(touched)
    }

    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        let r = self.gate.write(|| {
            let _ = self.l1.delete(key);
            self.in_tier(Tier::L2, Op::Incr, || self.l2.incr(key, delta))
        });
        self.publish_key(key);
        r
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>> {
        let (mut out, missing) = self.in_tier(Tier::L1, Op::GetMany, || self.l1_many(keys))?;
        if missing.is_empty() {
            return Ok(out);
        }
        let epoch = self.gate.snapshot();
        let wanted: Vec<&[u8]> = missing.iter().map(|&i| keys[i]).collect();
        let found = self.in_tier(Tier::L2, Op::GetMany, || self.l2.get_many(&wanted))?;
        self.fill_many(keys, &missing, found, epoch, &mut out);
        Ok(out)
    }

    fn set_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<Vec<usize>> {
        let failed = self.gate.write(|| {
            let failed = self.in_tier(Tier::L2, Op::SetMany, || self.l2.set_many(items, ttl));
            match &failed {
                Ok(failed) => {
                    for (i, (k, v)) in items.iter().enumerate() {
                        if failed.contains(&i) {
                            let _ = self.l1.delete(k);
                        } else {
                            self.write_l1(k, v, ttl);
                        }
                    }
                }
                Err(_) => {
                    for (k, _) in items {
                        let _ = self.l1.delete(k);
                    }
                }
            }
            failed
        })?;
        self.publish_keys(items.iter().map(|(k, _)| *k));
        Ok(failed)
    }

    fn delete_many(&self, keys: &[&[u8]]) -> Result<usize> {
        let r = self.gate.write(|| {
            for k in keys {
                let _ = self.l1.delete(k);
            }
            self.in_tier(Tier::L2, Op::DeleteMany, || self.l2.delete_many(keys))
        });
        self.publish_keys(keys.iter().copied());
        r
    }

    fn clear(&self, prefix: &[u8]) -> Result<()> {
        let r = self.gate.write(|| {
            let _ = self.l1.clear(prefix);
            self.in_tier(Tier::L2, Op::Clear, || self.l2.clear(prefix))
        });
        self.publish(InvalidationTarget::Prefix(prefix.to_vec()));
        r
    }

    /// The L2's keys: L1 holds copies of some of them, never keys of its own.
    fn scan_keys(
        self: Arc<Self>,
        pattern: &crate::KeyPattern,
        count: usize,
    ) -> Result<Box<dyn crate::KeyScan>> {
        Arc::clone(&self.l2).scan_keys(pattern, count)
    }

    /// L2 decides; L1's copy (with its old TTL) is dropped, here and in other processes.
    fn extend_if_equals(
        &self,
        key: &[u8],
        expected: &[u8],
        ttl: Duration,
        replace: bool,
    ) -> Result<bool> {
        let r = self.gate.write(|| {
            let _ = self.l1.delete(key);
            self.l2.extend_if_equals(key, expected, ttl, replace)
        });
        self.publish_key(key);
        r
    }

    fn evictions(&self) -> u64 {
        self.l1.evictions() + self.l2.evictions()
    }

    /// L2's answer: L1 holds copies for at most `l1_timeout`, L2 the entry's own TTL.
    fn ttl(&self, key: &[u8]) -> Result<TimeToLive> {
        self.l2.ttl(key)
    }

    fn replace(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let stored = self.gate.write(|| {
            let stored = self.l2.replace(key, value, ttl).inspect_err(|_| {
                let _ = self.l1.delete(key);
            })?;
            if stored {
                self.write_l1(key, value, ttl);
            } else {
                let _ = self.l1.delete(key);
            }
            Ok::<bool, Error>(stored)
        })?;
        self.publish_key(key);
        Ok(stored)
    }

    /// The L2's server: L1 is this process' memory.
    fn server_info(&self) -> Result<crate::backend::ServerInfo> {
        self.l2.server_info()
    }
}

impl TieredBackend {
    /// What L1 holds of `keys`, and the positions it misses.
    fn l1_many(&self, keys: &[&[u8]]) -> Result<(Vec<Option<Value>>, Vec<usize>)> {
        self.adopt_fork();
        let mut out = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let v = self.l1.get(k)?;
            if v.is_none() {
                missing.push(i);
            }
            out.push(v);
        }
        Ok((out, missing))
    }

    /// Puts what L2 `found` for the `missing` positions into `out` and L1.
    fn fill_many(
        &self,
        keys: &[&[u8]],
        missing: &[usize],
        found: Vec<Option<Value>>,
        epoch: Option<u64>,
        out: &mut [Option<Value>],
    ) {
        for (&i, v) in missing.iter().zip(found) {
            if let Some(v) = &v {
                self.fill(keys[i], v, epoch);
            }
            out[i] = v;
        }
    }

    #[inline(never)]
    fn get_l2(&self, key: &[u8]) -> Result<Option<Value>> {
        let epoch = self.gate.snapshot();
        let v = self.in_tier(Tier::L2, Op::Get, || self.l2.get(key))?;
        if let Some(v) = &v {
            self.fill(key, v, epoch);
        }
        Ok(v)
    }
}

/// The async side of a tiered cache: reads hit L1 in place and await L2 on a miss; writes
/// (which must order L1, L2 and the bus' invalidation) run the synchronous write on the
/// blocking pool, so no runtime worker waits on the bus.
struct TieredAsync {
    tiered: Arc<TieredBackend>,
    l2: Arc<dyn AsyncBackend>,
    writes: OnBlockingPool,
}

impl AsyncBackend for TieredAsync {
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<Value>>> {
        Box::pin(async move {
            let t = &self.tiered;
            t.adopt_fork();
            if let Some(v) = t.l1.get(key)? {
                return Ok(Some(v));
            }
            let epoch = t.gate.snapshot();
            let v = self.l2.get(key).await?;
            if let Some(v) = &v {
                t.fill(key, v, epoch);
            }
            Ok(v)
        })
    }
    fn set<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        self.writes.set(key, value, ttl)
    }
    fn add<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>> {
        self.writes.add(key, value, ttl)
    }
    fn delete<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        self.writes.delete(key)
    }
    fn delete_if_equals<'a>(
        &'a self,
        key: &'a [u8],
        expected: &'a [u8],
    ) -> BoxFuture<'a, Result<bool>> {
        self.writes.delete_if_equals(key, expected)
    }
    fn has_key<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.tiered.adopt_fork();
            Ok(self.tiered.l1.has_key(key)? || self.l2.has_key(key).await?)
        })
    }
    fn touch<'a>(&'a self, key: &'a [u8], ttl: Option<Duration>) -> BoxFuture<'a, Result<bool>> {
        self.writes.touch(key, ttl)
    }
    fn incr<'a>(&'a self, key: &'a [u8], delta: i64) -> BoxFuture<'a, Result<i64>> {
        self.writes.incr(key, delta)
    }
    fn get_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<Vec<Option<Value>>>> {
        Box::pin(async move {
            let t = &self.tiered;
            let (mut out, missing) = t.l1_many(keys)?;
            if missing.is_empty() {
                return Ok(out);
            }
            let epoch = t.gate.snapshot();
            let wanted: Vec<&[u8]> = missing.iter().map(|&i| keys[i]).collect();
            let found = self.l2.get_many(&wanted).await?;
            t.fill_many(keys, &missing, found, epoch, &mut out);
            Ok(out)
        })
    }
    fn set_many<'a>(
        &'a self,
        items: &'a [(&'a [u8], &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Vec<usize>>> {
        self.writes.set_many(items, ttl)
    }
    fn delete_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<usize>> {
        self.writes.delete_many(keys)
    }
    fn clear<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        self.writes.clear(prefix)
    }

    fn ttl<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<TimeToLive>> {
        self.l2.ttl(key)
    }
    fn replace<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>> {
        self.writes.replace(key, value, ttl)
    }

    fn extend_if_equals<'a>(
        &'a self,
        key: &'a [u8],
        expected: &'a [u8],
        ttl: Duration,
        replace: bool,
    ) -> BoxFuture<'a, Result<bool>> {
        self.writes.extend_if_equals(key, expected, ttl, replace)
    }

    /// The L2's keys (as on the synchronous side), through the L2's own async scan.
    fn scan_keys(
        self: Arc<Self>,
        _sync: Arc<dyn Backend>,
        pattern: &crate::KeyPattern,
        count: usize,
    ) -> Result<Box<dyn crate::AsyncKeyScan>> {
        Arc::clone(&self.l2).scan_keys(Arc::clone(&self.tiered.l2), pattern, count)
    }
}

/// Opens the tiered backend a `tiered://` location (and builder settings) describe; returns
/// it with the location to show, its sub-URLs' passwords redacted.
pub(crate) fn open(
    location: &Location,
    options: &mut Options,
    config: TieredConfig,
    policy: &FailurePolicy,
) -> Result<(Arc<dyn Backend>, String)> {
    if location.scheme() != "tiered" {
        return Err(Error::config(format!(
            "a tiered cache is opened from a tiered:// URL or Cache::builder_tiered, not {}",
            location.redacted()
        )));
    }
    if !location.hosts().is_empty() || !(location.path().is_empty() || location.path() == "/") {
        return Err(Error::config(
            "tiered:// takes its stores as options: tiered://?l1=<url-encoded memory:// URL>&l2=<url-encoded URL>",
        ));
    }
    let l1_url = config
        .l1
        .or_else(|| options.take("l1"))
        .unwrap_or_else(|| "memory://".to_owned());
    let l2_url = config.l2.or_else(|| options.take("l2")).ok_or_else(|| {
        Error::config("tiered:// needs an l2 option: the URL-encoded URL of the shared cache")
    })?;
    let bus_spec = options.take("bus");
    let l1_timeout = match config.l1_timeout {
        Some(t) => t,
        None => options
            .seconds("l1_timeout")?
            .unwrap_or(Some(DEFAULT_L1_TIMEOUT)),
    };
    let key_prefix = config.key_prefix.unwrap_or_default();
    let bus = match config.bus {
        Some(bus) => Some(bus),
        None => bus_from_spec(bus_spec.as_deref(), &l2_url, &key_prefix)
            .map_err(|e| blame_config(options, "bus", e))?,
    };

    // An error of a store's URL or of its own options names the option (l1, l2) that gave it.
    let (l1_loc, l1) = (|| {
        let l1_loc = Location::parse(&l1_url)?;
        if l1_loc.scheme() != "memory" {
            return Err(Error::config(format!(
                "the l1 of a tiered cache must be a memory:// URL, not {}",
                l1_loc.redacted()
            )));
        }
        let mut l1_opts = Options::new(&l1_loc);
        let l1 = crate::open_backend(&l1_loc, &mut l1_opts)?;
        l1_opts.finish()?;
        Ok((l1_loc, l1))
    })()
    .map_err(|e| blame_config(options, "l1", e))?;

    let (l2_loc, l2) = (|| {
        let l2_loc = Location::parse(&l2_url)?;
        if l2_loc.scheme() == "tiered" {
            return Err(Error::config(
                "the l2 of a tiered cache cannot be tiered itself",
            ));
        }
        let mut l2_opts = Options::new(&l2_loc);
        let l2 = crate::open_backend(&l2_loc, &mut l2_opts)?;
        l2_opts.finish()?;
        Ok((l2_loc, l2))
    })()
    .map_err(|e| blame_config(options, "l2", e))?;
    let l2: Arc<dyn Backend> = if l2.is_local() || policy.breaker_threshold == 0 {
        l2
    } else {
        match config.breaker {
            Some(counts) => Arc::new(Guarded::counted(l2, policy, counts)),
            None => Arc::new(Guarded::new(l2, policy)),
        }
    };

    let shown = format!(
        "tiered://?l1={}&l2={}{}",
        l1_loc.redacted(),
        l2_loc.redacted(),
        bus_spec
            .map(|b| format!("&bus={}", crate::location::redact(&b)))
            .unwrap_or_default()
    );
    #[allow(unused_mut)] // mutated only with the `otel` feature
    let mut backend = TieredBackend::new(l1, l2, l1_timeout, bus)?;
    #[cfg(feature = "otel")]
    backend.trace_tiers(&l1_loc.redacted(), &l2_loc.redacted());
    Ok((Arc::new(backend), shown))
}

/// `error`, charged to the option `name` when it is a configuration error (a store that
/// cannot be reached is no fault of the option that names it).
fn blame_config(options: &Options, name: &str, error: Error) -> Error {
    if error.kind() == crate::error::ErrorKind::Configuration {
        options.blame(name, error)
    } else {
        error
    }
}

/// The bus a `tiered://` URL's `bus=` option names: `none`, `local:NAME`, `redis` (the L2's
/// server), a Redis URL, or `tracking` (the L2's servers' client-side caching).
fn bus_from_spec(
    spec: Option<&str>,
    l2_url: &str,
    key_prefix: &str,
) -> Result<Option<Arc<dyn InvalidationBus>>> {
    let spec = match spec {
        None | Some("none") | Some("") => return Ok(None),
        Some(spec) => spec,
    };
    if let Some(name) = spec.strip_prefix("local:") {
        if !name.is_empty() {
            return Ok(Some(LocalBus::named(name)));
        }
    }
    #[cfg(feature = "redis")]
    if spec == "tracking" {
        return Ok(Some(crate::redis_tracking::TrackingBus::open(
            l2_url, key_prefix,
        )?));
    }
    #[cfg(feature = "redis")]
    {
        let url = if spec == "redis" {
            let scheme = l2_url.split("://").next().unwrap_or("");
            if !matches!(scheme, "redis" | "rediss" | "unix") {
                return Err(Error::config(format!(
                    "bus=redis publishes on the l2's Redis server, but the l2 is {}: give the \
                     bus a Redis URL of its own (bus=<url-encoded redis://...>)",
                    crate::location::redact(l2_url)
                )));
            }
            Some(l2_url)
        } else if ["redis://", "rediss://", "unix://"]
            .iter()
            .any(|p| spec.starts_with(p))
        {
            Some(spec)
        } else {
            None
        };
        if let Some(url) = url {
            return Ok(Some(crate::redis_bus::RedisBus::open(url, key_prefix)?));
        }
    }
    let _ = (l2_url, key_prefix);
    Err(Error::config(format!(
        "unknown bus {:?} for tiered://: expected none, local:NAME, redis (the l2's server), \
         a url-encoded redis:// URL, or tracking (the l2's server reports every write)",
        crate::location::redact(spec)
    )))
}
