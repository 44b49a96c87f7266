//! `polycache_lock`: a lock named in a cache, with redis-py's semantics, from C, with the
//! non-blocking twins of acquire, release, extend and reacquire (`polycache_lock_<verb>_start`).

use crate::cache::{polycache_cache, POLYCACHE_TTL_NEVER};
use crate::error::polycache_error;
use crate::handle::{self, borrow, bytes, out, text};
use crate::panic::{boundary, guard};
use crate::queue::{
    polycache_op, polycache_queue, Output, POLYCACHE_OP_LOCK_ACQUIRE, POLYCACHE_OP_LOCK_EXTEND,
    POLYCACHE_OP_LOCK_REACQUIRE, POLYCACHE_OP_LOCK_RELEASE,
};
use crate::result::{polycache_result, Failure, POLYCACHE_RESULT_OK};
use polycache::{Error, ErrorKind, Lock, LockOptions};
use std::ffi::c_void;
use std::future::Future;
use std::time::Duration;

/// A lock named in a cache, shared by every thread, process and machine using the same
/// store. The caller names each owner with a token of its own (e.g. random bytes) and
/// passes it to every call; an owner that dies leaves the lock to lapse after its timeout.
///
/// Threads: one handle may be used by any number of threads at the same time, except
/// `polycache_lock_free`. Lifetime: from `polycache_lock_new` until `polycache_lock_free`;
/// it keeps its cache alive. Freeing it does not release the lock.
pub struct polycache_lock {
    lock: Lock,
    /// The cache answers in memory: a try completes during a start call.
    inline: bool,
}

fn bad_ms(name: &str, ms: i64, allowed: &str) -> Failure {
    Failure::Core(Error::new(
        ErrorKind::Configuration,
        format!("{name} must be {allowed}, not {ms}"),
    ))
}

/// `POLYCACHE_TTL_NEVER` as `None`, else a duration of at least `min` milliseconds.
fn ms_or_never(name: &str, ms: i64, min: i64, allowed: &str) -> Result<Option<Duration>, Failure> {
    match ms {
        POLYCACHE_TTL_NEVER => Ok(None),
        ms if ms >= min => Ok(Some(Duration::from_millis(ms.unsigned_abs()))),
        ms => Err(bad_ms(name, ms, allowed)),
    }
}

/// Opens the lock `name` of `cache` (stored under the cache's key for `name`: prefix and
/// version applied) that lives `timeout_ms` milliseconds once acquired (positive), or until
/// released (`POLYCACHE_TTL_NEVER`).
///
/// On success `*lock_out` receives a new lock owned by the caller, to be released with
/// `polycache_lock_free`. Another `timeout_ms` gives `POLYCACHE_RESULT_CONFIGURATION`.
#[no_mangle]
pub unsafe extern "C" fn polycache_lock_new(
    cache: *const polycache_cache,
    name: *const std::ffi::c_char,
    timeout_ms: i64,
    lock_out: *mut *mut polycache_lock,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, name: text, lock_out: out);
        let allowed = "POLYCACHE_TTL_NEVER or a positive number of milliseconds";
        let timeout = ms_or_never("timeout_ms", timeout_ms, 1, allowed)?;
        let lock = cache
            .cache
            .lock(name, LockOptions::default().timeout(timeout))?;
        let inline = cache.cache.completes_inline();
        lock_out.write(handle::into_raw(polycache_lock { lock, inline }));
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Frees a lock handle; NULL does nothing. A lock it holds stays held.
#[no_mangle]
pub unsafe extern "C" fn polycache_lock_free(lock: *mut polycache_lock) {
    guard((), || {
        // SAFETY: lock is NULL or a lock from polycache_lock_new, freed once (C API contract).
        unsafe { handle::free(lock) }
    })
}

/// Takes the lock for the owner `token` (`token_len` bytes, copied; not empty).
///
/// Without `blocking` it tries once. With it, it tries every `sleep_ms` milliseconds (at
/// least 0) until it holds the lock or the next try would come after `blocking_timeout_ms`
/// (at least 0, or `POLYCACHE_TTL_NEVER` to wait for ever). `*acquired_out` receives true
/// once the lock is held, false when it gave up. Blocks the calling thread while it waits.
#[no_mangle]
pub unsafe extern "C" fn polycache_lock_acquire(
    lock: *const polycache_lock,
    token: *const u8,
    token_len: usize,
    blocking: bool,
    blocking_timeout_ms: i64,
    sleep_ms: i64,
    acquired_out: *mut bool,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(lock: borrow, token: owner(token_len), acquired_out: out);
        let wait = wait_options(blocking, blocking_timeout_ms, sleep_ms)?;
        acquired_out.write(lock.lock.acquire_token(token, &wait)?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// How an acquire waits, from its C arguments.
fn wait_options(
    blocking: bool,
    blocking_timeout_ms: i64,
    sleep_ms: i64,
) -> Result<LockOptions, Failure> {
    let allowed = "POLYCACHE_TTL_NEVER or at least 0 milliseconds";
    let deadline = ms_or_never("blocking_timeout_ms", blocking_timeout_ms, 0, allowed)?;
    let sleep = u64::try_from(sleep_ms)
        .map_err(|_| bad_ms("sleep_ms", sleep_ms, "at least 0 milliseconds"))?;
    Ok(LockOptions::default()
        .blocking(blocking)
        .blocking_timeout(deadline)
        .sleep(Duration::from_millis(sleep)))
}

/// The owner token of a call: not empty (an empty token would name no owner).
///
/// # Safety
/// As [`bytes`].
unsafe fn owner<'a>(token: *const u8, len: usize, name: &'static str) -> Result<&'a [u8], Failure> {
    // SAFETY: by this function's contract.
    let token = unsafe { bytes(token, len, name)? };
    check_owner(token)
}

