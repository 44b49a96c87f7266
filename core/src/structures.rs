//! Redis data structures (hashes, sets, sorted sets) through one generic, allow-listed call.
//!
//! [`Cache::redis_command`](crate::Cache::redis_command) sends one command of
//! [`RedisCommand`]'s allow-list with its arguments ([`RedisArg`]): key arguments are made
//! into full keys (`{key_prefix}:{version}:{key}`) and route the command on a Cluster; the
//! others go as they are. The answer is an owned [`RedisReply`]. Only `redis://` (and its
//! TLS, unix-socket, replica and Cluster forms) runs them; every other backend answers
//! [`ErrorKind::Unsupported`].
//!
//! The bindings build django-redis' methods (`sadd`, `zadd`, `hset`, …) over this one call.

use crate::error::{Error, ErrorKind, Result};
use crate::Key;

/// Where a command's keys are among its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeySpec {
    /// The first argument only.
    First,
    /// The first two arguments (`SMOVE source destination member`).
    FirstTwo,
    /// Every argument (`SDIFF`, `SINTERSTORE`, …).
    All,
}

macro_rules! commands {
    ($($variant:ident = $name:literal, $writes:expr, $keys:ident;)*) => {
        /// One command of the allow-list: the hash, set and sorted-set commands that
        /// django-redis' methods send. Nothing else is sent through
        /// [`Cache::redis_command`](crate::Cache::redis_command): it is not a way to run
        /// arbitrary commands.
        #[non_exhaustive]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum RedisCommand {
            $(
                #[doc = concat!("`", $name, "`.")]
                $variant,
            )*
        }

        impl RedisCommand {
            /// Every command of the allow-list.
            pub const ALL: &'static [RedisCommand] = &[$(RedisCommand::$variant),*];

            /// The command's name, as Redis spells it.
            pub fn name(self) -> &'static str {
                match self {
                    $(RedisCommand::$variant => $name,)*
                }
            }

            /// True when the command changes data: it goes to the leader (never to a
            /// replica) and is never sent twice.
            pub fn writes(self) -> bool {
                match self {
                    $(RedisCommand::$variant => $writes,)*
                }
            }

            fn keys(self) -> KeySpec {
                match self {
                    $(RedisCommand::$variant => KeySpec::$keys,)*
                }
            }
        }
    };
}

commands! {
    Hset = "HSET", true, First;
    Hdel = "HDEL", true, First;
    Hlen = "HLEN", false, First;
    Hkeys = "HKEYS", false, First;
    Hexists = "HEXISTS", false, First;
    Sadd = "SADD", true, First;
    Srem = "SREM", true, First;
    Scard = "SCARD", false, First;
    Smembers = "SMEMBERS", false, First;
    Sismember = "SISMEMBER", false, First;
    Smismember = "SMISMEMBER", false, First;
    Spop = "SPOP", true, First;
    Srandmember = "SRANDMEMBER", false, First;
    Smove = "SMOVE", true, FirstTwo;
    Sdiff = "SDIFF", false, All;
    Sinter = "SINTER", false, All;
    Sunion = "SUNION", false, All;
    Sdiffstore = "SDIFFSTORE", true, All;
    Sinterstore = "SINTERSTORE", true, All;
    Sunionstore = "SUNIONSTORE", true, All;
    Sscan = "SSCAN", false, First;
    Zadd = "ZADD", true, First;
    Zrem = "ZREM", true, First;
    Zcard = "ZCARD", false, First;
    Zcount = "ZCOUNT", false, First;
    Zincrby = "ZINCRBY", true, First;
    Zscore = "ZSCORE", false, First;
    Zmscore = "ZMSCORE", false, First;
    Zrank = "ZRANK", false, First;
    Zrevrank = "ZREVRANK", false, First;
    Zrange = "ZRANGE", false, First;
    Zrevrange = "ZREVRANGE", false, First;
    Zrangebyscore = "ZRANGEBYSCORE", false, First;
    Zrevrangebyscore = "ZREVRANGEBYSCORE", false, First;
    Zremrangebyscore = "ZREMRANGEBYSCORE", true, First;
    Zremrangebyrank = "ZREMRANGEBYRANK", true, First;
    Zpopmin = "ZPOPMIN", true, First;
    Zpopmax = "ZPOPMAX", true, First;
}

impl RedisCommand {
    /// The command named `name` (any case), or an [`ErrorKind::Unsupported`] error for a
    /// name outside the allow-list.
    ///
    /// ```
    /// use polycache::RedisCommand;
    /// assert_eq!(RedisCommand::from_name("sadd").unwrap(), RedisCommand::Sadd);
    /// assert!(RedisCommand::from_name("FLUSHALL").is_err());
    /// ```
    pub fn from_name(name: &str) -> Result<RedisCommand> {
        RedisCommand::ALL
            .iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
            .copied()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{name:?} is not one of the data-structure commands polycache sends \
                         (hash, set and sorted-set commands only)"
                    ),
                )
            })
    }
}

/// One argument of a data-structure command, as the caller gives it.
///
/// A [`RedisArg::Key`] is made into the full key as every operation makes it (use
/// [`Key::full`] for a key the caller made itself, such as django-redis' hash names); the
/// other variants go to Redis as they are.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RedisArg<'a> {
    /// A key of the cache.
    Key(Key<'a>),
    /// Bytes: a member, a field, a value, a word such as `WITHSCORES`.
    Bytes(&'a [u8]),
    /// An integer, sent as decimal.
    Int(i64),
    /// A number (a score), sent as Redis reads it (`inf`, `-inf` for infinities).
    Float(f64),
}

impl<'a> From<&'a str> for RedisArg<'a> {
    /// Text as bytes (not a key: use [`RedisArg::Key`] for keys).
    fn from(text: &'a str) -> Self {
        RedisArg::Bytes(text.as_bytes())
    }
}

