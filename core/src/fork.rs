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

/// When `stamp` is of another fork generation (a child of `fork()` looking at its parent's
/// state), forgets `items` — connections, thread handles: the parent's, neither used nor
/// dropped here — and moves `stamp` to this generation. True when it did.
#[cfg(any(
    feature = "redis",
    feature = "sqlite",
    feature = "postgres",
    feature = "file"
))]
pub(crate) fn forget_inherited<T>(stamp: &mut u64, items: &mut Vec<T>) -> bool {
    let now = generation();
    if *stamp == now {
        return false;
    }
    *stamp = now;
    items.drain(..).for_each(std::mem::forget);
    true
}

/// The connections of a pool (idle ones, and how many are open in all), owned by one fork
/// generation. In a child of `fork()` they are its parent's: using one would interleave two
/// processes' requests on one socket (wrong answers). [`Conns::adopt`], called on every
/// lock of the pool, forgets them there — never used again, and never closed either, since
/// closing could end the parent's session (a TLS close_notify, a protocol goodbye) — along
/// with the count of those the parent had checked out. A checked-out connection carries the
/// generation it was taken in ([`Conns::fork`]) back to [`Conns::give_back`] or
/// [`Conns::forget_one`].
#[cfg(any(feature = "redis", feature = "sqlite", feature = "postgres"))]
pub(crate) struct Conns<C> {
    pub(crate) idle: Vec<C>,
    pub(crate) open: usize,
    fork: u64,
}

#[cfg(any(feature = "redis", feature = "sqlite", feature = "postgres"))]
impl<C> Conns<C> {
    pub(crate) fn new() -> Self {
        Conns {
            idle: Vec::new(),
            open: 0,
            fork: generation(),
        }
    }

    /// In a child of `fork()`, lets go of the parent's connections (see above).
    #[inline]
    pub(crate) fn adopt(&mut self) {
        if forget_inherited(&mut self.fork, &mut self.idle) {
            self.open = 0;
        }
    }

    /// The generation a connection checked out now belongs to.
    pub(crate) fn fork(&self) -> u64 {
        self.fork
    }

    /// Puts back a connection checked out in generation `fork`: idle again, or let go if it
    /// is a parent's.
    pub(crate) fn give_back(&mut self, conn: C, fork: u64) {
        if fork == self.fork {
            self.idle.push(conn);
        } else {
            release(conn, fork);
        }
    }

    /// A connection checked out in generation `fork` left the pool for good.
    pub(crate) fn forget_one(&mut self, fork: u64) {
        if fork == self.fork {
            self.open -= 1;
        }
    }
}

/// Lets go of a connection opened in fork generation `fork`: closed in the process that
/// opened it, forgotten (left open, never used) in a child of `fork()`, where it is the
/// parent's.
#[cfg(any(feature = "redis", feature = "sqlite", feature = "postgres"))]
pub(crate) fn release<C>(conn: C, fork: u64) {
    if fork == generation() {
        drop(conn);
    } else {
        std::mem::forget(conn);
    }
}
