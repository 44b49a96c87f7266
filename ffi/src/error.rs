//! `polycache_error`: the detailed error a fallible function hands out through `error_out`.

use crate::handle;
use crate::panic::guard;
use crate::result::{polycache_result, Failure, POLYCACHE_RESULT_NULL_PARAMETER};
use std::ffi::{c_char, CString};

/// A failure's code and message, received through a function's `error_out` parameter.
///
/// Threads: an error is immutable, so it may be read from any thread and freed from any
/// thread. Lifetime: it lives until `polycache_error_free`, independent of the cache that
/// produced it.
pub struct polycache_error {
    result: polycache_result,
    message: CString,
}

impl polycache_error {
    pub(crate) fn new(failure: &Failure) -> Self {
        let mut message = failure.message().into_bytes();
        // A C string ends at the first NUL; keep the rest of the message readable.
        for b in &mut message {
            if *b == 0 {
                *b = b'?';
            }
        }
        let message = CString::new(message).unwrap_or_default();
        polycache_error {
            result: failure.result(),
            message,
        }
    }
}

/// The code of `error`: the same value the failed function returned.
///
/// Returns `POLYCACHE_RESULT_NULL_PARAMETER` when `error` is NULL.
#[no_mangle]
pub unsafe extern "C" fn polycache_error_result(error: *const polycache_error) -> polycache_result {
    guard(crate::result::POLYCACHE_RESULT_PANIC, || {
        // SAFETY: error is NULL or an error from this library not yet freed (C API contract).
        match unsafe { handle::borrow(error, "error") } {
            Ok(error) => error.result,
            Err(_) => POLYCACHE_RESULT_NULL_PARAMETER,
        }
    })
}

/// The message of `error`, for people: what went wrong, naming the key, option or parameter.
///
/// The returned NUL-terminated UTF-8 string is owned by `error` and valid until
/// `polycache_error_free(error)`; do not free it. Returns a static empty string when
/// `error` is NULL, so the result can always be printed.
#[no_mangle]
pub unsafe extern "C" fn polycache_error_message(error: *const polycache_error) -> *const c_char {
    guard(c"".as_ptr(), || {
        // SAFETY: error is NULL or an error from this library not yet freed (C API contract).
        match unsafe { handle::borrow(error, "error") } {
            Ok(error) => error.message.as_ptr(),
            Err(_) => c"".as_ptr(),
        }
    })
}

/// Frees an error received through an `error_out` parameter; NULL does nothing.
///
/// The string from `polycache_error_message` is freed with it.
#[no_mangle]
pub unsafe extern "C" fn polycache_error_free(error: *mut polycache_error) {
    guard((), || {
        // SAFETY: error is NULL or an error from this library, freed once (C API contract).
        unsafe { handle::free(error) }
    })
}
