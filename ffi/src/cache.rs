//! `polycache_cache`: a cache opened from a URL, and every operation on it.

use crate::error::polycache_error;
use crate::handle::{self, borrow, bytes, bytes_list, out, out_array, out_bytes, text, text_list};
use crate::loader::polycache_loader;
use crate::panic::{boundary, guard};
use crate::result::{
    polycache_result, Failure, POLYCACHE_RESULT_MISS, POLYCACHE_RESULT_NOT_STORED,
    POLYCACHE_RESULT_OK,
};
use crate::stats::polycache_stats;
use crate::value::polycache_value;
use polycache::{Cache, Error, ErrorKind, Expiry};
use std::ffi::{c_char, c_void};
use std::time::Duration;

/// `ttl_ms` for "use the cache's default TTL" (the URL's `timeout` option, 300 s unless set).
pub const POLYCACHE_TTL_DEFAULT: i64 = -1;
/// `ttl_ms` for "never expire".
pub const POLYCACHE_TTL_NEVER: i64 = -2;

/// The core's expiry for a C `ttl_ms`: `POLYCACHE_TTL_DEFAULT`, `POLYCACHE_TTL_NEVER`, a
/// positive number of milliseconds, or anything else (0, other negatives) for "already
/// expired", as Django reads 0 and negative timeouts.
pub(crate) fn expiry(ttl_ms: i64) -> Expiry {
    match ttl_ms {
        POLYCACHE_TTL_DEFAULT => Expiry::Default,
        POLYCACHE_TTL_NEVER => Expiry::Never,
        ms if ms > 0 => Expiry::After(Duration::from_millis(ms.unsigned_abs())),
        _ => Expiry::Expired,
    }
}

/// A cache: a backend opened from a URL, with its key prefix, version, default TTL and
/// counters.
///
/// Threads: one handle may be shared by any number of threads, which may call every
/// function on it at the same time, except `polycache_cache_free`. Lifetime: from
/// `polycache_cache_open` until `polycache_cache_free`, which must come after every other
/// use of the handle; the values and errors it handed out stay valid after it is freed.
pub struct polycache_cache {
    pub(crate) cache: Cache,
}

impl polycache_cache {
    /// A handle to `cache` for C (clones share the backend and counters).
    pub(crate) fn new(cache: Cache) -> Self {
        polycache_cache { cache }
    }
}

/// Opens the cache at `url` (`"memory://"`, `"memory://?max_entries=10000"`, `"dummy://"`…).
///
/// Every URL also takes the options `key_prefix`, `version`, `timeout` (the default TTL in
/// seconds, or `none`) and `max_value_size` (bytes). On success `*cache_out` receives a new
/// cache owned by the caller, to be released with `polycache_cache_free`. A bad URL or option
/// gives `POLYCACHE_RESULT_CONFIGURATION` with a message naming the problem.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_open(
    url: *const c_char,
    cache_out: *mut *mut polycache_cache,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(url: text, cache_out: out);
        let cache = Cache::open(url)?;
        cache_out.write(handle::into_raw(polycache_cache { cache }));
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Creates the cache table of a `sqlite://` or `postgres://` URL if it does not exist yet.
///
/// The explicit twin of the creation on first use, like Django's `createcachetable`: a deploy
/// step for databases whose application user may not create tables. Idempotent. Accepts and
/// validates every option a cache URL takes. Returns `POLYCACHE_RESULT_OK`, or
/// `POLYCACHE_RESULT_CONFIGURATION` for a bad URL or a scheme without a table (`memory://`,
/// `redis://`, …), or the database's failure (connection, timeout, I/O). Nothing is handed
/// to the caller but the optional error.
#[no_mangle]
pub unsafe extern "C" fn polycache_create_table(
    url: *const c_char,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: url is NULL or valid for the call (the C API contract).
        let url = unsafe { text(url, "url")? };
        polycache::create_table(url)?;
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Frees a cache from `polycache_cache_open`; NULL does nothing.
///
/// Call it once, after every thread's last use of the handle. The entries of a named
/// `memory://NAME` store stay alive while another cache still has the store open.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_free(cache: *mut polycache_cache) {
    guard((), || {
        // SAFETY: cache is NULL or a cache from polycache_cache_open, freed once (C API contract).
        unsafe { handle::free(cache) }
    })
}

