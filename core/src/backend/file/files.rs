//! The files of the cache directory itself: a large entry's own file (read whole and verified,
//! written as a temporary file renamed into place), shard directories and their listing,
//! temporary files (their names, modes, and the sweep of stale ones), and I/O errors that name
//! the path.

use super::format::{
    entry_checksum, is_entry_name, parse_entry_header, parse_hex, shard_of, EntryHeader,
    ENTRY_HEADER_LEN,
};
use super::{Inner, FIRST_READ, PACK_DIR, STALE_TEMP, TEMP_PREFIX};

use crate::error::{Error, ErrorKind, Result};
use crate::value::Value;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};
use std::{fs, io};

/// What reading an entry file found.
pub(super) enum Load {
    Missing,
    /// Truncated, corrupt or foreign.
    Bad,
    Found(Loaded),
}

pub(super) struct Loaded {
    pub(super) header: EntryHeader,
    /// The whole file.
    pub(super) buf: Vec<u8>,
}

impl Loaded {
    pub(super) fn key(&self) -> &[u8] {
        &self.buf[ENTRY_HEADER_LEN..ENTRY_HEADER_LEN + self.header.key_len]
    }
    pub(super) fn value(&self) -> &[u8] {
        &self.buf[ENTRY_HEADER_LEN + self.header.key_len..]
    }
    pub(super) fn into_value(mut self) -> Value {
        let start = ENTRY_HEADER_LEN + self.header.key_len;
        if self.buf.len() - start <= 256 {
            Value::from(&self.buf[start..])
        } else {
            self.buf.drain(..start);
            Value::from(self.buf)
        }
    }
}

pub(super) fn io_error(what: &str, path: &Path, err: io::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("file:// cache: cannot {what} {}", path.display()),
    )
    .with_source(err)
}

/// `errno` values (the same on Linux, the BSDs and macOS) that std names only from 1.83 on.
pub(super) const ENOTDIR: i32 = 20;

pub(super) const EISDIR: i32 = 21;

/// "No such file", or a path component that is not a directory (`ENOTDIR`): no entry.
pub(super) fn is_absent(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(ENOTDIR)
}

/// Unique among the processes sharing a directory: pid, a per-process nonce, a sequence.
pub(super) fn temp_name() -> String {
    static NONCE: OnceLock<u64> = OnceLock::new();
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nonce = *NONCE.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = format!("{}:{t}:{:p}", std::process::id(), &SEQ);
        xxhash_rust::xxh3::xxh3_64(seed.as_bytes())
    });
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{}.{nonce:016x}.{seq}", std::process::id())
}

/// True when a file created with mode 0600 does not get it (a umask that strips owner bits).
pub(super) fn probe_umask(root: &Path) -> Result<bool> {
    let probe = root.join(temp_name());
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .map_err(|e| io_error("write in the cache directory", root, e))?;
    let mode = file.metadata().map(|m| m.mode() & 0o777);
    let _ = fs::remove_file(&probe);
    Ok(mode.map_err(|e| io_error("inspect a file in", root, e))? != 0o600)
}

pub(super) fn make_dir(path: &Path, fix_modes: bool) -> Result<()> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {
            if fix_modes {
                fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                    .map_err(|e| io_error("set the mode of", path, e))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_error("create the directory", path, e)),
    }
}

pub(super) fn remove_if_stale(entry: &fs::DirEntry) {
    let stale = entry
        .metadata()
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE_TEMP);
    if stale {
        let _ = fs::remove_file(entry.path());
    }
}

impl Inner {
    pub(super) fn shard_dir(&self, shard: usize) -> PathBuf {
        self.root.join(format!("{shard:02x}"))
    }

    pub(super) fn entry_path(&self, hash: u128) -> PathBuf {
        use std::fmt::Write as _;
        // One allocation: `{root}/{shard}/{hash}`.
        let mut p = String::with_capacity(self.root_str.len() + 36);
        p.push_str(&self.root_str);
        let _ = write!(p, "/{:02x}/{hash:032x}", shard_of(hash));
        PathBuf::from(p)
    }

    pub(super) fn pack_path(&self, pack: usize) -> PathBuf {
        self.root.join(PACK_DIR).join(format!("{pack:x}"))
    }

