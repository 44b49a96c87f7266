//! `Cache::redis_command` when Redis is down: the cache's failure policy, sync and awaited.
//! (The commands themselves run in the contract suite, `contract/structures.rs`, on every
//! Redis scheme: one server, TLS, unix socket, replicas and Cluster.)
#![cfg(feature = "redis")]

use polycache::{Cache, ErrorKind, Key, RedisArg, RedisCommand, RedisReply};
use std::net::TcpListener;

/// A loopback URL where nothing listens.
fn dead_url(options: &str) -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("redis://127.0.0.1:{port}/0?connect_timeout=0.2&{options}")
}

#[test]
fn fail_open_answers_nil_and_fail_closed_raises() {
    let args = [RedisArg::Key(Key::new("s")), RedisArg::Bytes(b"m")];
    let open = Cache::open(&dead_url("fail_open=true")).unwrap();
    assert_eq!(
        open.redis_command(RedisCommand::Sadd, &args).unwrap(),
        RedisReply::Nil
    );
    assert!(open.stats().errors >= 1);
    let closed = Cache::open(&dead_url("fail_open=false")).unwrap();
    let err = closed.redis_command(RedisCommand::Sadd, &args).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(
            open.redis_command_async(RedisCommand::Scard, &args[..1])
                .await
                .unwrap(),
            RedisReply::Nil
        );
        let err = closed
            .redis_command_async(RedisCommand::Scard, &args[..1])
            .await
            .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout),
            "{err}"
        );
    });
}

#[test]
fn the_breaker_opens_for_data_structure_commands_too() {
    let cache = Cache::open(&dead_url("breaker_threshold=2&breaker_cooldown=60")).unwrap();
    let args = [RedisArg::Key(Key::new("z"))];
    for _ in 0..2 {
        let err = cache.redis_command(RedisCommand::Zcard, &args).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection);
    }
    let err = cache.redis_command(RedisCommand::Zcard, &args).unwrap_err();
    assert!(err.to_string().contains("circuit breaker"), "{err}");
    // The breaker guards the cache's other operations alike.
    let err = cache.get("k").unwrap_err();
    assert!(err.to_string().contains("circuit breaker"), "{err}");
}

#[test]
fn bad_calls_fail_before_any_io() {
    // A dead server, fail closed: an error other than Connection proves nothing was sent.
    let cache = Cache::open(&dead_url("fail_open=false")).unwrap();
    let err = cache
        .redis_command(RedisCommand::Scard, &[RedisArg::Bytes(b"raw")])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey, "{err}");
    let err = RedisCommand::from_name("EVAL").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let long = "k".repeat(polycache::MAX_KEY_LEN + 1);
    let err = cache
        .redis_command(RedisCommand::Scard, &[RedisArg::Key(Key::new(&long))])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey, "{err}");
}
