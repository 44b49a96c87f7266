//! `Memo`: the native half of `@polycache.cached` on a polycache cache.
//!
//! A hit runs entirely here with the GIL held on a local backend: build the key from the
//! arguments (see `argkey`), look it up, decode the value. A miss releases the GIL and goes
//! through the core's single-flight `load`: one thread calls the function (re-acquiring the
//! GIL), the others wait without the GIL for its value.

use crate::errors::{self, ResultExt};
use crate::logbridge::detach;
use crate::serializer::{self, Serialized};
use crate::{argkey, PyCache, TimeoutArg, DEFAULT};
use polycache::{Error, ErrorKind, Expiry, Key, Lookup, Value};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple};
use std::sync::RwLock;
use std::time::Duration;

/// A memoized function: calls are answered from a polycache cache, computed once per key.
#[pyclass(frozen, dict, weakref, module = "polycache._polycache", name = "Memo")]
pub(crate) struct Memo {
    func: Py<PyAny>,
    name: String,
    expiry: Expiry,
    version: Option<i64>,
    key_fn: Option<Py<PyAny>>,
    skip_first: bool,
    single_flight: bool,
    /// The cache, once resolved; `None` until the first call when the cache is named.
    cache: RwLock<Option<Py<PyCache>>>,
    /// Called with no arguments to resolve the cache (`lambda: caches[name]`).
    resolver: Option<Py<PyAny>>,
}

impl Memo {
    /// The caller's key of a call: `{name}:{digest}` or `{name}:{key(*args, **kwargs)}`.
    fn key_of(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        match &self.key_fn {
            None => argkey::call_key(&self.name, args, kwargs, self.skip_first),
            Some(f) => {
                let k = f.bind(args.py()).call(args, kwargs)?;
                let k = k.cast::<PyString>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "the key= function of {} must return a str, not {}",
                        self.name,
                        k.get_type()
                            .qualname()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    ))
                })?;
                Ok(format!("{}:{}", self.name, k.to_cow()?))
            }
        }
    }

    fn resolve<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCache>> {
        if let Some(c) = &*self.cache.read().unwrap_or_else(|e| e.into_inner()) {
            return Ok(c.bind(py).clone());
        }
        let Some(resolver) = &self.resolver else {
            return Err(PyValueError::new_err("this memoized function has no cache"));
        };
        let resolved = resolver.bind(py).call0()?;
        let cache = resolved.cast::<PyCache>().map_err(|_| {
            PyTypeError::new_err(format!(
                "the cache of {} must be a polycache.Cache",
                self.name
            ))
        })?;
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Some(cache.clone().unbind());
        Ok(cache.clone())
    }

    /// Computes the value of `key` by calling the function (single-flight unless turned off),
    /// stores it and returns it; `current` is the value XFetch chose to refresh early.
    #[allow(clippy::too_many_arguments)]
    fn load<'py>(
        &self,
        py: Python<'py>,
        cache: &PyCache,
        key: &str,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
        current: Option<Value>,
        single_flight: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let func = self.func.clone_ref(py);
        let args = args.clone().unbind();
        let kwargs = kwargs.map(|k| k.clone().unbind());
        let mut produced: Option<Py<PyAny>> = None;
        let mut raised: Option<PyErr> = None;
        let policy = cache
            .cache
            .refresh_policy()
            .clone()
            .single_flight(single_flight);
        let (expiry, version, core) = (self.expiry, self.version, &cache.cache);
        let format = cache.format;
        let loader = || {
            Python::attach(|py| {
                let computed = func
                    .bind(py)
                    .call(args.bind(py), kwargs.as_ref().map(|k| k.bind(py)))
                    .and_then(|obj| {
                        let mut encoded = Serialized::new(format);
                        encoded.encode(&obj)?;
                        Ok((obj, encoded.as_bytes().to_vec()))
                    });
                match computed {
                    Ok((obj, bytes)) => {
                        produced = Some(obj.unbind());
                        Ok(bytes)
                    }
                    Err(e) => {
                        raised = Some(e);
                        Err(Error::new(
                            ErrorKind::Backend,
                            "the memoized function raised",
                        ))
                    }
                }
            })
        };
        let result = detach(py, || {
            core.load(
                Key::new(key).maybe_version(version),
                loader,
                expiry,
                &policy,
                current,
            )
        });
        match result {
            // The caller that computed gets the very object the function returned.
            Ok(v) => match produced {
                Some(obj) => Ok(obj.into_bound(py)),
                None => serializer::decode(py, format, &v),
            },
            Err(e) => Err(raised.unwrap_or_else(|| errors::to_py(py, e))),
        }
    }
}

fn method_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static METHOD_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    METHOD_TYPE
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("types")?.getattr("MethodType")?.unbind())
        })
        .map(|t| t.bind(py))
}

