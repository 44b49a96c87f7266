//! The data-structure commands (`Backend::redis_command`): one allow-listed command, its
//! reply made owned. Shared by the synchronous side (`mod.rs`) and the async one (`aio.rs`).

use super::{cmd, key_slot, unexpected, RedisResult};
use crate::error::{Error, ErrorKind, Result};
use crate::structures::{CallArg, RedisCall, RedisReply};
use redis::Cmd;

/// The command of `call`, arguments in order.
pub(super) fn command(call: &RedisCall) -> Cmd {
    let mut c = cmd(call.command().name());
    for arg in call.args() {
        match arg {
            CallArg::Key(k) | CallArg::Bytes(k) => c.arg(k.as_slice()),
            CallArg::Int(n) => c.arg(*n),
            CallArg::Float(x) => c.arg(float(*x)),
        };
    }
    c
}

/// A number as Redis reads it: `+inf`/`-inf` for infinities, the shortest text that reads
/// back as the same double otherwise (Redis answers "not a valid float" to a NaN).
fn float(x: f64) -> String {
    if x.is_infinite() {
        if x > 0.0 { "+inf" } else { "-inf" }.to_owned()
    } else {
        format!("{x:?}")
    }
}

/// On a Cluster, the keys of one command must share a hash slot: said before anything is
/// sent, naming the remedy, rather than Redis' `CROSSSLOT`.
pub(super) fn check_slots(call: &RedisCall, cluster: bool) -> Result<()> {
    if !cluster {
        return Ok(());
    }
    let mut keys = call.keys();
    let Some(first) = keys.next() else {
        return Ok(());
    };
    let slot = key_slot(first);
    if let Some(other) = keys.find(|k| key_slot(k) != slot) {
        return Err(Error::new(
            ErrorKind::InvalidKey,
            format!(
                "{} on a Redis Cluster needs its keys in one hash slot, but {:?} and {:?} are \
                 in different slots: give the keys a common hash tag, such as {{user1}}:a and \
                 {{user1}}:b",
                call.command().name(),
                String::from_utf8_lossy(first),
                String::from_utf8_lossy(other),
            ),
        ));
    }
    Ok(())
}

/// The owned answer of a reply.
pub(super) fn reply(v: redis::Value) -> RedisResult<RedisReply> {
    use redis::Value as V;
    Ok(match v {
        V::Nil => RedisReply::Nil,
        V::Int(n) => RedisReply::Int(n),
        V::BulkString(b) => RedisReply::Bytes(b),
        V::SimpleString(s) => RedisReply::Status(s),
        V::Okay => RedisReply::Status("OK".to_owned()),
        V::Double(x) => RedisReply::Double(x),
        V::Boolean(b) => RedisReply::Int(i64::from(b)),
        V::VerbatimString { text, .. } => RedisReply::Bytes(text.into_bytes()),
        V::Array(items) | V::Set(items) => {
            RedisReply::Array(items.into_iter().map(reply).collect::<RedisResult<_>>()?)
        }
        V::Map(pairs) => {
            let mut flat = Vec::with_capacity(pairs.len() * 2);
            for (k, v) in pairs {
                flat.push(reply(k)?);
                flat.push(reply(v)?);
            }
            RedisReply::Array(flat)
        }
        V::Attribute { data, .. } => reply(*data)?,
        other => return Err(unexpected(&other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structures::RedisCommand;

    #[test]
    fn floats_read_back() {
        assert_eq!(float(1.5), "1.5");
        assert_eq!(float(3.0), "3.0");
        assert_eq!(float(f64::INFINITY), "+inf");
        assert_eq!(float(f64::NEG_INFINITY), "-inf");
        assert_eq!(float(0.1).parse::<f64>().unwrap(), 0.1);
    }

    #[test]
    fn cluster_keys_share_a_slot() {
        let key = |k: &str| CallArg::Key(k.as_bytes().to_vec());
        let same = RedisCall::new(RedisCommand::Sunion, vec![key("{u}a"), key("{u}b")]).unwrap();
        assert!(check_slots(&same, true).is_ok());
        let apart = RedisCall::new(RedisCommand::Sunion, vec![key("a"), key("b")]).unwrap();
        assert!(check_slots(&apart, false).is_ok());
        assert_eq!(
            check_slots(&apart, true).unwrap_err().kind(),
            ErrorKind::InvalidKey
        );
    }
}
