//! The data-structure commands (`Cache::redis_command`): hashes, sets and sorted sets on
//! every Redis scheme, and `Unsupported` on every other one, never a silent no-op.

use super::body::Caches;
use polycache::{ErrorKind, Key, RedisArg, RedisCommand as C, RedisReply};

fn key(name: &str) -> RedisArg<'_> {
    RedisArg::Key(Key::new(name))
}

fn b(text: &str) -> RedisArg<'_> {
    RedisArg::Bytes(text.as_bytes())
}

fn int(n: i64) -> RedisReply {
    RedisReply::Int(n)
}

fn bulk(text: &str) -> RedisReply {
    RedisReply::Bytes(text.as_bytes().to_vec())
}

/// The members of an array reply, sorted (sets come back in no order).
fn sorted(reply: RedisReply) -> Vec<Vec<u8>> {
    let RedisReply::Array(items) = reply else {
        panic!("expected an array, got {reply:?}");
    };
    let mut out: Vec<Vec<u8>> = items
        .into_iter()
        .map(|i| match i {
            RedisReply::Bytes(b) => b,
            other => panic!("expected bytes, got {other:?}"),
        })
        .collect();
    out.sort();
    out
}

pub async fn structures(c: &Caches) {
    let m = &c.main;
    if m.cache().backend().name() != "redis" {
        for (command, args) in [
            (C::Sadd, vec![key("{d}s"), b("a")]),
            (C::Zcard, vec![key("{d}z")]),
            (C::Hlen, vec![RedisArg::Key(Key::full("h"))]),
        ] {
            let err = m.redis_command(command, &args).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported, "{command:?}: {err}");
            assert!(err.to_string().contains("redis://"), "{err}");
        }
        return;
    }
    let cluster = m.cache().location().contains("cluster");
    let run = |command, args: Vec<RedisArg<'static>>| async move {
        m.redis_command(command, &args)
            .await
            .unwrap_or_else(|e| panic!("{command:?}: {e}"))
    };

    // Sets, under one hash tag so that the many-key commands run on a Cluster too.
    assert_eq!(
        run(C::Sadd, vec![key("{d}s"), b("a"), b("b"), b("c")]).await,
        int(3)
    );
    assert_eq!(run(C::Sadd, vec![key("{d}s"), b("a")]).await, int(0));
    assert_eq!(run(C::Scard, vec![key("{d}s")]).await, int(3));
    assert_eq!(run(C::Sismember, vec![key("{d}s"), b("b")]).await, int(1));
    assert_eq!(run(C::Sismember, vec![key("{d}s"), b("x")]).await, int(0));
    assert_eq!(
        run(C::Smismember, vec![key("{d}s"), b("a"), b("x")]).await,
        RedisReply::Array(vec![int(1), int(0)])
    );
    assert_eq!(
        sorted(run(C::Smembers, vec![key("{d}s")]).await),
        [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(
        run(C::Smove, vec![key("{d}s"), key("{d}t"), b("c")]).await,
        int(1)
    );
    assert_eq!(run(C::Sadd, vec![key("{d}t"), b("b")]).await, int(1));
    assert_eq!(
        sorted(run(C::Sinter, vec![key("{d}s"), key("{d}t")]).await),
        [b"b".to_vec()]
    );
    assert_eq!(
        sorted(run(C::Sdiff, vec![key("{d}s"), key("{d}t")]).await),
        [b"a".to_vec()]
    );
    assert_eq!(
        run(C::Sunionstore, vec![key("{d}u"), key("{d}s"), key("{d}t")]).await,
        int(3)
    );
    assert_eq!(
        run(C::Srem, vec![key("{d}u"), b("a"), b("x")]).await,
        int(1)
    );
    // The set lives under the full key: another prefix does not see it.
    let other = c
        .other
        .redis_command(C::Scard, &[key("{d}s")])
        .await
        .unwrap();
    assert_eq!(other, int(0));

    // Sorted sets.
    let z = || key("{d}z");
    assert_eq!(
        run(
            C::Zadd,
            vec![z(), RedisArg::Float(1.5), b("a"), RedisArg::Int(2), b("b")]
        )
        .await,
        int(2)
    );
    assert_eq!(run(C::Zscore, vec![z(), b("a")]).await, bulk("1.5"));
    assert_eq!(
        run(C::Zincrby, vec![z(), RedisArg::Float(2.0), b("a")]).await,
        bulk("3.5")
    );
    assert_eq!(run(C::Zrank, vec![z(), b("a")]).await, int(1));
    assert_eq!(run(C::Zrank, vec![z(), b("x")]).await, RedisReply::Nil);
    assert_eq!(
        run(
            C::Zrange,
            vec![z(), RedisArg::Int(0), RedisArg::Int(-1), b("WITHSCORES")]
        )
        .await,
        RedisReply::Array(vec![bulk("b"), bulk("2"), bulk("a"), bulk("3.5")])
    );
    assert_eq!(
        run(
            C::Zcount,
            vec![z(), RedisArg::Float(f64::NEG_INFINITY), b("(3")]
        )
        .await,
        int(1)
    );
    assert_eq!(
        run(C::Zpopmin, vec![z()]).await,
        RedisReply::Array(vec![bulk("b"), bulk("2")])
    );
    assert_eq!(run(C::Zcard, vec![z()]).await, int(1));

    // Hashes: django-redis' hash names are keys the caller made (`Key::full`).
    // (Under this run's prefix: runs in parallel share servers.)
    let hash: &'static str = Box::leak(format!("{}:hash", c.prefix).into_boxed_str());
    let h = || RedisArg::Key(Key::full(hash));
    assert_eq!(run(C::Hset, vec![h(), b("f"), b("v")]).await, int(1));
    assert_eq!(run(C::Hexists, vec![h(), b("f")]).await, int(1));
    assert_eq!(run(C::Hlen, vec![h()]).await, int(1));
    assert_eq!(
        run(C::Hkeys, vec![h()]).await,
        RedisReply::Array(vec![bulk("f")])
    );
    assert_eq!(run(C::Hdel, vec![h(), b("f")]).await, int(1));

    // A Redis error (wrong type) is the backend's error, not a panic or a silent answer
    // (on `other`: `main` counts no errors, see `odd_and_invalid_keys`).
    let o = &c.other;
    assert_eq!(
        o.redis_command(C::Sadd, &[key("w"), b("a")]).await.unwrap(),
        int(1)
    );
    let err = o.redis_command(C::Zcard, &[key("w")]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    o.delete("w").await.unwrap();

    // Bad calls fail before anything is sent.
    let err = m.redis_command(C::Scard, &[b("raw")]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey, "{err}");
    let err = m
        .redis_command(C::Sadd, &[key("{d}s"), key("{d}t")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey, "{err}");
    let big = vec![b'x'; 2000];
    let err = c
        .small
        .redis_command(C::Sadd, &[key("s"), RedisArg::Bytes(&big)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge, "{err}");

    // Keys in different hash slots: a clear error on a Cluster, a plain answer elsewhere.
    let apart = m
        .redis_command(C::Sunion, &[key("alpha"), key("omega")])
        .await;
    if cluster {
        let err = apart.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey, "{err}");
        assert!(err.to_string().contains("hash tag"), "{err}");
    } else {
        assert_eq!(apart.unwrap(), RedisReply::Array(vec![]));
    }

    for k in ["{d}s", "{d}t", "{d}u", "{d}z"] {
        m.delete(k).await.unwrap();
    }
    m.delete(Key::full(hash)).await.unwrap();
}
