use super::*;

#[test]
fn itoa_matches_to_string() {
    for n in [0, 1, -1, 42, i64::MAX, i64::MIN, -1234567890] {
        assert_eq!(itoa_buf(n).as_bytes_mut(), n.to_string().as_bytes());
    }
}

#[test]
fn entry_bound_evicts_and_counts() {
    let m = MemoryBackend::new(&MemoryOptions::default().max_entries(100)).unwrap();
    for i in 0..1000 {
        m.set(format!("k{i}").as_bytes(), b"v", None).unwrap();
    }
    assert!(m.len() <= 100, "len {}", m.len());
    assert!(m.evictions() >= 900, "evictions {}", m.evictions());
}

#[test]
fn byte_bound_holds_and_rejects_oversized() {
    let m = MemoryBackend::new(&MemoryOptions::default().max_bytes(64 * 1024)).unwrap();
    for i in 0..1000 {
        m.set(format!("k{i}").as_bytes(), &[7u8; 500], None)
            .unwrap();
    }
    assert!(m.weight() <= 64 * 1024, "weight {}", m.weight());
    let err = m.set(b"big", &vec![0u8; 128 * 1024], None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge);
    assert!(m.get(b"big").unwrap().is_none());
}

#[test]
fn clear_and_delete_are_not_evictions() {
    let clock = MemoryBackend::new(&MemoryOptions::default().max_entries(1000)).unwrap();
    let stores = [clock, lru(1000, None), lru(1000, Some(3))];
    for m in &stores {
        set_keys(m, 0..100);
        m.set(b"p:1", b"v", None).unwrap();
        m.set(b"p:2", b"v", None).unwrap();
        m.delete(b"k1").unwrap();
        m.clear(b"p:").unwrap();
        assert_eq!(m.len(), 99, "{:?}", m.eviction());
        m.clear(b"").unwrap();
        assert_eq!(m.len(), 0);
        assert_eq!(
            m.evictions(),
            0,
            "{:?}: clear counted as evictions",
            m.eviction()
        );
        // Still counting the real ones afterwards.
        set_keys(m, 0..1100);
        assert!(
            m.evictions() >= 100,
            "{:?}: {}",
            m.eviction(),
            m.evictions()
        );
    }
}

#[test]
fn overwrites_are_not_evictions() {
    let clock = MemoryBackend::new(&MemoryOptions::default().max_entries(1000)).unwrap();
    let stores = [clock, lru(1000, None), lru(1000, Some(3))];
    for m in &stores {
        for round in 0..5 {
            set_keys(m, 0..10);
            m.set(b"k0", format!("v{round}").as_bytes(), None).unwrap();
        }
        assert_eq!(m.len(), 10, "{:?}", m.eviction());
        assert_eq!(m.evictions(), 0, "{:?}: overwrites counted", m.eviction());
        assert_eq!(&*m.get(b"k0").unwrap().unwrap(), b"v4");
    }
}

fn lru(max: u64, cull: Option<u64>) -> MemoryBackend {
    let opts = MemoryOptions::default().max_entries(max);
    let opts = match cull {
        Some(n) => opts.cull_frequency(n),
        None => opts.eviction(Eviction::Lru),
    };
    MemoryBackend::new(&opts).unwrap()
}

fn set_keys(m: &MemoryBackend, keys: impl IntoIterator<Item = u32>) {
    for i in keys {
        m.set(format!("k{i}").as_bytes(), b"v", None).unwrap();
    }
}

fn present(m: &MemoryBackend, keys: impl IntoIterator<Item = u32>) -> Vec<u32> {
    keys.into_iter()
        .filter(|i| m.has_key(format!("k{i}").as_bytes()).unwrap())
        .collect()
}

