//! `polycache_queue`: where non-blocking operations (`polycache_cache_<op>_start`) deliver
//! their outcomes, and `polycache_completion`, what each outcome becomes when drained.
//!
//! An operation finishes on polycache's runtime (or in place, for `memory://` and
//! `dummy://`) as Rust values; only `polycache_queue_drain`, on the caller's thread, turns
//! them into C objects and writes the caller's memory. A finished operation that is never
//! drained (its queue was freed) is dropped with its values.

use crate::error::polycache_error;
use crate::handle::{self, borrow, out, out_array, LaterOut};
use crate::panic::{boundary, guard};
use crate::result::{
    polycache_result, Failure, POLYCACHE_RESULT_MISS, POLYCACHE_RESULT_NOT_STORED,
    POLYCACHE_RESULT_OK,
};
use crate::structures::polycache_redis_reply;
use crate::value::polycache_value;
use polycache::completion::CompletionQueue;
use polycache::{RedisReply, Value};
use std::ffi::{c_int, c_void};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

/// Which non-blocking call a completion answers: `POLYCACHE_OP_GET`, `POLYCACHE_OP_SET`,
/// `POLYCACHE_OP_DELETE`, `POLYCACHE_OP_INCR`, `POLYCACHE_OP_GET_MANY`,
/// `POLYCACHE_OP_SET_MANY`, `POLYCACHE_OP_TTL`, `POLYCACHE_OP_INCR_OR_CREATE`, then the
/// django-redis operations (`POLYCACHE_OP_ADD` to `POLYCACHE_OP_LOCK_REACQUIRE`), then
/// tags (`POLYCACHE_OP_SET_TAGGED`, `POLYCACHE_OP_INVALIDATE_TAGS`). Values are
/// stable; new operations are only ever appended.
pub type polycache_op = u32;

/// `polycache_cache_get_start`.
pub const POLYCACHE_OP_GET: polycache_op = 0;
/// `polycache_cache_set_start`.
pub const POLYCACHE_OP_SET: polycache_op = 1;
/// `polycache_cache_delete_start`.
pub const POLYCACHE_OP_DELETE: polycache_op = 2;
/// `polycache_cache_incr_start`.
pub const POLYCACHE_OP_INCR: polycache_op = 3;
/// `polycache_cache_get_many_start`.
pub const POLYCACHE_OP_GET_MANY: polycache_op = 4;
/// `polycache_cache_set_many_start`.
pub const POLYCACHE_OP_SET_MANY: polycache_op = 5;
/// `polycache_cache_ttl_start`.
pub const POLYCACHE_OP_TTL: polycache_op = 6;
/// `polycache_cache_incr_or_create_start`.
pub const POLYCACHE_OP_INCR_OR_CREATE: polycache_op = 7;
/// `polycache_cache_add_start`.
pub const POLYCACHE_OP_ADD: polycache_op = 8;
/// `polycache_cache_touch_start`.
pub const POLYCACHE_OP_TOUCH: polycache_op = 9;
/// `polycache_cache_has_key_start`.
pub const POLYCACHE_OP_HAS_KEY: polycache_op = 10;
/// `polycache_cache_replace_start`.
pub const POLYCACHE_OP_REPLACE: polycache_op = 11;
/// `polycache_cache_persist_start`.
pub const POLYCACHE_OP_PERSIST: polycache_op = 12;
/// `polycache_cache_expire_at_start`.
pub const POLYCACHE_OP_EXPIRE_AT: polycache_op = 13;
/// `polycache_cache_delete_many_start`.
pub const POLYCACHE_OP_DELETE_MANY: polycache_op = 14;
/// `polycache_cache_clear_start`.
pub const POLYCACHE_OP_CLEAR: polycache_op = 15;
/// `polycache_cache_delete_pattern_start`.
pub const POLYCACHE_OP_DELETE_PATTERN: polycache_op = 16;
/// `polycache_key_scan_next_start`.
pub const POLYCACHE_OP_KEY_SCAN_NEXT: polycache_op = 17;
/// `polycache_lock_acquire_start`.
pub const POLYCACHE_OP_LOCK_ACQUIRE: polycache_op = 18;
/// `polycache_lock_release_start`.
pub const POLYCACHE_OP_LOCK_RELEASE: polycache_op = 19;
/// `polycache_lock_extend_start`.
pub const POLYCACHE_OP_LOCK_EXTEND: polycache_op = 20;
/// `polycache_cache_redis_command_start`.
pub const POLYCACHE_OP_REDIS_COMMAND: polycache_op = 21;
/// `polycache_lock_reacquire_start`.
pub const POLYCACHE_OP_LOCK_REACQUIRE: polycache_op = 22;
/// `polycache_cache_set_tagged_start`.
pub const POLYCACHE_OP_SET_TAGGED: polycache_op = 23;
/// `polycache_cache_invalidate_tags_start`.
pub const POLYCACHE_OP_INVALIDATE_TAGS: polycache_op = 24;

