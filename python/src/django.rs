//! `polycache._polycache._DjangoCache`: the native half of `polycache.django.Cache`.
//!
//! Django's key rules and return conventions over the operations of [`crate::ops`], each
//! with its awaitable twin (Django's async cache API: `aget`, `aset`, ...). The full key is
//! `{KEY_PREFIX}:{VERSION}:{key}` (Django's `default_key_func`), and every key is checked as
//! Django's `BaseCache.validate_key` checks it, with the same `CacheKeyWarning` texts.
//! Building and checking the key here instead of in Python saves about a microsecond a call
//! (the keys are made and checked in [`keys`]).
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
    self, from_millis, key_text, stats_dict, type_name, SetArgs, StoreMode, TagsArg, TimeoutArg,
};
use crate::awaitable;
use crate::cache::open;
use crate::fastget;
use crate::fastset;
use crate::ops::{
    pickle_error, Core, Decoder, Deliver, How, KeyMode, KeyOp, ManyOp, Op, RequestRef, TaggedWrite,
};
use crate::serializer::Serialized;
use crate::tags::PyTagStamp;
use polycache::{CacheConfig, Expiry};
use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

mod keys;
use keys::{char_len, has_memcached_error_chars, made_key_text, KeyPath};

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
        self.core
            .answer(py, how, RequestRef::new(op, key_mode(mode)), deliver)
    }

    /// Answers `op`, whose keys (a pattern) are made at `version`.
    fn at_version<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        op: Op<&str, &[u8]>,
        version: Option<&Bound<'py, PyAny>>,
        deliver: Deliver,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        this.answer(slf.py(), how, op, this.mode(version), deliver)
    }

    /// Answers `op`, which names no key (the tag operations).
    fn unkeyed<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        op: Op<&str, &[u8]>,
        deliver: Deliver,
    ) -> PyResult<Bound<'py, PyAny>> {
        slf.get()
            .answer(slf.py(), how, op, KeyPath::Core(None), deliver)
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
        let (mode, made) = this.make_at(slf, key, version)?;
        let deliver = Deliver::Value(default.map(Bound::unbind));
        this.answer(slf.py(), how, Op::Get(made_key_text(&made)), mode, deliver)
    }

    /// `get` of an entry stored with `tags`: the value and their versions in one request.
    fn do_get_tagged<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        default: Bound<'py, PyAny>,
        version: Option<&Bound<'py, PyAny>>,
        tags: TagsArg,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let (mode, made) = this.make_at(slf, key, version)?;
        let op = Op::GetTagged(made_key_text(&made), tags.texts());
        let deliver = Deliver::Value(Some(default.unbind()));
        this.answer(slf.py(), how, op, mode, deliver)
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
        let (mode, made) = this.make_at(slf, key, version)?;
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
        let (mode, made) = this.make_at(slf, key, version)?;
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
        match SetArgs::of(nx, xx, tags)? {
            SetArgs::Store(mode) => Self::do_store(slf, how, mode, (key, value), timeout, version),
            SetArgs::Tagged(tags) => {
                let write = TaggedWrite::Tags(&tags);
                Self::store_with(slf, how, (key, value), timeout, version, write)
            }
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
        let (mode, made) = this.make_at(slf, key, version)?;
        let encoded = encode(&this.core, value)?;
        let (op, deliver) = write.op(
            made_key_text(&made),
            encoded.as_bytes(),
            expiry,
            Deliver::Nothing,
        );
        this.answer(py, how, op, mode, deliver)
    }

    /// An operation on the keys of the iterable `keys`: `get_many`, `delete_many`.
    fn many_keys<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        keys: &Bound<'py, PyAny>,
        version: Option<&Bound<'py, PyAny>>,
        op: ManyOp,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let objs = keys.try_iter()?.collect::<PyResult<Vec<_>>>()?;
        let mode = this.mode(version);
        let made = this.make_all(slf, &objs, mode, version)?;
        let names = made.iter().map(made_key_text).collect();
        let (op, deliver) = op.on(names, objs.iter().map(|o| o.clone().unbind()).collect());
        this.answer(slf.py(), how, op, mode, deliver)
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
        let op = Op::set_many(pairs, expiry, tags.as_ref());
        this.answer(py, how, op, mode, deliver)
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

    /// `delete_pattern` (django-redis): removes the keys that match; answers the count.
    fn do_delete_pattern<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        pattern: &str,
        version: Option<&Bound<'py, PyAny>>,
        prefix: Option<&Bound<'py, PyAny>>,
        itersize: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if prefix.is_some_and(|p| !p.is_none()) {
            let err = polycache::Error::new(
                polycache::ErrorKind::Unsupported,
                "delete_pattern(prefix=...) is not supported: a cache deletes under its own \
                 KEY_PREFIX; open a cache with that KEY_PREFIX to delete under it",
            );
            return Err(crate::errors::to_py(slf.py(), err));
        }
        let op = Op::DeletePattern(pattern, crate::scan::itersize(itersize));
        Self::at_version(slf, how, op, version, Deliver::Int)
    }
}

