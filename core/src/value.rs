//! The bytes a cache returns.

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::Arc;

#[cfg_attr(not(feature = "memory"), allow(dead_code))]
mod entry_buf;

use entry_buf::ValuePart;
pub(crate) use entry_buf::{EntryBuf, ValueSpan};

/// A value read from a cache: immutable bytes.
///
/// The memory backend hands out a shared reference to its stored bytes (no copy), or, for a
/// value of at most [`Value::INLINE_MAX`] bytes, a copy held in the `Value` itself: copying
/// 16 bytes costs less than counting a reference and giving it back (two atomic updates of
/// a line that every reader of the entry shares). Remote backends hand over the buffer they
/// read. `Value` is `Send + Sync`; cloning a shared value is a reference-count increment,
/// and cloning a short one a copy.
///
/// ```
/// use polycache::Value;
/// let v = Value::from(b"abc".to_vec());
/// assert_eq!(&*v, b"abc");
/// assert_eq!(v, Value::from(&b"abc"[..]));
/// ```
pub struct Value {
    /// The first byte, or [`inline_mark`] when the bytes are `body`'s own. Invariant:
    /// `ptr..ptr + len` are initialised bytes that the owner in `body` keeps alive and that
    /// never change while this value holds them; or, for the mark, `len <= INLINE_MAX` and
    /// the first `len` bytes of `body` are the value.
    ptr: NonNull<u8>,
    len: usize,
    body: Body,
}

/// What a [`Value`] holds beside its pointer and length: who keeps its bytes alive, or,
/// for a short value, the bytes themselves.
#[derive(Clone, Copy)]
union Body {
    owner: Owner,
    bytes: [u8; Value::INLINE_MAX],
}

/// The `ptr` of a [`Value`] whose bytes are in its `body`: the address of a static of its
/// own, which no vector, `Arc` or entry buffer can have.
static INLINE: u8 = 0;

#[inline(always)]
fn inline_mark() -> NonNull<u8> {
    NonNull::from(&INLINE)
}

/// What keeps a [`Value`]'s bytes alive, packed in two words beside them, so that reading
/// the bytes is two loads and a test for the short form; only a clone, a drop and the
/// methods that take a value apart look at it ([`Value::held`]):
///
/// - a vector of the value's own: `base` null, `meta` its capacity; its start is the value's
///   `ptr` and its length the value's `len` (a `skip` moves the bytes down, as `drain`);
/// - an `Arc<[u8]>`: `base` its data pointer from [`Arc::into_raw`], `meta` its length
///   (at most `isize::MAX`); the value's bytes lie within it (a signed value's payload);
/// - a memory store's [`EntryBuf`]: `base` its pointer from [`EntryBuf::into_raw`], `meta`
///   [`ENTRY`]; the value's bytes lie within the entry's value.
#[derive(Clone, Copy)]
struct Owner {
    base: *const u8,
    meta: usize,
}

/// `Owner::meta` of an entry's buffer: no `Arc<[u8]>` is this long.
const ENTRY: usize = usize::MAX;

/// A [`Value`]'s body unpacked.
enum Held {
    Inline,
    Vec(usize),
    Arc(*const [u8]),
    Entry(NonNull<u8>),
}

impl Owner {
    #[inline]
    fn held(self) -> Held {
        match NonNull::new(self.base.cast_mut()) {
            Some(buf) if self.meta == ENTRY => Held::Entry(buf),
            Some(_) => Held::Arc(std::ptr::slice_from_raw_parts(self.base, self.meta)),
            None => Held::Vec(self.meta),
        }
    }
}

// SAFETY: a `Value` owns its bytes or one of `Vec<u8>`, `Arc<[u8]>` or `EntryBuf` (its
// `Owner`), each `Send + Sync`, and only reads the bytes it points into, which none of them
// changes while the value holds them. The raw pointers are what make the auto traits fail,
// not the data.
unsafe impl Send for Value {}
// SAFETY: as for `Send`: `&Value` only reads immutable bytes (and a clone updates the
// atomic count of an `Arc` or an `EntryBuf`).
unsafe impl Sync for Value {}

