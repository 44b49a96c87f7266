//! `polycache._polycache._DjangoCache`: the native half of `polycache.django.Cache`.
//!
//! Django's key rules and return conventions over the operations of [`crate::ops`], each
//! with its awaitable twin (Django's async cache API: `aget`, `aset`, ...). The full key is
//! `{KEY_PREFIX}:{VERSION}:{key}` (Django's `default_key_func`), and every key is checked as
//! Django's `BaseCache.validate_key` checks it, with the same `CacheKeyWarning` texts.
//! Building and checking the key here instead of in Python saves about a microsecond a call.
//!
//! A custom `KEY_FUNCTION`, a subclass that overrides `make_key` / `validate_key` /
//! `make_and_validate_key`, or a version that is not an `int` take the slow path: the key is
//! made (and checked) by that Python code and goes to the core cache as a full key
//! ([`Key::full`](polycache::Key::full)), so statistics, fail-open and the value size limit
//! apply as on the fast path.
//!
//! Timeouts use Django's words (`DEFAULT_TIMEOUT`, `None` never expires, `<= 0` already
//! expired); `set` answers `None`; a value pickle cannot serialize raises pickle's own error,
//! as Django's backends do.

use crate::args::{
    self, from_millis, key_text, stats_dict, type_name, StoreMode, TagsArg, TimeoutArg,
};
use crate::awaitable;
use crate::cache::{negated, open};
use crate::ops::{
    pickle_error, Core, Decoder, Deliver, How, KeyMode, KeyOp, Op, RequestRef, TaggedWrite,
};
use crate::serializer::Serialized;
use crate::tags::PyTagStamp;
use polycache::{CacheConfig, Expiry};
use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString};
use std::borrow::Cow;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Django's `MEMCACHE_MAX_KEY_LENGTH`.
const MEMCACHE_MAX_KEY_LENGTH: usize = 250;

/// True for the characters Django's `memcached_error_chars_re` (`[\x00-\x20\x7f]`) matches.
/// Every byte of a multi-byte UTF-8 sequence is >= 0x80, so a byte scan is exact.
#[inline]
fn has_memcached_error_chars(s: &str) -> bool {
    s.bytes().any(|b| b <= 0x20 || b == 0x7f)
}

/// `len(s)` as Python counts it: code points.
#[inline]
fn char_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// The number of characters of `str(v)`.
#[inline]
fn decimal_len(v: i64) -> usize {
    let mut n = v.unsigned_abs();
    let mut len = usize::from(v < 0) + 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

#[inline]
fn encode<'py>(core: &Core, value: &Bound<'py, PyAny>) -> PyResult<Serialized<'py>> {
    let mut encoded = Serialized::new(core.decoder.format);
    match encoded.encode(value) {
        Ok(()) => Ok(encoded),
        Err(err) => Err(pickle_error(value.py(), err)),
    }
}

/// A timeout argument: what [`TimeoutArg`] reads, or another object (Django's own
/// `DEFAULT_TIMEOUT` marker, or a wrong type) for [`DjangoCache::expiry`] to judge.
enum DjangoTimeout {
    Known(Expiry),
    Other(Py<PyAny>),
}

/// The default of every `timeout` parameter.
const DEFAULT_EXPIRY: DjangoTimeout = DjangoTimeout::Known(Expiry::Default);

impl<'a, 'py> FromPyObject<'a, 'py> for DjangoTimeout {
    type Error = PyErr;

    #[inline]
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        // Django's marker is a bare `object()`: no need to try it as a number first.
        if obj.get_type().is(obj.py().get_type::<PyAny>()) {
            return Ok(DjangoTimeout::Other(obj.to_owned().unbind()));
        }
        match obj.extract::<TimeoutArg>() {
            Ok(t) => Ok(DjangoTimeout::Known(t.0)),
            Err(_) => Ok(DjangoTimeout::Other(obj.to_owned().unbind())),
        }
    }
}

/// Where the keys of one call are made: in the core, or by Python.
#[derive(Clone, Copy)]
enum KeyPath {
    /// Django's default key function at an `int` version: the core builds the full key.
    Core(Option<i64>),
    /// Python made the full key (custom key function, overridden methods, odd version).
    Python,
}

/// One caller key, made and checked.
enum MadeKey<'a> {
    /// The caller's key as text; the core prepends `{prefix}:{version}:`.
    Caller(Cow<'a, str>),
    /// The full key, stored as is.
    Full(String),
}

