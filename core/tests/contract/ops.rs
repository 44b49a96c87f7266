//! One interface over both APIs of a [`Cache`], so the contract's body is written once.
//!
//! [`Ops`] has an async method per operation. [`SyncOps`] implements it over the sync API:
//! each method calls the sync method and never waits, and [`run_sync`] drives the body with
//! a waker that must never be needed (a sync body that suspends is a failure). [`AsyncOps`]
//! implements it over the `*_async` twins, and [`run_async`] runs the body on a tokio
//! runtime: a current-thread one (the body runs on the runtime's only thread), or a
//! multi-thread one (the body is spawned onto a worker).

use polycache::{BoxFuture, Cache, Expiry, Key, Result, Value};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// What a fixture does after every write so that the next read sees it (a leader's
/// replica catching up); `None` for stores that read their own writes.
pub type Settle = Option<Arc<dyn Fn() + Send + Sync>>;

/// Which API, and for the async one which runtime, the body runs through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sync,
    AsyncCurrentThread,
    AsyncMultiThread,
}

impl Mode {
    /// A short tag for key prefixes, so the three modes of a scheme share one server.
    pub fn tag(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::AsyncCurrentThread => "ct",
            Mode::AsyncMultiThread => "mt",
        }
    }
}

/// Every operation of the contract, awaitable. Implemented once over each API.
///
/// The futures are boxed: a body generic over `Ops` then stays `Send` for a multi-thread
/// runtime (an `async fn` in a trait would leave its callers unable to say so).
pub trait Ops: Send + Sync + 'static {
    fn wrap(cache: Cache, settle: Settle) -> Self;
    fn cache(&self) -> &Cache;
    fn settle(&self) -> &Settle;
    /// Runs `f` where blocking is allowed, and returns when it is done.
    fn blocking(&self, f: Arc<dyn Fn() + Send + Sync>) -> BoxFuture<'_, ()>;
    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()>;

    fn get<'a>(&'a self, key: impl Into<Key<'a>>) -> Op<'a, Option<Value>>;
    fn set<'a>(&'a self, key: impl Into<Key<'a>>, v: &'a [u8], e: Expiry) -> Op<'a, bool>;
    fn add<'a>(&'a self, key: impl Into<Key<'a>>, v: &'a [u8], e: Expiry) -> Op<'a, bool>;
    fn delete<'a>(&'a self, key: impl Into<Key<'a>>) -> Op<'a, bool>;
    fn has_key<'a>(&'a self, key: impl Into<Key<'a>>) -> Op<'a, bool>;
    fn touch<'a>(&'a self, key: impl Into<Key<'a>>, e: Expiry) -> Op<'a, bool>;
    fn incr<'a>(&'a self, key: impl Into<Key<'a>>, delta: i64) -> Op<'a, i64>;
    fn decr<'a>(&'a self, key: impl Into<Key<'a>>, delta: i64) -> Op<'a, i64>;
    fn get_many<'a>(&'a self, keys: &'a [&'a str], v: Option<i64>) -> Op<'a, Vec<Option<Value>>>;
    fn get_many_keys<'a>(&'a self, keys: &'a [Key<'a>]) -> Op<'a, Vec<Option<Value>>>;
    fn set_many<'a>(
        &'a self,
        items: &'a [Item<'a>],
        e: Expiry,
        v: Option<i64>,
    ) -> Op<'a, Vec<usize>>;
    fn set_many_keys<'a>(
        &'a self,
        items: &'a [(Key<'a>, &'a [u8])],
        e: Expiry,
    ) -> Op<'a, Vec<usize>>;
    fn delete_many<'a>(&'a self, keys: &'a [&'a str], v: Option<i64>) -> Op<'a, usize>;
    fn delete_many_keys<'a>(&'a self, keys: &'a [Key<'a>]) -> Op<'a, usize>;
    /// `compute` is called on a miss (through a future on the async side).
    fn get_or_set<'a>(
        &'a self,
        key: impl Into<Key<'a>>,
        compute: impl FnOnce() -> Result<Vec<u8>> + Send + 'a,
        e: Expiry,
    ) -> Op<'a, Value>;
    fn clear(&self) -> Op<'_, ()>;
    fn incr_version<'a>(&'a self, key: &'a str, delta: i64, v: Option<i64>) -> Op<'a, i64>;
    /// `incr(key, 1)` `each` times from each of `workers` concurrent callers: threads on
    /// the sync side, tasks on the async side.
    fn incr_concurrently<'a>(&'a self, key: &'a str, workers: usize, each: usize) -> Op<'a, ()>;
}

