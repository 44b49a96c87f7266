//! `polycache_result`: the code every fallible function returns, and the Rust-side failure
//! type that becomes one.

use crate::panic::guard;
use polycache::ErrorKind;
use std::borrow::Cow;
use std::ffi::{c_char, CStr};

/// What a fallible function did: `POLYCACHE_RESULT_OK`, `POLYCACHE_RESULT_MISS`, or why it failed.
///
/// A plain `uint32_t` rather than a C enum so that any value, including codes added by later
/// versions, is safe to pass back to `polycache_result_name`. Values are stable; new codes
/// are only ever appended.
pub type polycache_result = u32;

/// Success; outputs were written.
pub const POLYCACHE_RESULT_OK: polycache_result = 0;
/// The key is not in the cache (not an error); outputs were not written.
pub const POLYCACHE_RESULT_MISS: polycache_result = 1;
/// A pointer argument that must not be NULL was NULL.
pub const POLYCACHE_RESULT_NULL_PARAMETER: polycache_result = 2;
/// A text argument (key or URL) is not valid UTF-8.
pub const POLYCACHE_RESULT_INVALID_UTF8: polycache_result = 3;
/// The caller's buffer is smaller than the value (`polycache_cache_get_into`).
pub const POLYCACHE_RESULT_BUFFER_TOO_SMALL: polycache_result = 4;
/// polycache panicked: a bug in polycache. The call had no effect or an unknown part of it.
pub const POLYCACHE_RESULT_PANIC: polycache_result = 5;
/// A URL, option or configuration value is wrong.
pub const POLYCACHE_RESULT_CONFIGURATION: polycache_result = 6;
/// The server could not be reached or the connection broke.
pub const POLYCACHE_RESULT_CONNECTION: polycache_result = 7;
/// An operation did not finish within its timeout.
pub const POLYCACHE_RESULT_TIMEOUT: polycache_result = 8;
/// The key cannot be used (too long, or not valid for this cache).
pub const POLYCACHE_RESULT_INVALID_KEY: polycache_result = 9;
/// The value is larger than the cache accepts (`max_value_size`); nothing was stored.
pub const POLYCACHE_RESULT_VALUE_TOO_LARGE: polycache_result = 10;
/// A value could not be encoded or decoded.
pub const POLYCACHE_RESULT_SERIALIZATION: polycache_result = 11;
/// `incr`/`decr` on a key that is not in the cache.
pub const POLYCACHE_RESULT_NOT_FOUND: polycache_result = 12;
/// `incr`/`decr` on a value that is not an ASCII decimal integer.
pub const POLYCACHE_RESULT_NOT_AN_INTEGER: polycache_result = 13;
/// `incr`/`decr` would leave the 64-bit signed range.
pub const POLYCACHE_RESULT_OVERFLOW: polycache_result = 14;
/// The backend does not support this operation.
pub const POLYCACHE_RESULT_UNSUPPORTED: polycache_result = 15;
/// A local I/O error (file backend, sockets).
pub const POLYCACHE_RESULT_IO: polycache_result = 16;
/// The backend answered with an error of its own.
pub const POLYCACHE_RESULT_BACKEND: polycache_result = 17;
/// An error of a kind this version of the C API has no code for yet.
pub const POLYCACHE_RESULT_OTHER: polycache_result = 18;
/// A loader (`polycache_cache_get_or_set_with`) or a job's fetch returned a code other than
/// `POLYCACHE_RESULT_OK`, or returned OK without setting a value; nothing was stored.
pub const POLYCACHE_RESULT_LOADER_FAILED: polycache_result = 19;
/// A write that the cache dropped instead of failing: the cache is `fail_open=true` and the
/// backend was unreachable (the outage is logged and counted in `errors`). Nothing was
/// stored; the old value, if any, may still be there.
pub const POLYCACHE_RESULT_NOT_STORED: polycache_result = 20;
/// A lock cannot do what was asked (extend or reacquire a lock that has no timeout).
pub const POLYCACHE_RESULT_LOCK: polycache_result = 21;
/// A lock's release, extend or reacquire with a token that no longer holds it; the lock
/// was left untouched.
pub const POLYCACHE_RESULT_LOCK_NOT_OWNED: polycache_result = 22;

/// Every code with its name, in code order (the table behind `polycache_result_name`).
const NAMES: [&CStr; 23] = [
    c"ok",
    c"miss",
    c"null_parameter",
    c"invalid_utf8",
    c"buffer_too_small",
    c"panic",
    c"configuration",
    c"connection",
    c"timeout",
    c"invalid_key",
    c"value_too_large",
    c"serialization",
    c"not_found",
    c"not_an_integer",
    c"overflow",
    c"unsupported",
    c"io",
    c"backend",
    c"other",
    c"loader_failed",
    c"not_stored",
    c"lock",
    c"lock_not_owned",
];

