//! Tags (`core/src/cache/tags.rs`): a tagged entry is a miss once any of its tags is
//! invalidated; untagged entries, other tags and other caches' tags are unaffected; a value
//! computed while its tag is invalidated is stored but never served.

use super::body::Caches;
use polycache::{ErrorKind, Expiry, TimeToLive, Value, MAX_TAGS, MAX_TAG_LEN};

fn bytes(v: Option<Value>) -> Option<Vec<u8>> {
    v.map(Value::into_vec)
}

fn some(v: &[u8]) -> Option<Vec<u8>> {
    Some(v.to_vec())
}

pub async fn tags(c: &Caches) {
    if !c.x.stores {
        return always_misses(c).await;
    }
    let m = &c.main;
    let never = Expiry::Never;
    assert!(m
        .set_tagged("t:a", b"A", never, &["red", "blue"])
        .await
        .unwrap());
    assert!(m.set_tagged("t:b", b"B", never, &["blue"]).await.unwrap());
    assert!(m.set_tagged("t:c", b"C", never, &["green"]).await.unwrap());
    assert!(m.set("t:plain", b"P", never).await.unwrap());
    assert!(c
        .other
        .set_tagged("t:a", b"O", never, &["blue"])
        .await
        .unwrap());
    let keys = ["t:a", "t:b", "t:c", "t:plain"];
    let read = |found: Vec<Option<Value>>| found.into_iter().map(bytes).collect::<Vec<_>>();
    assert_eq!(
        read(m.get_many(&keys, None).await.unwrap()),
        vec![some(b"A"), some(b"B"), some(b"C"), some(b"P")]
    );

    let misses = m.cache().stats().misses;
    assert!(m.invalidate_tags(&["blue"]).await.unwrap());
    assert_eq!(bytes(m.get("t:a").await.unwrap()), None, "any of its tags");
    assert_eq!(bytes(m.get("t:b").await.unwrap()), None);
    assert_eq!(
        bytes(m.get("t:c").await.unwrap()),
        some(b"C"),
        "other tags stay"
    );
    assert_eq!(
        bytes(m.get("t:plain").await.unwrap()),
        some(b"P"),
        "untagged stay"
    );
    assert_eq!(m.cache().stats().misses, misses + 2, "counted as misses");
    assert_eq!(
        read(m.get_many(&keys, None).await.unwrap()),
        vec![None, None, some(b"C"), some(b"P")]
    );
    assert_eq!(
        bytes(c.other.get("t:a").await.unwrap()),
        some(b"O"),
        "another key prefix has tags of its own"
    );
    // Written again after the invalidation: served again.
    m.set_tagged("t:a", b"A2", never, &["red", "blue"])
        .await
        .unwrap();
    assert_eq!(bytes(m.get("t:a").await.unwrap()), some(b"A2"));
    // Invalidating several tags at once, one never used among them.
    assert!(m
        .invalidate_tags(&["green", "never-used", "red"])
        .await
        .unwrap());
    assert_eq!(bytes(m.get("t:a").await.unwrap()), None);
    assert_eq!(bytes(m.get("t:c").await.unwrap()), None);
    assert!(
        m.invalidate_tags(&[]).await.unwrap(),
        "no tags: nothing to do"
    );

    // set_many with tags.
    let items: [(&str, &[u8]); 2] = [("t:m1", b"1"), ("t:m2", b"2")];
    assert!(m
        .set_many_tagged(&items, never, &["many"])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        read(m.get_many(&["t:m1", "t:m2"], None).await.unwrap()),
        vec![some(b"1"), some(b"2")]
    );
    m.invalidate_tags(&["many"]).await.unwrap();
    assert_eq!(
        read(m.get_many(&["t:m1", "t:m2"], None).await.unwrap()),
        vec![None, None]
    );

    // get_or_set with tags: computed once, then a hit, computed again after invalidation.
    for single_flight in [false, true] {
        let key = if single_flight { "t:with" } else { "t:gos" };
        let tags: &[&str] = &["computed"];
        let get_or_set = |v: &'static [u8]| {
            let compute = move || Ok(v.to_vec());
            if single_flight {
                m.get_or_set_with_tags(key, compute, never, tags)
            } else {
                m.get_or_set_tagged(key, compute, never, tags)
            }
        };
        assert_eq!(&*get_or_set(b"first").await.unwrap(), b"first");
        assert_eq!(&*get_or_set(b"second").await.unwrap(), b"first", "a hit");
        m.invalidate_tags(tags).await.unwrap();
        assert_eq!(&*get_or_set(b"third").await.unwrap(), b"third");
        assert_eq!(bytes(m.get(key).await.unwrap()), some(b"third"));

        // The race: the tag is invalidated while the value is computed. The caller gets
        // its value; the stored entry carries the version from before, a miss.
        m.invalidate_tags(tags).await.unwrap();
        let racing = move || {
            m.invalidate_tags_now(tags);
            Ok(b"stale".to_vec())
        };
        let v = if single_flight {
            m.get_or_set_with_tags(key, racing, never, tags).await
        } else {
            m.get_or_set_tagged(key, racing, never, tags).await
        };
        assert_eq!(&*v.unwrap(), b"stale");
        assert_eq!(
            bytes(m.get(key).await.unwrap()),
            None,
            "computed before the invalidation: never served (single_flight {single_flight})"
        );
    }

    // Bad tags: an InvalidKey error, nothing stored.
    let long = "t".repeat(MAX_TAG_LEN + 1);
    let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for bad in [&[""][..], &[long.as_str()][..], &many[..]] {
        let err = m.set_tagged("t:bad", b"x", never, bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey, "{err}");
        assert!(!m.has_key("t:bad").await.unwrap(), "nothing stored");
        let err = m.invalidate_tags(bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey);
    }
    let at_limit: Vec<&str> = many[..MAX_TAGS].to_vec();
    m.set_tagged("t:limit", b"x", never, &at_limit)
        .await
        .unwrap();
    m.set_tagged("t:long", b"x", never, &[&long[1..]])
        .await
        .unwrap();
    assert_eq!(bytes(m.get("t:limit").await.unwrap()), some(b"x"));
    assert_eq!(bytes(m.get("t:long").await.unwrap()), some(b"x"));
    m.invalidate_tags(&[many[MAX_TAGS - 1]]).await.unwrap();
    assert_eq!(
        bytes(m.get("t:limit").await.unwrap()),
        None,
        "the last tag counts"
    );
    read_with_tags(c).await;
    invalidated_is_absent(c).await;
}

