//! `keys` / `iter_keys` / `delete_pattern` on Redis: `SCAN … MATCH … COUNT`, never `KEYS`.
//!
//! The scan runs on the leader, not on a read replica: a `SCAN` cursor belongs to one
//! server, so a scan cannot hop between replicas chosen at random per call, and a replica
//! that lags would list keys the leader (where `delete_pattern` deletes) no longer has. On a
//! Cluster every primary is scanned in turn, each with its own cursor.

use super::{cluster_primaries, cmd, commands, RedisBackend, Topology};
use crate::backend::KeyScan;
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
        let (next, keys): (u64, Vec<Vec<u8>>) = match &self.backend.topology {
            Topology::Single { leader, .. } => leader.run(|c| scan.query(c))?,
            Topology::Cluster { pool, .. } => {
                if self.nodes.is_none() {
                    let nodes: String = pool.run(|c| cmd("CLUSTER").arg("NODES").query(&mut *c))?;
                    let mut primaries = cluster_primaries(&nodes);
                    primaries.reverse();
                    self.nodes = Some(primaries);
                }
                let Some((host, port)) = self.nodes.as_ref().and_then(|n| n.last()).cloned() else {
                    self.done = true;
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
        Ok(Some(keys))
    }
}
