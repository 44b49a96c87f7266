//! Tags: entries written with tags become misses together when any of their tags is
//! invalidated, in O(number of tags), on every backend, with no scan of the entries.
//!
//! Each tag has a current *version*, a random 64-bit nonce stored in the same backend under
//! the reserved full key `{key_prefix}:__tag__:{tag}` (never expiring; no user key has this
//! shape, as a user key's second part is its integer version). A tagged entry carries the
//! versions its tags had when it was written — read *before* its value was computed on the
//! paths that compute it ([`Cache::get_or_set_tagged`], [`Cache::get_or_set_with_tags`], the
//! decorators, jobs) — in a small header in front of its value:
//!
//! | bytes | field   | meaning                                                   |
//! |-------|---------|-----------------------------------------------------------|
//! | 0..8  | magic   | `00 50 43 54 41 47 31 00` (`"\0PCTAG1\0"`)                 |
//! | 8     | count   | the number of tags, 1 to [`MAX_TAGS`]                      |
//! | …     | per tag | its length (1 byte), its bytes, its version (8 bytes, LE) |
//! | …     | payload | the value's bytes (plain, or an [`crate::Envelope`])      |
//!
//! A read of a tagged entry reads its tags' versions with one `get_many`; any version that
//! differs or is missing (invalidated, cleared, evicted) makes the entry a miss. An entry
//! computed before an invalidation and stored after it carries the old version, so it reads
//! as a miss: the race is safe. [`Cache::invalidate_tags`] writes fresh nonces with one
//! `set_many`. Untagged entries cost a comparison of 8 bytes on read, nothing more.
//!
//! On a tiered cache the version keys live in L1 like any key; an invalidation is a write
//! to L2 that the bus carries to every other L1, so an L1 hit checks its tags with L1
//! lookups, no round trip.

use super::{Cache, Key};
use crate::error::{Error, ErrorKind, Result};
use crate::expiry::Expiry;
use crate::value::Value;
use crate::AsyncBackend;
use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

mod edges;
mod hints;
mod reads;

pub(crate) use hints::TagHints;

/// The first 8 bytes of every tagged entry.
pub const TAG_MAGIC: [u8; 8] = *b"\0PCTAG1\0";
/// The longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 200;
/// The most tags one entry may carry.
pub const MAX_TAGS: usize = 64;

/// The versions of some tags, read at one moment: what a tagged entry is stamped with.
///
/// Read one with [`Cache::tag_stamp`] *before* computing a value, store the value with
/// [`Cache::set_stamped`]: if any of the tags is invalidated in between, the entry reads as a
/// miss. `Clone`, `Send + Sync`.
///
/// ```
/// use polycache::{Cache, Expiry};
/// let cache = Cache::open("memory://").unwrap();
/// let stamp = cache.tag_stamp(&["product:42"]).unwrap();
/// // ... compute the value; meanwhile another process invalidates the tag:
/// cache.invalidate_tags(&["product:42"]).unwrap();
/// cache.set_stamped("page", b"computed before", Expiry::Default, &stamp).unwrap();
/// assert_eq!(cache.get("page").unwrap(), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagStamp {
    pairs: Vec<(String, u64)>,
}

impl TagStamp {
    /// True when the stamp has no tags: values stored with it are plain values.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The tags of the stamp.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|(t, _)| t.as_str())
    }

    /// The stored bytes of `payload` under this stamp: the payload itself when untagged.
    pub(crate) fn wrap<'v>(&self, payload: &'v [u8]) -> Cow<'v, [u8]> {
        if self.pairs.is_empty() {
            return Cow::Borrowed(payload);
        }
        let header: usize = self.pairs.iter().map(|(t, _)| t.len() + 9).sum();
        let mut out = Vec::with_capacity(9 + header + payload.len());
        out.extend_from_slice(&TAG_MAGIC);
        out.push(self.pairs.len() as u8);
        for (tag, version) in &self.pairs {
            out.push(tag.len() as u8);
            out.extend_from_slice(tag.as_bytes());
            out.extend_from_slice(&version.to_le_bytes());
        }
        out.extend_from_slice(payload);
        Cow::Owned(out)
    }
}