/// Reads the value under `key`.
///
/// Returns `POLYCACHE_RESULT_OK` and puts a new value owned by the caller in `*value_out`,
/// to be released with `polycache_value_free`; or `POLYCACHE_RESULT_MISS`, leaving
/// `*value_out` untouched, when the key is absent or expired.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_get(
    cache: *const polycache_cache,
    key: *const c_char,
    value_out: *mut *mut polycache_value,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, key: text, value_out: out);
        match cache.cache.get(key)? {
            Some(value) => {
                value_out.write(handle::into_raw(polycache_value::new(value)));
                Ok(POLYCACHE_RESULT_OK)
            }
            None => Ok(POLYCACHE_RESULT_MISS),
        }
    })
}

/// Reads the value under `key` into the caller's buffer `buf` of `cap` bytes.
///
/// Returns `POLYCACHE_RESULT_OK` with the value copied to `buf` and its length in
/// `*len_out`; `POLYCACHE_RESULT_MISS` when the key is absent; or
/// `POLYCACHE_RESULT_BUFFER_TOO_SMALL`, writing nothing, when the value is longer than
/// `cap` (the error message gives its length; `polycache_cache_get` reads a value of any
/// size). Nothing is allocated for the caller, so nothing needs freeing. `buf` may be NULL
/// only when `cap` is 0.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_get_into(
    cache: *const polycache_cache,
    key: *const c_char,
    buf: *mut u8,
    cap: usize,
    len_out: *mut usize,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, key: text, buf: out_bytes(cap), len_out: out);
        let Some(value) = cache.cache.get(key)? else {
            return Ok(POLYCACHE_RESULT_MISS);
        };
        if value.len() > buf.len() {
            return Err(Failure::BufferTooSmall {
                needed: value.len(),
                capacity: buf.len(),
            });
        }
        for (dst, &src) in buf.iter_mut().zip(value.iter()) {
            dst.write(src);
        }
        len_out.write(value.len());
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Stores the `len` bytes at `value` under `key` for `ttl_ms` milliseconds.
///
/// `ttl_ms` is `POLYCACHE_TTL_DEFAULT`, `POLYCACHE_TTL_NEVER`, or a positive number of
/// milliseconds; 0 or another negative number means already expired: nothing is stored and
/// any old value is removed. `value` may be NULL only when `len` is 0; the bytes are copied.
/// A value over the cache's `max_value_size` gives `POLYCACHE_RESULT_VALUE_TOO_LARGE` and
/// stores nothing. On a `fail_open` cache whose backend is unreachable the write is dropped
/// and the call returns `POLYCACHE_RESULT_NOT_STORED` (no error object: it is not raised).
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_set(
    cache: *const polycache_cache,
    key: *const c_char,
    value: *const u8,
    len: usize,
    ttl_ms: i64,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, key: text, value: bytes(len));
        Ok(if cache.cache.set(key, value, expiry(ttl_ms))? {
            POLYCACHE_RESULT_OK
        } else {
            POLYCACHE_RESULT_NOT_STORED
        })
    })
}

