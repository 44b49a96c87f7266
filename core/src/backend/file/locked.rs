//! A pack under its lock ([`Locked`]): the writes (append a record, update the header, flip a
//! slot), removals, the walk over its whole index, the sweep of expired and corrupt entries,
//! and the rebuild into a new file ([`PackImage`]) renamed over the old one.

use super::files::{io_error, make_dir, Load};
use super::format::{
    align, data_start, decode_record, encode_entry, encode_record, fits_in_pack, hash_key, home,
    pack_of, shard_of, slot_is_large, slot_large, slot_len, slot_matches, slot_off, slot_small,
    tag_of, PackHeader, MAX_CAP, MAX_DATA, MIN_CAP, PACK_HEADER_LEN, SLOT_EMPTY, SLOT_MOVED,
    SLOT_TOMB, SMALL_MAX,
};
use super::lock::ShardGuard;
use super::pack::{pread_exact, BadSlot, Found, PackFile, Probe, Stored, Walked};
use super::{Inner, DEAD_SLACK, PACKS, PACK_DIR, SHARDS};
use crate::clock::unix_ms;
use crate::error::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

/// A pack file being built in memory: header, index, records.
pub(super) struct PackImage {
    pub(super) h: PackHeader,
    pub(super) index: Vec<u64>,
    pub(super) data: Vec<u8>,
}

impl PackImage {
    pub(super) fn new(cap: u64) -> PackImage {
        PackImage {
            h: PackHeader::empty(cap),
            index: vec![SLOT_EMPTY; cap as usize],
            data: Vec::new(),
        }
    }

    /// Adds an entry: a record (small) or the slot of a large file.
    pub(super) fn add(&mut self, hash: u128, found: &Found) {
        let cap = self.h.cap;
        let slot = match &found.stored {
            Stored::Small(rec) => {
                let off = data_start(cap) + self.data.len() as u64;
                self.data.extend_from_slice(rec);
                self.data.resize(align(self.data.len() as u64) as usize, 0);
                slot_small(tag_of(hash), rec.len(), off)
            }
            Stored::Large(_) => found.slot,
        };
        let mut pos = home(hash, cap);
        while self.index[pos as usize] != SLOT_EMPTY {
            pos = (pos + 1) & (cap - 1);
        }
        self.index[pos as usize] = slot;
        self.h.live_entries += 1;
        self.h.used += 1;
        self.h.live_bytes += found.size();
        self.h.data_end = data_start(cap) + self.data.len() as u64;
    }

    pub(super) fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.h.data_end as usize);
        out.extend_from_slice(&self.h.encode());
        for s in &self.index {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend_from_slice(&self.data);
        out
    }
}

/// A pack under its lock, with its header as read; the operations of one write.
pub(super) struct Locked<'a> {
    pub(super) inner: &'a Inner,
    pub(super) pack: usize,
    pub(super) pf: Option<Arc<PackFile>>,
    pub(super) h: PackHeader,
    pub(super) _guard: ShardGuard<'a>,
}

