//! django-redis' lifetime operations on every cache: `ttl`, `persist`, `expire_at`, `set`
//! with `xx` (`replace`) and `incr` without a key check (`incr_or_create`), sync and async.
//!
//! `expire`/`pexpire` are [`Cache::touch`] with [`Expiry::After`] (and [`Expiry::Expired`]
//! for a timeout of zero or less, which removes the key as Redis' `EXPIRE` does).

use super::asynchronous::{in_callers_context, Captures};
use super::tags::{ready, Via};
use super::{Cache, Key};
use crate::error::{Error, ErrorKind, Result};
use crate::expiry::{Expiry, TimeToLive, Ttl};
use std::time::SystemTime;

/// How often `incr_or_create` retries when other callers keep deleting and creating the key
/// between its `incr` and its `add`.
const CREATE_ATTEMPTS: usize = 16;

fn lost_race() -> Error {
    Error::new(
        ErrorKind::Backend,
        "incr_or_create lost the race with concurrent deletes 16 times in a row",
    )
}

/// The expiry that ends at `when`: already expired when `when` is not in the future.
pub(crate) fn expiry_at(when: SystemTime) -> Expiry {
    match when.duration_since(SystemTime::now()) {
        Ok(left) if !left.is_zero() => Expiry::After(left),
        _ => Expiry::Expired,
    }
}

