//! `JobRunner`: the native half of `polycache.Job`, over the core's [`polycache::Job`].
//!
//! A job's `fetch` is Python code that the core calls on the caller's thread (synchronous
//! fetches) or on a refresh-pool thread (background refreshes); either way it takes the GIL
//! to run, under [`Active`]: once interpreter shutdown begins ([`crate::finalize`]) pool
//! threads never enter Python again (a queued refresh is dropped).

use crate::awaitable;
use crate::cache::PyCache;
use crate::errors::ResultExt;
use crate::finalize::Active;
use crate::logbridge::detach;
use crate::ops::{Deliver, OnLoop, Reply};
use crate::serializer::{self, Format, Serialized};
use polycache::{AsyncFetch, BoxFuture, Error, ErrorKind, Fetch, Fetched, Job, JobOptions, Key};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn on_pool_thread() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("polycache-refresh"))
}

/// One call of a Python job, as the core's [`Fetch`]: `job._polycache_fetch(args, kwargs)`.
struct PyFetch {
    job: Py<PyAny>,
    args: Py<PyTuple>,
    kwargs: Option<Py<PyDict>>,
    key: String,
    /// How the fetched value becomes bytes (the cache's serializer).
    format: Format,
    /// The exception a synchronous fetch raised, for the caller to re-raise.
    raised: Arc<Mutex<Option<PyErr>>>,
}

impl PyFetch {
    /// Keeps the exception a fetch raised: a synchronous caller re-raises it; a background
    /// refresh has no caller, so its traceback goes to the `polycache.jobs` logger at DEBUG
    /// (the core logs the failure itself, as a warning that names the exception).
    fn report(&self, py: Python<'_>, err: PyErr) {
        // Nobody holds `raised` but this fetch: a background refresh (of an awaited call).
        if on_pool_thread() || Arc::strong_count(&self.raised) == 1 {
            let logged = py.import("logging").and_then(|logging| {
                let logger = logging.call_method1("getLogger", ("polycache.jobs",))?;
                let kwargs = PyDict::new(py);
                kwargs.set_item("exc_info", err.value(py))?;
                logger.call_method(
                    "debug",
                    (
                        "polycache: the traceback of the failed refresh of %r",
                        &self.key,
                    ),
                    Some(&kwargs),
                )
            });
            if let Err(e) = logged {
                e.write_unraisable(py, None);
            }
        } else {
            *self.raised.lock().unwrap_or_else(|e| e.into_inner()) = Some(err);
        }
    }
}

impl PyFetch {
    /// The core's [`Fetched`] of what `_polycache_fetch` returned: `(value, fresh_for)`.
    fn fetched(&self, returned: &Bound<'_, PyAny>) -> PyResult<Fetched> {
        let (value, fresh_for): (Bound<'_, PyAny>, Option<f64>) = returned.extract()?;
        let mut encoded = Serialized::new(self.format);
        encoded.encode(&value)?;
        let fresh_for = fresh_for
            .map(|s| Duration::from_secs_f64(if s.is_finite() { s.max(0.0) } else { 0.0 }));
        Ok(Fetched::new(encoded.as_bytes().to_vec(), fresh_for))
    }

    /// The core's error for a fetch that raised `err` (kept or logged, see `report`).
    fn failed(&self, py: Python<'_>, err: PyErr) -> Error {
        let error = Error::new(ErrorKind::Backend, format!("the job's fetch raised {err}"));
        self.report(py, err);
        error
    }
}

impl Fetch for PyFetch {
    fn fetch(&self) -> polycache::Result<Fetched> {
        let Some(_active) = Active::enter() else {
            return Err(Error::new(
                ErrorKind::Backend,
                "Python is shutting down: the fetch was skipped",
            ));
        };
        Python::attach(|py| {
            let fetched = self
                .job
                .bind(py)
                .call_method1(
                    pyo3::intern!(py, "_polycache_fetch"),
                    (self.args.bind(py), self.kwargs.as_ref().map(|k| k.bind(py))),
                )
                .and_then(|r| self.fetched(&r));
            fetched.map_err(|e| self.failed(py, e))
        })
    }