impl Value {
    /// The bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        let ptr = if self.is_inline() {
            std::ptr::addr_of!(self.body).cast::<u8>()
        } else {
            self.ptr.as_ptr().cast_const()
        };
        // SAFETY: the invariant of `ptr` and `len`: initialised bytes of `body`, or bytes
        // that the owner keeps alive and unchanged as long as `self`.
        unsafe { std::slice::from_raw_parts(ptr, self.len) }
    }

    /// The longest value held in a `Value` itself rather than shared with its source.
    pub const INLINE_MAX: usize = 16;

    /// `bytes` copied into a `Value` of their own when they are short; `None` when they are
    /// longer than [`Value::INLINE_MAX`].
    #[inline(always)]
    fn inline(bytes: &[u8]) -> Option<Value> {
        let len = bytes.len();
        // Copied as two overlapping words (or halves, or single bytes) of a fixed size, in
        // registers, rather than by a call to `memcpy` with the length.
        let mut copy = [0; Value::INLINE_MAX];
        match len {
            8..=Value::INLINE_MAX => {
                copy[..8].copy_from_slice(&bytes[..8]);
                copy[len - 8..len].copy_from_slice(&bytes[len - 8..]);
            }
            4..=7 => {
                copy[..4].copy_from_slice(&bytes[..4]);
                copy[len - 4..len].copy_from_slice(&bytes[len - 4..]);
            }
            1..=3 => {
                copy[0] = bytes[0];
                copy[len / 2] = bytes[len / 2];
                copy[len - 1] = bytes[len - 1];
            }
            0 => {}
            _ => return None,
        }
        let body = Body { bytes: copy };
        Some(Value {
            ptr: inline_mark(),
            len,
            body,
        })
    }

    /// Whether the bytes are the value's own (`body`), not an owner's.
    #[inline(always)]
    fn is_inline(&self) -> bool {
        self.ptr == inline_mark()
    }

    /// What holds the bytes (see [`Owner`]).
    #[inline]
    fn held(&self) -> Held {
        if self.is_inline() {
            return Held::Inline;
        }
        // SAFETY: a value not marked inline was built with an owner in its body.
        unsafe { self.body.owner }.held()
    }

    /// The bytes as an owned vector (copies only when the bytes are shared).
    pub fn into_vec(self) -> Vec<u8> {
        let this = ManuallyDrop::new(self);
        match this.held() {
            // SAFETY: the vector's parts, as `From<Vec<u8>>` (or `skip`) took them apart;
            // `this` is not dropped, so the vector is given back once.
            Held::Vec(cap) => unsafe { Vec::from_raw_parts(this.ptr.as_ptr(), this.len, cap) },
            _ => {
                let bytes = this.as_bytes().to_vec();
                drop(ManuallyDrop::into_inner(this));
                bytes
            }
        }
    }

    /// The value without its first `n` bytes (all of them when shorter), without copying
    /// shared bytes.
    pub(crate) fn skip(mut self, n: usize) -> Value {
        let n = n.min(self.len);
        match self.held() {
            Held::Inline => return Value::from(&self.as_bytes()[n..]),
            Held::Vec(_) => {
                let mut v = self.into_vec();
                v.drain(..n);
                return Value::from(v);
            }
            Held::Arc(_) | Held::Entry(_) => {}
        }
        // SAFETY: `n <= len`, so the new start stays within (or just past the end of) the
        // same bytes, which the owner still keeps alive.
        self.ptr = unsafe { self.ptr.add(n) };
        self.len -= n;
        self
    }

    /// The value of `entry`: a copy when it is short ([`Value::INLINE_MAX`]), else sharing
    /// its buffer (a reference-count increment, no copy).
    #[inline]
    pub(crate) fn of_entry(entry: &EntryBuf) -> Value {
        let (_, span) = entry.key_and_span();
        // SAFETY: `span` is where `entry`'s own header says its value lies.
        unsafe { Value::of_entry_span(entry, span) }
    }

    /// [`Value::of_entry`] at `span`, without reading the entry's header again.
    ///
    /// # Safety
    ///
    /// As for [`EntryBuf::span_part`]: `span` comes from `entry.key_and_span()`.
    #[inline]
    pub(crate) unsafe fn of_entry_span(entry: &EntryBuf, span: ValueSpan) -> Value {
        // SAFETY: the caller's promise, passed on.
        let bytes = unsafe { entry.span_bytes(span) };
        match Value::inline(bytes) {
            Some(copy) => copy,
            // SAFETY: as above.
            None => Value::of_part(unsafe { entry.span_part(span) }),
        }
    }

    /// The value of `entry`, taking over its reference to the buffer (no copy, no count),
    /// however short.
    #[cfg(test)]
    pub(crate) fn into_entry(entry: EntryBuf) -> Value {
        Value::of_part(entry.into_value_part())
    }

    #[inline]
    fn of_part(part: ValuePart) -> Value {
        let (buf, ptr, len) = part.into_raw();
        Value::owned_by(
            ptr,
            len,
            Owner {
                base: buf.as_ptr().cast_const(),
                meta: ENTRY,
            },
        )
    }

    #[inline(always)]
    fn owned_by(ptr: NonNull<u8>, len: usize, owner: Owner) -> Value {
        Value {
            ptr,
            len,
            body: Body { owner },
        }
    }

    /// Parses the value as an ASCII decimal integer, the form `incr` works on.
    pub fn as_i64(&self) -> Option<i64> {
        crate::parse_i64(self.as_bytes())
    }
}

