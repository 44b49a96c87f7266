//! Awaitables that polycache's runtime resolves, with no worker thread per call.
//!
//! An awaited operation on a backend that does not answer in memory runs on polycache's
//! runtime ([`polycache::runtime`]); when it finishes, its result goes into the
//! [`CompletionQueue`] of the event loop that awaits it. Each event loop (asyncio's own or
//! uvloop) has one queue, whose eventfd the loop watches with `add_reader`: the loop wakes
//! once per batch of finished operations, and its drain hands each result to its asyncio
//! future on the loop's thread. Python objects never leave that thread: the runtime sees only
//! owned keys and values, and answers with core values that become Python objects in the
//! drain. A future that was cancelled meanwhile is skipped, its result dropped.
//!
//! A native method answers with a coroutine object (it has `send`, `throw` and `close`, so
//! `asyncio.create_task` takes it): an [`Awaitable`] that waits for its asyncio future, or,
//! when the answer is known at the call (a local backend, or an error found before the
//! operation started), a [`crate::ready`] awaitable. Neither costs an exception to return
//! its answer: both types implement CPython's `am_send` slot.

use crate::ops::{Core, Decoder, Deliver, OnLoop, Owned, Reply};
use polycache::completion::CompletionQueue;
use polycache::{Error, ErrorKind};
use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The awaitable answer of a native `a`-method; see the module docs.
#[pyclass(frozen, module = "polycache._polycache", name = "Awaitable")]
pub(crate) struct Awaitable {
    /// An operation on polycache's runtime (an answer known at the call is a
    /// [`crate::ready`] awaitable instead).
    phase: Mutex<Phase>,
}

/// Starts an operation in the running loop; answers its asyncio future.
type Start = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// Where an operation on the runtime stands.
enum Phase {
    /// Called with no event loop running (`asyncio.run(cache.aget(k))`): the operation
    /// starts at the first step of the await, in the loop that runs it.
    Unstarted(Start),
    /// The asyncio future the loop's drain completes.
    Waiting(Py<PyAny>),
    /// Closed before it started.
    Closed,
}

/// One step of the coroutine protocol.
enum Step<'py> {
    Return(Bound<'py, PyAny>),
    Yield(Bound<'py, PyAny>),
}

impl Awaitable {
    fn step<'py>(&self, py: Python<'py>) -> PyResult<Step<'py>> {
        let fut = self.future(py, &self.phase)?;
        let fut = fut.bind(py);
        if fut.call_method0(pyo3::intern!(py, "done"))?.is_truthy()? {
            // Raises the operation's error, or CancelledError.
            return Ok(Step::Return(fut.call_method0(pyo3::intern!(py, "result"))?));
        }
        // What `Future.__await__` does: the task waits for this future.
        fut.setattr(pyo3::intern!(py, "_asyncio_future_blocking"), true)?;
        Ok(Step::Yield(fut.clone()))
    }

    /// The operation's future, starting it first if it has not started.
    fn future(&self, py: Python<'_>, phase: &Mutex<Phase>) -> PyResult<Py<PyAny>> {
        let lock = || phase.lock().unwrap_or_else(|e| e.into_inner());
        let taken = std::mem::replace(&mut *lock(), Phase::Closed);
        let start = match taken {
            Phase::Waiting(fut) => {
                *lock() = Phase::Waiting(fut.clone_ref(py));
                return Ok(fut);
            }
            Phase::Unstarted(start) => start,
            Phase::Closed => {
                return Err(PyRuntimeError::new_err(
                    "cannot await a polycache awaitable that was closed or failed to start",
                ))
            }
        };
        // Not under the lock: starting calls into Python.
        let fut = start(py)?;
        *lock() = Phase::Waiting(fut.clone_ref(py));
        Ok(fut)
    }

    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        let waiting = {
            let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
            match std::mem::replace(&mut *phase, Phase::Closed) {
                Phase::Waiting(fut) => Some(fut),
                _ => None,
            }
        };
        if let Some(fut) = waiting {
            fut.bind(py).call_method0(pyo3::intern!(py, "cancel"))?;
        }
        Ok(())
    }
}

#[pymethods]
impl Awaitable {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.step(py)? {
            Step::Yield(fut) => Ok(fut),
            Step::Return(v) => Err(PyStopIteration::new_err((v.unbind(),))),
        }
    }

    /// The coroutine protocol's `send`: only `None` is ever sent to a running await.
    fn send<'py>(&self, py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let _ = value;
        self.__next__(py)
    }

    /// Raises `typ` (an exception, or a class with `val` its argument) into the await; a
    /// waiting operation's future is cancelled, so its result is dropped.
    #[pyo3(signature = (typ, val = None, tb = None))]
    fn throw<'py>(
        &self,
        py: Python<'py>,
        typ: &Bound<'py, PyAny>,
        val: Option<&Bound<'py, PyAny>>,
        tb: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = tb;
        self.cancel(py)?;
        Err(thrown(typ, val)?)
    }

    /// Abandons the await: a waiting operation's future is cancelled.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.cancel(py)
    }

    fn __repr__(&self) -> &'static str {
        "<polycache awaitable (running)>"
    }
}

