//! The awaitable `get_or_set_with` family: the same single flight, lease and early refresh
//! as [`super::compute`], with waits that yield instead of blocking (see
//! [`crate::flight`]'s async notes).

use super::asynchronous::{in_callers_context, Captures};
use super::{Cache, Key, TagStamp};
use crate::error::Result;
use crate::expiry::Expiry;
use crate::flight::{
    classify, lease_added, lease_key, lease_peek, lease_wait, payload, random_token,
    warn_flight_timeout, Join, Lease, Lookup, RefreshPolicy, Waited,
};
use crate::value::Value;
use std::future::Future;
use std::time::Instant;

impl Cache {
    /// [`Cache::get_or_set_with`], awaitable: on a miss, one caller awaits `loader` and
    /// stores its result while the other callers of this cache that miss the same key await
    /// it (single-flight; with the cache's `lease`, across processes too).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> polycache::Result<()> {
    /// let cache = polycache::Cache::open("memory://")?;
    /// let v = cache
    ///     .get_or_set_with_async("report", || async { Ok(b"expensive".to_vec()) }, Default::default())
    ///     .await?;
    /// assert_eq!(&*v, b"expensive");
    /// # Ok(()) }
    /// ```
    pub fn get_or_set_with_async<'a, 'k, F, Fut>(
        &'a self,
        key: impl Into<Key<'k>>,
        loader: F,
        expiry: Expiry,
    ) -> impl std::future::Future<Output = Result<Value>> + Captures<(&'a (), &'k ())>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>>>,
    {
        in_callers_context(async move {
            let policy = self.refresh_policy().clone();
            let key = key.into();
            match self.lookup_async(key, &policy).await?.hit_or_current() {
                Ok(hit) => Ok(hit),
                Err(current) => self.load_async(key, loader, expiry, &policy, current).await,
            }
        })
    }

