//! `polycache_backend_vtable`: a custom backend made of C function pointers, the C twin of a
//! Rust `Backend` impl (EsiPy's "your own cache"), and `polycache_cache_open_custom`.

use crate::cache::{polycache_cache, POLYCACHE_TTL_NEVER};
use crate::error::polycache_error;
use crate::handle::{self, borrow_struct, lend, out, text};
use crate::loader::{polycache_loader_output, UserData};
use crate::panic::boundary;
use crate::result::{
    kind_for_result, name_of, polycache_result, Failure, POLYCACHE_RESULT_MISS, POLYCACHE_RESULT_OK,
};
use polycache::{Backend, Cache, Error, ErrorKind, TimeToLive, Value};
use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

/// The callbacks of a custom backend: what `polycache_cache_open_custom` turns into a cache.
///
/// polycache calls them with full keys (`{key_prefix}:{version}:{key}`, as bytes that are
/// not NUL-terminated), after applying the key policy, the default TTL, `max_value_size` and
/// the statistics itself. `ttl_ms` is `POLYCACHE_TTL_NEVER` or a positive number of
/// milliseconds (never 0: an already-expired `set` arrives as `remove`).
///
/// Each callback returns `POLYCACHE_RESULT_OK`, or (`get` only) `POLYCACHE_RESULT_MISS`, or
/// an error code, which the operation that needed it returns: `POLYCACHE_RESULT_CONNECTION`,
/// `POLYCACHE_RESULT_TIMEOUT`, `POLYCACHE_RESULT_NOT_FOUND` (`incr` of a missing key),
/// `POLYCACHE_RESULT_NOT_AN_INTEGER`, … (the error kinds). Any other code (including
/// `POLYCACHE_RESULT_PANIC` and values this library does not know) becomes
/// `POLYCACHE_RESULT_BACKEND`, with a message naming the callback and the code; so does a
/// `get` that returns OK without calling `polycache_loader_output_set`. Out-parameters are
/// read only after OK. A callback must return normally (no `longjmp` or C++ exception out of
/// it).
///
/// `get`, `set` and `remove` are required. The others may be NULL: the operations that need
/// them return `POLYCACHE_RESULT_UNSUPPORTED` (`has_key` and the `_many` operations are built
/// on the single-key callbacks).
///
/// Threads: polycache calls the callbacks from every thread that uses a cache over this
/// backend, at the same time, and from its refresh threads (jobs); they must be thread-safe.
/// Lifetime: `polycache_cache_open_custom` copies the struct, so it may be a temporary.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct polycache_backend_vtable {
    /// Reads `key`: calls `polycache_loader_output_set(output, …)` and returns OK for a hit,
    /// or returns `POLYCACHE_RESULT_MISS`.
    pub get: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            key: *const u8,
            key_len: usize,
            output: *mut polycache_loader_output,
        ) -> polycache_result,
    >,
    /// Stores the `value_len` bytes at `value` (copy them: they are valid during the call).
    pub set: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            key: *const u8,
            key_len: usize,
            value: *const u8,
            value_len: usize,
            ttl_ms: i64,
        ) -> polycache_result,
    >,
    /// Stores only if `key` is absent, atomically; `*stored_out` = whether it stored.
    pub add: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            key: *const u8,
            key_len: usize,
            value: *const u8,
            value_len: usize,
            ttl_ms: i64,
            stored_out: *mut bool,
        ) -> polycache_result,
    >,
    /// Removes `key`; `*removed_out` = whether it was present.
    pub remove: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            key: *const u8,
            key_len: usize,
            removed_out: *mut bool,
        ) -> polycache_result,
    >,
    /// Gives `key` a new TTL; `*touched_out` = whether it was present.
    pub touch: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            key: *const u8,
            key_len: usize,
            ttl_ms: i64,
            touched_out: *mut bool,
        ) -> polycache_result,
    >,
    /// Adds `delta` to the ASCII decimal integer under `key`, atomically, keeping its TTL;
    /// `*value_out` = the new value. `POLYCACHE_RESULT_NOT_FOUND` for a missing key,
    /// `POLYCACHE_RESULT_NOT_AN_INTEGER`, `POLYCACHE_RESULT_OVERFLOW`.
    pub incr: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            key: *const u8,
            key_len: usize,
            delta: i64,
            value_out: *mut i64,
        ) -> polycache_result,
    >,
    /// Removes every key starting with the `prefix_len` bytes at `prefix` (everything when
    /// `prefix_len` is 0).
    pub clear: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            prefix: *const u8,
            prefix_len: usize,
        ) -> polycache_result,
    >,
    /// Releases `user_data`; called once, after the last call of any callback, when the
    /// last cache over this backend is freed (and the last job and background refresh using
    /// it are done). May be NULL.
    pub release: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
    /// How long `key` has left: returns OK with `*ttl_ms_out` = the milliseconds left or
    /// `POLYCACHE_TTL_NEVER`, or `POLYCACHE_RESULT_MISS` for a missing key. May be NULL:
    /// `polycache_cache_ttl` then gives `POLYCACHE_RESULT_UNSUPPORTED`.
    pub ttl: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            key: *const u8,
            key_len: usize,
            ttl_ms_out: *mut i64,
        ) -> polycache_result,
    >,
    /// Stores only if `key` is present, atomically; `*stored_out` = whether it stored. May
    /// be NULL: `polycache_cache_replace` then gives `POLYCACHE_RESULT_UNSUPPORTED`.
    pub replace: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            key: *const u8,
            key_len: usize,
            value: *const u8,
            value_len: usize,
            ttl_ms: i64,
            stored_out: *mut bool,
        ) -> polycache_result,
    >,
}

