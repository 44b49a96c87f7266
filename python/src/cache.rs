//! `polycache._polycache.Cache`: Django's cache API over one polycache cache, each method
//! with its awaitable twin (`aget`, `aset`, ...). The operations themselves are in
//! [`crate::ops`]; this class reads arguments and names the answers.

use crate::args::{
    self, from_millis, items, key_str, stats_dict, type_name, SecretArg, SetArgs, StoreMode,
    TagsArg, TimeoutArg, DEFAULT,
};
use crate::awaitable::raising_on_await;
use crate::errors::{self, ResultExt};
use crate::fastget;
use crate::fastset;
use crate::loader;
use crate::logbridge::detach;
use crate::ops::{
    Core, Decoder, Deliver, How, KeyMode, KeyOp, ManyOp, Op, Reply, RequestRef, TaggedWrite,
};
use crate::serializer::{Format, Serialized};
use crate::settings::{self, PyOptions};
use crate::tags::PyTagStamp;
use polycache::settings::option_value;
use polycache::{CacheConfig, Expiry, Key, OptionSource};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::time::Duration;

/// A cache: Django's cache API over one polycache backend.
#[pyclass(frozen, subclass, module = "polycache._polycache", name = "Cache")]
pub(crate) struct PyCache {
    pub(crate) core: Core,
}

/// Opens the cache `config` describes, with the options `options` gives: the `_Options`
/// `read_cache_settings` answered, or a mapping of option names to values.
pub(crate) fn open(
    py: Python<'_>,
    mut config: CacheConfig,
    options: Option<&Bound<'_, PyAny>>,
    pickle_errors: bool,
) -> PyResult<Core> {
    if let Some(typed) = options.and_then(|o| o.cast::<PyOptions>().ok()) {
        // Read from a CACHES entry by the core: handed back as they are.
        config.options = typed.get().options.clone();
    } else if let Some(options) = options {
        for item in items(options)?.try_iter()? {
            let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
            let name = name
                .cast::<PyString>()
                .map_err(|_| {
                    errors::configuration(
                        py,
                        format!("option names must be str, not {}", type_name(&name)),
                    )
                })?
                .to_str()?
                .to_owned();
            let value = settings::value(&value, 0)?;
            let value = option_value(&name, &value).map_err(|e| errors::to_py(py, e.error))?;
            let source = OptionSource::Keyword {
                argument: format!("options['{name}']"),
                function: "polycache.Cache()".to_owned(),
            };
            config.options.insert_from(name, value, source);
        }
    }
    // Opening a remote backend may connect: no Python objects are touched here.
    let cache = detach(py, || config.build()).map_err(|e| match e.option_source() {
        Some(source) if source.is_django_options() => settings::invalid_option(py, e.message()),
        _ => errors::to_py(py, e),
    })?;
    let local = cache.backend().is_local();
    let format = Format::of(&cache);
    Ok(Core {
        cache,
        local,
        decoder: Decoder {
            format,
            pickle_errors,
        },
    })
}

/// A negated delta, or polycache's overflow error.
pub(crate) fn negated(py: Python<'_>, delta: i64) -> PyResult<i64> {
    delta.checked_neg().ok_or_else(|| {
        errors::to_py(
            py,
            polycache::Error::new(
                polycache::ErrorKind::Overflow,
                "delta is out of the 64-bit range",
            ),
        )
    })
}

