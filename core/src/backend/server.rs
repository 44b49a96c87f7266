//! [`ServerInfo`]: what a backend's server says about itself, for diagnostics
//! (`polycache doctor` and `polycache stats`), never on an operation's path.

use std::time::{Duration, SystemTime};

/// What [`crate::Cache::server_info`] found out about the server (or embedded engine)
/// behind a cache: its software and version, its clock, whether the connection is
/// encrypted, a few figures, and the problems it saw (a cache table of the wrong shape).
///
/// Plain data: `Send + Sync`.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerInfo {
    /// The server software: `"redis"`, `"postgresql"`, `"sqlite"`.
    pub software: String,
    /// Its version as it reports it (`"7.2.4"`).
    pub version: Option<String>,
    /// The server's clock, read during the call, when the server tells it (Redis `TIME`,
    /// PostgreSQL `clock_timestamp()`).
    pub time: Option<SystemTime>,
    /// How long the call that read [`ServerInfo::time`] took: the uncertainty of a clock
    /// comparison is half of it.
    pub round_trip: Option<Duration>,
    /// Whether the connection that asked is encrypted, when the server tells it.
    pub tls: Option<bool>,
    /// Figures for people, in the server's own words (`used_memory_human`, `keyspace_hits`,
    /// `journal_mode`, …), in a stable order.
    pub details: Vec<(String, String)>,
    /// Problems found, one sentence each (a missing column, a missing unique index, …).
    pub problems: Vec<String>,
}

impl ServerInfo {
    /// An empty answer for `software`.
    pub fn new(software: impl Into<String>) -> ServerInfo {
        ServerInfo {
            software: software.into(),
            ..ServerInfo::default()
        }
    }

    /// Records the server's clock and how long the call that read it took.
    #[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
    pub(crate) fn set_time(&mut self, server: SystemTime, took: Duration) {
        self.time = Some(server);
        self.round_trip = Some(took);
    }

    /// The server's clock minus this machine's at the middle of the round trip, in
    /// milliseconds; `None` without a server time. `sent` must be when the call began.
    pub fn clock_skew_ms(&self, sent: SystemTime) -> Option<i64> {
        let server = self.time?;
        let middle = sent + self.round_trip.unwrap_or_default() / 2;
        Some(match server.duration_since(middle) {
            Ok(ahead) => i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX),
            Err(behind) => -i64::try_from(behind.duration().as_millis()).unwrap_or(i64::MAX),
        })
    }
}

/// One expected column of a SQL cache table: name, type as the engine spells it, NOT NULL.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) type Column = (&'static str, &'static str, bool);

/// Compares a table's columns `(name, type, not null)` with what the cache needs; one
/// sentence per problem.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn column_problems(
    table: &str,
    expected: &[Column],
    found: &[(String, String, bool)],
) -> Vec<String> {
    if found.is_empty() {
        return vec![format!(
            "the table {table} does not exist: it is created on first use, or run \
             `polycache create-table` (Django: createcachetable)"
        )];
    }
    let mut problems = Vec::new();
    for &(name, ty, not_null) in expected {
        match found.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name)) {
            None => problems.push(format!(
                "the table {table} has no column {name}: it was not made by polycache; \
                 use another table (?table=) or recreate it"
            )),
            Some((_, t, _)) if !t.eq_ignore_ascii_case(ty) => problems.push(format!(
                "column {name} of {table} is {t}, polycache needs {ty}"
            )),
            Some((_, _, nn)) if *nn != not_null => problems.push(format!(
                "column {name} of {table} is {}, polycache needs {}",
                if *nn { "NOT NULL" } else { "nullable" },
                if not_null { "NOT NULL" } else { "nullable" }
            )),
            Some(_) => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_judged_at_the_middle_of_the_round_trip() {
        let sent = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut info = ServerInfo::new("x");
        assert_eq!(info.clock_skew_ms(sent), None);
        info.set_time(
            sent + Duration::from_millis(5050),
            Duration::from_millis(100),
        );
        assert_eq!(info.clock_skew_ms(sent), Some(5000));
        info.set_time(sent, Duration::from_millis(100));
        assert_eq!(info.clock_skew_ms(sent), Some(-50));
    }

    #[test]
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    fn columns_are_compared_by_name_type_and_nullability() {
        let expected = [("key", "BLOB", true), ("expires_at", "INTEGER", false)];
        let good = [
            ("key".to_owned(), "blob".to_owned(), true),
            ("expires_at".to_owned(), "INTEGER".to_owned(), false),
        ];
        assert!(column_problems("t", &expected, &good).is_empty());
        let bad = [("key".to_owned(), "TEXT".to_owned(), true)];
        assert_eq!(
            column_problems("t", &expected, &bad),
            [
                "column key of t is TEXT, polycache needs BLOB",
                "the table t has no column expires_at: it was not made by polycache; use \
                 another table (?table=) or recreate it"
            ]
        );
        assert!(column_problems("t", &expected, &[])[0].contains("does not exist"));
    }
}
