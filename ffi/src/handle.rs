//! The one module that turns pointers from C into Rust values and back.
//!
//! Handles are `Box`es: [`into_raw`] hands one to C, [`borrow`] lends it back for a call and
//! [`free`] takes it back. Arguments (text, bytes, arrays) are borrowed for one call and
//! out-parameters become `&mut MaybeUninit<T>`, so the exported functions check every
//! pointer up front and then write their outputs with safe code, only on success.
//!
//! Every function here is `unsafe` with the same contract, the one of the C API: a pointer is
//! NULL or valid for what its type says for the duration of the call. NULL is checked here
//! and reported as `Failure::NullParameter` naming the parameter.

use crate::error::polycache_error;
use crate::result::Failure;
use std::ffi::{c_char, CStr};
use std::mem::MaybeUninit;

/// The prologue of an exported function: checks its pointer parameters and binds each name
/// to what its reader here makes of it, or returns the reader's failure (a NULL names the
/// parameter). `c_args!(cache: borrow, value: bytes(len), keys: text_list[n])` reads
/// `borrow(cache, "cache")?`, `bytes(value, len, "value")?` and
/// `text_list(keys, n, "keys", "keys[i]")?` (a list reader also names its elements).
///
/// The `extern "C"` signatures stay written out in each module: cbindgen reads them from the
/// source, without expanding macros.
macro_rules! c_args {
    ($($name:ident : $read:ident $(($($extra:expr),+))? $([$($each:expr),+])?),+ $(,)?) => {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        let ($($name,)+) = unsafe {
            ($(c_arg!($name: $read $(($($extra),+))? $([$($each),+])?)?,)+)
        };
    };
}

/// One reader call of [`c_args!`].
macro_rules! c_arg {
    ($name:ident : $read:ident) => {
        $read($name, stringify!($name))
    };
    ($name:ident : $read:ident ($($extra:expr),+)) => {
        $read($name, $($extra,)+ stringify!($name))
    };
    ($name:ident : $read:ident [$($extra:expr),+]) => {
        $read($name, $($extra,)+ stringify!($name), concat!(stringify!($name), "[i]"))
    };
}

/// The opaque types handed to C as `Box` pointers. Only they may go through
/// [`into_raw`]/[`borrow`]/[`free`], so a pointer is never cast to the wrong type.
pub(crate) trait BoxHandle: Sized + Send + Sync + 'static {}

impl BoxHandle for crate::cache::polycache_cache {}
impl BoxHandle for crate::value::polycache_value {}
impl BoxHandle for crate::error::polycache_error {}
impl BoxHandle for crate::caches::polycache_caches {}
impl BoxHandle for crate::job::polycache_job {}
impl BoxHandle for crate::queue::polycache_queue {}
impl BoxHandle for crate::structures::polycache_redis_reply {}
impl BoxHandle for crate::key_scan::polycache_key_scan {}
impl BoxHandle for crate::lock::polycache_lock {}
impl BoxHandle for crate::options::polycache_options {}

/// Objects polycache lends to C for the duration of a callback (they live on Rust's stack):
/// only they may go through [`lend`]/[`borrow_lent`].
pub(crate) trait LentHandle: Sized + 'static {}

impl LentHandle for crate::loader::polycache_loader_output {}

/// A pointer to `value` for C to use during one callback; polycache keeps ownership.
#[inline]
pub(crate) fn lend<T: LentHandle>(value: &mut T) -> *mut T {
    value
}

/// Borrows back, mutably, an object lent to C by [`lend`].
///
/// # Safety
/// `ptr` is NULL or came from [`lend`] for this `T` during a callback that is still running,
/// and no other reference to the object is in use.
#[inline]
pub(crate) unsafe fn borrow_lent<'a, T: LentHandle>(
    ptr: *mut T,
    name: &'static str,
) -> Result<&'a mut T, Failure> {
    // SAFETY: by this function's contract a non-NULL ptr points to a live T that nothing
    // else is using during this call.
    unsafe { ptr.as_mut() }.ok_or(Failure::NullParameter(name))
}

/// Plain structs C passes by pointer for polycache to read (not handles): only they may go
/// through [`borrow_struct`].
pub(crate) trait CStruct: Sized + 'static {}

impl CStruct for crate::backend::polycache_backend_vtable {}

