//! The bytes a cache returns.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

#[cfg_attr(not(feature = "memory"), allow(dead_code))]
mod entry_buf;

pub(crate) use entry_buf::EntryBuf;
use entry_buf::ValuePart;

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
#[derive(Clone)]
pub struct Value(Repr);

#[derive(Clone)]
enum Repr {
    Shared(Arc<[u8]>),
    Owned(Vec<u8>),
    /// The bytes of a shared buffer from an offset on (a signed value's payload).
    Tail(Arc<[u8]>, usize),
    /// The value of a memory store's entry, sharing the entry's buffer.
    Entry(ValuePart),
}

impl Value {
    /// The bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Shared(a) => a,
            Repr::Owned(v) => v,
            Repr::Tail(a, from) => &a[*from..],
            Repr::Entry(p) => p.bytes(),
        }
    }

    /// The bytes as an owned vector (copies only when the bytes are shared).
    pub fn into_vec(self) -> Vec<u8> {
        match self.0 {
            Repr::Shared(a) => a.to_vec(),
            Repr::Owned(v) => v,
            Repr::Tail(a, from) => a[from..].to_vec(),
            Repr::Entry(p) => p.bytes().to_vec(),
        }
    }

    /// The value without its first `n` bytes (all of them when shorter), without copying
    /// shared bytes.
    pub(crate) fn skip(self, n: usize) -> Value {
        match self.0 {
            Repr::Shared(a) => {
                let n = n.min(a.len());
                Value(Repr::Tail(a, n))
            }
            Repr::Tail(a, from) => {
                let n = (from + n).min(a.len());
                Value(Repr::Tail(a, n))
            }
            Repr::Owned(mut v) => {
                v.drain(..n.min(v.len()));
                Value(Repr::Owned(v))
            }
            Repr::Entry(p) => Value(Repr::Entry(p.skip(n))),
        }
    }

    /// The value of `entry`, sharing its buffer (a reference-count increment, no copy).
    #[inline]
    pub(crate) fn of_entry(entry: &EntryBuf) -> Value {
        Value(Repr::Entry(entry.value_part()))
    }

    /// The value of `entry`, taking over its reference to the buffer (no copy, no count).
    #[inline]
    pub(crate) fn into_entry(entry: EntryBuf) -> Value {
        Value(Repr::Entry(entry.into_value_part()))
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
    /// The value of `entry`, lent while `entry` is borrowed: no reference count is taken,
    /// and none is given back.
    #[inline]
    pub(crate) fn lent(entry: &EntryBuf) -> Lent<'_> {
        // SAFETY: the bitwise copy aliases `entry`'s handle without counting a reference.
        // It is sound because (1) it is never dropped (`ManuallyDrop`, and `Lent` has no
        // way to take it out), so the count it did not take is never given back; (2) it
        // cannot outlive the buffer: `Lent<'a>` borrows `entry` for `'a`, and `entry`
        // holds a counted reference for all of that time; (3) all it can do through the
        // `&Value` that `Lent` derefs to is read the immutable bytes or clone, which counts
        // a new reference from a buffer kept alive by `entry` (methods that take the
        // `Value` by value, such as `skip` and `into_vec`, need it owned).
        let alias = unsafe { std::ptr::read(entry) };
        Lent {
            value: std::mem::ManuallyDrop::new(Value::into_entry(alias)),
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

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value(Repr::Owned(v))
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value(Repr::Owned(v.to_vec()))
    }
}

impl From<Arc<[u8]>> for Value {
    #[inline]
    fn from(v: Arc<[u8]>) -> Self {
        Value(Repr::Shared(v))
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
