//! The key a caller's key is stored under (hashed when memcached cannot carry it, folded
//! with its namespace generation with `namespace=true`) and the exptime of a TTL.

use super::commands::Request;
use super::{lock, protocol, Inner, Server, NAMESPACE_SUFFIX};
use crate::error::Result;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `h:` and the hex SHA-256 of `key`: what a key memcached cannot carry is stored under.
pub(super) fn hashed_key(key: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(key);
    let mut out = Vec::with_capacity(2 + 64);
    out.extend_from_slice(b"h:");
    for b in digest.iter() {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
    out
}

/// The key as sent: unchanged when memcached can carry it, else hashed.
#[inline]
pub(super) fn safe_key(key: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    if protocol::is_plain_key(&key) {
        key
    } else {
        Cow::Owned(hashed_key(&key))
    }
}

/// The namespace of a full key `{key_prefix}:{version}:{key}`: the text before its first `:`.
pub(super) fn namespace_of(key: &[u8]) -> &[u8] {
    key.iter()
        .position(|&b| b == b':')
        .map_or(key, |i| &key[..i])
}

/// memcached's exptime for a TTL: 0 never expires; whole seconds, rounded up; over 30 days,
/// an absolute unix time (memcached reads larger numbers that way).
pub(super) fn exptime(ttl: Option<Duration>) -> u64 {
    let Some(d) = ttl else { return 0 };
    let secs = (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1);
    if secs <= protocol::REALTIME_MAXDELTA {
        return secs;
    }
    let now = crate::clock::unix_ms() / 1000;
    // memcached keeps exptime in 32 bits: past 2038 it is 2038.
    now.saturating_add(secs).min(i32::MAX as u64)
}

/// A fresh generation for a namespace: microseconds since the epoch, so that a counter that
/// was evicted (or lost with a restart) never comes back at a value it had before.
pub(super) fn initial_generation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

/// `ns{generation}:` and the key.
pub(super) fn folded(key: &[u8], generation: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 24);
    out.extend_from_slice(b"ns");
    protocol::push_u64(&mut out, generation);
    out.push(b':');
    out.extend_from_slice(key);
    out
}

/// The distinct namespaces of `keys`, in order of first appearance.
pub(super) fn namespaces<'k>(keys: &[&'k [u8]]) -> Vec<&'k [u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for key in keys {
        let ns = namespace_of(key);
        if !out.contains(&ns) {
            out.push(ns);
        }
    }
    out
}

/// The key and server of namespace `ns`'s generation counter.
pub(super) fn generation_key(ns: &[u8]) -> Vec<u8> {
    let mut counter = ns.to_vec();
    counter.extend_from_slice(NAMESPACE_SUFFIX);
    safe_key(Cow::Owned(counter)).into_owned()
}

/// The request that reads (`delta` 0) or moves a namespace generation.
pub(super) fn generation_request(delta: u64) -> Request<'static> {
    Request::Generation {
        initial: initial_generation(),
        delta,
    }
}

impl Inner {
    #[inline]
    pub(super) fn server(&self, wire_key: &[u8]) -> &Server {
        &self.servers[self.ring.server_of(wire_key)]
    }

    /// The generation of namespace `ns` when it was read recently enough to be used.
    pub(super) fn cached_generation(&self, ns: &[u8]) -> Option<u64> {
        let refresh = self.settings.namespace_refresh_ticks;
        if refresh == 0 {
            return None;
        }
        let (g, at) = *lock(&self.generations).get(ns)?;
        (crate::clock::ticks().saturating_sub(at) < refresh).then_some(g)
    }

    pub(super) fn remember_generation(&self, ns: &[u8], g: u64) {
        lock(&self.generations).insert(ns.to_vec(), (g, crate::clock::ticks()));
    }