/// Stores the `len` bytes at `value` under `key` only if the key is absent.
///
/// `*stored_out` receives true when it stored, false when the key was present (the old
/// value is kept). `ttl_ms` is as for `polycache_cache_set`; with an already-expired TTL
/// nothing is stored and `*stored_out` says whether the key was absent, as Django does.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_add(
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
        stored_out.write(cache.cache.add(key, value, expiry(ttl_ms))?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Removes `key`; `*deleted_out` receives true when it was present.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_delete(
    cache: *const polycache_cache,
    key: *const c_char,
    deleted_out: *mut bool,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, key: text, deleted_out: out);
        deleted_out.write(cache.cache.delete(key)?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// `*present_out` receives true when `key` is present and not expired.
///
/// Not counted as a hit or a miss.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_has_key(
    cache: *const polycache_cache,
    key: *const c_char,
    present_out: *mut bool,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, key: text, present_out: out);
        present_out.write(cache.cache.has_key(key)?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Gives `key` a new TTL (`ttl_ms` as for `polycache_cache_set`; already expired removes
/// the key); `*touched_out` receives true when the key was present.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_touch(
    cache: *const polycache_cache,
    key: *const c_char,
    ttl_ms: i64,
    touched_out: *mut bool,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, key: text, touched_out: out);
        touched_out.write(cache.cache.touch(key, expiry(ttl_ms))?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Adds `delta` to the integer under `key`, atomically; `*value_out` receives the new value.
///
/// The value must be ASCII decimal (as `set` of `"41"` stores it). A missing key gives
/// `POLYCACHE_RESULT_NOT_FOUND` (it is not created, as in Django), a value that is not an
/// integer `POLYCACHE_RESULT_NOT_AN_INTEGER`, a result past the 64-bit range
/// `POLYCACHE_RESULT_OVERFLOW`. The entry keeps its TTL.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_incr(
    cache: *const polycache_cache,
    key: *const c_char,
    delta: i64,
    value_out: *mut i64,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, key: text, value_out: out);
        value_out.write(cache.cache.incr(key, delta)?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Subtracts `delta` from the integer under `key`; see `polycache_cache_incr`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_decr(
    cache: *const polycache_cache,
    key: *const c_char,
    delta: i64,
    value_out: *mut i64,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, key: text, value_out: out);
        value_out.write(cache.cache.decr(key, delta)?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Reads the `n` keys in `keys` with one bulk call to the backend.
///
/// `values_out` is the caller's array of `n` pointers. On `POLYCACHE_RESULT_OK` (also when
/// every key missed) `values_out[i]` receives a new value owned by the caller for each hit,
/// to be released with `polycache_value_free`, and NULL for each miss. On failure the array
/// is untouched. `keys` and `values_out` may be NULL only when `n` is 0.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_get_many(
    cache: *const polycache_cache,
    keys: *const *const c_char,
    n: usize,
    values_out: *mut *mut polycache_value,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, keys: text_list[n], values_out: out_array(n));
        let values = cache.cache.get_many(&keys, None)?;
        for (slot, value) in values_out.iter_mut().zip(values) {
            slot.write(value.map_or(std::ptr::null_mut(), |v| {
                handle::into_raw(polycache_value::new(v))
            }));
        }
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Stores `n` pairs with one TTL (`ttl_ms` as for `polycache_cache_set`), in one bulk call.
///
/// Pair `i` is the key `keys[i]` and the `lens[i]` bytes at `values[i]` (which may be NULL
/// only when `lens[i]` is 0); the bytes are copied. If any value is over `max_value_size`,
/// nothing is stored. If the backend stores only some pairs, the result is
/// `POLYCACHE_RESULT_BACKEND` with a message naming the keys not stored. The arrays may be
/// NULL only when `n` is 0.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_set_many(
    cache: *const polycache_cache,
    keys: *const *const c_char,
    values: *const *const u8,
    lens: *const usize,
    n: usize,
    ttl_ms: i64,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, keys: text_list[n], values: bytes_list[lens, n]);
        let items: Vec<(&str, &[u8])> = keys.into_iter().zip(values).collect();
        let failed = cache.cache.set_many(&items, expiry(ttl_ms), None)?;
        all_stored(&items, &failed)?;
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// `set_many`'s answer when the backend stored only some of `items` (`failed` holds the
/// indexes of the others): an error naming the keys not stored.
pub(crate) fn all_stored(items: &[(&str, &[u8])], failed: &[usize]) -> Result<(), Failure> {
    if failed.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = failed
        .iter()
        .filter_map(|&i| items.get(i).map(|(k, _)| *k))
        .collect();
    Err(Failure::Core(Error::new(
        ErrorKind::Backend,
        format!(
            "{} of {} pairs were not stored: {names:?}",
            failed.len(),
            items.len()
        ),
    )))
}

/// Removes the `n` keys in `keys`; `*deleted_out` receives how many were present.
///
/// `keys` may be NULL only when `n` is 0.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_delete_many(
    cache: *const polycache_cache,
    keys: *const *const c_char,
    n: usize,
    deleted_out: *mut usize,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, keys: text_list[n], deleted_out: out);
        deleted_out.write(cache.cache.delete_many(&keys, None)?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Removes this cache's entries: every key under its `key_prefix`, or everything in the
/// backend when the prefix is empty.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_clear(
    cache: *const polycache_cache,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: cache is NULL or valid for the call (the C API contract).
        let cache = unsafe { borrow(cache, "cache")? };
        cache.cache.clear()?;
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Copies the counters of `cache` into the caller's `*stats_out`.
///
/// Nothing is allocated; the struct belongs to the caller.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_stats(
    cache: *const polycache_cache,
    stats_out: *mut polycache_stats,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, stats_out: out);
        stats_out.write(cache.cache.stats().into());
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Reads `key`; on a miss, calls `loader` to compute the value, stores it for `ttl_ms` and
/// returns it. Concurrent callers that miss the same key share one `loader` call
/// (single-flight): one thread runs its loader while the others wait for its value.
///
/// `loader` is called on this thread with `user_data` (passed through untouched; polycache
/// never frees it), the key, and an output slot it fills with `polycache_loader_output_set`
/// (see `polycache_loader`). On `POLYCACHE_RESULT_OK`, `*value_out` receives a new value owned
/// by the caller, to be released with `polycache_value_free` (the cached value, or the one
/// just computed, here or by another thread). A loader that fails (any code but OK, or OK
/// without a value) makes the call return `POLYCACHE_RESULT_LOADER_FAILED`; nothing is
/// stored and the callers that were waiting retry with their own loader. The cache's URL
/// options `lease`, `lease_ttl`, `flight_timeout` and `xfetch_beta` apply (docs/refresh.md).
/// `ttl_ms` is as for `polycache_cache_set`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_get_or_set_with(
    cache: *const polycache_cache,
    key: *const c_char,
    loader: polycache_loader,
    user_data: *mut c_void,
    ttl_ms: i64,
    value_out: *mut *mut polycache_value,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        let (cache, name, value_out) = unsafe {
            (
                borrow(cache, "cache")?,
                text(key, "key")?,
                out(value_out, "value_out")?,
            )
        };
        let loader = loader.ok_or(Failure::NullParameter("loader"))?;
        // SAFETY: the caller promises that loader is a valid function taking these
        // arguments; key is the caller's NUL-terminated string, valid for the call.
        let value = unsafe {
            crate::tags::loaded_with_tags(cache, name, key, loader, user_data, ttl_ms, &[])
        }?;
        value_out.write(handle::into_raw(polycache_value::new(value)));
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Renders the counters of `cache` in the Prometheus text format, labelled `cache="<name>"`.
///
/// `name` is NUL-terminated UTF-8. On success `*text_out` receives a new value owned by the
/// caller, holding the UTF-8 text (not NUL-terminated: print it with `%.*s` and
/// `polycache_value_len`), to be released with `polycache_value_free`. The metric names are
/// the same as in Rust and Python: `polycache_hits_total`, `polycache_misses_total`, ...
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_stats_prometheus(
    cache: *const polycache_cache,
    name: *const c_char,
    text_out: *mut *mut polycache_value,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, name: text, text_out: out);
        let text = cache.cache.stats_prometheus(name).into_bytes();
        text_out.write(handle::into_raw(polycache_value::new(text.into())));
        Ok(POLYCACHE_RESULT_OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_ms_maps_like_django() {
        assert_eq!(expiry(POLYCACHE_TTL_DEFAULT), Expiry::Default);
        assert_eq!(expiry(POLYCACHE_TTL_NEVER), Expiry::Never);
        assert_eq!(expiry(0), Expiry::Expired);
        assert_eq!(expiry(-3), Expiry::Expired);
        assert_eq!(expiry(i64::MIN), Expiry::Expired);
        assert_eq!(expiry(1500), Expiry::After(Duration::from_millis(1500)));
        assert_eq!(
            expiry(i64::MAX),
            Expiry::After(Duration::from_millis(i64::MAX as u64))
        );
    }
}
