//! The fault suite: real servers killed, restarted, frozen, filled up and cut off under 8
//! threads of mixed load, with and without failing open.
//!
//! For every fault it checks: no panic, no operation slower than the configured timeouts
//! allow (a generous bound, to catch hangs, not to measure speed), no wrong value ever
//! returned, the failure policy's promise (failing open: no connection error or timeout
//! escapes from anything but `incr`; failing closed: they are raised), and `incr` totals —
//! in `[acknowledged, acknowledged + ambiguous]` across the fault, exact once it cleared.
//!
//! Each scenario prints one `FAULTS-ROW` line; `make faults` collects them into the table
//! of `docs/reliability.md`. `POLYCACHE_FAULTS=full` holds every fault three times longer.
#![cfg(all(
    feature = "redis",
    feature = "memcached",
    feature = "postgres",
    feature = "sqlite",
    feature = "file"
))]

mod load_common;

use load_common::{
    read_counter, run, run_async, seed_counter, wait_until_healthy, Tally, Until, COUNTER,
};
use polycache::Cache;
use polycache_testkit::{
    info_field, FaultProxy, MemcachedServer, PostgresServer, RedisCluster, RedisSentinelSet,
    RedisServer, TempDir, TestkitError,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const THREADS: usize = 8;
/// Timeouts of the remote backends in these tests (connect and per operation), seconds.
const OP_TIMEOUT: &str = "0.25";
/// Slack on top of what the timeouts allow before an operation counts as hung: generous,
/// since the machine may be busy with other builds.
const MARGIN: Duration = Duration::from_secs(3);
/// How long patience has for a backend to answer again once its fault cleared.
const RECOVERY: Duration = Duration::from_secs(30);

/// The scenarios share the machine's cores; running them one at a time keeps the latency
/// each one sees its own.
/// Numbers the scenarios, so that each writes under its own key prefix.
static SCENARIOS: AtomicU64 = AtomicU64::new(0);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long a fault lasts: `POLYCACHE_FAULTS=full` makes every fault three times longer.
fn hold(short: Duration) -> Duration {
    match std::env::var("POLYCACHE_FAULTS").as_deref() {
        Ok("full") => short * 3,
        _ => short,
    }
}

/// What a scenario expects of the cache while its fault lasts.
struct Spec {
    backend: &'static str,
    fault: &'static str,
    /// The cache URL without the failure-policy options.
    url: String,
    fail_open: bool,
    hold: Duration,
    /// The worst latency any operation may have, fault or not.
    bound: Duration,
    /// The fault throws the server's data away (a restart without persistence), so the
    /// counter is only checked after it.
    loses_data: bool,
    /// The fault makes operations fail with connection errors or timeouts (so failing
    /// closed must raise some).
    outage: bool,
    /// The fault moves the data to a replica, which may miss the last acknowledged writes
    /// (Redis replicates asynchronously): the counter may fall short of the acknowledged
    /// increments by what the replica missed, but never exceed acknowledged + ambiguous.
    replica_takes_over: bool,
}

/// A backend under test: its name, its URL and the latency bound of its operations.
struct Target {
    backend: &'static str,
    url: String,
    bound: Duration,
}

impl Target {
    fn new(backend: &'static str, url: String, bound: Duration) -> Target {
        Target {
            backend,
            url,
            bound,
        }
    }

    /// One scenario on this backend; `hold_ms` is the short form's fault duration.
    fn spec(
        &self,
        fault: &'static str,
        fail_open: bool,
        hold_ms: u64,
        loses_data: bool,
        outage: bool,
    ) -> Spec {
        Spec {
            backend: self.backend,
            fault,
            url: self.url.clone(),
            fail_open,
            hold: hold(Duration::from_millis(hold_ms)),
            bound: self.bound,
            loses_data,
            outage,
            replica_takes_over: false,
        }
    }
}

/// What the fault does: `start` injects it, `tick` runs every 100 ms while it lasts,
/// `end` clears it.
struct Fault<'a> {
    start: Box<dyn FnMut() + 'a>,
    tick: Box<dyn FnMut() + 'a>,
    end: Box<dyn FnMut() + 'a>,
}

impl<'a> Fault<'a> {
    fn new(start: impl FnMut() + 'a, end: impl FnMut() + 'a) -> Fault<'a> {
        Fault {
            start: Box::new(start),
            tick: Box::new(|| {}),
            end: Box::new(end),
        }
    }

    fn repeating(tick: impl FnMut() + 'a) -> Fault<'a> {
        Fault {
            start: Box::new(|| {}),
            tick: Box::new(tick),
            end: Box::new(|| {}),
        }
    }
}

/// What the fault scenarios do to a server process.
trait ServerControl {
    fn kill(&mut self) -> Result<(), TestkitError>;
    fn restart(&mut self) -> Result<(), TestkitError>;
    fn freeze(&mut self) -> Result<(), TestkitError>;
    fn thaw(&mut self) -> Result<(), TestkitError>;
}

