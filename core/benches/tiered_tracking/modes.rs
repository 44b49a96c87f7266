//! The latency side of the choice between Redis' two tracking modes (the server-memory side
//! is `server_side` in the bench's main file), measured on raw redis-rs connections so that
//! only the modes differ:
//!
//! * **plain**: a RESP3 connection without tracking (the reference GET);
//! * **default, push**: `CLIENT TRACKING ON` on the RESP3 connection that reads, its
//!   invalidations pushed on that same connection;
//! * **default, REDIRECT**: a RESP2 data connection (as polycache's pooled ones) with
//!   `CLIENT TRACKING ON REDIRECT <id>` to a separate RESP3 connection that receives the
//!   invalidations (what a pool would need, re-issued on every new pooled connection);
//! * **BCAST**: `CLIENT TRACKING ON BCAST PREFIX` on a RESP3 connection (what polycache does),
//!   reads on a plain connection.
//!
//! For each mode, interleaved in rounds: the round trip of a `GET` of a fresh key (the
//! default mode records it in the server's tracking table), and the time from sending a
//! `SET` of that key on another connection until the invalidation push arrives.

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ProtocolVersion, PushInfo, PushKind, Value};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const MODES: [&str; 4] = ["plain", "default, push", "default, REDIRECT", "BCAST"];

/// One mode's connections: where reads go, and where its invalidations arrive.
struct Tracked {
    reads: MultiplexedConnection,
    pushes: Option<UnboundedReceiver<PushInfo>>,
    /// The REDIRECT target, kept open.
    _receiver: Option<MultiplexedConnection>,
}

async fn connect(
    url: &str,
    protocol: ProtocolVersion,
    pushes: bool,
) -> (MultiplexedConnection, Option<UnboundedReceiver<PushInfo>>) {
    let info = redis::IntoConnectionInfo::into_connection_info(url).unwrap();
    let settings = info.redis_settings().clone().set_protocol(protocol);
    let client = Client::open(info.set_redis_settings(settings)).unwrap();
    let (config, rx) = if pushes {
        let (tx, rx) = unbounded_channel();
        (AsyncConnectionConfig::new().set_push_sender(tx), Some(rx))
    } else {
        (AsyncConnectionConfig::new(), None)
    };
    let conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    (conn, rx)
}

async fn tracked(url: &str, mode: &str) -> Tracked {
    let on = |args: &[&str]| {
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("TRACKING").arg("ON").arg(args);
        cmd
    };
    match mode {
        "plain" => {
            let (reads, _) = connect(url, ProtocolVersion::RESP3, false).await;
            Tracked {
                reads,
                pushes: None,
                _receiver: None,
            }
        }
        "default, push" => {
            let (mut reads, pushes) = connect(url, ProtocolVersion::RESP3, true).await;
            on(&[]).query_async::<()>(&mut reads).await.unwrap();
            Tracked {
                reads,
                pushes,
                _receiver: None,
            }
        }
        "default, REDIRECT" => {
            let (mut receiver, pushes) = connect(url, ProtocolVersion::RESP3, true).await;
            let id: i64 = redis::cmd("CLIENT")
                .arg("ID")
                .query_async(&mut receiver)
                .await
                .unwrap();
            let (mut reads, _) = connect(url, ProtocolVersion::RESP2, false).await;
            let id = id.to_string();
            on(&["REDIRECT", &id])
                .query_async::<()>(&mut reads)
                .await
                .unwrap();
            Tracked {
                reads,
                pushes,
                _receiver: Some(receiver),
            }
        }
        _ => {
            let (mut receiver, pushes) = connect(url, ProtocolVersion::RESP3, true).await;
            on(&["BCAST", "PREFIX", "lat:"])
                .query_async::<()>(&mut receiver)
                .await
                .unwrap();
            let (reads, _) = connect(url, ProtocolVersion::RESP3, false).await;
            Tracked {
                reads,
                pushes,
                _receiver: Some(receiver),
            }
        }
    }
}

/// Whether an `invalidate` push names `key`.
fn names(push: &PushInfo, key: &str) -> bool {
    push.kind == PushKind::Invalidate
        && push.data.iter().any(|d| match d {
            Value::Array(keys) | Value::Set(keys) => keys
                .iter()
                .any(|k| matches!(k, Value::BulkString(b) if b == key.as_bytes())),
            _ => false,
        })
}

fn micros(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// Prints the GET round trip and the invalidation delivery time of each mode, `rounds`
/// interleaved rounds of `per_round` keys each.
pub fn latency(url: &str, rounds: usize, per_round: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut modes = Vec::new();
        for mode in MODES {
            modes.push((mode, tracked(url, mode).await, Vec::new(), Vec::new()));
        }
        let (mut writer, _) = connect(url, ProtocolVersion::RESP2, false).await;
        for round in 0..rounds {
            for (mode, t, reads, deliveries) in &mut modes {
                for i in 0..per_round {
                    let key = format!("lat:{round}:{mode}:{i}");
                    let sent = Instant::now();
                    redis::cmd("GET")
                        .arg(&key)
                        .query_async::<Value>(&mut t.reads)
                        .await
                        .unwrap();
                    reads.push(sent.elapsed());
                    let Some(pushes) = t.pushes.as_mut() else {
                        continue;
                    };
                    let sent = Instant::now();
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(1)
                        .query_async::<()>(&mut writer)
                        .await
                        .unwrap();
                    loop {
                        let push = tokio::time::timeout(Duration::from_secs(5), pushes.recv())
                            .await
                            .expect("no invalidation within 5 s")
                            .expect("the push channel closed");
                        if names(&push, &key) {
                            break;
                        }
                    }
                    deliveries.push(sent.elapsed());
                }
            }
        }
        println!(
            "Tracking modes, latency ({rounds} interleaved rounds of {per_round} fresh keys; \
             raw redis-rs connections):"
        );
        println!(
            "  {:<18} {:>22} {:>28}",
            "mode", "GET p50 / p99", "SET sent -> push p50 / p99"
        );
        for (mode, _, mut reads, mut deliveries) in modes {
            reads.sort();
            deliveries.sort();
            let delivery = if deliveries.is_empty() {
                "-".to_owned()
            } else {
                format!(
                    "{:.1} / {:.1} µs",
                    micros(&deliveries, 0.5),
                    micros(&deliveries, 0.99)
                )
            };
            let read = format!(
                "{:.1} / {:.1} µs",
                micros(&reads, 0.5),
                micros(&reads, 0.99)
            );
            println!("  {mode:<18} {read:>22} {delivery:>28}");
        }
    });
}
