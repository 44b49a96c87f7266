//! A page-by-page scan of the default (CLOCK) store.

use super::*;

/// A scan of the default (CLOCK) store, one shard at a time: the shard's matching live keys
/// (not their values) are copied under one hold of its read lock, then handed out a page at
/// a time; a page copies at most one shard. quick_cache's single-threaded shards have no
/// iterator that could resume after the lock is let go, so a shard is read in one hold:
/// readers of the shard go on meanwhile, writers to it wait for one walk of its entries
/// (the store's entries divided by its shard count). Each key lives in one shard and is
/// copied from it at one moment, so a key present for the whole scan is returned exactly
/// once; a key written meanwhile may or may not be; a key removed meanwhile is not returned
/// if its shard is copied after the removal, and may be (once) if before.
pub(super) struct ClockScan {
    inner: Arc<Inner>,
    pattern: KeyPattern,
    count: usize,
    /// The next shard to copy.
    shard: usize,
    /// The copied keys not handed out yet.
    keys: std::vec::IntoIter<Vec<u8>>,
}

impl ClockScan {
    pub(super) fn new(inner: Arc<Inner>, pattern: &KeyPattern, count: usize) -> ClockScan {
        ClockScan {
            inner,
            pattern: pattern.clone(),
            count: count.max(1),
            shard: 0,
            keys: Vec::new().into_iter(),
        }
    }

    /// The store's shards.
    fn shards(&self) -> &[parking_lot::RwLock<store::ClockShard>] {
        let Store::Clock(store) = &self.inner.store else {
            unreachable!("a ClockScan is started on the CLOCK store only")
        };
        store.shards()
    }

    /// Copies the matching live keys of the next shard; false when none is left.
    fn copy_next_shard(&mut self) -> bool {
        let Some(shard) = self.shards().get(self.shard) else {
            return false;
        };
        let keys: Vec<Vec<u8>> = shard
            .read()
            .iter()
            .filter(|(_, e)| e.live() && self.pattern.matches(e.key()))
            .map(|(_, e)| e.key().to_vec())
            .collect();
        self.shard += 1;
        self.keys = keys.into_iter();
        true
    }
}

impl KeyScan for ClockScan {
    fn next_page(&mut self) -> Result<Option<Vec<Vec<u8>>>> {
        let mut page: Vec<Vec<u8>> = self.keys.by_ref().take(self.count).collect();
        if page.len() < self.count {
            if !self.copy_next_shard() {
                return Ok((!page.is_empty()).then_some(page));
            }
            let room = self.count - page.len();
            page.extend(self.keys.by_ref().take(room));
        }
        Ok(Some(page))
    }
}
