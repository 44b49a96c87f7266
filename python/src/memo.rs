//! `Memo`: the native half of `@polycache.cached` on a polycache cache.
//!
//! A hit runs entirely here with the GIL held on a local backend: build the key from the
//! arguments (see `argkey`), look it up, decode the value. A miss releases the GIL and goes
//! through the core's single-flight `load` ([`crate::loader`]): one thread calls the
//! function (re-acquiring the GIL), the others wait without the GIL for its value.
//! `_aprobe` and `_astore` are the awaitable steps of the `async def` wrapper: the core's
//! native async lookup and store, with no thread of the blocking pool.

use crate::argkey;
use crate::args::{TagsArg, TimeoutArg, DEFAULT};
use crate::awaitable;
use crate::cache::PyCache;
use crate::errors::ResultExt;
use crate::loader;
use crate::ops::{Deliver, How, KeyMode, Op, Reply, RequestRef};
use crate::serializer::Serialized;
use crate::tags::PyTagStamp;
use polycache::{Expiry, Key, Lookup, Value};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple};
use std::sync::RwLock;
use std::time::Duration;

/// A memoized function: calls are answered from a polycache cache, computed once per key.
#[pyclass(frozen, dict, weakref, module = "polycache._polycache", name = "Memo")]
pub(crate) struct Memo {
    func: Py<PyAny>,
    name: String,
    expiry: Expiry,
    version: Option<i64>,
    key_fn: Option<Py<PyAny>>,
    skip_first: bool,
    single_flight: bool,
    /// The cache, once resolved; `None` until the first call when the cache is named.
    cache: RwLock<Option<Py<PyCache>>>,
    /// Called with no arguments to resolve the cache (`lambda: caches[name]`).
    resolver: Option<Py<PyAny>>,
    /// The tags of every stored value: a list of str, or a callable of the call's arguments
    /// that returns one; `None`: untagged.
    tags: Option<Py<PyAny>>,
}

impl Memo {
    /// The caller's key of a call: `{name}:{digest}` or `{name}:{key(*args, **kwargs)}`.
    fn key_of(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        match &self.key_fn {
            None => argkey::call_key(&self.name, args, kwargs, self.skip_first),
            Some(f) => {
                let k = f.bind(args.py()).call(args, kwargs)?;
                let k = k.cast::<PyString>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "the key= function of {} must return a str, not {}",
                        self.name,
                        k.get_type()
                            .qualname()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    ))
                })?;
                Ok(format!("{}:{}", self.name, k.to_cow()?))
            }
        }
    }

    fn resolve<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCache>> {
        if let Some(c) = &*self.cache.read().unwrap_or_else(|e| e.into_inner()) {
            return Ok(c.bind(py).clone());
        }
        let Some(resolver) = &self.resolver else {
            return Err(PyValueError::new_err("this memoized function has no cache"));
        };
        let resolved = resolver.bind(py).call0()?;
        let cache = resolved.cast::<PyCache>().map_err(|_| {
            PyTypeError::new_err(format!(
                "the cache of {} must be a polycache.Cache",
                self.name
            ))
        })?;
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Some(cache.clone().unbind());
        Ok(cache.clone())
    }

    /// The tags of a call's value (none when the decorator has none).
    fn tags_of(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Vec<String>> {
        let Some(tags) = &self.tags else {
            return Ok(Vec::new());
        };
        let tags = tags.bind(args.py());
        let tags = if tags.is_callable() {
            tags.call(args, kwargs)?
        } else {
            tags.clone()
        };
        Ok(tags.extract::<TagsArg>()?.0)
    }

    /// Computes the value of `key` by calling the function (single-flight unless turned off),
    /// stores it and returns it; `current` is the value XFetch chose to refresh early.
    #[allow(clippy::too_many_arguments)]
    fn load<'py>(
        &self,
        py: Python<'py>,
        cache: &PyCache,
        key: &str,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
        current: Option<Value>,
        single_flight: bool,
        tags: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let call = loader::Call::new(
            self.func.clone_ref(py),
            Some(args.clone().unbind()),
            kwargs.map(|k| k.clone().unbind()),
        )
        .tagged(tags);
        let key = Key::new(key).maybe_version(self.version);
        loader::load(
            py,
            &cache.core,
            key,
            call,
            self.expiry,
            single_flight,
            Some(current),
        )
    }
}

