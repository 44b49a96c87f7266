//! One request for a plain read of a tagged entry on a remote backend: a per-cache *hint*,
//! a bounded map from a full key to the version keys of the tags its entry carried when this
//! process last wrote or read it.
//!
//! A `get` (or `get_many`) of a key with a hint asks the backend's `get_many` for the entry
//! and those version keys together: one `MGET` on Redis (per slot on Cluster), one multi-key
//! `get` per server on Memcached, one statement on SQL. The tags the entry really carries
//! decide, as always: a version the hint did not name costs the second read, as without a
//! hint, and the hint is corrected. A key without a hint is a plain `GET`; a cache that never
//! saw a tagged entry pays one atomic load per read. `memory://` and `dummy://` keep no hints
//! (their reads are lookups already).

use super::{parse, Parsed};
use crate::cache::Cache;
use crate::value::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// The most keys one cache keeps a hint for; past it, an arbitrary hint makes room.
pub(crate) const MAX_HINTS: usize = 10_000;

/// The version keys a key's entry carried, shared with the readers that use them.
pub(crate) type TagKeys = Arc<[Vec<u8>]>;

/// Versions read with a bulk read, by version key (`None`: missing or unreadable).
pub(crate) type ReadVersions = HashMap<Vec<u8>, Option<u64>>;

/// Keys of tagged entries and the version keys of their tags. `Send + Sync`.
#[derive(Default)]
pub(crate) struct TagHints {
    map: RwLock<HashMap<Box<[u8]>, TagKeys>>,
    /// `map.len()`, readable without the lock: a read with no hint at all costs one load.
    len: AtomicUsize,
}

impl TagHints {
    #[inline]
    fn get(&self, full: &[u8]) -> Option<TagKeys> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.map.read().ok()?.get(full).cloned()
    }

    fn put(&self, full: &[u8], keys: TagKeys) {
        // The common case, a read confirming what the hint said, takes only the read lock.
        if self.get(full).is_some_and(|k| k == keys) {
            return;
        }
        let Ok(mut map) = self.map.write() else {
            return;
        };
        if map.len() >= MAX_HINTS && !map.contains_key(full) {
            if let Some(any) = map.keys().next().cloned() {
                map.remove(&any);
            }
        }
        map.insert(full.into(), keys);
        self.len.store(map.len(), Ordering::Relaxed);
    }

    fn drop_hint(&self, full: &[u8]) {
        if self.get(full).is_none() {
            return;
        }
        if let Ok(mut map) = self.map.write() {
            if map.remove(full).is_some() {
                self.len.store(map.len(), Ordering::Relaxed);
            }
        }
    }

    /// How many keys have a hint.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

impl Cache {
    /// The version keys to read with `full`, when this cache keeps hints and has one for it.
    #[inline]
    pub(crate) fn hint(&self, full: &[u8]) -> Option<TagKeys> {
        self.inner.hints.as_ref()?.get(full)
    }

    /// Remembers what an opened value read or written under `full` says about its tags:
    /// the version keys of a tagged one, nothing for an untagged or missing one.
    pub(crate) fn learn(&self, full: &[u8], opened: Option<&[u8]>) {
        let Some(hints) = self.inner.hints.as_ref() else {
            return;
        };
        match opened.map(parse) {
            Some(Parsed::Tagged(pairs, _)) => {
                hints.put(full, self.keys_of(&pairs).into());
            }
            _ => hints.drop_hint(full),
        }
    }

    /// [`Cache::learn`] of a value this process stores, before sealing: only a tagged value
    /// is looked at (its first 8 bytes), so an untagged write to a key without a hint costs
    /// one load.
    #[inline]
    pub(crate) fn learn_written(&self, full: &[u8], value: &[u8]) {
        if let Some(hints) = self.inner.hints.as_ref() {
            if super::is_tagged(value) || hints.len() > 0 {
                self.learn(full, Some(value));
            }
        }
    }

    /// The keys of one bulk read for `full` (hinted by `tags`): the entry's, then the
    /// version keys.
    pub(crate) fn hinted_read_keys<'a>(full: &'a [u8], tags: &'a [Vec<u8>]) -> Vec<&'a [u8]> {
        let mut keys = Vec::with_capacity(tags.len() + 1);
        keys.push(full);
        keys.extend(tags.iter().map(Vec::as_slice));
        keys
    }

    /// The keys of one bulk read for many entries: the entries' keys, then the distinct
    /// version keys their hints name; `None` when no key has a hint.
    pub(crate) fn hinted_many_keys(&self, full: &[&[u8]]) -> Option<Vec<Vec<u8>>> {
        let hints = self.inner.hints.as_ref()?;
        if hints.len() == 0 {
            return None;
        }
        // Distinct version keys, in first-seen order (the reply is matched by position).
        let mut extra: Vec<Vec<u8>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for k in full {
            for t in hints.get(k).iter().flat_map(|t| t.iter()) {
                if seen.insert(t.clone()) {
                    extra.push(t.clone());
                }
            }
        }
        (!extra.is_empty()).then_some(extra)
    }

    /// Splits a hinted bulk read: the entries' values (opened) and the versions read with
    /// them, by version key.
    pub(crate) fn split_hinted(
        &self,
        full: &[&[u8]],
        extra: &[Vec<u8>],
        mut found: Vec<Option<Value>>,
    ) -> crate::Result<(Vec<Option<Value>>, ReadVersions)> {
        let versions = found.split_off(full.len());
        let refs: Vec<&[u8]> = extra.iter().map(Vec::as_slice).collect();
        let versions = self.opened_versions(&refs, versions)?;
        let read = extra.iter().cloned().zip(versions).collect();
        let values = full
            .iter()
            .zip(found)
            .map(|(k, v)| self.open_value(k, v))
            .collect::<crate::Result<Vec<_>>>()?;
        for (k, v) in full.iter().zip(&values) {
            self.learn(k, v.as_deref());
        }
        Ok((values, read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_bounded_and_corrected() {
        let hints = TagHints::default();
        let keys: TagKeys = vec![b"p:__tag__:a".to_vec()].into();
        for i in 0..MAX_HINTS + 10 {
            hints.put(format!("k{i}").as_bytes(), keys.clone());
        }
        assert_eq!(hints.len(), MAX_HINTS);
        let other: TagKeys = vec![b"p:__tag__:b".to_vec()].into();
        hints.put(b"fresh", other.clone());
        assert_eq!(hints.get(b"fresh"), Some(other));
        assert_eq!(hints.len(), MAX_HINTS);
        hints.drop_hint(b"fresh");
        assert_eq!(hints.get(b"fresh"), None);
        assert_eq!(hints.len(), MAX_HINTS - 1);
    }
}
