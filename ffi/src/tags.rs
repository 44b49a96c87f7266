//! Tags on a `polycache_cache`: tagged writes and `polycache_cache_invalidate_tags`.

use crate::cache::{expiry, polycache_cache};
use crate::cache_start::{owned, start_keyed, start_listed, texts};
use crate::error::polycache_error;
use crate::handle::{borrow, bytes, text, text_list};
use crate::panic::boundary;
use crate::queue::{
    polycache_queue, Output, POLYCACHE_OP_INVALIDATE_TAGS, POLYCACHE_OP_SET_TAGGED,
};
use crate::result::{polycache_result, POLYCACHE_RESULT_NOT_STORED, POLYCACHE_RESULT_OK};
use std::ffi::{c_char, c_void};

use crate::handle::{self, out};
use crate::loader::{call_loader, polycache_loader};
use crate::result::Failure;
use crate::value::polycache_value;

/// Stores the `len` bytes at `value` under `key`, carrying the `n_tags` tags in `tags`:
/// `polycache_cache_invalidate_tags` of any of them makes the entry a miss.
///
/// The tags' current versions are read now (one extra round trip). `ttl_ms` is as for
/// `polycache_cache_set`. A tag must be non-empty, at most 200 bytes, and an entry carries at
/// most 64 (`POLYCACHE_RESULT_INVALID_KEY` otherwise, nothing stored); `n_tags` 0 is a plain
/// `polycache_cache_set`. `tags` may be NULL only when `n_tags` is 0. Answers
/// `POLYCACHE_RESULT_NOT_STORED` only when the cache fails open and the backend was
/// unreachable.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_set_tagged(
    cache: *const polycache_cache,
    key: *const c_char,
    value: *const u8,
    len: usize,
    ttl_ms: i64,
    tags: *const *const c_char,
    n_tags: usize,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, key: text, value: bytes(len), tags: text_list[n_tags]);
        Ok(
            if cache.cache.set_tagged(key, value, expiry(ttl_ms), &tags)? {
                POLYCACHE_RESULT_OK
            } else {
                POLYCACHE_RESULT_NOT_STORED
            },
        )
    })
}

/// Makes every entry carrying any of the `n_tags` tags in `tags` a miss, in every process
/// sharing the backend: one write, whatever the number of entries.
///
/// `tags` may be NULL only when `n_tags` is 0. Answers `POLYCACHE_RESULT_NOT_STORED` only
/// when the cache fails open and the backend was unreachable.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_invalidate_tags(
    cache: *const polycache_cache,
    tags: *const *const c_char,
    n_tags: usize,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, tags: text_list[n_tags]);
        Ok(if cache.cache.invalidate_tags(&tags)? {
            POLYCACHE_RESULT_OK
        } else {
            POLYCACHE_RESULT_NOT_STORED
        })
    })
}

/// Starts `polycache_cache_set_tagged(cache, key, value, len, ttl_ms, tags, n_tags)` without
/// blocking; its completion (`POLYCACHE_OP_SET_TAGGED`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK`, `NOT_STORED` (a `fail_open` cache whose backend is
/// unreachable), or an error (`INVALID_KEY` for a bad tag, `CONNECTION`, …) with its
/// `error`. The key, the `len` bytes and the tags are copied. Start codes, inline completion
/// and threads are as for `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_set_tagged_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    key: *const c_char,
    value: *const u8,
    len: usize,
    ttl_ms: i64,
    tags: *const *const c_char,
    n_tags: usize,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        let (value, tags) = unsafe {
            (
                bytes(value, len, "value")?.to_vec(),
                owned(text_list(tags, n_tags, "tags", "tags[i]")?),
            )
        };
        let work = |cache: polycache::Cache, key: String| async move {
            let stored = cache
                .set_tagged_async(key.as_str(), &value, expiry(ttl_ms), &texts(&tags))
                .await?;
            Ok(Output::Stored(stored))
        };
        // SAFETY: as above.
        unsafe { start_keyed(cache, queue, key, POLYCACHE_OP_SET_TAGGED, user_data, work) }
    })
}

