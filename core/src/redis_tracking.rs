//! The Redis client-side caching [`InvalidationBus`]: the server itself tells each process
//! which of its cache's keys changed, whoever changed them (RESP3 `CLIENT TRACKING`).
//!
//! Each process keeps **one** tracking connection per server that reads go to (the leader
//! and each replica; behind Sentinel, the master the sentinels name, checked with `ROLE`
//! every second; on a Cluster, every primary, found with `CLUSTER NODES` and followed through
//! failovers and slot moves, see `redis_tracking/cluster.rs`), owned by one thread (a `Hub`
//! of the pub/sub bus's kind, with another `Link`), shared by every tiered cache of the
//! process on that server. The connection speaks RESP3 and runs `CLIENT TRACKING ON BCAST PREFIX
//! {key_prefix}:` for each cache's key prefix; every `invalidate` push becomes L1 deletes of
//! those full keys, a nil one (`FLUSHALL`, `FLUSHDB`) an L1 flush. While a connection is not
//! tracking (not yet, or lost) the caches it serves neither use nor fill their L1: it is
//! dropped when the link is lost and rebuilt after `CLIENT TRACKING` is on again.
//!
//! Broadcast mode, not the default mode: the default mode would track every key each pooled
//! connection reads (all of them would need `CLIENT TRACKING ON REDIRECT`, re-issued on every
//! new connection) and keeps a server-side table of them; broadcast mode keeps no per-key
//! state on the server and needs nothing of the pooled connections. Its cost is that every
//! write under the prefix reaches every process, whether or not its L1 holds the key.

use crate::backend::redis::ClusterPrimary;
use crate::backend::redis::RedisBackend;
use crate::bus::{Invalidation, InvalidationBus, InvalidationHandler, InvalidationTarget};
use crate::error::{Error, Result};
use crate::location::{Location, Options};
use crate::redis_bus::{
    existing_hub, subscribe_to_hub, Ended, Hub, Link, FLUSH_ORIGIN, IDLE_CHECK, MAX_BACKOFF,
    NEXT_ID,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushKind, RedisError, Value};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod cluster;

/// A bus whose invalidations come from the Redis server itself (RESP3 client-side caching
/// in broadcast mode): writes by any client — other programs, `redis-cli`, Lua scripts,
/// other polycache caches — drop the L1 copies of every tiered cache on it.
///
/// Open it with the L2's URL (`redis://`, `rediss://`, `unix://`, leader + replicas, or
/// `redis+sentinel://` without `read_from_replicas`, following the master, or
/// `redis+cluster://`, every primary) and the cache's key prefix; a tiered URL says
/// `bus=tracking`. Publishing is a no-op: the server reports every write, the cache's own
/// included, so a tiered cache on this bus drops its L1 copy on a write instead of
/// replacing it. The server needs RESP3 and `CLIENT TRACKING` (Redis 6 or later): a
/// server that refuses them fails the cache's opening with a configuration error.
/// `Send + Sync`.
///
/// ```no_run
/// use polycache::Cache;
/// let cache = Cache::open(
///     "tiered://?l2=redis%3A%2F%2F127.0.0.1%3A6379%2F0&bus=tracking&key_prefix=app",
/// )?;
/// // A `SET app:1:k …` by any client now drops every process's L1 copy of "k".
/// # Ok::<(), polycache::Error>(())
/// ```
pub struct TrackingBus {
    /// The L2's backend: its servers (connects nothing by itself).
    backend: Arc<RedisBackend>,
    servers: Vec<TrackedServer>,
    /// The full key prefix the server tracks: `{key_prefix}:`.
    prefix: String,
    connect_timeout: Option<Duration>,
    received: Arc<AtomicU64>,
}

struct TrackedServer {
    /// The process-wide tracking connection this bus registers with.
    hub_key: String,
    /// What it tracks.
    target: Target,
}

/// What one tracking session follows.
#[derive(Clone, Copy)]
enum Target {
    /// The server at this index of the backend's [`RedisBackend::read_servers`].
    Server(usize),
    /// Every primary of the backend's Cluster, one connection each (`cluster.rs`).
    Cluster,
}

