//! The ketama continuum: which server holds a key, the way libmemcached's weighted ketama
//! (`MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED`, pylibmc's `ketama_weighted`) decides it with equal
//! weights, so that other clients can be configured to agree.
//!
//! For each server, named `host` when its port is 11211 and `host:port` otherwise (a unix
//! socket: `path:0`), and for `i` in `0..40`: `d = MD5("{name}-{i}")`, and the four
//! little-endian `u32`s `d[0..4]`, `d[4..8]`, `d[8..12]`, `d[12..16]` are points of that
//! server on the ring (160 points per server). A key's point is the little-endian `u32` of
//! `MD5(key)[0..4]`; it belongs to the server of the first point at or after it, wrapping
//! to the first point of the ring.

use md5::{Digest, Md5};

/// Points per server: libmemcached's `MEMCACHED_POINTS_PER_SERVER_KETAMA`.
pub(crate) const POINTS_PER_SERVER: usize = 160;
/// Points taken from one MD5 digest.
const POINTS_PER_HASH: usize = 4;

/// A sorted ring of `(point, server index)`.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    points: Vec<(u32, u32)>,
}

impl Ring {
    /// The ring of `names` (ketama names, see the module docs); server `i` is `names[i]`.
    pub(crate) fn new<S: AsRef<str>>(names: &[S]) -> Ring {
        let mut points = Vec::with_capacity(names.len() * POINTS_PER_SERVER);
        for (index, name) in names.iter().enumerate() {
            for i in 0..POINTS_PER_SERVER / POINTS_PER_HASH {
                let digest = Md5::digest(format!("{}-{i}", name.as_ref()).as_bytes());
                for h in 0..POINTS_PER_HASH {
                    let point = u32::from_le_bytes([
                        digest[h * 4],
                        digest[h * 4 + 1],
                        digest[h * 4 + 2],
                        digest[h * 4 + 3],
                    ]);
                    points.push((point, index as u32));
                }
            }
        }
        // Ties (two servers on one point, about one ring in 27 million) go to the server
        // listed first, whatever the order of the digests.
        points.sort_unstable();
        Ring { points }
    }

    /// The point of `key` on the ring.
    #[inline]
    pub(crate) fn hash(key: &[u8]) -> u32 {
        let digest = Md5::digest(key);
        u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
    }

    /// The index of the server that holds `key`.
    #[inline]
    pub(crate) fn server_of(&self, key: &[u8]) -> usize {
        if self.points.len() <= POINTS_PER_SERVER {
            return 0;
        }
        let h = Self::hash(key);
        let i = self.points.partition_point(|&(p, _)| p < h);
        let (_, server) = self.points.get(i).unwrap_or(&self.points[0]);
        *server as usize
    }
}

/// The name a server has on the ring: `host` for port 11211, `host:port` otherwise.
pub(crate) fn ketama_name(host: &str, port: u16) -> String {
    if port == 11211 {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_takes_everything() {
        let ring = Ring::new(&["127.0.0.1"]);
        assert_eq!(ring.points.len(), POINTS_PER_SERVER);
        for k in 0..100 {
            assert_eq!(ring.server_of(format!("k{k}").as_bytes()), 0);
        }
    }

    #[test]
    fn points_follow_libketama() {
        let ring = Ring::new(&["10.0.0.1"]);
        let digest = Md5::digest(b"10.0.0.1-0");
        let first = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
        assert!(ring.points.iter().any(|&(p, s)| p == first && s == 0));
        // MD5("") = d41d8cd9…: the first four bytes, little-endian.
        assert_eq!(
            Ring::hash(b""),
            u32::from_le_bytes([0xd4, 0x1d, 0x8c, 0xd9])
        );
        assert_eq!(ketama_name("h", 11211), "h");
        assert_eq!(ketama_name("h", 11212), "h:11212");
    }

    #[test]
    fn spreads_keys_evenly_and_moves_a_quarter_when_a_fourth_server_joins() {
        let three = Ring::new(&["a:1", "b:1", "c:1"]);
        let four = Ring::new(&["a:1", "b:1", "c:1", "d:1"]);
        let mut counts = [0usize; 3];
        let mut moved = 0;
        let n = 10_000;
        for k in 0..n {
            let key = format!(":1:key-{k}");
            let before = three.server_of(key.as_bytes());
            counts[before] += 1;
            let after = four.server_of(key.as_bytes());
            if after != before {
                assert_eq!(after, 3, "a key only ever moves to the new server");
                moved += 1;
            }
        }
        for c in counts {
            assert!((2_000..4_700).contains(&c), "{counts:?}");
        }
        let fraction = moved as f64 / n as f64;
        assert!((0.15..0.35).contains(&fraction), "{fraction}");
    }
}
