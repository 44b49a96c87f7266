//! Key scans of a `file://` cache ([`FileScan`]): one pack at a time, under its lock.

use super::super::KeyScan;
use super::{FileBackend, Inner, PACKS};
use crate::clock::unix_ms;
use crate::error::Result;
use crate::pattern::KeyPattern;
use std::sync::Arc;

/// A `file://` key scan: the packs in turn, each walked whole under its lock, its matching
/// live keys then handed out `count` at a time. Every key lives in one pack (by its hash),
/// so a key present for the whole scan is returned exactly once; a key written or removed
/// meanwhile is returned if its pack had it when the scan reached that pack.
pub(super) struct FileScan {
    pub(super) backend: Arc<FileBackend>,
    pub(super) pattern: KeyPattern,
    pub(super) count: usize,
    pub(super) next_pack: usize,
    pub(super) found: std::vec::IntoIter<Vec<u8>>,
}

impl KeyScan for FileScan {
    fn next_page(&mut self) -> Result<Option<Vec<Vec<u8>>>> {
        while self.found.len() == 0 && self.next_pack < PACKS {
            let keys = self
                .backend
                .inner
                .pack_keys(self.next_pack, &self.pattern)?;
            self.next_pack += 1;
            self.found = keys.into_iter();
        }
        let page: Vec<Vec<u8>> = self.found.by_ref().take(self.count).collect();
        Ok((!page.is_empty()).then_some(page))
    }
}

impl Inner {
    /// The live keys of `pack` that match `pattern`, read under the pack's lock.
    pub(super) fn pack_keys(&self, pack: usize, pattern: &KeyPattern) -> Result<Vec<Vec<u8>>> {
        let Some(mut locked) = self.lock_pack(pack, false)? else {
            return Ok(Vec::new());
        };
        let now = unix_ms();
        let (live, _bad) = locked.walk()?;
        Ok(live
            .iter()
            .filter(|w| !w.found.expired(now))
            .map(|w| w.found.record().key)
            .filter(|k| pattern.matches(k))
            .map(<[u8]>::to_vec)
            .collect())
    }
}