impl Memo {
    fn probe<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &str,
        default: Bound<'py, PyAny>,
        args: Option<&Bound<'py, PyTuple>>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (this, py) = (slf.get(), slf.py());
        // With the call's arguments, a tagged memo reads the value and its tags' versions
        // in one request, as the sync wrapper does.
        let tags = match args {
            Some(args) => this.tags_of(args, kwargs.as_ref())?,
            None => Vec::new(),
        };
        let cache = this.resolve(py)?;
        let core = &cache.get().core;
        let (version, policy) = (this.version, core.cache.refresh_policy().clone());
        let deliver = Deliver::Probe(default.unbind());
        if how == How::Sync || core.local {
            let found = core.run(py, |c| {
                let texts: Vec<&str> = tags.iter().map(String::as_str).collect();
                c.lookup_tagged(Key::new(key).maybe_version(version), &policy, &texts)
                    .map(probe_reply)
            });
            let answer = deliver.convert(py, core.decoder, found);
            return if how == How::Sync {
                answer
            } else {
                awaitable::ready(py, answer)
            };
        }
        let (c, key) = (core.cache.clone(), key.to_owned());
        let work = async move {
            let texts: Vec<&str> = tags.iter().map(String::as_str).collect();
            c.lookup_tagged_async(Key::new(&key).maybe_version(version), &policy, &texts)
                .await
                .map(probe_reply)
        };
        awaitable::start_future(py, core, work, deliver)
    }

    fn store<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        key: &str,
        value: &Bound<'py, PyAny>,
        delta: Option<f64>,
        stamp: Option<PyRef<'py, PyTagStamp>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (this, py) = (slf.get(), slf.py());
        let cache = this.resolve(py)?;
        let core = &cache.get().core;
        let mut encoded = Serialized::new(core.decoder.format);
        encoded.encode(value)?;
        let (version, expiry) = (this.version, this.expiry);
        let stamp = stamp.map(|s| s.0.clone()).unwrap_or_default();
        let Some(d) = delta else {
            let op = Op::SetStamped(key, encoded.as_bytes(), expiry, stamp, false);
            let request = RequestRef::new(op, KeyMode::Versioned(version));
            return core.answer(py, how, request, Deliver::Flag);
        };
        let delta = Duration::try_from_secs_f64(d).unwrap_or_default();
        let policy = core.cache.refresh_policy().clone();
        let (key, bytes) = (key.to_owned(), encoded.as_bytes().to_vec());
        if how == How::Sync || core.local {
            let store = move |c: &polycache::Cache| {
                let key = Key::new(&key).maybe_version(version);
                c.store_loaded_stamped(key, &bytes, expiry, &policy, delta, &stamp)
                    .map(|()| Reply::Flag(true))
            };
            let answer = Deliver::Flag.convert(py, core.decoder, core.run(py, store));
            return if how == How::Sync {
                answer
            } else {
                awaitable::ready(py, answer)
            };
        }
        let c = core.cache.clone();
        let work = async move {
            let key = Key::new(&key).maybe_version(version);
            c.store_loaded_stamped_async(key, &bytes, expiry, &policy, delta, &stamp)
                .await
                .map(|()| Reply::Flag(true))
        };
        awaitable::start_future(py, core, work, Deliver::Flag)
    }
}

impl Memo {
    fn tag_stamp<'py>(
        slf: &Bound<'py, Self>,
        how: How,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (this, py) = (slf.get(), slf.py());
        let tags = this.tags_of(args, kwargs.as_ref())?;
        let cache = this.resolve(py)?;
        let texts: Vec<&str> = tags.iter().map(String::as_str).collect();
        let request = RequestRef::new(Op::TagStamp(texts), KeyMode::Versioned(None));
        cache.get().core.answer(py, how, request, Deliver::Stamp)
    }
}

/// A lookup's answer as `_probe` delivers it.
fn probe_reply(found: Lookup) -> Reply {
    match found {
        Lookup::Hit(v) => Reply::Probe(Some(v), false),
        Lookup::RefreshEarly(v) => Reply::Probe(Some(v), true),
        _ => Reply::Probe(None, false),
    }
}

fn method_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static METHOD_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    METHOD_TYPE
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("types")?.getattr("MethodType")?.unbind())
        })
        .map(|t| t.bind(py))
}

