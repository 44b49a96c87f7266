//! Signed and compressed values: what a cache does to a value's bytes between the caller
//! and the backend, so that Rust, C and Python programs share one stored format.
//!
//! Both are off by default, and then a value is stored exactly as given (Django's
//! `RedisCache` bytes stay byte-identical). Layouts (integers little-endian):
//!
//! | form        | bytes                                                                 |
//! |-------------|-----------------------------------------------------------------------|
//! | signed      | `00 50 43 53 49 47 31 00` (`"\0PCSIG1\0"`), 32-byte HMAC-SHA256 tag, inner bytes |
//! | compressed  | `00 50 43 5a 53 54 31 00` (`"\0PCZST1\0"`), original length (u64), one zstd frame |
//!
//! The tag is HMAC-SHA256 over `"polycache signed value v1\0"`, the full key's length (u64),
//! the full key and the inner bytes, so a signed value cannot be replayed under another key.
//! A value is compressed first, then signed: a reader checks the tag before anything else
//! touches the bytes.
//!
//! Integers stay ASCII decimal and are never signed or compressed, so `incr` stays native on
//! every backend. A reader with a signing key accepts only signed values and values that are
//! plain decimal integers (`-?[0-9]+` within 64 bits): nothing else reaches a deserializer.

use crate::error::{Error, ErrorKind, Result};
use crate::value::Value;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

/// The first 8 bytes of a signed value.
pub const SIGNED_MAGIC: [u8; 8] = *b"\0PCSIG1\0";
/// The first 8 bytes of a compressed value.
pub const COMPRESSED_MAGIC: [u8; 8] = *b"\0PCZST1\0";
/// The size of an HMAC-SHA256 tag.
const TAG: usize = 32;
const SIGNED_HEADER: usize = 8 + TAG;
const COMPRESSED_HEADER: usize = 16;
/// What the tag covers before the key, so that it means "a polycache value" and nothing else.
const DOMAIN: &[u8] = b"polycache signed value v1\0";

/// The zstd level used when none is configured (zstd's own default).
pub const DEFAULT_COMPRESS_LEVEL: i32 = 3;

type HmacSha256 = Hmac<Sha256>;

/// What a cache does to values on their way to and from the backend.
#[derive(Clone, Default)]
pub(crate) struct Codec {
    /// The key new values are signed with, pre-keyed; `None`: values are not signed.
    signer: Option<HmacSha256>,
    /// Keys accepted on reads besides the signing key (rotation), pre-keyed.
    old: Vec<HmacSha256>,
    /// Values of at least this many bytes are compressed; `None`: never.
    compress_min_size: Option<usize>,
    compress_level: i32,
}

impl fmt::Debug for Codec {
    // Never prints a key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("signed", &self.signer.is_some())
            .field("old_keys", &self.old.len())
            .field("compress_min_size", &self.compress_min_size)
            .field("compress_level", &self.compress_level)
            .finish()
    }
}

/// What a read found once signatures and compression were undone.
pub(crate) enum Opened {
    /// The value as the writer gave it.
    Value(Value),
    /// The stored bytes must not be trusted: answer a miss (the reason is for the log).
    Rejected(&'static str),
}

impl Codec {
    /// A codec: `key` signs, `old_keys` are accepted too; values of `compress_min_size`
    /// bytes or more are compressed at `compress_level`.
    pub(crate) fn new(
        key: Option<&[u8]>,
        old_keys: &[Vec<u8>],
        compress_min_size: Option<usize>,
        compress_level: Option<i32>,
    ) -> Result<Codec> {
        let level = compress_level.unwrap_or(DEFAULT_COMPRESS_LEVEL);
        let levels = zstd::compression_level_range();
        if !levels.contains(&level) {
            return Err(Error::config(format!(
                "compress_level {level} is out of zstd's range {}..={}",
                levels.start(),
                levels.end()
            )));
        }
        let mac = |k: &[u8]| -> Result<HmacSha256> {
            if k.is_empty() {
                return Err(Error::config("a signing key must not be empty"));
            }
            HmacSha256::new_from_slice(k)
                .map_err(|_| Error::config("the signing key cannot be used with HMAC-SHA256"))
        };
        if key.is_none() && !old_keys.is_empty() {
            return Err(Error::config(
                "old_signing_keys needs a signing_key: old keys are only accepted alongside a current one",
            ));
        }
        Ok(Codec {
            signer: key.map(mac).transpose()?,
            old: old_keys.iter().map(|k| mac(k)).collect::<Result<_>>()?,
            compress_min_size,
            compress_level: level,
        })
    }

    /// True when values are stored as given (no signing, no compression).
    #[inline]
    pub(crate) fn is_plain(&self) -> bool {
        self.signer.is_none() && self.compress_min_size.is_none()
    }

    /// True when values are signed.
    pub(crate) fn signs(&self) -> bool {
        self.signer.is_some()
    }

