//! `polycache_loader_output`: where a callback puts the bytes it produced (a loader of
//! `polycache_cache_get_or_set_with`, a job's fetch, a custom backend's `get`), and the
//! shared code that calls such a callback.

use crate::error::polycache_error;
use crate::handle::{borrow_lent, bytes, lend};
use crate::panic::boundary;
use crate::result::{polycache_result, Failure, POLYCACHE_RESULT_OK};
use polycache::{Error, ErrorKind};
use std::ffi::{c_char, c_void};
use std::fmt;
use std::time::Duration;

/// The slot a callback fills with `polycache_loader_output_set`.
///
/// Threads: it belongs to the one callback call it is passed to, on the thread running that
/// callback. Lifetime: valid only until the callback returns; polycache owns it and frees
/// it, so never free it or keep the pointer.
pub struct polycache_loader_output {
    value: Option<Vec<u8>>,
    fresh_for: Option<Duration>,
}

impl polycache_loader_output {
    pub(crate) fn new() -> Self {
        polycache_loader_output {
            value: None,
            fresh_for: None,
        }
    }

    pub(crate) fn take(&mut self) -> Option<Vec<u8>> {
        self.value.take()
    }
}

/// A loader: computes the value of `key` when `polycache_cache_get_or_set_with` misses it,
/// or when a job (`polycache_job_new`) fetches it.
///
/// It receives the `user_data` given with it, the caller's key (NUL-terminated UTF-8, valid
/// during the call), and `output`, which it fills with `polycache_loader_output_set`
/// (polycache copies the bytes, so the loader keeps ownership of its buffer). It returns
/// `POLYCACHE_RESULT_OK` after setting a value, or any other code to report a failure:
/// nothing is stored and the call that needed the value returns
/// `POLYCACHE_RESULT_LOADER_FAILED`. A loader of `polycache_cache_get_or_set_with` runs on
/// the calling thread, at most once per call; a job's fetch also runs on polycache's refresh
/// threads. It must return normally (no `longjmp` or C++ exception out of it). It may call
/// polycache functions, on this cache too.
pub type polycache_loader = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        key: *const c_char,
        output: *mut polycache_loader_output,
    ) -> polycache_result,
>;

/// Sets the value a callback produced: copies the `len` bytes at `data` into `output`.
///
/// Call it from inside a loader, a job's fetch or a custom backend's `get`, with the
/// `output` it received; a second call replaces the first value. `data` may be NULL only
/// when `len` is 0. The bytes are copied: the callback keeps ownership of `data`.
#[no_mangle]
pub unsafe extern "C" fn polycache_loader_output_set(
    output: *mut polycache_loader_output,
    data: *const u8,
    len: usize,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract); output is
        // the slot polycache lent to the running callback.
        let (output, data) = unsafe { (borrow_lent(output, "output")?, bytes(data, len, "data")?) };
        output.value = Some(data.to_vec());
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Inside a job's fetch: how long the value being set stays fresh, in milliseconds, instead
/// of the job's lifetime (cacheback's per-value `expiry`).
///
/// `fresh_for_ms` must be positive (`POLYCACHE_RESULT_CONFIGURATION` otherwise). Loaders of
/// `polycache_cache_get_or_set_with` and custom backends ignore it.
#[no_mangle]
pub unsafe extern "C" fn polycache_loader_output_set_fresh_for(
    output: *mut polycache_loader_output,
    fresh_for_ms: i64,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: output is NULL or the slot polycache lent to the running callback.
        let output = unsafe { borrow_lent(output, "output")? };
        let ms = u64::try_from(fresh_for_ms)
            .ok()
            .filter(|&ms| ms > 0)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Configuration,
                    format!("fresh_for_ms must be positive, not {fresh_for_ms}"),
                )
            })?;
        output.fresh_for = Some(Duration::from_millis(ms));
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Why a loader gave no value: the code it returned, or `None` for OK without a value.
///
/// It travels as the source of a core [`Error`] through the core's single-flight and jobs,
/// and becomes `POLYCACHE_RESULT_LOADER_FAILED` again at the C boundary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoaderFailure(pub(crate) Option<polycache_result>);

impl fmt::Display for LoaderFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Failure::LoaderFailed(self.0).message())
    }
}

impl std::error::Error for LoaderFailure {}

/// A loader's function pointer, checked not to be NULL.
pub(crate) type LoaderFn = unsafe extern "C" fn(
    user_data: *mut c_void,
    key: *const c_char,
    output: *mut polycache_loader_output,
) -> polycache_result;

/// Calls `loader` for `key` and returns the bytes it set and how long they stay fresh.
///
/// # Safety
/// `loader` is a valid function with the `polycache_loader` contract, `user_data` is what
/// its owner gave with it, and `key` is a NUL-terminated string valid during the call.
pub(crate) unsafe fn call_loader(
    loader: LoaderFn,
    user_data: *mut c_void,
    key: *const c_char,
) -> polycache::Result<(Vec<u8>, Option<Duration>)> {
    let mut output = polycache_loader_output::new();
    // SAFETY: by this function's contract; the output slot lives until the loader returns.
    let code = unsafe { loader(user_data, key, lend(&mut output)) };
    let fresh_for = output.fresh_for;
    match (code, output.take()) {
        (POLYCACHE_RESULT_OK, Some(value)) => Ok((value, fresh_for)),
        (POLYCACHE_RESULT_OK, None) => Err(loader_failed(None)),
        (code, _) => Err(loader_failed(Some(code))),
    }
}

fn loader_failed(code: Option<polycache_result>) -> Error {
    Error::new(ErrorKind::Backend, "the loader failed").with_source(LoaderFailure(code))
}

/// The `void *` a C caller hands polycache with its callbacks, and the function that
/// releases it.
///
/// It is shared by every copy of the callbacks (a job's background refreshes, the caches
/// over a custom backend) and released once, when the last of them is dropped.
pub(crate) struct UserData {
    ptr: *mut c_void,
    release: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
}

// SAFETY: the C API documents that callbacks and `release` may be called from any thread
// with this pointer; the caller promises that its data and callbacks allow it. polycache
// itself never reads through the pointer.
unsafe impl Send for UserData {}
// SAFETY: as above; concurrent calls with the pointer are the caller's documented promise.
unsafe impl Sync for UserData {}

impl UserData {
    pub(crate) fn new(
        ptr: *mut c_void,
        release: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
    ) -> Self {
        UserData { ptr, release }
    }

    pub(crate) fn ptr(&self) -> *mut c_void {
        self.ptr
    }

    /// Gives ownership back to the caller: `release` will not be called.
    pub(crate) fn disarm(&mut self) {
        self.release = None;
    }
}

impl Drop for UserData {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            // SAFETY: release is the caller's function for this pointer, called exactly
            // once, after the last use of the pointer (this is the last owner).
            unsafe { release(self.ptr) }
        }
    }
}
