//! Redis Sentinel: the master (and the replicas) of a named group, found through its
//! sentinels each time a connection is opened.
//!
//! The client side of the Sentinel protocol (<https://redis.io/docs/reference/sentinel-clients/>):
//! the sentinels are asked in turn `SENTINEL GET-MASTER-ADDR-BY-NAME name` (the last one that
//! answered first), the master named is connected to and must answer `ROLE` with `master`.
//! Every new connection does this, so a connection that breaks when the master dies is
//! replaced by one to whichever server the sentinels name then; a connection that meets
//! `READONLY` (a master demoted while the connection stayed open) is dropped by the caller
//! (`Pool` / `aio::Server`) for the same effect.
//!
//! Not redis-rs' `sentinel` feature: its lookups open connections without a connect or
//! read timeout (an unreachable sentinel would hang a call) and need `&mut self`.

use super::{client_for, connection_info, tcp_addr, RedisOptions, RedisResult};
use crate::error::{Error, ErrorKind};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, Connection, ProtocolVersion, RedisConnectionInfo};
use redis::{RedisError, TlsCertificates};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The port of a sentinel given without one.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// Which server of the group a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NodeRole {
    Master,
    Replica,
}

impl NodeRole {
    /// The first word of the `ROLE` reply the server must give.
    fn role_word(self) -> &'static str {
        match self {
            NodeRole::Master => "master",
            NodeRole::Replica => "slave",
        }
    }
}

/// How the data servers the sentinels name are reached: TLS or not, and their auth and db.
pub(super) struct NodeSettings {
    pub(super) tls: Option<(bool, Option<TlsCertificates>)>,
    pub(super) auth: RedisConnectionInfo,
}

/// The sentinels of one master name, and how to reach the servers they name.
pub(super) struct Sentinels {
    sentinels: Vec<(Client, String)>,
    /// The index of the sentinel to ask first: the last one that answered.
    preferred: AtomicUsize,
    name: String,
    nodes: NodeSettings,
    connect_timeout: Option<Duration>,
    socket_timeout: Option<Duration>,
    async_config: AsyncConnectionConfig,
    redacted: String,
}

impl Sentinels {
    /// `sentinels`: a client for each sentinel (with the sentinels' own auth) and its
    /// `host:port`.
    pub(super) fn new(
        sentinels: Vec<(Client, String)>,
        name: String,
        nodes: NodeSettings,
        opts: &RedisOptions,
        redacted: String,
    ) -> Sentinels {
        Sentinels {
            sentinels,
            preferred: AtomicUsize::new(0),
            name,
            nodes,
            connect_timeout: opts.connect_timeout,
            socket_timeout: opts.socket_timeout,
            async_config: AsyncConnectionConfig::new()
                .set_connection_timeout(opts.connect_timeout)
                .set_response_timeout(opts.socket_timeout),
            redacted,
        }
    }

    /// How errors name this group: `master 'mymaster' via sentinels h1:26379,h2:26379`.
    pub(super) fn describe(&self) -> String {
        let hosts: Vec<&str> = self.sentinels.iter().map(|(_, a)| a.as_str()).collect();
        format!("master '{}' via sentinels {}", self.name, hosts.join(","))
    }

    /// The sentinels in the order to ask them.
    fn in_order(&self) -> impl Iterator<Item = (usize, &(Client, String))> {
        let start = self.preferred.load(Ordering::Relaxed) % self.sentinels.len();
        (0..self.sentinels.len())
            .map(move |i| (start + i) % self.sentinels.len())
            .map(|i| (i, &self.sentinels[i]))
    }

    /// A connection to the server of `role`, as the sentinels name it now, whose `ROLE`
    /// agrees.
    pub(super) fn connect(&self, role: NodeRole) -> RedisResult<Connection> {
        let mut asked = Asked::default();
        let mut candidates = None;
        for (i, (client, addr)) in self.in_order() {
            let reply = self
                .open_sync(client)
                .and_then(|mut c| lookup(role, &self.name).query(&mut c));
            candidates = self.answer(role, i, addr, reply, &mut asked);
            if candidates.is_some() {
                break;
            }
        }
        let candidates = candidates.ok_or_else(|| asked.error(self))?;
        let mut last = None;
        for (host, port) in start_at_random(candidates) {
            let client = self.node_client(&host, port)?;
            let result = self.open_sync(&client).and_then(|mut c| {
                let reply: redis::Value = redis::cmd("ROLE").query(&mut c)?;
                check_role(role, &reply, &host, port, &self.name)?;
                Ok(c)
            });
            match result {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| no_node(role, &self.name)))
    }

