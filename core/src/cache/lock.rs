//! Locks named in a cache, with redis-py's semantics, on every backend that can hold them.
//!
//! A lock is one entry of the cache: its full key (prefix and version applied, as
//! django-redis makes it) holds the owner's token. Acquiring is an `add` with the lock's
//! timeout (`SET NX PX` on Redis); releasing is the backend's atomic `delete_if_equals`;
//! extending and reacquiring are its atomic `extend_if_equals`. A holder that dies leaves
//! the entry to lapse after the timeout; a lock without a timeout never lapses. The token
//! is stored as given (never signed or compressed), and locks never fail open: an
//! unreachable backend is an error, not a lock that seems held.

use super::{Cache, Key};
use crate::error::{Error, ErrorKind, Result};
use std::fmt;
use std::time::{Duration, Instant};

/// How a [`Lock`] lapses and how [`Lock::acquire`] waits: redis-py's `Lock` arguments.
///
/// ```
/// use polycache::LockOptions;
/// use std::time::Duration;
/// let o = LockOptions::default().timeout(Some(Duration::from_secs(10)));
/// assert_eq!(o.sleep, Duration::from_millis(100));
/// assert!(o.blocking);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockOptions {
    /// How long the lock lives once acquired; `None`: until it is released.
    pub timeout: Option<Duration>,
    /// How long a blocking acquire waits between tries.
    pub sleep: Duration,
    /// Whether an acquire waits for a held lock (else it answers at once).
    pub blocking: bool,
    /// The longest a blocking acquire keeps trying; `None`: for ever.
    pub blocking_timeout: Option<Duration>,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            timeout: None,
            sleep: Duration::from_millis(100),
            blocking: true,
            blocking_timeout: None,
        }
    }
}

impl LockOptions {
    /// Sets [`LockOptions::timeout`].
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }
    /// Sets [`LockOptions::sleep`].
    pub fn sleep(mut self, sleep: Duration) -> Self {
        self.sleep = sleep;
        self
    }
    /// Sets [`LockOptions::blocking`].
    pub fn blocking(mut self, blocking: bool) -> Self {
        self.blocking = blocking;
        self
    }
    /// Sets [`LockOptions::blocking_timeout`].
    pub fn blocking_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.blocking_timeout = timeout;
        self
    }
}

/// A lock named in a cache, shared by every thread, process and machine that uses the
/// same store: redis-py's `Lock` on any backend.
///
/// The `*_token` methods take the owner's token explicitly (what bindings keep per thread);
/// [`Lock::acquire`] makes a random token and returns a [`LockGuard`] that holds it.
/// `Lock` is `Send + Sync` and cheap to clone (it shares the cache). Acquire, release,
/// `locked` and `owned_by` work on every backend; extend and reacquire need the backend's
/// [`crate::Backend::extend_if_equals`] (an `Unsupported` error where it has none).
///
/// ```
/// use polycache::{Cache, LockOptions};
/// use std::time::Duration;
/// let cache = Cache::open("memory://")?;
/// let lock = cache.lock("job", LockOptions::default().timeout(Some(Duration::from_secs(5))))?;
/// let guard = lock.acquire()?.expect("a blocking acquire waits until it holds the lock");
/// assert!(lock.locked()?);
/// assert!(!lock.try_acquire_token(b"someone else")?);
/// guard.extend(Duration::from_secs(5), false)?;
/// guard.release()?;
/// assert!(!lock.locked()?);
/// # Ok::<(), polycache::Error>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    cache: Cache,
    key: Box<[u8]>,
    name: String,
    options: LockOptions,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// The lock `name` in this cache (its key made as every key is: prefix, version).
    ///
    /// Fails with a configuration error for a zero timeout (use `None` for a lock that never
    /// lapses) and with the key's error for a key the cache cannot use.
    pub fn lock<'k>(&self, name: impl Into<Key<'k>>, options: LockOptions) -> Result<Lock> {
        if options.timeout == Some(Duration::ZERO) {
            return Err(Error::config(
                "a lock's timeout must be positive, or none for a lock that never lapses",
            ));
        }
        let name = name.into();
        let shown = name.name().to_owned();
        let key = self.make_key(name)?.into_boxed_slice();
        Ok(Lock {
            cache: self.clone(),
            key,
            name: shown,
            options,
        })
    }
}

