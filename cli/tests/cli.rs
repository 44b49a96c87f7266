//! The `polycache` binary, run as a shell runs it: file://, sqlite:// and a Redis server of
//! the testkit (memory:// is per process, so it cannot carry a value from one run to the
//! next).

use polycache_testkit::{PostgresServer, RedisServer, TempDir};
use std::io::Write;
use std::process::{Command, Stdio};

/// What one run of the binary printed and returned.
struct Run {
    code: i32,
    out: String,
    raw: Vec<u8>,
    err: String,
}

/// Runs `polycache ARGS` with `POLYCACHE_URL=url` and no terminal; `stdin` is its input.
fn run_with(url: &str, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_polycache"))
        .args(args)
        .env("POLYCACHE_URL", url)
        .env_remove("POLYCACHE_PREFIX")
        .env_remove("POLYCACHE_KEY_VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the polycache binary runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().expect("exited, not killed"),
        out: String::from_utf8_lossy(&output.stdout).into_owned(),
        raw: output.stdout,
        err: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn run(url: &str, args: &[&str]) -> Run {
    run_with(url, args, b"")
}

/// Runs and checks the exit code, showing everything when it differs.
#[track_caller]
fn expect(url: &str, args: &[&str], code: i32) -> Run {
    let r = run(url, args);
    assert_eq!(
        r.code, code,
        "polycache {args:?}\nstdout: {}\nstderr: {}",
        r.out, r.err
    );
    r
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: not JSON: {text:?}"))
}

fn file_url(dir: &TempDir) -> String {
    format!("file://{}/cache", dir.path().display())
}

/// get, set, delete, ttl, keys, and the exit codes a shell tests.
fn session(url: &str) {
    assert_eq!(
        expect(url, &["get", "greeting"], 1).err,
        "polycache: \"greeting\" not found\n"
    );
    expect(url, &["set", "greeting", "hello world"], 0);
    assert_eq!(expect(url, &["get", "greeting"], 0).out, "hello world\n");
    assert_eq!(
        expect(url, &["get", "--raw", "greeting"], 0).raw,
        b"hello world"
    );
    let got = json(&expect(url, &["--json", "get", "greeting"], 0).out);
    assert_eq!(got["value"], "hello world");
    assert_eq!(got["base64"], "aGVsbG8gd29ybGQ=");

    // TTLs: the cache's default (300 s), given seconds, never.
    assert_eq!(expect(url, &["ttl", "greeting"], 0).out, "300\n");
    expect(url, &["set", "--ttl", "60", "short", "v"], 0);
    assert_eq!(expect(url, &["ttl", "short"], 0).out, "60\n");
    expect(url, &["set", "--ttl", "never", "forever", "v"], 0);
    assert_eq!(expect(url, &["ttl", "forever"], 0).out, "never\n");
    let t = json(&expect(url, &["--json", "ttl", "short"], 0).out);
    assert!(
        t["ttl_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 0 && ms <= 60_000),
        "{t}"
    );
    expect(url, &["ttl", "missing"], 1);
    for bad in ["0", "-5", "soon"] {
        let r = expect(url, &["set", "--ttl", bad, "k", "v"], 2);
        assert_eq!(r.err.lines().count(), 1, "{}", r.err);
    }

    // A value from standard input, not UTF-8: escaped for people, exact with --raw.
    let r = run_with(url, &["set", "pickle"], b"\x80\x04K*.");
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        expect(url, &["get", "pickle"], 0).out,
        "b\"\\x80\\x04K*.\"\n"
    );
    assert_eq!(
        expect(url, &["get", "--raw", "pickle"], 0).raw,
        b"\x80\x04K*."
    );
    let got = json(&expect(url, &["--json", "get", "pickle"], 0).out);
    assert_eq!(
        (got["utf8"].as_bool(), got["base64"].as_str()),
        (Some(false), Some("gARLKi4="))
    );

    let mut keys: Vec<String> = expect(url, &["keys", "*"], 0)
        .out
        .lines()
        .map(String::from)
        .collect();
    keys.sort();
    assert_eq!(keys, ["forever", "greeting", "pickle", "short"]);
    let listed = json(&expect(url, &["--json", "keys", "g*"], 0).out);
    assert_eq!(listed, serde_json::json!(["greeting"]));
    assert_eq!(expect(url, &["keys", "nothing:*"], 0).out, "");
    assert_eq!(
        json(&expect(url, &["--json", "keys", "nothing:*"], 0).out),
        serde_json::json!([])
    );

    expect(url, &["delete", "greeting"], 0);
    expect(url, &["delete", "greeting"], 1);
    expect(url, &["get", "greeting"], 1);
}

#[test]
fn a_file_cache_session() {
    let dir = TempDir::new("cli-file");
    session(&file_url(&dir));
}

#[test]
fn a_sqlite_cache_session_and_its_table() {
    let dir = TempDir::new("cli-sqlite");
    let url = format!(
        "sqlite://{}/cache.db?table=site_cache",
        dir.path().display()
    );
    let sql = expect(&url, &["create-table", "--dry-run"], 0).out;
    assert!(
        sql.starts_with("CREATE TABLE IF NOT EXISTS \"site_cache\""),
        "{sql}"
    );
    assert!(
        !dir.path().join("cache.db").exists(),
        "--dry-run wrote the database"
    );
    expect(&url, &["create-table"], 0);
    assert!(dir.path().join("cache.db").exists());
    expect(&url, &["create-table"], 0);
    session(&url);
    // Not a SQL URL: a usage error.
    let r = expect(&file_url(&dir), &["create-table"], 2);
    assert!(r.err.contains("sqlite:// or postgres://"), "{}", r.err);
}

#[test]
fn prefix_and_version_address_other_keys() {
    let dir = TempDir::new("cli-prefix");
    let url = file_url(&dir);
    expect(&url, &["--prefix", "site", "set", "k", "a"], 0);
    expect(
        &url,
        &["--prefix", "site", "--key-version", "2", "set", "k", "b"],
        0,
    );
    assert_eq!(
        expect(&url, &["--prefix", "site", "get", "k"], 0).out,
        "a\n"
    );
    assert_eq!(
        expect(
            &url,
            &["get", "k", "--prefix", "site", "--key-version", "2"],
            0
        )
        .out,
        "b\n"
    );
    expect(&url, &["get", "k"], 1);
    let stats = json(&expect(&url, &["--json", "--prefix", "site", "stats"], 0).out);
    assert_eq!(
        (stats["keys"].as_u64(), stats["key_prefix"].as_str()),
        (Some(1), Some("site"))
    );
    assert_eq!(stats["backend"], "file");
}

#[test]
fn delete_pattern_counts_first_and_refuses_everything_without_yes() {
    let dir = TempDir::new("cli-pattern");
    let url = file_url(&dir);
    for k in ["user:1", "user:2", "user:3", "team:1"] {
        expect(&url, &["set", k, "v"], 0);
    }
    let r = expect(&url, &["delete-pattern", "--dry-run", "user:*"], 0);
    assert_eq!(
        r.out,
        "3 keys match \"user:*\" (dry run: nothing deleted)\n"
    );
    let r = expect(&url, &["delete-pattern", "*"], 2);
    assert_eq!(r.out, "");
    assert_eq!(r.err.lines().count(), 1, "{}", r.err);
    assert!(
        r.err.contains("4 keys match \"*\"") && r.err.contains("--yes"),
        "{}",
        r.err
    );
    assert_eq!(
        expect(&url, &["keys", "*"], 0).out.lines().count(),
        4,
        "refused, yet deleted"
    );

    let r = json(&expect(&url, &["--json", "delete-pattern", "user:*"], 0).out);
    assert_eq!(
        (r["matched"].as_u64(), r["deleted"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(expect(&url, &["keys", "*"], 0).out, "team:1\n");
    assert_eq!(
        expect(&url, &["delete-pattern", "--yes", "*"], 0).out,
        "deleted 1 key matching \"*\"\n"
    );
    assert_eq!(expect(&url, &["keys", "*"], 0).out, "");
}

#[test]
fn invalidate_tags_makes_the_tagged_entries_a_miss_for_every_process() {
    let dir = TempDir::new("cli-tags");
    let url = file_url(&dir);
    expect(&url, &["set", "--tag", "product:42", "page:42", "html"], 0);
    expect(
        &url,
        &["set", "--tag", "product:7", "--tag", "x", "page:7", "html"],
        0,
    );
    expect(&url, &["set", "plain", "v"], 0);
    assert_eq!(
        expect(&url, &["invalidate-tags", "product:42"], 0).out,
        "invalidated 1 tag\n"
    );
    // Each command is its own process: the invalidation is in the store, not in memory.
    expect(&url, &["get", "page:42"], 1);
    expect(&url, &["get", "page:7"], 0);
    expect(&url, &["get", "plain"], 0);
    let r = expect(&url, &["--json", "invalidate-tags", "x", "y"], 0);
    assert!(r.out.contains("\"invalidated\":true"), "{}", r.out);
    expect(&url, &["get", "page:7"], 1);
    // A bad tag stores nothing.
    let r = expect(&url, &["set", "--tag", "", "k", "v"], 1);
    assert!(r.err.contains("tag"), "{}", r.err);
    expect(&url, &["get", "k"], 1);
}

#[test]
fn clear_needs_yes_without_a_terminal() {
    let dir = TempDir::new("cli-clear");
    let url = file_url(&dir);
    expect(&url, &["set", "k", "v"], 0);
    let r = expect(&url, &["clear"], 2);
    assert!(r.err.contains("--yes"), "{}", r.err);
    expect(&url, &["get", "k"], 0);
    expect(&url, &["clear", "--yes"], 0);
    expect(&url, &["get", "k"], 1);
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    let dir = TempDir::new("cli-usage");
    let url = file_url(&dir);
    let cases: &[(&str, &[&str], &str)] = &[
        (
            &url,
            &["frobnicate"],
            "unrecognized subcommand 'frobnicate'",
        ),
        (&url, &["get"], "required"),
        (&url, &["get", "k", "--bogus"], "--bogus"),
        ("nosuch://x", &["get", "k"], "unknown cache scheme 'nosuch'"),
        ("memory://?max_entries=lots", &["get", "k"], "max_entries"),
        (
            "",
            &["get", "k"],
            "no cache URL: give --url URL or set POLYCACHE_URL",
        ),
        (&url, &["invalidate-tags"], "required"),
    ];
    for (url, args, says) in cases {
        let r = expect(url, args, 2);
        assert_eq!(r.err.lines().count(), 1, "{args:?}: {}", r.err);
        assert!(
            r.err.starts_with("polycache: ") && r.err.contains(says),
            "{args:?}: {}",
            r.err
        );
        assert_eq!(r.out, "");
    }
}

#[test]
fn every_command_has_help() {
    let commands = [
        "stats",
        "get",
        "set",
        "delete",
        "ttl",
        "keys",
        "delete-pattern",
        "clear",
        "create-table",
        "doctor",
        "bench",
        "invalidate-tags",
    ];
    let top = expect("", &["--help"], 0).out;
    for command in commands {
        assert!(
            top.contains(&format!("  {command} ")),
            "--help does not list {command}"
        );
        let r = expect("", &[command, "--help"], 0);
        assert!(
            r.out.contains(&format!("Usage: polycache {command}")),
            "{}",
            r.out
        );
        expect("", &["help", command], 0);
    }
    assert_eq!(
        expect("", &["--version"], 0).out,
        format!("polycache {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn secrets_are_never_printed() {
    // A port nothing listens on: every command fails to connect.
    let port = polycache_testkit::free_loopback_port().unwrap();
    let url = format!("redis://:hunter2@127.0.0.1:{port}/0");
    for args in [
        &["get", "k"][..],
        &["stats"],
        &["doctor"],
        &["--json", "doctor"],
        &["--help"],
        &["get", "--help"],
    ] {
        let r = run(&url, args);
        assert!(
            !r.out.contains("hunter2") && !r.err.contains("hunter2"),
            "{args:?}: {} {}",
            r.out,
            r.err
        );
    }
    let r = expect(&url, &["get", "k"], 1);
    assert!(r.err.contains("unreachable"), "{}", r.err);
    let r = expect(&url, &["doctor"], 1);
    assert!(r.out.contains("redis://:***@127.0.0.1"), "{}", r.out);
    assert!(
        r.out
            .lines()
            .any(|l| l.starts_with("FAIL  connection  cannot connect")),
        "{}",
        r.out
    );
    // A bad URL is shown redacted too.
    let r = expect("nosuch://:hunter2@h/", &["get", "k"], 2);
    assert!(
        !r.err.contains("hunter2") && r.err.contains("***"),
        "{}",
        r.err
    );
}

#[test]
fn doctor_and_bench_on_files() {
    let dir = TempDir::new("cli-doctor");
    let url = file_url(&dir);
    let r = expect(&url, &["doctor"], 0);
    let lines: Vec<&str> = r.out.lines().collect();
    assert!(
        lines[0].starts_with("ok    url         file://"),
        "{}",
        r.out
    );
    assert!(r.out.contains("ok    connection"), "{}", r.out);
    let report = json(&expect(&url, &["--json", "doctor"], 0).out);
    assert_eq!(report["ok"], true);
    assert!(report["checks"]
        .as_array()
        .is_some_and(|c| c.iter().all(|c| c["status"] != "fail")));

    let b = json(&expect(&url, &["--json", "bench", "--ops", "50", "--size", "10"], 0).out);
    for op in ["set", "get"] {
        let (p50, p99) = (
            b[op]["p50_ms"].as_f64().unwrap(),
            b[op]["p99_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{b}");
        assert!(b[op]["ops_per_sec"].as_f64().unwrap() > 0.0, "{b}");
    }
    // The benchmark's keys are gone.
    assert_eq!(expect(&url, &["keys", "*"], 0).out, "");
    expect(&url, &["bench", "--ops", "0"], 2);
}

#[test]
fn a_redis_session_doctor_and_bench() {
    let redis = RedisServer::start().expect("redis-server starts");
    let url = redis.url();
    session(&url);
    let r = expect(&url, &["doctor"], 0);
    assert!(
        r.out
            .contains("ok    tls         not used: the server is local"),
        "{}",
        r.out
    );
    assert!(r.out.contains("ok    keys"), "{}", r.out);
    assert!(r.out.contains("ok    server      redis "), "{}", r.out);
    // The server's clock is this machine's: no skew to report.
    assert!(r.out.contains("ok    clock       "), "{}", r.out);
    let r = expect(&url, &["bench", "--ops", "20"], 0);
    assert!(r.out.lines().any(|l| l.starts_with("get ")), "{}", r.out);
    let s = json(&expect(&url, &["--json", "stats"], 0).out);
    assert_eq!(
        (s["backend"].as_str(), s["keys"].as_u64()),
        (Some("redis"), Some(3))
    );
    assert_eq!(s["server"]["software"], "redis");
    assert!(s["server"]["details"]["keyspace_hits"].is_string(), "{s}");
}

#[test]
fn doctor_finds_a_sql_table_of_the_wrong_shape() {
    let dir = TempDir::new("cli-table");
    let url = format!("sqlite://{}/cache.db", dir.path().display());
    let r = expect(&url, &["doctor"], 0);
    assert!(
        r.out
            .contains("ok    table       has the columns and unique index"),
        "{}",
        r.out
    );
    // Another program's table of that name: the write fails, and the table check says why.
    let db = dir.path().join("other.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE stuff (id INTEGER PRIMARY KEY, key_hash INTEGER NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, expires_at INTEGER)")
        .unwrap();
    let other = format!("sqlite://{}?table=stuff", db.display());
    let r = expect(&other, &["doctor"], 1);
    assert!(r.out.contains("FAIL  connection"), "{}", r.out);
    assert!(
        r.out
            .contains("FAIL  table       column key of stuff is TEXT, polycache needs BLOB"),
        "{}",
        r.out
    );
    assert!(
        r.out
            .contains("FAIL  table       the table stuff has no column byte_size"),
        "{}",
        r.out
    );
    assert!(
        r.out
            .contains("FAIL  table       the table stuff has no unique index on key_hash"),
        "{}",
        r.out
    );
}

#[test]
fn a_postgres_table_create_and_doctor() {
    let pg = PostgresServer::start().expect("postgres starts");
    let url = format!("{}?table=cli_cache", pg.url());
    expect(&url, &["create-table"], 0);
    expect(&url, &["set", "k", "v"], 0);
    assert_eq!(expect(&url, &["get", "k"], 0).out, "v\n");
    let r = expect(&url, &["doctor"], 0);
    assert!(r.out.contains("ok    server      postgresql "), "{}", r.out);
    assert!(
        r.out.contains("this connection is not encrypted"),
        "{}",
        r.out
    );
    assert!(r.out.contains("ok    clock       "), "{}", r.out);
    assert!(
        r.out
            .contains("ok    table       has the columns and unique index"),
        "{}",
        r.out
    );
    assert!(
        r.out
            .contains("ok    tls         not used: the server is local"),
        "{}",
        r.out
    );
}

#[test]
fn doctor_explains_a_wrong_password() {
    let redis =
        RedisServer::start_with_config(&["requirepass right"]).expect("redis-server starts");
    let port = redis.port();
    let wrong = format!("redis://:wrong@127.0.0.1:{port}/0");
    let r = expect(&wrong, &["doctor"], 1);
    assert!(
        r.out
            .contains("FAIL  connection  authentication failed: check the user and password"),
        "{}",
        r.out
    );
    assert!(!r.out.contains("wrong@"), "{}", r.out);
    let none = format!("redis://127.0.0.1:{port}/0");
    let r = expect(&none, &["doctor"], 1);
    assert!(r.out.contains("the server wants a password"), "{}", r.out);
    let right = format!("redis://:right@127.0.0.1:{port}/0");
    expect(&right, &["doctor"], 0);
}

/// Runs `polycache ARGS` on a terminal (util-linux' `script`), typing `input`; returns
/// what the terminal showed.
fn on_a_terminal(url: &str, args: &str, input: &str) -> String {
    let mut child = Command::new("script")
        .args([
            "-qec",
            &format!("{} {args}", env!("CARGO_BIN_EXE_polycache")),
            "/dev/null",
        ])
        .env("POLYCACHE_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn on_a_terminal_it_shows_progress_and_asks() {
    let dir = TempDir::new("cli-tty");
    let url = file_url(&dir);
    for k in ["a:1", "a:2", "b:1"] {
        expect(&url, &["set", k, "v"], 0);
    }
    let shown = on_a_terminal(&url, "delete-pattern 'a:*'", "");
    assert!(
        shown.contains("counting keys matching \"a:*\": "),
        "{shown:?}"
    );
    assert!(
        shown.contains("\r\x1b[K"),
        "the progress line is not erased: {shown:?}"
    );
    assert!(
        shown.contains("deleted 2 keys matching \"a:*\""),
        "{shown:?}"
    );

    let shown = on_a_terminal(&url, "clear", "n\n");
    assert!(
        shown.contains("Remove every key of prefix \"\" in file://"),
        "{shown:?}"
    );
    assert!(shown.contains("not clearing"), "{shown:?}");
    expect(&url, &["get", "b:1"], 0);
    let shown = on_a_terminal(&url, "clear", "y\n");
    assert!(shown.contains("cleared every key"), "{shown:?}");
    expect(&url, &["get", "b:1"], 1);
}

#[test]
fn doctor_reports_tls_to_postgres() {
    let certs = polycache_testkit::TestCertificates::generate().unwrap();
    let pg = PostgresServer::start_tls(&certs).expect("postgres starts with TLS");
    let ca = certs.ca_cert();
    let full = format!(
        "{}?table=tls_cache&sslmode=verify-full&sslrootcert={}",
        pg.url(),
        ca.display()
    );
    let r = expect(&full, &["doctor"], 0);
    assert!(
        r.out
            .contains("ok    tls         encrypted (sslmode=verify-full)"),
        "{}",
        r.out
    );
    assert!(r.out.contains("this connection is encrypted"), "{}", r.out);
    // Encrypted without a host name check: works, with a warning.
    let require = format!("{}?table=tls_cache&sslmode=require", pg.url());
    let r = expect(&require, &["doctor"], 0);
    assert!(
        r.out
            .contains("warn  tls         sslmode=require: the server's host name is not checked"),
        "{}",
        r.out
    );
    assert!(r.out.contains("this connection is encrypted"), "{}", r.out);
}

#[test]
fn doctor_reports_tls_to_redis() {
    let certs = polycache_testkit::TestCertificates::generate().unwrap();
    let redis = match RedisServer::start_tls(&certs) {
        Ok(r) => r,
        // A redis-server built without TLS rejects the tls-* directives.
        Err(e) if e.to_string().contains("Bad directive") => {
            eprintln!("skipped: this redis-server has no TLS support: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let url = redis.tls_url().unwrap();
    let checked = format!("{url}?tls_ca={}", certs.ca_cert().display());
    let r = expect(&checked, &["doctor"], 0);
    assert!(
        r.out
            .contains("ok    tls         encrypted; the server certificate is checked"),
        "{}",
        r.out
    );
    let r = expect(&format!("{url}?insecure=true"), &["doctor"], 0);
    assert!(
        r.out
            .contains("warn  tls         encrypted, but insecure=true"),
        "{}",
        r.out
    );
    // Without the private CA the certificate is refused: the connection check says so.
    let r = expect(&url, &["doctor"], 1);
    assert!(
        r.out.contains("FAIL  connection  cannot connect"),
        "{}",
        r.out
    );
}

#[test]
fn memcached_works_except_what_it_cannot_do() {
    let mc = polycache_testkit::MemcachedServer::start().expect("memcached starts");
    let url = mc.url();
    expect(&url, &["set", "k", "v"], 0);
    assert_eq!(expect(&url, &["get", "k"], 0).out, "v\n");
    // Memcached cannot list keys: a one-line failure, not a crash or an empty list.
    let r = expect(&url, &["keys", "*"], 1);
    assert_eq!(r.err.lines().count(), 1, "{}", r.err);
    assert!(r.err.contains("memcached"), "{}", r.err);
    expect(&url, &["delete-pattern", "k*"], 1);
    let s = expect(&url, &["stats"], 0);
    assert!(
        s.out
            .contains("keys        unknown (memcached cannot list its keys)"),
        "{}",
        s.out
    );
    let r = expect(&url, &["doctor"], 0);
    assert!(r.out.contains("ok    connection"), "{}", r.out);
    assert!(
        r.out
            .contains("--    keys        this backend cannot list keys"),
        "{}",
        r.out
    );
    expect(&url, &["clear", "--yes"], 0);
    expect(&url, &["get", "k"], 1);
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    let dir = TempDir::new("cli-pipe");
    let url = file_url(&dir);
    // More keys than a pipe buffers, so the reader's close meets the writer mid-way.
    let cache = polycache::Cache::open(&url).unwrap();
    for i in 0..20_000 {
        cache
            .set(
                format!("bulk:{i:05}").as_str(),
                b"v",
                polycache::Expiry::Never,
            )
            .unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_polycache"))
        .args(["keys", "*"])
        .env("POLYCACHE_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 6];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"bulk:0");
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "",
        "a closed pipe printed an error"
    );
}
