//! What a PostgreSQL account can write, asked of the server as that account;
//! and, for the quickstart only, creating a read-only demo account.
//!
//! `wire::read_account` refuses logins on a `read_only` level whose account
//! has any of the [`findings`] below. One catalog query, run as the level's
//! own account in the target's database, lists them.
//!
//! Let M be every role the account is a member of, directly or through
//! other roles, itself included (`pg_has_role(session_user, r, 'MEMBER')`,
//! which counts memberships without INHERIT and, on PostgreSQL 16+,
//! without SET as well: the check does not rely on which of them the
//! account could use). A finding is any of:
//!
//! * a role of M with SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or
//!   BYPASSRLS (a superuser is a member of every role, so for one only
//!   its own findings are listed, "it is a superuser" first);
//! * a predefined `pg_*` role in M other than the read-only ones
//!   ([`READ_ONLY_PREDEFINED`]): `pg_write_all_data`,
//!   `pg_write_server_files`, `pg_execute_server_program`,
//!   `pg_signal_backend`, `pg_checkpoint`, `pg_maintain`,
//!   `pg_create_subscription`, `pg_read_server_files`,
//!   `pg_database_owner`, and any predefined role a later release adds;
//! * in the target's database, for a role of M (with what it inherits and
//!   what PUBLIC has): INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER
//!   (and MAINTAIN on 17+) on any relation of `pg_class` but sequences,
//!   indexes and composite types; INSERT, UPDATE or REFERENCES on any of
//!   their columns; USAGE or UPDATE on any sequence (`nextval`, `setval`);
//!   CREATE on any schema. `pg_settings` is the exception: PUBLIC may
//!   UPDATE it, which only changes the session's own settings;
//! * CREATE on any database of the server;
//! * ownership, by a role of M, of any database or tablespace of the
//!   server, or in the target's database of any relation, schema, function,
//!   type, extension, language, foreign server or wrapper, collation,
//!   conversion, operator, operator class or family, text search
//!   configuration or dictionary, event trigger, publication, extended
//!   statistics or large object (an owner may alter, fill or drop it);
//! * EXECUTE on any SECURITY DEFINER function whose owner is not in M (it
//!   runs with its owner's rights, which may write);
//! * UPDATE on any large object granted to a role of M or PUBLIC, or
//!   `lo_compat_privileges = on`.
//!
//! What it does not cover, because PostgreSQL grants it to every role and
//! no privilege can take it away: temporary tables (TEMPORARY, PUBLIC's by
//! default, and gone with the session), creating large objects
//! (`lo_create`, `lo_import`), changing the account's own password and
//! its own role settings (`ALTER ROLE CURRENT_USER …`), NOTIFY, advisory
//! locks, and cancelling or ending other backends of the same account (the
//! level's other sessions). Those are left to the session's
//! `default_transaction_read_only = on` and to the classifier. Nor does it
//! look at relations and objects of the server's *other* databases (the
//! level's sessions only reach the target's), at what the account can do on
//! other servers (dblink, postgres_fdw user mappings of others), or at
//! privileges granted between two checks (see `RECHECK_AFTER`).

use super::upstream::{self, Upstream};
use crate::config::{LevelConfig, TargetConfig};

/// Predefined roles that only read, which a read account may hold.
pub const READ_ONLY_PREDEFINED: &[&str] = &[
    "pg_read_all_data",
    "pg_read_all_settings",
    "pg_read_all_stats",
    "pg_stat_scan_tables",
    "pg_monitor",
    "pg_use_reserved_connections",
];

/// Every role the account is a member of, itself included, with the words
/// that name it in a finding (`who`). A superuser is a member of every
/// role; for one, only itself is looked at (that it is a superuser says it
/// all). A privilege the account itself has
/// (its own, inherited or PUBLIC's) is named once, for "it", not again for
/// each role it comes from (`is_self`).
const MEMBERSHIPS: &str = "m AS (\
    SELECT r.oid, r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, \
      r.rolbypassrls, r.rolname = session_user AS is_self, \
      CASE WHEN r.rolname = session_user THEN 'it' \
        ELSE pg_catalog.format('its role %I', r.rolname) END AS who \
    FROM pg_catalog.pg_roles r \
    WHERE pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER') \
      AND (r.rolname = session_user OR NOT (SELECT s.rolsuper FROM pg_catalog.pg_roles s \
        WHERE s.rolname = session_user)))";

