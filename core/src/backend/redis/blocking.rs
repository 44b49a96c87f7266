//! The blocking connections of the Redis backend: which servers a command may run on (the
//! leader, a replica, the Cluster), and how it runs on a connection leased from that
//! server's pool (the shared one, `crate::pool`: at most `max_connections`, fork-safe) —
//! retried once when the server had closed the pooled connection, following a Cluster
//! redirection, dropping the connections of a demoted Sentinel master. The calling thread
//! holds its signals back meanwhile (`crate::signals`).

use super::sentinel::{demoted, is_readonly, NodeRole, Sentinels};
use super::{
    closed_by_server, interrupted, is_redirect, keeps_connection, map_err, random_below,
    RedisBackend, RedisOptions, RedisResult, REPLICA_COOLDOWN,
};
use crate::error::{Error, ErrorKind, Result};
use crate::pool::{Lease, Limits};
use redis::cluster::{ClusterClient, ClusterConnection};
use redis::{Client, Connection, ConnectionLike};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The servers the synchronous calls reach, each through its pool.
pub(super) enum Topology {
    Single {
        leader: Pool<Connection>,
        replicas: Vec<Replica>,
    },
    Cluster {
        pool: Pool<ClusterConnection>,
        /// Connections whose client never sends a command twice (`incr`, `add`): redis-rs'
        /// cluster client re-sends a command after a timeout or a broken connection, which
        /// may already have applied it.
        once: Pool<ClusterConnection>,
    },
}

pub(super) struct Replica {
    pub(super) pool: Pool<Connection>,
    pub(super) down_until: ReplicaHealth,
}

/// Whether reads skip a replica: for [`REPLICA_COOLDOWN`] after it failed, reads go to the
/// leader. The blocking and the async replicas keep one each.
#[derive(Default)]
pub(super) struct ReplicaHealth {
    /// Milliseconds on the monotonic clock until which reads skip it; 0 when healthy.
    until: AtomicU64,
}

impl ReplicaHealth {
    /// True while reads skip the replica, at `now` (`clock::monotonic_ms`).
    pub(super) fn is_down(&self, now: u64) -> bool {
        self.until.load(Ordering::Relaxed) > now
    }

    /// The replica at `addr` failed with `e` at `now`: reads skip it for a while.
    pub(super) fn failed(&self, now: u64, addr: &str, e: &Error) {
        self.until
            .store(now + REPLICA_COOLDOWN.as_millis() as u64, Ordering::Relaxed);
        log::warn!(
            "polycache: redis replica {addr} failed, reading from the leader for {} s: {e}",
            REPLICA_COOLDOWN.as_secs()
        );
    }
}

impl RedisBackend {
    /// Runs `f` on a leader connection (or a Cluster connection, which routes by key).
    pub(super) fn on_leader<T>(
        &self,
        mut f: impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> Result<T> {
        match &self.topology {
            Topology::Single { leader, .. } => leader.run(|c| f(c)),
            Topology::Cluster { pool, .. } => pool.run(|c| f(c)),
        }
    }

    /// As [`RedisBackend::on_leader`], never sending the command twice (`incr`, `add`): a
    /// connection that closes before the reply leaves it unknown whether the command ran.
    pub(super) fn on_leader_once<T>(
        &self,
        mut f: impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> Result<T> {
        match &self.topology {
            Topology::Single { leader, .. } => leader.run_once(|c| f(c)),
            Topology::Cluster { once, .. } => once.run_once(|c| f(c)),
        }
    }

    /// Runs the read `f` on a random healthy replica, else on the leader.
    pub(super) fn on_reader<T>(
        &self,
        mut f: impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> Result<T> {
        let (leader, replicas) = match &self.topology {
            Topology::Single { leader, replicas } if !replicas.is_empty() => (leader, replicas),
            _ => return self.on_leader(f),
        };
        let replica = &replicas[random_below(replicas.len())];
        let now = crate::clock::monotonic_ms();
        if replica.down_until.is_down(now) {
            return leader.run(|c| f(c));
        }
        match replica.pool.run(|c| f(c)) {
            Err(e) if crate::policy::is_outage(&e) => {
                replica.down_until.failed(now, &replica.pool.addr, &e);
                leader.run(|c| f(c))
            }
            other => other,
        }
    }
}

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
/// At most `max_connections` are open; a call that finds none idle opens one, or waits up
/// to `connect_timeout` for one to come back. A connection that failed with an I/O error is
/// dropped, and every idle connection with it (they are most likely dead too: a restart
/// closes them all).
pub(super) struct Pool<C> {
    conns: crate::pool::Pool<C>,
    connect: Connector<C>,
    socket_timeout: Option<Duration>,
    /// The server's address for error messages (no password).
    pub(super) addr: String,
    /// Whether `READONLY` means the server was demoted (a Sentinel master): the pool then
    /// drops its connections, and the next one is opened to the master named anew.
    follows_failover: bool,
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
        let server = addr.clone();
        let limits = Limits::bounded(opts.max_connections, opts.connect_timeout);
        Pool {
            conns: crate::pool::Pool::new(limits, move |max, wait| {
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "redis {server}: all {max} pooled connections stayed busy for {wait:?} \
                         (raise max_connections?)"
                    ),
                )
            }),
            connect,
            socket_timeout: opts.socket_timeout,
            addr,
            follows_failover: false,
        }
    }

