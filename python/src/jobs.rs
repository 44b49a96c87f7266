//! `JobRunner`: the native half of `polycache.Job`, over the core's [`polycache::Job`].
//!
//! A job's `fetch` is Python code that the core calls on the caller's thread (synchronous
//! fetches) or on a refresh-pool thread (background refreshes); either way it takes the GIL
//! to run, under [`Active`]: once interpreter shutdown begins ([`crate::finalize`]) pool
//! threads never enter Python again (a queued refresh is dropped).

use crate::cache::PyCache;
use crate::errors::ResultExt;
use crate::finalize::Active;
use crate::logbridge::detach;
use crate::serializer::{self, Format, Serialized};
use polycache::{Error, ErrorKind, Fetch, Fetched, Job, JobOptions, Key};
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
        if on_pool_thread() {
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
                .and_then(|r| {
                    let (value, fresh_for): (Bound<'_, PyAny>, Option<f64>) = r.extract()?;
                    let mut encoded = Serialized::new(self.format);
                    encoded.encode(&value)?;
                    let fresh_for = fresh_for.map(|s| {
                        Duration::from_secs_f64(if s.is_finite() { s.max(0.0) } else { 0.0 })
                    });
                    Ok(Fetched::new(encoded.as_bytes().to_vec(), fresh_for))
                });
            fetched.map_err(|e| {
                let error = Error::new(ErrorKind::Backend, format!("the job's fetch raised {e}"));
                self.report(py, e);
                error
            })
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
    #[pyo3(signature = (cache, *, lifetime, ttl, fetch_on_miss, max_stale))]
    fn new(
        cache: Py<PyCache>,
        lifetime: f64,
        ttl: Option<f64>,
        fetch_on_miss: bool,
        max_stale: Option<f64>,
    ) -> PyResult<Self> {
        let options = JobOptions::default()
            .lifetime(seconds("lifetime", Some(lifetime))?.unwrap_or_default())
            .ttl(seconds("ttl", ttl)?)
            .fetch_on_miss(fetch_on_miss)
            .max_stale(seconds("max_stale", max_stale)?);
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
}
