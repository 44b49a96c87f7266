//! The Redis backend: one server, a leader with read replicas, or a Redis Cluster (redis-rs).
//!
//! Every operation is one native command or one pipeline: `get_many` is one `MGET` (on a
//! Cluster, one pipeline of `GET`s per node), `set_many` one pipeline of `SET … PX`, `add`
//! is `SET NX PX`, `touch` is `PEXPIRE` (or a script around `PERSIST`), `incr` a script that
//! answers "not found" on a missing key and keeps the TTL, `delete_many` one `UNLINK` (one
//! per hash slot on a Cluster), `has_key` `EXISTS`,
//! `clear(prefix)` `SCAN MATCH` + `UNLINK` in batches. Values are raw bytes.
//!
//! Connections come from a pool shared by every thread (at most `max_connections` per
//! server). A connection that failed with an I/O error is dropped, and with it every idle
//! connection to that server, so that a restarted server is reached again at the next call;
//! a call that found its pooled connection closed by the server is tried once more on a fresh
//! one — except `incr` and `add`, which the server may already have applied when the
//! connection broke: they report the connection error instead.

mod address;
mod aio;
mod blocking;
mod cluster;
mod commands;
mod errors;
mod scan;
mod sentinel;
mod structures;

use super::{AsyncAccess, Backend};
use crate::error::{Error, Result};
use crate::location::{Location, Options};
use crate::value::Value;
use address::{
    check_db, client_for, connection_info, db_from_path, positive_or_none, sentinel_group,
    split_host, tcp_addr,
};
use aio::AsyncTopology;
use blocking::{Pool, Replica, Topology};
use cluster::{by_slot, cluster_primaries, key_slot};
pub(crate) use cluster::{cluster_topology, ClusterNodes, ClusterPrimary};
use errors::{closed_by_server, interrupted, is_redirect, keeps_connection, map_err, unexpected};
use redis::cluster::{cluster_pipe, ClusterClientBuilder, ClusterConnection};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Client, Cmd, ConnectionAddr, ConnectionLike, RedisConnectionInfo, Script, TlsCertificates,
};
use sentinel::{NodeRole, Sentinels};
use std::cell::Cell;
use std::time::Duration;

/// How long opening a connection may take unless `connect_timeout` says otherwise: 1 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one read or write on a connection may block unless `socket_timeout` says
/// otherwise: 1 s.
pub const DEFAULT_SOCKET_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections kept per server unless `max_connections` says otherwise: 16.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;
/// The port of a host given without one.
pub const DEFAULT_PORT: u16 = 6379;

/// Keys a `clear` asks `SCAN` for per round trip, and unlinks per `UNLINK`.
const SCAN_BATCH: usize = 1000;
/// How long a replica that failed is skipped for reads (they go to the leader meanwhile).
const REPLICA_COOLDOWN: Duration = Duration::from_secs(1);
/// The longest TTL sent to Redis, in milliseconds (about 31,700 years): past it `PX` fails.
const MAX_PX: u128 = 1_000_000_000_000_000;

/// `incr`: "not found" on a missing key, Redis' own `INCRBY` otherwise (which keeps the TTL).
/// Answers the new value as a bulk string (a Lua number is a double: a result past 2^53 would
/// come back rounded), nil for a missing key, `{2}` on overflow, `{3}` on a value that is
/// not a 64-bit integer; any other error of `INCRBY` (`OOM` under `maxmemory`, …) is passed
/// on as it is.
const INCR_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local ok, n = pcall(redis.call, 'INCRBY', KEYS[1], ARGV[1])
if ok then return redis.call('GET', KEYS[1]) end
local e = type(n) == 'table' and n.err or tostring(n)
if string.find(e, 'overflow', 1, true) then return {2} end
if string.find(e, 'not an integer', 1, true) then return {3} end
return redis.error_reply(e)
";

/// `touch` to "never expires": whether the key exists, and `PERSIST` when it does.
const PERSIST_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('PERSIST', KEYS[1])
return 1
";

/// `delete_if_equals`: `DEL` only while the value is still the expected one, atomically.
const DELETE_IF_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// `extend_if_equals`: redis-py's lock extend script. `ARGV[2]` milliseconds replace the
/// remaining lifetime when `ARGV[3]` is `"1"`, else are added to it; a key without a TTL is
/// left alone (`0`). `PEXPIRE`, not the script's arithmetic, keeps to integers.
const EXTEND_IF_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local left = redis.call('PTTL', KEYS[1])
if ARGV[3] == '1' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if left < 0 then return 0 end
redis.call('PEXPIRE', KEYS[1], left + tonumber(ARGV[2]))
return 1
";

