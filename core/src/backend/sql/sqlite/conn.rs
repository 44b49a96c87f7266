//! Connections of the `sqlite://` backend: opening one (WAL, `synchronous`, the busy
//! timeout, the `polycache_incr` function), taking one from the pool for a read or a write
//! (creating the file and table first when they may be missing), and turning SQLite's
//! failures into polycache's errors.

use super::SqliteBackend;
use crate::backend::apply_delta;
use crate::error::{Error, ErrorKind, Result};
use crate::pool::Lease;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The kind of a SQLite failure: a lock held beyond the busy timeout is a timeout.
fn kind_of(err: &rusqlite::Error) -> ErrorKind {
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => ErrorKind::Timeout,
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::NoLargeFileSupport
            | ErrorCode::FileLockingProtocolFailed,
        ) => ErrorKind::Io,
        Some(ErrorCode::TooBig) => ErrorKind::ValueTooLarge,
        _ => ErrorKind::Backend,
    }
}

/// `PRAGMA journal_mode = WAL` on a new connection. Another process may be switching the
/// same new database (or recovering its log after a crash) at that moment, and SQLite answers
/// that "database is locked" at once, without waiting `busy_timeout`; so the switch is retried
/// every few milliseconds until `busy_timeout` has passed, as a locked write would wait.
fn switch_to_wal(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    let deadline = Instant::now() + busy_timeout;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Err(err) if kind_of(&err) == ErrorKind::Timeout && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            done => return done.map(drop),
        }
    }
}

impl SqliteBackend {
    pub(super) fn connect(&self) -> Result<Connection> {
        let i = &self.inner;
        let open = || -> rusqlite::Result<Connection> {
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(&i.path, flags)?;
            conn.busy_timeout(i.busy_timeout)?;
            {
                // Switching a new database to WAL takes its exclusive lock, and SQLite answers
                // a connection that tries while another one switches "database is locked" at
                // once, busy_timeout or not. So this process's connections switch one at a
                // time: the first one switches, the others find WAL and change nothing.
                static WAL_SWITCH: Mutex<()> = Mutex::new(());
                let _one_at_a_time = WAL_SWITCH.lock().unwrap_or_else(PoisonError::into_inner);
                switch_to_wal(&conn, i.busy_timeout)?;
            }
            conn.execute_batch(&format!("PRAGMA synchronous = {}", i.synchronous))?;
            conn.set_prepared_statement_cache_capacity(64);
            conn.create_scalar_function(
                "polycache_incr",
                2,
                FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
                |ctx| {
                    let delta: i64 = ctx.get(1)?;
                    Ok(match ctx.get_raw(0) {
                        ValueRef::Blob(b) | ValueRef::Text(b) => apply_delta(b, delta)
                            .ok()
                            .map(|n| n.to_string().into_bytes()),
                        _ => None,
                    })
                },
            )?;
            Ok(conn)
        };
        open().map_err(|e| self.fail("opening a connection", e))
    }

    /// A connection for a write: creates the directories, the file and the table first
    /// when they may be missing.
    #[inline]
    pub(super) fn conn(&self) -> Result<Lease<'_, Connection>> {
        if !self.inner.ready.load(Ordering::Acquire) {
            return self.prepare();
        }
        self.pooled()
    }

    /// A connection, after creating what may be missing: directories, file, table.
    pub(super) fn prepare(&self) -> Result<Lease<'_, Connection>> {
        self.create_dirs()?;
        let conn = self.pooled()?;
        self.create_on(&conn)?;
        self.inner.ready.store(true, Ordering::Release);
        Ok(conn)
    }

    /// A connection for a read, or `None` while the table does not exist (nothing is
    /// stored; a read never creates the database).
    #[inline]
    pub(super) fn read_conn(&self) -> Result<Option<Lease<'_, Connection>>> {
        if !self.inner.ready.load(Ordering::Acquire) {
            if !Path::new(&self.inner.path).exists() {
                return Ok(None);
            }
            let conn = self.pooled()?;
            if !self.table_exists(&conn)? {
                return Ok(None);
            }
            self.inner.ready.store(true, Ordering::Release);
            return Ok(Some(conn));
        }
        self.pooled().map(Some)
    }

    #[inline]
    pub(super) fn pooled(&self) -> Result<Lease<'_, Connection>> {
        self.inner.pool.lease(|| self.connect())
    }

    #[cold]
    pub(super) fn fail(&self, what: &str, err: rusqlite::Error) -> Error {
        if what != "creating the table" && err.to_string().contains("no such table") {
            // Someone dropped the table: this call fails, the next finds it again.
            self.inner.ready.store(false, Ordering::Release);
            if let Err(e) = self.create_table() {
                log::warn!("polycache: re-creating the dropped table failed: {e}");
            }
        }
        let kind = kind_of(&err);
        let why = if kind == ErrorKind::Timeout {
            format!(
                " (the database stayed locked beyond busy_timeout={:?})",
                self.inner.busy_timeout
            )
        } else {
            String::new()
        };
        Error::new(
            kind,
            format!("sqlite {what} failed on {}{why}", self.inner.location),
        )
        .with_source(err)
    }
}
