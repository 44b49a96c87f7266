//! polycache's own tokio runtime: it drives the native async connections (Redis' multiplexed
//! connections, PostgreSQL's connection tasks), runs the operations that Python awaitables and
//! C non-blocking calls start, and holds the bounded blocking pool where `file://`, `sqlite://`
//! and synchronous custom backends run when they are awaited.
//!
//! It starts on first use with [`threads`] worker threads (`POLYCACHE_RUNTIME_THREADS`, else
//! [`configure`], else the number of CPUs up to 4) and at most [`blocking_threads`] blocking
//! threads (`POLYCACHE_BLOCKING_THREADS`, default 64). A Rust program that awaits a cache from
//! its own runtime polls the operation there; only connection tasks and blocking work live
//! here. The child of a `fork()` gets a runtime of its own at its first use: its parent's
//! worker threads do not exist in it, so the parent's runtime is neither used nor dropped.

use crate::error::{Error, ErrorKind, Result};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::runtime::{Handle, Runtime};

/// Blocking threads unless `POLYCACHE_BLOCKING_THREADS` or [`configure`] says otherwise.
pub const DEFAULT_BLOCKING_THREADS: usize = 64;

static WORKERS: AtomicUsize = AtomicUsize::new(0);
static BLOCKING: AtomicUsize = AtomicUsize::new(0);
static BLOCKING_CALLS: AtomicU64 = AtomicU64::new(0);

/// The runtime of this process and the fork generation it was started in.
static RUNTIME: Mutex<Option<(u64, &'static Runtime)>> = Mutex::new(None);

/// Sets the number of worker and blocking threads of polycache's runtime; `0` keeps the
/// default. Takes effect only before the runtime starts (the first async operation on a
/// remote backend); returns false, changing nothing, when it has already started.
///
/// ```
/// // Before any cache is awaited:
/// let _ = polycache::runtime::configure(2, 16);
/// ```
pub fn configure(workers: usize, blocking: usize) -> bool {
    let started = lock()
        .as_ref()
        .is_some_and(|(g, _)| *g == crate::fork::generation());
    if started {
        return false;
    }
    WORKERS.store(workers, Ordering::Relaxed);
    BLOCKING.store(blocking, Ordering::Relaxed);
    true
}

fn lock() -> std::sync::MutexGuard<'static, Option<(u64, &'static Runtime)>> {
    RUNTIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn from_env(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

/// The number of worker threads the runtime has (or will have when it starts).
pub fn threads() -> usize {
    from_env("POLYCACHE_RUNTIME_THREADS")
        .or(Some(WORKERS.load(Ordering::Relaxed)).filter(|n| *n > 0))
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(2)
        })
}

/// The most threads the blocking pool runs at once.
pub fn blocking_threads() -> usize {
    from_env("POLYCACHE_BLOCKING_THREADS")
        .or(Some(BLOCKING.load(Ordering::Relaxed)).filter(|n| *n > 0))
        .unwrap_or(DEFAULT_BLOCKING_THREADS)
}

/// The handle of polycache's runtime, started on first use (and anew in a forked child).
pub fn handle() -> Result<Handle> {
    let generation = crate::fork::generation();
    let mut slot = lock();
    if let Some((g, rt)) = *slot {
        if g == generation {
            return Ok(rt.handle().clone());
        }
        // A forked child: the parent's runtime has no threads here. Leaked on purpose:
        // dropping it would wait for threads that do not exist.
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads())
        .max_blocking_threads(blocking_threads())
        .thread_name("polycache-rt")
        .enable_all()
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot start polycache's runtime: {e}"),
            )
        })?;
    let rt: &'static Runtime = Box::leak(Box::new(rt));
    *slot = Some((generation, rt));
    Ok(rt.handle().clone())
}

/// Runs `future` to completion on polycache's runtime; the returned future (which any
/// executor may poll) yields its output. Dropping the returned future does not stop the
/// spawned one: an operation that has reached its server finishes there.
pub fn spawn<F>(future: F) -> impl Future<Output = Result<F::Output>> + Send + 'static
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = handle().map(|h| h.spawn(future));
    async move { joined(task?.await) }
}

/// Runs the blocking `call` on polycache's bounded blocking pool and awaits its result.
pub(crate) async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    BLOCKING_CALLS.fetch_add(1, Ordering::Relaxed);
    let task = handle()?.spawn_blocking(call);
    joined(task.await)?
}

fn joined<T>(r: std::result::Result<T, tokio::task::JoinError>) -> Result<T> {
    r.map_err(|e| {
        let what = if e.is_panic() {
            "panicked"
        } else {
            "was cancelled"
        };
        Error::new(
            ErrorKind::Backend,
            format!("a polycache operation {what} on the runtime: {e}"),
        )
    })
}

/// Waits on the calling thread for `future`, which is driven by polycache's runtime: what a
/// synchronous call does when it must wait on async machinery. Works on any thread, also a
/// worker of a caller's runtime (it blocks that thread, as every synchronous call does).
pub(crate) fn wait<F>(future: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle()?.spawn(async move {
        let _ = tx.send(future.await);
    });
    // The sender is dropped unsent only when the future panicked.
    rx.recv().map_err(|_| {
        Error::new(
            ErrorKind::Backend,
            "a polycache operation panicked on the runtime",
        )
    })
}

/// True when the calling thread is inside a tokio runtime (where a nested `block_on` panics).
pub(crate) fn in_runtime() -> bool {
    Handle::try_current().is_ok()
}

/// How many calls of the cache's operations this process has sent to polycache's blocking
/// pool so far (`file://`, `sqlite://` and synchronous custom backends, awaited): for
/// diagnostics, and to check that an awaited operation on a native backend stayed off it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> polycache::Result<()> {
/// let cache = polycache::Cache::open("memory://")?;
/// let before = polycache::runtime::blocking_calls();
/// cache.set_async("k", b"v", Default::default()).await?;
/// assert_eq!(polycache::runtime::blocking_calls(), before); // memory:// answers in place
/// # Ok(()) }
/// ```
pub fn blocking_calls() -> u64 {
    BLOCKING_CALLS.load(Ordering::Relaxed)
}

/// A number that changes in the child of every `fork()`: what a binding stamped with
/// another generation (an event loop's completion queue, whose descriptor the parent still
/// reads) was left behind by the parent and must not be used by the child.
///
/// ```
/// let before = polycache::runtime::fork_generation();
/// assert_eq!(polycache::runtime::fork_generation(), before); // no fork in between
/// ```
pub fn fork_generation() -> u64 {
    crate::fork::generation()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_and_blocking_run_on_the_runtime() {
        let out = wait(async { blocking(|| Ok(21 * 2)).await }).unwrap();
        assert_eq!(out.unwrap(), 42);
        let spawned = wait(spawn(async { "done" })).unwrap().unwrap();
        assert_eq!(spawned, "done");
    }

    #[test]
    fn a_panic_in_the_blocking_pool_is_an_error() {
        let r = wait(blocking::<()>(|| panic!("boom"))).unwrap();
        let err = r.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Backend);
        assert!(err.to_string().contains("panicked"), "{err}");
    }

    #[test]
    fn configure_after_start_changes_nothing() {
        handle().unwrap();
        assert!(!configure(1, 1));
    }
}
