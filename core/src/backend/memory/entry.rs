//! One stored entry (key and value in one buffer, with its deadline), the keys and the
//! hash the stores index entries by, and the weigher and eviction counter quick_cache calls in each shard.

use crate::cache::KeyParts;
use crate::clock;
use crate::value::{EntryBuf, Value};
use quick_cache::{Lifecycle, Weighter};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the byte weigher adds to key and value bytes for one entry's bookkeeping, so that
/// `max_bytes` bounds real memory rather than payload alone: 64 measured (slot 32, links 8,
/// index ~10, the buffer's count and lengths 6, malloc's chunk header 8) plus 8, the mean of
/// malloc's rounding to 16 bytes (measured 64 to 80 as the payload grows; see the docs).
pub(super) const ENTRY_OVERHEAD: u64 = 72;

/// A stored key: boxed bytes (16 bytes inline, unlike `Vec`'s 24).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct StoreKey(pub(super) Box<[u8]>);

/// A borrowed key, so that lookups by `&[u8]` need no allocation and `entry` can own a copy.
#[derive(PartialEq, Eq, Hash)]
#[repr(transparent)]
pub(super) struct KeyRef([u8]);

impl KeyRef {
    #[inline]
    pub(super) fn new(bytes: &[u8]) -> &KeyRef {
        // SAFETY: KeyRef is a #[repr(transparent)] wrapper of [u8], so the layouts and the
        // pointer metadata (the length) are identical.
        unsafe { &*(bytes as *const [u8] as *const KeyRef) }
    }
}

impl std::borrow::Borrow<KeyRef> for StoreKey {
    #[inline]
    fn borrow(&self) -> &KeyRef {
        KeyRef::new(&self.0)
    }
}

impl ToOwned for KeyRef {
    type Owned = StoreKey;
    fn to_owned(&self) -> StoreKey {
        StoreKey(self.0.into())
    }
}

/// A stored entry: its key and value in one shared buffer, and its deadline (16 bytes).
///
/// One allocation per entry instead of two (key, value), behind a thin pointer: the default
/// store indexes entries by a hash of the key and checks the key kept here on every lookup.
#[derive(Clone)]
pub(super) struct Entry {
    /// The reference count, the two lengths, the key, the value.
    pub(super) bytes: EntryBuf,
    /// Deadline in nanoseconds of the monotonic clock; 0 = never expires.
    pub(super) expires_at: u64,
}

impl Entry {
    pub(super) fn new(key: &[u8], value: &[u8], expires_at: u64) -> Entry {
        Entry {
            bytes: EntryBuf::new(key, value),
            expires_at,
        }
    }

    #[inline]
    pub(super) fn live(&self) -> bool {
        self.expires_at == 0 || clock::before_deadline(self.expires_at)
    }

    #[inline]
    pub(super) fn key(&self) -> &[u8] {
        self.bytes.key()
    }

    #[inline]
    pub(super) fn value(&self) -> &[u8] {
        self.bytes.value()
    }

    /// The value as a [`Value`]: sharing the stored buffer (no copy), or a copy of a short
    /// one ([`Value::INLINE_MAX`]).
    #[inline]
    pub(super) fn shared_value(&self) -> Value {
        Value::of_entry(&self.bytes)
    }

    /// Makes this entry hold `key`, `value` and `expires_at`, unless the new entry would
    /// weigh more than this one (then nothing changes and the answer is false: the store
    /// must make room, which only its insert does).
    ///
    /// The value is rewritten in the entry's own buffer when no reader holds that buffer
    /// and the length is the same ([`EntryBuf::rewrite_value`]); otherwise a new buffer
    /// replaces it, and the old one goes into `replaced`, for the caller to drop (free)
    /// after it lets go of the store's lock. Another key that shares this one's hash is
    /// replaced, as if evicted.
    #[inline]
    pub(super) fn overwrite(
        &mut self,
        key: &[u8],
        value: &[u8],
        expires_at: u64,
        weighter: EntryWeighter,
        replaced: &mut Option<EntryBuf>,
    ) -> bool {
        if !(super::same_key(self.key(), key) && self.bytes.rewrite_value(value)) {
            let (key_len, value_len) = self.bytes.lens();
            if weighter.weigh(key.len(), value.len()) > weighter.weigh(key_len, value_len) {
                return false;
            }
            *replaced = Some(std::mem::replace(
                &mut self.bytes,
                EntryBuf::new(key, value),
            ));
        }
        self.expires_at = expires_at;
        true
    }

    /// This entry with `value` instead of its own (same key, same deadline).
    pub(super) fn with_value(&self, value: &[u8]) -> Entry {
        Entry::new(self.key(), value, self.expires_at)
    }
}

/// The default store's index: a 32-bit hash of the full key, computed once per call for
/// the shard and the probe. Two keys may share one (at 1M entries, about 116 such pairs):
/// every lookup compares the key kept in the [`Entry`], and a write of the one replaces the
/// other (which is then gone, as if evicted).
///
/// 32 bits, not 64, because quick_cache's slot keeps the key beside the entry and the
/// `unsync` shard's 16-byte placeholder: with a `u64` here the slot is 40 bytes, with a `u32`
/// 32 (see the docs' "Memory per entry").
pub(super) type KeyHash = u32;

