//! A job's awaitable calls, with async fetches: the same plan as the synchronous calls
//! (`Job::plan`: hit, stale and refreshed behind, or fetched now), the same envelopes, the
//! same single-flight and lease. A background refresh of an async fetch is a task on
//! polycache's runtime, not a refresh-pool thread.

use super::{fresh, Fetched, Job, JobResult, Plan, STOPPED};
use crate::backend::BoxFuture;
use crate::cache::Key;
use crate::error::Result;
use crate::flight::LeaderGuard;
use crate::value::Value;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a job computes one key's value asynchronously: [`crate::Fetch`]'s async twin.
/// Closures `Fn() -> impl Future<Output = Result<Vec<u8>>>` implement it.
///
/// Background refreshes run it on polycache's runtime, so it is `Send + Sync + 'static`
/// and its futures are `Send`.
pub trait AsyncFetch: Send + Sync + 'static {
    /// Computes the value.
    fn fetch(&self) -> BoxFuture<'_, Result<Fetched>>;
    /// As [`crate::Fetch::should_fetch_synchronously`].
    fn should_fetch_synchronously(&self, stale_for: Duration) -> bool {
        let _ = stale_for;
        false
    }
}

impl<F, Fut, T> AsyncFetch for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T>> + Send + 'static,
    T: Into<Fetched>,
{
    fn fetch(&self) -> BoxFuture<'_, Result<Fetched>> {
        let fut = self();
        Box::pin(async move { fut.await.map(Into::into) })
    }
}

impl Job {
    /// [`Job::get`], awaitable, with an async fetch.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> polycache::Result<()> {
    /// use polycache::{Cache, CacheStatus, Job, JobOptions};
    /// let job = Job::new(Cache::open("memory://")?, JobOptions::default());
    /// let fetch = || async { Ok(b"report".to_vec()) };
    /// assert_eq!(job.get_async("r", fetch).await?.status, CacheStatus::Miss);
    /// assert_eq!(job.get_async("r", fetch).await?.status, CacheStatus::Hit);
    /// # Ok(()) }
    /// ```
    pub async fn get_async<'k, F: AsyncFetch>(
        &self,
        key: impl Into<Key<'k>>,
        fetch: F,
    ) -> Result<JobResult> {
        let full = self.cache.make_key(key)?;
        let raw = self
            .cache
            .full_get_tagged_async(&full, &self.tag_names())
            .await?;
        match self.plan(raw, &|stale_for| {
            fetch.should_fetch_synchronously(stale_for)
        }) {
            Plan::Answer(r) => Ok(r),
            Plan::Schedule(r) => {
                self.schedule_async(full, fetch);
                Ok(r)
            }
            Plan::Fetch { status, fallback } => {
                let fetched = self.fetch_shared_async(&full, &fetch).await;
                self.fetched(&full, status, fallback, fetched)
            }
        }
    }

    /// [`Job::refresh`], awaitable.
    pub async fn refresh_async<'k, F: AsyncFetch>(
        &self,
        key: impl Into<Key<'k>>,
        fetch: F,
    ) -> Result<Value> {
        let full = self.cache.make_key(key)?;
        self.fetch_and_store_async(&full, &fetch).await
    }

    /// [`Job::set`], awaitable.
    pub async fn set_async<'k>(
        &self,
        key: impl Into<Key<'k>>,
        value: &[u8],
        fresh_for: Option<Duration>,
    ) -> Result<bool> {
        let full = self.cache.make_key(key)?;
        let stamp = self.stamp_async().await?;
        let (wrapped, ttl) = self.wrap(value, fresh_for, 0);
        self.cache
            .full_set_async(&full, &stamp.wrap(&wrapped), ttl)
            .await
    }

    /// [`Job::stamp`](super), awaitable.
    async fn stamp_async(&self) -> Result<crate::TagStamp> {
        self.cache.tag_stamp_async(&self.tag_names()).await
    }

    /// [`Job::invalidate`], awaitable.
    pub async fn invalidate_async<'k, F: AsyncFetch>(
        &self,
        key: impl Into<Key<'k>>,
        fetch: F,
    ) -> Result<bool> {
        let full = self.cache.make_key(key)?;
        let stamp = self.stamp_async().await?;
        let present = match self.cache.full_get_async(&full).await? {
            None => false,
            Some(raw) => {
                let (marked, ttl) = self.mark_stale(&raw);
                self.cache
                    .full_set_async(&full, &stamp.wrap(&marked), ttl)
                    .await?;
                true
            }
        };
        self.schedule_async(full, fetch);
        Ok(present)
    }

    /// [`Job::delete`], awaitable.
    pub async fn delete_async<'k>(&self, key: impl Into<Key<'k>>) -> Result<bool> {
        self.cache.delete_async(key).await
    }

    async fn fetch_shared_async<F: AsyncFetch>(&self, full: &[u8], fetch: &F) -> Result<Value> {
        let policy = self.policy();
        if !policy.single_flight {
            return self.fetch_and_store_async(full, fetch).await;
        }
        self.cache
            .single_flight_async(
                full,
                policy,
                &fresh,
                self.fetch_and_store_async(full, fetch),
            )
            .await
    }

    async fn fetch_and_store_async<F: AsyncFetch + ?Sized>(
        &self,
        full: &[u8],
        fetch: &F,
    ) -> Result<Value> {
        let stamp = self.stamp_async().await?;
        let started = Instant::now();
        let fetched = fetch.fetch().await?;
        let delta = started.elapsed().as_micros() as u64;
        self.cache.stats_ref().refresh(1);
        let (wrapped, ttl) = self.wrap(&fetched.value, fetched.fresh_for, delta);
        self.cache
            .full_set_async(full, &stamp.wrap(&wrapped), ttl)
            .await?;
        Ok(Value::from(fetched.value))
    }

    /// Starts one background refresh of `full` on polycache's runtime, unless one is
    /// running already (or [`crate::stop_refreshes`] was called).
    fn schedule_async<F: AsyncFetch>(&self, full: Vec<u8>, fetch: F) {
        if STOPPED.load(Ordering::Relaxed) {
            return;
        }
        let Some(guard) = self.cache.flights().try_lead(&full) else {
            return;
        };
        let handle = match crate::runtime::handle() {
            Ok(handle) => handle,
            Err(e) => {
                // The guard drops here: the flight fails and a later read tries again.
                log::warn!("polycache: cannot refresh in the background: {e}");
                return;
            }
        };
        let job = self.clone();
        let fetch = Arc::new(fetch);
        handle.spawn(async move { job.refresh_in_background_async(&full, &*fetch, guard).await });
    }

    async fn refresh_in_background_async<F: AsyncFetch>(
        &self,
        full: &[u8],
        fetch: &F,
        guard: LeaderGuard,
    ) {
        let policy = self.policy();
        let lease = if policy.lease {
            match self.cache.try_lease_async(full, policy.lease_ttl).await {
                Some(lease) => Some(lease),
                // Another process is refreshing this key.
                None => return guard.complete(None),
            }
        } else {
            None
        };
        let found = self.cache.full_get_async(full).await.ok().flatten();
        let refreshed = match found.and_then(fresh) {
            Some(v) => Ok(v),
            None => self.fetch_and_store_async(full, fetch).await,
        };
        self.finish_background(full, refreshed, guard);
        if let Some((lock, token)) = &lease {
            let _ = self
                .cache
                .full_delete_if_equals_async(lock, token.as_bytes())
                .await;
        }
    }
}
