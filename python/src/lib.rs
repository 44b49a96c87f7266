//! `polycache._polycache`: the native half of the `polycache` Python package.
//!
//! Each class lives in a module of its own: `Cache` ([`cache`]), Django's `_DjangoCache`
//! ([`django`]), `Memo` ([`memo`], the native half of `@polycache.cached`) and `JobRunner`
//! ([`jobs`], of `polycache.Job`). Every cache operation is written once, in [`ops`], for
//! the sync call, the call that releases the GIL and the awaited call; [`awaitable`] resolves
//! awaits on polycache's runtime through one completion queue per event loop; [`loader`]
//! runs Python callables as the core's loaders; [`args`] reads the arguments they share.

#[macro_use]
mod twins;

mod argkey;
mod args;
mod awaitable;
mod cache;
mod cli;
mod django;
mod errors;
mod fastget;
mod fastset;
mod finalize;
#[cfg(feature = "bench-floor")]
mod floor;
mod functions;
mod jobs;
mod loader;
mod lock;
mod logbridge;
mod memo;
mod ops;
#[cfg(feature = "bench-pyo3-async-runtimes")]
mod pyo3_bench;
mod ready;
mod scan;
mod serializer;
mod settings;
mod structures;
mod tags;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// The native module; `polycache` re-exports its public names.
#[pymodule]
fn _polycache(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    logbridge::install();
    m.add_class::<cache::PyCache>()?;
    cache::install_fast_get(py)?;
    cache::install_fast_set(py)?;
    m.add_class::<args::DefaultTimeout>()?;
    m.add_class::<django::DjangoCache>()?;
    django::install_fast_set(py)?;
    django::install_fast_get(py)?;
    m.add_class::<memo::Memo>()?;
    m.add_class::<jobs::JobRunner>()?;
    m.add_class::<lock::PyLock>()?;
    m.add_class::<awaitable::Completions>()?;
    m.add_class::<scan::KeyScan>()?;
    m.add_class::<tags::PyTagStamp>()?;
    m.add_class::<settings::PyOptions>()?;
    awaitable::install(m)?;
    m.add_function(wrap_pyfunction!(finalize::_shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(awaitable::_wake_per_operation, m)?)?;
    m.add_function(wrap_pyfunction!(scan::_blocking_calls, m)?)?;
    m.add_function(wrap_pyfunction!(argkey::call_key, m)?)?;
    m.add_function(wrap_pyfunction!(functions::render_prometheus, m)?)?;
    m.add_function(wrap_pyfunction!(functions::create_table, m)?)?;
    m.add_function(wrap_pyfunction!(functions::create_table_sql, m)?)?;
    m.add_function(wrap_pyfunction!(functions::dumps, m)?)?;
    m.add_function(wrap_pyfunction!(functions::loads, m)?)?;
    m.add_function(wrap_pyfunction!(settings::read_cache_settings, m)?)?;
    m.add_function(wrap_pyfunction!(cli::cli_main, m)?)?;
    m.add("DEFAULT_TIMEOUT", Bound::new(py, args::DefaultTimeout)?)?;
    m.add("SCHEMES", PyTuple::new(py, polycache::SCHEMES)?)?;
    #[cfg(feature = "bench-pyo3-async-runtimes")]
    m.add_function(wrap_pyfunction!(
        pyo3_bench::_aget_via_pyo3_async_runtimes,
        m
    )?)?;
    #[cfg(feature = "bench-floor")]
    floor::add(m)?;
    Ok(())
}