    /// [`Cache::lookup`], awaitable.
    pub fn lookup_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
        policy: &'a RefreshPolicy,
    ) -> impl std::future::Future<Output = Result<Lookup>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move { Ok(classify(self.get_async(key).await?, policy)) })
    }

    /// [`Cache::load`], awaitable.
    pub fn load_async<'a, 'k, F, Fut>(
        &'a self,
        key: impl Into<Key<'k>>,
        loader: F,
        expiry: Expiry,
        policy: &'a RefreshPolicy,
        current: Option<Value>,
    ) -> impl std::future::Future<Output = Result<Value>> + Captures<(&'a (), &'k ())>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>>>,
    {
        in_callers_context(async move {
            self.load_tagged_async(key, loader, expiry, policy, current, &[])
                .await
        })
    }

    /// [`Cache::load_tagged`], awaitable.
    pub fn load_tagged_async<'a, 'k, F, Fut>(
        &'a self,
        key: impl Into<Key<'k>>,
        loader: F,
        expiry: Expiry,
        policy: &'a RefreshPolicy,
        current: Option<Value>,
        tags: &'a [&'a str],
    ) -> impl std::future::Future<Output = Result<Value>> + Captures<(&'a (), &'k ())>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>>>,
    {
        in_callers_context(async move {
            let full = self.make_key(key)?;
            if let Some(current) = current {
                let Some(guard) = self.flights().try_lead(&full) else {
                    return Ok(current);
                };
                let refreshed = self
                    .compute_and_store_async(&full, loader, expiry, policy, tags)
                    .await;
                return Ok(guard.complete_early_refresh(&full, refreshed, current));
            }
            if !policy.single_flight {
                return self
                    .compute_and_store_async(&full, loader, expiry, policy, tags)
                    .await;
            }
            self.single_flight_async(
                &full,
                policy,
                &|v| Some(payload(v)),
                self.compute_and_store_async(&full, loader, expiry, policy, tags),
            )
            .await
        })
    }

    /// [`Cache::single_flight`](super), awaitable: `compute` runs once for every task of this
    /// cache that gets here at the same time (and, with the lease, once across processes);
    /// the others await its value. `accept` maps a stored value found meanwhile to the value
    /// to return, or `None` when it does not do.
    ///
    /// The steps are [`Cache::single_flight`](super)'s, but each wait here is an await, so the
    /// two bodies stay apart; how the leader ends the flight is shared (`LeaderGuard`'s
    /// `complete_*`).
    pub(crate) async fn single_flight_async(
        &self,
        full: &[u8],
        policy: &RefreshPolicy,
        accept: &(dyn Fn(Value) -> Option<Value> + Sync),
        compute: impl Future<Output = Result<Value>>,
    ) -> Result<Value> {
        let deadline = Instant::now() + policy.flight_timeout;
        let guard = loop {
            // An async leader is no thread: `join_async` marks none, so a loader that awaits
            // its own key waits for `flight_timeout` at most, then computes.
            match self.flights().join_async(full) {
                Join::Lead(guard) => break Some(guard),
                Join::Follow(flight) => match flight.wait_async(deadline).await {
                    Waited::Value(v) => return Ok(v),
                    Waited::Failed => continue,
                    Waited::TimedOut => {
                        warn_flight_timeout(policy, full);
                        break None;
                    }
                },
            }
        };
        let Some(guard) = guard else {
            return compute.await;
        };
        if let Some(v) = self.full_get_async(full).await?.and_then(accept) {
            return Ok(guard.complete_with(v));
        }
        let lease = if policy.lease {
            self.acquire_lease_async(full, deadline, policy, accept)
                .await
        } else {
            Lease::Unavailable
        };
        if let Lease::Found(v) = lease {
            return Ok(guard.complete_with(v));
        }
        let result = compute.await;
        if let Lease::Held { lock, token } = &lease {
            let _ = self
                .full_delete_if_equals_async(lock, token.as_bytes())
                .await;
        }
        guard.complete_result(result)
    }

    async fn compute_and_store_async<F, Fut>(
        &self,
        full: &[u8],
        loader: F,
        expiry: Expiry,
        policy: &RefreshPolicy,
        tags: &[&str],
    ) -> Result<Value>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>>>,
    {
        let stamp = self.tag_stamp_async(tags).await?;
        let started = Instant::now();
        let bytes = loader().await?;
        self.store_computed_async(full, &bytes, expiry, policy, started.elapsed(), &stamp)
            .await?;
        Ok(Value::from(bytes))
    }

    /// [`Cache::store_computed`](super), awaitable.
    async fn store_computed_async(
        &self,
        full: &[u8],
        bytes: &[u8],
        expiry: Expiry,
        policy: &RefreshPolicy,
        delta: std::time::Duration,
        stamp: &TagStamp,
    ) -> Result<()> {
        let (ttl, stored) = self.stored_form(bytes, expiry, policy, delta, stamp);
        self.full_set_async(full, &stored, ttl).await?;
        Ok(())
    }

    /// [`Cache::try_lease`](super), awaitable.
    pub(crate) async fn try_lease_async(
        &self,
        full: &[u8],
        ttl: std::time::Duration,
    ) -> Option<(Vec<u8>, String)> {
        let lock = lease_key(full);
        let token = random_token();
        match self.full_add_async(&lock, token.as_bytes(), ttl).await {
            Ok(false) => None,
            _ => Some((lock, token)),
        }
    }

    /// [`Cache::acquire_lease`](super), awaitable.
    async fn acquire_lease_async(
        &self,
        full: &[u8],
        deadline: Instant,
        policy: &RefreshPolicy,
        accept: &(dyn Fn(Value) -> Option<Value> + Sync),
    ) -> Lease {
        let lock = lease_key(full);
        let token = random_token();
        let mut backoff = std::time::Duration::from_millis(2);
        loop {
            let added = self
                .full_add_async(&lock, token.as_bytes(), policy.lease_ttl)
                .await;
            match lease_added(added) {
                Some(true) => {
                    // The previous holder may have stored the value just before releasing.
                    let found = self.full_get_async(full).await;
                    let Some(v) = found.ok().flatten().and_then(accept) else {
                        return Lease::Held { lock, token };
                    };
                    let _ = self
                        .full_delete_if_equals_async(&lock, token.as_bytes())
                        .await;
                    return Lease::Found(v);
                }
                Some(false) => {}
                None => return Lease::Unavailable,
            }
            if let Some(lease) = lease_peek(self.full_get_async(full).await, accept) {
                return lease;
            }
            let Some(wait) = lease_wait(&mut backoff, deadline, policy, full) else {
                return Lease::Unavailable;
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl Cache {
    /// [`Cache::store_loaded`], awaitable: stores a value its caller computed, as
    /// [`Cache::load_async`] stores one (for callers that run the loader themselves, such as
    /// Python's `async` decorators).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> polycache::Result<()> {
    /// use polycache::{Cache, Expiry, Lookup, RefreshPolicy};
    /// use std::time::Duration;
    /// let cache = Cache::open("memory://")?;
    /// let policy = RefreshPolicy::default();
    /// cache
    ///     .store_loaded_async("k", b"v", Expiry::Default, &policy, Duration::from_millis(5))
    ///     .await?;
    /// assert!(matches!(cache.lookup_async("k", &policy).await?, Lookup::Hit(_)));
    /// # Ok(()) }
    /// ```
    pub fn store_loaded_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
        value: &'a [u8],
        expiry: Expiry,
        policy: &'a RefreshPolicy,
        delta: std::time::Duration,
    ) -> impl std::future::Future<Output = Result<()>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            self.store_loaded_stamped_async(key, value, expiry, policy, delta, &TagStamp::default())
                .await
        })
    }

    /// [`Cache::store_loaded_stamped`], awaitable.
    pub fn store_loaded_stamped_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
        value: &'a [u8],
        expiry: Expiry,
        policy: &'a RefreshPolicy,
        delta: std::time::Duration,
        stamp: &'a TagStamp,
    ) -> impl std::future::Future<Output = Result<()>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            let full = self.make_key(key)?;
            self.store_computed_async(&full, value, expiry, policy, delta, stamp)
                .await
        })
    }

    /// [`Cache::get_or_set_with_tags`], awaitable.
    pub fn get_or_set_with_tags_async<'a, 'k, F, Fut>(
        &'a self,
        key: impl Into<Key<'k>>,
        loader: F,
        expiry: Expiry,
        tags: &'a [&'a str],
    ) -> impl std::future::Future<Output = Result<Value>> + Captures<(&'a (), &'k ())>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>>>,
    {
        in_callers_context(async move {
            crate::check_tags(tags)?;
            let policy = self.refresh_policy().clone();
            let key = key.into();
            match self
                .lookup_tagged_async(key, &policy, tags)
                .await?
                .hit_or_current()
            {
                Ok(hit) => Ok(hit),
                Err(current) => {
                    self.load_tagged_async(key, loader, expiry, &policy, current, tags)
                        .await
                }
            }
        })
    }
}