    fn should_fetch_synchronously(&self, stale_for: Duration) -> bool {
        let Some(_active) = Active::enter() else {
            return false;
        };
        Python::attach(|py| {
            let answer = self
                .job
                .bind(py)
                .call_method1(
                    pyo3::intern!(py, "_polycache_fetch_stale_now"),
                    (
                        stale_for.as_secs_f64(),
                        self.args.bind(py),
                        self.kwargs.as_ref().map(|k| k.bind(py)),
                    ),
                )
                .and_then(|r| r.is_truthy());
            answer.unwrap_or_else(|e| {
                e.write_unraisable(py, None);
                false
            })
        })
    }
}

fn seconds(name: &str, secs: Option<f64>) -> PyResult<Option<Duration>> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(PyValueError::new_err(format!(
            "{name} must be a number of seconds >= 0 or None, not {s}"
        ))),
    }
}

/// The native runner of a `polycache.Job` on one cache.
#[pyclass(frozen, module = "polycache._polycache", name = "JobRunner")]
pub(crate) struct JobRunner {
    cache: Py<PyCache>,
    job: Job,
}

impl JobRunner {
    fn fetch(
        &self,
        key: &str,
        job: Py<PyAny>,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
    ) -> (PyFetch, Arc<Mutex<Option<PyErr>>>) {
        let raised = Arc::new(Mutex::new(None));
        let fetch = PyFetch {
            job,
            args,
            kwargs,
            key: key.to_owned(),
            format: self.cache.get().core.decoder.format,
            raised: raised.clone(),
        };
        (fetch, raised)
    }
}

/// Raises the exception a synchronous fetch raised, else the core error.
fn raise(py: Python<'_>, raised: &Mutex<Option<PyErr>>, err: Error) -> PyErr {
    raised
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_else(|| crate::errors::to_py(py, err))
}

#[pymethods]
impl JobRunner {
    #[new]
    #[pyo3(signature = (cache, *, lifetime, ttl, fetch_on_miss, max_stale, tags = None))]
    fn new(
        cache: Py<PyCache>,
        lifetime: f64,
        ttl: Option<f64>,
        fetch_on_miss: bool,
        max_stale: Option<f64>,
        tags: Option<crate::args::TagsArg>,
    ) -> PyResult<Self> {
        let options = JobOptions::default()
            .lifetime(seconds("lifetime", Some(lifetime))?.unwrap_or_default())
            .ttl(seconds("ttl", ttl)?)
            .fetch_on_miss(fetch_on_miss)
            .max_stale(seconds("max_stale", max_stale)?)
            .tags(tags.map(|t| t.0).unwrap_or_default());
        let job = Job::new(cache.get().core.cache.clone(), options);
        Ok(JobRunner { cache, job })
    }

