//! Maps core errors onto the exception classes of `polycache.exceptions`, by kind.

use polycache::{Error, ErrorKind};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The Python classes, in the order of [`class_index`]; imported on first use.
const CLASSES: [&str; 13] = [
    "ConfigurationError",
    "ConnectionError",
    "TimeoutError",
    "InvalidKeyError",
    "ValueTooLargeError",
    "SerializationError",
    "KeyNotFoundError",
    "NotAnIntegerError",
    "IntegerOverflowError",
    "UnsupportedOperationError",
    "BackendError",
    "LockError",
    "LockNotOwnedError",
];

static CLASS_CELLS: [PyOnceLock<Py<PyType>>; 13] = [const { PyOnceLock::new() }; 13];

fn class_index(kind: ErrorKind) -> usize {
    match kind {
        ErrorKind::Configuration => 0,
        ErrorKind::Connection => 1,
        ErrorKind::Timeout => 2,
        ErrorKind::InvalidKey => 3,
        ErrorKind::ValueTooLarge => 4,
        ErrorKind::Serialization => 5,
        ErrorKind::NotFound => 6,
        ErrorKind::NotAnInteger => 7,
        ErrorKind::Overflow => 8,
        ErrorKind::Unsupported => 9,
        ErrorKind::Lock => 11,
        ErrorKind::LockNotOwned => 12,
        // Io, Backend, and any kind added to the core later.
        _ => 10,
    }
}

fn class(py: Python<'_>, index: usize) -> PyResult<&Bound<'_, PyType>> {
    CLASS_CELLS[index].import(py, "polycache.exceptions", CLASSES[index])
}

fn new_error(py: Python<'_>, index: usize, message: String) -> PyErr {
    match class(py, index) {
        Ok(cls) => PyErr::from_type(cls.clone(), message),
        Err(import_error) => import_error,
    }
}

/// The Python exception for a core error, chosen by its kind (never its message).
#[cold]
pub(crate) fn to_py(py: Python<'_>, err: Error) -> PyErr {
    new_error(py, class_index(err.kind()), err.to_string())
}

/// A `ConfigurationError` with `message`.
#[cold]
pub(crate) fn configuration(py: Python<'_>, message: String) -> PyErr {
    new_error(py, class_index(ErrorKind::Configuration), message)
}

/// An `InvalidKeyError` with `message`.
#[cold]
pub(crate) fn invalid_key(py: Python<'_>, message: String) -> PyErr {
    new_error(py, class_index(ErrorKind::InvalidKey), message)
}

/// A `SerializationError` with `message`, caused by `cause`.
#[cold]
pub(crate) fn serialization_error(py: Python<'_>, message: String, cause: PyErr) -> PyErr {
    let err = new_error(py, class_index(ErrorKind::Serialization), message);
    err.set_cause(py, Some(cause));
    err
}

/// A `SerializationError` with `message` and no underlying error.
#[cold]
pub(crate) fn serialization_error_without_cause(py: Python<'_>, message: String) -> PyErr {
    new_error(py, class_index(ErrorKind::Serialization), message)
}

/// Extension for core results: `.py(py)?` raises the mapped exception.
pub(crate) trait ResultExt<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> ResultExt<T> for polycache::Result<T> {
    #[inline]
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}