#[test]
fn cull_frequency_gives_djangos_counts() {
    // Django's test_cull: MAX_ENTRIES=30, CULL_FREQUENCY=3, 49 sets leave 29.
    let m = lru(30, Some(3));
    assert_eq!(m.eviction(), Eviction::Lru);
    set_keys(&m, 1..50);
    assert_eq!(m.len(), 29);
    assert_eq!(m.evictions(), 20);
    // The oldest went: keys 1..=20 in two culls of 10.
    assert_eq!(present(&m, 1..50), (21..50).collect::<Vec<_>>());
    // test_zero_cull: CULL_FREQUENCY=0 empties the store, 19 remain.
    let m = lru(30, Some(0));
    set_keys(&m, 1..50);
    assert_eq!(m.len(), 19);
    assert_eq!(present(&m, 1..50), (31..50).collect::<Vec<_>>());
}

#[test]
fn lru_reads_and_incr_protect_keys_and_overwrites_do_not_cull() {
    let m = lru(9, Some(3));
    set_keys(&m, 0..9);
    for i in 0..3 {
        assert!(m.get(format!("k{i}").as_bytes()).unwrap().is_some());
    }
    // Overwriting a present key in a full store moves it, removes nothing.
    set_keys(&m, 3..6);
    assert_eq!(m.len(), 9);
    assert_eq!(
        m.incr(b"k6", 1).unwrap_err().kind(),
        ErrorKind::NotAnInteger
    );
    set_keys(&m, [100]);
    // Full at 9: a third (3) went, the least recently used: 6 (incr failed, not moved), 7, 8.
    assert_eq!(present(&m, 0..9), (0..6).collect::<Vec<_>>());
    assert_eq!(m.len(), 7);
}

#[test]
fn lru_cull_takes_expired_entries_first() {
    let m = lru(6, Some(3));
    set_keys(&m, 0..4);
    m.set(b"e1", b"v", Some(Duration::from_nanos(1))).unwrap();
    m.set(b"e2", b"v", Some(Duration::from_nanos(1))).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    set_keys(&m, [4]);
    // 6/3 = 2 had to go: the two expired ones, none of the live keys.
    assert_eq!(present(&m, 0..5), vec![0, 1, 2, 3, 4]);
    assert_eq!(m.len(), 5);
}

#[test]
fn plain_lru_evicts_one_and_options_are_checked() {
    let m = lru(3, None);
    set_keys(&m, 0..3);
    m.get(b"k0").unwrap();
    set_keys(&m, [3]);
    assert_eq!(present(&m, 0..4), vec![0, 2, 3]);
    let bad = [
        MemoryOptions::default()
            .eviction(Eviction::Clock)
            .cull_frequency(3),
        MemoryOptions::default()
            .max_bytes(1 << 20)
            .cull_frequency(3),
        MemoryOptions::default()
            .max_bytes(1 << 20)
            .eviction(Eviction::Lru),
        MemoryOptions::default()
            .max_entries(0)
            .eviction(Eviction::Lru),
    ];
    for opts in bad {
        let err = MemoryBackend::new(&opts).err().expect("rejected");
        assert!(err.is_configuration(), "{err}");
    }
}