impl PyCache {
    #[inline]
    fn keyed<'py>(
        &self,
        py: Python<'py>,
        how: How,
        op: Op<&str, &[u8]>,
        version: Option<i64>,
        deliver: Deliver,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request = RequestRef::new(op, KeyMode::Versioned(version));
        self.core.answer(py, how, request, deliver)
    }

    /// Answers `op` on the caller's keys at `version`: the body of most operations.
    #[inline]
    fn keyed_answer<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        op: Op<&str, &[u8]>,
        version: Option<i64>,
        deliver: Deliver,
    ) -> PyResult<Bound<'py, PyAny>> {
        slf.get().keyed(slf.py(), how, op, version, deliver)
    }

    /// `set`, `add` (`IfAbsent`) or `set(xx=True)` (`IfPresent`).
    fn store<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        mode: StoreMode,
        (key, value): (&Bound<'py, PyAny>, &Bound<'py, PyAny>),
        timeout: TimeoutArg,
        version: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let name = key_str(key)?;
        let mut encoded = Serialized::new(this.core.decoder.format);
        encoded.encode(value)?;
        let op = match mode {
            StoreMode::Always => Op::Set(name, encoded.as_bytes(), timeout.0),
            StoreMode::IfAbsent => Op::Add(name, encoded.as_bytes(), timeout.0),
            StoreMode::IfPresent => Op::Replace(name, encoded.as_bytes(), timeout.0),
        };
        this.keyed(slf.py(), how, op, version, Deliver::Flag)
    }

    #[allow(clippy::too_many_arguments)]
    fn do_set<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        timeout: TimeoutArg,
        version: Option<i64>,
        nx: bool,
        xx: bool,
        tags: Option<TagsArg>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match SetArgs::of(nx, xx, tags)? {
            SetArgs::Store(mode) => Self::store(slf, how, mode, (key, value), timeout, version),
            SetArgs::Tagged(tags) => {
                let write = TaggedWrite::Tags(&tags);
                Self::store_tagged(slf, how, (key, value), timeout, version, write)
            }
        }
    }

    /// An operation on one key: `delete`, `has_key`, `touch`, `incr`, `decr`.
    #[inline]
    fn one_key<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &Bound<'py, PyAny>,
        op: KeyOp,
        version: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (op, deliver) = op.on(key_str(key)?);
        slf.get().keyed(slf.py(), how, op, version, deliver)
    }

    /// The caller's key objects of `keys`, and their texts.
    fn key_list<'a, 'py>(
        objs: &'a [Bound<'py, PyAny>],
    ) -> PyResult<(Vec<&'a str>, Vec<Py<PyAny>>)> {
        let names = objs.iter().map(key_str).collect::<PyResult<Vec<_>>>()?;
        Ok((names, objs.iter().map(|o| o.clone().unbind()).collect()))
    }

    /// An operation on the keys of the iterable `keys`: `get_many`, `delete_many`.
    fn many_keys<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        keys: &Bound<'py, PyAny>,
        version: Option<i64>,
        op: ManyOp,
    ) -> PyResult<Bound<'py, PyAny>> {
        let objs = keys.try_iter()?.collect::<PyResult<Vec<_>>>()?;
        let (names, objs) = Self::key_list(&objs)?;
        let (op, deliver) = op.on(names, objs);
        Self::keyed_answer(slf, how, op, version, deliver)
    }

    fn do_set_many<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        mapping: &Bound<'py, PyAny>,
        timeout: TimeoutArg,
        version: Option<i64>,
        tags: Option<TagsArg>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let mut keys = Vec::new();
        let mut encoded = Vec::new();
        for item in items(mapping)?.try_iter()? {
            let (k, v): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item?.extract()?;
            key_str(&k)?;
            // Every value is serialized before anything is stored: one bad value stores none.
            let mut value = Serialized::new(this.core.decoder.format);
            value.encode(&v)?;
            encoded.push(value);
            keys.push(k);
        }
        let (names, objs) = Self::key_list(&keys)?;
        let pairs = names
            .into_iter()
            .zip(encoded.iter().map(Serialized::as_bytes))
            .collect();
        let op = Op::set_many(pairs, timeout.0, tags.as_ref());
        this.keyed(slf.py(), how, op, version, Deliver::FailedKeys(objs))
    }

    /// A tagged write of one value (`set(tags=)`, `_set_stamped`).
    fn store_tagged<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        (key, value): (&Bound<'py, PyAny>, &Bound<'py, PyAny>),
        timeout: TimeoutArg,
        version: Option<i64>,
        write: TaggedWrite<'_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let name = key_str(key)?;
        let mut encoded = Serialized::new(this.core.decoder.format);
        encoded.encode(value)?;
        let (op, deliver) = write.op(name, encoded.as_bytes(), timeout.0, Deliver::Flag);
        this.keyed(slf.py(), how, op, version, deliver)
    }
}

