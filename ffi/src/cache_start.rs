//! The non-blocking twins of `polycache_cache`'s operations, `polycache_cache_<op>_start`:
//! each returns at once and delivers its outcome to a `polycache_queue`.
//!
//! A start call checks its arguments and copies what it needs (keys, value bytes), so the
//! caller's memory is free again when it returns, except a `get_many`'s output array. What
//! the blocking twin would return (a miss, an invalid key, a value too large, a dead server)
//! arrives as the completion's `result`; the start call itself fails only for NULL or
//! non-UTF-8 arguments, or when polycache's runtime cannot start, and then no completion
//! follows.

use crate::cache::{all_stored, expiry, polycache_cache};
use crate::cache_lifetime::at_unix_ms;
use crate::error::polycache_error;
use crate::handle::{borrow, bytes, bytes_list, later_out, text, text_list};
use crate::panic::boundary;
use crate::queue::{
    polycache_op, polycache_queue, Output, POLYCACHE_OP_DELETE, POLYCACHE_OP_GET,
    POLYCACHE_OP_GET_MANY, POLYCACHE_OP_INCR, POLYCACHE_OP_SET, POLYCACHE_OP_SET_MANY,
};
use crate::queue::{
    POLYCACHE_OP_ADD, POLYCACHE_OP_CLEAR, POLYCACHE_OP_DELETE_MANY, POLYCACHE_OP_EXPIRE_AT,
    POLYCACHE_OP_HAS_KEY, POLYCACHE_OP_PERSIST, POLYCACHE_OP_REPLACE, POLYCACHE_OP_TOUCH,
};
use crate::result::{polycache_result, Failure};
use crate::value::polycache_value;
use polycache::Cache;
use std::ffi::{c_char, c_void};
use std::future::Future;

/// The cache (a clone: the operation keeps the backend alive) and the queue of a start call.
///
/// # Safety
/// Each pointer is NULL or valid for the call (the C API contract).
pub(crate) unsafe fn handles<'a>(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
) -> Result<(Cache, &'a polycache_queue), Failure> {
    // SAFETY: by this function's contract.
    let (cache, queue) = unsafe { (borrow(cache, "cache")?, borrow(queue, "queue")?) };
    Ok((cache.cache.clone(), queue))
}

/// The start of a one-key operation: checks the handles and the key, then starts what
/// `work` makes of the cache and an owned copy of the key.
///
/// # Safety
/// Each pointer is NULL or valid for the call (the C API contract).
pub(crate) unsafe fn start_keyed<F, Fut>(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    key: *const c_char,
    op: polycache_op,
    user_data: *mut c_void,
    work: F,
) -> Result<polycache_result, Failure>
where
    F: FnOnce(Cache, String) -> Fut,
    Fut: Future<Output = Result<Output, Failure>> + Send + 'static,
{
    // SAFETY: by this function's contract.
    let ((cache, queue), key) = unsafe { (handles(cache, queue)?, text(key, "key")?) };
    let inline = cache.completes_inline();
    queue.start(inline, op, user_data, work(cache, key.to_owned()))
}

/// The start of an operation on a list of `n` texts (keys, tags): checks the handles and
/// the list (`names`: the list's and an element's names in errors), then starts what `work`
/// makes of the cache and an owned copy of the list.
///
/// # Safety
/// Each pointer is NULL or valid for the call (the C API contract).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn start_listed<F, Fut>(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    list: *const *const c_char,
    n: usize,
    names: (&'static str, &'static str),
    op: polycache_op,
    user_data: *mut c_void,
    work: F,
) -> Result<polycache_result, Failure>
where
    F: FnOnce(Cache, Vec<String>) -> Fut,
    Fut: Future<Output = Result<Output, Failure>> + Send + 'static,
{
    // SAFETY: by this function's contract.
    let ((cache, queue), list) = unsafe {
        (
            handles(cache, queue)?,
            text_list(list, n, names.0, names.1)?,
        )
    };
    let inline = cache.completes_inline();
    queue.start(inline, op, user_data, work(cache, owned(list)))
}

/// Owned copies of `texts`, for an operation that outlives its call.
pub(crate) fn owned(texts: Vec<&str>) -> Vec<String> {
    texts.into_iter().map(str::to_owned).collect()
}

/// The texts of `owned` as the core's many-key operations take them.
pub(crate) fn texts(owned: &[String]) -> Vec<&str> {
    owned.iter().map(String::as_str).collect()
}

