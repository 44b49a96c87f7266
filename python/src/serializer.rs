//! The serializers of a cache's values ([`Format`]): `pickle` (the default), `json`, `raw`.
//!
//! The default serializer is byte for byte what Django's `RedisSerializer` writes and reads.
//!
//! Django stores a plain `int` (`type(v) is int`, so not `bool`) as ASCII decimal and pickles
//! everything else with `pickle.HIGHEST_PROTOCOL` (5). It reads with
//! `try: int(data) except ValueError: pickle.loads(data)`.
//!
//! The values most caches hold (`str`, `bytes`, `float`, `bool`, `None`, small `int`) are
//! encoded and decoded here without the pickle module, producing exactly the bytes CPython's
//! pickler writes; everything else, and anything the native decoder does not recognise
//! exactly, goes through `pickle.dumps` / `pickle.loads`.

use crate::errors;
use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyFloat, PyInt, PyString};

/// How a cache turns Python objects into stored bytes (the core's `serializer` option).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Django's `RedisSerializer`: plain ints as decimal, everything else pickled.
    Pickle,
    /// JSON text (UTF-8); ints are decimal, so `incr` stays native.
    Json,
    /// `bytes` in, `bytes` out: the values C and Rust programs read and write.
    Raw,
}

impl Format {
    /// The format `cache` is configured with.
    pub(crate) fn of(cache: &polycache::Cache) -> Format {
        match cache.serializer() {
            "json" => Format::Json,
            "raw" => Format::Raw,
            _ => Format::Pickle,
        }
    }
}

/// Bytes of a natively serialized value: up to [`INLINE`] bytes on the stack, more on the heap.
///
/// Written through [`Buf::writer`], which sizes it once so that encoders store by index;
/// a `SmallVec` grown by `resize`/`push` cost ~15 ns more per `set`.
pub(crate) struct Buf {
    inline: [u8; INLINE],
    len: usize,
    heap: Vec<u8>,
}

/// Values whose serialized form fits here (a str of up to ~100 bytes) never touch the heap.
const INLINE: usize = 128;

impl Buf {
    #[inline]
    pub(crate) fn new() -> Self {
        Buf {
            inline: [0; INLINE],
            len: 0,
            heap: Vec::new(),
        }
    }

    /// A writable slice of exactly `len` bytes, which becomes the content.
    #[inline]
    pub(crate) fn writer(&mut self, len: usize) -> &mut [u8] {
        self.len = len;
        if len <= INLINE {
            &mut self.inline[..len]
        } else {
            self.heap.clear();
            self.heap.resize(len, 0);
            &mut self.heap
        }
    }

    /// Replaces the content with `bytes`.
    #[inline]
    pub(crate) fn set(&mut self, bytes: &[u8]) {
        self.writer(bytes.len()).copy_from_slice(bytes);
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.len <= INLINE {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }
}

// Pickle opcodes (Lib/pickle.py).
const PROTO: u8 = 0x80;
const FRAME: u8 = 0x95;
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE: u8 = b'X';
const SHORT_BINBYTES: u8 = b'C';
const BINBYTES: u8 = b'B';
const BINFLOAT: u8 = b'G';
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const NONE: u8 = b'N';
const MEMOIZE: u8 = 0x94;
const STOP: u8 = b'.';

/// The pickle protocol Django writes (`pickle.HIGHEST_PROTOCOL` on CPython 3.8 to 3.14).
const PROTOCOL: u8 = 5;
/// CPython's pickler opens a frame only for payloads of at least this many bytes.
const FRAME_SIZE_MIN: usize = 4;
/// Longest str/bytes payload encoded natively. CPython writes payloads of 64 KiB and more
/// outside frames and splits frames at 64 KiB; staying far below keeps the native bytes
/// identical to `pickle.dumps` without modelling that, and larger values cost their copy
/// anyway.
const MAX_NATIVE_LEN: usize = 32 * 1024;

/// A serialized value: native bytes in `buf`, or the `bytes` object `pickle.dumps` returned.
///
/// Built in the caller's frame and filled by [`Serialized::encode`], so the inline buffer is
/// never moved on the hot path.
pub(crate) struct Serialized<'py> {
    buf: Buf,
    pickled: Option<Bound<'py, PyBytes>>,
    format: Format,
}

impl<'py> Serialized<'py> {
    #[inline]
    pub(crate) fn new(format: Format) -> Self {
        Serialized {
            buf: Buf::new(),
            pickled: None,
            format,
        }
    }

    /// Serializes `value` (replacing what this held); see [`encode`].
    #[inline]
    pub(crate) fn encode(&mut self, value: &Bound<'py, PyAny>) -> PyResult<()> {
        self.pickled = match self.format {
            Format::Pickle => encode(value, &mut self.buf)?,
            Format::Json => Some(json_dumps(value)?),
            Format::Raw => Some(raw_bytes(value)?),
        };
        Ok(())
    }

    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match &self.pickled {
            Some(b) => b.as_bytes(),
            None => self.buf.as_slice(),
        }
    }
}

struct PickleModule {
    dumps: Py<PyAny>,
    loads: Py<PyAny>,
    /// True when `pickle.HIGHEST_PROTOCOL` is the protocol the native encoder writes.
    native: bool,
}

static PICKLE: PyOnceLock<PickleModule> = PyOnceLock::new();