impl<'a> From<&'a [u8]> for RedisArg<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        RedisArg::Bytes(bytes)
    }
}

impl From<i64> for RedisArg<'_> {
    fn from(n: i64) -> Self {
        RedisArg::Int(n)
    }
}

impl From<f64> for RedisArg<'_> {
    fn from(x: f64) -> Self {
        RedisArg::Float(x)
    }
}

impl<'a> From<Key<'a>> for RedisArg<'a> {
    fn from(key: Key<'a>) -> Self {
        RedisArg::Key(key)
    }
}

/// One argument as the backend receives it: keys already full.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum CallArg {
    /// A full key (routes the command on a Cluster).
    Key(Vec<u8>),
    /// Bytes, sent as they are.
    Bytes(Vec<u8>),
    /// An integer, sent as decimal.
    Int(i64),
    /// A number, sent as Redis reads it.
    Float(f64),
}

/// A checked data-structure command with full keys: what [`crate::Backend::redis_command`]
/// receives. Made by [`crate::Cache::redis_command`]; owned, so an async backend can keep it.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisCall {
    command: RedisCommand,
    args: Vec<CallArg>,
}

impl RedisCall {
    /// A call of `command` with `args`, checked against the command's key positions: every
    /// key position holds a key, no other position does, and there is at least one key.
    pub fn new(command: RedisCommand, args: Vec<CallArg>) -> Result<RedisCall> {
        let is_key_position = |i: usize| match command.keys() {
            KeySpec::First => i == 0,
            KeySpec::FirstTwo => i < 2,
            KeySpec::All => true,
        };
        if !matches!(args.first(), Some(CallArg::Key(_))) {
            return Err(Error::new(
                ErrorKind::InvalidKey,
                format!("{} needs a key as its first argument", command.name()),
            ));
        }
        for (i, arg) in args.iter().enumerate() {
            let key = matches!(arg, CallArg::Key(_));
            if key != is_key_position(i) {
                return Err(Error::new(
                    ErrorKind::InvalidKey,
                    format!(
                        "argument {} of {} must {}be a key",
                        i + 1,
                        command.name(),
                        if key { "not " } else { "" }
                    ),
                ));
            }
        }
        if command.keys() == KeySpec::FirstTwo && args.len() < 2 {
            return Err(Error::new(
                ErrorKind::InvalidKey,
                format!("{} needs two keys", command.name()),
            ));
        }
        Ok(RedisCall { command, args })
    }

    /// The command.
    pub fn command(&self) -> RedisCommand {
        self.command
    }

    /// The arguments, keys full.
    pub fn args(&self) -> &[CallArg] {
        &self.args
    }

    /// The full keys among the arguments.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.args.iter().filter_map(|a| match a {
            CallArg::Key(k) => Some(k.as_slice()),
            _ => None,
        })
    }
}

/// What Redis answered, owned.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum RedisReply {
    /// No value (a missing member's score, an empty pop); also the answer of a cache that
    /// fails open while Redis is unreachable (django-redis' `IGNORE_EXCEPTIONS`).
    Nil,
    /// An integer.
    Int(i64),
    /// A double (RESP3 servers; RESP2 sends scores as bulk strings).
    Double(f64),
    /// A bulk string: a member, a field, a score as text.
    Bytes(Vec<u8>),
    /// A status line such as `OK`.
    Status(String),
    /// A list (a map's keys and values, in turn).
    Array(Vec<RedisReply>),
}

/// The error of a data-structure command on a backend that has none (`None`: a backend
/// whose name the caller does not know, such as an async side).
pub(crate) fn unsupported(backend: Option<&str>) -> Error {
    let which = match backend {
        Some(name) => format!("not the {name} backend"),
        None => "which this backend is not".to_owned(),
    };
    Error::new(
        ErrorKind::Unsupported,
        format!(
            "data-structure commands need redis:// (hashes, sets and sorted sets are Redis' \
             own types), {which}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_positions_are_checked() {
        let k = || CallArg::Key(b"k".to_vec());
        let b = || CallArg::Bytes(b"m".to_vec());
        assert!(RedisCall::new(RedisCommand::Sadd, vec![k(), b(), b()]).is_ok());
        assert!(RedisCall::new(RedisCommand::Sadd, vec![b(), b()]).is_err());
        assert!(RedisCall::new(RedisCommand::Sadd, vec![k(), k()]).is_err());
        assert!(RedisCall::new(RedisCommand::Smove, vec![k(), k(), b()]).is_ok());
        assert!(RedisCall::new(RedisCommand::Smove, vec![k(), b(), b()]).is_err());
        assert!(RedisCall::new(RedisCommand::Sunion, vec![k(), k(), k()]).is_ok());
        assert!(RedisCall::new(RedisCommand::Sunion, vec![k(), b()]).is_err());
        assert!(RedisCall::new(RedisCommand::Zcard, vec![]).is_err());
    }

    #[test]
    fn names_round_trip() {
        for &c in RedisCommand::ALL {
            assert_eq!(RedisCommand::from_name(c.name()).unwrap(), c);
        }
        assert_eq!(
            RedisCommand::from_name("EVAL").unwrap_err().kind(),
            ErrorKind::Unsupported
        );
    }
}