/// One finished non-blocking operation, as `polycache_queue_drain` hands it out.
///
/// `result` is what the blocking twin of the operation would have returned: `OK`, `MISS`
/// (`get`), `NOT_STORED` (`set` on a `fail_open` cache whose backend is unreachable), or an
/// error code. The fields that do not apply to `op` or to `result` are NULL, 0 or false.
///
/// Ownership: `value` and `error` are new objects owned by the caller, to be released with
/// `polycache_value_free` and `polycache_error_free` (both accept NULL, so a loop may free
/// both for every completion). The struct itself is the caller's (an element of its array).
#[repr(C)]
pub struct polycache_completion {
    /// The `user_data` given to the start call, untouched (polycache never reads it).
    pub user_data: *mut c_void,
    /// The operation: a `POLYCACHE_OP_*` value.
    pub op: polycache_op,
    /// The operation's outcome, as its blocking twin returns it.
    pub result: polycache_result,
    /// `get` with `OK`: the value read. NULL otherwise.
    pub value: *mut polycache_value,
    /// `incr` and `incr_or_create` with `OK`: the new value; `ttl` with `OK`: the
    /// milliseconds left or `POLYCACHE_TTL_NEVER`. `delete_many` and `delete_pattern`: how
    /// many keys were removed; `key_scan_next`: how many keys are ready in the scan. The
    /// yes/no answer of `add`, `touch`, `has_key`, `replace`, `persist`, `expire_at` and
    /// `lock_acquire` (what their blocking twins write to their `bool` out-parameter): 1 for
    /// true, 0 for false. 0 otherwise.
    pub integer: i64,
    /// `delete` with `OK`: true when the key was present. False otherwise.
    pub deleted: bool,
    /// Any failure (every code but `OK`, `MISS` and `NOT_STORED`): its details, always set.
    /// NULL otherwise.
    pub error: *mut polycache_error,
}

/// Where non-blocking operations deliver their completions, with a file descriptor for an
/// event loop to watch.
///
/// Threads: a queue may be used from any number of threads at the same time (start calls
/// from several threads, `polycache_queue_drain` from one or several), except
/// `polycache_queue_free`, which must come after every other thread's last use. Lifetime:
/// from `polycache_queue_new` until `polycache_queue_free`, which may come while operations
/// are in flight: they finish, and their completions are dropped (values freed, no output
/// written, `user_data` never returned).
pub struct polycache_queue {
    shared: Arc<Shared>,
}

/// The part of a queue its operations in flight reach, through a `Weak`: when the queue is
/// freed, nothing keeps it (or its descriptor) alive.
struct Shared {
    finished: CompletionQueue<Finished>,
    /// Operations started and not yet drained.
    pending: AtomicUsize,
}

/// What a finished operation produced, before it becomes a `polycache_completion`.
pub(crate) enum Output {
    /// `get` found nothing.
    Miss,
    /// `get` found this.
    Value(Value),
    /// `set`: stored (false: dropped by a `fail_open` cache).
    Stored(bool),
    /// `delete`: whether the key was present.
    Deleted(bool),
    /// `incr`: the new value.
    Integer(i64),
    /// `get_many`: one entry per key, for the caller's array.
    Values(Vec<Option<Value>>, LaterOut<*mut polycache_value>),
    /// Done, nothing to hand out (`set_many`).
    Done,
    /// A yes/no answer (`add`, `has_key`, `lock_acquire`, …): `integer` 1 or 0.
    Flag(bool),
    /// `redis_command`: the reply, for the caller's `reply_out`.
    Reply(RedisReply, LaterOut<*mut polycache_redis_reply>),
}

