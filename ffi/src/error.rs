//! `polycache_error`: the detailed error a fallible function hands out through `error_out`.

use crate::handle;
use crate::panic::guard;
use crate::result::{polycache_result, Failure, POLYCACHE_RESULT_NULL_PARAMETER};
use std::ffi::{c_char, CString};

/// A failure's code (its kind), message and the backend's own message, received through a
/// function's `error_out` parameter.
///
/// Threads: an error is immutable, so it may be read from any thread and freed from any
/// thread. Lifetime: it lives until `polycache_error_free`, independent of the cache that
/// produced it.
pub struct polycache_error {
    result: polycache_result,
    message: CString,
    backend_message: CString,
}

/// `text` as a C string; a C string ends at the first NUL, so NULs inside become `?` and the
/// rest stays readable.
fn c_text(text: String) -> CString {
    let mut bytes = text.into_bytes();
    for b in &mut bytes {
        if *b == 0 {
            *b = b'?';
        }
    }
    CString::new(bytes).unwrap_or_default()
}

impl polycache_error {
    pub(crate) fn new(failure: &Failure) -> Self {
        let backend_message = match failure {
            Failure::Core(e) => std::error::Error::source(e).map(|s| s.to_string()),
            _ => None,
        };
        polycache_error {
            result: failure.result(),
            message: c_text(failure.message()),
            backend_message: c_text(backend_message.unwrap_or_default()),
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

/// The backend's own message, when the failure came from below polycache: the server's
/// error reply, the operating system's error (`"Connection refused (os error 111)"`), the
/// SQL driver's message. `""` when there is none (the failure is polycache's own, such as a
/// bad option or a value too large) or when `error` is NULL.
///
/// `polycache_error_message` already ends with it; this gives it alone, for logs and for
/// matching a server's reply. The string is owned by `error` and valid until
/// `polycache_error_free(error)`; do not free it.
#[no_mangle]
pub unsafe extern "C" fn polycache_error_backend_message(
    error: *const polycache_error,
) -> *const c_char {
    guard(c"".as_ptr(), || {
        // SAFETY: error is NULL or an error from this library not yet freed (C API contract).
        match unsafe { handle::borrow(error, "error") } {
            Ok(error) => error.backend_message.as_ptr(),
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
