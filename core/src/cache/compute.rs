//! `get_or_set_with` and its family (`load`, `lookup`, the tagged forms): a missing value
//! computed once, through the single flight, lease and early refresh of [`crate::flight`].

use super::{check_tags, Cache, Key, TagStamp};
use crate::clock::unix_ms;
use crate::envelope::{after_ms, Envelope};
use crate::error::Result;
use crate::expiry::{Expiry, Ttl};
use crate::flight::{
    classify, lease_added, lease_key, lease_peek, lease_wait, payload, random_token,
    warn_flight_timeout, Join, Lease, Lookup, RefreshPolicy, Waited,
};
use crate::value::Value;
use std::borrow::Cow;
use std::thread;
use std::time::{Duration, Instant};

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
        self.get_or_set_with_policy(key, loader, expiry, self.refresh_policy())
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
        match self.lookup(key, policy)?.hit_or_current() {
            Ok(hit) => Ok(hit),
            Err(current) => self.load(key, loader, expiry, policy, current),
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
            let refreshed = self.compute_and_store(&full, loader, expiry, policy, tags);
            return Ok(guard.complete_early_refresh(&full, refreshed, current));
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
            return Ok(guard.complete_with(v));
        }
        let lease = if policy.lease {
            self.acquire_lease(full, deadline, policy, accept)
        } else {
            Lease::Unavailable
        };
        if let Lease::Found(v) = lease {
            return Ok(guard.complete_with(v));
        }
        let result = compute();
        if let Lease::Held { lock, token } = &lease {
            self.release_lease(lock, token);
        }
        guard.complete_result(result)
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
        let (ttl, stored) = self.stored_form(bytes, expiry, policy, delta, stamp);
        self.full_set(full, &stored, ttl)?;
        Ok(())
    }

    /// How a computed value is stored, for [`Cache::store_computed`] and its awaitable twin:
    /// counts a refresh and returns the TTL and the bytes to write, the value wrapped in an
    /// [`Envelope`] when XFetch is on and behind the tag versions of `stamp`.
    pub(super) fn stored_form<'b>(
        &self,
        bytes: &'b [u8],
        expiry: Expiry,
        policy: &RefreshPolicy,
        delta: Duration,
        stamp: &TagStamp,
    ) -> (Ttl, Cow<'b, [u8]>) {
        let (ttl, wrapped) = self.computed(bytes, expiry, policy, delta);
        let stored = match wrapped {
            None => stamp.wrap(bytes),
            Some(envelope) => match stamp.wrap(&envelope) {
                Cow::Owned(tagged) => Cow::Owned(tagged),
                Cow::Borrowed(_) => Cow::Owned(envelope),
            },
        };
        (ttl, stored)
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
        match self.lookup_tagged(key, policy, tags)?.hit_or_current() {
            Ok(hit) => Ok(hit),
            Err(current) => self.load_tagged(key, loader, expiry, policy, current, tags),
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
            match lease_added(self.full_add(&lock, token.as_bytes(), policy.lease_ttl)) {
                Some(true) => {
                    // The previous holder may have stored the value just before releasing.
                    let Some(v) = self.full_get(full).ok().flatten().and_then(accept) else {
                        return Lease::Held { lock, token };
                    };
                    self.release_lease(&lock, &token);
                    return Lease::Found(v);
                }
                Some(false) => {}
                None => return Lease::Unavailable,
            }
            if let Some(lease) = lease_peek(self.full_get(full), accept) {
                return lease;
            }
            let Some(wait) = lease_wait(&mut backoff, deadline, policy, full) else {
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