fn pickle(py: Python<'_>) -> PyResult<&PickleModule> {
    PICKLE.get_or_try_init(py, || {
        let m = py.import("pickle")?;
        let highest: u8 = m.getattr("HIGHEST_PROTOCOL")?.extract()?;
        Ok(PickleModule {
            dumps: m.getattr("dumps")?.unbind(),
            loads: m.getattr("loads")?.unbind(),
            native: highest == PROTOCOL,
        })
    })
}

/// Serializes `value` as Django's `RedisSerializer.dumps` (plus redis-py's int encoding):
/// natively into `buf` (returning `None`), or through `pickle.dumps` (returning its bytes).
#[inline]
pub(crate) fn encode<'py>(
    value: &Bound<'py, PyAny>,
    buf: &mut Buf,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    if encode_plain(value, buf) {
        return Ok(None);
    }
    encode_rest(value, buf)
}

/// [`encode`] of the values it writes without running Python code or making a Python
/// object: an exact `int` that fits in 64 bits, and, once the pickle module is loaded (the
/// first [`encode`] loads it) and its highest protocol is ours, an exact ASCII `str`,
/// `bytes`, `float`, `bool` or `None`. True when `buf` holds the encoding; false, having
/// done nothing, for any other value (which [`encode`] then writes).
#[inline]
pub(crate) fn encode_plain(value: &Bound<'_, PyAny>, buf: &mut Buf) -> bool {
    let py = value.py();
    let ptr = value.as_ptr();
    // SAFETY: `ptr` is a live object (borrowed from `value`); the *_CheckExact macros only
    // read its type pointer.
    let (is_str, is_int, is_bytes, is_float) = unsafe {
        (
            ffi::PyUnicode_CheckExact(ptr) != 0,
            ffi::PyLong_CheckExact(ptr) != 0,
            ffi::PyBytes_CheckExact(ptr) != 0,
            ffi::PyFloat_CheckExact(ptr) != 0,
        )
    };
    if is_int {
        let mut overflow = 0;
        // SAFETY: `value` is exactly an int, whose conversion runs no Python code and
        // fails only by overflowing, which it reports through `overflow` (no exception).
        let n = unsafe { ffi::PyLong_AsLongLongAndOverflow(ptr, &mut overflow) };
        if overflow != 0 {
            return false;
        }
        write_i64(buf, n);
        return true;
    }
    if !PICKLE.get(py).is_some_and(|module| module.native) {
        return false;
    }
    if is_str {
        // SAFETY: checked above that `value` is exactly a str.
        let s = unsafe { value.cast_unchecked::<PyString>() };
        match crate::args::ascii_text(s) {
            Some(text) if text.len() <= MAX_NATIVE_LEN => {
                pickle_blob(buf, SHORT_BINUNICODE, BINUNICODE, text.as_bytes());
            }
            _ => return false,
        }
    } else if is_bytes {
        // SAFETY: checked above that `value` is exactly a bytes object.
        let b = unsafe { value.cast_unchecked::<PyBytes>() }.as_bytes();
        if b.len() > MAX_NATIVE_LEN {
            return false;
        }
        pickle_blob(buf, SHORT_BINBYTES, BINBYTES, b);
    } else if is_float {
        // SAFETY: checked above that `value` is exactly a float.
        let f = unsafe { value.cast_unchecked::<PyFloat>() }.value();
        let out = buf.writer(2 + 9 + 10);
        out[..11].copy_from_slice(&[PROTO, PROTOCOL, FRAME, 10, 0, 0, 0, 0, 0, 0, 0]);
        out[11] = BINFLOAT;
        out[12..20].copy_from_slice(&f.to_be_bytes());
        out[20] = STOP;
    } else if value.is_none() {
        buf.set(&[PROTO, PROTOCOL, NONE, STOP]);
    } else if let Ok(b) = value.cast_exact::<PyBool>() {
        let op = if b.is_true() { NEWTRUE } else { NEWFALSE };
        buf.set(&[PROTO, PROTOCOL, op, STOP]);
    } else {
        return false;
    }
    true
}

/// [`encode`] of what [`encode_plain`] did not write: a big `int`, a `str` that is not
/// ASCII, anything before the pickle module is loaded, and every other type (`pickle.dumps`).
#[inline(never)]
fn encode_rest<'py>(
    value: &Bound<'py, PyAny>,
    buf: &mut Buf,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let py = value.py();
    if value.is_exact_instance_of::<PyInt>() {
        return encode_big_int(value, buf);
    }
    let loaded = PICKLE.get(py).is_some();
    let module = pickle(py)?;
    if module.native {
        // Loaded just now: what `encode_plain` writes once the module is there.
        if !loaded && encode_plain(value, buf) {
            return Ok(None);
        }
        if let Ok(s) = value.cast_exact::<PyString>() {
            // A str with lone surrogates has no UTF-8 form; pickle writes it with
            // "surrogatepass", so let pickle do it.
            if let Ok(text) = s.to_str() {
                if text.len() <= MAX_NATIVE_LEN {
                    pickle_blob(buf, SHORT_BINUNICODE, BINUNICODE, text.as_bytes());
                    return Ok(None);
                }
            }
        }
    }
    pickle_dumps(value).map(Some)
}

