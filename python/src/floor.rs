//! `_GetFloor`: the least a Python `get` hit costs on a store like `memory://`, to measure
//! polycache's own `get` against (`bench/python/get_instructions.py`). Built only with the
//! cargo feature `bench-floor`; wheels do not carry it.
//!
//! What any bytes-storing, TTL-aware store that C and Rust can share must do per call, and
//! nothing else: the call (the same one-argument `METH_FASTCALL` entry as `Cache.get`), the
//! key's UTF-8, one lookup in a shard-locked `quick_cache` map of bytes (the shard lock and
//! the value's `Arc` clone and drop), the deadline checked against the coarse clock, and the
//! return of the object an earlier read of the same stored bytes made (one slot per thread).
//! No key prefix or version, no statistics, no codec, no fail-open, no `dyn` dispatch.

use crate::fastget;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};
use std::cell::RefCell;
use std::sync::Arc;

/// A stored value: its bytes (UTF-8 text) and its deadline on the coarse clock.
#[derive(Clone)]
struct Stored {
    bytes: Arc<[u8]>,
    deadline: u64,
}

/// A `get` floor: a shard-locked map from key bytes to stored bytes.
#[pyclass(frozen, module = "polycache._polycache", name = "_GetFloor")]
pub(crate) struct GetFloor {
    map: quick_cache::sync::Cache<Box<[u8]>, Stored>,
}

thread_local! {
    /// The object made from the last bytes read, while those bytes are kept alive.
    static LAST: RefCell<Option<(Arc<[u8]>, Py<PyAny>)>> = const { RefCell::new(None) };
}

fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[pymethods]
impl GetFloor {
    #[new]
    fn new() -> Self {
        GetFloor {
            map: quick_cache::sync::Cache::new(100_000),
        }
    }

    /// Stores the text `value` under `key` for 300 seconds.
    fn set(&self, key: &str, value: &str) {
        let stored = Stored {
            bytes: Arc::from(value.as_bytes()),
            deadline: coarse_now_ns() + 300_000_000_000,
        };
        self.map.insert(key.as_bytes().into(), stored);
    }

    /// The text under `key`, or None.
    fn get<'py>(&self, py: Python<'py>, key: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        self.lookup(py, key.to_str()?)
    }
}

impl GetFloor {
    #[inline]
    fn lookup<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        let Some(found) = self.map.get(key.as_bytes()) else {
            return Ok(py.None().into_bound(py));
        };
        if coarse_now_ns() >= found.deadline {
            return Ok(py.None().into_bound(py));
        }
        let shared = LAST.with_borrow(|last| match last {
            Some((bytes, obj)) if Arc::ptr_eq(bytes, &found.bytes) => Some(obj.bind(py).clone()),
            _ => None,
        });
        if let Some(obj) = shared {
            return Ok(obj);
        }
        let text = std::str::from_utf8(&found.bytes)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        let obj = PyString::new(py, text).into_any();
        let _old = LAST.with_borrow_mut(|last| last.replace((found.bytes, obj.clone().unbind())));
        Ok(obj)
    }
}

/// The PyO3-generated `get`, for the calls [`get_fastcall`] hands on.
static GENERIC_GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `_GetFloor.get` as CPython calls it, the same entry as `Cache.get`'s.
///
/// # Safety
///
/// The arguments of a `METH_FASTCALL | METH_KEYWORDS` call of the class's method descriptor.
unsafe fn get_fastcall(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    if nargs != 1 || !kwnames.is_null() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { fastget::call_generic(py, &GENERIC_GET, slf, args, nargs, kwnames) };
    }
    // SAFETY: as in `crate::cache::get_fastcall`.
    let (slf, key) = unsafe {
        (
            Bound::ref_from_ptr(py, &slf).cast_unchecked::<GetFloor>(),
            Bound::ref_from_ptr(py, &*args),
        )
    };
    let key = crate::args::key_str(key)?;
    slf.get().lookup(py, key).map(Bound::into_ptr)
}

/// Adds `_GetFloor` to the module.
pub(crate) fn add(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<GetFloor>()?;
    let ty: Bound<'_, PyType> = m.py().get_type::<GetFloor>();
    let entry = fastget::fastcall_entry!(get_fastcall);
    fastget::install(&ty, "get", entry, &GENERIC_GET)
}
