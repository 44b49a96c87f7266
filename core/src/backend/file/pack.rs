//! A pack as its readers see it: the open pack file of this process, probing its index for a
//! key without a lock (each entry verified as it is read), and taking the pack's lock to get a
//! [`Locked`] pack, with the file opened, created or repaired as needed.

use super::files::{io_error, is_absent, Load, Loaded};
use super::format::{
    data_start, decode_record, home, pack_of, slot_is_large, slot_len, slot_matches, slot_off,
    PackHeader, Record, MIN_CAP, PACK_HEADER_LEN, RECORD_HEADER_LEN, SLOT_EMPTY, SLOT_MOVED,
    SLOT_TOMB,
};
use super::locked::{Locked, PackImage};
use super::{Inner, PACK_DIR, PROBE_CHUNK, RECHECK_EVERY};
use crate::error::{Error, ErrorKind, Result};
use crate::value::Value;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt as _, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, PoisonError};
use std::{fs, io};

pub(super) struct PackFile {
    pub(super) file: File,
    pub(super) cap: u64,
    /// The inode it was opened as, to notice the path now naming another file (or none).
    pub(super) ino: u64,
    pub(super) reads: AtomicU32,
}

impl PackFile {
    pub(super) fn new(file: File, cap: u64) -> PackFile {
        let ino = file.metadata().map_or(0, |m| m.ino());
        PackFile {
            file,
            cap,
            ino,
            reads: AtomicU32::new(0),
        }
    }

    /// True when `path` still names this file.
    pub(super) fn is_at(&self, path: &Path) -> bool {
        fs::metadata(path).is_ok_and(|m| m.ino() == self.ino)
    }
}

/// An entry found through a pack's index.
pub(super) struct Found {
    /// Its slot's position and value.
    pub(super) pos: u64,
    pub(super) slot: u64,
    pub(super) stored: Stored,
}

pub(super) enum Stored {
    /// A pack record (the whole record).
    Small(Vec<u8>),
    /// A file of its own.
    Large(Loaded),
}

impl Found {
    pub(super) fn record(&self) -> Record<'_> {
        match &self.stored {
            Stored::Small(b) => decode_record(b).expect("verified when read"),
            Stored::Large(e) => Record {
                expires_at: e.header.expires_at,
                written_at: e.header.written_at,
                key: e.key(),
                value: e.value(),
            },
        }
    }
    pub(super) fn expired(&self, now: u64) -> bool {
        let e = self.record().expires_at;
        e != 0 && e <= now
    }
    /// What the entry counts against `max_bytes`.
    pub(super) fn size(&self) -> u64 {
        match &self.stored {
            Stored::Small(b) => b.len() as u64,
            Stored::Large(e) => e.buf.len() as u64,
        }
    }
    pub(super) fn into_value(self) -> Value {
        match self.stored {
            Stored::Small(b) => Value::from(decode_record(&b).expect("verified").value),
            Stored::Large(e) => e.into_value(),
        }
    }
}

/// What probing a pack's index for a key found.
pub(super) enum Probe {
    Found(Found),
    /// Not there; a new entry goes to slot `at` (`fresh`: an empty slot, not a tombstone).
    Absent {
        at: u64,
        fresh: bool,
    },
    /// The pack file was replaced: reopen it (lock-free reads only).
    Moved,
    /// Something did not verify: look again under the lock (lock-free reads only).
    Suspect,
}

/// One live entry of a pack, as a walk over its whole index finds it.
pub(super) struct Walked {
    pub(super) pos: u64,
    pub(super) slot: u64,
    pub(super) hash: u128,
    pub(super) found: Found,
}

/// A slot whose entry is missing, truncated or corrupt (found under the lock).
pub(super) struct BadSlot {
    pub(super) pos: u64,
    pub(super) slot: u64,
}

pub(super) fn pread_exact(file: &File, buf: &mut [u8], off: u64) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

pub(super) fn read_pack_header(file: &File) -> io::Result<Option<PackHeader>> {
    let mut b = [0u8; PACK_HEADER_LEN as usize];
    Ok(if pread_exact(file, &mut b, 0)? {
        PackHeader::decode(&b)
    } else {
        None
    })
}

/// What opening a pack for a lock-free read found.
pub(super) enum Handle {
    Open(Arc<PackFile>),
    /// No pack file yet: every key of the pack is a miss.
    Missing,
    /// A header that does not verify: the locked path repairs it.
    Invalid,
}

impl Inner {
    /// Reads every pack's header (without its lock) into this process's counters.
    pub(super) fn refresh_counts(&self) {
        for (i, pack) in self.packs.iter().enumerate() {
            let pf = match self.handle(i) {
                Handle::Open(pf) => pf,
                Handle::Missing => {
                    pack.entries.store(0, Ordering::Relaxed);
                    pack.bytes.store(0, Ordering::Relaxed);
                    continue;
                }
                Handle::Invalid => continue,
            };
            // A header torn by a concurrent write fails its checksum: try again, then skip.
            for _ in 0..3 {
                match read_pack_header(&pf.file) {
                    Ok(Some(h)) if !h.retired => {
                        pack.entries.store(h.live_entries as i64, Ordering::Relaxed);
                        pack.bytes.store(h.live_bytes as i64, Ordering::Relaxed);
                        break;
                    }
                    Ok(Some(_)) => {
                        self.forget(i, &pf);
                        break;
                    }
                    _ => {}
                }
            }
        }
    }

