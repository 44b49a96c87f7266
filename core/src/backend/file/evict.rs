//! Keeping the bounds: the counters of entries and bytes, the reconciling scan (in the
//! background at open and every `reconcile_interval`), eviction of expired then oldest entries
//! down to 90% of a bound, Django's cull, and `clear`.

use super::files::Load;
use super::format::{hash_key, pack_of};
use super::lock::LockFile;
use super::locked::Locked;
use super::pack::{Found, Probe, Stored};
use super::{
    FileBackend, Inner, HIGH_WATER, LOW_WATER, MAX_CANDIDATES, PACKS, REFRESH_EVERY, SHARDS,
};
use crate::clock::unix_ms;
use crate::error::Result;
use std::collections::VecDeque;
use std::fs;
use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError};

/// How long eviction candidates stay in their order (see `EvictState::collected_at`).
pub(super) const CANDIDATES_FRESH_MS: u64 = 250;

#[derive(Default)]
pub(super) struct EvictState {
    pub(super) lock_file: Option<LockFile>,
    /// Entries seen by the last scan, expired first, then oldest first.
    pub(super) candidates: VecDeque<Candidate>,
    /// When (ms) the candidates were collected: an older list no longer puts the entries
    /// that have expired since first, so eviction collects anew.
    pub(super) collected_at: u64,
}

pub(super) struct Candidate {
    pub(super) key: Box<[u8]>,
    pub(super) written_at: u64,
    pub(super) expires_at: u64,
}

/// Expired candidates first, then the oldest; at most [`MAX_CANDIDATES`].
pub(super) fn order_candidates(mut candidates: Vec<Candidate>, now: u64) -> VecDeque<Candidate> {
    candidates.sort_unstable_by_key(|c| {
        let live = c.expires_at == 0 || c.expires_at > now;
        (live, c.written_at)
    });
    candidates.truncate(MAX_CANDIDATES);
    candidates.into()
}

impl Inner {
    pub(super) fn counters(&self) -> (i64, i64) {
        self.packs.iter().fold((0, 0), |(e, b), p| {
            (
                e + p.entries.load(Ordering::Relaxed),
                b + p.bytes.load(Ordering::Relaxed),
            )
        })
    }

    pub(super) fn over(&self, entries: i64, bytes: i64, factor: f64) -> bool {
        let entries_over = self.cull_frequency.is_none()
            && self
                .max_entries
                .is_some_and(|m| entries as f64 > m as f64 * factor);
        entries_over
            || self
                .max_bytes
                .is_some_and(|m| bytes as f64 > m as f64 * factor)
    }

    /// With `cull_frequency`: true when a new key would find `max_entries` entries.
    pub(super) fn at_cull_bound(&self) -> bool {
        match (self.cull_frequency, self.max_entries) {
            (Some(_), Some(max)) => self.counters().0 >= max as i64,
            _ => false,
        }
    }

