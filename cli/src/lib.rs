//! The `polycache` command-line tool: one implementation for the Rust binary and the
//! Python console script (`_polycache.cli_main`).
//!
//! [`run`] parses the arguments, opens the cache the URL names (`--url` or
//! `POLYCACHE_URL`, any URL [`polycache::Cache::open`] takes) and runs one command. It
//! never panics on bad input and never prints a password: URLs are shown through
//! [`polycache::redact`].
//!
//! Exit codes ([`EXIT_OK`], [`EXIT_FAILURE`], [`EXIT_USAGE`]): 0 when the command did what
//! it was asked; 1 when it could not (the key is not there, the server is unreachable, a
//! `doctor` check failed); 2 for a usage error (unknown command or option, a bad URL, a
//! destructive command without `--yes`), with a one-line message on standard error.
//!
//! ```
//! let dir = std::env::temp_dir().join(format!("polycache-cli-doc-{}", std::process::id()));
//! let url = format!("file://{}", dir.display());
//! let args = |a: &[&str]| {
//!     let mut v = vec!["polycache".into(), "--url".into(), url.clone().into()];
//!     v.extend(a.iter().map(std::ffi::OsString::from));
//!     v
//! };
//! let (mut out, mut err) = (Vec::new(), Vec::new());
//! assert_eq!(polycache_cli::run(args(&["set", "greeting", "hello"]), &mut out, &mut err), 0);
//! out.clear();
//! assert_eq!(polycache_cli::run(args(&["get", "greeting"]), &mut out, &mut err), 0);
//! assert_eq!(out, b"hello\n");
//! assert_eq!(polycache_cli::run(args(&["get", "nope"]), &mut out, &mut err), 1);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

mod bench;
mod commands;
mod doctor;
mod show;

use clap::{Args, Parser, Subcommand};
use polycache::{Cache, Error, ErrorKind, Expiry};
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// The command did what it was asked.
pub const EXIT_OK: i32 = 0;
/// The command could not do it: the key is not there, the backend failed, a check failed.
pub const EXIT_FAILURE: i32 = 1;
/// A usage error: unknown command or option, a bad URL, a missing `--yes`. Nothing was done.
pub const EXIT_USAGE: i32 = 2;