/// The native base of `polycache.django.Cache`; see the module docs.
#[pyclass(
    frozen,
    subclass,
    module = "polycache._polycache",
    name = "_DjangoCache"
)]
pub(crate) struct DjangoCache {
    pub(crate) core: Core,
    /// The backend stores nothing (`dummy://`): values are not serialized, as Django's
    /// `DummyCache` does not pickle them either.
    stores_nothing: bool,
    /// `KEY_PREFIX` as Django formats it, its length in characters, and whether it holds a
    /// character memcached refuses.
    prefix: String,
    prefix_chars: usize,
    prefix_memcached_unsafe: bool,
    /// `VERSION` as given; `version_int` when it is a plain `int` (the core's version).
    version: Py<PyAny>,
    version_int: Option<i64>,
    /// Django's `default_timeout` (an `int` or `None`).
    default_timeout: Py<PyAny>,
    /// Django's `DEFAULT_TIMEOUT` marker object.
    sentinel: Py<PyAny>,
    /// `CacheKeyWarning`.
    warning: Py<PyAny>,
    /// Django's `default_key_func`, and the key function in use (`None`: the default).
    default_key_func: Py<PyAny>,
    key_func: Mutex<Option<Py<PyAny>>>,
    /// Keys take the Python path (see [`KeyPath::Python`]).
    keys_in_python: AtomicBool,
    /// The class overrides `make_key`, `validate_key` or `make_and_validate_key`.
    custom_make_key: bool,
    custom_validate: bool,
    custom_make_and_validate: bool,
}

impl DjangoCache {
    /// Django's timeout argument: omitted or `DEFAULT_TIMEOUT` is the default, `None` never
    /// expires, a number of seconds `<= 0` is already expired.
    #[inline]
    fn expiry(&self, py: Python<'_>, timeout: DjangoTimeout) -> PyResult<Expiry> {
        match timeout {
            DjangoTimeout::Known(expiry) => Ok(expiry),
            DjangoTimeout::Other(t) if t.is(self.sentinel.bind(py)) => Ok(Expiry::Default),
            DjangoTimeout::Other(t) => Err(PyTypeError::new_err(format!(
                "timeout must be a number of seconds, None or DEFAULT_TIMEOUT, not {}",
                type_name(t.bind(py))
            ))),
        }
    }

    /// How the keys of a call at `version` are made.
    #[inline]
    fn mode(&self, version: Option<&Bound<'_, PyAny>>) -> KeyPath {
        if self.keys_in_python.load(Ordering::Relaxed) {
            return KeyPath::Python;
        }
        match version {
            None => KeyPath::Core(None),
            Some(v) if v.is_none() => KeyPath::Core(None),
            Some(v) if v.is_exact_instance_of::<PyInt>() => match v.extract::<i64>() {
                Ok(n) => KeyPath::Core(Some(n)),
                Err(_) => KeyPath::Python,
            },
            Some(_) => KeyPath::Python,
        }
    }

    /// Makes and checks one key.
    #[inline]
    fn make<'a>(
        &self,
        slf: &Bound<'_, Self>,
        key: &'a Bound<'_, PyAny>,
        mode: KeyPath,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<MadeKey<'a>> {
        match mode {
            KeyPath::Core(v) => {
                let name: Cow<'a, str> = match key.cast::<PyString>() {
                    Ok(s) => Cow::Borrowed(key_text(s)?),
                    // Django formats any key with "%s".
                    Err(_) => Cow::Owned(key_text(&key.str()?)?.to_owned()),
                };
                let version = v.unwrap_or_else(|| self.version_int.unwrap_or(1));
                if self.custom_validate {
                    let full = format!("{}:{version}:{name}", self.prefix);
                    slf.call_method1("validate_key", (full,))?;
                } else {
                    let chars = self.prefix_chars + 2 + decimal_len(version) + char_len(&name);
                    let bad = self.prefix_memcached_unsafe || has_memcached_error_chars(&name);
                    if chars > MEMCACHE_MAX_KEY_LENGTH || bad {
                        let full = format!("{}:{version}:{name}", self.prefix);
                        self.warn(slf.py(), &full, chars, bad)?;
                    }
                }
                Ok(MadeKey::Caller(name))
            }
            KeyPath::Python => self.make_raw(slf, key, version).map(MadeKey::Full),
        }
    }

    #[cold]
    fn make_raw(
        &self,
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let py = slf.py();
        let version = version.filter(|v| !v.is_none());
        if self.custom_make_and_validate {
            let full = slf.call_method1("make_and_validate_key", (key, version))?;
            return full_key_text(&full);
        }
        let full = if self.custom_make_key {
            full_key_text(&slf.call_method1("make_key", (key, version))?)?
        } else {
            let version = match version {
                Some(v) => v.clone(),
                None => self.version.bind(py).clone(),
            };
            self.key_func_call(py, key, &version)?
        };
        if self.custom_validate {
            slf.call_method1("validate_key", (&full,))?;
        } else {
            self.validate_text(py, &full)?;
        }
        Ok(full)
    }

    /// `key_func(key, key_prefix, version)`, or Django's default format without a call.
    fn key_func_call(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        version: &Bound<'_, PyAny>,
    ) -> PyResult<String> {
        let func = self
            .key_func
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|f| f.clone_ref(py));
        match func {
            Some(func) => full_key_text(&func.bind(py).call1((key, &self.prefix, version))?),
            None => Ok(format!(
                "{}:{}:{}",
                self.prefix,
                key_text(&version.str()?)?,
                key_text(&key.str()?)?
            )),
        }
    }

    /// Django's `validate_key` on a full key.
    fn validate_text(&self, py: Python<'_>, full: &str) -> PyResult<()> {
        let chars = char_len(full);
        let bad = has_memcached_error_chars(full);
        if chars > MEMCACHE_MAX_KEY_LENGTH || bad {
            self.warn(py, full, chars, bad)?;
        }
        Ok(())
    }

    /// The warnings of Django's `memcache_key_warnings`, word for word.
    #[cold]
    fn warn(&self, py: Python<'_>, full: &str, chars: usize, bad: bool) -> PyResult<()> {
        let repr = PyString::new(py, full).repr()?;
        let repr = repr.to_str()?;
        let category = self.warning.bind(py);
        if chars > MEMCACHE_MAX_KEY_LENGTH {
            let message = format!(
                "Cache key will cause errors if used with memcached: {repr} (longer than {MEMCACHE_MAX_KEY_LENGTH})"
            );
            PyErr::warn(py, category, &c_message(message), 1)?;
        }
        if bad {
            let message = format!(
                "Cache key contains characters that will cause errors if used with memcached: {repr}"
            );
            PyErr::warn(py, category, &c_message(message), 1)?;
        }
        Ok(())
    }

    /// Makes and checks every key of `keys`.
    fn make_all<'a>(
        &self,
        slf: &Bound<'_, Self>,
        keys: &'a [Bound<'_, PyAny>],
        mode: KeyPath,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<MadeKey<'a>>> {
        keys.iter()
            .map(|k| self.make(slf, k, mode, version))
            .collect()
    }
}

