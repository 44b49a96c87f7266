//! The keys of `polycache.django.Cache`: Django's `default_key_func` and `validate_key`
//! in Rust on the fast path, the Python key function and overridden methods on the slow one
//! (see the module documentation of [`super`]).

use super::DjangoCache;
use crate::args::{ascii_text, key_text, type_name};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyString};
use std::borrow::Cow;
use std::ffi::CString;
use std::sync::atomic::Ordering;

/// Django's `MEMCACHE_MAX_KEY_LENGTH`.
const MEMCACHE_MAX_KEY_LENGTH: usize = 250;

/// True for the characters Django's `memcached_error_chars_re` (`[\x00-\x20\x7f]`) matches.
/// Every byte of a multi-byte UTF-8 sequence is >= 0x80, so a byte scan is exact. Eight
/// bytes at a time ([`word_has_error_chars`]): every `get` of Django's face checks its key.
#[inline]
pub(super) fn has_memcached_error_chars(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.len() < 8 {
        if bytes.len() < 4 {
            return bytes
                .iter()
                .fold(false, |bad, &b| bad | (b <= 0x20) | (b == 0x7f));
        }
        // The first four bytes and the last four (overlapping when fewer than eight).
        let mut word = [0; 8];
        word[..4].copy_from_slice(&bytes[..4]);
        word[4..].copy_from_slice(&bytes[bytes.len() - 4..]);
        return word_has_error_chars(&word);
    }
    let mut chunks = bytes.chunks_exact(8);
    let mut bad = false;
    for chunk in &mut chunks {
        bad |= word_has_error_chars(chunk);
    }
    // The last eight bytes, overlapping the chunks already seen.
    bad | word_has_error_chars(&bytes[bytes.len() - 8..])
}

/// [`has_memcached_error_chars`] of exactly eight bytes, as one word: a byte below 0x21, or
/// a byte equal to 0x7f ("Bit Twiddling Hacks": `hasless(x, 0x21)`, `haszero(x ^ 0x7f…)`;
/// both are exact about whether some byte matches).
#[inline]
fn word_has_error_chars(eight: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = ONES * 0x80;
    let mut word = [0; 8];
    word.copy_from_slice(eight);
    let x = u64::from_le_bytes(word);
    let below = x.wrapping_sub(ONES * 0x21) & !x & HIGHS;
    let del = x ^ (ONES * 0x7f);
    let is_del = del.wrapping_sub(ONES) & !del & HIGHS;
    (below | is_del) != 0
}

