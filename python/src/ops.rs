//! Every cache operation, written once for the sync, the GIL-releasing and the awaited call.
//!
//! A native method reads its Python arguments into a [`Request`] that borrows them (keys as
//! `&str`, values as serialized bytes) and names how the answer becomes a Python object
//! ([`Deliver`]); [`Core::answer`] then makes the one decision every call needs:
//!
//! - a sync call on a backend that answers in memory ([`polycache::Backend::is_local`])
//!   runs in place with the GIL held, since releasing it would cost more than the lookup;
//! - a sync call on any other backend copies the request into owned values and runs
//!   without the GIL;
//! - an awaited call on a local backend also runs in place and answers with an awaitable
//!   that is already complete (no event-loop round trip); on any other backend the owned
//!   request runs on polycache's runtime and the awaitable completes when the event loop
//!   drains the finished operation (see [`crate::awaitable`]).
//!
//! `polycache.Cache` and Django's `_DjangoCache` build the same requests; Django's key rules
//! and return values stay in `django.rs`.

use crate::awaitable;
use crate::errors;
use crate::logbridge::detach;
use crate::serializer::{self, Format};
use polycache::{
    Cache, ErrorKind, Expiry, Key, RedisArg, RedisCommand, RedisReply, Result, TagStamp,
    TimeToLive, Value,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyList, PyType};
use std::time::SystemTime;

/// A cache as the native classes hold it.
pub(crate) struct Core {
    pub(crate) cache: Cache,
    /// The backend answers in memory: keep the GIL, complete awaits in place.
    pub(crate) local: bool,
    /// How stored bytes become Python objects again.
    pub(crate) decoder: Decoder,
}

/// How stored bytes become Python objects: the cache's format, and whether a decoding
/// error is pickle's own exception (Django's convention) or polycache's `SerializationError`.
#[derive(Clone, Copy)]
pub(crate) struct Decoder {
    pub(crate) format: Format,
    pub(crate) pickle_errors: bool,
}

impl Decoder {
    #[inline]
    pub(crate) fn decode<'py>(self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        self.errors(py, serializer::decode(py, self.format, data))
    }

    /// A decoding error as this face raises it: pickle's own (Django) or polycache's.
    #[inline]
    pub(crate) fn errors<'py>(
        self,
        py: Python<'py>,
        decoded: PyResult<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match decoded {
            Err(err) if self.pickle_errors => Err(pickle_error(py, err)),
            other => other,
        }
    }
}

/// What [`Core::get_quick`] found: the answer, or what is left to do with PyO3's attach
/// count held ([`LentRest::finish`]).
pub(crate) enum LentGet<'py> {
    /// The object the table of shared objects kept (a new reference).
    Found(Bound<'py, PyAny>),
    /// No value under the key.
    Missed,
    /// The value to decode, or the error.
    Rest(LentRest),
}

/// The part of a `get` that [`Core::get_quick`] leaves to [`LentRest::finish`].
pub(crate) enum LentRest {
    /// The bytes taken out (in the caller's [`serializer::Taken`]), to decode.
    Taken(Decoder),
    /// The read failed.
    Failed(polycache::Error),
}

impl LentRest {
    /// The answer of `get`: the value decoded, or the error as this face raises it. May
    /// run Python code (decoding), so it runs where PyO3's attach count is held.
    #[inline(never)]
    pub(crate) fn finish<'py>(
        self,
        py: Python<'py>,
        taken: &serializer::Taken,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self {
            LentRest::Taken(decoder) => {
                decoder.errors(py, serializer::decode_taken(py, decoder.format, taken))
            }
            LentRest::Failed(e) => Err(errors::to_py(py, e)),
        }
    }
}

/// `polycache.exceptions.SerializationError`, to unwrap pickle's own error from it.
static SERIALIZATION_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Django raises whatever pickle raised; the core serializer wraps it in
/// `SerializationError` with pickle's error as its cause, so hand that cause back.
#[cold]
pub(crate) fn pickle_error(py: Python<'_>, err: PyErr) -> PyErr {
    match SERIALIZATION_ERROR.import(py, "polycache.exceptions", "SerializationError") {
        Ok(cls) if err.is_instance(py, cls.as_any()) => err.cause(py).unwrap_or(err),
        _ => err,
    }
}

/// How a call is answered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    /// Return the answer.
    Sync,
    /// Return an awaitable of the answer.
    Async,
}

/// How the key texts of one request become core keys.
#[derive(Clone, Copy)]
pub(crate) enum KeyMode {
    /// The caller's key; the core prepends `{prefix}:{version}:` (the cache's version
    /// when `None`).
    Versioned(Option<i64>),
    /// A full key made by Python code, stored as it is.
    Full,
}

impl KeyMode {
    #[inline]
    pub(crate) fn key(self, text: &str) -> Key<'_> {
        match self {
            KeyMode::Versioned(v) => Key::new(text).maybe_version(v),
            KeyMode::Full => Key::full(text),
        }
    }

    /// The version a key scan applies: a scan needs the cache's own key layout to apply
    /// the prefix and version and take them off again.
    pub(crate) fn scan_version(self) -> Result<Option<i64>> {
        match self {
            KeyMode::Versioned(v) => Ok(v),
            KeyMode::Full => Err(polycache::Error::new(
                ErrorKind::Unsupported,
                "keys, iter_keys and delete_pattern need the default key layout \
                 ({key_prefix}:{version}:{key}, with an int version): a custom key function \
                 cannot be reversed to give the caller's keys back",
            )),
        }
    }
}