/// The table privileges that write, by server version.
const TABLE_PRIVILEGES: &str = "t0 AS (SELECT CASE \
    WHEN pg_catalog.current_setting('server_version_num')::int >= 170000 \
    THEN 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER, MAINTAIN' \
    ELSE 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER' END AS privs), \
    t AS (SELECT privs, pg_catalog.string_to_array(privs, ', ') AS each FROM t0)";

/// Each finding's text; owned objects are listed from each catalog that has an owner.
const FINDINGS: &str = "\
  SELECT pg_catalog.format('%s %s', m.who, a.what) FROM m \
    CROSS JOIN LATERAL (VALUES (m.rolsuper, 'is a superuser'), \
      (m.rolcreaterole, 'has CREATEROLE'), (m.rolcreatedb, 'has CREATEDB'), \
      (m.rolreplication, 'has REPLICATION'), (m.rolbypassrls, 'has BYPASSRLS')) a(held, what) \
    WHERE a.held \
  UNION ALL \
  SELECT pg_catalog.format('it is a member of %I', m.rolname) FROM m \
    WHERE m.rolname LIKE 'pg\\_%' \
      AND m.rolname <> ALL (pg_catalog.string_to_array($READ_ONLY$, ',')) \
  UNION ALL \
  SELECT pg_catalog.format('%s has %s on %s', m.who, \
      (SELECT pg_catalog.string_agg(p, ', ') FROM pg_catalog.unnest(t.each) p \
        WHERE pg_catalog.has_table_privilege(m.oid, c.oid, p)), c.oid::pg_catalog.regclass) \
    FROM m, t, pg_catalog.pg_class c \
    WHERE c.relkind NOT IN ('S', 'i', 'I', 'c') AND c.oid <> 'pg_catalog.pg_settings'::pg_catalog.regclass \
      AND pg_catalog.has_table_privilege(m.oid, c.oid, t.privs) \
      AND (m.is_self OR NOT pg_catalog.has_table_privilege(session_user, c.oid, t.privs)) \
  UNION ALL \
  SELECT pg_catalog.format('%s has INSERT, UPDATE or REFERENCES on columns of %s', m.who, \
      c.oid::pg_catalog.regclass) \
    FROM m, t, pg_catalog.pg_class c \
    WHERE c.relkind NOT IN ('S', 'i', 'I', 'c') AND c.oid <> 'pg_catalog.pg_settings'::pg_catalog.regclass \
      AND NOT pg_catalog.has_table_privilege(m.oid, c.oid, t.privs) \
      AND pg_catalog.has_any_column_privilege(m.oid, c.oid, 'INSERT, UPDATE, REFERENCES') \
      AND (m.is_self OR NOT pg_catalog.has_any_column_privilege(session_user, c.oid, \
        'INSERT, UPDATE, REFERENCES')) \
  UNION ALL \
  SELECT pg_catalog.format('%s has USAGE or UPDATE on sequence %s', m.who, \
      c.oid::pg_catalog.regclass) \
    FROM m, pg_catalog.pg_class c \
    WHERE CASE WHEN c.relkind = 'S' \
      THEN pg_catalog.has_sequence_privilege(m.oid, c.oid, 'USAGE, UPDATE') \
        AND (m.is_self OR NOT pg_catalog.has_sequence_privilege(session_user, c.oid, \
          'USAGE, UPDATE')) \
      ELSE false END \
  UNION ALL \
  SELECT pg_catalog.format('%s may CREATE in schema %I', m.who, n.nspname) \
    FROM m, pg_catalog.pg_namespace n \
    WHERE pg_catalog.has_schema_privilege(m.oid, n.oid, 'CREATE') \
      AND (m.is_self OR NOT pg_catalog.has_schema_privilege(session_user, n.oid, 'CREATE')) \
  UNION ALL \
  SELECT pg_catalog.format('%s may CREATE in database %I', m.who, d.datname) \
    FROM m, pg_catalog.pg_database d \
    WHERE pg_catalog.has_database_privilege(m.oid, d.oid, 'CREATE') \
      AND (m.is_self OR NOT pg_catalog.has_database_privilege(session_user, d.oid, 'CREATE')) \
  UNION ALL \
  SELECT pg_catalog.format('%s owns %s', m.who, o.what) FROM m JOIN ( \
    SELECT relowner, pg_catalog.format('relation %s', oid::pg_catalog.regclass) \
      FROM pg_catalog.pg_class \
    UNION ALL SELECT nspowner, pg_catalog.format('schema %I', nspname) \
      FROM pg_catalog.pg_namespace \
    UNION ALL SELECT proowner, pg_catalog.format('function %s', oid::pg_catalog.regprocedure) \
      FROM pg_catalog.pg_proc \
    UNION ALL SELECT typowner, pg_catalog.format('type %s', oid::pg_catalog.regtype) \
      FROM pg_catalog.pg_type \
    UNION ALL SELECT datdba, pg_catalog.format('database %I', datname) \
      FROM pg_catalog.pg_database \
    UNION ALL SELECT spcowner, pg_catalog.format('tablespace %I', spcname) \
      FROM pg_catalog.pg_tablespace \
    UNION ALL SELECT extowner, pg_catalog.format('extension %I', extname) \
      FROM pg_catalog.pg_extension \
    UNION ALL SELECT lanowner, pg_catalog.format('language %I', lanname) \
      FROM pg_catalog.pg_language \
    UNION ALL SELECT srvowner, pg_catalog.format('foreign server %I', srvname) \
      FROM pg_catalog.pg_foreign_server \
    UNION ALL SELECT fdwowner, pg_catalog.format('foreign-data wrapper %I', fdwname) \
      FROM pg_catalog.pg_foreign_data_wrapper \
    UNION ALL SELECT collowner, pg_catalog.format('collation %I', collname) \
      FROM pg_catalog.pg_collation \
    UNION ALL SELECT conowner, pg_catalog.format('conversion %I', conname) \
      FROM pg_catalog.pg_conversion \
    UNION ALL SELECT oprowner, pg_catalog.format('operator %s', oid::pg_catalog.regoperator) \
      FROM pg_catalog.pg_operator \
    UNION ALL SELECT opcowner, pg_catalog.format('operator class %I', opcname) \
      FROM pg_catalog.pg_opclass \
    UNION ALL SELECT opfowner, pg_catalog.format('operator family %I', opfname) \
      FROM pg_catalog.pg_opfamily \
    UNION ALL SELECT cfgowner, pg_catalog.format('text search configuration %I', cfgname) \
      FROM pg_catalog.pg_ts_config \
    UNION ALL SELECT dictowner, pg_catalog.format('text search dictionary %I', dictname) \
      FROM pg_catalog.pg_ts_dict \
    UNION ALL SELECT evtowner, pg_catalog.format('event trigger %I', evtname) \
      FROM pg_catalog.pg_event_trigger \
    UNION ALL SELECT pubowner, pg_catalog.format('publication %I', pubname) \
      FROM pg_catalog.pg_publication \
    UNION ALL SELECT stxowner, pg_catalog.format('statistics object %I', stxname) \
      FROM pg_catalog.pg_statistic_ext \
    UNION ALL SELECT lomowner, pg_catalog.format('large object %s', oid) \
      FROM pg_catalog.pg_largeobject_metadata \
  ) o(owner, what) ON o.owner = m.oid \
  UNION ALL \
  SELECT pg_catalog.format('it may run SECURITY DEFINER function %s of %I', \
      p.oid::pg_catalog.regprocedure, pg_catalog.pg_get_userbyid(p.proowner)) \
    FROM pg_catalog.pg_proc p \
    WHERE p.prosecdef AND p.proowner NOT IN (SELECT oid FROM m) \
      AND EXISTS (SELECT FROM m \
        WHERE pg_catalog.has_function_privilege(m.oid, p.oid, 'EXECUTE')) \
  UNION ALL \
  SELECT pg_catalog.format('it may write large object %s (UPDATE granted to %s)', l.oid, \
      CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
        ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END) \
    FROM pg_catalog.pg_largeobject_metadata l \
    CROSS JOIN LATERAL pg_catalog.aclexplode(l.lomacl) a \
    WHERE a.privilege_type = 'UPDATE' AND (a.grantee = 0 OR a.grantee IN (SELECT oid FROM m)) \
  UNION ALL \
  SELECT 'lo_compat_privileges is on, so any role may write large objects' \
    WHERE pg_catalog.current_setting('lo_compat_privileges')::bool";