/// The servers a session of `target` follows, for messages (no password).
fn shown(backend: &RedisBackend, target: Target) -> String {
    match (target, backend.cluster_nodes()) {
        (Target::Server(i), _) => backend.read_servers()[i].addr().to_owned(),
        (Target::Cluster, Some(nodes)) => nodes.shown().to_owned(),
        (Target::Cluster, None) => String::new(),
    }
}

impl fmt::Debug for TrackingBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self
            .servers
            .iter()
            .map(|s| shown(&self.backend, s.target))
            .collect();
        f.debug_struct("TrackingBus")
            .field("servers", &shown)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl TrackingBus {
    /// A bus tracking the keys under `{key_prefix}:` on the servers that `url` reads from.
    /// Connects to nothing until a cache subscribes.
    ///
    /// # Errors
    /// A configuration error for a URL that is not a Redis server (one, leader + replicas,
    /// Sentinel or Cluster), naming what it is, or for a bad option.
    pub fn open(url: &str, key_prefix: &str) -> Result<Arc<TrackingBus>> {
        let location = Location::parse(url)?;
        match location.scheme() {
            "redis" | "rediss" | "unix" | "redis+sentinel" | "rediss+sentinel"
            | "redis+cluster" | "rediss+cluster" => {}
            _ => {
                return Err(Error::config(format!(
                    "bus=tracking needs a Redis l2 (redis://, rediss://, unix://, \
                     redis+sentinel://, redis+cluster://): the server \
                     tracks the keys, but the l2 is {}",
                    location.redacted()
                )))
            }
        }
        let mut options = Options::new(&location);
        let backend = RedisBackend::open(&location, &mut options)?;
        options.finish()?;
        if backend.read_servers().is_empty() && backend.cluster_nodes().is_none() {
            return Err(Error::config(format!(
                "bus=tracking does not follow the replicas that read_from_replicas reads from \
                 yet ({}): drop read_from_replicas, or use bus=none",
                location.redacted()
            )));
        }
        let connect_timeout = backend.connect_timeout();
        let servers = match backend.cluster_nodes() {
            // One session follows every primary: L1 is used only while all of them track.
            Some(_) => vec![TrackedServer {
                hub_key: format!("tracking {url} cluster"),
                target: Target::Cluster,
            }],
            None => (0..backend.read_servers().len())
                .map(|i| TrackedServer {
                    hub_key: format!("tracking {url} #{i}"),
                    target: Target::Server(i),
                })
                .collect(),
        };
        Ok(Arc::new(TrackingBus {
            backend: Arc::new(backend),
            servers,
            prefix: format!("{key_prefix}:"),
            connect_timeout,
            received: Arc::default(),
        }))
    }

    /// The full key prefix the server tracks for this bus (`{key_prefix}:`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many key invalidations from the server this bus delivered to its subscribers
    /// (each counted once per subscriber), for tests and monitoring.
    pub fn messages_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// How many times this process's tracking connection to the leader was established
    /// (1 after the first, +1 per reconnection); 0 while none was yet.
    pub fn connections(&self) -> u64 {
        existing_hub(&self.servers[0].hub_key).map_or(0, |h| h.connects())
    }
}

/// One subscription across the bus's servers: L1 is used only while every server tracks.
struct Joint {
    handler: InvalidationHandler,
    tracking: Mutex<Vec<bool>>,
    received: Arc<AtomicU64>,
}

impl Joint {
    fn on(&self, server: usize, m: &Invalidation) {
        match m.target {
            InvalidationTarget::Suspend | InvalidationTarget::Resume => {
                // Under the lock, so the caches see the servers' changes in their order.
                let mut tracking = self.tracking.lock().unwrap_or_else(|e| e.into_inner());
                tracking[server] = m.target == InvalidationTarget::Resume;
                if m.target == InvalidationTarget::Suspend || tracking.iter().all(|t| *t) {
                    (self.handler)(m);
                }
            }
            InvalidationTarget::Key(_) => {
                self.received.fetch_add(1, Ordering::Relaxed);
                (self.handler)(m);
            }
            _ => (self.handler)(m),
        }
    }
}

