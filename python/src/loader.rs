//! A Python callable as the core's loader: `get_or_set_with`, `@polycache.cached` and their
//! awaitable twins compute a missing value by calling Python code, under the core's
//! single-flight (`Cache::load`).
//!
//! The loader takes the GIL to run and gives the core the serialized value; the caller that
//! computed gets back the very object the callable returned, and an exception it raised
//! reaches that caller unchanged (the core sees only "the loader raised", and the waiting
//! callers retry).

use crate::awaitable;
use crate::errors;
use crate::logbridge::detach;
use crate::ops::{Core, Deliver, Reply};
use crate::serializer::{Format, Serialized};
use polycache::{Error, ErrorKind, Expiry, Key, Lookup, RefreshPolicy, Value};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::sync::Mutex;

/// One call of Python code: `func(*args, **kwargs)`.
pub(crate) struct Call {
    func: Py<PyAny>,
    args: Option<Py<PyTuple>>,
    kwargs: Option<Py<PyDict>>,
    /// The tags the stored value carries (none: a plain value).
    tags: Vec<String>,
}

/// What a loader left for its caller: the object it returned, or the exception it raised.
#[derive(Default)]
struct Produced {
    object: Option<Py<PyAny>>,
    raised: Option<PyErr>,
}

impl Call {
    pub(crate) fn new(
        func: Py<PyAny>,
        args: Option<Py<PyTuple>>,
        kwargs: Option<Py<PyDict>>,
    ) -> Self {
        Call {
            func,
            args,
            kwargs,
            tags: Vec::new(),
        }
    }

    /// The same call, its value stored with `tags` (their versions read before it runs).
    pub(crate) fn tagged(mut self, tags: Vec<String>) -> Self {
        self.tags = tags;
        self
    }

    fn tag_texts(&self) -> Vec<&str> {
        self.tags.iter().map(String::as_str).collect()
    }

    /// Calls the function with the GIL and serializes its value; records what it produced.
    fn compute(&self, format: Format, produced: &Mutex<Produced>) -> polycache::Result<Vec<u8>> {
        Python::attach(|py| {
            let func = self.func.bind(py);
            let called = match &self.args {
                None => func.call0(),
                Some(args) => func.call(args.bind(py), self.kwargs.as_ref().map(|k| k.bind(py))),
            };
            let computed = called.and_then(|obj| {
                let mut encoded = Serialized::new(format);
                encoded.encode(&obj)?;
                Ok((obj, encoded.as_bytes().to_vec()))
            });
            let mut produced = produced.lock().unwrap_or_else(|e| e.into_inner());
            match computed {
                Ok((obj, bytes)) => {
                    produced.object = Some(obj.unbind());
                    Ok(bytes)
                }
                Err(e) => {
                    produced.raised = Some(e);
                    Err(Error::new(ErrorKind::Backend, "the loader raised"))
                }
            }
        })
    }
}

/// The refresh policy of a load: the cache's, with single-flight turned off when asked.
fn policy(core: &Core, single_flight: bool) -> RefreshPolicy {
    core.cache
        .refresh_policy()
        .clone()
        .single_flight(single_flight)
}

/// What a load answered, before it becomes a Python object.
enum Loaded {
    /// A value found in the cache (or computed by another caller).
    Stored(Value),
    /// The object this caller's loader returned.
    Object(Py<PyAny>),
}

/// `load` with `call`, after a lookup that did not hit (`current`: the value XFetch chose to
/// refresh early): runs on the calling thread, taking the GIL only inside the loader.
fn load_blocking(
    core_cache: &polycache::Cache,
    format: Format,
    key: Key<'_>,
    call: &Call,
    expiry: Expiry,
    policy: &RefreshPolicy,
    current: Option<Value>,
) -> Result<Loaded, LoadError> {
    let produced = Mutex::new(Produced::default());
    let result = core_cache.load_tagged(
        key,
        || call.compute(format, &produced),
        expiry,
        policy,
        current,
        &call.tag_texts(),
    );
    let produced = produced.into_inner().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(v) => Ok(match produced.object {
            Some(obj) => Loaded::Object(obj),
            None => Loaded::Stored(v),
        }),
        Err(e) => Err(match produced.raised {
            Some(raised) => LoadError::Raised(raised),
            None => LoadError::Core(e),
        }),
    }
}