impl Locked<'_> {
    pub(super) fn pf(&self) -> &Arc<PackFile> {
        self.pf.as_ref().expect("an open pack")
    }

    pub(super) fn path(&self) -> PathBuf {
        self.inner.pack_path(self.pack)
    }

    pub(super) fn publish_counts(&self) {
        let p = &self.inner.packs[self.pack];
        p.entries
            .store(self.h.live_entries as i64, Ordering::Relaxed);
        p.bytes.store(self.h.live_bytes as i64, Ordering::Relaxed);
    }

    pub(super) fn write_header(&mut self) -> Result<()> {
        self.pf()
            .file
            .write_all_at(&self.h.encode(), 0)
            .map_err(|e| io_error("write", &self.path(), e))?;
        self.publish_counts();
        Ok(())
    }

    pub(super) fn write_slot(&self, pos: u64, slot: u64) -> Result<()> {
        let pf = self.pf();
        pf.file
            .write_all_at(&slot.to_le_bytes(), PACK_HEADER_LEN + pos * 8)
            .map_err(|e| io_error("write", &self.path(), e))?;
        if self.inner.fsync {
            pf.file
                .sync_data()
                .map_err(|e| io_error("sync", &self.path(), e))?;
        }
        Ok(())
    }

    /// Probes for `key` under the lock; corrupt entries met on the way are removed first.
    /// The answer is `Found` or `Absent`, never `Moved` or `Suspect`.
    pub(super) fn find(&mut self, hash: u128, key: &[u8], _now: u64) -> Result<Probe> {
        let pf = self.pf().clone();
        let mut bad = Vec::new();
        let mut probe = self.inner.probe(&pf, hash, key, Some(&mut bad))?;
        if !bad.is_empty() {
            self.remove_bad(&bad, hash)?;
            let pf = self.pf().clone();
            probe = self.inner.probe(&pf, hash, key, Some(&mut Vec::new()))?;
        }
        match probe {
            Probe::Suspect | Probe::Moved => {
                // Only a damaged index gets here (cut short, or full): rebuild it from
                // what verifies, then look again.
                self.rebuild(unix_ms(), &|_| true)?;
                let pf = self.pf().clone();
                match self.inner.probe(&pf, hash, key, Some(&mut Vec::new()))? {
                    Probe::Suspect | Probe::Moved => Err(Error::new(
                        ErrorKind::Io,
                        format!(
                            "file:// cache: the index of {} stays unreadable after a rebuild",
                            self.path().display()
                        ),
                    )),
                    p => Ok(p),
                }
            }
            p => Ok(p),
        }
    }

    /// Removes the entries of `bad` (they failed their checks) from the index and counters.
    pub(super) fn remove_bad(&mut self, bad: &[BadSlot], hash: u128) -> Result<()> {
        for b in bad {
            self.h.live_entries = self.h.live_entries.saturating_sub(1);
            if !slot_is_large(b.slot) {
                let len = slot_len(b.slot) as u64;
                self.h.live_bytes = self.h.live_bytes.saturating_sub(len);
                self.h.dead_bytes += align(len);
            }
        }
        self.write_header()?;
        for b in bad {
            self.write_slot(b.pos, SLOT_TOMB)?;
            if slot_is_large(b.slot) {
                let _ = fs::remove_file(self.inner.entry_path(hash));
            }
        }
        Ok(())
    }

    /// The live entry of `key`, removing it first when it has expired.
    pub(super) fn find_live(&mut self, hash: u128, key: &[u8], now: u64) -> Result<Option<Found>> {
        match self.find(hash, key, now)? {
            Probe::Found(f) if f.expired(now) => {
                self.remove(f)?;
                Ok(None)
            }
            Probe::Found(f) => Ok(Some(f)),
            _ => Ok(None),
        }
    }

    /// Appends a record after the last one; returns its offset. The header is updated in
    /// memory only: the caller writes it before it points a slot at the record.
    pub(super) fn append(&mut self, rec: &[u8]) -> Result<u64> {
        let off = self.h.data_end;
        let end = off + align(rec.len() as u64);
        if end > MAX_DATA {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "file:// cache: pack file {} is full (16 GiB)",
                    self.path().display()
                ),
            ));
        }
        self.pf()
            .file
            .write_all_at(rec, off)
            .map_err(|e| io_error("write", &self.path(), e))?;
        self.h.data_end = end;
        Ok(off)
    }

    /// Stores `key` (hashed `hash`) where `probe` found it or found room for it.
    pub(super) fn store(
        &mut self,
        hash: u128,
        key: &[u8],
        value: &[u8],
        expires_at: u64,
        now: u64,
        probe: Probe,
    ) -> Result<()> {
        let (pos, old) = match probe {
            Probe::Found(f) => (f.pos, Some(f)),
            Probe::Absent { at, fresh } => {
                self.h.used += u64::from(fresh);
                self.h.live_entries += 1;
                (at, None)
            }
            // `find` never answers these; an error rather than a panic all the same.
            Probe::Moved | Probe::Suspect => {
                return Err(Error::new(
                    ErrorKind::Io,
                    "file:// cache: an undecided index probe reached a write",
                ))
            }
        };
        let old_large = old
            .as_ref()
            .is_some_and(|f| matches!(f.stored, Stored::Large(_)));
        if let Some(f) = &old {
            self.h.live_bytes = self.h.live_bytes.saturating_sub(f.size());
            if let Stored::Small(rec) = &f.stored {
                self.h.dead_bytes += align(rec.len() as u64);
            }
        }
        let slot = if fits_in_pack(key, value) {
            let rec = encode_record(key, value, expires_at, now);
            let off = self.append(&rec)?;
            self.h.live_bytes += rec.len() as u64;
            slot_small(tag_of(hash), rec.len(), off)
        } else {
            let bytes = encode_entry(key, value, expires_at, now)?;
            let path = self.inner.entry_path(hash);
            self.inner.write_entry(shard_of(hash), &path, &bytes)?;
            self.h.live_bytes += bytes.len() as u64;
            slot_large(hash)
        };
        self.write_header()?;
        if old.as_ref().map(|f| f.slot) != Some(slot) {
            self.write_slot(pos, slot)?;
        }
        if old_large && !slot_is_large(slot) {
            let _ = fs::remove_file(self.inner.entry_path(hash));
        }
        Ok(())
    }

    /// Removes an entry found under this lock.
    pub(super) fn remove(&mut self, f: Found) -> Result<()> {
        self.h.live_entries = self.h.live_entries.saturating_sub(1);
        self.h.live_bytes = self.h.live_bytes.saturating_sub(f.size());
        if let Stored::Small(rec) = &f.stored {
            self.h.dead_bytes += align(rec.len() as u64);
        }
        self.write_header()?;
        self.write_slot(f.pos, SLOT_TOMB)?;
        if let Stored::Large(e) = &f.stored {
            let _ = fs::remove_file(self.inner.entry_path(hash_key(e.key())));
        }
        Ok(())
    }

    /// Rebuilds the pack first when its index is three quarters full or half its records
    /// are dead.
    pub(super) fn maybe_rebuild(&mut self, now: u64) -> Result<()> {
        let h = &self.h;
        let data = h.data_end - data_start(h.cap);
        let crowded = (h.used + 1) * 4 > h.cap * 3;
        let wasteful = h.dead_bytes > DEAD_SLACK && h.dead_bytes * 2 > data;
        let full = h.data_end + SMALL_MAX as u64 > MAX_DATA;
        if crowded || wasteful || full {
            self.rebuild(now, &|_| true)?;
        }
        Ok(())
    }

    /// Every slot of the pack's index, read in one go.
    pub(super) fn read_index(&self) -> Result<Vec<u64>> {
        let cap = self.pf().cap;
        let mut raw = vec![0u8; cap as usize * 8];
        let whole = pread_exact(&self.pf().file, &mut raw, PACK_HEADER_LEN)
            .map_err(|e| io_error("read", &self.path(), e))?;
        if !whole {
            raw.fill(0);
        }
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }

    /// Every entry the index points to, verified, and the slots that do not verify.
    pub(super) fn walk(&mut self) -> Result<(Vec<Walked>, Vec<BadSlot>)> {
        let index = self.read_index()?;
        let pf = self.pf().clone();
        let start = data_start(pf.cap);
        let len = self.h.data_end.saturating_sub(start);
        let mut data = vec![0u8; len as usize];
        let got = pf
            .file
            .read_at(&mut data, start)
            .map_err(|e| io_error("read", &self.path(), e))?;
        data.truncate(got);
        let mut live = Vec::new();
        let mut bad = Vec::new();
        let mut large_files = None;
        for (pos, &slot) in index.iter().enumerate() {
            let pos = pos as u64;
            if slot == SLOT_EMPTY || slot == SLOT_TOMB {
                continue;
            }
            let found = if slot == SLOT_MOVED {
                None
            } else if slot_is_large(slot) {
                let files = match &mut large_files {
                    Some(files) => files,
                    None => large_files.insert(self.large_files()?),
                };
                self.large_of_slot(files, pos, slot)?
            } else {
                let off = slot_off(slot).wrapping_sub(start) as usize;
                data.get(off..off.saturating_add(slot_len(slot)))
                    .filter(|rec| decode_record(rec).is_some())
                    .map(|rec| Found {
                        pos,
                        slot,
                        stored: Stored::Small(rec.to_vec()),
                    })
            };
            match found {
                Some(found) => {
                    let hash = hash_key(found.record().key);
                    if pack_of(hash) == self.pack && slot_matches(slot, hash) {
                        live.push(Walked {
                            pos,
                            slot,
                            hash,
                            found,
                        });
                    } else {
                        bad.push(BadSlot { pos, slot });
                    }
                }
                None => bad.push(BadSlot { pos, slot }),
            }
        }
        // Oldest first, the order the records were written in.
        live.sort_by_key(|w| (w.found.record().written_at, slot_off(w.slot)));
        Ok((live, bad))
    }

    /// The large entry files of this pack, by the 48 bits of their hash that slots hold.
    pub(super) fn large_files(&self) -> Result<HashMap<u64, Vec<u128>>> {
        let mut files: HashMap<u64, Vec<u128>> = HashMap::new();
        let first = self.pack * (SHARDS / PACKS);
        for shard in first..first + SHARDS / PACKS {
            for hash in self.inner.list_shard(shard)? {
                files.entry(slot_large(hash)).or_default().push(hash);
            }
        }
        Ok(files)
    }

    /// The large entry a slot points to. A large slot holds only 48 bits of its key's hash:
    /// the file is the one whose name shares them and whose key hashes to its name.
    pub(super) fn large_of_slot(
        &self,
        files: &HashMap<u64, Vec<u128>>,
        pos: u64,
        slot: u64,
    ) -> Result<Option<Found>> {
        for &hash in files.get(&slot).map_or(&[][..], Vec::as_slice) {
            if let Load::Found(e) = self.inner.load(&self.inner.entry_path(hash))? {
                if hash_key(e.key()) == hash {
                    return Ok(Some(Found {
                        pos,
                        slot,
                        stored: Stored::Large(e),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Removes expired entries and slots that do not verify, and sets the header's counters
    /// to what is left. Returns the live entries (oldest first).
    pub(super) fn sweep(&mut self, now: u64) -> Result<Vec<Walked>> {
        let (live, bad) = self.walk()?;
        let (live, expired): (Vec<_>, Vec<_>) =
            live.into_iter().partition(|w| !w.found.expired(now));
        let small_live: u64 = live
            .iter()
            .filter(|w| !slot_is_large(w.slot))
            .map(|w| align(slot_len(w.slot) as u64))
            .sum();
        let index = self.read_index()?;
        let h = &mut self.h;
        h.live_entries = live.len() as u64;
        h.live_bytes = live.iter().map(|w| w.found.size()).sum();
        h.used = index.iter().filter(|&&s| s != SLOT_EMPTY).count() as u64;
        h.dead_bytes = (h.data_end - data_start(h.cap)).saturating_sub(small_live);
        self.write_header()?;
        for b in &bad {
            self.write_slot(b.pos, SLOT_TOMB)?;
        }
        for w in &expired {
            self.write_slot(w.pos, SLOT_TOMB)?;
            if slot_is_large(w.slot) {
                let _ = fs::remove_file(self.inner.entry_path(w.hash));
            }
        }
        self.maybe_rebuild(now)?;
        Ok(live)
    }

    /// Writes a new pack file with the live entries whose key `keep` accepts (dropping
    /// expired and corrupt ones and every dead record) and renames it over the old one.
    pub(super) fn rebuild(&mut self, now: u64, keep: &dyn Fn(&[u8]) -> bool) -> Result<()> {
        let (live, _bad) = self.walk()?;
        let (kept, dropped): (Vec<_>, Vec<_>) = live
            .into_iter()
            .partition(|w| !w.found.expired(now) && keep(w.found.record().key));
        let want = (kept.len() as u64 * 2 + 2).next_power_of_two();
        let mut image = PackImage::new(want.clamp(MIN_CAP, MAX_CAP));
        let mut by_age: Vec<&Walked> = kept.iter().collect();
        by_age.sort_by_key(|w| slot_off(w.slot));
        for w in by_age {
            image.add(w.hash, &w.found);
        }
        self.write_pack(&image)?;
        for w in dropped {
            if slot_is_large(w.slot) {
                let _ = fs::remove_file(self.inner.entry_path(w.hash));
            }
        }
        Ok(())
    }

    /// Replaces the pack file by `image`: a temporary file renamed over it. The old file is
    /// marked retired first and its slots moved after, so that every process reopens.
    pub(super) fn write_pack(&mut self, image: &PackImage) -> Result<()> {
        let dir = self.inner.root.join(PACK_DIR);
        let path = self.path();
        let (tmp, mut file) = self
            .inner
            .create_temp(&dir, || make_dir(&dir, self.inner.fix_modes))?;
        let written = (|| {
            file.write_all(&image.bytes())?;
            if self.inner.fsync {
                file.sync_data()?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("write", &tmp, e));
        }
        if let Some(old) = self.pf.clone() {
            let mut retired = self.h;
            retired.retired = true;
            let _ = old.file.write_all_at(&retired.encode(), 0);
        }
        self.inner.rename_into_place(&tmp, &path, &dir)?;
        if let Some(old) = self.pf.take() {
            let moved = vec![0xffu8; old.cap as usize * 8];
            let _ = old.file.write_all_at(&moved, PACK_HEADER_LEN);
        }
        let pf = Arc::new(PackFile::new(file, image.h.cap));
        *self.inner.packs[self.pack]
            .file
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(pf.clone());
        self.pf = Some(pf);
        self.h = image.h;
        self.publish_counts();
        Ok(())
    }
}
