//! `polycache._polycache`: the native half of the `polycache` Python package.
//!
//! One class, `Cache`, with Django's cache methods over a core [`polycache::Cache`], and the
//! serializer Django's `RedisCache` uses. The pure-Python package subclasses `Cache` only to
//! add the `async` twins; every sync call lands here directly. `Memo` is the native half of
//! `@polycache.cached`, `JobRunner` of `polycache.Job`.
//!
//! GIL policy: a backend whose calls answer in memory ([`polycache::Backend::is_local`])
//! runs with the GIL held, since releasing it would cost more than the lookup. Any other
//! backend gets owned copies of the key and value, then runs with the GIL released.

mod argkey;
mod django;
mod errors;
mod finalize;
mod jobs;
mod logbridge;
mod memo;
mod serializer;

use crate::logbridge::detach;
use errors::ResultExt;
use polycache::{Cache, CacheConfig, Error, ErrorKind, Expiry, Key, Lookup, StatsSnapshot};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList, PyString, PyTuple};
use serializer::{Format, Serialized};
use std::time::Duration;

/// The marker for "use the cache's default timeout" (`polycache.DEFAULT_TIMEOUT`).
#[pyclass(frozen, module = "polycache._polycache", name = "DefaultTimeout")]
struct DefaultTimeout;

#[pymethods]
impl DefaultTimeout {
    fn __repr__(&self) -> &'static str {
        "DEFAULT_TIMEOUT"
    }
    /// Pickles as the module global, so the marker stays one object.
    fn __reduce__(&self) -> &'static str {
        "DEFAULT_TIMEOUT"
    }
}

/// A timeout argument in Django's words: `DEFAULT_TIMEOUT` is the cache's default, `None`
/// never expires, `<= 0` is already expired, other numbers are seconds.
#[derive(Clone, Copy)]
struct TimeoutArg(Expiry);

const DEFAULT: TimeoutArg = TimeoutArg(Expiry::Default);

impl<'a, 'py> FromPyObject<'a, 'py> for TimeoutArg {
    type Error = PyErr;

    #[inline]
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_none() {
            return Ok(TimeoutArg(Expiry::Never));
        }
        if obj.is_instance_of::<DefaultTimeout>() {
            return Ok(DEFAULT);
        }
        match obj.extract::<f64>() {
            Ok(secs) => Ok(TimeoutArg(Expiry::from_secs_f64(secs))),
            Err(_) => Err(PyTypeError::new_err(format!(
                "timeout must be a number of seconds, None or DEFAULT_TIMEOUT, not {}",
                type_name(&obj)
            ))),
        }
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// A signing key: `str` (its UTF-8 bytes) or `bytes`. Never echoed in an error.
struct SecretArg(Vec<u8>);

impl<'a, 'py> FromPyObject<'a, 'py> for SecretArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(SecretArg(b.as_bytes().to_vec()));
        }
        if let Ok(s) = obj.cast::<PyString>() {
            return Ok(SecretArg(s.to_str()?.as_bytes().to_vec()));
        }
        Err(PyTypeError::new_err(format!(
            "signing keys must be str or bytes, not {}",
            type_name(&obj)
        )))
    }
}

/// The caller's key as UTF-8 borrowed from the `str` object (no copy).
#[inline]
fn key_str<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    match key.cast::<PyString>() {
        Ok(s) => s.to_str().map_err(|_| {
            errors::invalid_key(
                key.py(),
                "cache keys must be encodable as UTF-8 (this one has a lone surrogate)".to_owned(),
            )
        }),
        Err(_) => Err(PyTypeError::new_err(format!(
            "cache keys must be str, not {}",
            type_name(key)
        ))),
    }
}

/// A cache: Django's cache API over one polycache backend.
#[pyclass(frozen, subclass, module = "polycache._polycache", name = "Cache")]
struct PyCache {
    cache: Cache,
    /// The backend answers in memory: keep the GIL (see the module docs).
    local: bool,
    /// How values become bytes (the cache's `serializer` option).
    format: Format,
}

/// Runs `f` on `key`: in place for a local backend (`local`), else on an owned copy
/// without the GIL. Shared by every native class that wraps a [`Cache`].
#[inline]
pub(crate) fn run_on_key<T: Send>(
    py: Python<'_>,
    cache: &Cache,
    local: bool,
    key: &str,
    f: impl FnOnce(&Cache, &str) -> T + Send,
) -> T {
    if local {
        f(cache, key)
    } else {
        let key = key.to_owned();
        detach(py, move || f(cache, &key))
    }
}