/// `Cache.get(key)` without PyO3's argument parsing (see [`crate::fastget`]).
impl fastget::OneKey for PyCache {
    fastget::generic_get!();

    #[inline]
    fn get_one<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        slf.get().core.get_one(slf.py(), key_str(key)?)
    }

    #[inline(always)]
    fn get_quick<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
        taken: &mut crate::serializer::Taken,
    ) -> Option<crate::ops::LentGet<'py>> {
        let core = &slf.get().core;
        let name = crate::args::ascii_text(key.cast::<pyo3::types::PyString>().ok()?)?;
        core.local
            .then(|| core.get_quick(slf.py(), polycache::Key::new(name), taken))
    }
}

/// Gives the class its one-argument `get` (called once, when the module is built).
pub(crate) fn install_fast_get(py: Python<'_>) -> PyResult<()> {
    let entry = fastget::fastcall_entry!(fastget::get_full::<PyCache>);
    fastget::install::<PyCache>(py, "get", entry)
}

/// `Cache.set(key, value)` without PyO3's argument parsing (see [`crate::fastset`]).
impl fastset::KeyValue for PyCache {
    fastset::generic_set!();

    #[inline]
    fn set_two<'py>(
        slf: &Bound<'py, Self>,
        (key, value): fastset::KeyAndValue<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let core = &slf.get().core;
        let name = key_str(key)?;
        let mut encoded = Serialized::new(core.decoder.format);
        encoded.encode(value)?;
        core.set_one(slf.py(), name, encoded.as_bytes())
    }

    #[inline(always)]
    fn set_quick(
        slf: &Bound<'_, Self>,
        (key, value): fastset::KeyAndValue<'_, '_>,
    ) -> Option<polycache::Result<*mut pyo3::ffi::PyObject>> {
        let name = crate::args::ascii_text(key.cast::<pyo3::types::PyString>().ok()?)?;
        let stored = slf
            .get()
            .core
            .set_quick(polycache::Key::new(name), value, false)?;
        Some(stored.map(|stored| {
            pyo3::types::PyBool::new(slf.py(), stored)
                .to_owned()
                .into_ptr()
        }))
    }
}

/// Gives the class its two-argument `set` (called once, when the module is built).
pub(crate) fn install_fast_set(py: Python<'_>) -> PyResult<()> {
    let entry = fastget::fastcall_entry!(fastset::set_full::<PyCache>);
    fastset::install::<PyCache>(py, entry)
}

