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
use pyo3::prelude::*;
use pyo3::types::PyString;
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

/// Stored bytes, and the object made from them.
type Shared = (Arc<[u8]>, Py<PyAny>);

thread_local! {
    /// The object made from the last bytes read, while those bytes are kept alive.
    static LAST: RefCell<Option<Shared>> = const { RefCell::new(None) };
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

/// The same one-argument entry as `Cache.get`'s.
impl fastget::OneKey for GetFloor {
    fastget::generic_get!();

    #[inline]
    fn get_one<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        slf.get().lookup(slf.py(), crate::args::key_str(key)?)
    }
}

/// Adds `_GetFloor` to the module.
pub(crate) fn add(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<GetFloor>()?;
    let entry = fastget::fastcall_entry!(fastget::get_entry::<GetFloor>);
    fastget::install::<GetFloor>(m.py(), "get", entry)
}