/// The future of one operation.
pub type Op<'a, T> = BoxFuture<'a, Result<T>>;
/// A `set_many` pair.
pub type Item<'a> = (&'a str, &'a [u8]);

/// `result`, once the fixture's settle step (if any) has run: for writes.
async fn settled<O: Ops, T>(ops: &O, result: T) -> T {
    if let Some(settle) = ops.settle() {
        ops.blocking(Arc::clone(settle)).await;
    }
    result
}

/// The boxed future of a read over the sync API: the answer, ready.
fn read<'a, T: Send + 'a>(result: Result<T>) -> Op<'a, T> {
    Box::pin(std::future::ready(result))
}

/// The boxed future of a write over the sync API: the answer, once settled.
fn write<'a, O: Ops, T: Send + 'a>(ops: &'a O, result: Result<T>) -> Op<'a, T> {
    Box::pin(settled(ops, result))
}

/// [`Ops`] over the sync API.
pub struct SyncOps(Cache, Settle);

impl Ops for SyncOps {
    fn wrap(cache: Cache, settle: Settle) -> Self {
        SyncOps(cache, settle)
    }
    fn cache(&self) -> &Cache {
        &self.0
    }
    fn settle(&self) -> &Settle {
        &self.1
    }
    fn blocking(&self, f: Arc<dyn Fn() + Send + Sync>) -> BoxFuture<'_, ()> {
        f();
        Box::pin(std::future::ready(()))
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        std::thread::sleep(d);
        Box::pin(std::future::ready(()))
    }
    fn get<'a>(&'a self, key: impl Into<Key<'a>>) -> Op<'a, Option<Value>> {
        read(self.0.get(key))
    }
    fn set<'a>(&'a self, key: impl Into<Key<'a>>, v: &'a [u8], e: Expiry) -> Op<'a, bool> {
        write(self, self.0.set(key, v, e))
    }
    fn add<'a>(&'a self, key: impl Into<Key<'a>>, v: &'a [u8], e: Expiry) -> Op<'a, bool> {
        write(self, self.0.add(key, v, e))
    }
    fn delete<'a>(&'a self, key: impl Into<Key<'a>>) -> Op<'a, bool> {
        write(self, self.0.delete(key))
    }
    fn has_key<'a>(&'a self, key: impl Into<Key<'a>>) -> Op<'a, bool> {
        read(self.0.has_key(key))
    }
    fn touch<'a>(&'a self, key: impl Into<Key<'a>>, e: Expiry) -> Op<'a, bool> {
        write(self, self.0.touch(key, e))
    }
    fn incr<'a>(&'a self, key: impl Into<Key<'a>>, delta: i64) -> Op<'a, i64> {
        write(self, self.0.incr(key, delta))
    }
    fn decr<'a>(&'a self, key: impl Into<Key<'a>>, delta: i64) -> Op<'a, i64> {
        write(self, self.0.decr(key, delta))
    }
    fn get_many<'a>(&'a self, keys: &'a [&'a str], v: Option<i64>) -> Op<'a, Vec<Option<Value>>> {
        read(self.0.get_many(keys, v))
    }
    fn get_many_keys<'a>(&'a self, keys: &'a [Key<'a>]) -> Op<'a, Vec<Option<Value>>> {
        read(self.0.get_many_keys(keys))
    }
    fn set_many<'a>(
        &'a self,
        items: &'a [Item<'a>],
        e: Expiry,
        v: Option<i64>,
    ) -> Op<'a, Vec<usize>> {
        write(self, self.0.set_many(items, e, v))
    }
    fn set_many_keys<'a>(
        &'a self,
        items: &'a [(Key<'a>, &'a [u8])],
        e: Expiry,
    ) -> Op<'a, Vec<usize>> {
        write(self, self.0.set_many_keys(items, e))
    }
    fn delete_many<'a>(&'a self, keys: &'a [&'a str], v: Option<i64>) -> Op<'a, usize> {
        write(self, self.0.delete_many(keys, v))
    }
    fn delete_many_keys<'a>(&'a self, keys: &'a [Key<'a>]) -> Op<'a, usize> {
        write(self, self.0.delete_many_keys(keys))
    }
    fn get_or_set<'a>(
        &'a self,
        key: impl Into<Key<'a>>,
        compute: impl FnOnce() -> Result<Vec<u8>> + Send + 'a,
        e: Expiry,
    ) -> Op<'a, Value> {
        write(self, self.0.get_or_set(key, compute, e))
    }
    fn clear(&self) -> Op<'_, ()> {
        write(self, self.0.clear())
    }
    fn incr_version<'a>(&'a self, key: &'a str, delta: i64, v: Option<i64>) -> Op<'a, i64> {
        write(self, self.0.incr_version(key, delta, v))
    }
    fn incr_concurrently<'a>(&'a self, key: &'a str, workers: usize, each: usize) -> Op<'a, ()> {
        let result = std::thread::scope(|s| {
            let threads: Vec<_> = (0..workers)
                .map(|_| s.spawn(|| (0..each).try_for_each(|_| self.0.incr(key, 1).map(drop))))
                .collect();
            threads.into_iter().try_for_each(|t| t.join().unwrap())
        });
        write(self, result)
    }
}