/// `PROTO 5, [FRAME n], (SHORT_)BIN{UNICODE,BYTES} len data, MEMOIZE, STOP` into `buf`.
#[inline]
fn pickle_blob(buf: &mut Buf, short_op: u8, long_op: u8, data: &[u8]) {
    let short = data.len() < 256;
    let header = if short { 2 } else { 5 };
    let payload = header + data.len() + 2;
    // Every blob payload is at least 4 bytes, so it is always framed.
    debug_assert!(payload >= FRAME_SIZE_MIN);
    let total = 2 + 9 + payload;
    let out = buf.writer(total);
    out[0] = PROTO;
    out[1] = PROTOCOL;
    out[2] = FRAME;
    out[3..11].copy_from_slice(&(payload as u64).to_le_bytes());
    let at = if short {
        out[11] = short_op;
        out[12] = data.len() as u8;
        13
    } else {
        out[11] = long_op;
        out[12..16].copy_from_slice(&(data.len() as u32).to_le_bytes());
        16
    };
    out[at..at + data.len()].copy_from_slice(data);
    out[total - 2] = MEMOIZE;
    out[total - 1] = STOP;
}

/// An exact int too big for 64 bits (the others are [`encode_plain`]'s): ASCII decimal, as
/// redis-py writes the int Django hands it.
fn encode_big_int<'py>(
    value: &Bound<'py, PyAny>,
    buf: &mut Buf,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    // A big int: its decimal text, unless it has more digits than `str()` allows
    // (sys.set_int_max_str_digits); Django cannot store those at all, so they are pickled,
    // which Django's reader still understands.
    match value.str() {
        Ok(text) => {
            buf.set(text.to_str()?.as_bytes());
            Ok(None)
        }
        Err(err) if err.is_instance_of::<PyValueError>(value.py()) => pickle_dumps(value).map(Some),
        Err(err) => Err(err),
    }
}

/// Writes the decimal digits of `n`.
pub(crate) fn write_i64(buf: &mut Buf, n: i64) {
    let mut digits = [0u8; 20]; // i64::MIN has 19 digits and a sign
    let mut i = digits.len();
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        digits[i] = b'-';
    }
    buf.set(&digits[i..]);
}

fn pickle_dumps<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let py = value.py();
    let module = pickle(py)?;
    match module.dumps.bind(py).call1((value, PROTOCOL)) {
        Ok(out) => Ok(out.cast_into::<PyBytes>()?),
        Err(err) => {
            let type_name = qualified_type_name(value);
            let message =
                format!("cannot serialize a value of type '{type_name}' for the cache: {err}");
            Err(errors::serialization_error(py, message, err))
        }
    }
}

/// Deserializes stored bytes in `format`.
#[inline]
pub(crate) fn decode<'py>(
    py: Python<'py>,
    format: Format,
    data: &[u8],
) -> PyResult<Bound<'py, PyAny>> {
    match format {
        Format::Pickle => decode_pickle(py, data),
        Format::Json => json_loads(py, payload(data)),
        Format::Raw => Ok(PyBytes::new(py, payload(data)).into_any()),
    }
}

/// The object of `data` in `format` when making it runs no Python code and allocates no
/// object the garbage collector tracks, so that it can be made while a store lends the
/// bytes under its lock ([`lend`]): a plain decimal `int`, a pickled ASCII `str`, `bytes`,
/// `float`, `bool` or `None`, raw `bytes`. `None` for anything else (and for bytes that
/// [`decode`] would reject), which [`decode`] then reads.
#[inline]
fn decode_plain<'py>(py: Python<'py>, format: Format, data: &[u8]) -> Option<Bound<'py, PyAny>> {
    match format {
        Format::Pickle => {
            // Nearly every stored `str`, read without the opcode walk.
            if let Some(chars) = short_ascii_str(data) {
                return ascii_str(py, chars);
            }
            match parse_small_decimal(data) {
                Some(n) => Some(n.into_pyobject(py).ok()?.into_any()),
                None => unpickle_native(py, data, Utf8::AsciiOnly),
            }
        }
        Format::Raw => Some(PyBytes::new(py, payload(data)).into_any()),
        Format::Json => None,
    }
}

/// The payload of bytes that may be a value stored with its refresh metadata (XFetch, jobs).
fn payload(data: &[u8]) -> &[u8] {
    polycache::Envelope::decode(data).map_or(data, |(_, p)| p)
}

struct JsonModule {
    dumps: Py<PyAny>,
    loads: Py<PyAny>,
}

static JSON: PyOnceLock<JsonModule> = PyOnceLock::new();

fn json(py: Python<'_>) -> PyResult<&JsonModule> {
    JSON.get_or_try_init(py, || {
        let m = py.import("json")?;
        Ok(JsonModule {
            dumps: m.getattr("dumps")?.unbind(),
            loads: m.getattr("loads")?.unbind(),
        })
    })
}

/// Compact JSON of `value`, UTF-8; NaN and infinities are refused (they are not JSON).
fn json_dumps<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let py = value.py();
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("separators", (",", ":"))?;
    kwargs.set_item("ensure_ascii", false)?;
    kwargs.set_item("allow_nan", false)?;
    let text = json(py)?
        .dumps
        .bind(py)
        .call((value,), Some(&kwargs))
        .map_err(|err| {
            let message = format!(
                "the json serializer cannot store a value of type '{}': {err}",
                qualified_type_name(value)
            );
            errors::serialization_error(py, message, err)
        })?;
    let text = text.cast_into::<PyString>()?;
    Ok(PyBytes::new(py, text.to_str()?.as_bytes()))
}