    /// The open pack file for a lock-free read.
    pub(super) fn handle(&self, pack: usize) -> Handle {
        let slot = &self.packs[pack].file;
        if let Some(pf) = slot.read().unwrap_or_else(PoisonError::into_inner).as_ref() {
            let n = pf.reads.fetch_add(1, Ordering::Relaxed);
            // A rebuild that died between renaming the new file and marking the old one's
            // slots leaves the old file current for its old readers: look now and then.
            let stale = n % RECHECK_EVERY == RECHECK_EVERY - 1
                && (matches!(read_pack_header(&pf.file), Ok(Some(h)) if h.retired)
                    || !pf.is_at(&self.pack_path(pack)));
            if !stale {
                return Handle::Open(pf.clone());
            }
        }
        let mut slot = slot.write().unwrap_or_else(PoisonError::into_inner);
        let path = self.pack_path(pack);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if is_absent(&e) => return Handle::Missing,
            Err(_) => return Handle::Invalid,
        };
        match read_pack_header(&file) {
            Ok(Some(h)) => {
                let pf = Arc::new(PackFile::new(file, h.cap));
                *slot = Some(pf.clone());
                Handle::Open(pf)
            }
            _ => Handle::Invalid,
        }
    }

    /// Drops this process's handle of a pack file if it is still `pf` (it was replaced).
    pub(super) fn forget(&self, pack: usize, pf: &Arc<PackFile>) {
        let mut slot = self.packs[pack]
            .file
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, pf)) {
            *slot = None;
        }
    }

    /// Probes `pf`'s index for `key` (hashed `hash`). Under the lock (`bad` given), entries
    /// that do not verify are collected in `bad` and skipped; without it, they make the probe
    /// `Suspect`.
    pub(super) fn probe(
        &self,
        pf: &PackFile,
        hash: u128,
        key: &[u8],
        mut bad: Option<&mut Vec<BadSlot>>,
    ) -> Result<Probe> {
        let cap = pf.cap;
        let mut pos = home(hash, cap);
        let mut first_tomb = None;
        let mut seen = 0;
        let mut chunk = [0u8; PROBE_CHUNK as usize * 8];
        while seen < cap {
            let n = PROBE_CHUNK.min(cap - pos).min(cap - seen);
            let buf = &mut chunk[..n as usize * 8];
            let path_of = || self.root.join(PACK_DIR);
            if !pread_exact(&pf.file, buf, PACK_HEADER_LEN + pos * 8)
                .map_err(|e| io_error("read", &path_of(), e))?
            {
                // The index is cut short: a truncated pack.
                return Ok(Probe::Suspect);
            }
            for i in 0..n {
                let at = pos + i;
                let raw = &buf[i as usize * 8..i as usize * 8 + 8];
                let slot = u64::from_le_bytes(raw.try_into().expect("8 bytes"));
                match slot {
                    SLOT_EMPTY => {
                        return Ok(match first_tomb {
                            Some(t) => Probe::Absent {
                                at: t,
                                fresh: false,
                            },
                            None => Probe::Absent { at, fresh: true },
                        })
                    }
                    SLOT_TOMB => {
                        first_tomb.get_or_insert(at);
                        continue;
                    }
                    SLOT_MOVED if bad.is_none() => return Ok(Probe::Moved),
                    _ => {}
                }
                if !slot_matches(slot, hash) {
                    continue;
                }
                match self.load_slot(pf, slot, hash)? {
                    Some(stored) => {
                        let found = Found {
                            pos: at,
                            slot,
                            stored,
                        };
                        if found.record().key == key {
                            return Ok(Probe::Found(found));
                        }
                    }
                    None => match bad.as_deref_mut() {
                        Some(bad) => bad.push(BadSlot { pos: at, slot }),
                        None => return Ok(Probe::Suspect),
                    },
                }
            }
            seen += n;
            pos = (pos + n) & (cap - 1);
        }
        // A full index (only a damaged one): no room to insert.
        Ok(match first_tomb {
            Some(t) => Probe::Absent {
                at: t,
                fresh: false,
            },
            None => Probe::Suspect,
        })
    }

    /// The record or file a slot points to, verified; `None` when it does not verify.
    pub(super) fn load_slot(&self, pf: &PackFile, slot: u64, hash: u128) -> Result<Option<Stored>> {
        if slot_is_large(slot) {
            return Ok(match self.load(&self.entry_path(hash))? {
                Load::Found(e) => Some(Stored::Large(e)),
                Load::Missing | Load::Bad => None,
            });
        }
        let len = slot_len(slot);
        let off = slot_off(slot);
        if len < RECORD_HEADER_LEN || off < data_start(pf.cap) {
            return Ok(None);
        }
        let mut buf = vec![0u8; len];
        let whole = pread_exact(&pf.file, &mut buf, off)
            .map_err(|e| io_error("read", &self.root.join(PACK_DIR), e))?;
        Ok((whole && decode_record(&buf).is_some()).then_some(Stored::Small(buf)))
    }

    /// A lock-free read of `key`: `Ok(Some(found))`, `Ok(None)` for a miss, `Err(())`-like
    /// `None` inside when the locked path must decide.
    pub(super) fn read_unlocked(&self, hash: u128, key: &[u8]) -> Result<Option<Option<Found>>> {
        let pack = pack_of(hash);
        for _ in 0..3 {
            let pf = match self.handle(pack) {
                Handle::Open(pf) => pf,
                Handle::Missing => return Ok(Some(None)),
                Handle::Invalid => return Ok(None),
            };
            match self.probe(&pf, hash, key, None)? {
                Probe::Found(f) => return Ok(Some(Some(f))),
                Probe::Absent { .. } => return Ok(Some(None)),
                Probe::Moved => self.forget(pack, &pf),
                Probe::Suspect => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Takes a pack's lock and opens its current file, creating it (`create`) when missing
    /// and replacing it when its header does not verify. `None`: no pack file, not created.
    pub(super) fn lock_pack(&self, pack: usize, create: bool) -> Result<Option<Locked<'_>>> {
        let guard = self.lock_shard(pack)?;
        let mut locked = Locked {
            inner: self,
            pack,
            pf: None,
            h: PackHeader::empty(MIN_CAP),
            _guard: guard,
        };
        let path = self.pack_path(pack);
        for _ in 0..4 {
            let cached = self.packs[pack]
                .file
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let cached = cached.filter(|pf| {
                // Removed or replaced behind the cache's back: open what the path names now.
                let current = pf.is_at(&path);
                if !current {
                    self.forget(pack, pf);
                }
                current
            });
            let (file, cached) = match cached {
                Some(pf) => (None, Some(pf)),
                None => match OpenOptions::new().read(true).write(true).open(&path) {
                    Ok(file) => (Some(file), None),
                    Err(e) if is_absent(&e) && !create => return Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        locked.write_pack(&PackImage::new(MIN_CAP))?;
                        continue;
                    }
                    Err(e) => return Err(io_error("open", &path, e)),
                },
            };
            let header = match (&file, &cached) {
                (Some(f), _) => read_pack_header(f),
                (None, Some(pf)) => read_pack_header(&pf.file),
                (None, None) => unreachable!("one of them is open"),
            }
            .map_err(|e| io_error("read", &path, e))?;
            match header {
                Some(h) if h.retired && cached.is_some() => {
                    // Replaced by another process's rebuild: open the new file.
                    self.forget(pack, cached.as_ref().expect("cached"));
                }
                Some(h) => {
                    let pf = match (file, cached) {
                        (Some(file), _) => {
                            let pf = Arc::new(PackFile::new(file, h.cap));
                            *self.packs[pack]
                                .file
                                .write()
                                .unwrap_or_else(PoisonError::into_inner) = Some(pf.clone());
                            pf
                        }
                        (None, Some(pf)) => pf,
                        (None, None) => unreachable!("one of them is open"),
                    };
                    locked.pf = Some(pf);
                    locked.h = h;
                    if h.retired {
                        // The file at the path, marked by a rebuild that died before its
                        // rename: it is the current one after all.
                        locked.h.retired = false;
                        locked.write_header()?;
                    }
                    locked.publish_counts();
                    return Ok(Some(locked));
                }
                None => {
                    // Truncated, corrupt or foreign: its entries are lost; start it afresh.
                    if let Some(pf) = &cached {
                        self.forget(pack, pf);
                    }
                    locked.pf = None;
                    locked.write_pack(&PackImage::new(MIN_CAP))?;
                }
            }
        }
        Err(Error::new(
            ErrorKind::Io,
            format!(
                "file:// cache: the pack file {} keeps changing under its lock",
                path.display()
            ),
        ))
    }

    /// Runs `live` on the live entry of `key` under its pack's lock, or `absent` when there
    /// is none (an expired one is removed first).
    pub(super) fn with_live<T>(
        &self,
        hash: u128,
        key: &[u8],
        now: u64,
        absent: impl FnOnce() -> Result<T>,
        live: impl FnOnce(&mut Locked<'_>, Found) -> Result<T>,
    ) -> Result<T> {
        let Some(mut locked) = self.lock_pack(pack_of(hash), false)? else {
            return absent();
        };
        match locked.find_live(hash, key, now)? {
            Some(f) => live(&mut locked, f),
            None => absent(),
        }
    }
}
