//! The bytes of the `file://` cache on disk, and nothing that does I/O: a pack's header and its
//! index slots, a pack record, a large entry's own file (format 1, `PCFE`), the index file's
//! layout, and how a key's hash names its pack, shard and file. Every decoder checks what it
//! reads (magic, version, lengths, checksum) and answers `None` for anything else.

use crate::error::{Error, ErrorKind, Result};

// A large entry's own file.
pub(super) const ENTRY_MAGIC: [u8; 4] = *b"PCFE";
pub(super) const ENTRY_VERSION: u16 = 1;
/// Bytes before the key in a large entry's own file.
pub const ENTRY_HEADER_LEN: usize = 40;

// A pack file: header, index slots, records.
pub(super) const PACK_MAGIC: [u8; 4] = *b"PCPK";
pub(super) const PACK_VERSION: u16 = 1;
pub(super) const PACK_HEADER_LEN: u64 = 64;
pub(super) const RETIRED: u16 = 1;

// A pack record.
/// Bytes before the key in a pack record.
pub const RECORD_HEADER_LEN: usize = 24;
pub(super) const RECORD_MAGIC: [u8; 2] = *b"pc";
pub(super) const RECORD_VERSION: u8 = 1;
/// Entries whose record (header, key and value) is at most this many bytes go into a pack;
/// larger ones get a file of their own, as diskcache does above its threshold.
pub const SMALL_MAX: usize = 2048;
pub(super) const MIN_CAP: u64 = 64;
pub(super) const MAX_CAP: u64 = 1 << 28;
/// Record offsets are stored in 4-byte units in a `u32`: 16 GiB of records per pack.
pub(super) const UNIT: u64 = 4;
pub(super) const MAX_DATA: u64 = (u32::MAX as u64) * UNIT;
pub(super) const SLOT_EMPTY: u64 = 0;
pub(super) const SLOT_TOMB: u64 = 1;
pub(super) const SLOT_MOVED: u64 = u64::MAX;
pub(super) const MAX_U48: u64 = (1 << 48) - 1;

// The index file (the time of the last reconciling scan).
pub(super) const INDEX_MAGIC: [u8; 4] = *b"PCFI";
/// The index file's version (written as the entry files' version was, 1).
pub(super) const INDEX_VERSION: u16 = 1;
pub(super) const INDEX_LEN: usize = 64;

/// The header of a pack file.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct PackHeader {
    pub(super) retired: bool,
    pub(super) cap: u64,
    pub(super) data_end: u64,
    pub(super) live_entries: u64,
    pub(super) live_bytes: u64,
    pub(super) dead_bytes: u64,
    /// Slots that are not empty: live entries and tombstones.
    pub(super) used: u64,
}

pub(super) fn data_start(cap: u64) -> u64 {
    PACK_HEADER_LEN + cap * 8
}

pub(super) fn align(n: u64) -> u64 {
    n.div_ceil(UNIT) * UNIT
}

impl PackHeader {
    pub(super) fn empty(cap: u64) -> PackHeader {
        PackHeader {
            cap,
            data_end: data_start(cap),
            ..PackHeader::default()
        }
    }