/// A stored value read back: plain, tagged (its tags and versions, where its payload
/// starts) or a tagged header that does not parse.
enum Parsed<'a> {
    Plain,
    Tagged(Vec<(&'a [u8], u64)>, usize),
    Corrupt,
}

/// True when `bytes` start with [`TAG_MAGIC`]: one 8-byte load and compare, no `memcmp`
/// call (it runs on every read and every write to a remote backend).
#[inline]
fn is_tagged(bytes: &[u8]) -> bool {
    match bytes.first_chunk::<8>() {
        Some(head) => u64::from_ne_bytes(*head) == u64::from_ne_bytes(TAG_MAGIC),
        None => false,
    }
}

fn parse(bytes: &[u8]) -> Parsed<'_> {
    if !is_tagged(bytes) {
        return Parsed::Plain;
    }
    let mut at = TAG_MAGIC.len();
    let Some(&count) = bytes.get(at) else {
        return Parsed::Corrupt;
    };
    at += 1;
    let mut pairs = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let Some(&len) = bytes.get(at) else {
            return Parsed::Corrupt;
        };
        let start = at + 1;
        let end = start + len as usize;
        let Some(version) = bytes.get(end..end + 8) else {
            return Parsed::Corrupt;
        };
        let mut v = [0u8; 8];
        v.copy_from_slice(version);
        pairs.push((&bytes[start..end], u64::from_le_bytes(v)));
        at = end + 8;
    }
    if pairs.is_empty() {
        return Parsed::Corrupt;
    }
    Parsed::Tagged(pairs, at)
}