/// `get_tagged`: the caller names the tags, the value and their versions come in one
/// request; it answers exactly as `get` does, whatever tags the caller names.
async fn read_with_tags(c: &Caches) {
    let m = &c.main;
    let never = Expiry::Never;
    m.set_tagged("r:a", b"A", never, &["r-red", "r-blue"])
        .await
        .unwrap();
    m.set("r:plain", b"P", never).await.unwrap();
    let both: &[&str] = &["r-red", "r-blue"];
    assert_eq!(bytes(m.get_tagged("r:a", both).await.unwrap()), some(b"A"));
    assert_eq!(
        bytes(m.get_tagged("r:a", &["r-red"]).await.unwrap()),
        some(b"A"),
        "a tag the caller did not name is read too"
    );
    assert_eq!(
        bytes(m.get_tagged("r:plain", both).await.unwrap()),
        some(b"P")
    );
    assert_eq!(bytes(m.get_tagged("r:none", both).await.unwrap()), None);
    let hits = m.cache().stats().hits;
    m.invalidate_tags(&["r-blue"]).await.unwrap();
    assert_eq!(bytes(m.get_tagged("r:a", both).await.unwrap()), None);
    assert_eq!(
        bytes(m.get_tagged("r:a", &["r-red"]).await.unwrap()),
        None,
        "the unnamed tag was invalidated"
    );
    assert_eq!(
        bytes(m.get_tagged("r:a", &["r-other"]).await.unwrap()),
        None
    );
    assert_eq!(m.cache().stats().hits, hits, "counted as misses");
    let err = m.get_tagged("r:a", &[""]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey, "{err}");
}

