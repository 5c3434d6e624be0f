//! What real clients send, classified: `tests/corpus/postgres_clients.jsonl`
//! holds every statement psql (with its meta-commands), pg_dump,
//! pg_dumpall and psycopg2 sent to a real server, captured from the
//! server's own log by `tests/corpus/capture_postgres_clients.sh`. The
//! reading clients ran in read-only transactions, so the server vouches
//! that they only read; each of their statements must pass a read level.
//! The writing client's statements must be writes. Each client is
//! classified as one session, in the order the server logged its statements.

use std::collections::HashMap;

use jitgate::sql::{Lexing, PreparedStatements, Reading, StatementKind};

#[derive(serde::Deserialize)]
struct Entry {
    client: String,
    kind: String,
    sql: String,
}

fn entries(corpus: &str) -> Vec<Entry> {
    corpus
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[test]
fn every_postgres_client_read_passes_a_read_level_and_every_write_is_a_write() {
    let entries = entries(include_str!("corpus/postgres_clients.jsonl"));
    assert!(entries.len() > 300, "the corpus holds {}", entries.len());
    let reading = Reading::postgres(Lexing::DEFAULT);
    let mut wrong = Vec::new();
    // Each client is one session: what it prepared, its EXECUTEs run.
    let mut sessions: HashMap<&str, PreparedStatements> = HashMap::new();
    for entry in &entries {
        let session = sessions.entry(entry.client.as_str()).or_default();
        // The capture's clients prepare through SQL only (pg_dump's
        // PREPARE), so no protocol-level names are needed here.
        let kind = session.classify(&reading, &entry.sql, |_| None);
        let fine = match entry.kind.as_str() {
            "read" => kind.allowed_read_only(),
            "write" => matches!(kind, StatementKind::Write | StatementKind::Ddl),
            other => panic!("unknown kind {other} for {}", entry.sql),
        };
        if !fine {
            wrong.push(format!(
                "[{}] expected {}, classified {}: {}",
                entry.client,
                entry.kind,
                kind.as_str(),
                entry.sql
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} statements:\n{}",
        wrong.len(),
        entries.len(),
        wrong.join("\n\n")
    );
}
