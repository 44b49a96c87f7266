//! redis-rs errors as polycache sees them: the error kind for the failure policy (with the
//! server's address, never its password), and whether a pooled connection survives one.

use crate::error::{Error, ErrorKind};
use redis::{RedisError, ServerErrorKind};

/// Maps a redis-rs error to a polycache error naming the server (never its password).
pub(super) fn map_err(err: RedisError, addr: &str) -> Error {
    use redis::ErrorKind as K;
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else {
        match err.kind() {
            K::Io | K::ClusterConnectionNotFound => ErrorKind::Connection,
            K::AuthenticationFailed | K::InvalidClientConfig => ErrorKind::Configuration,
            // The server is there but cannot serve yet: an outage for the failure policy.
            K::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown,
            ) => ErrorKind::Connection,
            K::Extension if matches!(err.code(), Some("NOAUTH" | "WRONGPASS")) => {
                ErrorKind::Configuration
            }
            _ => ErrorKind::Backend,
        }
    };
    let what = match kind {
        ErrorKind::Timeout => "timed out",
        ErrorKind::Connection => "is unreachable",
        ErrorKind::Configuration => "refused the configuration",
        _ => "answered with an error",
    };
    Error::new(kind, format!("redis {addr} {what}")).with_source(err)
}

/// True when the connection may go on being used after `err` (the reply was read whole).
pub(super) fn keeps_connection(err: &RedisError) -> bool {
    use redis::ErrorKind as K;
    matches!(
        err.kind(),
        K::Server(_) | K::Extension | K::UnexpectedReturnType
    )
}

/// True for a Cluster redirection (`MOVED`, `ASK`): the node did not run the command.
pub(super) fn is_redirect(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        redis::ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask)
    )
}

/// True when the server closed a connection that was idle in the pool (restart, timeout).
pub(super) fn closed_by_server(err: &RedisError) -> bool {
    !err.is_timeout() && err.is_connection_dropped()
}

/// True when a system call of a blocking connection was interrupted (`EINTR`).
///
/// Holding the signals back ([`crate::signals`]) does not prevent it: a socket read or
/// write with a timeout gives up with `EINTR` when the process is stopped and continued
/// (job control, a paused container, a debugger) or frozen and thawed, with every signal
/// blocked. Half a reply may be in flight, and the command may or may not have run.
pub(super) fn interrupted(err: &RedisError) -> bool {
    use std::error::Error as _;
    err.source()
        .and_then(|source| {
            source.downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>()
        })
        .and_then(|inner| inner.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::Interrupted)
}

pub(super) fn unexpected(v: &redis::Value) -> RedisError {
    RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        format!("{v:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn an_interrupted_call_is_told_from_other_io_errors() {
        let eintr = RedisError::from(io::Error::from_raw_os_error(libc::EINTR));
        assert!(interrupted(&eintr));
        assert!(!eintr.is_timeout() && !closed_by_server(&eintr));
        for kind in [io::ErrorKind::TimedOut, io::ErrorKind::ConnectionReset] {
            assert!(
                !interrupted(&RedisError::from(io::Error::from(kind))),
                "{kind:?}"
            );
        }
        let server = RedisError::from((redis::ErrorKind::Io, "dropped"));
        assert!(!interrupted(&server));
    }
}
