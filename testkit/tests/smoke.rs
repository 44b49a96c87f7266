//! Starts each real server, talks to it over its own protocol, and checks that it stops.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use polycache_testkit::{MemcachedServer, PostgresServer, RedisServer, TestkitError};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn handles_are_send_and_sync() {
    assert_send_sync::<RedisServer>();
    assert_send_sync::<MemcachedServer>();
    assert_send_sync::<PostgresServer>();
    assert_send_sync::<TestkitError>();
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect to test server");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

fn port_is_closed(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    matches!(
        TcpStream::connect_timeout(&addr, IO_TIMEOUT),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Encodes a command as a RESP array of bulk strings.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// Sends one command and reads exactly `expected.len()` bytes of reply.
fn redis_roundtrip(stream: &mut (impl Read + Write), args: &[&str], expected: &[u8]) {
    stream.write_all(&resp(args)).unwrap();
    let mut reply = vec![0u8; expected.len()];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&reply),
        String::from_utf8_lossy(expected),
        "reply to {args:?}"
    );
}

#[test]
fn redis_set_get_kill_restart() {
    let mut redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/0"));
    assert!(redis.pid().is_some());

    let mut conn = connect(port);
    redis_roundtrip(&mut conn, &["SET", "k", "v"], b"+OK\r\n");
    redis_roundtrip(&mut conn, &["GET", "k"], b"$1\r\nv\r\n");

    // The unix socket serves the same data.
    let socket = redis.unix_socket_path().to_path_buf();
    assert!(redis.unix_url().ends_with("redis.sock"));
    let mut unix = UnixStream::connect(&socket).expect("connect to redis.sock");
    unix.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    redis_roundtrip(&mut unix, &["GET", "k"], b"$1\r\nv\r\n");

    redis.kill().unwrap();
    assert!(redis.pid().is_none());
    assert!(port_is_closed(port), "port {port} still accepts after kill");
    redis.kill().unwrap(); // a second kill is a no-op

    // Restart on the same port; persistence is off, so the key is gone.
    redis.restart().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(redis.port(), port);
    let mut conn = connect(port);
    redis_roundtrip(&mut conn, &["GET", "k"], b"$-1\r\n");
    redis_roundtrip(
        &mut conn,
        &["CONFIG", "GET", "bind"],
        b"*2\r\n$4\r\nbind\r\n$9\r\n127.0.0.1\r\n",
    );
}