    /// `(value, status, fetched)` for `key`; status is `"hit"`, `"stale"` or `"miss"`.
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        job: Py<PyAny>,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
    ) -> PyResult<(Bound<'py, PyAny>, &'static str, bool)> {
        let (fetch, raised) = self.fetch(key, job, args, kwargs);
        let result = detach(py, || self.job.get(key, fetch)).map_err(|e| raise(py, &raised, e))?;
        let value = match &result.value {
            Some(v) => serializer::decode(py, self.cache.get().core.decoder.format, v)?,
            None => py.None().into_bound(py),
        };
        Ok((value, result.status.as_str(), result.fetched))
    }

    /// Fetches `key` now, stores and returns the value.
    fn refresh<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        job: Py<PyAny>,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (fetch, raised) = self.fetch(key, job, args, kwargs);
        let value =
            detach(py, || self.job.refresh(key, fetch)).map_err(|e| raise(py, &raised, e))?;
        serializer::decode(py, self.cache.get().core.decoder.format, &value)
    }

    /// Marks `key` stale and schedules a background refresh; True when it was present.
    fn invalidate(
        &self,
        py: Python<'_>,
        key: &str,
        job: Py<PyAny>,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
    ) -> PyResult<bool> {
        let (fetch, _) = self.fetch(key, job, args, kwargs);
        detach(py, || self.job.invalidate(key, fetch)).py_err(py)
    }

    /// Removes `key`; True when it was present.
    fn delete(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        detach(py, || self.job.delete(key)).py_err(py)
    }

    /// Stores `value` under `key`, fresh for `fresh_for` seconds (None: the lifetime).
    #[pyo3(signature = (key, value, fresh_for = None))]
    fn set(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        fresh_for: Option<f64>,
    ) -> PyResult<bool> {
        let mut encoded = Serialized::new(self.cache.get().core.decoder.format);
        encoded.encode(value)?;
        let fresh_for = seconds("fresh_for", fresh_for)?;
        let bytes = encoded.as_bytes().to_vec();
        detach(py, || self.job.set(Key::new(key), &bytes, fresh_for)).py_err(py)
    }

    /// True while a refresh of `key` runs in this process.
    fn is_refreshing(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        self.job.is_refreshing(key).py_err(py)
    }

    /// The cache the job's values live in.
    #[getter]
    fn cache(&self, py: Python<'_>) -> Py<PyCache> {
        self.cache.clone_ref(py)
    }

    /// `get`, awaitable: answers `(value, status, fetched)`. `event_loop` is the running
    /// loop when the job's `fetch` is `async def` (it is awaited there), else None;
    /// `stale_hook` says whether the job overrides its stale hook.
    #[pyo3(signature = (key, job, args, kwargs, event_loop, stale_hook))]
    #[allow(clippy::too_many_arguments)]
    fn aget<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        job: Py<PyAny>,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
        event_loop: Option<Bound<'py, PyAny>>,
        stale_hook: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (fetch, raised) =
            self.async_fetch(key, job, args, kwargs, event_loop.as_ref(), stale_hook)?;
        let (runner, key) = (self.job.clone(), key.to_owned());
        let work = async move {
            match runner.get_async(key.as_str(), fetch).await {
                Ok(r) => Ok(Reply::Job(r.value, r.status.as_str(), r.fetched)),
                Err(e) => raised_or(&raised, e),
            }
        };
        awaitable::start_future(py, self.core(), work, Deliver::Job)
    }

    /// `refresh`, awaitable.
    #[pyo3(signature = (key, job, args, kwargs, event_loop))]
    fn arefresh<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        job: Py<PyAny>,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
        event_loop: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (fetch, raised) =
            self.async_fetch(key, job, args, kwargs, event_loop.as_ref(), false)?;
        let (runner, key) = (self.job.clone(), key.to_owned());
        let work = async move {
            match runner.refresh_async(key.as_str(), fetch).await {
                Ok(v) => Ok(Reply::Value(Some(v))),
                Err(e) => raised_or(&raised, e),
            }
        };
        awaitable::start_future(py, self.core(), work, Deliver::Loaded)
    }

    /// `invalidate`, awaitable: the refresh it schedules runs as `arefresh`'s fetch does.
    #[pyo3(signature = (key, job, args, kwargs, event_loop))]
    fn ainvalidate<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        job: Py<PyAny>,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
        event_loop: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (fetch, _) = self.async_fetch(key, job, args, kwargs, event_loop.as_ref(), false)?;
        let (runner, key) = (self.job.clone(), key.to_owned());
        let work = async move {
            runner
                .invalidate_async(key.as_str(), fetch)
                .await
                .map(Reply::Flag)
        };
        awaitable::start_future(py, self.core(), work, Deliver::Flag)
    }

    /// `delete`, awaitable.
    fn adelete<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        let (runner, key) = (self.job.clone(), key.to_owned());
        let work = async move { runner.delete_async(key.as_str()).await.map(Reply::Flag) };
        awaitable::start_future(py, self.core(), work, Deliver::Flag)
    }

    /// `set`, awaitable.
    #[pyo3(signature = (key, value, fresh_for = None))]
    fn aset<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        value: &Bound<'py, PyAny>,
        fresh_for: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut encoded = Serialized::new(self.core().decoder.format);
        encoded.encode(value)?;
        let fresh_for = seconds("fresh_for", fresh_for)?;
        let (runner, key, bytes) = (
            self.job.clone(),
            key.to_owned(),
            encoded.as_bytes().to_vec(),
        );
        let work = async move {
            runner
                .set_async(Key::new(&key), &bytes, fresh_for)
                .await
                .map(Reply::Flag)
        };
        awaitable::start_future(py, self.core(), work, Deliver::Flag)
    }
}

/// Runs Python code on the caller's event loop from polycache's runtime ([`awaitable::on_loop`]).
type ToLoop = Arc<dyn Fn(OnLoop) -> bool + Send + Sync>;

/// A job's fetch when the call is awaited: an `async def fetch` is started as a task of the
/// caller's event loop (through the loop's completion queue, so no runtime thread takes the
/// GIL); a synchronous one runs on polycache's blocking pool, since Python code may block and
/// needs a thread of its own. The core's reads and writes around it are its native async ones.
struct PyAsyncFetch {
    inner: Arc<PyFetch>,
    /// The caller's loop, for an `async def fetch`; `None` for a synchronous fetch.
    to_loop: Option<ToLoop>,
    /// The job overrides the stale hook: asking it takes the GIL, else the answer is False.
    stale_hook: bool,
}