/// What the check's connection calls itself in `pg_stat_activity` and the
/// server's log.
pub const APPLICATION_NAME: &str = "jitgate-read-account-check";

/// The most findings one check brings back (a superuser owns everything).
const MAX_FINDINGS: usize = 50;

/// The check's statement.
fn statement() -> String {
    let read_only = format!("'{}'", READ_ONLY_PREDEFINED.join(","));
    format!(
        "WITH {MEMBERSHIPS}, {TABLE_PRIVILEGES} SELECT f FROM ({}) AS f(f) \
         ORDER BY f NOT LIKE '% is a superuser', f NOT LIKE 'it is %', f NOT LIKE 'it %' \
         LIMIT {MAX_FINDINGS}",
        FINDINGS.replace("$READ_ONLY$", &read_only)
    )
}

/// The ways the level's account can write, as the server sees it (empty:
/// none); `Err` says why the check did not finish. Logs in as the level's
/// account, like a session.
pub async fn findings(
    target: &TargetConfig,
    level_name: &str,
    level: &LevelConfig,
    max_message_bytes: usize,
) -> Result<Vec<String>, String> {
    // The catalog's own functions and operators, whatever the account's
    // role settings say: its temporary schema last, no schema of its own.
    let params = [
        ("application_name".to_owned(), APPLICATION_NAME.to_owned()),
        ("search_path".to_owned(), "pg_catalog, pg_temp".to_owned()),
    ];
    let mut up = upstream::connect(target, level_name, level, &params, max_message_bytes)
        .await
        .map_err(|e| e.to_string())?;
    let rows = upstream::query_rows(&mut up, &statement(), target.connect_timeout.max(WAIT)).await;
    upstream::terminate(&mut up).await;
    Ok(rows?
        .into_iter()
        .map(|row| row.into_iter().next().flatten().unwrap_or_default())
        .collect())
}