/// The full key a Python key function returned.
fn full_key_text(full: &Bound<'_, PyAny>) -> PyResult<String> {
    match full.cast::<PyString>() {
        Ok(s) => Ok(key_text(s)?.to_owned()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "the cache key function must return a str, not {}",
            type_name(full)
        ))),
    }
}

/// A warning text as C wants it (a NUL inside the key is shown by repr as `\x00`).
fn c_message(message: String) -> CString {
    CString::new(message).unwrap_or_else(|e| {
        let mut bytes = e.into_vec();
        bytes.retain(|&b| b != 0);
        CString::new(bytes).unwrap_or_default()
    })
}

impl DjangoCache {
    /// Answers `op`, whose keys were made in `mode`: see [`Core::answer`].
    #[inline]
    fn answer<'py>(
        &self,
        py: Python<'py>,
        how: How,
        op: Op<&str, &[u8]>,
        mode: KeyPath,
        deliver: Deliver,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mode = match mode {
            KeyPath::Core(v) => KeyMode::Versioned(v),
            KeyPath::Python => KeyMode::Full,
        };
        self.core
            .answer(py, how, RequestRef::new(op, mode), deliver)
    }

    /// `get`.
    #[inline]
    fn do_get<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let mode = this.mode(version);
        let made = this.make(slf, key, mode, version)?;
        let deliver = Deliver::Value(default.map(Bound::unbind));
        this.answer(slf.py(), how, Op::Get(made_key_text(&made)), mode, deliver)
    }

    /// `set` (answers None; a failed write removes the old value, as Django's memcached
    /// backends do), `add` or `set(nx=True)` (`IfAbsent`) and `set(xx=True)` (`IfPresent`),
    /// which answer whether they stored, as django-redis' `set` does.
    fn do_store<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        mode_of_store: StoreMode,
        (key, value): (&Bound<'py, PyAny>, &Bound<'py, PyAny>),
        timeout: DjangoTimeout,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let py = slf.py();
        let expiry = this.expiry(py, timeout)?;
        let mode = this.mode(version);
        let made = this.make(slf, key, mode, version)?;
        if this.stores_nothing {
            let answer = match mode_of_store {
                StoreMode::Always => py.None().into_bound(py),
                StoreMode::IfAbsent => PyBool::new(py, true).to_owned().into_any(),
                StoreMode::IfPresent => PyBool::new(py, false).to_owned().into_any(),
            };
            return constant(py, how, answer);
        }
        let encoded = encode(&this.core, value)?;
        let (name, bytes) = (made_key_text(&made), encoded.as_bytes());
        let (op, deliver) = match mode_of_store {
            StoreMode::Always => (Op::SetOrDelete(name, bytes, expiry), Deliver::Nothing),
            StoreMode::IfAbsent => (Op::Add(name, bytes, expiry), Deliver::Flag),
            StoreMode::IfPresent => (Op::Replace(name, bytes, expiry), Deliver::Flag),
        };
        this.answer(py, how, op, mode, deliver)
    }

    /// An operation on one key: `delete`, `has_key`, `touch`, `incr`.
    fn do_keyed<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        version: Option<&Bound<'py, PyAny>>,
        op: KeyOp,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let mode = this.mode(version);
        let made = this.make(slf, key, mode, version)?;
        let (op, deliver) = op.on(made_key_text(&made));
        this.answer(slf.py(), how, op, mode, deliver)
    }

    #[allow(clippy::too_many_arguments)]
    fn do_set<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        timeout: DjangoTimeout,
        version: Option<&Bound<'py, PyAny>>,
        nx: bool,
        xx: bool,
        tags: Option<TagsArg>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mode = StoreMode::of(nx, xx)?;
        match tags {
            Some(tags) if !tags.0.is_empty() => {
                mode.refuse_tags()?;
                let write = TaggedWrite::Tags(&tags);
                Self::store_with(slf, how, (key, value), timeout, version, write)
            }
            _ => Self::do_store(slf, how, mode, (key, value), timeout, version),
        }
    }

    /// A tagged write of one value (`set(tags=)`, `_set_stamped`).
    fn store_with<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        (key, value): (&Bound<'py, PyAny>, &Bound<'py, PyAny>),
        timeout: DjangoTimeout,
        version: Option<&Bound<'py, PyAny>>,
        write: TaggedWrite<'_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let py = slf.py();
        let expiry = this.expiry(py, timeout)?;
        let mode = this.mode(version);
        let made = this.make(slf, key, mode, version)?;
        let encoded = encode(&this.core, value)?;
        let (op, deliver) = write.op(
            made_key_text(&made),
            encoded.as_bytes(),
            expiry,
            Deliver::Nothing,
        );
        this.answer(py, how, op, mode, deliver)
    }

    fn do_invalidate_tags<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        tags: TagsArg,
    ) -> PyResult<Bound<'py, PyAny>> {
        let op = Op::InvalidateTags(tags.texts());
        let mode = KeyPath::Core(None);
        slf.get().answer(slf.py(), how, op, mode, Deliver::Flag)
    }

    fn do_tag_stamp<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        tags: TagsArg,
    ) -> PyResult<Bound<'py, PyAny>> {
        let op = Op::TagStamp(tags.texts());
        let mode = KeyPath::Core(None);
        slf.get().answer(slf.py(), how, op, mode, Deliver::Stamp)
    }

    #[allow(clippy::too_many_arguments)]
    fn do_set_stamped<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        timeout: DjangoTimeout,
        version: Option<&Bound<'py, PyAny>>,
        stamp: PyRef<'py, PyTagStamp>,
        add: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let write = TaggedWrite::Stamp(stamp.0.clone(), add);
        Self::store_with(slf, how, (key, value), timeout, version, write)
    }

    fn do_add<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        timeout: DjangoTimeout,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::do_store(
            slf,
            how,
            StoreMode::IfAbsent,
            (key, value),
            timeout,
            version,
        )
    }

    fn do_delete<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::do_keyed(slf, how, key, version, KeyOp::Delete)
    }

    fn do_has_key<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::do_keyed(slf, how, key, version, KeyOp::HasKey)
    }

    fn do_incr<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        delta: i64,
        version: Option<&Bound<'py, PyAny>>,
        ignore_key_check: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let op = if ignore_key_check {
            KeyOp::IncrOrCreate(delta)
        } else {
            KeyOp::Incr(delta)
        };
        Self::do_keyed(slf, how, key, version, op)
    }

    fn do_decr<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        delta: i64,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let delta = negated(slf.py(), delta)?;
        Self::do_keyed(slf, how, key, version, KeyOp::Incr(delta))
    }

    fn do_touch<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        timeout: DjangoTimeout,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let expiry = slf.get().expiry(slf.py(), timeout)?;
        Self::do_keyed(slf, how, key, version, KeyOp::Touch(expiry))
    }

    fn do_ttl<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::do_keyed(slf, how, key, version, KeyOp::Ttl { millis: false })
    }

    fn do_pttl<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::do_keyed(slf, how, key, version, KeyOp::Ttl { millis: true })
    }

    fn do_expire<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        timeout: DjangoTimeout,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let expiry = slf.get().expiry(slf.py(), timeout)?;
        Self::do_keyed(slf, how, key, version, KeyOp::Touch(expiry))
    }

    fn do_pexpire<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        timeout: DjangoTimeout,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let expiry = from_millis(slf.get().expiry(slf.py(), timeout)?);
        Self::do_keyed(slf, how, key, version, KeyOp::Touch(expiry))
    }

    fn do_expire_at<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        when: &Bound<'py, PyAny>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let op = KeyOp::ExpireAt(args::when(when, 1.0)?);
        Self::do_keyed(slf, how, key, version, op)
    }

    fn do_pexpire_at<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        when: &Bound<'py, PyAny>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let op = KeyOp::ExpireAt(args::when(when, 1000.0)?);
        Self::do_keyed(slf, how, key, version, op)
    }

    fn do_persist<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::do_keyed(slf, how, key, version, KeyOp::Touch(Expiry::Never))
    }

    fn do_get_many<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        keys: &Bound<'py, PyAny>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let objs = keys.try_iter()?.collect::<PyResult<Vec<_>>>()?;
        let mode = this.mode(version);
        let made = this.make_all(slf, &objs, mode, version)?;
        let names = made.iter().map(made_key_text).collect();
        let deliver = Deliver::Found(objs.iter().map(|o| o.clone().unbind()).collect());
        this.answer(slf.py(), how, Op::GetMany(names), mode, deliver)
    }

    fn do_set_many<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        data: &Bound<'py, PyAny>,
        timeout: DjangoTimeout,
        version: Option<&Bound<'py, PyAny>>,
        tags: Option<TagsArg>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let py = slf.py();
        let expiry = this.expiry(py, timeout)?;
        let mode = this.mode(version);
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for item in crate::args::items(data)?.try_iter()? {
            let (k, v): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item?.extract()?;
            keys.push(k);
            values.push(v);
        }
        let made = this.make_all(slf, &keys, mode, version)?;
        if this.stores_nothing {
            return constant(py, how, PyList::empty(py).into_any());
        }
        // Every value is serialized before anything is stored: one bad value stores none.
        let encoded = values
            .iter()
            .map(|v| encode(&this.core, v))
            .collect::<PyResult<Vec<_>>>()?;
        let pairs = made
            .iter()
            .zip(&encoded)
            .map(|(k, e)| (made_key_text(k), e.as_bytes()))
            .collect();
        let deliver = Deliver::FailedKeys(keys.iter().map(|k| k.clone().unbind()).collect());
        let op = match &tags {
            Some(tags) if !tags.0.is_empty() => Op::SetManyTagged(pairs, expiry, tags.texts()),
            _ => Op::SetMany(pairs, expiry),
        };
        this.answer(py, how, op, mode, deliver)
    }

    fn do_delete_many<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        keys: &Bound<'py, PyAny>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let objs = keys.try_iter()?.collect::<PyResult<Vec<_>>>()?;
        let mode = this.mode(version);
        let made = this.make_all(slf, &objs, mode, version)?;
        let names = made.iter().map(made_key_text).collect();
        this.answer(slf.py(), how, Op::DeleteMany(names), mode, Deliver::Nothing)
    }

    /// Removes this cache's entries: those under `{KEY_PREFIX}:` (everything when the prefix
    /// is empty, a custom key function makes the keys, or the backend cannot scope a clear
    /// to a prefix, as memcached).
    fn do_clear<'py>(slf: &Bound<'py, Self>, how: How) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let custom_keys = this.custom_make_key
            || this.custom_make_and_validate
            || this
                .key_func
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some();
        // Custom keys need not start with the prefix: clear the store, as Django does.
        // Memcached cannot scope a clear to a prefix: empty it all, as Django's memcached
        // backends always do.
        let op = if custom_keys {
            Op::ClearAll
        } else {
            Op::ClearOrAll
        };
        this.answer(slf.py(), how, op, KeyPath::Python, Deliver::Nothing)
    }

    /// One Redis data-structure command (`polycache.django`'s django-redis methods): `str`
    /// arguments are full keys, `bytes`, `int` and `float` go as they are.
    fn do_redis_command<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        command: &str,
        args: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        crate::structures::run(&slf.get().core, slf.py(), how, command, args)
    }

    /// `keys` (django-redis): the caller's keys that match the glob `search`.
    fn do_keys<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        search: &str,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let mode = this.mode(version);
        this.answer(slf.py(), how, Op::Keys(search), mode, Deliver::Keys)
    }

    /// `delete_pattern` (django-redis): removes the keys that match; answers the count.
    fn do_delete_pattern<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        pattern: &str,
        version: Option<&Bound<'py, PyAny>>,
        prefix: Option<&Bound<'py, PyAny>>,
        itersize: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        if prefix.is_some_and(|p| !p.is_none()) {
            let err = polycache::Error::new(
                polycache::ErrorKind::Unsupported,
                "delete_pattern(prefix=...) is not supported: a cache deletes under its own \
                 KEY_PREFIX; open a cache with that KEY_PREFIX to delete under it",
            );
            return Err(crate::errors::to_py(slf.py(), err));
        }
        let mode = this.mode(version);
        let op = Op::DeletePattern(pattern, crate::scan::itersize(itersize));
        this.answer(slf.py(), how, op, mode, Deliver::Int)
    }
}