/// The exception `throw(typ, val)` raises into an await: `typ` itself when it is an
/// exception, else `typ(val)` (or `val` when it is one already, or `typ()`).
pub(crate) fn thrown(typ: &Bound<'_, PyAny>, val: Option<&Bound<'_, PyAny>>) -> PyResult<PyErr> {
    let exc = if typ.is_instance_of::<PyType>() {
        match val {
            Some(v) if v.is_instance(typ)? => v.clone(),
            Some(v) if !v.is_none() => typ.call1((v,))?,
            _ => typ.call0()?,
        }
    } else {
        typ.clone()
    };
    Ok(PyErr::from_value(exc))
}

/// CPython's `am_send` slot: a step of the await without a `StopIteration` for the answer
/// (CPython 3.10 and later; older ones step through `__next__`).
#[cfg(Py_3_10)]
unsafe extern "C" fn am_send(
    slf: *mut ffi::PyObject,
    _arg: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // SAFETY: CPython calls the slot with the thread attached and `slf` an `Awaitable`.
    let py = unsafe { Python::assume_attached() };
    let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `slf` is a live object of this slot's type (see above).
        let any = unsafe { Bound::from_borrowed_ptr(py, slf) };
        let this = any.cast::<Awaitable>()?;
        this.get().step(py)
    }))
    .unwrap_or_else(|_| {
        Err(PyRuntimeError::new_err(
            "polycache: an awaitable panicked (a bug in polycache)",
        ))
    });
    match stepped {
        Ok(Step::Return(v)) => {
            // SAFETY: `result` is CPython's out-pointer; it takes the new reference.
            unsafe { *result = v.into_ptr() };
            ffi::PySendResult::PYGEN_RETURN
        }
        Ok(Step::Yield(v)) => {
            // SAFETY: as above.
            unsafe { *result = v.into_ptr() };
            ffi::PySendResult::PYGEN_NEXT
        }
        Err(e) => {
            e.restore(py);
            // SAFETY: as above; NULL with an exception set is the error answer.
            unsafe { *result = std::ptr::null_mut() };
            ffi::PySendResult::PYGEN_ERROR
        }
    }
}

/// CPython's `am_await` slot: the awaitable is its own iterator (as `__await__` says,
/// without PyO3's call wrapper on this per-await path).
unsafe extern "C" fn am_await(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython passes a live object; the slot returns a new reference to it.
    unsafe {
        ffi::Py_IncRef(slf);
    }
    slf
}

/// Gives the `Awaitable` type its `am_send` and a direct `am_await` slot; called once, when
/// the module loads.
pub(crate) fn install(m: &Bound<'_, PyModule>) -> PyResult<()> {
    crate::ready::install(m.py())?;
    m.add_class::<Awaitable>()?;
    let ty = m.py().get_type::<Awaitable>();
    // SAFETY: the type is a heap type PyO3 just made with an `__await__`, so `tp_as_async`
    // points at its own (writable) async-methods table; no instance exists yet.
    unsafe {
        let tp = ty.as_type_ptr();
        let table = (*tp).tp_as_async;
        if !table.is_null() {
            #[cfg(Py_3_10)]
            {
                (*table).am_send = Some(am_send);
            }
            (*table).am_await = Some(am_await);
        }
    }
    Ok(())
}

/// A complete awaitable of `answer` (see [`crate::ready`]).
#[inline]
pub(crate) fn ready<'py>(
    py: Python<'py>,
    answer: PyResult<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    crate::ready::ready(py, answer)
}

/// `answer`, with an error turned into a complete awaitable that raises it: an `a`-method
/// raises from the await, never from the call.
#[inline]
pub(crate) fn raising_on_await<'py>(
    py: Python<'py>,
    answer: PyResult<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    match answer {
        Ok(a) => Ok(a),
        Err(e) => ready(py, Err(e)),
    }
}

type Finished = (u64, polycache::Result<Reply>);

/// A finished operation's way home: its future and how its reply becomes Python.
struct Pending {
    future: Py<PyAny>,
    deliver: Deliver,
    decoder: Decoder,
}

/// The completion queue of one event loop, and the operations in flight on it. The loop
/// calls it (the `add_reader` callback) when the queue's descriptor is readable.
#[pyclass(frozen, module = "polycache._polycache", name = "_Completions")]
pub(crate) struct Completions {
    queue: Arc<CompletionQueue<Finished>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next: AtomicU64,
    /// The fork generation the queue was made in: in a child of `fork()` the queue's
    /// eventfd is still the parent's, and reading it would take the parent's wake-ups.
    generation: u64,
}

