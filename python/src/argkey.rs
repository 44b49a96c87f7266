//! Cache keys from a function's arguments: a canonical byte encoding of the call, hashed.
//!
//! The key of a call is `{name}:{digest}`, where `name` is the function's `module.qualname`
//! (or the decorator's `key_prefix`) and `digest` the 32 hex digits of the XXH3-128 hash of
//! the canonical encoding below. The encoding depends only on the values, never on `id()`,
//! `hash()` randomisation or the process, so every process computes the same key:
//!
//! | value (exact type) | encoding |
//! |---|---|
//! | `None`, `True`, `False` | `N`, `T`, `F` |
//! | `int` | `i` + 8 bytes little-endian (64-bit range), else `I` + decimal + `;` |
//! | `float` | `f` + the 8 bytes of the IEEE double |
//! | `str`, `bytes` | `s` / `b` + length (8 bytes) + UTF-8 / bytes |
//! | `tuple`, `list` | `(` / `[` + items + `)` / `]` |
//! | `dict` | `{` + (key, value) pairs sorted by the key's encoding + `}` |
//! | `set`, `frozenset` | `<` + items sorted by encoding + `>` |
//! | an object with `__cache_key__()` | `k` + the encoding of what it returns |
//! | anything else | `p` + length + `pickle.dumps(value, 5)` |
//!
//! A call is its positional arguments, `|`, then its keyword arguments sorted by name. A
//! value that cannot be encoded (not picklable, no `__cache_key__`) raises `TypeError`
//! naming its type. The digest is not cryptographic: with arguments chosen by untrusted
//! users, give the decorator a `key=` function.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString, PyTuple,
};

/// Nesting deeper than this is refused (a self-referencing list would recurse forever).
const MAX_DEPTH: usize = 64;

fn pickle_dumps(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    DUMPS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("pickle")?.getattr("dumps")?.unbind())
        })
        .map(|f| f.bind(py))
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u64).to_le_bytes());
}

/// Appends the canonical encoding of `obj` to `out`.
pub(crate) fn encode(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> PyResult<()> {
    if depth > MAX_DEPTH {
        return Err(PyTypeError::new_err(
            "cannot build a cache key: the arguments are nested too deeply (or contain themselves)",
        ));
    }
    let py = obj.py();
    if obj.is_none() {
        out.push(b'N');
    } else if let Ok(s) = obj.cast_exact::<PyString>() {
        let s = s.to_cow()?;
        out.push(b's');
        put_len(out, s.len());
        out.extend_from_slice(s.as_bytes());
    } else if let Ok(b) = obj.cast_exact::<PyBool>() {
        out.push(if b.is_true() { b'T' } else { b'F' });
    } else if let Ok(i) = obj.cast_exact::<PyInt>() {
        match i.extract::<i64>() {
            Ok(n) => {
                out.push(b'i');
                out.extend_from_slice(&n.to_le_bytes());
            }
            Err(_) => {
                out.push(b'I');
                out.extend_from_slice(i.str()?.to_cow()?.as_bytes());
                out.push(b';');
            }
        }
    } else if let Ok(f) = obj.cast_exact::<PyFloat>() {
        out.push(b'f');
        out.extend_from_slice(&f.value().to_le_bytes());
    } else if let Ok(b) = obj.cast_exact::<PyBytes>() {
        out.push(b'b');
        put_len(out, b.as_bytes().len());
        out.extend_from_slice(b.as_bytes());
    } else if let Ok(t) = obj.cast_exact::<PyTuple>() {
        out.push(b'(');
        for item in t.iter() {
            encode(&item, out, depth + 1)?;
        }
        out.push(b')');
    } else if let Ok(l) = obj.cast_exact::<PyList>() {
        out.push(b'[');
        for item in l.iter() {
            encode(&item, out, depth + 1)?;
        }
        out.push(b']');
    } else if let Ok(d) = obj.cast_exact::<PyDict>() {
        let mut pairs = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let mut kb = Vec::new();
            encode(&k, &mut kb, depth + 1)?;
            let mut vb = Vec::new();
            encode(&v, &mut vb, depth + 1)?;
            pairs.push((kb, vb));
        }
        pairs.sort();
        out.push(b'{');
        for (k, v) in pairs {
            out.extend_from_slice(&k);
            out.extend_from_slice(&v);
        }
        out.push(b'}');
    } else if obj.is_exact_instance_of::<PySet>() || obj.is_exact_instance_of::<PyFrozenSet>() {
        let mut items = Vec::new();
        for item in obj.try_iter()? {
            let mut b = Vec::new();
            encode(&item?, &mut b, depth + 1)?;
            items.push(b);
        }
        items.sort();
        out.push(b'<');
        for b in items {
            out.extend_from_slice(&b);
        }
        out.push(b'>');
    } else if let Some(method) = obj.getattr_opt(pyo3::intern!(py, "__cache_key__"))? {
        out.push(b'k');
        encode(&method.call0()?, out, depth + 1)?;
    } else {
        let pickled = pickle_dumps(py)?.call1((obj, 5)).map_err(|e| {
            let err = PyTypeError::new_err(format!(
                "cannot build a cache key from an argument of type {}: it cannot be pickled; \
                 give it a __cache_key__() method or pass key= to the decorator",
                obj.get_type()
                    .qualname()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| "?".into())
            ));
            err.set_cause(py, Some(e));
            err
        })?;
        let pickled = pickled.cast::<PyBytes>()?;
        out.push(b'p');
        put_len(out, pickled.as_bytes().len());
        out.extend_from_slice(pickled.as_bytes());
    }
    Ok(())
}

