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

/// A full key as the two parts it is made of, not joined: a head (the cache's
/// `{key_prefix}:{version}:`, or nothing for a key that is full already) and a name.
///
/// A [`Cache`] hands a read to its backend as parts ([`crate::Backend::get_parts`]); a
/// backend that stores full keys elsewhere joins them ([`KeyParts::joined`]), which the
/// trait's default does.
///
/// ```
/// use polycache::backend::KeyParts;
/// let key = KeyParts::new(b"app:1:", b"user:42");
/// assert_eq!(key.len(), 13);
/// assert_eq!(key.joined(|full| full.to_vec()), b"app:1:user:42");
/// assert_eq!(KeyParts::whole(b"app:1:user:42").joined(|full| full.len()), 13);
/// ```
///
/// `memory://`'s store hashes and compares it as the joined bytes without building them:
/// a key joined on the stack and read back at once, by the hash and by the compare, makes
/// the processor wait for the copy's stores to reach the cache (a read that spans two of
/// them cannot be forwarded from either), which cost a hit more time than any other part of
/// the cache (docs/backends/memory.md). Everything else joins it ([`KeyParts::joined`]), on
/// the stack when it fits.
#[derive(Clone, Copy)]
pub struct KeyParts<'a> {
    head: &'a [u8],
    /// `head` zero-padded to [`HEAD_CHUNK`] bytes, when it fits.
    chunk: Option<&'a [u8; HEAD_CHUNK]>,
    name: &'a [u8],
}

impl<'a> KeyParts<'a> {
    /// The key `head` followed by `name`.
    #[inline]
    pub fn new(head: &'a [u8], name: &'a [u8]) -> KeyParts<'a> {
        KeyParts {
            head,
            chunk: None,
            name,
        }
    }

    /// A key that is full already: no head.
    #[inline]
    pub fn whole(full: &'a [u8]) -> KeyParts<'a> {
        KeyParts::new(&[], full)
    }

    /// The head: the cache's `{key_prefix}:{version}:`, or nothing.
    pub fn head(&self) -> &'a [u8] {
        self.head
    }

    /// The name that follows the head.
    pub fn name(&self) -> &'a [u8] {
        self.name
    }

    /// The joined key's length.
    #[inline]
    pub fn len(&self) -> usize {
        self.head.len() + self.name.len()
    }

    /// Whether the joined key is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with the joined key: the name itself when there is no head, else built on
    /// the stack (on the heap past 128 bytes).
    #[inline]
    pub fn joined<R>(self, f: impl FnOnce(&[u8]) -> R) -> R {
        let (head, name) = (self.head, self.name);
        if head.is_empty() {
            return f(name);
        }
        let total = head.len() + name.len();
        if total > STACK_KEY {
            return f(&[head, name].concat());
        }
        let mut stack = [MaybeUninit::<u8>::uninit(); STACK_KEY];
        // SAFETY: `total <= STACK_KEY`, so both copies stay inside `stack`, and so does the
        // fixed-size head chunk (`HEAD_CHUNK <= STACK_KEY`), whose bytes past the head the
        // name copy then overwrites; the sources cannot overlap the fresh stack array; the
        // first `total` bytes are initialised before the slice over them is formed.
        unsafe {
            let dst = stack.as_mut_ptr().cast::<u8>();
            match self.chunk {
                // A fixed-size copy is two vector moves, not a call to memcpy.
                Some(chunk) => dst.cast::<[u8; HEAD_CHUNK]>().write_unaligned(*chunk),
                None => std::ptr::copy_nonoverlapping(head.as_ptr(), dst, head.len()),
            }
            copy_name(name, dst.add(head.len()));
            f(std::slice::from_raw_parts(dst, total))
        }
    }

    /// The 8 bytes of the joined key at `offset`, little-endian, zero past its end.
    ///
    /// Read from the parts where they lie: a word across the head's end is the head's bytes
    /// and the name's first ones, joined in a register.
    #[inline(always)]
    pub(crate) fn word(&self, offset: usize) -> u64 {
        let h = self.head.len();
        if offset >= h {
            return load_le(self.name, offset - h);
        }
        let head = match self.chunk {
            // Zero past the head, so the name's bytes can be or-ed in.
            Some(chunk) if offset + 8 <= HEAD_CHUNK => {
                let mut word = [0; 8];
                word.copy_from_slice(&chunk[offset..offset + 8]);
                u64::from_le_bytes(word)
            }
            _ => load_le(self.head, offset),
        };
        if offset + 8 <= h {
            head
        } else {
            head | load_le(self.name, 0) << (8 * (h - offset))
        }
    }

    /// The joined key as one little-endian number, for a key of at most 16 bytes (zero
    /// past its end): the head's bytes and the name's, joined in registers.
    #[inline(always)]
    pub(crate) fn short(&self) -> u128 {
        debug_assert!(self.len() <= 16);
        let head = match self.chunk {
            Some(chunk) => {
                let mut first = [0; 16];
                first.copy_from_slice(&chunk[..16]);
                u128::from_le_bytes(first)
            }
            // No head (a full key), or one kept without a chunk.
            None => load16_le(self.head),
        };
        let name = load16_le(self.name);
        head | name.checked_shl(8 * self.head.len() as u32).unwrap_or(0)
    }

    /// Whether `stored` is the joined key; `short` is [`KeyParts::short`] when the key is
    /// at most 16 bytes long (and anything otherwise).
    #[inline(always)]
    pub(crate) fn matches(&self, stored: &[u8], short: u128) -> bool {
        let len = self.len();
        if stored.len() != len {
            return false;
        }
        if len <= 16 {
            return load16_le(stored) == short;
        }
        let (head, name) = stored.split_at(self.head.len());
        head == self.head && name == self.name
    }
}

