//! A page-by-page scan of the default (CLOCK) store.

use super::*;

/// The most entries one page of a [`ClockScan`] looks at, unless asked for more keys: a
/// page of a pattern that few keys match ends there, possibly empty, and the next goes on.
const SCAN_PAGE_LOOKS: usize = 1024;

/// A scan of the default (CLOCK) store, a page at a time: quick_cache's iterator holds one
/// shard's read lock per entry it steps over, and resumes from its position (shard, slot),
/// so no caller waits on a scan for more than one step, and nothing is copied before the
/// first page. An entry keeps its slot while it is present (an overwrite keeps it), so a
/// key present for the whole scan is returned exactly once; keys written meanwhile may or
/// may not be, keys removed meanwhile are not returned after their removal.
pub(super) struct ClockScan {
    /// Declared before `_inner`, so dropped first: it borrows the store `_inner` owns.
    iter: ClockIter<'static, KeyHash, Entry, EntryWeighter, PassHash, EvictionCounter>,
    /// Keeps the store alive for `iter`; never read.
    _inner: Arc<Inner>,
    pattern: KeyPattern,
    count: usize,
    done: bool,
}

impl ClockScan {
    pub(super) fn new(inner: Arc<Inner>, pattern: &KeyPattern, count: usize) -> ClockScan {
        let Store::Clock(store) = &inner.store else {
            unreachable!("a ClockScan is started on the CLOCK store only")
        };
        // SAFETY: the store lives inside `inner`'s allocation, which `_inner` keeps alive
        // and in place (an `Arc` never moves its value, and `Inner::store` is never
        // replaced) for as long as the iterator exists: the iterator is a field declared
        // before `_inner`, so it is dropped first, and it is never handed out.
        let store: &'static ClockStore = unsafe { &*(store as *const ClockStore) };
        ClockScan {
            iter: store.iter(),
            _inner: inner,
            pattern: pattern.clone(),
            count: count.max(1),
            done: false,
        }
    }
}

impl KeyScan for ClockScan {
    fn next_page(&mut self) -> Result<Option<Vec<Vec<u8>>>> {
        if self.done {
            return Ok(None);
        }
        let mut keys = Vec::new();
        let mut looked = 0;
        while keys.len() < self.count && looked < self.count.max(SCAN_PAGE_LOOKS) {
            let Some((_, entry)) = self.iter.next() else {
                self.done = true;
                break;
            };
            looked += 1;
            if entry.live() && self.pattern.matches(entry.key()) {
                keys.push(entry.key().to_vec());
            }
        }
        Ok((!(self.done && keys.is_empty())).then_some(keys))
    }
}