impl PyCache {
    /// Runs `f` on `key`: see [`run_on_key`].
    #[inline]
    fn with_key<T: Send>(
        &self,
        py: Python<'_>,
        key: &str,
        f: impl FnOnce(&Cache, &str) -> T + Send,
    ) -> T {
        run_on_key(py, &self.cache, self.local, key, f)
    }

    /// Like [`PyCache::with_key`], with a value.
    #[inline]
    fn with_key_value<T: Send>(
        &self,
        py: Python<'_>,
        key: &str,
        value: &[u8],
        f: impl FnOnce(&Cache, &str, &[u8]) -> T + Send,
    ) -> T {
        if self.local {
            f(&self.cache, key, value)
        } else {
            let (key, value) = (key.to_owned(), value.to_vec());
            let cache = &self.cache;
            detach(py, move || f(cache, &key, &value))
        }
    }

    /// Runs `f` on many keys: in place for a local backend, else on owned copies without the GIL.
    fn with_keys<T: Send>(
        &self,
        py: Python<'_>,
        keys: &[&str],
        f: impl FnOnce(&Cache, &[&str]) -> T + Send,
    ) -> T {
        if self.local {
            f(&self.cache, keys)
        } else {
            let owned: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
            let cache = &self.cache;
            detach(py, move || {
                let keys: Vec<&str> = owned.iter().map(String::as_str).collect();
                f(cache, &keys)
            })
        }
    }

    /// The decoded value under `key`, or `None` on a miss.
    #[inline]
    fn get_value<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        version: Option<i64>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let result = self.with_key(py, key, |c, k| c.get(Key::new(k).maybe_version(version)));
        // Matched in place: moving the result around costs more than the match on this path.
        match result {
            Ok(Some(ref v)) if self.local => {
                serializer::decode_shared(py, self.format, v).map(Some)
            }
            Ok(Some(ref v)) => serializer::decode(py, self.format, v).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(errors::to_py(py, e)),
        }
    }
}

/// Renders an `OPTIONS` value as URL query text.
fn option_text(name: &str, value: &Bound<'_, PyAny>) -> PyResult<String> {
    if value.is_none() {
        return Ok("none".to_owned());
    }
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(if b.is_true() { "true" } else { "false" }.to_owned());
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(s.to_str()?.to_owned());
    }
    if value.is_instance_of::<pyo3::types::PyInt>()
        || value.is_instance_of::<pyo3::types::PyFloat>()
    {
        return Ok(value.str()?.to_str()?.to_owned());
    }
    Err(errors::configuration(
        value.py(),
        format!(
            "option '{name}' must be a str, int, float, bool or None, not {}",
            type_name(value)
        ),
    ))
}

fn stats_dict<'py>(py: Python<'py>, s: &StatsSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("hits", s.hits)?;
    d.set_item("misses", s.misses)?;
    d.set_item("sets", s.sets)?;
    d.set_item("deletes", s.deletes)?;
    d.set_item("errors", s.errors)?;
    d.set_item("evictions", s.evictions)?;
    d.set_item("stale_hits", s.stale_hits)?;
    d.set_item("refreshes", s.refreshes)?;
    Ok(d)
}

