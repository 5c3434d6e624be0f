//! The classifier's unit tests: statements and the kinds they must get.

use super::*;
use StatementKind::*;

fn pg(sql: &str) -> StatementKind {
    classify(Dialect::Postgres, sql)
}

#[test]
fn postgres_operators_outside_the_catalog_are_unknown() {
    assert_pg(
        Read,
        &[
            "SELECT c.relname FROM pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(items)$'",
            "SELECT 1 OPERATOR(+) 2, '{1}'::int[] @> '{1}', 'a' || 'b'",
        ],
    );
    assert_pg(
        Unknown,
        &[
            "SELECT 1 OPERATOR(public.+) 2",
            "SELECT 1 OPERATOR(\"PG_CATALOG\".+) 2",
            "SELECT a %%% b FROM t",
            "SELECT a @+ b FROM t",
        ],
    );
}

#[test]
fn pg_dump_search_path_reset_is_allowed_but_guarded_set_config_is_not() {
    assert_eq!(
        pg("SELECT pg_catalog.set_config('search_path', '', false);"),
        Read
    );
    assert_eq!(
        pg("SELECT set_config('Default_Transaction_Read_Only', 'off', false)"),
        Write
    );
    assert_eq!(pg("SELECT set_config(current_user, 'x', false)"), Write);
}

fn my(sql: &str) -> StatementKind {
    classify(Dialect::Mysql, sql)
}

#[track_caller]
fn assert_pg(expected: StatementKind, statements: &[&str]) {
    for sql in statements {
        assert_eq!(pg(sql), expected, "postgres: {sql}");
    }
}

#[track_caller]
fn assert_my(expected: StatementKind, statements: &[&str]) {
    for sql in statements {
        assert_eq!(my(sql), expected, "mysql: {sql}");
    }
}

// The query psql 15 sends for `\d`.
const PSQL_LIST_RELATIONS: &str = r#"SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
 LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','v','m','S','f','')
  AND n.nspname <> 'pg_catalog'
  AND n.nspname !~ '^pg_toast'
  AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;"#;

// The first query psql 15 sends for `\d t`.
const PSQL_DESCRIBE_LOOKUP: &str = "SELECT c.oid,
  n.nspname,
  c.relname
FROM pg_catalog.pg_class c
 LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 2, 3;";

// The columns query psql 15 sends for `\d t`.
const PSQL_DESCRIBE_COLUMNS: &str = "SELECT a.attname,
  pg_catalog.format_type(a.atttypid, a.atttypmod),
  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)
   FROM pg_catalog.pg_attrdef d
   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),
  a.attnotnull,
  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t
   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation,
  a.attidentity,
  a.attgenerated
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = '16384' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;";

// psql 15 `\du`.
const PSQL_LIST_ROLES: &str = "SELECT r.rolname, r.rolsuper, r.rolinherit,
  r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
  r.rolconnlimit, r.rolvaliduntil,
  ARRAY(SELECT b.rolname
    FROM pg_catalog.pg_auth_members m
    JOIN pg_catalog.pg_roles b ON (m.roleid = b.oid)
    WHERE m.member = r.oid) as memberof
, r.rolreplication
, r.rolbypassrls
FROM pg_catalog.pg_roles r
WHERE r.rolname !~ '^pg_'
ORDER BY 1;";

// tokio-postgres 0.7 looks up unknown type oids with this, as a
// prepared statement (Parse carries `$1`).
const TOKIO_POSTGRES_TYPEINFO: &str =
    "SELECT t.typname, t.typtype, t.typelem, r.rngsubtype, t.typbasetype, n.nspname, t.typrelid
FROM pg_catalog.pg_type t
LEFT OUTER JOIN pg_catalog.pg_range r ON r.rngtypid = t.oid
INNER JOIN pg_catalog.pg_namespace n ON t.typnamespace = n.oid
WHERE t.oid = $1
";

const TOKIO_POSTGRES_TYPEINFO_COMPOSITE: &str = "SELECT attname, atttypid
FROM pg_catalog.pg_attribute
WHERE attrelid = $1
AND NOT attisdropped
AND attnum > 0
ORDER BY attnum
";

#[test]
fn plain_queries_are_reads() {
    assert_pg(
        Read,
        &[
            "SELECT 1",
            "select * from t where id = 3",
            "VALUES (1), (2)",
            "SELECT a FROM t UNION ALL SELECT b FROM u ORDER BY 1 LIMIT 10",
            "WITH x AS (SELECT * FROM t) SELECT * FROM x",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
            "SELECT * FROM t WHERE id IN (SELECT id FROM u)",
            "SELECT * FROM generate_series(1, 3)",
        ],
    );
}