#[pymethods]
impl Memo {
    #[new]
    #[pyo3(signature = (func, name, *, cache = None, resolver = None, timeout = DEFAULT, version = None, key = None, skip_first = false, single_flight = true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        func: Py<PyAny>,
        name: String,
        cache: Option<Py<PyCache>>,
        resolver: Option<Py<PyAny>>,
        timeout: TimeoutArg,
        version: Option<i64>,
        key: Option<Py<PyAny>>,
        skip_first: bool,
        single_flight: bool,
    ) -> PyResult<Self> {
        if cache.is_none() && resolver.is_none() {
            return Err(PyValueError::new_err("Memo needs a cache or a resolver"));
        }
        Ok(Memo {
            func,
            name,
            expiry: timeout.0,
            version,
            key_fn: key,
            skip_first,
            single_flight,
            cache: RwLock::new(cache),
            resolver,
        })
    }

    /// Calls the function, or answers from the cache.
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.resolve(py)?;
        let pc = cache.get();
        let call = |key: &str| {
            let version = self.version;
            let policy = pc.cache.refresh_policy();
            let found = pc
                .with_key(py, key, |c, k| {
                    c.lookup(Key::new(k).maybe_version(version), policy)
                })
                .py_err(py)?;
            let current = match found {
                Lookup::Hit(ref v) => return serializer::decode(py, pc.format, v),
                Lookup::RefreshEarly(v) => Some(v),
                _ => None,
            };
            self.load(py, pc, key, args, kwargs, current, self.single_flight)
        };
        match self.key_fn {
            None => argkey::with_call_key(&self.name, args, kwargs, self.skip_first, call),
            Some(_) => call(&self.key_of(args, kwargs)?),
        }
    }

    /// Binds the memoized function to an instance, as functions do.
    fn __get__<'py>(
        slf: &Bound<'py, Self>,
        obj: Option<&Bound<'py, PyAny>>,
        objtype: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = objtype;
        match obj {
            None => Ok(slf.clone().into_any()),
            Some(obj) if obj.is_none() => Ok(slf.clone().into_any()),
            Some(obj) => method_type(slf.py())?.call1((slf, obj)),
        }
    }

    /// The cache key (before prefix and version) of a call with these arguments.
    #[pyo3(signature = (*args, **kwargs))]
    fn key(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        self.key_of(args, kwargs)
    }

    /// Removes the cached value of a call with these arguments; True when it was present.
    #[pyo3(signature = (*args, **kwargs))]
    fn invalidate(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<bool> {
        let key = self.key_of(args, kwargs)?;
        let cache = self.resolve(py)?;
        let version = self.version;
        cache
            .get()
            .with_key(py, &key, |c, k| {
                c.delete(Key::new(k).maybe_version(version))
            })
            .py_err(py)
    }

    /// Calls the function now, stores its value for these arguments and returns it.
    #[pyo3(signature = (*args, **kwargs))]
    fn refresh<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = self.key_of(args, kwargs)?;
        let cache = self.resolve(py)?;
        self.load(py, cache.get(), &key, args, kwargs, None, false)
    }

    /// `(value, refresh_early)` for `key` (a key from `key()`): the cached value and whether
    /// XFetch chose this read to recompute it early, or `(default, False)` on a miss.
    fn _probe<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        default: Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyAny>, bool)> {
        let cache = self.resolve(py)?;
        let pc = cache.get();
        let (version, policy) = (self.version, pc.cache.refresh_policy());
        let found = pc
            .with_key(py, key, |c, k| {
                c.lookup(Key::new(k).maybe_version(version), policy)
            })
            .py_err(py)?;
        match found {
            Lookup::Hit(ref v) => Ok((serializer::decode(py, pc.format, v)?, false)),
            Lookup::RefreshEarly(ref v) => Ok((serializer::decode(py, pc.format, v)?, true)),
            _ => Ok((default, false)),
        }
    }

    /// Stores `value` under `key` (a key from `key()`) with the decorator's timeout. With
    /// `delta`, the seconds the function took, it is a computed value: stored as
    /// `get_or_set_with` stores one (an XFetch envelope when the cache has `xfetch_beta`)
    /// and counted as a refresh.
    #[pyo3(signature = (key, value, delta = None))]
    fn _store(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        delta: Option<f64>,
    ) -> PyResult<bool> {
        let cache = self.resolve(py)?;
        let mut encoded = Serialized::new(cache.get().format);
        encoded.encode(value)?;
        let (version, expiry) = (self.version, self.expiry);
        let pc = cache.get();
        match delta {
            None => pc
                .with_key_value(py, key, encoded.as_bytes(), |c, k, v| {
                    c.set(Key::new(k).maybe_version(version), v, expiry)
                })
                .py_err(py),
            Some(d) => {
                let delta = Duration::try_from_secs_f64(d).unwrap_or_default();
                let policy = pc.cache.refresh_policy();
                pc.with_key_value(py, key, encoded.as_bytes(), |c, k, v| {
                    c.store_loaded(Key::new(k).maybe_version(version), v, expiry, policy, delta)
                })
                .py_err(py)?;
                Ok(true)
            }
        }
    }

    /// Forgets the resolved cache, so the next call resolves it again (after `configure`).
    fn _reset(&self) {
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The cache this function's values live in.
    #[getter]
    fn cache<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCache>> {
        self.resolve(py)
    }

    /// The function being memoized.
    #[getter]
    fn func(&self, py: Python<'_>) -> Py<PyAny> {
        self.func.clone_ref(py)
    }

    fn __repr__(&self) -> String {
        format!("<polycache.cached {}>", self.name)
    }
}
