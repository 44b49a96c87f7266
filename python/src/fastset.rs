//! `set(key, value)` with two positional arguments, without PyO3's generic argument parsing.
//!
//! `set(key, value, timeout=DEFAULT, version=None, *, nx=False, xx=False, tags=None)` has
//! seven parameters, and PyO3's parser for them (`extract_arguments_fastcall`, the defaults
//! and the generated wrapper) was a large part of a `set` on `memory://`
//! (docs/backends/memory.md, "Where a Python `set` goes"). As for `get`
//! ([`crate::fastget`]), [`install`] replaces the class's `set` with a
//! `METH_FASTCALL | METH_KEYWORDS` method descriptor of the same name and documentation. A
//! call with exactly two positional arguments and no keyword runs [`KeyValue::set_two`] at
//! once; any other call is handed, unchanged, to the method PyO3 generated, which keeps
//! every behaviour and error of the full signature.
//!
//! As for `get`, the descriptor's function is [`set_entry`], a plain `extern "C"` function:
//! the common call (a plain key and value on a local backend, [`KeyValue::set_quick`]) runs
//! without PyO3's trampoline (about 86 instructions of a `set`'s 1,100: its attach count's
//! `__tls_get_addr`, its pool check, its panic trap), and everything else goes through one.

use crate::{errors, fastget};
use pyo3::ffi::{self, PyObject, Py_ssize_t};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// The two positional arguments of `set(key, value)`.
pub(crate) type KeyAndValue<'a, 'py> = (&'a Bound<'py, PyAny>, &'a Bound<'py, PyAny>);

/// A class whose `set(key, value)` has a fast path.
pub(crate) trait KeyValue: pyo3::PyClass {
    /// Where [`install`] keeps the PyO3-generated `set`, for the other calls (see
    /// [`generic_set`]).
    fn generic_set() -> &'static PyOnceLock<Py<PyAny>>;

    /// Where [`install`] keeps the PyO3-wrapped entry of [`set_full`] for this class.
    fn full_set() -> &'static std::sync::OnceLock<ffi::PyCFunctionFastWithKeywords>;

    /// The answer of `set(key, value)` with the signature's defaults.
    fn set_two<'py>(
        slf: &Bound<'py, Self>,
        pair: KeyAndValue<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>>;

    /// The part of `set(key, value)` that [`set_entry`] runs without PyO3's attach count:
    /// the answer (a new reference) once the value is stored, or the core's error; `None`,
    /// having done nothing, when the call must take [`KeyValue::set_two`]'s path.
    ///
    /// It must run no Python code and make or drop no Python object but the answer's new
    /// reference (as [`crate::fastget::OneKey::get_quick`]).
    fn set_quick(
        slf: &Bound<'_, Self>,
        pair: KeyAndValue<'_, '_>,
    ) -> Option<polycache::Result<*mut PyObject>>;
}

/// [`KeyValue::generic_set`], with a place of its own for the implementing class.
macro_rules! generic_set {
    () => {
        fn generic_set() -> &'static pyo3::sync::PyOnceLock<pyo3::Py<pyo3::PyAny>> {
            static GENERIC: pyo3::sync::PyOnceLock<pyo3::Py<pyo3::PyAny>> =
                pyo3::sync::PyOnceLock::new();
            &GENERIC
        }

        fn full_set() -> &'static std::sync::OnceLock<pyo3::ffi::PyCFunctionFastWithKeywords> {
            static FULL: std::sync::OnceLock<pyo3::ffi::PyCFunctionFastWithKeywords> =
                std::sync::OnceLock::new();
            &FULL
        }
    };
}
pub(crate) use generic_set;

/// Gives the class `T` its two-argument `set` (called once, when the module is built);
/// `full` is the PyO3-wrapped entry of [`set_full`] for `T`, made by
/// [`fastget::fastcall_entry`].
pub(crate) fn install<T: KeyValue>(
    py: Python<'_>,
    full: ffi::PyCFunctionFastWithKeywords,
) -> PyResult<()> {
    let _ = T::full_set().set(full);
    fastget::install_method::<T>(py, "set", set_entry::<T>, T::generic_set())
}