    /// The bytes to store for `value` under the full key `full`.
    #[inline]
    pub(crate) fn seal<'v>(&self, full: &[u8], value: &'v [u8]) -> Cow<'v, [u8]> {
        if self.is_plain() {
            return Cow::Borrowed(value);
        }
        self.seal_slow(full, value)
    }

    /// [`Codec::seal`] when values are signed or compressed.
    fn seal_slow<'v>(&self, full: &[u8], value: &'v [u8]) -> Cow<'v, [u8]> {
        if is_plain_integer(value) {
            return Cow::Borrowed(value);
        }
        let inner: Cow<'v, [u8]> = match self.compress_min_size {
            Some(min) if value.len() >= min => {
                compress(value, self.compress_level).map_or(Cow::Borrowed(value), Cow::Owned)
            }
            _ => Cow::Borrowed(value),
        };
        let Some(signer) = &self.signer else {
            return inner;
        };
        let tag = tag(signer, full, &inner);
        let mut out = Vec::with_capacity(SIGNED_HEADER + inner.len());
        out.extend_from_slice(&SIGNED_MAGIC);
        out.extend_from_slice(&tag);
        out.extend_from_slice(&inner);
        Cow::Owned(out)
    }

    /// The value the writer gave, from the bytes stored under `full`. Values larger than
    /// `max_size` once decompressed are an error, so a small entry cannot expand without
    /// bound.
    #[inline]
    pub(crate) fn open(&self, full: &[u8], stored: Value, max_size: usize) -> Result<Opened> {
        if self.passes_as_stored(&stored) {
            return Ok(Opened::Value(stored));
        }
        self.open_slow(full, stored, max_size)
    }

    /// True when `stored` is the writer's value as it is: not signed, compressed or tagged
    /// (every marked form starts with a NUL byte; pickles, integers and text do not), and
    /// this codec does not require a signature.
    #[inline]
    pub(crate) fn passes_as_stored(&self, stored: &[u8]) -> bool {
        stored.first() != Some(&0) && self.signer.is_none()
    }

    #[cold]
    fn open_slow(&self, full: &[u8], stored: Value, max_size: usize) -> Result<Opened> {
        let signed = stored.starts_with(&SIGNED_MAGIC) && stored.len() >= SIGNED_HEADER;
        let inner = match (&self.signer, signed) {
            (Some(signer), true) => {
                let (tag, inner) = stored[8..].split_at(TAG);
                let ok = std::iter::once(signer)
                    .chain(&self.old)
                    .any(|mac| verify(mac, full, inner, tag));
                if !ok {
                    return Ok(Opened::Rejected(
                        "its signature does not match the signing key or any old signing key",
                    ));
                }
                stored.skip(SIGNED_HEADER)
            }
            (Some(_), false) if is_plain_integer(&stored) => return Ok(Opened::Value(stored)),
            (Some(_), false) => {
                return Ok(Opened::Rejected(
                    "it is not signed (and not a plain decimal integer)",
                ))
            }
            (None, true) => {
                return Ok(Opened::Rejected(
                    "it is signed and this cache has no signing_key to check it with",
                ))
            }
            (None, false) => stored,
        };
        if inner.starts_with(&COMPRESSED_MAGIC) {
            return decompress(&inner, max_size).map(|v| Opened::Value(Value::from(v)));
        }
        Ok(Opened::Value(inner))
    }
}

/// `-?[0-9]+` within the 64-bit range: what `incr` works on, stored as is.
fn is_plain_integer(value: &[u8]) -> bool {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && crate::backend::parse_i64(value).is_some()
}

fn mac_of(signer: &HmacSha256, full: &[u8], inner: &[u8]) -> HmacSha256 {
    let mut mac = signer.clone();
    mac.update(DOMAIN);
    mac.update(&(full.len() as u64).to_le_bytes());
    mac.update(full);
    mac.update(inner);
    mac
}

fn tag(signer: &HmacSha256, full: &[u8], inner: &[u8]) -> [u8; TAG] {
    mac_of(signer, full, inner).finalize().into_bytes().into()
}

/// Constant-time comparison of `tag` with the tag `signer` computes.
fn verify(signer: &HmacSha256, full: &[u8], inner: &[u8], tag: &[u8]) -> bool {
    mac_of(signer, full, inner).verify_slice(tag).is_ok()
}

