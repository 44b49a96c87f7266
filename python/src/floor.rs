//! `_GetFloor`: the least a Python `get` hit costs on a store like `memory://`, to measure
//! polycache's own `get` against (`bench/python/get_instructions.py`). Built only with the
//! cargo feature `bench-floor`; wheels do not carry it.
//!
//! What any bytes-storing, TTL-aware store that C and Rust can share must do per call, and
//! nothing else, on the path a `memory://` hit takes: the call (the same one-argument
//! `METH_FASTCALL` entry as `Cache.get`, `crate::fastget::get_entry`), the key's UTF-8,
//! one lookup in a shard-locked `quick_cache` map whose values are lent, not counted (the
//! map holds where the bytes lie, a plain copy; no `Arc` clone and drop), the deadline
//! checked against the coarse clock, and the return of the object an earlier read of the
//! same bytes made (one slot per thread, the bytes compared as `memory://`'s table compares
//! them). No key prefix or version, no statistics, no codec, no fail-open, no `dyn`
//! dispatch.

use crate::fastget;
use crate::ops::LentGet;
use pyo3::prelude::*;
use pyo3::types::PyString;
use std::cell::RefCell;
use std::sync::Mutex;

/// Where a stored value's bytes (UTF-8 text) lie, and its deadline on the coarse clock.
#[derive(Clone, Copy)]
struct Stored {
    ptr: *const u8,
    len: usize,
    deadline: u64,
}

// SAFETY: `ptr` points into a buffer of `GetFloor::values`, which is never changed or freed
// while the floor lives (and the map, declared first, is dropped before it); the bytes are
// only read.
unsafe impl Send for Stored {}
// SAFETY: as for `Send`: shared access only reads immutable bytes.
unsafe impl Sync for Stored {}

/// A `get` floor: a shard-locked map from key bytes to where the stored bytes lie.
#[pyclass(frozen, module = "polycache._polycache", name = "_GetFloor")]
pub(crate) struct GetFloor {
    map: quick_cache::sync::Cache<Box<[u8]>, Stored>,
    /// Every value ever set, kept until the floor goes (a benchmark's object: a few
    /// thousand values).
    values: Mutex<Vec<Box<[u8]>>>,
}

/// A copy of the bytes read, and the object made from them.
type Shared = (Box<[u8]>, Py<PyAny>);

thread_local! {
    /// The object made from the last bytes read.
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
            values: Mutex::new(Vec::new()),
        }
    }

    /// Stores the text `value` under `key` for 300 seconds.
    fn set(&self, key: &str, value: &str) {
        let bytes: Box<[u8]> = value.as_bytes().into();
        let stored = Stored {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
            deadline: coarse_now_ns() + 300_000_000_000,
        };
        self.values
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(bytes);
        self.map.insert(key.as_bytes().into(), stored);
    }

    /// The text under `key`, or None.
    fn get<'py>(&self, py: Python<'py>, key: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        self.lookup(py, key.to_str()?)
    }
}

impl GetFloor {
    /// The bytes under `key`, lent, if present and not expired.
    #[inline(always)]
    fn lent(&self, key: &str) -> Option<&[u8]> {
        let found = self.map.get(key.as_bytes())?;
        if coarse_now_ns() >= found.deadline {
            return None;
        }
        // SAFETY: see `Stored`: the bytes live as long as `self`.
        Some(unsafe { std::slice::from_raw_parts(found.ptr, found.len) })
    }

    /// The object the last read of `data` on this thread made (a new reference).
    #[inline(always)]
    fn shared<'py>(py: Python<'py>, data: &[u8]) -> Option<Bound<'py, PyAny>> {
        LAST.with_borrow(|last| match last {
            Some((bytes, obj)) if **bytes == *data => Some(obj.bind(py).clone()),
            _ => None,
        })
    }

    fn lookup<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        let Some(data) = self.lent(key) else {
            return Ok(py.None().into_bound(py));
        };
        if let Some(obj) = Self::shared(py, data) {
            return Ok(obj);
        }
        let text = std::str::from_utf8(data)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        let obj = PyString::new(py, text).into_any();
        let _old = LAST.with_borrow_mut(|last| last.replace((data.into(), obj.clone().unbind())));
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

    /// A hit the thread's slot answers, or a miss; anything else takes the full path
    /// (which looks the key up again: the floor counts nothing).
    #[inline(always)]
    fn get_quick<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
        _taken: &mut crate::serializer::Taken,
    ) -> Option<LentGet<'py>> {
        let name = crate::args::ascii_text(key.cast::<PyString>().ok()?)?;
        match slf.get().lent(name) {
            None => Some(LentGet::Missed),
            Some(data) => Self::shared(slf.py(), data).map(LentGet::Found),
        }
    }
}

/// Adds `_GetFloor` to the module.
pub(crate) fn add(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<GetFloor>()?;
    let entry = fastget::fastcall_entry!(fastget::get_full::<GetFloor>);
    fastget::install::<GetFloor>(m.py(), "get", entry)
}
