//! The panic boundary: every exported function runs its body inside [`boundary`] (fallible
//! functions) or [`guard`] (the others), both built on the one `catch_unwind` in [`catch`],
//! so no panic ever unwinds into C.

use crate::error::polycache_error;
use crate::handle;
use crate::result::{polycache_result, Failure};
use std::any::Any;
use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `body`, catching a panic and giving back its message: the one `catch_unwind` of the
/// crate.
///
/// `AssertUnwindSafe`: after a panic the caller only gets a code back; the objects it passed
/// stay usable because the core keeps no invariant across a panic that a later call relies
/// on (its locks do not poison and its counters are atomics).
#[inline(always)]
fn catch<T>(body: impl FnOnce() -> T) -> Result<T, Cow<'static, str>> {
    catch_unwind(AssertUnwindSafe(body)).map_err(panic_message)
}

/// Runs the body of a function that returns no code; if it panics, returns `on_panic`.
#[inline(always)]
pub(crate) fn guard<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    catch(body).unwrap_or(on_panic)
}

/// Runs the body of a fallible function and turns its outcome into a code.
///
/// `Ok(code)` is returned as is (`OK` or `MISS`). A failure or a panic becomes its code and,
/// when `error_out` is not NULL, a new `polycache_error` written to `*error_out`.
#[inline(always)]
pub(crate) fn boundary(
    error_out: *mut *mut polycache_error,
    body: impl FnOnce() -> Result<polycache_result, Failure>,
) -> polycache_result {
    let outcome = catch(body).unwrap_or_else(|message| Err(Failure::Panic(message)));
    match outcome {
        Ok(code) => code,
        Err(failure) => {
            let code = failure.result();
            // Reporting allocates and formats; a panic there must not escape either.
            guard((), || {
                if !error_out.is_null() {
                    // SAFETY: error_out is not NULL, and by the contract of every fallible
                    // function a non-NULL error_out points to a writable `polycache_error *`.
                    unsafe { handle::write_error(error_out, polycache_error::new(&failure)) };
                }
            });
            code
        }
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> Cow<'static, str> {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        Cow::Borrowed(s)
    } else if let Ok(s) = payload.downcast::<String>() {
        Cow::Owned(*s)
    } else {
        Cow::Borrowed("a panic without a message")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{POLYCACHE_RESULT_MISS, POLYCACHE_RESULT_PANIC};
    use crate::{polycache_error_free, polycache_error_message, polycache_error_result};
    use std::ffi::CStr;

    #[test]
    fn a_panic_becomes_a_code_and_an_error() {
        let mut err: *mut polycache_error = std::ptr::null_mut();
        let code = boundary(&mut err, || panic!("boom {}", 42));
        assert_eq!(code, POLYCACHE_RESULT_PANIC);
        assert!(!err.is_null());
        // SAFETY: err came from boundary and is freed once below.
        unsafe {
            assert_eq!(polycache_error_result(err), POLYCACHE_RESULT_PANIC);
            let msg = CStr::from_ptr(polycache_error_message(err))
                .to_str()
                .unwrap();
            assert!(msg.contains("boom 42"), "{msg}");
            polycache_error_free(err);
        }
        assert_eq!(
            boundary(std::ptr::null_mut(), || panic!("static")),
            POLYCACHE_RESULT_PANIC
        );
    }

    #[test]
    fn success_codes_pass_through_and_leave_error_out_alone() {
        let mut err: *mut polycache_error = std::ptr::null_mut();
        assert_eq!(
            boundary(&mut err, || Ok(POLYCACHE_RESULT_MISS)),
            POLYCACHE_RESULT_MISS
        );
        assert!(err.is_null());
        assert_eq!(guard(7, || -> i32 { panic!("x") }), 7);
    }
}