/// Checks tags a caller gave: none empty, none longer than [`MAX_TAG_LEN`] bytes, at most
/// [`MAX_TAGS`]. Returns them without repeats, in their first order.
pub fn check_tags<'t>(tags: &[&'t str]) -> Result<Vec<&'t str>> {
    let mut out: Vec<&str> = Vec::with_capacity(tags.len());
    for tag in tags {
        if tag.is_empty() {
            return Err(Error::new(ErrorKind::InvalidKey, "a tag may not be empty"));
        }
        if tag.len() > MAX_TAG_LEN {
            return Err(Error::new(
                ErrorKind::InvalidKey,
                format!(
                    "tag of {} bytes is longer than the {MAX_TAG_LEN} bytes allowed",
                    tag.len()
                ),
            ));
        }
        if !out.contains(tag) {
            out.push(tag);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(Error::new(
            ErrorKind::InvalidKey,
            format!(
                "{} tags on one entry: at most {MAX_TAGS} are allowed",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// A fresh tag version: unpredictable, never 0 (0 stands for "unreadable").
///
/// SipHash under the OS-seeded keys of a new `RandomState` (std draws them from the OS once
/// per thread and varies them per instance) of a process-wide counter: no two calls repeat.
fn fresh_version() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u64(crate::clock::unix_ms());
    h.finish() | 1
}

fn encode_version(v: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    let hex = format!("{v:016x}");
    out.copy_from_slice(hex.as_bytes());
    out
}

/// The version a tag key holds; 0 when it holds something else.
fn decode_version(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .unwrap_or(0)
}

impl Cache {
    /// The full key of a tag's version: `{key_prefix}:__tag__:{tag}`.
    fn tag_key(&self, tag: &[u8]) -> Vec<u8> {
        let prefix = self.key_prefix().as_bytes();
        let mut k = Vec::with_capacity(prefix.len() + 9 + tag.len());
        k.extend_from_slice(prefix);
        k.extend_from_slice(b":__tag__:");
        k.extend_from_slice(tag);
        k
    }

    /// How the async twins reach the backend: its async side, or the blocking one in place
    /// where calls answer in memory.
    pub(crate) fn via(&self) -> Via<'_> {
        self.awaited().map_or(Via::Blocking, Via::Awaited)
    }

    /// The backend's `get_many`, through `via`.
    pub(crate) async fn get_many_via(
        &self,
        via: Via<'_>,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Value>>> {
        match via {
            Via::Blocking => self.inner.backend.get_many(keys),
            Via::Awaited(backend) => backend.get_many(keys).await,
        }
    }

    /// The versions under `keys`, opened; `None` for a missing or unreadable one.
    async fn read_versions(&self, via: Via<'_>, keys: &[Vec<u8>]) -> Result<Vec<Option<u64>>> {
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let found = self.get_many_via(via, &refs).await?;
        self.opened_versions(&refs, found)
    }

    fn opened_versions(
        &self,
        keys: &[&[u8]],
        found: Vec<Option<Value>>,
    ) -> Result<Vec<Option<u64>>> {
        keys.iter()
            .zip(found)
            .map(|(k, v)| Ok(self.open_value(k, v)?.map(|v| decode_version(&v))))
            .collect()
    }

    /// The current versions of `tags` (creating the missing ones): what an entry written now
    /// is stamped with. Read it before computing a value, store with [`Cache::set_stamped`].
    ///
    /// One `get_many`; for tags never seen, one `add` each and one more `get_many` when
    /// another writer created them first. Tags are checked as [`Cache::set_tagged`] says.
    pub fn tag_stamp(&self, tags: &[&str]) -> Result<TagStamp> {
        ready(self.tag_stamp_via(Via::Blocking, tags))
    }

    /// [`Cache::tag_stamp`], awaitable.
    pub async fn tag_stamp_async(&self, tags: &[&str]) -> Result<TagStamp> {
        self.tag_stamp_via(self.via(), tags).await
    }

    async fn tag_stamp_via(&self, via: Via<'_>, tags: &[&str]) -> Result<TagStamp> {
        let tags = check_tags(tags)?;
        if tags.is_empty() {
            return Ok(TagStamp::default());
        }
        let keys: Vec<Vec<u8>> = tags.iter().map(|t| self.tag_key(t.as_bytes())).collect();
        let result = async {
            let mut versions = self.read_versions(via, &keys).await?;
            let mut lost = Vec::new();
            for (i, v) in versions.iter_mut().enumerate() {
                if v.is_none() {
                    let fresh = fresh_version();
                    let stored = self
                        .seal_value(&keys[i], &encode_version(fresh))
                        .into_owned();
                    let added = match via {
                        Via::Blocking => self.inner.backend.add(&keys[i], &stored, None),
                        Via::Awaited(backend) => backend.add(&keys[i], &stored, None).await,
                    };
                    if added? {
                        *v = Some(fresh);
                    } else {
                        lost.push(i);
                    }
                }
            }
            if !lost.is_empty() {
                let again: Vec<Vec<u8>> = lost.iter().map(|&i| keys[i].clone()).collect();
                for (i, v) in lost.into_iter().zip(self.read_versions(via, &again).await?) {
                    versions[i] = v;
                }
            }
            Ok(versions)
        }
        .await;
        // Failing open, an unreachable backend stamps unknown versions: the write that
        // follows fails open too, and anything stored reads as a miss.
        let versions = self.apply_fail_open(result, || vec![None; tags.len()])?;
        Ok(stamp(&tags, versions))
    }

    /// Makes every entry carrying any of `tags` a miss, in every process sharing the
    /// backend: one `set_many` of fresh versions, whatever the number of entries.
    ///
    /// Returns true when the write reached the backend; false only when the cache fails open
    /// and the backend was unreachable. Tags are checked as [`Cache::set_tagged`] says.
    ///
    /// ```
    /// use polycache::{Cache, Expiry};
    /// let cache = Cache::open("memory://").unwrap();
    /// cache.set_tagged("p42", b"page", Expiry::Default, &["product:42"]).unwrap();
    /// cache.set("other", b"untagged", Expiry::Default).unwrap();
    /// cache.invalidate_tags(&["product:42"]).unwrap();
    /// assert_eq!(cache.get("p42").unwrap(), None);
    /// assert!(cache.get("other").unwrap().is_some());
    /// ```
    pub fn invalidate_tags(&self, tags: &[&str]) -> Result<bool> {
        ready(self.invalidate_via(Via::Blocking, tags))
    }

    /// [`Cache::invalidate_tags`], awaitable.
    pub async fn invalidate_tags_async(&self, tags: &[&str]) -> Result<bool> {
        self.invalidate_via(self.via(), tags).await
    }

    async fn invalidate_via(&self, via: Via<'_>, tags: &[&str]) -> Result<bool> {
        let (keys, values) = self.fresh_versions(tags)?;
        if keys.is_empty() {
            return Ok(true);
        }
        let pairs: Vec<(&[u8], &[u8])> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        let result = match via {
            Via::Blocking => self.inner.backend.set_many(&pairs, None),
            Via::Awaited(backend) => backend.set_many(&pairs, None).await,
        };
        self.answer_invalidate(result)
    }

    /// The version keys of `tags` and fresh, sealed versions for them.
    #[allow(clippy::type_complexity)]
    fn fresh_versions(&self, tags: &[&str]) -> Result<(Vec<Vec<u8>>, Vec<Vec<u8>>)> {
        let tags = check_tags(tags)?;
        let keys: Vec<Vec<u8>> = tags.iter().map(|t| self.tag_key(t.as_bytes())).collect();
        let values = keys
            .iter()
            .map(|k| {
                self.seal_value(k, &encode_version(fresh_version()))
                    .into_owned()
            })
            .collect();
        Ok((keys, values))
    }

    fn answer_invalidate(&self, result: Result<Vec<usize>>) -> Result<bool> {
        let result = result.and_then(|failed| {
            if failed.is_empty() {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::Backend,
                    format!("{} of the tags could not be invalidated", failed.len()),
                ))
            }
        });
        self.apply_fail_open(result.map(|()| true), || false)
    }

    /// Stores `value` under `key` carrying `tags`: [`Cache::invalidate_tags`] of any of them
    /// makes it a miss.
    ///
    /// The tags' versions are read now, at `set` time (one extra round trip, plus one `add`
    /// per tag never seen). A value computed from data that may change while it is computed
    /// should read them first: [`Cache::get_or_set_tagged`], [`Cache::get_or_set_with_tags`],
    /// or [`Cache::tag_stamp`] then [`Cache::set_stamped`].
    ///
    /// Tags must be non-empty, at most [`MAX_TAG_LEN`] bytes, at most [`MAX_TAGS`] per
    /// entry; else an [`ErrorKind::InvalidKey`] error and nothing is stored. No tags: a
    /// plain `set`. A tagged entry is not a counter (`incr` fails on it).
    pub fn set_tagged<'k>(
        &self,
        key: impl Into<Key<'k>>,
        value: &[u8],
        expiry: Expiry,
        tags: &[&str],
    ) -> Result<bool> {
        let key = key.into();
        self.with_key(key, |_| Ok(()))?;
        self.check_value(value)?;
        let stamp = self.tag_stamp(tags)?;
        self.set_stamped(key, value, expiry, &stamp)
    }

    /// [`Cache::set_tagged`], awaitable.
    pub async fn set_tagged_async<'k>(
        &self,
        key: impl Into<Key<'k>>,
        value: &[u8],
        expiry: Expiry,
        tags: &[&str],
    ) -> Result<bool> {
        let key = key.into();
        self.with_key(key, |_| Ok(()))?;
        self.check_value(value)?;
        let stamp = self.tag_stamp_async(tags).await?;
        self.set_stamped_async(key, value, expiry, &stamp).await
    }

    /// Stores `value` under `key` with the tag versions of `stamp` (see [`TagStamp`]).
    pub fn set_stamped<'k>(
        &self,
        key: impl Into<Key<'k>>,
        value: &[u8],
        expiry: Expiry,
        stamp: &TagStamp,
    ) -> Result<bool> {
        self.set(key, &stamp.wrap(value), expiry)
    }

    /// [`Cache::set_stamped`], awaitable.
    pub async fn set_stamped_async<'k>(
        &self,
        key: impl Into<Key<'k>>,
        value: &[u8],
        expiry: Expiry,
        stamp: &TagStamp,
    ) -> Result<bool> {
        self.set_async(key, &stamp.wrap(value), expiry).await
    }

    /// [`Cache::set_many`] with every entry carrying `tags` (read once, at `set` time).
    pub fn set_many_tagged(
        &self,
        items: &[(&str, &[u8])],
        expiry: Expiry,
        version: Option<i64>,
        tags: &[&str],
    ) -> Result<Vec<usize>> {
        self.set_many_keys_tagged(&Self::keyed_items(items, version), expiry, tags)
    }

    /// [`Cache::set_many_tagged`], awaitable.
    pub async fn set_many_tagged_async(
        &self,
        items: &[(&str, &[u8])],
        expiry: Expiry,
        version: Option<i64>,
        tags: &[&str],
    ) -> Result<Vec<usize>> {
        self.set_many_keys_tagged_async(&Self::keyed_items(items, version), expiry, tags)
            .await
    }

    fn keyed_items<'a>(
        items: &[(&'a str, &'a [u8])],
        version: Option<i64>,
    ) -> Vec<(Key<'a>, &'a [u8])> {
        items
            .iter()
            .map(|(k, v)| (Key::new(k).maybe_version(version), *v))
            .collect()
    }

    /// [`Cache::set_many_tagged`] of keys that each carry their own version, or are full
    /// keys ([`Key::full`]).
    pub fn set_many_keys_tagged(
        &self,
        items: &[(Key<'_>, &[u8])],
        expiry: Expiry,
        tags: &[&str],
    ) -> Result<Vec<usize>> {
        let stamp = self.tag_stamp(tags)?;
        let wrapped = Self::stamped_items(items, &stamp);
        self.set_many_keys(&Self::item_refs(&wrapped), expiry)
    }

    /// [`Cache::set_many_keys_tagged`], awaitable.
    pub async fn set_many_keys_tagged_async(
        &self,
        items: &[(Key<'_>, &[u8])],
        expiry: Expiry,
        tags: &[&str],
    ) -> Result<Vec<usize>> {
        let stamp = self.tag_stamp_async(tags).await?;
        let wrapped = Self::stamped_items(items, &stamp);
        self.set_many_keys_async(&Self::item_refs(&wrapped), expiry)
            .await
    }

    fn stamped_items<'a>(
        items: &[(Key<'a>, &'a [u8])],
        stamp: &TagStamp,
    ) -> Vec<(Key<'a>, Cow<'a, [u8]>)> {
        items.iter().map(|(k, v)| (*k, stamp.wrap(v))).collect()
    }

    fn item_refs<'a>(items: &'a [(Key<'a>, Cow<'a, [u8]>)]) -> Vec<(Key<'a>, &'a [u8])> {
        items.iter().map(|(k, v)| (*k, &**v)).collect()
    }

    /// Stores `value` under `key` only if absent, with the tag versions of `stamp`; true
    /// when it stored. An invalidated tagged entry is absent to `add`, as to `get`: `add`
    /// stores over it.
    pub fn add_stamped<'k>(
        &self,
        key: impl Into<Key<'k>>,
        value: &[u8],
        expiry: Expiry,
        stamp: &TagStamp,
    ) -> Result<bool> {
        self.add(key, &stamp.wrap(value), expiry)
    }

    /// [`Cache::add_stamped`], awaitable.
    pub async fn add_stamped_async<'k>(
        &self,
        key: impl Into<Key<'k>>,
        value: &[u8],
        expiry: Expiry,
        stamp: &TagStamp,
    ) -> Result<bool> {
        self.add_async(key, &stamp.wrap(value), expiry).await
    }

    /// [`Cache::get_or_set`] whose stored value carries `tags`, their versions read before
    /// `compute` runs: a value computed while one of them is invalidated reads as a miss.
    pub fn get_or_set_tagged<'k, F>(
        &self,
        key: impl Into<Key<'k>>,
        compute: F,
        expiry: Expiry,
        tags: &[&str],
    ) -> Result<Value>
    where
        F: FnOnce() -> Result<Vec<u8>>,
    {
        let key = key.into();
        check_tags(tags)?;
        if let Some(v) = self.get_tagged(key, tags)? {
            return Ok(v);
        }
        let stamp = self.tag_stamp(tags)?;
        let value = compute()?;
        let stored = stamp.wrap(&value);
        if self.add(key, &stored, expiry)? {
            return Ok(Value::from(value));
        }
        // Another writer stored first, or the entry there is an invalidated one (present
        // to `add`, a miss to `get`): then this value replaces it.
        match self.get(key)? {
            Some(v) => Ok(v),
            None => {
                self.set(key, &stored, expiry)?;
                Ok(Value::from(value))
            }
        }
    }

    /// [`Cache::get_or_set_tagged`], awaitable.
    pub async fn get_or_set_tagged_async<'k, F>(
        &self,
        key: impl Into<Key<'k>>,
        compute: F,
        expiry: Expiry,
        tags: &[&str],
    ) -> Result<Value>
    where
        F: std::future::Future<Output = Result<Vec<u8>>>,
    {
        let key = key.into();
        check_tags(tags)?;
        if let Some(v) = self.get_tagged_async(key, tags).await? {
            return Ok(v);
        }
        let stamp = self.tag_stamp_async(tags).await?;
        let value = compute.await?;
        let stored = stamp.wrap(&value);
        if self.add_async(key, &stored, expiry).await? {
            return Ok(Value::from(value));
        }
        match self.get_async(key).await? {
            Some(v) => Ok(v),
            None => {
                self.set_async(key, &stored, expiry).await?;
                Ok(Value::from(value))
            }
        }
    }

    /// What a read answers for an opened stored value: the value, or for a tagged entry its
    /// payload when every tag still has the version it carries, else `None` (a miss).
    #[inline]
    pub(crate) fn check_tags(&self, value: Option<Value>) -> Result<Option<Value>> {
        match value {
            Some(v) if is_tagged(&v) => self.verify_tagged(v),
            other => Ok(other),
        }
    }

    /// [`Cache::check_tags`] of a value read under `full`, remembering its tags (see
    /// `hints.rs`) when it is tagged.
    #[inline]
    pub(crate) fn check_tags_at(&self, full: &[u8], value: Option<Value>) -> Result<Option<Value>> {
        match value {
            Some(v) if is_tagged(&v) => {
                self.learn(full, Some(&v));
                self.verify_tagged(v)
            }
            other => Ok(other),
        }
    }

    /// [`Cache::check_tags_at`], awaitable.
    pub(crate) async fn check_tags_at_async(
        &self,
        full: &[u8],
        value: Option<Value>,
    ) -> Result<Option<Value>> {
        if let Some(v) = value.as_deref().filter(|v| is_tagged(v)) {
            self.learn(full, Some(v));
        }
        self.check_tags_async(value).await
    }

    #[cold]
    fn verify_tagged(&self, v: Value) -> Result<Option<Value>> {
        ready(self.verify_via(Via::Blocking, v))
    }

    /// [`Cache::check_tags`], awaitable.
    pub(crate) async fn check_tags_async(&self, value: Option<Value>) -> Result<Option<Value>> {
        match value {
            Some(v) if is_tagged(&v) => self.verify_via(self.via(), v).await,
            other => Ok(other),
        }
    }

    /// The payload of a tagged value when its tags' versions, read through `via`, are the
    /// ones it carries.
    async fn verify_via(&self, via: Via<'_>, v: Value) -> Result<Option<Value>> {
        let keys = match parse(&v) {
            Parsed::Plain => return Ok(Some(v)),
            Parsed::Corrupt => return Ok(None),
            Parsed::Tagged(pairs, _) => self.keys_of(&pairs),
        };
        let versions = self.read_versions(via, &keys).await?;
        Ok(current(v, &versions))
    }

    fn keys_of(&self, pairs: &[(&[u8], u64)]) -> Vec<Vec<u8>> {
        pairs.iter().map(|(t, _)| self.tag_key(t)).collect()
    }

    /// [`Cache::check_tags_many`] of values read under `full`, remembering the tags of the
    /// tagged ones (see `hints.rs`).
    pub(crate) fn check_tags_many_at(
        &self,
        full: &[&[u8]],
        values: Vec<Option<Value>>,
    ) -> Result<Vec<Option<Value>>> {
        self.learn_tagged(full, &values);
        self.check_tags_many(values)
    }

    /// [`Cache::check_tags_many_at`], awaitable.
    pub(crate) async fn check_tags_many_at_async(
        &self,
        full: &[&[u8]],
        values: Vec<Option<Value>>,
    ) -> Result<Vec<Option<Value>>> {
        self.learn_tagged(full, &values);
        self.check_tags_many_async(values).await
    }

    fn learn_tagged(&self, full: &[&[u8]], values: &[Option<Value>]) {
        if self.inner.hints.is_none() {
            return;
        }
        for (k, v) in full.iter().zip(values) {
            if let Some(v) = v.as_deref().filter(|v| is_tagged(v)) {
                self.learn(k, Some(v));
            }
        }
    }

    /// [`Cache::check_tags`] of many values: one `get_many` for the tags of all of them.
    pub(crate) fn check_tags_many(&self, values: Vec<Option<Value>>) -> Result<Vec<Option<Value>>> {
        ready(self.check_many_via(Via::Blocking, values))
    }

    /// [`Cache::check_tags_many`], awaitable.
    pub(crate) async fn check_tags_many_async(
        &self,
        values: Vec<Option<Value>>,
    ) -> Result<Vec<Option<Value>>> {
        self.check_many_via(self.via(), values).await
    }

    async fn check_many_via(
        &self,
        via: Via<'_>,
        values: Vec<Option<Value>>,
    ) -> Result<Vec<Option<Value>>> {
        let Some(keys) = self.tags_of_many(&values) else {
            return Ok(values);
        };
        let versions = self.read_versions(via, &keys).await?;
        Ok(current_many(values, &keys, &versions, self))
    }

    /// The distinct tag keys of the tagged values among `values`; `None` when none is tagged.
    fn tags_of_many(&self, values: &[Option<Value>]) -> Option<Vec<Vec<u8>>> {
        if !values.iter().flatten().any(|v| is_tagged(v)) {
            return None;
        }
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for v in values.iter().flatten() {
            if let Parsed::Tagged(pairs, _) = parse(v) {
                for k in self.keys_of(&pairs) {
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
        }
        Some(keys)
    }
}

/// Where a tag step sends its backend calls: the blocking backend, or the async side. One
/// `async fn` of each step serves both twins; the sync twin runs it with [`ready`].
#[derive(Clone, Copy)]
pub(crate) enum Via<'a> {
    Blocking,
    Awaited(&'a dyn AsyncBackend),
}

/// The output of a step run [`Via::Blocking`]: it awaits nothing that can wait, so it is
/// complete on its first poll (a step that were not would be a bug, answered as an error).
pub(crate) fn ready<T>(step: impl Future<Output = Result<T>>) -> Result<T> {
    // A waker that is never woken and owns nothing: no allocation per step (nor a static
    // one, which leak checkers would report).
    const VTABLE: RawWakerVTable = RawWakerVTable::new(|_| RAW, |_| {}, |_| {}, |_| {});
    const RAW: RawWaker = RawWaker::new(std::ptr::null(), &VTABLE);
    // SAFETY: every function of the vtable ignores the data pointer, which is null and
    // never read; cloning gives the same waker, and waking or dropping does nothing.
    let waker = unsafe { Waker::from_raw(RAW) };
    match pin!(step).poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(out) => out,
        Poll::Pending => Err(Error::new(
            ErrorKind::Backend,
            "a blocking tag step did not complete in place",
        )),
    }
}

