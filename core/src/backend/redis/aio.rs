//! The Redis backend's native async side: redis-rs' multiplexed connections (many requests
//! share one connection per server), or its async Cluster connection.
//!
//! A connection that breaks (an I/O error, the server closed it) is forgotten, and the next request opens a new one: reconnecting costs no
//! request more than one connect. (redis-rs' `MultiplexedConnection` does the same behind a
//! shared future and an `ArcSwap` on every request; measured, that cost a fifth of the
//! throughput at 256 tasks, see benches/redis_async.rs.)
//!
//! Connections are opened on first use, on polycache's runtime ([`crate::runtime`]), so the
//! tasks that drive them outlive any one caller's runtime. A request whose future is dropped
//! leaves its connection usable: the connection matches replies to requests itself. A
//! forked child opens connections of its own (its parent's driver tasks do not exist in it).
//!
//! The commands and the decoding of their replies are the synchronous side's (the functions
//! of `mod.rs`); only the connection differs.

use super::blocking::ReplicaHealth;
use super::sentinel::{demoted, is_readonly, NodeRole, Sentinels};
use super::{
    by_slot, cluster_primaries, cmd, commands, map_err, match_pattern, random_below, scripts,
    structures, RedisBackend, RedisOptions, RedisResult, SCAN_BATCH,
};
use crate::backend::{AsyncBackend, BoxFuture};
use crate::error::Result;
use crate::value::Value;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::AsyncConnectionConfig;
use redis::Client;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// One lazily opened connection (of any kind), per fork generation.
struct Lazy<C> {
    slot: Mutex<(u64, Arc<OnceCell<C>>)>,
}

impl<C: Clone + Send + Sync + 'static> Lazy<C> {
    fn new() -> Self {
        Lazy {
            slot: Mutex::new((crate::fork::generation(), Arc::new(OnceCell::new()))),
        }
    }

    /// The connection, opened by `open` on polycache's runtime if this process has none yet,
    /// with the slot it came from (for [`Lazy::forget`]).
    async fn get<F>(&self, open: impl FnOnce() -> F, addr: &str) -> Result<(C, Arc<OnceCell<C>>)>
    where
        F: Future<Output = RedisResult<C>> + Send + 'static,
    {
        let cell = {
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            let now = crate::fork::generation();
            if slot.0 != now {
                // The parent's connection: its driver task is not in this process. Neither
                // used nor dropped (dropping could write to the parent's socket).
                let inherited = std::mem::replace(&mut *slot, (now, Arc::new(OnceCell::new())));
                std::mem::forget(inherited);
            }
            Arc::clone(&slot.1)
        };
        let conn = cell
            .get_or_try_init(|| async {
                crate::runtime::spawn(open())
                    .await?
                    .map_err(|e| map_err(e, addr))
            })
            .await?
            .clone();
        Ok((conn, cell))
    }

    /// Forgets the connection of `slot` after `err` if the error broke it, so that the next
    /// request opens a new one (unless another request already did).
    fn forget_if_broken(&self, slot: &Arc<OnceCell<C>>, err: &redis::RedisError) {
        // A timeout is not one: the connection matches the late reply to its request and
        // drops it, and a frozen server that thaws answers on the same connection.
        let broken =
            err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error();
        if broken {
            self.forget(slot);
        }
    }

    /// Forgets the connection of `slot`, unless another request already replaced it.
    fn forget(&self, slot: &Arc<OnceCell<C>>) {
        let mut current = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::ptr_eq(&current.1, slot) {
            current.1 = Arc::new(OnceCell::new());
        }
    }
}

/// How a [`Server`]'s connection is opened.
enum Target {
    /// Always to the one address of the client.
    Fixed(Box<Client>),
    /// To the server the sentinels name at each connect; `READONLY` drops the connection.
    Sentinel(Arc<Sentinels>, NodeRole),
}

/// One server of a single-server or leader + replicas topology.
pub(super) struct Server {
    target: Target,
    config: AsyncConnectionConfig,
    addr: String,
    conn: Lazy<MultiplexedConnection>,
    /// For replicas: whether reads skip it.
    down_until: ReplicaHealth,
}

impl Server {
    pub(super) fn new(client: Client, addr: String, opts: &RedisOptions) -> Server {
        Server::with_target(Target::Fixed(Box::new(client)), addr, opts)
    }