/// The compiled `extend_if_equals` script.
fn extend_script() -> &'static Script {
    static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(EXTEND_IF_SCRIPT))
}

/// The script invocation of `extend_if_equals`, shared by both transports.
pub(super) fn extend_invocation(
    key: &[u8],
    expected: &[u8],
    ttl: Duration,
    replace: bool,
) -> redis::ScriptInvocation<'static> {
    let mut inv = extend_script().prepare_invoke();
    inv.key(key)
        .arg(expected)
        .arg(px(ttl))
        .arg(if replace { "1" } else { "0" });
    inv
}

/// The settings of a Redis backend beyond its addresses, as read from URL options.
///
/// ```
/// use polycache::backend::redis::RedisOptions;
/// use std::time::Duration;
/// let opts = RedisOptions::default();
/// assert_eq!(opts.connect_timeout, Some(Duration::from_secs(1)));
/// assert_eq!(opts.max_connections, 16);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// How long opening a connection (TCP, TLS, `AUTH`, `SELECT`) may take; `None` waits as
    /// long as the operating system does. Also how long a call waits for a free pooled
    /// connection when all are busy.
    pub connect_timeout: Option<Duration>,
    /// How long one read or write may block; `None` blocks until the server answers.
    pub socket_timeout: Option<Duration>,
    /// The most connections open to one server (one pool per server, shared by all threads).
    pub max_connections: usize,
    /// The database number (not on a Cluster, which has only database 0).
    pub db: i64,
    /// PEM file of the certificate authorities that `rediss://` servers are checked against
    /// (default: the Mozilla roots built in).
    pub tls_ca: Option<std::path::PathBuf>,
    /// Skip every certificate check of `rediss://` servers (testing only).
    pub insecure: bool,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            socket_timeout: Some(DEFAULT_SOCKET_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            db: 0,
            tls_ca: None,
            insecure: false,
        }
    }
}

/// The backend behind `redis://`, `rediss://`, `unix://`, `redis+cluster://` and
/// `redis+sentinel://`.
///
/// * `redis://[user:password@]host[:port][/db]` — one server; `rediss://` the same over TLS
///   (rustls).
/// * `redis://:pw@leader:6379,replica1:6380,replica2:6381/0` — writes go to the first host,
///   reads (`get`, `get_many`, `has_key`) to one of the others chosen at random, as Django's
///   `RedisCache` does. A replica that fails is skipped for a second, its reads going to the
///   leader.
/// * `unix:///path/to/redis.sock?db=N` — one server over a unix socket
///   (`unix://:password@/path…` for a password).
/// * `redis+cluster://[user:password@]h1:p1,h2:p2,…` — a Redis Cluster reached through any
///   of the given nodes (`rediss+cluster://` over TLS).
/// * `redis+sentinel://[user:password@]s1:26379,s2:26379/mymaster[/db]` — the master that
///   the Redis Sentinels `s1`, `s2` name `mymaster`, asked again at every new connection
///   so a failover is followed (`rediss+sentinel://` over TLS). The URL's password is the
///   master's; `sentinel_password` (and `sentinel_username`) the sentinels';
///   `read_from_replicas=true` sends reads to a replica they list.
///
/// Options: `connect_timeout` and `socket_timeout` (seconds, default 1, `none` for no
/// limit), `max_connections` (per server, default 16), `db`, `tls_ca=/path/ca.pem`,
/// `insecure=true`; on `redis+sentinel://` also `sentinel_password`, `sentinel_username`,
/// `read_from_replicas`. See `docs/backends/redis.md`.
///
/// Opening connects to nothing: the first call does, so a cache can be opened while its
/// server is down. Errors are mapped to kinds: unreachable or dropped connections are
/// [`ErrorKind::Connection`](crate::ErrorKind::Connection), timeouts [`ErrorKind::Timeout`](crate::ErrorKind::Timeout), server errors (`OOM`,
/// `WRONGTYPE`, script errors) [`ErrorKind::Backend`](crate::ErrorKind::Backend) with the server's message, a refused
/// password [`ErrorKind::Configuration`](crate::ErrorKind::Configuration). No message ever contains the password.
///
/// `Send + Sync`: one backend serves every thread. No method panics.
///
/// ```no_run
/// use polycache::backend::redis::RedisBackend;
/// use polycache::{Backend, Cache};
/// use std::sync::Arc;
///
/// let backend = Arc::new(RedisBackend::from_url("redis://127.0.0.1:6379/0")?);
/// let cache = Cache::with_backend(backend.clone()).key_prefix("app").build()?;
/// cache.set("k", b"v", Default::default())?;
/// cache.clear()?; // removes the keys under "app:" only
/// backend.flush_db()?; // removes everything in database 0
/// # Ok::<(), polycache::Error>(())
/// ```
pub struct RedisBackend {
    topology: Topology,
    /// The same servers through multiplexed async connections (`aio.rs`).
    aio: AsyncTopology,
    location: String,
    /// The leader's client and connect timeout, for a pub/sub connection of its own (one
    /// server or leader + replicas; `None` on a Cluster).
    leader_client: Option<(Client, Option<Duration>)>,
    /// Every server reads go to (the leader first), for the tracking connections of
    /// [`crate::TrackingBus`]; empty on a Cluster.
    servers: Vec<TrackedServer>,
    connect_timeout: Option<Duration>,
    /// A Cluster's nodes, for the tracking connections of [`crate::TrackingBus`].
    cluster: Option<cluster::ClusterNodes>,
}

