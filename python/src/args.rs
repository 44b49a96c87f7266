//! Argument handling shared by every native class: timeouts, keys, signing keys, option
//! values and mappings, read from Python objects into Rust values.

use crate::errors;
use polycache::{Expiry, StatsSnapshot};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyInt, PyString};

/// The marker for "use the cache's default timeout" (`polycache.DEFAULT_TIMEOUT`).
#[pyclass(frozen, module = "polycache._polycache", name = "DefaultTimeout")]
pub(crate) struct DefaultTimeout;

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
pub(crate) struct TimeoutArg(pub(crate) Expiry);

pub(crate) const DEFAULT: TimeoutArg = TimeoutArg(Expiry::Default);

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

/// The name of `obj`'s type, for error messages.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// A signing key: `str` (its UTF-8 bytes) or `bytes`. Never echoed in an error.
pub(crate) struct SecretArg(pub(crate) Vec<u8>);

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

/// The text of a `str` key: UTF-8, as every backend stores it (no copy).
#[inline]
pub(crate) fn key_text<'a>(s: &'a Bound<'_, PyString>) -> PyResult<&'a str> {
    if let Some(text) = ascii_text(s) {
        return Ok(text);
    }
    s.to_str().map_err(|_| {
        errors::invalid_key(
            s.py(),
            "cache keys must be encodable as UTF-8 (this one has a lone surrogate)".to_owned(),
        )
    })
}

/// The text of a compact ASCII `str` (nearly every key), read in place: its characters are
/// its UTF-8, stored right after the object's header, so no call to
/// `PyUnicode_AsUTF8AndSize` (about 25 instructions of a `get`'s few hundred) is needed.
/// `None` for any other `str`, and where the layout is not public (CPython 3.14 on).
#[inline]
pub(crate) fn ascii_text<'a>(s: &'a Bound<'_, PyString>) -> Option<&'a str> {
    #[cfg(not(any(Py_LIMITED_API, PyPy, GraalPy, Py_3_14)))]
    // SAFETY: `s` is a live `str` borrowed for 'a; a compact ASCII one holds its
    // `PyUnicode_GET_LENGTH` ASCII characters at `PyUnicode_DATA`, unchanged while it lives
    // (a `str` is immutable), and ASCII is UTF-8.
    unsafe {
        let ptr = s.as_ptr();
        if pyo3::ffi::PyUnicode_IS_COMPACT_ASCII(ptr) != 0 {
            let data = pyo3::ffi::PyUnicode_DATA(ptr).cast::<u8>();
            let len = pyo3::ffi::PyUnicode_GET_LENGTH(ptr) as usize;
            return Some(std::str::from_utf8_unchecked(std::slice::from_raw_parts(
                data, len,
            )));
        }
    }
    #[cfg(any(Py_LIMITED_API, PyPy, GraalPy, Py_3_14))]
    let _ = s;
    None
}

/// The caller's key as UTF-8 borrowed from the `str` object (no copy); other types are a
/// `TypeError`.
#[inline(always)]
pub(crate) fn key_str<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    // Inlined for the common key, an ASCII `str`; the rest is a call.
    if let Some(text) = key.cast::<PyString>().ok().and_then(ascii_text) {
        return Ok(text);
    }
    key_str_other(key)
}

/// [`key_str`] of any other object.
#[inline(never)]
fn key_str_other<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    match key.cast::<PyString>() {
        Ok(s) => key_text(s),
        Err(_) => Err(PyTypeError::new_err(format!(
            "cache keys must be str, not {}",
            type_name(key)
        ))),
    }
}

/// The items of a mapping: `dict.items()`, or the object's own `items()`.
pub(crate) fn items<'py>(mapping: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    match mapping.cast::<PyDict>() {
        Ok(d) => Ok(d.items().into_any()),
        Err(_) => mapping.call_method0("items"),
    }
}

/// The counters of a cache as a dict.
pub(crate) fn stats_dict<'py>(py: Python<'py>, s: &StatsSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("hits", s.hits)?;
    d.set_item("misses", s.misses)?;
    d.set_item("sets", s.sets)?;
    d.set_item("deletes", s.deletes)?;
    d.set_item("errors", s.errors)?;
    d.set_item("evictions", s.evictions)?;
    d.set_item("stale_hits", s.stale_hits)?;
    d.set_item("refreshes", s.refreshes)?;
    op_stats_items(py, s, &d)?;
    Ok(d)
}

/// The totals added with per-operation metrics, and `ops`: `{name: {calls, hits, misses,
/// errors, timeouts, bytes_read, bytes_written, latency}}` for every operation, where
/// `latency` is `None` when the cache keeps no histograms, else `{count, sum` (seconds)`,
/// buckets}` with `buckets` a list of `(upper bound in seconds, cumulative count)` ending
/// with `(inf, count)`, as Prometheus counts them.
fn op_stats_items(py: Python<'_>, s: &StatsSnapshot, d: &Bound<'_, PyDict>) -> PyResult<()> {
    let totals = [
        ("timeouts", s.timeouts),
        ("bytes_read", s.bytes_read),
        ("bytes_written", s.bytes_written),
        ("breaker_opened", s.breaker_opened),
        ("breaker_half_opened", s.breaker_half_opened),
        ("breaker_closed", s.breaker_closed),
        ("latency_sampling", s.latency_sampling),
    ];
    for (name, n) in totals {
        d.set_item(name, n)?;
    }
    d.set_item("latency_histograms", s.latency_histograms)?;
    let ops = PyDict::new(py);
    for op in polycache::Operation::ALL {
        let o = s.op(op);
        let e = PyDict::new(py);
        let counters = [
            ("calls", o.calls),
            ("hits", o.hits),
            ("misses", o.misses),
            ("errors", o.errors),
            ("timeouts", o.timeouts),
            ("bytes_read", o.bytes_read),
            ("bytes_written", o.bytes_written),
        ];
        for (name, n) in counters {
            e.set_item(name, n)?;
        }
        if s.latency_histograms {
            let latency = PyDict::new(py);
            latency.set_item("count", o.latency_count)?;
            latency.set_item("sum", o.latency_sum_ns as f64 / 1e9)?;
            let bounds = polycache::LATENCY_BOUNDS_NS
                .iter()
                .map(|&ns| ns as f64 / 1e9)
                .chain([f64::INFINITY]);
            let buckets: Vec<(f64, u64)> = bounds.zip(o.cumulative_buckets()).collect();
            latency.set_item("buckets", buckets)?;
            e.set_item("latency", latency)?;
        } else {
            e.set_item("latency", py.None())?;
        }
        ops.set_item(op.name(), e)?;
    }
    d.set_item("ops", ops)
}

