//! Running an operation of the `postgres://` backend on a pooled connection: leasing one
//! (blocking or async, from the shared pool, `crate::pool`), creating the table when it is
//! missing, and the [`Retry`] rules both APIs follow when a statement fails.

use super::conn::{connection_lost, sqlstate, PgConn, PgError};
use super::ops::{self, Fail, Op};
use super::{PostgresBackend, MAX_DEADLOCK_RETRIES};
use crate::error::Result;
use crate::pool::{Lease, Pool};
use std::sync::atomic::Ordering;

/// What a failed attempt of an operation leads to.
enum Next {
    Again,
    CreateTable,
    /// A read found no table: it answers as for a missing key and creates nothing.
    Missing,
    Fail,
}

/// The retry rules of an operation, the same for both APIs: a read or an idempotent write
/// (`safe`) that finds its pooled connection broken runs once more on a new one; a safe
/// statement the server rolled back to break a deadlock runs again (up to
/// [`MAX_DEADLOCK_RETRIES`] times); a missing table is created and the operation retried,
/// unless the operation only reads (`reads`): then it answers as for a missing key.
struct Retry {
    safe: bool,
    reads: bool,
    first: bool,
    deadlocks: u32,
}

impl Retry {
    fn new(safe: bool, reads: bool) -> Retry {
        Retry {
            safe,
            reads,
            first: true,
            deadlocks: 0,
        }
    }

    /// `lost`: the connection is gone; `fresh`: it was opened for this attempt.
    fn next(&mut self, e: &PgError, lost: bool, fresh: bool) -> Next {
        if lost {
            if self.safe && !fresh && self.first {
                self.first = false;
                return Next::Again;
            }
            return Next::Fail;
        }
        match sqlstate(e) {
            // A deadlock with another many-row statement (a trim, a delete_many): the server
            // rolled this one back; under heavy contention a new attempt may meet another.
            Some("40P01") if self.safe && self.deadlocks < MAX_DEADLOCK_RETRIES => {
                self.deadlocks += 1;
                Next::Again
            }
            // No table yet (or it went away): nothing to read.
            Some("42P01") if self.reads => Next::Missing,
            // The table went away (or never was).
            Some("42P01") if self.first => {
                self.first = false;
                Next::CreateTable
            }
            _ => Next::Fail,
        }
    }
}

