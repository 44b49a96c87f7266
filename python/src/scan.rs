//! `iter_keys`: a scan of the caller's keys, streamed a page at a time.
//!
//! `KeyScan` is what `iter_keys` returns on both `polycache.Cache` and the Django face: an
//! iterator of `str` that reads `itersize` keys from the backend at a time (without the GIL
//! unless the backend answers in memory), and `anext_page()`, an awaitable page for
//! `aiter_keys` (`polycache/_scan.py` turns it into an async iterator). Both read one scan
//! of the core's async side ([`AsyncKeyIter`]): an awaited page is native I/O on Redis and
//! PostgreSQL, in place on `memory://`, and on the blocking pool for `file://` and
//! `sqlite://`.

use crate::awaitable;
use crate::errors::ResultExt;
use crate::logbridge::detach;
use crate::ops::{Core, Deliver, Reply};
use polycache::{AsyncKeyIter, Cache, Error, ErrorKind, DEFAULT_ITERSIZE};
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// Where a scan stands.
enum Phase {
    /// Ready for its next page.
    Idle(AsyncKeyIter),
    /// A page is being read by an awaited `anext_page`.
    Reading,
    /// Over (or ended by an error).
    Done,
}

type Shared = Arc<Mutex<Phase>>;

fn lock(phase: &Shared) -> MutexGuard<'_, Phase> {
    phase.lock().unwrap_or_else(|e| e.into_inner())
}

/// A key scan; see the module documentation. Not meant to be shared between threads while
/// it runs (each page is read under a lock, so sharing is safe but interleaves pages).
#[pyclass(frozen, module = "polycache._polycache", name = "KeyScan")]
pub(crate) struct KeyScan {
    phase: Shared,
    /// Keys of the last page that `__next__` has not handed out yet.
    buffer: Mutex<VecDeque<String>>,
    core: Core,
}

/// `itersize` as Python gives it: `None` is the default, anything below 1 the core refuses.
pub(crate) fn itersize(n: Option<i64>) -> usize {
    match n {
        None => DEFAULT_ITERSIZE,
        Some(n) => usize::try_from(n).unwrap_or(0),
    }
}

/// Starts a scan of `cache` for `pattern` at `version`.
pub(crate) fn start(
    py: Python<'_>,
    core: &Core,
    pattern: &str,
    version: Option<i64>,
    itersize: usize,
) -> PyResult<KeyScan> {
    let cache: &Cache = &core.cache;
    // The backend's async scan: `anext_page` awaits its native I/O (Redis, PostgreSQL),
    // `__next__` reads a page on this thread.
    let scan = if core.local {
        AsyncKeyIter::new(cache, pattern, version, itersize)
    } else {
        detach(py, || AsyncKeyIter::new(cache, pattern, version, itersize))
    }
    .py_err(py)?;
    Ok(KeyScan {
        phase: Arc::new(Mutex::new(Phase::Idle(scan))),
        buffer: Mutex::new(VecDeque::new()),
        core: Core {
            cache: cache.clone(),
            local: core.local,
            decoder: core.decoder,
        },
    })
}

fn busy() -> Error {
    Error::new(
        ErrorKind::Backend,
        "a page of this key scan is still being read by an awaited anext_page()",
    )
}

impl KeyScan {
    /// The next page, read on this thread.
    fn page(&self, py: Python<'_>) -> PyResult<Option<Vec<String>>> {
        let mut phase = lock(&self.phase);
        let iter = match &mut *phase {
            Phase::Idle(iter) => iter,
            Phase::Reading => return Err(busy()).py_err(py),
            Phase::Done => return Ok(None),
        };
        let page = if self.core.local {
            iter.next_page_blocking()
        } else {
            detach(py, || iter.next_page_blocking())
        };
        if !matches!(page, Ok(Some(_))) {
            *phase = Phase::Done;
        }
        page.py_err(py)
    }
}

#[pymethods]
impl KeyScan {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        loop {
            if let Some(key) = self
                .buffer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                return Ok(Some(key));
            }
            match self.page(py)? {
                Some(keys) => self
                    .buffer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(keys),
                None => return Ok(None),
            }
        }
    }

    /// The next page of keys (a list, possibly empty), or None when the scan is over.
    fn next_page<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.page(py)? {
            Some(keys) => Ok(PyList::new(py, keys)?.into_any()),
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// `next_page`, awaitable: the page is read on polycache's runtime (see the module
    /// documentation).
    fn anext_page<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if self.core.local {
            return awaitable::ready(py, self.next_page(py));
        }
        let mut iter = match std::mem::replace(&mut *lock(&self.phase), Phase::Reading) {
            Phase::Idle(iter) => iter,
            other => {
                let answer = match other {
                    Phase::Reading => Err(busy()).py_err(py),
                    _ => Ok(py.None().into_bound(py)),
                };
                *lock(&self.phase) = other;
                return awaitable::ready(py, answer);
            }
        };
        let phase = Arc::clone(&self.phase);
        let work = async move {
            let page = iter.next_page().await;
            *lock(&phase) = match page {
                Ok(Some(_)) => Phase::Idle(iter),
                _ => Phase::Done,
            };
            page.map(|p| p.map_or(Reply::Done, Reply::Keys))
        };
        awaitable::start_future(py, &self.core, work, Deliver::Keys)
    }
}

/// How many calls polycache's blocking pool has run in this process
/// (`polycache::runtime::blocking_calls`): for tests that show an awaited operation on a
/// native backend stayed off the pool.
#[pyfunction]
pub(crate) fn _blocking_calls() -> u64 {
    polycache::runtime::blocking_calls()
}
