//! `ReadyAwaitable`: the awaitable of an `a`-method that has its answer already (a local
//! backend such as `memory://`, or an error found before the operation started).
//!
//! It is the hottest awaitable (`await cache.aget(k)` on `memory://`), so it is a small type
//! made with the C API rather than a PyO3 class: profiled with callgrind, PyO3's allocation,
//! initialisation and deallocation of a class object cost about 340 instructions per await,
//! a third of a whole `get`. Here a creation is a pop from a free list and `PyObject_Init`,
//! a deallocation a push, and an await one `am_send` call that hands out the answer.
//!
//! It behaves as `Awaitable` does (a coroutine object as asyncio counts them: `send`,
//! `throw`, `close`, `__await__`), except that it is never running: awaiting it returns its
//! value, or raises its error (once: a second await of an error raises `RuntimeError`, as a
//! coroutine awaited twice does, and drops nothing that could hold a reference cycle).

use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::ffi;
use pyo3::prelude::*;
use std::cell::UnsafeCell;
use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

#[repr(C)]
struct ReadyObject {
    ob_base: ffi::PyObject,
    /// The answer (a strong reference), or NULL when the await raises.
    value: *mut ffi::PyObject,
    /// The exception instance the await raises (a strong reference), or NULL.
    error: *mut ffi::PyObject,
}

/// The type, made once by [`install`].
static TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(ptr::null_mut());

/// Freed objects kept for reuse: CPython's own free-list pattern, guarded by the GIL (every
/// creation and deallocation holds it); builds without a GIL keep none.
const FREE_MAX: usize = 32;
struct FreeList(UnsafeCell<(usize, [*mut ReadyObject; FREE_MAX])>);
// SAFETY: only touched with the GIL held (see above), which serializes every access.
unsafe impl Sync for FreeList {}
static FREE: FreeList = FreeList(UnsafeCell::new((0, [ptr::null_mut(); FREE_MAX])));

/// A complete awaitable of `answer`.
pub(crate) fn ready<'py>(
    py: Python<'py>,
    answer: PyResult<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let tp = TYPE.load(Ordering::Relaxed);
    if tp.is_null() {
        return Err(PyRuntimeError::new_err(
            "polycache: the awaitable type is not installed",
        ));
    }
    // SAFETY: the GIL is held (`py`); the free list holds objects of this type's size whose
    // fields are dead; PyObject_Init sets the type (with its reference) and the refcount.
    let obj = unsafe {
        let mut obj = pop_free();
        if obj.is_null() {
            obj = ffi::PyObject_Malloc(std::mem::size_of::<ReadyObject>()).cast::<ReadyObject>();
            if obj.is_null() {
                return Err(PyErr::new::<pyo3::exceptions::PyMemoryError, _>(
                    "polycache: no memory for an awaitable",
                ));
            }
        }
        ffi::PyObject_Init(obj.cast(), tp);
        let (value, error) = match answer {
            Ok(v) => (v.into_ptr(), ptr::null_mut()),
            Err(e) => (ptr::null_mut(), e.into_value(py).into_ptr()),
        };
        (*obj).value = value;
        (*obj).error = error;
        Bound::from_owned_ptr(py, obj.cast())
    };
    Ok(obj)
}

#[cfg(not(Py_GIL_DISABLED))]
unsafe fn pop_free() -> *mut ReadyObject {
    // SAFETY: the caller holds the GIL.
    let list = unsafe { &mut *FREE.0.get() };
    if list.0 == 0 {
        return ptr::null_mut();
    }
    list.0 -= 1;
    list.1[list.0]
}

#[cfg(Py_GIL_DISABLED)]
unsafe fn pop_free() -> *mut ReadyObject {
    ptr::null_mut()
}

/// Keeps `obj` for reuse; false when the list is full.
#[cfg(not(Py_GIL_DISABLED))]
unsafe fn push_free(obj: *mut ReadyObject) -> bool {
    // SAFETY: the caller holds the GIL.
    let list = unsafe { &mut *FREE.0.get() };
    if list.0 == FREE_MAX {
        return false;
    }
    list.1[list.0] = obj;
    list.0 += 1;
    true
}

#[cfg(Py_GIL_DISABLED)]
unsafe fn push_free(_obj: *mut ReadyObject) -> bool {
    false
}

unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: CPython calls this with the GIL held, for an object of this type whose
    // refcount reached zero.
    unsafe {
        let this = obj.cast::<ReadyObject>();
        let (value, error) = ((*this).value, (*this).error);
        let tp = ffi::Py_TYPE(obj);
        if !push_free(this) {
            ffi::PyObject_Free(obj.cast::<c_void>());
        }
        // After the object is released: a `__del__` run here may make awaitables.
        ffi::Py_XDECREF(value);
        ffi::Py_XDECREF(error);
        // A heap type's instances each hold a reference to it (PyObject_Init took it).
        ffi::Py_DECREF(tp.cast());
    }
}

/// `__await__` and `__iter__`: the object is its own iterator.
unsafe extern "C" fn itself(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython passes a live object; the slot returns a new reference to it.
    unsafe { ffi::Py_IncRef(obj) };
    obj
}

