//! `polycache._polycache._Lock`: the core's [`polycache::Lock`] with the owner's token passed
//! in by the caller. `polycache.Lock` (`_lock.py`) keeps the token per thread and adds
//! redis-py's checks, context managers and names; every backend call happens here, in the
//! core, sync or awaited.

use crate::awaitable;
use crate::errors::{self, ResultExt};
use crate::logbridge::detach;
use crate::ops::{Core, Deliver, How, Reply};
use polycache::{Lock, LockOptions, Result};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::future::Future;
use std::time::Duration;

/// A lock named in a cache; see `polycache.Lock`.
#[pyclass(frozen, module = "polycache._polycache", name = "_Lock")]
pub(crate) struct PyLock {
    lock: Lock,
    core: Core,
}

/// `seconds` as a duration: a finite number, at least zero (`what` names it in the error).
pub(crate) fn seconds(py: Python<'_>, what: &str, seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        errors::configuration(
            py,
            format!("{what} must be a finite number of seconds, at least 0, not {seconds}"),
        )
    })
}

/// Opens the lock `name` of `core`'s cache (`full`: `name` is a full key already made).
pub(crate) fn open(
    py: Python<'_>,
    core: &Core,
    name: &str,
    full: bool,
    version: Option<i64>,
    timeout: Option<f64>,
) -> PyResult<PyLock> {
    let timeout = match timeout {
        Some(t) if t <= 0.0 || t.is_nan() => {
            return Err(errors::configuration(
                py,
                format!("a lock's timeout must be a positive number of seconds or None, not {t}"),
            ))
        }
        Some(t) => Some(seconds(py, "a lock's timeout", t)?),
        None => None,
    };
    let key = if full {
        polycache::Key::full(name)
    } else {
        polycache::Key::new(name).maybe_version(version)
    };
    let options = LockOptions::default().timeout(timeout);
    let lock = core.cache.lock(key, options).py_err(py)?;
    Ok(PyLock {
        lock,
        core: Core {
            cache: core.cache.clone(),
            local: core.local,
            decoder: core.decoder,
        },
    })
}

impl PyLock {
    /// The answer of one lock operation: `sync` on this thread (in place on a local backend
    /// unless it may `wait`, else without the GIL), or `fut` awaited on polycache's runtime.
    fn answer<'py, Fut>(
        &self,
        py: Python<'py>,
        how: How,
        wait: bool,
        deliver: Deliver,
        sync: impl FnOnce(&Lock) -> Result<Reply> + Send,
        fut: impl FnOnce(Lock) -> Fut,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        Fut: Future<Output = Result<Reply>> + Send + 'static,
    {
        let decoder = self.core.decoder;
        let inline = self.core.local && !wait;
        match how {
            How::Sync if inline => deliver.convert(py, decoder, sync(&self.lock)),
            How::Sync => {
                let lock = &self.lock;
                deliver.convert(py, decoder, detach(py, move || sync(lock)))
            }
            How::Async if inline => {
                awaitable::ready(py, deliver.convert(py, decoder, sync(&self.lock)))
            }
            How::Async => awaitable::start_future(py, &self.core, fut(self.lock.clone()), deliver),
        }
    }

    fn do_acquire<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        token: Vec<u8>,
        blocking: bool,
        blocking_timeout: Option<f64>,
        sleep: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let mut wait = LockOptions::default()
            .blocking(blocking)
            .sleep(seconds(py, "sleep", sleep)?);
        if let Some(t) = blocking_timeout {
            wait = wait.blocking_timeout(Some(seconds(py, "blocking_timeout", t)?));
        }
        let sync_token = token.clone();
        slf.get().answer(
            py,
            how,
            blocking,
            Deliver::Flag,
            move |l| l.acquire_token(&sync_token, &wait).map(Reply::Flag),
            move |l| async move { l.acquire_token_async(&token, &wait).await.map(Reply::Flag) },
        )
    }

    fn do_release<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        token: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let sync_token = token.clone();
        slf.get().answer(
            slf.py(),
            how,
            false,
            Deliver::Nothing,
            move |l| l.release_token(&sync_token).map(|()| Reply::Done),
            move |l| async move { l.release_token_async(&token).await.map(|()| Reply::Done) },
        )
    }

    fn do_extend<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        token: Vec<u8>,
        additional: f64,
        replace_ttl: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let more = seconds(slf.py(), "additional_time", additional)?;
        let sync_token = token.clone();
        slf.get().answer(
            slf.py(),
            how,
            false,
            Deliver::Flag,
            move |l| {
                l.extend_token(&sync_token, more, replace_ttl)
                    .map(|()| Reply::Flag(true))
            },
            move |l| async move {
                l.extend_token_async(&token, more, replace_ttl)
                    .await
                    .map(|()| Reply::Flag(true))
            },
        )
    }

    fn do_reacquire<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        token: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let sync_token = token.clone();
        slf.get().answer(
            slf.py(),
            how,
            false,
            Deliver::Flag,
            move |l| l.reacquire_token(&sync_token).map(|()| Reply::Flag(true)),
            move |l| async move {
                l.reacquire_token_async(&token)
                    .await
                    .map(|()| Reply::Flag(true))
            },
        )
    }

    fn do_locked<'py>(slf: &Bound<'py, Self>, how: How) -> PyResult<Bound<'py, PyAny>> {
        slf.get().answer(
            slf.py(),
            how,
            false,
            Deliver::Flag,
            |l| l.locked().map(Reply::Flag),
            |l| async move { l.locked_async().await.map(Reply::Flag) },
        )
    }

    fn do_owned<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        token: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let sync_token = token.clone();
        slf.get().answer(
            slf.py(),
            how,
            false,
            Deliver::Flag,
            move |l| l.owned_by(&sync_token).map(Reply::Flag),
            move |l| async move { l.owned_by_async(&token).await.map(Reply::Flag) },
        )
    }
}

twins! {
    impl PyLock {
        /// Takes the lock for `token`; True once held, False when it gave up.
        twins acquire / aacquire <'py>(slf, how, token: Vec<u8>, blocking: bool, blocking_timeout: Option<f64>, sleep: f64)
            signature (token, blocking, blocking_timeout, sleep)
            { Self::do_acquire(slf, how, token, blocking, blocking_timeout, sleep) }
        /// Releases the lock `token` holds (`LockNotOwnedError` when it does not).
        twins release / arelease <'py>(slf, how, token: Vec<u8>)
            signature (token)
            { Self::do_release(slf, how, token) }
        /// Adds `additional` seconds to the lock `token` holds, or makes them its lifetime.
        twins extend / aextend <'py>(slf, how, token: Vec<u8>, additional: f64, replace_ttl: bool)
            signature (token, additional, replace_ttl)
            { Self::do_extend(slf, how, token, additional, replace_ttl) }
        /// Resets the lifetime of the lock `token` holds to the lock's timeout.
        twins reacquire / areacquire <'py>(slf, how, token: Vec<u8>)
            signature (token)
            { Self::do_reacquire(slf, how, token) }
        /// True when anyone holds the lock.
        twins locked / alocked <'py>(slf, how)
            signature ()
            { Self::do_locked(slf, how) }
        /// True when `token` holds the lock.
        twins owned / aowned <'py>(slf, how, token: Vec<u8>)
            signature (token)
            { Self::do_owned(slf, how, token) }
        @methods
    /// The full key the lock is stored under.
    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.lock.key())
    }

    /// The lock's timeout in seconds, or None.
    #[getter]
    fn timeout(&self) -> Option<f64> {
        self.lock.options().timeout.map(|t| t.as_secs_f64())
    }
}
}