/// The core's `Backend` over a C vtable.
struct CBackend {
    vtable: polycache_backend_vtable,
    user_data: UserData,
}

/// `ttl` as the callbacks' `ttl_ms`: never, or at least 1 ms (rounded up).
fn ttl_ms(ttl: Option<Duration>) -> i64 {
    match ttl {
        None => POLYCACHE_TTL_NEVER,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000).max(1);
            i64::try_from(ms).unwrap_or(i64::MAX)
        }
    }
}

/// The error for a callback that returned `code`.
fn callback_error(callback: &str, code: polycache_result) -> Error {
    let kind = kind_for_result(code).unwrap_or(ErrorKind::Backend);
    Error::new(
        kind,
        format!(
            "the custom backend's {callback} callback returned {} ({code})",
            name_of(code)
        ),
    )
}

fn unsupported(callback: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("the custom backend has no {callback} callback"),
    )
}

/// The callback of a conditional store (`add`, `replace`).
type StoreIf = unsafe extern "C" fn(
    user_data: *mut c_void,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl_ms: i64,
    stored_out: *mut bool,
) -> polycache_result;

impl CBackend {
    /// Calls the conditional store `callback` (the vtable's `add` or `replace`): whether
    /// it stored.
    fn store_if(
        &self,
        callback: &str,
        store: Option<StoreIf>,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> polycache::Result<bool> {
        let store = store.ok_or_else(|| unsupported(callback))?;
        let mut stored = false;
        // SAFETY: see the `Backend` impl's comment; key, value and stored live until the
        // call returns.
        let code = unsafe {
            store(
                self.user_data.ptr(),
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
                ttl_ms(ttl),
                &mut stored,
            )
        };
        Self::check(callback, code).map(|()| stored)
    }

    /// Turns a callback's code into the core's result.
    fn check(callback: &str, code: polycache_result) -> polycache::Result<()> {
        match code {
            POLYCACHE_RESULT_OK => Ok(()),
            code => Err(callback_error(callback, code)),
        }
    }
}

// The callbacks are called with the caller's user_data and pointers into Rust values that
// live for the whole call; the vtable's contract (documented above) is the caller's promise
// that each non-NULL function pointer is valid and thread-safe.
impl Backend for CBackend {
    fn name(&self) -> &'static str {
        "c"
    }