/// A value lent by a memory store for the length of one call: the stored entry's bytes,
/// seen without counting a reference to its buffer.
///
/// It derefs to [`Value`]; cloning that `Value` counts a reference as any clone does, so
/// the clone outlives the loan (and the entry).
#[cfg(feature = "memory")]
pub(crate) struct Lent<'a> {
    /// Never dropped: it holds no count of its own (see [`Value::lent`]).
    value: std::mem::ManuallyDrop<Value>,
    /// The entry the bytes belong to, borrowed for as long as they are lent.
    _entry: std::marker::PhantomData<&'a EntryBuf>,
}

#[cfg(feature = "memory")]
impl Value {
    /// The value of `entry` at `span`, lent while `entry` is borrowed: no reference count
    /// is taken, and none is given back.
    ///
    /// # Safety
    ///
    /// As for [`EntryBuf::span_part`]: `span` comes from `entry.key_and_span()`.
    #[inline]
    pub(crate) unsafe fn lent(entry: &EntryBuf, span: ValueSpan) -> Lent<'_> {
        // SAFETY: the bitwise copy aliases `entry`'s handle without counting a reference.
        // It is sound because (1) it is never dropped (`ManuallyDrop`, and `Lent` has no
        // way to take it out), so the count it did not take is never given back; (2) it
        // cannot outlive the buffer: `Lent<'a>` borrows `entry` for `'a`, and `entry`
        // holds a counted reference for all of that time; (3) all it can do through the
        // `&Value` that `Lent` derefs to is read the immutable bytes or clone, which counts
        // a new reference from a buffer kept alive by `entry` (methods that take the
        // `Value` by value, such as `skip` and `into_vec`, need it owned). The span is the
        // caller's promise.
        let part = unsafe { std::ptr::read(entry).into_span_part(span) };
        Lent {
            value: std::mem::ManuallyDrop::new(Value::of_part(part)),
            _entry: std::marker::PhantomData,
        }
    }
}

#[cfg(feature = "memory")]
impl Deref for Lent<'_> {
    type Target = Value;
    #[inline]
    fn deref(&self) -> &Value {
        if self.value.is_inline() {
            // SAFETY: a lent value points into its entry's buffer (`Value::lent`), never at
            // the mark. Said here so that the compiler drops the test for the short form
            // from the reads of the lent bytes that follow (every Python `get` hit).
            unsafe { std::hint::unreachable_unchecked() }
        }
        &self.value
    }
}