/// Inspect, edit, check and benchmark a polycache cache from a shell.
///
/// Works on any cache URL polycache opens: file://, sqlite://, postgres://, redis://,
/// rediss://, memcached://, ... (memory:// and dummy:// open an empty cache of this process
/// only). Passwords in URLs are never printed.
///
/// Exit codes: 0 ok; 1 not found or failed; 2 usage error (nothing done).
#[derive(Parser, Debug)]
#[command(
    name = "polycache",
    bin_name = "polycache",
    version,
    max_term_width = 100
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Global {
    /// The cache URL, e.g. redis://:PASSWORD@host:6379/0 or sqlite:///var/cache/app.db
    #[arg(long, env = "POLYCACHE_URL", hide_env_values = true, global = true)]
    url: Option<String>,
    /// The key prefix of the cache (Django's KEY_PREFIX): keys are PREFIX:VERSION:KEY.
    #[arg(
        long,
        env = "POLYCACHE_PREFIX",
        hide_env_values = true,
        value_name = "PREFIX",
        default_value = "",
        hide_default_value = true,
        global = true
    )]
    prefix: String,
    /// The key version of the cache (Django's VERSION).
    #[arg(
        long,
        env = "POLYCACHE_KEY_VERSION",
        hide_env_values = true,
        value_name = "N",
        default_value_t = 1,
        global = true
    )]
    key_version: i64,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// What the cache holds: backend, key prefix, number of keys, server figures.
    Stats,
    /// Print the value of KEY (exit 1 when it is not there).
    ///
    /// A value that is valid UTF-8 is printed as text followed by a newline; any other
    /// value as an escaped byte string, b"\x80\x04...". --raw writes the bytes as they are.
    Get {
        /// The key, without the prefix and version.
        key: String,
        /// Write the value's bytes to standard output unchanged, with no newline.
        #[arg(long)]
        raw: bool,
    },
    /// Store VALUE under KEY (VALUE omitted: read it from standard input).
    Set {
        /// The key, without the prefix and version.
        key: String,
        /// The value; read from standard input when omitted.
        value: Option<OsString>,
        /// Seconds until it expires (decimals allowed), or "never"; default: the cache's
        /// default timeout (the URL's ?timeout=, else 300 s).
        #[arg(long, value_name = "SECONDS|never", value_parser = parse_ttl)]
        ttl: Option<Expiry>,
        /// A tag the entry carries (repeatable): `invalidate-tags TAG` makes it a miss.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// Remove KEY (exit 1 when it was not there).
    Delete {
        /// The key, without the prefix and version.
        key: String,
    },
    /// Print the seconds KEY has left, or "never" (exit 1 when it is not there).
    Ttl {
        /// The key, without the prefix and version.
        key: String,
    },
    /// List the keys matching PATTERN, one per line, as the scan finds them.
    ///
    /// PATTERN is a glob over the keys without prefix and version: * any run, ? one
    /// character, [abc] a class, \ escapes. Never Redis' KEYS: a SCAN, page by page.
    Keys {
        /// The glob, e.g. 'user:*'. Quote it so that the shell does not expand it.
        pattern: String,
    },
    /// Delete every key matching PATTERN, after counting them.
    ///
    /// Shows its progress on standard error when that is a terminal. Refuses a pattern of
    /// only '*' (every key of the prefix) without --yes, and says how many keys it would
    /// delete.
    DeletePattern {
        /// The glob, as `keys` takes it. Quote it.
        pattern: String,
        /// Only count the matching keys; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete even when the pattern matches every key.
        #[arg(long)]
        yes: bool,
    },
    /// Remove every key of the cache's prefix (asks on a terminal; else needs --yes).
    ///
    /// On memcached, which cannot scope a clear, this flushes the whole server.
    Clear {
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Create the cache table of a sqlite:// or postgres:// URL (Django's createcachetable).
    CreateTable {
        /// Print the SQL statements instead of running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the URL, connection, TLS, authentication, server and table; one line each.
    ///
    /// Exit 0 when nothing failed (warnings allowed), 1 when a check failed.
    Doctor,
    /// Measure get and set latency (p50, p99) and throughput from this machine.
    ///
    /// Writes OPS keys under polycache-bench:PID:* (within the prefix), one call at a time,
    /// reads them back, then deletes them.
    Bench {
        /// How many sets and how many gets.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        ops: u32,
        /// The size of each value in bytes.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=64 << 20))]
        size: u32,
    },
    /// Make every entry carrying one of TAGS a miss, in every process sharing the store.
    InvalidateTags {
        /// The tags.
        #[arg(required = true)]
        tags: Vec<String>,
    },
}

/// Parses `--ttl`: a positive number of seconds, or `never`.
fn parse_ttl(s: &str) -> Result<Expiry, String> {
    if s.eq_ignore_ascii_case("never") {
        return Ok(Expiry::Never);
    }
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e12 => {
            Ok(Expiry::After(Duration::from_secs_f64(secs)))
        }
        _ => Err(format!(
            "'{s}' is not a positive number of seconds or \"never\""
        )),
    }
}

/// What a command ends with besides success.
#[derive(Debug)]
enum Failure {
    /// Exit 2 with this one-line message.
    Usage(String),
    /// Exit 1 with this one-line message.
    Failed(String),
    /// Exit 1; the command has already said why.
    Quiet,
    /// The reader closed standard output (`polycache keys '*' | head`): stop, exit 0.
    Closed,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        match e.kind() {
            ErrorKind::Configuration => Failure::Usage(e.to_string()),
            _ => Failure::Failed(e.to_string()),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Failure::Closed;
        }
        Failure::Failed(format!("cannot write the output: {e}"))
    }
}

type Outcome = Result<(), Failure>;

/// Where a command writes, and what it may assume of the terminal.
struct Console<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    json: bool,
    /// Standard error is a terminal: progress may be drawn on it.
    progress: bool,
    /// Standard input and error are a terminal: a question may be asked.
    interactive: bool,
}

impl Console<'_> {
    /// Writes one JSON document and a newline.
    fn json(&mut self, value: &serde_json::Value) -> std::io::Result<()> {
        writeln!(self.out, "{value}")
    }

    /// Asks a yes/no question on standard error; true only for an answer starting with y.
    fn confirm(&mut self, question: &str) -> bool {
        if !self.interactive {
            return false;
        }
        let _ = write!(self.err, "{question} [y/N] ");
        let _ = self.err.flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok()
            && answer.trim_start().to_ascii_lowercase().starts_with('y')
    }
}