/// Borrows a struct the caller passes by pointer, for the rest of the call.
///
/// # Safety
/// `ptr` is NULL or points to a readable, initialized `T` that stays unchanged during the call.
#[inline]
pub(crate) unsafe fn borrow_struct<'a, T: CStruct>(
    ptr: *const T,
    name: &'static str,
) -> Result<&'a T, Failure> {
    // SAFETY: by this function's contract.
    unsafe { ptr.as_ref() }.ok_or(Failure::NullParameter(name))
}

/// Moves `value` to the heap and gives up ownership to C; [`free`] takes it back.
#[inline]
pub(crate) fn into_raw<T: BoxHandle>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Lends the handle `ptr` for the rest of the call.
///
/// # Safety
/// `ptr` is NULL or came from [`into_raw`] for this `T` and has not been freed.
#[inline]
pub(crate) unsafe fn borrow<'a, T: BoxHandle>(
    ptr: *const T,
    name: &'static str,
) -> Result<&'a T, Failure> {
    // SAFETY: by this function's contract a non-NULL ptr points to a live Box<T>, which is
    // only ever read through shared references (every handle type is Sync).
    unsafe { ptr.as_ref() }.ok_or(Failure::NullParameter(name))
}

/// Takes ownership of the handle back and drops it; NULL does nothing.
///
/// # Safety
/// `ptr` is NULL or came from [`into_raw`] for this `T`, has not been freed, and no other
/// thread uses it any more.
#[inline]
pub(crate) unsafe fn free<T: BoxHandle>(ptr: *mut T) {
    if !ptr.is_null() {
        // SAFETY: by this function's contract ptr is the unique owner of a Box<T> from
        // into_raw, so rebuilding and dropping the Box frees it exactly once.
        drop(unsafe { Box::from_raw(ptr) });
    }
}

/// Borrows NUL-terminated UTF-8 text.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays unchanged during the call.
#[inline]
pub(crate) unsafe fn text<'a>(ptr: *const c_char, name: &'static str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::NullParameter(name));
    }
    // SAFETY: ptr is not NULL and, by this function's contract, NUL-terminated.
    let cstr = unsafe { CStr::from_ptr(ptr) };
    cstr.to_str().map_err(|e| Failure::InvalidUtf8(name, e))
}

/// Borrows `len` bytes; `ptr` may be NULL only when `len` is 0.
///
/// # Safety
/// `ptr` is NULL or points to `len` readable bytes that stay unchanged during the call.
#[inline]
pub(crate) unsafe fn bytes<'a>(
    ptr: *const u8,
    len: usize,
    name: &'static str,
) -> Result<&'a [u8], Failure> {
    // SAFETY: same contract.
    unsafe { array(ptr, len, name) }
}

/// Borrows an array of `n` elements; `ptr` may be NULL only when `n` is 0.
///
/// # Safety
/// `ptr` is NULL or points to `n` initialized, aligned `T`s that stay unchanged during the
/// call.
#[inline]
pub(crate) unsafe fn array<'a, T>(
    ptr: *const T,
    n: usize,
    name: &'static str,
) -> Result<&'a [T], Failure> {
    if n == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::NullParameter(name));
    }
    // SAFETY: ptr is not NULL and, by this function's contract, points to n readable Ts.
    Ok(unsafe { std::slice::from_raw_parts(ptr, n) })
}

/// Borrows a C array of `n` strings; `ptr` may be NULL only when `n` is 0. `name` names
/// the array and `element` its elements in a NULL-parameter error.
///
/// # Safety
/// `ptr` is NULL or points to `n` pointers, each NULL or a NUL-terminated string, all
/// unchanged during the call.
pub(crate) unsafe fn text_list<'a>(
    ptr: *const *const c_char,
    n: usize,
    name: &'static str,
    element: &'static str,
) -> Result<Vec<&'a str>, Failure> {
    // SAFETY: same contract.
    let ptrs = unsafe { array(ptr, n, name) }?;
    ptrs.iter()
        // SAFETY: each element is NULL or a NUL-terminated string (same contract).
        .map(|&p| unsafe { text(p, element) })
        .collect()
}

