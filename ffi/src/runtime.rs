//! `polycache_runtime_configure`: the size of the runtime where non-blocking operations on
//! remote caches run.

use crate::error::polycache_error;
use crate::panic::boundary;
use crate::result::{polycache_result, Failure, POLYCACHE_RESULT_OK};
use polycache::{Error, ErrorKind};

/// Sets how many worker threads and at most how many blocking threads polycache's runtime
/// has; 0 keeps the default (workers: the number of CPUs up to 4; blocking: 64).
///
/// The runtime runs the non-blocking operations (`polycache_cache_<op>_start`) of remote
/// caches, and starts with the first of them. Call this before, once: afterwards it returns
/// `POLYCACHE_RESULT_CONFIGURATION` and changes nothing. The environment variables
/// `POLYCACHE_RUNTIME_THREADS` and `POLYCACHE_BLOCKING_THREADS`, when set to a positive
/// number, take precedence over both arguments. Caches that complete inline (`memory://`,
/// `dummy://`) never use the runtime.
#[no_mangle]
pub unsafe extern "C" fn polycache_runtime_configure(
    worker_threads: usize,
    blocking_threads: usize,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        if !polycache::runtime::configure(worker_threads, blocking_threads) {
            return Err(Failure::Core(Error::new(
                ErrorKind::Configuration,
                "polycache's runtime has already started; call polycache_runtime_configure \
                 before the first non-blocking operation on a remote cache",
            )));
        }
        Ok(POLYCACHE_RESULT_OK)
    })
}
