//! The async side of the backend contract.
//!
//! A backend answers async callers in one of three ways ([`AsyncAccess`]):
//! - **inline**: every call answers in memory (`memory://`, `dummy://`); the cache runs the
//!   synchronous call in place and the future is ready at once;
//! - **blocking**: the store is a file or a synchronous library (`file://`, `sqlite://`,
//!   custom backends); the cache runs the synchronous call on polycache's bounded blocking
//!   pool ([`OnBlockingPool`]), never on a runtime worker;
//! - **native**: the backend does its I/O asynchronously ([`AsyncBackend`]): Redis'
//!   multiplexed connections, tokio-postgres.
//!
//! [`crate::Cache`] holds one [`AsyncBackend`] (or none, for inline backends) and writes every
//! operation's key, value, expiry, fail-open and statistics logic once, for both APIs.

use super::{AsyncKeyScan, Backend, BlockingPoolScan};
use crate::error::Result;
use crate::expiry::TimeToLive;
use crate::pattern::KeyPattern;
use crate::value::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed, sendable future: what [`AsyncBackend`]'s methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a backend answers async callers; see the module documentation.
#[non_exhaustive]
pub enum AsyncAccess {
    /// Every call answers in memory: run it in place.
    Inline,
    /// Calls block on files or a synchronous library: run them on the blocking pool.
    Blocking,
    /// The backend's own async implementation.
    Native(Arc<dyn AsyncBackend>),
}

/// The async twin of [`Backend`]: the same operations with the same meaning, as futures.
///
/// A future that is dropped before it completes must leave the backend usable: a reply that
/// is still owed must never answer a later request (Redis' multiplexed connection and
/// tokio-postgres' client match replies to requests for this reason).
pub trait AsyncBackend: Send + Sync + 'static {
    /// See [`Backend::get`].
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<Value>>>;
    /// See [`Backend::set`].
    fn set<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>>;
    /// See [`Backend::add`].
    fn add<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>>;
    /// See [`Backend::delete`].
    fn delete<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>>;
    /// See [`Backend::delete_if_equals`].
    fn delete_if_equals<'a>(
        &'a self,
        key: &'a [u8],
        expected: &'a [u8],
    ) -> BoxFuture<'a, Result<bool>>;
    /// See [`Backend::has_key`].
    fn has_key<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>>;
    /// See [`Backend::touch`].
    fn touch<'a>(&'a self, key: &'a [u8], ttl: Option<Duration>) -> BoxFuture<'a, Result<bool>>;
    /// See [`Backend::incr`].
    fn incr<'a>(&'a self, key: &'a [u8], delta: i64) -> BoxFuture<'a, Result<i64>>;
    /// See [`Backend::get_many`].
    fn get_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<Vec<Option<Value>>>>;
    /// See [`Backend::set_many`].
    fn set_many<'a>(
        &'a self,
        items: &'a [(&'a [u8], &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Vec<usize>>>;
    /// See [`Backend::delete_many`].
    fn delete_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<usize>>;
    /// See [`Backend::clear`].
    fn clear<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<()>>;

    /// See [`Backend::ttl`]; the default is the same `Unsupported` error.
    fn ttl<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<TimeToLive>> {
        let _ = key;
        Box::pin(std::future::ready(Err(super::unsupported(
            "async",
            "ttl",
            "it does not report a key's remaining lifetime",
        ))))
    }
    /// See [`Backend::replace`]; the default is the same `Unsupported` error.
    fn replace<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>> {
        let _ = (key, value, ttl);
        Box::pin(std::future::ready(Err(super::unsupported(
            "async",
            "set(xx=True) / replace",
            "it has no atomic replace",
        ))))
    }

    /// See [`Backend::redis_command`]; the default answers [`crate::ErrorKind::Unsupported`].
    fn redis_command<'a>(
        &'a self,
        call: &'a crate::RedisCall,
    ) -> BoxFuture<'a, Result<crate::RedisReply>> {
        let _ = call;
        Box::pin(std::future::ready(Err(crate::structures::unsupported(
            None,
        ))))
    }

    /// See [`Backend::extend_if_equals`]; the default refuses the same way.
    fn extend_if_equals<'a>(
        &'a self,
        key: &'a [u8],
        expected: &'a [u8],
        ttl: Duration,
        replace: bool,
    ) -> BoxFuture<'a, Result<bool>> {
        let _ = (key, expected, ttl, replace);
        Box::pin(std::future::ready(Err(super::unsupported_extend("async"))))
    }

    /// See [`Backend::scan_keys`]: starts a scan whose pages are awaited. `sync` is the same
    /// store's synchronous side; the default starts its scan ([`Backend::scan_keys`], with
    /// its refusal on a store that cannot list its keys) and reads each page on polycache's
    /// blocking pool ([`BlockingPoolScan`]). Backends with native async I/O replace it.
    fn scan_keys(
        self: Arc<Self>,
        sync: Arc<dyn Backend>,
        pattern: &KeyPattern,
        count: usize,
    ) -> Result<Box<dyn AsyncKeyScan>> {
        let scan = sync.scan_keys(pattern, count)?;
        Ok(Box::new(BlockingPoolScan::new(scan)))
    }
}

