//! A key and its value in one reference-counted heap buffer behind a thin pointer.
//!
//! The memory store keeps one per entry, and a [`Value`](super::Value) read from it shares
//! the buffer instead of copying the bytes. Against `Arc<[u8]>` it saves 8 bytes in every
//! holder (one pointer, no length) and 12 in the allocation (a 4-byte count, no weak count,
//! and lengths as LEB128 varints: one byte each below 128), which is what brings a
//! million-entry store under glibc's next smaller malloc chunk (docs/backends/memory.md,
//! "Memory per entry").
//!
//! Layout of the allocation (alignment 4):
//!
//! ```text
//! count: AtomicU32 | key length: varint | value length: varint | key | value
//! ```

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};

/// The bytes before the lengths: the reference count.
const COUNT_BYTES: usize = std::mem::size_of::<AtomicU32>();

/// The most references a buffer counts. A clone that finds this many copies the bytes into
/// a buffer of its own instead of counting one more: the count never overflows and no
/// caller's process is aborted. The headroom up to `u32::MAX` (another 2³¹) is for clones
/// racing past the test, each of which takes its increment back at once.
const MAX_COUNT: u32 = i32::MAX as u32;

/// A key and a value in one shared, immutable heap buffer (see the module's doc).
///
/// Cloning counts one more reference (an atomic increment), dropping one less; the last
/// drop frees the buffer. `Send + Sync`: the bytes never change after construction and the
/// count is atomic.
pub(crate) struct EntryBuf {
    /// The start of the allocation (the count), made by [`EntryBuf::new`] and kept alive
    /// by the count this handle holds.
    ptr: NonNull<u8>,
    /// Owns shared, immutable bytes, as `Arc<[u8]>` does.
    _owns: PhantomData<[u8]>,
}

// SAFETY: the buffer's bytes are written before the handle exists and changed afterwards
// only through `&mut EntryBuf` while the count is 1 (`rewrite_value`), when no other handle
// exists to read them; the count is an atomic. Sharing or sending a handle between threads
// is therefore as sound as for `Arc<[u8]>`.
unsafe impl Send for EntryBuf {}
// SAFETY: as for `Send` above: `&EntryBuf` only reads bytes that no one may change while it
// lives and updates the atomic count.
unsafe impl Sync for EntryBuf {}

/// Where the parts of a buffer are, decoded from its header.
#[derive(Clone, Copy)]
struct Parts {
    /// Offset of the key from the start of the allocation.
    key_at: usize,
    key_len: usize,
    value_len: usize,
}

impl Parts {
    #[inline]
    fn value_at(self) -> usize {
        self.key_at + self.key_len
    }
    #[inline]
    fn size(self) -> usize {
        self.value_at() + self.value_len
    }
}

/// The bytes `n` takes as a LEB128 varint (1 below 128, at most 10).
#[inline]
fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Writes `n` as a LEB128 varint at `out`, and returns the byte after it.
///
/// # Safety
///
/// `out` must be valid for writing [`varint_len`]`(n)` bytes.
#[inline]
unsafe fn write_varint(mut out: *mut u8, mut n: usize) -> *mut u8 {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            // SAFETY: the caller gave room for every byte of the varint; this is its last.
            unsafe { out.write(low) };
            // SAFETY: one past the last byte written, within or one past the allocation.
            return unsafe { out.add(1) };
        }
        // SAFETY: as above; more bytes follow, so this one is within the varint's room.
        unsafe {
            out.write(low | 0x80);
            out = out.add(1);
        }
    }
}

/// Reads a LEB128 varint at `at`: its value and the offset after it.
///
/// # Safety
///
/// `base + at` must start a varint written by [`write_varint`] inside a live buffer.
#[inline]
unsafe fn read_varint(base: *const u8, mut at: usize) -> (usize, usize) {
    let mut n = 0usize;
    let mut shift = 0;
    loop {
        // SAFETY: the caller promises a whole varint from `at` on; every byte before its
        // last has the continuation bit set, so the loop reads within it.
        let b = unsafe { *base.add(at) };
        at += 1;
        n |= usize::from(b & 0x7f) << shift;
        if b < 0x80 {
            return (n, at);
        }
        shift += 7;
    }
}