#[test]
fn show_explain_describe_and_fetch_are_reads() {
    assert_pg(
        Read,
        &[
            "SHOW search_path",
            "SHOW ALL",
            "EXPLAIN SELECT * FROM t",
            "EXPLAIN (COSTS OFF) SELECT 1",
            "FETCH 10 FROM c",
            "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t",
        ],
    );
    assert_my(
        Read,
        &[
            "SHOW TABLES",
            "SHOW FULL PROCESSLIST",
            "SHOW WARNINGS",
            "SHOW CREATE TABLE t",
            "SHOW VARIABLES LIKE 'max%'",
            "DESCRIBE t",
            "DESC t",
            "EXPLAIN SELECT 1",
            "select @@version_comment limit 1",
            "SELECT a INTO @v FROM t",
        ],
    );
}

#[test]
fn psql_describe_query_is_a_read() {
    assert_pg(
        Read,
        &[
            PSQL_LIST_RELATIONS,
            PSQL_DESCRIBE_LOOKUP,
            PSQL_DESCRIBE_COLUMNS,
            PSQL_LIST_ROLES,
        ],
    );
}

#[test]
fn extended_protocol_placeholders_parse_as_reads() {
    assert_pg(
        Read,
        &[
            TOKIO_POSTGRES_TYPEINFO,
            TOKIO_POSTGRES_TYPEINFO_COMPOSITE,
            "SELECT $1::int, $2",
        ],
    );
    assert_pg(Write, &["UPDATE t SET a = $1 WHERE id = $2"]);
}

#[test]
fn dml_is_a_write() {
    assert_pg(
        Write,
        &[
            "INSERT INTO t VALUES (1)",
            "INSERT INTO t SELECT * FROM u ON CONFLICT DO NOTHING",
            "UPDATE t SET a = 1",
            "DELETE FROM t WHERE id = 1",
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            "TRUNCATE t",
        ],
    );
    assert_my(Write, &["REPLACE INTO t VALUES (1)", "UPDATE t SET a = 1"]);
}

#[test]
fn writable_cte_is_a_write() {
    assert_pg(
        Write,
        &[
            "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
            "WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM x",
            "WITH x AS (UPDATE t SET a = 1 RETURNING *), y AS (SELECT 1) SELECT * FROM x, y",
        ],
    );
}

#[test]
fn select_for_update_is_a_write() {
    assert_pg(
        Write,
        &[
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t FOR SHARE",
            "SELECT * FROM t FOR UPDATE OF t SKIP LOCKED",
            "SELECT * FROM (SELECT * FROM t FOR UPDATE) s",
            "WITH x AS (SELECT * FROM t FOR SHARE) SELECT * FROM x",
        ],
    );
    assert_my(
        Write,
        &["SELECT * FROM t FOR UPDATE", "SELECT * FROM t FOR SHARE"],
    );
}

/// sqlparser 0.64 knows only FOR UPDATE and FOR SHARE; the other two
/// PostgreSQL lock strengths fail to parse, which still keeps them from
/// being reads.
#[test]
fn weaker_row_locks_are_not_reads() {
    assert_pg(
        Unknown,
        &[
            "SELECT * FROM t FOR NO KEY UPDATE",
            "SELECT * FROM t FOR KEY SHARE",
        ],
    );
    assert_my(Unknown, &["SELECT * FROM t LOCK IN SHARE MODE"]);
}

#[test]
fn select_into_is_a_write() {
    assert_pg(
        Write,
        &[
            "SELECT * INTO newt FROM t",
            "SELECT * INTO TEMP newt FROM t",
        ],
    );
}

#[test]
fn mysql_select_into_outfile_is_not_a_read() {
    for sql in [
        "SELECT * FROM t INTO OUTFILE '/tmp/x'",
        "SELECT a INTO OUTFILE '/tmp/x' FROM t",
        "SELECT a INTO DUMPFILE '/tmp/x' FROM t",
    ] {
        assert!(!my(sql).allowed_read_only(), "{sql}");
    }
}

#[test]
fn writing_functions_make_a_select_a_write() {
    assert_pg(
        Write,
        &[
            "SELECT nextval('s')",
            "SELECT pg_catalog.setval('s', 1)",
            "SELECT set_config('default_transaction_read_only', 'off', false)",
            "SELECT 1 WHERE set_config('transaction_read_only', 'off', true) IS NOT NULL",
            "SELECT * FROM t WHERE id = (SELECT NEXTVAL('s'))",
            "SELECT * FROM nextval('s')",
            "SELECT * FROM pg_catalog.set_config('a.b', 'c', false) x",
            "SELECT * FROM t, LATERAL (SELECT nextval('s')) x",
            "SELECT \"nextval\"('s')",
            "SELECT lo_export(16400, '/tmp/x')",
            "SELECT lo_unlink(16400)",
        ],
    );
}

