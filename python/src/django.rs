//! `polycache._polycache._DjangoCache`: the native half of `polycache.django.Cache`.
//!
//! Django's cache API with Django's exact key rules, in Rust: the full key is
//! `{KEY_PREFIX}:{VERSION}:{key}` (Django's `default_key_func`), and every key is checked as
//! Django's `BaseCache.validate_key` checks it, with the same `CacheKeyWarning` texts.
//! Building and checking the key here instead of in Python saves about a microsecond a call.
//!
//! A custom `KEY_FUNCTION`, a subclass that overrides `make_key` / `validate_key` /
//! `make_and_validate_key`, or a version that is not an `int` take the slow path: the key is
//! made (and checked) by that Python code and goes to the core cache as a full key
//! ([`Key::full`]), so statistics, fail-open and the value size limit apply as on the fast
//! path.
//!
//! Timeouts use Django's words (`DEFAULT_TIMEOUT`, `None` never expires, `<= 0` already
//! expired); `set` answers `None`; a value pickle cannot serialize raises pickle's own error,
//! as Django's backends do. GIL policy as in the crate root: kept for local backends,
//! released around blocking work on owned copies otherwise.

use crate::errors::{self, ResultExt};
use crate::logbridge::detach;
use crate::serializer::{self, Format, Serialized};
use crate::{type_name, PyCache, TimeoutArg};
use polycache::{Backend, Cache, Expiry, Key, Value};
use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyType};
use std::borrow::Cow;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Django's `MEMCACHE_MAX_KEY_LENGTH`.
const MEMCACHE_MAX_KEY_LENGTH: usize = 250;

/// True for the characters Django's `memcached_error_chars_re` (`[\x00-\x20\x7f]`) matches.
/// Every byte of a multi-byte UTF-8 sequence is >= 0x80, so a byte scan is exact.
#[inline]
fn has_memcached_error_chars(s: &str) -> bool {
    s.bytes().any(|b| b <= 0x20 || b == 0x7f)
}

/// `len(s)` as Python counts it: code points.
#[inline]
fn char_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// The number of characters of `str(v)`.
#[inline]
fn decimal_len(v: i64) -> usize {
    let mut n = v.unsigned_abs();
    let mut len = usize::from(v < 0) + 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// `polycache.exceptions.SerializationError`, to unwrap pickle's own error from it.
static SERIALIZATION_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Django raises whatever pickle raised; the core serializer wraps it in
/// `SerializationError` with pickle's error as its cause, so hand that cause back.
#[cold]
fn pickle_error(py: Python<'_>, err: PyErr) -> PyErr {
    match SERIALIZATION_ERROR.import(py, "polycache.exceptions", "SerializationError") {
        Ok(cls) if err.is_instance(py, cls.as_any()) => err.cause(py).unwrap_or(err),
        _ => err,
    }
}

#[inline]
fn encode<'py>(format: Format, value: &Bound<'py, PyAny>) -> PyResult<Serialized<'py>> {
    let mut encoded = Serialized::new(format);
    match encoded.encode(value) {
        Ok(()) => Ok(encoded),
        Err(err) => Err(pickle_error(value.py(), err)),
    }
}

#[inline]
fn decode<'py>(py: Python<'py>, format: Format, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    serializer::decode(py, format, data).map_err(|err| pickle_error(py, err))
}

/// A timeout argument: what [`TimeoutArg`] reads, or another object (Django's own
/// `DEFAULT_TIMEOUT` marker, or a wrong type) for [`DjangoCache::expiry`] to judge.
enum DjangoTimeout {
    Known(Expiry),
    Other(Py<PyAny>),
}

/// The default of every `timeout` parameter.
const DEFAULT_EXPIRY: DjangoTimeout = DjangoTimeout::Known(Expiry::Default);

impl<'a, 'py> FromPyObject<'a, 'py> for DjangoTimeout {
    type Error = PyErr;

    #[inline]
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        // Django's marker is a bare `object()`: no need to try it as a number first.
        if obj.get_type().is(obj.py().get_type::<PyAny>()) {
            return Ok(DjangoTimeout::Other(obj.to_owned().unbind()));
        }
        match obj.extract::<TimeoutArg>() {
            Ok(t) => Ok(DjangoTimeout::Known(t.0)),
            Err(_) => Ok(DjangoTimeout::Other(obj.to_owned().unbind())),
        }
    }
}