/// A server that reads go to, as the tracking connection of [`crate::TrackingBus`] reaches
/// it: a fixed server, or the master the sentinels name at each connect.
pub(crate) struct TrackedServer(Tracked);

enum Tracked {
    Fixed(Box<Client>, String),
    Master(std::sync::Arc<Sentinels>, String),
}

impl TrackedServer {
    /// The server for messages (no password).
    pub(crate) fn addr(&self) -> &str {
        match &self.0 {
            Tracked::Fixed(_, addr) | Tracked::Master(_, addr) => addr,
        }
    }

    /// True when the server is whichever master the sentinels name (a connection to it must
    /// be dropped once it is demoted).
    pub(crate) fn follows_master(&self) -> bool {
        matches!(self.0, Tracked::Master(..))
    }

    /// A new RESP3 connection with `config`.
    pub(crate) async fn connect_resp3(
        &self,
        config: &redis::AsyncConnectionConfig,
    ) -> RedisResult<redis::aio::MultiplexedConnection> {
        match &self.0 {
            Tracked::Fixed(client, _) => {
                let info = client.get_connection_info().clone();
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_protocol(redis::ProtocolVersion::RESP3);
                Client::open(info.set_redis_settings(settings))?
                    .get_multiplexed_async_connection_with_config(config)
                    .await
            }
            Tracked::Master(sentinels, _) => {
                sentinels
                    .connect_async_with(NodeRole::Master, config, redis::ProtocolVersion::RESP3)
                    .await
            }
        }
    }
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("location", &self.location)
            .finish()
    }
}

impl RedisBackend {
    /// Opens the backend a URL names, with its options; fails on unknown options.
    pub fn from_url(url: &str) -> Result<RedisBackend> {
        let location = Location::parse(url)?;
        let mut options = Options::new(&location);
        let backend = RedisBackend::open(&location, &mut options)?;
        options.finish()?;
        Ok(backend)
    }