    fn with_target(target: Target, addr: String, opts: &RedisOptions) -> Server {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(opts.connect_timeout)
            .set_response_timeout(opts.socket_timeout);
        Server {
            target,
            config,
            addr,
            conn: Lazy::new(),
            down_until: ReplicaHealth::default(),
        }
    }

    /// The server of `role` that `sentinels` name at each connect.
    pub(super) fn sentinel(
        sentinels: Arc<Sentinels>,
        role: NodeRole,
        addr: &str,
        opts: &RedisOptions,
    ) -> Server {
        Server::with_target(Target::Sentinel(sentinels, role), addr.to_owned(), opts)
    }

    /// Runs `f` on this server's connection; errors name the server.
    pub(super) async fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (conn, slot) = match &self.target {
            Target::Fixed(client) => {
                let (client, config) = (Client::clone(client), self.config.clone());
                let open = move || async move {
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                };
                self.conn.get(open, &self.addr).await?
            }
            Target::Sentinel(sentinels, role) => {
                let (sentinels, role) = (sentinels.clone(), *role);
                let open = move || async move { sentinels.connect_async(role).await };
                self.conn.get(open, &self.addr).await?
            }
        };
        f(conn).await.map_err(|e| {
            if matches!(self.target, Target::Sentinel(..)) && is_readonly(&e) {
                self.conn.forget(&slot);
                return demoted(e, &self.addr);
            }
            self.conn.forget_if_broken(&slot, &e);
            map_err(e, &self.addr)
        })
    }
}

/// A Redis Cluster: one connection for commands that may be re-sent, one that never
/// re-sends (`incr`, `add`), as on the synchronous side.
pub(super) struct Cluster {
    retrying: ClusterClient,
    once: ClusterClient,
    addr: String,
    conn: Lazy<ClusterConnection>,
    conn_once: Lazy<ClusterConnection>,
}

impl Cluster {
    pub(super) fn new(retrying: ClusterClient, once: ClusterClient, addr: String) -> Cluster {
        Cluster {
            retrying,
            once,
            addr,
            conn: Lazy::new(),
            conn_once: Lazy::new(),
        }
    }

    /// Runs `f` on a Cluster connection (`once`: the one that never re-sends); the Cluster
    /// client reconnects to its nodes by itself.
    pub(super) async fn run<T, F, Fut>(&self, once: bool, f: F) -> Result<T>
    where
        F: FnOnce(ClusterConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (client, lazy) = if once {
            (self.once.clone(), &self.conn_once)
        } else {
            (self.retrying.clone(), &self.conn)
        };
        let open = move || async move { client.get_async_connection().await };
        let (conn, _) = lazy.get(open, &self.addr).await?;
        f(conn).await.map_err(|e| map_err(e, &self.addr))
    }
}

/// The async connections of a [`RedisBackend`].
pub(super) enum AsyncTopology {
    Single {
        leader: Box<Server>,
        replicas: Vec<Server>,
    },
    Cluster(Box<Cluster>),
}

/// An async connection of either kind, for the commands both run the same way.
#[derive(Clone)]
pub(super) enum AnyConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for AnyConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            AnyConn::Single(c) => c.req_packed_command(cmd),
            AnyConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            AnyConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            AnyConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AnyConn::Single(c) => c.get_db(),
            AnyConn::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisBackend {
    fn aio(&self) -> &AsyncTopology {
        &self.aio
    }

    /// Runs `f` on the leader (or the Cluster); `once`: never re-sent (`incr`, `add`).
    async fn on_leader_async<T, F, Fut>(&self, once: bool, f: F) -> Result<T>
    where
        F: FnOnce(AnyConn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match self.aio() {
            AsyncTopology::Single { leader, .. } => leader.run(|c| f(AnyConn::Single(c))).await,
            AsyncTopology::Cluster(cluster) => cluster.run(once, |c| f(AnyConn::Cluster(c))).await,
        }
    }

    /// Runs the read `f` on a random healthy replica, else on the leader (as `on_reader`).
    async fn on_reader_async<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(AnyConn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (leader, replicas) = match self.aio() {
            AsyncTopology::Single { leader, replicas } if !replicas.is_empty() => {
                (leader, replicas)
            }
            _ => return self.on_leader_async(false, f).await,
        };
        let replica = &replicas[random_below(replicas.len())];
        let now = crate::clock::monotonic_ms();
        if replica.down_until.is_down(now) {
            return leader.run(|c| f(AnyConn::Single(c))).await;
        }
        match replica.run(|c| f(AnyConn::Single(c))).await {
            Err(e) if crate::policy::is_outage(&e) => {
                replica.down_until.failed(now, &replica.addr, &e);
                leader.run(|c| f(AnyConn::Single(c))).await
            }
            other => other,
        }
    }
}

