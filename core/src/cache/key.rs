//! Keys: [`Key`] as a caller passes it, and the full key `{key_prefix}:{version}:{key}`
//! built from it, on the stack when it fits.

use super::{Cache, MAX_KEY_LEN};
use crate::error::{Error, ErrorKind, Result};
use std::mem::MaybeUninit;

/// A key as an operation receives it: the caller's key and, optionally, a version that
/// overrides the cache's own for this one call.
///
/// Every operation takes `impl Into<Key>`, so a plain `&str` works:
///
/// ```
/// use polycache::{Cache, Key};
/// let cache = Cache::open("memory://").unwrap();
/// cache.set("k", b"v1", Default::default()).unwrap();
/// cache.set(Key::new("k").version(2), b"v2", Default::default()).unwrap();
/// assert_eq!(cache.get("k").unwrap().unwrap(), *b"v1".as_slice());
/// assert_eq!(cache.get(Key::new("k").version(2)).unwrap().unwrap(), *b"v2".as_slice());
/// // A full key made by the caller (a custom key function): stored as it is.
/// cache.set(Key::full("my-own:key"), b"v3", Default::default()).unwrap();
/// assert_eq!(cache.make_key(Key::full("my-own:key")).unwrap(), b"my-own:key");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'a> {
    name: &'a str,
    version: Option<i64>,
    /// `name` is the full key already: no prefix or version goes in front of it.
    full: bool,
}

impl<'a> Key<'a> {
    /// The key `name` at the cache's version.
    #[inline]
    pub fn new(name: &'a str) -> Self {
        Key {
            name,
            version: None,
            full: false,
        }
    }
    /// A full key the caller made itself (say with Django's `KEY_FUNCTION`), stored as it
    /// is: the cache's prefix and version are not added, and a version set on it is ignored.
    /// Everything else of the cache applies: statistics, value size limit, fail-open.
    #[inline]
    pub fn full(key: &'a str) -> Self {
        Key {
            name: key,
            version: None,
            full: true,
        }
    }
    /// The same key at `version`.
    #[inline]
    pub fn version(mut self, version: i64) -> Self {
        self.version = Some(version);
        self
    }
    /// The same key at `version`, or at the cache's version for `None`.
    #[inline]
    pub fn maybe_version(mut self, version: Option<i64>) -> Self {
        self.version = version;
        self
    }
    /// The caller's key.
    pub fn name(&self) -> &'a str {
        self.name
    }
}

impl<'a> From<&'a str> for Key<'a> {
    #[inline]
    fn from(name: &'a str) -> Self {
        Key::new(name)
    }
}

impl<'a> From<&'a String> for Key<'a> {
    #[inline]
    fn from(name: &'a String) -> Self {
        Key::new(name)
    }
}

/// Full keys up to this many bytes are built on the stack.
pub(super) const STACK_KEY: usize = 128;

/// A key head (`{key_prefix}:{version}:`) up to this many bytes is kept zero-padded to this
/// size too, and copied as one fixed-size block when a key is built.
pub(super) const HEAD_CHUNK: usize = 32;
const _: () = assert!(HEAD_CHUNK <= STACK_KEY);

/// Copies `name` to `dst`: a name of 4 to 32 bytes (most keys) as two overlapping
/// fixed-size moves, in registers, instead of a call to `memcpy`.
///
/// # Safety
///
/// `dst` is valid for `name.len()` bytes of writes and does not overlap `name`.
#[inline(always)]
pub(crate) unsafe fn copy_name(name: &[u8], dst: *mut u8) {
    let (src, len) = (name.as_ptr(), name.len());
    // SAFETY: in every arm each read lies within `name` and each write within the `len` bytes
    // at `dst`, which the caller guarantees; unaligned moves need no alignment.
    unsafe {
        match len {
            16..=32 => {
                let a = src.cast::<u128>().read_unaligned();
                let b = src.add(len - 16).cast::<u128>().read_unaligned();
                dst.cast::<u128>().write_unaligned(a);
                dst.add(len - 16).cast::<u128>().write_unaligned(b);
            }
            8..=15 => {
                let a = src.cast::<u64>().read_unaligned();
                let b = src.add(len - 8).cast::<u64>().read_unaligned();
                dst.cast::<u64>().write_unaligned(a);
                dst.add(len - 8).cast::<u64>().write_unaligned(b);
            }
            4..=7 => {
                let a = src.cast::<u32>().read_unaligned();
                let b = src.add(len - 4).cast::<u32>().read_unaligned();
                dst.cast::<u32>().write_unaligned(a);
                dst.add(len - 4).cast::<u32>().write_unaligned(b);
            }
            _ => std::ptr::copy_nonoverlapping(src, dst, len),
        }
    }
}

#[cold]
pub(super) fn key_too_long(len: usize) -> Error {
    Error::new(
        ErrorKind::InvalidKey,
        format!("key of {len} bytes is longer than the {MAX_KEY_LEN} bytes allowed"),
    )
}