macro_rules! server_control {
    ($($server:ty),*) => {$(
        impl ServerControl for $server {
            fn kill(&mut self) -> Result<(), TestkitError> {
                <$server>::kill(self)
            }
            fn restart(&mut self) -> Result<(), TestkitError> {
                <$server>::restart(self)
            }
            fn freeze(&mut self) -> Result<(), TestkitError> {
                <$server>::freeze(self)
            }
            fn thaw(&mut self) -> Result<(), TestkitError> {
                <$server>::thaw(self)
            }
        }
    )*};
}

server_control!(RedisServer, MemcachedServer, PostgresServer);

/// The server crashes (or shuts down at once), then starts again on the same port.
fn kill_and_restart<S: ServerControl>(server: &Mutex<S>) -> Fault<'_> {
    Fault::new(
        || server.lock().unwrap().kill().unwrap(),
        || server.lock().unwrap().restart().unwrap(),
    )
}

/// The server stops answering (SIGSTOP) for the whole fault, then runs again.
fn freeze_and_thaw<S: ServerControl>(server: &Mutex<S>) -> Fault<'_> {
    Fault::new(
        || server.lock().unwrap().freeze().unwrap(),
        || server.lock().unwrap().thaw().unwrap(),
    )
}

fn policy_query(fail_open: bool) -> String {
    format!("fail_open={fail_open}&breaker_threshold=3&breaker_cooldown=0.2")
}

fn with_policy(url: &str, fail_open: bool) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{}", policy_query(fail_open))
}

/// Which load runs across a fault.
#[derive(Clone, Copy)]
enum Load {
    /// [`THREADS`] threads of synchronous calls.
    Threads,
    /// [`TASKS`] tasks of awaited calls; `cancel_half` abandons every other one in flight.
    Tasks { cancel_half: bool },
}

/// Tasks of the async load.
const TASKS: usize = 256;
/// Tasks of the async load after the fault: as many as a cache holds connections
/// (PostgreSQL's default `pool_size`; one multiplexed connection serves them on Redis and
/// Memcached). Each of [`TASKS`] tasks would wait for its turn at a connection, up to
/// `connect_timeout` + `socket_timeout` (the documented pool wait) before it times out, and
/// how fast a loaded machine serves that queue is no part of what this load checks: that
/// every call answers and the counter is exact once the backend is back.
const SETTLED_TASKS: usize = 16;

impl Load {
    fn run(self, cache: &Cache, until: Until<'_>) -> Tally {
        match self {
            Load::Threads => run(cache, THREADS, until),
            Load::Tasks { cancel_half } => run_async(cache, TASKS, until, cancel_half),
        }
    }

