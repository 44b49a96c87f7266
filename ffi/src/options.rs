//! `polycache_options`: options as typed values, for `polycache_cache_open_with_options`.

use crate::cache::polycache_cache;
use crate::error::polycache_error;
use crate::handle::{self, borrow, out, text};
use crate::panic::{boundary, guard};
use crate::result::{polycache_result, Failure, POLYCACHE_RESULT_OK};
use polycache::{Cache, CacheOptions, Error, ErrorKind, OptionSource, OptionValue};
use std::ffi::c_char;
use std::sync::Mutex;

/// Options for `polycache_cache_open_with_options`, each a name and a typed value (text,
/// integer, number, boolean or none), set one by one: the C twin of the options of a URL's
/// query, without writing them as URL text. An error about one of them names it and says it
/// was set from C (`option max_entries set from C: …`).
///
/// Threads: a handle may be shared between threads (its setters lock it), but setting an
/// option while another thread opens a cache with the same handle gives that cache either
/// value. Lifetime: from `polycache_options_new` until `polycache_options_free`; a cache
/// opened with it keeps no reference to it, so it may be freed (or reused for another
/// cache) as soon as `polycache_cache_open_with_options` returns.
pub struct polycache_options {
    options: Mutex<CacheOptions>,
}

/// Creates an empty set of options.
///
/// On success `*options_out` receives a new handle owned by the caller, to be released with
/// `polycache_options_free`.
#[no_mangle]
pub unsafe extern "C" fn polycache_options_new(
    options_out: *mut *mut polycache_options,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(options_out: out);
        options_out.write(handle::into_raw(polycache_options {
            options: Mutex::new(CacheOptions::new()),
        }));
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Frees options from `polycache_options_new`; NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn polycache_options_free(options: *mut polycache_options) {
    guard((), || {
        // SAFETY: options is NULL or options from polycache_options_new, freed once (C API
        // contract).
        unsafe { handle::free(options) }
    })
}

/// A configuration error about the option `name` set from C.
fn bad(name: &str, message: &str) -> Failure {
    let source = OptionSource::C {
        name: name.to_owned(),
    };
    Error::new(ErrorKind::Configuration, message)
        .about_option(&source)
        .into()
}

/// Sets `name` in `options` (replacing an earlier value) to `value`, after checking the
/// name: not empty, printable, no `=`, `&` or `?`. What the value must be is checked when a
/// cache is opened with the options, as for a URL's query.
fn set(options: &polycache_options, name: &str, value: OptionValue) -> Result<(), Failure> {
    if name.is_empty() || name.chars().any(|c| c.is_control() || "=&?# ".contains(c)) {
        return Err(bad(
            name,
            "not an option name (a name is printable text without spaces, '=', '&', '?' or '#')",
        ));
    }
    let mut guard = options
        .options
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    guard.insert_from(
        name,
        value,
        OptionSource::C {
            name: name.to_owned(),
        },
    );
    Ok(())
}

/// Sets the option `name` to the text `value`, read as a URL's query value is
/// (`"10"` is a valid `max_entries`, `"true"` a valid `fail_open`).
///
/// Returns `POLYCACHE_RESULT_CONFIGURATION` for a name that cannot be an option (empty, or
/// with spaces, `=`, `&`, `?` or `#`); the options are then unchanged.
#[no_mangle]
pub unsafe extern "C" fn polycache_options_set_str(
    options: *const polycache_options,
    name: *const c_char,
    value: *const c_char,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(options: borrow, name: text, value: text);
        set(options, name, OptionValue::Str(value.to_owned()))?;
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Sets the option `name` to the integer `value` (`max_entries`, `version`, `db`, a
/// duration in whole seconds…). Errors as `polycache_options_set_str`.
#[no_mangle]
pub unsafe extern "C" fn polycache_options_set_int(
    options: *const polycache_options,
    name: *const c_char,
    value: i64,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(options: borrow, name: text);
        set(options, name, OptionValue::Int(value))?;
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Sets the option `name` to the number `value` (a duration in seconds: `timeout`,
/// `socket_timeout`…). A NaN or infinite `value` gives `POLYCACHE_RESULT_CONFIGURATION`,
/// naming the option; otherwise errors as `polycache_options_set_str`.
#[no_mangle]
pub unsafe extern "C" fn polycache_options_set_float(
    options: *const polycache_options,
    name: *const c_char,
    value: f64,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(options: borrow, name: text);
        if !value.is_finite() {
            return Err(bad(name, &format!("{value} is not a finite number")));
        }
        set(options, name, OptionValue::Float(value))?;
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Sets the option `name` to the boolean `value` (`fail_open`, `insecure`…). Errors as
/// `polycache_options_set_str`.
#[no_mangle]
pub unsafe extern "C" fn polycache_options_set_bool(
    options: *const polycache_options,
    name: *const c_char,
    value: bool,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(options: borrow, name: text);
        set(options, name, OptionValue::Bool(value))?;
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Sets the option `name` to none: for a duration (`timeout`, `l1_timeout`), never. Errors
/// as `polycache_options_set_str`.
#[no_mangle]
pub unsafe extern "C" fn polycache_options_set_none(
    options: *const polycache_options,
    name: *const c_char,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(options: borrow, name: text);
        set(options, name, OptionValue::None)?;
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Opens the cache at `url` with `options` added to its query's: as `polycache_cache_open`,
/// with options as typed values. `options` may be NULL (no options). An option set both in
/// the URL and in `options` is an error naming both.
///
/// A bad or unknown option gives `POLYCACHE_RESULT_CONFIGURATION`, with a message naming
/// the option and where it was set (`option max_entries set from C: …`, or `query parameter
/// max_entries in the URL: …`). On success `*cache_out` receives a new cache owned by the
/// caller, to be released with `polycache_cache_free`; `options` stay the caller's.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_open_with_options(
    url: *const c_char,
    options: *const polycache_options,
    cache_out: *mut *mut polycache_cache,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(url: text, cache_out: out);
        let typed = if options.is_null() {
            CacheOptions::new()
        } else {
            c_args!(options: borrow);
            options
                .options
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone()
        };
        let cache = Cache::builder(url).options_from(typed).build()?;
        cache_out.write(handle::into_raw(polycache_cache::new(cache)));
        Ok(POLYCACHE_RESULT_OK)
    })
}
