//! The Redis commands of each operation and the decoding of their replies, shared by the
//! synchronous side (`mod.rs`, pooled blocking connections) and the async side (`aio.rs`,
//! multiplexed connections): one implementation of each operation, two transports.

use super::{cmd, px, unexpected, RedisResult};
use crate::error::{Error, ErrorKind, Result};
use crate::value::Value;
use redis::Cmd;
use std::time::Duration;

/// `GET key`.
pub(super) fn get(key: &[u8]) -> Cmd {
    let mut c = cmd("GET");
    c.arg(key);
    c
}

/// `SET key value [PX ms]`.
pub(super) fn set(key: &[u8], value: &[u8], ttl: Option<Duration>) -> Cmd {
    let mut c = cmd("SET");
    c.arg(key).arg(value);
    if let Some(ttl) = ttl {
        c.arg("PX").arg(px(ttl));
    }
    c
}

/// `SET key value [PX ms] NX`.
pub(super) fn add(key: &[u8], value: &[u8], ttl: Option<Duration>) -> Cmd {
    let mut c = set(key, value, ttl);
    c.arg("NX");
    c
}

/// What `SET … NX` answered: true when it stored.
pub(super) fn added(reply: &redis::Value) -> bool {
    !matches!(reply, redis::Value::Nil)
}

/// `UNLINK key…`.
pub(super) fn unlink<K: AsRef<[u8]>>(keys: &[K]) -> Cmd {
    let mut c = cmd("UNLINK");
    for k in keys {
        c.arg(k.as_ref());
    }
    c
}

/// `EXISTS key`.
pub(super) fn exists(key: &[u8]) -> Cmd {
    let mut c = cmd("EXISTS");
    c.arg(key);
    c
}

/// `PEXPIRE key ms`.
pub(super) fn pexpire(key: &[u8], ttl: Duration) -> Cmd {
    let mut c = cmd("PEXPIRE");
    c.arg(key).arg(px(ttl));
    c
}

/// `MGET key…`.
pub(super) fn mget(keys: &[&[u8]]) -> Cmd {
    let mut c = cmd("MGET");
    for k in keys {
        c.arg(*k);
    }
    c
}

/// `SCAN cursor MATCH pattern COUNT batch`.
pub(super) fn scan(cursor: u64, pattern: &[u8], batch: usize) -> Cmd {
    let mut c = cmd("SCAN");
    c.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(batch);
    c
}

/// A bulk string (or nil) as a cached value.
pub(super) fn value(v: redis::Value) -> RedisResult<Option<Value>> {
    match v {
        redis::Value::Nil => Ok(None),
        redis::Value::BulkString(bytes) => Ok(Some(Value::from(bytes))),
        redis::Value::SimpleString(s) => Ok(Some(Value::from(s.into_bytes()))),
        other => Err(unexpected(&other)),
    }
}

/// The `n` values of an `MGET` reply.
pub(super) fn values(reply: redis::Value, n: usize) -> RedisResult<Vec<Option<Value>>> {
    let redis::Value::Array(items) = reply else {
        return Err(unexpected(&reply));
    };
    if items.len() != n {
        return Err(unexpected(&redis::Value::Array(items)));
    }
    items.into_iter().map(value).collect()
}

/// The answer of the `incr` script (see `INCR_SCRIPT`).
pub(super) fn incremented(reply: redis::Value, key: &[u8], location: &str) -> Result<i64> {
    match reply {
        redis::Value::Int(n) => Ok(n),
        redis::Value::BulkString(ref digits) => match crate::backend::parse_i64(digits) {
            Some(n) => Ok(n),
            None => Err(super::map_err(unexpected(&reply), location)),
        },
        redis::Value::Nil => Err(crate::backend::not_found(key)),
        redis::Value::Array(code) if code.first() == Some(&redis::Value::Int(2)) => {
            Err(Error::new(
                ErrorKind::Overflow,
                "incr/decr would overflow a 64-bit integer",
            ))
        }
        redis::Value::Array(_) => Err(Error::new(
            ErrorKind::NotAnInteger,
            "the cached value is not an integer",
        )),
        other => Err(super::map_err(unexpected(&other), location)),
    }
}

/// `PTTL key`.
pub(super) fn pttl(key: &[u8]) -> Cmd {
    let mut c = cmd("PTTL");
    c.arg(key);
    c
}

/// What `PTTL` answered: -2 for a missing key, -1 for one that never expires, else
/// milliseconds (0: expiring now, as good as missing).
pub(super) fn time_to_live(ms: i64) -> crate::expiry::TimeToLive {
    use crate::expiry::TimeToLive;
    match ms {
        -1 => TimeToLive::Forever,
        ms if ms > 0 => TimeToLive::Left(Duration::from_millis(ms.unsigned_abs())),
        _ => TimeToLive::Missing,
    }
}

/// `SET key value [PX ms] XX`: stores only over an existing key.
pub(super) fn replace(key: &[u8], value: &[u8], ttl: Option<Duration>) -> Cmd {
    let mut c = set(key, value, ttl);
    c.arg("XX");
    c
}
