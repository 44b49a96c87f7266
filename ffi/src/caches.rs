//! `polycache_caches`: the service, named caches with a `default` built from JSON or TOML
//! configuration text.

use crate::cache::polycache_cache;
use crate::error::polycache_error;
use crate::handle::{self, borrow, out, text};
use crate::panic::{boundary, guard};
use crate::result::{polycache_result, POLYCACHE_RESULT_OK};
use polycache::{Caches, Error, ErrorKind};
use std::ffi::{c_char, CString};

/// A set of named caches, one called `default`, from `polycache_caches_from_json` or
/// `polycache_caches_from_toml`.
///
/// Threads: it is immutable, so any number of threads may call `polycache_caches_get` on it
/// at the same time; only `polycache_caches_free` must come after every other use.
/// Lifetime: from `_from_json`/`_from_toml` until `polycache_caches_free`; the caches taken
/// out of it with `polycache_caches_get` are handles of their own and outlive it.
pub struct polycache_caches {
    caches: Caches,
    /// The names as C strings, sorted, for `polycache_caches_name`.
    names: Vec<CString>,
}

/// Parses `config` with `parse` and hands the caches to the caller: the body of
/// `_from_json` and `_from_toml`.
///
/// # Safety
/// Each pointer is NULL or valid for the call (the C API contract).
unsafe fn parse_into(
    config: *const c_char,
    caches_out: *mut *mut polycache_caches,
    parse: fn(&str) -> polycache::Result<Caches>,
) -> Result<polycache_result, crate::result::Failure> {
    // SAFETY: by this function's contract.
    let (config, caches_out) = unsafe { (text(config, "config")?, out(caches_out, "caches_out")?) };
    let caches = parse(config)?;
    let names = caches
        .names()
        // Names come from a JSON or TOML string, which cannot hold a NUL, but be safe.
        .map(|n| CString::new(n).unwrap_or_default())
        .collect();
    caches_out.write(handle::into_raw(polycache_caches { caches, names }));
    Ok(POLYCACHE_RESULT_OK)
}

/// Opens the caches a JSON text configures, shaped like Django's `CACHES` setting.
///
/// `config` is NUL-terminated UTF-8: an object of named caches, each with `LOCATION` (the
/// URL) and optionally `KEY_PREFIX`, `VERSION`, `TIMEOUT` (seconds; `null` or `"none"`:
/// never expire) and `OPTIONS` (an object of URL options); lower-case names work too. One
/// must be called `default`. Every cache is opened now: a bad configuration or URL gives
/// `POLYCACHE_RESULT_CONFIGURATION` naming the cache and the problem. On success
/// `*caches_out` receives a new object owned by the caller, to be released with
/// `polycache_caches_free`.
#[no_mangle]
pub unsafe extern "C" fn polycache_caches_from_json(
    config: *const c_char,
    caches_out: *mut *mut polycache_caches,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    // SAFETY: each pointer is NULL or valid for the call (the C API contract).
    boundary(error_out, || unsafe {
        parse_into(config, caches_out, Caches::from_json)
    })
}

/// Opens the caches a TOML text configures: one table per named cache, with the same
/// settings as `polycache_caches_from_json` (TOML has no null: `timeout = "none"`).
///
/// ```toml
/// [default]
/// location = "memory://?max_entries=10000"
/// timeout = 60
///
/// [sessions]
/// location = "redis://127.0.0.1:6379/1"
/// key_prefix = "s"
/// options = { fail_open = true }
/// ```
///
/// Results and ownership as for `polycache_caches_from_json`.
#[no_mangle]
pub unsafe extern "C" fn polycache_caches_from_toml(
    config: *const c_char,
    caches_out: *mut *mut polycache_caches,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    // SAFETY: each pointer is NULL or valid for the call (the C API contract).
    boundary(error_out, || unsafe {
        parse_into(config, caches_out, Caches::from_toml)
    })
}

/// The cache called `name` (`"default"`, …).
///
/// On success `*cache_out` receives a new handle owned by the caller, to be released with
/// `polycache_cache_free`; it shares the backend and counters with every other handle to
/// the same named cache, and stays valid after `polycache_caches_free`. A name the
/// configuration does not have gives `POLYCACHE_RESULT_CONFIGURATION`, with a message
/// listing the names it has.
#[no_mangle]
pub unsafe extern "C" fn polycache_caches_get(
    caches: *const polycache_caches,
    name: *const c_char,
    cache_out: *mut *mut polycache_cache,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(caches: borrow, name: text, cache_out: out);
        let cache = caches.caches.get(name).ok_or_else(|| {
            let names: Vec<&str> = caches.caches.names().collect();
            Error::new(
                ErrorKind::Configuration,
                format!(
                    "no cache named {name:?}; the configuration has {}",
                    names.join(", ")
                ),
            )
        })?;
        cache_out.write(handle::into_raw(polycache_cache::new(cache.clone())));
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// How many caches `caches` holds (at least 1: `default`); 0 when `caches` is NULL.
#[no_mangle]
pub unsafe extern "C" fn polycache_caches_count(caches: *const polycache_caches) -> usize {
    guard(0, || {
        // SAFETY: caches is NULL or live (the C API contract).
        unsafe { borrow(caches, "caches") }.map_or(0, |c| c.names.len())
    })
}

/// The name of the cache at `index` (names are sorted), or NULL when `index` is not below
/// `polycache_caches_count(caches)` or `caches` is NULL.
///
/// The NUL-terminated string is owned by `caches` and valid until
/// `polycache_caches_free(caches)`; do not free it.
#[no_mangle]
pub unsafe extern "C" fn polycache_caches_name(
    caches: *const polycache_caches,
    index: usize,
) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: caches is NULL or live (the C API contract).
        unsafe { borrow(caches, "caches") }
            .ok()
            .and_then(|c| c.names.get(index))
            .map_or(std::ptr::null(), |n| n.as_ptr())
    })
}

/// Frees `caches`; NULL does nothing. Caches taken out with `polycache_caches_get` stay
/// valid until their own `polycache_cache_free`.
#[no_mangle]
pub unsafe extern "C" fn polycache_caches_free(caches: *mut polycache_caches) {
    guard((), || {
        // SAFETY: caches is NULL or from _from_json/_from_toml, freed once (C API contract).
        unsafe { handle::free(caches) }
    })
}