    /// The same load without abandoned calls and with no caller queueing for a connection,
    /// for the exact check after the fault.
    fn run_settled(self, cache: &Cache, until: Until<'_>) -> Tally {
        match self {
            Load::Threads => run(cache, THREADS, until),
            // As many calls in all as the full load would make.
            Load::Tasks { .. } => {
                let until = match until {
                    Until::Ops(n) => Until::Ops(n * (TASKS / SETTLED_TASKS) as u64),
                    flag => flag,
                };
                run_async(cache, SETTLED_TASKS, until, false)
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            Load::Threads => "",
            Load::Tasks { cancel_half: false } => " (async, 256 tasks)",
            Load::Tasks { cancel_half: true } => " (async, 256 tasks, half cancelled)",
        }
    }
}

/// Runs the threaded load across one fault and checks the invariants; prints the results row.
fn scenario(spec: &Spec, fault: &mut Fault<'_>) {
    scenario_with(spec, fault, Load::Threads);
}

/// Runs `load` across one fault and checks the invariants; prints the results row.
fn scenario_with(spec: &Spec, fault: &mut Fault<'_>, load: Load) {
    let url = with_policy(&spec.url, spec.fail_open);
    let cache = Cache::builder(&url)
        .key_prefix(format!(
            "fault{}",
            SCENARIOS.fetch_add(1, Ordering::Relaxed)
        ))
        .build()
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    wait_until_healthy(&cache, RECOVERY);
    seed_counter(&cache);

    // Phase 1: load across the fault.
    let stop = AtomicBool::new(false);
    let (during, recovered_after) = thread::scope(|s| {
        let load = s.spawn(|| load.run(&cache, Until::Flag(&stop)));
        // Stops the load even when injecting or clearing the fault panics.
        let _stop = StopOnDrop(&stop);
        thread::sleep(Duration::from_millis(300));
        (fault.start)();
        let until = Instant::now() + spec.hold;
        while Instant::now() < until {
            (fault.tick)();
            thread::sleep(Duration::from_millis(100));
        }
        (fault.end)();
        let recovered_after = wait_until_healthy(&cache, RECOVERY);
        thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        (load.join().expect("the load panicked"), recovered_after)
    });
    let what = format!(
        "{}{} / {} / fail_open={}",
        spec.backend,
        load.label(),
        spec.fault,
        spec.fail_open
    );
    // A counter lost with the data is not checked: waiting the full patience for it to
    // appear would only cost time (30 s per scenario).
    let patience = if spec.loses_data {
        Duration::from_secs(1)
    } else {
        RECOVERY
    };
    let counter = read_counter(&cache, patience);

    // Phase 2: load after the fault, on a fresh counter: must be exact.
    seed_counter(&cache);
    let after = load.run_settled(&cache, Until::Ops(50));
    let after_counter = read_counter(&cache, RECOVERY).expect("the counter after the fault");

    let incr_text = match counter {
        Some(n) if spec.replica_takes_over => {
            let high = during.incr_acked + during.incr_ambiguous;
            assert!(
                n <= high as i64,
                "{what}: the counter is {n}, over the {high} increments sent: one was applied twice"
            );
            let lost = (during.incr_acked as i64 - n).max(0);
            format!(
                "{n} in [{} − {lost} not yet replicated, {high}]",
                during.incr_acked
            )
        }
        Some(n) if !spec.loses_data => {
            during.check_counter(&what, n);
            format!(
                "{n} in [{}, {}]",
                during.incr_acked,
                during.incr_acked + during.incr_ambiguous
            )
        }
        Some(_) | None if spec.loses_data => "lost with the data".to_string(),
        other => panic!("{what}: the counter is {other:?} after the fault"),
    };
    print_row(spec, load, &during, &incr_text, recovered_after);

    assert_eq!(
        during.wrong, 0,
        "{what}: wrong values returned: {:?}",
        during.wrong_examples
    );
    assert!(
        during.worst <= spec.bound,
        "{what}: the slowest operation ({}) took {:?}, over the bound {:?}",
        during.worst_op,
        during.worst,
        spec.bound
    );
    if spec.fail_open {
        assert_eq!(
            during.outage_errors_non_incr, 0,
            "{what}: failing open let connection errors or timeouts through: {:?}",
            during.errors
        );
    } else if spec.outage {
        // Idempotent operations retry a cut connection, so only incr may show the fault.
        let raised = during.errors.get("connection").copied().unwrap_or(0)
            + during.errors.get("timeout").copied().unwrap_or(0);
        assert!(
            raised > 0,
            "{what}: failing closed raised no connection error or timeout: {:?}",
            during.errors
        );
    }
    if !spec.loses_data {
        assert_eq!(
            during.incr_not_found, 0,
            "{what}: incr found no counter though the fault keeps the data"
        );
    }
    assert_eq!(
        after.error_count(),
        0,
        "{what}: errors after the fault: {after:?}"
    );
    assert_eq!(after.wrong, 0, "{what}: wrong values after the fault");
    assert_eq!(
        after_counter, after.incr_acked as i64,
        "{what}: incr total after the fault"
    );
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn print_row(spec: &Spec, load: Load, t: &Tally, incr: &str, recovered_after: Duration) {
    println!(
        "FAULTS-ROW | {}{} | {} | {} | {} | {} | {} | {} ms ({}) | {} ms | {} | {} ms |",
        spec.backend,
        load.label(),
        spec.fault,
        if spec.fail_open { "open" } else { "closed" },
        t.ops,
        t.errors_text(),
        t.wrong,
        t.worst.as_millis(),
        t.worst_op,
        spec.bound.as_millis(),
        incr,
        recovered_after.as_millis(),
    );
}

/// Both failure policies, one after the other.
fn both_policies(mut each: impl FnMut(bool)) {
    for fail_open in [false, true] {
        each(fail_open);
    }
}

/// The bound for a network backend: two attempts of connect + operation, plus the margin.
fn network_bound() -> Duration {
    let t: f64 = OP_TIMEOUT.parse().unwrap();
    Duration::from_secs_f64(4.0 * t) + MARGIN
}

fn not_run(backend: &str, fault: &str, why: &str) {
    println!("FAULTS-ROW | {backend} | {fault} | – | not run: {why} | | | | | | |");
}

// ---------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------

fn redis_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/0?connect_timeout={OP_TIMEOUT}&socket_timeout={OP_TIMEOUT}")
}

#[test]
fn redis_faults() {
    let _serial = serial();
    let server = Mutex::new(RedisServer::start().unwrap_or_else(|e| panic!("{e}")));
    let port = server.lock().unwrap().port();
    let target = Target::new("redis", redis_url(port), network_bound());
    let spec = |fault, fail_open, hold_for, loses_data, outage| {
        target.spec(fault, fail_open, hold_for, loses_data, outage)
    };
    both_policies(|fail_open| {
        scenario(
            &spec("kill -9, restart", fail_open, 1000, true, true),
            &mut kill_and_restart(&server),
        );
    });
    both_policies(|fail_open| {
        scenario(
            &spec("SIGSTOP past the timeout", fail_open, 5500, false, true),
            &mut freeze_and_thaw(&server),
        );
    });
    both_policies(|fail_open| {
        let config = |args: &[&str]| {
            server.lock().unwrap().command(args).unwrap();
        };
        config(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
        scenario(
            &spec("maxmemory full (noeviction)", fail_open, 1000, false, false),
            &mut Fault::new(
                || config(&["CONFIG", "SET", "maxmemory", "1"]),
                || config(&["CONFIG", "SET", "maxmemory", "0"]),
            ),
        );
    });
    proxy_faults("redis", port, redis_url);
}

/// The connection-cutting faults, through a [`FaultProxy`] in front of the server on
/// `port`; `url(proxy_port)` names the server through the proxy.
fn proxy_faults(backend: &'static str, port: u16, url: impl Fn(u16) -> String) {
    let proxy = FaultProxy::start(([127, 0, 0, 1], port).into()).unwrap();
    let target = Target::new(backend, url(proxy.port()), network_bound());
    // Idempotent operations retry a cut connection unseen; only an incr caught in a cut
    // raises, so failing closed is not required to raise anything here.
    let spec = |fault, fail_open| target.spec(fault, fail_open, 1000, false, false);
    both_policies(|fail_open| {
        scenario(
            &spec("connections cut every 100 ms", fail_open),
            &mut Fault::repeating(|| proxy.cut_all()),
        );
    });
    both_policies(|fail_open| {
        scenario(
            &spec("replies cut mid-way", fail_open),
            &mut Fault::repeating(|| proxy.truncate_replies(2)),
        );
    });
    assert!(proxy.truncated() > 0, "{backend}: the proxy cut no reply");
}

// ---------------------------------------------------------------------------------------
// Redis Cluster
// ---------------------------------------------------------------------------------------

fn redis_cluster_url(cluster: &RedisCluster) -> String {
    format!(
        "{}?connect_timeout={OP_TIMEOUT}&socket_timeout={OP_TIMEOUT}",
        cluster.url()
    )
}

/// The index of the node serving the hash slot of `key` (a full key, as stored): testkit's
/// cluster gives node `i` the `i`-th third of the 16384 slots.
fn cluster_owner(cluster: &RedisCluster, key: &[u8]) -> usize {
    let key = String::from_utf8(key.to_vec()).unwrap();
    let slot: usize = cluster.nodes()[0]
        .command(&["CLUSTER", "KEYSLOT", &key])
        .unwrap()
        .parse()
        .unwrap();
    (slot / (16384 / 3)).min(2)
}

/// The prefix the next scenario writes under (see [`scenario`]).
fn next_scenario_prefix() -> String {
    format!("fault{}", SCENARIOS.load(Ordering::Relaxed))
}

/// The node the next scenario's counter lives on, so that its `incr`s meet the fault.
fn counter_node(cluster: &RedisCluster) -> usize {
    let cache = Cache::builder("dummy://")
        .key_prefix(next_scenario_prefix())
        .build()
        .unwrap();
    cluster_owner(cluster, &cache.make_key(COUNTER).unwrap())
}

/// Checks, while the fault lasts, that the keys of the healthy nodes keep working: a
/// cache failing closed writes and reads keys on every node but `faulty`.
struct HealthyNodes {
    cache: Cache,
    keys: Vec<String>,
    checked: u64,
}

impl HealthyNodes {
    fn new(cluster: &RedisCluster, faulty: usize) -> HealthyNodes {
        let url = with_policy(&redis_cluster_url(cluster), false);
        let cache = Cache::builder(&url).key_prefix("healthy").build().unwrap();
        let keys: Vec<String> = (0..30)
            .map(|i| format!("k{i}"))
            .filter(|k| cluster_owner(cluster, &cache.make_key(k.as_str()).unwrap()) != faulty)
            .collect();
        assert!(keys.len() >= 5, "too few keys off node {faulty}: {keys:?}");
        HealthyNodes {
            cache,
            keys,
            checked: 0,
        }
    }

    fn check(&mut self) {
        for k in &self.keys {
            let v = format!("v-{k}-{}", self.checked);
            let started = Instant::now();
            self.cache
                .set(k.as_str(), v.as_bytes(), polycache::Expiry::Never)
                .unwrap_or_else(|e| panic!("a healthy node failed during the fault: {e}"));
            let got = self.cache.get(k.as_str()).unwrap();
            assert_eq!(got.as_deref(), Some(v.as_bytes()), "healthy key {k}");
            // The suite's hang bound (timeouts plus a generous margin), not a speed check.
            assert!(
                started.elapsed() <= network_bound(),
                "healthy key {k} was slow"
            );
        }
        self.checked += 1;
    }
}

/// One node's fault, with the healthy nodes checked every 100 ms while it lasts.
fn node_fault<'a>(
    cluster: &'a Mutex<RedisCluster>,
    node: usize,
    healthy: &'a Mutex<HealthyNodes>,
    start: impl Fn(&mut RedisServer) -> Result<(), TestkitError> + 'a,
    end: impl Fn(&mut RedisServer) -> Result<(), TestkitError> + 'a,
) -> Fault<'a> {
    Fault {
        start: Box::new(move || start(&mut cluster.lock().unwrap().nodes_mut()[node]).unwrap()),
        tick: Box::new(move || healthy.lock().unwrap().check()),
        // The fault clears once the node is back in the cluster, serving its slots.
        end: Box::new(move || {
            let mut cluster = cluster.lock().unwrap();
            end(&mut cluster.nodes_mut()[node]).unwrap();
            cluster.wait_ok().unwrap();
        }),
    }
}

