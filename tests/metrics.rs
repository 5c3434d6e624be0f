//! `GET /metrics` on the admin listener: it must be text that Prometheus
//! parses (OpenMetrics), and its counters must follow what sessions do.
//!
//! Each test runs a throwaway PostgreSQL and a jitgate in front of it (see
//! `support`), drives real clients through the proxy, and reads the metrics
//! with a small strict parser of the exposition format written here, so a
//! malformed line fails the test rather than being skipped.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use support::*;

// ---- a strict reader of the OpenMetrics text format --------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    /// Family name → declared type.
    types: HashMap<String, String>,
    helps: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Parse the whole text; any line that does not follow the format is an error naming it.
    fn parse(text: &str) -> Result<Exposition, String> {
        let body = text
            .strip_suffix("# EOF\n")
            .or_else(|| text.strip_suffix("# EOF"))
            .ok_or("the exposition does not end with `# EOF`")?;
        let mut exp = Exposition::default();
        let mut current_family: Option<String> = None;
        for (i, line) in body.lines().enumerate() {
            let at = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
            if line.is_empty() {
                return Err(at("empty line"));
            }
            if let Some(comment) = line.strip_prefix("# ") {
                let mut parts = comment.splitn(3, ' ');
                let keyword = parts.next().unwrap_or("");
                let family = parts
                    .next()
                    .ok_or_else(|| at("comment without a metric name"))?;
                let rest = parts.next().unwrap_or("");
                if !valid_metric_name(family) {
                    return Err(at("invalid metric name"));
                }
                match keyword {
                    "TYPE" => {
                        const TYPES: [&str; 8] = [
                            "counter",
                            "gauge",
                            "histogram",
                            "gaugehistogram",
                            "stateset",
                            "info",
                            "summary",
                            "unknown",
                        ];
                        if !TYPES.contains(&rest) {
                            return Err(at("unknown metric type"));
                        }
                        if exp
                            .types
                            .insert(family.to_owned(), rest.to_owned())
                            .is_some()
                        {
                            return Err(at("second TYPE for the same family"));
                        }
                        current_family = Some(family.to_owned());
                    }
                    "HELP" => {
                        if exp
                            .helps
                            .insert(family.to_owned(), rest.to_owned())
                            .is_some()
                        {
                            return Err(at("second HELP for the same family"));
                        }
                    }
                    "UNIT" => {}
                    _ => return Err(at("a comment that is not HELP, TYPE, UNIT or EOF")),
                }
                continue;
            }
            if line.starts_with('#') {
                return Err(at("malformed comment (or `# EOF` before the end)"));
            }
            let sample = parse_sample(line).map_err(|why| at(&why))?;
            let family = current_family
                .as_deref()
                .ok_or_else(|| at("sample before any TYPE line"))?;
            let kind = &exp.types[family];
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total", "_created"],
                "histogram" | "gaugehistogram" => {
                    &["_bucket", "_sum", "_count", "_created", "_gcount", "_gsum"]
                }
                "summary" => &["", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            let belongs = suffixes
                .iter()
                .any(|suffix| sample.name == format!("{family}{suffix}"));
            if !belongs {
                return Err(at(&format!(
                    "sample is not part of the {kind} family {family}"
                )));
            }
            if exp
                .samples
                .iter()
                .any(|s| s.name == sample.name && s.labels == sample.labels)
            {
                return Err(at("duplicate sample"));
            }
            exp.samples.push(sample);
        }
        exp.check_histograms()?;
        Ok(exp)
    }

    /// Buckets are cumulative, end with `+Inf`, and `+Inf` equals `_count`.
    fn check_histograms(&self) -> Result<(), String> {
        for (family, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            let bucket_name = format!("{family}_bucket");
            let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for s in self.samples.iter().filter(|s| s.name == bucket_name) {
                let mut key = s.labels.clone();
                let le = key
                    .remove("le")
                    .ok_or_else(|| format!("{bucket_name} sample without `le`"))?;
                let le = parse_value(&le).ok_or_else(|| format!("{bucket_name}: le={le:?}"))?;
                series.entry(key).or_default().push((le, s.value));
            }
            for (labels, buckets) in series {
                let mut last = (f64::NEG_INFINITY, 0.0);
                for &(le, count) in &buckets {
                    if le <= last.0 || count < last.1 {
                        return Err(format!(
                            "{family}{labels:?}: buckets not cumulative: {buckets:?}"
                        ));
                    }
                    last = (le, count);
                }
                if last.0 != f64::INFINITY {
                    return Err(format!("{family}{labels:?}: no +Inf bucket"));
                }
                let count = self.get(&format!("{family}_count"), &labels);
                if count != Some(last.1) {
                    return Err(format!(
                        "{family}{labels:?}: +Inf bucket {} but _count {count:?}",
                        last.1
                    ));
                }
            }
        }
        Ok(())
    }

    /// The sample with exactly these labels.
    fn get(&self, name: &str, labels: &BTreeMap<String, String>) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && &s.labels == labels)
            .map(|s| s.value)
    }

    /// The sum of the samples of `name` whose labels include `matching` (0 if none).
    fn sum(&self, name: &str, matching: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && matching
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if v
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            v.parse().ok()
        }
        _ => None,
    }
}