#[test]
fn explain_without_analyze_is_a_read() {
    assert_pg(
        Read,
        &[
            "EXPLAIN DELETE FROM t",
            "EXPLAIN UPDATE t SET a = 1",
            "EXPLAIN (ANALYZE false) DELETE FROM t",
            "EXPLAIN (ANALYZE off, COSTS off) DELETE FROM t",
            "EXPLAIN SELECT nextval('s')",
            "EXPLAIN ANALYZE SELECT * FROM t",
        ],
    );
}

#[test]
fn explain_analyze_of_a_write_is_a_write() {
    assert_pg(
        Write,
        &[
            "EXPLAIN ANALYZE DELETE FROM t",
            "EXPLAIN ANALYZE VERBOSE UPDATE t SET a = 1",
            "EXPLAIN (ANALYZE) DELETE FROM t",
            "EXPLAIN (ANALYZE, BUFFERS) INSERT INTO t VALUES (1)",
            "EXPLAIN (ANALYZE true) DELETE FROM t",
            "EXPLAIN (ANALYZE on) DELETE FROM t",
            "EXPLAIN ANALYZE SELECT nextval('s')",
            "EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE",
        ],
    );
    assert_my(Write, &["EXPLAIN ANALYZE DELETE FROM t"]);
}

#[test]
fn copy_to_the_client_is_a_read_and_anything_else_a_write() {
    assert_pg(
        Read,
        &[
            "COPY t TO STDOUT",
            "COPY t (a, b) TO STDOUT WITH (FORMAT csv, HEADER)",
            "COPY (SELECT * FROM t WHERE a > 1) TO STDOUT",
        ],
    );
    assert_pg(
        Write,
        &[
            "COPY t FROM STDIN",
            "COPY t FROM STDIN WITH (FORMAT csv)",
            "COPY t FROM '/tmp/x'",
            "COPY t TO '/tmp/x'",
            "COPY t TO PROGRAM 'cat > /tmp/x'",
            "COPY (SELECT * FROM t FOR UPDATE) TO STDOUT",
            "COPY (SELECT nextval('s')) TO STDOUT",
        ],
    );
}

#[test]
fn maintenance_locks_calls_and_notify_are_writes() {
    assert_pg(
        Write,
        &[
            "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
            "LOCK t",
            "CALL p(1)",
            "NOTIFY c, 'x'",
            "VACUUM t",
            "ANALYZE t",
            "REFRESH MATERIALIZED VIEW m",
        ],
    );
    assert_my(
        Write,
        &[
            "LOCK TABLES t READ",
            "CALL p()",
            "KILL 5",
            "KILL QUERY 5",
            "FLUSH TABLES",
        ],
    );
}

#[test]
fn postgres_statements_read_through_an_equivalent_spelling() {
    assert_pg(
        Read,
        &[
            "TABLE items",
            "table only items;",
            "MOVE ABSOLUTE 0 FROM \"reader\"",
            "move forward all in c",
            "LOCK TABLE public.items IN ACCESS SHARE MODE",
        ],
    );
    assert_pg(
        Session,
        &[
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE",
            "begin read only, not deferrable;",
            "SET TRANSACTION DEFERRABLE",
            "SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings \
             WHERE name = 'restrict_nonsystem_relation_kind'",
        ],
    );
    assert_pg(
        Write,
        &[
            "BEGIN READ WRITE, DEFERRABLE",
            "TABLE items; DELETE FROM items",
            "MOVE 1 FROM c; DELETE FROM items",
            "LOCK TABLE items",
            "LOCK TABLE items IN ROW EXCLUSIVE MODE",
            "SELECT set_config(name, 'x', false) FROM pg_settings \
             WHERE name = 'application_name' OR pg_advisory_lock(1) IS NOT NULL",
            "SELECT set_config(name, 'off', false) FROM pg_settings \
             WHERE name = 'default_transaction_read_only'",
        ],
    );
    assert_pg(
        Unknown,
        &[
            "BEGIN DEFERRABLE; DELETE FROM items",
            "BEGIN /* x */ DEFERRABLE",
        ],
    );
}

#[test]
fn statements_sqlparser_cannot_parse_are_unknown() {
    assert_pg(
        Unknown,
        &[
            "CLUSTER t",
            "REINDEX TABLE t",
            "DO $$ BEGIN DELETE FROM t; END $$",
            "SECURITY LABEL ON TABLE t IS 'x'",
            "ALTER SYSTEM SET work_mem = '1MB'",
            "CHECKPOINT",
        ],
    );
    assert_my(
        Unknown,
        &[
            "HANDLER t OPEN",
            "SET PERSIST max_connections = 10",
            "XA START 'x'",
            "HELP 'x'; DELETE FROM t",
            "SET @@`tx_read_only` = 0",
        ],
    );
    // What MariaDB accepts and sqlparser does not, judged all the same.
    assert_my(
        Ddl,
        &[
            "CREATE USER 'u'@'%' IDENTIFIED BY 'x'",
            "CREATE PROCEDURE p() BEGIN SELECT 1; END",
            "CREATE TABLE t (a LONG BYTE)",
        ],
    );
    assert_my(
        Write,
        &[
            "LOAD DATA INFILE '/tmp/x' INTO TABLE t",
            "DO GET_LOCK('x', 1)",
            "SET @`x` = GET_LOCK('a', 1)",
        ],
    );
    assert_my(Read, &["DO sleep(1)", "HELP 'select'", "CHECKSUM TABLE t"]);
    assert_my(Session, &["SET @`x.y` = 1", "SET @'a' = 2, @\"b\" = 3"]);
}