/// One step: the answer (a new reference) or the error to raise.
unsafe fn answer(py: Python<'_>, obj: *mut ffi::PyObject) -> Result<*mut ffi::PyObject, PyErr> {
    // SAFETY: the caller passes a live object of this type, with the GIL held.
    unsafe {
        let this = obj.cast::<ReadyObject>();
        if !(*this).value.is_null() {
            ffi::Py_IncRef((*this).value);
            return Ok((*this).value);
        }
        let error = std::mem::replace(&mut (*this).error, ptr::null_mut());
        if error.is_null() {
            return Err(PyRuntimeError::new_err(
                "cannot reuse an already awaited polycache awaitable",
            ));
        }
        Err(PyErr::from_value(Bound::from_owned_ptr(py, error)))
    }
}

/// CPython's `am_send` slot (3.10+): the answer without a `StopIteration`.
#[cfg(Py_3_10)]
unsafe extern "C" fn am_send(
    obj: *mut ffi::PyObject,
    _arg: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // SAFETY: CPython calls the slot with the thread attached and `obj` of this type;
    // `result` is its out-pointer, which takes the new reference (NULL on an error).
    unsafe {
        let py = Python::assume_attached();
        match answer(py, obj) {
            Ok(v) => {
                *result = v;
                ffi::PySendResult::PYGEN_RETURN
            }
            Err(e) => {
                e.restore(py);
                *result = ptr::null_mut();
                ffi::PySendResult::PYGEN_ERROR
            }
        }
    }
}

/// `__next__` (and `send`): raises `StopIteration(answer)`, or the error.
unsafe extern "C" fn iternext(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython calls it with the thread attached and `obj` of this type.
    unsafe {
        let py = Python::assume_attached();
        let err = match answer(py, obj) {
            Ok(v) => PyStopIteration::new_err((Bound::from_owned_ptr(py, v).unbind(),)),
            Err(e) => e,
        };
        err.restore(py);
        ptr::null_mut()
    }
}

unsafe extern "C" fn send(
    obj: *mut ffi::PyObject,
    _value: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: as `iternext`.
    unsafe { iternext(obj) }
}

/// `throw(typ, val=None, tb=None)`: raises that exception into the await.
unsafe extern "C" fn throw(
    _obj: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a METH_VARARGS method with the thread attached and a tuple.
    unsafe {
        let py = Python::assume_attached();
        let args = Bound::from_borrowed_ptr(py, args);
        let raised = args
            .cast::<pyo3::types::PyTuple>()
            .map_err(PyErr::from)
            .and_then(|a| {
                let typ = a.get_item(0)?;
                let val = a.get_item(1).ok();
                crate::awaitable::thrown(&typ, val.as_ref())
            });
        match raised {
            Ok(e) | Err(e) => e.restore(py),
        }
        ptr::null_mut()
    }
}

/// `close()`: nothing to abandon.
unsafe extern "C" fn close(
    _obj: *mut ffi::PyObject,
    _args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: returns a new reference to None.
    unsafe {
        ffi::Py_IncRef(ffi::Py_None());
        ffi::Py_None()
    }
}

/// The static tables the type points at.
struct Tables {
    methods: [ffi::PyMethodDef; 4],
}
// SAFETY: read-only after being built; CPython only reads them.
unsafe impl Sync for Tables {}

static TABLES: Tables = Tables {
    methods: [
        ffi::PyMethodDef {
            ml_name: c"send".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer { PyCFunction: send },
            ml_flags: ffi::METH_O,
            ml_doc: c"send(value): the answer (StopIteration), or the error.".as_ptr(),
        },
        ffi::PyMethodDef {
            ml_name: c"throw".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer { PyCFunction: throw },
            ml_flags: ffi::METH_VARARGS,
            ml_doc: c"throw(typ, val=None, tb=None): raises that exception.".as_ptr(),
        },
        ffi::PyMethodDef {
            ml_name: c"close".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer { PyCFunction: close },
            ml_flags: ffi::METH_NOARGS,
            ml_doc: c"close(): does nothing (the answer is known).".as_ptr(),
        },
        ffi::PyMethodDef::zeroed(),
    ],
};

/// Makes the type; called once, when the module loads.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let mut slots = vec![
        ffi::PyType_Slot {
            slot: ffi::Py_tp_dealloc,
            pfunc: dealloc as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_am_await,
            pfunc: itself as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_iter,
            pfunc: itself as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_iternext,
            pfunc: iternext as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_methods,
            pfunc: TABLES.methods.as_ptr() as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_doc,
            pfunc: c"The awaitable of an a-method whose answer is known.".as_ptr() as *mut c_void,
        },
    ];
    #[cfg(Py_3_10)]
    slots.push(ffi::PyType_Slot {
        slot: ffi::Py_am_send,
        pfunc: am_send as *mut c_void,
    });
    slots.push(ffi::PyType_Slot {
        slot: 0,
        pfunc: ptr::null_mut(),
    });
    let mut spec = ffi::PyType_Spec {
        name: c"polycache._polycache.ReadyAwaitable".as_ptr(),
        basicsize: std::mem::size_of::<ReadyObject>() as c_int,
        itemsize: 0,
        flags: ffi::Py_TPFLAGS_DEFAULT as _,
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: the spec and its slots are valid for the call (CPython copies the slots; the
    // method table and strings it keeps pointers to are static).
    let tp = unsafe { ffi::PyType_FromSpec(&mut spec) };
    if tp.is_null() {
        return Err(PyErr::fetch(py));
    }
    // The type lives as long as the process (this reference is never released).
    TYPE.store(tp.cast(), Ordering::Relaxed);
    Ok(())
}