    /// Reads the large entry file at `path`. I/O errors other than "not there" are errors.
    pub(super) fn load(&self, path: &Path) -> Result<Load> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if is_absent(&e) => return Ok(Load::Missing),
            Err(e) => return Err(io_error("open", path, e)),
        };
        self.read_entry(file, path)
    }

    /// Reads the large entry file `file`, opened from `path`, from the start.
    pub(super) fn read_entry(&self, mut file: File, path: &Path) -> Result<Load> {
        let mut buf = vec![0u8; FIRST_READ];
        let mut n = 0;
        loop {
            let got = match file.read(&mut buf[n..]) {
                Ok(g) => g,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A directory where an entry belongs: foreign, not an I/O failure.
                Err(e) if e.raw_os_error() == Some(EISDIR) => return Ok(Load::Bad),
                Err(e) => return Err(io_error("read", path, e)),
            };
            n += got;
            if got == 0 {
                break;
            }
            if n < ENTRY_HEADER_LEN {
                continue;
            }
            let Some(header) = parse_entry_header(&buf[..n]) else {
                return Ok(Load::Bad);
            };
            let total = header.total();
            if n == total {
                buf.truncate(n);
                let crc = u32::from_le_bytes(buf[28..32].try_into().expect("4 bytes"));
                if entry_checksum(&buf) != crc {
                    return Ok(Load::Bad);
                }
                return Ok(Load::Found(Loaded { header, buf }));
            }
            if n > total {
                return Ok(Load::Bad);
            }
            if buf.len() < total {
                // Size the buffer from the file, never from the header alone.
                let size = file
                    .metadata()
                    .map_err(|e| io_error("inspect", path, e))?
                    .len();
                if size != total as u64 {
                    return Ok(Load::Bad);
                }
                buf.resize(total, 0);
            }
        }
        Ok(Load::Bad)
    }

    /// Writes `bytes` as the large entry file at `path` (temporary file, then rename). Call
    /// with the pack's lock held.
    pub(super) fn write_entry(&self, shard: usize, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().expect("entry paths have a directory");
        let (tmp, mut file) =
            self.create_temp(dir, || make_dir(&self.shard_dir(shard), self.fix_modes))?;
        let written = (|| {
            file.write_all(bytes)?;
            if self.fsync {
                file.sync_data()?;
            }
            Ok(())
        })();
        drop(file);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("write", &tmp, e));
        }
        self.rename_into_place(&tmp, path, dir)
    }

    /// Creates a new temporary file (mode 0600) in `dir`, calling `make` to create `dir` once
    /// when it is missing.
    pub(super) fn create_temp(
        &self,
        dir: &Path,
        make: impl FnOnce() -> Result<()>,
    ) -> Result<(PathBuf, File)> {
        let mut make = Some(make);
        loop {
            let tmp = dir.join(temp_name());
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(f) => {
                    if self.fix_modes {
                        f.set_permissions(fs::Permissions::from_mode(0o600))
                            .map_err(|e| io_error("set the mode of", &tmp, e))?;
                    }
                    return Ok((tmp, f));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => match make.take() {
                    Some(make) => make()?,
                    None => return Err(io_error("create", &tmp, e)),
                },
                // A name left by a killed process whose pid came back: take the next one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error("create", &tmp, e)),
            }
        }
    }

    pub(super) fn rename_into_place(&self, tmp: &Path, path: &Path, dir: &Path) -> Result<()> {
        if let Err(e) = fs::rename(tmp, path) {
            let _ = fs::remove_file(tmp);
            return Err(io_error("rename into place", path, e));
        }
        if self.fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("sync", dir, e))?;
        }
        Ok(())
    }

    pub(super) fn check_size(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let size = (ENTRY_HEADER_LEN + key.len()) as u64 + value.len() as u64;
        match self.max_bytes {
            Some(max) if size > max => Err(Error::new(
                ErrorKind::ValueTooLarge,
                format!(
                    "value of {} bytes is too large for this file:// cache (max_bytes={max})",
                    value.len()
                ),
            )),
            _ if key.len() > u32::MAX as usize => Err(Error::new(
                ErrorKind::InvalidKey,
                "key is too long for a file:// cache",
            )),
            _ => Ok(()),
        }
    }

    /// Lists one shard directory of large files: the hashes of the entry files in it, and
    /// removes stale temporary files.
    pub(super) fn list_shard(&self, shard: usize) -> Result<Vec<u128>> {
        let dir = self.shard_dir(shard);
        let entries = match fs::read_dir(&dir) {
            Ok(it) => it,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("list", &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &dir, e))?;
            let name = entry.file_name();
            let name = name.as_encoded_bytes();
            if is_entry_name(name) {
                if let Some(h) = parse_hex(name) {
                    out.push(h);
                }
            } else if name.starts_with(TEMP_PREFIX.as_bytes()) {
                remove_if_stale(&entry);
            }
        }
        Ok(out)
    }

    /// Removes the stale temporary files of the pack directory.
    pub(super) fn sweep_pack_temps(&self) {
        let dir = self.root.join(PACK_DIR);
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .as_encoded_bytes()
                    .starts_with(TEMP_PREFIX.as_bytes())
                {
                    remove_if_stale(&entry);
                }
            }
        }
    }
}