/// `get(key)` without PyO3's argument parsing (see [`crate::fastget`]): the key is made and
/// checked as every call makes it (key function, overridden methods, warnings), at the
/// cache's version, with no default.
impl fastget::OneKey for DjangoCache {
    fastget::generic_get!();

    #[inline]
    fn get_one<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let py = slf.py();
        if let Some(name) = this.plain_key(key) {
            return this.core.get_one(py, name);
        }
        let (mode, made) = this.make_at(slf, key, None)?;
        match mode {
            KeyPath::Core(None) => this.core.get_one(py, made_key_text(&made)),
            mode => {
                let op = Op::Get(made_key_text(&made));
                this.answer(py, How::Sync, op, mode, Deliver::Value(None))
            }
        }
    }

    #[inline(always)]
    fn get_quick<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
        taken: &mut crate::serializer::Taken,
    ) -> Option<crate::ops::LentGet<'py>> {
        let this = slf.get();
        let name = this.plain_key(key)?;
        this.core.local.then(|| {
            this.core
                .get_quick(slf.py(), polycache::Key::new(name), taken)
        })
    }
}

/// Gives the class its one-argument `get` (called once, when the module is built).
pub(crate) fn install_fast_get(py: Python<'_>) -> PyResult<()> {
    let entry = fastget::fastcall_entry!(fastget::get_full::<DjangoCache>);
    fastget::install::<DjangoCache>(py, "get", entry)
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

/// How the core takes keys made in `mode`.
#[inline]
fn key_mode(mode: KeyPath) -> KeyMode {
    match mode {
        KeyPath::Core(v) => KeyMode::Versioned(v),
        KeyPath::Python => KeyMode::Full,
    }
}

/// `set(key, value)` without PyO3's argument parsing (see [`crate::fastset`]): Django's
/// `set` with the default timeout and version.
impl fastset::KeyValue for DjangoCache {
    fastset::generic_set!();

    #[inline]
    fn set_two<'py>(
        slf: &Bound<'py, Self>,
        pair: fastset::KeyAndValue<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let (key, value) = pair;
        if this.stores_nothing || !this.core.local {
            return Self::do_store(
                slf,
                How::Sync,
                StoreMode::Always,
                pair,
                DEFAULT_EXPIRY,
                None,
            );
        }
        let (mode, made) = this.make_at(slf, key, None)?;
        let encoded = encode(&this.core, value)?;
        let key = key_mode(mode).key(made_key_text(&made));
        this.core
            .set_in_place(slf.py(), key, encoded.as_bytes(), true)?;
        Ok(slf.py().None().into_bound(slf.py()))
    }

    #[inline(always)]
    fn set_quick(
        slf: &Bound<'_, Self>,
        (key, value): fastset::KeyAndValue<'_, '_>,
    ) -> Option<polycache::Result<*mut pyo3::ffi::PyObject>> {
        let this = slf.get();
        if this.stores_nothing {
            return None;
        }
        let name = this.plain_key(key)?;
        let stored = this
            .core
            .set_quick(polycache::Key::new(name), value, true)?;
        Some(stored.map(|_| slf.py().None().into_ptr()))
    }
}

/// Gives the class its two-argument `set` (called once, when the module is built).
pub(crate) fn install_fast_set(py: Python<'_>) -> PyResult<()> {
    let entry = crate::fastget::fastcall_entry!(fastset::set_full::<DjangoCache>);
    fastset::install::<DjangoCache>(py, entry)
}