/// How the keys of one call are made.
#[derive(Clone, Copy)]
enum Mode {
    /// Django's default key function at an `int` version: the core builds the full key.
    Native(Option<i64>),
    /// Python made the full key (custom key function, overridden methods, odd version).
    Raw,
}

/// One caller key, made and checked.
enum Made<'a> {
    /// The caller's key as text; the core prepends `{prefix}:{version}:`.
    Native(Cow<'a, str>),
    /// The full key, stored as is.
    Raw(String),
}

/// The native base of `polycache.django.Cache`; see the module docs.
#[pyclass(
    frozen,
    subclass,
    module = "polycache._polycache",
    name = "_DjangoCache"
)]
pub(crate) struct DjangoCache {
    cache: Cache,
    /// How values become bytes (the `SERIALIZER` option).
    format: Format,
    local: bool,
    /// The backend stores nothing (`dummy://`): values are not serialized, as Django's
    /// `DummyCache` does not pickle them either.
    discard: bool,
    /// `KEY_PREFIX` as Django formats it, its length in characters, and whether it holds a
    /// character memcached refuses.
    prefix: String,
    prefix_chars: usize,
    prefix_bad: bool,
    /// `VERSION` as given; `version_int` when it is a plain `int` (the core's version).
    version: Py<PyAny>,
    version_int: Option<i64>,
    /// Django's `default_timeout` (an `int` or `None`).
    default_timeout: Py<PyAny>,
    /// Django's `DEFAULT_TIMEOUT` marker object.
    sentinel: Py<PyAny>,
    /// `CacheKeyWarning`.
    warning: Py<PyAny>,
    /// Django's `default_key_func`, and the key function in use (`None`: the default).
    default_key_func: Py<PyAny>,
    key_func: Mutex<Option<Py<PyAny>>>,
    /// Keys take the Python path (see [`Mode::Raw`]).
    raw: AtomicBool,
    /// The class overrides `make_key`, `validate_key` or `make_and_validate_key`.
    custom_make_key: bool,
    custom_validate: bool,
    custom_make_and_validate: bool,
}

impl DjangoCache {
    /// Runs `f` on `key`: see [`crate::run_on_key`].
    #[inline]
    fn with_key<T: Send>(
        &self,
        py: Python<'_>,
        key: &str,
        f: impl FnOnce(&Cache, &str) -> T + Send,
    ) -> T {
        crate::run_on_key(py, &self.cache, self.local, key, f)
    }

