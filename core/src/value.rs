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
