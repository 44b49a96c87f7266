//! The one connection pool of the backends that hold connections: Redis' and Memcached's
//! blocking connections, PostgreSQL's blocking and async ones, SQLite's.
//!
//! A [`Pool`] lends connections ([`Pool::lease`] from a thread, [`Pool::lease_async`] from
//! a task; neither spends a thread on waiting) and takes them back when the [`Lease`] is
//! dropped. It keeps four promises for every backend:
//!
//! - **limits**: at most `max_open` connections are open; a caller that finds none idle and
//!   no room waits up to `wait` for one to come back, then gets the backend's "stayed busy"
//!   error; at most `max_idle` wait idle (the others are closed when given back);
//! - **health**: a connection the backend saw break is [`Lease::discard`]ed, never given
//!   back, and [`Pool::discard_idle`] drops the idle ones with it (a server restart closes
//!   them all); [`Pool::retire`] also closes those leased at the time when they come back;
//! - **fork generation**: a connection opened before `fork()` is never used in the child
//!   (two processes' requests would interleave on one socket), nor closed there (closing
//!   could end the parent's session: a TLS close_notify, a protocol goodbye);
//! - a lease dropped while its thread panics is discarded: the connection may be mid-reply.
//!
//! What a backend does with its connection (retrying once on a stale one, following a
//! redirection, demoting a Sentinel master) stays in the backend.

// Each backend uses part of it (only PostgreSQL waits from async code, SQLite never
// discards): a build with some of them leaves the rest unused.
#![cfg_attr(
    not(all(
        feature = "redis",
        feature = "memcached",
        feature = "sqlite",
        feature = "postgres"
    )),
    allow(dead_code)
)]

use crate::error::Result;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How many connections a [`Pool`] may hold, and how long a caller waits for one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections open at once (idle and leased); at least 1.
    pub(crate) max_open: usize,
    /// Connections kept idle; a connection given back beyond them is closed.
    pub(crate) max_idle: usize,
    /// How long a caller waits while `max_open` are leased (`None`: as long as it takes).
    pub(crate) wait: Option<Duration>,
}

impl Limits {
    /// `max` connections at most, all of them kept idle when given back.
    pub(crate) fn bounded(max: usize, wait: Option<Duration>) -> Limits {
        Limits {
            max_open: max.max(1),
            max_idle: max.max(1),
            wait,
        }
    }
}

/// The error a caller gets when every connection stayed leased for `wait`: the backend's
/// own words (its server, the option to raise), from the limit and the time waited.
type Busy = Box<dyn Fn(usize, Duration) -> crate::Error + Send + Sync>;

/// Connections to one server (or one Cluster, one database file), shared by every thread
/// and task. `Send + Sync` when the connections are `Send`. Never panics.
pub(crate) struct Pool<C> {
    state: Mutex<State<C>>,
    /// Threads waiting in [`Pool::lease`] sleep on it.
    returned: Condvar,
    limits: Limits,
    busy: Busy,
}

struct State<C> {
    /// Idle connections, with the health epoch they were opened in; reused LIFO. Boxed, so
    /// that a lease and a give-back move a pointer rather than the connection.
    idle: Vec<(Box<C>, u64)>,
    /// Connections open in all: idle, leased, or being opened.
    open: usize,
    /// The fork generation these connections belong to.
    fork: u64,
    /// Bumped by [`Pool::retire`]: a connection of an older epoch is not reused.
    epoch: u64,
    /// Threads asleep on `returned`, so giving back wakes (a system call) only when needed.
    sleepers: usize,
    /// Tasks waiting on `notify`.
    waiters: usize,
    /// Wakes one waiting task when a connection comes back or room frees up. Replaced in a
    /// forked child: the parent's waiters are not in it.
    notify: Arc<Notify>,
}

impl<C> State<C> {
    /// One connection left the pool for good (closed or forgotten): room for another.
    fn forget_one(&mut self, fork: u64) {
        if fork == self.fork {
            self.open = self.open.saturating_sub(1);
        }
    }
}

