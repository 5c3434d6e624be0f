//! Prometheus metrics: one registry for the process, and the metric names.
//!
//! Label values are bounded by construction: targets and levels come from
//! the config, kinds and outcomes from small fixed sets. No identity, session
//! id or statement text is ever a label. The hot path holds cloned handles
//! (an `Arc` of an atomic) so counting a statement is one atomic add.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLevel {
    pub target: String,
    pub level: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetOutcome {
    pub target: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatementLabels {
    pub target: String,
    pub kind: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyLabel {
    pub proxy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~52 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

fn lag_histogram() -> Histogram {
    // 100 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub sessions_active: Family<TargetLevel, Gauge>,
    pub sessions_total: Family<TargetOutcome, Counter>,
    pub statements_total: Family<StatementLabels, Counter>,
    pub statement_duration_seconds: HistogramFamily<TargetLabel>,
    pub grants_active: Family<TargetLevel, Gauge>,
    pub requests_total: Family<StateLabel, Counter>,
    pub grant_end_lag_seconds: Histogram,
    pub auth_failures_total: Family<ReasonLabel, Counter>,
    pub upstream_connect_seconds: HistogramFamily<TargetLabel>,
    pub bytes_total: Family<DirectionLabel, Counter>,
    pub audit_write_seconds: Histogram,
    pub audit_errors_total: Counter,
    /// The fleet's store, per proxy (no samples with the file store).
    pub store_up: Family<ProxyLabel, Gauge>,
    pub store_seconds_since_contact: Family<ProxyLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub store_event_lag: Family<ProxyLabel, Gauge>,
    config_reloads_total: Family<ResultLabel, Counter>,
    config_last_reload_successful: Gauge,
    process_resident_memory_bytes: Gauge,
    process_open_fds: Gauge,
    /// A counter (exposed as `process_cpu_seconds_total`, as Prometheus's
    /// own clients name it), advanced to what /proc says at each scrape.
    process_cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Serialises scrapes' reading of /proc, so two cannot both add the same delta.
    process_refresh: std::sync::Mutex<()>,
    known_targets: std::sync::RwLock<std::collections::HashSet<String>>,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            sessions_active: Family::default(),
            sessions_total: Family::default(),
            statements_total: Family::default(),
            statement_duration_seconds: Family::new_with_constructor(latency_histogram),
            grants_active: Family::default(),
            requests_total: Family::default(),
            grant_end_lag_seconds: lag_histogram(),
            auth_failures_total: Family::default(),
            upstream_connect_seconds: Family::new_with_constructor(latency_histogram),
            bytes_total: Family::default(),
            audit_write_seconds: latency_histogram(),
            audit_errors_total: Counter::default(),
            store_up: Family::default(),
            store_seconds_since_contact: Family::default(),
            store_event_lag: Family::default(),
            config_reloads_total: Family::default(),
            config_last_reload_successful: Gauge::default(),
            process_resident_memory_bytes: Gauge::default(),
            process_open_fds: Gauge::default(),
            process_cpu_seconds: Counter::default(),
            process_refresh: std::sync::Mutex::new(()),
            known_targets: Default::default(),
            registry: Registry::default(),
        };
        r.register(
            "jitgate_build",
            "jitgate version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register(
            "jitgate_sessions_active",
            "Live proxied sessions",
            m.sessions_active.clone(),
        );
        r.register(
            "jitgate_sessions",
            "Session attempts and how they ended (started, refused_no_grant, auth_failed, killed_expired, killed_revoked, killed, closed, upstream_failed, refused_read_account)",
            m.sessions_total.clone(),
        );
        r.register(
            "jitgate_statements",
            "Statements by kind and outcome (ok, error, refused)",
            m.statements_total.clone(),
        );
        r.register(
            "jitgate_statement_duration_seconds",
            "Time from forwarding a statement to the server's answer",
            m.statement_duration_seconds.clone(),
        );
        r.register(
            "jitgate_grants_active",
            "Active grants",
            m.grants_active.clone(),
        );
        r.register(
            "jitgate_requests",
            "Access requests by state reached",
            m.requests_total.clone(),
        );
        r.register(
            "jitgate_grant_end_lag_seconds",
            "From a grant's deadline or revoke to one of its sessions being closed",
            m.grant_end_lag_seconds.clone(),
        );
        r.register(
            "jitgate_auth_failures",
            "Failed client authentications by reason",
            m.auth_failures_total.clone(),
        );
        r.register(
            "jitgate_upstream_connect_seconds",
            "Time to connect and log in upstream",
            m.upstream_connect_seconds.clone(),
        );
        r.register(
            "jitgate_bytes",
            "Bytes relayed by direction",
            m.bytes_total.clone(),
        );
        r.register(
            "jitgate_audit_write_seconds",
            "Time to write audit records: one write(2), and its fsync with fsync = \"always\" (records sealed together share one)",
            m.audit_write_seconds.clone(),
        );
        r.register(
            "jitgate_audit_errors",
            "Audit log write or fsync failures",
            m.audit_errors_total.clone(),
        );
        r.register(
            "jitgate_store_up",
            "1 while the fleet's PostgreSQL store answers and this proxy serves; 0 once it failed closed or the store stopped answering",
            m.store_up.clone(),
        );
        r.register(
            "jitgate_store_seconds_since_contact",
            "Seconds since the fleet's store last answered this proxy",
            m.store_seconds_since_contact.clone(),
        );
        r.register(
            "jitgate_store_event_lag",
            "Changes in the fleet's store that this proxy had not applied at its last heartbeat",
            m.store_event_lag.clone(),
        );
        // The config in force at start loaded.
        m.config_last_reload_successful.set(1);
        r.register(
            "jitgate_config_reloads",
            "Config reloads (SIGHUP, jitgate reload), by result: ok, or failed (the config in force stayed)",
            m.config_reloads_total.clone(),
        );
        r.register(
            "jitgate_config_last_reload_successful",
            "1 unless the last config reload was refused (0 until a reload succeeds again)",
            m.config_last_reload_successful.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            m.process_resident_memory_bytes.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors",
            m.process_open_fds.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent, in seconds",
            m.process_cpu_seconds.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The registry in OpenMetrics text format (what `GET /metrics` serves).
    pub fn encode(&self) -> String {
        self.refresh_process();
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn refresh_process(&self) {
        let _one_at_a_time = self.process_refresh.lock();
        let page = 4096i64;
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
            && let Some(rss) = statm
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<i64>().ok())
        {
            self.process_resident_memory_bytes.set(rss * page);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.process_open_fds.set(fds.count() as i64);
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some(after) = stat.rsplit_once(") ").map(|(_, a)| a)
        {
            let f: Vec<&str> = after.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of /proc/self/stat, in clock ticks.
            if let (Some(u), Some(s)) = (f.get(11), f.get(12))
                && let (Ok(u), Ok(s)) = (u.parse::<f64>(), s.parse::<f64>())
            {
                let now = (u + s) / 100.0;
                let before = self.process_cpu_seconds.get();
                if now > before {
                    self.process_cpu_seconds.inc_by(now - before);
                }
            }
        }
    }

    pub fn target_level(target: &str, level: &str) -> TargetLevel {
        TargetLevel {
            target: target.to_owned(),
            level: level.to_owned(),
        }
    }

    /// Count a session attempt. `target` may be whatever the client asked
    /// for, so names that are not configured targets count as "unknown":
    /// a client must not be able to create label values.
    pub fn session_outcome(&self, target: &str, outcome: &'static str) {
        let known = self
            .known_targets
            .read()
            .is_ok_and(|known| known.contains(target));
        self.sessions_total
            .get_or_create(&TargetOutcome {
                target: if known { target } else { "unknown" }.to_owned(),
                outcome,
            })
            .inc();
    }

    /// The configured target names (see [`Metrics::session_outcome`]).
    /// A config reload ended with `result` ("ok" or "failed").
    pub fn config_reload(&self, result: &'static str) {
        self.config_reloads_total
            .get_or_create(&ResultLabel { result })
            .inc();
        self.config_last_reload_successful
            .set(i64::from(result == "ok"));
    }

    pub fn add_known_targets<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        if let Ok(mut known) = self.known_targets.write() {
            known.extend(names.into_iter().map(str::to_owned));
        }
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures_total
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// An audit record that could not even be sealed (the log is broken).
    pub fn audit_error(&self) {
        self.audit_errors_total.inc();
    }

    pub fn observe_audit_write(&self, took: Duration, ok: bool) {
        self.audit_write_seconds.observe(took.as_secs_f64());
        if !ok {
            self.audit_errors_total.inc();
        }
    }
}

/// Per-session handles, so the relay counts without hashing labels.
pub struct SessionMetrics {
    target: String,
    pub bytes_up: Counter,
    pub bytes_down: Counter,
    pub duration: Histogram,
    /// [kind][outcome], created on first use.
    statements: std::sync::Mutex<Vec<((&'static str, &'static str), Counter)>>,
}

impl SessionMetrics {
    pub fn new(target: &str) -> SessionMetrics {
        let m = &*METRICS;
        SessionMetrics {
            target: target.to_owned(),
            bytes_up: m.bytes_total.get_or_create_owned(&DirectionLabel {
                direction: "client_to_upstream",
            }),
            bytes_down: m.bytes_total.get_or_create_owned(&DirectionLabel {
                direction: "upstream_to_client",
            }),
            duration: m
                .statement_duration_seconds
                .get_or_create_owned(&TargetLabel {
                    target: target.to_owned(),
                }),
            statements: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn statement(&self, kind: &'static str, outcome: &'static str) {
        let Ok(mut cache) = self.statements.lock() else {
            return;
        };
        if let Some((_, c)) = cache.iter().find(|(k, _)| *k == (kind, outcome)) {
            c.inc();
            return;
        }
        let c = METRICS
            .statements_total
            .get_or_create_owned(&StatementLabels {
                target: self.target.clone(),
                kind,
                outcome,
            });
        c.inc();
        cache.push(((kind, outcome), c));
    }
}
