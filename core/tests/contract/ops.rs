//! One interface over both APIs of a [`Cache`], so the contract's body is written once.
//!
//! [`Ops`] has one awaitable method per operation, which calls either the sync method (its
//! future is ready at once) or its `*_async` twin, as the [`Mode`] says. [`Mode::run`]
//! drives the body: over the sync API with a waker that must never be needed (a sync body
//! that suspends is a failure), over the async API on a current-thread tokio runtime (the
//! body runs on the runtime's only thread) or a multi-thread one (the body is spawned onto a
//! worker).

use polycache::{
    BoxFuture, Cache, Expiry, Key, Lock, LockOptions, RedisArg, RedisCommand, RedisReply, Result,
    TimeToLive, Value,
};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, SystemTime};

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
    /// Runs `body` to completion through this mode.
    pub fn run<F>(self, body: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            Mode::Sync => run_sync(body),
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
        }
    }

    /// A short tag for key prefixes, so the three modes of a scheme share one server.
    pub fn tag(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::AsyncCurrentThread => "ct",
            Mode::AsyncMultiThread => "mt",
        }
    }
}

/// Every operation of the contract, awaitable, through the API of a [`Mode`].
///
/// The futures are boxed and `Send`: the body then stays `Send` for a multi-thread runtime.
pub struct Ops {
    cache: Cache,
    settle: Settle,
    sync: bool,
}

/// The future of one operation.
pub type Op<'a, T> = BoxFuture<'a, Result<T>>;
/// A `set_many` pair.
pub type Item<'a> = (&'a str, &'a [u8]);

/// The future of a sync call: its answer, ready.
fn ready<'a, T: Send + 'a>(result: Result<T>) -> Op<'a, T> {
    Box::pin(std::future::ready(result))
}

/// Both sides of one operation: the sync call or the async one, as the mode says.
macro_rules! either {
    ($ops:expr, $sync:expr, $async:expr) => {
        if $ops.sync {
            ready($sync)
        } else {
            Box::pin($async)
        }
    };
}

impl Ops {
    pub fn new(cache: Cache, settle: Settle, mode: Mode) -> Ops {
        let sync = mode == Mode::Sync;
        Ops {
            cache,
            settle,
            sync,
        }
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Waits `d`: the thread sleeps on the sync side, the task on the async side.
    pub fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        if self.sync {
            std::thread::sleep(d);
            Box::pin(std::future::ready(()))
        } else {
            Box::pin(tokio::time::sleep(d))
        }
    }