fn not_owned(name: &str, what: &str) -> Error {
    Error::new(
        ErrorKind::LockNotOwned,
        format!("cannot {what} the lock {name:?}: it is no longer owned by this token"),
    )
}

fn no_timeout(name: &str, what: &str) -> Error {
    Error::new(
        ErrorKind::Lock,
        format!("cannot {what} the lock {name:?}: it has no timeout"),
    )
}

/// When a blocking acquire gives up: `None` waits for ever.
fn deadline(options: &LockOptions) -> Option<Instant> {
    options
        .blocking_timeout
        .and_then(|t| Instant::now().checked_add(t))
}

/// Whether an acquire that just failed tries again after `options.sleep` (redis-py: not
/// when the next try would come after the deadline).
fn tries_again(options: &LockOptions, stop: Option<Instant>) -> bool {
    if !options.blocking {
        return false;
    }
    match (stop, Instant::now().checked_add(options.sleep)) {
        (None, _) => true,
        (Some(stop), Some(next)) => next <= stop,
        (Some(_), None) => false,
    }
}

impl Lock {
    /// A compare-and-act step's answer: done, or refused because the token does not own
    /// the lock (errors counted as every backend error).
    fn owned_step(&self, step: Result<bool>, what: &str) -> Result<()> {
        match self.cache.track(step)? {
            true => Ok(()),
            false => Err(not_owned(&self.name, what)),
        }
    }

    /// The name the lock was opened with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full key the lock's entry is stored under.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The options the lock was opened with.
    pub fn options(&self) -> &LockOptions {
        &self.options
    }

    /// A new random owner token.
    pub fn new_token() -> String {
        crate::flight::random_token()
    }

    /// Takes the lock with a new token, waiting as the lock's options say; `None` when a
    /// non-blocking acquire found it held or the blocking timeout passed.
    pub fn acquire(&self) -> Result<Option<LockGuard>> {
        let token = Lock::new_token().into_bytes();
        Ok(self
            .acquire_token(&token, &self.options)?
            .then(|| self.guard(token)))
    }

    /// [`Lock::acquire`], awaitable: waits between tries without blocking the thread.
    pub async fn acquire_async(&self) -> Result<Option<LockGuard>> {
        let token = Lock::new_token().into_bytes();
        Ok(self
            .acquire_token_async(&token, &self.options)
            .await?
            .then(|| self.guard(token)))
    }

    fn guard(&self, token: Vec<u8>) -> LockGuard {
        LockGuard {
            lock: self.clone(),
            token,
            held: true,
        }
    }

    /// Tries once to take the lock for `token`; true when it did.
    pub fn try_acquire_token(&self, token: &[u8]) -> Result<bool> {
        let backend = &self.cache.inner.backend;
        self.cache
            .track(backend.add(&self.key, token, self.options.timeout))
    }

    /// [`Lock::try_acquire_token`], awaitable.
    pub async fn try_acquire_token_async(&self, token: &[u8]) -> Result<bool> {
        let Some(backend) = self.cache.inner.awaited.as_deref() else {
            return self.try_acquire_token(token);
        };
        let added = backend.add(&self.key, token, self.options.timeout).await;
        self.cache.track(added)
    }

    /// Takes the lock for `token`, trying and sleeping as `wait`'s `blocking`,
    /// `blocking_timeout` and `sleep` say (its `timeout` is ignored: the lock's own
    /// applies); true once held, false when it gave up.
    pub fn acquire_token(&self, token: &[u8], wait: &LockOptions) -> Result<bool> {
        let stop = deadline(wait);
        loop {
            if self.try_acquire_token(token)? {
                return Ok(true);
            }
            if !tries_again(wait, stop) {
                return Ok(false);
            }
            std::thread::sleep(wait.sleep);
        }
    }