/// One operation and its arguments; `S` is a key's text, `B` a value's bytes (borrowed from
/// Python objects, or owned to cross to another thread).
pub(crate) enum Op<S, B> {
    Get(S),
    Set(S, B, Expiry),
    /// `Set`, and a failed write removes the old value (Django's memcached convention: a
    /// session must not be served stale after a write that was too large).
    SetOrDelete(S, B, Expiry),
    Add(S, B, Expiry),
    Delete(S),
    HasKey(S),
    Touch(S, Expiry),
    Incr(S, i64),
    GetMany(Vec<S>),
    SetMany(Vec<(S, B)>, Expiry),
    DeleteMany(Vec<S>),
    /// This cache's entries.
    Clear,
    /// This cache's entries, or the whole store where the backend cannot scope a clear.
    ClearOrAll,
    /// The whole store.
    ClearAll,
    /// `incr_version(key, delta, version)`.
    IncrVersion(S, i64, Option<i64>),
    /// `ttl`/`pttl`: the remaining lifetime.
    Ttl(S),
    /// `expire_at`/`pexpire_at`.
    ExpireAt(S, SystemTime),
    /// `set(..., xx=True)`: store only over a present key.
    Replace(S, B, Expiry),
    /// `incr(..., ignore_key_check=True)`: a missing key starts from 0.
    IncrOrCreate(S, i64),
    /// A Redis data-structure command (see [`polycache::RedisCommand`]).
    Redis(RedisCommand, Vec<Arg<S, B>>),
    /// `keys(pattern)`: the caller's keys that match a glob.
    Keys(S),
    /// `delete_pattern(pattern, itersize)`.
    DeletePattern(S, usize),
    /// `set(..., tags=[...])`: the last field is the tags.
    SetTagged(S, B, Expiry, Vec<S>),
    /// `set_many(..., tags=[...])`.
    SetManyTagged(Vec<(S, B)>, Expiry, Vec<S>),
    /// `invalidate_tags([...])`.
    InvalidateTags(Vec<S>),
    /// The current versions of some tags, read before a value is computed.
    TagStamp(Vec<S>),
    /// A write with the tag versions read before its value was computed: `add` when the
    /// flag is true, else `set`.
    SetStamped(S, B, Expiry, TagStamp, bool),
    /// `get` of an entry stored with these tags: the value and their versions in one request.
    GetTagged(S, Vec<S>),
}

impl<'a> Op<&'a str, &'a [u8]> {
    /// `set_many`, or `set_many(tags=)` when `tags` names some.
    pub(crate) fn set_many(
        pairs: Vec<(&'a str, &'a [u8])>,
        expiry: Expiry,
        tags: Option<&'a crate::args::TagsArg>,
    ) -> Self {
        match tags {
            Some(tags) if !tags.0.is_empty() => Op::SetManyTagged(pairs, expiry, tags.texts()),
            _ => Op::SetMany(pairs, expiry),
        }
    }
}

/// One argument of [`Op::Redis`]: a key's text, or a value as it goes to Redis.
pub(crate) enum Arg<S, B> {
    Key(S),
    Bytes(B),
    Int(i64),
    Float(f64),
}

/// An operation on one key, before the key is known.
#[derive(Clone, Copy)]
pub(crate) enum KeyOp {
    Delete,
    HasKey,
    Touch(Expiry),
    Incr(i64),
    /// `ttl` (rounded seconds) or `pttl` (milliseconds when `millis`).
    Ttl {
        millis: bool,
    },
    ExpireAt(SystemTime),
    IncrOrCreate(i64),
}

impl KeyOp {
    /// `incr(delta)`; with `ignore_key_check` a missing key starts from 0.
    #[inline]
    pub(crate) fn incr(delta: i64, ignore_key_check: bool) -> KeyOp {
        if ignore_key_check {
            KeyOp::IncrOrCreate(delta)
        } else {
            KeyOp::Incr(delta)
        }
    }

    /// `decr(delta)`: `incr(-delta)`, or polycache's overflow error.
    #[inline]
    pub(crate) fn decr(py: Python<'_>, delta: i64) -> PyResult<KeyOp> {
        Ok(KeyOp::Incr(crate::cache::negated(py, delta)?))
    }

    /// The operation on `key`, and how its reply becomes Python.
    #[inline]
    pub(crate) fn on(self, key: &str) -> (Op<&str, &[u8]>, Deliver) {
        match self {
            KeyOp::Delete => (Op::Delete(key), Deliver::Flag),
            KeyOp::HasKey => (Op::HasKey(key), Deliver::Flag),
            KeyOp::Touch(e) => (Op::Touch(key, e), Deliver::Flag),
            KeyOp::Incr(d) => (Op::Incr(key, d), Deliver::Int),
            KeyOp::Ttl { millis } => (Op::Ttl(key), Deliver::Lifetime { millis }),
            KeyOp::ExpireAt(when) => (Op::ExpireAt(key, when), Deliver::Flag),
            KeyOp::IncrOrCreate(d) => (Op::IncrOrCreate(key, d), Deliver::Int),
        }
    }
}