twins! {
    impl Memo {
        /// `(value, refresh_early)` for `key` (a key from `key()`): the cached value and
        /// whether XFetch chose this read to recompute it early, or `(default, False)` on a
        /// miss. Awaited, the lookup is the core's native async one (in place on a local
        /// cache).
        /// With the call's `args` (a tuple) and `kwargs` (a dict), a memo with tags reads the
        /// value and its tags' versions in one request.
        twins _probe / _aprobe <'py>(slf, how, key: &str, default: Bound<'py, PyAny>, args: Option<Bound<'py, PyTuple>>, kwargs: Option<Bound<'py, PyDict>>)
            signature (key, default, args = None, kwargs = None)
            { Self::probe(slf, how, key, default, args.as_ref(), kwargs) }
        /// Stores `value` under `key` (a key from `key()`) with the decorator's timeout. With
        /// `delta`, the seconds the function took, it is a computed value: stored as
        /// `get_or_set_with` stores one (an XFetch envelope when the cache has
        /// `xfetch_beta`) and counted as a refresh.
        /// With `stamp` (from `_tag_stamp`, read before the function ran) the value carries
        /// the decorator's tags.
        twins _store / _astore <'py>(slf, how, key: &str, value: &Bound<'py, PyAny>, delta: Option<f64>, stamp: Option<PyRef<'py, PyTagStamp>>)
            signature (key, value, delta = None, stamp = None)
            { Self::store(slf, how, key, value, delta, stamp) }
        /// The current versions of the tags of a call with these arguments (`args` a tuple,
        /// `kwargs` a dict), to read before the function runs.
        twins _tag_stamp / _atag_stamp <'py>(slf, how, args: &Bound<'py, PyTuple>, kwargs: Option<Bound<'py, PyDict>>)
            signature (args, kwargs = None)
            { Self::tag_stamp(slf, how, args, kwargs) }

        @methods
    #[new]
    #[pyo3(signature = (func, name, *, cache = None, resolver = None, timeout = DEFAULT, version = None, key = None, skip_first = false, single_flight = true, tags = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        func: Py<PyAny>,
        name: String,
        cache: Option<Py<PyCache>>,
        resolver: Option<Py<PyAny>>,
        timeout: TimeoutArg,
        version: Option<i64>,
        key: Option<Py<PyAny>>,
        skip_first: bool,
        single_flight: bool,
        tags: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        // A list is checked now; a callable's answer at each call.
        let tags = match tags {
            Some(t) if !t.is_callable() => {
                t.extract::<TagsArg>()?;
                Some(t.unbind())
            }
            other => other.map(Bound::unbind),
        };
        if cache.is_none() && resolver.is_none() {
            return Err(PyValueError::new_err("Memo needs a cache or a resolver"));
        }
        Ok(Memo {
            func,
            name,
            expiry: timeout.0,
            version,
            key_fn: key,
            skip_first,
            single_flight,
            cache: RwLock::new(cache),
            resolver,
            tags,
        })
    }

    /// True when the decorator was given tags.
    #[getter]
    fn has_tags(&self) -> bool {
        self.tags.is_some()
    }

    /// Calls the function, or answers from the cache.
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.resolve(py)?;
        let pc = cache.get();
        let call = |key: &str| {
            let version = self.version;
            let policy = pc.core.cache.refresh_policy();
            // The tags are known before the read: the value and their versions in one request.
            let tags = self.tags_of(args, kwargs)?;
            let texts: Vec<&str> = tags.iter().map(String::as_str).collect();
            let found = pc
                .core
                .run(py, |c| {
                    c.lookup_tagged(Key::new(key).maybe_version(version), policy, &texts)
                })
                .py_err(py)?;
            let current = match found {
                Lookup::Hit(ref v) => return pc.core.decoder.decode(py, v),
                Lookup::RefreshEarly(v) => Some(v),
                _ => None,
            };
            self.load(py, pc, key, args, kwargs, current, self.single_flight, tags)
        };
        match self.key_fn {
            None => argkey::with_call_key(&self.name, args, kwargs, self.skip_first, call),
            Some(_) => call(&self.key_of(args, kwargs)?),
        }
    }

    /// Binds the memoized function to an instance, as functions do.
    fn __get__<'py>(
        slf: &Bound<'py, Self>,
        obj: Option<&Bound<'py, PyAny>>,
        objtype: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = objtype;
        match obj {
            None => Ok(slf.clone().into_any()),
            Some(obj) if obj.is_none() => Ok(slf.clone().into_any()),
            Some(obj) => method_type(slf.py())?.call1((slf, obj)),
        }
    }

    /// The cache key (before prefix and version) of a call with these arguments.
    #[pyo3(signature = (*args, **kwargs))]
    fn key(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        self.key_of(args, kwargs)
    }

    /// Removes the cached value of a call with these arguments; True when it was present.
    #[pyo3(signature = (*args, **kwargs))]
    fn invalidate(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<bool> {
        let key = self.key_of(args, kwargs)?;
        let cache = self.resolve(py)?;
        let version = self.version;
        cache
            .get()
            .core
            .run(py, |c| c.delete(Key::new(&key).maybe_version(version)))
            .py_err(py)
    }

    /// Calls the function now, stores its value for these arguments and returns it.
    #[pyo3(signature = (*args, **kwargs))]
    fn refresh<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = self.key_of(args, kwargs)?;
        let cache = self.resolve(py)?;
        let tags = self.tags_of(args, kwargs)?;
        self.load(py, cache.get(), &key, args, kwargs, None, false, tags)
    }

    /// Forgets the resolved cache, so the next call resolves it again (after `configure`).
    fn _reset(&self) {
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The cache this function's values live in.
    #[getter]
    fn cache<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCache>> {
        self.resolve(py)
    }

    /// The function being memoized.
    #[getter]
    fn func(&self, py: Python<'_>) -> Py<PyAny> {
        self.func.clone_ref(py)
    }

    fn __repr__(&self) -> String {
        format!("<polycache.cached {}>", self.name)
    }
}
}
