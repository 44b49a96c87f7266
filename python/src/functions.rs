//! The module's functions: Django's serializer, table creation, Prometheus text.

use crate::args;
use crate::cache::PyCache;
use crate::errors::ResultExt;
use crate::logbridge::detach;
use crate::serializer::{self, Format, Serialized};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Serializes `value` exactly as Django's `RedisSerializer` (and so polycache) stores it.
#[pyfunction]
pub(crate) fn dumps<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let mut encoded = Serialized::new(Format::Pickle);
    encoded.encode(value)?;
    Ok(PyBytes::new(value.py(), encoded.as_bytes()))
}

/// Deserializes stored bytes exactly as Django's `RedisSerializer.loads` does.
#[pyfunction]
pub(crate) fn loads<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    serializer::decode(py, Format::Pickle, data)
}

/// Creates the cache table of a `sqlite://` or `postgres://` URL if it does not exist yet.
///
/// Django's `createcachetable` for polycache's SQL backends: a deploy step for databases whose
/// application user may not create tables. Idempotent.
#[pyfunction]
pub(crate) fn create_table(py: Python<'_>, url: &str) -> PyResult<()> {
    let url = url.to_owned();
    // Connects to the database: no Python objects are touched while the GIL is released.
    detach(py, move || polycache::create_table(&url)).py_err(py)
}

/// The SQL statements `create_table(url)` runs when the table is missing, without running
/// them: validates `url` and neither connects nor writes.
#[pyfunction]
pub(crate) fn create_table_sql(py: Python<'_>, url: &str) -> PyResult<Vec<String>> {
    polycache::create_table_sql(url).py_err(py)
}

/// Renders the counters of several caches as one Prometheus page: `{name: cache}`.
#[pyfunction]
pub(crate) fn render_prometheus(caches: &Bound<'_, PyAny>) -> PyResult<String> {
    let mut snapshots = Vec::new();
    for item in args::items(caches)?.try_iter()? {
        let (name, cache): (String, Bound<'_, PyAny>) = item?.extract()?;
        let stats = match cache.cast::<PyCache>() {
            Ok(cache) => cache.get().core.cache.stats(),
            // Django's face (`polycache.django.Cache`) shares the core cache too.
            Err(_) => cache
                .cast::<crate::django::DjangoCache>()?
                .get()
                .core
                .cache
                .stats(),
        };
        snapshots.push((name, stats));
    }
    Ok(polycache::render_prometheus(
        snapshots.iter().map(|(n, s)| (n.as_str(), s)),
    ))
}