/// An operation on many keys, before the keys are known.
#[derive(Clone, Copy)]
pub(crate) enum ManyOp {
    /// `get_many`: a dict of the keys found.
    Get,
    /// `delete_many`: None.
    Delete,
}

impl ManyOp {
    /// The operation on `keys`, and how its reply becomes Python given the caller's key
    /// objects `objs`.
    #[inline]
    pub(crate) fn on(self, keys: Vec<&str>, objs: Vec<Py<PyAny>>) -> (Op<&str, &[u8]>, Deliver) {
        match self {
            ManyOp::Get => (Op::GetMany(keys), Deliver::Found(objs)),
            ManyOp::Delete => (Op::DeleteMany(keys), Deliver::Nothing),
        }
    }
}

/// An operation with the way its keys are made.
pub(crate) struct Request<S, B> {
    pub(crate) op: Op<S, B>,
    pub(crate) mode: KeyMode,
}

/// What an operation answered, before it becomes a Python object.
pub(crate) enum Reply {
    Value(Option<Value>),
    Flag(bool),
    Int(i64),
    Values(Vec<Option<Value>>),
    /// Indices of the items a `set_many` failed to store.
    Failed(Vec<usize>),
    Done,
    /// The object a Python loader returned (see [`crate::loader`]).
    Object(Py<PyAny>),
    /// The exception a Python loader raised.
    Raised(PyErr),
    /// A lookup: the value found (if any) and whether XFetch chose to refresh it early.
    Probe(Option<Value>, bool),
    /// What `ttl` answered.
    Lifetime(TimeToLive),
    /// A job's read: the value (if any), its status (`"hit"`, `"stale"`, `"miss"`) and
    /// whether this call fetched it.
    Job(Option<Value>, &'static str, bool),
    /// Not an answer: Python code the event loop's drain runs on the loop's thread (a job's
    /// `async def fetch` started from polycache's runtime, which never takes the GIL).
    OnLoop(OnLoop),
    /// What a Redis data-structure command answered.
    Redis(RedisReply),
    /// The caller's keys a scan found.
    Keys(Vec<String>),
    /// The tag versions an `Op::TagStamp` read.
    Stamp(TagStamp),
}

/// Python code for an event loop's thread; see [`Reply::OnLoop`].
pub(crate) type OnLoop = Box<dyn FnOnce(Python<'_>) + Send>;

/// The borrowed request of a native call.
pub(crate) type RequestRef<'a> = Request<&'a str, &'a [u8]>;
/// A request that owns its keys and values, for another thread or the runtime.
pub(crate) type Owned = Request<String, Vec<u8>>;

impl<'a> RequestRef<'a> {
    pub(crate) fn new(op: Op<&'a str, &'a [u8]>, mode: KeyMode) -> Self {
        Request { op, mode }
    }
}

impl<S: AsRef<str>, B: AsRef<[u8]>> Request<S, B> {
    fn keys<'s>(&'s self, texts: &'s [S]) -> Vec<Key<'s>> {
        texts.iter().map(|t| self.mode.key(t.as_ref())).collect()
    }

    fn pairs<'s>(&'s self, items: &'s [(S, B)]) -> Vec<(Key<'s>, &'s [u8])> {
        items
            .iter()
            .map(|(k, v)| (self.mode.key(k.as_ref()), v.as_ref()))
            .collect()
    }

    /// Runs the operation on the calling thread.
    #[inline]
    pub(crate) fn run(&self, c: &Cache) -> Result<Reply> {
        let mode = self.mode;
        Ok(match &self.op {
            Op::Get(k) => Reply::Value(c.get(mode.key(k.as_ref()))?),
            Op::Set(k, v, e) => Reply::Flag(c.set(mode.key(k.as_ref()), v.as_ref(), *e)?),
            Op::SetOrDelete(k, v, e) => {
                Reply::Flag(set_or_delete(c, mode.key(k.as_ref()), v.as_ref(), *e)?)
            }
            Op::Add(k, v, e) => Reply::Flag(c.add(mode.key(k.as_ref()), v.as_ref(), *e)?),
            Op::Delete(k) => Reply::Flag(c.delete(mode.key(k.as_ref()))?),
            Op::HasKey(k) => Reply::Flag(c.has_key(mode.key(k.as_ref()))?),
            Op::Touch(k, e) => Reply::Flag(c.touch(mode.key(k.as_ref()), *e)?),
            Op::Incr(k, d) => Reply::Int(c.incr(mode.key(k.as_ref()), *d)?),
            Op::GetMany(ks) => Reply::Values(c.get_many_keys(&self.keys(ks))?),
            Op::SetMany(items, e) => Reply::Failed(c.set_many_keys(&self.pairs(items), *e)?),
            Op::DeleteMany(ks) => {
                c.delete_many_keys(&self.keys(ks))?;
                Reply::Done
            }
            Op::Clear => {
                c.clear()?;
                Reply::Done
            }
            Op::ClearOrAll => {
                match c.clear() {
                    Err(e) if e.kind() == ErrorKind::Unsupported => c.backend().clear(b"")?,
                    other => other?,
                }
                Reply::Done
            }
            Op::ClearAll => {
                c.backend().clear(b"")?;
                Reply::Done
            }
            Op::IncrVersion(k, d, v) => Reply::Int(c.incr_version(k.as_ref(), *d, *v)?),
            Op::Ttl(k) => Reply::Lifetime(c.ttl(mode.key(k.as_ref()))?),
            Op::ExpireAt(k, when) => Reply::Flag(c.expire_at(mode.key(k.as_ref()), *when)?),
            Op::Replace(k, v, e) => Reply::Flag(c.replace(mode.key(k.as_ref()), v.as_ref(), *e)?),
            Op::IncrOrCreate(k, d) => Reply::Int(c.incr_or_create(mode.key(k.as_ref()), *d)?),
            Op::Redis(command, args) => Reply::Redis(c.redis_command(*command, &self.args(args))?),
            Op::Keys(p) => Reply::Keys(c.keys(p.as_ref(), mode.scan_version()?)?),
            Op::DeletePattern(p, n) => {
                let removed = c.delete_pattern(p.as_ref(), mode.scan_version()?, *n)?;
                Reply::Int(i64::try_from(removed).unwrap_or(i64::MAX))
            }
            Op::SetTagged(k, v, e, t) => {
                Reply::Flag(c.set_tagged(mode.key(k.as_ref()), v.as_ref(), *e, &texts(t))?)
            }
            Op::SetManyTagged(items, e, t) => {
                Reply::Failed(c.set_many_keys_tagged(&self.pairs(items), *e, &texts(t))?)
            }
            Op::InvalidateTags(t) => Reply::Flag(c.invalidate_tags(&texts(t))?),
            Op::TagStamp(t) => Reply::Stamp(c.tag_stamp(&texts(t))?),
            Op::GetTagged(k, t) => Reply::Value(c.get_tagged(mode.key(k.as_ref()), &texts(t))?),
            Op::SetStamped(k, v, e, stamp, add) => {
                let key = mode.key(k.as_ref());
                Reply::Flag(if *add {
                    c.add_stamped(key, v.as_ref(), *e, stamp)?
                } else {
                    c.set_stamped(key, v.as_ref(), *e, stamp)?
                })
            }
        })
    }

    fn args<'s>(&'s self, args: &'s [Arg<S, B>]) -> Vec<RedisArg<'s>> {
        args.iter()
            .map(|a| match a {
                Arg::Key(k) => RedisArg::Key(self.mode.key(k.as_ref())),
                Arg::Bytes(b) => RedisArg::Bytes(b.as_ref()),
                Arg::Int(n) => RedisArg::Int(*n),
                Arg::Float(x) => RedisArg::Float(*x),
            })
            .collect()
    }

    /// Awaits the operation (the awaitable twin of [`Request::run`]).
    pub(crate) async fn run_async(&self, c: &Cache) -> Result<Reply> {
        let mode = self.mode;
        Ok(match &self.op {
            Op::Get(k) => Reply::Value(c.get_async(mode.key(k.as_ref())).await?),
            Op::Set(k, v, e) => {
                Reply::Flag(c.set_async(mode.key(k.as_ref()), v.as_ref(), *e).await?)
            }
            Op::SetOrDelete(k, v, e) => {
                let key = mode.key(k.as_ref());
                match c.set_async(key, v.as_ref(), *e).await {
                    Ok(stored) => Reply::Flag(stored),
                    Err(err) => {
                        let _ = c.delete_async(key).await;
                        return Err(err);
                    }
                }
            }
            Op::Add(k, v, e) => {
                Reply::Flag(c.add_async(mode.key(k.as_ref()), v.as_ref(), *e).await?)
            }
            Op::Delete(k) => Reply::Flag(c.delete_async(mode.key(k.as_ref())).await?),
            Op::HasKey(k) => Reply::Flag(c.has_key_async(mode.key(k.as_ref())).await?),
            Op::Touch(k, e) => Reply::Flag(c.touch_async(mode.key(k.as_ref()), *e).await?),
            Op::Incr(k, d) => Reply::Int(c.incr_async(mode.key(k.as_ref()), *d).await?),
            Op::GetMany(ks) => Reply::Values(c.get_many_keys_async(&self.keys(ks)).await?),
            Op::SetMany(items, e) => {
                Reply::Failed(c.set_many_keys_async(&self.pairs(items), *e).await?)
            }
            Op::DeleteMany(ks) => {
                c.delete_many_keys_async(&self.keys(ks)).await?;
                Reply::Done
            }
            Op::Clear => {
                c.clear_async().await?;
                Reply::Done
            }
            Op::ClearOrAll => {
                match c.clear_async().await {
                    Err(e) if e.kind() == ErrorKind::Unsupported => clear_all(c).await?,
                    other => other?,
                }
                Reply::Done
            }
            Op::ClearAll => {
                clear_all(c).await?;
                Reply::Done
            }
            Op::IncrVersion(k, d, v) => Reply::Int(c.incr_version_async(k.as_ref(), *d, *v).await?),
            Op::Ttl(k) => Reply::Lifetime(c.ttl_async(mode.key(k.as_ref())).await?),
            Op::ExpireAt(k, when) => {
                Reply::Flag(c.expire_at_async(mode.key(k.as_ref()), *when).await?)
            }
            Op::Replace(k, v, e) => Reply::Flag(
                c.replace_async(mode.key(k.as_ref()), v.as_ref(), *e)
                    .await?,
            ),
            Op::IncrOrCreate(k, d) => {
                Reply::Int(c.incr_or_create_async(mode.key(k.as_ref()), *d).await?)
            }
            Op::Redis(command, args) => {
                Reply::Redis(c.redis_command_async(*command, &self.args(args)).await?)
            }
            Op::Keys(p) => Reply::Keys(c.keys_async(p.as_ref(), mode.scan_version()?).await?),
            Op::DeletePattern(p, n) => {
                let version = mode.scan_version()?;
                let removed = c.delete_pattern_async(p.as_ref(), version, *n).await?;
                Reply::Int(i64::try_from(removed).unwrap_or(i64::MAX))
            }
            Op::SetTagged(k, v, e, t) => Reply::Flag(
                c.set_tagged_async(mode.key(k.as_ref()), v.as_ref(), *e, &texts(t))
                    .await?,
            ),
            Op::SetManyTagged(items, e, t) => Reply::Failed(
                c.set_many_keys_tagged_async(&self.pairs(items), *e, &texts(t))
                    .await?,
            ),
            Op::InvalidateTags(t) => Reply::Flag(c.invalidate_tags_async(&texts(t)).await?),
            Op::TagStamp(t) => Reply::Stamp(c.tag_stamp_async(&texts(t)).await?),
            Op::GetTagged(k, t) => {
                Reply::Value(c.get_tagged_async(mode.key(k.as_ref()), &texts(t)).await?)
            }
            Op::SetStamped(k, v, e, stamp, add) => {
                let key = mode.key(k.as_ref());
                Reply::Flag(if *add {
                    c.add_stamped_async(key, v.as_ref(), *e, stamp).await?
                } else {
                    c.set_stamped_async(key, v.as_ref(), *e, stamp).await?
                })
            }
        })
    }

    /// The same request with owned keys and values.
    pub(crate) fn to_owned(&self) -> Owned {
        let s = |k: &S| k.as_ref().to_owned();
        let b = |v: &B| v.as_ref().to_vec();
        let op = match &self.op {
            Op::Get(k) => Op::Get(s(k)),
            Op::Set(k, v, e) => Op::Set(s(k), b(v), *e),
            Op::SetOrDelete(k, v, e) => Op::SetOrDelete(s(k), b(v), *e),
            Op::Add(k, v, e) => Op::Add(s(k), b(v), *e),
            Op::Delete(k) => Op::Delete(s(k)),
            Op::HasKey(k) => Op::HasKey(s(k)),
            Op::Touch(k, e) => Op::Touch(s(k), *e),
            Op::Incr(k, d) => Op::Incr(s(k), *d),
            Op::GetMany(ks) => Op::GetMany(ks.iter().map(s).collect()),
            Op::SetMany(items, e) => {
                Op::SetMany(items.iter().map(|(k, v)| (s(k), b(v))).collect(), *e)
            }
            Op::DeleteMany(ks) => Op::DeleteMany(ks.iter().map(s).collect()),
            Op::Clear => Op::Clear,
            Op::ClearOrAll => Op::ClearOrAll,
            Op::ClearAll => Op::ClearAll,
            Op::IncrVersion(k, d, v) => Op::IncrVersion(s(k), *d, *v),
            Op::Ttl(k) => Op::Ttl(s(k)),
            Op::ExpireAt(k, when) => Op::ExpireAt(s(k), *when),
            Op::Replace(k, v, e) => Op::Replace(s(k), b(v), *e),
            Op::IncrOrCreate(k, d) => Op::IncrOrCreate(s(k), *d),
            Op::Redis(command, args) => Op::Redis(
                *command,
                args.iter()
                    .map(|a| match a {
                        Arg::Key(k) => Arg::Key(s(k)),
                        Arg::Bytes(v) => Arg::Bytes(b(v)),
                        Arg::Int(n) => Arg::Int(*n),
                        Arg::Float(x) => Arg::Float(*x),
                    })
                    .collect(),
            ),
            Op::Keys(p) => Op::Keys(s(p)),
            Op::DeletePattern(p, n) => Op::DeletePattern(s(p), *n),
            Op::SetTagged(k, v, e, t) => Op::SetTagged(s(k), b(v), *e, t.iter().map(s).collect()),
            Op::SetManyTagged(items, e, t) => Op::SetManyTagged(
                items.iter().map(|(k, v)| (s(k), b(v))).collect(),
                *e,
                t.iter().map(s).collect(),
            ),
            Op::InvalidateTags(t) => Op::InvalidateTags(t.iter().map(s).collect()),
            Op::TagStamp(t) => Op::TagStamp(t.iter().map(s).collect()),
            Op::GetTagged(k, t) => Op::GetTagged(s(k), t.iter().map(s).collect()),
            Op::SetStamped(k, v, e, stamp, add) => {
                Op::SetStamped(s(k), b(v), *e, stamp.clone(), *add)
            }
        };
        Request {
            op,
            mode: self.mode,
        }
    }
}

/// A tagged write of one value, as both faces make it: `set(tags=)` (the versions read at
/// the write) or `_set_stamped` (read earlier; `add` when the flag is true).
pub(crate) enum TaggedWrite<'t> {
    Tags(&'t crate::args::TagsArg),
    Stamp(TagStamp, bool),
}

impl<'t> TaggedWrite<'t> {
    /// The operation on the encoded value `bytes` of `name`, and how it answers: a
    /// `set(tags=)` as the face's `set` does (`set_answer`), a stamped write with a flag.
    pub(crate) fn op<'a>(
        self,
        name: &'a str,
        bytes: &'a [u8],
        expiry: Expiry,
        set_answer: Deliver,
    ) -> (Op<&'a str, &'a [u8]>, Deliver)
    where
        't: 'a,
    {
        match self {
            TaggedWrite::Tags(tags) => {
                (Op::SetTagged(name, bytes, expiry, tags.texts()), set_answer)
            }
            TaggedWrite::Stamp(stamp, add) => (
                Op::SetStamped(name, bytes, expiry, stamp, add),
                Deliver::Flag,
            ),
        }
    }
}