impl EntryBuf {
    /// A buffer holding `key` then `value`, counting one reference (this handle).
    ///
    /// Panics only when the two lengths together do not fit in `isize` (as a `Vec` of them
    /// would), and calls [`handle_alloc_error`] when the allocator fails (as `Arc` does).
    pub(crate) fn new(key: &[u8], value: &[u8]) -> EntryBuf {
        let key_at = COUNT_BYTES + varint_len(key.len()) + varint_len(value.len());
        let size = key_at
            .checked_add(key.len())
            .and_then(|n| n.checked_add(value.len()))
            .expect("an entry smaller than isize::MAX bytes");
        let layout = Layout::from_size_align(size, std::mem::align_of::<AtomicU32>())
            .expect("an entry smaller than isize::MAX bytes");
        // SAFETY: `layout` has a non-zero size (at least the count and two varints).
        let base = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(base) else {
            handle_alloc_error(layout)
        };
        // SAFETY: `base` is a fresh allocation of `size` bytes aligned for `AtomicU32`: the
        // count goes at its start, the two varints right after it (`key_at - COUNT_BYTES`
        // bytes, as measured above), then `key.len()` and `value.len()` bytes, which end
        // exactly at `size`. The sources are caller slices, which cannot overlap a fresh
        // allocation.
        unsafe {
            base.cast::<AtomicU32>().write(AtomicU32::new(1));
            let at = write_varint(base.add(COUNT_BYTES), key.len());
            let at = write_varint(at, value.len());
            debug_assert_eq!(at, base.add(key_at));
            std::ptr::copy_nonoverlapping(key.as_ptr(), at, key.len());
            std::ptr::copy_nonoverlapping(value.as_ptr(), at.add(key.len()), value.len());
        }
        EntryBuf {
            ptr,
            _owns: PhantomData,
        }
    }

    #[inline]
    fn count(&self) -> &AtomicU32 {
        // SAFETY: the allocation starts with the count (aligned for it, initialised in
        // `new`) and lives at least as long as `self`, which holds one of its references.
        unsafe { self.ptr.cast::<AtomicU32>().as_ref() }
    }

    /// The header: where the key starts and the two lengths.
    #[inline]
    fn parts(&self) -> Parts {
        let base = self.ptr.as_ptr().cast_const();
        // SAFETY: `new` wrote two whole varints right after the count, so the bytes at
        // COUNT_BYTES and COUNT_BYTES + 1 exist (each varint has at least one byte), and
        // when both are below 0x80 they are the two one-byte varints.
        let (k, v) = unsafe { (*base.add(COUNT_BYTES), *base.add(COUNT_BYTES + 1)) };
        if (k | v) < 0x80 {
            return Parts {
                key_at: COUNT_BYTES + 2,
                key_len: usize::from(k),
                value_len: usize::from(v),
            };
        }
        // SAFETY: as above, the key's varint starts at COUNT_BYTES and the value's right
        // after it.
        let (key_len, at) = unsafe { read_varint(base, COUNT_BYTES) };
        // SAFETY: see above.
        let (value_len, key_at) = unsafe { read_varint(base, at) };
        Parts {
            key_at,
            key_len,
            value_len,
        }
    }

    /// `len` bytes from `at` on.
    ///
    /// # Safety
    ///
    /// `at..at + len` must lie within the key and value of this buffer.
    #[inline]
    unsafe fn slice(&self, at: usize, len: usize) -> &[u8] {
        // SAFETY: the caller keeps the range inside the bytes `new` initialised; they never
        // change and live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(at), len) }
    }

    /// The key.
    #[inline]
    pub(crate) fn key(&self) -> &[u8] {
        let p = self.parts();
        // SAFETY: the key lies at `key_at` for `key_len` bytes, as `new` wrote it.
        unsafe { self.slice(p.key_at, p.key_len) }
    }

    /// The value.
    #[inline]
    pub(crate) fn value(&self) -> &[u8] {
        let p = self.parts();
        // SAFETY: the value follows the key for `value_len` bytes, as `new` wrote it.
        unsafe { self.slice(p.value_at(), p.value_len) }
    }

    /// The lengths of the key and of the value.
    #[inline]
    pub(crate) fn lens(&self) -> (usize, usize) {
        let p = self.parts();
        (p.key_len, p.value_len)
    }