/// A synchronous backend awaited through polycache's bounded blocking pool: each call takes
/// owned copies of its arguments and runs on a blocking thread, so no runtime worker waits
/// on a file or a lock. Dropping the future does not stop a call that has started; its
/// result is discarded.
pub struct OnBlockingPool(pub Arc<dyn Backend>);

fn owned(keys: &[&[u8]]) -> Vec<Vec<u8>> {
    keys.iter().map(|k| k.to_vec()).collect()
}

fn borrowed(keys: &[Vec<u8>]) -> Vec<&[u8]> {
    keys.iter().map(Vec::as_slice).collect()
}

impl OnBlockingPool {
    fn run<'a, T: Send + 'static>(
        &'a self,
        call: impl FnOnce(&dyn Backend) -> Result<T> + Send + 'static,
    ) -> BoxFuture<'a, Result<T>> {
        let backend = Arc::clone(&self.0);
        Box::pin(crate::runtime::blocking(move || call(&*backend)))
    }
}

impl AsyncBackend for OnBlockingPool {
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<Value>>> {
        let key = key.to_vec();
        self.run(move |b| b.get(&key))
    }
    fn set<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        let (key, value) = (key.to_vec(), value.to_vec());
        self.run(move |b| b.set(&key, &value, ttl))
    }
    fn add<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>> {
        let (key, value) = (key.to_vec(), value.to_vec());
        self.run(move |b| b.add(&key, &value, ttl))
    }
    fn delete<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        let key = key.to_vec();
        self.run(move |b| b.delete(&key))
    }
    fn delete_if_equals<'a>(
        &'a self,
        key: &'a [u8],
        expected: &'a [u8],
    ) -> BoxFuture<'a, Result<bool>> {
        let (key, expected) = (key.to_vec(), expected.to_vec());
        self.run(move |b| b.delete_if_equals(&key, &expected))
    }
    fn has_key<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        let key = key.to_vec();
        self.run(move |b| b.has_key(&key))
    }
    fn touch<'a>(&'a self, key: &'a [u8], ttl: Option<Duration>) -> BoxFuture<'a, Result<bool>> {
        let key = key.to_vec();
        self.run(move |b| b.touch(&key, ttl))
    }
    fn incr<'a>(&'a self, key: &'a [u8], delta: i64) -> BoxFuture<'a, Result<i64>> {
        let key = key.to_vec();
        self.run(move |b| b.incr(&key, delta))
    }
    fn get_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<Vec<Option<Value>>>> {
        let keys = owned(keys);
        self.run(move |b| b.get_many(&borrowed(&keys)))
    }
    fn set_many<'a>(
        &'a self,
        items: &'a [(&'a [u8], &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Vec<usize>>> {
        let items: Vec<(Vec<u8>, Vec<u8>)> = items
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        self.run(move |b| {
            let pairs: Vec<(&[u8], &[u8])> = items
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect();
            b.set_many(&pairs, ttl)
        })
    }
    fn delete_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<usize>> {
        let keys = owned(keys);
        self.run(move |b| b.delete_many(&borrowed(&keys)))
    }
    fn clear<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        let prefix = prefix.to_vec();
        self.run(move |b| b.clear(&prefix))
    }

    fn ttl<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<TimeToLive>> {
        let key = key.to_vec();
        self.run(move |b| b.ttl(&key))
    }
    fn replace<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>> {
        let (key, value) = (key.to_vec(), value.to_vec());
        self.run(move |b| b.replace(&key, &value, ttl))
    }

    fn redis_command<'a>(
        &'a self,
        call: &'a crate::RedisCall,
    ) -> BoxFuture<'a, Result<crate::RedisReply>> {
        let call = call.clone();
        self.run(move |b| b.redis_command(&call))
    }

    fn extend_if_equals<'a>(
        &'a self,
        key: &'a [u8],
        expected: &'a [u8],
        ttl: Duration,
        replace: bool,
    ) -> BoxFuture<'a, Result<bool>> {
        let (key, expected) = (key.to_vec(), expected.to_vec());
        self.run(move |b| b.extend_if_equals(&key, &expected, ttl, replace))
    }
}
