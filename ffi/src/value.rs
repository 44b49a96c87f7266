//! `polycache_value`: bytes read from a cache.

use crate::handle;
use crate::panic::guard;
use polycache::Value;

/// Bytes read from a cache by `polycache_cache_get` or `polycache_cache_get_many`.
///
/// Threads: a value is immutable, so it may be read from any thread and freed from any
/// thread. Lifetime: it lives until `polycache_value_free`, independent of the cache (later
/// writes to the key do not change it, and it outlives `polycache_cache_free`).
pub struct polycache_value {
    value: Value,
}

impl polycache_value {
    #[inline]
    pub(crate) fn new(value: Value) -> Self {
        polycache_value { value }
    }
}

/// Something valid to point at when a value is empty: C forbids passing a dangling pointer
/// even with a length of 0 (to `memcpy`, for one).
static EMPTY: [u8; 1] = [0];

/// The bytes of `value`; `polycache_value_len` of them may be read.
///
/// The pointer is owned by `value` and valid until `polycache_value_free(value)`; do not free
/// it. It is never NULL for a non-NULL `value`, even when the length is 0. The bytes are not
/// NUL-terminated and may contain NULs. Returns NULL when `value` is NULL.
#[no_mangle]
pub unsafe extern "C" fn polycache_value_data(value: *const polycache_value) -> *const u8 {
    guard(std::ptr::null(), || {
        // SAFETY: value is NULL or a value from this library not yet freed (C API contract).
        match unsafe { handle::borrow(value, "value") } {
            Ok(v) if v.value.is_empty() => EMPTY.as_ptr(),
            Ok(v) => v.value.as_ptr(),
            Err(_) => std::ptr::null(),
        }
    })
}

/// The number of bytes in `value`; 0 when `value` is NULL.
#[no_mangle]
pub unsafe extern "C" fn polycache_value_len(value: *const polycache_value) -> usize {
    guard(0, || {
        // SAFETY: value is NULL or a value from this library not yet freed (C API contract).
        unsafe { handle::borrow(value, "value") }.map_or(0, |v| v.value.len())
    })
}

/// Frees a value from `polycache_cache_get` or `polycache_cache_get_many`; NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn polycache_value_free(value: *mut polycache_value) {
    guard((), || {
        // SAFETY: value is NULL or a value from this library, freed once (C API contract).
        unsafe { handle::free(value) }
    })
}