fn stamp(tags: &[&str], versions: Vec<Option<u64>>) -> TagStamp {
    TagStamp {
        pairs: tags
            .iter()
            .zip(versions)
            // A version that could not be read or created stamps 0, which never matches:
            // the entry reads as a miss, the safe direction.
            .map(|(t, v)| ((*t).to_owned(), v.unwrap_or(0)))
            .collect(),
    }
}

/// The payload of `v` when `versions` (of its tags, in order) match the ones it carries.
fn current(v: Value, versions: &[Option<u64>]) -> Option<Value> {
    let Parsed::Tagged(pairs, offset) = parse(&v) else {
        return None;
    };
    let fresh = pairs
        .iter()
        .zip(versions)
        .all(|((_, carried), now)| *now == Some(*carried) && *carried != 0);
    fresh.then(|| v.skip(offset))
}

fn current_many(
    values: Vec<Option<Value>>,
    keys: &[Vec<u8>],
    versions: &[Option<u64>],
    cache: &Cache,
) -> Vec<Option<Value>> {
    let by_key: HashMap<&[u8], Option<u64>> = keys
        .iter()
        .map(Vec::as_slice)
        .zip(versions.iter().copied())
        .collect();
    values
        .into_iter()
        .map(|v| {
            let v = v?;
            if !is_tagged(&v) {
                return Some(v);
            }
            let Parsed::Tagged(pairs, _) = parse(&v) else {
                return None;
            };
            let now: Vec<Option<u64>> = pairs
                .iter()
                .map(|(t, _)| by_key.get(cache.tag_key(t).as_slice()).copied().flatten())
                .collect();
            current(v, &now)
        })
        .collect()
}