/// What a look into the pool found.
enum Found<C> {
    Idle(Box<C>, u64),
    /// Room to open a connection in (counted as open already).
    Room,
    /// Every connection is leased.
    Busy,
}

/// How long a task waiting for a busy pool sleeps before it looks again: a waiter that was
/// woken and then dropped (a cancelled call) leaves a connection idle with nobody woken.
const REGRAB: Duration = Duration::from_millis(20);

impl<C> Pool<C> {
    /// An empty pool (connections are opened when first leased); `busy` words the error of
    /// a caller that waited `wait` in vain.
    pub(crate) fn new(
        limits: Limits,
        busy: impl Fn(usize, Duration) -> crate::Error + Send + Sync + 'static,
    ) -> Pool<C> {
        Pool {
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                fork: crate::fork::generation(),
                epoch: 0,
                sleepers: 0,
                waiters: 0,
                notify: Arc::new(Notify::new()),
            }),
            returned: Condvar::new(),
            limits: Limits {
                max_open: limits.max_open.max(1),
                ..limits
            },
            busy: Box::new(busy),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<C>> {
        // A panic elsewhere cannot leave the state inconsistent: every update is one step.
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = crate::fork::generation();
        if s.fork != now {
            // A child of fork(): the idle connections are the parent's; neither used nor
            // closed. The ones its threads had leased are not counted here either, nor are
            // their sleepers and waiters (the waiter list points into the parent's tasks).
            s.fork = now;
            std::mem::take(&mut s.idle)
                .into_iter()
                .for_each(std::mem::forget);
            s.open = 0;
            s.sleepers = 0;
            s.waiters = 0;
            std::mem::forget(std::mem::replace(&mut s.notify, Arc::new(Notify::new())));
        }
        s
    }

    /// An idle connection, room for a new one, or neither.
    fn look(s: &mut State<C>, max_open: usize) -> Found<C> {
        if let Some((conn, epoch)) = s.idle.pop() {
            return Found::Idle(conn, epoch);
        }
        if s.open < max_open {
            s.open += 1;
            return Found::Room;
        }
        Found::Busy
    }

