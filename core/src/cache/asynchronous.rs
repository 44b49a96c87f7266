//! The awaitable twin of every [`Cache`] operation.
//!
//! Each `*_async` method shares its key, value, expiry, fail-open and statistics steps with
//! its synchronous twin (the `answer_*` and key-building functions of `cache.rs`); only the
//! backend call differs. A backend that answers in memory runs the synchronous call in place
//! (the future is ready at once, nothing is spawned); the others go through their
//! [`AsyncBackend`](crate::AsyncBackend): native I/O, or the blocking pool.
//!
//! The futures are `Send` and poll from any tokio runtime, multi-thread or current-thread;
//! none blocks the thread that polls it. They need a tokio context with timers only where a
//! backend's own I/O does (Redis and PostgreSQL connections run on polycache's runtime, see
//! [`crate::runtime`]). Dropping a future mid-operation leaves the cache and its connections
//! usable.

use super::tags::Via;
use super::{pairs, Cache, Key};
use crate::error::Result;
use crate::expiry::{Expiry, Ttl};
use crate::stats::Operation;
use crate::value::Value;
use crate::AsyncBackend;

/// Runs `future` in the OpenTelemetry context current when it was made, so that an awaited
/// operation's span is a child of the caller's span at the call, not of whatever span is
/// current where (and when) the future is first polled.
#[cfg(feature = "otel")]
pub(crate) use crate::otel::in_callers_context;

/// Without the `otel` feature there is no context to carry: the future itself.
#[cfg(not(feature = "otel"))]
#[inline(always)]
pub(crate) fn in_callers_context<F>(future: F) -> F {
    future
}

/// Names the lifetimes an `_async` method's future borrows (its `&self`, keys and values),
/// as an `async fn` would; implemented by every type.
pub trait Captures<T: ?Sized> {}

impl<T: ?Sized, U: ?Sized> Captures<U> for T {}

impl Cache {
    /// The backend's async side, or `None` when calls answer in memory.
    #[inline]
    pub(super) fn awaited(&self) -> Option<&dyn crate::AsyncBackend> {
        self.inner.awaited.as_deref()
    }

    /// True when awaiting this cache never waits: every operation completes in place
    /// (`memory://`, `dummy://`).
    pub fn completes_inline(&self) -> bool {
        self.inner.awaited.is_none()
    }

    /// [`Cache::full_get`], awaitable.
    pub(crate) async fn full_get_async(&self, full: &[u8]) -> Result<Option<Value>> {
        let Some(backend) = self.awaited() else {
            return self.full_get(full);
        };
        let found = self.read_async(backend, full).await;
        self.apply_fail_open(found, || None)
    }

    /// The value under the full key `full`, opened (signature, compression).
    async fn read_async(&self, backend: &dyn AsyncBackend, full: &[u8]) -> Result<Option<Value>> {
        if let Some(tags) = self.hint(full) {
            return self.read_hinted(Via::Awaited(backend), full, &tags).await;
        }
        let found = backend.get(full).await?;
        self.check_tags_at_async(full, self.open_value(full, found)?)
            .await
    }

    /// [`Cache::full_set`], awaitable.
    pub(crate) async fn full_set_async(&self, full: &[u8], value: &[u8], ttl: Ttl) -> Result<bool> {
        let Some(backend) = self.awaited() else {
            return self.full_set(full, value, ttl);
        };
        self.check_value(value)?;
        let result = self.write_async(backend, full, value, ttl).await;
        self.answer_store(result, ttl)
    }

    /// [`Cache::write`], awaitable.
    async fn write_async(
        &self,
        backend: &dyn AsyncBackend,
        full: &[u8],
        value: &[u8],
        ttl: Ttl,
    ) -> Result<()> {
        match ttl {
            Ttl::Expired => backend.delete(full).await.map(|_| ()),
            ttl => {
                let sealed = self.seal_value(full, value);
                backend.set(full, &sealed, ttl.as_option()).await
            }
        }
    }