/// Hands the result of an `async def fetch` (its task's done callback, called on the event
/// loop's thread) to the runtime task that awaits it.
#[pyclass(frozen, module = "polycache._polycache", name = "_FetchDone")]
struct FetchDone {
    fetch: Arc<PyFetch>,
    answer: Mutex<Option<tokio::sync::oneshot::Sender<polycache::Result<Fetched>>>>,
}

impl FetchDone {
    fn send(&self, fetched: polycache::Result<Fetched>) {
        if let Some(tx) = self.answer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(fetched);
        }
    }
}

#[pymethods]
impl FetchDone {
    fn __call__(&self, py: Python<'_>, done: &Bound<'_, PyAny>) {
        let fetched = done
            .call_method0(pyo3::intern!(py, "result"))
            .and_then(|r| self.fetch.fetched(&r))
            .map_err(|e| self.fetch.failed(py, e));
        self.send(fetched);
    }
}

/// On the loop's thread: starts `job._polycache_afetch(args, kwargs)` as a task whose result
/// goes to `done`.
fn start_fetch_task(py: Python<'_>, done: FetchDone) {
    let fetch = Arc::clone(&done.fetch);
    let task = fetch
        .job
        .bind(py)
        .call_method1(
            pyo3::intern!(py, "_polycache_afetch"),
            (
                fetch.args.bind(py),
                fetch.kwargs.as_ref().map(|k| k.bind(py)),
            ),
        )
        .and_then(|coro| {
            py.import("asyncio")?
                .call_method1(pyo3::intern!(py, "ensure_future"), (coro,))
        });
    let task = match task {
        Ok(task) => task,
        // Kept for the caller (or logged) before the answer goes.
        Err(e) => return done.send(Err(fetch.failed(py, e))),
    };
    let added = Bound::new(py, done).and_then(|callback| {
        task.call_method1(pyo3::intern!(py, "add_done_callback"), (callback,))
    });
    if let Err(e) = added {
        // The callback is gone with its sender: the awaiting task sees no answer.
        e.write_unraisable(py, Some(&task));
    }
}

impl AsyncFetch for PyAsyncFetch {
    fn fetch(&self) -> BoxFuture<'_, polycache::Result<Fetched>> {
        let inner = Arc::clone(&self.inner);
        let Some(to_loop) = self.to_loop.clone() else {
            return Box::pin(awaitable::blocking(move || inner.fetch()));
        };
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let done = FetchDone {
                fetch: inner,
                answer: Mutex::new(Some(tx)),
            };
            // A loop that is gone drops the closure, and with it the sender: `rx` fails.
            to_loop(Box::new(move |py| start_fetch_task(py, done)));
            rx.await.unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Backend,
                    "the job's async fetch ended without an answer (its event loop is gone)",
                ))
            })
        })
    }

    fn should_fetch_synchronously(&self, stale_for: Duration) -> bool {
        self.stale_hook && Fetch::should_fetch_synchronously(&*self.inner, stale_for)
    }
}

/// A raised exception the fetch kept for this caller, as a reply; else the core's error.
fn raised_or(raised: &Mutex<Option<PyErr>>, err: Error) -> polycache::Result<Reply> {
    match raised.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(e) => Ok(Reply::Raised(e)),
        None => Err(err),
    }
}

impl JobRunner {
    #[allow(clippy::too_many_arguments)]
    fn async_fetch(
        &self,
        key: &str,
        job: Py<PyAny>,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
        event_loop: Option<&Bound<'_, PyAny>>,
        stale_hook: bool,
    ) -> PyResult<(PyAsyncFetch, Arc<Mutex<Option<PyErr>>>)> {
        let (fetch, raised) = self.fetch(key, job, args, kwargs);
        let to_loop = match event_loop {
            Some(l) => Some(Arc::new(awaitable::on_loop(l.py(), l)?) as ToLoop),
            None => None,
        };
        let fetch = PyAsyncFetch {
            inner: Arc::new(fetch),
            to_loop,
            stale_hook,
        };
        Ok((fetch, raised))
    }

    fn core(&self) -> &crate::ops::Core {
        &self.cache.get().core
    }
}