    /// The value, as bytes that share this buffer (one more reference, no copy).
    #[cfg(test)]
    pub(crate) fn value_part(&self) -> ValuePart {
        let p = self.parts();
        ValuePart {
            buf: self.clone(),
            at: p.value_at(),
            len: p.value_len,
        }
    }

    /// The key, and where the value lies: the header read once, for a lookup that
    /// compares the key and then hands out the value ([`EntryBuf::span_part`]).
    #[inline]
    pub(crate) fn key_and_span(&self) -> (&[u8], ValueSpan) {
        let p = self.parts();
        let span = ValueSpan {
            at: p.value_at(),
            len: p.value_len,
        };
        // SAFETY: the key lies at `key_at` for `key_len` bytes, as `new` wrote it.
        (unsafe { self.slice(p.key_at, p.key_len) }, span)
    }

    /// [`EntryBuf::value_part`] at `span`, without reading the header again.
    ///
    /// # Safety
    ///
    /// `span` comes from [`EntryBuf::key_and_span`] of this buffer (or of a handle to the
    /// same allocation), and the value has not been rewritten with another length since.
    #[inline]
    pub(crate) unsafe fn span_part(&self, span: ValueSpan) -> ValuePart {
        ValuePart {
            buf: self.clone(),
            at: span.at,
            len: span.len,
        }
    }

    /// The bytes of the value at `span`, without reading the header again.
    ///
    /// # Safety
    ///
    /// As for [`EntryBuf::span_part`].
    #[inline]
    pub(crate) unsafe fn span_bytes(&self, span: ValueSpan) -> &[u8] {
        // SAFETY: the caller's promise: `span` is where the value lies in this buffer.
        unsafe { self.slice(span.at, span.len) }
    }

    /// [`EntryBuf::into_value_part`] at `span`, without reading the header again.
    ///
    /// # Safety
    ///
    /// As for [`EntryBuf::span_part`].
    #[inline]
    pub(crate) unsafe fn into_span_part(self, span: ValueSpan) -> ValuePart {
        ValuePart {
            buf: self,
            at: span.at,
            len: span.len,
        }
    }

    /// The value, as bytes that keep this handle's reference to the buffer (no count).
    #[cfg(test)]
    pub(crate) fn into_value_part(self) -> ValuePart {
        let p = self.parts();
        ValuePart {
            buf: self,
            at: p.value_at(),
            len: p.value_len,
        }
    }

    /// Writes `value` over the value this buffer holds, in place, when this handle is the
    /// only one and `value` has the same length; answers whether it did (when not, nothing
    /// changed).
    ///
    /// The store calls it on an overwrite of a present key, which then costs a copy of the
    /// bytes instead of an allocation and a free. A buffer some reader still holds (a
    /// [`Value`](super::Value) read earlier, the Python face's shared-object table) is left
    /// as it is: its bytes never change under a holder. Only an equal length is rewritten,
    /// so the size that `Drop` computes from the header to free the buffer stays the one it
    /// was allocated with.
    #[inline]
    pub(crate) fn rewrite_value(&mut self, value: &[u8]) -> bool {
        // Acquire, paired with the Release decrement of every other handle's drop (as in
        // `Drop` and `Arc::get_mut`): a count of 1 means each of them has dropped, and its
        // reads of the old bytes happen before the writes below.
        if self.count().load(Ordering::Acquire) != 1 {
            return false;
        }
        let p = self.parts();
        if p.value_len != value.len() {
            return false;
        }
        // The copy: a value of 4 to 32 bytes is two overlapping moves, not a call to `memcpy`.
        // SAFETY: the count is 1, so this handle is the only one: every other has dropped
        // (see above), and no new one can appear while `self` is borrowed mutably, because
        // a handle is only made by cloning an existing one (in the store, that clone is
        // taken under the shard's lock, which the writer holds exclusively). No slice of
        // the bytes outlives a borrow of a handle, so none is alive now. The value lies at
        // `value_at` for `value_len == value.len()` bytes inside the allocation, and
        // `value` cannot overlap it (no one else can see these bytes to lend them).
        unsafe { crate::cache::key::copy_name(value, self.ptr.as_ptr().add(p.value_at())) }
        true
    }

    /// A new buffer with the same key and value (used when the count is at its maximum).
    #[cold]
    #[inline(never)]
    fn copy(&self) -> EntryBuf {
        EntryBuf::new(self.key(), self.value())
    }