/// `len(s)` as Python counts it: code points.
#[inline]
pub(super) fn char_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// The number of characters of `str(v)`.
#[inline]
fn decimal_len(v: i64) -> usize {
    let mut n = v.unsigned_abs();
    let mut len = usize::from(v < 0) + 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// Where the keys of one call are made: in the core, or by Python.
#[derive(Clone, Copy)]
pub(super) enum KeyPath {
    /// Django's default key function at an `int` version: the core builds the full key.
    Core(Option<i64>),
    /// Python made the full key (custom key function, overridden methods, odd version).
    Python,
}

/// One caller key, made and checked.
pub(super) enum MadeKey<'a> {
    /// The caller's key as text; the core prepends `{prefix}:{version}:`.
    Caller(Cow<'a, str>),
    /// The full key, stored as is.
    Full(String),
}

impl DjangoCache {
    /// How the keys of a call at `version` are made.
    #[inline]
    pub(super) fn mode(&self, version: Option<&Bound<'_, PyAny>>) -> KeyPath {
        if self.keys_in_python.load(Ordering::Relaxed) {
            return KeyPath::Python;
        }
        match version {
            None => KeyPath::Core(None),
            Some(v) if v.is_none() => KeyPath::Core(None),
            Some(v) if v.is_exact_instance_of::<PyInt>() => match v.extract::<i64>() {
                Ok(n) => KeyPath::Core(Some(n)),
                Err(_) => KeyPath::Python,
            },
            Some(_) => KeyPath::Python,
        }
    }

    /// The caller's key as it goes to the core, when it is the common case: an ASCII `str`
    /// that Django's default key function keeps and its `validate_key` passes without a
    /// warning, at the cache's version. `None` for any other key, which [`Self::make_at`]
    /// makes and checks (the `get(key)` fast path, `fastget`, tries this first).
    #[inline]
    pub(super) fn plain_key<'a>(&self, key: &'a Bound<'_, PyAny>) -> Option<&'a str> {
        if self.custom_validate || self.keys_in_python.load(Ordering::Relaxed) {
            return None;
        }
        let name = ascii_text(key.cast::<PyString>().ok()?)?;
        let (chars, bad) = self.key_check(name, name.len(), self.version_int.unwrap_or(1));
        (chars <= MEMCACHE_MAX_KEY_LENGTH && !bad).then_some(name)
    }

    /// The length in characters of the full key of `name` (`name_chars` long) at `version`,
    /// and whether it holds a character memcached refuses: what Django's `validate_key`
    /// checks.
    #[inline]
    fn key_check(&self, name: &str, name_chars: usize, version: i64) -> (usize, bool) {
        let chars = self.prefix_chars + 2 + decimal_len(version) + name_chars;
        let bad = self.prefix_memcached_unsafe || has_memcached_error_chars(name);
        (chars, bad)
    }

    /// How the keys of a call at `version` are made, and `key` made and checked that way.
    #[inline]
    pub(super) fn make_at<'a>(
        &self,
        slf: &Bound<'_, Self>,
        key: &'a Bound<'_, PyAny>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(KeyPath, MadeKey<'a>)> {
        let mode = self.mode(version);
        Ok((mode, self.make(slf, key, mode, version)?))
    }

    /// Makes and checks one key.
    #[inline]
    fn make<'a>(
        &self,
        slf: &Bound<'_, Self>,
        key: &'a Bound<'_, PyAny>,
        mode: KeyPath,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<MadeKey<'a>> {
        match mode {
            KeyPath::Core(v) => {
                let (name, ascii): (Cow<'a, str>, bool) = match key.cast::<PyString>() {
                    Ok(s) => match ascii_text(s) {
                        Some(text) => (Cow::Borrowed(text), true),
                        None => (Cow::Borrowed(key_text(s)?), false),
                    },
                    // Django formats any key with "%s".
                    Err(_) => (Cow::Owned(key_text(&key.str()?)?.to_owned()), false),
                };
                let version = v.unwrap_or_else(|| self.version_int.unwrap_or(1));
                if self.custom_validate {
                    let full = format!("{}:{version}:{name}", self.prefix);
                    slf.call_method1("validate_key", (full,))?;
                } else {
                    let name_chars = if ascii { name.len() } else { char_len(&name) };
                    let (chars, bad) = self.key_check(&name, name_chars, version);
                    if chars > MEMCACHE_MAX_KEY_LENGTH || bad {
                        let full = format!("{}:{version}:{name}", self.prefix);
                        self.warn(slf.py(), &full, chars, bad)?;
                    }
                }
                Ok(MadeKey::Caller(name))
            }
            KeyPath::Python => self.make_raw(slf, key, version).map(MadeKey::Full),
        }
    }

    #[cold]
    fn make_raw(
        &self,
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let py = slf.py();
        let version = version.filter(|v| !v.is_none());
        if self.custom_make_and_validate {
            let full = slf.call_method1("make_and_validate_key", (key, version))?;
            return full_key_text(&full);
        }
        let full = if self.custom_make_key {
            full_key_text(&slf.call_method1("make_key", (key, version))?)?
        } else {
            let version = match version {
                Some(v) => v.clone(),
                None => self.version.bind(py).clone(),
            };
            self.key_func_call(py, key, &version)?
        };
        if self.custom_validate {
            slf.call_method1("validate_key", (&full,))?;
        } else {
            self.validate_text(py, &full)?;
        }
        Ok(full)
    }

    /// The custom key function in use, if any (`None`: Django's default).
    pub(super) fn custom_key_func(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.key_func
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|f| f.clone_ref(py))
    }

    /// `key_func(key, key_prefix, version)`, or Django's default format without a call.
    pub(super) fn key_func_call(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        version: &Bound<'_, PyAny>,
    ) -> PyResult<String> {
        match self.custom_key_func(py) {
            Some(func) => full_key_text(&func.bind(py).call1((key, &self.prefix, version))?),
            None => Ok(format!(
                "{}:{}:{}",
                self.prefix,
                key_text(&version.str()?)?,
                key_text(&key.str()?)?
            )),
        }
    }

    /// Django's `validate_key` on a full key.
    pub(super) fn validate_text(&self, py: Python<'_>, full: &str) -> PyResult<()> {
        let chars = char_len(full);
        let bad = has_memcached_error_chars(full);
        if chars > MEMCACHE_MAX_KEY_LENGTH || bad {
            self.warn(py, full, chars, bad)?;
        }
        Ok(())
    }

    /// The warnings of Django's `memcache_key_warnings`, word for word.
    #[cold]
    fn warn(&self, py: Python<'_>, full: &str, chars: usize, bad: bool) -> PyResult<()> {
        let repr = PyString::new(py, full).repr()?;
        let repr = repr.to_str()?;
        let category = self.warning.bind(py);
        if chars > MEMCACHE_MAX_KEY_LENGTH {
            let message = format!(
                "Cache key will cause errors if used with memcached: {repr} (longer than {MEMCACHE_MAX_KEY_LENGTH})"
            );
            PyErr::warn(py, category, &c_message(message), 1)?;
        }
        if bad {
            let message = format!(
                "Cache key contains characters that will cause errors if used with memcached: {repr}"
            );
            PyErr::warn(py, category, &c_message(message), 1)?;
        }
        Ok(())
    }

    /// Makes and checks every key of `keys`.
    pub(super) fn make_all<'a>(
        &self,
        slf: &Bound<'_, Self>,
        keys: &'a [Bound<'_, PyAny>],
        mode: KeyPath,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<MadeKey<'a>>> {
        keys.iter()
            .map(|k| self.make(slf, k, mode, version))
            .collect()
    }
}

