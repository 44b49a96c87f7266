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
//!
//! The descriptor's function is [`get_entry`], a plain `extern "C"` function, not one of
//! PyO3's trampolines: PyO3's trampoline (its attach count in a thread-local, which in a
//! shared library is a `__tls_get_addr` call, its pool check and its panic trap) was about
//! 75 instructions of a hit of a few hundred. [`get_entry`] runs the part of the call that
//! needs only the Python token itself ([`OneKey::get_quick`]: the key, the lookup and the
//! object the table of shared objects keeps) under `catch_unwind`, and hands everything
//! else to a PyO3 trampoline: any call it does not handle, decoding, errors and panics.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::ops::{LentGet, LentRest};
use crate::serializer::Taken;

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

/// The class `T`'s own `get`, replaced by [`get_entry`]: the PyO3-generated descriptor it
/// replaced is kept in [`OneKey::generic`], and `full` (the PyO3-wrapped entry of
/// [`get_full`] for `T`, made by [`fastcall_entry`]) in [`OneKey::full`], for the calls
/// [`get_entry`] does not finish itself.
pub(crate) fn install<T: OneKey>(
    py: Python<'_>,
    name: &str,
    full: ffi::PyCFunctionFastWithKeywords,
) -> PyResult<()> {
    let _ = T::full().set(full);
    install_method::<T>(py, name, get_entry::<T>, T::generic())
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

    /// Where [`install`] keeps the PyO3-wrapped entry of [`get_full`] for this class.
    fn full() -> &'static std::sync::OnceLock<ffi::PyCFunctionFastWithKeywords>;

    /// The answer of `get(key)`, `key` as the caller passed it (the class reads it as its
    /// full `get` does: a `str` for `Cache`, any object Django formats for Django's face).
    fn get_one<'py>(slf: &Bound<'py, Self>, key: &Bound<'py, PyAny>)
        -> PyResult<Bound<'py, PyAny>>;

    /// The part of `get(key)` that [`get_entry`] runs without PyO3's attach count, or
    /// `None` (having done nothing) when the call must take [`OneKey::get_one`]'s path.
    ///
    /// It must run no Python code and make or drop no Python object but the answer's new
    /// reference (see [`get_entry`]).
    ///
    /// What a table miss takes out goes into `taken`, which the caller keeps for the rest
    /// ([`LentRest::finish`]) instead of moving it along.
    fn get_quick<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
        taken: &mut Taken,
    ) -> Option<LentGet<'py>>;
}

/// [`OneKey::generic`], with a place of its own for the implementing class.
macro_rules! generic_get {
    () => {
        fn generic() -> &'static pyo3::sync::PyOnceLock<pyo3::Py<pyo3::PyAny>> {
            static GENERIC: pyo3::sync::PyOnceLock<pyo3::Py<pyo3::PyAny>> =
                pyo3::sync::PyOnceLock::new();
            &GENERIC
        }

        fn full() -> &'static std::sync::OnceLock<pyo3::ffi::PyCFunctionFastWithKeywords> {
            static FULL: std::sync::OnceLock<pyo3::ffi::PyCFunctionFastWithKeywords> =
                std::sync::OnceLock::new();
            &FULL
        }
    };
}
pub(crate) use generic_get;