/// The `set` of `T` as CPython calls it (`METH_FASTCALL | METH_KEYWORDS`), without PyO3's
/// trampoline on the common path: a call with two positional arguments and no keyword runs
/// [`KeyValue::set_quick`] under `catch_unwind`, and when that stored the value, the call is
/// over. Its error and a panic are raised inside a PyO3 trampoline
/// ([`fastget::in_trampoline`]); any call it does not take goes to [`KeyValue::full_set`],
/// the whole call redone (`set_quick` having done nothing). Why skipping PyO3's attach count
/// is sound: see [`fastget::get_entry`].
///
/// # Safety
///
/// Called by CPython only, through the method descriptor [`install`] made for `T` (which
/// checked that `slf` is an instance of `T`), with the arguments of a
/// `METH_FASTCALL | METH_KEYWORDS` call and the thread attached.
pub(crate) unsafe extern "C" fn set_entry<T: KeyValue>(
    slf: *mut PyObject,
    args: *const *mut PyObject,
    nargs: Py_ssize_t,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    if nargs == 2 && kwnames.is_null() {
        let quick = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: CPython calls a method with the thread attached.
            let py = unsafe { Python::assume_attached() };
            // SAFETY: two arguments, borrowed for the call; `slf` is a `T` (see above).
            let (slf, key, value) = unsafe {
                (
                    Bound::ref_from_ptr(py, &slf).cast_unchecked::<T>(),
                    Bound::ref_from_ptr(py, &*args),
                    Bound::ref_from_ptr(py, &*args.add(1)),
                )
            };
            T::set_quick(slf, (key, value))
        }));
        match quick {
            Ok(Some(Ok(answer))) => return answer,
            Ok(Some(Err(e))) => return fastget::in_trampoline(|py| Err(errors::to_py(py, e))),
            Ok(None) => {}
            Err(payload) => {
                return fastget::in_trampoline(|_| std::panic::resume_unwind(payload));
            }
        }
    }
    match T::full_set().get() {
        // SAFETY: the caller's arguments, unchanged, to the entry PyO3 wraps for `T`.
        Some(full) => unsafe { full(slf, args, nargs, kwnames) },
        None => fastget::in_trampoline(|_| {
            Err(pyo3::exceptions::PyRuntimeError::new_err(
                "polycache: the full set entry is not set up",
            ))
        }),
    }
}

/// The body of the PyO3-wrapped `set` entry of `T` (see [`fastget::fastcall_entry`]):
/// [`KeyValue::set_two`] for a call with two positional arguments and no keyword; any other
/// call goes to the method [`install`] replaced.
///
/// # Safety
///
/// The arguments of a `METH_FASTCALL | METH_KEYWORDS` call, as CPython passes them (`nargs`
/// positional ones, then one per name in `kwnames`), of the method descriptor [`install`]
/// made for `T`, which checked that `slf` is an instance of `T`.
pub(crate) unsafe fn set_full<T: KeyValue>(
    py: Python<'_>,
    slf: *mut PyObject,
    args: *const *mut PyObject,
    nargs: Py_ssize_t,
    kwnames: *mut PyObject,
) -> PyResult<*mut PyObject> {
    match (nargs, kwnames.is_null()) {
        (2, true) => {
            // SAFETY: two arguments, borrowed for the call; `slf` is a `T` (see above).
            let (slf, key, value) = unsafe {
                (
                    Bound::ref_from_ptr(py, &slf).cast_unchecked::<T>(),
                    Bound::ref_from_ptr(py, &*args),
                    Bound::ref_from_ptr(py, &*args.add(1)),
                )
            };
            T::set_two(slf, (key, value)).map(Bound::into_ptr)
        }
        // SAFETY: the caller's arguments, unchanged.
        _ => unsafe { fastget::call_generic(py, T::generic_set(), slf, args, nargs, kwnames) },
    }
}