fn json_loads<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    json(py)?
        .loads
        .bind(py)
        .call1((PyBytes::new(py, data),))
        .map_err(|err| {
            let message = format!("cannot read the cached value as JSON: {err}");
            errors::serialization_error(py, message, err)
        })
}

/// The bytes of a `bytes`, `bytearray` or `memoryview` value, unchanged.
fn raw_bytes<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let py = value.py();
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(b.clone());
    }
    if let Ok(b) = value.cast::<PyByteArray>() {
        return Ok(PyBytes::new(py, &b.to_vec()));
    }
    if value.is_instance_of::<pyo3::types::PyMemoryView>() {
        return value
            .call_method0("tobytes")?
            .cast_into::<PyBytes>()
            .map_err(Into::into);
    }
    Err(errors::serialization_error_without_cause(
        py,
        format!(
            "the raw serializer stores bytes, bytearray or memoryview values, not '{}'              (use serializer=\"pickle\" or \"json\" for other values)",
            qualified_type_name(value)
        ),
    ))
}

fn qualified_type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .fully_qualified_name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// Deserializes stored bytes as Django's `RedisSerializer.loads` does.
#[inline]
fn decode_pickle<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    if let Some(n) = parse_small_decimal(data) {
        return Ok(n.into_pyobject(py)?.into_any());
    }
    if data.first() == Some(&PROTO) {
        // `int()` never accepts a leading 0x80, so only pickle can read it.
        if let Some(value) = unpickle_native(py, data, Utf8::Any) {
            return Ok(value);
        }
    } else {
        // A value stored with its refresh metadata (XFetch, jobs): read its payload.
        if let Some((_, payload)) = polycache::Envelope::decode(data) {
            return decode_pickle(py, payload);
        }
        // Whatever else `int()` accepts (more digits, spaces, `_`, `+`) stays Django's call.
        let bytes = PyBytes::new(py, data);
        match py.get_type::<PyInt>().call1((&bytes,)) {
            Ok(n) => return Ok(n),
            Err(err) if err.is_instance_of::<PyValueError>(py) => {}
            Err(err) => return Err(err),
        }
        return pickle_loads(py, bytes.as_any());
    }
    pickle_loads(py, PyBytes::new(py, data).as_any())
}

fn pickle_loads<'py>(py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    pickle(py)?.loads.bind(py).call1((data,)).map_err(|err| {
        let message = format!("cannot deserialize the cached value: {err}");
        errors::serialization_error(py, message, err)
    })
}

/// `-?[0-9]{1,18}`: always fits an i64.
#[inline]
fn parse_small_decimal(data: &[u8]) -> Option<i64> {
    let (neg, digits) = match data.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, data),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut n: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(b - b'0');
    }
    Some(if neg { -n } else { n })
}

/// The characters of `data` when it is the pickle of an ASCII `str` of under 256 characters
/// as [`pickle_blob`] and `pickle.dumps` (protocol 4 or 5) write it, `PROTO, FRAME n,
/// SHORT_BINUNICODE len chars, MEMOIZE, STOP`: the form of nearly every stored `str`. Its
/// fixed head and tail are compared in place, without [`unpickle_native`]'s walk from opcode
/// to opcode (about 60 instructions of a 10,000-key read, docs/backends/memory.md).
#[inline(always)]
fn short_ascii_str(data: &[u8]) -> Option<&[u8]> {
    let (head, rest) = data.split_first_chunk::<13>()?;
    let (chars, tail) = rest.split_last_chunk::<2>()?;
    let [PROTO, 4 | 5, FRAME, f0, f1, f2, f3, f4, f5, f6, f7, SHORT_BINUNICODE, len] = *head else {
        return None;
    };
    let framed = u64::from_le_bytes([f0, f1, f2, f3, f4, f5, f6, f7]);
    (usize::from(len) == chars.len()
        && framed == chars.len() as u64 + 4
        && *tail == [MEMOIZE, STOP]
        && chars.is_ascii())
    .then_some(chars)
}

/// Which `str` [`unpickle_native`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Utf8 {
    /// Any UTF-8 (`surrogatepass`, as pickle).
    Any,
    /// ASCII only: a decoder's error is an object the garbage collector tracks.
    AsciiOnly,
}