    /// Sets the count, for tests of the saturation path.
    #[cfg(test)]
    fn set_count(&self, n: u32) {
        self.count().store(n, Ordering::Relaxed);
    }
}

impl Clone for EntryBuf {
    #[inline]
    fn clone(&self) -> EntryBuf {
        // Relaxed, as `Arc::clone`: the new handle is made from an existing one, which keeps
        // the buffer alive meanwhile; no other memory is published by the increment.
        let old = self.count().fetch_add(1, Ordering::Relaxed);
        if old >= MAX_COUNT {
            // Take the increment back (this handle still counts, so the count stays above
            // zero) and copy instead. Between the add and this subtraction the count is
            // above MAX_COUNT by at most the number of threads doing the same at once,
            // which is far below the 2³¹ of headroom: it never wraps.
            self.count().fetch_sub(1, Ordering::Relaxed);
            return self.copy();
        }
        EntryBuf {
            ptr: self.ptr,
            _owns: PhantomData,
        }
    }
}

impl Drop for EntryBuf {
    #[inline]
    fn drop(&mut self) {
        // Release, then Acquire on the last drop, as `Arc`'s drop: every other handle's use
        // of the bytes happens before the deallocation.
        if self.count().fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        let size = self.parts().size();
        // SAFETY: this was the last reference, so nothing else reads the buffer; it was
        // allocated in `new` with this size (the header is unchanged) and this alignment.
        unsafe {
            dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(size, std::mem::align_of::<AtomicU32>()),
            )
        };
    }
}

/// Where a buffer's value lies, as [`EntryBuf::key_and_span`] read it from the header.
#[derive(Clone, Copy)]
pub(crate) struct ValueSpan {
    at: usize,
    len: usize,
}

/// A value's bytes inside an [`EntryBuf`], holding a reference to it.
#[derive(Clone)]
pub(crate) struct ValuePart {
    buf: EntryBuf,
    /// Invariant: `at..at + len` lies inside the buffer's value.
    at: usize,
    len: usize,
}

impl ValuePart {
    /// The bytes (a `Value` reads them through its own pointer: [`ValuePart::into_raw`]).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the invariant of `at` and `len` (set from the header in `value_part`,
        // only narrowed by `skip`).
        unsafe { self.buf.slice(self.at, self.len) }
    }

    /// The bytes without the first `n` (all of them when shorter), sharing the buffer.
    #[cfg(test)]
    pub(crate) fn skip(mut self, n: usize) -> ValuePart {
        let n = n.min(self.len);
        self.at += n;
        self.len -= n;
        self
    }
}

/// Raw handles, for [`Value`](super::Value), which keeps its owner packed beside its bytes.
impl EntryBuf {
    /// The handle as its pointer, keeping its reference; [`EntryBuf::from_raw`] takes it back.
    #[inline]
    pub(crate) fn into_raw(self) -> NonNull<u8> {
        let ptr = self.ptr;
        std::mem::forget(self);
        ptr
    }

    /// The handle [`EntryBuf::into_raw`] gave as `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` comes from [`EntryBuf::into_raw`], and the reference it kept is taken back at
    /// most once (a handle made here and then dropped counts as taking it back).
    #[inline]
    pub(crate) unsafe fn from_raw(ptr: NonNull<u8>) -> EntryBuf {
        EntryBuf {
            ptr,
            _owns: PhantomData,
        }
    }
}

impl ValuePart {
    /// The buffer as a raw handle ([`EntryBuf::into_raw`]), the first byte and the length.
    #[inline]
    pub(crate) fn into_raw(self) -> (NonNull<u8>, NonNull<u8>, usize) {
        // SAFETY: `at` lies within the allocation (the part's invariant), so the offset
        // pointer stays in it and is not null.
        let first = unsafe { self.buf.ptr.add(self.at) };
        (self.buf.into_raw(), first, self.len)
    }
}

#[cfg(test)]
mod raw_tests {
    use super::*;
    use crate::Value;