/// A short, stable, lower-case name for `result` (`"ok"`, `"miss"`, `"not_found"`, …).
///
/// The error kinds have the names Rust's `ErrorKind::as_str` and Python use. Any value is
/// accepted: an unknown code gives `"unknown"`. Returns a static NUL-terminated string:
/// never NULL, never freed.
#[no_mangle]
pub extern "C" fn polycache_result_name(result: polycache_result) -> *const c_char {
    guard(c"unknown".as_ptr(), || {
        let name = usize::try_from(result)
            .ok()
            .and_then(|i| NAMES.get(i))
            .copied();
        name.unwrap_or(c"unknown").as_ptr()
    })
}

/// The code for an error of `kind`.
pub(crate) fn result_for_kind(kind: ErrorKind) -> polycache_result {
    match kind {
        ErrorKind::Configuration => POLYCACHE_RESULT_CONFIGURATION,
        ErrorKind::Connection => POLYCACHE_RESULT_CONNECTION,
        ErrorKind::Timeout => POLYCACHE_RESULT_TIMEOUT,
        ErrorKind::InvalidKey => POLYCACHE_RESULT_INVALID_KEY,
        ErrorKind::ValueTooLarge => POLYCACHE_RESULT_VALUE_TOO_LARGE,
        ErrorKind::Serialization => POLYCACHE_RESULT_SERIALIZATION,
        ErrorKind::NotFound => POLYCACHE_RESULT_NOT_FOUND,
        ErrorKind::NotAnInteger => POLYCACHE_RESULT_NOT_AN_INTEGER,
        ErrorKind::Overflow => POLYCACHE_RESULT_OVERFLOW,
        ErrorKind::Unsupported => POLYCACHE_RESULT_UNSUPPORTED,
        ErrorKind::Io => POLYCACHE_RESULT_IO,
        ErrorKind::Backend => POLYCACHE_RESULT_BACKEND,
        ErrorKind::Lock => POLYCACHE_RESULT_LOCK,
        ErrorKind::LockNotOwned => POLYCACHE_RESULT_LOCK_NOT_OWNED,
        // ErrorKind is non_exhaustive: a kind added to the core before it gets its own code.
        _ => POLYCACHE_RESULT_OTHER,
    }
}

