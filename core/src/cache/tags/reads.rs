//! Reads that know about tags beyond `get`: a read whose caller names the entry's tags
//! fetches the value and the tags' versions in one bulk request, and `has_key`, `ttl`,
//! `touch` and `add` treat an invalidated tagged entry as absent.
//!
//! **One request.** When the caller gives the tags at read time (`get_or_set_tagged`,
//! `get_or_set_with_tags`, the decorators, jobs), [`Cache::get_tagged`] asks the backend's
//! `get_many` for the entry and its tags' version keys together: one MGET on Redis (per slot
//! on Cluster, as every `get_many`), one multi-key `get` per server on Memcached, lookups on
//! `memory://`. An entry that carries a tag the caller did not name costs the second read,
//! as a plain `get` does.
//!
//! **Presence.** A tagged entry whose tags were invalidated stays stored until it expires or
//! is overwritten. `has_key`, `ttl` and `touch` see it as absent and `add` replaces it. They
//! look at a key with [`crate::Backend::get_marked`]: an untagged value (no tag, signature
//! or compression header) is answered without opening it or reading any version.

use super::{current, is_tagged, parse, ready, Cache, Key, Parsed, Via};
use crate::backend::{AsyncBackend, Marked};
use crate::codec::{COMPRESSED_MAGIC, SIGNED_MAGIC};
use crate::error::Result;
use crate::flight::{classify, Lookup, RefreshPolicy};
use crate::stats::Operation;
use crate::value::Value;
use std::collections::HashMap;

/// The headers under which a stored value may hide a tag header: the tag header itself,
/// and signing and compression (the tag header is inside them).
pub(super) const MARKS: [[u8; 8]; 3] = [super::TAG_MAGIC, SIGNED_MAGIC, COMPRESSED_MAGIC];

/// What a key holds, as `has_key`, `ttl`, `touch` and `add` see it.
pub(crate) enum Presence {
    /// Nothing.
    Absent,
    /// A value a `get` may answer (or one that cannot be opened: present, as before tags).
    Present,
    /// A tagged entry whose tags were invalidated: its stored bytes, as the backend holds them.
    Invalidated(Value),
}

impl Presence {
    pub(crate) fn is_present(&self) -> bool {
        matches!(self, Presence::Present)
    }
}

/// The answer of a bulk read of an entry with its tags' versions: final, or an entry whose
/// tags were not all read and must be checked the usual way.
enum Prefetched {
    Answer(Option<Value>),
    Check(Value),
}