/// Reads the pickles [`encode`] writes natively (protocol 4 or 5, one str, bytes, float, bool
/// or None); `None` for anything else, which then goes to `pickle.loads`.
fn unpickle_native<'py>(py: Python<'py>, data: &[u8], utf8: Utf8) -> Option<Bound<'py, PyAny>> {
    let [PROTO, 4 | 5, rest @ ..] = data else {
        return None;
    };
    let mut p = rest;
    if let [FRAME, rest @ ..] = p {
        let (len, rest) = rest.split_first_chunk::<8>()?;
        // Only a frame that spans exactly the rest of the pickle.
        if u64::from_le_bytes(*len) != rest.len() as u64 {
            return None;
        }
        p = rest;
    }
    let (&op, rest) = p.split_first()?;
    match op {
        NONE | NEWTRUE | NEWFALSE => {
            if rest != [STOP] {
                return None;
            }
            Some(match op {
                NONE => py.None().into_bound(py),
                NEWTRUE => PyBool::new(py, true).to_owned().into_any(),
                _ => PyBool::new(py, false).to_owned().into_any(),
            })
        }
        BINFLOAT => {
            let (bits, tail) = rest.split_first_chunk::<8>()?;
            if tail != [STOP] {
                return None;
            }
            Some(PyFloat::new(py, f64::from_be_bytes(*bits)).into_any())
        }
        SHORT_BINUNICODE | SHORT_BINBYTES | BINUNICODE | BINBYTES => {
            let (len, rest) = if op == SHORT_BINUNICODE || op == SHORT_BINBYTES {
                let (&n, rest) = rest.split_first()?;
                (usize::from(n), rest)
            } else {
                let (n, rest) = rest.split_first_chunk::<4>()?;
                (u32::from_le_bytes(*n) as usize, rest)
            };
            if rest.len() < len {
                return None;
            }
            let (payload, tail) = rest.split_at(len);
            if tail != [MEMOIZE, STOP] && tail != [STOP] {
                return None;
            }
            if op == SHORT_BINBYTES || op == BINBYTES {
                Some(PyBytes::new(py, payload).into_any())
            } else if payload.is_ascii() {
                ascii_str(py, payload)
            } else if utf8 == Utf8::Any {
                decode_utf8_surrogatepass(py, payload)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Decodes UTF-8 as pickle does (`surrogatepass`); `None` (error cleared) when invalid, so
/// that `pickle.loads` raises its own error.
fn decode_utf8_surrogatepass<'py>(py: Python<'py>, payload: &[u8]) -> Option<Bound<'py, PyAny>> {
    // SAFETY: the pointer and length describe `payload`, which outlives the call; the error
    // handler name is a NUL-terminated static string. The attached `py` token means we hold
    // the GIL. A NULL result means an exception is set, which PyErr::take clears.
    unsafe {
        let obj = ffi::PyUnicode_DecodeUTF8(
            payload.as_ptr().cast(),
            payload.len() as ffi::Py_ssize_t,
            c"surrogatepass".as_ptr(),
        );
        if obj.is_null() {
            drop(PyErr::take(py));
            None
        } else {
            Some(Bound::from_owned_ptr(py, obj))
        }
    }
}

/// A new `str` of ASCII bytes: allocated at its length and copied into, without the
/// decoder's scan and dispatch (about 150 instructions of a 16-byte value's ~200).
/// `None` (error cleared) only when the allocation fails.
fn ascii_str<'py>(py: Python<'py>, ascii: &[u8]) -> Option<Bound<'py, PyAny>> {
    debug_assert!(ascii.is_ascii());
    // SAFETY: the token means this thread is attached. `PyUnicode_New` with a maximum
    // character of 127 makes a compact ASCII str of `ascii.len()` one-byte characters, whose
    // data it leaves for the caller to write before the object is seen by anyone; a NULL
    // result means an exception is set, which PyErr::take clears.
    unsafe {
        let obj = ffi::PyUnicode_New(ascii.len() as ffi::Py_ssize_t, 127);
        if obj.is_null() {
            drop(PyErr::take(py));
            return None;
        }
        std::ptr::copy_nonoverlapping(ascii.as_ptr(), ffi::PyUnicode_1BYTE_DATA(obj), ascii.len());
        Some(Bound::from_owned_ptr(py, obj))
    }
}

/// Decoded objects shared between reads of the same stored bytes (`memory://` hits).
///
/// A slot keeps a copy of the bytes an object was decoded from, with their length and
/// format, and the object: a read whose bytes are equal to the copy (length, format and every
/// byte) is answered with the object decoded last time. Only objects nobody can change are
/// shared — exact `str`, `bytes`, `int`, `float`, `bool`, `None` and tuples of them — so no
/// caller ever sees another's mutation; anything else is decoded anew each time.
///
/// The address of the stored bytes only chooses the slot (an unchanged entry reads back at
/// the same address, so it finds its slot again); it never decides a hit. A store may lend
/// its bytes without a reference count (`polycache::Cache::get_with`) and rewrite an entry's
/// bytes in place when no reader holds it, and a freed buffer's address may be reused for
/// other bytes: the table holds no reference to the store's bytes, so it pins nothing and
/// keeps no rewrite from happening, and the byte compare is what tells the same bytes apart
/// from new ones at an old address.
///
/// An object is kept only when the same stored bytes miss their slot twice in a row: a
/// slot remembers the address of its last miss, and a miss at that address again keeps its
/// object. Reads that pass over many values once each (a scan, or a working set larger than
/// the table) then only write that address: they neither pay to copy bytes into a slot and
/// free the object it held, nor push out the objects of keys that are read again and again
/// (over 10,000 keys read in turn, keeping every decoded object made each read about 50 ns
/// slower than not keeping it, docs/backends/memory.md).
///
/// One table, guarded by the GIL (each thread has its own on a free-threaded build): no
/// lock, no atomic read-modify-write on a hit (those cost more than the lookup),
/// direct-mapped by address. A value of up to [`SHARED_INLINE`] bytes
/// (a `str` of up to 35 ASCII characters, every plain `int`, `float`, `bool` and `None`) is
/// copied into its slot, so a hit compares bytes within one slot; one of up to
/// [`SHARED_MAX_LEN`] bytes is copied into an allocation of its own; a larger one is never
/// kept.
struct SharedSlot {
    len: u32,
    format: Format,
    object: Py<PyAny>,
    copy: SlotBytes,
}

