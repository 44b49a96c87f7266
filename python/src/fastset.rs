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

use crate::fastget;
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

    /// The answer of `set(key, value)` with the signature's defaults.
    fn set_two<'py>(
        slf: &Bound<'py, Self>,
        pair: KeyAndValue<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>>;
}

/// [`KeyValue::generic_set`], with a place of its own for the implementing class.
macro_rules! generic_set {
    () => {
        fn generic_set() -> &'static pyo3::sync::PyOnceLock<pyo3::Py<pyo3::PyAny>> {
            static GENERIC: pyo3::sync::PyOnceLock<pyo3::Py<pyo3::PyAny>> =
                pyo3::sync::PyOnceLock::new();
            &GENERIC
        }
    };
}
pub(crate) use generic_set;

/// Gives the class `T` its two-argument `set` (called once, when the module is built).
pub(crate) fn install<T: KeyValue>(
    py: Python<'_>,
    fast: ffi::PyCFunctionFastWithKeywords,
) -> PyResult<()> {
    fastget::install_method::<T>(py, "set", fast, T::generic_set())
}

/// The body of the `set` entry of `T` (see [`fastget::fastcall_entry`]):
/// [`KeyValue::set_two`] for a call with two positional arguments and no keyword; any other
/// call goes to the method [`install`] replaced.
///
/// # Safety
///
/// The arguments of a `METH_FASTCALL | METH_KEYWORDS` call, as CPython passes them (`nargs`
/// positional ones, then one per name in `kwnames`), of the method descriptor [`install`]
/// made for `T`, which checked that `slf` is an instance of `T`.
pub(crate) unsafe fn set_entry<T: KeyValue>(
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