    /// [`Sentinels::connect`] on a multiplexed async connection.
    pub(super) async fn connect_async(&self, role: NodeRole) -> RedisResult<MultiplexedConnection> {
        self.connect_async_with(role, &self.async_config, ProtocolVersion::RESP2)
            .await
    }

    /// [`Sentinels::connect_async`] with a connection configuration and protocol of the
    /// caller's (the RESP3 tracking connection of [`crate::TrackingBus`]).
    pub(super) async fn connect_async_with(
        &self,
        role: NodeRole,
        config: &AsyncConnectionConfig,
        protocol: ProtocolVersion,
    ) -> RedisResult<MultiplexedConnection> {
        let mut asked = Asked::default();
        let mut candidates = None;
        for (i, (client, addr)) in self.in_order() {
            let reply = match self.open_async(client).await {
                Ok(mut c) => lookup(role, &self.name).query_async(&mut c).await,
                Err(e) => Err(e),
            };
            candidates = self.answer(role, i, addr, reply, &mut asked);
            if candidates.is_some() {
                break;
            }
        }
        let candidates = candidates.ok_or_else(|| asked.error(self))?;
        let mut last = None;
        for (host, port) in start_at_random(candidates) {
            let client = self.node_client_with(&host, port, protocol)?;
            let opened = client
                .get_multiplexed_async_connection_with_config(config)
                .await;
            let result = match opened {
                Ok(mut c) => match redis::cmd("ROLE").query_async(&mut c).await {
                    Ok(reply) => check_role(role, &reply, &host, port, &self.name).map(|()| c),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| no_node(role, &self.name)))
    }

    /// What sentinel `i` (at `addr`) answered: the servers it names, or `None` (noted in
    /// `asked`) when it failed or does not know the name.
    fn answer(
        &self,
        role: NodeRole,
        i: usize,
        addr: &str,
        reply: RedisResult<redis::Value>,
        asked: &mut Asked,
    ) -> Option<Vec<(String, u16)>> {
        match reply {
            Ok(reply) => {
                self.preferred.store(i, Ordering::Relaxed);
                let found = candidates_of(role, reply);
                if found.is_none() {
                    asked.unknown(addr);
                }
                found
            }
            Err(e) => {
                asked.failed(addr, &e);
                None
            }
        }
    }

    fn open_sync(&self, client: &Client) -> RedisResult<Connection> {
        let conn = match self.connect_timeout {
            Some(t) => client.get_connection_with_timeout(t)?,
            None => client.get_connection()?,
        };
        conn.set_read_timeout(self.socket_timeout)?;
        conn.set_write_timeout(self.socket_timeout)?;
        Ok(conn)
    }

    async fn open_async(&self, client: &Client) -> RedisResult<MultiplexedConnection> {
        client
            .get_multiplexed_async_connection_with_config(&self.async_config)
            .await
    }

    /// A client for the data server at `host:port`, with the master's auth, db and TLS.
    fn node_client(&self, host: &str, port: u16) -> RedisResult<Client> {
        self.node_client_with(host, port, ProtocolVersion::RESP2)
    }

    fn node_client_with(
        &self,
        host: &str,
        port: u16,
        protocol: ProtocolVersion,
    ) -> RedisResult<Client> {
        let insecure = self.nodes.tls.as_ref().map(|(insecure, _)| *insecure);
        let addr = tcp_addr(host.to_owned(), port, insecure);
        let certs = self.nodes.tls.as_ref().and_then(|(_, c)| c.clone());
        connection_info(addr, self.nodes.auth.clone().set_protocol(protocol))
            .and_then(|info| client_for(info, certs, &self.redacted))
            .map_err(|e| {
                RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "bad server address from a sentinel",
                    e.to_string(),
                ))
            })
    }
}

/// What the sentinels answered, for the error when none named a server.
#[derive(Default)]
struct Asked {
    unknown: Vec<String>,
    failed: Vec<String>,
    /// A sentinel refused our password: a configuration error, not an outage.
    refused: bool,
}