    /// Opens the backend `location` names, taking its options from `options`.
    ///
    /// Connects to nothing yet; fails only on a bad URL or option (or an unreadable
    /// `tls_ca` file), with a [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) error.
    pub fn open(location: &Location, options: &mut Options) -> Result<RedisBackend> {
        let redacted = location.redacted();
        let bad = |what: String| Error::config(format!("{what} in {redacted}"));
        let mut opts = RedisOptions::default();
        if let Some(t) = options.seconds("connect_timeout")? {
            opts.connect_timeout = positive_or_none(t, "connect_timeout")
                .map_err(|e| options.blame("connect_timeout", e))?;
        }
        if let Some(t) = options.seconds("socket_timeout")? {
            opts.socket_timeout = positive_or_none(t, "socket_timeout")
                .map_err(|e| options.blame("socket_timeout", e))?;
        }
        if let Some(n) = options.positive_u64("max_connections")? {
            opts.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
        }
        let db_option = options.i64("db")?;
        if let Some(path) = options.take("tls_ca") {
            opts.tls_ca = Some(path.into());
        }
        if let Some(v) = options.bool("insecure")? {
            opts.insecure = v;
        }

        let scheme = location.scheme();
        let tls = matches!(scheme, "rediss" | "rediss+cluster" | "rediss+sentinel");
        if !tls && (opts.tls_ca.is_some() || opts.insecure) {
            let culprit = if opts.tls_ca.is_some() {
                "tls_ca"
            } else {
                "insecure"
            };
            return Err(options.blame(
                culprit,
                bad(format!(
                    "options tls_ca and insecure apply only to rediss:// URLs, not {scheme}://"
                )),
            ));
        }
        let tls_certs = match &opts.tls_ca {
            None => None,
            Some(path) => {
                let pem =
                    super::read_pem_file("tls_ca", path).map_err(|e| options.blame("tls_ca", e))?;
                Some(TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                })
            }
        };
        let auth = RedisConnectionInfo::default();
        let auth = match location.username() {
            Some(u) => auth.set_username(u),
            None => auth,
        };
        let auth = match location.password() {
            Some(p) => auth.set_password(p),
            None => auth,
        };

