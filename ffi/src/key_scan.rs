//! `polycache_key_scan`: the keys of a cache that match a glob pattern, read like a cursor,
//! and `polycache_cache_delete_pattern`.

use crate::cache::polycache_cache;
use crate::error::polycache_error;
use crate::handle::{self, borrow, out, text};
use crate::panic::{boundary, guard};
use crate::result::{polycache_result, POLYCACHE_RESULT_MISS, POLYCACHE_RESULT_OK};
use crate::value::polycache_value;
use polycache::KeyIter;
use std::ffi::c_char;
use std::sync::Mutex;

/// A scan of a cache's keys, from `polycache_cache_scan_keys`: each
/// `polycache_key_scan_next` hands out one key, reading `itersize` keys from the backend
/// when it needs more.
///
/// Threads: a scan may be used from any thread, one call at a time (concurrent calls wait
/// for each other). Lifetime: from `polycache_cache_scan_keys` until
/// `polycache_key_scan_free`; it keeps the cache's backend open, so it may outlive
/// `polycache_cache_free` of the cache it came from.
pub struct polycache_key_scan {
    keys: Mutex<KeyIter>,
}

/// Starts a scan of the keys of `cache` that match the glob `pattern`.
///
/// `pattern` is NUL-terminated UTF-8 in Redis' glob syntax (`*`, `?`, `[a-z]`, `[^a-z]`,
/// `\*`; `?` and a class match one byte), matched against the caller's keys: the cache's
/// key prefix and version are applied (escaped, so a prefix holding `*` matches only
/// itself) and taken off the keys handed out. Only live keys are returned; a key present
/// for the whole scan is returned (once on every backend but Redis, whose `SCAN` may repeat
/// a key). `itersize` is how many keys to ask the backend for at a time (1 to 1,000,000;
/// 0 gives `POLYCACHE_RESULT_INVALID_KEY`). On success `*scan_out` receives a new scan owned
/// by the caller, to be released with `polycache_key_scan_free`. A backend that cannot list
/// its keys (memcached) gives `POLYCACHE_RESULT_UNSUPPORTED`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_scan_keys(
    cache: *const polycache_cache,
    pattern: *const c_char,
    itersize: usize,
    scan_out: *mut *mut polycache_key_scan,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        let (cache, pattern, scan_out) = unsafe {
            (
                borrow(cache, "cache")?,
                text(pattern, "pattern")?,
                out(scan_out, "scan_out")?,
            )
        };
        let keys = cache.cache.iter_keys(pattern, None, itersize)?;
        scan_out.write(handle::into_raw(polycache_key_scan {
            keys: Mutex::new(keys),
        }));
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// The next key of `scan`.
///
/// Returns `POLYCACHE_RESULT_OK` and puts a new value owned by the caller in `*key_out`
/// (the key as UTF-8, not NUL-terminated: print it with `%.*s` and `polycache_value_len`),
/// to be released with `polycache_value_free`; or `POLYCACHE_RESULT_MISS`, leaving
/// `*key_out` untouched, when the scan is over. An error (the backend's) also ends the scan.
#[no_mangle]
pub unsafe extern "C" fn polycache_key_scan_next(
    scan: *const polycache_key_scan,
    key_out: *mut *mut polycache_value,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        let (scan, key_out) = unsafe { (borrow(scan, "scan")?, out(key_out, "key_out")?) };
        let next = scan.keys.lock().unwrap_or_else(|e| e.into_inner()).next();
        match next {
            Some(key) => {
                let key = key?.into_bytes();
                key_out.write(handle::into_raw(polycache_value::new(key.into())));
                Ok(POLYCACHE_RESULT_OK)
            }
            None => Ok(POLYCACHE_RESULT_MISS),
        }
    })
}

/// Frees a scan from `polycache_cache_scan_keys`, finished or not; NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn polycache_key_scan_free(scan: *mut polycache_key_scan) {
    guard((), || {
        // SAFETY: scan is NULL or a scan from polycache_cache_scan_keys, freed once (C API
        // contract).
        unsafe { handle::free(scan) }
    })
}

/// Removes every key of `cache` that matches the glob `pattern` (see
/// `polycache_cache_scan_keys`), `itersize` keys per scan page and per bulk delete.
///
/// On success `*deleted_out` receives how many keys it removed. NULL `deleted_out` gives
/// `POLYCACHE_RESULT_NULL_PARAMETER` and removes nothing.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_delete_pattern(
    cache: *const polycache_cache,
    pattern: *const c_char,
    itersize: usize,
    deleted_out: *mut usize,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        let (cache, pattern, deleted_out) = unsafe {
            (
                borrow(cache, "cache")?,
                text(pattern, "pattern")?,
                out(deleted_out, "deleted_out")?,
            )
        };
        deleted_out.write(cache.cache.delete_pattern(pattern, None, itersize)?);
        Ok(POLYCACHE_RESULT_OK)
    })
}