#[test]
fn ddl_and_privileges_are_ddl() {
    assert_pg(
        Ddl,
        &[
            "CREATE TABLE t (a int)",
            "CREATE TEMP TABLE t (a int)",
            "CREATE TABLE t2 AS SELECT * FROM t",
            "CREATE MATERIALIZED VIEW m AS SELECT 1",
            "CREATE INDEX ON t (a)",
            "CREATE VIEW v AS SELECT * FROM t",
            "CREATE SEQUENCE s",
            "CREATE EXTENSION pgcrypto",
            "CREATE ROLE bob",
            "CREATE SCHEMA s",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "ALTER TABLE t ADD COLUMN b int",
            "ALTER ROLE bob SUPERUSER",
            "DROP TABLE t",
            "DROP FUNCTION f",
            "GRANT SELECT ON t TO bob",
            "REVOKE ALL ON t FROM bob",
            "GRANT admin TO bob",
            "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob",
            "COMMENT ON TABLE t IS 'x'",
        ],
    );
    assert_my(
        Ddl,
        &[
            "CREATE TABLE t (a int)",
            "DROP DATABASE d",
            "RENAME TABLE a TO b",
            "GRANT SELECT ON db.* TO 'u'@'%'",
        ],
    );
}

#[test]
fn transaction_control_is_session() {
    assert_pg(
        Session,
        &[
            "BEGIN",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "BEGIN READ ONLY",
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            "COMMIT",
            "COMMIT AND CHAIN",
            "END",
            "ROLLBACK",
            "ABORT",
            "SAVEPOINT s",
            "RELEASE SAVEPOINT s",
            "RELEASE s",
            "ROLLBACK TO SAVEPOINT s",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET TRANSACTION READ ONLY",
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "CLOSE c",
        ],
    );
    assert_my(
        Session,
        &[
            "BEGIN",
            "START TRANSACTION",
            "START TRANSACTION READ ONLY",
            "COMMIT",
            "ROLLBACK",
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "UNLOCK TABLES",
        ],
    );
}

