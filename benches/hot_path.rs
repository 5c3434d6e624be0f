//! The per-message costs on jitgate's relay path, each on its own: cutting a
//! byte stream into PostgreSQL frames, and classifying a statement's text.
//! (Writing its audit record is `benches/audit.rs`.)
//!
//! These are the pieces the relay pays for every message or statement, so a
//! regression here shows up as lost throughput in `benches/overhead.sh`.
//! Run with `cargo bench --bench hot_path`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use jitgate::fuzzing::{FrameReader, split_frames};
use jitgate::sql::{self, Dialect, StatementKind};
use tokio::io::AsyncWriteExt;

/// The relay's default cap on one message (`limits.max_message_bytes`).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// What pgbench `-S -M simple` sends for one transaction.
const SIMPLE_SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 47113;";

/// The query psql runs for `\dt`: a typical ~500-character catalog query.
const PSQL_CATALOG_QUERY: &str = r#"SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r','p','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;"#;

/// How many frames the framing benches cut per iteration.
const FRAMES: usize = 1000;

fn tagged(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
}

fn cstr(body: &mut Vec<u8>, s: &str) {
    body.extend_from_slice(s.as_bytes());
    body.push(0);
}

/// `FRAMES` frontend messages as a client sends them: simple Queries mixed
/// with extended-protocol Parse/Bind/Describe/Execute/Sync batches, as
/// pgbench `-M simple` and `-M extended` would.
fn mixed_frontend_stream() -> Vec<u8> {
    let mut out = Vec::new();
    let mut frames = 0;
    let mut aid = 1u32;
    while frames < FRAMES {
        let mut query = Vec::new();
        cstr(
            &mut query,
            &format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"),
        );
        tagged(&mut out, b'Q', &query);

        let mut parse = Vec::new();
        cstr(&mut parse, "");
        cstr(
            &mut parse,
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
        );
        parse.extend_from_slice(&1u16.to_be_bytes());
        parse.extend_from_slice(&23u32.to_be_bytes());
        tagged(&mut out, b'P', &parse);

        let mut bind = Vec::new();
        cstr(&mut bind, "");
        cstr(&mut bind, "");
        bind.extend_from_slice(&0u16.to_be_bytes());
        bind.extend_from_slice(&1u16.to_be_bytes());
        let value = aid.to_string();
        bind.extend_from_slice(&(value.len() as u32).to_be_bytes());
        bind.extend_from_slice(value.as_bytes());
        bind.extend_from_slice(&0u16.to_be_bytes());
        tagged(&mut out, b'B', &bind);

        tagged(&mut out, b'D', b"P\0");
        tagged(&mut out, b'E', b"\0\0\0\0\0");
        tagged(&mut out, b'S', b"");
        frames += 6;
        aid += 7919;
    }
    // Cut to exactly FRAMES whole frames.
    let keep: usize = split_frames(&out, MAX_MESSAGE_BYTES)
        .expect("well-formed stream")
        .iter()
        .take(FRAMES)
        .map(|f| f.len())
        .sum();
    out.truncate(keep);
    out
}

fn framing(c: &mut Criterion) {
    let stream = mixed_frontend_stream();
    assert_eq!(
        split_frames(&stream, MAX_MESSAGE_BYTES).unwrap().len(),
        FRAMES
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let mut group = c.benchmark_group("framing_1000_mixed_frames");
    group.throughput(Throughput::Elements(FRAMES as u64));

    group.bench_function("split_frames", |b| {
        b.iter(|| {
            let frames = split_frames(black_box(&stream), MAX_MESSAGE_BYTES).unwrap();
            black_box(frames.len())
        })
    });

    // The relay's reader over an in-memory stream: buffer management and
    // `Frame` creation without any socket.
    group.bench_function("frame_reader_over_slice", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut reader = FrameReader::new(black_box(&stream[..]), MAX_MESSAGE_BYTES);
                let mut n = 0;
                while let Some(frame) = reader.next().await.unwrap() {
                    black_box(frame.tag());
                    n += 1;
                }
                assert_eq!(n, FRAMES);
            })
        })
    });

    // The same through a tokio duplex pipe written in 8 KiB pieces, so frames
    // straddle reads as they do on a socket.
    group.bench_function("frame_reader_over_duplex", |b| {
        b.iter_batched(
            || tokio::io::duplex(64 * 1024),
            |(mut writer, reader)| {
                runtime.block_on(async {
                    let stream = &stream;
                    let write = async move {
                        for chunk in stream.chunks(8 * 1024) {
                            writer.write_all(chunk).await.unwrap();
                        }
                        drop(writer);
                    };
                    let read = async {
                        let mut reader = FrameReader::new(reader, MAX_MESSAGE_BYTES);
                        let mut n = 0;
                        while let Some(frame) = reader.next().await.unwrap() {
                            black_box(frame.tag());
                            n += 1;
                        }
                        n
                    };
                    let ((), n) = tokio::join!(write, read);
                    assert_eq!(n, FRAMES);
                })
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn classify(c: &mut Criterion) {
    assert_eq!(
        sql::classify(Dialect::Postgres, SIMPLE_SELECT),
        StatementKind::Read
    );
    assert_eq!(
        sql::classify(Dialect::Postgres, PSQL_CATALOG_QUERY),
        StatementKind::Read,
        "the catalog query must parse, or this measures the error path"
    );
    assert!(
        (450..=650).contains(&PSQL_CATALOG_QUERY.len()),
        "{} bytes",
        PSQL_CATALOG_QUERY.len()
    );

    let mut group = c.benchmark_group("classify");
    for (name, text) in [
        ("simple_select", SIMPLE_SELECT),
        ("psql_catalog_query", PSQL_CATALOG_QUERY),
    ] {
        group.bench_function(format!("{name}/uncached"), |b| {
            b.iter(|| sql::classify(Dialect::Postgres, black_box(text)))
        });
        group.bench_function(format!("{name}/cached_hit"), |b| {
            sql::classify_cached(Dialect::Postgres, text);
            b.iter(|| sql::classify_cached(Dialect::Postgres, black_box(text)))
        });
    }

    // pgbench -S -M simple sends a new literal every time, so each text is
    // new to the cache: a miss, a parse and an insert (and, every
    // CACHE_MAX_ENTRIES texts, a clear).
    let distinct: Vec<String> = (0..100_000u32)
        .map(|i| {
            format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                i * 7 + 1
            )
        })
        .collect();
    let mut next = 0;
    group.bench_function("simple_select/cached_distinct_literals", |b| {
        b.iter(|| {
            next = (next + 1) % distinct.len();
            sql::classify_cached(Dialect::Postgres, black_box(&distinct[next]))
        })
    });
    group.finish();
}

criterion_group!(benches, framing, classify);
criterion_main!(benches);