/// Starts `polycache_cache_get(cache, key)` without blocking; its completion
/// (`POLYCACHE_OP_GET`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK` with a new `value` owned by the caller (free it with
/// `polycache_value_free`), `MISS`, or an error with its `error`. The key is copied.
/// Returns `OK` when the operation started: exactly one completion follows, unless the
/// queue is freed first. On `memory://` and `dummy://` the operation completes during this
/// call, and its completion is already queued when it returns. Any other code: nothing
/// started, no completion follows.
///
/// Threads: `cache` and `queue` may be used by other threads at the same time; the
/// operation outlives `polycache_cache_free(cache)` (it keeps the backend open until it
/// finishes).
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_get_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    key: *const c_char,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        unsafe {
            start_keyed(
                cache,
                queue,
                key,
                POLYCACHE_OP_GET,
                user_data,
                |cache, key| async move {
                    Ok(match cache.get_async(key.as_str()).await? {
                        Some(value) => Output::Value(value),
                        None => Output::Miss,
                    })
                },
            )
        }
    })
}

/// Starts `polycache_cache_set(cache, key, value, len, ttl_ms)` without blocking; its
/// completion (`POLYCACHE_OP_SET`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK`, `NOT_STORED` (a `fail_open` cache whose backend is
/// unreachable dropped the write), or an error (`VALUE_TOO_LARGE`, `CONNECTION`, …) with its
/// `error`. The key and the `len` bytes are copied; `value` may be NULL only when `len` is
/// 0. Start codes, inline completion and threads are as for `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_set_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    key: *const c_char,
    value: *const u8,
    len: usize,
    ttl_ms: i64,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        let value = unsafe { bytes(value, len, "value")? }.to_vec();
        // SAFETY: as above.
        unsafe {
            start_keyed(
                cache,
                queue,
                key,
                POLYCACHE_OP_SET,
                user_data,
                |cache, key| async move {
                    let stored = cache
                        .set_async(key.as_str(), &value, expiry(ttl_ms))
                        .await?;
                    Ok(Output::Stored(stored))
                },
            )
        }
    })
}

/// Starts `polycache_cache_delete(cache, key)` without blocking; its completion
/// (`POLYCACHE_OP_DELETE`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK` with `deleted` true when the key was present, or an
/// error with its `error`. Start codes, inline completion and threads are as for
/// `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_delete_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    key: *const c_char,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        unsafe {
            start_keyed(
                cache,
                queue,
                key,
                POLYCACHE_OP_DELETE,
                user_data,
                |cache, key| async move { Ok(Output::Deleted(cache.delete_async(key.as_str()).await?)) },
            )
        }
    })
}

/// Starts `polycache_cache_incr(cache, key, delta)` without blocking; its completion
/// (`POLYCACHE_OP_INCR`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK` with the new value in `integer`, or an error
/// (`NOT_FOUND`, `NOT_AN_INTEGER`, `OVERFLOW`, `CONNECTION`, …) with its `error`. A
/// negative `delta` decrements. Start codes, inline completion and threads are as for
/// `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_incr_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    key: *const c_char,
    delta: i64,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        let ((cache, queue), key) = unsafe { (handles(cache, queue)?, text(key, "key")?) };
        let key = key.to_owned();
        let inline = cache.completes_inline();
        queue.start(inline, POLYCACHE_OP_INCR, user_data, async move {
            Ok(Output::Integer(
                cache.incr_async(key.as_str(), delta).await?,
            ))
        })
    })
}

/// Starts `polycache_cache_get_many(cache, keys, n, values_out)` without blocking (one
/// bulk call to the backend); its completion (`POLYCACHE_OP_GET_MANY`) arrives on `queue`
/// with `user_data`.
///
/// `values_out` is the caller's array of `n` pointers. It must stay valid, and the caller
/// must not access it, until this operation's completion is drained (or the queue is
/// freed): polycache writes it only inside the `polycache_queue_drain` call that hands out
/// the completion, and only when its `result` is `OK` — then `values_out[i]` receives a new
/// value owned by the caller for each hit (free it with `polycache_value_free`) and NULL for
/// each miss. On an error the array is untouched. The keys are copied. `keys` and
/// `values_out` may be NULL only when `n` is 0. Start codes, inline completion and threads
/// are as for `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_get_many_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    keys: *const *const c_char,
    n: usize,
    values_out: *mut *mut polycache_value,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        let ((cache, queue), keys) = unsafe {
            (
                handles(cache, queue)?,
                text_list(keys, n, "keys", "keys[i]")?,
            )
        };
        let values_out = later_out(values_out, n, "values_out")?;
        let keys = owned(keys);
        let inline = cache.completes_inline();
        queue.start(inline, POLYCACHE_OP_GET_MANY, user_data, async move {
            let values = cache.get_many_async(&texts(&keys), None).await?;
            Ok(Output::Values(values, values_out))
        })
    })
}

