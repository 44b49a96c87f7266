//! The C ABI of polycache: `libpolycache` and `include/polycache.h`.
//!
//! The conventions follow rustls-ffi (see `docs/c-api.md`):
//!
//! - Objects are opaque handles (`polycache_cache`, `polycache_caches`, `polycache_job`,
//!   `polycache_value`, `polycache_error`, `polycache_queue`, `polycache_key_scan`)
//!   created by a `_new`/`_open`/getter function and released by the matching `_free`;
//!   `_free(NULL)` does nothing.
//! - Every fallible function returns a [`polycache_result`] and writes its outputs only when
//!   it returns `POLYCACHE_RESULT_OK`. A miss is the code `POLYCACHE_RESULT_MISS`, not an
//!   error.
//! - Every fallible function takes a trailing `polycache_error **error_out`, which may be
//!   NULL; on a failure it receives a new error object with the code and a message.
//! - A NULL pointer argument gives `POLYCACHE_RESULT_NULL_PARAMETER`, never a crash.
//! - No panic crosses into C: one boundary (`panic.rs`) turns it into
//!   `POLYCACHE_RESULT_PANIC`.
//! - Keys and URLs are NUL-terminated UTF-8 text; values are bytes as `(pointer, length)`.
//!
//! Layout: `handle.rs` is the only module that dereferences, casts or frees a pointer it got
//! from C; `panic.rs` holds the panic boundary; each C object has its own module.
//!
//! The one safety contract of every exported function, which is why they carry no separate
//! `# Safety` section: each pointer argument is NULL or points to what its type says, valid
//! for the duration of the call (handles: obtained from this library and not yet freed;
//! `const char *`: a NUL-terminated string; `(ptr, len)`: `len` readable bytes; out-params:
//! writable and aligned).
#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]
#![warn(missing_docs)]

#[macro_use]
mod handle;
mod backend;
mod cache;
mod cache_lifetime;
mod cache_start;
mod caches;
mod error;
mod job;
mod key_scan;
mod loader;
mod lock;
mod logging;
mod options;
mod panic;
mod queue;
mod result;
mod runtime;
mod stats;
mod structures;
mod tags;
mod value;

pub use backend::*;
pub use cache::*;
pub use cache_lifetime::*;
pub use cache_start::*;
pub use caches::*;
pub use error::*;
pub use job::*;
pub use key_scan::*;
pub use loader::*;
pub use lock::*;
pub use logging::*;
pub use options::*;
pub use queue::*;
pub use result::*;
pub use runtime::*;
pub use stats::*;
pub use structures::*;
pub use value::*;

use std::ffi::{c_char, CStr};

/// The version of libpolycache, such as `"0.1.0"`.
///
/// Returns a static NUL-terminated string: never NULL, never freed.
#[no_mangle]
pub extern "C" fn polycache_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("the crate version contains a NUL byte"),
        };
    panic::guard(VERSION.as_ptr(), || VERSION.as_ptr())
}