/// The full key a Python key function returned.
fn full_key_text(full: &Bound<'_, PyAny>) -> PyResult<String> {
    match full.cast::<PyString>() {
        Ok(s) => Ok(key_text(s)?.to_owned()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "the cache key function must return a str, not {}",
            type_name(full)
        ))),
    }
}

/// A warning text as C wants it (a NUL inside the key is shown by repr as `\x00`).
fn c_message(message: String) -> CString {
    CString::new(message).unwrap_or_else(|e| {
        let mut bytes = e.into_vec();
        bytes.retain(|&b| b != 0);
        CString::new(bytes).unwrap_or_default()
    })
}

#[inline]
pub(super) fn made_key_text<'a>(made: &'a MadeKey<'_>) -> &'a str {
    match made {
        MadeKey::Caller(n) => n,
        MadeKey::Full(s) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::has_memcached_error_chars;

    /// The word-at-a-time scan agrees with the plain one for every ASCII character and some
    /// multi-byte ones at every position of keys of 0 to 20 characters.
    #[test]
    fn error_chars_match_the_byte_scan() {
        let plain = |s: &str| s.bytes().any(|c| c <= 0x20 || c == 0x7f);
        let chars = (0..=0x7fu8)
            .map(char::from)
            .chain(['é', '€', '😀', '\u{85}', '\u{a0}']);
        for len in 1..=20 {
            for at in 0..len {
                for c in chars.clone() {
                    let key: String = (0..len).map(|i| if i == at { c } else { 'k' }).collect();
                    assert_eq!(
                        has_memcached_error_chars(&key),
                        plain(&key),
                        "{c:?} at {at} of {len}"
                    );
                }
            }
        }
        assert!(!has_memcached_error_chars(""));
    }
}