/// Why an exported function failed, before it becomes a code and an optional error object.
///
/// The message is built only when the caller asked for an error object.
#[derive(Debug)]
pub(crate) enum Failure {
    /// An error from the core.
    Core(polycache::Error),
    /// A pointer argument, named, was NULL.
    NullParameter(&'static str),
    /// A text argument, named, is not UTF-8.
    InvalidUtf8(&'static str, std::str::Utf8Error),
    /// A value of `needed` bytes does not fit the caller's `capacity`.
    BufferTooSmall { needed: usize, capacity: usize },
    /// A panic, with its message.
    Panic(Cow<'static, str>),
    /// A loader returned this code (or OK without a value: `None`).
    LoaderFailed(Option<polycache_result>),
}

impl Failure {
    /// The code this failure returns.
    pub(crate) fn result(&self) -> polycache_result {
        match self {
            Failure::Core(e) => result_for_kind(e.kind()),
            Failure::NullParameter(_) => POLYCACHE_RESULT_NULL_PARAMETER,
            Failure::InvalidUtf8(..) => POLYCACHE_RESULT_INVALID_UTF8,
            Failure::BufferTooSmall { .. } => POLYCACHE_RESULT_BUFFER_TOO_SMALL,
            Failure::Panic(_) => POLYCACHE_RESULT_PANIC,
            Failure::LoaderFailed(_) => POLYCACHE_RESULT_LOADER_FAILED,
        }
    }

    /// The message for people.
    pub(crate) fn message(&self) -> String {
        match self {
            Failure::Core(e) => e.to_string(),
            Failure::NullParameter(name) => format!("{name} is NULL"),
            Failure::InvalidUtf8(name, e) => format!("{name} is not valid UTF-8: {e}"),
            Failure::BufferTooSmall { needed, capacity } => format!(
                "the value is {needed} bytes but the buffer holds {capacity}; \
                 use polycache_cache_get to read a value of any size"
            ),
            Failure::Panic(msg) => format!("polycache panicked (a bug in polycache): {msg}"),
            Failure::LoaderFailed(Some(code)) => format!(
                "the loader failed with code {code} ({}); nothing was stored",
                name_of(*code)
            ),
            Failure::LoaderFailed(None) => "the loader returned POLYCACHE_RESULT_OK without \
                 calling polycache_loader_output_set; nothing was stored"
                .to_owned(),
        }
    }
}

impl From<polycache::Error> for Failure {
    fn from(e: polycache::Error) -> Self {
        // A loader's failure comes back through the core as the source of an error.
        let loader = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<crate::loader::LoaderFailure>())
            .copied();
        match loader {
            Some(crate::loader::LoaderFailure(code)) => Failure::LoaderFailed(code),
            None => Failure::Core(e),
        }
    }
}

/// The error kind a code returned by a C callback (a custom backend's) stands for: the
/// inverse of [`result_for_kind`]. `None` for codes that are no error kind (`OK`, `MISS`,
/// `PANIC`, unknown values, …): the caller reports those as a backend error.
pub(crate) fn kind_for_result(code: polycache_result) -> Option<ErrorKind> {
    Some(match code {
        POLYCACHE_RESULT_CONFIGURATION => ErrorKind::Configuration,
        POLYCACHE_RESULT_CONNECTION => ErrorKind::Connection,
        POLYCACHE_RESULT_TIMEOUT => ErrorKind::Timeout,
        POLYCACHE_RESULT_INVALID_KEY => ErrorKind::InvalidKey,
        POLYCACHE_RESULT_VALUE_TOO_LARGE => ErrorKind::ValueTooLarge,
        POLYCACHE_RESULT_SERIALIZATION => ErrorKind::Serialization,
        POLYCACHE_RESULT_NOT_FOUND => ErrorKind::NotFound,
        POLYCACHE_RESULT_NOT_AN_INTEGER => ErrorKind::NotAnInteger,
        POLYCACHE_RESULT_OVERFLOW => ErrorKind::Overflow,
        POLYCACHE_RESULT_UNSUPPORTED => ErrorKind::Unsupported,
        POLYCACHE_RESULT_IO => ErrorKind::Io,
        POLYCACHE_RESULT_BACKEND => ErrorKind::Backend,
        POLYCACHE_RESULT_LOCK => ErrorKind::Lock,
        POLYCACHE_RESULT_LOCK_NOT_OWNED => ErrorKind::LockNotOwned,
        _ => return None,
    })
}

/// The name of `code` (`"not_found"`), or `"unknown"`.
pub(crate) fn name_of(code: polycache_result) -> std::borrow::Cow<'static, str> {
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or("unknown".into(), |n| n.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_codes() {
        let name = |r| {
            // SAFETY: polycache_result_name returns a static NUL-terminated string.
            unsafe { CStr::from_ptr(polycache_result_name(r)) }
                .to_str()
                .unwrap()
        };
        assert_eq!(name(POLYCACHE_RESULT_OK), "ok");
        assert_eq!(name(POLYCACHE_RESULT_MISS), "miss");
        assert_eq!(name(POLYCACHE_RESULT_OTHER), "other");
        assert_eq!(name(u32::MAX), "unknown");
        assert_eq!(name(NAMES.len() as u32), "unknown");
    }

    #[test]
    fn error_kinds_have_their_own_codes_and_core_names() {
        let kinds = [
            ErrorKind::Configuration,
            ErrorKind::Connection,
            ErrorKind::Timeout,
            ErrorKind::InvalidKey,
            ErrorKind::ValueTooLarge,
            ErrorKind::Serialization,
            ErrorKind::NotFound,
            ErrorKind::NotAnInteger,
            ErrorKind::Overflow,
            ErrorKind::Unsupported,
            ErrorKind::Io,
            ErrorKind::Backend,
            ErrorKind::Lock,
            ErrorKind::LockNotOwned,
        ];
        for kind in kinds {
            let code = result_for_kind(kind);
            assert_ne!(code, POLYCACHE_RESULT_OTHER, "{kind:?}");
            assert_eq!(kind_for_result(code), Some(kind));
            assert_eq!(NAMES[code as usize].to_str().unwrap(), kind.as_str());
        }
        let not_kinds = [
            POLYCACHE_RESULT_OK,
            POLYCACHE_RESULT_MISS,
            POLYCACHE_RESULT_PANIC,
            POLYCACHE_RESULT_LOADER_FAILED,
            POLYCACHE_RESULT_NOT_STORED,
            999,
        ];
        for code in not_kinds {
            assert_eq!(kind_for_result(code), None, "{code}");
        }
    }
}
