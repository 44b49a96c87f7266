//! Interpreter shutdown: `polycache` registers [`_shutdown`] with `atexit`.
//!
//! Rust threads that enter Python (refresh-pool threads running a job's fetch, the
//! `polycache-log` thread emitting records) do so under [`Active`]. `_shutdown`, without the
//! GIL and bounded by its timeout: stops the core's refresh pool (queued refreshes are
//! dropped) and waits for the running refreshes, so their outcome is still logged; then
//! refuses any further entry into Python and waits for the threads inside to leave, so
//! finalization never meets one of our threads holding or waiting for the GIL. Last, with the
//! GIL, it emits the log records still queued and closes the log bridge: later records are
//! dropped.

use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static FINALIZING: AtomicBool = AtomicBool::new(false);
static LOGS_CLOSED: AtomicBool = AtomicBool::new(false);
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// A Rust thread's permission to run Python code; refused once shutdown began.
pub(crate) struct Active;

impl Active {
    pub(crate) fn enter() -> Option<Active> {
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        if FINALIZING.load(Ordering::SeqCst) {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Active)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// True once shutdown began: our threads no longer enter Python.
pub(crate) fn finalizing() -> bool {
    FINALIZING.load(Ordering::SeqCst)
}

/// True once the log bridge emitted its last records: later ones are dropped.
pub(crate) fn logs_closed() -> bool {
    LOGS_CLOSED.load(Ordering::Relaxed)
}

/// Stops background threads from entering Python and waits up to `timeout` seconds for
/// those running to finish, then emits the queued log records; True when no thread is left
/// inside Python. Registered with `atexit` by `polycache`.
#[pyfunction]
#[pyo3(signature = (timeout = 5.0))]
pub(crate) fn _shutdown(py: Python<'_>, timeout: f64) -> bool {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
    let done = py.detach(|| {
        polycache::stop_refreshes(deadline.saturating_duration_since(Instant::now()));
        FINALIZING.store(true, Ordering::SeqCst);
        crate::logbridge::wake();
        loop {
            if ACTIVE.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    crate::logbridge::drain(py);
    LOGS_CLOSED.store(true, Ordering::SeqCst);
    done
}