#[test]
fn read_write_transactions_are_writes() {
    assert_pg(
        Write,
        &[
            "BEGIN READ WRITE",
            "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE READ WRITE",
            "START TRANSACTION READ WRITE",
            "SET TRANSACTION READ WRITE",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        ],
    );
    assert_my(
        Write,
        &[
            "START TRANSACTION READ WRITE",
            "SET TRANSACTION READ WRITE",
            "SET SESSION TRANSACTION READ WRITE",
            "SET GLOBAL TRANSACTION READ WRITE",
            "SET GLOBAL TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        ],
    );
}

#[test]
fn ordinary_settings_are_session() {
    assert_pg(
        Session,
        &[
            "SET search_path TO public, \"$user\"",
            "SET search_path = ''",
            "SET statement_timeout = 5000",
            "SET LOCAL statement_timeout = '5s'",
            "SET SESSION application_name = 'psql'",
            "SET client_encoding TO 'UTF8'",
            "SET TIME ZONE 'UTC'",
            "SET timezone = 'UTC'",
            "SET DateStyle = ISO",
            "SET extra_float_digits = 3",
            "SET NAMES 'UTF8'",
            "RESET search_path",
            "DISCARD ALL",
            "DEALLOCATE p",
            "DEALLOCATE ALL",
            "LISTEN c",
            "UNLISTEN *",
        ],
    );
    assert_my(
        Session,
        &[
            "SET autocommit = 1",
            "SET @@autocommit = 0",
            "SET NAMES utf8mb4",
            "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci",
            "SET character_set_results = NULL",
            "SET SESSION sql_mode = 'ANSI'",
            "SET @@session.sql_mode = 'ANSI', @@session.time_zone = '+00:00'",
            "SET @x = 1",
            "USE db",
            "DEALLOCATE PREPARE s",
        ],
    );
}

#[test]
fn settings_that_lift_read_only_are_writes() {
    assert_pg(
        Write,
        &[
            "SET default_transaction_read_only = off",
            "SET SESSION default_transaction_read_only TO DEFAULT",
            "SET transaction_read_only = 'off'",
            "SET LOCAL transaction_read_only = off",
            "SET \"default_transaction_read_only\" = off",
            "RESET default_transaction_read_only",
            "RESET transaction_read_only",
            "RESET ALL",
            "SET session_replication_role = replica",
        ],
    );
    assert_my(
        Write,
        &[
            "SET transaction_read_only = 0",
            "SET SESSION transaction_read_only = 0",
            "SET @@session.transaction_read_only = 0",
            "SET tx_read_only = 0",
            "SET sql_log_bin = 0",
            "SET autocommit = 1, tx_read_only = 0",
        ],
    );
}

#[test]
fn switching_identity_is_a_write() {
    assert_pg(
        Write,
        &[
            "SET SESSION AUTHORIZATION bob",
            "SET SESSION AUTHORIZATION DEFAULT",
            "RESET SESSION AUTHORIZATION",
            "SET ROLE admin",
            "SET LOCAL ROLE admin",
            "SET ROLE NONE",
            "RESET ROLE",
            "SET role = admin",
            "SET session_authorization = 'bob'",
        ],
    );
    assert_my(Write, &["SET PASSWORD = 'x'"]);
}

#[test]
fn mysql_global_settings_are_writes() {
    assert_my(
        Write,
        &[
            "SET GLOBAL max_connections = 10",
            "SET @@GLOBAL.max_connections = 10",
            "SET @@global.read_only = 0",
            "SET @@persist.max_connections = 10",
            "SET SESSION sql_mode = 'ANSI', GLOBAL max_connections = 10",
        ],
    );
}

#[test]
fn prepare_takes_the_kind_of_the_prepared_statement() {
    assert_pg(Read, &["PREPARE p AS SELECT * FROM t WHERE id = $1"]);
    assert_pg(
        Write,
        &[
            "PREPARE p (int) AS DELETE FROM t WHERE id = $1",
            "PREPARE p AS SELECT * FROM t FOR UPDATE",
        ],
    );
    assert_pg(Ddl, &["PREPARE p AS CREATE TABLE x AS SELECT 1"]);
}

#[test]
fn execute_is_unknown() {
    assert_pg(Unknown, &["EXECUTE p", "EXECUTE p(1, 'a')"]);
    assert_my(Unknown, &["EXECUTE s"]);
}

#[test]
fn unparseable_is_unknown() {
    assert_pg(
        Unknown,
        &[
            "SELEC 1",
            "SELECT * FROM",
            "'unterminated",
            "\u{0}\u{1}\u{2}",
            "SELECT 1; DROP",
            "garbage; SELECT 1",
        ],
    );
    assert_my(Unknown, &["SELEC 1", "SELECT 1 FROM t WHERE"]);
}

#[test]
fn empty_input_is_session() {
    for sql in [
        "",
        "   \n\t",
        ";",
        ";;;",
        "-- just a comment",
        "/* block */ ;",
        "-- a\n;\n/* b */",
    ] {
        assert_eq!(pg(sql), Session, "postgres: {sql:?}");
        assert_eq!(my(sql), Session, "mysql: {sql:?}");
    }
}

#[test]
fn multi_statement_takes_the_most_dangerous() {
    assert_pg(Read, &["SELECT 1; SELECT 2;"]);
    assert_pg(
        Session,
        &["SET search_path = x; SELECT 1", "SELECT 1; COMMIT"],
    );
    assert_pg(
        Write,
        &[
            "SELECT 1; DELETE FROM t; SELECT 2",
            "BEGIN; UPDATE t SET a = 1; COMMIT",
        ],
    );
    assert_pg(Ddl, &["DELETE FROM t; DROP TABLE t; SELECT 1"]);
    assert_pg(Unknown, &["DROP TABLE t; EXECUTE p; SELECT 1"]);
    assert_my(Write, &["SELECT 1; SET GLOBAL max_connections = 1"]);
}

#[test]
fn danger_order_lets_unknown_win() {
    let ascending = [Read, Session, Write, Ddl, Unknown];
    for (i, &low) in ascending.iter().enumerate() {
        for &high in &ascending[i..] {
            assert_eq!(low.most_dangerous(high), high);
            assert_eq!(high.most_dangerous(low), high);
        }
    }
    assert!(Read.allowed_read_only() && Session.allowed_read_only());
    assert!(
        ![Write, Ddl, Unknown]
            .iter()
            .any(|kind| kind.allowed_read_only())
    );
}

#[test]
fn deeply_nested_input_is_unknown_without_overflowing_the_stack() {
    let n = 10_000;
    let inputs = [
        "(".repeat(n),
        format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)),
        format!("SELECT * FROM {}t{}", "(".repeat(n), ")".repeat(n)),
        format!("SELECT {}", "(SELECT ".repeat(n)),
        format!("SELECT {}1", "NOT ".repeat(n)),
        format!("SELECT {}1", "- ".repeat(n)),
        format!("SELECT {}1{}", "ARRAY[".repeat(n), "]".repeat(n)),
        format!("SELECT {}1{}", "CAST(".repeat(n), " AS int)".repeat(n)),
    ];
    for sql in &inputs {
        for dialect in [Dialect::Postgres, Dialect::Mysql] {
            assert_eq!(
                classify(dialect, sql),
                Unknown,
                "{dialect:?}: {}",
                &sql[..40]
            );
        }
    }
}

