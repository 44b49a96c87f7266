//! What the memcached tests (memcached.rs, memcached_async.rs) share: servers, URLs, the
//! backend itself, failure policies and fake servers that misbehave.

#![allow(dead_code)]

use polycache::backend::memcached::MemcachedBackend;
use polycache::{Cache, FailurePolicy, Location, Options};
use polycache_testkit::MemcachedServer;
use std::borrow::Borrow;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

pub fn servers(n: usize) -> Vec<MemcachedServer> {
    (0..n)
        .map(|_| MemcachedServer::start().expect("start memcached"))
        .collect()
}

/// `memcached://a,b,c` plus `query`.
pub fn url_of<S: Borrow<MemcachedServer>>(servers: &[S], query: &str) -> String {
    let hosts: Vec<String> = servers.iter().map(|s| s.borrow().addr()).collect();
    format!("memcached://{}{query}", hosts.join(","))
}

pub fn open(url: &str) -> Cache {
    Cache::open(url).unwrap_or_else(|e| panic!("open {url}: {e}"))
}

pub fn backend(url: &str) -> MemcachedBackend {
    let loc = Location::parse(url).unwrap();
    let mut opts = Options::new(&loc);
    let b = MemcachedBackend::open(&loc, &mut opts).unwrap();
    opts.finish().unwrap();
    b
}

pub fn policy(fail_open: bool, threshold: u32, cooldown: Duration) -> FailurePolicy {
    let mut p = FailurePolicy::default();
    p.fail_open = fail_open;
    p.breaker_threshold = threshold;
    p.breaker_cooldown = cooldown;
    p
}

/// Sends one text-protocol command to the TCP server on `port`; its reply, line by line.
fn command(port: u16, command: &str) -> impl Iterator<Item = String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(command.as_bytes()).unwrap();
    BufReader::new(s).lines().map(Result::unwrap)
}

/// The first reply line to `command`, with its `\r\n`.
pub fn raw(port: u16, command_line: &str) -> String {
    command(port, command_line).next().unwrap() + "\r\n"
}

/// A field of the `stats` of the TCP server on `port`.
pub fn stat(port: u16, name: &str) -> u64 {
    let prefix = format!("STAT {name} ");
    for line in command(port, "stats\r\n") {
        if let Some(v) = line.strip_prefix(&prefix) {
            return v.trim().parse().unwrap();
        }
        assert_ne!(line.trim(), "END", "no {name} in stats");
    }
    panic!("stats ended early")
}

/// A fake server that answers every request with `reply`; its port.
pub fn answering(reply: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(reply).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A fake server that accepts connections and never says a word; its port.
pub fn silent() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    port
}