/// `token` when it is not empty.
fn check_owner(token: &[u8]) -> Result<&[u8], Failure> {
    if token.is_empty() {
        return Err(Failure::Core(Error::new(
            ErrorKind::Configuration,
            "a lock token must not be empty",
        )));
    }
    Ok(token)
}

/// Releases the lock held by `token`. `POLYCACHE_RESULT_LOCK_NOT_OWNED`, with the lock
/// untouched, when `token` does not hold it (it lapsed, and perhaps another owner took it).
#[no_mangle]
pub unsafe extern "C" fn polycache_lock_release(
    lock: *const polycache_lock,
    token: *const u8,
    token_len: usize,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(lock: borrow, token: owner(token_len));
        lock.lock.release_token(token)?;
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Adds `additional_ms` milliseconds (at least 0) to the remaining lifetime of the lock
/// held by `token`, or with `replace_ttl` makes them its remaining lifetime.
///
/// `POLYCACHE_RESULT_LOCK` for a lock without a timeout; `POLYCACHE_RESULT_LOCK_NOT_OWNED`
/// (the lock untouched) when `token` does not hold it; `POLYCACHE_RESULT_UNSUPPORTED` on a
/// custom backend without an atomic compare-and-extend.
#[no_mangle]
pub unsafe extern "C" fn polycache_lock_extend(
    lock: *const polycache_lock,
    token: *const u8,
    token_len: usize,
    additional_ms: i64,
    replace_ttl: bool,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(lock: borrow, token: owner(token_len));
        let more = additional(additional_ms)?;
        lock.lock.extend_token(token, more, replace_ttl)?;
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Resets the remaining lifetime of the lock held by `token` to the lock's timeout; the
/// errors of `polycache_lock_extend`.
#[no_mangle]
pub unsafe extern "C" fn polycache_lock_reacquire(
    lock: *const polycache_lock,
    token: *const u8,
    token_len: usize,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(lock: borrow, token: owner(token_len));
        lock.lock.reacquire_token(token)?;
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// `*locked_out` receives true when any owner holds the lock.
#[no_mangle]
pub unsafe extern "C" fn polycache_lock_locked(
    lock: *const polycache_lock,
    locked_out: *mut bool,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(lock: borrow, locked_out: out);
        locked_out.write(lock.lock.locked()?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// `*owned_out` receives true when `token` holds the lock.
#[no_mangle]
pub unsafe extern "C" fn polycache_lock_owned(
    lock: *const polycache_lock,
    token: *const u8,
    token_len: usize,
    owned_out: *mut bool,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(lock: borrow, token: owner(token_len), owned_out: out);
        owned_out.write(lock.lock.owned_by(token)?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// The `additional_ms` of an extend: at least 0.
fn additional(additional_ms: i64) -> Result<Duration, Failure> {
    u64::try_from(additional_ms)
        .map(Duration::from_millis)
        .map_err(|_| bad_ms("additional_ms", additional_ms, "at least 0 milliseconds"))
}

/// The start of a lock operation: checks the handles and copies the token (`token`,
/// `token_len`); `work` gets the lock and the token, which the operation refuses when empty
/// (`CONFIGURATION`) before `work` runs. Completes inline when the cache does and `inline`.
///
/// # Safety
/// Each pointer is NULL or valid for the call (the C API contract).
unsafe fn start_lock<F, Fut>(
    lock: *const polycache_lock,
    queue: *const polycache_queue,
    (token, token_len): (*const u8, usize),
    inline: bool,
    op: polycache_op,
    user_data: *mut c_void,
    work: F,
) -> Result<polycache_result, Failure>
where
    F: FnOnce(Lock, Vec<u8>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Output, Failure>> + Send,
{
    // SAFETY: by this function's contract.
    let (handle, queue, token) = unsafe {
        (
            borrow(lock, "lock")?,
            borrow(queue, "queue")?,
            bytes(token, token_len, "token")?.to_vec(),
        )
    };
    let lock = handle.lock.clone();
    queue.start(handle.inline && inline, op, user_data, async move {
        check_owner(&token)?;
        work(lock, token).await
    })
}

/// Starts `polycache_lock_acquire(lock, token, token_len, blocking, blocking_timeout_ms,
/// sleep_ms)` without blocking; its completion (`POLYCACHE_OP_LOCK_ACQUIRE`) arrives on
/// `queue` with `user_data`.
///
/// The completion's `result` is `OK` with `integer` 1 once the lock is held for `token`, 0
/// when it gave up (held by another owner: at once without `blocking`, else when the next
/// try would come after `blocking_timeout_ms`); or an error with its `error`
/// (`CONFIGURATION` for an empty token or a bad number of milliseconds, `CONNECTION`, …).
/// A blocking acquire waits between tries on polycache's runtime timer: no thread is held
/// while it waits, and its completion comes from the runtime even on memory://. The token
/// is copied. Start codes, inline completion (a non-blocking acquire on memory://) and
/// threads are as for `polycache_cache_get_start`; the operation keeps the lock's cache
/// alive, so `lock` may be freed while it is in flight.
#[no_mangle]
pub unsafe extern "C" fn polycache_lock_acquire_start(
    lock: *const polycache_lock,
    queue: *const polycache_queue,
    token: *const u8,
    token_len: usize,
    blocking: bool,
    blocking_timeout_ms: i64,
    sleep_ms: i64,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        let wait = wait_options(blocking, blocking_timeout_ms, sleep_ms);
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        unsafe {
            start_lock(
                lock,
                queue,
                (token, token_len),
                !blocking,
                POLYCACHE_OP_LOCK_ACQUIRE,
                user_data,
                |lock, token| async move {
                    let wait = wait?;
                    Ok(Output::Flag(lock.acquire_token_async(&token, &wait).await?))
                },
            )
        }
    })
}

/// Starts `polycache_lock_release(lock, token, token_len)` without blocking; its
/// completion (`POLYCACHE_OP_LOCK_RELEASE`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK` once released, `LOCK_NOT_OWNED` (the lock untouched)
/// when `token` does not hold it, or another error, each with its `error`. Start codes,
/// inline completion, threads and lifetime are as for `polycache_lock_acquire_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_lock_release_start(
    lock: *const polycache_lock,
    queue: *const polycache_queue,
    token: *const u8,
    token_len: usize,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        unsafe {
            start_lock(
                lock,
                queue,
                (token, token_len),
                true,
                POLYCACHE_OP_LOCK_RELEASE,
                user_data,
                |lock, token| async move {
                    lock.release_token_async(&token).await?;
                    Ok(Output::Done)
                },
            )
        }
    })
}

/// Starts `polycache_lock_extend(lock, token, token_len, additional_ms, replace_ttl)`
/// without blocking; its completion (`POLYCACHE_OP_LOCK_EXTEND`) arrives on `queue` with
/// `user_data`.
///
/// The completion's `result` is `OK` once extended, or the blocking call's errors (`LOCK`
/// for a lock without a timeout, `LOCK_NOT_OWNED`, `CONFIGURATION` for a negative
/// `additional_ms`, `UNSUPPORTED`, …) with their `error`. Start codes, inline completion,
/// threads and lifetime are as for `polycache_lock_acquire_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_lock_extend_start(
    lock: *const polycache_lock,
    queue: *const polycache_queue,
    token: *const u8,
    token_len: usize,
    additional_ms: i64,
    replace_ttl: bool,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        unsafe {
            start_lock(
                lock,
                queue,
                (token, token_len),
                true,
                POLYCACHE_OP_LOCK_EXTEND,
                user_data,
                move |lock, token| async move {
                    let more = additional(additional_ms)?;
                    lock.extend_token_async(&token, more, replace_ttl).await?;
                    Ok(Output::Done)
                },
            )
        }
    })
}

/// Starts `polycache_lock_reacquire(lock, token, token_len)` without blocking; its
/// completion (`POLYCACHE_OP_LOCK_REACQUIRE`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK` once the lock's remaining lifetime is its timeout
/// again, or the errors of `polycache_lock_extend_start`. Start codes, inline completion,
/// threads and lifetime are as for `polycache_lock_acquire_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_lock_reacquire_start(
    lock: *const polycache_lock,
    queue: *const polycache_queue,
    token: *const u8,
    token_len: usize,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        unsafe {
            start_lock(
                lock,
                queue,
                (token, token_len),
                true,
                POLYCACHE_OP_LOCK_REACQUIRE,
                user_data,
                |lock, token| async move {
                    lock.reacquire_token_async(&token).await?;
                    Ok(Output::Done)
                },
            )
        }
    })
}