impl TrackingBus {
    /// Suspends `handler`'s L1 and registers it with the tracking connection of each server
    /// (started when there is none); returns the subscription's id, and each connection
    /// with its count of connection attempts then.
    fn register(&self, handler: InvalidationHandler) -> (u64, Vec<(Arc<Hub>, u64)>) {
        handler(&Invalidation::new(
            FLUSH_ORIGIN,
            InvalidationTarget::Suspend,
        ));
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let joint = Arc::new(Joint {
            handler,
            tracking: Mutex::new(vec![false; self.servers.len()]),
            received: self.received.clone(),
        });
        let mut hubs = Vec::with_capacity(self.servers.len());
        for (i, server) in self.servers.iter().enumerate() {
            let joint = joint.clone();
            let handler: InvalidationHandler = Arc::new(move |m: &Invalidation| joint.on(i, m));
            let link = || -> Box<dyn Link> {
                Box::new(TrackingLink {
                    backend: self.backend.clone(),
                    target: server.target,
                    connect_timeout: self.connect_timeout,
                    primaries: Mutex::default(),
                })
            };
            let shown = shown(&self.backend, server.target);
            let hub = subscribe_to_hub(&server.hub_key, shown, link, (&self.prefix, id, handler));
            let start = hub.lock().attempts;
            hubs.push((hub, start));
        }
        (id, hubs)
    }
}

impl InvalidationBus for TrackingBus {
    /// Nothing to send: the server reports every write itself.
    fn publish(&self, _message: &Invalidation) -> Result<()> {
        Ok(())
    }

    fn subscribe(&self, handler: InvalidationHandler) -> Result<u64> {
        let (id, hubs) = self.register(handler);
        // Wait for the first answer of each server, so that a server that refuses tracking
        // fails the opening, and a cache opened while the servers are up starts with an L1.
        let limit = self.connect_timeout.unwrap_or(MAX_BACKOFF) + MAX_BACKOFF;
        for (hub, start) in &hubs {
            hub.wait_for(limit, |s| {
                s.live.contains(&id) || s.refused.is_some() || (s.attempts > *start && !s.connected)
            });
            let refused = hub.lock().refused.clone();
            if let Some(e) = refused {
                self.unsubscribe(id);
                return Err(Error::config(format!(
                    "bus=tracking: redis {} refused the tracking connection: {e} (client-side \
                     caching needs RESP3 and CLIENT TRACKING, Redis 6 or later)",
                    hub.shown
                )));
            }
        }
        Ok(id)
    }

    fn unsubscribe(&self, id: u64) {
        for server in &self.servers {
            if let Some(hub) = existing_hub(&server.hub_key) {
                hub.unregister(&self.prefix, id);
            }
        }
    }

    fn tracks_writes(&self) -> bool {
        true
    }

    /// Registers with the tracking connections and returns at once: the subscriber's L1
    /// stays unused until every connection tracks its prefix.
    fn subscribe_without_waiting(&self, handler: InvalidationHandler) -> Result<u64> {
        Ok(self.register(handler).0)
    }
}

/// One RESP3 connection with `CLIENT TRACKING ON BCAST` for every registered prefix (one
/// per primary on a Cluster).
struct TrackingLink {
    backend: Arc<RedisBackend>,
    target: Target,
    connect_timeout: Option<Duration>,
    /// On a Cluster, the primaries the last session found (asked first for the topology).
    primaries: Mutex<Vec<(String, u16)>>,
}

/// How a failed command ends the session: a refusal when the server answered an error
/// (an unknown `HELLO` or `CLIENT`, a denied command), a break otherwise.
fn ended(what: &str, e: RedisError) -> Ended {
    let transient = matches!(e.code(), None | Some("LOADING" | "BUSY" | "MASTERDOWN"));
    if transient || e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
        Ended::Broke(format!("{what}: {e}"))
    } else {
        Ended::Refused(format!("{what}: {e}"))
    }
}

