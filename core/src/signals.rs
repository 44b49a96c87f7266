//! Signals held back around blocking I/O whose library gives up on `EINTR`.
//!
//! A signal handler installed without `SA_RESTART` — Python installs every one of its own
//! that way — makes the system call it interrupts fail with `EINTR`. Code that owns its
//! reads retries them (`memcached::conn`, `file`); redis-rs' blocking connection does not,
//! and reports "Interrupted system call" as a dead server, failing a call for nothing. It
//! cannot be retried from outside: the command may already have run (`incr`), and the
//! reply is half read. So while a blocking Redis call runs, the calling thread holds back
//! the asynchronous signals. A signal that arrives meanwhile stays pending, or goes to
//! another thread that takes it, and its handler runs when the call returns — which socket
//! timeouts bound. Python handles it then, as it handles a signal that arrives during any
//! call into C. Faults (`SIGSEGV`, `SIGBUS`, `SIGFPE`, `SIGILL`, `SIGTRAP`, `SIGSYS`) and
//! `SIGABRT` are never held: they concern this very thread and cannot wait.
//!
//! Holding signals does not cover a stop and continue of the process: a socket with a
//! timeout fails its wait with `EINTR` then all the same. The Redis pool runs such a call
//! again when it is safe to (`backend::redis::blocking`).

/// Holds the calling thread's asynchronous signals back until dropped, restoring the mask
/// it found.
pub(crate) struct Held {
    previous: libc::sigset_t,
}

impl Held {
    pub(crate) fn hold() -> Held {
        // SAFETY: `previous` is initialised by `sigemptyset` before use, and
        // `pthread_sigmask` only reads the held set and writes `previous`.
        unsafe {
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut previous);
            libc::pthread_sigmask(libc::SIG_BLOCK, held_set(), &mut previous);
            Held { previous }
        }
    }
}

/// Every signal but the faults and `SIGABRT`: built once, read by every [`Held::hold`].
fn held_set() -> &'static libc::sigset_t {
    static HELD: std::sync::OnceLock<libc::sigset_t> = std::sync::OnceLock::new();
    HELD.get_or_init(|| {
        // SAFETY: the set is initialised by `sigfillset` before `sigdelset` changes it.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            for fault in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGFPE,
                libc::SIGILL,
                libc::SIGTRAP,
                libc::SIGSYS,
                libc::SIGABRT,
            ] {
                libc::sigdelset(&mut all, fault);
            }
            all
        }
    })
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: `previous` is the mask `hold` read; setting it back is always valid.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}