impl Completions {
    /// True in the child of a `fork()` made after this queue was: the queue is the parent's.
    fn inherited(&self) -> bool {
        self.generation != polycache::runtime::fork_generation()
    }

    /// Fails every operation in flight (in a child of `fork()`: they were the parent's, and
    /// their answers go to the parent).
    fn abandon(&self, py: Python<'_>) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, p) in pending {
            let fut = p.future.bind(py);
            if fut
                .call_method0(pyo3::intern!(py, "done"))
                .and_then(|d| d.is_truthy())
                .unwrap_or(true)
            {
                continue;
            }
            let err = PyRuntimeError::new_err(
                "this polycache operation was started before fork() by the parent process, \
                 which gets its answer; await it again in this process",
            );
            if let Err(e) =
                fut.call_method1(pyo3::intern!(py, "set_exception"), (err.into_value(py),))
            {
                e.write_unraisable(py, Some(fut));
            }
        }
    }
}

#[pymethods]
impl Completions {
    /// Delivers every finished operation to its future.
    fn __call__(&self, py: Python<'_>) {
        if self.inherited() {
            // The parent's descriptor, watched by a loop this child inherited: never read
            // here (the parent's wake-up would be lost); the child's awaits use a new queue.
            self.abandon(py);
            return;
        }
        for (id, reply) in self.queue.drain() {
            if let Ok(Reply::OnLoop(run)) = reply {
                run(py);
                continue;
            }
            let found = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            let Some(p) = found else { continue };
            let fut = p.future.bind(py);
            // A cancelled await: its result is dropped.
            match fut
                .call_method0(pyo3::intern!(py, "done"))
                .and_then(|d| d.is_truthy())
            {
                Ok(false) => {}
                Ok(true) => continue,
                Err(e) => {
                    e.write_unraisable(py, Some(fut));
                    continue;
                }
            }
            let delivered = match p.deliver.convert(py, p.decoder, reply) {
                Ok(v) => fut.call_method1(pyo3::intern!(py, "set_result"), (v,)),
                Err(e) => fut.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),)),
            };
            if let Err(e) = delivered {
                e.write_unraisable(py, Some(fut));
            }
        }
    }

    /// Operations started on this loop and not yet delivered.
    #[getter]
    fn in_flight(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The design the completion queue is measured against (`bench/python/bench_async.py`): each
/// finished operation takes the GIL on its runtime thread and wakes its loop with one
/// `call_soon_threadsafe`, instead of the loop watching the queue's descriptor.
static WAKE_PER_OPERATION: AtomicBool = AtomicBool::new(false);

/// Chooses how finished operations wake event loops started from now on: `True` for one
/// `call_soon_threadsafe` per operation, `False` (the default) for the completion queue's
/// descriptor. For benchmarks only.
#[pyfunction]
pub(crate) fn _wake_per_operation(on: bool) {
    WAKE_PER_OPERATION.store(on, Ordering::Relaxed);
}

thread_local! {
    /// The event loop last seen running on this thread, and its completions.
    static CURRENT: RefCell<Option<(Py<PyAny>, Py<Completions>)>> = const { RefCell::new(None) };
    /// Completions a child of `fork()` inherited, still registered with `add_reader` in a loop
    /// it runs: kept open, so their descriptor numbers are not reused while the loop's
    /// selector holds them (removing them would unregister them from the epoll instance
    /// parent and child share, and the parent would never wake for its answers).
    static INHERITED: RefCell<Vec<Py<Completions>>> = const { RefCell::new(Vec::new()) };
}

/// The running event loop (asyncio's `get_running_loop`: a `RuntimeError` when none runs).
fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    GET_RUNNING_LOOP
        .import(py, "asyncio", "get_running_loop")?
        .call0()
}

/// The completions of the running loop, made and watched on first use.
fn completions<'py>(
    py: Python<'py>,
    event_loop: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, Completions>> {
    let known = CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(l, _)| l.bind(py).is(event_loop))
            .map(|(_, q)| q.clone_ref(py))
    });
    if let Some(q) = known {
        if !q.get().inherited() {
            return Ok(q.into_bound(py));
        }
        // A child of fork() running its parent's loop: a queue of its own from now on.
        q.get().abandon(py);
        INHERITED.with(|kept| kept.borrow_mut().push(q));
    }
    let queue = CompletionQueue::new().map_err(|e| crate::errors::to_py(py, e))?;
    let fd = queue.fd();
    let completions = Bound::new(
        py,
        Completions {
            queue: Arc::new(queue),
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            generation: polycache::runtime::fork_generation(),
        },
    )?;
    if !WAKE_PER_OPERATION.load(Ordering::Relaxed) {
        event_loop.call_method1(pyo3::intern!(py, "add_reader"), (fd, &completions))?;
    }
    let entry = (event_loop.clone().unbind(), completions.clone().unbind());
    // The previous loop's entry (a loop that has closed) is dropped here.
    let previous = CURRENT.with(|c| c.borrow_mut().replace(entry));
    drop(previous);
    Ok(completions)
}

