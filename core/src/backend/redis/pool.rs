//! The synchronous connection pool of the Redis backend: at most `max_connections` blocking
//! connections per server (or per Cluster), shared by every thread, fork-safe.

use super::sentinel::{demoted, is_readonly, NodeRole, Sentinels};
use super::{closed_by_server, is_redirect, keeps_connection, map_err, RedisOptions, RedisResult};
use crate::error::{Error, ErrorKind, Result};
use crate::fork::Conns;
use redis::cluster::{ClusterClient, ClusterConnection};
use redis::{Client, Connection};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a pool needs of its connections.
pub(super) trait PooledConnection: Send + 'static {
    fn set_timeouts(&self, timeout: Option<Duration>) -> RedisResult<()>;
}

impl PooledConnection for Connection {
    fn set_timeouts(&self, timeout: Option<Duration>) -> RedisResult<()> {
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }
}

impl PooledConnection for ClusterConnection {
    fn set_timeouts(&self, timeout: Option<Duration>) -> RedisResult<()> {
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }
}

type Connector<C> = Box<dyn Fn() -> RedisResult<C> + Send + Sync>;

/// Connections to one server (or one Cluster), shared by every thread.
///
/// At most `max` connections are open; a call that finds none idle opens one, or waits up to
/// `wait` for one to come back. A connection that failed with an I/O error is dropped, and
/// every idle connection with it (they are most likely dead too: a restart closes them all).
pub(super) struct Pool<C> {
    state: Mutex<PoolState<C>>,
    returned: Condvar,
    connect: Connector<C>,
    max: usize,
    wait: Option<Duration>,
    socket_timeout: Option<Duration>,
    /// The server's address for error messages (no password).
    pub(super) addr: String,
    /// Whether `READONLY` means the server was demoted (a Sentinel master): the pool then
    /// drops its connections, and the next one is opened to the master named anew.
    follows_failover: bool,
}

struct PoolState<C> {
    /// Idle connections with the generation they were opened in.
    conns: Conns<(C, u64)>,
    /// Bumped when a connection breaks; connections of older generations are not reused.
    generation: u64,
}

impl Pool<Connection> {
    pub(super) fn single(client: Client, addr: String, opts: &RedisOptions) -> Self {
        let timeout = opts.connect_timeout;
        Pool::new(
            Box::new(move || match timeout {
                Some(t) => client.get_connection_with_timeout(t),
                None => client.get_connection(),
            }),
            addr,
            opts,
        )
    }
}

impl Pool<Connection> {
    /// Connections to the server of `role` that `sentinels` name at each connect.
    pub(super) fn sentinel(
        sentinels: std::sync::Arc<Sentinels>,
        role: NodeRole,
        addr: &str,
        opts: &RedisOptions,
    ) -> Self {
        let mut pool = Pool::new(
            Box::new(move || sentinels.connect(role)),
            addr.to_owned(),
            opts,
        );
        pool.follows_failover = true;
        pool
    }
}

impl Pool<ClusterConnection> {
    pub(super) fn cluster(client: ClusterClient, addr: String, opts: &RedisOptions) -> Self {
        Pool::new(Box::new(move || client.get_connection()), addr, opts)
    }
}

impl<C: PooledConnection> Pool<C> {
    pub(super) fn new(connect: Connector<C>, addr: String, opts: &RedisOptions) -> Self {
        Pool {
            state: Mutex::new(PoolState {
                conns: Conns::new(),
                generation: 0,
            }),
            returned: Condvar::new(),
            connect,
            max: opts.max_connections.max(1),
            wait: opts.connect_timeout,
            socket_timeout: opts.socket_timeout,
            addr,
            follows_failover: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState<C>> {
        // A panic elsewhere cannot leave the state inconsistent: every update is one step.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // A child of fork() never uses its parent's connections.
        state.conns.adopt();
        state
    }

    /// An idle connection (`reused`), or a new one.
    fn checkout(&self) -> Result<Lease<'_, C>> {
        let deadline = self.wait.map(|w| Instant::now() + w);
        let mut state = self.lock();
        loop {
            let fork = state.conns.fork();
            if let Some((conn, generation)) = state.conns.idle.pop() {
                return Ok(Lease {
                    pool: self,
                    conn: Some(conn),
                    generation,
                    fork,
                    reused: true,
                });
            }
            if state.conns.open < self.max {
                state.conns.open += 1;
                let generation = state.generation;
                drop(state);
                return match self.open_connection() {
                    Ok(conn) => Ok(Lease {
                        pool: self,
                        conn: Some(conn),
                        generation,
                        fork,
                        reused: false,
                    }),
                    Err(e) => {
                        self.forget_one(fork);
                        Err(map_err(e, &self.addr))
                    }
                };
            }
            state = match deadline {
                None => self.returned.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "redis {}: all {} pooled connections stayed busy for {:?} \
                                 (raise max_connections?)",
                                self.addr,
                                self.max,
                                self.wait.unwrap_or_default()
                            ),
                        ));
                    }
                    self.returned
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    fn open_connection(&self) -> RedisResult<C> {
        let conn = (self.connect)()?;
        conn.set_timeouts(self.socket_timeout)?;
        Ok(conn)
    }