    /// The background scans' threads of this process: a child of `fork()` forgets its
    /// parent's (they are not here to join).
    pub(super) fn own_scans(&self) -> MutexGuard<'_, (u64, Vec<std::thread::JoinHandle<()>>)> {
        let mut scans = self.scans.lock().unwrap_or_else(PoisonError::into_inner);
        let (generation, handles) = &mut *scans;
        crate::fork::forget_inherited(generation, handles);
        scans
    }

    /// Scans every pack: removes expired entries, corrupt records and files, orphaned large
    /// files (and old-format entry files), sets each pack's counters to what is left, and
    /// refills the eviction candidates (expired first, then oldest). Holds the eviction lock
    /// (the caller's `state`). Returns the entries and bytes found.
    pub(super) fn scan(&self, state: &mut EvictState) -> Result<(u64, u64)> {
        let now = unix_ms();
        let mut totals = (0, 0);
        let mut candidates = Vec::new();
        self.sweep_pack_temps();
        for pack in 0..PACKS {
            if self.closing.load(Ordering::Relaxed) {
                // The cache was dropped: leave the rest for the next scan.
                return Ok(totals);
            }
            let Some(mut locked) = self.lock_pack(pack, false)? else {
                self.remove_orphans(pack, None)?;
                continue;
            };
            let live = locked.sweep(now)?;
            for w in &live {
                let r = w.found.record();
                candidates.push(Candidate {
                    key: r.key.into(),
                    written_at: r.written_at,
                    expires_at: r.expires_at,
                });
            }
            self.remove_orphans(pack, Some(&mut locked))?;
            totals.0 += locked.h.live_entries;
            totals.1 += locked.h.live_bytes;
        }
        state.candidates = order_candidates(candidates, now);
        state.collected_at = now;
        Ok(totals)
    }

    /// Removes the large files of `pack` that its index does not point to, with the pack's
    /// lock held (`locked`; `None`: the pack has no file, so none is pointed to).
    pub(super) fn remove_orphans(
        &self,
        pack: usize,
        mut locked: Option<&mut Locked<'_>>,
    ) -> Result<()> {
        for shard in pack * (SHARDS / PACKS)..(pack + 1) * (SHARDS / PACKS) {
            for hash in self.list_shard(shard)? {
                let path = self.entry_path(hash);
                let keep = match (self.load(&path)?, locked.as_deref_mut()) {
                    (Load::Found(e), Some(l)) if hash_key(e.key()) == hash => {
                        let key = e.key().to_vec();
                        let pf = l.pf().clone();
                        matches!(
                            self.probe(&pf, hash, &key, Some(&mut Vec::new()))?,
                            Probe::Found(Found {
                                stored: Stored::Large(_),
                                ..
                            })
                        )
                    }
                    _ => false,
                };
                if !keep {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }

    /// Collects eviction candidates from every pack (expired first, then oldest).
    pub(super) fn collect_candidates(&self, state: &mut EvictState) -> Result<()> {
        let now = unix_ms();
        let mut candidates = Vec::new();
        for pack in 0..PACKS {
            let Some(mut locked) = self.lock_pack(pack, false)? else {
                continue;
            };
            let (live, _bad) = locked.walk()?;
            for w in live {
                let r = w.found.record();
                candidates.push(Candidate {
                    key: r.key.into(),
                    written_at: r.written_at,
                    expires_at: r.expires_at,
                });
            }
        }
        state.candidates = order_candidates(candidates, now);
        state.collected_at = now;
        Ok(())
    }

    /// Removes `c` if it still holds the entry the scan saw. True when it did.
    pub(super) fn remove_candidate(&self, c: &Candidate) -> Result<bool> {
        let hash = hash_key(&c.key);
        let Some(mut locked) = self.lock_pack(pack_of(hash), false)? else {
            return Ok(false);
        };
        match locked.find(hash, &c.key, unix_ms())? {
            Probe::Found(f) => {
                let r = f.record();
                if r.written_at == c.written_at && r.expires_at == c.expires_at {
                    locked.remove(f)?;
                    return Ok(true);
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Evicts until the counters are at 90% of the bounds. Holds the eviction lock.
    pub(super) fn evict_locked(&self, state: &mut EvictState) -> Result<()> {
        self.refresh_counts();
        if unix_ms().saturating_sub(state.collected_at) > CANDIDATES_FRESH_MS {
            state.candidates.clear();
        }
        let mut scanned = false;
        loop {
            let (entries, bytes) = self.counters();
            if !self.over(entries, bytes, LOW_WATER) {
                break;
            }
            let Some(c) = state.candidates.pop_front() else {
                if scanned {
                    break;
                }
                self.collect_candidates(state)?;
                scanned = true;
                continue;
            };
            if self.remove_candidate(&c)? {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Django's cull: at `max_entries` entries, removes `entries / cull_frequency` of them
    /// (expired first, then oldest), or all of them for a frequency of 0.
    pub(super) fn cull(&self) -> Result<()> {
        let (Some(frequency), Some(max)) = (self.cull_frequency, self.max_entries) else {
            return Ok(());
        };
        let mut guard = self.lock_evict(true)?.expect("blocking lock");
        self.refresh_counts();
        let (entries, _) = self.counters();
        let entries = entries.max(0) as u64;
        if entries < max {
            return Ok(());
        }
        if frequency == 0 {
            self.clear(b"")?;
            self.evictions.fetch_add(entries, Ordering::Relaxed);
            return Ok(());
        }
        self.collect_candidates(&mut guard.state)?;
        let mut removed = 0;
        while removed < entries / frequency {
            let Some(c) = guard.state.candidates.pop_front() else {
                break;
            };
            if self.remove_candidate(&c)? {
                removed += 1;
            }
        }
        self.evictions.fetch_add(removed, Ordering::Relaxed);
        guard.state.candidates.clear();
        Ok(())
    }

    /// Removes every entry whose key starts with `prefix` (all of them for an empty prefix),
    /// and every corrupt record or file.
    pub(super) fn clear(&self, prefix: &[u8]) -> Result<()> {
        let now = unix_ms();
        for pack in 0..PACKS {
            let Some(mut locked) = self.lock_pack(pack, false)? else {
                if prefix.is_empty() {
                    self.remove_orphans(pack, None)?;
                }
                continue;
            };
            locked.rebuild(now, &|key: &[u8]| !key.starts_with(prefix))?;
            if prefix.is_empty() {
                self.remove_orphans(pack, Some(&mut locked))?;
            }
        }
        Ok(())
    }
}

impl FileBackend {
    pub(super) fn spawn_reconcile(&self) {
        let inner = self.inner.clone();
        inner.scanners.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("polycache-file-scan".into())
            .spawn(move || {
                if let Ok(Some(mut guard)) = inner.lock_evict(false) {
                    let result = inner.scan(&mut guard.state).and_then(|_| {
                        if inner.closing.load(Ordering::SeqCst) {
                            return Ok(());
                        }
                        inner.evict_locked(&mut guard.state)
                    });
                    if let Err(e) = result {
                        log::warn!(
                            "polycache: file:// scan of {} failed: {e}",
                            inner.root.display()
                        );
                    }
                }
                // No file is touched after this: a closing handle need not wait any more.
                inner.scanners.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(handle) => {
                let handles = &mut self.inner.own_scans().1;
                handles.retain(|h| !h.is_finished());
                handles.push(handle);
            }
            Err(e) => {
                self.inner.scanners.fetch_sub(1, Ordering::SeqCst);
                log::warn!("polycache: cannot start the file:// scan thread: {e}");
            }
        }
    }

    /// Refreshes the other packs' counters every few writes, and evicts when over a bound.
    /// Called with no pack lock held.
    pub(super) fn after_write(&self) {
        let inner = &self.inner;
        let writes = inner.writes.fetch_add(1, Ordering::Relaxed) + 1;
        if writes % REFRESH_EVERY == 0 {
            inner.refresh_counts();
            match inner.scan_due() {
                Ok(true) => self.spawn_reconcile(),
                Ok(false) => {}
                Err(e) => log::warn!("polycache: file:// scan schedule not shared: {e}"),
            }
        }
        let (entries, bytes) = inner.counters();
        if inner.over(entries, bytes, 1.0) {
            // Other processes may have evicted meanwhile: decide on fresh counters.
            inner.refresh_counts();
            let (entries, bytes) = inner.counters();
            if !inner.over(entries, bytes, 1.0) {
                return;
            }
            let wait = inner.over(entries, bytes, HIGH_WATER);
            match inner.lock_evict(wait) {
                Ok(Some(mut guard)) => {
                    if let Err(e) = inner.evict_locked(&mut guard.state) {
                        log::warn!("polycache: file:// eviction failed: {e}");
                    }
                }
                Ok(None) => {}
                Err(e) => log::warn!("polycache: file:// eviction lock failed: {e}"),
            }
        }
    }
}