/// The tags of a request as the core takes them.
fn texts<S: AsRef<str>>(tags: &[S]) -> Vec<&str> {
    tags.iter().map(AsRef::as_ref).collect()
}

/// Empties the whole store, on the blocking pool (the backend's clear is synchronous).
async fn clear_all(c: &Cache) -> Result<()> {
    let backend = std::sync::Arc::clone(c.backend());
    awaitable::blocking(move || backend.clear(b"")).await
}

/// How a [`Reply`] becomes the Python answer of a call.
pub(crate) enum Deliver {
    /// The decoded value, or `default` (None when absent) on a miss.
    Value(Option<Py<PyAny>>),
    Flag,
    Int,
    /// `None`.
    Nothing,
    /// A dict of the keys found (the caller's key objects) and their values.
    Found(Vec<Py<PyAny>>),
    /// The list of the caller's keys a `set_many` failed to store.
    FailedKeys(Vec<Py<PyAny>>),
    /// What a load answered: a stored value, the loader's object, or its exception.
    Loaded,
    /// `(value, refresh_early)` of a lookup, `(default, False)` on a miss.
    Probe(Py<PyAny>),
    /// django-redis' `ttl` (seconds, rounded) or `pttl` (milliseconds): `None` for a key
    /// that never expires, `0` for a missing one.
    Lifetime {
        millis: bool,
    },
    /// `(value, status, fetched)` of a job's read (value None when absent).
    Job,
    /// A Redis reply as plain Python: `None`, `int`, `float`, `bytes`, `str`, `list`.
    Redis,
    /// A list of `str` (the keys of a scan); `None` for a scan that is over.
    Keys,
    /// A `polycache._polycache.TagStamp`.
    Stamp,
}