    /// A connection checked out in fork generation `fork` left the pool for good.
    fn forget_one(&self, fork: u64) {
        self.lock().conns.forget_one(fork);
        self.returned.notify_one();
    }

    /// Drops every idle connection: the server closed them, or soon will have.
    fn forget_idle(&self) {
        let mut state = self.lock();
        state.generation += 1;
        let idle = std::mem::take(&mut state.conns.idle);
        state.conns.open -= idle.len();
        drop(state);
        drop(idle);
        self.returned.notify_all();
    }

    /// Runs `f` on a pooled connection, once more on a fresh one when the server had closed
    /// the pooled one while it was idle.
    pub(super) fn run<T>(&self, f: impl FnMut(&mut C) -> RedisResult<T>) -> Result<T> {
        self.run_tries(false, f)
    }

    /// Runs `f` on a pooled connection and never twice: for `incr` and `add`, which a
    /// connection closed after the command was sent may already have applied.
    pub(super) fn run_once<T>(&self, f: impl FnMut(&mut C) -> RedisResult<T>) -> Result<T> {
        self.run_tries(true, f)
    }

    fn run_tries<T>(&self, once: bool, mut f: impl FnMut(&mut C) -> RedisResult<T>) -> Result<T> {
        let mut retried = once;
        let mut redirected = false;
        loop {
            let mut lease = self.checkout()?;
            let result = f(lease.conn.as_mut().expect("a lease holds its connection"));
            match result {
                Ok(v) => {
                    lease.release();
                    return Ok(v);
                }
                // A Cluster connection that does not retry (`run_once`) returns `MOVED`/`ASK`:
                // the command did not run, and a fresh connection reads the new slot map.
                Err(e) if is_redirect(&e) && !redirected => {
                    redirected = true;
                    drop(lease);
                }
                Err(e) if self.follows_failover && is_readonly(&e) => {
                    drop(lease);
                    self.forget_idle();
                    return Err(demoted(e, &self.addr));
                }
                Err(e) if keeps_connection(&e) => {
                    lease.release();
                    return Err(map_err(e, &self.addr));
                }
                Err(e) => {
                    let reused = lease.reused;
                    drop(lease);
                    if closed_by_server(&e) || e.is_timeout() {
                        self.forget_idle();
                    }
                    if reused && !retried && closed_by_server(&e) {
                        retried = true;
                        continue;
                    }
                    return Err(map_err(e, &self.addr));
                }
            }
        }
    }
}

/// A connection taken from a pool; dropped (and forgotten) unless released.
struct Lease<'p, C: PooledConnection> {
    pool: &'p Pool<C>,
    conn: Option<C>,
    generation: u64,
    /// The fork generation it was checked out in: a parent's lease is never pooled again.
    fork: u64,
    reused: bool,
}

impl<C: PooledConnection> Lease<'_, C> {
    /// Puts the connection back for the next caller.
    fn release(mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let mut state = self.pool.lock();
        if state.generation == self.generation {
            state.conns.give_back((conn, self.generation), self.fork);
            drop(state);
        } else {
            // Opened before connections broke: not reused.
            state.conns.forget_one(self.fork);
            drop(state);
            crate::fork::release(conn, self.fork);
        }
        self.pool.returned.notify_one();
    }
}

impl<C: PooledConnection> Drop for Lease<'_, C> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            crate::fork::release(conn, self.fork);
            self.pool.forget_one(self.fork);
        }
    }
}