/// Left-deep chains are parsed in a loop, so the recursion limit does not
/// stop them; their trees are as deep as they are long.
#[test]
fn long_operator_chains_do_not_overflow_a_worker_stack() {
    // Each just under the size limit, and far beyond the ~40 KiB that
    // overflowed a 2 MiB stack before long texts got their own thread.
    let chains = [
        format!("SELECT 1{}", "+1".repeat(30_000)),
        format!("SELECT 1{}", "::int".repeat(12_000)),
        format!("SELECT a{}", "[1]".repeat(20_000)),
        format!("SELECT 1{}", " UNION SELECT 1".repeat(4_000)),
    ];
    assert!(chains.iter().all(|c| c.len() <= max_classified_bytes()));
    // The size of a tokio worker's stack.
    let worker = std::thread::Builder::new().stack_size(2 * 1024 * 1024);
    let kinds = worker
        .spawn(move || chains.map(|sql| pg(&sql)))
        .expect("spawn a test thread")
        .join()
        .expect("classification must not panic");
    assert_eq!(kinds, [Read; 4]);
}

#[test]
fn text_over_the_size_limit_is_unknown() {
    let sql = format!("SELECT 1{}", " ".repeat(max_classified_bytes()));
    assert_eq!(pg(&sql), Unknown);
    assert_eq!(classify_cached(Dialect::Postgres, &sql), Unknown);
    let just_fits = format!("SELECT 1{}", " ".repeat(max_classified_bytes() - 8));
    assert_eq!(pg(&just_fits), Read);
}

#[test]
fn cached_classification_agrees_with_uncached() {
    let statements = [
        "SELECT 1",
        "DELETE FROM t",
        "SET default_transaction_read_only = off",
        "",
        "SELEC 1",
        PSQL_LIST_RELATIONS,
    ];
    for _ in 0..2 {
        for sql in statements {
            for dialect in [Dialect::Postgres, Dialect::Mysql] {
                assert_eq!(
                    classify_cached(dialect, sql),
                    classify(dialect, sql),
                    "{sql}"
                );
            }
        }
    }
}

#[test]
fn cache_is_per_dialect() {
    // Valid in MySQL only: a cache shared across dialects would answer
    // the second question with the first answer.
    let sql = "SET @@GLOBAL.max_connections = 10 -- cache_is_per_dialect";
    assert_eq!(classify_cached(Dialect::Mysql, sql), Write);
    assert_eq!(classify_cached(Dialect::Postgres, sql), pg(sql));
    let backtick = "SELECT `a` FROM t -- cache_is_per_dialect";
    assert_eq!(classify_cached(Dialect::Mysql, backtick), Read);
    assert_eq!(classify_cached(Dialect::Postgres, backtick), Unknown);
}

const MARIADB: MysqlServer = MysqlServer {
    mariadb: true,
    version_id: 101119,
};

#[test]
fn executable_comment_bodies_are_classified_as_code() {
    let reading = Reading::mysql(Lexing::DEFAULT, MARIADB);
    for sql in [
        "SELECT 1 /*M! ; DELETE FROM t */",
        "SELECT 1 /*M!100000 ; DELETE FROM t */",
        "SELECT 1 /*!50000 ; DELETE FROM t */",
        "SELECT 1 /*! ; DELETE FROM t */",
    ] {
        assert_eq!(classify_for(&reading, sql.as_bytes()), Write, "{sql}");
    }
    assert_eq!(
        classify_for(&reading, b"SELECT 1 /*m! ; DELETE FROM t */"),
        Unknown
    );
    assert_eq!(
        classify_for(&reading, b"SELECT /*!40001 SQL_NO_CACHE */ * FROM t"),
        Read
    );
}

#[test]
fn text_that_is_not_utf8_is_unknown() {
    let reading = Reading::postgres(Lexing::DEFAULT);
    assert_eq!(classify_for(&reading, "SELECT 'é'".as_bytes()), Read);
    assert_eq!(classify_for(&reading, b"SELECT '\xe9'"), Unknown);
}

#[test]
fn a_mysql_lexing_change_makes_the_rest_of_its_text_unknown() {
    let reading = Reading::mysql(Lexing::DEFAULT, MARIADB);
    for sql in [
        "SET sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT 1",
        "SET NAMES gbk; SELECT 1",
        "SET @@session.character_set_client = 'gbk'; SELECT 1",
    ] {
        assert_eq!(classify_for(&reading, sql.as_bytes()), Unknown, "{sql}");
    }
    assert_eq!(
        classify_for(&reading, b"SELECT 1; SET NAMES utf8mb4"),
        Session
    );
    assert_eq!(classify_for(&reading, b"SET @mode = 1; SELECT 1"), Session);
}