twins! {
    impl PyCache {
        /// The value under `key`, or `default` on a miss.
        twins get / aget <'py>(slf, how, key: &Bound<'py, PyAny>, default: Option<Bound<'py, PyAny>>, version: Option<i64>)
            signature (key, default = None, version = None)
            { Self::keyed_answer(slf, how, Op::Get(key_str(key)?), version, Deliver::Value(default.map(Bound::unbind))) }
        /// Stores `value` under `key`; a timeout of 0 or less stores nothing and removes the
        /// old value.
        ///
        /// True when the write reached the backend; False only when the cache fails open
        /// (`fail_open=true`) and the backend was unreachable. With `nx=True` it stores only
        /// a missing key (`add`), with `xx=True` only a present one; True when it stored.
        ///
        /// With `tags=[...]` the entry carries the tags: `invalidate_tags` of any of them
        /// makes it a miss (their versions are read now; see `get_or_set_with(tags=)` for a
        /// value computed from changing data).
        twins set / aset <'py>(slf, how, key: &Bound<'py, PyAny>, value: &Bound<'py, PyAny>, timeout: TimeoutArg, version: Option<i64>, nx: bool, xx: bool, tags: Option<TagsArg>)
            signature (key, value, timeout = DEFAULT, version = None, *, nx = false, xx = false, tags = None)
            { Self::do_set(slf, how, key, value, timeout, version, nx, xx, tags) }
        /// Stores `value` only if `key` is absent; True when it stored.
        twins add / aadd <'py>(slf, how, key: &Bound<'py, PyAny>, value: &Bound<'py, PyAny>, timeout: TimeoutArg, version: Option<i64>)
            signature (key, value, timeout = DEFAULT, version = None)
            { Self::store(slf, how, StoreMode::IfAbsent, (key, value), timeout, version) }
        /// A dict of the keys found and their values; missing keys are left out.
        twins get_many / aget_many <'py>(slf, how, keys: &Bound<'py, PyAny>, version: Option<i64>)
            signature (keys, version = None)
            { Self::many_keys(slf, how, keys, version, ManyOp::Get) }
        /// Stores every pair of `mapping`; returns the list of keys that failed to store.
        /// With `tags=[...]` every entry carries the tags.
        twins set_many / aset_many <'py>(slf, how, mapping: &Bound<'py, PyAny>, timeout: TimeoutArg, version: Option<i64>, tags: Option<TagsArg>)
            signature (mapping, timeout = DEFAULT, version = None, *, tags = None)
            { Self::do_set_many(slf, how, mapping, timeout, version, tags) }
        /// Removes `key`; True when it was present.
        twins delete / adelete <'py>(slf, how, key: &Bound<'py, PyAny>, version: Option<i64>)
            signature (key, version = None)
            { Self::one_key(slf, how, key, KeyOp::Delete, version) }
        /// Removes every key in `keys`.
        twins delete_many / adelete_many <'py>(slf, how, keys: &Bound<'py, PyAny>, version: Option<i64>)
            signature (keys, version = None)
            { Self::many_keys(slf, how, keys, version, ManyOp::Delete) }
        /// True when `key` is in the cache (not counted as a hit or a miss).
        twins has_key / ahas_key <'py>(slf, how, key: &Bound<'py, PyAny>, version: Option<i64>)
            signature (key, version = None)
            { Self::one_key(slf, how, key, KeyOp::HasKey, version) }
        /// Gives `key` a new timeout; True when the key was present.
        twins touch / atouch <'py>(slf, how, key: &Bound<'py, PyAny>, timeout: TimeoutArg, version: Option<i64>)
            signature (key, timeout = DEFAULT, version = None)
            { Self::one_key(slf, how, key, KeyOp::Touch(timeout.0), version) }
        /// Adds `delta` to the integer under `key` atomically and returns the new value.
        /// With `ignore_key_check=True` a missing key is created at `delta` (from 0, never
        /// expiring) instead of raising `ValueError`.
        twins incr / aincr <'py>(slf, how, key: &Bound<'py, PyAny>, delta: i64, version: Option<i64>, ignore_key_check: bool)
            signature (key, delta = 1, version = None, *, ignore_key_check = false)
            { Self::one_key(slf, how, key, KeyOp::incr(delta, ignore_key_check), version) }
        /// Subtracts `delta` from the integer under `key` atomically and returns the new value.
        twins decr / adecr <'py>(slf, how, key: &Bound<'py, PyAny>, delta: i64, version: Option<i64>)
            signature (key, delta = 1, version = None)
            { Self::one_key(slf, how, key, KeyOp::decr(slf.py(), delta)?, version) }
        /// Removes this cache's entries (every entry when the key prefix is empty).
        twins clear / aclear <'py>(slf, how)
            signature ()
            { Self::keyed_answer(slf, how, Op::Clear, None, Deliver::Nothing) }
        /// Moves `key` to version `version + delta` and returns the new version.
        twins incr_version / aincr_version <'py>(slf, how, key: &Bound<'py, PyAny>, delta: i64, version: Option<i64>)
            signature (key, delta = 1, version = None)
            { Self::keyed_answer(slf, how, Op::IncrVersion(key_str(key)?, delta, version), None, Deliver::Int) }
        /// Moves `key` to version `version - delta` and returns the new version.
        twins decr_version / adecr_version <'py>(slf, how, key: &Bound<'py, PyAny>, delta: i64, version: Option<i64>)
            signature (key, delta = 1, version = None)
            { let delta = negated(slf.py(), delta)?; Self::keyed_answer(slf, how, Op::IncrVersion(key_str(key)?, delta, version), None, Deliver::Int) }
        /// Seconds `key` has left, rounded as Redis' `TTL` rounds: None when it never
        /// expires, 0 when it is missing.
        twins ttl / attl <'py>(slf, how, key: &Bound<'py, PyAny>, version: Option<i64>)
            signature (key, version = None)
            { Self::one_key(slf, how, key, KeyOp::Ttl { millis: false }, version) }
        /// Milliseconds `key` has left: None when it never expires, 0 when it is missing.
        twins pttl / apttl <'py>(slf, how, key: &Bound<'py, PyAny>, version: Option<i64>)
            signature (key, version = None)
            { Self::one_key(slf, how, key, KeyOp::Ttl { millis: true }, version) }
        /// Gives `key` `timeout` seconds to live (0 or less removes it, None never expires);
        /// True when the key was present.
        twins expire / aexpire <'py>(slf, how, key: &Bound<'py, PyAny>, timeout: TimeoutArg, version: Option<i64>)
            signature (key, timeout, version = None)
            { Self::one_key(slf, how, key, KeyOp::Touch(timeout.0), version) }
        /// `expire` with `timeout` in milliseconds.
        twins pexpire / apexpire <'py>(slf, how, key: &Bound<'py, PyAny>, timeout: TimeoutArg, version: Option<i64>)
            signature (key, timeout, version = None)
            { Self::one_key(slf, how, key, KeyOp::Touch(from_millis(timeout.0)), version) }
        /// Makes `key` expire at `when` (a datetime, naive meaning local time, or Unix
        /// seconds); a time past removes it. True when the key was present.
        twins expire_at / aexpire_at <'py>(slf, how, key: &Bound<'py, PyAny>, when: &Bound<'py, PyAny>, version: Option<i64>)
            signature (key, when, version = None)
            { Self::one_key(slf, how, key, KeyOp::ExpireAt(args::when(when, 1.0)?), version) }
        /// `expire_at` with `when` in Unix milliseconds (or a datetime).
        twins pexpire_at / apexpire_at <'py>(slf, how, key: &Bound<'py, PyAny>, when: &Bound<'py, PyAny>, version: Option<i64>)
            signature (key, when, version = None)
            { Self::one_key(slf, how, key, KeyOp::ExpireAt(args::when(when, 1000.0)?), version) }
        /// Makes `key` never expire; True when the key was present.
        twins persist / apersist <'py>(slf, how, key: &Bound<'py, PyAny>, version: Option<i64>)
            signature (key, version = None)
            { Self::one_key(slf, how, key, KeyOp::Touch(Expiry::Never), version) }
        /// One Redis data-structure command, for the django-redis methods of
        /// `polycache.Cache`: `str` arguments are full keys.
        twins _redis_command / _aredis_command <'py>(slf, how, command: &str, args: &Bound<'py, PyAny>)
            signature (command, args)
            { crate::structures::run(&slf.get().core, slf.py(), how, command, args) }
        /// The keys that match the glob `search` (Redis' rules), prefix and version applied
        /// and taken off. Walks the whole store: prefer `iter_keys` on a large one.
        twins keys / akeys <'py>(slf, how, search: &str, version: Option<i64>)
            signature (search, version = None)
            { Self::keyed_answer(slf, how, Op::Keys(search), version, Deliver::Keys) }
        /// Removes every key that matches `pattern`, `itersize` keys a batch; returns how
        /// many it removed.
        twins delete_pattern / adelete_pattern <'py>(slf, how, pattern: &str, version: Option<i64>, itersize: Option<i64>)
            signature (pattern, version = None, itersize = None)
            { Self::keyed_answer(slf, how, Op::DeletePattern(pattern, crate::scan::itersize(itersize)), version, Deliver::Int) }
        /// Makes every entry carrying any of `tags` a miss, in every process sharing the
        /// backend: one write per call, whatever the number of entries. True when the write
        /// reached the backend.
        twins invalidate_tags / ainvalidate_tags <'py>(slf, how, tags: TagsArg)
            signature (tags)
            { Self::keyed_answer(slf, how, Op::InvalidateTags(tags.texts()), None, Deliver::Flag) }
        /// The current versions of `tags`, to read before computing a value that
        /// `_set_stamped` then stores.
        twins _tag_stamp / _atag_stamp <'py>(slf, how, tags: TagsArg)
            signature (tags)
            { Self::keyed_answer(slf, how, Op::TagStamp(tags.texts()), None, Deliver::Stamp) }
        /// Stores `value` with the tag versions of `stamp` (`add` when `add` is true).
        twins _set_stamped / _aset_stamped <'py>(slf, how, key: &Bound<'py, PyAny>, value: &Bound<'py, PyAny>, timeout: TimeoutArg, version: Option<i64>, stamp: PyRef<'py, PyTagStamp>, add: bool)
            signature (key, value, timeout, version, stamp, add = false)
            { Self::store_tagged(slf, how, (key, value), timeout, version, TaggedWrite::Stamp(stamp.0.clone(), add)) }
        /// `get` of an entry stored with `tags`: the value and the tags' versions in one
        /// request; `default` on a miss.
        twins _get_tagged / _aget_tagged <'py>(slf, how, key: &Bound<'py, PyAny>, default: Bound<'py, PyAny>, version: Option<i64>, tags: TagsArg)
            signature (key, default, version, tags)
            { Self::keyed_answer(slf, how, Op::GetTagged(key_str(key)?, tags.texts()), version, Deliver::Value(Some(default.unbind()))) }

        @methods
    #[new]
    #[pyo3(signature = (
        location = "memory://", *, key_prefix = None, version = None, timeout = DEFAULT,
        options = None, serializer = None, signing_key = None, old_signing_keys = None,
        compress_min_size = None, compress_level = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        location: &str,
        key_prefix: Option<String>,
        version: Option<i64>,
        timeout: TimeoutArg,
        options: Option<&Bound<'_, PyAny>>,
        serializer: Option<String>,
        signing_key: Option<SecretArg>,
        old_signing_keys: Option<Vec<SecretArg>>,
        compress_min_size: Option<usize>,
        compress_level: Option<i32>,
    ) -> PyResult<Self> {
        let mut config = CacheConfig::new(location);
        config.key_prefix = key_prefix;
        config.version = version;
        config.serializer = serializer;
        config.signing_key = signing_key.map(|k| k.0);
        config.old_signing_keys = old_signing_keys
            .unwrap_or_default()
            .into_iter()
            .map(|k| k.0)
            .collect();
        config.compress_min_size = compress_min_size;
        config.compress_level = compress_level;
        config.timeout = match timeout.0 {
            Expiry::Default => None,
            Expiry::Never => Some(None),
            Expiry::After(d) => Some(Some(d)),
            _ => Some(Some(Duration::ZERO)),
        };
        Ok(PyCache {
            core: open(py, config, options, false)?,
        })
    }

    /// The value under `key`; on a miss stores `default` (called first if callable) with
    /// `add` and returns what the cache then holds.
    ///
    /// With `tags=[...]` the stored value carries the tags, their versions read before
    /// `default` is called: a value computed while one is invalidated is never served.
    #[pyo3(signature = (key, default, timeout = DEFAULT, version = None, *, tags = None))]
    fn get_or_set<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, PyAny>,
        timeout: TimeoutArg,
        version: Option<i64>,
        tags: Option<TagsArg>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(tags) = tags.filter(|t| !t.0.is_empty()) {
            return self.get_or_set_tagged(py, key, default, timeout, version, &tags);
        }
        let name = key_str(key)?;
        let get = |py| {
            let found = self.core.call(
                py,
                RequestRef::new(Op::Get(name), KeyMode::Versioned(version)),
            );
            found.py_err(py)
        };
        if let crate::ops::Reply::Value(Some(v)) = get(py)? {
            return self.core.decoder.decode(py, &v);
        }
        let value = if default.is_callable() {
            default.call0()?
        } else {
            default.clone()
        };
        let mut encoded = Serialized::new(self.core.decoder.format);
        encoded.encode(&value)?;
        let add = Op::Add(name, encoded.as_bytes(), timeout.0);
        self.keyed(py, How::Sync, add, version, Deliver::Flag)?;
        // Read back: another writer may have won the race between the miss and the add.
        match get(py)? {
            crate::ops::Reply::Value(Some(v)) => self.core.decoder.decode(py, &v),
            _ => Ok(value),
        }
    }

    /// The value under `key`; on a miss, one caller calls `loader()` and stores its result
    /// while concurrent callers of this cache for the same key wait for it (single-flight).
    ///
    /// Unlike `get_or_set` (Django's: every caller that misses computes), `loader` runs once
    /// for all the threads that miss the key at the same time. The cache's refresh options
    /// apply (`lease`, `flight_timeout`, `xfetch_beta`). An exception from `loader` reaches
    /// its caller; nothing is stored and the waiting callers retry.
    ///
    /// With `tags=[...]` the stored value carries the tags, their versions read just before
    /// `loader` runs: a value computed while one is invalidated is never served.
    #[pyo3(signature = (key, loader, timeout = DEFAULT, version = None, *, tags = None))]
    fn get_or_set_with<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        loader: &Bound<'py, PyAny>,
        timeout: TimeoutArg,
        version: Option<i64>,
        tags: Option<TagsArg>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = key_str(key)?;
        if !loader.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "loader must be callable, not {}",
                type_name(loader)
            )));
        }
        let call = loader::Call::new(loader.clone().unbind(), None, None)
            .tagged(tags.map(|t| t.0).unwrap_or_default());
        let key = Key::new(name).maybe_version(version);
        loader::load(py, &self.core, key, call, timeout.0, true, None)
    }

    /// `get_or_set_with` for a synchronous `loader`, awaitable: the lookup, the wait for
    /// another caller and the store are the core's native async ones; `loader` runs on
    /// polycache's blocking pool (it takes the GIL there).
    #[pyo3(signature = (key, loader, timeout = DEFAULT, version = None, *, tags = None))]
    fn _aget_or_set_with<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        loader: &Bound<'py, PyAny>,
        timeout: TimeoutArg,
        version: Option<i64>,
        tags: Option<TagsArg>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = key_str(key).map(str::to_owned);
        let call = loader::Call::new(loader.clone().unbind(), None, None)
            .tagged(tags.map(|t| t.0).unwrap_or_default());
        let answer = name.and_then(|name| {
            loader::aget_or_load(py, &self.core, name, version, call, timeout.0, true)
        });
        raising_on_await(py, answer)
    }

    /// The keys that match the glob `search`, streamed `itersize` at a time (see `keys`);
    /// `aiter_keys` is its async twin.
    #[pyo3(signature = (search, itersize = None, version = None))]
    fn iter_keys(
        &self,
        py: Python<'_>,
        search: &str,
        itersize: Option<i64>,
        version: Option<i64>,
    ) -> PyResult<crate::scan::KeyScan> {
        crate::scan::start(py, &self.core, search, version, crate::scan::itersize(itersize))
    }

    /// Does nothing: connections are pooled and closed with the cache (Django's `close`).
    fn close(&self) {}

    /// `close`, awaitable.
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::awaitable::ready(py, Ok(py.None().into_bound(py)))
    }

    /// The counters of this cache: hits, misses, sets, deletes, errors, evictions,
    /// stale_hits, refreshes.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &self.core.cache.stats())
    }

    /// The counters in the Prometheus text format, labelled `cache="{name}"`.
    #[pyo3(signature = (name = "default"))]
    fn stats_prometheus(&self, name: &str) -> String {
        self.core.cache.stats_prometheus(name)
    }

    /// The full key `key` is stored under: `{key_prefix}:{version}:{key}`.
    #[pyo3(signature = (key, version = None))]
    fn make_key(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        version: Option<i64>,
    ) -> PyResult<String> {
        let full = self
            .core
            .cache
            .make_key(Key::new(key_str(key)?).maybe_version(version))
            .py_err(py)?;
        Ok(String::from_utf8_lossy(&full).into_owned())
    }

    /// `value` as this cache stores it (the serializer's bytes; ints as decimal).
    fn _encode<'py>(
        &self,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        let mut encoded = Serialized::new(self.core.decoder.format);
        encoded.encode(value)?;
        Ok(pyo3::types::PyBytes::new(value.py(), encoded.as_bytes()))
    }

    /// The object stored `data` holds, read with this cache's serializer.
    fn _decode<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        self.core.decoder.decode(py, data)
    }

    /// The location, with any password redacted.
    #[getter]
    fn location(&self) -> &str {
        self.core.cache.location()
    }

    /// The key prefix.
    #[getter]
    fn key_prefix(&self) -> &str {
        self.core.cache.key_prefix()
    }

    /// The version keys are stored under by default.
    #[getter]
    fn version(&self) -> i64 {
        self.core.cache.version()
    }

    /// The default timeout in seconds; None when entries never expire by default.
    #[getter]
    fn default_timeout(&self) -> Option<f64> {
        match self.core.cache.default_expiry() {
            Expiry::After(d) => Some(d.as_secs_f64()),
            Expiry::Never => None,
            _ => Some(0.0),
        }
    }

    /// The serializer of this cache's values: `"pickle"`, `"json"` or `"raw"`.
    #[getter]
    fn serializer(&self) -> &'static str {
        self.core.cache.serializer()
    }

    /// True when the backend answers in memory (calls keep the GIL and never block; awaits
    /// complete at once).
    #[getter]
    fn is_local(&self) -> bool {
        self.core.local
    }

    /// The native half of `polycache.Lock`: the lock `name` (a full key already made when
    /// `full`), with `timeout` seconds or none.
    #[pyo3(signature = (name, timeout = None, version = None, full = false))]
    fn _lock(
        &self,
        py: Python<'_>,
        name: &str,
        timeout: Option<f64>,
        version: Option<i64>,
        full: bool,
    ) -> PyResult<crate::lock::PyLock> {
        crate::lock::open(py, &self.core, name, full, version, timeout)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let cache = &slf.get().core.cache;
        let ty = slf.get_type();
        Ok(format!(
            "{}.{}({}, key_prefix={}, version={})",
            ty.module()?,
            ty.qualname()?,
            PyString::new(py, cache.location()).repr()?,
            PyString::new(py, cache.key_prefix()).repr()?,
            cache.version()
        ))
    }
}
}

