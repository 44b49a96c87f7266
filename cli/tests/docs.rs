//! Every ```console block of docs/cli.md runs, in order, as a shell would run it.
//!
//! A line `$ COMMAND` runs `COMMAND` with `sh -c`, the `polycache` binary first on `PATH`,
//! after the page's earlier `$ export …` lines; the lines up to the next `$ ` are its
//! expected output (standard output, then standard error). In an expected line, `...`
//! matches any text. `/var/cache/site` becomes a fresh temporary directory and
//! `redis://127.0.0.1:6379` a Redis server this test starts.

use polycache_testkit::{RedisServer, TempDir};
use std::path::Path;
use std::process::Command;

/// One shell command of the page and what it prints.
struct Step {
    line: usize,
    command: String,
    expected: Vec<String>,
}

fn steps(page: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut in_block = false;
    for (n, line) in page.lines().enumerate() {
        if line.starts_with("```") {
            in_block = line == "```console";
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                line: n + 1,
                command: command.to_owned(),
                expected: Vec::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.to_owned());
        }
    }
    steps
}

/// True when `text` matches `pattern`, whose `...` stand for any text.
fn matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn ellipses_match_any_text() {
    assert!(matches("a ... b", "a 1.5 ms b"));
    assert!(matches("redis ...", "redis 7.2.4"));
    assert!(matches("x...y...z", "x1y2z"));
    assert!(!matches("x...y...z", "x1z"));
    assert!(!matches("exact", "exact "));
}

#[test]
fn the_cli_page_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let page = std::fs::read_to_string(root.join("docs/cli.md")).unwrap();
    let steps = steps(&page);
    assert!(
        steps.len() > 30,
        "docs/cli.md has only {} commands",
        steps.len()
    );

    let dir = TempDir::new("cli-docs");
    let redis = RedisServer::start().expect("redis-server starts");
    let site = dir.path().display().to_string();
    let redis_addr = format!("127.0.0.1:{}", redis.port());
    let local = |s: &str| {
        s.replace("/var/cache/site", &site)
            .replace("127.0.0.1:6379", &redis_addr)
    };
    let bin = Path::new(env!("CARGO_BIN_EXE_polycache")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut exports = String::new();
    for step in &steps {
        let command = local(&step.command);
        if command.starts_with("export ") {
            exports.push_str(&command);
            exports.push('\n');
            continue;
        }
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("{exports}{command}"))
            .env("PATH", &path)
            .env_remove("POLYCACHE_URL")
            .env_remove("POLYCACHE_PREFIX")
            .env_remove("POLYCACHE_KEY_VERSION")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let got = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let got: Vec<&str> = got.lines().collect();
        let expected: Vec<String> = step.expected.iter().map(|l| local(l)).collect();
        let same =
            got.len() == expected.len() && got.iter().zip(&expected).all(|(g, e)| matches(e, g));
        assert!(
            same,
            "docs/cli.md line {}: $ {}\nexpected:\n{}\ngot:\n{}",
            step.line,
            step.command,
            expected.join("\n"),
            got.join("\n")
        );
    }
}