        let mut leader_client = None;
        let mut servers = Vec::new();
        let mut cluster_nodes = None;
        let aio;
        let topology = match scheme {
            "unix" => {
                if !location.hosts().is_empty() {
                    return Err(bad(
                        "unix:// takes a socket path (unix:///path/to/redis.sock), not a host"
                            .into(),
                    ));
                }
                if location.path().is_empty() {
                    return Err(bad("unix:// needs the socket's path".into()));
                }
                opts.db = check_db(db_option.unwrap_or(0)).map_err(bad)?;
                let addr = ConnectionAddr::Unix(location.path().into());
                let info = connection_info(addr, auth.set_db(opts.db))?;
                let client = client_for(info, None, &redacted)?;
                leader_client = Some((client.clone(), opts.connect_timeout));
                let addr = location.path().to_owned();
                servers.push(TrackedServer(Tracked::Fixed(
                    Box::new(client.clone()),
                    addr.clone(),
                )));
                aio = AsyncTopology::Single {
                    leader: Box::new(aio::Server::new(client.clone(), addr.clone(), &opts)),
                    replicas: Vec::new(),
                };
                Topology::Single {
                    leader: Pool::single(client, addr, &opts),
                    replicas: Vec::new(),
                }
            }
            "redis" | "rediss" => {
                if location.hosts().is_empty() {
                    return Err(bad(format!("{scheme}:// needs a host")));
                }
                opts.db = db_from_path(location.path(), db_option).map_err(&bad)?;
                let auth = auth.set_db(opts.db);
                let mut pools = Vec::with_capacity(location.hosts().len());
                let mut async_servers = Vec::with_capacity(location.hosts().len());
                for host in location.hosts() {
                    let (h, port) = split_host(host).map_err(&bad)?;
                    let addr = tcp_addr(h.clone(), port, tls.then_some(opts.insecure));
                    let info = connection_info(addr, auth.clone())?;
                    let client = client_for(info, tls_certs.clone(), &redacted)?;
                    if leader_client.is_none() {
                        leader_client = Some((client.clone(), opts.connect_timeout));
                    }
                    servers.push(TrackedServer(Tracked::Fixed(
                        Box::new(client.clone()),
                        format!("{h}:{port}"),
                    )));
                    async_servers.push(aio::Server::new(
                        client.clone(),
                        format!("{h}:{port}"),
                        &opts,
                    ));
                    pools.push(Pool::single(client, format!("{h}:{port}"), &opts));
                }
                let leader = pools.remove(0);
                let async_leader = async_servers.remove(0);
                aio = AsyncTopology::Single {
                    leader: Box::new(async_leader),
                    replicas: async_servers,
                };
                let replicas = pools
                    .into_iter()
                    .map(|pool| Replica {
                        pool,
                        down_until: Default::default(),
                    })
                    .collect();
                Topology::Single { leader, replicas }
            }
            "redis+cluster" | "rediss+cluster" => {
                if location.hosts().is_empty() {
                    return Err(bad(format!("{scheme}:// needs at least one node")));
                }
                let db = db_from_path(location.path(), db_option).map_err(&bad)?;
                if db != 0 {
                    return Err(bad(format!(
                        "a Redis Cluster has only database 0, not {db}"
                    )));
                }
                let mut nodes = Vec::with_capacity(location.hosts().len());
                let mut seeds = Vec::with_capacity(location.hosts().len());
                for host in location.hosts() {
                    let (h, port) = split_host(host).map_err(&bad)?;
                    seeds.push((h.clone(), port));
                    let addr = tcp_addr(h, port, tls.then_some(opts.insecure));
                    nodes.push(connection_info(addr, auth.clone())?);
                }
                cluster_nodes = Some(cluster::ClusterNodes::new(
                    seeds,
                    auth.clone(),
                    tls.then_some(opts.insecure),
                    tls_certs.clone(),
                    redacted.clone(),
                ));
                let client = |retries: u32| {
                    let mut builder = ClusterClientBuilder::new(nodes.clone())
                        .connection_timeout(
                            opts.connect_timeout.unwrap_or(Duration::from_secs(86_400)),
                        )
                        .retries(retries)
                        .min_retry_wait(10)
                        .max_retry_wait(100);
                    if let Some(t) = opts.socket_timeout {
                        builder = builder.response_timeout(t);
                    }
                    if let Some(certs) = tls_certs.clone() {
                        builder = builder.certs(certs);
                    }
                    builder.build().map_err(|e| {
                        bad(format!(
                            "the cluster settings are rejected ({})",
                            e.category()
                        ))
                    })
                };
                let addr = location.hosts().join(",");
                // A dead node must cost a few fast attempts, not redis-rs' 16 with backoff.
                let (retrying, once) = (client(2)?, client(0)?);
                aio = AsyncTopology::Cluster(Box::new(aio::Cluster::new(
                    retrying.clone(),
                    once.clone(),
                    addr.clone(),
                )));
                Topology::Cluster {
                    pool: Pool::cluster(retrying, addr.clone(), &opts),
                    // No retry at all: `Pool::run_once` follows a redirection itself.
                    once: Pool::cluster(once, addr, &opts),
                }
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let sentinels =
                    sentinel_group(location, options, db_option, &auth, tls_certs, &mut opts)?;
                let read_from_replicas = options.bool("read_from_replicas")?.unwrap_or(false);
                let addr = sentinels.describe();
                let sentinels = std::sync::Arc::new(sentinels);
                if !read_from_replicas {
                    servers.push(TrackedServer(Tracked::Master(
                        sentinels.clone(),
                        addr.clone(),
                    )));
                }
                let leader = Pool::sentinel(sentinels.clone(), NodeRole::Master, &addr, &opts);
                let async_leader =
                    aio::Server::sentinel(sentinels.clone(), NodeRole::Master, &addr, &opts);
                let (replicas, async_replicas) = if read_from_replicas {
                    let addr = format!("a replica of {addr}");
                    (
                        vec![Replica {
                            pool: Pool::sentinel(
                                sentinels.clone(),
                                NodeRole::Replica,
                                &addr,
                                &opts,
                            ),
                            down_until: Default::default(),
                        }],
                        vec![aio::Server::sentinel(
                            sentinels,
                            NodeRole::Replica,
                            &addr,
                            &opts,
                        )],
                    )
                } else {
                    (Vec::new(), Vec::new())
                };
                aio = AsyncTopology::Single {
                    leader: Box::new(async_leader),
                    replicas: async_replicas,
                };
                Topology::Single { leader, replicas }
            }
            other => {
                return Err(bad(format!(
                    "scheme {other}:// is not one of the redis backend's (redis://, rediss://, \
                     unix://, redis+cluster://, rediss+cluster://, redis+sentinel://, \
                     rediss+sentinel://)"
                )))
            }
        };
        Ok(RedisBackend {
            topology,
            aio,
            location: redacted,
            leader_client,
            servers,
            connect_timeout: opts.connect_timeout,
            cluster: cluster_nodes,
        })
    }

    /// A Cluster's nodes, for [`crate::TrackingBus`]; `None` when this is not a Cluster.
    pub(crate) fn cluster_nodes(&self) -> Option<&cluster::ClusterNodes> {
        self.cluster.as_ref()
    }

    /// The leader's client and connect timeout, for a connection outside the pool (the
    /// pub/sub subscriber of [`crate::RedisBus`]); `None` on a Cluster.
    pub(crate) fn leader_client(&self) -> Option<&(Client, Option<Duration>)> {
        self.leader_client.as_ref()
    }

    /// Every server reads go to, the leader first, for [`crate::TrackingBus`]; empty on a
    /// Cluster and behind Sentinel with `read_from_replicas`.
    pub(crate) fn read_servers(&self) -> &[TrackedServer] {
        &self.servers
    }

    /// How long opening a connection may take (`connect_timeout`).
    pub(crate) fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// `PUBLISH`es every message on `channel` in one pipeline on the leader.
    pub(crate) fn publish(&self, channel: &str, messages: &[Vec<u8>]) -> Result<()> {
        let mut pipe = redis::pipe();
        for m in messages {
            pipe.cmd("PUBLISH").arg(channel).arg(m.as_slice()).ignore();
        }
        match &self.topology {
            Topology::Single { leader, .. } => leader.run(|c| pipe.query::<()>(c)),
            Topology::Cluster { .. } => Err(Error::config(
                "pub/sub invalidations need one Redis server, not a Cluster",
            )),
        }
    }

    /// True when this backend talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster { .. })
    }

    /// Removes every key of the logical database (`FLUSHDB`; on a Cluster, on every primary),
    /// whatever its prefix — also the entries of other caches and other programs that use
    /// this database. [`Backend::clear`] with a prefix removes only that prefix's keys.
    pub fn flush_db(&self) -> Result<()> {
        self.on_leader(|c| cmd("FLUSHDB").query::<()>(c))
    }

    fn cluster_clear(conn: &mut ClusterConnection, pattern: &[u8]) -> RedisResult<()> {
        let nodes: String = cmd("CLUSTER").arg("NODES").query(&mut *conn)?;
        for (host, port) in cluster_primaries(&nodes) {
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            let mut cursor: u64 = 0;
            loop {
                let reply = conn.route_command(
                    cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(SCAN_BATCH),
                    route.clone(),
                )?;
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)?;
                if !keys.is_empty() {
                    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                    let mut pipe = cluster_pipe();
                    for group in by_slot(&refs).values() {
                        let mut unlink = cmd("UNLINK");
                        for &i in group {
                            unlink.arg(refs[i]);
                        }
                        pipe.add_command(unlink).ignore();
                    }
                    pipe.query::<()>(conn)?;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(())
    }
}

type RedisResult<T> = redis::RedisResult<T>;

fn cmd(name: &str) -> Cmd {
    redis::cmd(name)
}

/// `PX` milliseconds for `ttl`: one less than its whole milliseconds, at least 1.
///
/// Redis expires a key once its clock, in whole milliseconds, is past the time of the write
/// (truncated) plus `PX`, so `PX n` keeps a key for up to n + 1 ms. Sending n − 1 means a value
/// is never served once its TTL has passed since the write was acknowledged (with `PX 1000`,
/// a read one second after the write found the key alive about half the time).
fn px(ttl: Duration) -> u64 {
    (ttl.as_millis().saturating_sub(1)).clamp(1, MAX_PX) as u64
}

/// `prefix*` with the glob characters of `prefix` escaped, for `SCAN MATCH`.
fn match_pattern(prefix: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(prefix.len() + 8);
    for &b in prefix {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            p.push(b'\\');
        }
        p.push(b);
    }
    p.push(b'*');
    p
}

