//! `polycache_set_log_callback`: the core's log records (a value failing its signature check,
//! a fail-open outage, a failed background refresh, …) handed to a C function.

use crate::error::polycache_error;
use crate::panic::boundary;
use crate::result::{polycache_result, Failure, POLYCACHE_RESULT_OK};
use log::{Level, LevelFilter, Log, Metadata, Record};
use polycache::{Error, ErrorKind};
use std::ffi::{c_char, c_void, CString};
use std::sync::RwLock;

/// How serious a log record is: `POLYCACHE_LOG_ERROR` (1) … `POLYCACHE_LOG_TRACE` (5), the
/// levels of Rust's `log` crate; `POLYCACHE_LOG_OFF` (0) as a maximum turns logging off.
pub type polycache_log_level = u32;
/// No record (as the maximum level: logging off).
pub const POLYCACHE_LOG_OFF: polycache_log_level = 0;
/// Something failed and was not handled (a refresh thread could not start).
pub const POLYCACHE_LOG_ERROR: polycache_log_level = 1;
/// Something failed and polycache carried on: a value failing its signature check answered
/// as a miss, a `fail_open` outage, a failed background refresh, a circuit breaker opening.
pub const POLYCACHE_LOG_WARN: polycache_log_level = 2;
/// A notable event: a circuit breaker closing, a subscriber reconnecting.
pub const POLYCACHE_LOG_INFO: polycache_log_level = 3;
/// Details for debugging (a connection closed by the server).
pub const POLYCACHE_LOG_DEBUG: polycache_log_level = 4;
/// Finer details (from the libraries under polycache only).
pub const POLYCACHE_LOG_TRACE: polycache_log_level = 5;

/// A log callback: receives the `user_data` given with it, the record's level, its target
/// (the Rust module, such as `"polycache::cache"`) and its message, both NUL-terminated UTF-8
/// valid only during the call.
///
/// It runs on whichever thread logged, polycache's own threads included, possibly on several
/// threads at once; it must return normally and must not call `polycache_set_log_callback`.
/// It may call other polycache functions.
pub type polycache_log_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: polycache_log_level,
        target: *const c_char,
        message: *const c_char,
    ),
>;

struct Sink {
    callback: unsafe extern "C" fn(*mut c_void, polycache_log_level, *const c_char, *const c_char),
    user_data: *mut c_void,
}

// SAFETY: the C API documents that the callback may be called from any thread, concurrently,
// with `user_data`; the caller promises that its function and data allow it.
unsafe impl Send for Sink {}
// SAFETY: as above.
unsafe impl Sync for Sink {}

/// The callback, read-locked while it runs: once `polycache_set_log_callback` returns, the
/// previous callback is neither running nor called again.
static SINK: RwLock<Option<Sink>> = RwLock::new(None);

struct CLogger;

static LOGGER: CLogger = CLogger;

impl Log for CLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        polycache::log_bridged(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let sink = SINK.read().unwrap_or_else(|e| e.into_inner());
        // Records above the callback's level were already dropped by `log`'s maximum level.
        let Some(sink) = sink.as_ref() else {
            return;
        };
        let target = c_text(record.target().to_owned());
        let message = c_text(record.args().to_string());
        // SAFETY: the callback and user_data are what the caller registered, callable from
        // any thread (its documented promise); both strings live until after the call.
        unsafe {
            (sink.callback)(
                sink.user_data,
                level_code(record.level()),
                target.as_ptr(),
                message.as_ptr(),
            )
        };
    }

    fn flush(&self) {}
}

/// `text` as a C string; a NUL inside (from a key in a message) becomes U+FFFD.
fn c_text(text: String) -> CString {
    CString::new(text).unwrap_or_else(|e| {
        let cleaned = String::from_utf8_lossy(&e.into_vec()).replace('\0', "\u{fffd}");
        CString::new(cleaned).unwrap_or_default()
    })
}

fn level_code(level: Level) -> polycache_log_level {
    match level {
        Level::Error => POLYCACHE_LOG_ERROR,
        Level::Warn => POLYCACHE_LOG_WARN,
        Level::Info => POLYCACHE_LOG_INFO,
        Level::Debug => POLYCACHE_LOG_DEBUG,
        Level::Trace => POLYCACHE_LOG_TRACE,
    }
}

fn level_filter(level: polycache_log_level) -> Option<LevelFilter> {
    Some(match level {
        POLYCACHE_LOG_OFF => LevelFilter::Off,
        POLYCACHE_LOG_ERROR => LevelFilter::Error,
        POLYCACHE_LOG_WARN => LevelFilter::Warn,
        POLYCACHE_LOG_INFO => LevelFilter::Info,
        POLYCACHE_LOG_DEBUG => LevelFilter::Debug,
        POLYCACHE_LOG_TRACE => LevelFilter::Trace,
        _ => return None,
    })
}

/// Sends polycache's log records up to `max_level` (`POLYCACHE_LOG_WARN` is a good default)
/// to `callback`, with `user_data`; a NULL `callback` (or `POLYCACHE_LOG_OFF`) turns logging
/// off. Replaces any earlier callback: when this returns, the earlier one is not running
/// and will not be called again, so its `user_data` may be freed. By default nothing is
/// logged.
///
/// Records from polycache come from `POLYCACHE_LOG_DEBUG` up; records from the libraries
/// under it (redis, rustls, …) only from `POLYCACHE_LOG_WARN` up. A `max_level` above
/// `POLYCACHE_LOG_TRACE` is `POLYCACHE_RESULT_CONFIGURATION`, and nothing changes.
#[no_mangle]
pub unsafe extern "C" fn polycache_set_log_callback(
    callback: polycache_log_callback,
    user_data: *mut c_void,
    max_level: polycache_log_level,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        let max = level_filter(max_level).ok_or_else(|| {
            Failure::Core(Error::new(
                ErrorKind::Configuration,
                format!("unknown log level {max_level}: expected 0 (off) to 5 (trace)"),
            ))
        })?;
        // The first call installs it; later ones fail harmlessly.
        let _ = log::set_logger(&LOGGER);
        let sink = callback
            .filter(|_| max != LevelFilter::Off)
            .map(|callback| Sink {
                callback,
                user_data,
            });
        // `log` then skips records above the level before they are even formatted (unless
        // the program installed a logger of its own, whose level is its business).
        if std::ptr::addr_eq(log::logger(), &LOGGER) {
            log::set_max_level(if sink.is_some() {
                max
            } else {
                LevelFilter::Off
            });
        }
        *SINK.write().unwrap_or_else(|e| e.into_inner()) = sink;
        Ok(POLYCACHE_RESULT_OK)
    })
}
