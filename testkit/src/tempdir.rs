//! [`TempDir`]: a directory removed with its contents when dropped.

use crate::process::Account;
use crate::TestkitError;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A directory removed, with everything in it, when dropped: the servers' data directories,
/// and the scratch directories of the tests.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Makes `polycache-<what>-<unique>` (mode 700) in the temporary directory, owned by
    /// `owner` when given.
    ///
    /// A directory for another owner is made under the system temporary directory only if
    /// that user can reach it, else under `/tmp`.
    pub(crate) fn create(what: &str, owner: Option<&Account>) -> Result<Self, TestkitError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut base = std::env::temp_dir();
        if owner.is_some() && !traversable_by_others(&base) {
            base = PathBuf::from("/tmp");
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("polycache-{what}-{}-{n}-{nanos:x}", std::process::id());
            let path = base.join(name);
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    let dir = TempDir { path };
                    if let Some(account) = owner {
                        std::os::unix::fs::chown(&dir.path, Some(account.uid), Some(account.gid))
                            .map_err(|e| {
                            TestkitError::io(
                                format!("giving {} to user {}", dir.path.display(), account.name),
                                e,
                            )
                        })?;
                    }
                    return Ok(dir);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(TestkitError::io(
                        format!("creating a temporary directory in {}", base.display()),
                        e,
                    ))
                }
            }
        }
        Err(TestkitError::io(
            format!("creating a temporary directory in {}", base.display()),
            io::Error::new(io::ErrorKind::AlreadyExists, "every name tried exists"),
        ))
    }

    /// A fresh `polycache-<what>-<unique>` directory (mode 700) of the current user, for a
    /// test's files. Panics when it cannot be made: a test cannot go on without it.
    pub fn new(what: &str) -> Self {
        Self::create(what, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Whether every directory from `/` down to `dir` lets other users through (`o+x`).
fn traversable_by_others(dir: &Path) -> bool {
    dir.ancestors().all(|d| {
        fs::metadata(d)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}