/// A finished operation waiting in the queue.
struct Finished {
    user_data: UserPointer,
    op: polycache_op,
    outcome: Result<Output, Failure>,
}

/// The caller's `user_data`, carried to the runtime and back, never dereferenced.
#[derive(Clone, Copy)]
struct UserPointer(*mut c_void);

// SAFETY: polycache never reads through the pointer; it only hands it back to the caller in
// `polycache_queue_drain`, so moving it between threads touches nothing it points to.
unsafe impl Send for UserPointer {}

/// The promise that an operation's outcome reaches its queue exactly once: delivered by
/// [`Delivery::deliver`], or, if the operation is dropped unfinished (a panic), as a
/// `POLYCACHE_RESULT_PANIC` completion by `Drop`.
pub(crate) struct Delivery {
    queue: Weak<Shared>,
    user_data: UserPointer,
    op: polycache_op,
    sent: bool,
}

impl Delivery {
    fn deliver(mut self, outcome: Result<Output, Failure>) {
        self.sent = true;
        self.push(outcome);
    }

    fn push(&self, outcome: Result<Output, Failure>) {
        // A freed queue: the outcome (and the values in it) is dropped here.
        if let Some(shared) = self.queue.upgrade() {
            shared.finished.push(Finished {
                user_data: self.user_data,
                op: self.op,
                outcome,
            });
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if !self.sent {
            self.push(Err(Failure::Panic(
                "a non-blocking operation stopped before it finished".into(),
            )));
        }
    }
}

impl polycache_queue {
    /// Starts `work`, whose outcome this queue delivers exactly once with `user_data`.
    ///
    /// When `inline` (the cache answers in memory) the work runs here and its completion is
    /// queued before this returns; otherwise it is spawned on polycache's runtime. Fails
    /// only when that runtime cannot start, and then nothing is queued.
    pub(crate) fn start<F>(
        &self,
        inline: bool,
        op: polycache_op,
        user_data: *mut c_void,
        work: F,
    ) -> Result<polycache_result, Failure>
    where
        F: Future<Output = Result<Output, Failure>> + Send + 'static,
    {
        let runtime = if inline {
            None
        } else {
            Some(polycache::runtime::handle()?)
        };
        let delivery = Delivery {
            queue: Arc::downgrade(&self.shared),
            user_data: UserPointer(user_data),
            op,
            sent: false,
        };
        self.shared.pending.fetch_add(1, Ordering::Relaxed);
        let mut task: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            let outcome = work.await;
            delivery.deliver(outcome);
        });
        let runtime = match runtime {
            Some(runtime) => runtime,
            None => {
                let waker = noop_waker();
                let mut cx = Context::from_waker(&waker);
                // A panic here drops the task below, whose Delivery then queues PANIC.
                match guard(None, || Some(task.as_mut().poll(&mut cx))) {
                    Some(Poll::Ready(())) | None => return Ok(POLYCACHE_RESULT_OK),
                    // Not expected of a cache that completes inline; finish it on the runtime.
                    Some(Poll::Pending) => polycache::runtime::handle()?,
                }
            }
        };
        drop(runtime.spawn(task));
        Ok(POLYCACHE_RESULT_OK)
    }
}