#[test]
fn redis_extra_config_and_drop_cleans_up() {
    let redis =
        RedisServer::start_with_config(&["requirepass sekrit"]).unwrap_or_else(|e| panic!("{e}"));
    let port = redis.port();
    let dir = redis.dir().to_path_buf();
    assert!(dir.join("redis.log").exists());

    let mut conn = connect(port);
    conn.write_all(&resp(&["GET", "k"])).unwrap();
    let mut line = String::new();
    BufReader::new(&mut conn).read_line(&mut line).unwrap();
    assert!(line.starts_with("-NOAUTH"), "got {line:?}");
    let mut conn = connect(port);
    redis_roundtrip(&mut conn, &["AUTH", "sekrit"], b"+OK\r\n");

    drop(redis);
    assert!(port_is_closed(port));
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

fn memcached_set_get(stream: &mut (impl Read + Write)) {
    stream
        .write_all(b"set greeting 5 0 5\r\nhello\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "STORED\r\n");

    reader.get_mut().write_all(b"get greeting\r\n").unwrap();
    let mut reply = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        reply.push(line);
    }
    assert_eq!(reply, ["VALUE greeting 5 5\r\n", "hello\r\n", "END\r\n"]);
}

#[test]
fn memcached_tcp() {
    let mut mc = MemcachedServer::start().unwrap_or_else(|e| panic!("{e}"));
    let port = mc.port().expect("a TCP server has a port");
    assert_eq!(mc.addr(), format!("127.0.0.1:{port}"));
    assert_eq!(mc.url(), format!("memcached://127.0.0.1:{port}"));
    assert!(mc.unix_socket_path().is_none());

    memcached_set_get(&mut connect(port));

    mc.kill().unwrap();
    assert!(port_is_closed(port), "port {port} still accepts after kill");
    mc.restart().unwrap_or_else(|e| panic!("{e}"));
    memcached_set_get(&mut connect(port));
}

#[test]
fn memcached_unix_socket() {
    let mut mc = MemcachedServer::start_unix().unwrap_or_else(|e| panic!("{e}"));
    assert!(mc.port().is_none());
    let socket = mc
        .unix_socket_path()
        .expect("a unix server has a path")
        .to_path_buf();
    assert_eq!(mc.url(), format!("memcached://{}", socket.display()));
    assert!(mc.url().starts_with("memcached:///"));

    let mut stream = UnixStream::connect(&socket).expect("connect to mc.sock");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    memcached_set_get(&mut stream);

    mc.stop().unwrap();
    assert!(mc.pid().is_none());
    assert!(UnixStream::connect(&socket).is_err());
}

fn psql(pg: &PostgresServer) -> Option<std::path::PathBuf> {
    let next_to_server = pg.bin_dir().join("psql");
    if next_to_server.exists() {
        return Some(next_to_server);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("psql"))
        .find(|p| p.exists())
}

fn psql_select_1(psql: &Path, port: u16) -> String {
    let out = Command::new(psql)
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-p", &port.to_string(), "-c", "SELECT 1"])
        .env_remove("PGPASSWORD")
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn postgres_accepts_queries() {
    let mut pg = PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
    let port = pg.port();
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    );
    assert!(pg.socket_dir().join(format!(".s.PGSQL.{port}")).exists());
    drop(connect(port));

    match psql(&pg) {
        Some(psql) => assert_eq!(psql_select_1(&psql, port), "1"),
        None => {
            // Without psql, pg_isready is part of the same client package; require at least it.
            let status = Command::new(pg.bin_dir().join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .expect("run pg_isready");
            assert!(status.success());
        }
    }

    let dir = pg.dir().to_path_buf();
    pg.restart().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pg.port(), port);
    if let Some(psql) = psql(&pg) {
        assert_eq!(psql_select_1(&psql, port), "1");
    }
    pg.kill().unwrap();
    assert!(port_is_closed(port));
    drop(pg);
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn free_port_is_loopback_and_unused() {
    let port = polycache_testkit::free_loopback_port().unwrap();
    assert_ne!(port, 0);
    assert!(port_is_closed(port));
}

#[test]
fn redis_start_failure_reports_the_log() {
    let err = RedisServer::start_with_config(&["no-such-directive yes"])
        .expect_err("redis-server must reject an unknown directive");
    match &err {
        TestkitError::StartFailed {
            server, log_tail, ..
        } => {
            assert_eq!(*server, "redis-server");
            assert!(
                log_tail.contains("no-such-directive"),
                "log tail: {log_tail}"
            );
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
    assert!(err.to_string().contains("last lines of its log"));
}

#[test]
fn frozen_redis_answers_nothing_until_thawed() {
    let mut redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let mut stream = connect(redis.port());
    redis_roundtrip(&mut stream, &["PING"], b"+PONG\r\n");
    redis.freeze().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    stream.write_all(&resp(&["PING"])).unwrap();
    let mut byte = [0u8; 1];
    let err = stream.read(&mut byte).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "a frozen server answered: {err}"
    );
    redis.thaw().unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(
        &reply, b"+PONG\r\n",
        "the queued PING is answered after thawing"
    );
    // Dropping a frozen server must not wait for it.
    redis.freeze().unwrap();
}

#[test]
fn fault_proxy_forwards_cuts_and_truncates() {
    let redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let proxy = polycache_testkit::FaultProxy::start(redis.addr()).unwrap();
    let mut stream = connect(proxy.port());
    redis_roundtrip(&mut stream, &["SET", "k", "0123456789"], b"+OK\r\n");
    redis_roundtrip(&mut stream, &["GET", "k"], b"$10\r\n0123456789\r\n");
    assert_eq!(proxy.open_connections(), 1);

    proxy.cut_all();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a cut connection delivers nothing more");

    let mut stream = connect(proxy.port());
    proxy.truncate_replies(1);
    stream.write_all(&resp(&["GET", "k"])).unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    assert_eq!(
        got, b"$10\r\n012",
        "half of the 17-byte reply (8 bytes), then the end"
    );
    assert_eq!(proxy.truncated(), 1);

    // The next connection is whole again.
    let mut stream = connect(proxy.port());
    redis_roundtrip(&mut stream, &["GET", "k"], b"$10\r\n0123456789\r\n");
}
