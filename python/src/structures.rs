//! The arguments of a Redis data-structure command as Python hands them over: `str` is a
//! full key, `bytes` a value, `int` and `float` numbers. Shared by the classes that offer
//! django-redis' hash, set and sorted-set methods.

use crate::ops::{Arg, Core, Deliver, How, KeyMode, Op, RequestRef};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyString};

/// The owned arguments of `args` (any iterable).
pub(crate) fn redis_args(args: &Bound<'_, PyAny>) -> PyResult<Vec<Arg<String, Vec<u8>>>> {
    let mut out = Vec::new();
    for item in args.try_iter()? {
        let item = item?;
        out.push(if let Ok(s) = item.cast::<PyString>() {
            Arg::Key(s.to_str()?.to_owned())
        } else if let Ok(b) = item.cast::<PyBytes>() {
            Arg::Bytes(b.as_bytes().to_vec())
        } else if item.is_instance_of::<PyBool>() {
            return Err(PyTypeError::new_err(
                "a data-structure command argument cannot be a bool",
            ));
        } else if item.is_instance_of::<PyInt>() {
            Arg::Int(item.extract()?)
        } else if item.is_instance_of::<PyFloat>() {
            Arg::Float(item.extract()?)
        } else {
            return Err(PyTypeError::new_err(format!(
                "a data-structure command argument must be str (a key), bytes, int or float, not {}",
                crate::args::type_name(&item)
            )));
        });
    }
    Ok(out)
}

/// `args` borrowed, for a request.
pub(crate) fn borrowed(args: &[Arg<String, Vec<u8>>]) -> Vec<Arg<&str, &[u8]>> {
    args.iter()
        .map(|a| match a {
            Arg::Key(k) => Arg::Key(k.as_str()),
            Arg::Bytes(b) => Arg::Bytes(b.as_slice()),
            Arg::Int(n) => Arg::Int(*n),
            Arg::Float(x) => Arg::Float(*x),
        })
        .collect()
}

/// One data-structure command on `core` (`command`: its name; `args`: see [`redis_args`]),
/// answered as a plain Python reply, or an awaitable of it.
pub(crate) fn run<'py>(
    core: &Core,
    py: Python<'py>,
    how: How,
    command: &str,
    args: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let command =
        polycache::RedisCommand::from_name(command).map_err(|e| crate::errors::to_py(py, e))?;
    let owned = redis_args(args)?;
    let op = Op::Redis(command, borrowed(&owned));
    core.answer(py, how, RequestRef::new(op, KeyMode::Full), Deliver::Redis)
}