/// The whole of `b` (at most 16 bytes) as one little-endian number; no byte outside `b` is
/// read.
#[inline(always)]
fn load16_le(b: &[u8]) -> u128 {
    let len = b.len();
    debug_assert!(len <= 16);
    if len > 8 {
        let low = load_le(b, 0);
        let high = load_le(b, len - 8) >> (8 * (16 - len));
        u128::from(low) | u128::from(high) << 64
    } else if len == 8 {
        u128::from(load_le(b, 0))
    } else {
        u128::from(small_le(b))
    }
}

/// The bytes of `b` from `offset`, up to 8 of them, little-endian, zero past `b`'s end;
/// no byte outside `b` is read.
#[inline(always)]
fn load_le(b: &[u8], offset: usize) -> u64 {
    let len = b.len();
    /// The 8 bytes of `b` at `at` (`at + 8 <= b.len()`).
    #[inline(always)]
    fn eight(b: &[u8], at: usize) -> u64 {
        let mut word = [0; 8];
        word.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(word)
    }
    if offset >= len {
        return 0;
    }
    if offset + 8 <= len {
        return eight(b, offset);
    }
    if len >= 8 {
        // The last 8 bytes, those before `offset` shifted out.
        return eight(b, len - 8) >> (8 * (offset + 8 - len));
    }
    small_le(b) >> (8 * offset)
}

/// The whole of `b` (at most 7 bytes), little-endian: two overlapping reads, or three single
/// bytes, or-ed (where they overlap they hold the same bytes).
#[inline(always)]
fn small_le(b: &[u8]) -> u64 {
    let len = b.len();
    match len {
        4..=7 => {
            let first = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let last = u32::from_le_bytes([b[len - 4], b[len - 3], b[len - 2], b[len - 1]]);
            u64::from(first) | u64::from(last) << (8 * (len - 4))
        }
        1..=3 => {
            u64::from(b[0])
                | u64::from(b[len / 2]) << (8 * (len / 2))
                | u64::from(b[len - 1]) << (8 * (len - 1))
        }
        _ => 0,
    }
}

impl Cache {
    /// Calls `f` with the full key `{key_prefix}:{version}:{key}`, built on the stack.
    ///
    /// `f` has one call site, so it is inlined into each operation: the key is built in one
    /// of three places (the caller's full key, the stack, the heap) and then used once.
    #[inline]
    pub(super) fn with_key<R>(
        &self,
        key: Key<'_>,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        self.with_key_parts(key, |parts| parts.joined(f))
    }

    /// Calls `f` with the full key `{key_prefix}:{version}:{key}` as its parts, unjoined
    /// (a version other than the cache's is joined on the heap, as its head is not kept).
    #[inline]
    pub(super) fn with_key_parts<R>(
        &self,
        key: Key<'_>,
        f: impl FnOnce(KeyParts<'_>) -> Result<R>,
    ) -> Result<R> {
        let name = key.name.as_bytes();
        if name.len() > MAX_KEY_LEN {
            return Err(key_too_long(name.len()));
        }
        match key.version {
            _ if key.full => f(KeyParts::whole(name)),
            Some(v) if v != self.inner.version => {
                let heap = format!("{}:{v}:{}", self.inner.key_prefix, key.name).into_bytes();
                f(KeyParts::whole(&heap))
            }
            _ => f(KeyParts {
                head: &self.inner.head,
                chunk: self.inner.head_chunk.as_ref(),
                name,
            }),
        }
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
                // Read by its parts, unjoined, as by the joined key.
                assert_eq!(cache.get(name).unwrap().as_deref(), Some(&b"v"[..]));
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

    #[test]
    fn parts_read_as_the_joined_key_at_every_split() {
        let bytes: Vec<u8> = (0..70u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(1))
            .collect();
        for len in 0..bytes.len() {
            let joined = &bytes[..len];
            for at in 0..=len {
                let (head, name) = joined.split_at(at);
                let mut padded = [0; HEAD_CHUNK];
                let chunk = (head.len() <= HEAD_CHUNK).then(|| {
                    padded[..head.len()].copy_from_slice(head);
                    &padded
                });
                for chunk in [chunk, None] {
                    let parts = KeyParts { head, chunk, name };
                    assert_eq!(parts.len(), len);
                    for offset in (0..len + 16).step_by(8) {
                        assert_eq!(
                            parts.word(offset),
                            load_le(joined, offset),
                            "{len} {at} {offset}"
                        );
                    }
                    let short = if len <= 16 {
                        assert_eq!(parts.short(), load16_le(joined), "{len} {at}");
                        parts.short()
                    } else {
                        0
                    };
                    assert!(parts.matches(joined, short));
                    parts.joined(|j| assert_eq!(j, joined));
                    // A stored key one byte off, or one byte longer, is another key.
                    if len > 0 {
                        let mut other = joined.to_vec();
                        other[len - 1] ^= 1;
                        assert!(!parts.matches(&other, short), "{len} {at}");
                    }
                    assert!(!parts.matches(&bytes[..len + 1], short));
                }
            }
        }
        // Bytes past the end read as zero, whatever the slice is cut from.
        assert_eq!(
            load_le(&bytes[..3], 0),
            u64::from_le_bytes([1, 38, 75, 0, 0, 0, 0, 0])
        );
        assert_eq!(load16_le(&[]), 0);
    }
}
