//! [`Cache::redis_command`] and its awaitable twin: Redis hashes, sets and sorted sets.

use super::Cache;
use crate::error::Result;
use crate::structures::{CallArg, RedisArg, RedisCall, RedisCommand, RedisReply};

impl Cache {
    /// Runs one data-structure command of the allow-list ([`RedisCommand`]) on `redis://`.
    ///
    /// Key arguments ([`RedisArg::Key`]) are made into full keys as every operation makes
    /// them and must sit where the command takes keys; members and values go as given
    /// (nothing is signed or compressed: equal members must stay equal bytes). Reads go to a
    /// replica when the URL names some; writes go to the leader and are never sent twice.
    /// On a Cluster the keys of one command must share a hash slot (give them a common
    /// `{tag}`), else the call fails with [`ErrorKind::InvalidKey`](crate::ErrorKind::InvalidKey) before anything is sent.
    ///
    /// Every other backend answers [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported). A cache that fails open
    /// answers [`RedisReply::Nil`] while Redis is unreachable, as django-redis'
    /// `IGNORE_EXCEPTIONS` answers `None`. The breaker and timeouts are the cache's.
    ///
    /// ```
    /// use polycache::{Cache, ErrorKind, Key, RedisArg, RedisCommand};
    /// let cache = Cache::open("memory://").unwrap();
    /// let err = cache
    ///     .redis_command(RedisCommand::Sadd, &[RedisArg::Key(Key::new("s")), "a".into()])
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Unsupported);
    /// ```
    pub fn redis_command(
        &self,
        command: RedisCommand,
        args: &[RedisArg<'_>],
    ) -> Result<RedisReply> {
        let call = self.redis_call(command, args)?;
        self.apply_fail_open(self.inner.backend.redis_command(&call), || RedisReply::Nil)
    }

    /// [`Cache::redis_command`], awaitable.
    pub async fn redis_command_async(
        &self,
        command: RedisCommand,
        args: &[RedisArg<'_>],
    ) -> Result<RedisReply> {
        let call = self.redis_call(command, args)?;
        let result = match self.inner.awaited.as_deref() {
            None => self.inner.backend.redis_command(&call),
            Some(backend) => backend.redis_command(&call).await,
        };
        self.apply_fail_open(result, || RedisReply::Nil)
    }

    /// The checked call: full keys, values within `max_value_size`.
    fn redis_call(&self, command: RedisCommand, args: &[RedisArg<'_>]) -> Result<RedisCall> {
        let mut call = Vec::with_capacity(args.len());
        for arg in args {
            call.push(match *arg {
                RedisArg::Key(key) => CallArg::Key(self.make_key(key)?),
                RedisArg::Bytes(b) => {
                    self.check_value(b)?;
                    CallArg::Bytes(b.to_vec())
                }
                RedisArg::Int(n) => CallArg::Int(n),
                RedisArg::Float(x) => CallArg::Float(x),
            });
        }
        RedisCall::new(command, call)
    }
}