    /// [`Lock::acquire_token`], awaitable: sleeps between tries on the runtime's timer, so
    /// a blocking acquire needs a tokio context with timers when it waits.
    pub async fn acquire_token_async(&self, token: &[u8], wait: &LockOptions) -> Result<bool> {
        let stop = deadline(wait);
        loop {
            if self.try_acquire_token_async(token).await? {
                return Ok(true);
            }
            if !tries_again(wait, stop) {
                return Ok(false);
            }
            tokio::time::sleep(wait.sleep).await;
        }
    }

    /// Releases the lock held by `token`; a [`ErrorKind::LockNotOwned`] error, with the lock
    /// untouched, when `token` does not hold it (it lapsed, or another owner took it).
    pub fn release_token(&self, token: &[u8]) -> Result<()> {
        let backend = &self.cache.inner.backend;
        self.owned_step(backend.delete_if_equals(&self.key, token), "release")
    }

    /// [`Lock::release_token`], awaitable.
    pub async fn release_token_async(&self, token: &[u8]) -> Result<()> {
        let Some(backend) = self.cache.inner.awaited.as_deref() else {
            return self.release_token(token);
        };
        let deleted = backend.delete_if_equals(&self.key, token).await;
        self.owned_step(deleted, "release")
    }

    /// The lock's timeout: what extend and reacquire need before they reach the backend.
    fn needs_timeout(&self, what: &str) -> Result<Duration> {
        self.options
            .timeout
            .ok_or_else(|| no_timeout(&self.name, what))
    }

    /// Adds `additional` to the remaining lifetime of the lock held by `token`, or with
    /// `replace_ttl` makes it the remaining lifetime (redis-py's `extend`).
    ///
    /// A lock without a timeout cannot be extended ([`ErrorKind::Lock`]); one that `token`
    /// does not hold is left untouched ([`ErrorKind::LockNotOwned`]).
    pub fn extend_token(
        &self,
        token: &[u8],
        additional: Duration,
        replace_ttl: bool,
    ) -> Result<()> {
        self.needs_timeout("extend")?;
        self.extend_by(token, additional, replace_ttl, "extend")
    }

    /// [`Lock::extend_token`], awaitable.
    pub async fn extend_token_async(
        &self,
        token: &[u8],
        additional: Duration,
        replace_ttl: bool,
    ) -> Result<()> {
        self.needs_timeout("extend")?;
        self.extend_by_async(token, additional, replace_ttl, "extend")
            .await
    }

    /// Resets the remaining lifetime of the lock held by `token` to the lock's timeout
    /// (redis-py's `reacquire`); errors as [`Lock::extend_token`].
    pub fn reacquire_token(&self, token: &[u8]) -> Result<()> {
        let timeout = self.needs_timeout("reacquire")?;
        self.extend_by(token, timeout, true, "reacquire")
    }

    /// [`Lock::reacquire_token`], awaitable.
    pub async fn reacquire_token_async(&self, token: &[u8]) -> Result<()> {
        let timeout = self.needs_timeout("reacquire")?;
        self.extend_by_async(token, timeout, true, "reacquire")
            .await
    }

    fn extend_by(&self, token: &[u8], ttl: Duration, replace: bool, what: &str) -> Result<()> {
        let backend = &self.cache.inner.backend;
        let done = backend.extend_if_equals(&self.key, token, ttl, replace);
        self.owned_step(done, what)
    }

    async fn extend_by_async(
        &self,
        token: &[u8],
        ttl: Duration,
        replace: bool,
        what: &str,
    ) -> Result<()> {
        let Some(backend) = self.cache.inner.awaited.as_deref() else {
            return self.extend_by(token, ttl, replace, what);
        };
        let done = backend
            .extend_if_equals(&self.key, token, ttl, replace)
            .await;
        self.owned_step(done, what)
    }

    /// True when anyone holds the lock.
    pub fn locked(&self) -> Result<bool> {
        self.cache
            .track(self.cache.inner.backend.has_key(&self.key))
    }