#[test]
fn redis_cluster_faults() {
    let _serial = serial();
    let cluster = Mutex::new(RedisCluster::start().unwrap_or_else(|e| panic!("{e}")));
    let url = redis_cluster_url(&cluster.lock().unwrap());
    let target = Target::new("redis cluster", url, network_bound());
    let spec = |fault, fail_open, hold_for, loses_data, outage| {
        target.spec(fault, fail_open, hold_for, loses_data, outage)
    };
    // Every fault of one node (1 s, 3 s in the full form) lasts less than
    // cluster-node-timeout (5 s): past it the other nodes would mark the node failed and
    // refuse every key (CLUSTERDOWN), since testkit's cluster has no replicas to fail over to.
    type Control = fn(&mut RedisServer) -> Result<(), TestkitError>;
    let node_faults: [(&str, bool, Control, Control); 2] = [
        (
            "one master kill -9, restart",
            true,
            RedisServer::kill,
            RedisServer::restart,
        ),
        (
            "one master SIGSTOP past the timeout",
            false,
            RedisServer::freeze,
            RedisServer::thaw,
        ),
    ];
    for (fault, loses_data, start, end) in node_faults {
        both_policies(|fail_open| {
            let node = counter_node(&cluster.lock().unwrap());
            let healthy = Mutex::new(HealthyNodes::new(&cluster.lock().unwrap(), node));
            scenario(
                &spec(fault, fail_open, 1000, loses_data, true),
                &mut node_fault(&cluster, node, &healthy, start, end),
            );
            assert!(
                healthy.lock().unwrap().checked > 0,
                "{fault}: the healthy nodes were not checked"
            );
        });
    }
    both_policies(|fail_open| {
        let config = |args: &[&str]| {
            for node in cluster.lock().unwrap().nodes() {
                node.command(args).unwrap();
            }
        };
        config(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
        scenario(
            &spec(
                "maxmemory full (noeviction), all masters",
                fail_open,
                1000,
                false,
                false,
            ),
            &mut Fault::new(
                || config(&["CONFIG", "SET", "maxmemory", "1"]),
                || config(&["CONFIG", "SET", "maxmemory", "0"]),
            ),
        );
    });
    cluster_proxy_faults(&cluster.lock().unwrap());
}

/// The connection-cutting faults through one [`FaultProxy`] per node, the nodes announcing
/// the proxies' ports (`cluster-announce-port`) so that the slot map and redirections lead
/// the client through them.
fn cluster_proxy_faults(cluster: &RedisCluster) {
    let proxies: Vec<FaultProxy> = cluster
        .nodes()
        .iter()
        .map(|n| FaultProxy::start(n.addr()).unwrap())
        .collect();
    for (node, proxy) in cluster.nodes().iter().zip(&proxies) {
        node.command(&[
            "CONFIG",
            "SET",
            "cluster-announce-port",
            &proxy.port().to_string(),
        ])
        .unwrap();
    }
    // The announced ports travel by gossip: wait (bounded) until every node's slot map
    // names the proxies only.
    let ports: Vec<String> = proxies.iter().map(|p| p.port().to_string()).collect();
    let announced = polycache_testkit::eventually(Duration::from_secs(20), || {
        cluster.nodes().iter().all(|n| {
            n.command(&["CLUSTER", "SLOTS"]).is_ok_and(|slots| {
                ports.iter().all(|p| slots.lines().any(|l| l == p))
                    && cluster
                        .nodes()
                        .iter()
                        .all(|m| !slots.lines().any(|l| l == m.port().to_string()))
            })
        })
    });
    assert!(announced, "the nodes did not announce the proxy ports");
    let hosts: Vec<String> = proxies
        .iter()
        .map(|p| format!("127.0.0.1:{}", p.port()))
        .collect();
    let url = format!(
        "redis+cluster://{}?connect_timeout={OP_TIMEOUT}&socket_timeout={OP_TIMEOUT}",
        hosts.join(",")
    );
    let target = Target::new("redis cluster", url, network_bound());
    let spec = |fault, fail_open| target.spec(fault, fail_open, 1000, false, false);
    both_policies(|fail_open| {
        scenario(
            &spec("connections cut every 100 ms", fail_open),
            &mut Fault::repeating(|| proxies.iter().for_each(FaultProxy::cut_all)),
        );
    });
    both_policies(|fail_open| {
        scenario(
            &spec("replies cut mid-way", fail_open),
            &mut Fault::repeating(|| proxies.iter().for_each(|p| p.truncate_replies(2))),
        );
    });
    let truncated: u64 = proxies.iter().map(FaultProxy::truncated).sum();
    assert!(truncated > 0, "redis cluster: the proxies cut no reply");
}

// ---------------------------------------------------------------------------------------
// Memcached
// ---------------------------------------------------------------------------------------

fn memcached_url(port: u16) -> String {
    format!("memcached://127.0.0.1:{port}?connect_timeout={OP_TIMEOUT}&socket_timeout={OP_TIMEOUT}")
}

#[test]
fn memcached_faults() {
    let _serial = serial();
    let server = Mutex::new(MemcachedServer::start().unwrap_or_else(|e| panic!("{e}")));
    let port = server.lock().unwrap().port().expect("a TCP server");
    let target = Target::new("memcached", memcached_url(port), network_bound());
    let spec = |fault, fail_open, hold_for, loses_data| {
        target.spec(fault, fail_open, hold_for, loses_data, true)
    };
    both_policies(|fail_open| {
        scenario(
            &spec("kill -9, restart", fail_open, 1000, true),
            &mut kill_and_restart(&server),
        );
    });
    both_policies(|fail_open| {
        scenario(
            &spec("SIGSTOP past the timeout", fail_open, 5500, false),
            &mut freeze_and_thaw(&server),
        );
    });
    proxy_faults("memcached", port, memcached_url);
}

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

fn postgres_url(port: u16) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?connect_timeout=1&statement_timeout={OP_TIMEOUT}"
    )
}