impl Deliver {
    /// The Python answer of `reply`, or the exception of its error.
    #[inline]
    pub(crate) fn convert<'py>(
        self,
        py: Python<'py>,
        decoder: Decoder,
        reply: Result<Reply>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let reply = reply.map_err(|e| errors::to_py(py, e))?;
        match (self, reply) {
            (Deliver::Value(default), Reply::Value(found)) => match found {
                Some(ref v) => decoder.decode(py, v),
                None => Ok(match default {
                    Some(d) => d.into_bound(py),
                    None => py.None().into_bound(py),
                }),
            },
            (Deliver::Flag, Reply::Flag(b)) => Ok(PyBool::new(py, b).to_owned().into_any()),
            (Deliver::Int, Reply::Int(n)) => Ok(n.into_pyobject(py)?.into_any()),
            (Deliver::Nothing, _) => Ok(py.None().into_bound(py)),
            (Deliver::Found(keys), Reply::Values(values)) => {
                let found = PyDict::new(py);
                for (key, value) in keys.iter().zip(values) {
                    if let Some(value) = value {
                        found.set_item(key.bind(py), decoder.decode(py, &value)?)?;
                    }
                }
                Ok(found.into_any())
            }
            (Deliver::FailedKeys(keys), Reply::Failed(failed)) => {
                Ok(PyList::new(py, failed.into_iter().map(|i| keys[i].bind(py)))?.into_any())
            }
            (Deliver::Loaded, Reply::Value(Some(v))) => decoder.decode(py, &v),
            (Deliver::Loaded, Reply::Object(obj)) => Ok(obj.into_bound(py)),
            (_, Reply::Raised(e)) => Err(e),
            (Deliver::Keys, Reply::Keys(keys)) => Ok(PyList::new(py, keys)?.into_any()),
            (Deliver::Keys, Reply::Done) => Ok(py.None().into_bound(py)),
            (Deliver::Probe(default), Reply::Probe(found, early)) => {
                let value = match found {
                    Some(ref v) => decoder.decode(py, v)?,
                    None => default.into_bound(py),
                };
                Ok(pyo3::types::PyTuple::new(
                    py,
                    [value, PyBool::new(py, early).to_owned().into_any()],
                )?
                .into_any())
            }
            (Deliver::Lifetime { millis }, Reply::Lifetime(t)) => {
                let n = if millis {
                    t.as_millis()
                } else {
                    t.as_secs_rounded()
                };
                Ok(n.into_pyobject(py)?.into_any())
            }
            (Deliver::Job, Reply::Job(found, status, fetched)) => {
                let value = match found {
                    Some(ref v) => decoder.decode(py, v)?,
                    None => py.None().into_bound(py),
                };
                Ok((value, status, fetched).into_pyobject(py)?.into_any())
            }
            (Deliver::Redis, Reply::Redis(reply)) => redis_reply(py, reply),
            (Deliver::Stamp, Reply::Stamp(stamp)) => {
                Ok(Bound::new(py, crate::tags::PyTagStamp(stamp))?.into_any())
            }
            _ => Err(pyo3::exceptions::PyRuntimeError::new_err(
                "polycache: an operation answered with an unexpected kind of reply",
            )),
        }
    }
}