/// How long the check waits for its answer at least (the catalog scan of a
/// large database takes a while).
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// DEMO ONLY (`demo_create_read_accounts_with`): log in as the level
/// `with`'s account and create the account of each read-only level of
/// `target` if it does not exist: LOGIN, no password, a member of
/// `pg_read_all_data` (or, before PostgreSQL 14, SELECT on the tables of
/// schema `public`). An existing role is only granted that; its other
/// attributes are left as they are (and the check will say if they write).
/// Refuses unless the connection reached a loopback address.
pub async fn create_demo_accounts(
    target: &TargetConfig,
    with: &str,
    max_message_bytes: usize,
) -> Result<Vec<String>, String> {
    let creator = target
        .levels
        .get(with)
        .ok_or_else(|| format!("target {} has no level {with}", target.name))?;
    let mut up = upstream::connect(target, with, creator, &[], max_message_bytes)
        .await
        .map_err(|e| e.to_string())?;
    let created = create_on(&mut up, target).await;
    upstream::terminate(&mut up).await;
    created
}

async fn create_on(up: &mut Upstream, target: &TargetConfig) -> Result<Vec<String>, String> {
    if !up.server.is_some_and(|a| a.ip().is_loopback()) {
        return Err(format!(
            "{} did not lead to a loopback address; demo accounts are only created on this machine",
            target.address
        ));
    }
    let mut made = Vec::new();
    for level in target.levels.values().filter(|l| l.read_only) {
        // Config validation allows only [A-Za-z0-9_] names here; quoted anyway.
        let name = &level.user;
        let sql = format!(
            "DO $jitgate$ BEGIN \
               IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{name}') THEN \
                 CREATE ROLE \"{name}\" LOGIN; \
               END IF; \
               IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pg_read_all_data') THEN \
                 GRANT pg_read_all_data TO \"{name}\"; \
               ELSE \
                 GRANT USAGE ON SCHEMA public TO \"{name}\"; \
                 GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{name}\"; \
               END IF; \
             END $jitgate$"
        );
        upstream::query_rows(up, &sql, WAIT).await?;
        made.push(name.clone());
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_names_the_read_only_predefined_roles_and_a_limit() {
        let sql = statement();
        assert!(
            sql.contains("'pg_read_all_data,pg_read_all_settings,"),
            "{sql}"
        );
        assert!(!sql.contains("$READ_ONLY$"));
        assert!(sql.ends_with("LIMIT 50"));
    }
}