impl Asked {
    fn unknown(&mut self, addr: &str) {
        self.unknown.push(addr.to_owned());
    }

    fn failed(&mut self, addr: &str, err: &RedisError) {
        use redis::ErrorKind as K;
        if matches!(err.kind(), K::AuthenticationFailed)
            || matches!(err.code(), Some("NOAUTH" | "WRONGPASS"))
        {
            self.refused = true;
        }
        self.failed.push(format!("{addr}: {err}"));
    }

    fn error(self, sentinels: &Sentinels) -> RedisError {
        let name = &sentinels.name;
        if !self.unknown.is_empty() && !self.refused {
            // At least one sentinel answered and none knows the name: a typo, not an outage.
            let mut detail = format!(
                "the sentinels {} know no master named '{name}' (SENTINEL MASTERS lists the \
                 names they watch)",
                self.unknown.join(",")
            );
            if !self.failed.is_empty() {
                detail.push_str(&format!("; unreachable: {}", self.failed.join("; ")));
            }
            return RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "unknown master name",
                detail,
            ));
        }
        if self.refused {
            return RedisError::from((
                redis::ErrorKind::AuthenticationFailed,
                "a sentinel refused the password (give it with sentinel_password=…)",
                self.failed.join("; "),
            ));
        }
        std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!(
                "no sentinel of '{name}' answered: {}",
                self.failed.join("; ")
            ),
        )
        .into()
    }
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME name`, or `SENTINEL REPLICAS name`.
fn lookup(role: NodeRole, name: &str) -> Cmd {
    let mut c = redis::cmd("SENTINEL");
    match role {
        NodeRole::Master => c.arg("GET-MASTER-ADDR-BY-NAME"),
        NodeRole::Replica => c.arg("REPLICAS"),
    };
    c.arg(name);
    c
}

/// The servers a sentinel's reply names for `role`; `None` when it does not know the name.
fn candidates_of(role: NodeRole, reply: redis::Value) -> Option<Vec<(String, u16)>> {
    match role {
        NodeRole::Master => {
            let (host, port): (String, String) = redis::from_redis_value(reply).ok()?;
            Some(vec![(host, port.parse().ok()?)])
        }
        NodeRole::Replica => {
            let replicas: Vec<HashMap<String, String>> = redis::from_redis_value(reply).ok()?;
            Some(healthy_replicas(replicas))
        }
    }
}

/// The replicas a sentinel lists that are up. (Its `master-link-status` may be 10 s old:
/// the replica's own `ROLE` tells whether it is linked.)
fn healthy_replicas(replicas: Vec<HashMap<String, String>>) -> Vec<(String, u16)> {
    replicas
        .into_iter()
        .filter(|r| {
            let flags = r.get("flags").map_or("", String::as_str);
            !flags
                .split(',')
                .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"))
        })
        .filter_map(|r| Some((r.get("ip")?.clone(), r.get("port")?.parse().ok()?)))
        .collect()
}

/// `items` rotated to start at a random one (spreads connections over the replicas).
fn start_at_random<T>(mut items: Vec<T>) -> Vec<T> {
    if !items.is_empty() {
        let n = super::random_below(items.len());
        items.rotate_left(n);
    }
    items
}

/// Fails unless the `ROLE` reply starts with the word `role` calls for (and, for a
/// replica, says it is `connected` to its master: one still syncing has no data to read).
fn check_role(
    role: NodeRole,
    reply: &redis::Value,
    host: &str,
    port: u16,
    name: &str,
) -> RedisResult<()> {
    let text = |v: Option<&redis::Value>| match v {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(redis::Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    };
    let (word, link) = match reply {
        redis::Value::Array(items) => (text(items.first()), text(items.get(3))),
        _ => (String::new(), String::new()),
    };
    if word == role.role_word() && (role == NodeRole::Master || link == "connected") {
        return Ok(());
    }
    let word = match role {
        NodeRole::Replica if word == "slave" => format!("slave, {link}"),
        _ => word,
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        format!(
            "the sentinels name {host}:{port} as a {} of '{name}', but it answers ROLE with \
             '{word}' (a failover is under way)",
            role.role_word()
        ),
    )
    .into())
}

fn no_node(role: NodeRole, name: &str) -> RedisError {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        format!(
            "the sentinels list no healthy {} of '{name}'",
            role.role_word()
        ),
    )
    .into()
}

/// True for a `READONLY` reply: the server is a replica now.
pub(super) fn is_readonly(err: &RedisError) -> bool {
    err.code() == Some("READONLY")
}

/// The error of a call that met `READONLY` on a master's connection: an outage (the master
/// was demoted), after which the sentinels are asked again.
pub(super) fn demoted(err: RedisError, addr: &str) -> Error {
    Error::new(
        ErrorKind::Connection,
        format!(
            "redis {addr}: the server answered READONLY (the master was demoted); the next \
             call asks the sentinels for the new one"
        ),
    )
    .with_source(err)
}

/// `/name` or `/name/db` of a sentinel URL, with the `db` option when the path has no db.
pub(super) fn name_and_db(
    path: &str,
    db_option: Option<i64>,
) -> std::result::Result<(String, i64), String> {
    let text = path.strip_prefix('/').unwrap_or(path);
    let (name, db) = match text.split_once('/') {
        Some((name, db)) => (name, db),
        None => (text, ""),
    };
    if name.is_empty() {
        return Err(
            "the URL names no master: expected redis+sentinel://host:26379,…/\
                    <master name>[/db]"
                .into(),
        );
    }
    let db = super::db_from_path(db, db_option)?;
    Ok((name.to_owned(), db))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_master_and_db() {
        assert_eq!(
            name_and_db("/mymaster", None).unwrap(),
            ("mymaster".into(), 0)
        );
        assert_eq!(
            name_and_db("/mymaster/3", None).unwrap(),
            ("mymaster".into(), 3)
        );
        assert_eq!(name_and_db("/m/", Some(2)).unwrap(), ("m".into(), 2));
        assert!(name_and_db("", None)
            .unwrap_err()
            .contains("names no master"));
        assert!(name_and_db("/", None)
            .unwrap_err()
            .contains("names no master"));
        assert!(name_and_db("//0", None).is_err());
        assert!(name_and_db("/m/x", None).is_err());
        assert!(name_and_db("/m/1", Some(2)).is_err());
    }

    #[test]
    fn only_healthy_linked_replicas_are_candidates() {
        let replica = |port: &str, flags: &str, link: &str| {
            HashMap::from([
                ("ip".to_string(), "127.0.0.1".to_string()),
                ("port".to_string(), port.to_string()),
                ("flags".to_string(), flags.to_string()),
                ("master-link-status".to_string(), link.to_string()),
            ])
        };
        let listed = vec![
            replica("1", "slave", "ok"),
            replica("2", "s_down,slave", "ok"),
            replica("3", "slave,disconnected", "ok"),
            replica("4", "slave", "err"),
            replica("x", "slave", "ok"),
        ];
        assert_eq!(
            healthy_replicas(listed),
            [("127.0.0.1".to_string(), 1), ("127.0.0.1".to_string(), 4)]
        );
    }

    #[test]
    fn role_must_match() {
        let reply = |w: &str| redis::Value::Array(vec![redis::Value::BulkString(w.into())]);
        assert!(check_role(NodeRole::Master, &reply("master"), "h", 1, "m").is_ok());
        let err = check_role(NodeRole::Master, &reply("slave"), "h", 1, "m").unwrap_err();
        assert!(err.is_io_error());
        assert!(err.to_string().contains("failover"), "{err}");
        let replica = |state: &str| {
            redis::Value::Array(vec![
                redis::Value::BulkString(b"slave".to_vec()),
                redis::Value::BulkString(b"127.0.0.1".to_vec()),
                redis::Value::Int(6379),
                redis::Value::BulkString(state.into()),
                redis::Value::Int(0),
            ])
        };
        assert!(check_role(NodeRole::Replica, &replica("connected"), "h", 1, "m").is_ok());
        assert!(check_role(NodeRole::Replica, &replica("sync"), "h", 1, "m").is_err());
    }

    #[test]
    fn unknown_names_are_configuration_errors() {
        let nil = candidates_of(NodeRole::Master, redis::Value::Nil);
        assert!(nil.is_none());
        let addr = redis::Value::Array(vec![
            redis::Value::BulkString(b"10.0.0.1".to_vec()),
            redis::Value::BulkString(b"6380".to_vec()),
        ]);
        assert_eq!(
            candidates_of(NodeRole::Master, addr),
            Some(vec![("10.0.0.1".to_string(), 6380)])
        );
    }
}