/// `name{label="value",…} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or("no value after the metric name")?;
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err("invalid metric name".to_owned());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut s = after_brace;
        loop {
            if let Some(after) = s.strip_prefix('}') {
                s = after;
                break;
            }
            let eq = s.find('=').ok_or("label without `=`")?;
            let label = &s[..eq];
            if !valid_label_name(label) {
                return Err(format!("invalid label name {label:?}"));
            }
            s = s[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = s.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err("bad escape in a label value".to_owned()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".to_owned()),
                }
            };
            if labels.insert(label.to_owned(), value).is_some() {
                return Err(format!("label {label:?} twice"));
            }
            s = &s[end + 1..];
            if let Some(after) = s.strip_prefix(',') {
                s = after;
            } else if !s.starts_with('}') {
                return Err("expected `,` or `}` after a label".to_owned());
            }
        }
        rest = s;
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or("expected one space before the value")?;
    let mut fields = rest.split(' ');
    let value_text = fields.next().unwrap_or("");
    let value =
        parse_value(value_text).ok_or_else(|| format!("value {value_text:?} is not a number"))?;
    if let Some(ts) = fields.next()
        && parse_value(ts).is_none()
    {
        return Err(format!("timestamp {ts:?} is not a number"));
    }
    if fields.next().is_some() {
        return Err("trailing fields after the value".to_owned());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

// ---- helpers ------------------------------------------------------------------------

async fn scrape(jg: &Jitgate) -> (String, String) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let resp = http
        .get(format!("{}/metrics", jg.admin_url()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}\n--- jitgate log\n{}", jg.log()));
    assert_eq!(resp.status().as_u16(), 200, "GET /metrics status");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (content_type, resp.text().await.expect("metrics body"))
}

async fn metrics(jg: &Jitgate) -> Exposition {
    let (_, text) = scrape(jg).await;
    Exposition::parse(&text)
        .unwrap_or_else(|e| panic!("GET /metrics is not valid: {e}\n---\n{text}"))
}

/// Wait until `check` holds for a fresh scrape (sessions end asynchronously).
async fn metrics_until(
    jg: &Jitgate,
    what: &str,
    check: impl Fn(&Exposition) -> bool,
) -> Exposition {
    let check = &check;
    eventually(Duration::from_secs(10), what, || async move {
        let m = metrics(jg).await;
        check(&m).then_some(m)
    })
    .await
}

const SESSIONS: &str = "jitgate_sessions_total";
const STATEMENTS: &str = "jitgate_statements_total";

// ---- tests ----------------------------------------------------------------------------

#[tokio::test]
async fn metrics_endpoint_serves_valid_openmetrics_text() {
    let pg = PgServer::start().await;
    let jg = Jitgate::start(&pg, JitgateOptions::default()).await;
    jg.grant("alice", PG_TARGET, "read", "10m").await;
    jg.psql(&["-c", "SELECT 1"]).await.assert_ok(&jg);
    // prometheus-client serves a labelled family only once it has a sample:
    // give auth failures one.
    jg.psql_as(
        &Login::new("alice", "not-the-secret"),
        &["-c", "SELECT 1"],
        None,
    )
    .await
    .assert_failed();

    let (content_type, text) = scrape(&jg).await;
    assert!(
        content_type.starts_with("application/openmetrics-text")
            || content_type.starts_with("text/plain"),
        "unexpected content type {content_type:?}"
    );
    let exp = Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));

    let expected = [
        ("jitgate_sessions_active", "gauge"),
        ("jitgate_sessions", "counter"),
        ("jitgate_statements", "counter"),
        ("jitgate_statement_duration_seconds", "histogram"),
        ("jitgate_grants_active", "gauge"),
        ("jitgate_grant_end_lag_seconds", "histogram"),
        ("jitgate_auth_failures", "counter"),
        ("jitgate_upstream_connect_seconds", "histogram"),
        ("jitgate_bytes", "counter"),
        ("jitgate_audit_write_seconds", "histogram"),
        ("jitgate_audit_errors", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_cpu_seconds", "counter"),
    ];
    for (family, kind) in expected {
        assert_eq!(
            exp.types.get(family).map(String::as_str),
            Some(kind),
            "family {family} should be a {kind}; types served: {:?}",
            exp.types
        );
        assert!(
            exp.helps.get(family).is_some_and(|h| !h.is_empty()),
            "family {family} has no HELP text"
        );
    }
    // This jitgate has no policies, so no access request can exist yet.
    if let Some(kind) = exp.types.get("jitgate_requests") {
        assert_eq!(kind, "counter");
    }
    assert!(exp.sum("process_resident_memory_bytes", &[]) > 1_000_000.0);
    assert!(exp.sum("process_open_fds", &[]) >= 3.0);
    assert!(exp.sum("process_cpu_seconds_total", &[]) > 0.0);
    assert_eq!(exp.sum("jitgate_audit_errors_total", &[]), 0.0);

    // Label values stay bounded: no identity, session id or statement text.
    for s in &exp.samples {
        for (label, value) in &s.labels {
            assert!(
                !value.contains("alice") && !value.contains("SELECT"),
                "{}: label {label}={value:?} leaks an identity or a statement",
                s.name
            );
            assert!(
                !["identity", "user", "session", "statement", "query"].contains(&label.as_str()),
                "{}: unbounded label {label}",
                s.name
            );
        }
    }
}