/// A slot's copy of the bytes it was decoded from: in the slot, or behind a pointer.
enum SlotBytes {
    Inline([u8; SHARED_INLINE]),
    Heap(Box<[u8]>),
}

impl SharedSlot {
    /// True when `data` in `format` are the bytes this slot's object was decoded from.
    #[inline(always)]
    fn holds(&self, format: Format, data: &[u8]) -> bool {
        if self.len as usize != data.len() || self.format != format {
            return false;
        }
        match &self.copy {
            SlotBytes::Inline(bytes) => bytes.get(..data.len()) == Some(data),
            SlotBytes::Heap(bytes) => **bytes == *data,
        }
    }
}

/// Slots per thread (a power of two).
const SHARED_SLOTS: usize = 256;
/// Values up to this many bytes are copied into the slot itself.
const SHARED_INLINE: usize = 48;
/// Values up to this many bytes are kept at all.
const SHARED_MAX_LEN: usize = 256;

/// The slots, and where each last missed; allocated by the first miss.
struct SharedTable {
    slots: [Option<SharedSlot>; SHARED_SLOTS],
    /// Per slot, the address of the bytes that last missed it (see [`SharedSlot`]).
    missed: [usize; SHARED_SLOTS],
}

/// The table, where the GIL guards it: one for the process.
#[cfg(not(Py_GIL_DISABLED))]
struct GilTable(std::cell::UnsafeCell<Option<Box<SharedTable>>>);

// SAFETY: the table is reached only through [`shared_table`], which takes the Python token:
// on a build with the GIL, a thread holding the token holds the GIL, so no two threads
// reach it at once. Its `Py` objects are immutable builtins, fine to hand to any thread.
#[cfg(not(Py_GIL_DISABLED))]
unsafe impl Sync for GilTable {}

/// One table for the process where the GIL guards it: a read is one load of its address,
/// where a thread's own table in a shared library is a `__tls_get_addr` call (11
/// instructions a hit). Without a `RefCell`: it is reached only by [`shared`] and
/// [`shared_keep`], which run no Python code and drop nothing while they hold a reference
/// into it, so no access can overlap another.
#[cfg(not(Py_GIL_DISABLED))]
static SHARED: GilTable = GilTable(std::cell::UnsafeCell::new(None));

#[cfg(Py_GIL_DISABLED)]
thread_local! {
    /// Without the GIL, each thread has its own table: constant-initialised (no lazy-init
    /// state to test) and without a `RefCell`, for the reasons given for the GIL's table.
    static SHARED: std::cell::UnsafeCell<Option<Box<SharedTable>>> =
        const { std::cell::UnsafeCell::new(None) };
}

/// The table of shared objects, for a thread attached to the interpreter (see `SHARED`);
/// `None` only while the thread's own table is being destroyed (free-threaded builds).
#[inline(always)]
fn shared_table(_py: Python<'_>) -> Option<*mut Option<Box<SharedTable>>> {
    #[cfg(not(Py_GIL_DISABLED))]
    return Some(SHARED.0.get());
    #[cfg(Py_GIL_DISABLED)]
    return SHARED.try_with(std::cell::UnsafeCell::get).ok();
}