    fn lease_of(&self, conn: Box<C>, fork: u64, epoch: u64, reused: bool) -> Lease<'_, C> {
        Lease {
            pool: self,
            conn: Some(conn),
            fork,
            epoch,
            reused,
        }
    }

    /// Until when a caller that found the pool busy may wait: `limits.wait` from the first
    /// time it found it busy (`since`, set then), so that a lease that finds an idle
    /// connection reads no clock.
    fn deadline(&self, since: &mut Option<Instant>) -> Option<Instant> {
        let wait = self.limits.wait?;
        Some(*since.get_or_insert_with(|| Instant::now() + wait))
    }

    /// The backend's error for a caller that waited `wait` in vain.
    #[cold]
    fn busy(&self) -> crate::Error {
        (self.busy)(self.limits.max_open, self.limits.wait.unwrap_or_default()).pool_busy()
    }

    /// An idle connection, or a new one from `connect`, waiting (the thread asleep) while
    /// `max_open` are leased. A failed `connect` frees its room again.
    pub(crate) fn lease(&self, connect: impl FnOnce() -> Result<C>) -> Result<Lease<'_, C>> {
        let mut since = None;
        let mut s = self.lock();
        loop {
            let (fork, epoch) = (s.fork, s.epoch);
            match Self::look(&mut s, self.limits.max_open) {
                Found::Idle(conn, epoch) => return Ok(self.lease_of(conn, fork, epoch, true)),
                Found::Room => {
                    drop(s);
                    let room = Room {
                        pool: self,
                        fork,
                        kept: false,
                    };
                    return Ok(self.lease_of(Box::new(room.fill(connect())?), fork, epoch, false));
                }
                Found::Busy => {}
            }
            s.sleepers += 1;
            s = match self.deadline(&mut since) {
                None => self.returned.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        s.sleepers -= 1;
                        return Err(self.busy());
                    }
                    self.returned
                        .wait_timeout(s, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
            // In a forked child the count started again at 0 (and this thread is the one
            // that forked, not a sleeper of the child's).
            s.sleepers = s.sleepers.saturating_sub(1);
        }
    }

    /// The async twin of [`Pool::lease`]: the task waits, no thread does.
    pub(crate) async fn lease_async<F: Future<Output = Result<C>>>(
        &self,
        connect: impl FnOnce() -> F,
    ) -> Result<Lease<'_, C>> {
        let mut since = None;
        let (fork, epoch) = loop {
            let notify = {
                let mut s = self.lock();
                let (fork, epoch) = (s.fork, s.epoch);
                match Self::look(&mut s, self.limits.max_open) {
                    Found::Idle(conn, epoch) => return Ok(self.lease_of(conn, fork, epoch, true)),
                    Found::Room => break (fork, epoch),
                    Found::Busy => {
                        s.waiters += 1;
                        Arc::clone(&s.notify)
                    }
                }
            };
            let waiting = Waiting(self);
            let slice = match self.deadline(&mut since) {
                None => REGRAB,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(self.busy());
                    }
                    left.min(REGRAB)
                }
            };
            // A connection given back since the look left a permit: this returns at once.
            let woken = {
                let _timer = crate::runtime::handle()?.enter();
                tokio::time::timeout(slice, notify.notified())
            };
            let _ = woken.await;
            drop(waiting);
        };
        // The room is given back if connecting fails or the caller stops waiting.
        let room = Room {
            pool: self,
            fork,
            kept: false,
        };
        let conn = room.fill(connect().await)?;
        Ok(self.lease_of(Box::new(conn), fork, epoch, false))
    }

    /// Drops every idle connection and closes those leased now when they come back: for a
    /// backend whose leased connections cannot have outlived the failure either (Redis).
    pub(crate) fn retire(&self) {
        self.lock().epoch += 1;
        self.discard_idle();
    }

    /// Drops every idle connection (the server closed them, or soon will have). Those leased
    /// now come back as usual: a backend whose failure may spare them (PostgreSQL, whose
    /// connections are each their own server process; Memcached) keeps them.
    pub(crate) fn discard_idle(&self) {
        let mut s = self.lock();
        let idle = std::mem::take(&mut s.idle);
        s.open -= idle.len();
        let freed = idle.len();
        self.wake(&s, freed);
        drop(s);
        drop(idle);
    }

    /// Adds an open connection to the idle ones (one opened to check the set-up).
    pub(crate) fn seed(&self, conn: C) {
        let mut s = self.lock();
        s.open += 1;
        let epoch = s.epoch;
        s.idle.push((Box::new(conn), epoch));
    }

    /// Wakes up to `n` of the threads and tasks waiting for a connection.
    fn wake(&self, s: &State<C>, n: usize) {
        if s.sleepers > 0 {
            if n == 1 {
                self.returned.notify_one();
            } else {
                self.returned.notify_all();
            }
        }
        for _ in 0..n.min(s.waiters) {
            s.notify.notify_one();
        }
    }

    /// A connection leased in fork generation `fork` left the pool for good.
    fn forget_one(&self, fork: u64) {
        let mut s = self.lock();
        s.forget_one(fork);
        self.wake(&s, 1);
    }

    /// Takes back a connection leased in fork generation `fork` and health epoch `epoch`.
    fn give_back(&self, conn: Box<C>, fork: u64, epoch: u64) {
        let mut s = self.lock();
        if fork == s.fork && epoch == s.epoch && s.idle.len() < self.limits.max_idle {
            s.idle.push((conn, epoch));
            self.wake(&s, 1);
            return;
        }
        // Opened before connections broke, one too many idle, or the parent's.
        s.forget_one(fork);
        self.wake(&s, 1);
        drop(s);
        release(conn, fork);
    }
}

/// Room counted for a connection being opened; freed again unless the connection came.
struct Room<'p, C> {
    pool: &'p Pool<C>,
    fork: u64,
    kept: bool,
}

impl<C> Room<'_, C> {
    fn fill(mut self, opened: Result<C>) -> Result<C> {
        self.kept = opened.is_ok();
        opened
    }
}