#[test]
fn keys_sharing_a_hash_never_answer_for_each_other() {
    let mut m = MemoryBackend::new(&MemoryOptions::default()).unwrap();
    Arc::get_mut(&mut m.inner).unwrap().colliding = true;
    m.set(b"k1", b"1", None).unwrap();
    m.set(b"k2", b"2", None).unwrap();
    // One index: the second write replaced the first, which is gone, never answered.
    assert!(m.get(b"k1").unwrap().is_none());
    assert_eq!(m.get(b"k2").unwrap().unwrap(), *b"2".as_slice());
    assert!(!m.has_key(b"k1").unwrap());
    assert_eq!(m.ttl(b"k1").unwrap(), TimeToLive::Missing);
    assert_eq!(m.incr(b"k1", 1).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(!m.touch(b"k1", None).unwrap());
    assert!(!m.replace(b"k1", b"x", None).unwrap());
    assert!(!m.delete_if_equals(b"k1", b"2").unwrap());
    assert!(!m.delete(b"k1").unwrap());
    assert_eq!(m.get(b"k2").unwrap().unwrap(), *b"2".as_slice());
    // add of the other key stores it in place of the one there.
    assert!(m.add(b"k1", b"1", None).unwrap());
    assert!(!m.add(b"k1", b"x", None).unwrap());
    assert_eq!(m.incr(b"k1", 41).unwrap(), 42);
    assert!(m.get(b"k2").unwrap().is_none());
    // Every page (one may be empty while the scan goes on: it copies a shard at a time).
    let mut scan = Arc::new(m.clone())
        .scan_keys(&KeyPattern::new("*"), 10)
        .unwrap();
    let mut keys = Vec::new();
    while let Some(page) = scan.next_page().unwrap() {
        keys.extend(page);
    }
    assert_eq!(keys, vec![b"k1".to_vec()]);
    assert_eq!(m.len(), 1);
}

#[test]
fn named_stores_are_shared_and_unnamed_are_not() {
    let a = MemoryBackend::named("shared-test", &MemoryOptions::default()).unwrap();
    let b = MemoryBackend::named("shared-test", &MemoryOptions::default()).unwrap();
    a.set(b"k", b"v", None).unwrap();
    assert_eq!(b.get(b"k").unwrap().unwrap(), *b"v".as_slice());
    let c = MemoryBackend::new(&MemoryOptions::default()).unwrap();
    assert!(c.get(b"k").unwrap().is_none());
}

#[test]
fn a_key_differing_in_any_one_byte_never_answers_for_another() {
    // Every length the lookup's key compare treats apart (short, 8 to 15, 16 to 32, longer),
    // with every key of one length sharing one hash, so only the compare tells them apart.
    let mut m = MemoryBackend::new(&MemoryOptions::default()).unwrap();
    Arc::get_mut(&mut m.inner).unwrap().colliding = true;
    for len in 0..=40 {
        let key: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        m.set(&key, b"v", None).unwrap();
        assert_eq!(m.get(&key).unwrap().unwrap(), *b"v".as_slice(), "{len}");
        for at in 0..len {
            let mut other = key.clone();
            other[at] ^= 0x20;
            assert!(m.get(&other).unwrap().is_none(), "length {len}, byte {at}");
        }
    }
}

#[test]
fn an_entry_is_two_words_and_reads_share_its_bytes() {
    // The thin buffer's pointer and the deadline: quick_cache's slot is 32 bytes.
    assert_eq!(std::mem::size_of::<Entry>(), 16);
    const LONG: &[u8] = b"a value longer than 16 bytes";
    for m in [
        MemoryBackend::new(&MemoryOptions::default()).unwrap(),
        lru(10, None),
    ] {
        m.set(b"k", LONG, None).unwrap();
        let a = m.get(b"k").unwrap().unwrap();
        let b = m.get(b"k").unwrap().unwrap();
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "both reads hand out the stored bytes"
        );
        assert_eq!(a.clone().skip(2), Value::from(&LONG[2..]));
        assert_eq!(a.clone().skip(99).as_bytes(), b"");
        assert_eq!(a.into_vec(), LONG);
        // An overwrite or a delete leaves the bytes already read intact.
        m.set(b"k", &LONG.to_ascii_uppercase(), None).unwrap();
        assert!(m.delete(b"k").unwrap());
        assert_eq!(&*b, LONG);
        // A short value is copied out instead: no reference to the entry is held.
        m.set(b"k", b"value", None).unwrap();
        let short = m.get(b"k").unwrap().unwrap();
        assert_ne!(short.as_ptr(), lent_at(&m, b"k"));
        m.set(b"k", b"other", None).unwrap();
        assert_eq!(&*short, b"value");
    }
}

/// Where `get_with` lends the bytes of `key` from: the stored entry's.
fn lent_at(m: &MemoryBackend, key: &[u8]) -> *const u8 {
    let mut at = std::ptr::null();
    assert!(m.get_with(key, &mut |v| at = v.as_ptr()).unwrap());
    at
}