/// Starts `polycache_cache_set_many(cache, keys, values, lens, n, ttl_ms)` without blocking
/// (one bulk call to the backend); its completion (`POLYCACHE_OP_SET_MANY`) arrives on
/// `queue` with `user_data`.
///
/// The completion's `result` is `OK`, or an error with its `error`: `VALUE_TOO_LARGE` when
/// any value is over `max_value_size` (nothing stored), `BACKEND` naming the keys not
/// stored when the backend stored only some. Keys and bytes are copied; the arrays may be
/// NULL only when `n` is 0. Start codes, inline completion and threads are as for
/// `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_set_many_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    keys: *const *const c_char,
    values: *const *const u8,
    lens: *const usize,
    n: usize,
    ttl_ms: i64,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        let ((cache, queue), keys, values) = unsafe {
            (
                handles(cache, queue)?,
                text_list(keys, n, "keys", "keys[i]")?,
                bytes_list(values, lens, n, "values", "values[i]")?,
            )
        };
        let owned: Vec<(String, Vec<u8>)> = keys
            .into_iter()
            .zip(values)
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect();
        let inline = cache.completes_inline();
        queue.start(inline, POLYCACHE_OP_SET_MANY, user_data, async move {
            let items: Vec<(&str, &[u8])> = owned
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            let failed = cache.set_many_async(&items, expiry(ttl_ms), None).await?;
            all_stored(&items, &failed)?;
            Ok(Output::Done)
        })
    })
}

/// The start of a one-key operation whose answer is yes or no (`add`, `touch`, …): its
/// completion carries it in `integer` as 1 or 0.
///
/// # Safety
/// Each pointer is NULL or valid for the call (the C API contract).
unsafe fn start_flag<F, Fut>(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    key: *const c_char,
    op: polycache_op,
    user_data: *mut c_void,
    work: F,
) -> Result<polycache_result, Failure>
where
    F: FnOnce(Cache, String) -> Fut,
    Fut: Future<Output = polycache::Result<bool>> + Send + 'static,
{
    // SAFETY: by this function's contract.
    unsafe {
        start_keyed(cache, queue, key, op, user_data, |cache, key| {
            let answer = work(cache, key);
            async move { Ok(Output::Flag(answer.await?)) }
        })
    }
}

/// Starts `polycache_cache_add(cache, key, value, len, ttl_ms)` without blocking; its
/// completion (`POLYCACHE_OP_ADD`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK` with `integer` 1 when it stored, 0 when the key was
/// present (the old value kept), or an error (`VALUE_TOO_LARGE`, `CONNECTION`, …) with its
/// `error`. The key and the `len` bytes are copied; `value` may be NULL only when `len` is
/// 0. Start codes, inline completion and threads are as for `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_add_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    key: *const c_char,
    value: *const u8,
    len: usize,
    ttl_ms: i64,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        let value = unsafe { bytes(value, len, "value")? }.to_vec();
        // SAFETY: as above.
        unsafe {
            start_flag(
                cache,
                queue,
                key,
                POLYCACHE_OP_ADD,
                user_data,
                |cache, key| async move { cache.add_async(key.as_str(), &value, expiry(ttl_ms)).await },
            )
        }
    })
}

/// Starts `polycache_cache_touch(cache, key, ttl_ms)` without blocking; its completion
/// (`POLYCACHE_OP_TOUCH`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK` with `integer` 1 when the key was present (it has the
/// new TTL, or is removed by an already-expired one), 0 when it was not, or an error with
/// its `error`. Start codes, inline completion and threads are as for
/// `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_touch_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    key: *const c_char,
    ttl_ms: i64,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        unsafe {
            start_flag(
                cache,
                queue,
                key,
                POLYCACHE_OP_TOUCH,
                user_data,
                move |cache, key| async move { cache.touch_async(key.as_str(), expiry(ttl_ms)).await },
            )
        }
    })
}

