//! `_aget_via_pyo3_async_runtimes`: an awaited `get` through pyo3-async-runtimes'
//! `future_into_py` on polycache's runtime, the peer `bench/python/bench_async.py` measures
//! the completion queue ([`crate::awaitable`]) against. Built only with the cargo feature
//! `bench-pyo3-async-runtimes`; wheels do not carry it.
//!
//! pyo3-async-runtimes wakes the event loop once per operation (`call_soon_threadsafe` from
//! the runtime thread, which takes the GIL to do it) and answers with an asyncio future.

use crate::cache::PyCache;
use crate::errors;
use pyo3::prelude::*;
use pyo3_async_runtimes::{generic, TaskLocals};
use std::cell::OnceCell;
use std::future::Future;
use std::pin::Pin;

/// pyo3-async-runtimes' tokio glue (`pyo3_async_runtimes::tokio`), spawning on polycache's
/// runtime instead of a runtime of its own.
struct PolycacheRuntime;

tokio::task_local! {
    static TASK_LOCALS: OnceCell<TaskLocals>;
}

fn handle() -> tokio::runtime::Handle {
    // Checked by the caller just before (`_aget_via_pyo3_async_runtimes`).
    polycache::runtime::handle().expect("polycache's runtime started a moment ago")
}

impl generic::Runtime for PolycacheRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle = tokio::task::JoinHandle<()>;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        handle().spawn(fut)
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        handle().spawn_blocking(f)
    }
}

impl generic::ContextExt for PolycacheRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS
            .try_with(|c| c.get().cloned())
            .unwrap_or_default()
    }
}

/// `cache.aget(key)` through pyo3-async-runtimes (for benchmarks).
#[pyfunction]
pub(crate) fn _aget_via_pyo3_async_runtimes<'py>(
    py: Python<'py>,
    cache: &Bound<'py, PyCache>,
    key: String,
) -> PyResult<Bound<'py, PyAny>> {
    polycache::runtime::handle().map_err(|e| errors::to_py(py, e))?;
    let core = &cache.get().core;
    let (c, decoder) = (core.cache.clone(), core.decoder);
    generic::future_into_py::<PolycacheRuntime, _, Py<PyAny>>(py, async move {
        let found = c.get_async(key.as_str()).await;
        Python::attach(|py| match found.map_err(|e| errors::to_py(py, e))? {
            Some(v) => decoder.decode(py, &v).map(Bound::unbind),
            None => Ok(py.None()),
        })
    })
}