#[test]
fn a_slot_of_the_default_store_is_forty_bytes() {
    // quick_cache's slot holds the 32-bit index beside the entry (a u64 index makes it 40
    // bytes with `unsync`'s placeholder), plus the slab's two 4-byte links; `memory_used`
    // counts the slab's slots times their size.
    let weighter = EntryWeighter { by_bytes: false };
    let store = ClockStore::new(10_000, 10_000, weighter, EvictionCounter::default()).unwrap();
    let n = 100;
    for h in 0..n {
        store.write(h).insert(h, Entry::new(b"k", b"v", 0));
    }
    assert_eq!(store.len(), n as usize);
    let slots: usize = store
        .shards()
        .iter()
        .map(|s| s.read().memory_used().entries)
        .sum();
    assert_eq!(slots, n as usize * 40);
}

/// The value `get_with` lends for `key`, cloned inside `visit` (the clone counts a reference).
fn lend_clone(m: &MemoryBackend, key: &[u8]) -> Option<Value> {
    let mut kept = None;
    let found = m.get_with(key, &mut |v| kept = Some(v.clone())).unwrap();
    assert_eq!(found, kept.is_some());
    kept
}

#[test]
fn a_lent_value_cloned_in_visit_outlives_an_overwrite_and_a_removal() {
    for m in [
        MemoryBackend::new(&MemoryOptions::default()).unwrap(),
        lru(10, None),
    ] {
        // Longer than a `Value` holds in itself: a clone shares the stored bytes.
        m.set(b"k", b"the first value, stored", None).unwrap();
        let mut seen = Vec::new();
        assert!(m
            .get_with(b"k", &mut |v| seen.extend_from_slice(v))
            .unwrap());
        assert_eq!(seen, b"the first value, stored");
        let first = lend_clone(&m, b"k").unwrap();
        // The lent bytes are the stored ones (no copy), as a counted read's are.
        assert_eq!(first.as_ptr(), m.get(b"k").unwrap().unwrap().as_ptr());
        m.set(b"k", b"second value", None).unwrap();
        let second = lend_clone(&m, b"k").unwrap();
        assert!(m.delete(b"k").unwrap());
        assert_eq!(m.len(), 0, "{:?}", m.eviction());
        // Both entries are gone from the store; the clones still hold their bytes.
        assert_eq!(&*first, b"the first value, stored");
        assert_eq!(&*second, b"second value");
        assert!(lend_clone(&m, b"k").is_none());
        drop(first);
        assert_eq!(second.clone().into_vec(), b"second value");
    }
}

#[test]
fn a_lent_read_of_an_expired_entry_misses_and_removes_it() {
    for m in [
        MemoryBackend::new(&MemoryOptions::default()).unwrap(),
        lru(10, None),
    ] {
        m.set(b"k", b"v", Some(Duration::from_nanos(1))).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(m.len(), 1);
        assert!(!m
            .get_with(b"k", &mut |_| panic!("lent an expired value"))
            .unwrap());
        assert_eq!(m.len(), 0, "{:?}", m.eviction());
    }
}

#[test]
fn lent_reads_race_overwrites_and_removals() {
    // Readers lend (and now and then clone) while writers overwrite and remove the same keys:
    // every value seen is one that was written, whole, and every clone stays intact after
    // its entry is gone.
    const KEYS: u8 = 4;
    let rounds: usize = if cfg!(miri) { 30 } else { 3_000 };
    let value = |key: u8, round: usize| format!("{key}:{round:06}:{}", "x".repeat(round % 40));
    let well_formed = |key: u8, bytes: &[u8]| {
        let text = std::str::from_utf8(bytes).expect("utf-8");
        let mut parts = text.split(':');
        let (k, r) = (parts.next().unwrap(), parts.next().unwrap());
        let round: usize = r.parse().expect("round");
        k == key.to_string() && text == value(key, round)
    };
    for m in [
        MemoryBackend::new(&MemoryOptions::default()).unwrap(),
        lru(100, None),
    ] {
        std::thread::scope(|s| {
            for w in 0..2u8 {
                let m = &m;
                s.spawn(move || {
                    for round in 0..rounds {
                        let key = ((round + usize::from(w)) % usize::from(KEYS)) as u8;
                        if round % 5 == 4 {
                            m.delete(&[key]).unwrap();
                        } else {
                            m.set(&[key], value(key, round).as_bytes(), None).unwrap();
                        }
                    }
                });
            }
            for _ in 0..2 {
                let m = &m;
                s.spawn(move || {
                    let mut kept = Vec::new();
                    for round in 0..rounds {
                        let key = (round % usize::from(KEYS)) as u8;
                        m.get_with(&[key], &mut |v| {
                            assert!(well_formed(key, v), "{v:?}");
                            if round % 7 == 0 {
                                kept.push((key, v.clone()));
                            }
                        })
                        .unwrap();
                    }
                    for (key, v) in kept {
                        assert!(well_formed(key, &v), "{v:?}");
                    }
                });
            }
        });
    }
}