enum LoadError {
    Core(Error),
    Raised(PyErr),
}

fn answer<'py>(
    py: Python<'py>,
    core: &Core,
    loaded: Result<Loaded, LoadError>,
) -> PyResult<Bound<'py, PyAny>> {
    match loaded {
        Ok(Loaded::Stored(v)) => core.decoder.decode(py, &v),
        Ok(Loaded::Object(obj)) => Ok(obj.into_bound(py)),
        Err(LoadError::Raised(e)) => Err(e),
        Err(LoadError::Core(e)) => Err(errors::to_py(py, e)),
    }
}

/// The value under `key`, computed by `call` on a miss (single-flight unless `single_flight`
/// is false); the GIL is released while the core waits. `current` is what a lookup the
/// caller made found: the value XFetch chose to refresh early, or `Some(None)` after a miss;
/// `None` makes the lookup here.
pub(crate) fn load<'py>(
    py: Python<'py>,
    core: &Core,
    key: Key<'_>,
    call: Call,
    expiry: Expiry,
    single_flight: bool,
    current: Option<Option<Value>>,
) -> PyResult<Bound<'py, PyAny>> {
    let policy = policy(core, single_flight);
    let (cache, format) = (&core.cache, core.decoder.format);
    let current = match current {
        Some(current) => current,
        None => {
            // With the call's tags: the value and their versions in one request.
            let tags = call.tag_texts();
            let found = if core.local {
                cache.lookup_tagged(key, &policy, &tags)
            } else {
                detach(py, || cache.lookup_tagged(key, &policy, &tags))
            };
            match found.map_err(|e| errors::to_py(py, e))? {
                Lookup::Hit(ref v) => return core.decoder.decode(py, v),
                Lookup::RefreshEarly(v) => Some(v),
                _ => None,
            }
        }
    };
    let loaded = detach(py, || {
        load_blocking(cache, format, key, &call, expiry, &policy, current)
    });
    answer(py, core, loaded)
}

/// [`load`] with no lookup made, awaitable: the lookup, the single-flight wait and the
/// store are the core's native async ones (`lookup_async`, `load_async`); only the call of the
/// synchronous loader runs on polycache's blocking pool, since Python code may block and needs
/// a thread of its own (it takes the GIL there).
pub(crate) fn aget_or_load<'py>(
    py: Python<'py>,
    core: &Core,
    name: String,
    version: Option<i64>,
    call: Call,
    expiry: Expiry,
    single_flight: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let policy = policy(core, single_flight);
    let (cache, format) = (core.cache.clone(), core.decoder.format);
    let work = async move {
        let key = Key::new(&name).maybe_version(version);
        let tags = call.tags.clone();
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        let current = match cache.lookup_tagged_async(key, &policy, &tags).await? {
            Lookup::Hit(v) => return Ok(Reply::Value(Some(v))),
            Lookup::RefreshEarly(v) => Some(v),
            _ => None,
        };
        let produced = std::sync::Arc::new(Mutex::new(Produced::default()));
        let shared = std::sync::Arc::clone(&produced);
        let loader = move || awaitable::blocking(move || call.compute(format, &shared));
        let result = cache
            .load_tagged_async(key, loader, expiry, &policy, current, &tags)
            .await;
        let produced = std::mem::take(&mut *produced.lock().unwrap_or_else(|e| e.into_inner()));
        match result {
            Ok(v) => Ok(match produced.object {
                Some(obj) => Reply::Object(obj),
                None => Reply::Value(Some(v)),
            }),
            Err(e) => match produced.raised {
                Some(raised) => Ok(Reply::Raised(raised)),
                None => Err(e),
            },
        }
    };
    awaitable::start_future(py, core, work, Deliver::Loaded)
}