    /// `op`'s answer once the fixture's settle step (if any) has run: for writes.
    fn write<'a, T: Send + 'a>(&'a self, op: Op<'a, T>) -> Op<'a, T> {
        let Some(settle) = self.settle.clone() else {
            return op;
        };
        if self.sync {
            let result = run_sync(op);
            settle();
            return ready(result);
        }
        Box::pin(async move {
            let result = op.await;
            tokio::task::spawn_blocking(move || settle()).await.unwrap();
            result
        })
    }

    pub fn get<'a>(&'a self, key: impl Into<Key<'a>>) -> Op<'a, Option<Value>> {
        let (c, k) = (&self.cache, key.into());
        either!(self, c.get(k), c.get_async(k))
    }
    /// The bytes under `key` through the lent read (`Cache::get_with`) on the sync side.
    /// It has no awaitable twin (the stores that lend answer in place), so the async side
    /// reads with `get_async`.
    pub fn get_lent<'a>(&'a self, key: impl Into<Key<'a>>) -> Op<'a, Option<Vec<u8>>> {
        let (c, k) = (&self.cache, key.into());
        let owned = |v: Result<Option<Value>>| v.map(|v| v.map(|v| v.to_vec()));
        either!(self, c.get_with(k, |v| v.to_vec()), async move {
            owned(c.get_async(k).await)
        })
    }
    pub fn set<'a>(&'a self, key: impl Into<Key<'a>>, v: &'a [u8], e: Expiry) -> Op<'a, bool> {
        let (c, k) = (&self.cache, key.into());
        self.write(either!(self, c.set(k, v, e), c.set_async(k, v, e)))
    }
    pub fn add<'a>(&'a self, key: impl Into<Key<'a>>, v: &'a [u8], e: Expiry) -> Op<'a, bool> {
        let (c, k) = (&self.cache, key.into());
        self.write(either!(self, c.add(k, v, e), c.add_async(k, v, e)))
    }
    pub fn delete<'a>(&'a self, key: impl Into<Key<'a>>) -> Op<'a, bool> {
        let (c, k) = (&self.cache, key.into());
        self.write(either!(self, c.delete(k), c.delete_async(k)))
    }
    pub fn has_key<'a>(&'a self, key: impl Into<Key<'a>>) -> Op<'a, bool> {
        let (c, k) = (&self.cache, key.into());
        either!(self, c.has_key(k), c.has_key_async(k))
    }
    pub fn touch<'a>(&'a self, key: impl Into<Key<'a>>, e: Expiry) -> Op<'a, bool> {
        let (c, k) = (&self.cache, key.into());
        self.write(either!(self, c.touch(k, e), c.touch_async(k, e)))
    }
    pub fn incr<'a>(&'a self, key: impl Into<Key<'a>>, delta: i64) -> Op<'a, i64> {
        let (c, k) = (&self.cache, key.into());
        self.write(either!(self, c.incr(k, delta), c.incr_async(k, delta)))
    }
    pub fn decr<'a>(&'a self, key: impl Into<Key<'a>>, delta: i64) -> Op<'a, i64> {
        let (c, k) = (&self.cache, key.into());
        self.write(either!(self, c.decr(k, delta), c.decr_async(k, delta)))
    }
    pub fn get_many<'a>(
        &'a self,
        keys: &'a [&'a str],
        v: Option<i64>,
    ) -> Op<'a, Vec<Option<Value>>> {
        let c = &self.cache;
        either!(self, c.get_many(keys, v), c.get_many_async(keys, v))
    }
    pub fn get_many_keys<'a>(&'a self, keys: &'a [Key<'a>]) -> Op<'a, Vec<Option<Value>>> {
        let c = &self.cache;
        either!(self, c.get_many_keys(keys), c.get_many_keys_async(keys))
    }
    pub fn set_many<'a>(
        &'a self,
        items: &'a [Item<'a>],
        e: Expiry,
        v: Option<i64>,
    ) -> Op<'a, Vec<usize>> {
        let c = &self.cache;
        self.write(either!(
            self,
            c.set_many(items, e, v),
            c.set_many_async(items, e, v)
        ))
    }
    pub fn set_many_keys<'a>(
        &'a self,
        items: &'a [(Key<'a>, &'a [u8])],
        e: Expiry,
    ) -> Op<'a, Vec<usize>> {
        let c = &self.cache;
        self.write(either!(
            self,
            c.set_many_keys(items, e),
            c.set_many_keys_async(items, e)
        ))
    }
    pub fn delete_many<'a>(&'a self, keys: &'a [&'a str], v: Option<i64>) -> Op<'a, usize> {
        let c = &self.cache;
        self.write(either!(
            self,
            c.delete_many(keys, v),
            c.delete_many_async(keys, v)
        ))
    }
    pub fn delete_many_keys<'a>(&'a self, keys: &'a [Key<'a>]) -> Op<'a, usize> {
        let c = &self.cache;
        self.write(either!(
            self,
            c.delete_many_keys(keys),
            c.delete_many_keys_async(keys)
        ))
    }
    /// `compute` is called on a miss (through a future on the async side).
    pub fn get_or_set<'a>(
        &'a self,
        key: impl Into<Key<'a>>,
        compute: impl FnOnce() -> Result<Vec<u8>> + Send + 'a,
        e: Expiry,
    ) -> Op<'a, Value> {
        let (c, k) = (&self.cache, key.into());
        if self.sync {
            return self.write(ready(c.get_or_set(k, compute, e)));
        }
        self.write(Box::pin(c.get_or_set_async(k, async move { compute() }, e)))
    }
    pub fn clear(&self) -> Op<'_, ()> {
        let c = &self.cache;
        self.write(either!(self, c.clear(), c.clear_async()))
    }
    pub fn incr_version<'a>(&'a self, key: &'a str, delta: i64, v: Option<i64>) -> Op<'a, i64> {
        let c = &self.cache;
        let moved = either!(
            self,
            c.incr_version(key, delta, v),
            c.incr_version_async(key, delta, v)
        );
        self.write(moved)
    }

    pub fn ttl<'a>(&'a self, key: impl Into<Key<'a>>) -> Op<'a, TimeToLive> {
        let (c, k) = (&self.cache, key.into());
        either!(self, c.ttl(k), c.ttl_async(k))
    }
    pub fn persist<'a>(&'a self, key: impl Into<Key<'a>>) -> Op<'a, bool> {
        let (c, k) = (&self.cache, key.into());
        self.write(either!(self, c.persist(k), c.persist_async(k)))
    }
    pub fn expire_at<'a>(&'a self, key: impl Into<Key<'a>>, when: SystemTime) -> Op<'a, bool> {
        let (c, k) = (&self.cache, key.into());
        self.write(either!(
            self,
            c.expire_at(k, when),
            c.expire_at_async(k, when)
        ))
    }
    pub fn replace<'a>(&'a self, key: impl Into<Key<'a>>, v: &'a [u8], e: Expiry) -> Op<'a, bool> {
        let (c, k) = (&self.cache, key.into());
        self.write(either!(self, c.replace(k, v, e), c.replace_async(k, v, e)))
    }
    pub fn incr_or_create<'a>(&'a self, key: impl Into<Key<'a>>, delta: i64) -> Op<'a, i64> {
        let (c, k) = (&self.cache, key.into());
        self.write(either!(
            self,
            c.incr_or_create(k, delta),
            c.incr_or_create_async(k, delta)
        ))
    }

    /// `incr(key, 1)` `each` times from each of `workers` concurrent callers: threads on
    /// the sync side, tasks on the async side.
    pub fn incr_concurrently<'a>(
        &'a self,
        key: &'a str,
        workers: usize,
        each: usize,
    ) -> Op<'a, ()> {
        let c = &self.cache;
        if self.sync {
            let result = std::thread::scope(|s| {
                let threads: Vec<_> = (0..workers)
                    .map(|_| s.spawn(|| (0..each).try_for_each(|_| c.incr(key, 1).map(drop))))
                    .collect();
                threads.into_iter().try_for_each(|t| t.join().unwrap())
            });
            return self.write(ready(result));
        }
        let mut tasks = tokio::task::JoinSet::<Result<()>>::new();
        for _ in 0..workers {
            let (cache, key) = (c.clone(), key.to_owned());
            tasks.spawn(async move {
                for _ in 0..each {
                    cache.incr_async(key.as_str(), 1).await?;
                }
                Ok(())
            });
        }
        self.write(Box::pin(async move {
            while let Some(done) = tasks.join_next().await {
                done.unwrap()?;
            }
            Ok(())
        }))
    }

    /// A data-structure command; a writing one settles.
    pub fn redis_command<'a>(
        &'a self,
        command: RedisCommand,
        args: &'a [RedisArg<'a>],
    ) -> Op<'a, RedisReply> {
        let c = &self.cache;
        let op = either!(
            self,
            c.redis_command(command, args),
            c.redis_command_async(command, args)
        );
        if command.writes() {
            self.write(op)
        } else {
            op
        }
    }
}

