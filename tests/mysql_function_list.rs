//! `src/sql/mysql_functions.txt`, the allow-list of MySQL-family functions
//! that only read, against a real MariaDB: every name it lists as built in
//! on MariaDB is one (an unqualified call does not reach a stored function),
//! with exactly the argument counts and spellings the list says; every
//! MySQL-only name is not; and every function the server's own manual (its
//! help tables) names and the server has built in is on the list or is
//! judged elsewhere.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use mysql_async::prelude::*;
use support::*;

/// Judged elsewhere: writes, and a read of the server's files.
const NOT_ON_THE_LIST: &[&str] = &[
    "get_lock",
    "release_lock",
    "release_all_locks",
    "nextval",
    "setval",
    "load_file",
];

/// Help topics in the function categories that are statements, operators or
/// grammar rather than functions.
const NOT_FUNCTIONS: &[&str] = &[
    "call",
    "close",
    "do",
    "fetch",
    "for",
    "goto",
    "handler",
    "iterate",
    "leave",
    "loop",
    "open",
    "resignal",
    "return",
    "signal",
    "sqlstate",
    "while",
    "labels",
    "nosql",
    "sequences",
    "vectors",
    "parentheses",
    "div",
    "in",
    "is",
    "like",
    "regexp",
    "rlike",
    "xor",
    "_rowid",
];

#[derive(Debug, Default)]
struct Line {
    mariadb_only: bool,
    mysql_only: bool,
    spaced: bool,
    arguments: Option<&'static str>,
}

fn the_list() -> BTreeMap<&'static str, Line> {
    include_str!("../src/sql/mysql_functions.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().expect("a name");
            let mut line = Line::default();
            for flag in words {
                match flag {
                    "mariadb" => line.mariadb_only = true,
                    "mysql" => line.mysql_only = true,
                    "spaced" => line.spaced = true,
                    "args>0" | "args=2" => line.arguments = Some(flag),
                    _ => panic!("unknown flag {flag} in: {l}"),
                }
            }
            (name, line)
        })
        .collect()
}

/// Does this call reach a stored function (which does not exist, so the
/// server says so) rather than a built-in?
async fn reaches_a_stored_function(conn: &mut mysql_async::Conn, call: &str) -> bool {
    match conn.query_drop(format!("SELECT {call}")).await {
        Err(mysql_async::Error::Server(e)) => matches!(e.code, 1305 | 1630),
        Err(e) => panic!("{call}: {e}"),
        Ok(()) => false,
    }
}

fn arguments(n: usize) -> String {
    vec!["1"; n].join(", ")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_function_list_matches_what_mariadb_has_built_in() {
    let db = MariaDb::start();
    let mut conn = mysql_async::Conn::new(db.write_opts())
        .await
        .expect("connect");
    let list = the_list();
    let mut wrong = Vec::new();
    for (name, line) in &list {
        let mut stored = Vec::new();
        for n in 0..5 {
            stored.push(
                reaches_a_stored_function(&mut conn, &format!("{name}({})", arguments(n))).await,
            );
        }
        if line.mysql_only {
            if stored.iter().any(|s| !s) {
                wrong.push(format!(
                    "{name}: listed as MySQL-only, but MariaDB has it built in"
                ));
            }
            continue;
        }
        let expected: Vec<bool> = (0..5)
            .map(|n| match line.arguments {
                None => false,
                Some("args>0") => n == 0,
                Some(_) => n != 2,
            })
            .collect();
        if stored != expected {
            wrong.push(format!(
                "{name}: stored function reached with 0..4 arguments: {stored:?}"
            ));
            continue;
        }
        let fits = expected.iter().position(|s| !s).expect("some count fits");
        for spelling in [
            format!("{name} ({})", arguments(fits)),
            format!("{name}/**/({})", arguments(fits)),
        ] {
            if !line.spaced && reaches_a_stored_function(&mut conn, &spelling).await {
                wrong.push(format!(
                    "{spelling}: reaches a stored function, not marked spaced"
                ));
            }
        }
    }

    // Completeness: what the server's own manual calls a function and the
    // server has built in.
    let help = db.root_query(
        "SELECT t.name FROM mysql.help_topic t JOIN mysql.help_category c \
         USING (help_category_id) WHERE c.name IN ('Bit Functions', 'Contents', \
         'Control flow functions', 'Date and Time Functions', 'Functions', \
         'Functions and Modifiers for Use with GROUP BY', 'Geographic Features', \
         'Information Functions', 'Miscellaneous Functions', 'Numeric Functions', \
         'String Functions')",
    );
    let mut from_the_manual = BTreeSet::new();
    for topic in help.lines() {
        let topic = topic.replace("\\\\_", "_").replace("\\_", "_");
        let topic = topic.to_ascii_lowercase();
        let name = topic.strip_suffix(" function").unwrap_or(&topic);
        let is_name =
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !name.is_empty();
        if is_name && !NOT_FUNCTIONS.contains(&name) {
            from_the_manual.insert(name.to_owned());
        }
    }
    assert!(
        from_the_manual.len() > 400,
        "help tables: {}",
        from_the_manual.len()
    );
    for name in &from_the_manual {
        if list.contains_key(name.as_str()) || NOT_ON_THE_LIST.contains(&name.as_str()) {
            continue;
        }
        let mut built_in = false;
        for n in 0..5 {
            let call = format!("{name}({})", arguments(n));
            built_in |= !reaches_a_stored_function(&mut conn, &call).await;
        }
        if built_in {
            wrong.push(format!(
                "{name}: built in and in the manual, missing from the list"
            ));
        }
    }
    let _ = conn.disconnect().await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