/// [`Ops`] over the async API.
pub struct AsyncOps(Cache, Settle);

/// The boxed future of a write over the async API: the answer, once settled.
macro_rules! write_async {
    ($ops:expr, $call:expr) => {{
        let ops = $ops;
        Box::pin(async move {
            let result = $call.await;
            settled(ops, result).await
        })
    }};
}

impl Ops for AsyncOps {
    fn wrap(cache: Cache, settle: Settle) -> Self {
        AsyncOps(cache, settle)
    }
    fn cache(&self) -> &Cache {
        &self.0
    }
    fn settle(&self) -> &Settle {
        &self.1
    }
    fn blocking(&self, f: Arc<dyn Fn() + Send + Sync>) -> BoxFuture<'_, ()> {
        Box::pin(async move { tokio::task::spawn_blocking(move || f()).await.unwrap() })
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(d))
    }
    fn get<'a>(&'a self, key: impl Into<Key<'a>>) -> Op<'a, Option<Value>> {
        Box::pin(self.0.get_async(key.into()))
    }
    fn set<'a>(&'a self, key: impl Into<Key<'a>>, v: &'a [u8], e: Expiry) -> Op<'a, bool> {
        let key = key.into();
        write_async!(self, self.0.set_async(key, v, e))
    }
    fn add<'a>(&'a self, key: impl Into<Key<'a>>, v: &'a [u8], e: Expiry) -> Op<'a, bool> {
        let key = key.into();
        write_async!(self, self.0.add_async(key, v, e))
    }
    fn delete<'a>(&'a self, key: impl Into<Key<'a>>) -> Op<'a, bool> {
        let key = key.into();
        write_async!(self, self.0.delete_async(key))
    }
    fn has_key<'a>(&'a self, key: impl Into<Key<'a>>) -> Op<'a, bool> {
        Box::pin(self.0.has_key_async(key.into()))
    }
    fn touch<'a>(&'a self, key: impl Into<Key<'a>>, e: Expiry) -> Op<'a, bool> {
        let key = key.into();
        write_async!(self, self.0.touch_async(key, e))
    }
    fn incr<'a>(&'a self, key: impl Into<Key<'a>>, delta: i64) -> Op<'a, i64> {
        let key = key.into();
        write_async!(self, self.0.incr_async(key, delta))
    }
    fn decr<'a>(&'a self, key: impl Into<Key<'a>>, delta: i64) -> Op<'a, i64> {
        let key = key.into();
        write_async!(self, self.0.decr_async(key, delta))
    }
    fn get_many<'a>(&'a self, keys: &'a [&'a str], v: Option<i64>) -> Op<'a, Vec<Option<Value>>> {
        Box::pin(self.0.get_many_async(keys, v))
    }
    fn get_many_keys<'a>(&'a self, keys: &'a [Key<'a>]) -> Op<'a, Vec<Option<Value>>> {
        Box::pin(self.0.get_many_keys_async(keys))
    }
    fn set_many<'a>(
        &'a self,
        items: &'a [Item<'a>],
        e: Expiry,
        v: Option<i64>,
    ) -> Op<'a, Vec<usize>> {
        write_async!(self, self.0.set_many_async(items, e, v))
    }
    fn set_many_keys<'a>(
        &'a self,
        items: &'a [(Key<'a>, &'a [u8])],
        e: Expiry,
    ) -> Op<'a, Vec<usize>> {
        write_async!(self, self.0.set_many_keys_async(items, e))
    }
    fn delete_many<'a>(&'a self, keys: &'a [&'a str], v: Option<i64>) -> Op<'a, usize> {
        write_async!(self, self.0.delete_many_async(keys, v))
    }
    fn delete_many_keys<'a>(&'a self, keys: &'a [Key<'a>]) -> Op<'a, usize> {
        write_async!(self, self.0.delete_many_keys_async(keys))
    }
    fn get_or_set<'a>(
        &'a self,
        key: impl Into<Key<'a>>,
        compute: impl FnOnce() -> Result<Vec<u8>> + Send + 'a,
        e: Expiry,
    ) -> Op<'a, Value> {
        let key = key.into();
        write_async!(
            self,
            self.0.get_or_set_async(key, async move { compute() }, e)
        )
    }
    fn clear(&self) -> Op<'_, ()> {
        write_async!(self, self.0.clear_async())
    }
    fn incr_version<'a>(&'a self, key: &'a str, delta: i64, v: Option<i64>) -> Op<'a, i64> {
        write_async!(self, self.0.incr_version_async(key, delta, v))
    }
    fn incr_concurrently<'a>(&'a self, key: &'a str, workers: usize, each: usize) -> Op<'a, ()> {
        let mut tasks = tokio::task::JoinSet::<Result<()>>::new();
        for _ in 0..workers {
            let (cache, key) = (self.0.clone(), key.to_owned());
            tasks.spawn(async move {
                for _ in 0..each {
                    cache.incr_async(key.as_str(), 1).await?;
                }
                Ok(())
            });
        }
        write_async!(self, async move {
            while let Some(done) = tasks.join_next().await {
                done.unwrap()?;
            }
            Ok(())
        })
    }
}

/// A waker for a future that must never wait: the sync API answers before it returns.
struct NeverWoken;

impl Wake for NeverWoken {
    fn wake(self: Arc<Self>) {}
}

/// Runs a body over [`SyncOps`] to completion on this thread; every await in it is ready
/// at once, so one poll finishes it.
pub fn run_sync<F: Future>(body: F) -> F::Output {
    let waker = Waker::from(Arc::new(NeverWoken));
    let mut body = pin!(body);
    match body.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a body over the sync API suspended: some operation waited"),
    }
}

/// Runs a body over [`AsyncOps`] on a tokio runtime of the given flavour: in place on a
/// current-thread runtime, spawned onto a worker of a multi-thread one.
pub fn run_async<F>(mode: Mode, body: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match mode {
        Mode::AsyncCurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(body),
        Mode::AsyncMultiThread => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            // A panic in the body fails the test with the body's own message.
            match rt.block_on(rt.spawn(body)) {
                Ok(out) => out,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        Mode::Sync => unreachable!("the sync body runs with run_sync"),
    }
}