#[test]
fn an_overwrite_rewrites_in_place_only_what_no_reader_holds() {
    let by_bytes = MemoryBackend::new(&MemoryOptions::default().max_bytes(1 << 20)).unwrap();
    let stores = [
        MemoryBackend::new(&MemoryOptions::default()).unwrap(),
        by_bytes,
        lru(10, None),
    ];
    // Longer than a `Value` holds in itself, so that a read holds the stored buffer.
    let value = |n: u8| [&b"a value longer than 16 bytes, #"[..], &[b'0' + n]].concat();
    for m in &stores {
        m.set(b"key", &value(1), None).unwrap();
        let at = lent_at(m, b"key");
        // No reader holds the buffer: the same length goes into the same bytes.
        m.set(b"key", &value(2), Some(Duration::from_secs(60)))
            .unwrap();
        let read = m.get(b"key").unwrap().unwrap();
        assert_eq!(&*read, value(2));
        assert_eq!(read.as_ptr(), at, "{:?}: rewritten in place", m.eviction());
        assert!(matches!(m.ttl(b"key").unwrap(), TimeToLive::Left(_)));
        // `read` holds it now: the next overwrite goes into a new buffer, and the value
        // read keeps its bytes.
        m.set(b"key", &value(3), None).unwrap();
        assert_eq!(&*read, value(2));
        let now = m.get(b"key").unwrap().unwrap();
        assert_eq!(&*now, value(3));
        assert_ne!(now.as_ptr(), read.as_ptr());
        assert_eq!(m.ttl(b"key").unwrap(), TimeToLive::Forever);
        drop((read, now));
        // A short value read is a copy, so it holds nothing: the overwrite is in place.
        m.set(b"key", b"value-1", None).unwrap();
        let (at, read) = (lent_at(m, b"key"), m.get(b"key").unwrap().unwrap());
        m.set(b"key", b"value-2", None).unwrap();
        assert_eq!((lent_at(m, b"key"), &*read), (at, &b"value-1"[..]));
        // Other lengths, shorter and longer.
        m.set(b"key", b"v", None).unwrap();
        assert_eq!(&*m.get(b"key").unwrap().unwrap(), b"v");
        m.set(b"key", &[b'x'; 300], None).unwrap();
        assert_eq!(&*m.get(b"key").unwrap().unwrap(), &[b'x'; 300][..]);
        assert_eq!((m.len(), m.evictions()), (1, 0), "{:?}", m.eviction());
    }
}

#[test]
fn overwrites_keep_the_byte_weight_exact_and_bounded() {
    let m = MemoryBackend::new(&MemoryOptions::default().max_bytes(64 * 1024)).unwrap();
    let weigh = |k: &[u8], v: usize| k.len() as u64 + v as u64 + ENTRY_OVERHEAD;
    m.set(b"k", &[1; 100], None).unwrap();
    assert_eq!(m.weight(), weigh(b"k", 100));
    m.set(b"k", &[2; 100], None).unwrap();
    assert_eq!(m.weight(), weigh(b"k", 100));
    m.set(b"k", &[3; 10], None).unwrap();
    assert_eq!(m.weight(), weigh(b"k", 10));
    m.set(b"k", &[4; 1000], None).unwrap();
    assert_eq!(m.weight(), weigh(b"k", 1000));
    // Values that grow on overwrite still evict to stay within the bound.
    for i in 0..200 {
        m.set(format!("k{i}").as_bytes(), &[7; 100], None).unwrap();
    }
    for i in 0..200 {
        m.set(format!("k{i}").as_bytes(), &[8; 900], None).unwrap();
        assert!(m.weight() <= 64 * 1024, "weight {}", m.weight());
    }
    assert!(m.evictions() > 0);
}