/// Starts `polycache_cache_has_key(cache, key)` without blocking; its completion
/// (`POLYCACHE_OP_HAS_KEY`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK` with `integer` 1 when the key is present and not
/// expired, 0 when it is not, or an error with its `error`. Not counted as a hit or a
/// miss. Start codes, inline completion and threads are as for `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_has_key_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    key: *const c_char,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        unsafe {
            start_flag(
                cache,
                queue,
                key,
                POLYCACHE_OP_HAS_KEY,
                user_data,
                |cache, key| async move { cache.has_key_async(key.as_str()).await },
            )
        }
    })
}

/// Starts `polycache_cache_replace(cache, key, value, len, ttl_ms)` without blocking; its
/// completion (`POLYCACHE_OP_REPLACE`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK` with `integer` 1 when it stored (the key was present),
/// 0 when the key was absent (nothing stored), or an error (`VALUE_TOO_LARGE`,
/// `UNSUPPORTED`, …) with its `error`. The key and the `len` bytes are copied; `value` may
/// be NULL only when `len` is 0. Start codes, inline completion and threads are as for
/// `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_replace_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    key: *const c_char,
    value: *const u8,
    len: usize,
    ttl_ms: i64,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        let value = unsafe { bytes(value, len, "value")? }.to_vec();
        // SAFETY: as above.
        unsafe {
            start_flag(
                cache,
                queue,
                key,
                POLYCACHE_OP_REPLACE,
                user_data,
                |cache, key| async move {
                    cache
                        .replace_async(key.as_str(), &value, expiry(ttl_ms))
                        .await
                },
            )
        }
    })
}

/// Starts `polycache_cache_persist(cache, key)` without blocking; its completion
/// (`POLYCACHE_OP_PERSIST`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK` with `integer` 1 when the key was present (it now
/// never expires), 0 when it was not, or an error with its `error`. Start codes, inline
/// completion and threads are as for `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_persist_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    key: *const c_char,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        unsafe {
            start_flag(
                cache,
                queue,
                key,
                POLYCACHE_OP_PERSIST,
                user_data,
                |cache, key| async move { cache.persist_async(key.as_str()).await },
            )
        }
    })
}

/// Starts `polycache_cache_expire_at(cache, key, unix_ms)` without blocking; its
/// completion (`POLYCACHE_OP_EXPIRE_AT`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK` with `integer` 1 when the key was present (a time not
/// in the future removed it), 0 when it was not, or an error with its `error`. Start
/// codes, inline completion and threads are as for `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_expire_at_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    key: *const c_char,
    unix_ms: i64,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        let when = at_unix_ms(unix_ms);
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        unsafe {
            start_flag(
                cache,
                queue,
                key,
                POLYCACHE_OP_EXPIRE_AT,
                user_data,
                move |cache, key| async move { cache.expire_at_async(key.as_str(), when).await },
            )
        }
    })
}

/// Starts `polycache_cache_delete_many(cache, keys, n)` without blocking (one bulk call to
/// the backend); its completion (`POLYCACHE_OP_DELETE_MANY`) arrives on `queue` with
/// `user_data`.
///
/// The completion's `result` is `OK` with how many keys were present in `integer`, or an
/// error with its `error`. The keys are copied; `keys` may be NULL only when `n` is 0.
/// Start codes, inline completion and threads are as for `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_delete_many_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    keys: *const *const c_char,
    n: usize,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        unsafe {
            start_listed(
                cache,
                queue,
                keys,
                n,
                ("keys", "keys[i]"),
                POLYCACHE_OP_DELETE_MANY,
                user_data,
                |cache, keys| async move {
                    let removed = cache.delete_many_async(&texts(&keys), None).await?;
                    Ok(Output::Integer(count(removed)))
                },
            )
        }
    })
}

/// A count of keys as the completion's `integer`.
pub(crate) fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Starts `polycache_cache_clear(cache)` without blocking; its completion
/// (`POLYCACHE_OP_CLEAR`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK` once this cache's entries are removed (every key under
/// its `key_prefix`, or everything in the backend when the prefix is empty), or an error
/// with its `error`. Start codes, inline completion and threads are as for
/// `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_clear_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        let (cache, queue) = unsafe { handles(cache, queue)? };
        let inline = cache.completes_inline();
        queue.start(inline, POLYCACHE_OP_CLEAR, user_data, async move {
            cache.clear_async().await?;
            Ok(Output::Done)
        })
    })
}