    /// [`Cache::full_add`], awaitable.
    pub(crate) async fn full_add_async(
        &self,
        full: &[u8],
        value: &[u8],
        ttl: std::time::Duration,
    ) -> Result<bool> {
        let Some(backend) = self.awaited() else {
            return self.full_add(full, value, ttl);
        };
        let result = backend.add(full, value, Some(ttl)).await;
        self.track(result)
    }

    /// [`Cache::full_delete_if_equals`], awaitable.
    pub(crate) async fn full_delete_if_equals_async(
        &self,
        full: &[u8],
        expected: &[u8],
    ) -> Result<bool> {
        let Some(backend) = self.awaited() else {
            return self.full_delete_if_equals(full, expected);
        };
        let result = backend.delete_if_equals(full, expected).await;
        self.apply_fail_open(result, || false)
    }

    /// [`Cache::get`], awaitable.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> polycache::Result<()> {
    /// let cache = polycache::Cache::open("memory://")?;
    /// cache.set_async("k", b"v", Default::default()).await?;
    /// assert_eq!(cache.get_async("k").await?.as_deref(), Some(&b"v"[..]));
    /// # Ok(()) }
    /// ```
    pub fn get_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
    ) -> impl std::future::Future<Output = Result<Option<Value>>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            let Some(backend) = self.awaited() else {
                return self.get(key);
            };
            let start = self.inner.stats.start_anywhere(Operation::Get);
            let found = match self.make_key(key) {
                Ok(full) => self.read_async(backend, &full).await,
                Err(e) => Err(e),
            };
            self.answer_get(start, found)
        })
    }

    /// [`Cache::set`], awaitable.
    pub fn set_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
        value: &'a [u8],
        expiry: Expiry,
    ) -> impl std::future::Future<Output = Result<bool>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            let Some(backend) = self.awaited() else {
                return self.set(key, value, expiry);
            };
            self.check_value(value)?;
            let ttl = self.resolve_expiry(expiry);
            let full = self.make_key(key)?;
            let start = self.inner.stats.start_anywhere(Operation::Set);
            let written = self.write_async(backend, &full, value, ttl).await;
            self.finish_set(start, ttl, value, written)
        })
    }

    /// [`Cache::add`], awaitable.
    pub fn add_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
        value: &'a [u8],
        expiry: Expiry,
    ) -> impl std::future::Future<Output = Result<bool>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            let Some(backend) = self.awaited() else {
                return self.add(key, value, expiry);
            };
            self.check_value(value)?;
            let full = self.make_key(key)?;
            let start = self.inner.stats.start_anywhere(Operation::Add);
            let ttl = self.resolve_expiry(expiry);
            let result = match ttl {
                Ttl::Expired => self
                    .presence_async(backend, &full)
                    .await
                    .map(|p| !p.is_present()),
                ttl => {
                    let sealed = self.seal_value(&full, value);
                    self.add_over_invalidated_async(backend, &full, &sealed, ttl.as_option())
                        .await
                }
            };
            self.finish_add(start, ttl, value, result)
        })
    }

    /// [`Cache::delete`], awaitable.
    pub fn delete_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
    ) -> impl std::future::Future<Output = Result<bool>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            let Some(backend) = self.awaited() else {
                return self.delete(key);
            };
            let start = self.inner.stats.start_anywhere(Operation::Delete);
            let result = match self.make_key(key) {
                Ok(full) => backend.delete(&full).await,
                Err(e) => Err(e),
            };
            self.record(Operation::Delete, start, &result, 0);
            self.answer_delete(result)
        })
    }

    /// [`Cache::has_key`], awaitable.
    pub fn has_key_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
    ) -> impl std::future::Future<Output = Result<bool>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            let Some(backend) = self.awaited() else {
                return self.has_key(key);
            };
            let full = self.make_key(key)?;
            let start = self.inner.stats.start_anywhere(Operation::HasKey);
            let result = self
                .presence_async(backend, &full)
                .await
                .map(|p| p.is_present());
            self.record(Operation::HasKey, start, &result, 0);
            self.apply_fail_open(result, || false)
        })
    }

    /// [`Cache::touch`], awaitable.
    pub fn touch_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
        expiry: Expiry,
    ) -> impl std::future::Future<Output = Result<bool>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            let Some(backend) = self.awaited() else {
                return self.touch(key, expiry);
            };
            let full = self.make_key(key)?;
            let start = self.inner.stats.start_anywhere(Operation::Touch);
            let result = match self.presence_async(backend, &full).await {
                Ok(p) if !p.is_present() => Ok(false),
                Err(e) => Err(e),
                Ok(_) => match self.resolve_expiry(expiry) {
                    Ttl::Expired => backend.delete(&full).await,
                    ttl => backend.touch(&full, ttl.as_option()).await,
                },
            };
            self.record(Operation::Touch, start, &result, 0);
            self.apply_fail_open(result, || false)
        })
    }

    /// [`Cache::incr`], awaitable.
    pub fn incr_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
        delta: i64,
    ) -> impl std::future::Future<Output = Result<i64>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            let Some(backend) = self.awaited() else {
                return self.incr(key, delta);
            };
            let key = key.into();
            let start = self.inner.stats.start_anywhere(Operation::Incr);
            let result = match self.make_key(key) {
                Ok(full) => self.incr_live(Via::Awaited(backend), &full, delta).await,
                Err(e) => Err(e),
            };
            self.record(Operation::Incr, start, &result, 0);
            self.answer_incr(key, result)
        })
    }

    /// [`Cache::decr`], awaitable.
    pub fn decr_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
        delta: i64,
    ) -> impl std::future::Future<Output = Result<i64>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move { self.incr_async(key, Self::negated(delta)?).await })
    }

    /// [`Cache::get_many`], awaitable: one bulk call to the backend.
    pub fn get_many_async<'a, 'k>(
        &'a self,
        keys: &'a [&'a str],
        version: Option<i64>,
    ) -> impl std::future::Future<Output = Result<Vec<Option<Value>>>> + Captures<(&'a (), &'k ())>
    {
        in_callers_context(async move {
            self.get_many_keys_async(&Self::versioned(keys, version))
                .await
        })
    }

    /// [`Cache::get_many_keys`], awaitable.
    pub fn get_many_keys_async<'a, 'k>(
        &'a self,
        keys: &'a [Key<'k>],
    ) -> impl std::future::Future<Output = Result<Vec<Option<Value>>>> + Captures<(&'a (), &'k ())>
    {
        in_callers_context(async move {
            let Some(backend) = self.awaited() else {
                return self.get_many_keys(keys);
            };
            let (bytes, ends) = self.full_keys(keys)?;
            let full = Self::split_keys(&bytes, &ends);
            let start = self.inner.stats.start_anywhere(Operation::GetMany);
            let found = match self.hinted_many_keys(&full) {
                Some(extra) => {
                    self.read_many_hinted(Via::Awaited(backend), &full, &extra)
                        .await
                }
                None => match self.open_many(&full, backend.get_many(&full).await) {
                    Ok(values) => self.check_tags_many_at_async(&full, values).await,
                    Err(e) => Err(e),
                },
            };
            self.answer_get_many(&full, found, start)
        })
    }

    /// [`Cache::set_many`], awaitable: one bulk call to the backend.
    pub fn set_many_async<'a, 'k>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        expiry: Expiry,
        version: Option<i64>,
    ) -> impl std::future::Future<Output = Result<Vec<usize>>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            let items = Self::versioned_items(items, version);
            self.set_many_keys_async(&items, expiry).await
        })
    }

    /// [`Cache::set_many_keys`], awaitable.
    pub fn set_many_keys_async<'a, 'k>(
        &'a self,
        items: &'a [(Key<'k>, &'a [u8])],
        expiry: Expiry,
    ) -> impl std::future::Future<Output = Result<Vec<usize>>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            let Some(backend) = self.awaited() else {
                return self.set_many_keys(items, expiry);
            };
            let (bytes, ends) = self.set_many_full_keys(items)?;
            let full = Self::split_keys(&bytes, &ends);
            let start = self.inner.stats.start_anywhere(Operation::SetMany);
            let ttl = self.resolve_expiry(expiry);
            let result = match ttl {
                Ttl::Expired => backend.delete_many(&full).await.map(|_| Vec::new()),
                ttl => {
                    let sealed = self.seal_many(&full, items);
                    let r = backend
                        .set_many(&pairs(&full, &sealed), ttl.as_option())
                        .await;
                    self.count_set_many(items.len(), &r);
                    r
                }
            };
            self.finish_set_many(start, items, ttl, result)
        })
    }

    /// [`Cache::delete_many`], awaitable.
    pub fn delete_many_async<'a, 'k>(
        &'a self,
        keys: &'a [&'a str],
        version: Option<i64>,
    ) -> impl std::future::Future<Output = Result<usize>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            self.delete_many_keys_async(&Self::versioned(keys, version))
                .await
        })
    }

    /// [`Cache::delete_many_keys`], awaitable.
    pub fn delete_many_keys_async<'a, 'k>(
        &'a self,
        keys: &'a [Key<'k>],
    ) -> impl std::future::Future<Output = Result<usize>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            let Some(backend) = self.awaited() else {
                return self.delete_many_keys(keys);
            };
            let (bytes, ends) = self.full_keys(keys)?;
            let full = Self::split_keys(&bytes, &ends);
            let start = self.inner.stats.start_anywhere(Operation::DeleteMany);
            let result = backend.delete_many(&full).await;
            self.record(Operation::DeleteMany, start, &result, 0);
            self.answer_delete_many(result)
        })
    }

    /// [`Cache::get_or_set`], awaitable: on a miss, awaits `compute`, stores its result with
    /// `add` and returns what the cache then holds. (No single-flight: see
    /// [`Cache::get_or_set_with_async`].)
    pub fn get_or_set_async<'a, 'k, F>(
        &'a self,
        key: impl Into<Key<'k>>,
        compute: F,
        expiry: Expiry,
    ) -> impl std::future::Future<Output = Result<Value>> + Captures<(&'a (), &'k ())>
    where
        F: std::future::Future<Output = Result<Vec<u8>>>,
    {
        in_callers_context(async move {
            let key = key.into();
            if let Some(v) = self.get_async(key).await? {
                return Ok(v);
            }
            let value = compute.await?;
            if self.add_async(key, &value, expiry).await? {
                return Ok(Value::from(value));
            }
            // Another writer stored first: answer with what the cache holds, as Django does.
            match self.get_async(key).await? {
                Some(v) => Ok(v),
                None => Ok(Value::from(value)),
            }
        })
    }

    /// [`Cache::clear`], awaitable.
    pub fn clear_async(&self) -> impl std::future::Future<Output = Result<()>> + '_ {
        in_callers_context(async move {
            let Some(backend) = self.awaited() else {
                return self.clear();
            };
            let start = self.inner.stats.start_anywhere(Operation::Clear);
            let result = backend.clear(&self.clear_prefix()).await;
            self.record(Operation::Clear, start, &result, 0);
            self.apply_fail_open(result, || ())
        })
    }

    /// [`Cache::incr_version`], awaitable.
    pub fn incr_version_async<'a, 'k>(
        &'a self,
        key: &'a str,
        delta: i64,
        version: Option<i64>,
    ) -> impl std::future::Future<Output = Result<i64>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            let (version, new_version) = self.versions(delta, version)?;
            let old = Key::new(key).version(version);
            let value = self
                .get_async(old)
                .await?
                .ok_or_else(|| crate::backend::not_found(key.as_bytes()))?;
            self.set_async(Key::new(key).version(new_version), &value, Expiry::Default)
                .await?;
            self.delete_async(old).await?;
            Ok(new_version)
        })
    }
}