    #[test]
    fn a_value_cloned_at_the_maximum_count_copies_its_part_of_the_buffer() {
        // Longer than a `Value` holds in itself, so that a clone counts a reference.
        let b = EntryBuf::new(b"key", b"a value longer than 16 bytes");
        let v = Value::of_entry(&b).skip(2);
        b.set_count(MAX_COUNT);
        let copy = v.clone();
        assert_eq!(copy.as_bytes(), b"value longer than 16 bytes");
        assert_ne!(copy.as_ptr(), v.as_ptr(), "its own buffer");
        b.set_count(2);
        drop((v, copy));
        assert_eq!(b.count().load(Ordering::Relaxed), 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn check(key: &[u8], value: &[u8]) {
        let b = EntryBuf::new(key, value);
        assert_eq!(b.key(), key);
        assert_eq!(b.value(), value);
        assert_eq!(b.lens(), (key.len(), value.len()));
        assert_eq!(b.value_part().bytes(), value);
        let c = b.clone();
        drop(b);
        assert_eq!(c.key(), key);
        assert_eq!(c.value(), value);
    }

    #[test]
    fn holds_key_and_value_of_any_length() {
        check(b"", b"");
        check(b"k", b"");
        check(b"", b"v");
        check(b":1:key-000000000000", b"\x80\x05\x95\x14\x00");
        for n in [
            126, 127, 128, 129, 16_383, 16_384, 16_385, 2_097_151, 2_097_152,
        ] {
            let long: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            check(&long, b"v");
            check(b"k", &long);
            check(&long, &long);
        }
    }

    #[test]
    fn varints_have_the_leb128_lengths() {
        for (n, len) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (usize::MAX, 10),
        ] {
            assert_eq!(varint_len(n), len, "{n}");
            let mut out = [0u8; 10];
            // SAFETY: `out` has room for the longest varint (10 bytes).
            let end = unsafe { write_varint(out.as_mut_ptr(), n) };
            assert_eq!(end as usize - out.as_ptr() as usize, len);
            // SAFETY: `out` now starts with the whole varint just written.
            assert_eq!(unsafe { read_varint(out.as_ptr(), 0) }, (n, len));
        }
    }

    #[test]
    fn one_byte_lengths_leave_56_bytes_for_a_50_byte_entry() {
        // The benchmark's entry: a 19-byte key and a 31-byte value, in a 56-byte
        // allocation (glibc's 64-byte chunk).
        let b = EntryBuf::new(&[b'k'; 19], &[b'v'; 31]);
        assert_eq!(b.parts().size(), 56);
        assert_eq!(std::mem::size_of::<EntryBuf>(), 8);
        assert_eq!(std::mem::size_of::<Option<EntryBuf>>(), 8);
    }

    #[test]
    fn value_parts_share_the_buffer_and_skip_within_it() {
        let b = EntryBuf::new(b"key", b"value");
        let part = b.value_part();
        assert_eq!(part.bytes().as_ptr(), b.value().as_ptr());
        assert_eq!(b.count().load(Ordering::Relaxed), 2);
        assert_eq!(part.clone().skip(2).bytes(), b"lue");
        assert_eq!(part.clone().skip(5).bytes(), b"");
        assert_eq!(part.clone().skip(99).bytes(), b"");
        let owned = b.clone().into_value_part();
        assert_eq!(owned.bytes().as_ptr(), b.value().as_ptr());
        assert_eq!(
            b.count().load(Ordering::Relaxed),
            3,
            "taken over, not counted again"
        );
        drop(owned);
        drop(b);
        assert_eq!(part.bytes(), b"value");
        assert_eq!(part.buf.count().load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_clone_at_the_maximum_count_copies_instead() {
        let b = EntryBuf::new(b"key", b"value");
        b.set_count(MAX_COUNT);
        let c = b.clone();
        assert_ne!(c.ptr, b.ptr, "a new buffer");
        assert_eq!((c.key(), c.value()), (&b"key"[..], &b"value"[..]));
        assert_eq!(c.count().load(Ordering::Relaxed), 1);
        assert_eq!(b.count().load(Ordering::Relaxed), MAX_COUNT, "unchanged");
        let part = b.value_part();
        assert_ne!(part.bytes().as_ptr(), b.value().as_ptr());
        assert_eq!(part.bytes(), b"value");
        // Below the maximum, clones count again.
        b.set_count(MAX_COUNT - 1);
        let d = b.clone();
        assert_eq!(d.ptr, b.ptr);
        assert_eq!(b.count().load(Ordering::Relaxed), MAX_COUNT);
        // Back to the real count (b and d) so that the buffer is freed once.
        b.set_count(2);
    }

    #[test]
    fn a_sole_handle_rewrites_a_value_of_the_same_length_in_place() {
        for (key, old, new) in [
            (&b"key"[..], &b"value"[..], &b"VALUE"[..]),
            (b"", b"", b""),
            (&[b'k'; 200][..], &[1u8; 300][..], &[2u8; 300][..]),
        ] {
            let mut b = EntryBuf::new(key, old);
            let at = b.value().as_ptr();
            assert!(b.rewrite_value(new));
            assert_eq!((b.key(), b.value()), (key, new));
            assert_eq!(b.value().as_ptr(), at, "the same buffer");
            assert_eq!(b.lens(), (key.len(), new.len()));
        }
    }

    #[test]
    fn a_rewrite_leaves_other_lengths_and_held_buffers_unchanged() {
        let mut b = EntryBuf::new(b"key", b"value");
        assert!(!b.rewrite_value(b"longer value"));
        assert!(!b.rewrite_value(b"shrt"));
        assert_eq!(b.value(), b"value");
        // A reader's handle, or a value part, keeps the old bytes: no rewrite.
        let reader = b.clone();
        assert!(!b.rewrite_value(b"VALUE"));
        let part = b.value_part();
        drop(reader);
        assert!(!b.rewrite_value(b"VALUE"));
        assert_eq!(part.bytes(), b"value");
        drop(part);
        assert!(b.rewrite_value(b"VALUE"));
        assert_eq!(b.value(), b"VALUE");
    }

    #[test]
    fn readers_on_other_threads_never_see_a_rewrite() {
        // The store's arrangement: the stored handle behind a lock; readers clone it under
        // the lock and read (then drop) their clone outside it; the writer rewrites under
        // the lock. A reader's bytes must stay one whole value from its clone to its drop.
        let stored = Arc::new(std::sync::Mutex::new(EntryBuf::new(b"k", &[0u8; 64])));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let stored = Arc::clone(&stored);
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        let held = stored.lock().unwrap().clone();
                        let first = held.value()[0];
                        if i % 7 == 0 {
                            std::thread::yield_now();
                        }
                        assert!(held.value().iter().all(|&b| b == first), "torn read");
                        assert_eq!(held.value()[0], first, "changed under a holder");
                    }
                })
            })
            .collect();
        let writer = {
            let stored = Arc::clone(&stored);
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let byte = (i % 251) as u8;
                    let mut b = stored.lock().unwrap();
                    if !b.rewrite_value(&[byte; 64]) {
                        *b = EntryBuf::new(b"k", &[byte; 64]);
                    }
                }
            })
        };
        writer.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
        let mut b = stored.lock().unwrap();
        assert_eq!(b.count().load(Ordering::Relaxed), 1);
        assert_eq!(b.value(), &[(19_999 % 251) as u8; 64]);
        assert!(b.rewrite_value(&[7; 64]), "the readers are gone");
        assert_eq!(b.value(), &[7; 64]);
    }

    #[test]
    fn threads_clone_and_drop_concurrently() {
        let b = Arc::new(EntryBuf::new(b"shared-key", &[7u8; 300]));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..20_000 {
                        held.push(if i % 2 == 0 {
                            EntryBuf::clone(&b)
                        } else {
                            b.value_part().buf
                        });
                        if held.len() > 16 + t {
                            held.drain(..8);
                        }
                        assert_eq!(held.last().map(|h| h.value().len()), Some(300));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.count().load(Ordering::Relaxed), 1);
        assert_eq!(b.key(), b"shared-key");
    }

    #[test]
    fn the_last_of_clones_on_several_threads_frees_the_buffer() {
        // Under a sanitizer or valgrind, a double free or a leak would show here too.
        for _ in 0..200 {
            let b = EntryBuf::new(b"k", b"v");
            let clones: Vec<_> = (0..4).map(|_| b.clone()).collect();
            assert_eq!(b.count().load(Ordering::Relaxed), 5);
            drop(b);
            let threads: Vec<_> = clones
                .into_iter()
                .map(|c| {
                    std::thread::spawn(move || {
                        assert_eq!((c.key(), c.value()), (&b"k"[..], &b"v"[..]));
                        drop(c)
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
    }
}