    /// [`Lock::locked`], awaitable.
    pub async fn locked_async(&self) -> Result<bool> {
        let Some(backend) = self.cache.inner.awaited.as_deref() else {
            return self.locked();
        };
        let found = backend.has_key(&self.key).await;
        self.cache.track(found)
    }

    /// True when `token` holds the lock.
    pub fn owned_by(&self, token: &[u8]) -> Result<bool> {
        let found = self.cache.track(self.cache.inner.backend.get(&self.key))?;
        Ok(found.is_some_and(|v| &*v == token))
    }

    /// [`Lock::owned_by`], awaitable.
    pub async fn owned_by_async(&self, token: &[u8]) -> Result<bool> {
        let Some(backend) = self.cache.inner.awaited.as_deref() else {
            return self.owned_by(token);
        };
        let found = self.cache.track(backend.get(&self.key).await)?;
        Ok(found.is_some_and(|v| &*v == token))
    }
}

/// A held [`Lock`]: releases it when dropped.
///
/// Drop releases with the guard's token; a release that fails there (the backend is
/// unreachable, or the lock already lapsed and another owner holds it) is logged as a
/// warning and otherwise ignored: the entry then lapses after the lock's timeout, or, for
/// a lock without one, stays until it is deleted. Call [`LockGuard::release`] to see the
/// error. Dropped inside a tokio runtime on a backend that does I/O, the release runs on
/// polycache's runtime instead of blocking the thread. `LockGuard` is `Send + Sync`.
pub struct LockGuard {
    lock: Lock,
    token: Vec<u8>,
    held: bool,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("lock", &self.lock.name)
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    /// The lock this guard holds.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// The owner token this guard holds the lock with.
    pub fn token(&self) -> &[u8] {
        &self.token
    }

    /// Releases the lock; [`ErrorKind::LockNotOwned`] when it lapsed and someone else took it.
    pub fn release(mut self) -> Result<()> {
        self.held = false;
        self.lock.release_token(&self.token)
    }

    /// [`LockGuard::release`], awaitable.
    pub async fn release_async(mut self) -> Result<()> {
        self.held = false;
        self.lock.release_token_async(&self.token).await
    }

    /// [`Lock::extend_token`] with this guard's token.
    pub fn extend(&self, additional: Duration, replace_ttl: bool) -> Result<()> {
        self.lock.extend_token(&self.token, additional, replace_ttl)
    }

    /// [`Lock::extend_token_async`] with this guard's token.
    pub async fn extend_async(&self, additional: Duration, replace_ttl: bool) -> Result<()> {
        self.lock
            .extend_token_async(&self.token, additional, replace_ttl)
            .await
    }

    /// [`Lock::reacquire_token`] with this guard's token.
    pub fn reacquire(&self) -> Result<()> {
        self.lock.reacquire_token(&self.token)
    }

    /// [`Lock::reacquire_token_async`] with this guard's token.
    pub async fn reacquire_async(&self) -> Result<()> {
        self.lock.reacquire_token_async(&self.token).await
    }

    /// True while this guard's token still holds the lock.
    pub fn owned(&self) -> Result<bool> {
        self.lock.owned_by(&self.token)
    }

    /// [`LockGuard::owned`], awaitable.
    pub async fn owned_async(&self) -> Result<bool> {
        self.lock.owned_by_async(&self.token).await
    }
}

fn warn_release(name: &str, err: &Error) {
    log::warn!("polycache: releasing the lock {name:?} on drop failed: {err}");
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let (lock, token) = (self.lock.clone(), std::mem::take(&mut self.token));
        if crate::runtime::in_runtime() && !lock.cache.completes_inline() {
            // The task is spawned at once; its handle is not needed.
            drop(crate::runtime::spawn(async move {
                if let Err(e) = lock.release_token_async(&token).await {
                    warn_release(&lock.name, &e);
                }
            }));
        } else if let Err(e) = lock.release_token(&token) {
            warn_release(&lock.name, &e);
        }
    }
}