/// The tag header parser on arbitrary stored bytes (fuzzed with the envelope, see
/// `crate::fuzzing::envelope`): it never panics, its payload offset lies inside the bytes,
/// and a header whose tags are text re-encodes to the very same bytes.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_tag_header(data: &[u8]) {
    match parse(data) {
        Parsed::Plain => assert!(!is_tagged(data)),
        Parsed::Corrupt => assert!(is_tagged(data)),
        Parsed::Tagged(pairs, offset) => {
            assert!(offset <= data.len());
            let text: Option<Vec<(String, u64)>> = pairs
                .iter()
                .map(|(t, v)| std::str::from_utf8(t).ok().map(|t| (t.to_owned(), *v)))
                .collect();
            if let Some(pairs) = text {
                assert_eq!(TagStamp { pairs }.wrap(&data[offset..]), data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_are_corrupt() {
        let stamp = TagStamp {
            pairs: vec![("a".into(), 7), ("bc".into(), 9)],
        };
        let bytes = stamp.wrap(b"payload").into_owned();
        let Parsed::Tagged(pairs, offset) = parse(&bytes) else {
            panic!("not parsed as tagged");
        };
        assert_eq!(pairs, vec![(&b"a"[..], 7), (&b"bc"[..], 9)]);
        assert_eq!(&bytes[offset..], b"payload");
        assert!(matches!(parse(b"plain"), Parsed::Plain));
        for cut in TAG_MAGIC.len()..offset {
            assert!(matches!(parse(&bytes[..cut]), Parsed::Corrupt), "cut {cut}");
        }
        assert_eq!(TagStamp::default().wrap(b"x"), Cow::Borrowed(&b"x"[..]));
    }

    #[test]
    fn bad_tags_are_invalid_keys() {
        let long = "t".repeat(MAX_TAG_LEN + 1);
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| i.to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        for bad in [&[""][..], &[long.as_str()][..], &many[..]] {
            assert_eq!(check_tags(bad).unwrap_err().kind(), ErrorKind::InvalidKey);
        }
        assert_eq!(check_tags(&["a", "b", "a"]).unwrap(), vec!["a", "b"]);
    }
}