    /// The keys as sent to memcached, given the generation of each of their namespaces
    /// (none without `namespace=true`): folded with it, then made safe.
    pub(super) fn fold_keys<'k>(
        &self,
        keys: &[&'k [u8]],
        generations: &[(&[u8], u64)],
    ) -> Vec<Cow<'k, [u8]>> {
        keys.iter()
            .map(|key| {
                let ns = namespace_of(key);
                match generations.iter().find(|(n, _)| *n == ns) {
                    Some(&(_, g)) if self.settings.namespace => {
                        safe_key(Cow::Owned(folded(key, g)))
                    }
                    _ => safe_key(Cow::Borrowed(*key)),
                }
            })
            .collect()
    }

    /// The key as sent to memcached (see [`Inner::wire_keys`]).
    #[inline]
    pub(super) fn wire_key<'k>(&self, key: &'k [u8]) -> Result<Cow<'k, [u8]>> {
        if !self.settings.namespace {
            return Ok(safe_key(Cow::Borrowed(key)));
        }
        let mut keys = self.wire_keys(&[key])?;
        Ok(keys.pop().unwrap_or_default())
    }

    /// The keys as sent to memcached: folded with their namespace generations, then made safe.
    pub(super) fn wire_keys<'k>(&self, keys: &[&'k [u8]]) -> Result<Vec<Cow<'k, [u8]>>> {
        if !self.settings.namespace {
            return Ok(keys.iter().map(|k| safe_key(Cow::Borrowed(*k))).collect());
        }
        let mut generations = Vec::new();
        for ns in namespaces(keys) {
            let g = match self.cached_generation(ns) {
                Some(g) => g,
                None => self.bump_generation(ns, 0)?,
            };
            generations.push((ns, g));
        }
        Ok(self.fold_keys(keys, &generations))
    }

    /// Adds `delta` to namespace `ns`'s generation (creating it) and remembers the result.
    pub(super) fn bump_generation(&self, ns: &[u8], delta: u64) -> Result<u64> {
        let wire = generation_key(ns);
        let g = self
            .single_on(self.server(&wire), &wire, generation_request(delta))?
            .count();
        self.remember_generation(ns, g);
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_keys_are_hashed_and_plain_ones_kept() {
        assert_eq!(&*safe_key(Cow::Borrowed(b":1:user/42")), b":1:user/42");
        for odd in [
            &b":1:with space"[..],
            b":1:tab\t",
            b":1:nl\n",
            ":1:caf\u{e9}".as_bytes(),
            &[b'k'; 251],
        ] {
            let safe = safe_key(Cow::Borrowed(odd));
            assert_eq!(safe.len(), 66, "{odd:?}");
            assert!(safe.starts_with(b"h:") && protocol::is_plain_key(&safe));
        }
        assert_ne!(hashed_key(b"a b"), hashed_key(b"a  b"));
    }

    #[test]
    fn ttls_become_memcached_exptimes() {
        assert_eq!(exptime(None), 0);
        assert_eq!(exptime(Some(Duration::from_millis(1))), 1);
        assert_eq!(exptime(Some(Duration::from_millis(1500))), 2);
        assert_eq!(exptime(Some(Duration::from_secs(2_592_000))), 2_592_000);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let abs = exptime(Some(Duration::from_secs(31 * 86_400)));
        assert!(
            abs >= now + 31 * 86_400 && abs <= now + 31 * 86_400 + 5,
            "{abs}"
        );
        assert_eq!(
            exptime(Some(Duration::from_secs(200 * 365 * 86_400))),
            i32::MAX as u64
        );
    }

    #[test]
    fn namespaces_are_the_text_before_the_first_colon() {
        assert_eq!(namespace_of(b"app:1:k"), b"app");
        assert_eq!(namespace_of(b":1:k"), b"");
        assert_eq!(namespace_of(b"app:"), b"app");
        assert_eq!(namespace_of(b"plain"), b"plain");
        assert_eq!(folded(b"app:1:k", 42), b"ns42:app:1:k");
        assert_eq!(namespaces(&[b"a:1", b"b:2", b"a:3"]), [&b"a"[..], b"b"]);
    }
}