#[test]
fn mysql_lexing_follows_literal_settings_and_gives_up_on_computed_ones() {
    let default = Lexing::DEFAULT;
    let on = |lexing: Lexing| Reading::mysql(lexing, MysqlServer::from_version("10.11.19-MariaDB"));
    let after = |sql: &str| mysql_lexing_after(sql.as_bytes(), &on(default), default);
    assert_eq!(after("SELECT 1"), default);
    assert_eq!(after("SET NAMES utf8mb4"), default);
    assert!(after("SET NAMES gbk").reads_differently(&[0xbf]));
    assert!(after("SET sql_mode = 'NO_BACKSLASH_ESCAPES'").reads_differently(b"\\"));
    assert!(after("SET SESSION sql_mode = 'ANSI_QUOTES'").reads_differently(b"\""));
    assert_eq!(after("SET GLOBAL sql_mode = 'ANSI_QUOTES'"), default);
    assert_eq!(
        after("SET sql_mode = CONCAT(@@sql_mode, ',ANSI')"),
        Lexing::OPAQUE
    );
    assert_eq!(after("SET CHARACTER SET gbk"), Lexing::OPAQUE);
    assert_eq!(after("EXECUTE s"), Lexing::OPAQUE);
    // As the server opens executable comments: a SET it runs counts,
    // one it skips (MariaDB and `/*!50700`…`/*!99999`) does not.
    assert!(after("/*M! SET sql_mode='NO_BACKSLASH_ESCAPES' */").reads_differently(b"\\"));
    assert!(after("/*!40101 SET NAMES gbk */").reads_differently(&[0xbf]));
    assert_eq!(after("/*!99999 SET NAMES gbk */"), default);
    let mut ansi = Lexing::DEFAULT;
    ansi.mysql_sql_mode("ANSI_QUOTES");
    assert_eq!(
        mysql_lexing_after(b"SET sql_mode = ''", &on(ansi), default),
        default
    );
    assert_eq!(
        mysql_lexing_after(b"SET sql_mode = DEFAULT", &on(ansi), default),
        default
    );
    assert_eq!(
        mysql_lexing_after(b"SET sql_mode = DEFAULT", &on(default), ansi),
        ansi
    );
}

#[test]
fn startup_parameters_get_the_verdict_of_their_set() {
    let kind = postgres_startup_parameter_kind;
    assert_eq!(kind("application_name", "psql"), Session);
    assert_eq!(kind("client_encoding", "UTF8"), Session);
    assert_eq!(kind("search_path", "\"$user\", public"), Session);
    assert_eq!(kind("DateStyle", "ISO, MDY"), Session);
    assert_eq!(kind("role", "postgres"), Write);
    assert_eq!(kind("session_authorization", "postgres"), Write);
    assert_eq!(kind("default_transaction_read_only", "off"), Write);
    assert_eq!(kind("default_transaction_read_only", "on"), Session);
    assert_eq!(kind("session_replication_role", "replica"), Write);
    assert_eq!(kind("x\"; DROP TABLE t; --", "1"), Session);
    assert_eq!(kind("a", "'; DROP TABLE t; --"), Session);
    assert_eq!(kind("options", ""), Session);
    assert_eq!(kind("options", "-c statement_timeout=5s"), Session);
    assert_eq!(
        kind("options", "--search-path=a\\ b -cwork_mem=4MB"),
        Session
    );
    assert_eq!(kind("options", "-c role=postgres"), Write);
    assert_eq!(
        kind("options", "-c default_transaction_read_only=off"),
        Write
    );
    assert_eq!(
        kind("options", "-c application_name=a\\ -c\\ role=x"),
        Session
    );
    assert_eq!(kind("options", "-e"), Unknown);
    assert_eq!(kind("options", "-c"), Unknown);
}

#[test]
fn turning_read_only_on_is_housekeeping() {
    assert_pg(
        Session,
        &[
            "SET default_transaction_read_only = on",
            "SET transaction_read_only TO true",
            "SET SESSION default_transaction_read_only = 'on'",
        ],
    );
    assert_pg(Write, &["SET default_transaction_read_only = off"]);
}

#[test]
fn builtin_functions_that_only_read_are_reads() {
    assert_pg(
        Read,
        &[
            "SELECT now(), lower('A'), pg_catalog.upper('a'), count(*), coalesce(a, 1) FROM t",
            "SELECT current_date, current_user, version(), pg_backend_pid()",
            "SELECT pg_size_pretty(pg_total_relation_size('t')), pg_database_size('app')",
            "SELECT random(), clock_timestamp(), gen_random_uuid(), pg_sleep(0)",
            "SELECT information_schema._pg_expandarray(ARRAY[1])",
            "SELECT * FROM unnest(ARRAY[1, 2]) AS u(x)",
            "SELECT row_number() OVER (), string_agg(name, ',') FROM t GROUP BY name",
            "SELECT query_to_xml('SELECT * FROM t', true, false, '')",
        ],
    );
}