/// How a `set` stores: always, only when the key is absent (`nx`), or only when it is
/// present (`xx`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreMode {
    Always,
    IfAbsent,
    IfPresent,
}

impl StoreMode {
    /// django-redis' `nx`/`xx` flags; both at once is a `ValueError` (Redis refuses it too).
    pub(crate) fn of(nx: bool, xx: bool) -> PyResult<StoreMode> {
        match (nx, xx) {
            (false, false) => Ok(StoreMode::Always),
            (true, false) => Ok(StoreMode::IfAbsent),
            (false, true) => Ok(StoreMode::IfPresent),
            (true, true) => Err(pyo3::exceptions::PyValueError::new_err(
                "set() takes nx=True or xx=True, not both: nx stores only a missing key, xx \
                 only a present one",
            )),
        }
    }

    /// `set(tags=)` is a plain `set` only.
    pub(crate) fn refuse_tags(self) -> PyResult<()> {
        match self {
            StoreMode::Always => Ok(()),
            _ => Err(pyo3::exceptions::PyValueError::new_err(
                "set() takes tags= without nx=True or xx=True",
            )),
        }
    }
}

/// What `set(nx=, xx=, tags=)` asks for: a store in one of the modes, or a tagged write
/// (a plain `set` only).
pub(crate) enum SetArgs {
    Store(StoreMode),
    Tagged(TagsArg),
}

impl SetArgs {
    pub(crate) fn of(nx: bool, xx: bool, tags: Option<TagsArg>) -> PyResult<SetArgs> {
        let mode = StoreMode::of(nx, xx)?;
        match tags {
            Some(tags) if !tags.0.is_empty() => {
                mode.refuse_tags()?;
                Ok(SetArgs::Tagged(tags))
            }
            _ => Ok(SetArgs::Store(mode)),
        }
    }
}

/// A timeout in milliseconds (`pexpire`), read as [`TimeoutArg`] reads seconds.
pub(crate) fn from_millis(expiry: Expiry) -> Expiry {
    match expiry {
        Expiry::After(d) if (d / 1000).is_zero() => Expiry::Expired,
        Expiry::After(d) => Expiry::After(d / 1000),
        other => other,
    }
}

/// The latest absolute time `expire_at` accepts: far past any cache entry's life.
const MAX_EPOCH_SECS: f64 = 1e12;

/// An absolute time as `expire_at` (`per_second` 1) and `pexpire_at` (1000) take it: a
/// `datetime` (a naive one is local time, as `datetime.timestamp()` and redis-py read it)
/// or a number of seconds (milliseconds) since the Unix epoch.
pub(crate) fn when(obj: &Bound<'_, PyAny>, per_second: f64) -> PyResult<std::time::SystemTime> {
    use std::time::{Duration, UNIX_EPOCH};
    let secs = if obj.is_instance_of::<pyo3::types::PyDateTime>() {
        obj.call_method0("timestamp")?.extract::<f64>()?
    } else if obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>() {
        obj.extract::<f64>()? / per_second
    } else {
        return Err(PyTypeError::new_err(format!(
            "when must be a datetime or a number of {} since the epoch, not {}",
            if per_second == 1.0 {
                "seconds"
            } else {
                "milliseconds"
            },
            type_name(obj)
        )));
    };
    if secs.is_nan() {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "when must be a time, not NaN",
        ));
    }
    let secs = secs.clamp(0.0, MAX_EPOCH_SECS);
    Ok(UNIX_EPOCH + Duration::from_secs_f64(secs))
}

/// `tags=`: a list, tuple or other iterable of `str` (a `str` itself is refused, not read as
/// its characters). The core checks each tag (empty, too long, too many).
pub(crate) struct TagsArg(pub(crate) Vec<String>);

impl TagsArg {
    /// The tags as the core takes them.
    pub(crate) fn texts(&self) -> Vec<&str> {
        self.0.iter().map(String::as_str).collect()
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for TagsArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let wrong = || {
            PyTypeError::new_err(format!(
                "tags must be a list of str, not {}",
                type_name(&obj)
            ))
        };
        if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
            return Err(wrong());
        }
        let mut tags = Vec::new();
        for item in obj.try_iter().map_err(|_| wrong())? {
            let item = item?;
            let text = item.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!("a tag must be a str, not {}", type_name(&item)))
            })?;
            tags.push(text.to_str()?.to_owned());
        }
        // Checked here, before anything is read, computed or stored.
        let texts: Vec<&str> = tags.iter().map(String::as_str).collect();
        polycache::check_tags(&texts).map_err(|e| errors::to_py(obj.py(), e))?;
        Ok(TagsArg(tags))
    }
}