/// `answer` as a call returns it: itself, or a complete awaitable of it.
fn constant<'py>(
    py: Python<'py>,
    how: How,
    answer: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    match how {
        How::Sync => Ok(answer),
        How::Async => awaitable::ready(py, Ok(answer)),
    }
}

twins! {
    impl DjangoCache {
        /// The value under `key`, or `default` on a miss.
        twins get / aget = do_get<'py>(slf, key: &Bound<'py, PyAny>, default: Option<Bound<'py, PyAny>>, version: Option<&Bound<'py, PyAny>>)
            signature (key, default = None, version = None);
        /// Stores `value` under `key`; a timeout of 0 or less stores nothing and removes the
        /// old value. Returns None, as Django's backends do. django-redis' `nx=True` stores
        /// only a missing key, `xx=True` only a present one; with either, True when it stored.
        /// With `tags=[...]` the entry carries the tags: `invalidate_tags` of any of them
        /// makes it a miss.
        twins set / aset = do_set<'py>(slf, key: &Bound<'py, PyAny>, value: &Bound<'py, PyAny>, timeout: DjangoTimeout, version: Option<&Bound<'py, PyAny>>, nx: bool, xx: bool, tags: Option<TagsArg>)
            signature (key, value, timeout = DEFAULT_EXPIRY, version = None, *, nx = false, xx = false, tags = None);
        /// Stores `value` only if `key` is absent; True when it stored.
        twins add / aadd = do_add<'py>(slf, key: &Bound<'py, PyAny>, value: &Bound<'py, PyAny>, timeout: DjangoTimeout, version: Option<&Bound<'py, PyAny>>)
            signature (key, value, timeout = DEFAULT_EXPIRY, version = None);
        /// Removes `key`; True when it was present.
        twins delete / adelete = do_delete<'py>(slf, key: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (key, version = None);
        /// True when `key` is in the cache and has not expired.
        twins has_key / ahas_key = do_has_key<'py>(slf, key: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (key, version = None);
        /// Gives `key` a new timeout; True when the key was present.
        twins touch / atouch = do_touch<'py>(slf, key: &Bound<'py, PyAny>, timeout: DjangoTimeout, version: Option<&Bound<'py, PyAny>>)
            signature (key, timeout = DEFAULT_EXPIRY, version = None);
        /// Adds `delta` to the integer under `key` atomically and returns the new value;
        /// `ValueError` when the key is missing, unless `ignore_key_check=True` (django-redis):
        /// then a missing key is created at `delta`, never expiring.
        twins incr / aincr = do_incr<'py>(slf, key: &Bound<'py, PyAny>, delta: i64, version: Option<&Bound<'py, PyAny>>, ignore_key_check: bool)
            signature (key, delta = 1, version = None, *, ignore_key_check = false);
        /// Subtracts `delta` from the integer under `key` atomically and returns the new value.
        twins decr / adecr = do_decr<'py>(slf, key: &Bound<'py, PyAny>, delta: i64, version: Option<&Bound<'py, PyAny>>)
            signature (key, delta = 1, version = None);
        /// A dict of the keys found and their values; missing keys are left out.
        twins get_many / aget_many = do_get_many<'py>(slf, keys: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (keys, version = None);
        /// Stores every pair of `data`; returns the list of keys that failed to store.
        /// With `tags=[...]` every entry carries the tags.
        twins set_many / aset_many = do_set_many<'py>(slf, data: &Bound<'py, PyAny>, timeout: DjangoTimeout, version: Option<&Bound<'py, PyAny>>, tags: Option<TagsArg>)
            signature (data, timeout = DEFAULT_EXPIRY, version = None, *, tags = None);
        /// Removes every key in `keys`.
        twins delete_many / adelete_many = do_delete_many<'py>(slf, keys: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (keys, version = None);
        /// Removes this cache's entries: those under `{KEY_PREFIX}:` (everything when the
        /// prefix is empty, a custom key function makes the keys, or the backend cannot scope
        /// a clear to a prefix, as memcached).
        twins clear / aclear = do_clear<'py>(slf)
            signature ();
        /// django-redis' `ttl`: seconds `key` has left (rounded as Redis' `TTL`), None when
        /// it never expires, 0 when it is missing.
        twins ttl / attl = do_ttl<'py>(slf, key: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (key, version = None);
        /// django-redis' `pttl`: `ttl` in milliseconds.
        twins pttl / apttl = do_pttl<'py>(slf, key: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (key, version = None);
        /// django-redis' `expire`: `timeout` seconds to live (0 or less removes the key);
        /// True when the key was present.
        twins expire / aexpire = do_expire<'py>(slf, key: &Bound<'py, PyAny>, timeout: DjangoTimeout, version: Option<&Bound<'py, PyAny>>)
            signature (key, timeout, version = None);
        /// django-redis' `pexpire`: `expire` in milliseconds.
        twins pexpire / apexpire = do_pexpire<'py>(slf, key: &Bound<'py, PyAny>, timeout: DjangoTimeout, version: Option<&Bound<'py, PyAny>>)
            signature (key, timeout, version = None);
        /// django-redis' `expire_at`: expire at `when` (a datetime, naive meaning local time,
        /// or Unix seconds); a time past removes the key. True when the key was present.
        twins expire_at / aexpire_at = do_expire_at<'py>(slf, key: &Bound<'py, PyAny>, when: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (key, when, version = None);
        /// django-redis' `pexpire_at`: `when` in Unix milliseconds (or a datetime).
        twins pexpire_at / apexpire_at = do_pexpire_at<'py>(slf, key: &Bound<'py, PyAny>, when: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (key, when, version = None);
        /// django-redis' `persist`: `key` never expires; True when the key was present.
        twins persist / apersist = do_persist<'py>(slf, key: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (key, version = None);
        /// One Redis data-structure command, for the django-redis methods of
        /// `polycache.django.Cache`: `str` arguments are full keys.
        twins _redis_command / _aredis_command = do_redis_command<'py>(slf, command: &str, args: &Bound<'py, PyAny>)
            signature (command, args);
        /// The keys that match the glob `search` (Redis' rules), `KEY_PREFIX` and version
        /// applied and taken off, as django-redis' `keys`. Walks the whole store: prefer
        /// `iter_keys` on a large one.
        twins keys / akeys = do_keys<'py>(slf, search: &str, version: Option<&Bound<'py, PyAny>>)
            signature (search, version = None);
        /// Removes every key that matches `pattern`, `itersize` keys a batch; returns how
        /// many it removed (django-redis' `delete_pattern`).
        twins delete_pattern / adelete_pattern = do_delete_pattern<'py>(slf, pattern: &str, version: Option<&Bound<'py, PyAny>>, prefix: Option<&Bound<'py, PyAny>>, itersize: Option<i64>)
            signature (pattern, version = None, prefix = None, itersize = None);
        /// Makes every entry carrying any of `tags` a miss, in every process sharing the
        /// backend. True when the write reached the backend.
        twins invalidate_tags / ainvalidate_tags = do_invalidate_tags<'py>(slf, tags: TagsArg)
            signature (tags);
        /// The current versions of `tags`, read before computing a value.
        twins _tag_stamp / _atag_stamp = do_tag_stamp<'py>(slf, tags: TagsArg)
            signature (tags);
        /// Stores `value` with the tag versions of `stamp` (`add` when `add` is true).
        twins _set_stamped / _aset_stamped = do_set_stamped<'py>(slf, key: &Bound<'py, PyAny>, value: &Bound<'py, PyAny>, timeout: DjangoTimeout, version: Option<&Bound<'py, PyAny>>, stamp: PyRef<'py, PyTagStamp>, add: bool)
            signature (key, value, timeout, version, stamp, add = false);

        @methods
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        location, *, key_prefix, version, default_timeout, options, key_func,
        default_key_func, sentinel, warning, custom_make_key, custom_validate,
        custom_make_and_validate
    ))]
    fn new(
        py: Python<'_>,
        location: &str,
        key_prefix: String,
        version: Bound<'_, PyAny>,
        default_timeout: Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyAny>>,
        key_func: Option<Bound<'_, PyAny>>,
        default_key_func: Bound<'_, PyAny>,
        sentinel: Bound<'_, PyAny>,
        warning: Bound<'_, PyAny>,
        custom_make_key: bool,
        custom_validate: bool,
        custom_make_and_validate: bool,
    ) -> PyResult<Self> {
        let version_int = if version.is_exact_instance_of::<PyInt>() {
            version.extract::<i64>().ok()
        } else {
            None
        };
        let timeout = if default_timeout.is_none() {
            TimeoutArg(Expiry::Never)
        } else {
            default_timeout.extract::<TimeoutArg>()?
        };
        let mut config = CacheConfig::new(location);
        config.key_prefix = Some(key_prefix.clone());
        config.version = Some(version_int.unwrap_or(1));
        config.timeout = match timeout.0 {
            Expiry::Default => None,
            Expiry::Never => Some(None),
            Expiry::After(d) => Some(Some(d)),
            _ => Some(Some(std::time::Duration::ZERO)),
        };
        let core = open(py, config, options, true)?;
        let key_func = key_func.filter(|f| !f.is(&default_key_func));
        let raw = key_func.is_some()
            || custom_make_key
            || custom_make_and_validate
            || version_int.is_none();
        Ok(DjangoCache {
            stores_nothing: core.cache.backend().name() == "dummy",
            core,
            prefix_chars: char_len(&key_prefix),
            prefix_memcached_unsafe: has_memcached_error_chars(&key_prefix),
            prefix: key_prefix,
            version: version.unbind(),
            version_int,
            default_timeout: default_timeout.unbind(),
            sentinel: sentinel.unbind(),
            warning: warning.unbind(),
            default_key_func: default_key_func.unbind(),
            key_func: Mutex::new(key_func.map(Bound::unbind)),
            keys_in_python: AtomicBool::new(raw),
            custom_make_key,
            custom_validate,
            custom_make_and_validate,
        })
    }

    /// Does nothing: connections are pooled and live as long as the cache.
    #[pyo3(signature = (**kwargs))]
    fn close(&self, kwargs: Option<&Bound<'_, PyDict>>) {
        let _ = kwargs;
    }

    /// The keys that match the glob `search`, streamed `itersize` at a time (django-redis'
    /// `iter_keys`); `aiter_keys` is its async twin.
    #[pyo3(signature = (search, itersize = None, version = None))]
    fn iter_keys(
        &self,
        py: Python<'_>,
        search: &str,
        itersize: Option<i64>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<crate::scan::KeyScan> {
        let version = match self.mode(version) {
            KeyPath::Core(v) => v,
            KeyPath::Python => KeyMode::Full.scan_version().map_err(|e| crate::errors::to_py(py, e))?,
        };
        crate::scan::start(py, &self.core, search, version, crate::scan::itersize(itersize))
    }

    /// `close`, awaitable.
    #[pyo3(signature = (**kwargs))]
    fn aclose<'py>(
        &self,
        py: Python<'py>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = kwargs;
        awaitable::ready(py, Ok(py.None().into_bound(py)))
    }

    /// Django's `make_key`: `key_func(key, key_prefix, version)`.
    #[pyo3(signature = (key, version = None))]
    fn make_key(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let this = slf.get();
        let py = slf.py();
        let version = match version.filter(|v| !v.is_none()) {
            Some(v) => v.clone(),
            None => this.version.bind(py).clone(),
        };
        let func = this
            .key_func
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|f| f.clone_ref(py));
        match func {
            // A custom key function may return anything; hand it back as it is.
            Some(func) => Ok(func.bind(py).call1((key, &this.prefix, version))?.unbind()),
            None => Ok(PyString::new(py, &this.key_func_call(py, key, &version)?)
                .into_any()
                .unbind()),
        }
    }

    /// Django's `validate_key`: warns (`CacheKeyWarning`) about keys memcached would refuse.
    fn validate_key(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        match key.cast::<PyString>() {
            Ok(s) => self.validate_text(py, key_text(s)?),
            Err(_) => Err(PyTypeError::new_err(format!(
                "cache keys must be str, not {}",
                type_name(key)
            ))),
        }
    }

    /// `make_key` then `validate_key`, through any override of either.
    #[pyo3(signature = (key, version = None))]
    fn make_and_validate_key<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let full = slf.call_method1("make_key", (key, version))?;
        slf.call_method1("validate_key", (&full,))?;
        Ok(full)
    }

    /// The key function (Django's `default_key_func` unless `KEY_FUNCTION` names another).
    #[getter]
    fn get_key_func(&self, py: Python<'_>) -> Py<PyAny> {
        match &*self.key_func.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(f) => f.clone_ref(py),
            None => self.default_key_func.clone_ref(py),
        }
    }

    #[setter]
    fn set_key_func(&self, func: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let func = func.ok_or_else(|| PyAttributeError::new_err("key_func cannot be deleted"))?;
        if !func.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "key_func must be callable, not {}",
                type_name(&func)
            )));
        }
        let custom = !func.is(self.default_key_func.bind(func.py()));
        *self.key_func.lock().unwrap_or_else(|e| e.into_inner()) = custom.then(|| func.unbind());
        let raw = custom
            || self.custom_make_key
            || self.custom_make_and_validate
            || self.version_int.is_none();
        self.keys_in_python.store(raw, Ordering::Relaxed);
        Ok(())
    }

    /// `KEY_PREFIX`.
    #[getter]
    fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// `VERSION`.
    #[getter]
    fn version(&self, py: Python<'_>) -> Py<PyAny> {
        self.version.clone_ref(py)
    }

    /// The default timeout in seconds (an `int`), or None when entries never expire.
    #[getter]
    fn default_timeout(&self, py: Python<'_>) -> Py<PyAny> {
        self.default_timeout.clone_ref(py)
    }

    /// The location, with any password redacted.
    #[getter]
    fn location(&self) -> &str {
        self.core.cache.location()
    }

    /// The serializer of this cache's values: `"pickle"`, `"json"` or `"raw"` (`OPTIONS`
    /// `SERIALIZER`, or `serializer=` in the `LOCATION`).
    #[getter]
    fn serializer(&self) -> &'static str {
        self.core.cache.serializer()
    }

    /// True when the backend answers in memory (calls keep the GIL and never block).
    #[getter]
    fn is_local(&self) -> bool {
        self.core.local
    }

    /// The counters of this cache: hits, misses, sets, deletes, errors, evictions.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &self.core.cache.stats())
    }

    /// The counters and latency histograms of this cache in the Prometheus text format,
    /// labelled `cache="{name}"`.
    #[pyo3(signature = (name = "default"))]
    fn stats_prometheus(&self, name: &str) -> String {
        self.core.cache.stats_prometheus(name)
    }

    /// A native `Cache` over this cache's store, key prefix, version and serializer, for
    /// `polycache.Job` (whose runner works on the native cache).
    /// `value` as this cache stores it (the serializer's bytes; ints as decimal).
    fn _encode<'py>(&self, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        let encoded = encode(&self.core, value)?;
        Ok(pyo3::types::PyBytes::new(value.py(), encoded.as_bytes()))
    }

    /// The object stored `data` holds, read with this cache's serializer.
    fn _decode<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        self.core.decoder.decode(py, data)
    }

    fn _polycache_native(&self) -> crate::cache::PyCache {
        crate::cache::PyCache {
            core: Core {
                cache: self.core.cache.clone(),
                local: self.core.local,
                // polycache's own convention, as `polycache.Cache` raises.
                decoder: Decoder {
                    format: self.core.decoder.format,
                    pickle_errors: false,
                },
            },
        }
    }
}
}

#[inline]
fn made_key_text<'a>(made: &'a MadeKey<'_>) -> &'a str {
    match made {
        MadeKey::Caller(n) => n,
        MadeKey::Full(s) => s,
    }
}