    /// Runs `f` on the core keys of `made`: on owned copies without the GIL unless local.
    fn with_keys<T: Send>(
        &self,
        py: Python<'_>,
        made: &[Made<'_>],
        mode: Mode,
        f: impl FnOnce(&Cache, &[Key<'_>]) -> T + Send,
    ) -> T {
        if self.local {
            f(&self.cache, &core_keys(made.iter().map(made_text), mode))
        } else {
            let owned = owned_names(made);
            let cache = &self.cache;
            detach(py, move || {
                f(cache, &core_keys(owned.iter().map(String::as_str), mode))
            })
        }
    }

    /// Runs `f` on the backend itself: for full keys made in Python.
    fn with_backend<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&dyn Backend) -> T + Send) -> T {
        let backend = self.cache.backend().as_ref();
        if self.local {
            f(backend)
        } else {
            detach(py, move || f(backend))
        }
    }

    /// Django's timeout argument: omitted or `DEFAULT_TIMEOUT` is the default, `None` never
    /// expires, a number of seconds `<= 0` is already expired.
    #[inline]
    fn expiry(&self, py: Python<'_>, timeout: DjangoTimeout) -> PyResult<Expiry> {
        match timeout {
            DjangoTimeout::Known(expiry) => Ok(expiry),
            DjangoTimeout::Other(t) if t.is(self.sentinel.bind(py)) => Ok(Expiry::Default),
            DjangoTimeout::Other(t) => Err(PyTypeError::new_err(format!(
                "timeout must be a number of seconds, None or DEFAULT_TIMEOUT, not {}",
                type_name(t.bind(py))
            ))),
        }
    }

    /// How the keys of a call at `version` are made.
    #[inline]
    fn mode(&self, version: Option<&Bound<'_, PyAny>>) -> Mode {
        if self.raw.load(Ordering::Relaxed) {
            return Mode::Raw;
        }
        match version {
            None => Mode::Native(None),
            Some(v) if v.is_none() => Mode::Native(None),
            Some(v) if v.is_exact_instance_of::<PyInt>() => match v.extract::<i64>() {
                Ok(n) => Mode::Native(Some(n)),
                Err(_) => Mode::Raw,
            },
            Some(_) => Mode::Raw,
        }
    }

    /// Makes and checks one key.
    #[inline]
    fn make<'a>(
        &self,
        slf: &Bound<'_, Self>,
        key: &'a Bound<'_, PyAny>,
        mode: Mode,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Made<'a>> {
        match mode {
            Mode::Native(v) => {
                let name: Cow<'a, str> = match key.cast::<PyString>() {
                    Ok(s) => Cow::Borrowed(key_text(s)?),
                    // Django formats any key with "%s".
                    Err(_) => Cow::Owned(key_text(&key.str()?)?.to_owned()),
                };
                let version = v.unwrap_or_else(|| self.version_int.unwrap_or(1));
                if self.custom_validate {
                    let full = format!("{}:{version}:{name}", self.prefix);
                    slf.call_method1("validate_key", (full,))?;
                } else {
                    let chars = self.prefix_chars + 2 + decimal_len(version) + char_len(&name);
                    let bad = self.prefix_bad || has_memcached_error_chars(&name);
                    if chars > MEMCACHE_MAX_KEY_LENGTH || bad {
                        let full = format!("{}:{version}:{name}", self.prefix);
                        self.warn(slf.py(), &full, chars, bad)?;
                    }
                }
                Ok(Made::Native(name))
            }
            Mode::Raw => self.make_raw(slf, key, version).map(Made::Raw),
        }
    }

    #[cold]
    fn make_raw(
        &self,
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let py = slf.py();
        let version = version.filter(|v| !v.is_none());
        if self.custom_make_and_validate {
            let full = slf.call_method1("make_and_validate_key", (key, version))?;
            return full_key_text(&full);
        }
        let full = if self.custom_make_key {
            full_key_text(&slf.call_method1("make_key", (key, version))?)?
        } else {
            let version = match version {
                Some(v) => v.clone(),
                None => self.version.bind(py).clone(),
            };
            self.key_func_call(py, key, &version)?
        };
        if self.custom_validate {
            slf.call_method1("validate_key", (&full,))?;
        } else {
            self.validate_text(py, &full)?;
        }
        Ok(full)
    }

    /// `key_func(key, key_prefix, version)`, or Django's default format without a call.
    fn key_func_call(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        version: &Bound<'_, PyAny>,
    ) -> PyResult<String> {
        let func = self
            .key_func
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|f| f.clone_ref(py));
        match func {
            Some(func) => full_key_text(&func.bind(py).call1((key, &self.prefix, version))?),
            None => Ok(format!(
                "{}:{}:{}",
                self.prefix,
                key_text(&version.str()?)?,
                key_text(&key.str()?)?
            )),
        }
    }

    /// Django's `validate_key` on a full key.
    fn validate_text(&self, py: Python<'_>, full: &str) -> PyResult<()> {
        let chars = char_len(full);
        let bad = has_memcached_error_chars(full);
        if chars > MEMCACHE_MAX_KEY_LENGTH || bad {
            self.warn(py, full, chars, bad)?;
        }
        Ok(())
    }

    /// The warnings of Django's `memcache_key_warnings`, word for word.
    #[cold]
    fn warn(&self, py: Python<'_>, full: &str, chars: usize, bad: bool) -> PyResult<()> {
        let repr = PyString::new(py, full).repr()?;
        let repr = repr.to_str()?;
        let category = self.warning.bind(py);
        if chars > MEMCACHE_MAX_KEY_LENGTH {
            let message = format!(
                "Cache key will cause errors if used with memcached: {repr} (longer than {MEMCACHE_MAX_KEY_LENGTH})"
            );
            PyErr::warn(py, category, &c_message(message), 1)?;
        }
        if bad {
            let message = format!(
                "Cache key contains characters that will cause errors if used with memcached: {repr}"
            );
            PyErr::warn(py, category, &c_message(message), 1)?;
        }
        Ok(())
    }

    /// Makes and checks every key of `keys`.
    fn make_all<'a>(
        &self,
        slf: &Bound<'_, Self>,
        keys: &'a [Bound<'_, PyAny>],
        mode: Mode,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Made<'a>>> {
        keys.iter()
            .map(|k| self.make(slf, k, mode, version))
            .collect()
    }
}