/// A waker that does nothing, for polling once a future that is expected to be ready (an
/// operation on a cache that completes inline). `Waker::noop` needs Rust 1.85; this one
/// allocates nothing, so leak checkers have nothing to report at exit.
fn noop_waker() -> Waker {
    const VTABLE: RawWakerVTable = RawWakerVTable::new(
        |_| RawWaker::new(std::ptr::null(), &VTABLE),
        |_| {},
        |_| {},
        |_| {},
    );
    // SAFETY: every function of VTABLE ignores the data pointer and does nothing, which
    // keeps RawWaker's contract for any pointer, NULL included.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

impl Finished {
    /// The C form of this completion: new objects for the caller, and a `get_many`'s array
    /// filled.
    fn into_c(self) -> polycache_completion {
        let mut c = polycache_completion {
            user_data: self.user_data.0,
            op: self.op,
            result: POLYCACHE_RESULT_OK,
            value: std::ptr::null_mut(),
            integer: 0,
            deleted: false,
            error: std::ptr::null_mut(),
        };
        match self.outcome {
            Ok(Output::Miss) => c.result = POLYCACHE_RESULT_MISS,
            Ok(Output::Value(v)) => c.value = handle::into_raw(polycache_value::new(v)),
            Ok(Output::Stored(stored)) => {
                if !stored {
                    c.result = POLYCACHE_RESULT_NOT_STORED;
                }
            }
            Ok(Output::Deleted(deleted)) => c.deleted = deleted,
            Ok(Output::Integer(i)) => c.integer = i,
            Ok(Output::Values(values, values_out)) => {
                // SAFETY: the caller of polycache_cache_get_many_start keeps its array valid
                // and untouched until this completion is drained (the documented contract),
                // and this runs inside polycache_queue_drain.
                let slots = unsafe { values_out.get() };
                for (slot, value) in slots.iter_mut().zip(values) {
                    slot.write(value.map_or(std::ptr::null_mut(), |v| {
                        handle::into_raw(polycache_value::new(v))
                    }));
                }
            }
            Ok(Output::Done) => {}
            Ok(Output::Flag(flag)) => c.integer = i64::from(flag),
            Ok(Output::Reply(reply, reply_out)) => {
                // SAFETY: the caller of polycache_cache_redis_command_start keeps its
                // `reply_out` valid and untouched until this completion is drained (the
                // documented contract), and this runs inside polycache_queue_drain.
                let slot = unsafe { reply_out.get() };
                if let Some(slot) = slot.first_mut() {
                    slot.write(handle::into_raw(polycache_redis_reply::new(reply)));
                }
            }
            Err(failure) => {
                c.result = failure.result();
                c.error = handle::into_raw(polycache_error::new(&failure));
            }
        }
        c
    }
}

/// Creates a queue; `*queue_out` receives it, owned by the caller, to be released with
/// `polycache_queue_free`.
///
/// Fails with `POLYCACHE_RESULT_IO` when the system cannot give it a file descriptor.
#[no_mangle]
pub unsafe extern "C" fn polycache_queue_new(
    queue_out: *mut *mut polycache_queue,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: queue_out is NULL or valid for the call (the C API contract).
        let queue_out = unsafe { out(queue_out, "queue_out")? };
        let shared = Arc::new(Shared {
            finished: CompletionQueue::new()?,
            pending: AtomicUsize::new(0),
        });
        queue_out.write(handle::into_raw(polycache_queue { shared }));
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Frees a queue from `polycache_queue_new`; NULL does nothing.
///
/// Call it once, after every thread's last use of the queue, and after removing its
/// descriptor from your event loop (the descriptor is closed). Operations still in flight
/// are not interrupted (one that reached its server finishes there), but their completions
/// are dropped: nothing is written to a `get_many`'s array, and no value or error is handed
/// out, so nothing leaks. Completions already finished and not yet drained are dropped too.
#[no_mangle]
pub unsafe extern "C" fn polycache_queue_free(queue: *mut polycache_queue) {
    guard((), || {
        // SAFETY: queue is NULL or a queue from polycache_queue_new, freed once (C API
        // contract).
        unsafe { handle::free(queue) }
    })
}

/// The file descriptor an event loop watches for reading (epoll's `EPOLLIN`, libuv's
/// `uv_poll_start(…, UV_READABLE, …)`): readable while completions wait to be drained.
///
/// It is owned by the queue: do not read, write or close it. It is level-triggered:
/// `polycache_queue_drain` clears it when it takes the last waiting completion, and a
/// partial drain leaves it readable. Returns -1 when `queue` is NULL.
#[no_mangle]
pub unsafe extern "C" fn polycache_queue_fd(queue: *const polycache_queue) -> c_int {
    guard(-1, || {
        // SAFETY: queue is NULL or a queue from this library not yet freed (C API contract).
        unsafe { handle::borrow(queue, "queue") }.map_or(-1, |q| q.shared.finished.fd())
    })
}

/// How many operations were started on `queue` and not yet drained: in flight, or finished
/// and waiting. A loop is done when it reaches 0. Returns 0 when `queue` is NULL.
#[no_mangle]
pub unsafe extern "C" fn polycache_queue_pending(queue: *const polycache_queue) -> usize {
    guard(0, || {
        // SAFETY: queue is NULL or a queue from this library not yet freed (C API contract).
        unsafe { handle::borrow(queue, "queue") }
            .map_or(0, |q| q.shared.pending.load(Ordering::Relaxed))
    })
}

/// Takes up to `capacity` finished operations, oldest first, without waiting.
///
/// `completions_out` is the caller's array of `capacity` elements; `*count_out` receives how
/// many were written (0 when none waits). Each completion hands its `value` and `error` to
/// the caller (see `polycache_completion`), and a `get_many`'s completion fills the array
/// given to `polycache_cache_get_many_start` here, on the thread that drains. Completions
/// left over stay queued and the descriptor stays readable. `completions_out` may be NULL
/// only when `capacity` is 0.
#[no_mangle]
pub unsafe extern "C" fn polycache_queue_drain(
    queue: *const polycache_queue,
    completions_out: *mut polycache_completion,
    capacity: usize,
    count_out: *mut usize,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(queue: borrow, completions_out: out_array(capacity), count_out: out);
        let finished = queue.shared.finished.drain_up_to(capacity);
        let count = finished.len();
        queue.shared.pending.fetch_sub(count, Ordering::Relaxed);
        for (slot, done) in completions_out.iter_mut().zip(finished) {
            slot.write(done.into_c());
        }
        count_out.write(count);
        Ok(POLYCACHE_RESULT_OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::POLYCACHE_RESULT_PANIC;
    use crate::{polycache_error_free, polycache_error_result};

    fn queue() -> polycache_queue {
        polycache_queue {
            shared: Arc::new(Shared {
                finished: CompletionQueue::new().unwrap(),
                pending: AtomicUsize::new(0),
            }),
        }
    }

    /// Waits (bounded) for one completion and returns its result, freeing what it holds.
    fn one_result(q: &polycache_queue) -> polycache_result {
        for _ in 0..6000 {
            if let Some(done) = q.shared.finished.drain_up_to(1).pop() {
                q.shared.pending.fetch_sub(1, Ordering::Relaxed);
                let c = done.into_c();
                // SAFETY: the error, if any, was just handed out by into_c and is freed once.
                unsafe {
                    if !c.error.is_null() {
                        assert_eq!(polycache_error_result(c.error), c.result);
                    }
                    polycache_error_free(c.error);
                    crate::polycache_value_free(c.value);
                }
                return c.result;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("no completion within 60 s");
    }

    #[test]
    fn a_panicking_operation_is_delivered_as_a_panic_inline_and_on_the_runtime() {
        let q = queue();
        for inline in [true, false] {
            let code = q.start(inline, POLYCACHE_OP_GET, std::ptr::null_mut(), async {
                if true {
                    panic!("boom");
                }
                Ok(Output::Miss)
            });
            assert_eq!(code.unwrap(), POLYCACHE_RESULT_OK);
            assert_eq!(one_result(&q), POLYCACHE_RESULT_PANIC);
        }
        assert_eq!(q.shared.pending.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_operation_finishing_after_its_queue_is_freed_is_dropped() {
        let q = queue();
        let weak = Arc::downgrade(&q.shared);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let work = async move {
            // Waits on a blocking thread until the queue is gone.
            let _ = polycache::runtime::handle()
                .unwrap()
                .spawn_blocking(move || rx.recv())
                .await;
            let _ = done_tx.send(());
            Ok(Output::Value(Value::from(b"late".to_vec())))
        };
        q.start(false, POLYCACHE_OP_GET, std::ptr::null_mut(), work)
            .unwrap();
        drop(q);
        assert!(weak.upgrade().is_none(), "the queue outlived its handle");
        tx.send(()).unwrap();
        done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap();
    }
}