/// Key scans: `keys`, `iter_keys` (every page collected) and `delete_pattern`.
impl Ops {
    pub fn keys<'a>(&'a self, pattern: &'a str, v: Option<i64>) -> Op<'a, Vec<String>> {
        let c = &self.cache;
        either!(self, c.keys(pattern, v), c.keys_async(pattern, v))
    }
    /// Every page of `iter_keys`, in order, each page's keys together.
    pub fn iter_keys<'a>(&'a self, pattern: &'a str, itersize: usize) -> Op<'a, Vec<String>> {
        let c = &self.cache;
        either!(
            self,
            c.iter_keys(pattern, None, itersize)
                .and_then(|scan| scan.collect()),
            async move {
                let mut scan = c.iter_keys_async(pattern, None, itersize).await?;
                let mut keys = Vec::new();
                while let Some(page) = scan.next_page().await? {
                    keys.extend(page);
                }
                Ok(keys)
            }
        )
    }
    pub fn delete_pattern<'a>(&'a self, pattern: &'a str, itersize: usize) -> Op<'a, usize> {
        let c = &self.cache;
        self.write(either!(
            self,
            c.delete_pattern(pattern, None, itersize),
            c.delete_pattern_async(pattern, None, itersize)
        ))
    }
}

/// The operations of a [`Lock`] with an explicit token, through the mode's API.
impl Ops {
    pub fn lock_acquire<'a>(
        &'a self,
        lock: &'a Lock,
        token: &'a [u8],
        wait: &'a LockOptions,
    ) -> Op<'a, bool> {
        self.write(either!(
            self,
            lock.acquire_token(token, wait),
            lock.acquire_token_async(token, wait)
        ))
    }
    pub fn lock_release<'a>(&'a self, lock: &'a Lock, token: &'a [u8]) -> Op<'a, ()> {
        self.write(either!(
            self,
            lock.release_token(token),
            lock.release_token_async(token)
        ))
    }
    pub fn lock_extend<'a>(
        &'a self,
        lock: &'a Lock,
        token: &'a [u8],
        additional: Duration,
        replace: bool,
    ) -> Op<'a, ()> {
        self.write(either!(
            self,
            lock.extend_token(token, additional, replace),
            lock.extend_token_async(token, additional, replace)
        ))
    }
    pub fn lock_reacquire<'a>(&'a self, lock: &'a Lock, token: &'a [u8]) -> Op<'a, ()> {
        self.write(either!(
            self,
            lock.reacquire_token(token),
            lock.reacquire_token_async(token)
        ))
    }
    pub fn lock_locked<'a>(&'a self, lock: &'a Lock) -> Op<'a, bool> {
        either!(self, lock.locked(), lock.locked_async())
    }
    pub fn lock_owned<'a>(&'a self, lock: &'a Lock, token: &'a [u8]) -> Op<'a, bool> {
        either!(self, lock.owned_by(token), lock.owned_by_async(token))
    }
}