fn pg_client(port: u16) -> postgres::Client {
    postgres::Client::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        postgres::NoTls,
    )
    .unwrap()
}

#[test]
fn postgres_faults() {
    let _serial = serial();
    let server = Mutex::new(PostgresServer::start().unwrap_or_else(|e| panic!("{e}")));
    let port = server.lock().unwrap().port();
    // Connecting may take the full connect_timeout (1 s); statements get statement_timeout.
    let bound = Duration::from_secs(1) + network_bound();
    let target = Target::new("postgres", postgres_url(port), bound);
    let spec = |fault, fail_open, hold_for, loses_data, outage| {
        target.spec(fault, fail_open, hold_for, loses_data, outage)
    };
    both_policies(|fail_open| {
        scenario(
            // A fast shutdown: the test server runs with synchronous_commit=off, so a crash
            // (immediate shutdown) may rightly lose the last acknowledged commits.
            &spec("shutdown, restart", fail_open, 1000, false, true),
            &mut Fault::new(
                || server.lock().unwrap().stop().unwrap(),
                || server.lock().unwrap().restart().unwrap(),
            ),
        );
    });
    both_policies(|fail_open| {
        // The table is locked by another session past statement_timeout.
        let locker: Mutex<Option<postgres::Client>> = Mutex::new(None);
        scenario(
            &spec(
                "table locked past statement_timeout",
                fail_open,
                6500,
                false,
                true,
            ),
            &mut Fault::new(
                || {
                    let mut c = pg_client(port);
                    c.batch_execute("BEGIN; LOCK TABLE polycache_cache IN ACCESS EXCLUSIVE MODE")
                        .unwrap();
                    *locker.lock().unwrap() = Some(c);
                },
                || {
                    let mut c = locker.lock().unwrap().take().unwrap();
                    c.batch_execute("ROLLBACK").unwrap();
                },
            ),
        );
    });
    both_policies(|fail_open| {
        scenario(
            &spec("table dropped", fail_open, 1000, true, false),
            &mut Fault::new(
                || {
                    pg_client(port)
                        .batch_execute("DROP TABLE polycache_cache")
                        .unwrap()
                },
                || {},
            ),
        );
    });
    both_policies(|fail_open| {
        // The postmaster and every backend process stopped: no reply at all, which only
        // the client's own deadline (socket_timeout) ends.
        scenario(
            &spec("SIGSTOP past the timeout", fail_open, 5500, false, true),
            &mut freeze_and_thaw(&server),
        );
    });
    proxy_faults("postgres", port, postgres_url);
}

