//! The cache directory's locks: a process mutex plus an advisory `flock` per pack, one for
//! eviction, and the index file whose lock guards the time of the last reconciling scan. A
//! lock file is reopened by a forked child, whose `flock` must not be its parent's.

use super::evict::EvictState;
use super::files::{io_error, make_dir};
use super::format::{INDEX_LEN, INDEX_MAGIC, INDEX_VERSION};
use super::{Inner, EVICT_LOCK, INDEX_FILE, LOCK_DIR};
use crate::clock::unix_ms;
use crate::error::Result;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt};
use std::path::Path;
use std::sync::{MutexGuard, PoisonError, TryLockError};

pub(super) fn flock(file: &File) -> io::Result<()> {
    fs4::FileExt::lock(file)
}

pub(super) fn funlock(file: &File) {
    let _ = fs4::FileExt::unlock(file);
}

/// An open lock file and the process that opened it.
///
/// `flock` locks belong to an open file description, which a forked child shares with its
/// parent: both would "hold" the same lock at once. So a process that finds a handle opened
/// by another pid (its parent, before a fork) opens the file again for itself.
pub(super) struct LockFile {
    pub(super) pid: u32,
    pub(super) file: File,
}

/// The lock file in `slot`, opened (again) by this process when needed.
pub(super) fn own_lock_file(
    slot: &mut Option<LockFile>,
    open: impl FnOnce() -> Result<File>,
) -> Result<&File> {
    let pid = std::process::id();
    if slot.as_ref().map_or(true, |l| l.pid != pid) {
        *slot = Some(LockFile { pid, file: open()? });
    }
    Ok(&slot.as_ref().expect("set above").file)
}

/// Holds one shard's lock: the process mutex and the `flock` on the shard's lock file.
pub(super) struct ShardGuard<'a> {
    pub(super) guard: MutexGuard<'a, Option<LockFile>>,
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.guard.as_ref() {
            funlock(&l.file);
        }
    }
}

/// Holds the eviction lock of the directory (process mutex and `flock`).
pub(super) struct EvictGuard<'a> {
    pub(super) state: MutexGuard<'a, EvictState>,
}

impl Drop for EvictGuard<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.state.lock_file.as_ref() {
            funlock(&l.file);
        }
    }
}

pub(super) fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

impl Inner {
    pub(super) fn lock_shard(&self, pack: usize) -> Result<ShardGuard<'_>> {
        let mut guard = self.packs[pack]
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let file = own_lock_file(&mut guard, || {
            let path = self.root.join(LOCK_DIR).join(format!("{pack:02x}"));
            match open_lock_file(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    make_dir(&self.root.join(LOCK_DIR), self.fix_modes)?;
                    open_lock_file(&path)
                }
                other => other,
            }
            .map_err(|e| io_error("open the lock file", &path, e))
        })?;
        flock(file).map_err(|e| io_error("lock", &self.root.join(LOCK_DIR), e))?;
        Ok(ShardGuard { guard })
    }

    /// The eviction lock; `None` when `wait` is false and someone else holds it.
    pub(super) fn lock_evict(&self, wait: bool) -> Result<Option<EvictGuard<'_>>> {
        let mut state = if wait {
            self.evict.lock().unwrap_or_else(PoisonError::into_inner)
        } else {
            match self.evict.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return Ok(None),
            }
        };
        let file = own_lock_file(&mut state.lock_file, || {
            let path = self.root.join(LOCK_DIR).join(EVICT_LOCK);
            open_lock_file(&path).map_err(|e| io_error("open the lock file", &path, e))
        })?;
        if wait {
            flock(file).map_err(|e| io_error("lock", &self.root.join(LOCK_DIR), e))?;
        } else {
            match fs4::FileExt::try_lock(file) {
                Ok(()) => {}
                Err(fs4::TryLockError::WouldBlock) => return Ok(None),
                Err(fs4::TryLockError::Error(e)) => {
                    return Err(io_error("lock", &self.root.join(LOCK_DIR), e))
                }
            }
        }
        Ok(Some(EvictGuard { state }))
    }

    /// True when a reconciling scan is due (and this caller has claimed it): the time of the
    /// last one is shared through the index file.
    pub(super) fn scan_due(&self) -> Result<bool> {
        self.update_index(|last_scan, now| {
            let due = now.saturating_sub(*last_scan) >= self.reconcile_interval_ms;
            if due {
                *last_scan = now;
            }
            due
        })
    }

    /// Runs `f(last_scan_ms, now_ms)` on the index file under its lock.
    pub(super) fn update_index<R>(&self, f: impl FnOnce(&mut u64, u64) -> R) -> Result<R> {
        let mut slot = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        let path = self.root.join(INDEX_FILE);
        let file = own_lock_file(&mut slot, || {
            open_lock_file(&path).map_err(|e| io_error("open the index file", &path, e))
        })?;
        flock(file).map_err(|e| io_error("lock", &path, e))?;
        let result = (|| {
            let mut buf = [0u8; INDEX_LEN];
            let n = file
                .read_at(&mut buf, 0)
                .map_err(|e| io_error("read", &path, e))?;
            let mut last_scan = if n == INDEX_LEN && buf[0..4] == INDEX_MAGIC {
                u64::from_le_bytes(buf[24..32].try_into().expect("8 bytes"))
            } else {
                0
            };
            let r = f(&mut last_scan, unix_ms());
            let mut out = [0u8; INDEX_LEN];
            out[0..4].copy_from_slice(&INDEX_MAGIC);
            out[4..6].copy_from_slice(&INDEX_VERSION.to_le_bytes());
            out[24..32].copy_from_slice(&last_scan.to_le_bytes());
            file.write_all_at(&out, 0)
                .map_err(|e| io_error("write", &path, e))?;
            Ok(r)
        })();
        funlock(file);
        result
    }
}
