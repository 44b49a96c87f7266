//! django-redis' lifetime operations on a `polycache_cache`: `ttl`, `persist`, `expire_at`,
//! `replace` (`set(xx=True)`) and `incr_or_create` (`incr(ignore_key_check=True)`), with
//! the non-blocking twins of `ttl` and `incr_or_create`.
//!
//! `expire`/`pexpire` are `polycache_cache_touch` (its `ttl_ms` of 0 or less removes the
//! key, as Redis' `EXPIRE` does).

use crate::cache::{expiry, polycache_cache, POLYCACHE_TTL_NEVER};
use crate::cache_start::start_keyed;
use crate::error::polycache_error;
use crate::handle::{borrow, bytes, out, text};
use crate::panic::boundary;
use crate::queue::{polycache_queue, Output, POLYCACHE_OP_INCR_OR_CREATE, POLYCACHE_OP_TTL};
use crate::result::{polycache_result, POLYCACHE_RESULT_MISS, POLYCACHE_RESULT_OK};
use polycache::TimeToLive;
use std::ffi::{c_char, c_void};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The C answer of a `ttl`: `None` for a missing key (`MISS`), else the milliseconds left
/// (at least 1) or `POLYCACHE_TTL_NEVER`.
pub(crate) fn ttl_ms(ttl: TimeToLive) -> Option<i64> {
    match ttl {
        TimeToLive::Forever => Some(POLYCACHE_TTL_NEVER),
        TimeToLive::Left(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000).max(1);
            Some(i64::try_from(ms).unwrap_or(i64::MAX))
        }
        _ => None,
    }
}

/// The time `unix_ms` milliseconds after the Unix epoch (the epoch itself for negatives).
pub(crate) fn at_unix_ms(unix_ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0))
}

/// How long `key` has left: `*ttl_ms_out` receives the milliseconds left (at least 1), or
/// `POLYCACHE_TTL_NEVER` for a key that never expires.
///
/// A missing (or expired) key gives `POLYCACHE_RESULT_MISS` and writes nothing: django-redis'
/// `ttl` answers 0 for it. A custom backend without a `ttl` callback gives
/// `POLYCACHE_RESULT_UNSUPPORTED`. memcached counts whole seconds.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_ttl(
    cache: *const polycache_cache,
    key: *const c_char,
    ttl_ms_out: *mut i64,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, key: text, ttl_ms_out: out);
        Ok(match ttl_ms(cache.cache.ttl(key)?) {
            Some(ms) => {
                ttl_ms_out.write(ms);
                POLYCACHE_RESULT_OK
            }
            None => POLYCACHE_RESULT_MISS,
        })
    })
}

/// Makes `key` never expire; `*persisted_out` receives true when the key was present.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_persist(
    cache: *const polycache_cache,
    key: *const c_char,
    persisted_out: *mut bool,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, key: text, persisted_out: out);
        persisted_out.write(cache.cache.persist(key)?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Makes `key` expire at `unix_ms` (milliseconds since the Unix epoch); a time that is not
/// in the future removes the key, as Redis' `PEXPIREAT` does. `*touched_out` receives true
/// when the key was present.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_expire_at(
    cache: *const polycache_cache,
    key: *const c_char,
    unix_ms: i64,
    touched_out: *mut bool,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, key: text, touched_out: out);
        touched_out.write(cache.cache.expire_at(key, at_unix_ms(unix_ms))?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Stores the `len` bytes at `value` under `key` only if the key is present (django-redis'
/// `set(..., xx=True)`, Redis' `SET XX`), atomically; `*stored_out` receives true when it
/// stored.
///
/// `ttl_ms` is as for `polycache_cache_set`; with an already-expired TTL the key is removed
/// and `*stored_out` says whether it was present, as django-redis does. A custom backend
/// without a `replace` callback gives `POLYCACHE_RESULT_UNSUPPORTED`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_replace(
    cache: *const polycache_cache,
    key: *const c_char,
    value: *const u8,
    len: usize,
    ttl_ms: i64,
    stored_out: *mut bool,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, key: text, value: bytes(len), stored_out: out);
        stored_out.write(cache.cache.replace(key, value, expiry(ttl_ms))?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Adds `delta` to the integer under `key`, creating a missing key at `delta` (from 0,
/// never expiring) instead of failing: django-redis' `incr(..., ignore_key_check=True)`.
/// `*value_out` receives the new value. Other errors as for `polycache_cache_incr`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_incr_or_create(
    cache: *const polycache_cache,
    key: *const c_char,
    delta: i64,
    value_out: *mut i64,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, key: text, value_out: out);
        value_out.write(cache.cache.incr_or_create(key, delta)?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Starts `polycache_cache_ttl(cache, key)` without blocking; its completion
/// (`POLYCACHE_OP_TTL`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK` with the milliseconds left (or `POLYCACHE_TTL_NEVER`)
/// in `integer`, `MISS` for a missing key, or an error with its `error`. Start codes,
/// inline completion and threads are as for `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_ttl_start(
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
                POLYCACHE_OP_TTL,
                user_data,
                |cache, key| async move {
                    Ok(match ttl_ms(cache.ttl_async(key.as_str()).await?) {
                        Some(ms) => Output::Integer(ms),
                        None => Output::Miss,
                    })
                },
            )
        }
    })
}

/// Starts `polycache_cache_incr_or_create(cache, key, delta)` without blocking; its
/// completion (`POLYCACHE_OP_INCR_OR_CREATE`) arrives on `queue` with `user_data`, with the
/// new value in `integer` as for `polycache_cache_incr_start`. Start codes, inline
/// completion and threads are as for `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_incr_or_create_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    key: *const c_char,
    delta: i64,
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
                POLYCACHE_OP_INCR_OR_CREATE,
                user_data,
                move |cache, key| async move {
                    Ok(Output::Integer(
                        cache.incr_or_create_async(key.as_str(), delta).await?,
                    ))
                },
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_reach_c_as_never_miss_or_at_least_one_ms() {
        assert_eq!(ttl_ms(TimeToLive::Forever), Some(POLYCACHE_TTL_NEVER));
        assert_eq!(ttl_ms(TimeToLive::Missing), None);
        assert_eq!(ttl_ms(TimeToLive::Left(Duration::from_nanos(1))), Some(1));
        assert_eq!(
            ttl_ms(TimeToLive::Left(Duration::from_secs(60))),
            Some(60_000)
        );
        assert_eq!(at_unix_ms(-5), UNIX_EPOCH);
        assert_eq!(at_unix_ms(1500), UNIX_EPOCH + Duration::from_millis(1500));
    }
}