// ---------------------------------------------------------------------------------------
// The async paths
// ---------------------------------------------------------------------------------------

/// The awaited calls of Redis, Memcached and PostgreSQL: 256 tasks across a crash, a freeze
/// and connections cut, then a storm that abandons every other await in flight while the
/// connections are cut. The same invariants as the threaded load: no hang past the bound,
/// no wrong value, `incr` within what was acknowledged and exact after the fault.
#[test]
fn async_faults() {
    let _serial = serial();
    let redis = Mutex::new(RedisServer::start().unwrap_or_else(|e| panic!("{e}")));
    let port = redis.lock().unwrap().port();
    async_backend_faults("redis", &redis, port, redis_url, network_bound());

    let memcached = Mutex::new(MemcachedServer::start().unwrap_or_else(|e| panic!("{e}")));
    let port = memcached.lock().unwrap().port().expect("a TCP server");
    async_backend_faults(
        "memcached",
        &memcached,
        port,
        memcached_url,
        network_bound(),
    );

    let postgres = Mutex::new(PostgresServer::start().unwrap_or_else(|e| panic!("{e}")));
    let port = postgres.lock().unwrap().port();
    let bound = Duration::from_secs(1) + network_bound();
    async_backend_faults("postgres", &postgres, port, postgres_url, bound);
}

/// The per-operation timeout of the async scenarios, seconds: 256 requests in flight on one
/// connection queue behind each other, so on a busy 2-core machine the threaded suite's
/// 0.25 s would time out requests that are merely waiting their turn.
const ASYNC_OP_TIMEOUT: &str = "1";

