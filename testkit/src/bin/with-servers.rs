//! Runs a command with a fresh `redis-server` and `memcached` on free loopback ports, for the
//! tests and benchmarks that are not written in Rust (the C tests): their URLs are in the
//! environment variables `POLYCACHE_TEST_REDIS_URL` and `POLYCACHE_TEST_MEMCACHED_URL`, and
//! both servers are stopped (their directories removed) when the command exits. With
//! `--cluster`, a three-primary Redis Cluster too, its URL in
//! `POLYCACHE_TEST_REDIS_CLUSTER_URL`.
//!
//! Usage: `with-servers [--cluster] COMMAND [ARGS...]`; exits with the command's status.

use polycache_testkit::{MemcachedServer, RedisCluster, RedisServer};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    let cluster = args.next_if(|a| a == "--cluster").is_some();
    let Some(program) = args.next() else {
        eprintln!("usage: with-servers [--cluster] COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    let cluster = match cluster.then(RedisCluster::start).transpose() {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("with-servers: cannot start the test cluster: {e}");
            return ExitCode::from(2);
        }
    };
    let started = RedisServer::start().and_then(|r| Ok((r, MemcachedServer::start()?)));
    let (redis, memcached) = match started {
        Ok(servers) => servers,
        Err(e) => {
            eprintln!("with-servers: cannot start the test servers: {e}");
            return ExitCode::from(2);
        }
    };
    let mut command = Command::new(&program);
    command
        .args(args)
        .env("POLYCACHE_TEST_REDIS_URL", redis.url())
        .env("POLYCACHE_TEST_MEMCACHED_URL", memcached.url());
    if let Some(cluster) = &cluster {
        command.env("POLYCACHE_TEST_REDIS_CLUSTER_URL", cluster.url());
    }
    let status = command.status();
    drop((redis, memcached, cluster));
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!(
                "with-servers: {} exited with {s}",
                program.to_string_lossy()
            );
            ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1).max(1))
        }
        Err(e) => {
            eprintln!(
                "with-servers: cannot run {}: {e}",
                program.to_string_lossy()
            );
            ExitCode::from(2)
        }
    }
}