/// The body of the PyO3-wrapped `get` entry of `T` (see [`fastcall_entry`]):
/// [`OneKey::get_one`] for a call with one positional argument and no keyword; any other
/// call goes to the method [`install`] replaced.
///
/// # Safety
///
/// The arguments of a `METH_FASTCALL | METH_KEYWORDS` call, as CPython passes them (`nargs`
/// positional ones, then one per name in `kwnames`), of the method descriptor [`install`]
/// made for `T`, which checked that `slf` is an instance of `T`.
pub(crate) unsafe fn get_full<T: OneKey>(
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

/// The `get` of `T` as CPython calls it (`METH_FASTCALL | METH_KEYWORDS`), without PyO3's
/// trampoline on the common path.
///
/// A call with one positional argument and no keyword runs [`OneKey::get_quick`] under
/// `catch_unwind`; when that answers from the table of shared objects or with a miss, the
/// call is over. Everything else goes through a PyO3 trampoline: a call `get_quick` does
/// not take ([`OneKey::full`], the whole call redone, `get_quick` having done nothing), the
/// rest of one it took ([`finish`]: decoding, an error) and a panic ([`finish`] resumes it
/// inside the trampoline, which raises it as PyO3's `PanicException`, as for any PyO3
/// method). No panic ever unwinds into CPython.
///
/// Why skipping PyO3's attach count here is sound: CPython calls a method with the thread
/// attached, so the token `Python::assume_attached` gives is valid for the call. The count
/// matters to two things, and neither happens in `get_quick`: a `Py<T>` dropped without it
/// is queued for later instead of released at once (nothing is dropped there but borrowed
/// references, released directly by `Bound`'s drop), and `Python::attach` without it asks
/// CPython's `PyGILState_Ensure` (which, for a thread already attached, only counts; the
/// one caller there is the log bridge, on a failure answered as a miss, which already runs
/// on threads PyO3 has not counted). The pool of queued drops, which PyO3's trampoline
/// empties on entry, is emptied by the next PyO3 call instead.
///
/// # Safety
///
/// Called by CPython only, through the method descriptor [`install`] made for `T` (which
/// checked that `slf` is an instance of `T`), with the arguments of a
/// `METH_FASTCALL | METH_KEYWORDS` call and the thread attached.
pub(crate) unsafe extern "C" fn get_entry<T: OneKey>(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    if nargs == 1 && kwnames.is_null() {
        let mut taken = Taken::Nothing;
        let quick = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: CPython calls a method with the thread attached.
            let py = unsafe { Python::assume_attached() };
            // SAFETY: one argument, borrowed for the call; `slf` is a `T` (see above).
            let (slf, key) = unsafe {
                (
                    Bound::ref_from_ptr(py, &slf).cast_unchecked::<T>(),
                    Bound::ref_from_ptr(py, &*args),
                )
            };
            match T::get_quick(slf, key, &mut taken) {
                Some(LentGet::Found(object)) => Ok(Some(object.into_ptr())),
                Some(LentGet::Missed) => Ok(Some(py.None().into_ptr())),
                Some(LentGet::Rest(rest)) => Err(Unfinished::Rest(rest)),
                None => Ok(None),
            }
        }));
        match quick {
            Ok(Ok(Some(answer))) => return answer,
            Ok(Ok(None)) => {}
            Ok(Err(rest)) => return finish(rest, &taken),
            Err(payload) => return finish(Unfinished::Panic(payload), &taken),
        }
    }
    match T::full().get() {
        // SAFETY: the caller's arguments, unchanged, to the entry PyO3 wraps for `T`.
        Some(full) => unsafe { full(slf, args, nargs, kwnames) },
        None => finish(Unfinished::NotInstalled, &Taken::Nothing),
    }
}

/// What [`get_entry`] leaves to a PyO3 trampoline.
enum Unfinished {
    /// The rest of a `get` ([`LentRest::finish`]).
    Rest(LentRest),
    /// A panic of [`OneKey::get_quick`], to raise as PyO3 raises one.
    Panic(Box<dyn std::any::Any + Send>),
    /// [`install`] did not keep the full entry (never: it keeps it before the descriptor
    /// exists).
    NotInstalled,
}

/// Runs `rest` inside PyO3's trampoline (attach count, pool, panic trap) and returns its
/// answer, or NULL with the exception set.
#[cold]
#[inline(never)]
fn finish(rest: Unfinished, taken: &Taken) -> *mut ffi::PyObject {
    in_trampoline(|py| match rest {
        Unfinished::Rest(rest) => rest.finish(py, taken).map(Bound::into_ptr),
        Unfinished::Panic(payload) => std::panic::resume_unwind(payload),
        Unfinished::NotInstalled => Err(pyo3::exceptions::PyRuntimeError::new_err(
            "polycache: the full get entry is not set up",
        )),
    })
}

/// The end of a call that a fast entry point began without PyO3's trampoline, run inside
/// one (its attach count, its pool, its panic trap, as for any PyO3 method): `body`'s
/// answer, a new reference, or NULL with `body`'s error set. A panic of `body`, or one it
/// resumes, is raised as PyO3's `PanicException`.
pub(crate) fn in_trampoline(
    body: impl FnOnce(Python<'_>) -> PyResult<*mut ffi::PyObject>,
) -> *mut ffi::PyObject {
    let mut body = Some(body);
    let mut call = |py: Python<'_>| match body.take() {
        Some(body) => body(py),
        None => Err(pyo3::exceptions::PyRuntimeError::new_err(
            "polycache: a call's end ran twice",
        )),
    };
    let mut call: &mut dyn FnMut(Python<'_>) -> PyResult<*mut ffi::PyObject> = &mut call;
    let entry = pyo3::impl_::trampoline::get_trampoline_function!(noargs, trampoline_body);
    // SAFETY: the thread is attached (we are inside a call from CPython); `trampoline_body`
    // reads its first argument as the `&mut dyn FnMut` passed here (see there).
    unsafe {
        entry(
            std::ptr::addr_of_mut!(call).cast::<ffi::PyObject>(),
            std::ptr::null_mut(),
        )
    }
}

/// The body [`in_trampoline`] runs in PyO3's trampoline.
///
/// # Safety
///
/// `call` is a pointer to a live `&mut dyn FnMut(Python) -> PyResult<*mut PyObject>` (only
/// [`in_trampoline`] calls this, never CPython).
unsafe fn trampoline_body(
    py: Python<'_>,
    call: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: see above.
    let call =
        unsafe { &mut *call.cast::<&mut dyn FnMut(Python<'_>) -> PyResult<*mut ffi::PyObject>>() };
    call(py)
}

/// Calls the PyO3-generated method kept by [`install`] with the caller's arguments.
///
/// # Safety
///
/// As [`get_full`].
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
