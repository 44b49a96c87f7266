//! The pool of the async connections: at most `pool_size` open, idle ones reused LIFO, a
//! waiter woken when one comes back; fork-safe like the blocking pool.

use super::conn::PgConn;
use crate::error::{Error, ErrorKind, Result};
use crate::fork::Conns;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub(super) struct AsyncPool {
    state: Mutex<State>,
    max_open: usize,
    /// The server, for errors (no password).
    location: String,
}

struct State {
    conns: Conns<PgConn>,
    /// Wakes one waiter when a connection comes back or a slot frees up. Replaced in a
    /// forked child: the parent's waiters are not in it.
    returned: Arc<Notify>,
    fork: u64,
}

/// What a checkout found. (Returned once per checkout and moved out at once: boxing the
/// connection would only add an allocation per call.)
#[allow(clippy::large_enum_variant)]
enum Found {
    Idle(PgConn, u64),
    /// A slot to open a connection in (counted as open already), in this fork generation.
    Room(u64),
    Busy(Arc<Notify>),
}

impl AsyncPool {
    pub(super) fn new(max_open: usize, location: String) -> AsyncPool {
        AsyncPool {
            state: Mutex::new(State {
                conns: Conns::new(),
                returned: Arc::new(Notify::new()),
                fork: crate::fork::generation(),
            }),
            max_open: max_open.max(1),
            location,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = crate::fork::generation();
        if s.fork != now {
            // Neither used nor dropped (its waiter list points into the parent's tasks).
            std::mem::forget(std::mem::replace(&mut s.returned, Arc::new(Notify::new())));
            s.fork = now;
        }
        // A child of fork() never uses (nor closes) its parent's connections.
        s.conns.adopt();
        s
    }

    fn take(&self) -> Found {
        let mut s = self.lock();
        let fork = s.conns.fork();
        if let Some(conn) = s.conns.idle.pop() {
            return Found::Idle(conn, fork);
        }
        if s.conns.open < self.max_open {
            s.conns.open += 1;
            return Found::Room(fork);
        }
        Found::Busy(Arc::clone(&s.returned))
    }

    /// An idle connection, or a new one from `connect`, waiting at most `wait` while
    /// `pool_size` are in use. The flag is true for a new connection.
    pub(super) async fn get<F: Future<Output = Result<PgConn>>>(
        &self,
        wait: Duration,
        connect: impl FnOnce() -> F,
    ) -> Result<(AsyncPooled<'_>, bool)> {
        let deadline = Instant::now() + wait;
        let fork = loop {
            let returned = match self.take() {
                Found::Idle(conn, fork) => return Ok((AsyncPooled::new(self, conn, fork), false)),
                Found::Room(fork) => break fork,
                Found::Busy(returned) => returned,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "all {} async connections to {} stayed busy for {wait:?}",
                        self.max_open, self.location
                    ),
                ));
            }
            // A connection given back since `take` left a permit: this returns at once. The
            // wait is sliced: a waiter that took a permit and was then dropped (a cancelled
            // call) leaves a connection idle with nobody woken, so look again now and then.
            let woken = {
                let _timer = crate::runtime::handle()?.enter();
                tokio::time::timeout(left.min(REGRAB), returned.notified())
            };
            let _ = woken.await;
        };
        // The slot is given back if connecting fails or the caller stops waiting.
        let mut slot = Slot {
            pool: self,
            fork,
            kept: false,
        };
        let conn = connect().await?;
        slot.kept = true;
        Ok((AsyncPooled::new(self, conn, fork), true))
    }

    /// A connection checked out in fork generation `fork` left the pool for good.
    fn forget_one(&self, fork: u64) {
        let mut s = self.lock();
        s.conns.forget_one(fork);
        s.returned.notify_one();
    }

    /// Closes every idle connection (after an outage they are all likely broken).
    pub(super) fn clear_idle(&self) {
        let idle = {
            let mut s = self.lock();
            let idle = std::mem::take(&mut s.conns.idle);
            s.conns.open -= idle.len();
            for _ in 0..idle.len() {
                s.returned.notify_one();
            }
            idle
        };
        drop(idle);
    }
}

/// How long a caller waiting for a busy pool sleeps before it looks again (see `get`).
const REGRAB: Duration = Duration::from_millis(20);

/// A counted slot whose connection is being opened.
struct Slot<'a> {
    pool: &'a AsyncPool,
    fork: u64,
    kept: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.pool.forget_one(self.fork);
        }
    }
}

/// A connection borrowed from an [`AsyncPool`]; returned to it on drop unless discarded.
///
/// Also when the future that holds it is dropped mid-operation: tokio-postgres matches
/// replies to requests (a reply nobody waits for any more is read and discarded) and rolls
/// back a transaction that was not committed, so the connection serves the next statement
/// correctly.
pub(super) struct AsyncPooled<'a> {
    pool: &'a AsyncPool,
    conn: Option<PgConn>,
    fork: u64,
}

impl<'a> AsyncPooled<'a> {
    fn new(pool: &'a AsyncPool, conn: PgConn, fork: u64) -> Self {
        AsyncPooled {
            pool,
            conn: Some(conn),
            fork,
        }
    }

    /// Closes the connection instead of returning it to the pool.
    pub(super) fn discard(mut self) {
        if let Some(conn) = self.conn.take() {
            crate::fork::release(conn, self.fork);
        }
        self.pool.forget_one(self.fork);
    }
}

impl std::ops::Deref for AsyncPooled<'_> {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        self.conn
            .as_ref()
            .expect("a pooled connection is present until dropped")
    }
}

impl std::ops::DerefMut for AsyncPooled<'_> {
    fn deref_mut(&mut self) -> &mut PgConn {
        self.conn
            .as_mut()
            .expect("a pooled connection is present until dropped")
    }
}

impl Drop for AsyncPooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut s = self.pool.lock();
            s.conns.give_back(conn, self.fork);
            s.returned.notify_one();
        }
    }
}