impl Cache {
    /// Calls `f` with the full key `{key_prefix}:{version}:{name}`, built on the stack.
    ///
    /// `f` has one call site, so it is inlined into each operation: the key is built in one
    /// of three places (the caller's full key, the stack, the heap) and then used once.
    #[inline]
    pub(super) fn with_key<R>(
        &self,
        key: Key<'_>,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        let name = key.name.as_bytes();
        if name.len() > MAX_KEY_LEN {
            return Err(key_too_long(name.len()));
        }
        let head = &self.inner.head;
        let mut stack = [MaybeUninit::<u8>::uninit(); STACK_KEY];
        let heap: Vec<u8>;
        let full: &[u8] = match key.version {
            _ if key.full => name,
            Some(v) if v != self.inner.version => {
                heap = format!("{}:{v}:{}", self.inner.key_prefix, key.name).into_bytes();
                &heap
            }
            _ if head.len() + name.len() <= STACK_KEY => {
                let total = head.len() + name.len();
                // SAFETY: `total <= STACK_KEY`, so both copies stay inside `stack`, and so
                // does the fixed-size head chunk (`HEAD_CHUNK <= STACK_KEY`), whose bytes past
                // the head the name copy then overwrites; the sources cannot overlap the fresh
                // stack array; the first `total` bytes are initialised before the slice over
                // them is formed.
                unsafe {
                    let dst = stack.as_mut_ptr().cast::<u8>();
                    match &self.inner.head_chunk {
                        // A fixed-size copy is two vector moves, not a call to memcpy.
                        Some(chunk) => dst.cast::<[u8; HEAD_CHUNK]>().write_unaligned(*chunk),
                        None => std::ptr::copy_nonoverlapping(head.as_ptr(), dst, head.len()),
                    }
                    copy_name(name, dst.add(head.len()));
                    std::slice::from_raw_parts(dst, total)
                }
            }
            _ => {
                let mut buf = Vec::with_capacity(head.len() + name.len());
                buf.extend_from_slice(head);
                buf.extend_from_slice(name);
                heap = buf;
                &heap
            }
        };
        f(full)
    }

    pub(super) fn push_key(&self, key: Key<'_>, out: &mut Vec<u8>) -> Result<()> {
        self.with_key(key, |k| {
            out.extend_from_slice(k);
            Ok(())
        })
    }

    /// The full key a caller's key maps to, as stored in the backend.
    pub fn make_key<'k>(&self, key: impl Into<Key<'k>>) -> Result<Vec<u8>> {
        self.with_key(key.into(), |k| Ok(k.to_vec()))
    }

    pub(super) fn full_keys(&self, keys: &[Key<'_>]) -> Result<(Vec<u8>, Vec<usize>)> {
        let mut bytes = Vec::with_capacity(
            keys.iter()
                .map(|k| k.name.len() + self.inner.head.len() + 4)
                .sum(),
        );
        let mut ends = Vec::with_capacity(keys.len());
        for k in keys {
            self.push_key(*k, &mut bytes)?;
            ends.push(bytes.len());
        }
        Ok((bytes, ends))
    }

    pub(super) fn versioned<'k>(keys: &[&'k str], version: Option<i64>) -> Vec<Key<'k>> {
        keys.iter()
            .map(|k| Key::new(k).maybe_version(version))
            .collect()
    }

    /// `set_many`'s items with their keys at `version` (`None`: the cache's).
    pub(super) fn versioned_items<'k, 'v>(
        items: &[(&'k str, &'v [u8])],
        version: Option<i64>,
    ) -> Vec<(Key<'k>, &'v [u8])> {
        items
            .iter()
            .map(|(k, v)| (Key::new(k).maybe_version(version), *v))
            .collect()
    }

    pub(super) fn split_keys<'b>(bytes: &'b [u8], ends: &[usize]) -> Vec<&'b [u8]> {
        let mut start = 0;
        ends.iter()
            .map(|&end| {
                let k = &bytes[start..end];
                start = end;
                k
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Expiry;

    #[test]
    fn full_keys_are_built_alike_on_every_path() {
        // Heads shorter and longer than HEAD_CHUNK, names that fit the stack buffer and
        // names that do not, the cache's own version and another one.
        for prefix in [
            "",
            "app",
            &"p".repeat(HEAD_CHUNK),
            &"q".repeat(HEAD_CHUNK + 9),
        ] {
            let cache = Cache::builder("memory://")
                .key_prefix(prefix)
                .version(7)
                .build()
                .unwrap();
            // Every length the name copy treats apart, and both ends of each.
            let lengths = [1, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33];
            let names: Vec<String> = lengths
                .iter()
                .map(|&n| (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect())
                .collect();
            for name in names.iter().map(String::as_str).chain([
                "",
                "k",
                &"n".repeat(STACK_KEY - 3),
                &"m".repeat(STACK_KEY + 5),
            ]) {
                let full = cache.make_key(name).unwrap();
                assert_eq!(full, format!("{prefix}:7:{name}").into_bytes());
                let other = cache.make_key(Key::new(name).version(8)).unwrap();
                assert_eq!(other, format!("{prefix}:8:{name}").into_bytes());
                cache.set(name, b"v", Expiry::Never).unwrap();
                assert_eq!(
                    cache
                        .get(Key::full(std::str::from_utf8(&full).unwrap()))
                        .unwrap()
                        .as_deref(),
                    Some(&b"v"[..])
                );
            }
        }
    }
}