    fn get(&self, key: &[u8]) -> polycache::Result<Option<Value>> {
        let get = self.vtable.get.ok_or_else(|| unsupported("get"))?;
        let mut output = polycache_loader_output::new();
        // SAFETY: see the impl's comment; key and output live until the call returns.
        let code = unsafe {
            get(
                self.user_data.ptr(),
                key.as_ptr(),
                key.len(),
                lend(&mut output),
            )
        };
        match code {
            POLYCACHE_RESULT_MISS => Ok(None),
            POLYCACHE_RESULT_OK => match output.take() {
                Some(value) => Ok(Some(Value::from(value))),
                None => Err(Error::new(
                    ErrorKind::Backend,
                    "the custom backend's get callback returned ok without calling \
                     polycache_loader_output_set",
                )),
            },
            code => Err(callback_error("get", code)),
        }
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> polycache::Result<()> {
        let set = self.vtable.set.ok_or_else(|| unsupported("set"))?;
        // SAFETY: see the impl's comment; key and value live until the call returns.
        let code = unsafe {
            set(
                self.user_data.ptr(),
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
                ttl_ms(ttl),
            )
        };
        Self::check("set", code)
    }

    fn add(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> polycache::Result<bool> {
        self.store_if("add", self.vtable.add, key, value, ttl)
    }

    fn delete(&self, key: &[u8]) -> polycache::Result<bool> {
        let remove = self.vtable.remove.ok_or_else(|| unsupported("remove"))?;
        let mut removed = false;
        // SAFETY: see the impl's comment; key and removed live until the call returns.
        let code = unsafe { remove(self.user_data.ptr(), key.as_ptr(), key.len(), &mut removed) };
        Self::check("remove", code).map(|()| removed)
    }

    fn touch(&self, key: &[u8], ttl: Option<Duration>) -> polycache::Result<bool> {
        let touch = self.vtable.touch.ok_or_else(|| unsupported("touch"))?;
        let mut touched = false;
        // SAFETY: see the impl's comment; key and touched live until the call returns.
        let code = unsafe {
            touch(
                self.user_data.ptr(),
                key.as_ptr(),
                key.len(),
                ttl_ms(ttl),
                &mut touched,
            )
        };
        Self::check("touch", code).map(|()| touched)
    }

    fn incr(&self, key: &[u8], delta: i64) -> polycache::Result<i64> {
        let incr = self.vtable.incr.ok_or_else(|| unsupported("incr"))?;
        let mut value = 0;
        // SAFETY: see the impl's comment; key and value live until the call returns.
        let code = unsafe {
            incr(
                self.user_data.ptr(),
                key.as_ptr(),
                key.len(),
                delta,
                &mut value,
            )
        };
        Self::check("incr", code).map(|()| value)
    }

    fn clear(&self, prefix: &[u8]) -> polycache::Result<()> {
        let clear = self.vtable.clear.ok_or_else(|| unsupported("clear"))?;
        // SAFETY: see the impl's comment; prefix lives until the call returns.
        let code = unsafe { clear(self.user_data.ptr(), prefix.as_ptr(), prefix.len()) };
        Self::check("clear", code)
    }

    fn ttl(&self, key: &[u8]) -> polycache::Result<TimeToLive> {
        let ttl = self.vtable.ttl.ok_or_else(|| unsupported("ttl"))?;
        let mut ms = 0;
        // SAFETY: see the impl's comment; key and ms live until the call returns.
        let code = unsafe { ttl(self.user_data.ptr(), key.as_ptr(), key.len(), &mut ms) };
        match code {
            POLYCACHE_RESULT_MISS => Ok(TimeToLive::Missing),
            POLYCACHE_RESULT_OK if ms == POLYCACHE_TTL_NEVER => Ok(TimeToLive::Forever),
            POLYCACHE_RESULT_OK if ms > 0 => {
                Ok(TimeToLive::Left(Duration::from_millis(ms.unsigned_abs())))
            }
            POLYCACHE_RESULT_OK => Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "the custom backend's ttl callback answered {ms} ms: expected a positive \
                     count or POLYCACHE_TTL_NEVER"
                ),
            )),
            code => Err(callback_error("ttl", code)),
        }
    }

    fn replace(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> polycache::Result<bool> {
        self.store_if("replace", self.vtable.replace, key, value, ttl)
    }
}

