//! Rust's `log` records → Python's `logging`.
//!
//! The core (and the crates under it) log through the `log` crate; this module installs the
//! process's `log` logger and hands each record to `logging.getLogger(name)`, where `name` is
//! the record's target with `::` as `.` (`polycache::cache` → `polycache.cache`, so one
//! `logging.getLogger("polycache")` configures them all). Records from `polycache` are passed
//! on from `DEBUG` up, records from other crates (redis, rustls, …) from `WARNING` up; the
//! Python logger's own level and handlers decide the rest, read at every record (no cache to
//! reset after `logging.basicConfig`).
//!
//! A thread that logs never waits for the GIL, so logging cannot deadlock against a thread
//! that holds the GIL and waits for a lock the logging thread holds (the reason this is not
//! `pyo3-log`, which takes the GIL on the logging thread):
//! - a thread that holds the GIL emits the record at once;
//! - a thread inside [`detach`] (a call from Python that released the GIL) keeps it in a
//!   thread-local buffer, emitted when the call takes the GIL back, so the record is handled
//!   before the call returns, on the caller's thread;
//! - any other thread (refresh pool, invalidation subscriber, trimmer) queues it for the
//!   `polycache-log` thread, which takes the GIL to emit it.
//!
//! At most [`QUEUE_LIMIT`] records wait; beyond that they are counted and the count is logged
//! as a warning. At interpreter shutdown ([`crate::finalize`]) the queue is emitted one last
//! time; records logged after that are dropped.

use crate::finalize::Active;
use log::{Level, LevelFilter, Log, Metadata};
use pyo3::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Records waiting for the `polycache-log` thread, or in one thread's buffer, at most.
const QUEUE_LIMIT: usize = 10_000;

/// One record, formatted on the logging thread.
struct Entry {
    level: Level,
    target: String,
    message: String,
    file: Option<&'static str>,
    line: Option<u32>,
}

static QUEUE: Mutex<VecDeque<Entry>> = Mutex::new(VecDeque::new());
static WAKE: Condvar = Condvar::new();
/// Records dropped because a queue was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The process whose `polycache-log` thread runs (0: none); a forked child starts its own.
static DRAINER_PID: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// Inside [`detach`]: this thread's records wait in [`BUFFER`] for the GIL.
    static DETACHED: Cell<bool> = const { Cell::new(false) };
    static BUFFER: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

struct Bridge;

static BRIDGE: Bridge = Bridge;

impl Log for Bridge {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // The `log` level filter (DEBUG, set by `install`) drops TRACE before this.
        polycache::log_bridged(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) || crate::finalize::logs_closed() {
            return;
        }
        let entry = Entry {
            level: record.level(),
            target: record.target().replace("::", "."),
            message: record.args().to_string(),
            file: record.file_static(),
            line: record.line(),
        };
        // SAFETY: PyGILState_Check may be called on any thread at any time; finalization
        // (from which on it answers 1 on every thread) comes after `logs_closed`, checked above.
        if unsafe { pyo3::ffi::PyGILState_Check() } == 1 {
            Python::attach(|py| emit(py, entry));
        } else if DETACHED.with(Cell::get) {
            BUFFER.with(|b| {
                let mut buffer = b.borrow_mut();
                if buffer.len() < QUEUE_LIMIT {
                    buffer.push(entry);
                } else {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            });
        } else {
            enqueue(entry);
        }
    }

    fn flush(&self) {}
}

/// Installs the bridge as the process's `log` logger (a no-op if a logger is installed).
pub(crate) fn install() {
    if log::set_logger(&BRIDGE).is_ok() {
        log::set_max_level(LevelFilter::Debug);
    }
}

/// `py.detach(f)`, with the records `f` logs on this thread emitted once the GIL is back.
#[inline]
pub(crate) fn detach<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    /// Restores the thread's flag however `f` ends (a panic included).
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            DETACHED.with(|d| d.set(self.0));
        }
    }
    let restore = Restore(DETACHED.with(|d| d.replace(true)));
    let result = py.detach(f);
    drop(restore);
    // Taking an empty Vec allocates nothing: the usual call costs one thread-local access.
    for entry in BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut())) {
        emit(py, entry);
    }
    result
}

fn lock_queue() -> MutexGuard<'static, VecDeque<Entry>> {
    QUEUE.lock().unwrap_or_else(|e| e.into_inner())
}

fn enqueue(entry: Entry) {
    let pid = std::process::id();
    let drainer = DRAINER_PID.swap(pid, Ordering::SeqCst);
    {
        let mut queue = lock_queue();
        if drainer != 0 && drainer != pid {
            // A forked child: the queued records are the parent's, emitted there.
            queue.clear();
        }
        if queue.len() >= QUEUE_LIMIT {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        } else {
            queue.push_back(entry);
        }
    }
    WAKE.notify_one();
    if drainer != pid {
        let spawned = std::thread::Builder::new()
            .name("polycache-log".into())
            .spawn(drain_forever);
        if spawned.is_err() {
            // Nobody will emit the queue; the next call that drains (shutdown) still does.
            DRAINER_PID.store(0, Ordering::SeqCst);
        }
    }
}

/// The `polycache-log` thread: emits queued records until interpreter shutdown.
fn drain_forever() {
    loop {
        {
            let mut queue = lock_queue();
            while queue.is_empty() && !crate::finalize::finalizing() {
                queue = WAKE.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        }
        // Shutdown waits (without the GIL) for every `Active` thread to leave Python.
        let Some(_active) = Active::enter() else {
            return;
        };
        Python::attach(drain);
    }
}

/// Emits every queued record (the caller holds the GIL, so nobody else emits meanwhile).
pub(crate) fn drain(py: Python<'_>) {
    loop {
        let Some(entry) = lock_queue().pop_front() else {
            break;
        };
        emit(py, entry);
    }
}

/// Wakes the `polycache-log` thread so it sees that shutdown began.
pub(crate) fn wake() {
    WAKE.notify_all();
}

/// Hands one record to Python's `logging`, as `logging.getLogger(target)` would log it.
fn emit(py: Python<'_>, entry: Entry) {
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        emit(
            py,
            Entry {
                level: Level::Warn,
                target: "polycache".to_owned(),
                message: format!("polycache: {dropped} log records were dropped (queue full)"),
                file: None,
                line: None,
            },
        );
    }
    if let Err(e) = try_emit(py, &entry) {
        e.write_unraisable(py, None);
    }
}

fn try_emit(py: Python<'_>, entry: &Entry) -> PyResult<()> {
    let level = match entry.level {
        Level::Error => 40,
        Level::Warn => 30,
        Level::Info => 20,
        Level::Debug => 10,
        Level::Trace => 5,
    };
    let logging = py.import(pyo3::intern!(py, "logging"))?;
    let logger = logging.call_method1(pyo3::intern!(py, "getLogger"), (&entry.target,))?;
    if !logger
        .call_method1(pyo3::intern!(py, "isEnabledFor"), (level,))?
        .is_truthy()?
    {
        return Ok(());
    }
    let record = logger.call_method1(
        pyo3::intern!(py, "makeRecord"),
        (
            &entry.target,
            level,
            entry.file.unwrap_or("<rust>"),
            entry.line.unwrap_or(0),
            &entry.message,
            (),
            py.None(),
        ),
    )?;
    logger.call_method1(pyo3::intern!(py, "handle"), (record,))?;
    Ok(())
}