fn async_backend_faults<S: ServerControl>(
    backend: &'static str,
    server: &Mutex<S>,
    port: u16,
    url: fn(u16) -> String,
    bound: Duration,
) {
    let url = |port| {
        url(port).replace(
            &format!("timeout={OP_TIMEOUT}"),
            &format!("timeout={ASYNC_OP_TIMEOUT}"),
        )
    };
    let scale: f64 = ASYNC_OP_TIMEOUT.parse::<f64>().unwrap() / OP_TIMEOUT.parse::<f64>().unwrap();
    let bound = (bound - MARGIN).mul_f64(scale) + MARGIN;
    let tasks = Load::Tasks { cancel_half: false };
    let target = Target::new(backend, url(port), bound);
    // A crash may lose acknowledged writes (memory only; PostgreSQL's test server runs with
    // synchronous_commit=off): the counter is checked after this fault only.
    scenario_with(
        &target.spec("kill -9, restart", false, 1000, true, true),
        &mut kill_and_restart(server),
        tasks,
    );
    scenario_with(
        &target.spec("SIGSTOP past the timeout", true, 2500, false, true),
        &mut freeze_and_thaw(server),
        tasks,
    );
    let proxy = FaultProxy::start(([127, 0, 0, 1], port).into()).unwrap();
    let via_proxy = Target::new(backend, url(proxy.port()), bound);
    scenario_with(
        &via_proxy.spec("connections cut every 100 ms", false, 1000, false, false),
        &mut Fault::repeating(|| proxy.cut_all()),
        tasks,
    );
    scenario_with(
        &via_proxy.spec("connections cut every 100 ms", false, 1000, false, false),
        &mut Fault::repeating(|| proxy.cut_all()),
        Load::Tasks { cancel_half: true },
    );
}

// ---------------------------------------------------------------------------------------
// Redis Sentinel
// ---------------------------------------------------------------------------------------

/// A master, one replica and three sentinels (down after 0.5 s): the master is killed under
/// load, the sentinels promote the replica, and the cache follows them. Both policies,
/// threads and async tasks. The counter survives on the replica, less the acknowledged
/// `incr`s the replica had not received when the master died (Redis replicates
/// asynchronously; the row counts them); it never exceeds what was sent.
#[test]
fn redis_sentinel_faults() {
    let _serial = serial();
    let set = Mutex::new(RedisSentinelSet::start().unwrap_or_else(|e| panic!("{e}")));
    let url = |op_timeout: &str| {
        format!(
            "{}?connect_timeout={op_timeout}&socket_timeout={op_timeout}",
            set.lock().unwrap().url()
        )
    };
    let sync_target = Target::new("redis+sentinel", url(OP_TIMEOUT), network_bound());
    let scale: f64 = ASYNC_OP_TIMEOUT.parse::<f64>().unwrap() / OP_TIMEOUT.parse::<f64>().unwrap();
    let async_bound = (network_bound() - MARGIN).mul_f64(scale) + MARGIN;
    let async_target = Target::new("redis+sentinel", url(ASYNC_OP_TIMEOUT), async_bound);
    for (target, load) in [
        (&sync_target, Load::Threads),
        (&async_target, Load::Tasks { cancel_half: false }),
    ] {
        both_policies(|fail_open| {
            let killed: Killed = Mutex::new(None);
            let mut spec = target.spec(
                "master killed, replica promoted",
                fail_open,
                500,
                false,
                true,
            );
            spec.replica_takes_over = true;
            scenario_with(&spec, &mut kill_master(&set, &killed), load);
            // The killed master comes back (the sentinels make it a replica of the new one)
            // for the next scenario.
            let (index, _, _) = killed.lock().unwrap().take().expect("a master was killed");
            let mut set = set.lock().unwrap();
            set.servers_mut()[index].restart().unwrap();
            set.wait_discovered().unwrap();
        });
    }
}

/// The master a [`kill_master`] fault killed: its index among the set's servers, its port
/// and when.
type Killed = Mutex<Option<(usize, u16, Instant)>>;

/// Kills the master the sentinels name; ends once they name another one that answers as
/// master, and prints how long that took.
fn kill_master<'a>(set: &'a Mutex<RedisSentinelSet>, killed: &'a Killed) -> Fault<'a> {
    Fault::new(
        move || {
            let mut set = set.lock().unwrap();
            let index = set.master_index().unwrap();
            let port = set.servers()[index].port();
            // What the master accepted before the load began (the seeded counter) is on the
            // replica; what the load writes from here on may not be yet.
            set.wait_replicas_caught_up(RECOVERY).unwrap();
            println!(
                "SENTINEL-STATE | before the kill | {} |",
                replication_state(&set)
            );
            set.servers_mut()[index].kill().unwrap();
            *killed.lock().unwrap() = Some((index, port, Instant::now()));
        },
        move || {
            let (_, port, at) = killed.lock().unwrap().expect("the master was killed");
            let set = set.lock().unwrap();
            set.wait_failover(port, RECOVERY).unwrap();
            println!(
                "SENTINEL-FAILOVER | master killed → new master named: {} ms |",
                at.elapsed().as_millis()
            );
            println!(
                "SENTINEL-STATE | after the failover | {} |",
                replication_state(&set)
            );
        },
    )
}