/// Appends the encoding of a call: positional arguments, `|`, keyword arguments by name.
///
/// With `skip_first` (a method's `self`/`cls`) the first positional argument counts only
/// through its `__cache_key__()`, when it has one.
pub(crate) fn encode_call(
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
    skip_first: bool,
    out: &mut Vec<u8>,
) -> PyResult<()> {
    for (i, arg) in args.iter().enumerate() {
        if i == 0 && skip_first {
            let py = arg.py();
            if let Some(method) = arg.getattr_opt(pyo3::intern!(py, "__cache_key__"))? {
                out.push(b'k');
                encode(&method.call0()?, out, 1)?;
            }
            continue;
        }
        encode(&arg, out, 0)?;
    }
    out.push(b'|');
    if let Some(kwargs) = kwargs {
        let mut pairs = Vec::with_capacity(kwargs.len());
        for (k, v) in kwargs.iter() {
            let name = k.cast::<PyString>()?.to_cow()?.into_owned();
            pairs.push((name, v));
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, v) in pairs {
            out.push(b's');
            put_len(out, name.len());
            out.extend_from_slice(name.as_bytes());
            encode(&v, out, 0)?;
        }
    }
    Ok(())
}

/// The digest of a call's encoding. The encoding buffer is kept per thread (a call that
/// encodes while another encoding runs on its thread, through `__cache_key__`, uses its own).
fn call_digest(
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
    skip_first: bool,
) -> PyResult<[u8; 16]> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let digest = |buf: &mut Vec<u8>| {
        buf.clear();
        encode_call(args, kwargs, skip_first, buf)?;
        Ok(xxhash_rust::xxh3::xxh3_128(buf).to_be_bytes())
    };
    BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let r = digest(&mut buf);
            if buf.capacity() > 64 << 10 {
                *buf = Vec::new();
            }
            r
        }
        Err(_) => digest(&mut Vec::new()),
    })
}

/// Calls `f` with `{name}:{32 hex digits}`, the caller's cache key of one call, built on
/// the stack when it fits.
pub(crate) fn with_call_key<R>(
    name: &str,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
    skip_first: bool,
    f: impl FnOnce(&str) -> PyResult<R>,
) -> PyResult<R> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const STACK: usize = 160;
    let digest = call_digest(args, kwargs, skip_first)?;
    let len = name.len() + 33;
    let mut stack = [0u8; STACK];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= STACK {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    buf[..name.len()].copy_from_slice(name.as_bytes());
    buf[name.len()] = b':';
    for (i, b) in digest.iter().enumerate() {
        buf[name.len() + 1 + 2 * i] = HEX[usize::from(b >> 4)];
        buf[name.len() + 2 + 2 * i] = HEX[usize::from(b & 15)];
    }
    // `name` is UTF-8 and the rest is ASCII hex, so this never fails.
    let key = std::str::from_utf8(buf).map_err(|e| PyTypeError::new_err(e.to_string()))?;
    f(key)
}

/// `{name}:{32 hex digits}`: the caller's cache key of one call (also the module's
/// `call_key`).
#[pyfunction]
#[pyo3(signature = (name, args, kwargs = None, skip_first = false))]
pub(crate) fn call_key(
    name: &str,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
    skip_first: bool,
) -> PyResult<String> {
    with_call_key(name, args, kwargs, skip_first, |k| Ok(k.to_owned()))
}