/// A key as the default store looks it up: its parts, and for a key of at most 16 bytes
/// (most keys) the joined bytes as one number, which the hash and the compare of the
/// stored key both read.
#[derive(Clone, Copy)]
pub(super) struct Probe<'a> {
    pub(super) key: KeyParts<'a>,
    short: u128,
}

impl<'a> Probe<'a> {
    #[inline(always)]
    pub(super) fn new(key: KeyParts<'a>) -> Probe<'a> {
        let short = if key.len() <= 16 { key.short() } else { 0 };
        Probe { key, short }
    }

    /// Whether `stored` is this key.
    #[inline(always)]
    pub(super) fn matches(&self, stored: &[u8]) -> bool {
        self.key.matches(stored, self.short)
    }

    /// The default store's [`KeyHash`] of this key under the store's random `seed`.
    ///
    /// The joined key's 8-byte words (zero past its end) are folded 16 bytes at a time with
    /// a 128-bit multiply, as foldhash folds its input, after the length; the result is
    /// folded once more and its halves into 32 bits. A key passed as a head and a name
    /// hashes as their join does ([`KeyParts::word`]), so every path, joined or not, finds
    /// the same entry.
    #[inline(always)]
    pub(super) fn hash(&self, seed: u64) -> KeyHash {
        /// Digits of pi, the constants foldhash folds with.
        const K: [u64; 3] = [
            0x243f_6a88_85a3_08d3,
            0x1319_8a2e_0370_7344,
            0xa409_3822_299f_31d0,
        ];
        let len = self.key.len();
        let mut acc = seed ^ (len as u64).wrapping_mul(K[0]);
        if len <= 16 {
            let (low, high) = (self.short as u64, (self.short >> 64) as u64);
            acc = folded_multiply(low ^ acc, high ^ K[1]);
        } else {
            let mut offset = 0;
            while offset < len {
                let (low, high) = (self.key.word(offset), self.key.word(offset + 8));
                acc = folded_multiply(low ^ acc, high ^ K[1]);
                offset += 16;
            }
        }
        let hash = folded_multiply(acc, seed ^ K[2]);
        (hash ^ (hash >> 32)) as KeyHash
    }
}

/// The high and the low half of `a * b`'s 128 bits, xor-ed.
#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// The 64-bit hash quick_cache and the store work with, spread from a [`KeyHash`]: the
/// multiply by an odd constant keeps distinct indexes distinct and fills the high half, whose
/// middle bits choose the shard and whose top bits are the hash table's tags.
#[inline]
pub(super) fn spread(hash: KeyHash) -> u64 {
    u64::from(hash).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Hands a [`KeyHash`] to quick_cache as its [`spread`] (it is already a hash of the key).
#[derive(Clone, Copy, Default)]
pub(super) struct PassHash;

impl BuildHasher for PassHash {
    type Hasher = PassHasher;
    #[inline]
    fn build_hasher(&self) -> PassHasher {
        PassHasher(0)
    }
}

#[derive(Default)]
pub(super) struct PassHasher(u64);

impl Hasher for PassHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u32` is used (the index is a u32); fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.0 = spread(n);
    }
}

/// The deadline of an entry written now with `ttl`, in monotonic nanoseconds.
///
/// Taken on the coarse clock, which never runs ahead of real time: the entry expires at its
/// TTL or up to a few milliseconds before it, never after (reads near the deadline ask the
/// precise clock, see [`clock::before_deadline`]).
pub(super) fn deadline(ttl: Option<Duration>) -> u64 {
    match ttl {
        None => 0,
        Some(d) => {
            let ttl = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
            clock::coarse_now_ns().saturating_add(ttl).max(1)
        }
    }
}

#[derive(Clone, Copy)]
pub(super) struct EntryWeighter {
    pub(super) by_bytes: bool,
}

impl EntryWeighter {
    #[inline]
    pub(super) fn weigh(self, key_len: usize, value_len: usize) -> u64 {
        if self.by_bytes {
            key_len as u64 + value_len as u64 + ENTRY_OVERHEAD
        } else {
            1
        }
    }
}

impl Weighter<KeyHash, Entry> for EntryWeighter {
    #[inline]
    fn weight(&self, _hash: &KeyHash, val: &Entry) -> u64 {
        let (key_len, value_len) = val.bytes.lens();
        self.weigh(key_len, value_len)
    }
}

/// Counts evictions; quick_cache calls it under the shard lock.
#[derive(Clone, Default)]
pub(super) struct EvictionCounter(pub(super) Arc<AtomicU64>);

impl Lifecycle<KeyHash, Entry> for EvictionCounter {
    /// The hash a write stores under, when the request is one ([`super::MemoryBackend`]'s
    /// `set`): the entry it replaces there is overwritten, not evicted.
    type RequestState = Option<KeyHash>;

    #[inline]
    fn on_evict(&self, writing: &mut Option<KeyHash>, key: KeyHash, _val: Entry) {
        if *writing != Some(key) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}
