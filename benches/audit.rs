//! Cost of `AuditLog::record` for a typical statement, the price every
//! forwarded statement pays before it reaches the upstream.
//!
//! Group fsync (`Interval(100ms)`), so this measures encoding, hashing and
//! one `write(2)`, not the disk's fsync latency.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use jitgate::audit::{AuditEvent, AuditLog};
use jitgate::config::{AuditConfig, FsyncPolicy};

fn record_statement(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _in_runtime = runtime.enter();
    // On the target directory's disk rather than a tmpfs /tmp.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let log = AuditLog::open(&AuditConfig {
        path: dir.path().join("audit.log"),
        fsync: FsyncPolicy::Interval(Duration::from_millis(100)),
    })
    .expect("open audit log");

    let statement = "SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id \
                     WHERE o.created_at > now() - interval '1 day' AND o.status = 'pending' ORDER BY o.id LIMIT 100";
    let mut seq = 0u64;
    c.bench_function("audit_record_statement", |b| {
        b.iter(|| {
            seq += 1;
            log.record(black_box(&AuditEvent {
                session: Some("7f3a9c1e"),
                identity: Some("alice@example.com"),
                grant: Some("g-01HZX3K9Q2"),
                target: Some("prod-pg"),
                level: Some("read"),
                client_addr: Some("10.0.4.17:51234"),
                seq: Some(seq),
                statement: Some(statement),
                kind: Some("read"),
                ..AuditEvent::new("statement")
            }))
            .expect("record")
        })
    });
}

criterion_group!(benches, record_statement);
criterion_main!(benches);
