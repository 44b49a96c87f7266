//! `read_cache_settings`: one entry of Django's `CACHES` read by the core's rules
//! ([`polycache::settings`]), for `polycache.caches.configure` and `polycache.django.Cache`.

use crate::args::{items, type_name};
use crate::errors;
use polycache::settings::{read_entry, Rules, SettingValue};
use polycache::CacheOptions;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// How deep a settings tree may nest (a mapping that holds itself ends here).
const MAX_DEPTH: usize = 32;

/// A Python value as a settings value.
pub(crate) fn value(v: &Bound<'_, PyAny>, depth: usize) -> PyResult<SettingValue> {
    if depth > MAX_DEPTH {
        return Err(errors::configuration(
            v.py(),
            format!("the cache settings nest deeper than {MAX_DEPTH} levels"),
        ));
    }
    if v.is_none() {
        return Ok(SettingValue::Null);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(SettingValue::Bool(b.is_true()));
    }
    if v.is_instance_of::<PyInt>() {
        if let Ok(n) = v.extract::<i64>() {
            return Ok(SettingValue::Int(n));
        }
    } else if let Ok(f) = v.cast::<PyFloat>() {
        return Ok(SettingValue::Float(f.value()));
    } else if let Ok(s) = v.cast::<PyString>() {
        return Ok(SettingValue::Str(s.to_str()?.to_owned()));
    } else if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let mut out = Vec::new();
        for item in v.try_iter()? {
            out.push(value(&item?, depth + 1)?);
        }
        return Ok(SettingValue::List(out));
    } else if v.is_instance_of::<PyDict>() || is_mapping(v) {
        let mut out = Vec::new();
        for item in items(v)?.try_iter()? {
            let (k, val): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
            out.push((value(&k, depth + 1)?, value(&val, depth + 1)?));
        }
        return Ok(SettingValue::Map(out));
    }
    // Anything else, with what Django's `int()` and `str()` make of it.
    let int = v
        .py()
        .get_type::<PyInt>()
        .call1((v,))
        .and_then(|n| n.extract::<i64>())
        .ok();
    Ok(SettingValue::Other {
        type_name: type_name(v),
        int,
        text: v.str().map(|s| s.to_string()).unwrap_or_default(),
    })
}

fn is_mapping(v: &Bound<'_, PyAny>) -> bool {
    v.py()
        .import("collections.abc")
        .and_then(|m| m.getattr("Mapping"))
        .and_then(|mapping| v.is_instance(&mapping))
        .unwrap_or(false)
}

/// Reads one entry of a `CACHES`-shaped mapping by the core's rules.
///
/// Answers a dict: `location` (the URL), `options` (the core's typed options, as `_Options`,
/// for `Cache(options=...)`), and when given or
/// implied `key_prefix`, `version` (an int, or the object given when a Django backend's
/// `VERSION` is not one) and `timeout` (seconds; `None` never expires). `django_store`
/// selects the Django backend's reading (the store of a `memory://` without a name);
/// `ignore_exceptions` is django-redis' `DJANGO_REDIS_IGNORE_EXCEPTIONS`. A fault in
/// `OPTIONS` raises `InvalidOptionError`, any other `ConfigurationError`.
#[pyfunction]
#[pyo3(signature = (entry, *, name = None, django_store = None, ignore_exceptions = false))]
pub(crate) fn read_cache_settings<'py>(
    py: Python<'py>,
    entry: &Bound<'py, PyAny>,
    name: Option<&str>,
    django_store: Option<String>,
    ignore_exceptions: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let rules = match django_store {
        Some(store) => Rules::DjangoBackend {
            store,
            ignore_exceptions,
        },
        None => Rules::Configuration,
    };
    let tree = value(entry, 0)?;
    let read = match read_entry(name, &tree, &rules) {
        Ok(read) => read,
        Err(e) if e.in_options => return Err(invalid_option(py, e.error.message())),
        Err(e) => return Err(errors::to_py(py, e.error)),
    };
    let out = PyDict::new(py);
    let config = &read.config;
    out.set_item("location", &config.location)?;
    let options = PyOptions {
        options: config.options.clone(),
    };
    out.set_item("options", Bound::new(py, options)?)?;
    if let Some(prefix) = &config.key_prefix {
        out.set_item("key_prefix", prefix)?;
    }
    if read.version_as_given {
        let given = entry
            .get_item("VERSION")
            .map_err(|_| PyTypeError::new_err("the VERSION setting changed while it was read"))?;
        out.set_item("version", given)?;
    } else if let Some(version) = config.version {
        out.set_item("version", version)?;
    }
    if let Some(timeout) = read.timeout_seconds {
        match timeout {
            None => out.set_item("timeout", py.None())?,
            Some(t) if t.fract() == 0.0 && t.abs() < 9.0e15 => out.set_item("timeout", t as i64)?,
            Some(t) => out.set_item("timeout", t)?,
        }
    }
    Ok(out)
}

/// `polycache.django.InvalidOptionError` with `message`: a fault in Django's `OPTIONS`.
pub(crate) fn invalid_option(py: Python<'_>, message: &str) -> PyErr {
    let class = py
        .import("polycache._settings")
        .and_then(|m| m.getattr("InvalidOptionError"));
    match class.and_then(|c| c.call1((message,))) {
        Ok(err) => PyErr::from_value(err),
        Err(e) => e,
    }
}

/// The options of a `CACHES` entry as the core read them: typed values, each with the
/// `OPTIONS` key it came from. Handed back to `Cache(options=...)` as they are, so no
/// option becomes text and is parsed again. Immutable; shared freely between threads.
#[pyclass(frozen, module = "polycache._polycache", name = "_Options")]
pub(crate) struct PyOptions {
    pub(crate) options: CacheOptions,
}

#[pymethods]
impl PyOptions {
    fn __len__(&self) -> usize {
        self.options.len()
    }

    /// The options as URL query text, secrets included: for a client of the same server
    /// (`polycache.django.get_redis_connection`).
    fn to_query(&self) -> String {
        self.options.to_query()
    }

    fn __repr__(&self) -> String {
        let names: Vec<&str> = self.options.iter().map(|o| o.name.as_str()).collect();
        format!("<polycache._Options {}>", names.join(", "))
    }
}