    pub(super) fn encode(&self) -> [u8; PACK_HEADER_LEN as usize] {
        let mut b = [0u8; PACK_HEADER_LEN as usize];
        b[0..4].copy_from_slice(&PACK_MAGIC);
        b[4..6].copy_from_slice(&PACK_VERSION.to_le_bytes());
        let flags = if self.retired { RETIRED } else { 0 };
        b[6..8].copy_from_slice(&flags.to_le_bytes());
        for (i, v) in [
            self.cap,
            self.data_end,
            self.live_entries,
            self.live_bytes,
            self.dead_bytes,
            self.used,
        ]
        .into_iter()
        .enumerate()
        {
            b[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&b[..56]);
        b[56..60].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks a header; `None` for anything that is not a sane version-1 pack.
    pub(super) fn decode(b: &[u8]) -> Option<PackHeader> {
        if b.len() < PACK_HEADER_LEN as usize || b[0..4] != PACK_MAGIC {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(b[56..60].try_into().expect("4 bytes"));
        if b[4..6] != PACK_VERSION.to_le_bytes()
            || crc32fast::hash(&b[..56]) != crc
            || b[60..64] != [0; 4]
        {
            return None;
        }
        let flags = u16::from_le_bytes([b[6], b[7]]);
        let h = PackHeader {
            retired: flags & RETIRED != 0,
            cap: u64_at(8),
            data_end: u64_at(16),
            live_entries: u64_at(24),
            live_bytes: u64_at(32),
            dead_bytes: u64_at(40),
            used: u64_at(48),
        };
        let sane = flags & !RETIRED == 0
            && h.cap.is_power_of_two()
            && (MIN_CAP..=MAX_CAP).contains(&h.cap)
            && h.data_end >= data_start(h.cap)
            && h.data_end <= MAX_DATA
            && h.data_end % UNIT == 0
            && h.used <= h.cap
            && h.live_entries <= h.used;
        sane.then_some(h)
    }
}

/// A slot of a small record: 16 bits of the key's hash, the record's length, its offset.
pub(super) fn slot_small(tag: u16, len: usize, off: u64) -> u64 {
    (u64::from(tag) << 48) | ((len as u64) << 32) | (off / UNIT)
}

/// A slot of a large entry (length 0): 48 bits of the key's hash.
pub(super) fn slot_large(hash: u128) -> u64 {
    (u64::from(tag_of(hash)) << 48) | u64::from(check_of(hash))
}

pub(super) fn slot_is_large(slot: u64) -> bool {
    (slot >> 32) & 0xffff == 0
}

pub(super) fn slot_len(slot: u64) -> usize {
    ((slot >> 32) & 0xffff) as usize
}

pub(super) fn slot_off(slot: u64) -> u64 {
    (slot & 0xffff_ffff) * UNIT
}

pub(super) fn tag_of(hash: u128) -> u16 {
    (hash >> 64) as u16
}

/// 32 more bits of the hash for large slots; never 0 or 1 (the empty and tombstone slots).
pub(super) fn check_of(hash: u128) -> u32 {
    ((hash >> 80) as u32).max(2)
}

pub(super) fn pack_of(hash: u128) -> usize {
    (hash >> 124) as usize
}

pub(super) fn home(hash: u128, cap: u64) -> u64 {
    (hash as u64) & (cap - 1)
}

/// True when `slot` (not empty, tombstone or moved) may belong to the key hashed `hash`.
pub(super) fn slot_matches(slot: u64, hash: u128) -> bool {
    if (slot >> 48) as u16 != tag_of(hash) {
        return false;
    }
    if slot_is_large(slot) {
        slot & 0xffff_ffff == u64::from(check_of(hash))
    } else {
        true
    }
}

pub(super) fn fits_in_pack(key: &[u8], value: &[u8]) -> bool {
    RECORD_HEADER_LEN + key.len() + value.len() <= SMALL_MAX
}

pub(super) fn record_checksum(rec: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&rec[..4]);
    h.update(&rec[8..]);
    h.finalize()
}

/// The bytes of a pack record; the caller checked [`fits_in_pack`].
pub(super) fn encode_record(key: &[u8], value: &[u8], expires_at: u64, written_at: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(RECORD_HEADER_LEN + key.len() + value.len());
    b.extend_from_slice(&RECORD_MAGIC);
    b.push(RECORD_VERSION);
    b.push(0);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&expires_at.min(MAX_U48).to_le_bytes()[..6]);
    b.extend_from_slice(&written_at.min(MAX_U48).to_le_bytes()[..6]);
    b.extend_from_slice(&(key.len() as u16).to_le_bytes());
    b.extend_from_slice(&(value.len() as u16).to_le_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(value);
    let crc = record_checksum(&b);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

/// A decoded pack record.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Record<'a> {
    /// Unix milliseconds; 0 = never.
    pub expires_at: u64,
    /// Unix milliseconds.
    pub written_at: u64,
    /// The full key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
}

/// Decodes one whole pack record, or `None` when the bytes are not exactly one.
pub fn decode_record(b: &[u8]) -> Option<Record<'_>> {
    if b.len() < RECORD_HEADER_LEN || b[0..2] != RECORD_MAGIC || b[2] != RECORD_VERSION || b[3] != 0
    {
        return None;
    }
    let u48_at = |i: usize| {
        let mut x = [0u8; 8];
        x[..6].copy_from_slice(&b[i..i + 6]);
        u64::from_le_bytes(x)
    };
    let key_len = usize::from(u16::from_le_bytes([b[20], b[21]]));
    let value_len = usize::from(u16::from_le_bytes([b[22], b[23]]));
    if b.len() != RECORD_HEADER_LEN + key_len + value_len {
        return None;
    }
    let crc = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
    if record_checksum(b) != crc {
        return None;
    }
    let key_end = RECORD_HEADER_LEN + key_len;
    Some(Record {
        expires_at: u48_at(8),
        written_at: u48_at(14),
        key: &b[RECORD_HEADER_LEN..key_end],
        value: &b[key_end..],
    })
}

#[derive(Clone, Copy)]
pub(super) struct EntryHeader {
    pub(super) expires_at: u64,
    pub(super) written_at: u64,
    pub(super) key_len: usize,
    pub(super) value_len: usize,
}

impl EntryHeader {
    pub(super) fn total(&self) -> usize {
        ENTRY_HEADER_LEN + self.key_len + self.value_len
    }
}

/// Parses the fixed header; `None` for anything that is not a version-1 entry.
pub(super) fn parse_entry_header(buf: &[u8]) -> Option<EntryHeader> {
    if buf.len() < ENTRY_HEADER_LEN || buf[0..4] != ENTRY_MAGIC {
        return None;
    }
    let u16_at = |i: usize| u16::from_le_bytes([buf[i], buf[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
    if u16_at(4) != ENTRY_VERSION || u16_at(6) != 0 {
        return None;
    }
    let key_len = usize::try_from(u32_at(24)).ok()?;
    let value_len = usize::try_from(u64_at(32)).ok()?;
    key_len
        .checked_add(value_len)?
        .checked_add(ENTRY_HEADER_LEN)?;
    Some(EntryHeader {
        expires_at: u64_at(8),
        written_at: u64_at(16),
        key_len,
        value_len,
    })
}

pub(super) fn entry_checksum(file: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&file[..28]);
    h.update(&file[32..]);
    h.finalize()
}

/// The bytes of an entry file.
pub(super) fn encode_entry(
    key: &[u8],
    value: &[u8],
    expires_at: u64,
    written_at: u64,
) -> Result<Vec<u8>> {
    let key_len = u32::try_from(key.len())
        .map_err(|_| Error::new(ErrorKind::InvalidKey, "key is too long for a file:// cache"))?;
    let mut buf = Vec::with_capacity(ENTRY_HEADER_LEN + key.len() + value.len());
    buf.extend_from_slice(&ENTRY_MAGIC);
    buf.extend_from_slice(&ENTRY_VERSION.to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes());
    buf.extend_from_slice(&expires_at.to_le_bytes());
    buf.extend_from_slice(&written_at.to_le_bytes());
    buf.extend_from_slice(&key_len.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    let crc = entry_checksum(&buf);
    buf[28..32].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// Decodes a whole entry file: header, key and value, or `None` when it is not one.
pub fn decode_entry(file: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let h = parse_entry_header(file)?;
    if file.len() != h.total() {
        return None;
    }
    let crc = u32::from_le_bytes(file[28..32].try_into().expect("4 bytes"));
    if entry_checksum(file) != crc {
        return None;
    }
    let key = &file[ENTRY_HEADER_LEN..ENTRY_HEADER_LEN + h.key_len];
    Some((h.expires_at, key, &file[ENTRY_HEADER_LEN + h.key_len..]))
}

pub(super) fn hash_key(key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key)
}

pub(super) fn shard_of(hash: u128) -> usize {
    (hash >> 120) as usize
}

pub(super) fn is_entry_name(name: &[u8]) -> bool {
    name.len() == 32
        && name
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

pub(super) fn parse_hex(name: &[u8]) -> Option<u128> {
    u128::from_str_radix(std::str::from_utf8(name).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every single-byte flip, truncation and extension of `bytes` fails `accepts`.
    fn assert_rejects_damage(bytes: &[u8], accepts: impl Fn(&[u8]) -> bool) {
        assert!(accepts(bytes));
        for i in 0..bytes.len() {
            let mut bad = bytes.to_vec();
            bad[i] ^= 0x41;
            assert!(!accepts(&bad), "flipped byte {i}");
        }
        for n in 0..bytes.len() {
            assert!(!accepts(&bytes[..n]), "truncated to {n}");
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(!accepts(&long), "extended");
    }

    #[test]
    fn entry_round_trips_and_rejects_damage() {
        let bytes = encode_entry(b"k", b"value", 7, 3).unwrap();
        assert_eq!(bytes.len(), ENTRY_HEADER_LEN + 1 + 5);
        assert_eq!(decode_entry(&bytes), Some((7, &b"k"[..], &b"value"[..])));
        assert_rejects_damage(&bytes, |b| decode_entry(b).is_some());
    }

    #[test]
    fn huge_lengths_in_a_header_do_not_overflow() {
        let mut bytes = encode_entry(b"k", b"v", 0, 0).unwrap();
        bytes[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(decode_entry(&bytes), None);
        bytes[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_entry(&bytes), None);
    }

    #[test]
    fn names_are_hex_and_sharded_by_the_first_byte() {
        let h = hash_key(b"../../etc/passwd");
        let name = format!("{h:032x}");
        assert!(is_entry_name(name.as_bytes()));
        assert_eq!(parse_hex(name.as_bytes()), Some(h));
        assert_eq!(format!("{:02x}", shard_of(h)), name[..2]);
        assert!(!is_entry_name(b".tmp.1.2.3"));
        assert!(!is_entry_name(b"0123456789ABCDEF0123456789abcdef"));
    }

    #[test]
    fn records_round_trip_and_reject_damage() {
        let rec = encode_record(b"key", b"value", 5, 9);
        assert_eq!(rec.len(), RECORD_HEADER_LEN + 8);
        let r = decode_record(&rec).unwrap();
        assert_eq!(
            (r.expires_at, r.written_at, r.key, r.value),
            (5, 9, &b"key"[..], &b"value"[..])
        );
        assert_rejects_damage(&rec, |b| decode_record(b).is_some());
        // Deadlines past the 48-bit field are "in 8,000 years", not wrapped around.
        let far = encode_record(b"k", b"v", u64::MAX, 1);
        assert_eq!(decode_record(&far).unwrap().expires_at, MAX_U48);
    }

    #[test]
    fn pack_headers_round_trip_and_reject_nonsense() {
        let h = PackHeader {
            retired: true,
            cap: 1024,
            data_end: data_start(1024) + 400,
            live_entries: 3,
            live_bytes: 300,
            dead_bytes: 100,
            used: 5,
        };
        assert_eq!(PackHeader::decode(&h.encode()), Some(h));
        for i in 0..PACK_HEADER_LEN as usize {
            let mut bad = h.encode();
            bad[i] ^= 0x04;
            assert_eq!(PackHeader::decode(&bad), None, "flipped byte {i}");
        }
        let odd = PackHeader { cap: 1000, ..h };
        assert_eq!(PackHeader::decode(&odd.encode()), None);
        let short = PackHeader { data_end: 10, ..h };
        assert_eq!(PackHeader::decode(&short.encode()), None);
    }

    #[test]
    fn slots_keep_their_fields_apart() {
        let hash = hash_key(b"some key");
        let small = slot_small(tag_of(hash), 2000, data_start(64) + 4 * 1000);
        assert!(!slot_is_large(small) && slot_matches(small, hash));
        assert_eq!(
            (slot_len(small), slot_off(small)),
            (2000, data_start(64) + 4000)
        );
        let large = slot_large(hash);
        assert!(slot_is_large(large) && slot_matches(large, hash));
        assert!(![SLOT_EMPTY, SLOT_TOMB, SLOT_MOVED].contains(&large));
        assert!(!slot_matches(large, hash_key(b"another key")));
        assert_eq!(pack_of(hash), shard_of(hash) >> 4);
    }
}