/// A way for polycache's runtime to run Python code on the running loop's thread: the
/// closure pushed goes through the loop's completion queue and runs in its drain. Weak, so a
/// loop that is gone drops what is pushed to it (and its senders) rather than keeping it.
pub(crate) fn on_loop(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
) -> PyResult<impl Fn(OnLoop) -> bool + Send + Sync + 'static> {
    let queue = Arc::downgrade(&completions(py, event_loop)?.get().queue);
    Ok(move |run: OnLoop| match queue.upgrade() {
        Some(q) => {
            q.push((u64::MAX, Ok(Reply::OnLoop(run))));
            true
        }
        None => false,
    })
}

/// Pushes an error for an operation whose task ended without answering (it panicked, or the
/// runtime dropped it), so its await never hangs.
struct Answered {
    queue: Arc<CompletionQueue<Finished>>,
    id: u64,
    done: bool,
}

impl Drop for Answered {
    fn drop(&mut self) {
        if !self.done {
            self.queue.push((
                self.id,
                Err(Error::new(
                    ErrorKind::Backend,
                    "a polycache operation ended on the runtime without an answer",
                )),
            ));
        }
    }
}

/// Starts `request` on polycache's runtime and answers with an awaitable of its result.
pub(crate) fn start<'py>(
    py: Python<'py>,
    core: &Core,
    request: Owned,
    deliver: Deliver,
) -> PyResult<Bound<'py, PyAny>> {
    let cache = core.cache.clone();
    start_future(
        py,
        core,
        async move { request.run_async(&cache).await },
        deliver,
    )
}

/// Runs `work` on polycache's runtime and answers with an awaitable of its result; with no
/// event loop running, `work` starts when the awaitable is first awaited.
pub(crate) fn start_future<'py>(
    py: Python<'py>,
    core: &Core,
    work: impl Future<Output = polycache::Result<Reply>> + Send + 'static,
    deliver: Deliver,
) -> PyResult<Bound<'py, PyAny>> {
    let decoder = core.decoder;
    let phase = match running_loop(py) {
        Ok(event_loop) => match spawn(py, &event_loop, work, deliver, decoder) {
            Ok(fut) => Phase::Waiting(fut),
            Err(e) => return ready(py, Err(e)),
        },
        Err(_) => Phase::Unstarted(Box::new(move |py| {
            let event_loop = running_loop(py)?;
            spawn(py, &event_loop, work, deliver, decoder)
        })),
    };
    let phase = Mutex::new(phase);
    Ok(Bound::new(py, Awaitable { phase })?.into_any())
}

/// Spawns `work` on polycache's runtime; answers with the asyncio future of `event_loop`
/// that the loop's completions will complete.
fn spawn(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
    work: impl Future<Output = polycache::Result<Reply>> + Send + 'static,
    deliver: Deliver,
    decoder: Decoder,
) -> PyResult<Py<PyAny>> {
    let handle = polycache::runtime::handle().map_err(|e| crate::errors::to_py(py, e))?;
    let completions = completions(py, event_loop)?;
    let future = event_loop.call_method0(pyo3::intern!(py, "create_future"))?;
    let this = completions.get();
    let id = this.next.fetch_add(1, Ordering::Relaxed);
    this.pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            id,
            Pending {
                future: future.clone().unbind(),
                deliver,
                decoder,
            },
        );
    let mut answered = Answered {
        queue: Arc::clone(&this.queue),
        id,
        done: false,
    };
    let wake = WAKE_PER_OPERATION
        .load(Ordering::Relaxed)
        .then(|| (event_loop.clone().unbind(), completions.clone().unbind()));
    handle.spawn(async move {
        let reply = work.await;
        answered.done = true;
        answered.queue.push((answered.id, reply));
        if let Some((event_loop, completions)) = wake {
            Python::attach(|py| {
                // A closed loop refuses: nobody awaits there any more.
                let _ = event_loop.call_method1(py, "call_soon_threadsafe", (completions,));
            });
        }
    });
    Ok(future.unbind())
}

/// Runs the blocking `call` on polycache's blocking pool and awaits its result.
pub(crate) async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> polycache::Result<T> + Send + 'static,
) -> polycache::Result<T> {
    let task = polycache::runtime::handle()?.spawn_blocking(call);
    task.await.map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            format!("a polycache operation failed on the blocking pool: {e}"),
        )
    })?
}