/// A Redis reply as plain Python objects.
fn redis_reply(py: Python<'_>, reply: RedisReply) -> PyResult<Bound<'_, PyAny>> {
    Ok(match reply {
        RedisReply::Int(n) => n.into_pyobject(py)?.into_any(),
        RedisReply::Double(x) => x.into_pyobject(py)?.into_any(),
        RedisReply::Bytes(b) => pyo3::types::PyBytes::new(py, &b).into_any(),
        RedisReply::Status(s) => s.into_pyobject(py)?.into_any(),
        RedisReply::Array(items) => PyList::new(
            py,
            items
                .into_iter()
                .map(|i| redis_reply(py, i))
                .collect::<PyResult<Vec<_>>>()?,
        )?
        .into_any(),
        _ => py.None().into_bound(py),
    })
}

impl Core {
    /// Runs `f` on the calling thread: in place for a local backend, else without the GIL
    /// (`f` must hold owned copies of what it reads from Python objects).
    #[inline]
    pub(crate) fn run<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&Cache) -> T + Send) -> T {
        if self.local {
            f(&self.cache)
        } else {
            let cache = &self.cache;
            detach(py, move || f(cache))
        }
    }

    /// Runs `request` on the calling thread: in place for a local backend, else on owned
    /// copies without the GIL.
    #[inline]
    pub(crate) fn call(&self, py: Python<'_>, request: RequestRef<'_>) -> Result<Reply> {
        if self.local {
            request.run(&self.cache)
        } else {
            let owned = request.to_owned();
            self.run(py, move |cache| owned.run(cache))
        }
    }

    /// The answer of `request` (sync), or an awaitable of it (async): the one place where a
    /// call chooses to run in place, without the GIL, or on polycache's runtime.
    #[inline]
    pub(crate) fn answer<'py>(
        &self,
        py: Python<'py>,
        how: How,
        request: RequestRef<'_>,
        deliver: Deliver,
    ) -> PyResult<Bound<'py, PyAny>> {
        match how {
            // The hottest call of all (`get` on memory://), matched in place: moving the
            // lookup's value through a Reply costs more than the lookup on this path.
            How::Sync if self.local => self.in_place(py, request, deliver),
            How::Sync => deliver.convert(py, self.decoder, self.call(py, request)),
            How::Async if self.local => {
                let answer = self.in_place(py, request, deliver);
                awaitable::ready(py, answer)
            }
            How::Async => awaitable::start(py, self, request.to_owned(), deliver),
        }
    }
}