#[test]
fn functions_that_change_things_are_writes() {
    assert_pg(
        Write,
        &[
            "SELECT pg_terminate_backend(1)",
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity",
            "SELECT pg_advisory_lock(42)",
            "SELECT pg_try_advisory_xact_lock(42)",
            "SELECT pg_notify('c', 'x')",
            "SELECT lowrite(0, 'x')",
            "SELECT lo_truncate(0, 0)",
            "SELECT pg_reload_conf()",
            "SELECT pg_switch_wal()",
            "SELECT pg_create_restore_point('x')",
            "SELECT pg_stat_reset()",
            "SELECT pg_create_physical_replication_slot('s')",
            "SELECT txid_current()",
            "SELECT pg_current_xact_id()",
            "SELECT * FROM pg_catalog.pg_logical_slot_get_changes('s', NULL, NULL)",
            "SELECT query_to_xml('DELETE FROM t RETURNING *', true, false, '')",
        ],
    );
    assert_my(
        Write,
        &["SELECT GET_LOCK('x', 0)", "SELECT RELEASE_ALL_LOCKS()"],
    );
}

#[test]
fn functions_jitgate_does_not_know_are_unknown() {
    assert_pg(
        Unknown,
        &[
            "SELECT my_function()",
            "SELECT public.lower('a')",
            "SELECT * FROM my_set_returning_function(1)",
            "SELECT lo_open(1, 262144)",
            "SELECT dblink_exec('host=x', 'DELETE FROM t')",
            "SELECT query_to_xml(current_setting('x'), true, false, '')",
            "SELECT query_to_xml('SET standard_conforming_strings = off', true, false, '')",
            "SELECT ts_stat('SELECT v FROM t')",
        ],
    );
}

#[test]
fn a_search_path_that_puts_a_schema_before_pg_catalog_is_unknown() {
    assert_pg(
        Unknown,
        &[
            "SET search_path = public, pg_catalog",
            "SET search_path TO 'public, pg_catalog'",
        ],
    );
    assert_pg(
        Write,
        &["SELECT set_config('search_path', 'evil, pg_catalog', false)"],
    );
    assert_pg(
        Session,
        &[
            "SET search_path = public",
            "SET search_path = pg_catalog, public",
            "SET search_path TO \"$user\", public",
        ],
    );
    assert_pg(Read, &["SELECT set_config('search_path', '', false)"]);
    assert_eq!(
        postgres_startup_parameter_kind("search_path", "public, pg_catalog"),
        Unknown
    );
}

#[test]
fn set_config_of_a_lexing_setting_is_a_write() {
    assert_pg(
        Write,
        &[
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            "SELECT set_config('client_encoding', 'SJIS', false)",
        ],
    );
}

#[test]
fn only_statements_that_may_change_settings_unsettle_a_pipeline() {
    let may = |sql: &str| postgres_may_change_settings(pg(sql), sql);
    for sql in [
        "BEGIN",
        "begin;",
        "START TRANSACTION READ ONLY",
        "SAVEPOINT s",
        "SELECT 1",
        "SHOW ALL",
    ] {
        assert!(!may(sql), "{sql}");
    }
    for sql in [
        "SET standard_conforming_strings = off",
        "RESET ALL",
        "DISCARD ALL",
        "COMMIT",
        "ROLLBACK",
        "BEGIN; SET client_encoding = 'SJIS'",
        "BEGIN -- x",
        "SELECT my_function()",
    ] {
        assert!(may(sql), "{sql}");
    }
}

/// The MySQL relay's follow-ups (`USE`, `sql_mode`) parse on the session
/// thread's stack: a long left-deep chain there must not be parsed at all
/// (its tree's drop would overflow a 2 MiB stack and abort the proxy).
#[test]
fn long_texts_are_not_parsed_by_the_mysql_follow_ups() {
    let chain = "+1".repeat(100_000);
    let reading = Reading::mysql(Lexing::DEFAULT, MysqlServer::MARIADB_10_11);
    let (switch, lexing) = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let use_text = format!("USE app; SELECT 1{chain}");
            let set_text = format!("SET sql_mode = 'ANSI'; SELECT 1{chain}");
            (
                mysql_database_switch(&reading, use_text.as_bytes()),
                mysql_lexing_after(set_text.as_bytes(), &reading, Lexing::DEFAULT),
            )
        })
        .expect("spawn a test thread")
        .join()
        .expect("no stack overflow, no panic");
    assert_eq!(switch, DatabaseSwitch::Unknown);
    assert_eq!(lexing, Lexing::OPAQUE);
}
