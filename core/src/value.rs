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
/// The memory backend hands out a shared reference to its stored bytes (no copy); remote
/// backends hand over the buffer they read. `Value` is `Send + Sync`; cloning a value from the
/// memory backend is a reference-count increment.
///
/// ```
/// use polycache::Value;
/// let v = Value::from(b"abc".to_vec());
/// assert_eq!(&*v, b"abc");
/// assert_eq!(v, Value::from(&b"abc"[..]));
/// ```
pub struct Value {
    /// The first byte. Invariant: `ptr..ptr + len` are initialised bytes that `owner` keeps
    /// alive and that never change while this value holds them.
    ptr: NonNull<u8>,
    len: usize,
    owner: Owner,
}

/// What keeps a [`Value`]'s bytes alive, packed in two words beside them, so that reading
/// the bytes is two loads and no test of the form; only a clone, a drop and the methods
/// that take a value apart look at it ([`Owner::held`]):
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

/// An [`Owner`] unpacked.
enum Held {
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

// SAFETY: a `Value` owns one of `Vec<u8>`, `Arc<[u8]>` or `EntryBuf` (its `Owner`), each
// `Send + Sync`, and only reads the bytes it points into, which none of them changes while
// the value holds them. The raw pointers are what make the auto traits fail, not the data.
unsafe impl Send for Value {}
// SAFETY: as for `Send`: `&Value` only reads immutable bytes (and a clone updates the
// atomic count of an `Arc` or an `EntryBuf`).
unsafe impl Sync for Value {}

impl Value {
    /// The bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the invariant of `ptr` and `len`: initialised bytes that `owner` keeps
        // alive and unchanged as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes as an owned vector (copies only when the bytes are shared).
    pub fn into_vec(self) -> Vec<u8> {
        let this = ManuallyDrop::new(self);
        match this.owner.held() {
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
        if let Held::Vec(_) = self.owner.held() {
            let mut v = self.into_vec();
            v.drain(..n);
            return Value::from(v);
        }
        // SAFETY: `n <= len`, so the new start stays within (or just past the end of) the
        // same bytes, which the owner still keeps alive.
        self.ptr = unsafe { self.ptr.add(n) };
        self.len -= n;
        self
    }

    /// The value of `entry`, sharing its buffer (a reference-count increment, no copy).
    #[inline]
    pub(crate) fn of_entry(entry: &EntryBuf) -> Value {
        Value::of_part(entry.value_part())
    }

    /// [`Value::of_entry`] at `span`, without reading the entry's header again.
    ///
    /// # Safety
    ///
    /// As for [`EntryBuf::span_part`]: `span` comes from `entry.key_and_span()`.
    #[inline]
    pub(crate) unsafe fn of_entry_span(entry: &EntryBuf, span: ValueSpan) -> Value {
        // SAFETY: the caller's promise, passed on.
        Value::of_part(unsafe { entry.span_part(span) })
    }

    /// The value of `entry`, taking over its reference to the buffer (no copy, no count).
    #[cfg(test)]
    pub(crate) fn into_entry(entry: EntryBuf) -> Value {
        Value::of_part(entry.into_value_part())
    }

    #[inline]
    fn of_part(part: ValuePart) -> Value {
        let (buf, ptr, len) = part.into_raw();
        Value {
            ptr,
            len,
            owner: Owner {
                base: buf.as_ptr().cast_const(),
                meta: ENTRY,
            },
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
        match self.owner.held() {
            Held::Vec(_) => Value::from(self.as_bytes().to_vec()),
            Held::Arc(arc) => {
                // SAFETY: `arc` came from `Arc::into_raw` and `self` still holds its
                // reference, so the allocation is alive; the new value holds the new one.
                unsafe { Arc::increment_strong_count(arc) };
                Value {
                    ptr: self.ptr,
                    len: self.len,
                    owner: self.owner,
                }
            }
            Held::Entry(buf) => {
                // SAFETY: `buf` came from `EntryBuf::into_raw` and `self` keeps its reference;
                // `ManuallyDrop` leaves that reference with `self`.
                let held = ManuallyDrop::new(unsafe { EntryBuf::from_raw(buf) });
                // One more reference, or (when the count is at its maximum) a copy of the
                // buffer, in which the bytes lie at the same offset.
                let copy = EntryBuf::into_raw(EntryBuf::clone(&held));
                let at = self.ptr.as_ptr() as usize - buf.as_ptr() as usize;
                Value {
                    // SAFETY: the bytes lie `at` bytes into the buffer, so they do in a copy.
                    ptr: unsafe { copy.add(at) },
                    len: self.len,
                    owner: Owner {
                        base: copy.as_ptr().cast_const(),
                        meta: ENTRY,
                    },
                }
            }
        }
    }
}

impl Drop for Value {
    #[inline]
    fn drop(&mut self) {
        match self.owner.held() {
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
        Value {
            // SAFETY: a vector's pointer is never null (dangling when nothing is allocated).
            ptr: unsafe { NonNull::new_unchecked(v.as_mut_ptr()) },
            len: v.len(),
            owner: Owner {
                base: std::ptr::null(),
                meta: v.capacity(),
            },
        }
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::from(v.to_vec())
    }
}

impl From<Arc<[u8]>> for Value {
    #[inline]
    fn from(v: Arc<[u8]>) -> Self {
        let len = v.len();
        let base = Arc::into_raw(v).cast::<u8>();
        Value {
            // SAFETY: the data pointer of an `Arc` is never null.
            ptr: unsafe { NonNull::new_unchecked(base.cast_mut()) },
            len,
            owner: Owner { base, meta: len },
        }
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

    /// Every kind of owner, holding `b"value"`.
    fn each_kind() -> Vec<(&'static str, Value)> {
        let entry = EntryBuf::new(b"key", b"value");
        vec![
            ("vec", Value::from(b"value".to_vec())),
            ("arc", Value::from(Arc::<[u8]>::from(&b"value"[..]))),
            (
                "arc tail",
                Value::from(Arc::<[u8]>::from(&b"--value"[..])).skip(2),
            ),
            ("entry", Value::of_entry(&entry)),
            ("entry taken", Value::into_entry(entry)),
        ]
    }

    #[test]
    fn each_owner_reads_clones_skips_and_gives_back_its_bytes() {
        for (kind, v) in each_kind() {
            assert_eq!(v.as_bytes(), b"value", "{kind}");
            let c = v.clone();
            assert_eq!(c, v, "{kind}");
            assert_eq!(v.clone().skip(2).as_bytes(), b"lue", "{kind}");
            assert_eq!(v.clone().skip(2).skip(1).as_bytes(), b"ue", "{kind}");
            assert_eq!(v.clone().skip(5).as_bytes(), b"", "{kind}");
            assert_eq!(v.clone().skip(99).as_bytes(), b"", "{kind}");
            assert_eq!(v.clone().skip(1).into_vec(), b"alue", "{kind}");
            assert_eq!(c.into_vec(), b"value", "{kind}");
            assert_eq!(v.as_i64(), None, "{kind}");
        }
    }

    #[test]
    fn shared_owners_share_and_an_owned_vector_is_handed_back_whole() {
        let arc: Arc<[u8]> = Arc::from(&b"shared"[..]);
        let v = Value::from(Arc::clone(&arc));
        assert_eq!(v.as_ptr(), arc.as_ptr());
        let tail = v.clone().skip(3);
        assert_eq!(tail.as_ptr(), arc[3..].as_ptr());
        assert_eq!(Arc::strong_count(&arc), 3);
        drop((v, tail));
        assert_eq!(Arc::strong_count(&arc), 1);

        let entry = EntryBuf::new(b"k", b"entry bytes");
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
        let values: Vec<Value> = each_kind().into_iter().map(|(_, v)| v).collect();
        let copies = values.clone();
        std::thread::spawn(move || {
            for v in values {
                assert_eq!(v.as_bytes(), b"value");
            }
        })
        .join()
        .unwrap();
        assert!(copies.iter().all(|v| v.as_bytes() == b"value"));
    }
}