impl Core {
    /// Runs `request` on a local backend in place, with the GIL held: the sync call, and the
    /// awaited one whose awaitable is complete at once.
    #[inline]
    fn in_place<'py>(
        &self,
        py: Python<'py>,
        request: RequestRef<'_>,
        deliver: Deliver,
    ) -> PyResult<Bound<'py, PyAny>> {
        match (request.op, deliver) {
            // The hottest call of all (`get` on memory://), matched in place: moving the
            // lookup's value through a Reply costs more than the lookup on this path.
            (Op::Get(k), Deliver::Value(default)) => {
                match self.get_lent(py, request.mode.key(k))? {
                    Some(object) => Ok(object),
                    None => Ok(match default {
                        Some(d) => d.into_bound(py),
                        None => py.None().into_bound(py),
                    }),
                }
            }
            (op, deliver) => {
                let request = Request {
                    op,
                    mode: request.mode,
                };
                deliver.convert(py, self.decoder, request.run(&self.cache))
            }
        }
    }

    /// A `get` on a local backend, through the lent read: the decoded value, or `None` on
    /// a miss ([`Core::get_quick`], then [`LentRest::finish`]).
    #[inline(always)]
    fn get_lent<'py>(&self, py: Python<'py>, key: Key<'_>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let mut taken = serializer::Taken::Nothing;
        match self.get_quick(py, key, &mut taken) {
            LentGet::Found(object) => Ok(Some(object)),
            LentGet::Missed => Ok(None),
            LentGet::Rest(rest) => rest.finish(py, &taken).map(Some),
        }
    }

    /// The part of a `get` on a local backend that needs no more than the Python token: the
    /// lent read, answered from the table of shared objects when it holds the value's
    /// object; decoding and errors are left to [`LentRest::finish`].
    ///
    /// Both faces share an immutable value decoded from the same stored bytes
    /// ([`serializer::shared`]). The closure runs while the store lends its bytes, maybe
    /// under the store's lock, so it runs no Python code and makes or drops no Python
    /// object ([`serializer::lend`]): a table lookup and a `Py_INCREF`, or a copy of the
    /// bytes. An allocation there could start the garbage collector, whose finalizers may
    /// call this cache, whose store this very read may hold locked. Decoding waits until
    /// the store has let go.
    ///
    /// Outside the closure, too, nothing here makes, drops or calls a Python object but the
    /// answer's new reference: `crate::fastget` runs it without PyO3's attach count.
    #[inline(always)]
    pub(crate) fn get_quick<'py>(
        &self,
        py: Python<'py>,
        key: Key<'_>,
        taken: &mut serializer::Taken,
    ) -> LentGet<'py> {
        let format = self.decoder.format;
        // No Python code and no Python object made or dropped in this closure: the store
        // may hold its lock while it runs (see above).
        let lent = self
            .cache
            .get_with(key, |v| serializer::lend(py, format, v, taken));
        match lent {
            Ok(Some(Some(object))) => LentGet::Found(object),
            Ok(None) => LentGet::Missed,
            Ok(Some(None)) => LentGet::Rest(LentRest::Taken(self.decoder)),
            Err(e) => LentGet::Rest(LentRest::Failed(e)),
        }
    }

    /// `set(key, value)` of the encoded `bytes` at the cache's version and default timeout:
    /// the two-argument call (`crate::fastset`), without building a request on a local
    /// backend.
    #[inline]
    pub(crate) fn set_one<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        bytes: &[u8],
    ) -> PyResult<Bound<'py, PyAny>> {
        if self.local {
            let stored = self.set_in_place(py, Key::new(key), bytes, false)?;
            Ok(PyBool::new(py, stored).to_owned().into_any())
        } else {
            let op = Op::Set(key, bytes, Expiry::Default);
            let request = RequestRef::new(op, KeyMode::Versioned(None));
            self.answer(py, How::Sync, request, Deliver::Flag)
        }
    }

    /// `set` of the encoded `bytes` at the default timeout on a local backend, in place: no
    /// request or reply is built. With `or_delete`, a failed write removes the old value
    /// ([`Op::SetOrDelete`], Django's `set`).
    #[inline]
    pub(crate) fn set_in_place(
        &self,
        py: Python<'_>,
        key: Key<'_>,
        bytes: &[u8],
        or_delete: bool,
    ) -> PyResult<bool> {
        self.store_in_place(key, bytes, or_delete)
            .map_err(|e| errors::to_py(py, e))
    }

    /// [`Core::set_in_place`] without the Python error.
    #[inline]
    fn store_in_place(&self, key: Key<'_>, bytes: &[u8], or_delete: bool) -> Result<bool> {
        debug_assert!(self.local);
        if or_delete {
            set_or_delete(&self.cache, key, bytes, Expiry::Default)
        } else {
            self.cache.set(key, bytes, Expiry::Default)
        }
    }

    /// The part of `set(key, value)` at the default timeout that runs no Python code and
    /// makes no Python object (`crate::fastset` runs it without PyO3's attach count): on a
    /// local backend, a value [`serializer::encode_plain`] writes, stored as
    /// [`Core::set_in_place`] stores it. `None`, having done nothing, for any other call.
    #[inline]
    pub(crate) fn set_quick(
        &self,
        key: Key<'_>,
        value: &Bound<'_, PyAny>,
        or_delete: bool,
    ) -> Option<Result<bool>> {
        if !self.local || self.decoder.format != Format::Pickle {
            return None;
        }
        let mut buf = serializer::Buf::new();
        serializer::encode_plain(value, &mut buf)
            .then(|| self.store_in_place(key, buf.as_slice(), or_delete))
    }

    /// `get(key)` at the cache's version with no default: the one-argument call
    /// (`crate::fastget`), without building a request on a local backend.
    #[inline]
    pub(crate) fn get_one<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        if self.local {
            Ok(match self.get_lent(py, Key::new(key))? {
                Some(object) => object,
                None => py.None().into_bound(py),
            })
        } else {
            let request = RequestRef::new(Op::Get(key), KeyMode::Versioned(None));
            self.answer(py, How::Sync, request, Deliver::Value(None))
        }
    }
}

/// [`Op::SetOrDelete`] on the calling thread: `set`, and when it fails, the old value goes
/// too (Django's `set`), so a failed write never leaves a stale value behind.
#[inline]
fn set_or_delete(c: &Cache, key: Key<'_>, value: &[u8], expiry: Expiry) -> Result<bool> {
    c.set(key, value, expiry).inspect_err(|_| {
        let _ = c.delete(key);
    })
}