thread_local! {
    // zstd contexts are large to set up (a fresh one costs more than compressing a small
    // value): one of each per thread, reused.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// The compressed form of `value`, or `None` when compressing does not make it smaller.
fn compress(value: &[u8], level: i32) -> Option<Vec<u8>> {
    let frame = COMPRESSOR
        .with(|cell| {
            let mut slot = cell.try_borrow_mut().ok()?;
            if !matches!(&*slot, Some((l, _)) if *l == level) {
                *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
            }
            slot.as_mut().map(|(_, c)| c.compress(value))
        })?
        .ok()?;
    if frame.len() + COMPRESSED_HEADER >= value.len() {
        return None;
    }
    let mut out = Vec::with_capacity(COMPRESSED_HEADER + frame.len());
    out.extend_from_slice(&COMPRESSED_MAGIC);
    out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    out.extend_from_slice(&frame);
    Some(out)
}

fn decompress(stored: &[u8], max_size: usize) -> Result<Vec<u8>> {
    let corrupt = |why: String| {
        Error::new(
            ErrorKind::Serialization,
            format!("a compressed cached value cannot be read: {why}"),
        )
    };
    let Some(len) = stored.get(8..16) else {
        return Err(corrupt("its header is cut short".into()));
    };
    let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    if len > max_size as u64 {
        return Err(corrupt(format!(
            "it claims {len} bytes, more than this cache's max_value_size ({max_size} bytes)"
        )));
    }
    let frame = &stored[COMPRESSED_HEADER..];
    let out = DECOMPRESSOR
        .with(|cell| match cell.try_borrow_mut() {
            Ok(mut slot) => {
                if slot.is_none() {
                    *slot = Some(zstd::bulk::Decompressor::new()?);
                }
                match slot.as_mut() {
                    Some(d) => d.decompress(frame, len as usize),
                    None => zstd::bulk::decompress(frame, len as usize),
                }
            }
            // Re-entered on this thread (cannot happen today): a context of its own.
            Err(_) => zstd::bulk::decompress(frame, len as usize),
        })
        .map_err(|e| corrupt(e.to_string()))?;
    if out.len() as u64 != len {
        return Err(corrupt(format!(
            "it holds {} bytes, its header says {len}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(c: &Codec, full: &[u8], stored: &[u8]) -> Option<Vec<u8>> {
        match c.open(full, Value::from(stored), 1 << 20).unwrap() {
            Opened::Value(v) => Some(v.into_vec()),
            Opened::Rejected(_) => None,
        }
    }

    #[test]
    fn plain_codec_stores_values_as_given() {
        let c = Codec::default();
        assert!(matches!(c.seal(b"k", b"v"), Cow::Borrowed(b"v")));
        assert_eq!(open(&c, b"k", b"v").unwrap(), b"v");
    }

    #[test]
    fn signed_values_are_bound_to_their_key() {
        let c = Codec::new(Some(b"key"), &[], None, None).unwrap();
        let sealed = c.seal(b"a:1:x", b"payload").into_owned();
        assert!(sealed.starts_with(&SIGNED_MAGIC));
        assert_eq!(open(&c, b"a:1:x", &sealed).unwrap(), b"payload");
        assert!(open(&c, b"a:1:y", &sealed).is_none());
        for i in 8..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(open(&c, b"a:1:x", &bad).is_none(), "byte {i}");
        }
        assert!(open(&c, b"a:1:x", &sealed[..SIGNED_HEADER - 1]).is_none());
    }

    #[test]
    fn integers_stay_decimal_and_are_accepted_unsigned() {
        let c = Codec::new(Some(b"key"), &[], Some(1), None).unwrap();
        for n in [&b"0"[..], b"-12", b"9223372036854775807"] {
            assert_eq!(&*c.seal(b"k", n), n);
            assert_eq!(open(&c, b"k", n).unwrap(), n);
        }
        for not_int in [&b"+1"[..], b" 1", b"1.0", b"99999999999999999999", b"-"] {
            assert!(c.seal(b"k", not_int).starts_with(&SIGNED_MAGIC));
            assert!(open(&c, b"k", not_int).is_none());
        }
    }

    #[test]
    fn compressed_values_round_trip_and_any_reader_expands_them() {
        let writer = Codec::new(None, &[], Some(64), Some(1)).unwrap();
        let big = vec![b'a'; 10_000];
        let sealed = writer.seal(b"k", &big).into_owned();
        assert!(sealed.starts_with(&COMPRESSED_MAGIC) && sealed.len() < 200);
        assert_eq!(open(&Codec::default(), b"k", &sealed).unwrap(), big);
        // Small or incompressible values are stored as given.
        assert_eq!(&*writer.seal(b"k", b"short"), b"short");
        let err = Codec::default()
            .open(b"k", Value::from(sealed.clone()), 100)
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::Serialization);
        let mut cut = sealed.clone();
        cut.truncate(sealed.len() - 3);
        assert!(Codec::default()
            .open(b"k", Value::from(cut), 1 << 20)
            .is_err());
    }

    #[test]
    fn configuration_is_checked_and_never_printed() {
        assert!(Codec::new(Some(b""), &[], None, None).is_err());
        assert!(Codec::new(None, &[b"old".to_vec()], None, None).is_err());
        assert!(Codec::new(None, &[], Some(1), Some(99)).is_err());
        let c = Codec::new(Some(b"hunter2-key"), &[b"older".to_vec()], None, None).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