/// The prefixes to ask the server for: no prefix of another (the server refuses overlaps,
/// and the shorter one already covers the longer).
fn minimal(prefixes: &[String]) -> Vec<String> {
    let mut sorted: Vec<&String> = prefixes.iter().collect();
    sorted.sort_by_key(|p| p.len());
    let mut out: Vec<String> = Vec::new();
    for p in sorted {
        if !out.iter().any(|o| p.starts_with(o.as_str())) {
            out.push(p.clone());
        }
    }
    out
}

impl TrackingLink {
    async fn session(&self, hub: &Hub) -> Ended {
        let (tx, mut pushes) = tokio::sync::mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(Some(IDLE_CHECK))
            .set_push_sender(tx);
        let mut session = match self.connect(&config).await {
            Ok(session) => session,
            Err(e) => return e,
        };
        let mut tracked: Vec<String> = Vec::new();
        let mut ready = false;
        loop {
            // Track the prefixes of caches that subscribed since, and let them use L1.
            let wanted: Vec<(String, Vec<u64>)> = hub
                .lock()
                .channels
                .iter()
                .map(|(p, list)| (p.clone(), list.iter().map(|(id, _)| *id).collect()))
                .collect();
            let prefixes: Vec<String> = wanted.iter().map(|(p, _)| p.clone()).collect();
            let new: Vec<String> = minimal(&prefixes)
                .into_iter()
                .filter(|p| !tracked.iter().any(|t| p.starts_with(t.as_str())))
                .collect();
            if new
                .iter()
                .any(|n| tracked.iter().any(|t| t.starts_with(n.as_str())))
            {
                // A shorter prefix than one tracked: the server would refuse the overlap.
                return Ended::Broke("the tracked key prefixes changed".into());
            }
            if !new.is_empty() {
                let mut cmd = redis::cmd("CLIENT");
                cmd.arg("TRACKING").arg("ON").arg("BCAST");
                for p in &new {
                    cmd.arg("PREFIX").arg(p.as_str());
                }
                for (shown, conn) in &mut session.conns {
                    if let Err(e) = cmd.query_async::<()>(conn).await {
                        return ended(&format!("CLIENT TRACKING ON BCAST on {shown}"), e);
                    }
                }
                tracked.extend(new);
            }
            if !ready && !tracked.is_empty() {
                hub.ready();
                ready = true;
            }
            let live = hub.lock().live.clone();
            let resumed: Vec<u64> = wanted
                .iter()
                .filter(|(p, _)| tracked.iter().any(|t| p.starts_with(t.as_str())))
                .flat_map(|(_, ids)| ids.iter().copied())
                .filter(|id| !live.contains(id))
                .collect();
            if !resumed.is_empty() {
                hub.resume(&resumed);
            }

            // Deliver what the server pushes until a cache subscribes; check the connection
            // every second.
            let mut woken = std::pin::pin!(hub.wake.notified());
            let mut check_at = tokio::time::Instant::now() + IDLE_CHECK;
            loop {
                let next = tokio::time::timeout_at(
                    check_at,
                    futures_util::future::select(Box::pin(pushes.recv()), woken.as_mut()),
                )
                .await;
                match next {
                    Ok(futures_util::future::Either::Left((Some(push), _))) => {
                        if push.kind == PushKind::Disconnection {
                            return Ended::Broke("the connection closed".into());
                        }
                        if push.kind == PushKind::Invalidate {
                            deliver(hub, push.data);
                        }
                    }
                    Ok(futures_util::future::Either::Left((None, _))) => {
                        return Ended::Broke("the connection closed".into());
                    }
                    Ok(futures_util::future::Either::Right(_)) => break,
                    Err(_) => {
                        if hub.retire_if_unused() {
                            return Ended::Retired;
                        }
                        if let Err(e) = self.check(&mut session).await {
                            return e;
                        }
                        check_at = tokio::time::Instant::now() + IDLE_CHECK;
                    }
                }
            }
        }
    }
}

