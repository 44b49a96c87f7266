//! A blocking Redis call interrupted by a stop and continue of the process (`EINTR`: a
//! socket with a timeout gives up even with every signal held back) runs again on a fresh
//! connection when it is safe to repeat; `incr`, which the server may have run, reports the
//! failure and is not repeated. One test in this binary: it stops the whole process.
#![cfg(feature = "redis")]

use polycache::{Cache, ErrorKind, Expiry};
use polycache_testkit::RedisServer;
use std::process::{Child, Command};

/// Stops and continues this process while a call waits on the frozen `server`, then thaws
/// the server: a shell outside the process sends the signals, so nothing here has to run
/// while the process is stopped. Wait for the shell it returns once the call is answered.
fn interrupt_while_waiting(server: &mut RedisServer) -> Child {
    let us = std::process::id();
    let them = server.pid().expect("the server's pid");
    server.freeze().unwrap();
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "sleep 0.5; kill -STOP {us}; sleep 0.2; kill -CONT {us}; sleep 0.5; kill -CONT {them}"
        ))
        .spawn()
        .unwrap()
}

#[test]
fn a_stop_and_continue_fails_no_call_that_can_run_twice() {
    let mut server = RedisServer::start().unwrap();
    let cache = Cache::open(&format!("{}?socket_timeout=10", server.url())).unwrap();
    cache.set("k", b"v", Expiry::Never).unwrap();
    cache.set("n", b"0", Expiry::Never).unwrap();

    let mut shell = interrupt_while_waiting(&mut server);
    assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    assert!(shell.wait().unwrap().success());
    server.thaw().unwrap();

    let mut shell = interrupt_while_waiting(&mut server);
    let incr = cache.incr("n", 1);
    assert!(shell.wait().unwrap().success());
    server.thaw().unwrap();
    match incr {
        // The reply came before the stop (a slow machine): answered once.
        Ok(n) => assert_eq!(n, 1),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Connection, "{e}"),
    }
    let n = cache.get("n").unwrap().and_then(|v| v.as_i64());
    assert!(matches!(n, Some(0 | 1)), "incr ran at most once: {n:?}");
}
