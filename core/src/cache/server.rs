//! [`Cache::server_info`]: the backend's [`ServerInfo`], for diagnostics.

use super::Cache;
use crate::backend::ServerInfo;
use crate::error::Result;

impl Cache {
    /// What the server behind this cache says about itself: software, version, clock, TLS,
    /// a few figures and problems seen (for SQL, the cache table's shape). For diagnostics
    /// (`polycache doctor`, `polycache stats`), not for an operation's path: it may take a
    /// round trip or two, bypasses the circuit breaker and counts nothing in [`Cache::stats`].
    ///
    /// Answers [`crate::ErrorKind::Unsupported`] on backends with nothing to ask
    /// (`memory://`, `file://`, `dummy://`, custom ones that do not implement it).
    ///
    /// ```
    /// use polycache::{Cache, ErrorKind};
    /// let cache = Cache::open("memory://").unwrap();
    /// assert_eq!(cache.server_info().unwrap_err().kind(), ErrorKind::Unsupported);
    /// ```
    pub fn server_info(&self) -> Result<ServerInfo> {
        self.inner.backend.server_info()
    }
}
