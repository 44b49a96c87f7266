//! Fork detection. Threads and the work they were doing do not survive `fork()`: a child
//! must not wait for a refresh thread or a computation that only its parent has.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn in_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// A number that changes in the child of every `fork()` (after the first call): state
/// stamped with another generation was left behind by the parent's threads.
#[inline]
pub(crate) fn generation() -> u64 {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: `in_child` is async-signal-safe (one atomic add), as a handler run in the
        // child of a multi-threaded fork must be.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        if rc != 0 {
            log::warn!("polycache: pthread_atfork failed ({rc}); a forked child may not refresh");
        }
    });
    GENERATION.load(Ordering::Relaxed)
}

/// For connection pools. In a child of `fork()` the connections a pool holds are its
/// parent's: using one would interleave two processes' requests on one socket (wrong
/// answers). When `stamp` is of another generation this forgets the `idle` connections —
/// never used again, and never closed either, since closing could end the parent's session
/// (a TLS close_notify, a protocol goodbye) — and moves `stamp` to this generation. True
/// when it did: the pool then also forgets the connections its parent had checked out.
#[cfg(any(feature = "redis", feature = "sqlite", feature = "postgres"))]
pub(crate) fn forget_inherited<C>(stamp: &mut u64, idle: &mut Vec<C>) -> bool {
    let now = generation();
    if *stamp == now {
        return false;
    }
    *stamp = now;
    idle.drain(..).for_each(std::mem::forget);
    true
}

/// Lets go of a connection opened in fork generation `fork`: closed in the process that
/// opened it, forgotten (left open, never used) in a child of `fork()`, where it is the
/// parent's.
#[cfg(any(
    feature = "redis",
    feature = "memcached",
    feature = "sqlite",
    feature = "postgres"
))]
pub(crate) fn release<C>(conn: C, fork: u64) {
    if fork == generation() {
        drop(conn);
    } else {
        std::mem::forget(conn);
    }
}