/// The connections of one tracking session, each with the server it reaches (for messages).
struct Session {
    conns: Vec<(String, MultiplexedConnection)>,
    /// On a Cluster, the primaries the session tracks and the slots each served.
    topology: Vec<ClusterPrimary>,
}

impl TrackingLink {
    /// Connects with RESP3 to the server, or to every primary of the Cluster.
    async fn connect(&self, config: &AsyncConnectionConfig) -> std::result::Result<Session, Ended> {
        match self.target {
            Target::Server(i) => {
                let server = &self.backend.read_servers()[i];
                match server.connect_resp3(config).await {
                    Ok(conn) => Ok(Session {
                        conns: vec![(server.addr().to_owned(), conn)],
                        topology: Vec::new(),
                    }),
                    Err(e) => Err(ended("connecting with RESP3", e)),
                }
            }
            Target::Cluster => {
                let Some(nodes) = self.backend.cluster_nodes() else {
                    return Err(Ended::Refused("not a Redis Cluster".into()));
                };
                let known = self
                    .primaries
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let session = cluster::connect(nodes, &known, config, self.connect_timeout).await?;
                *self.primaries.lock().unwrap_or_else(|e| e.into_inner()) = session
                    .topology
                    .iter()
                    .map(|p| (p.host.clone(), p.port))
                    .collect();
                Ok(session)
            }
        }
    }

    /// Checks that the session still tracks every server that writes may reach.
    async fn check(&self, session: &mut Session) -> std::result::Result<(), Ended> {
        let Target::Server(i) = self.target else {
            return cluster::check(session).await;
        };
        let conn = &mut session.conns[0].1;
        // Behind Sentinel, `ROLE` also notices a master demoted under the connection: its
        // writes now come from the new master.
        let check = if self.backend.read_servers()[i].follows_master() {
            "ROLE"
        } else {
            "PING"
        };
        match redis::cmd(check).query_async::<Value>(conn).await {
            Err(e) => Err(Ended::Broke(format!("{check}: {e}"))),
            Ok(Value::Array(role)) if !is_master(&role) => {
                Err(Ended::Broke("the master was demoted".into()))
            }
            Ok(_) => Ok(()),
        }
    }
}

impl Link for TrackingLink {
    fn session(&self, hub: &Hub) -> Ended {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            Ok(runtime) => runtime.block_on(TrackingLink::session(self, hub)),
            Err(e) => Ended::Broke(format!("cannot start the tracking runtime: {e}")),
        }
    }

    fn suspends(&self) -> bool {
        true
    }
}

/// Hands an `invalidate` push to the caches whose prefix each key has; a nil one (the
/// server flushed a database) drops every L1 the connection serves.
fn deliver(hub: &Hub, data: Vec<Value>) {
    let keys = match data.into_iter().next() {
        Some(Value::Array(keys)) | Some(Value::Set(keys)) => keys,
        _ => {
            hub.flush_all();
            return;
        }
    };
    let channels: Vec<(String, Vec<InvalidationHandler>)> = hub
        .lock()
        .channels
        .iter()
        .map(|(p, list)| (p.clone(), list.iter().map(|(_, h)| h.clone()).collect()))
        .collect();
    for key in keys {
        let key = match key {
            Value::BulkString(k) => k,
            Value::SimpleString(k) => k.into_bytes(),
            _ => continue,
        };
        let message = Invalidation::new(FLUSH_ORIGIN, InvalidationTarget::Key(key));
        let InvalidationTarget::Key(k) = &message.target else {
            continue;
        };
        for (prefix, handlers) in &channels {
            if k.starts_with(prefix.as_bytes()) {
                for h in handlers {
                    h(&message);
                }
            }
        }
    }
}

/// Whether a `ROLE` reply says `master`.
fn is_master(role: &[Value]) -> bool {
    match role.first() {
        Some(Value::BulkString(r)) => r == b"master",
        Some(Value::SimpleString(r)) => r == "master",
        _ => false,
    }
}
