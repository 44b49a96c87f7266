//! Tracking over a Redis Cluster: one RESP3 connection per primary, each with `CLIENT
//! TRACKING ON BCAST` (in broadcast mode a node reports the writes to the keys it owns).
//!
//! The primaries come from `CLUSTER NODES`, asked of the primaries the last session found,
//! then of the URL's nodes. A session starts only when every primary it connects to sees the
//! same topology (the primaries and their slots), and ends — L1 emptied, then rebuilt by the
//! next session — when a connection breaks or, at the check every second, any primary sees
//! another topology: a failover, a node added, a slot moved. Writes during a slot migration
//! are reported by whichever of the two nodes (both tracked) applies them; a node added as a
//! primary is tracked from the next check on, before it can own a slot only if the
//! operator's migration takes longer than a second (see docs/backends/tiered.md).

use super::{ended, Ended, Session, IDLE_CHECK};
use crate::backend::redis::{cluster_topology, ClusterNodes, ClusterPrimary};
use redis::{AsyncConnectionConfig, ProtocolVersion};
use std::time::Duration;

/// The topology as one node sees it.
async fn topology_of(
    conn: &mut redis::aio::MultiplexedConnection,
) -> redis::RedisResult<Vec<ClusterPrimary>> {
    let text: String = redis::cmd("CLUSTER").arg("NODES").query_async(conn).await?;
    Ok(cluster_topology(&text))
}

/// The topology, from the first of `known` then the URL's nodes that answers.
async fn discover(
    nodes: &ClusterNodes,
    known: &[(String, u16)],
    connect_timeout: Option<Duration>,
) -> Result<Vec<ClusterPrimary>, Ended> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(connect_timeout)
        .set_response_timeout(Some(IDLE_CHECK));
    let mut last = String::from("no node to ask");
    for (host, port) in known.iter().chain(nodes.seeds()) {
        let client = match nodes.client(host, *port, ProtocolVersion::RESP2) {
            Ok(client) => client,
            Err(e) => return Err(Ended::Refused(e.to_string())),
        };
        let answer = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(mut conn) => topology_of(&mut conn).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(topology) if !topology.is_empty() => return Ok(topology),
            Ok(_) => last = format!("{host}:{port} lists no primary"),
            Err(e) => last = format!("CLUSTER NODES on {host}:{port}: {e}"),
        }
    }
    Err(Ended::Broke(format!(
        "cannot read the cluster's topology: {last}"
    )))
}

/// Connects with RESP3 (and `config`'s push channel) to every primary of the Cluster, once
/// they all see the same topology.
pub(super) async fn connect(
    nodes: &ClusterNodes,
    known: &[(String, u16)],
    config: &AsyncConnectionConfig,
    connect_timeout: Option<Duration>,
) -> Result<Session, Ended> {
    let topology = discover(nodes, known, connect_timeout).await?;
    let mut conns = Vec::with_capacity(topology.len());
    for primary in &topology {
        let shown = format!("{}:{}", primary.host, primary.port);
        let client = nodes
            .client(&primary.host, primary.port, ProtocolVersion::RESP3)
            .map_err(|e| Ended::Refused(e.to_string()))?;
        match client
            .get_multiplexed_async_connection_with_config(config)
            .await
        {
            Ok(conn) => conns.push((shown, conn)),
            Err(e) => return Err(ended(&format!("connecting to {shown} with RESP3"), e)),
        }
    }
    let mut session = Session { conns, topology };
    check(&mut session).await?;
    Ok(session)
}

/// Ends the session when a primary does not answer or sees another topology than the one
/// the session tracks.
pub(super) async fn check(session: &mut Session) -> Result<(), Ended> {
    for (shown, conn) in &mut session.conns {
        match topology_of(conn).await {
            Err(e) => return Err(Ended::Broke(format!("CLUSTER NODES on {shown}: {e}"))),
            Ok(seen) if seen != session.topology => {
                return Err(Ended::Broke(format!(
                    "the cluster's topology changed (as {shown} sees it)"
                )))
            }
            Ok(_) => {}
        }
    }
    Ok(())
}