#[pymethods]
impl PyCache {
    #[new]
    #[pyo3(signature = (
        location = "memory://", *, key_prefix = None, version = None, timeout = DEFAULT,
        options = None, serializer = None, signing_key = None, old_signing_keys = None,
        compress_min_size = None, compress_level = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        location: &str,
        key_prefix: Option<String>,
        version: Option<i64>,
        timeout: TimeoutArg,
        options: Option<&Bound<'_, PyAny>>,
        serializer: Option<String>,
        signing_key: Option<SecretArg>,
        old_signing_keys: Option<Vec<SecretArg>>,
        compress_min_size: Option<usize>,
        compress_level: Option<i32>,
    ) -> PyResult<Self> {
        let mut config = CacheConfig::new(location);
        config.key_prefix = key_prefix;
        config.version = version;
        config.serializer = serializer;
        config.signing_key = signing_key.map(|k| k.0);
        config.old_signing_keys = old_signing_keys
            .unwrap_or_default()
            .into_iter()
            .map(|k| k.0)
            .collect();
        config.compress_min_size = compress_min_size;
        config.compress_level = compress_level;
        config.timeout = match timeout.0 {
            Expiry::Default => None,
            Expiry::Never => Some(None),
            Expiry::After(d) => Some(Some(d)),
            _ => Some(Some(Duration::ZERO)),
        };
        if let Some(options) = options {
            let items = match options.cast::<PyDict>() {
                Ok(d) => d.items().into_any(),
                Err(_) => options.call_method0("items")?,
            };
            for item in items.try_iter()? {
                let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
                let name = name
                    .cast::<PyString>()
                    .map_err(|_| {
                        errors::configuration(
                            py,
                            format!("option names must be str, not {}", type_name(&name)),
                        )
                    })?
                    .to_str()?
                    .to_owned();
                let text = option_text(&name, &value)?;
                config.options.insert(name, text);
            }
        }
        // Opening a remote backend may connect: no Python objects are touched here.
        let cache = detach(py, || config.build()).py_err(py)?;
        let local = cache.backend().is_local();
        let format = Format::of(&cache);
        Ok(PyCache {
            cache,
            local,
            format,
        })
    }

    /// The value under `key`, or `default` on a miss.
    #[pyo3(signature = (key, default = None, version = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
        version: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.get_value(py, key_str(key)?, version)? {
            Some(v) => Ok(v),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    /// Stores `value` under `key`; a timeout of 0 or less stores nothing and removes the old value.
    ///
    /// True when the write reached the backend; False only when the cache fails open
    /// (`fail_open=true`) and the backend was unreachable.
    #[pyo3(signature = (key, value, timeout = DEFAULT, version = None))]
    fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        timeout: TimeoutArg,
        version: Option<i64>,
    ) -> PyResult<bool> {
        let name = key_str(key)?;
        let mut encoded = Serialized::new(self.format);
        encoded.encode(value)?;
        self.with_key_value(py, name, encoded.as_bytes(), |c, k, v| {
            c.set(Key::new(k).maybe_version(version), v, timeout.0)
        })
        .py_err(py)
    }

    /// Stores `value` only if `key` is absent; True when it stored.
    #[pyo3(signature = (key, value, timeout = DEFAULT, version = None))]
    fn add(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        timeout: TimeoutArg,
        version: Option<i64>,
    ) -> PyResult<bool> {
        let name = key_str(key)?;
        let mut encoded = Serialized::new(self.format);
        encoded.encode(value)?;
        self.with_key_value(py, name, encoded.as_bytes(), |c, k, v| {
            c.add(Key::new(k).maybe_version(version), v, timeout.0)
        })
        .py_err(py)
    }

    /// A dict of the keys found and their values; missing keys are left out.
    #[pyo3(signature = (keys, version = None))]
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        version: Option<i64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let objs = keys.try_iter()?.collect::<PyResult<Vec<_>>>()?;
        let names = objs.iter().map(key_str).collect::<PyResult<Vec<_>>>()?;
        let values = self
            .with_keys(py, &names, |c, ks| c.get_many(ks, version))
            .py_err(py)?;
        let found = PyDict::new(py);
        for (obj, value) in objs.iter().zip(values) {
            if let Some(value) = value {
                found.set_item(obj, serializer::decode(py, self.format, &value)?)?;
            }
        }
        Ok(found)
    }

    /// Stores every pair of `mapping`; returns the list of keys that failed to store.
    #[pyo3(signature = (mapping, timeout = DEFAULT, version = None))]
    fn set_many<'py>(
        &self,
        py: Python<'py>,
        mapping: &Bound<'py, PyAny>,
        timeout: TimeoutArg,
        version: Option<i64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let items = match mapping.cast::<PyDict>() {
            Ok(d) => d.items().into_any(),
            Err(_) => mapping.call_method0("items")?,
        };
        let mut keys = Vec::new();
        let mut encoded = Vec::new();
        for item in items.try_iter()? {
            let (k, v): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item?.extract()?;
            key_str(&k)?;
            // Every value is serialized before anything is stored: one bad value stores none.
            let mut value = Serialized::new(self.format);
            value.encode(&v)?;
            encoded.push(value);
            keys.push(k);
        }
        let names = keys.iter().map(key_str).collect::<PyResult<Vec<_>>>()?;
        let failed = if self.local {
            let pairs: Vec<(&str, &[u8])> = names
                .iter()
                .zip(&encoded)
                .map(|(k, v)| (*k, v.as_bytes()))
                .collect();
            self.cache.set_many(&pairs, timeout.0, version)
        } else {
            let owned: Vec<(String, Vec<u8>)> = names
                .iter()
                .zip(&encoded)
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect();
            let cache = &self.cache;
            detach(py, move || {
                let pairs: Vec<(&str, &[u8])> = owned
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_slice()))
                    .collect();
                cache.set_many(&pairs, timeout.0, version)
            })
        }
        .py_err(py)?;
        PyList::new(py, failed.into_iter().map(|i| &keys[i]))
    }

    /// Removes `key`; True when it was present.
    #[pyo3(signature = (key, version = None))]
    fn delete(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        version: Option<i64>,
    ) -> PyResult<bool> {
        self.with_key(py, key_str(key)?, |c, k| {
            c.delete(Key::new(k).maybe_version(version))
        })
        .py_err(py)
    }

    /// Removes every key in `keys`.
    #[pyo3(signature = (keys, version = None))]
    fn delete_many(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        version: Option<i64>,
    ) -> PyResult<()> {
        let objs = keys.try_iter()?.collect::<PyResult<Vec<_>>>()?;
        let names = objs.iter().map(key_str).collect::<PyResult<Vec<_>>>()?;
        self.with_keys(py, &names, |c, ks| c.delete_many(ks, version))
            .py_err(py)?;
        Ok(())
    }

    /// True when `key` is in the cache (not counted as a hit or a miss).
    #[pyo3(signature = (key, version = None))]
    fn has_key(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        version: Option<i64>,
    ) -> PyResult<bool> {
        self.with_key(py, key_str(key)?, |c, k| {
            c.has_key(Key::new(k).maybe_version(version))
        })
        .py_err(py)
    }

    /// Gives `key` a new timeout; True when the key was present.
    #[pyo3(signature = (key, timeout = DEFAULT, version = None))]
    fn touch(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        timeout: TimeoutArg,
        version: Option<i64>,
    ) -> PyResult<bool> {
        self.with_key(py, key_str(key)?, |c, k| {
            c.touch(Key::new(k).maybe_version(version), timeout.0)
        })
        .py_err(py)
    }

    /// Adds `delta` to the integer under `key` atomically and returns the new value.
    #[pyo3(signature = (key, delta = 1, version = None))]
    fn incr(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        delta: i64,
        version: Option<i64>,
    ) -> PyResult<i64> {
        self.with_key(py, key_str(key)?, |c, k| {
            c.incr(Key::new(k).maybe_version(version), delta)
        })
        .py_err(py)
    }

    /// Subtracts `delta` from the integer under `key` atomically and returns the new value.
    #[pyo3(signature = (key, delta = 1, version = None))]
    fn decr(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        delta: i64,
        version: Option<i64>,
    ) -> PyResult<i64> {
        self.with_key(py, key_str(key)?, |c, k| {
            c.decr(Key::new(k).maybe_version(version), delta)
        })
        .py_err(py)
    }

    /// The value under `key`; on a miss stores `default` (called first if callable) with
    /// `add` and returns what the cache then holds.
    #[pyo3(signature = (key, default, timeout = DEFAULT, version = None))]
    fn get_or_set<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, PyAny>,
        timeout: TimeoutArg,
        version: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = key_str(key)?;
        if let Some(v) = self.get_value(py, name, version)? {
            return Ok(v);
        }
        let value = if default.is_callable() {
            default.call0()?
        } else {
            default.clone()
        };
        let mut encoded = Serialized::new(self.format);
        encoded.encode(&value)?;
        self.with_key_value(py, name, encoded.as_bytes(), |c, k, v| {
            c.add(Key::new(k).maybe_version(version), v, timeout.0)
        })
        .py_err(py)?;
        // Read back: another writer may have won the race between the miss and the add.
        Ok(self.get_value(py, name, version)?.unwrap_or(value))
    }

    /// The value under `key`; on a miss, one caller calls `loader()` and stores its result
    /// while concurrent callers of this cache for the same key wait for it (single-flight).
    ///
    /// Unlike `get_or_set` (Django's: every caller that misses computes), `loader` runs once
    /// for all the threads that miss the key at the same time. The cache's refresh options
    /// apply (`lease`, `flight_timeout`, `xfetch_beta`). An exception from `loader` reaches
    /// its caller; nothing is stored and the waiting callers retry.
    #[pyo3(signature = (key, loader, timeout = DEFAULT, version = None))]
    fn get_or_set_with<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        loader: &Bound<'py, PyAny>,
        timeout: TimeoutArg,
        version: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = key_str(key)?;
        if !loader.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "loader must be callable, not {}",
                type_name(loader)
            )));
        }
        let policy = self.cache.refresh_policy();
        let found = self
            .with_key(py, name, |c, k| {
                c.lookup(Key::new(k).maybe_version(version), policy)
            })
            .py_err(py)?;
        let current = match found {
            Lookup::Hit(ref v) => return serializer::decode(py, self.format, v),
            Lookup::RefreshEarly(v) => Some(v),
            _ => None,
        };
        let loader = loader.clone().unbind();
        let mut produced: Option<Py<PyAny>> = None;
        let mut raised: Option<PyErr> = None;
        let compute = || {
            Python::attach(|py| {
                let computed = loader.bind(py).call0().and_then(|obj| {
                    let mut encoded = Serialized::new(self.format);
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
                        Err(Error::new(ErrorKind::Backend, "the loader raised"))
                    }
                }
            })
        };
        let cache = &self.cache;
        let result = detach(py, || {
            cache.load(
                Key::new(name).maybe_version(version),
                compute,
                timeout.0,
                policy,
                current,
            )
        });
        match result {
            Ok(v) => match produced {
                Some(obj) => Ok(obj.into_bound(py)),
                None => serializer::decode(py, self.format, &v),
            },
            Err(e) => Err(raised.unwrap_or_else(|| errors::to_py(py, e))),
        }
    }

    /// Removes this cache's entries (every entry when the key prefix is empty).
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        if self.local {
            self.cache.clear()
        } else {
            detach(py, || self.cache.clear())
        }
        .py_err(py)
    }

    /// Moves `key` to version `version + delta` and returns the new version.
    #[pyo3(signature = (key, delta = 1, version = None))]
    fn incr_version(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        delta: i64,
        version: Option<i64>,
    ) -> PyResult<i64> {
        self.with_key(py, key_str(key)?, |c, k| c.incr_version(k, delta, version))
            .py_err(py)
    }

    /// Moves `key` to version `version - delta` and returns the new version.
    #[pyo3(signature = (key, delta = 1, version = None))]
    fn decr_version(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        delta: i64,
        version: Option<i64>,
    ) -> PyResult<i64> {
        let delta = delta.checked_neg().ok_or_else(|| {
            errors::to_py(
                py,
                polycache::Error::new(
                    polycache::ErrorKind::Overflow,
                    "delta is out of the 64-bit range",
                ),
            )
        })?;
        self.with_key(py, key_str(key)?, |c, k| c.incr_version(k, delta, version))
            .py_err(py)
    }

    /// Does nothing: connections are pooled and closed with the cache (Django's `close`).
    fn close(&self) {}

    /// The counters of this cache: hits, misses, sets, deletes, errors, evictions,
    /// stale_hits, refreshes.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &self.cache.stats())
    }

    /// The counters in the Prometheus text format, labelled `cache="{name}"`.
    #[pyo3(signature = (name = "default"))]
    fn stats_prometheus(&self, name: &str) -> String {
        self.cache.stats_prometheus(name)
    }

    /// The full key `key` is stored under: `{key_prefix}:{version}:{key}`.
    #[pyo3(signature = (key, version = None))]
    fn make_key(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        version: Option<i64>,
    ) -> PyResult<String> {
        let full = self
            .cache
            .make_key(Key::new(key_str(key)?).maybe_version(version))
            .py_err(py)?;
        Ok(String::from_utf8_lossy(&full).into_owned())
    }

    /// The location, with any password redacted.
    #[getter]
    fn location(&self) -> &str {
        self.cache.location()
    }

    /// The key prefix.
    #[getter]
    fn key_prefix(&self) -> &str {
        self.cache.key_prefix()
    }

    /// The version keys are stored under by default.
    #[getter]
    fn version(&self) -> i64 {
        self.cache.version()
    }

    /// The default timeout in seconds; None when entries never expire by default.
    #[getter]
    fn default_timeout(&self) -> Option<f64> {
        match self.cache.default_expiry() {
            Expiry::After(d) => Some(d.as_secs_f64()),
            Expiry::Never => None,
            _ => Some(0.0),
        }
    }

    /// The serializer of this cache's values: `"pickle"`, `"json"` or `"raw"`.
    #[getter]
    fn serializer(&self) -> &'static str {
        self.cache.serializer()
    }

    /// True when the backend answers in memory (calls keep the GIL and never block).
    #[getter]
    fn is_local(&self) -> bool {
        self.local
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let this = slf.get();
        let ty = slf.get_type();
        Ok(format!(
            "{}.{}({}, key_prefix={}, version={})",
            ty.module()?,
            ty.qualname()?,
            PyString::new(py, this.cache.location()).repr()?,
            PyString::new(py, this.cache.key_prefix()).repr()?,
            this.cache.version()
        ))
    }
}

