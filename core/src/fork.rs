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
#[cfg(feature = "file")]
pub(crate) fn forget_inherited<T>(stamp: &mut u64, items: &mut Vec<T>) -> bool {
    let now = generation();
    if *stamp == now {
        return false;
    }
    *stamp = now;
    items.drain(..).for_each(std::mem::forget);
    true
}