/// The text of a key: UTF-8, as every backend stores it.
#[inline]
fn key_text<'a>(s: &'a Bound<'_, PyString>) -> PyResult<&'a str> {
    s.to_str().map_err(|_| {
        errors::invalid_key(
            s.py(),
            "cache keys must be encodable as UTF-8 (this one has a lone surrogate)".to_owned(),
        )
    })
}

/// The full key a Python key function returned.
fn full_key_text(full: &Bound<'_, PyAny>) -> PyResult<String> {
    match full.cast::<PyString>() {
        Ok(s) => Ok(key_text(s)?.to_owned()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "the cache key function must return a str, not {}",
            type_name(full)
        ))),
    }
}

/// A warning text as C wants it (a NUL inside the key is shown by repr as `\x00`).
fn c_message(message: String) -> CString {
    CString::new(message).unwrap_or_else(|e| {
        let mut bytes = e.into_vec();
        bytes.retain(|&b| b != 0);
        CString::new(bytes).unwrap_or_default()
    })
}

/// Owned copies of made keys, for calls that release the GIL.
fn owned_names(made: &[Made<'_>]) -> Vec<String> {
    made.iter()
        .map(|m| match m {
            Made::Native(n) => n.as_ref().to_owned(),
            Made::Raw(s) => s.clone(),
        })
        .collect()
}

#[pymethods]
impl DjangoCache {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        location, *, key_prefix, version, default_timeout, options, key_func,
        default_key_func, sentinel, warning, custom_make_key, custom_validate,
        custom_make_and_validate
    ))]
    fn new(
        py: Python<'_>,
        location: &str,
        key_prefix: String,
        version: Bound<'_, PyAny>,
        default_timeout: Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyAny>>,
        key_func: Option<Bound<'_, PyAny>>,
        default_key_func: Bound<'_, PyAny>,
        sentinel: Bound<'_, PyAny>,
        warning: Bound<'_, PyAny>,
        custom_make_key: bool,
        custom_validate: bool,
        custom_make_and_validate: bool,
    ) -> PyResult<Self> {
        let version_int = if version.is_exact_instance_of::<PyInt>() {
            version.extract::<i64>().ok()
        } else {
            None
        };
        let timeout = if default_timeout.is_none() {
            TimeoutArg(Expiry::Never)
        } else {
            default_timeout.extract::<TimeoutArg>()?
        };
        let inner = PyCache::new(
            py,
            location,
            Some(key_prefix.clone()),
            Some(version_int.unwrap_or(1)),
            timeout,
            options,
            None,
            None,
            None,
            None,
            None,
        )?;
        let key_func = key_func.filter(|f| !f.is(&default_key_func));
        let raw = key_func.is_some()
            || custom_make_key
            || custom_make_and_validate
            || version_int.is_none();
        Ok(DjangoCache {
            discard: inner.cache.backend().name() == "dummy",
            cache: inner.cache,
            format: inner.format,
            local: inner.local,
            prefix_chars: char_len(&key_prefix),
            prefix_bad: has_memcached_error_chars(&key_prefix),
            prefix: key_prefix,
            version: version.unbind(),
            version_int,
            default_timeout: default_timeout.unbind(),
            sentinel: sentinel.unbind(),
            warning: warning.unbind(),
            default_key_func: default_key_func.unbind(),
            key_func: Mutex::new(key_func.map(Bound::unbind)),
            raw: AtomicBool::new(raw),
            custom_make_key,
            custom_validate,
            custom_make_and_validate,
        })
    }

    /// The value under `key`, or `default` on a miss.
    #[pyo3(signature = (key, default = None, version = None))]
    fn get<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let py = slf.py();
        let mode = this.mode(version);
        let made = this.make(slf, key, mode, version)?;
        let found = this
            .with_key(py, made_text(&made), |c, k| c.get(core_key(k, mode)))
            .py_err(py)?;
        match found {
            Some(ref v) => decode(py, this.format, v),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    /// Stores `value` under `key`; a timeout of 0 or less stores nothing and removes the old
    /// value. Returns None, as Django's backends do.
    #[pyo3(signature = (key, value, timeout = DEFAULT_EXPIRY, version = None))]
    fn set(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        timeout: DjangoTimeout,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let this = slf.get();
        let py = slf.py();
        let expiry = this.expiry(py, timeout)?;
        let mode = this.mode(version);
        let made = this.make(slf, key, mode, version)?;
        if this.discard {
            return Ok(());
        }
        let encoded = encode(this.format, value)?;
        let bytes = encoded.as_bytes();
        // A failed write removes the old value, as Django's memcached backends do: a session
        // must not be served stale after a write that was too large.
        let write = |c: &Cache, k: &str, bytes: &[u8]| {
            let key = core_key(k, mode);
            c.set(key, bytes, expiry).inspect_err(|_| {
                let _ = c.delete(key);
            })
        };
        if this.local {
            write(&this.cache, made_text(&made), bytes)
        } else {
            let (name, bytes) = (made_text(&made).to_owned(), bytes.to_vec());
            let cache = &this.cache;
            detach(py, move || write(cache, &name, &bytes))
        }
        .py_err(py)?;
        Ok(())
    }

    /// Stores `value` only if `key` is absent; True when it stored.
    #[pyo3(signature = (key, value, timeout = DEFAULT_EXPIRY, version = None))]
    fn add(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        timeout: DjangoTimeout,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let this = slf.get();
        let py = slf.py();
        let expiry = this.expiry(py, timeout)?;
        let mode = this.mode(version);
        let made = this.make(slf, key, mode, version)?;
        if this.discard {
            return Ok(true);
        }
        let encoded = encode(this.format, value)?;
        let bytes = encoded.as_bytes();
        if this.local {
            this.cache
                .add(core_key(made_text(&made), mode), bytes, expiry)
        } else {
            let (name, bytes) = (made_text(&made).to_owned(), bytes.to_vec());
            let cache = &this.cache;
            detach(py, move || cache.add(core_key(&name, mode), &bytes, expiry))
        }
        .py_err(py)
    }

    /// Removes `key`; True when it was present.
    #[pyo3(signature = (key, version = None))]
    fn delete(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let this = slf.get();
        let py = slf.py();
        let mode = this.mode(version);
        let made = this.make(slf, key, mode, version)?;
        this.with_key(py, made_text(&made), |c, k| c.delete(core_key(k, mode)))
            .py_err(py)
    }

    /// True when `key` is in the cache and has not expired.
    #[pyo3(signature = (key, version = None))]
    fn has_key(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let this = slf.get();
        let py = slf.py();
        let mode = this.mode(version);
        let made = this.make(slf, key, mode, version)?;
        this.with_key(py, made_text(&made), |c, k| c.has_key(core_key(k, mode)))
            .py_err(py)
    }

    /// Gives `key` a new timeout; True when the key was present.
    #[pyo3(signature = (key, timeout = DEFAULT_EXPIRY, version = None))]
    fn touch(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        timeout: DjangoTimeout,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let this = slf.get();
        let py = slf.py();
        let expiry = this.expiry(py, timeout)?;
        let mode = this.mode(version);
        let made = this.make(slf, key, mode, version)?;
        this.with_key(py, made_text(&made), |c, k| {
            c.touch(core_key(k, mode), expiry)
        })
        .py_err(py)
    }

    /// Adds `delta` to the integer under `key` atomically and returns the new value;
    /// `ValueError` when the key is missing.
    #[pyo3(signature = (key, delta = 1, version = None))]
    fn incr(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        delta: i64,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i64> {
        let this = slf.get();
        let py = slf.py();
        let mode = this.mode(version);
        let made = this.make(slf, key, mode, version)?;
        this.with_key(py, made_text(&made), |c, k| {
            c.incr(core_key(k, mode), delta)
        })
        .py_err(py)
    }

    /// Subtracts `delta` from the integer under `key` atomically and returns the new value.
    #[pyo3(signature = (key, delta = 1, version = None))]
    fn decr(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        delta: i64,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i64> {
        let delta = delta.checked_neg().ok_or_else(|| {
            errors::to_py(
                slf.py(),
                polycache::Error::new(
                    polycache::ErrorKind::Overflow,
                    "delta is out of the 64-bit range",
                ),
            )
        })?;
        Self::incr(slf, key, delta, version)
    }

    /// A dict of the keys found and their values; missing keys are left out.
    #[pyo3(signature = (keys, version = None))]
    fn get_many<'py>(
        slf: &Bound<'py, Self>,
        keys: &Bound<'py, PyAny>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let this = slf.get();
        let py = slf.py();
        let objs = keys.try_iter()?.collect::<PyResult<Vec<_>>>()?;
        let mode = this.mode(version);
        let made = this.make_all(slf, &objs, mode, version)?;
        let values: Vec<Option<Value>> = this
            .with_keys(py, &made, mode, |c, keys| c.get_many_keys(keys))
            .py_err(py)?;
        let found = PyDict::new(py);
        for (obj, value) in objs.iter().zip(values) {
            if let Some(value) = value {
                found.set_item(obj, decode(py, this.format, &value)?)?;
            }
        }
        Ok(found)
    }

    /// Stores every pair of `data`; returns the list of keys that failed to store.
    #[pyo3(signature = (data, timeout = DEFAULT_EXPIRY, version = None))]
    fn set_many<'py>(
        slf: &Bound<'py, Self>,
        data: &Bound<'py, PyAny>,
        timeout: DjangoTimeout,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let this = slf.get();
        let py = slf.py();
        let expiry = this.expiry(py, timeout)?;
        let items = match data.cast::<PyDict>() {
            Ok(d) => d.items().into_any(),
            Err(_) => data.call_method0("items")?,
        };
        let mode = this.mode(version);
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for item in items.try_iter()? {
            let (k, v): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item?.extract()?;
            keys.push(k);
            values.push(v);
        }
        let made = this.make_all(slf, &keys, mode, version)?;
        if this.discard {
            return Ok(PyList::empty(py));
        }
        // Every value is serialized before anything is stored: one bad value stores none.
        let encoded = values
            .iter()
            .map(|v| encode(this.format, v))
            .collect::<PyResult<Vec<_>>>()?;
        let failed: Vec<usize> = if this.local {
            let pairs: Vec<(Key<'_>, &[u8])> = made
                .iter()
                .zip(&encoded)
                .map(|(k, e)| (core_key(made_text(k), mode), e.as_bytes()))
                .collect();
            this.cache.set_many_keys(&pairs, expiry)
        } else {
            let owned: Vec<(String, Vec<u8>)> = owned_names(&made)
                .into_iter()
                .zip(&encoded)
                .map(|(k, e)| (k, e.as_bytes().to_vec()))
                .collect();
            let cache = &this.cache;
            detach(py, move || {
                let pairs: Vec<(Key<'_>, &[u8])> = owned
                    .iter()
                    .map(|(k, v)| (core_key(k, mode), v.as_slice()))
                    .collect();
                cache.set_many_keys(&pairs, expiry)
            })
        }
        .py_err(py)?;
        PyList::new(py, failed.into_iter().map(|i| &keys[i]))
    }

    /// Removes every key in `keys`.
    #[pyo3(signature = (keys, version = None))]
    fn delete_many(
        slf: &Bound<'_, Self>,
        keys: &Bound<'_, PyAny>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let this = slf.get();
        let py = slf.py();
        let objs = keys.try_iter()?.collect::<PyResult<Vec<_>>>()?;
        let mode = this.mode(version);
        let made = this.make_all(slf, &objs, mode, version)?;
        this.with_keys(py, &made, mode, |c, keys| c.delete_many_keys(keys))
            .py_err(py)?;
        Ok(())
    }

    /// Removes this cache's entries: those under `{KEY_PREFIX}:` (everything when the prefix
    /// is empty, a custom key function makes the keys, or the backend cannot scope a clear
    /// to a prefix, as memcached).
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        let custom_keys = self.custom_make_key
            || self.custom_make_and_validate
            || self
                .key_func
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some();
        if custom_keys {
            // Custom keys need not start with the prefix: clear the store, as Django does.
            return self.with_backend(py, |b| b.clear(b"")).py_err(py);
        }
        let cleared = if self.local {
            self.cache.clear()
        } else {
            detach(py, || self.cache.clear())
        };
        match cleared {
            // Memcached cannot scope a clear to a prefix: empty it all, as Django's memcached
            // backends always do.
            Err(e) if e.kind() == polycache::ErrorKind::Unsupported => {
                self.with_backend(py, |b| b.clear(b"")).py_err(py)
            }
            other => other.py_err(py),
        }
    }

    /// Does nothing: connections are pooled and live as long as the cache.
    #[pyo3(signature = (**kwargs))]
    fn close(&self, kwargs: Option<&Bound<'_, PyDict>>) {
        let _ = kwargs;
    }

    /// Django's `make_key`: `key_func(key, key_prefix, version)`.
    #[pyo3(signature = (key, version = None))]
    fn make_key(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let this = slf.get();
        let py = slf.py();
        let version = match version.filter(|v| !v.is_none()) {
            Some(v) => v.clone(),
            None => this.version.bind(py).clone(),
        };
        let func = this
            .key_func
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|f| f.clone_ref(py));
        match func {
            // A custom key function may return anything; hand it back as it is.
            Some(func) => Ok(func.bind(py).call1((key, &this.prefix, version))?.unbind()),
            None => Ok(PyString::new(py, &this.key_func_call(py, key, &version)?)
                .into_any()
                .unbind()),
        }
    }

    /// Django's `validate_key`: warns (`CacheKeyWarning`) about keys memcached would refuse.
    fn validate_key(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        match key.cast::<PyString>() {
            Ok(s) => self.validate_text(py, key_text(s)?),
            Err(_) => Err(PyTypeError::new_err(format!(
                "cache keys must be str, not {}",
                type_name(key)
            ))),
        }
    }

    /// `make_key` then `validate_key`, through any override of either.
    #[pyo3(signature = (key, version = None))]
    fn make_and_validate_key<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let full = slf.call_method1("make_key", (key, version))?;
        slf.call_method1("validate_key", (&full,))?;
        Ok(full)
    }

    /// The key function (Django's `default_key_func` unless `KEY_FUNCTION` names another).
    #[getter]
    fn get_key_func(&self, py: Python<'_>) -> Py<PyAny> {
        match &*self.key_func.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(f) => f.clone_ref(py),
            None => self.default_key_func.clone_ref(py),
        }
    }

    #[setter]
    fn set_key_func(&self, func: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let func = func.ok_or_else(|| PyAttributeError::new_err("key_func cannot be deleted"))?;
        if !func.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "key_func must be callable, not {}",
                type_name(&func)
            )));
        }
        let custom = !func.is(self.default_key_func.bind(func.py()));
        *self.key_func.lock().unwrap_or_else(|e| e.into_inner()) = custom.then(|| func.unbind());
        let raw = custom
            || self.custom_make_key
            || self.custom_make_and_validate
            || self.version_int.is_none();
        self.raw.store(raw, Ordering::Relaxed);
        Ok(())
    }

    /// `KEY_PREFIX`.
    #[getter]
    fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// `VERSION`.
    #[getter]
    fn version(&self, py: Python<'_>) -> Py<PyAny> {
        self.version.clone_ref(py)
    }

    /// The default timeout in seconds (an `int`), or None when entries never expire.
    #[getter]
    fn default_timeout(&self, py: Python<'_>) -> Py<PyAny> {
        self.default_timeout.clone_ref(py)
    }

    /// The location, with any password redacted.
    #[getter]
    fn location(&self) -> &str {
        self.cache.location()
    }

    /// The serializer of this cache's values: `"pickle"`, `"json"` or `"raw"` (`OPTIONS`
    /// `SERIALIZER`, or `serializer=` in the `LOCATION`).
    #[getter]
    fn serializer(&self) -> &'static str {
        self.cache.serializer()
    }

    /// True when the backend answers in memory (calls keep the GIL and never block).
    #[getter]
    fn is_local(&self) -> bool {
        self.local
    }

    /// The counters of this cache: hits, misses, sets, deletes, errors, evictions.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        crate::stats_dict(py, &self.cache.stats())
    }

    /// A native `Cache` over this cache's store, key prefix, version and serializer, for
    /// `polycache.Job` (whose runner works on the native cache).
    fn _polycache_native(&self) -> crate::PyCache {
        crate::PyCache {
            cache: self.cache.clone(),
            local: self.local,
            format: self.format,
        }
    }
}

/// The core key of a made key's text: the caller's key at the call's version, or a full
/// key made in Python.
#[inline]
fn core_key(text: &str, mode: Mode) -> Key<'_> {
    match mode {
        Mode::Native(v) => Key::new(text).maybe_version(v),
        Mode::Raw => Key::full(text),
    }
}

fn core_keys<'a>(texts: impl Iterator<Item = &'a str>, mode: Mode) -> Vec<Key<'a>> {
    texts.map(|t| core_key(t, mode)).collect()
}

#[inline]
fn made_text<'a>(made: &'a Made<'_>) -> &'a str {
    match made {
        Made::Native(n) => n,
        Made::Raw(s) => s,
    }
}
