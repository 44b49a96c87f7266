//! `Cache.get(key)` with one positional argument, without PyO3's generic argument parsing.
//!
//! A `get` hit on `memory://` is a few hundred instructions, and PyO3's parser for
//! `get(key, default=None, version=None)` (`extract_arguments_fastcall` and the generated
//! wrapper) was about 130 of them (docs/backends/memory.md). PyO3 0.30 has no per-method calling convention, so after
//! the class is built, [`install`] replaces its `get` with a `METH_FASTCALL | METH_KEYWORDS`
//! method descriptor of the same name and documentation (so `inspect.signature` and the stub
//! check see the same signature). A call with exactly one positional argument and no keyword
//! runs [`OneKey::get_one`] at once; any other call is handed, unchanged, to the method
//! PyO3 generated, which keeps every behaviour and error of the full signature.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// The `METH_FASTCALL | METH_KEYWORDS` entry point of a fast path: PyO3's own trampoline
/// (its attach count, its panic catching) around `body`, as for PyO3's generated methods.
/// `pyo3::impl_` is PyO3's macro support, public but undocumented: a PyO3 upgrade that
/// changes it fails the build, never the behaviour.
macro_rules! fastcall_entry {
    ($body:path) => {
        pyo3::impl_::trampoline::get_trampoline_function!(fastcall_cfunction_with_keywords, $body)
    };
}
pub(crate) use fastcall_entry;

/// The class `T`'s own method `name`, replaced by `fast`: the PyO3-generated descriptor it
/// replaced is kept in [`OneKey::generic`] for the calls `fast` does not handle itself.
pub(crate) fn install<T: OneKey>(
    py: Python<'_>,
    name: &str,
    fast: ffi::PyCFunctionFastWithKeywords,
) -> PyResult<()> {
    install_method::<T>(py, name, fast, T::generic())
}

/// The class `T`'s own method `name`, replaced by `fast`; the PyO3-generated descriptor it
/// replaced is kept in `generic` (the mechanism of [`install`], for any method).
pub(crate) fn install_method<T: pyo3::PyClass>(
    py: Python<'_>,
    name: &str,
    fast: ffi::PyCFunctionFastWithKeywords,
    generic: &'static PyOnceLock<Py<PyAny>>,
) -> PyResult<()> {
    let ty = py.get_type::<T>();
    // The type's own attribute, not one it inherits.
    let original = ty.getattr("__dict__")?.get_item(name)?;
    // SAFETY: `original` is a method descriptor (PyO3 makes one per `#[pymethods]` method);
    // the check below refuses anything else before its `PyMethodDef` is read.
    let def = unsafe {
        if ffi::Py_TYPE(original.as_ptr()) != std::ptr::addr_of_mut!(ffi::PyMethodDescr_Type) {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                "polycache: {name} is not a method descriptor"
            )));
        }
        &*(*original.as_ptr().cast::<ffi::PyMethodDescrObject>()).d_method
    };
    // Lives as long as the type: the descriptor points at it.
    let fast_def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: def.ml_name,
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: fast,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: def.ml_doc,
    }));
    // SAFETY: the type object and the method definition outlive the descriptor (the
    // definition is leaked, the descriptor holds a reference to the type).
    let descr = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyDescr_NewMethod(ty.as_ptr().cast::<ffi::PyTypeObject>(), fast_def),
        )?
    };
    let _ = generic.set(py, original.unbind());
    ty.setattr(name, descr)
}

/// A class whose `get(key)` has a fast path.
pub(crate) trait OneKey: pyo3::PyClass {
    /// Where [`install`] keeps the PyO3-generated method, for the other calls (see
    /// [`generic_get`]).
    fn generic() -> &'static PyOnceLock<Py<PyAny>>;

    /// The answer of `get(key)`, `key` as the caller passed it (the class reads it as its
    /// full `get` does: a `str` for `Cache`, any object Django formats for Django's face).
    fn get_one<'py>(slf: &Bound<'py, Self>, key: &Bound<'py, PyAny>)
        -> PyResult<Bound<'py, PyAny>>;
}

/// [`OneKey::generic`], with a place of its own for the implementing class.
macro_rules! generic_get {
    () => {
        fn generic() -> &'static pyo3::sync::PyOnceLock<pyo3::Py<pyo3::PyAny>> {
            static GENERIC: pyo3::sync::PyOnceLock<pyo3::Py<pyo3::PyAny>> =
                pyo3::sync::PyOnceLock::new();
            &GENERIC
        }
    };
}
pub(crate) use generic_get;

/// The body of the `get` entry of `T` (see [`fastcall_entry`]): [`OneKey::get_one`] for a
/// call with one positional argument and no keyword; any other call goes to the method
/// [`install`] replaced.
///
/// # Safety
///
/// The arguments of a `METH_FASTCALL | METH_KEYWORDS` call, as CPython passes them (`nargs`
/// positional ones, then one per name in `kwnames`), of the method descriptor [`install`]
/// made for `T`, which checked that `slf` is an instance of `T`.
pub(crate) unsafe fn get_entry<T: OneKey>(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    if nargs != 1 || !kwnames.is_null() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { call_generic(py, T::generic(), slf, args, nargs, kwnames) };
    }
    // SAFETY: one argument, borrowed for the call; `slf` is a `T` (see above).
    let (slf, key) = unsafe {
        (
            Bound::ref_from_ptr(py, &slf).cast_unchecked::<T>(),
            Bound::ref_from_ptr(py, &*args),
        )
    };
    T::get_one(slf, key).map(Bound::into_ptr)
}

/// Calls the PyO3-generated method kept by [`install`] with the caller's arguments.
///
/// # Safety
///
/// As [`get_entry`].
#[cold]
pub(crate) unsafe fn call_generic(
    py: Python<'_>,
    generic: &'static PyOnceLock<Py<PyAny>>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    let method = generic.get(py).ok_or_else(|| {
        pyo3::exceptions::PyRuntimeError::new_err("polycache: the generic method is not set up")
    })?;
    // SAFETY: the caller's arguments, as CPython passed them.
    unsafe {
        let keywords = if kwnames.is_null() {
            0
        } else {
            ffi::PyTuple_GET_SIZE(kwnames)
        };
        let total = (nargs + keywords) as usize;
        let mut all = Vec::with_capacity(total + 1);
        all.push(slf);
        all.extend_from_slice(std::slice::from_raw_parts(args, total));
        let answer =
            ffi::PyObject_Vectorcall(method.as_ptr(), all.as_ptr(), (nargs + 1) as usize, kwnames);
        Bound::from_owned_ptr_or_err(py, answer).map(Bound::into_ptr)
    }
}