/// A waker for a future that must never wait: the sync API answers before it returns.
struct NeverWoken;

impl Wake for NeverWoken {
    fn wake(self: Arc<Self>) {}
}

/// Runs a body over the sync API to completion on this thread; every await in it is ready
/// at once, so one poll finishes it.
fn run_sync<F: Future>(body: F) -> F::Output {
    let waker = Waker::from(Arc::new(NeverWoken));
    let mut body = pin!(body);
    match body.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a body over the sync API suspended: some operation waited"),
    }
}

/// Tags (`core/src/cache/tags.rs`).
impl Ops {
    pub fn set_tagged<'a>(
        &'a self,
        key: &'a str,
        v: &'a [u8],
        e: Expiry,
        tags: &'a [&'a str],
    ) -> Op<'a, bool> {
        let c = &self.cache;
        self.write(either!(
            self,
            c.set_tagged(key, v, e, tags),
            c.set_tagged_async(key, v, e, tags)
        ))
    }
    pub fn set_many_tagged<'a>(
        &'a self,
        items: &'a [Item<'a>],
        e: Expiry,
        tags: &'a [&'a str],
    ) -> Op<'a, Vec<usize>> {
        let c = &self.cache;
        self.write(either!(
            self,
            c.set_many_tagged(items, e, None, tags),
            c.set_many_tagged_async(items, e, None, tags)
        ))
    }
    pub fn invalidate_tags<'a>(&'a self, tags: &'a [&'a str]) -> Op<'a, bool> {
        let c = &self.cache;
        self.write(either!(
            self,
            c.invalidate_tags(tags),
            c.invalidate_tags_async(tags)
        ))
    }
    /// `invalidate_tags` through the sync API whatever the mode, settled: for a loader
    /// that runs while an invalidation happens.
    pub fn invalidate_tags_now(&self, tags: &[&str]) {
        self.cache.invalidate_tags(tags).unwrap();
        if let Some(settle) = &self.settle {
            settle();
        }
    }
    /// Django's `get_or_set` with tags: `compute` is called on a miss.
    pub fn get_or_set_tagged<'a>(
        &'a self,
        key: &'a str,
        compute: impl FnOnce() -> Result<Vec<u8>> + Send + 'a,
        e: Expiry,
        tags: &'a [&'a str],
    ) -> Op<'a, Value> {
        let c = &self.cache;
        if self.sync {
            return self.write(ready(c.get_or_set_tagged(key, compute, e, tags)));
        }
        self.write(Box::pin(c.get_or_set_tagged_async(
            key,
            async move { compute() },
            e,
            tags,
        )))
    }
    /// The single-flight `get_or_set_with` with tags.
    pub fn get_or_set_with_tags<'a>(
        &'a self,
        key: &'a str,
        compute: impl FnOnce() -> Result<Vec<u8>> + Send + 'a,
        e: Expiry,
        tags: &'a [&'a str],
    ) -> Op<'a, Value> {
        let c = &self.cache;
        if self.sync {
            return self.write(ready(c.get_or_set_with_tags(key, compute, e, tags)));
        }
        self.write(Box::pin(c.get_or_set_with_tags_async(
            key,
            move || async move { compute() },
            e,
            tags,
        )))
    }
    /// `get` of an entry whose tags the caller names: one request for it and their versions.
    pub fn get_tagged<'a>(&'a self, key: &'a str, tags: &'a [&'a str]) -> Op<'a, Option<Value>> {
        let c = &self.cache;
        either!(self, c.get_tagged(key, tags), c.get_tagged_async(key, tags))
    }
}