/// A number below `n`, from a per-thread xorshift (replica choice needs no better).
fn random_below(n: usize) -> usize {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let here = &() as *const () as u64;
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            (here ^ t) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x % n as u64) as usize
    })
}

fn scripts() -> &'static (Script, Script, Script) {
    static SCRIPTS: std::sync::OnceLock<(Script, Script, Script)> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| {
        (
            Script::new(INCR_SCRIPT),
            Script::new(PERSIST_SCRIPT),
            Script::new(DELETE_IF_SCRIPT),
        )
    })
}

impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn async_access(self: std::sync::Arc<Self>) -> AsyncAccess {
        AsyncAccess::Native(self)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        self.on_reader(|c| commands::value(commands::get(key).query(c)?))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let c = commands::set(key, value, ttl);
        self.on_leader(|conn| c.query::<()>(conn))
    }

    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let c = commands::add(key, value, ttl);
        self.on_leader_once(|conn| Ok(commands::added(&c.query(conn)?)))
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        self.on_leader(|c| Ok(commands::unlink(&[key]).query::<i64>(c)? > 0))
    }

    fn delete_if_equals(&self, key: &[u8], expected: &[u8]) -> Result<bool> {
        self.on_leader(|c| Ok(scripts().2.key(key).arg(expected).invoke::<i64>(c)? == 1))
    }

    fn has_key(&self, key: &[u8]) -> Result<bool> {
        self.on_reader(|c| Ok(commands::exists(key).query::<i64>(c)? > 0))
    }

    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> Result<bool> {
        match ttl {
            Some(ttl) => {
                let pexpire = commands::pexpire(key, ttl);
                self.on_leader(|c| Ok(pexpire.query::<i64>(c)? == 1))
            }
            None => self.on_leader(|c| Ok(scripts().1.key(key).invoke::<i64>(c)? == 1)),
        }
    }

    fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        let reply =
            self.on_leader_once(|c| scripts().0.key(key).arg(delta).invoke::<redis::Value>(c))?;
        commands::incremented(reply, key, &self.location)
    }

    fn extend_if_equals(
        &self,
        key: &[u8],
        expected: &[u8],
        ttl: Duration,
        replace: bool,
    ) -> Result<bool> {
        let run = |c: &mut dyn ConnectionLike| {
            Ok(extend_invocation(key, expected, ttl, replace).invoke::<i64>(c)? == 1)
        };
        if replace {
            self.on_leader(run)
        } else {
            self.on_leader_once(run)
        }
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match &self.topology {
            Topology::Single { .. } => {
                let mget = commands::mget(keys);
                self.on_reader(|c| commands::values(mget.query(c)?, keys.len()))
            }
            Topology::Cluster { pool, .. } => {
                // redis-rs' cluster pipeline refuses MGET; a pipeline of GETs, sent to every
                // node before any reply is read, costs the same one round trip per node (and
                // a hundred random keys fall in a hundred slots anyway: per-slot MGETs would
                // each carry one key).
                let mut pipe = cluster_pipe();
                for k in keys {
                    pipe.add_command(commands::get(k));
                }
                pool.run(|c| {
                    let replies: Vec<redis::Value> = pipe.query(c)?;
                    if replies.len() != keys.len() {
                        return Err(unexpected(&redis::Value::Array(replies)));
                    }
                    replies.into_iter().map(commands::value).collect()
                })
            }
        }
    }

    fn set_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<Vec<usize>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        match &self.topology {
            Topology::Single { leader, .. } => {
                let mut pipe = redis::pipe();
                for (k, v) in items {
                    pipe.add_command(commands::set(k, v, ttl)).ignore();
                }
                leader.run(|c| pipe.query::<()>(c))?;
            }
            Topology::Cluster { pool, .. } => {
                let mut pipe = cluster_pipe();
                for (k, v) in items {
                    pipe.add_command(commands::set(k, v, ttl)).ignore();
                }
                pool.run(|c| pipe.query::<()>(c))?;
            }
        }
        Ok(Vec::new())
    }

    fn delete_many(&self, keys: &[&[u8]]) -> Result<usize> {
        if keys.is_empty() {
            return Ok(0);
        }
        match &self.topology {
            Topology::Single { leader, .. } => {
                let unlink = commands::unlink(keys);
                leader.run(|c| unlink.query::<usize>(c))
            }
            Topology::Cluster { pool, .. } => {
                let mut pipe = cluster_pipe();
                for group in by_slot(keys).values() {
                    let mut unlink = cmd("UNLINK");
                    for &i in group {
                        unlink.arg(keys[i]);
                    }
                    pipe.add_command(unlink);
                }
                pool.run(|c| Ok(pipe.query::<Vec<usize>>(c)?.into_iter().sum()))
            }
        }
    }

    fn clear(&self, prefix: &[u8]) -> Result<()> {
        // The core passes an empty prefix only when the cache's key_prefix is empty: then
        // every key of the database is the cache's.
        if prefix.is_empty() {
            return self.flush_db();
        }
        let pattern = match_pattern(prefix);
        match &self.topology {
            Topology::Single { leader, .. } => leader.run(|c| {
                let mut cursor: u64 = 0;
                loop {
                    let (next, keys): (u64, Vec<Vec<u8>>) =
                        commands::scan(cursor, &pattern, SCAN_BATCH).query(c)?;
                    if !keys.is_empty() {
                        commands::unlink(&keys).query::<()>(c)?;
                    }
                    cursor = next;
                    if cursor == 0 {
                        return Ok(());
                    }
                }
            }),
            Topology::Cluster { pool, .. } => pool.run(|c| Self::cluster_clear(c, &pattern)),
        }
    }

    fn ttl(&self, key: &[u8]) -> Result<crate::expiry::TimeToLive> {
        self.on_reader(|c| Ok(commands::time_to_live(commands::pttl(key).query(c)?)))
    }

    fn replace(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let c = commands::replace(key, value, ttl);
        self.on_leader(|conn| Ok(commands::added(&c.query(conn)?)))
    }

    fn redis_command(&self, call: &crate::RedisCall) -> Result<crate::RedisReply> {
        structures::check_slots(call, self.is_cluster())?;
        let c = structures::command(call);
        let reply = if call.command().writes() {
            self.on_leader_once(|conn| c.query::<redis::Value>(conn))?
        } else {
            self.on_reader(|conn| c.query::<redis::Value>(conn))?
        };
        structures::reply(reply).map_err(|e| map_err(e, &self.location))
    }

    /// `SCAN` on the leader, or on every Cluster primary (see `redis/scan.rs`).
    fn scan_keys(
        self: std::sync::Arc<Self>,
        pattern: &crate::KeyPattern,
        count: usize,
    ) -> Result<Box<dyn crate::KeyScan>> {
        Ok(Box::new(scan::RedisScan::new(self, pattern, count)))
    }

    /// `INFO` and `TIME` on the leader (on a Cluster, on the node the connection picks).
    fn server_info(&self) -> Result<super::ServerInfo> {
        let sent = std::time::Instant::now();
        let time: (u64, u64) = self.on_leader_once(|c| cmd("TIME").query(c))?;
        let took = sent.elapsed();
        let info: String = self.on_leader_once(|c| cmd("INFO").query(c))?;
        Ok(info_of(
            &info,
            time,
            took,
            self.location.starts_with("rediss"),
        ))
    }
}