/// Serializes `value` exactly as Django's `RedisSerializer` (and so polycache) stores it.
#[pyfunction]
fn dumps<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let mut encoded = Serialized::new(Format::Pickle);
    encoded.encode(value)?;
    Ok(PyBytes::new(value.py(), encoded.as_bytes()))
}

/// Deserializes stored bytes exactly as Django's `RedisSerializer.loads` does.
#[pyfunction]
fn loads<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    serializer::decode(py, Format::Pickle, data)
}

/// The cache key `{name}:{digest}` of a call with `args` and `kwargs` (see `argkey`).
#[pyfunction]
#[pyo3(signature = (name, args, kwargs = None, skip_first = false))]
fn call_key(
    name: &str,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
    skip_first: bool,
) -> PyResult<String> {
    argkey::call_key(name, args, kwargs, skip_first)
}

/// Creates the cache table of a `sqlite://` or `postgres://` URL if it does not exist yet.
///
/// Django's `createcachetable` for polycache's SQL backends: a deploy step for databases whose
/// application user may not create tables. Idempotent.
#[pyfunction]
fn create_table(py: Python<'_>, url: &str) -> PyResult<()> {
    let url = url.to_owned();
    // Connects to the database: no Python objects are touched while the GIL is released.
    detach(py, move || polycache::backend::sql::create_table(&url)).py_err(py)
}