/// Borrows `n` byte strings given as two C arrays: `ptrs[i]` points to `lens[i]` bytes
/// (NULL allowed when `lens[i]` is 0); the arrays may be NULL only when `n` is 0.
///
/// # Safety
/// `ptrs` and `lens` are NULL or point to `n` elements each, and each `ptrs[i]` is NULL or
/// points to `lens[i]` readable bytes, all unchanged during the call.
pub(crate) unsafe fn bytes_list<'a>(
    ptrs: *const *const u8,
    lens: *const usize,
    n: usize,
    name: &'static str,
    element: &'static str,
) -> Result<Vec<&'a [u8]>, Failure> {
    // SAFETY: same contract.
    let (ptrs, lens) = unsafe { (array(ptrs, n, name)?, array(lens, n, "lens")?) };
    ptrs.iter()
        .zip(lens)
        // SAFETY: each ptrs[i] is NULL or points to lens[i] readable bytes (same contract).
        .map(|(&p, &len)| unsafe { bytes(p, len, element) })
        .collect()
}

/// An out-parameter, checked now and written later with safe code.
///
/// # Safety
/// `ptr` is NULL or points to a writable, aligned `T` that nothing else accesses during the
/// call.
#[inline]
pub(crate) unsafe fn out<'a, T>(
    ptr: *mut T,
    name: &'static str,
) -> Result<&'a mut MaybeUninit<T>, Failure> {
    // SAFETY: by this function's contract a non-NULL ptr is writable and aligned, and
    // MaybeUninit<T> has T's layout; it is never read, so the old contents do not matter.
    unsafe { ptr.cast::<MaybeUninit<T>>().as_mut() }.ok_or(Failure::NullParameter(name))
}

/// A caller's array of `n` out-elements; `ptr` may be NULL only when `n` is 0.
///
/// # Safety
/// `ptr` is NULL or points to `n` writable, aligned `T`s that nothing else accesses during
/// the call.
#[inline]
pub(crate) unsafe fn out_array<'a, T>(
    ptr: *mut T,
    n: usize,
    name: &'static str,
) -> Result<&'a mut [MaybeUninit<T>], Failure> {
    if n == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(Failure::NullParameter(name));
    }
    // SAFETY: ptr is not NULL and, by this function's contract, points to n writable Ts;
    // MaybeUninit<T> has T's layout.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<MaybeUninit<T>>(), n) })
}

/// A caller's array of `n` out-elements kept past the call that received it, to be written
/// in a later call of the caller's (a `get_many`'s array, filled by `polycache_queue_drain`).
pub(crate) struct LaterOut<T> {
    ptr: *mut T,
    n: usize,
}

// SAFETY: the pointer is carried between threads but never dereferenced on the way: only
// `LaterOut::get` does, inside a later call of the caller, on the caller's thread.
unsafe impl<T> Send for LaterOut<T> {}

/// Checks a caller's array of `n` out-elements to be written later; `ptr` may be NULL only
/// when `n` is 0.
pub(crate) fn later_out<T>(
    ptr: *mut T,
    n: usize,
    name: &'static str,
) -> Result<LaterOut<T>, Failure> {
    if n > 0 && ptr.is_null() {
        return Err(Failure::NullParameter(name));
    }
    Ok(LaterOut { ptr, n })
}

impl<T> LaterOut<T> {
    /// The array, for writing.
    ///
    /// # Safety
    /// The caller's array is still valid: `n` writable, aligned `T`s that nothing else
    /// accesses during the call that writes them.
    pub(crate) unsafe fn get<'a>(&self) -> &'a mut [MaybeUninit<T>] {
        // SAFETY: by this function's contract; `later_out` checked NULL against n.
        unsafe { out_array(self.ptr, self.n, "later") }.unwrap_or(&mut [])
    }
}

/// Bytes the caller lets us fill: `cap` writable bytes at `ptr`; NULL only when `cap` is 0.
///
/// # Safety
/// `ptr` is NULL or points to `cap` writable bytes that nothing else accesses during the call.
#[inline]
pub(crate) unsafe fn out_bytes<'a>(
    ptr: *mut u8,
    cap: usize,
    name: &'static str,
) -> Result<&'a mut [MaybeUninit<u8>], Failure> {
    // SAFETY: same contract.
    unsafe { out_array(ptr, cap, name) }
}

/// Hands a new error object to the caller through `error_out`.
///
/// # Safety
/// `error_out` is not NULL and points to a writable `polycache_error *`.
pub(crate) unsafe fn write_error(error_out: *mut *mut polycache_error, error: polycache_error) {
    // SAFETY: by this function's contract error_out is writable; whatever it held is
    // overwritten, not freed, as documented for every error_out parameter.
    unsafe { error_out.write(into_raw(error)) };
}