/// [`super::ServerInfo`] from an `INFO` reply and a `TIME` reply read in `took`.
fn info_of(info: &str, (secs, micros): (u64, u64), took: Duration, tls: bool) -> super::ServerInfo {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    let mut out = super::ServerInfo::new("redis");
    out.version = field("redis_version");
    out.tls = Some(tls);
    out.set_time(
        std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros),
        took,
    );
    for name in [
        "redis_mode",
        "used_memory_human",
        "maxmemory_human",
        "maxmemory_policy",
        "connected_clients",
        "keyspace_hits",
        "keyspace_misses",
        "evicted_keys",
        "expired_keys",
    ] {
        if let Some(v) = field(name) {
            out.details.push((name.to_owned(), v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_info_reads_info_fields() {
        let info = "# Server\r\nredis_version:7.2.4\r\nredis_mode:standalone\r\n\
                    # Stats\r\nkeyspace_hits:10\r\nkeyspace_misses:3\r\n";
        let took = Duration::from_millis(2);
        let got = info_of(info, (1_700_000_000, 500_000), took, false);
        assert_eq!(got.version.as_deref(), Some("7.2.4"));
        assert_eq!(
            got.time,
            Some(std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500))
        );
        assert_eq!(
            got.details[0],
            ("redis_mode".to_owned(), "standalone".to_owned())
        );
        assert!(got
            .details
            .contains(&("keyspace_misses".to_owned(), "3".to_owned())));
        assert_eq!(got.tls, Some(false));
    }

    #[test]
    fn patterns_escape_globs() {
        assert_eq!(match_pattern(b"app:"), b"app:*");
        assert_eq!(match_pattern(b"a*b?[c]\\"), b"a\\*b\\?\\[c\\]\\\\*");
    }

    #[test]
    fn px_never_outlives_the_ttl_and_clamps() {
        assert_eq!(px(Duration::from_micros(1)), 1);
        assert_eq!(px(Duration::from_millis(2)), 1);
        assert_eq!(px(Duration::from_millis(1500)), 1499);
        assert_eq!(px(Duration::from_micros(1_500_900)), 1499);
        assert_eq!(px(Duration::MAX), MAX_PX as u64);
    }
}