impl PostgresBackend {
    fn checkout(&self) -> Result<Lease<'_, PgConn>> {
        self.inner.pool.lease(|| self.connect())
    }

    /// Creates the table unless it exists, on a blocking connection.
    pub(super) fn create_now(&self) -> Result<()> {
        let mut conn = self.checkout()?;
        match conn.block_on(&self.inner, &(), ops::create_table) {
            Ok(()) => Ok(()),
            Err(Fail::Cache(e)) => Err(e),
            Err(Fail::Pg(e)) => {
                if connection_lost(&e) {
                    conn.discard();
                    self.inner.pool.discard_idle();
                }
                Err(self.fail("creating the table", &e))
            }
        }
    }

    pub(super) fn ensure_table(&self) -> Result<()> {
        if self.inner.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _guard = self
            .inner
            .create_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.inner.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        self.create_now()?;
        self.inner.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// The async twin of `ensure_table`: several tasks may create at once (the advisory
    /// lock serializes them on the server, and creation is idempotent).
    pub(super) async fn ensure_table_async(&self) -> Result<()> {
        if self.inner.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut conn = self.checkout_async().await?;
        match ops::create(&self.inner, &mut conn.link).await {
            Ok(()) => {
                self.inner.ready.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                if connection_lost(&e) {
                    conn.discard();
                    self.inner.async_pool.discard_idle();
                }
                Err(self.fail("creating the table", &e))
            }
        }
    }

    async fn checkout_async(&self) -> Result<Lease<'_, PgConn>> {
        self.inner
            .async_pool
            .lease_async(|| self.connect_async())
            .await
    }

    /// Runs `op` on a blocking connection, the calling thread driving it, with the
    /// [`Retry`] rules.
    pub(super) fn run<A: Sync, T: Send>(
        &self,
        what: &str,
        retry_safe: bool,
        args: &A,
        op: Op<A, T>,
    ) -> Result<T> {
        self.run_or(what, retry_safe, args, op, None)
    }

    /// `run`, where `missing` (for an operation that only reads) answers instead when
    /// there is no table: no table is created before the first write.
    pub(super) fn run_or<A: Sync, T: Send>(
        &self,
        what: &str,
        retry_safe: bool,
        args: &A,
        op: Op<A, T>,
        missing: Option<fn(&A) -> Result<T>>,
    ) -> Result<T> {
        if missing.is_none() {
            self.ensure_table()?;
        }
        let mut retry = Retry::new(retry_safe, missing.is_some());
        loop {
            let mut conn = self.checkout()?;
            let e = match conn.block_on(&self.inner, args, op) {
                Ok(v) => return Ok(v),
                Err(Fail::Cache(e)) => return Err(e),
                Err(Fail::Pg(e)) => e,
            };
            match self.after_failure(conn, &self.inner.pool, &e, &mut retry) {
                Next::Again => {}
                Next::CreateTable => self.ensure_table()?,
                Next::Missing => return self.no_table(what, &e, args, missing),
                Next::Fail => return Err(self.fail(what, &e)),
            }
        }
    }

    /// Runs `op` on an async connection, with the [`Retry`] rules.
    pub(super) async fn run_async<A: Sync, T: Send>(
        &self,
        what: &str,
        retry_safe: bool,
        args: &A,
        op: Op<A, T>,
    ) -> Result<T> {
        self.run_or_async(what, retry_safe, args, op, None).await
    }

    /// `run_async`, where `missing` (for an operation that only reads) answers instead when
    /// there is no table: no table is created before the first write.
    pub(super) async fn run_or_async<A: Sync, T: Send>(
        &self,
        what: &str,
        retry_safe: bool,
        args: &A,
        op: Op<A, T>,
        missing: Option<fn(&A) -> Result<T>>,
    ) -> Result<T> {
        if missing.is_none() {
            self.ensure_table_async().await?;
        }
        let mut retry = Retry::new(retry_safe, missing.is_some());
        loop {
            let mut conn = self.checkout_async().await?;
            let e = match op(&self.inner, &mut conn.link, args).await {
                Ok(v) => return Ok(v),
                Err(Fail::Cache(e)) => return Err(e),
                Err(Fail::Pg(e)) => e,
            };
            match self.after_failure(conn, &self.inner.async_pool, &e, &mut retry) {
                Next::Again => {}
                Next::CreateTable => self.ensure_table_async().await?,
                Next::Missing => return self.no_table(what, &e, args, missing),
                Next::Fail => return Err(self.fail(what, &e)),
            }
        }
    }

    /// What the failed attempt on `conn` (leased from `pool`) leads to, by the [`Retry`]
    /// rules, with the connection put right first: a lost one is discarded, and the idle
    /// ones of `pool` with it; one that found no table forgets its prepared statements
    /// (they name the table that went away). Before the table is created again, it counts
    /// as missing and both pools' idle connections go (their statements with them).
    fn after_failure(
        &self,
        mut conn: Lease<'_, PgConn>,
        pool: &Pool<PgConn>,
        e: &PgError,
        retry: &mut Retry,
    ) -> Next {
        let lost = connection_lost(e) || conn.link.is_closed();
        let next = retry.next(e, lost, !conn.reused());
        if lost {
            conn.discard();
            pool.discard_idle();
        } else if let Next::CreateTable | Next::Missing = next {
            conn.link.forget_statements();
            drop(conn);
        }
        if let Next::CreateTable = next {
            self.inner.ready.store(false, Ordering::Release);
            self.inner.async_pool.discard_idle();
            self.inner.pool.discard_idle();
        }
        next
    }

    /// What a read answers when there is no table: `missing`'s answer; the next write
    /// creates the table.
    fn no_table<A, T>(
        &self,
        what: &str,
        e: &PgError,
        args: &A,
        missing: Option<fn(&A) -> Result<T>>,
    ) -> Result<T> {
        self.inner.ready.store(false, Ordering::Release);
        match missing {
            Some(missing) => missing(args),
            None => Err(self.fail(what, e)),
        }
    }
}
