//! `keys` / `iter_keys` / `delete_pattern` on Redis: `SCAN … MATCH … COUNT`, never `KEYS`.
//!
//! The scan runs on the leader, not on a read replica: a `SCAN` cursor belongs to one
//! server, so a scan cannot hop between replicas chosen at random per call, and a replica
//! that lags would list keys the leader (where `delete_pattern` deletes) no longer has. On a
//! Cluster every primary is scanned in turn, each with its own cursor.
//!
//! One [`RedisScan`] reads its pages through the synchronous connections ([`KeyScan`]) or
//! the multiplexed async ones ([`AsyncKeyScan`]): the cursor belongs to the server, not to
//! the connection.

use super::aio::{query, AnyConn, AsyncTopology};
use super::{cluster_primaries, cmd, commands, RedisBackend, Topology};
use crate::backend::{AsyncKeyScan, BoxFuture, KeyScan};
use crate::error::Result;
use crate::pattern::KeyPattern;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use std::sync::Arc;

/// A scan in progress; see the module documentation.
pub(super) struct RedisScan {
    backend: Arc<RedisBackend>,
    pattern: Vec<u8>,
    count: usize,
    cursor: u64,
    /// Cluster: the primaries still to scan (the current one first); listed at the first page.
    nodes: Option<Vec<(String, u16)>>,
    done: bool,
}

impl RedisScan {
    pub(super) fn new(backend: Arc<RedisBackend>, pattern: &KeyPattern, count: usize) -> Self {
        RedisScan {
            backend,
            pattern: pattern.as_bytes().to_vec(),
            count: count.max(1),
            cursor: 0,
            nodes: None,
            done: false,
        }
    }
}

impl KeyScan for RedisScan {
    fn next_page(&mut self) -> Result<Option<Vec<Vec<u8>>>> {
        if self.done {
            return Ok(None);
        }
        let scan = commands::scan(self.cursor, &self.pattern, self.count);
        let backend = Arc::clone(&self.backend);
        let (next, keys): (u64, Vec<Vec<u8>>) = match &backend.topology {
            Topology::Single { leader, .. } => leader.run(|c| scan.query(c))?,
            Topology::Cluster { pool, .. } => {
                if self.nodes.is_none() {
                    let nodes: String = pool.run(|c| cmd("CLUSTER").arg("NODES").query(&mut *c))?;
                    self.list_primaries(&nodes);
                }
                let Some((host, port)) = self.node() else {
                    return Ok(None);
                };
                let route =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                pool.run(|c| {
                    let reply = c.route_command(&scan, route.clone())?;
                    Ok(redis::from_redis_value(reply)?)
                })?
            }
        };
        Ok(Some(self.advance(next, keys)))
    }
}

impl RedisScan {
    /// Keeps the primaries that `CLUSTER NODES` lists, to scan one after the other.
    fn list_primaries(&mut self, cluster_nodes: &str) {
        let mut primaries = cluster_primaries(cluster_nodes);
        primaries.reverse();
        self.nodes = Some(primaries);
    }

    /// The Cluster primary to scan now; `None` (and the scan is over) when none is left.
    fn node(&mut self) -> Option<(String, u16)> {
        let node = self.nodes.as_ref().and_then(|n| n.last()).cloned();
        self.done = node.is_none();
        node
    }

    /// Moves the scan to the `next` cursor of the page that found `keys`, and on to the
    /// next Cluster primary when this one's scan is over.
    fn advance(&mut self, next: u64, keys: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        self.cursor = next;
        if next == 0 {
            match self.nodes.as_mut() {
                Some(nodes) => {
                    nodes.pop();
                    self.done = nodes.is_empty();
                }
                None => self.done = true,
            }
        }
        keys
    }
}

fn cluster_nodes() -> redis::Cmd {
    let mut c = cmd("CLUSTER");
    c.arg("NODES");
    c
}

impl AsyncKeyScan for RedisScan {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<Vec<u8>>>>> {
        Box::pin(async move {
            if self.done {
                return Ok(None);
            }
            let scan = commands::scan(self.cursor, &self.pattern, self.count);
            let backend = Arc::clone(&self.backend);
            let (next, keys): (u64, Vec<Vec<u8>>) = match &backend.aio {
                AsyncTopology::Single { leader, .. } => {
                    leader.run(|c| query(AnyConn::Single(c), scan)).await?
                }
                AsyncTopology::Cluster(cluster) => {
                    if self.nodes.is_none() {
                        let nodes: String = cluster
                            .run(false, |c| query(AnyConn::Cluster(c), cluster_nodes()))
                            .await?;
                        self.list_primaries(&nodes);
                    }
                    let Some((host, port)) = self.node() else {
                        return Ok(None);
                    };
                    let route =
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                    cluster
                        .run(false, |mut c| async move {
                            let reply = c.route_command(scan, route).await?;
                            Ok(redis::from_redis_value(reply)?)
                        })
                        .await?
                }
            };
            Ok(Some(self.advance(next, keys)))
        })
    }

    /// The page through the synchronous connections: the same cursor on the same server.
    fn next_page_blocking(&mut self) -> Option<Result<Option<Vec<Vec<u8>>>>> {
        Some(KeyScan::next_page(self))
    }
}