impl Cache {
    /// How long `key` has left: [`TimeToLive::Missing`], [`TimeToLive::Forever`] or the time
    /// until it expires (django-redis' `ttl`/`pttl`, Redis' `PTTL`).
    ///
    /// A backend that keeps no readable expiry (a custom backend that does not implement
    /// [`crate::Backend::ttl`]) answers an [`ErrorKind::Unsupported`] error.
    ///
    /// ```
    /// use polycache::{Cache, Expiry, TimeToLive};
    /// use std::time::Duration;
    /// let cache = Cache::open("memory://")?;
    /// cache.set("k", b"v", Expiry::After(Duration::from_secs(60)))?;
    /// assert!(matches!(cache.ttl("k")?, TimeToLive::Left(d) if d <= Duration::from_secs(60)));
    /// cache.set("p", b"v", Expiry::Never)?;
    /// assert_eq!(cache.ttl("p")?, TimeToLive::Forever);
    /// assert_eq!(cache.ttl("nope")?, TimeToLive::Missing);
    /// # Ok::<(), polycache::Error>(())
    /// ```
    pub fn ttl<'k>(&self, key: impl Into<Key<'k>>) -> Result<TimeToLive> {
        let result = self.with_key(key.into(), |k| {
            let left = self.inner.backend.ttl(k)?;
            if left == TimeToLive::Missing || self.is_present(k)? {
                return Ok(left);
            }
            // An invalidated tagged entry: absent, as for `get`.
            Ok(TimeToLive::Missing)
        });
        self.apply_fail_open(result, || TimeToLive::Missing)
    }

    /// Makes `key` never expire; true when the key was present. [`Cache::touch`] with
    /// [`Expiry::Never`].
    pub fn persist<'k>(&self, key: impl Into<Key<'k>>) -> Result<bool> {
        self.touch(key, Expiry::Never)
    }

    /// Makes `key` expire at `when`; true when the key was present. A `when` that is not in
    /// the future removes the key (Redis' `EXPIREAT`).
    pub fn expire_at<'k>(&self, key: impl Into<Key<'k>>, when: SystemTime) -> Result<bool> {
        self.touch(key, expiry_at(when))
    }

    /// Stores `value` only if `key` is present; true when it stored (django-redis'
    /// `set(..., xx=True)`, Redis' `SET XX`, memcached's `replace`). Atomic.
    ///
    /// With [`Expiry::Expired`] nothing is stored: the key is removed and the answer is
    /// whether it was present, as django-redis does.
    pub fn replace<'k>(
        &self,
        key: impl Into<Key<'k>>,
        value: &[u8],
        expiry: Expiry,
    ) -> Result<bool> {
        self.check_value(value)?;
        let result = self.with_key(key.into(), |k| match self.resolve_expiry(expiry) {
            Ttl::Expired => self.inner.backend.delete(k),
            ttl => ready(self.replace_live(
                Via::Blocking,
                k,
                &self.seal_value(k, value),
                ttl.as_option(),
            )),
        });
        self.answer_add(result)
    }

    /// Adds `delta` to the integer under `key`, creating a missing key at `delta` (from 0,
    /// never expiring) instead of failing: django-redis' `incr(..., ignore_key_check=True)`.
    ///
    /// A separate method rather than a flag on [`Cache::incr`]: `incr(key, 1, true)` does
    /// not say what the `true` means. Atomic on every backend: a missing key is created with
    /// `add`, and a caller that loses that race increments the winner's value.
    ///
    /// ```
    /// let cache = polycache::Cache::open("memory://")?;
    /// assert_eq!(cache.incr_or_create("hits", 5)?, 5);
    /// assert_eq!(cache.incr_or_create("hits", 1)?, 6);
    /// # Ok::<(), polycache::Error>(())
    /// ```
    pub fn incr_or_create<'k>(&self, key: impl Into<Key<'k>>, delta: i64) -> Result<i64> {
        let key = key.into();
        let result = self.with_key(key, |k| {
            let initial = delta.to_string();
            for _ in 0..CREATE_ATTEMPTS {
                match ready(self.incr_live(Via::Blocking, k, delta)) {
                    Err(e) if e.is_not_found() => {}
                    done => return done,
                }
                if self.inner.backend.add(k, initial.as_bytes(), None)? {
                    return Ok(delta);
                }
            }
            Err(lost_race())
        });
        self.answer_incr(key, result)
    }

    /// [`Cache::ttl`], awaitable.
    pub fn ttl_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
    ) -> impl std::future::Future<Output = Result<TimeToLive>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            let Some(backend) = self.awaited() else {
                return self.ttl(key);
            };
            let full = self.make_key(key)?;
            let result = match backend.ttl(&full).await {
                Ok(TimeToLive::Missing) => Ok(TimeToLive::Missing),
                Ok(left) => match self.presence_async(backend, &full).await {
                    Ok(p) if p.is_present() => Ok(left),
                    Ok(_) => Ok(TimeToLive::Missing),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            self.apply_fail_open(result, || TimeToLive::Missing)
        })
    }

    /// [`Cache::persist`], awaitable.
    pub fn persist_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
    ) -> impl std::future::Future<Output = Result<bool>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move { self.touch_async(key, Expiry::Never).await })
    }

    /// [`Cache::expire_at`], awaitable.
    pub fn expire_at_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
        when: SystemTime,
    ) -> impl std::future::Future<Output = Result<bool>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move { self.touch_async(key, expiry_at(when)).await })
    }

    /// [`Cache::replace`], awaitable.
    pub fn replace_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
        value: &'a [u8],
        expiry: Expiry,
    ) -> impl std::future::Future<Output = Result<bool>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            let Some(backend) = self.awaited() else {
                return self.replace(key, value, expiry);
            };
            self.check_value(value)?;
            let full = self.make_key(key)?;
            let result = match self.resolve_expiry(expiry) {
                Ttl::Expired => backend.delete(&full).await,
                ttl => {
                    let sealed = self.seal_value(&full, value);
                    self.replace_live(Via::Awaited(backend), &full, &sealed, ttl.as_option())
                        .await
                }
            };
            self.answer_add(result)
        })
    }

    /// [`Cache::incr_or_create`], awaitable.
    pub fn incr_or_create_async<'a, 'k>(
        &'a self,
        key: impl Into<Key<'k>>,
        delta: i64,
    ) -> impl std::future::Future<Output = Result<i64>> + Captures<(&'a (), &'k ())> {
        in_callers_context(async move {
            let Some(backend) = self.awaited() else {
                return self.incr_or_create(key, delta);
            };
            let key = key.into();
            let result = match self.make_key(key) {
                Ok(full) => {
                    let initial = delta.to_string();
                    let mut result = Err(lost_race());
                    for _ in 0..CREATE_ATTEMPTS {
                        match self.incr_live(Via::Awaited(backend), &full, delta).await {
                            Err(e) if e.is_not_found() => {}
                            done => {
                                result = done;
                                break;
                            }
                        }
                        match backend.add(&full, initial.as_bytes(), None).await {
                            Ok(true) => {
                                result = Ok(delta);
                                break;
                            }
                            Ok(false) => {}
                            Err(e) => {
                                result = Err(e);
                                break;
                            }
                        }
                    }
                    result
                }
                Err(e) => Err(e),
            };
            self.answer_incr(key, result)
        })
    }
}
