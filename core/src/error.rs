//! The one error type of polycache, with a [`ErrorKind`] that bindings map by.

use std::fmt;

/// What went wrong, as a category that callers and bindings can match on.
///
/// Bindings map errors by kind, never by message text: Python raises `ValueError` for
/// [`ErrorKind::NotFound`], `ConnectionError` for [`ErrorKind::Connection`], and so on;
/// C returns one `polycache_result` code per kind.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A URL, option or configuration value is wrong.
    Configuration,
    /// The server could not be reached or the connection broke.
    Connection,
    /// An operation did not finish within its timeout.
    Timeout,
    /// The key cannot be used (too long, or not valid for this cache).
    InvalidKey,
    /// The value is larger than the cache accepts.
    ValueTooLarge,
    /// A value could not be encoded or decoded.
    Serialization,
    /// `incr`/`decr` on a key that is not in the cache.
    NotFound,
    /// `incr`/`decr` on a value that is not an integer.
    NotAnInteger,
    /// `incr`/`decr` would leave the 64-bit signed range.
    Overflow,
    /// The backend does not support this operation.
    Unsupported,
    /// A local I/O error (file backend, sockets).
    Io,
    /// The backend answered with an error of its own.
    Backend,
    /// A lock cannot do what was asked (extend a lock that has no timeout, acquire within
    /// the time given, …): redis-py's `LockError`.
    Lock,
    /// A lock's release, extend or reacquire by a caller whose token no longer holds it; the
    /// lock was left untouched: redis-py's `LockNotOwnedError`.
    LockNotOwned,
}

impl ErrorKind {
    /// A short, stable, lower-case name for the kind (`"not_found"`, `"timeout"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Configuration => "configuration",
            ErrorKind::Connection => "connection",
            ErrorKind::Timeout => "timeout",
            ErrorKind::InvalidKey => "invalid_key",
            ErrorKind::ValueTooLarge => "value_too_large",
            ErrorKind::Serialization => "serialization",
            ErrorKind::NotFound => "not_found",
            ErrorKind::NotAnInteger => "not_an_integer",
            ErrorKind::Overflow => "overflow",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Io => "io",
            ErrorKind::Backend => "backend",
            ErrorKind::Lock => "lock",
            ErrorKind::LockNotOwned => "lock_not_owned",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A polycache error: a [`ErrorKind`] plus a message for people.
///
/// Messages never contain a password from a URL. `Error` is `Send + Sync` and cheap to move.
///
/// ```
/// use polycache::{Cache, ErrorKind};
/// let err = Cache::open("nosuch://x").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Configuration);
/// assert!(err.is_configuration());
/// assert!(err.to_string().contains("nosuch"));
/// ```
pub struct Error {
    // Boxed so that `Result<Option<Value>>` stays two words wide on the hot path.
    inner: Box<ErrorInner>,
}

struct ErrorInner {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    /// The option the error is about, when one is.
    option: Option<crate::options::OptionSource>,
    /// The call waited in vain for one of its own pool's connections: the client is
    /// congested, which says nothing about the server (see [`Error::is_pool_busy`]).
    pool_busy: bool,
}

/// The result type of every fallible polycache operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(ErrorInner {
                kind,
                message: message.into(),
                source: None,
                option: None,
                pool_busy: false,
            }),
        }
    }

    /// Attaches the lower-level error that caused this one.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.inner.source = Some(Box::new(source));
        self
    }

    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// True for a configuration error (bad URL, option or value).
    pub fn is_configuration(&self) -> bool {
        self.inner.kind == ErrorKind::Configuration
    }
    /// True for a connection error.
    pub fn is_connection(&self) -> bool {
        self.inner.kind == ErrorKind::Connection
    }
    /// True for a timeout.
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == ErrorKind::Timeout
    }
    /// True when `incr`/`decr` found no such key.
    pub fn is_not_found(&self) -> bool {
        self.inner.kind == ErrorKind::NotFound
    }

    /// This error, for a call that found every connection of its pool leased for the
    /// pool's whole wait.
    // Only the backends that hold connections in a pool use it.
    #[cfg_attr(
        not(any(
            feature = "redis",
            feature = "memcached",
            feature = "sqlite",
            feature = "postgres"
        )),
        allow(dead_code)
    )]
    pub(crate) fn pool_busy(mut self) -> Self {
        self.inner.pool_busy = true;
        self
    }

    /// True when the call waited in vain for a connection of its own pool (every one
    /// leased to other calls): the circuit breaker counts it neither as an outage nor as
    /// an answer. The leased connections' own calls tell whether the server answers.
    pub(crate) fn is_pool_busy(&self) -> bool {
        self.inner.pool_busy
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Configuration, message)
    }

    /// Where the option this error is about came from (a URL's query, Django's `OPTIONS`,
    /// ...), when the error is about one; the message begins with it.
    pub fn option_source(&self) -> Option<&crate::options::OptionSource> {
        self.inner.option.as_ref()
    }

    /// This error with `prefix` before its message, its option source kept.
    pub(crate) fn prefixed(mut self, prefix: &str) -> Self {
        self.inner.message = format!("{prefix}{}", self.inner.message);
        self
    }

    /// This error, about the option that came from `source` (kept if it names one already).
    pub fn about_option(mut self, source: &crate::options::OptionSource) -> Self {
        if self.inner.option.is_none() {
            self.inner.message = format!("{source}: {}", self.inner.message);
            self.inner.option = Some(source.clone());
        }
        self
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        if let Some(source) = &self.inner.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => ErrorKind::Timeout,
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::NotConnected
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof => ErrorKind::Connection,
            _ => ErrorKind::Io,
        };
        Error::new(kind, "I/O error").with_source(err)
    }
}