/// The slot chosen for bytes at `addr` (Fibonacci hashing: entries the store allocated at
/// a regular stride still spread over every slot).
#[inline(always)]
fn shared_index(addr: *const u8) -> usize {
    let bits = SHARED_SLOTS.trailing_zeros();
    ((addr as usize as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

/// True when the bytes at `addr` missed their slot on the slot's last miss too (the second
/// miss in a row: their object is worth keeping); otherwise notes this miss and answers
/// false.
#[inline]
fn admitted(py: Python<'_>, addr: *const u8) -> bool {
    let index = shared_index(addr);
    shared_table(py).is_some_and(|table| {
        // SAFETY: see `SHARED`: no other reference into the table is alive.
        let table = unsafe { &mut *table }.get_or_insert_with(new_table);
        let missed = std::mem::replace(&mut table.missed[index], addr as usize);
        missed == addr as usize
    })
}

/// A new, empty table: a function of its own, called once. Inlined into its callers (each
/// read that misses the table), the 20 KiB it is built in made their frames 20 KiB deep,
/// and each such read probed the five stack pages of that frame before doing anything
/// else.
#[cold]
#[inline(never)]
fn new_table() -> Box<SharedTable> {
    Box::new(SharedTable {
        slots: [const { None }; SHARED_SLOTS],
        missed: [0; SHARED_SLOTS],
    })
}

/// Keeps `object`, decoded from `data` in `format`, for later reads of the same bytes.
#[inline]
fn shared_keep(py: Python<'_>, format: Format, data: &[u8], addr: *const u8, object: Py<PyAny>) {
    let copy = if data.len() <= SHARED_INLINE {
        let mut bytes = [0; SHARED_INLINE];
        bytes[..data.len()].copy_from_slice(data);
        SlotBytes::Inline(bytes)
    } else {
        SlotBytes::Heap(data.into())
    };
    let slot = SharedSlot {
        len: data.len() as u32,
        format,
        object,
        copy,
    };
    let index = shared_index(addr);
    let old = shared_table(py).map(move |table| {
        // SAFETY: see `SHARED`: no other reference into the table is alive.
        let table = unsafe { &mut *table };
        let table = table.get_or_insert_with(new_table);
        table.slots[index].replace(slot)
    });
    // The slot it replaced (an immutable builtin and a copy) is dropped here, once the
    // table is no longer borrowed.
    drop(old);
}

/// True for objects no caller can mutate: exact immutable builtins, and tuples of them.
fn immutable(obj: &Bound<'_, PyAny>, depth: u8) -> bool {
    let ptr = obj.as_ptr();
    // SAFETY: `ptr` is a live object (borrowed from `obj`); the Check functions only read
    // its type, and `obj` proves the thread is attached.
    unsafe {
        if ffi::PyUnicode_CheckExact(ptr) != 0
            || ffi::PyBytes_CheckExact(ptr) != 0
            || ffi::PyLong_CheckExact(ptr) != 0
            || ffi::PyFloat_CheckExact(ptr) != 0
            || ffi::PyBool_Check(ptr) != 0
            || ptr == ffi::Py_None()
        {
            return true;
        }
        if depth >= 2 || ffi::PyTuple_CheckExact(ptr) == 0 {
            return false;
        }
    }
    obj.cast::<pyo3::types::PyTuple>()
        .is_ok_and(|t| t.iter().all(|item| immutable(&item, depth + 1)))
}

/// What a lent read takes out of the store's value when the table has no object for it, to
/// decode once the store has let go ([`decode_taken`]).
pub(crate) enum Taken {
    /// Nothing (the table answered, or the key was absent).
    Nothing,
    /// A copy of bytes up to [`SHARED_INLINE`] long, and, when their object is to be kept,
    /// the address the store lent them at (the slot it goes to).
    Copy {
        keep_at: Option<*const u8>,
        len: usize,
        bytes: [u8; SHARED_INLINE],
    },
    /// Longer bytes: the value itself (one more reference to the store's buffer, whose
    /// bytes lie at the address the store lent them at).
    Value { value: polycache::Value, keep: bool },
}

/// The part of a lent read that runs while the store lends `value`, maybe under its lock:
/// the object the table keeps for these bytes (a new reference), or one made at once from
/// them ([`decode_plain`]), or `None`: then `taken` holds the bytes, to decode once the
/// store has let go ([`decode_taken`]).
///
/// It runs no Python code, and makes no object the garbage collector tracks, and drops
/// none: a table lookup and a `Py_INCREF`; or on a miss the table's note of it, then a
/// plain object (a `str`, `bytes`, `int`, `float`: none of them tracked) or a copy of short
/// bytes (a clone of the value for longer ones). A tracked allocation can start the garbage
/// collector, whose finalizers may call the cache, whose store may be locked by this very
/// read; so can dropping an object. An object that will be kept ([`admitted`]) is decoded
/// later too, as its keeping replaces (drops) the slot's old one. On a hit it writes
/// nothing: the caller's `taken` is an enum whose empty form is its tag alone (an earlier
/// version lent into a 264-byte struct that the compiler zeroed with `memset` on every
/// call). Short bytes are copied, not cloned: a clone's two atomic operations on the
/// entry's count made a table miss over 10,000 keys slower in time than the copy, though
/// fewer in instructions.
#[inline(always)]
pub(crate) fn lend<'py>(
    py: Python<'py>,
    format: Format,
    value: &polycache::Value,
    taken: &mut Taken,
) -> Option<Bound<'py, PyAny>> {
    let data = value.as_bytes();
    if data.len() <= SHARED_MAX_LEN {
        if let Some(object) = shared(py, format, data) {
            return Some(object);
        }
    }
    lend_missed(py, format, value, taken)
}

/// [`lend`] when the table has no object for the bytes: the miss noted, then a plain object
/// made from them, unless it is to be kept; else the bytes taken out.
#[inline(never)]
fn lend_missed<'py>(
    py: Python<'py>,
    format: Format,
    value: &polycache::Value,
    taken: &mut Taken,
) -> Option<Bound<'py, PyAny>> {
    let data = value.as_bytes();
    let keep = data.len() <= SHARED_MAX_LEN && admitted(py, data.as_ptr());
    if !keep {
        if let Some(object) = decode_plain(py, format, data) {
            return Some(object);
        }
    }
    *taken = if data.len() <= SHARED_INLINE {
        let mut bytes = [0; SHARED_INLINE];
        bytes[..data.len()].copy_from_slice(data);
        Taken::Copy {
            keep_at: keep.then_some(data.as_ptr()),
            len: data.len(),
            bytes,
        }
    } else {
        Taken::Value {
            value: value.clone(),
            keep,
        }
    };
    None
}

/// Decodes what [`lend`] took out, keeping an immutable result for later reads when `lend`
/// said so (in the slot of the address the store lent the bytes at).
#[inline(never)]
pub(crate) fn decode_taken<'py>(
    py: Python<'py>,
    format: Format,
    taken: &Taken,
) -> PyResult<Bound<'py, PyAny>> {
    match taken {
        Taken::Copy {
            keep_at,
            len,
            bytes,
        } => decode_keep(py, format, &bytes[..*len], *keep_at),
        Taken::Value { value, keep } => {
            let data = value.as_bytes();
            decode_keep(py, format, data, keep.then_some(data.as_ptr()))
        }
        Taken::Nothing => Ok(py.None().into_bound(py)),
    }
}