/// Each live data server's role, replication link, offset and key count, for the output of
/// a failing failover scenario.
fn replication_state(set: &RedisSentinelSet) -> String {
    let fields = [
        "role",
        "master_link_status",
        "master_repl_offset",
        "slave_repl_offset",
    ];
    set.servers()
        .iter()
        .map(|server| {
            let port = server.port();
            let Ok(info) = set.data_command(port, &["INFO", "replication"]) else {
                return format!("{port}: down");
            };
            let known: Vec<String> = fields
                .iter()
                .filter_map(|f| info_field(&info, f).map(|v| format!("{f}={v}")))
                .collect();
            let keys = set.data_command(port, &["DBSIZE"]).unwrap_or_default();
            format!("{port}: {} keys={}", known.join(" "), keys.trim())
        })
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------------------

#[test]
fn sqlite_faults() {
    let _serial = serial();
    let dir = TempDir::new("sqlite");
    let db = dir.path().join("cache.db");
    let url = format!("sqlite://{}?busy_timeout={OP_TIMEOUT}", db.display());
    // Two waits for the lock of busy_timeout each, plus the margin.
    let target = Target::new("sqlite", url, Duration::from_millis(500) + MARGIN);
    let spec = |fault, fail_open, hold_for, loses_data, outage| {
        target.spec(fault, fail_open, hold_for, loses_data, outage)
    };
    both_policies(|fail_open| {
        let locker: Mutex<Option<rusqlite::Connection>> = Mutex::new(None);
        scenario(
            &spec(
                "exclusive lock past busy_timeout",
                fail_open,
                5000,
                false,
                true,
            ),
            &mut Fault::new(
                || {
                    let c = rusqlite::Connection::open(&db).unwrap();
                    c.busy_timeout(Duration::from_secs(10)).unwrap();
                    c.execute_batch("BEGIN EXCLUSIVE").unwrap();
                    *locker.lock().unwrap() = Some(c);
                },
                || {
                    let c = locker.lock().unwrap().take().unwrap();
                    c.execute_batch("ROLLBACK").unwrap();
                },
            ),
        );
    });
    both_policies(|fail_open| {
        scenario(
            &spec("table dropped", fail_open, 1000, true, false),
            &mut Fault::new(
                || {
                    let c = rusqlite::Connection::open(&db).unwrap();
                    c.busy_timeout(Duration::from_secs(10)).unwrap();
                    c.execute_batch("DROP TABLE polycache_cache").unwrap();
                },
                || {},
            ),
        );
    });
}

// ---------------------------------------------------------------------------------------
// file://
// ---------------------------------------------------------------------------------------

/// A small tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `4m`); the error says why it cannot (most often: not
    /// root, or no `CAP_SYS_ADMIN` in a container).
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = TempDir::new("tmpfs");
        let tmpfs = Tmpfs { dir };
        run_mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            tmpfs.dir.path(),
        )
        .map(|()| tmpfs)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn run_mount(args: &[&str], target: &Path) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .arg(target)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[test]
fn file_faults() {
    let _serial = serial();
    let spec = |url: &str, fault, fail_open, loses_data| {
        Target::new("file", url.to_string(), MARGIN).spec(fault, fail_open, 1000, loses_data, false)
    };
    match Tmpfs::mount("4m") {
        Ok(fs) => {
            let url = format!("file://{}/cache", fs.dir.path().display());
            both_policies(|fail_open| {
                // The bound is far above what fits, so the disk fills first.
                scenario(
                    &spec(&url, "disk full (4 MiB tmpfs)", fail_open, false),
                    &mut Fault::new(
                        || fill(fs.dir.path()),
                        || {
                            let _ = std::fs::remove_file(fs.dir.path().join("filler"));
                        },
                    ),
                );
            });
        }
        Err(why) => not_run("file", "disk full", &why),
    }
    let dir = TempDir::new("file");
    let url = format!("file://{}/cache", dir.path().display());
    let root = dir.path().join("cache");
    // Root writes through permission bits, so the directory is made immutable instead.
    match chattr("-i", &root).and_then(|()| chattr("-i", &root)) {
        Ok(()) => both_policies(|fail_open| {
            scenario(
                &spec(&url, "unwritable (chattr +i)", fail_open, false),
                &mut Fault::new(
                    || chattr("+i", &root).unwrap(),
                    || chattr("-i", &root).unwrap(),
                ),
            );
        }),
        Err(why) => not_run("file", "unwritable", &why),
    }
    both_policies(|fail_open| {
        let mut corrupted = 0;
        scenario(
            &spec(&url, "entries corrupted every 100 ms", fail_open, false),
            &mut Fault::repeating(|| corrupted += corrupt_some(&root)),
        );
        assert!(corrupted > 0, "no entry file was corrupted");
    });
}

/// `chattr -R FLAGS root`: `+i` makes every directory and entry under it immutable.
fn chattr(flags: &str, root: &Path) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|e| e.to_string())?;
    let out = Command::new("chattr")
        .args(["-R", flags])
        .arg(root)
        .output()
        .map_err(|e| format!("cannot run chattr: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "chattr failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Fills the file system of `dir` with one file until it is full.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
}

/// Flips a byte in the middle of up to 20 entry files under `root` (never the counter's);
/// returns how many it changed.
fn corrupt_some(root: &Path) -> usize {
    let mut changed = 0;
    let mut files = Vec::new();
    collect_files(root, &mut files);
    for path in files.iter().step_by(7).take(20) {
        let Ok(mut bytes) = std::fs::read(path) else {
            continue;
        };
        if bytes.is_empty() || contains(&bytes, COUNTER.as_bytes()) {
            continue;
        }
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5A;
        if std::fs::write(path, &bytes).is_ok() {
            changed += 1;
        }
    }
    changed
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