/// Runs the tool on `args` (the program name first, as `std::env::args_os` gives them),
/// writing to `out` and `err`; returns the exit code.
///
/// Progress and questions are shown only when the process' own standard error (and, for
/// questions, standard input) is a terminal.
pub fn run(args: Vec<OsString>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return parse_failure(e, out, err),
    };
    let mut console = Console {
        json: cli.global.json,
        progress: std::io::stderr().is_terminal(),
        interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
        out,
        err,
    };
    let outcome = dispatch(cli, &mut console);
    let _ = console.out.flush();
    match outcome {
        Ok(()) => EXIT_OK,
        Err(Failure::Usage(msg)) => {
            let _ = writeln!(console.err, "polycache: {}", one_line(&msg));
            EXIT_USAGE
        }
        Err(Failure::Closed) => EXIT_OK,
        Err(Failure::Failed(msg)) => {
            let _ = writeln!(console.err, "polycache: {}", one_line(&msg));
            EXIT_FAILURE
        }
        Err(Failure::Quiet) => EXIT_FAILURE,
    }
}

/// `--help` and `--version` go to `out` with exit 0; any other parse error is one line.
fn parse_failure(e: clap::Error, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    use clap::error::ErrorKind as Kind;
    match e.kind() {
        Kind::DisplayHelp | Kind::DisplayVersion => {
            let _ = write!(out, "{}", e.render());
            EXIT_OK
        }
        Kind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = write!(err, "{}", e.render());
            EXIT_USAGE
        }
        _ => {
            let text = e.render().to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let _ = writeln!(
                err,
                "polycache: {}; see 'polycache --help'",
                polycache::redact(first)
            );
            EXIT_USAGE
        }
    }
}

/// Messages are printed on one line.
fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Opens the cache of the global options.
fn open(global: &Global) -> Result<Cache, Failure> {
    let url = url(global)?;
    Ok(Cache::builder(url)
        .key_prefix(global.prefix.clone())
        .version(global.key_version)
        .build()?)
}

/// The URL of the global options, or the usage error that says how to give one.
fn url(global: &Global) -> Result<&str, Failure> {
    match global.url.as_deref() {
        Some(url) if !url.trim().is_empty() => Ok(url),
        _ => Err(Failure::Usage(
            "no cache URL: give --url URL or set POLYCACHE_URL".into(),
        )),
    }
}

fn dispatch(cli: Cli, c: &mut Console<'_>) -> Outcome {
    let g = &cli.global;
    match cli.command {
        Command::CreateTable { dry_run } => commands::create_table(url(g)?, dry_run, c),
        Command::Doctor => doctor::run(g, c),
        command => {
            let cache = open(g)?;
            match command {
                Command::Stats => commands::stats(&cache, c),
                Command::Get { key, raw } => commands::get(&cache, &key, raw, c),
                Command::Set {
                    key,
                    value,
                    ttl,
                    tags,
                } => commands::set(
                    &cache,
                    &key,
                    value,
                    ttl.unwrap_or(Expiry::Default),
                    &tags,
                    c,
                ),
                Command::InvalidateTags { tags } => commands::invalidate_tags(&cache, &tags, c),
                Command::Delete { key } => commands::delete(&cache, &key, c),
                Command::Ttl { key } => commands::ttl(&cache, &key, c),
                Command::Keys { pattern } => commands::keys(&cache, &pattern, c),
                Command::DeletePattern {
                    pattern,
                    dry_run,
                    yes,
                } => commands::delete_pattern(&cache, &pattern, dry_run, yes, c),
                Command::Clear { yes } => commands::clear(&cache, yes, c),
                Command::Bench { ops, size } => bench::run(&cache, ops, size, c),
                Command::CreateTable { .. } | Command::Doctor => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_parses_seconds_and_never() {
        assert_eq!(parse_ttl("never"), Ok(Expiry::Never));
        assert_eq!(
            parse_ttl("1.5"),
            Ok(Expiry::After(Duration::from_millis(1500)))
        );
        for bad in ["0", "-1", "abc", "nan", "inf", ""] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
