//! `polycache_loader_output`: where a loader callback of `polycache_cache_get_or_set_with`
//! puts the value it computed.

use crate::error::polycache_error;
use crate::handle::{borrow_lent, bytes};
use crate::panic::boundary;
use crate::result::{polycache_result, POLYCACHE_RESULT_OK};
use std::ffi::{c_char, c_void};

/// The slot a loader fills with `polycache_loader_output_set`.
///
/// Threads: it belongs to the one loader call it is passed to, on the calling thread.
/// Lifetime: valid only until the loader returns; polycache owns it and frees it, so never
/// free it or keep the pointer.
pub struct polycache_loader_output {
    value: Option<Vec<u8>>,
}

impl polycache_loader_output {
    pub(crate) fn new() -> Self {
        polycache_loader_output { value: None }
    }

    pub(crate) fn take(&mut self) -> Option<Vec<u8>> {
        self.value.take()
    }
}

/// A loader: computes the value of `key` when `polycache_cache_get_or_set_with` misses it.
///
/// It receives the `user_data` given to `polycache_cache_get_or_set_with`, the caller's key
/// (NUL-terminated UTF-8, valid during the call), and `output`, which it fills with
/// `polycache_loader_output_set` (polycache copies the bytes, so the loader keeps ownership
/// of its buffer). It returns `POLYCACHE_RESULT_OK` after setting a value, or any other code
/// to report a failure: nothing is stored and `polycache_cache_get_or_set_with` returns
/// `POLYCACHE_RESULT_LOADER_FAILED`. It runs on the thread that called
/// `polycache_cache_get_or_set_with`, at most once per call, and must return normally
/// (no `longjmp` out of it). It may call polycache functions, on this cache too.
pub type polycache_loader = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        key: *const c_char,
        output: *mut polycache_loader_output,
    ) -> polycache_result,
>;

/// Sets the value a loader computed: copies the `len` bytes at `data` into `output`.
///
/// Call it from inside a loader, with the `output` it received; a second call replaces the
/// first value. `data` may be NULL only when `len` is 0. The bytes are copied: the loader
/// keeps ownership of `data`.
#[no_mangle]
pub unsafe extern "C" fn polycache_loader_output_set(
    output: *mut polycache_loader_output,
    data: *const u8,
    len: usize,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract); output is
        // the slot polycache lent to the running loader.
        let (output, data) = unsafe { (borrow_lent(output, "output")?, bytes(data, len, "data")?) };
        output.value = Some(data.to_vec());
        Ok(POLYCACHE_RESULT_OK)
    })
}