twins! {
    impl DjangoCache {
        /// The value under `key`, or `default` on a miss.
        twins get / aget <'py>(slf, how, key: &Bound<'py, PyAny>, default: Option<Bound<'py, PyAny>>, version: Option<&Bound<'py, PyAny>>)
            signature (key, default = None, version = None)
            { Self::do_get(slf, how, key, default, version) }
        /// Stores `value` under `key`; a timeout of 0 or less stores nothing and removes the
        /// old value. Returns None, as Django's backends do. django-redis' `nx=True` stores
        /// only a missing key, `xx=True` only a present one; with either, True when it stored.
        /// With `tags=[...]` the entry carries the tags: `invalidate_tags` of any of them
        /// makes it a miss.
        twins set / aset <'py>(slf, how, key: &Bound<'py, PyAny>, value: &Bound<'py, PyAny>, timeout: DjangoTimeout, version: Option<&Bound<'py, PyAny>>, nx: bool, xx: bool, tags: Option<TagsArg>)
            signature (key, value, timeout = DEFAULT_EXPIRY, version = None, *, nx = false, xx = false, tags = None)
            { Self::do_set(slf, how, key, value, timeout, version, nx, xx, tags) }
        /// Stores `value` only if `key` is absent; True when it stored.
        twins add / aadd <'py>(slf, how, key: &Bound<'py, PyAny>, value: &Bound<'py, PyAny>, timeout: DjangoTimeout, version: Option<&Bound<'py, PyAny>>)
            signature (key, value, timeout = DEFAULT_EXPIRY, version = None)
            { Self::do_store(slf, how, StoreMode::IfAbsent, (key, value), timeout, version) }
        /// Removes `key`; True when it was present.
        twins delete / adelete <'py>(slf, how, key: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (key, version = None)
            { Self::do_keyed(slf, how, key, version, KeyOp::Delete) }
        /// True when `key` is in the cache and has not expired.
        twins has_key / ahas_key <'py>(slf, how, key: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (key, version = None)
            { Self::do_keyed(slf, how, key, version, KeyOp::HasKey) }
        /// Gives `key` a new timeout; True when the key was present.
        twins touch / atouch <'py>(slf, how, key: &Bound<'py, PyAny>, timeout: DjangoTimeout, version: Option<&Bound<'py, PyAny>>)
            signature (key, timeout = DEFAULT_EXPIRY, version = None)
            { Self::do_keyed(slf, how, key, version, KeyOp::Touch(slf.get().expiry(slf.py(), timeout)?)) }
        /// Adds `delta` to the integer under `key` atomically and returns the new value;
        /// `ValueError` when the key is missing, unless `ignore_key_check=True` (django-redis):
        /// then a missing key is created at `delta`, never expiring.
        twins incr / aincr <'py>(slf, how, key: &Bound<'py, PyAny>, delta: i64, version: Option<&Bound<'py, PyAny>>, ignore_key_check: bool)
            signature (key, delta = 1, version = None, *, ignore_key_check = false)
            { Self::do_keyed(slf, how, key, version, KeyOp::incr(delta, ignore_key_check)) }
        /// Subtracts `delta` from the integer under `key` atomically and returns the new value.
        twins decr / adecr <'py>(slf, how, key: &Bound<'py, PyAny>, delta: i64, version: Option<&Bound<'py, PyAny>>)
            signature (key, delta = 1, version = None)
            { Self::do_keyed(slf, how, key, version, KeyOp::decr(slf.py(), delta)?) }
        /// A dict of the keys found and their values; missing keys are left out.
        twins get_many / aget_many <'py>(slf, how, keys: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (keys, version = None)
            { Self::many_keys(slf, how, keys, version, ManyOp::Get) }
        /// Stores every pair of `data`; returns the list of keys that failed to store.
        /// With `tags=[...]` every entry carries the tags.
        twins set_many / aset_many <'py>(slf, how, data: &Bound<'py, PyAny>, timeout: DjangoTimeout, version: Option<&Bound<'py, PyAny>>, tags: Option<TagsArg>)
            signature (data, timeout = DEFAULT_EXPIRY, version = None, *, tags = None)
            { Self::do_set_many(slf, how, data, timeout, version, tags) }
        /// Removes every key in `keys`.
        twins delete_many / adelete_many <'py>(slf, how, keys: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (keys, version = None)
            { Self::many_keys(slf, how, keys, version, ManyOp::Delete) }
        /// Removes this cache's entries: those under `{KEY_PREFIX}:` (everything when the
        /// prefix is empty, a custom key function makes the keys, or the backend cannot scope
        /// a clear to a prefix, as memcached).
        twins clear / aclear <'py>(slf, how)
            signature ()
            { Self::do_clear(slf, how) }
        /// django-redis' `ttl`: seconds `key` has left (rounded as Redis' `TTL`), None when
        /// it never expires, 0 when it is missing.
        twins ttl / attl <'py>(slf, how, key: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (key, version = None)
            { Self::do_keyed(slf, how, key, version, KeyOp::Ttl { millis: false }) }
        /// django-redis' `pttl`: `ttl` in milliseconds.
        twins pttl / apttl <'py>(slf, how, key: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (key, version = None)
            { Self::do_keyed(slf, how, key, version, KeyOp::Ttl { millis: true }) }
        /// django-redis' `expire`: `timeout` seconds to live (0 or less removes the key);
        /// True when the key was present.
        twins expire / aexpire <'py>(slf, how, key: &Bound<'py, PyAny>, timeout: DjangoTimeout, version: Option<&Bound<'py, PyAny>>)
            signature (key, timeout, version = None)
            { Self::do_keyed(slf, how, key, version, KeyOp::Touch(slf.get().expiry(slf.py(), timeout)?)) }
        /// django-redis' `pexpire`: `expire` in milliseconds.
        twins pexpire / apexpire <'py>(slf, how, key: &Bound<'py, PyAny>, timeout: DjangoTimeout, version: Option<&Bound<'py, PyAny>>)
            signature (key, timeout, version = None)
            { Self::do_keyed(slf, how, key, version, KeyOp::Touch(from_millis(slf.get().expiry(slf.py(), timeout)?))) }
        /// django-redis' `expire_at`: expire at `when` (a datetime, naive meaning local time,
        /// or Unix seconds); a time past removes the key. True when the key was present.
        twins expire_at / aexpire_at <'py>(slf, how, key: &Bound<'py, PyAny>, when: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (key, when, version = None)
            { Self::do_keyed(slf, how, key, version, KeyOp::ExpireAt(args::when(when, 1.0)?)) }
        /// django-redis' `pexpire_at`: `when` in Unix milliseconds (or a datetime).
        twins pexpire_at / apexpire_at <'py>(slf, how, key: &Bound<'py, PyAny>, when: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (key, when, version = None)
            { Self::do_keyed(slf, how, key, version, KeyOp::ExpireAt(args::when(when, 1000.0)?)) }
        /// django-redis' `persist`: `key` never expires; True when the key was present.
        twins persist / apersist <'py>(slf, how, key: &Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>)
            signature (key, version = None)
            { Self::do_keyed(slf, how, key, version, KeyOp::Touch(Expiry::Never)) }
        /// One Redis data-structure command, for the django-redis methods of
        /// `polycache.django.Cache`: `str` arguments are full keys.
        twins _redis_command / _aredis_command <'py>(slf, how, command: &str, args: &Bound<'py, PyAny>)
            signature (command, args)
            { crate::structures::run(&slf.get().core, slf.py(), how, command, args) }
        /// The keys that match the glob `search` (Redis' rules), `KEY_PREFIX` and version
        /// applied and taken off, as django-redis' `keys`. Walks the whole store: prefer
        /// `iter_keys` on a large one.
        twins keys / akeys <'py>(slf, how, search: &str, version: Option<&Bound<'py, PyAny>>)
            signature (search, version = None)
            { Self::at_version(slf, how, Op::Keys(search), version, Deliver::Keys) }
        /// Removes every key that matches `pattern`, `itersize` keys a batch; returns how
        /// many it removed (django-redis' `delete_pattern`).
        twins delete_pattern / adelete_pattern <'py>(slf, how, pattern: &str, version: Option<&Bound<'py, PyAny>>, prefix: Option<&Bound<'py, PyAny>>, itersize: Option<i64>)
            signature (pattern, version = None, prefix = None, itersize = None)
            { Self::do_delete_pattern(slf, how, pattern, version, prefix, itersize) }
        /// Makes every entry carrying any of `tags` a miss, in every process sharing the
        /// backend. True when the write reached the backend.
        twins invalidate_tags / ainvalidate_tags <'py>(slf, how, tags: TagsArg)
            signature (tags)
            { Self::unkeyed(slf, how, Op::InvalidateTags(tags.texts()), Deliver::Flag) }
        /// The current versions of `tags`, read before computing a value.
        twins _tag_stamp / _atag_stamp <'py>(slf, how, tags: TagsArg)
            signature (tags)
            { Self::unkeyed(slf, how, Op::TagStamp(tags.texts()), Deliver::Stamp) }
        /// Stores `value` with the tag versions of `stamp` (`add` when `add` is true).
        twins _set_stamped / _aset_stamped <'py>(slf, how, key: &Bound<'py, PyAny>, value: &Bound<'py, PyAny>, timeout: DjangoTimeout, version: Option<&Bound<'py, PyAny>>, stamp: PyRef<'py, PyTagStamp>, add: bool)
            signature (key, value, timeout, version, stamp, add = false)
            { Self::store_with(slf, how, (key, value), timeout, version, TaggedWrite::Stamp(stamp.0.clone(), add)) }
        /// `get` of an entry stored with `tags`: the value and the tags' versions in one
        /// request; `default` on a miss.
        twins _get_tagged / _aget_tagged <'py>(slf, how, key: &Bound<'py, PyAny>, default: Bound<'py, PyAny>, version: Option<&Bound<'py, PyAny>>, tags: TagsArg)
            signature (key, default, version, tags)
            { Self::do_get_tagged(slf, how, key, default, version, tags) }

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
        match this.custom_key_func(py) {
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

    // `location` to `_decode` mirror `polycache.Cache`'s (cache.rs): `#[pymethods]` sees only
    // the methods written in its own block, and a second block per class needs PyO3's
    // `multiple-pymethods` (a link-time registry), so each stays one line over `Core`.

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