impl<C> Drop for Room<'_, C> {
    fn drop(&mut self) {
        if !self.kept {
            self.pool.forget_one(self.fork);
        }
    }
}

/// A task counted among a pool's waiters, until it looks again or stops waiting.
struct Waiting<'p, C>(&'p Pool<C>);

impl<C> Drop for Waiting<'_, C> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.waiters = s.waiters.saturating_sub(1);
    }
}

/// A connection leased from a [`Pool`]: given back when dropped, unless [`Lease::discard`]ed
/// (or dropped while its thread panics).
///
/// Also when the future that holds it is dropped mid-operation: a backend that leases from
/// async code makes its connections safe for that (tokio-postgres reads and drops a reply
/// nobody waits for, and rolls back an uncommitted transaction).
pub(crate) struct Lease<'p, C> {
    pool: &'p Pool<C>,
    conn: Option<Box<C>>,
    /// The fork generation it was leased in: a parent's connection is never pooled (nor
    /// closed) in a child.
    fork: u64,
    epoch: u64,
    reused: bool,
}

impl<C> Lease<'_, C> {
    /// True for an idle connection reused, false for one opened for this lease: only a
    /// reused one may have been closed by the server while it was idle.
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    /// Closes the connection instead of giving it back: it broke, or its state is unknown.
    pub(crate) fn discard(mut self) {
        if let Some(conn) = self.conn.take() {
            release(conn, self.fork);
            self.pool.forget_one(self.fork);
        }
    }
}

impl<C> std::ops::Deref for Lease<'_, C> {
    type Target = C;
    fn deref(&self) -> &C {
        self.conn
            .as_deref()
            .expect("a lease holds its connection until dropped")
    }
}

impl<C> std::ops::DerefMut for Lease<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        self.conn
            .as_deref_mut()
            .expect("a lease holds its connection until dropped")
    }
}

impl<C> Drop for Lease<'_, C> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if std::thread::panicking() {
            release(conn, self.fork);
            self.pool.forget_one(self.fork);
        } else {
            self.pool.give_back(conn, self.fork, self.epoch);
        }
    }
}