impl Cache {
    /// The value under `key`, read in one request with the versions of `tags`, the tags the
    /// caller expects the entry to carry (as it stores it with them).
    ///
    /// Answers as [`Cache::get`] does, counted as a `get`. An entry that carries a tag not
    /// among `tags` costs a second read of its versions, as with [`Cache::get`]; an untagged
    /// entry costs only the version keys' bytes. No tags: a plain [`Cache::get`]. Tags are
    /// checked as [`Cache::set_tagged`] says.
    ///
    /// ```
    /// use polycache::{Cache, Expiry};
    /// let cache = Cache::open("memory://").unwrap();
    /// cache.set_tagged("p42", b"page", Expiry::Default, &["product:42"]).unwrap();
    /// assert_eq!(cache.get_tagged("p42", &["product:42"]).unwrap().as_deref(), Some(&b"page"[..]));
    /// cache.invalidate_tags(&["product:42"]).unwrap();
    /// assert_eq!(cache.get_tagged("p42", &["product:42"]).unwrap(), None);
    /// ```
    pub fn get_tagged<'k>(&self, key: impl Into<Key<'k>>, tags: &[&str]) -> Result<Option<Value>> {
        let tags = super::check_tags(tags)?;
        if tags.is_empty() {
            return self.get(key);
        }
        let start = self.inner.stats.start(Operation::Get);
        let found = self.with_key(key.into(), |k| {
            ready(self.read_tagged(Via::Blocking, k, &tags))
        });
        self.answer_get(start, found)
    }

    /// [`Cache::get_tagged`], awaitable.
    pub async fn get_tagged_async<'k>(
        &self,
        key: impl Into<Key<'k>>,
        tags: &[&str],
    ) -> Result<Option<Value>> {
        let Some(backend) = self.awaited() else {
            return self.get_tagged(key, tags);
        };
        let tags = super::check_tags(tags)?;
        if tags.is_empty() {
            return self.get_async(key).await;
        }
        let full = self.make_key(key)?;
        let start = self.inner.stats.start_anywhere(Operation::Get);
        let found = self.read_tagged(Via::Awaited(backend), &full, &tags).await;
        self.answer_get(start, found)
    }

    /// [`Cache::lookup`] of an entry stored with `tags`: the read is [`Cache::get_tagged`]'s
    /// one request.
    pub fn lookup_tagged<'k>(
        &self,
        key: impl Into<Key<'k>>,
        policy: &RefreshPolicy,
        tags: &[&str],
    ) -> Result<Lookup> {
        Ok(classify(self.get_tagged(key, tags)?, policy))
    }

    /// [`Cache::lookup_tagged`], awaitable.
    pub async fn lookup_tagged_async<'k>(
        &self,
        key: impl Into<Key<'k>>,
        policy: &RefreshPolicy,
        tags: &[&str],
    ) -> Result<Lookup> {
        Ok(classify(self.get_tagged_async(key, tags).await?, policy))
    }

    /// [`Cache::full_get`] with the versions of `tags` read in the same request.
    /// Tags that do not pass [`super::check_tags`] are left to the write that stores them
    /// (it reports them): this read is then a plain [`Cache::full_get`].
    pub(crate) fn full_get_tagged(&self, full: &[u8], tags: &[&str]) -> Result<Option<Value>> {
        let Ok(tags) = super::check_tags(tags) else {
            return self.full_get(full);
        };
        if tags.is_empty() {
            return self.full_get(full);
        }
        let tags = &tags[..];
        let found = ready(self.read_tagged(Via::Blocking, full, tags));
        self.apply_fail_open(found, || None)
    }

    /// [`Cache::full_get_tagged`], awaitable.
    pub(crate) async fn full_get_tagged_async(
        &self,
        full: &[u8],
        tags: &[&str],
    ) -> Result<Option<Value>> {
        let Some(backend) = self.awaited() else {
            return self.full_get_tagged(full, tags);
        };
        let Ok(tags) = super::check_tags(tags) else {
            return self.full_get_async(full).await;
        };
        if tags.is_empty() {
            return self.full_get_async(full).await;
        }
        let tags = &tags[..];
        let found = self.read_tagged(Via::Awaited(backend), full, tags).await;
        self.apply_fail_open(found, || None)
    }

    /// The full keys read by a tagged read of `full`: the entry's, then its tags' versions.
    fn tagged_read_keys(&self, full: &[u8], tags: &[&str]) -> Vec<Vec<u8>> {
        let mut keys = Vec::with_capacity(tags.len() + 1);
        keys.push(full.to_vec());
        keys.extend(tags.iter().map(|t| self.tag_key(t.as_bytes())));
        keys
    }

    /// The entry `full` and the versions of `tags`, in one request through `via`.
    async fn read_tagged(&self, via: Via<'_>, full: &[u8], tags: &[&str]) -> Result<Option<Value>> {
        let keys = self.tagged_read_keys(full, tags);
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        self.read_prefetched(via, &refs).await
    }

    /// A plain read of `full` whose entry is hinted to carry the tags whose version keys
    /// are `tags`: one bulk request (see `hints.rs`).
    pub(crate) async fn read_hinted(
        &self,
        via: Via<'_>,
        full: &[u8],
        tags: &[Vec<u8>],
    ) -> Result<Option<Value>> {
        self.read_prefetched(via, &Self::hinted_read_keys(full, tags))
            .await
    }

    /// The entry `keys[0]`, read in one request with the version keys `keys[1..]`.
    async fn read_prefetched(&self, via: Via<'_>, keys: &[&[u8]]) -> Result<Option<Value>> {
        let found = self.get_many_via(via, keys).await?;
        match self.prefetched(keys, found)? {
            Prefetched::Answer(v) => Ok(v),
            Prefetched::Check(v) => self.verify_via(via, v).await,
        }
    }

    /// [`Cache::get_many`]'s values for the full keys `full`, with the version keys `extra`
    /// (what [`Cache::hinted_many_keys`] names for them) read in the same request.
    pub(crate) async fn read_many_hinted(
        &self,
        via: Via<'_>,
        full: &[&[u8]],
        extra: &[Vec<u8>],
    ) -> Result<Vec<Option<Value>>> {
        let mut keys = full.to_vec();
        keys.extend(extra.iter().map(Vec::as_slice));
        let found = self.get_many_via(via, &keys).await?;
        let (mut values, unchecked) = self.prefetched_many(full, extra, found)?;
        let rest = unchecked.iter().map(|&i| values[i].take()).collect();
        let checked = self.check_many_via(via, rest).await?;
        for (i, v) in unchecked.into_iter().zip(checked) {
            values[i] = v;
        }
        Ok(values)
    }

    /// The answers of a hinted bulk read (`full`'s values, then the version keys `extra`):
    /// each value checked against the versions read with it, and the positions of the
    /// tagged values that carry a tag whose version was not read (still to check).
    fn prefetched_many(
        &self,
        full: &[&[u8]],
        extra: &[Vec<u8>],
        found: Vec<Option<Value>>,
    ) -> Result<(Vec<Option<Value>>, Vec<usize>)> {
        let (values, read) = self.split_hinted(full, extra, found)?;
        let mut unchecked = Vec::new();
        let values = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let v = v?;
                if !is_tagged(&v) {
                    return Some(v);
                }
                let now: Option<Vec<Option<u64>>> = match parse(&v) {
                    Parsed::Tagged(pairs, _) => pairs
                        .iter()
                        .map(|(t, _)| read.get(&self.tag_key(t)).copied())
                        .collect(),
                    _ => return None,
                };
                match now {
                    Some(now) => current(v, &now),
                    None => {
                        unchecked.push(i);
                        Some(v)
                    }
                }
            })
            .collect();
        Ok((values, unchecked))
    }

    /// The answer for an entry (`keys[0]`) read together with tag versions (`keys[1..]`).
    fn prefetched(&self, keys: &[&[u8]], found: Vec<Option<Value>>) -> Result<Prefetched> {
        let mut found = found.into_iter();
        let v = self.open_value(keys[0], found.next().flatten())?;
        self.learn(keys[0], v.as_deref());
        let Some(v) = v else {
            return Ok(Prefetched::Answer(None));
        };
        if !is_tagged(&v) {
            return Ok(Prefetched::Answer(Some(v)));
        }
        let versions = self.opened_versions(&keys[1..], found.collect())?;
        let read: HashMap<&[u8], Option<u64>> = keys[1..].iter().copied().zip(versions).collect();
        let now: Option<Vec<Option<u64>>> = match parse(&v) {
            Parsed::Tagged(pairs, _) => pairs
                .iter()
                .map(|(t, _)| read.get(self.tag_key(t).as_slice()).copied())
                .collect(),
            _ => return Ok(Prefetched::Answer(None)),
        };
        Ok(match now {
            Some(now) => Prefetched::Answer(current(v, &now)),
            None => Prefetched::Check(v),
        })
    }

    /// True when `full` holds a value a `get` may answer: `has_key`'s answer.
    #[inline]
    pub(crate) fn is_present(&self, full: &[u8]) -> Result<bool> {
        match self.inner.backend.get_marked(full, &MARKS)? {
            Marked::Missing => Ok(false),
            Marked::Value(stored) => Ok(self.presence_of_marked(full, stored)?.is_present()),
            _ => Ok(true),
        }
    }

    /// What a marked value found under `full` (`stored`, as the backend holds it) means.
    #[cold]
    pub(super) fn presence_of_marked(&self, full: &[u8], stored: Value) -> Result<Presence> {
        let Some(opened) = self.presence_opened(full, &stored) else {
            return Ok(Presence::Present);
        };
        Ok(presence_of(stored, self.check_tags(Some(opened))?))
    }

    /// What `full` holds for `has_key`, `ttl`, `touch` and `add`, through the backend's
    /// async side.
    pub(crate) async fn presence_async(
        &self,
        backend: &dyn AsyncBackend,
        full: &[u8],
    ) -> Result<Presence> {
        match Marked::of(backend.get(full).await?, &MARKS) {
            Marked::Value(stored) => {
                let Some(opened) = self.presence_opened(full, &stored) else {
                    return Ok(Presence::Present);
                };
                Ok(presence_of(
                    stored,
                    self.check_tags_async(Some(opened)).await?,
                ))
            }
            other => Ok(presence_unopened(&other)),
        }
    }

    /// The opened value of a marked entry when it is tagged; `None` when it is not tagged or
    /// cannot be opened (a bad signature, a broken frame): present, as it was before tags.
    fn presence_opened(&self, full: &[u8], stored: &Value) -> Option<Value> {
        self.open_value(full, Some(stored.clone()))
            .ok()
            .flatten()
            .filter(|v| is_tagged(v))
    }

    /// `add` of sealed bytes that replaces an invalidated tagged entry: the backend's `add`,
    /// and when it finds the key taken by such an entry, a delete of exactly those bytes
    /// (atomic where the backend makes it so) and one more `add`. A writer that stores a live
    /// value in between wins, as with any `add`.
    pub(crate) fn add_over_invalidated(
        &self,
        full: &[u8],
        sealed: &[u8],
        ttl: Option<std::time::Duration>,
    ) -> Result<bool> {
        let backend = &self.inner.backend;
        let taken = match backend.add_marked(full, sealed, ttl, &MARKS)? {
            None => return Ok(true),
            Some(Marked::Value(stored)) => stored,
            Some(_) => return Ok(false),
        };
        let Presence::Invalidated(stored) = self.presence_of_marked(full, taken)? else {
            return Ok(false);
        };
        backend.delete_if_equals(full, &stored)?;
        backend.add(full, sealed, ttl)
    }

    /// [`Cache::add_over_invalidated`], awaitable.
    pub(crate) async fn add_over_invalidated_async(
        &self,
        backend: &dyn AsyncBackend,
        full: &[u8],
        sealed: &[u8],
        ttl: Option<std::time::Duration>,
    ) -> Result<bool> {
        if backend.add(full, sealed, ttl).await? {
            return Ok(true);
        }
        let Presence::Invalidated(stored) = self.presence_async(backend, full).await? else {
            return Ok(false);
        };
        backend.delete_if_equals(full, &stored).await?;
        backend.add(full, sealed, ttl).await
    }
}

fn presence_unopened(marked: &Marked) -> Presence {
    match marked {
        Marked::Missing => Presence::Absent,
        _ => Presence::Present,
    }
}

fn presence_of(stored: Value, checked: Option<Value>) -> Presence {
    match checked {
        Some(_) => Presence::Present,
        None => Presence::Invalidated(stored),
    }
}