/// Starts `polycache_cache_invalidate_tags(cache, tags, n_tags)` without blocking; its
/// completion (`POLYCACHE_OP_INVALIDATE_TAGS`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK`, `NOT_STORED` (a `fail_open` cache whose backend is
/// unreachable), or an error with its `error`. The tags are copied. Start codes, inline
/// completion and threads are as for `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_invalidate_tags_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    tags: *const *const c_char,
    n_tags: usize,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        unsafe {
            start_listed(
                cache,
                queue,
                tags,
                n_tags,
                ("tags", "tags[i]"),
                POLYCACHE_OP_INVALIDATE_TAGS,
                user_data,
                |cache, tags| async move {
                    let reached = cache.invalidate_tags_async(&texts(&tags)).await?;
                    Ok(Output::Stored(reached))
                },
            )
        }
    })
}

/// `polycache_cache_get_or_set_with` whose stored value carries the `n_tags` tags in `tags`:
/// reads `key` (in one request with the tags' versions), and on a miss calls `loader` under
/// single-flight and stores its value with the tags, their versions read before `loader`
/// runs. A value computed while one of the tags is invalidated goes to its caller but is
/// stored with the old version, a miss to every later reader.
///
/// Ownership and the loader's contract are those of `polycache_cache_get_or_set_with`:
/// on `POLYCACHE_RESULT_OK`, `*value_out` receives a new value owned by the caller, released
/// with `polycache_value_free`; a failing loader gives `POLYCACHE_RESULT_LOADER_FAILED`.
/// Tags are checked as for `polycache_cache_set_tagged` (`POLYCACHE_RESULT_INVALID_KEY`,
/// nothing read or stored, the loader not called); `tags` may be NULL only when `n_tags` is 0,
/// and `n_tags` 0 is a plain `polycache_cache_get_or_set_with`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn polycache_cache_get_or_set_with_tagged(
    cache: *const polycache_cache,
    key: *const c_char,
    loader: polycache_loader,
    user_data: *mut c_void,
    ttl_ms: i64,
    tags: *const *const c_char,
    n_tags: usize,
    value_out: *mut *mut polycache_value,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        let (cache, name, tags, value_out) = unsafe {
            (
                borrow(cache, "cache")?,
                text(key, "key")?,
                text_list(tags, n_tags, "tags", "tags[i]")?,
                out(value_out, "value_out")?,
            )
        };
        let loader = loader.ok_or(Failure::NullParameter("loader"))?;
        // SAFETY: by this function's contract (see `loaded_with_tags`).
        let value =
            unsafe { loaded_with_tags(cache, name, key, loader, user_data, ttl_ms, &tags) }?;
        value_out.write(handle::into_raw(polycache_value::new(value)));
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// The value `get_or_set_with` (with `tags`, none for the untagged call) answers, `loader`
/// computing it on a miss.
///
/// # Safety
/// `loader` is a valid function taking these arguments, and `key` the caller's
/// NUL-terminated string whose text is `name`, valid for the call.
pub(crate) unsafe fn loaded_with_tags(
    cache: &polycache_cache,
    name: &str,
    key: *const c_char,
    loader: crate::loader::LoaderFn,
    user_data: *mut c_void,
    ttl_ms: i64,
    tags: &[&str],
) -> polycache::Result<polycache::Value> {
    let load = || {
        // SAFETY: by this function's contract.
        unsafe { call_loader(loader, user_data, key) }.map(|(value, _)| value)
    };
    if tags.is_empty() {
        return cache.cache.get_or_set_with(name, load, expiry(ttl_ms));
    }
    cache
        .cache
        .get_or_set_with_tags(name, load, expiry(ttl_ms), tags)
}