/// The SQL statements `create_table(url)` runs when the table is missing, without running
/// them: validates `url` and neither connects nor writes.
#[pyfunction]
fn create_table_sql(py: Python<'_>, url: &str) -> PyResult<Vec<String>> {
    polycache::backend::sql::create_table_sql(url).py_err(py)
}

/// Renders the counters of several caches as one Prometheus page: `{name: cache}`.
#[pyfunction]
fn render_prometheus(caches: &Bound<'_, PyAny>) -> PyResult<String> {
    let items = match caches.cast::<PyDict>() {
        Ok(d) => d.items().into_any(),
        Err(_) => caches.call_method0("items")?,
    };
    let mut snapshots = Vec::new();
    for item in items.try_iter()? {
        let (name, cache): (String, Bound<'_, PyCache>) = item?.extract()?;
        snapshots.push((name, cache.get().cache.stats()));
    }
    Ok(polycache::render_prometheus(
        snapshots.iter().map(|(n, s)| (n.as_str(), s)),
    ))
}

/// The native module; `polycache` re-exports its public names.
#[pymodule]
fn _polycache(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    logbridge::install();
    m.add_class::<PyCache>()?;
    m.add_class::<DefaultTimeout>()?;
    m.add_class::<django::DjangoCache>()?;
    m.add_class::<memo::Memo>()?;
    m.add_class::<jobs::JobRunner>()?;
    m.add_function(wrap_pyfunction!(finalize::_shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(call_key, m)?)?;
    m.add_function(wrap_pyfunction!(render_prometheus, m)?)?;
    m.add_function(wrap_pyfunction!(create_table, m)?)?;
    m.add_function(wrap_pyfunction!(create_table_sql, m)?)?;
    m.add_function(wrap_pyfunction!(dumps, m)?)?;
    m.add_function(wrap_pyfunction!(loads, m)?)?;
    m.add("DEFAULT_TIMEOUT", Bound::new(py, DefaultTimeout)?)?;
    m.add("SCHEMES", PyTuple::new(py, polycache::SCHEMES)?)?;
    Ok(())
}