#[test]
fn an_entry_overwrite_is_in_place_when_it_can_be_and_never_grows_the_weight() {
    let by_bytes = EntryWeighter { by_bytes: true };
    // Longer than a `Value` holds in itself, so that `shared_value` holds the buffer.
    let value = |n: u8| [&b"a value longer than 16 bytes, #"[..], &[b'0' + n]].concat();
    let mut e = Entry::new(b"key", &value(1), 0);
    let at = e.value().as_ptr();
    // The buffer a write replaces, handed back to be freed after the store's lock.
    let mut old = None;
    assert!(e.overwrite(b"key", &value(2), 7, by_bytes, &mut old));
    assert_eq!(
        (e.value(), e.value().as_ptr(), e.expires_at),
        (&value(2)[..], at, 7)
    );
    // A reader's hold: a new buffer, the reader's bytes unchanged.
    let read = e.shared_value();
    assert!(e.overwrite(b"key", &value(3), 8, by_bytes, &mut old));
    assert_eq!((&*read, e.value()), (&value(2)[..], &value(3)[..]));
    assert_eq!(
        old.take()
            .map(|b: crate::value::EntryBuf| b.value().to_vec()),
        Some(value(2))
    );
    // Lighter: a new buffer; heavier by bytes: refused, unchanged; by count: done.
    assert!(e.overwrite(b"key", b"v", 9, by_bytes, &mut old));
    assert_eq!(e.value(), b"v");
    assert!(!e.overwrite(b"key", &value(4), 10, by_bytes, &mut old));
    assert_eq!((e.value(), e.expires_at), (&b"v"[..], 9));
    assert!(e.overwrite(
        b"key",
        &value(4),
        10,
        EntryWeighter { by_bytes: false },
        &mut old
    ));
    assert_eq!(e.value(), value(4));
    // Another key under the same hash is replaced, never rewritten as this one.
    assert!(e.overwrite(b"kez", &value(5), 0, by_bytes, &mut old));
    assert_eq!((e.key(), e.value()), (&b"kez"[..], &value(5)[..]));
}

#[test]
fn the_index_spreads_keys_as_a_random_32_bit_hash() {
    // A million keys of a `Cache` (`:1:` and a name; short and long ones): a random 32-bit
    // hash gives about n² / 2³³ = 116 pairs that share an index, and every shard about its
    // share of the keys.
    let m = MemoryBackend::new(&MemoryOptions::default()).unwrap();
    let Store::Clock(store) = &m.inner.store else {
        panic!("the default store")
    };
    let n = 1_000_000;
    let mut hashes: Vec<KeyHash> = (0..n)
        .map(|i| {
            let name = if i % 2 == 0 {
                format!("k{i}")
            } else {
                format!("views.decorators.cache.page.{i}")
            };
            let key = format!(":1:{name}");
            let h = m.hash(key.as_bytes());
            assert_eq!(
                h,
                m.hash_parts(crate::cache::KeyParts::whole(key.as_bytes()))
            );
            h
        })
        .collect();
    let mut per_shard = vec![0usize; store.shards().len()];
    for &h in &hashes {
        let shard = store.shard_of(h);
        per_shard[shard] += 1;
    }
    hashes.sort_unstable();
    let pairs = hashes.windows(2).filter(|w| w[0] == w[1]).count();
    assert!(pairs < 250, "{pairs} keys share an index with another");
    let mean = n / per_shard.len();
    for count in per_shard {
        assert!(
            count.abs_diff(mean) < mean / 10,
            "{count} keys in a shard, mean {mean}"
        );
    }
}
