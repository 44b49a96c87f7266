//! A completion queue: operations finish on polycache's runtime and wait here, with what the
//! caller needs to deliver them, until the caller's event loop drains them.
//!
//! The queue has one file descriptor (an `eventfd`) that becomes readable when the queue
//! goes from empty to non-empty, so an event loop (asyncio's `add_reader`, libuv's
//! `uv_poll`, epoll) wakes once per batch of completions, not once per operation. Python's
//! awaitables and C's non-blocking calls both use it.
//!
//! `CompletionQueue` is `Send + Sync`: runtime threads push, the loop's thread drains.

use crate::error::{Error, ErrorKind, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};

/// Finished operations waiting to be delivered; see the module documentation.
///
/// ```
/// use polycache::completion::CompletionQueue;
/// let queue = CompletionQueue::new().unwrap();
/// queue.push(1);
/// queue.push(2);
/// assert!(queue.fd() >= 0);
/// assert_eq!(queue.drain(), vec![1, 2]);
/// assert!(queue.drain().is_empty());
/// ```
pub struct CompletionQueue<T> {
    state: Mutex<State<T>>,
    /// Readable while `state.signalled` is true.
    event: OwnedFd,
}

struct State<T> {
    items: Vec<T>,
    /// The eventfd holds a count not yet read.
    signalled: bool,
}

impl<T> CompletionQueue<T> {
    /// A new, empty queue with its own eventfd (non-blocking, closed on exec).
    pub fn new() -> Result<Self> {
        // SAFETY: eventfd takes no pointers; a negative return is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "cannot create a completion queue's eventfd: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        Ok(CompletionQueue {
            state: Mutex::new(State {
                items: Vec::new(),
                signalled: false,
            }),
            // SAFETY: `fd` is a new descriptor that nothing else owns.
            event: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The descriptor an event loop watches for readability; owned by the queue (do not
    /// close it; it stays valid as long as the queue).
    pub fn fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a finished operation; wakes the loop when the queue was empty.
    pub fn push(&self, item: T) {
        let mut state = self.lock();
        state.items.push(item);
        if !state.signalled {
            state.signalled = true;
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to a descriptor the queue owns. It can
            // only fail with EAGAIN when the counter is saturated, and then it is readable.
            unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// Takes every finished operation, oldest first, and clears the descriptor's readiness.
    pub fn drain(&self) -> Vec<T> {
        self.drain_up_to(usize::MAX)
    }

    /// Takes at most `max` finished operations, oldest first. The descriptor stays readable
    /// while some are left, so a loop that drains in fixed-size batches wakes again for them.
    ///
    /// ```
    /// use polycache::completion::CompletionQueue;
    /// let queue = CompletionQueue::new().unwrap();
    /// for i in 0..5 {
    ///     queue.push(i);
    /// }
    /// assert_eq!(queue.drain_up_to(2), vec![0, 1]);
    /// assert_eq!(queue.drain_up_to(8), vec![2, 3, 4]);
    /// ```
    pub fn drain_up_to(&self, max: usize) -> Vec<T> {
        let mut state = self.lock();
        if state.items.len() > max {
            let rest = state.items.split_off(max);
            return std::mem::replace(&mut state.items, rest);
        }
        if state.signalled {
            state.signalled = false;
            let mut count: u64 = 0;
            // SAFETY: reads 8 bytes into a live u64 from a descriptor the queue owns; it is
            // non-blocking, and an EAGAIN leaves nothing to clear.
            unsafe { libc::read(self.fd(), (&mut count as *mut u64).cast(), 8) };
        }
        std::mem::take(&mut state.items)
    }

    /// How many finished operations wait to be drained.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// True when no finished operation waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn readable(fd: RawFd) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd, zero timeout.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }

    #[test]
    fn the_descriptor_is_readable_exactly_while_items_wait() {
        let q = CompletionQueue::new().unwrap();
        assert!(!readable(q.fd()));
        q.push("a");
        q.push("b");
        assert!(readable(q.fd()));
        assert_eq!(q.len(), 2);
        assert_eq!(q.drain(), vec!["a", "b"]);
        assert!(!readable(q.fd()));
        q.push("c");
        assert!(readable(q.fd()));
    }

    #[test]
    fn a_partial_drain_leaves_the_descriptor_readable() {
        let q = CompletionQueue::new().unwrap();
        for i in 0..3 {
            q.push(i);
        }
        assert_eq!(q.drain_up_to(2), vec![0, 1]);
        assert!(readable(q.fd()));
        assert_eq!(q.drain_up_to(2), vec![2]);
        assert!(!readable(q.fd()));
        assert!(q.drain_up_to(2).is_empty());
        assert!(q.drain_up_to(0).is_empty());
    }

    #[test]
    fn a_bounded_drain_never_takes_more_than_asked_while_others_push() {
        let q = Arc::new(CompletionQueue::new().unwrap());
        let pusher = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    q.push(i);
                }
            })
        };
        let mut got = Vec::new();
        while got.len() < 20_000 {
            let batch = q.drain_up_to(3);
            assert!(batch.len() <= 3, "{}", batch.len());
            got.extend(batch);
        }
        pusher.join().unwrap();
        assert_eq!(got, (0..20_000).collect::<Vec<_>>());
    }

    #[test]
    fn concurrent_pushes_are_all_delivered() {
        let q = Arc::new(CompletionQueue::new().unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let q = Arc::clone(&q);
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        q.push(t * 1000 + i);
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        while got.len() < 4000 {
            got.extend(q.drain());
            std::thread::yield_now();
        }
        for t in threads {
            t.join().unwrap();
        }
        got.extend(q.drain());
        got.sort_unstable();
        assert_eq!(got, (0..4000).collect::<Vec<_>>());
    }
}