#[test]
fn the_parser_rejects_what_prometheus_would() {
    let ok = "# HELP a_total x\n# TYPE a counter\na_total{k=\"v\"} 1\n# EOF\n";
    assert!(Exposition::parse(ok).is_ok());
    for bad in [
        "# TYPE a counter\na_total 1\n",                   // no # EOF
        "# TYPE a counter\na_total one\n# EOF\n",          // value not a number
        "# TYPE a counter\na_total{k=v} 1\n# EOF\n",       // unquoted label value
        "# TYPE a counter\na 1\n# EOF\n",                  // counter sample without _total
        "a_total 1\n# EOF\n",                              // no TYPE
        "# TYPE a counter\na_total 1\na_total 2\n# EOF\n", // duplicate
        "# TYPE a frobnicator\na 1\n# EOF\n",              // unknown type
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n# EOF\n", // not cumulative
    ] {
        assert!(Exposition::parse(bad).is_err(), "accepted: {bad:?}");
    }
}

#[tokio::test]
async fn counters_move_when_sessions_run() {
    let pg = PgServer::start().await;
    let jg = Jitgate::start(&pg, JitgateOptions::default()).await;
    let target = [("target", PG_TARGET)];
    let before = metrics(&jg).await;
    assert_eq!(before.sum(SESSIONS, &[("outcome", "started")]), 0.0);

    // No grant yet: refused.
    jg.psql(&["-c", "SELECT 1"]).await.assert_failed();
    let grant = jg.grant("alice", PG_TARGET, "read", "10m").await;
    let m = metrics(&jg).await;
    assert_eq!(
        m.sum(
            SESSIONS,
            &[("target", PG_TARGET), ("outcome", "refused_no_grant")]
        ),
        1.0
    );
    assert_eq!(
        m.sum(
            "jitgate_grants_active",
            &[("target", PG_TARGET), ("level", "read")]
        ),
        1.0
    );

    // A wrong secret.
    jg.psql_as(
        &Login::new("alice", "not-the-secret"),
        &["-c", "SELECT 1"],
        None,
    )
    .await
    .assert_failed();
    let m = metrics(&jg).await;
    assert_eq!(
        m.sum("jitgate_auth_failures_total", &[("reason", "bad_secret")]),
        1.0
    );
    assert_eq!(
        m.sum(
            SESSIONS,
            &[("target", PG_TARGET), ("outcome", "auth_failed")]
        ),
        1.0
    );

    // One psql session: two reads, then a write that the read level refuses.
    let run = jg
        .psql(&[
            "-c",
            "SELECT 1",
            "-c",
            "SELECT 2",
            "-c",
            "CREATE TABLE zz (x int)",
        ])
        .await;
    assert!(
        run.stderr.contains("25006") || run.stderr.contains("read-only"),
        "{run:?}"
    );
    let m = metrics_until(&jg, "the psql session to be counted as closed", |m| {
        m.sum(SESSIONS, &[("target", PG_TARGET), ("outcome", "closed")]) >= 1.0
    })
    .await;
    assert_eq!(
        m.sum(SESSIONS, &[("target", PG_TARGET), ("outcome", "started")]),
        1.0
    );
    assert_eq!(m.sum("jitgate_sessions_active", &target), 0.0);
    assert!(
        m.sum(
            STATEMENTS,
            &[("target", PG_TARGET), ("kind", "read"), ("outcome", "ok")]
        ) >= 2.0,
        "two SELECTs ran: {:?}",
        m.samples
            .iter()
            .filter(|s| s.name == STATEMENTS)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        m.sum(
            STATEMENTS,
            &[
                ("target", PG_TARGET),
                ("kind", "ddl"),
                ("outcome", "refused")
            ]
        ),
        1.0
    );
    assert!(m.sum("jitgate_statement_duration_seconds_count", &target) >= 2.0);
    assert!(m.sum("jitgate_upstream_connect_seconds_count", &target) >= 1.0);
    for direction in ["client_to_upstream", "upstream_to_client"] {
        assert!(
            m.sum("jitgate_bytes_total", &[("direction", direction)])
                > before.sum("jitgate_bytes_total", &[("direction", direction)]),
            "bytes {direction} did not move"
        );
    }
    assert!(
        m.sum("jitgate_audit_write_seconds_count", &[])
            > before.sum("jitgate_audit_write_seconds_count", &[]) + 4.0,
        "login, session start/end and statements are audited"
    );

    // A live session, then a revoke: the session is killed and the end lag observed.
    let client = jg.connect_ok(&Login::alice()).await;
    client
        .simple_query("SELECT 1")
        .await
        .expect("query through jitgate");
    let live = metrics(&jg).await;
    assert_eq!(
        live.sum(
            "jitgate_sessions_active",
            &[("target", PG_TARGET), ("level", "read")]
        ),
        1.0
    );
    jg.revoke(&id_of(&grant)).await;
    let m = metrics_until(&jg, "the revoked session to be counted", |m| {
        m.sum(
            SESSIONS,
            &[("target", PG_TARGET), ("outcome", "killed_revoked")],
        ) >= 1.0
    })
    .await;
    assert_eq!(m.sum("jitgate_grant_end_lag_seconds_count", &[]), 1.0);
    assert!(
        m.sum("jitgate_grant_end_lag_seconds_sum", &[]) < 1.0,
        "a revoke cuts its session within a second"
    );
    assert_eq!(m.sum("jitgate_sessions_active", &target), 0.0);
    assert_eq!(m.sum("jitgate_grants_active", &target), 0.0);
    assert_eq!(m.sum("jitgate_audit_errors_total", &[]), 0.0);
}