/// Lets go of a connection opened in fork generation `fork`: closed in the process that
/// opened it, forgotten (left open, never used) in a child of `fork()`, where it is the
/// parent's.
fn release<C>(conn: Box<C>, fork: u64) {
    if fork == crate::fork::generation() {
        drop(conn);
    } else {
        std::mem::forget(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorKind};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn pool(max: usize, wait: Option<Duration>) -> Pool<usize> {
        Pool::new(Limits::bounded(max, wait), |max, waited| {
            Error::new(
                ErrorKind::Timeout,
                format!("all {max} stayed busy for {waited:?}"),
            )
        })
    }

    fn counter() -> (Arc<AtomicUsize>, impl Fn() -> Result<usize> + Clone) {
        let opened = Arc::new(AtomicUsize::new(0));
        let o = Arc::clone(&opened);
        (opened, move || Ok(o.fetch_add(1, Ordering::SeqCst)))
    }

    #[test]
    fn a_given_back_connection_is_reused() {
        let p = pool(2, Some(Duration::from_secs(5)));
        let (opened, connect) = counter();
        let first = p.lease(connect.clone()).unwrap();
        assert!(!first.reused());
        assert_eq!(*first, 0);
        drop(first);
        let again = p.lease(connect).unwrap();
        assert!(again.reused());
        assert_eq!(*again, 0);
        assert_eq!(opened.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_discarded_connection_is_not_given_back() {
        let p = pool(1, Some(Duration::from_secs(5)));
        let (opened, connect) = counter();
        p.lease(connect.clone()).unwrap().discard();
        // Its room is free again: the only connection allowed opens anew.
        let next = p.lease(connect).unwrap();
        assert!(!next.reused());
        assert_eq!(*next, 1);
        assert_eq!(opened.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_full_pool_answers_the_backends_busy_error() {
        let p = pool(1, Some(Duration::from_millis(1)));
        let (_, connect) = counter();
        let held = p.lease(connect.clone()).unwrap();
        let err = p.lease(connect).err().expect("no room");
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(
            err.to_string().contains("all 1 stayed busy for 1ms"),
            "{err}"
        );
        assert!(
            err.is_pool_busy(),
            "the breaker must tell it from an outage"
        );
        drop(held);
    }

    #[test]
    fn a_failed_connect_frees_its_room() {
        let p = pool(1, Some(Duration::from_millis(1)));
        let err = p
            .lease(|| Err(Error::new(ErrorKind::Connection, "refused")))
            .err()
            .expect("the connect failed");
        assert_eq!(err.kind(), ErrorKind::Connection);
        let (_, connect) = counter();
        assert!(p.lease(connect).is_ok());
    }

    #[test]
    fn a_waiting_thread_gets_the_connection_given_back() {
        let p = Arc::new(pool(1, None));
        let (opened, connect) = counter();
        let held = p.lease(connect.clone()).unwrap();
        let waiter = {
            let p = Arc::clone(&p);
            let connect = connect.clone();
            std::thread::spawn(move || *p.lease(connect).unwrap())
        };
        // The waiter may or may not be asleep yet; either way it gets connection 0.
        drop(held);
        assert_eq!(waiter.join().unwrap(), 0);
        assert_eq!(opened.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_waiting_task_gets_the_connection_given_back() {
        let p = Arc::new(pool(1, None));
        let (opened, connect) = counter();
        let held = p.lease(connect.clone()).unwrap();
        let rt = crate::runtime::handle().unwrap();
        let waiter = {
            let p = Arc::clone(&p);
            let connect = connect.clone();
            rt.spawn(async move { *p.lease_async(|| async { connect() }).await.unwrap() })
        };
        drop(held);
        assert_eq!(rt.block_on(waiter).unwrap(), 0);
        assert_eq!(opened.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn retiring_closes_the_leased_ones_too() {
        let p = pool(2, Some(Duration::from_secs(5)));
        let (opened, connect) = counter();
        let a = p.lease(connect.clone()).unwrap();
        let b = p.lease(connect.clone()).unwrap();
        drop(a);
        p.retire();
        // `b` was leased before the connections broke: closed when it comes back.
        drop(b);
        let c = p.lease(connect).unwrap();
        assert!(!c.reused());
        assert_eq!(*c, 2);
        assert_eq!(opened.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn discarding_the_idle_ones_keeps_the_leased_ones() {
        let p = pool(2, Some(Duration::from_secs(5)));
        let (opened, connect) = counter();
        let a = p.lease(connect.clone()).unwrap();
        let b = p.lease(connect.clone()).unwrap();
        drop(a);
        p.discard_idle();
        drop(b); // leased while the idle ones went: given back
        let c = p.lease(connect).unwrap();
        assert!(c.reused());
        assert_eq!(*c, 1);
        assert_eq!(opened.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn no_more_than_max_idle_wait_idle() {
        let p: Pool<usize> = Pool::new(
            Limits {
                max_open: usize::MAX,
                max_idle: 1,
                wait: None,
            },
            |_, _| Error::new(ErrorKind::Timeout, "never busy"),
        );
        let (opened, connect) = counter();
        let a = p.lease(connect.clone()).unwrap();
        let b = p.lease(connect.clone()).unwrap();
        drop(a);
        drop(b); // one too many idle: closed
        let c = p.lease(connect.clone()).unwrap();
        let d = p.lease(connect).unwrap();
        assert!(c.reused() && !d.reused());
        assert_eq!(opened.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_lease_dropped_in_a_panic_is_not_given_back() {
        let p = Arc::new(pool(1, Some(Duration::from_secs(5))));
        let (opened, connect) = counter();
        let q = Arc::clone(&p);
        let c = connect.clone();
        let panicked = std::thread::spawn(move || {
            let _lease = q.lease(c).unwrap();
            panic!("mid-reply");
        })
        .join();
        assert!(panicked.is_err());
        assert!(!p.lease(connect).unwrap().reused());
        assert_eq!(opened.load(Ordering::SeqCst), 2);
    }
}
