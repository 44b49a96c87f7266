//! The default (CLOCK) store: our own shards, each a `quick_cache::unsync::Cache` behind a
//! `parking_lot::RwLock`.
//!
//! quick_cache's `sync::Cache` is the same shards behind the same kind of lock, but its
//! `get` can only hand out a clone of the stored value: for an entry, one reference count up
//! under the lock and one down when the caller is done, two locked instructions per hit.
//! Holding the lock ourselves, a read can lend the stored bytes to a closure while the read
//! lock is held, with no count at all ([`super::MemoryBackend`]'s `get_with`).
//!
//! The shard count, each shard's bounds and the shard a hash goes to are those of
//! `quick_cache::sync::Cache::with_options` (quick_cache 0.7), so that eviction, and the hit
//! ratio it gives, are what they were: quick_cache's CLOCK-PRO still runs inside each shard.

use super::entry::{spread, Entry, EntryWeighter, EvictionCounter, KeyHash, PassHash};
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use quick_cache::OptionsBuilder;

/// One shard: quick_cache's single-threaded cache, indexed by a hash of the key.
pub(super) type ClockShard =
    quick_cache::unsync::Cache<KeyHash, Entry, EntryWeighter, PassHash, EvictionCounter>;

/// The shards of the default store (see the module's doc).
pub(super) struct ClockStore {
    shards: Box<[RwLock<ClockShard>]>,
    /// The shard count less one (a power of two less one).
    mask: u64,
}

impl ClockStore {
    /// A store of about `items` entries and `capacity` weight, sharded as quick_cache's
    /// `sync::Cache::with_options` shards one built from the same bounds.
    pub(super) fn new(
        items: usize,
        capacity: u64,
        weighter: EntryWeighter,
        lifecycle: EvictionCounter,
    ) -> Result<ClockStore, String> {
        // quick_cache's default shard count: four per available core, to a power of two.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut shards = cores.saturating_mul(4).next_power_of_two() as u64;
        let items = items as u64;
        let per_shard = |total: u64, shards: u64| total.saturating_add(shards - 1) / shards;
        // As quick_cache does: at least 32 entries per shard, halving the count until so.
        while per_shard(items, shards) < 32 && shards > 1 {
            shards /= 2;
        }
        let options = OptionsBuilder::new()
            .estimated_items_capacity(per_shard(items, shards) as usize)
            .weight_capacity(per_shard(capacity, shards))
            .build()
            .map_err(|e| e.to_string())?;
        let shards = (0..shards)
            .map(|_| {
                RwLock::new(ClockShard::with_options(
                    options.clone(),
                    weighter,
                    PassHash,
                    lifecycle.clone(),
                ))
            })
            .collect::<Box<[_]>>();
        let mask = shards.len() as u64 - 1;
        Ok(ClockStore { shards, mask })
    }

    /// The shard that holds `hash`, chosen as quick_cache's `sync::Cache` chooses it from
    /// the 64-bit hash (here the [`spread`] one): the middle bits, which the shard's own hash
    /// table uses least.
    #[inline]
    fn shard(&self, hash: KeyHash) -> &RwLock<ClockShard> {
        &self.shards[self.shard_of(hash)]
    }

    /// The index of the shard that holds `hash`.
    #[inline]
    pub(super) fn shard_of(&self, hash: KeyHash) -> usize {
        // The mask keeps the index below the shard count.
        (spread(hash).rotate_right(u64::BITS / 2) & self.mask) as usize
    }

    /// The shard of `hash`, locked for reading.
    #[inline]
    pub(super) fn read(&self, hash: KeyHash) -> RwLockReadGuard<'_, ClockShard> {
        self.shard(hash).read()
    }

    /// The shard of `hash`, locked for writing.
    #[inline]
    pub(super) fn write(&self, hash: KeyHash) -> RwLockWriteGuard<'_, ClockShard> {
        self.shard(hash).write()
    }

    /// Runs `change` on the live entry of `key` (at `hash`) under its shard's write lock,
    /// as a read of it (a hit makes the entry hotter, as quick_cache's `entry` did); an
    /// expired entry found there is removed. `change` answers its result and whether the
    /// entry goes. `None` when the key is absent or expired.
    pub(super) fn update<T>(
        &self,
        hash: KeyHash,
        key: &[u8],
        change: impl FnOnce(&mut Entry) -> (T, bool),
    ) -> Option<T> {
        let mut shard = self.write(hash);
        let mut entry = shard.get_mut(&hash)?;
        if entry.key() != key {
            return None;
        }
        let (answer, remove) = if entry.live() {
            let (answer, remove) = change(&mut entry);
            (Some(answer), remove)
        } else {
            (None, true)
        };
        drop(entry);
        if remove {
            shard.remove(&hash);
        }
        answer
    }

    /// The shards, for a scan of one at a time.
    pub(super) fn shards(&self) -> &[RwLock<ClockShard>] {
        &self.shards
    }

    /// Entries held now (expired ones not yet noticed included).
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// The weight held now.
    pub(super) fn weight(&self) -> u64 {
        self.shards.iter().map(|s| s.read().weight()).sum()
    }

    /// The weight the store holds at most (the sum of its shards').
    pub(super) fn capacity(&self) -> u64 {
        self.shards.iter().map(|s| s.read().capacity()).sum()
    }

    /// The weight one shard holds at most, which no entry may exceed.
    pub(super) fn shard_capacity(&self) -> u64 {
        self.shards[0].read().capacity()
    }

    /// Keeps the entries `keep` answers true for, one shard's write lock at a time.
    pub(super) fn retain(&self, keep: impl Fn(&Entry) -> bool) {
        for shard in self.shards.iter() {
            shard.write().retain(|_, e| keep(e));
        }
    }

    /// Removes every entry, one shard's write lock at a time.
    pub(super) fn clear(&self) {
        for shard in self.shards.iter() {
            shard.write().clear();
        }
    }
}
