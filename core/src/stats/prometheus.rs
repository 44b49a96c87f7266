//! The Prometheus text page of [`render_prometheus`]: the cache-wide counters, the breaker
//! transitions and the per-operation families (counts, bytes and latency histograms).

use super::{Operation, StatsSnapshot, LATENCY_BOUNDS_NS, METRICS};

/// Renders the counters of several caches as one Prometheus text page.
///
/// Each metric family appears once, with one sample per cache. Label values are escaped as
/// the format requires (`\\`, `\"`, `\n`).
///
/// ```
/// use polycache::{render_prometheus, StatsSnapshot};
/// let (a, b) = (StatsSnapshot::default(), StatsSnapshot::default());
/// let text = render_prometheus([("a", &a), ("b", &b)]);
/// assert_eq!(text.matches("# TYPE polycache_hits_total counter").count(), 1);
/// assert!(text.contains("polycache_hits_total{cache=\"b\"} 0\n"));
/// ```
pub fn render_prometheus<'a, I>(caches: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a StatsSnapshot)>,
{
    use std::fmt::Write;
    let snapshots: Vec<(&str, &StatsSnapshot)> = caches.into_iter().collect();
    let caches: Vec<(String, [u64; 8])> = snapshots
        .iter()
        .map(|(name, s)| (escape_label(name), s.values()))
        .collect();
    let snapshots: Vec<(String, &StatsSnapshot)> = snapshots
        .into_iter()
        .map(|(name, s)| (escape_label(name), s))
        .collect();
    let mut out = String::with_capacity(256 + caches.len() * 400);
    for (i, (field, help)) in METRICS.iter().enumerate() {
        let _ = writeln!(out, "# HELP polycache_{field}_total {help}");
        let _ = writeln!(out, "# TYPE polycache_{field}_total counter");
        for (name, values) in &caches {
            let _ = writeln!(
                out,
                "polycache_{field}_total{{cache=\"{name}\"}} {}",
                values[i]
            );
        }
    }
    render_operations(&mut out, &snapshots);
    #[cfg(feature = "otel")]
    {
        let _ = writeln!(
            out,
            "# HELP polycache_otel_dropped_spans_total Finished spans the process' \
             polycache::otel::SpanQueue processors dropped: queue full or export failed."
        );
        let _ = writeln!(out, "# TYPE polycache_otel_dropped_spans_total counter");
        let _ = writeln!(
            out,
            "polycache_otel_dropped_spans_total {}",
            crate::otel::dropped_spans()
        );
    }
    out
}

fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Help text of the per-operation counter families: (name, label, help).
const OP_FAMILIES: [(&str, &str); 3] = [
    ("polycache_operations_total", "Calls per operation."),
    (
        "polycache_operation_outcomes_total",
        "Calls per operation and outcome: keys hit and missed, calls that failed \
         (error) and failed with a timeout (timeout; also counted as error).",
    ),
    (
        "polycache_operation_bytes_total",
        "Bytes of values read and written per operation.",
    ),
];

/// The totals, breaker transitions and per-operation families of [`render_prometheus`].
fn render_operations(out: &mut String, caches: &[(String, &StatsSnapshot)]) {
    use std::fmt::Write;
    type Total = (&'static str, &'static str, fn(&StatsSnapshot) -> u64);
    let totals: [Total; 3] = [
        (
            "timeouts",
            "Operations that failed with a timeout (also counted in errors).",
            |s| s.timeouts,
        ),
        ("bytes_read", "Bytes of values read.", |s| s.bytes_read),
        ("bytes_written", "Bytes of values written.", |s| {
            s.bytes_written
        }),
    ];
    for (field, help, value) in totals {
        let _ = writeln!(out, "# HELP polycache_{field}_total {help}");
        let _ = writeln!(out, "# TYPE polycache_{field}_total counter");
        for (name, s) in caches {
            let _ = writeln!(
                out,
                "polycache_{field}_total{{cache=\"{name}\"}} {}",
                value(s)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP polycache_breaker_transitions_total Circuit breaker state changes, by the state entered."
    );
    let _ = writeln!(out, "# TYPE polycache_breaker_transitions_total counter");
    for (name, s) in caches {
        for (to, n) in [
            ("open", s.breaker_opened),
            ("half_open", s.breaker_half_opened),
            ("closed", s.breaker_closed),
        ] {
            let _ = writeln!(
                out,
                "polycache_breaker_transitions_total{{cache=\"{name}\",to=\"{to}\"}} {n}"
            );
        }
    }
    // Only the operations a cache was called for: an unused one adds no series.
    let used = |s: &StatsSnapshot| -> Vec<Operation> {
        Operation::ALL
            .into_iter()
            .filter(|&op| s.op(op).calls != 0)
            .collect()
    };
    for (family, help) in OP_FAMILIES {
        let _ = writeln!(out, "# HELP {family} {help}");
        let _ = writeln!(out, "# TYPE {family} counter");
        for (name, s) in caches {
            for op in used(s) {
                let o = s.op(op);
                let labels = format!("cache=\"{name}\",op=\"{}\"", op.name());
                let samples: &[(&str, u64)] = match family {
                    "polycache_operations_total" => &[("", o.calls)],
                    "polycache_operation_outcomes_total" => &[
                        (",outcome=\"hit\"", o.hits),
                        (",outcome=\"miss\"", o.misses),
                        (",outcome=\"error\"", o.errors),
                        (",outcome=\"timeout\"", o.timeouts),
                    ],
                    _ => &[
                        (",direction=\"read\"", o.bytes_read),
                        (",direction=\"written\"", o.bytes_written),
                    ],
                };
                for (extra, n) in samples {
                    let _ = writeln!(out, "{family}{{{labels}{extra}}} {n}");
                }
            }
        }
    }
    if !caches.iter().any(|(_, s)| s.latency_histograms) {
        return;
    }
    let family = "polycache_operation_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {family} Latency of cache operations, from the call to its answer."
    );
    let _ = writeln!(out, "# TYPE {family} histogram");
    for (name, s) in caches.iter().filter(|(_, s)| s.latency_histograms) {
        for op in used(s) {
            let o = s.op(op);
            let labels = format!("cache=\"{name}\",op=\"{}\"", op.name());
            let cumulative = o.cumulative_buckets();
            for (bound, n) in LATENCY_BOUNDS_NS.iter().zip(cumulative) {
                let le = *bound as f64 / 1e9;
                let _ = writeln!(out, "{family}_bucket{{{labels},le=\"{le}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "{family}_bucket{{{labels},le=\"+Inf\"}} {}",
                o.latency_count
            );
            let _ = writeln!(
                out,
                "{family}_sum{{{labels}}} {}",
                o.latency_sum_ns as f64 / 1e9
            );
            let _ = writeln!(out, "{family}_count{{{labels}}} {}", o.latency_count);
        }
    }
}