impl Deref for Value {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Clone for Value {
    fn clone(&self) -> Value {
        if let Some(copy) = Value::inline(self.as_bytes()) {
            return copy;
        }
        match self.held() {
            Held::Inline | Held::Vec(_) => Value::from(self.as_bytes().to_vec()),
            Held::Arc(arc) => {
                // SAFETY: `arc` came from `Arc::into_raw` and `self` still holds its
                // reference, so the allocation is alive; the new value holds the new one.
                unsafe { Arc::increment_strong_count(arc) };
                Value { ..*self }
            }
            Held::Entry(buf) => {
                // SAFETY: `buf` came from `EntryBuf::into_raw` and `self` keeps its reference;
                // `ManuallyDrop` leaves that reference with `self`.
                let held = ManuallyDrop::new(unsafe { EntryBuf::from_raw(buf) });
                // One more reference, or (when the count is at its maximum) a copy of the
                // buffer, in which the bytes lie at the same offset.
                let copy = EntryBuf::into_raw(EntryBuf::clone(&held));
                let at = self.ptr.as_ptr() as usize - buf.as_ptr() as usize;
                Value::owned_by(
                    // SAFETY: the bytes lie `at` bytes into the buffer, so they do in a copy.
                    unsafe { copy.add(at) },
                    self.len,
                    Owner {
                        base: copy.as_ptr().cast_const(),
                        meta: ENTRY,
                    },
                )
            }
        }
    }
}

impl Drop for Value {
    #[inline]
    fn drop(&mut self) {
        match self.held() {
            Held::Inline => {}
            // SAFETY: each constructor took the owner apart once and only `drop` (or
            // `into_vec`, which forgets `self`) puts it back together, once.
            Held::Entry(buf) => drop(unsafe { EntryBuf::from_raw(buf) }),
            // SAFETY: as above: the fat pointer `Arc::into_raw` gave.
            Held::Arc(arc) => drop(unsafe { Arc::from_raw(arc) }),
            Held::Vec(cap) => {
                // SAFETY: as above: the vector's start, length and capacity.
                drop(unsafe { Vec::from_raw_parts(self.ptr.as_ptr(), self.len, cap) })
            }
        }
    }
}

impl From<Vec<u8>> for Value {
    #[inline]
    fn from(v: Vec<u8>) -> Self {
        let mut v = ManuallyDrop::new(v);
        Value::owned_by(
            // SAFETY: a vector's pointer is never null (dangling when nothing is allocated).
            unsafe { NonNull::new_unchecked(v.as_mut_ptr()) },
            v.len(),
            Owner {
                base: std::ptr::null(),
                meta: v.capacity(),
            },
        )
    }
}

impl From<&[u8]> for Value {
    /// A copy: in the value itself when short ([`Value::INLINE_MAX`]), else on the heap.
    fn from(v: &[u8]) -> Self {
        Value::inline(v).unwrap_or_else(|| Value::from(v.to_vec()))
    }
}

impl From<Arc<[u8]>> for Value {
    #[inline]
    fn from(v: Arc<[u8]>) -> Self {
        let len = v.len();
        let base = Arc::into_raw(v).cast::<u8>();
        // SAFETY: the data pointer of an `Arc` is never null.
        Value::owned_by(
            unsafe { NonNull::new_unchecked(base.cast_mut()) },
            len,
            Owner { base, meta: len },
        )
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for Value {}

impl PartialEq<[u8]> for Value {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_bytes() == other
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value(b\"{}\")", self.as_bytes().escape_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short value (held in the `Value` itself when it can be) and a long one (always
    /// held by its owner).
    const SHORT: &[u8] = b"value";
    const LONG: &[u8] = b"a value longer than what a Value holds in itself";

    /// Every way of making a value of `bytes`.
    fn each_kind(bytes: &'static [u8]) -> Vec<(&'static str, Value)> {
        let entry = EntryBuf::new(b"key", bytes);
        let dashed = [b"--", bytes].concat();
        let mut kinds = vec![
            ("vec", Value::from(bytes.to_vec())),
            ("slice", Value::from(bytes)),
            ("arc", Value::from(Arc::<[u8]>::from(bytes))),
            (
                "arc tail",
                Value::from(Arc::<[u8]>::from(&dashed[..])).skip(2),
            ),
            ("entry", Value::of_entry(&entry)),
            ("entry taken", Value::into_entry(entry)),
        ];
        if let Some(inline) = Value::inline(bytes) {
            kinds.push(("inline", inline));
        }
        kinds
    }

    #[test]
    fn each_kind_reads_clones_skips_and_gives_back_its_bytes() {
        for bytes in [SHORT, LONG] {
            for (kind, v) in each_kind(bytes) {
                let at = |n: usize| &bytes[n.min(bytes.len())..];
                assert_eq!(v.as_bytes(), bytes, "{kind}");
                let c = v.clone();
                assert_eq!(c, v, "{kind}");
                assert_eq!(v.clone().skip(2).as_bytes(), at(2), "{kind}");
                assert_eq!(v.clone().skip(2).skip(1).as_bytes(), at(3), "{kind}");
                assert_eq!(v.clone().skip(bytes.len()).as_bytes(), b"", "{kind}");
                assert_eq!(v.clone().skip(99).as_bytes(), b"", "{kind}");
                assert_eq!(v.clone().skip(1).into_vec(), at(1), "{kind}");
                assert_eq!(c.into_vec(), bytes, "{kind}");
                assert_eq!(v.as_i64(), None, "{kind}");
            }
        }
    }

    #[test]
    fn every_length_up_to_the_inline_limit_is_copied_whole() {
        let source: Vec<u8> = (1..=40).collect();
        for len in 0..=source.len() {
            let bytes = &source[..len];
            let v = Value::from(bytes);
            assert_eq!(v.as_bytes(), bytes, "{len} bytes");
            assert_eq!(
                matches!(v.held(), Held::Inline),
                len <= Value::INLINE_MAX,
                "{len} bytes"
            );
            let entry = EntryBuf::new(b"key", bytes);
            assert_eq!(Value::of_entry(&entry).as_bytes(), bytes, "{len} bytes");
        }
    }

    #[test]
    fn a_short_value_from_an_entry_is_a_copy_and_a_long_one_a_share() {
        let mut entry = EntryBuf::new(b"key", SHORT);
        let short = Value::of_entry(&entry);
        // No reference is held, so the store may rewrite the entry in place; the value
        // keeps the bytes it was given.
        assert!(entry.rewrite_value(b"VALUE"));
        assert_eq!((short.as_bytes(), entry.value()), (SHORT, &b"VALUE"[..]));

        let mut entry = EntryBuf::new(b"key", LONG);
        let long = Value::of_entry(&entry);
        assert_eq!(long.as_ptr(), entry.value().as_ptr());
        assert!(!entry.rewrite_value(&LONG.to_ascii_uppercase()));
        drop(long);
        assert!(entry.rewrite_value(&LONG.to_ascii_uppercase()));
    }

    #[test]
    fn shared_owners_share_and_an_owned_vector_is_handed_back_whole() {
        let arc: Arc<[u8]> = Arc::from(LONG);
        let v = Value::from(Arc::clone(&arc));
        assert_eq!(v.as_ptr(), arc.as_ptr());
        let tail = v.clone().skip(3);
        assert_eq!(tail.as_ptr(), arc[3..].as_ptr());
        assert_eq!(Arc::strong_count(&arc), 3);
        // A clone of a short tail copies it and leaves the count alone.
        let end = tail.clone().skip(LONG.len() - 8);
        let short = end.clone();
        assert_eq!(
            (short.as_bytes(), Arc::strong_count(&arc)),
            (&LONG[LONG.len() - 5..], 4)
        );
        assert_ne!(short.as_ptr(), end.as_ptr());
        drop((v, tail, end, short));
        assert_eq!(Arc::strong_count(&arc), 1);

        let entry = EntryBuf::new(b"k", LONG);
        let v = Value::of_entry(&entry).skip(6);
        assert_eq!(v.as_ptr(), entry.value()[6..].as_ptr());
        assert_eq!(
            v.clone().as_ptr(),
            v.as_ptr(),
            "a clone counts, it does not copy"
        );

        let mut vec = Vec::with_capacity(64);
        vec.extend_from_slice(b"owned");
        let at = vec.as_ptr();
        let back = Value::from(vec).into_vec();
        assert_eq!(
            (back.as_ptr(), back.capacity(), &back[..]),
            (at, 64, &b"owned"[..])
        );
        assert_eq!(Value::from(Vec::new()).into_vec(), b"");
        assert_eq!(Value::from(Vec::new()).skip(3).as_bytes(), b"");
    }

    #[test]
    fn a_value_is_four_words_and_a_read_result_five() {
        const _: fn() = || {
            fn shared<T: Send + Sync>() {}
            shared::<Value>();
        };
        assert_eq!(std::mem::size_of::<Value>(), 32);
        assert_eq!(std::mem::size_of::<Option<Value>>(), 32);
        assert_eq!(std::mem::size_of::<crate::Result<Option<Value>>>(), 40);
    }

    #[test]
    fn values_cross_threads() {
        for bytes in [SHORT, LONG] {
            let values: Vec<Value> = each_kind(bytes).into_iter().map(|(_, v)| v).collect();
            let copies = values.clone();
            std::thread::spawn(move || {
                for v in values {
                    assert_eq!(v.as_bytes(), bytes);
                }
            })
            .join()
            .unwrap();
            assert!(copies.iter().all(|v| v.as_bytes() == bytes));
        }
    }
}