/// Opens a cache over your own backend: the callbacks in `*vtable` with `user_data`.
///
/// `options` is NULL, or the options every URL takes, as a URL's query string
/// (`"key_prefix=app&timeout=60&max_value_size=1048576&fail_open=true"`); an unknown option
/// gives `POLYCACHE_RESULT_CONFIGURATION`. `*vtable` is copied. `get`, `set` and `remove`
/// must not be NULL (`POLYCACHE_RESULT_NULL_PARAMETER` names the missing one).
///
/// On success `*cache_out` receives a new cache owned by the caller, to be released with
/// `polycache_cache_free`, and polycache owns `user_data` from then on: `vtable->release`
/// (if not NULL) is called once, after the last callback, when the last cache over this
/// backend is freed. On failure nothing is called and the caller still owns `user_data`.
/// `user_data` may be NULL; polycache never reads through it.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_open_custom(
    vtable: *const polycache_backend_vtable,
    user_data: *mut c_void,
    options: *const c_char,
    cache_out: *mut *mut polycache_cache,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(vtable: borrow_struct, cache_out: out);
        let options = if options.is_null() {
            None
        } else {
            // SAFETY: options is a NUL-terminated string (the C API contract).
            Some(unsafe { text(options, "options")? })
        };
        for (callback, missing) in [
            ("vtable->get", vtable.get.is_none()),
            ("vtable->set", vtable.set.is_none()),
            ("vtable->remove", vtable.remove.is_none()),
        ] {
            if missing {
                return Err(Failure::NullParameter(callback));
            }
        }
        let mut backend = Arc::new(CBackend {
            vtable: *vtable,
            user_data: UserData::new(user_data, vtable.release),
        });
        let mut builder = Cache::with_backend(backend.clone());
        if let Some(options) = options {
            builder = builder.options(options);
        }
        match builder.build() {
            Ok(cache) => {
                cache_out.write(handle::into_raw(polycache_cache::new(cache)));
                Ok(POLYCACHE_RESULT_OK)
            }
            Err(e) => {
                // The builder dropped its copy: ours is the last, and the caller keeps
                // user_data, so release must not run.
                if let Some(backend) = Arc::get_mut(&mut backend) {
                    backend.user_data.disarm();
                }
                Err(e.into())
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_reach_callbacks_as_never_or_at_least_one_ms() {
        assert_eq!(ttl_ms(None), POLYCACHE_TTL_NEVER);
        assert_eq!(ttl_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(ttl_ms(Some(Duration::from_micros(1500))), 2);
        assert_eq!(ttl_ms(Some(Duration::from_secs(60))), 60_000);
        assert_eq!(ttl_ms(Some(Duration::MAX)), i64::MAX);
    }

    #[test]
    fn callback_codes_become_kinds_or_backend_errors() {
        use crate::result::*;
        let e = callback_error("get", POLYCACHE_RESULT_CONNECTION);
        assert_eq!(e.kind(), ErrorKind::Connection);
        assert!(e.message().contains("get callback returned connection (7)"));
        for code in [POLYCACHE_RESULT_PANIC, POLYCACHE_RESULT_MISS, 12345] {
            assert_eq!(callback_error("set", code).kind(), ErrorKind::Backend);
        }
    }
}