/// The object an earlier read of the same stored bytes `data` in `format` decoded, if it
/// was kept (see [`SharedSlot`]): a new reference, and nothing else done (it
/// runs inside a lent read, see [`lend`]).
#[inline(always)]
pub(crate) fn shared<'py>(
    py: Python<'py>,
    format: Format,
    data: &[u8],
) -> Option<Bound<'py, PyAny>> {
    let table = shared_table(py)?;
    // SAFETY: see `SHARED`: no other reference into the table is alive.
    let table = unsafe { &*table }.as_ref()?;
    let slot = table.slots[shared_index(data.as_ptr())].as_ref()?;
    // `clone` is a `Py_INCREF`: no allocation, no Python code.
    slot.holds(format, data)
        .then(|| slot.object.bind(py).clone())
}

/// The miss of [`shared`]: decodes `data`, and keeps the result for later reads if
/// `keep_at` is the address the store lent the bytes at (the slot) and the object is
/// immutable.
#[inline(never)]
pub(crate) fn decode_keep<'py>(
    py: Python<'py>,
    format: Format,
    data: &[u8],
    keep_at: Option<*const u8>,
) -> PyResult<Bound<'py, PyAny>> {
    let object = decode(py, format, data)?;
    if let Some(addr) = keep_at {
        if immutable(&object, 0) {
            shared_keep(py, format, data, addr, object.clone().unbind());
        }
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_decimal_accepts_only_plain_digits() {
        assert_eq!(parse_small_decimal(b"0"), Some(0));
        assert_eq!(parse_small_decimal(b"-12"), Some(-12));
        assert_eq!(parse_small_decimal(b"007"), Some(7));
        assert_eq!(
            parse_small_decimal(b"999999999999999999"),
            Some(999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"1_0",
            b"1.0",
            b"9999999999999999999",
        ] {
            assert_eq!(parse_small_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn short_ascii_str_reads_only_the_framed_short_form() {
        let mut buf = Buf::new();
        for chars in [&b""[..], b"a", b"abcdefghijklmnop", &[b'x'; 255]] {
            pickle_blob(&mut buf, SHORT_BINUNICODE, BINUNICODE, chars);
            assert_eq!(short_ascii_str(buf.as_slice()), Some(chars));
            // Protocol 4 writes the same opcodes.
            let mut v4 = buf.as_slice().to_vec();
            v4[1] = 4;
            assert_eq!(short_ascii_str(&v4), Some(chars));
        }
        // pickle.dumps("abcd", 5), written out.
        assert_eq!(
            short_ascii_str(b"\x80\x05\x95\x08\x00\x00\x00\x00\x00\x00\x00\x8c\x04abcd\x94."),
            Some(&b"abcd"[..])
        );
        pickle_blob(&mut buf, SHORT_BINUNICODE, BINUNICODE, b"abcd");
        let good = buf.as_slice().to_vec();
        // Every byte of the head and the tail is checked: any change goes to the full reader.
        for at in (0..13).chain(good.len() - 2..good.len()) {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert_eq!(short_ascii_str(&bad), None, "byte {at} changed");
        }
        // Not ASCII, bytes rather than str, a long str, a truncated pickle.
        pickle_blob(&mut buf, SHORT_BINUNICODE, BINUNICODE, "é".as_bytes());
        assert_eq!(short_ascii_str(buf.as_slice()), None);
        pickle_blob(&mut buf, SHORT_BINBYTES, BINBYTES, b"abcd");
        assert_eq!(short_ascii_str(buf.as_slice()), None);
        pickle_blob(&mut buf, SHORT_BINUNICODE, BINUNICODE, &[b'x'; 256]);
        assert_eq!(short_ascii_str(buf.as_slice()), None);
        assert_eq!(short_ascii_str(&good[..good.len() - 1]), None);
        assert_eq!(short_ascii_str(&good[..12]), None);
    }

    #[test]
    fn write_i64_matches_to_string() {
        for n in [0, 7, -7, 10, i64::MAX, i64::MIN] {
            let mut buf = Buf::new();
            write_i64(&mut buf, n);
            assert_eq!(buf.as_slice(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn blob_frames_like_cpython() {
        let mut buf = Buf::new();
        pickle_blob(&mut buf, SHORT_BINUNICODE, BINUNICODE, b"");
        assert_eq!(
            buf.as_slice(),
            b"\x80\x05\x95\x04\x00\x00\x00\x00\x00\x00\x00\x8c\x00\x94."
        );
        pickle_blob(&mut buf, SHORT_BINBYTES, BINBYTES, b"ab");
        assert_eq!(
            buf.as_slice(),
            b"\x80\x05\x95\x06\x00\x00\x00\x00\x00\x00\x00C\x02ab\x94."
        );
        pickle_blob(&mut buf, SHORT_BINBYTES, BINBYTES, &[7u8; 300]);
        assert_eq!(
            &buf.as_slice()[..16],
            b"\x80\x05\x95\x33\x01\x00\x00\x00\x00\x00\x00B\x2c\x01\x00\x00"
        );
        assert_eq!(&buf.as_slice()[buf.as_slice().len() - 2..], b"\x94.");
    }
}