    /// An idle connection (`reused`), or a new one.
    fn lease(&self) -> Result<Lease<'_, C>> {
        self.conns.lease(|| {
            let open = || {
                // Nothing was sent yet, so a connect a stop/continue interrupted is tried
                // again (up to three times in all).
                let mut tries = 1;
                let conn = loop {
                    match (self.connect)() {
                        Err(e) if interrupted(&e) && tries < 3 => tries += 1,
                        done => break done?,
                    }
                };
                conn.set_timeouts(self.socket_timeout)?;
                Ok(conn)
            };
            open().map_err(|e| map_err(e, &self.addr))
        })
    }

    /// Runs `f` on a pooled connection, once more on a fresh one when the server had closed
    /// the pooled one while it was idle, or when a stop and continue of the process
    /// interrupted the call (`errors::interrupted`).
    pub(super) fn run<T>(&self, f: impl FnMut(&mut C) -> RedisResult<T>) -> Result<T> {
        self.run_tries(false, f)
    }

    /// Runs `f` on a pooled connection and never twice: for `incr` and `add`, which a
    /// connection closed after the command was sent may already have applied.
    pub(super) fn run_once<T>(&self, f: impl FnMut(&mut C) -> RedisResult<T>) -> Result<T> {
        self.run_tries(true, f)
    }

    fn run_tries<T>(&self, once: bool, mut f: impl FnMut(&mut C) -> RedisResult<T>) -> Result<T> {
        // redis-rs fails a read or connect that a signal interrupted (`EINTR`). A stop and
        // continue interrupts a socket with a timeout even so: see below.
        let _signals = crate::signals::Held::hold();
        let mut retried = once;
        let mut redirected = false;
        loop {
            let mut lease = self.lease()?;
            let result = f(&mut lease);
            match result {
                Ok(v) => {
                    drop(lease);
                    return Ok(v);
                }
                // A Cluster connection that does not retry (`run_once`) returns `MOVED`/`ASK`:
                // the command did not run, and a fresh connection reads the new slot map.
                Err(e) if is_redirect(&e) && !redirected => {
                    redirected = true;
                    lease.discard();
                }
                Err(e) if self.follows_failover && is_readonly(&e) => {
                    lease.discard();
                    self.conns.retire();
                    return Err(demoted(e, &self.addr));
                }
                Err(e) if keeps_connection(&e) => {
                    drop(lease);
                    return Err(map_err(e, &self.addr));
                }
                Err(e) => {
                    let reused = lease.reused();
                    lease.discard();
                    if closed_by_server(&e) || e.is_timeout() {
                        self.conns.retire();
                    }
                    // Once more on a fresh connection, when the command is safe to run
                    // twice (not `run_once`): the server had closed the pooled connection
                    // while it was idle, or a stop/continue interrupted the call.
                    if !retried && ((reused && closed_by_server(&e)) || interrupted(&e)) {
                        retried = true;
                        continue;
                    }
                    return Err(map_err(e, &self.addr));
                }
            }
        }
    }
}