pub(super) async fn query<T: redis::FromRedisValue>(
    mut c: AnyConn,
    command: redis::Cmd,
) -> RedisResult<T> {
    command.query_async(&mut c).await
}

impl AsyncBackend for RedisBackend {
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<Value>>> {
        Box::pin(self.on_reader_async(move |c| async move {
            commands::value(query(c, commands::get(key)).await?)
        }))
    }

    fn set<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.on_leader_async(false, move |c| query(c, commands::set(key, value, ttl))))
    }

    fn add<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.on_leader_async(true, move |c| async move {
            Ok(commands::added(
                &query(c, commands::add(key, value, ttl)).await?,
            ))
        }))
    }

    fn delete<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.on_leader_async(false, move |c| async move {
            Ok(query::<i64>(c, commands::unlink(&[key])).await? > 0)
        }))
    }

    fn delete_if_equals<'a>(
        &'a self,
        key: &'a [u8],
        expected: &'a [u8],
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.on_leader_async(false, move |mut c| async move {
            let n: i64 = scripts()
                .2
                .key(key)
                .arg(expected)
                .invoke_async(&mut c)
                .await?;
            Ok(n == 1)
        }))
    }

    fn has_key<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.on_reader_async(move |c| async move {
            Ok(query::<i64>(c, commands::exists(key)).await? > 0)
        }))
    }

    fn touch<'a>(&'a self, key: &'a [u8], ttl: Option<Duration>) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.on_leader_async(false, move |mut c| async move {
            let n: i64 = match ttl {
                Some(ttl) => query(c, commands::pexpire(key, ttl)).await?,
                None => scripts().1.key(key).invoke_async(&mut c).await?,
            };
            Ok(n == 1)
        }))
    }

    fn incr<'a>(&'a self, key: &'a [u8], delta: i64) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async move {
            let reply = self
                .on_leader_async(true, move |mut c| async move {
                    scripts()
                        .0
                        .key(key)
                        .arg(delta)
                        .invoke_async::<redis::Value>(&mut c)
                        .await
                })
                .await?;
            commands::incremented(reply, key, &self.location)
        })
    }

    fn get_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<Vec<Option<Value>>>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            // One MGET; on a Cluster, redis-rs splits it by slot and merges the replies.
            self.on_reader_async(move |c| async move {
                commands::values(query(c, commands::mget(keys)).await?, keys.len())
            })
            .await
        })
    }

    fn set_many<'a>(
        &'a self,
        items: &'a [(&'a [u8], &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Vec<usize>>> {
        Box::pin(async move {
            if items.is_empty() {
                return Ok(Vec::new());
            }
            match self.aio() {
                AsyncTopology::Single { leader, .. } => {
                    let mut pipe = redis::pipe();
                    for (k, v) in items {
                        pipe.add_command(commands::set(k, v, ttl)).ignore();
                    }
                    leader
                        .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
                        .await?;
                }
                AsyncTopology::Cluster(cluster) => {
                    // Every SET in flight at once on the multiplexed connections: one round
                    // trip per node, as the synchronous side's cluster pipeline.
                    cluster
                        .run(false, |c| async move {
                            let sets = items.iter().map(|(k, v)| {
                                let c = AnyConn::Cluster(c.clone());
                                query::<()>(c, commands::set(k, v, ttl))
                            });
                            futures_util::future::try_join_all(sets).await.map(|_| ())
                        })
                        .await?;
                }
            }
            Ok(Vec::new())
        })
    }

    fn delete_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(0);
            }
            match self.aio() {
                AsyncTopology::Single { .. } => {
                    self.on_leader_async(false, move |c| query(c, commands::unlink(keys)))
                        .await
                }
                AsyncTopology::Cluster(cluster) => {
                    cluster
                        .run(false, |c| async move {
                            let groups = by_slot(keys).into_values().map(|group| {
                                let slot_keys: Vec<&[u8]> =
                                    group.iter().map(|&i| keys[i]).collect();
                                query::<usize>(
                                    AnyConn::Cluster(c.clone()),
                                    commands::unlink(&slot_keys),
                                )
                            });
                            let counts = futures_util::future::try_join_all(groups).await?;
                            Ok(counts.into_iter().sum())
                        })
                        .await
                }
            }
        })
    }

    fn clear<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match self.aio() {
                AsyncTopology::Single { leader, .. } => {
                    if prefix.is_empty() {
                        return leader
                            .run(|c| query::<()>(AnyConn::Single(c), cmd("FLUSHDB")))
                            .await;
                    }
                    let pattern = match_pattern(prefix);
                    leader
                        .run(|c| async move {
                            let mut cursor: u64 = 0;
                            loop {
                                let (next, keys): (u64, Vec<Vec<u8>>) = query(
                                    AnyConn::Single(c.clone()),
                                    commands::scan(cursor, &pattern, SCAN_BATCH),
                                )
                                .await?;
                                if !keys.is_empty() {
                                    query::<()>(
                                        AnyConn::Single(c.clone()),
                                        commands::unlink(&keys),
                                    )
                                    .await?;
                                }
                                cursor = next;
                                if cursor == 0 {
                                    return Ok(());
                                }
                            }
                        })
                        .await
                }
                AsyncTopology::Cluster(cluster) => {
                    let pattern = match_pattern(prefix);
                    cluster
                        .run(false, |c| async move {
                            cluster_clear(c, &pattern, prefix.is_empty()).await
                        })
                        .await
                }
            }
        })
    }

    fn ttl<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<crate::expiry::TimeToLive>> {
        Box::pin(self.on_reader_async(move |c| async move {
            Ok(commands::time_to_live(query(c, commands::pttl(key)).await?))
        }))
    }

    fn replace<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.on_leader_async(false, move |c| async move {
            Ok(commands::added(
                &query(c, commands::replace(key, value, ttl)).await?,
            ))
        }))
    }

    fn redis_command<'a>(
        &'a self,
        call: &'a crate::RedisCall,
    ) -> BoxFuture<'a, Result<crate::RedisReply>> {
        Box::pin(async move {
            structures::check_slots(call, self.is_cluster())?;
            let command = structures::command(call);
            let command = &command;
            let reply = if call.command().writes() {
                self.on_leader_async(true, move |c| query::<redis::Value>(c, command.clone()))
                    .await?
            } else {
                self.on_reader_async(move |c| query::<redis::Value>(c, command.clone()))
                    .await?
            };
            structures::reply(reply).map_err(|e| map_err(e, &self.location))
        })
    }

    fn extend_if_equals<'a>(
        &'a self,
        key: &'a [u8],
        expected: &'a [u8],
        ttl: Duration,
        replace: bool,
    ) -> BoxFuture<'a, Result<bool>> {
        // Adding time twice is not harmless: only a replacing extend is retried.
        Box::pin(self.on_leader_async(!replace, move |mut c| async move {
            let n: i64 = super::extend_invocation(key, expected, ttl, replace)
                .invoke_async(&mut c)
                .await?;
            Ok(n == 1)
        }))
    }

    /// `SCAN` on the leader's multiplexed connection, or on every Cluster primary in turn
    /// (see `redis/scan.rs`).
    fn scan_keys(
        self: Arc<Self>,
        _sync: Arc<dyn crate::Backend>,
        pattern: &crate::KeyPattern,
        count: usize,
    ) -> Result<Box<dyn crate::AsyncKeyScan>> {
        Ok(Box::new(super::scan::RedisScan::new(self, pattern, count)))
    }
}

/// `clear` on a Cluster: `SCAN MATCH` + `UNLINK` (or `FLUSHDB` for everything) on every
/// primary that `CLUSTER NODES` lists.
async fn cluster_clear(
    mut c: ClusterConnection,
    pattern: &[u8],
    everything: bool,
) -> RedisResult<()> {
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    let nodes: String = cmd("CLUSTER").arg("NODES").query_async(&mut c).await?;
    for (host, port) in cluster_primaries(&nodes) {
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
        if everything {
            c.route_command(cmd("FLUSHDB"), route).await?;
            continue;
        }
        let mut cursor: u64 = 0;
        loop {
            let reply = c
                .route_command(commands::scan(cursor, pattern, SCAN_BATCH), route.clone())
                .await?;
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)?;
            if !keys.is_empty() {
                let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                let groups = by_slot(&refs).into_values().map(|group| {
                    let slot_keys: Vec<&[u8]> = group.iter().map(|&i| refs[i]).collect();
                    query::<()>(AnyConn::Cluster(c.clone()), commands::unlink(&slot_keys))
                });
                futures_util::future::try_join_all(groups).await?;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    Ok(())
}