/// An invalidated tagged entry is absent to `has_key`, `ttl`, `touch` and `add`, as it is
/// to `get`; a live tagged entry is present to all of them.
async fn invalidated_is_absent(c: &Caches) {
    let m = &c.main;
    let minute = Expiry::After(std::time::Duration::from_secs(60));
    m.set_tagged("p:live", b"L", minute, &["p-keep"])
        .await
        .unwrap();
    m.set_tagged("p:dead", b"D", minute, &["p-gone"])
        .await
        .unwrap();
    m.invalidate_tags(&["p-gone"]).await.unwrap();

    assert!(m.has_key("p:live").await.unwrap());
    assert!(!m.has_key("p:dead").await.unwrap(), "has_key");
    if c.x.lifetime {
        assert!(matches!(
            m.ttl("p:live").await.unwrap(),
            TimeToLive::Left(_)
        ));
        assert_eq!(m.ttl("p:dead").await.unwrap(), TimeToLive::Missing, "ttl");
    }
    assert!(m.touch("p:live", minute).await.unwrap());
    assert!(!m.touch("p:dead", minute).await.unwrap(), "touch");
    assert!(!m.touch("p:dead", Expiry::Expired).await.unwrap());
    assert!(!m.add("p:live", b"L2", minute).await.unwrap());
    assert!(
        !m.add("p:live", b"L2", Expiry::Expired).await.unwrap(),
        "present: add with an expired TTL answers false"
    );
    m.set_tagged("p:dead", b"D", minute, &["p-gone2"])
        .await
        .unwrap();
    m.invalidate_tags(&["p-gone2"]).await.unwrap();
    assert!(
        m.add("p:dead", b"Expired", Expiry::Expired).await.unwrap(),
        "absent: add with an expired TTL answers true"
    );
    assert!(m.add("p:dead", b"new", minute).await.unwrap(), "add stores");
    assert_eq!(bytes(m.get("p:dead").await.unwrap()), some(b"new"));
    assert!(m.has_key("p:dead").await.unwrap());
    assert!(
        !m.add("p:dead", b"newer", minute).await.unwrap(),
        "then it is present"
    );
    assert_eq!(bytes(m.get("p:live").await.unwrap()), some(b"L"));
    invalidated_is_missing_to_writes(c).await;
}

/// `replace` (`set(xx=True)`), `incr`, `decr` and `incr_or_create` at an invalidated tagged
/// entry behave as at a missing key; at a live tagged entry as before (it is not a counter).
async fn invalidated_is_missing_to_writes(c: &Caches) {
    let m = &c.main;
    let minute = Expiry::After(std::time::Duration::from_secs(60));
    for key in ["w:repl", "w:incr", "w:decr", "w:create"] {
        m.set_tagged(key, b"5", minute, &["w-gone"]).await.unwrap();
    }
    m.set_tagged("w:live", b"5", minute, &["w-keep"])
        .await
        .unwrap();
    m.invalidate_tags(&["w-gone"]).await.unwrap();

    if c.x.lifetime {
        assert!(
            !m.replace("w:repl", b"new", minute).await.unwrap(),
            "replace of an invalidated entry stores nothing"
        );
        assert_eq!(bytes(m.get("w:repl").await.unwrap()), None);
        assert!(
            m.replace("w:live", b"6", minute).await.unwrap(),
            "replace of a live tagged entry"
        );
        assert_eq!(bytes(m.get("w:live").await.unwrap()), some(b"6"));
        m.set_tagged("w:live", b"5", minute, &["w-keep"])
            .await
            .unwrap();
    }
    let err = m.incr("w:incr", 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "incr: {err}");
    assert!(err.to_string().contains("w:incr"), "names the key: {err}");
    let err = m.decr("w:decr", 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "decr: {err}");
    assert!(
        m.add("w:incr", b"1", minute).await.unwrap(),
        "after the incr, the key is free"
    );
    if c.x.lifetime {
        assert_eq!(m.incr_or_create("w:create", 3).await.unwrap(), 3);
        assert_eq!(bytes(m.get("w:create").await.unwrap()), some(b"3"));
    }
    let err = m.incr("w:live", 1).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::NotAnInteger,
        "a live tagged entry: {err}"
    );
    assert_eq!(bytes(m.get("w:live").await.unwrap()), some(b"5"));
}

/// dummy:// stores nothing: tagged writes and invalidations succeed, every read misses.
async fn always_misses(c: &Caches) {
    let m = &c.main;
    m.set_tagged("t:a", b"A", Expiry::Never, &["red"])
        .await
        .unwrap();
    assert_eq!(bytes(m.get("t:a").await.unwrap()), None);
    assert!(m.invalidate_tags(&["red"]).await.unwrap());
    let v = m
        .get_or_set_tagged("t:b", || Ok(b"B".to_vec()), Expiry::Never, &["red"])
        .await
        .unwrap();
    assert_eq!(&*v, b"B");
}