impl PyCache {
    /// `get_or_set` with tags: the versions are read after the miss, before `default` runs.
    fn get_or_set_tagged<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, PyAny>,
        timeout: TimeoutArg,
        version: Option<i64>,
        tags: &TagsArg,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = key_str(key)?;
        let call = |op| {
            let request = RequestRef::new(op, KeyMode::Versioned(version));
            self.core.call(py, request).py_err(py)
        };
        // The tags are known: the value and their versions in one request.
        if let Reply::Value(Some(v)) = call(Op::GetTagged(name, tags.texts()))? {
            return self.core.decoder.decode(py, &v);
        }
        let Reply::Stamp(stamp) = call(Op::TagStamp(tags.texts()))? else {
            return Err(unexpected());
        };
        let value = if default.is_callable() {
            default.call0()?
        } else {
            default.clone()
        };
        let mut encoded = Serialized::new(self.core.decoder.format);
        encoded.encode(&value)?;
        let bytes = encoded.as_bytes();
        let add = Op::SetStamped(name, bytes, timeout.0, stamp.clone(), true);
        if let Reply::Flag(true) = call(add)? {
            return Ok(value);
        }
        // Another writer won the race, or the entry there is an invalidated one.
        match call(Op::Get(name))? {
            Reply::Value(Some(v)) => self.core.decoder.decode(py, &v),
            _ => {
                call(Op::SetStamped(name, bytes, timeout.0, stamp, false))?;
                Ok(value)
            }
        }
    }
}

#[cold]
fn unexpected() -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err(
        "polycache: an operation answered with an unexpected kind of reply",
    )
}
