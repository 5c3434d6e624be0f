//! The configuration as an operator meets it: what loads, to which values,
//! and every refusal with the key it names, all through [`Config::from_toml`].

use super::*;

/// The smallest config that loads, with `listen` keys and further tables added.
fn config_with(listen: &str, tables: &str) -> String {
    format!(
        "data_dir = \"data\"\n[listen]\npostgres = \"127.0.0.1:6432\"\n{listen}\n\
         [tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n{tables}\n"
    )
}

/// Why `config_with(listen, tables)` is refused, without the file name.
fn refusal(listen: &str, tables: &str) -> String {
    let path = Path::new("/etc/jitgate/jitgate.toml");
    let e = Config::from_toml(&config_with(listen, tables), path)
        .expect_err(&format!("{listen} {tables} must be refused"))
        .to_string();
    e.strip_prefix("/etc/jitgate/jitgate.toml: ")
        .unwrap_or(&e)
        .to_owned()
}

const TARGET: &str = "[[targets]]\nname = \"t\"\nprotocol = \"postgres\"\n\
    address = \"db:5432\"\ndatabase = \"d\"\n";
const LEVELS: &str = "[targets.levels.read]\nuser = \"r\"\nread_only = true\n\
    [targets.levels.write]\nuser = \"w\"\n";
const POLICY: &str = "name = \"p\"\ntargets = [\"t\"]\nlevels = [\"read\"]\n\
    requesters = [\"dev\"]\nmax_duration = \"1h\"\napprovers = [\"lead\"]\n";

/// Target `t` (levels `read` and `write`) and one policy of `fields`.
fn policy(fields: &str) -> String {
    format!("{TARGET}{LEVELS}[[policies]]\n{fields}\n")
}

fn identity(name: &str, secret: &str) -> String {
    format!("[[identities]]\nname = \"{name}\"\nsecret = \"{secret}\"\n")
}

#[test]
fn every_refusal_names_its_key_and_why() {
    let verifier = crate::identity::ScramVerifier::generate("s3cret");
    let levels_of_zero = "[limits]\nmax_pending_handshakes = 0";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "mysql = \"localhost:3306\"",
            String::new(),
            "`listen.mysql`: `localhost:3306` is not an address like \"127.0.0.1:6432\"",
        ),
        (
            "admin = \"127.0.0.1\"",
            String::new(),
            "`listen.admin`: `127.0.0.1` is not an address like \"127.0.0.1:6432\"",
        ),
        (
            "mysql_server_version = \"10.11\\t\"",
            String::new(),
            "`listen.mysql_server_version`: must be 1 to 60 printable ASCII characters, \
             like \"10.11.19-MariaDB\"",
        ),
        (
            "",
            "[audit]\nfsync = \"sometimes\"".into(),
            "`audit.fsync`: `sometimes` must be \"always\" or an interval like \"100ms\"",
        ),
        (
            "",
            levels_of_zero.into(),
            "`limits`: max_pending_handshakes, max_pending_handshakes_per_address and \
             max_sessions must be at least 1",
        ),
        (
            "",
            "[limits]\nmax_pending_handshakes_per_address = 0".into(),
            "`limits`: max_pending_handshakes, max_pending_handshakes_per_address and \
             max_sessions must be at least 1",
        ),
        (
            "",
            "[limits]\nmax_sessions = 0".into(),
            "`limits`: max_pending_handshakes, max_pending_handshakes_per_address and \
             max_sessions must be at least 1",
        ),
        (
            "",
            "[limits]\nfirst_message_timeout = \"0s\"".into(),
            "`limits.first_message_timeout`: must be more than 0s",
        ),
        (
            "",
            "[limits]\nadmin_header_read_timeout = \"0s\"".into(),
            "`limits.admin_header_read_timeout`: must be more than 0s",
        ),
        (
            "",
            "[limits]\nadmin_idle_timeout = \"0s\"".into(),
            "`limits.admin_idle_timeout`: must be more than 0s",
        ),
        (
            "",
            "[limits]\nadmin_request_timeout = \"0s\"".into(),
            "`limits.admin_request_timeout`: must be more than 0s",
        ),
        (
            "",
            "[limits]\nadmin_max_connections = 0".into(),
            "`limits.admin_max_connections`: must be at least 1",
        ),
        (
            "",
            "[limits]\nmax_classified_statement_bytes = 1023".into(),
            "`limits.max_classified_statement_bytes`: must be at least 1024",
        ),
        (
            "",
            "[limits]\nmax_message_bytes = 1023".into(),
            "`limits.max_message_bytes`: must be at least 1024",
        ),
        (
            "",
            identity("", &verifier),
            "`identities[0].name`: must not be empty",
        ),
        (
            "",
            identity("a", &verifier) + &identity("a", &verifier),
            "`identities[1].name`: identity `a` is defined twice",
        ),
        (
            "",
            identity("a", "hunter2"),
            "`identities[0].secret`: must be a SCRAM-SHA-256 verifier (generate one with \
             `jitgate passwd`)",
        ),
        (
            "",
            format!("{TARGET}{LEVELS}{TARGET}{LEVELS}"),
            "`targets[1].name`: target `t` is defined twice",
        ),
        (
            "",
            format!("{TARGET}tls = \"verify-full\"\n{LEVELS}"),
            "`targets[0].tls_ca_file`: is required with tls = \"verify-full\"",
        ),
        (
            "",
            format!("{TARGET}tls = \"prefer\"\n{LEVELS}"),
            "`targets[0].tls`: `prefer` must be one of \"disable\", \"require\", \
             \"verify-full\"",
        ),
        (
            "",
            format!("{TARGET}levels = {{}}\n"),
            "`targets[0].levels`: a target needs at least one level",
        ),
        (
            "",
            format!("{TARGET}{LEVELS}password_env = \"P\"\npassword_file = \"p\"\n"),
            "`targets[0].levels.write`: set password_env or password_file, not both",
        ),
        (
            "",
            policy(&format!("{POLICY}[[policies]]\n{POLICY}")),
            "`policies[1].name`: policy `p` is defined twice",
        ),
        (
            "",
            policy(&POLICY.replace("\"p\"", "\" \"")),
            "`policies[0].name`: must not be empty",
        ),
        (
            "",
            policy(&POLICY.replace("[\"t\"]", "[]")),
            "`policies[0].targets`: name at least one target (or \"*\" for all)",
        ),
        (
            "",
            policy(&POLICY.replace("[\"t\"]", "[\"u\"]")),
            "`policies[0].targets`: no target is named `u`",
        ),
        (
            "",
            policy(&POLICY.replace("[\"read\"]", "[]")),
            "`policies[0].levels`: name at least one level (or \"*\" for all)",
        ),
        (
            "",
            policy(&POLICY.replace("[\"read\"]", "[\"admin\"]")),
            "`policies[0].levels`: none of the policy's targets has a level named `admin`",
        ),
        (
            "",
            policy(&POLICY.replace("[\"dev\"]", "[]")),
            "`policies[0].requesters`: name at least one group that may request",
        ),
        (
            "",
            policy(&POLICY.replace("\"1h\"", "\"500ms\"")),
            "`policies[0].max_duration`: must be between 1s and 365 days",
        ),
        (
            "",
            policy(&POLICY.replace("\"1h\"", "\"366days\"")),
            "`policies[0].max_duration`: must be between 1s and 365 days",
        ),
        (
            "",
            policy(&format!(
                "{POLICY}auto_approve = {{ groups = [], max_duration = \"15m\" }}"
            )),
            "`policies[0].auto_approve.groups`: name at least one group whose requests \
             are approved at once",
        ),
        (
            "",
            policy(&format!(
                "{POLICY}auto_approve = {{ groups = [\"oncall\"], max_duration = \"0s\" }}"
            )),
            "`policies[0].auto_approve.max_duration`: must be between 1s and 365 days",
        ),
        (
            "",
            policy(&format!(
                "{POLICY}auto_approve = {{ groups = [\"oncall\"], max_duration = \"2h\" }}"
            )),
            "`policies[0].auto_approve.max_duration`: `2h` is longer than the policy's \
             max_duration `1h`",
        ),
        (
            "",
            policy(&format!("{POLICY}approvals = 0")),
            "`policies[0].approvals`: must be at least 1 (use auto_approve for requests \
             that need no approver)",
        ),
        (
            "",
            policy(&POLICY.replace("approvers = [\"lead\"]", "")),
            "`policies[0].approvers`: name at least one group that may approve",
        ),
        (
            "",
            "[requests]\nmax_reason_chars = 0".into(),
            "`requests`: max_reason_chars and max_pending_per_identity must be at least 1",
        ),
        (
            "",
            "[requests]\nmax_pending_per_identity = 0".into(),
            "`requests`: max_reason_chars and max_pending_per_identity must be at least 1",
        ),
        (
            "",
            "[requests]\npending_timeout = \"0s\"".into(),
            "`requests.pending_timeout`: must be more than 0s and at most 365 days",
        ),
        (
            "",
            "[requests]\npending_timeout = \"366days\"".into(),
            "`requests.pending_timeout`: must be more than 0s and at most 365 days",
        ),
        (
            "",
            "[[webhooks]]\nurl = \"ftp://x\"".into(),
            "`webhooks[0].url`: must be an http:// or https:// URL",
        ),
    ];
    for (listen, tables, want) in cases {
        assert_eq!(refusal(listen, &tables), want, "{listen} {tables}");
    }
}

#[test]
fn a_value_that_is_not_a_duration_is_refused_by_key() {
    let not_a_duration = "is not a duration like \"10s\" or \"250ms\": ";
    let cases: Vec<(String, &str)> = vec![
        (
            "[limits]\nhandshake_timeout = \"10\"".into(),
            "limits.handshake_timeout",
        ),
        (
            "[limits]\nfirst_message_timeout = \"x\"".into(),
            "limits.first_message_timeout",
        ),
        (
            "[limits]\nlogin_failure_window = \"x\"".into(),
            "limits.login_failure_window",
        ),
        (
            "[limits]\nadmin_header_read_timeout = \"x\"".into(),
            "limits.admin_header_read_timeout",
        ),
        (
            "[limits]\nadmin_idle_timeout = \"x\"".into(),
            "limits.admin_idle_timeout",
        ),
        (
            "[limits]\nadmin_request_timeout = \"x\"".into(),
            "limits.admin_request_timeout",
        ),
        (
            format!("{TARGET}connect_timeout = \"x\"\n{LEVELS}"),
            "targets[0].connect_timeout",
        ),
        (
            policy(&POLICY.replace("\"1h\"", "\"x\"")),
            "policies[0].max_duration",
        ),
        (
            policy(&format!(
                "{POLICY}auto_approve = {{ groups = [\"oncall\"], max_duration = \"x\" }}"
            )),
            "policies[0].auto_approve.max_duration",
        ),
        (
            "[requests]\npending_timeout = \"x\"".into(),
            "requests.pending_timeout",
        ),
        (
            "[[webhooks]]\nurl = \"https://x\"\ntimeout = \"x\"".into(),
            "webhooks[0].timeout",
        ),
    ];
    for (tables, key) in cases {
        let e = refusal("", &tables);
        let value = if key == "limits.handshake_timeout" {
            "10"
        } else {
            "x"
        };
        assert!(
            e.starts_with(&format!("`{key}`: `{value}` {not_a_duration}")),
            "{tables}: {e}"
        );
    }
}

/// The key named by the refusal of `config_with(listen, tables)`.
fn first_key(listen: &str, tables: &str) -> String {
    let e = refusal(listen, tables);
    e[1..].split_once('`').expect(&e).0.to_owned()
}

/// Where one value or one table has several faults, the operator hears of
/// the one a reader of the file meets first.
#[test]
fn within_a_table_the_first_fault_is_the_one_reported() {
    assert_eq!(
        first_key("mysql = \"x\"\nadmin = \"x\"", ""),
        "listen.mysql"
    );
    assert_eq!(
        first_key(
            "",
            "[limits]\nhandshake_timeout = \"x\"\nsession_threads = 0"
        ),
        "limits.handshake_timeout"
    );
    assert_eq!(
        first_key("", "[limits]\nsession_threads = 0\nmax_sessions = 0"),
        "limits.session_threads"
    );
    assert_eq!(
        first_key(
            "",
            "[limits]\nmax_sessions = 0\nfirst_message_timeout = \"0s\""
        ),
        "limits"
    );
    assert_eq!(
        first_key(
            "",
            "[limits]\nadmin_request_timeout = \"0s\"\nadmin_max_connections = 0"
        ),
        "limits.admin_request_timeout"
    );
    assert_eq!(
        first_key("", &identity("", "hunter2")),
        "identities[0].name"
    );
    assert_eq!(
        first_key("", &format!("{TARGET}tls = \"prefer\"\nlevels = {{}}\n")),
        "targets[0].tls"
    );
    assert_eq!(
        first_key(
            "",
            &format!(
                "{TARGET}connect_timeout = \"x\"\n{LEVELS}password_env = \"P\"\n\
                 password_file = \"p\"\n"
            )
        ),
        "targets[0].levels.write"
    );
    assert_eq!(
        first_key(
            "",
            &format!(
                "{TARGET}connect_timeout = \"x\"\ndemo_create_read_accounts_with = \"nope\"\n{LEVELS}"
            )
        ),
        "targets[0].demo_create_read_accounts_with"
    );
    assert_eq!(
        first_key(
            "",
            &policy(
                &POLICY
                    .replace("[\"t\"]", "[\"u\"]")
                    .replace("[\"read\"]", "[]")
            )
        ),
        "policies[0].targets"
    );
    assert_eq!(
        first_key(
            "",
            &policy(&format!(
                "{POLICY}approvals = 0\nauto_approve = {{ groups = [], max_duration = \"1m\" }}"
            ))
        ),
        "policies[0].auto_approve.groups"
    );
    assert_eq!(
        first_key(
            "",
            "[requests]\npending_timeout = \"0s\"\nmax_reason_chars = 0"
        ),
        "requests"
    );
}

/// Every table broken at once, then mended one by one: the operator hears
/// of the tables in the order they appear in the file.
#[test]
fn across_tables_the_first_fault_in_file_order_is_the_one_reported() {
    let verifier = crate::identity::ScramVerifier::generate("s3cret");
    let mut listen = "admin = \"x\"".to_owned();
    let mut tables = [
        ("audit.fsync", "[audit]\nfsync = \"x\"\n".to_owned()),
        (
            "limits.max_message_bytes",
            "[limits]\nmax_message_bytes = 1\n".to_owned(),
        ),
        ("identities[0].secret", identity("a", "hunter2")),
        ("targets[0].levels", format!("{TARGET}levels = {{}}\n")),
        (
            "requests.pending_timeout",
            "[requests]\npending_timeout = \"0s\"\n".to_owned(),
        ),
        ("webhooks[0].url", "[[webhooks]]\nurl = \"x\"\n".to_owned()),
    ];
    let all =
        |tables: &[(&str, String)]| tables.iter().map(|(_, t)| t.as_str()).collect::<String>();
    assert_eq!(first_key(&listen, &all(&tables)), "listen.admin");
    listen.clear();
    for i in 0..tables.len() {
        assert_eq!(first_key(&listen, &all(&tables)), tables[i].0);
        tables[i].1 = match i {
            2 => identity("a", &verifier),
            3 => format!("{TARGET}{LEVELS}"),
            _ => String::new(),
        };
    }
    Config::from_toml(&config_with(&listen, &all(&tables)), Path::new("j.toml")).unwrap();
}

#[test]
fn tables_left_out_take_their_defaults_and_paths_are_relative_to_the_file() {
    let c = Config::from_toml(
        &config_with(
            "",
            &format!("{TARGET}{LEVELS}[[webhooks]]\nurl = \"https://x\""),
        ),
        Path::new("/etc/jitgate/jitgate.toml"),
    )
    .unwrap();
    assert_eq!(c.source, Path::new("/etc/jitgate/jitgate.toml"));
    assert_eq!(c.data_dir, Path::new("/etc/jitgate/data"));
    assert_eq!(c.listen.postgres, Some("127.0.0.1:6432".parse().unwrap()));
    assert_eq!((c.listen.mysql, c.listen.admin), (None, None));
    assert_eq!(c.listen.mysql_server_version, None);
    assert_eq!(c.tls.cert, Path::new("/etc/jitgate/c.pem"));
    assert_eq!(c.tls.key, Path::new("/etc/jitgate/k.pem"));
    assert!(c.tls.require && !c.tls.self_signed_if_missing);
    assert_eq!(c.audit.path, Path::new("/etc/jitgate/data/audit.log"));
    assert_eq!(
        c.audit.fsync,
        FsyncPolicy::Interval(Duration::from_millis(100))
    );
    let l = &c.limits;
    assert_eq!(l.handshake_timeout, Duration::from_secs(10));
    assert_eq!(l.first_message_timeout, Duration::from_secs(3));
    assert_eq!(l.max_pending_handshakes, 256);
    assert_eq!(l.max_pending_handshakes_per_address, 32);
    assert_eq!(l.max_sessions, 10_000);
    assert_eq!(l.max_message_bytes, 64 << 20);
    assert_eq!(
        l.max_classified_statement_bytes,
        crate::sql::DEFAULT_MAX_CLASSIFIED_SQL_BYTES
    );
    assert_eq!(l.max_login_failures, 10);
    assert_eq!(l.login_failure_window, Duration::from_secs(60));
    assert_eq!(l.admin_max_connections, 128);
    assert_eq!(l.admin_header_read_timeout, Duration::from_secs(10));
    assert_eq!(l.admin_idle_timeout, Duration::from_secs(60));
    assert_eq!(l.admin_request_timeout, Duration::from_secs(30));
    assert!(c.identities.is_empty() && c.policies.is_empty());
    let t = c.target("t").unwrap();
    assert_eq!(t.tls, UpstreamTls::Disable);
    assert_eq!(t.connect_timeout, Duration::from_secs(5));
    assert_eq!(t.levels["write"].password, SecretSource::None);
    assert!(!t.levels["write"].read_only);
    assert_eq!(c.requests.pending_timeout, Duration::from_secs(3600));
    assert_eq!(c.requests.max_reason_chars, 1000);
    assert_eq!(c.requests.max_pending_per_identity, 10);
    assert_eq!(c.webhooks[0].timeout, Duration::from_secs(2));
    assert_eq!(c.webhooks[0].retries, 3);
}

/// A config that sets every key, each to a value other than its default.
fn config_with_every_key(verifier: &str) -> String {
    let listen = "mysql = \"127.0.0.1:3307\"\nmysql_server_version = \"10.11.19-MariaDB\"\n\
                  admin = \"[::1]:8080\"";
    let tables = format!(
        "require = false\nself_signed_if_missing = true\n\
         [audit]\npath = \"/var/log/audit.log\"\nfsync = \"always\"\n\
         [limits]\nhandshake_timeout = \"1s\"\nfirst_message_timeout = \"2s\"\n\
         max_pending_handshakes = 3\nmax_pending_handshakes_per_address = 4\n\
         max_sessions = 5\nmax_message_bytes = 6000\n\
         max_classified_statement_bytes = 7000\nmax_login_failures = 8\n\
         login_failure_window = \"9s\"\nsession_threads = 2\nadmin_max_connections = 11\n\
         admin_header_read_timeout = \"12s\"\nadmin_idle_timeout = \"13s\"\n\
         admin_request_timeout = \"14s\"\n\
         {identity}\
         groups = [\"dev\"]\n\
         {TARGET}tls = \"verify-full\"\ntls_ca_file = \"ca.pem\"\n\
         tls_server_name = \"db.internal\"\nconnect_timeout = \"15s\"\n\
         [targets.levels.read]\nuser = \"r\"\nread_only = true\npassword_env = \"R\"\n\
         [targets.levels.write]\nuser = \"w\"\npassword_file = \"/run/w\"\n\
         [[targets]]\nname = \"m\"\nprotocol = \"mysql\"\naddress = \"db:3306\"\n\
         database = \"d\"\ntls = \"require\"\n[targets.levels.all]\nuser = \"a\"\n\
         password_file = \"secrets/a\"\n\
         [[policies]]\n{POLICY}approvals = 2\n\
         auto_approve = {{ groups = [\"oncall\"], max_duration = \"15m\" }}\n\
         [[policies]]\nname = \"any\"\ntargets = [\"*\"]\nlevels = [\"*\"]\n\
         requesters = [\"ops\"]\nmax_duration = \"365days\"\napprovers = [\"ops\"]\n\
         [requests]\npending_timeout = \"16m\"\nmax_reason_chars = 17\n\
         max_pending_per_identity = 18\n\
         [[webhooks]]\nurl = \"http://hook\"\ntimeout = \"19s\"\nretries = 0\n",
        identity = identity("alice", verifier),
    );
    config_with(listen, &tables)
}

#[test]
fn every_key_of_the_proxy_itself_is_read_as_given() {
    let verifier = crate::identity::ScramVerifier::generate("s3cret");
    let c = Config::from_toml(&config_with_every_key(&verifier), Path::new("j.toml")).unwrap();
    assert_eq!(c.data_dir, Path::new("./data"));
    assert_eq!(c.listen.mysql, Some("127.0.0.1:3307".parse().unwrap()));
    assert_eq!(
        c.listen.mysql_server_version.as_deref(),
        Some("10.11.19-MariaDB")
    );
    assert_eq!(c.listen.admin, Some("[::1]:8080".parse().unwrap()));
    assert!(!c.tls.require && c.tls.self_signed_if_missing);
    assert_eq!(c.audit.path, Path::new("/var/log/audit.log"));
    assert_eq!(c.audit.fsync, FsyncPolicy::Always);
    let l = &c.limits;
    let secs = Duration::from_secs;
    assert_eq!(
        (
            l.handshake_timeout,
            l.first_message_timeout,
            l.login_failure_window
        ),
        (secs(1), secs(2), secs(9))
    );
    assert_eq!(
        (
            l.max_pending_handshakes,
            l.max_pending_handshakes_per_address,
            l.max_sessions
        ),
        (3, 4, 5)
    );
    assert_eq!(
        (l.max_message_bytes, l.max_classified_statement_bytes),
        (6000, 7000)
    );
    assert_eq!(
        (
            l.max_login_failures,
            l.session_threads,
            l.admin_max_connections
        ),
        (8, 2, 11)
    );
    assert_eq!(
        (
            l.admin_header_read_timeout,
            l.admin_idle_timeout,
            l.admin_request_timeout
        ),
        (secs(12), secs(13), secs(14))
    );
}

#[test]
fn every_key_of_identities_targets_and_policies_is_read_as_given() {
    let verifier = crate::identity::ScramVerifier::generate("s3cret");
    let c = Config::from_toml(&config_with_every_key(&verifier), Path::new("j.toml")).unwrap();
    let secs = Duration::from_secs;
    let alice = c.identity("alice").unwrap();
    assert_eq!(
        (alice.groups.as_slice(), alice.secret.as_str()),
        (&["dev".to_owned()][..], verifier.as_str())
    );
    let t = c.target("t").unwrap();
    assert_eq!(t.protocol, Protocol::Postgres);
    assert_eq!((t.address.as_str(), t.database.as_str()), ("db:5432", "d"));
    assert_eq!(
        t.tls,
        UpstreamTls::VerifyFull {
            ca_file: "./ca.pem".into()
        }
    );
    assert_eq!(t.tls_server_name.as_deref(), Some("db.internal"));
    assert_eq!(t.connect_timeout, secs(15));
    assert_eq!(t.levels["read"].password, SecretSource::Env("R".into()));
    assert_eq!(
        t.levels["write"].password,
        SecretSource::File("/run/w".into())
    );
    let m = c.target("m").unwrap();
    assert_eq!(
        (m.protocol, &m.tls),
        (Protocol::Mysql, &UpstreamTls::Require)
    );
    assert_eq!(
        m.levels["all"].password,
        SecretSource::File("./secrets/a".into())
    );
    let p = &c.policies[0];
    assert_eq!((p.max_duration, p.approvals), (secs(3600), 2));
    let auto = p.auto_approve.as_ref().unwrap();
    assert_eq!(
        (auto.groups.as_slice(), auto.max_duration),
        (&["oncall".to_owned()][..], secs(900))
    );
    assert_eq!(c.policies[1].max_duration, secs(365 * 24 * 3600));
    assert_eq!(c.requests.pending_timeout, secs(960));
    assert_eq!(
        (
            c.requests.max_reason_chars,
            c.requests.max_pending_per_identity
        ),
        (17, 18)
    );
    assert_eq!(
        (
            c.webhooks[0].url.as_str(),
            c.webhooks[0].timeout,
            c.webhooks[0].retries
        ),
        ("http://hook", secs(19), 0)
    );
}

#[test]
fn a_missing_file_and_unknown_keys_are_refused_with_the_parser_s_words() {
    let e = Config::load(Path::new("/nonexistent/jitgate.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cannot read config file /nonexistent/jitgate.toml: "),
        "{e}"
    );
    let e = refusal("", "[limits]\nsessions = 1");
    assert!(
        e.contains("unknown field `sessions`, expected one of `handshake_timeout`, "),
        "{e}"
    );
    let e = refusal("", "[[targets]]\nname = \"t\"\nprotocol = \"oracle\"");
    assert!(
        e.contains("unknown variant `oracle`, expected `postgres` or `mysql`"),
        "{e}"
    );
}

fn with_limits(limits: &str) -> Result<Config, ConfigError> {
    let text = format!(
        "data_dir = \"data\"\n[listen]\npostgres = \"127.0.0.1:6432\"\n\
         [tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[limits]\n{limits}\n"
    );
    Config::from_toml(&text, Path::new("/etc/jitgate/jitgate.toml"))
}

fn with_target(address: &str, target: &str) -> Result<Config, ConfigError> {
    let text = format!(
        "data_dir = \"data\"\n[listen]\npostgres = \"127.0.0.1:6432\"\n\
         [tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
         [[targets]]\nname = \"demo\"\nprotocol = \"postgres\"\naddress = \"{address}\"\n\
         database = \"postgres\"\n{target}\n"
    );
    Config::from_toml(&text, Path::new("/etc/jitgate/jitgate.toml"))
}

const DEMO_LEVELS: &str = "demo_create_read_accounts_with = \"write\"\n\
    [targets.levels.read]\nuser = \"jitgate_demo_read\"\nread_only = true\n\
    [targets.levels.write]\nuser = \"postgres\"\n";

#[test]
fn demo_read_accounts_are_only_created_on_this_machine() {
    for address in [
        "127.0.0.1:5432",
        "localhost:5432",
        "[::1]:5432",
        "127.0.0.2:1",
    ] {
        let c = with_target(address, DEMO_LEVELS).expect(address);
        assert_eq!(
            c.targets[0].demo_create_read_accounts_with.as_deref(),
            Some("write")
        );
    }
    for address in ["db.example.com:5432", "10.0.0.5:5432"] {
        let e = with_target(address, DEMO_LEVELS)
            .expect_err(address)
            .to_string();
        assert!(e.contains("not a loopback address"), "{e}");
    }
}

#[test]
fn demo_read_accounts_need_a_writing_level_and_a_plain_name_of_their_own() {
    let e = |levels: &str| {
        with_target("127.0.0.1:5432", levels)
            .unwrap_err()
            .to_string()
    };
    assert!(
        e(&DEMO_LEVELS.replace("= \"write\"", "= \"admin\"")).contains("no level named `admin`")
    );
    assert!(e(&DEMO_LEVELS.replace("= \"write\"", "= \"read\"")).contains("is read-only"));
    assert!(
        e(&DEMO_LEVELS.replace("jitgate_demo_read", "postgres"))
            .contains("is the account of level `write`")
    );
    assert!(
        e(&DEMO_LEVELS.replace("jitgate_demo_read", "x'; DROP ROLE y; --"))
            .contains("letters, digits and _ only")
    );
    assert!(
        e(&DEMO_LEVELS.replace("read_only = true", "read_only = true\npassword_env = \"P\""))
            .contains("created without a password")
    );
}

#[test]
fn allow_privileged_read_account_is_for_read_levels_only() {
    let read = "[targets.levels.read]\nuser = \"r\"\nread_only = true\n\
                allow_privileged_read_account = true\n";
    let c = with_target("db:5432", read).unwrap();
    assert!(c.targets[0].levels["read"].allow_privileged_read_account);
    let write = "[targets.levels.write]\nuser = \"w\"\nallow_privileged_read_account = true\n";
    let e = with_target("db:5432", write).unwrap_err().to_string();
    assert_eq!(
        e,
        "/etc/jitgate/jitgate.toml: `targets[0].levels.write.allow_privileged_read_account`: \
         only applies to a level with read_only = true"
    );
}

#[test]
fn session_threads_default_to_half_the_cpus_and_can_be_set() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let c = with_limits("").unwrap();
    assert_eq!(c.limits.session_threads, (cpus / 2).max(1));
    let c = with_limits("session_threads = 3").unwrap();
    assert_eq!(c.limits.session_threads, 3);
}

#[test]
fn zero_or_absurd_session_threads_are_refused_by_key() {
    for bad in ["session_threads = 0", "session_threads = 100000"] {
        let e = with_limits(bad).expect_err(bad).to_string();
        assert_eq!(
            e, "/etc/jitgate/jitgate.toml: `limits.session_threads`: must be between 1 and 1024",
            "{bad}"
        );
    }
}

#[test]
fn the_store_is_the_file_unless_a_postgres_url_source_is_named() {
    let path = Path::new("/etc/jitgate/jitgate.toml");
    let c = Config::from_toml(&config_with("", ""), path).unwrap();
    assert!(matches!(c.store.kind, StoreKind::File));
    assert!(!c.store.proxy_name.is_empty(), "defaults to the host name");
    assert_eq!(c.audit.path, Path::new("/etc/jitgate/data/audit.log"));

    let pg = "[store]\nkind = \"postgres\"\nurl_file = \"store-url\"\nproxy_name = \"jg-a.1\"\n\
              fail_closed_after = \"5s\"\ntls = \"verify-full\"\ntls_ca_file = \"ca.pem\"\n";
    let c = Config::from_toml(&config_with("", pg), path).unwrap();
    let StoreKind::Postgres(store) = &c.store.kind else {
        panic!("{:?}", c.store.kind)
    };
    assert_eq!(c.store.proxy_name, "jg-a.1");
    assert_eq!(
        store.url,
        SecretSource::File("/etc/jitgate/store-url".into())
    );
    assert_eq!(store.fail_closed_after, Duration::from_secs(5));
    assert_eq!(
        store.tls_ca_file.as_deref(),
        Some(Path::new("/etc/jitgate/ca.pem"))
    );
    // Each proxy of a fleet keeps its own audit chain, named after it.
    assert_eq!(
        c.audit.path,
        Path::new("/etc/jitgate/data/audit-jg-a.1.log")
    );
}

#[test]
fn a_store_that_cannot_work_is_refused_naming_its_key() {
    let store = |keys: &str| refusal("", &format!("[store]\n{keys}\n"));
    assert_eq!(
        store("kind = \"etcd\""),
        "`store.kind`: `etcd` is not a store; use \"file\" (the default) or \"postgres\""
    );
    let needs_url = "`store`: kind = \"postgres\" needs exactly one of url_env or url_file: where \
                     the connection URL (with its password) is read; never the URL itself";
    assert_eq!(store("kind = \"postgres\""), needs_url);
    assert_eq!(
        store("kind = \"postgres\"\nurl_env = \"A\"\nurl_file = \"b\""),
        needs_url
    );
    assert_eq!(
        store("url_env = \"A\""),
        "`store.url_env`: applies to kind = \"postgres\" only; the file store keeps its journal in data_dir"
    );
    assert_eq!(
        store("proxy_name = \"a b\""),
        "`store.proxy_name`: `a b` must be 1 to 64 letters, digits, '.', '_' or '-'"
    );
    assert_eq!(
        store("kind = \"postgres\"\nurl_env = \"A\"\nfail_closed_after = \"500ms\""),
        "`store.fail_closed_after`: must be between 1s and 1h"
    );
    assert_eq!(
        store("kind = \"postgres\"\nurl_env = \"A\"\ntls = \"verify-full\""),
        "`store.tls_ca_file`: tls = \"verify-full\" needs the CA that signed the store's certificate"
    );
    assert_eq!(
        store("kind = \"postgres\"\nurl_env = \"A\"\ntls = \"require\""),
        "`store.tls`: `require` must be \"disable\" or \"verify-full\""
    );
    // An unknown key is the parser's refusal, which lists the known ones.
    let said = store("url = \"postgres://u:p@h/db\"");
    assert!(
        said.contains("unknown field `url`") && !said.contains("u:p@"),
        "{said}"
    );
}

#[test]
fn the_oidc_table_is_read_as_given_with_defaults_for_what_it_leaves_out() {
    let path = Path::new("/etc/jitgate/jitgate.toml");
    let text = config_with(
        "",
        "[oidc]\nissuer = \"https://login.example.com/realms/acme\"\nclient_id = \"jitgate\"\n\
         client_secret_file = \"oidc-secret\"\nusername_claim = \"preferred_username\"\n\
         groups_claim = \"roles\"\nscopes = [\"openid\", \"groups\"]\ncredential_ttl = \"1h\"\n\
         clock_skew = \"5s\"\nmax_credentials_per_person = 3\nca_file = \"idp-ca.pem\"\n\
         device_flow = false\n",
    );
    let o = Config::from_toml(&text, path).unwrap().oidc.unwrap();
    assert_eq!(o.issuer, "https://login.example.com/realms/acme");
    assert_eq!(
        o.client_secret,
        SecretSource::File("/etc/jitgate/oidc-secret".into())
    );
    assert_eq!(
        (o.username_claim.as_str(), o.groups_claim.as_str()),
        ("preferred_username", "roles")
    );
    assert_eq!(o.scopes, ["openid", "groups"]);
    assert_eq!(
        (o.credential_ttl, o.clock_skew),
        (Duration::from_secs(3600), Duration::from_secs(5))
    );
    assert_eq!(o.max_credentials_per_person, 3);
    assert_eq!(
        o.ca_file.as_deref(),
        Some(Path::new("/etc/jitgate/idp-ca.pem"))
    );
    assert!(!o.device_flow);

    let least = config_with(
        "",
        "[oidc]\nissuer = \"http://127.0.0.1:9000\"\nclient_id = \"j\"\n",
    );
    let o = Config::from_toml(&least, path).unwrap().oidc.unwrap();
    assert_eq!(o.client_secret, SecretSource::None);
    assert_eq!(
        (o.username_claim.as_str(), o.groups_claim.as_str()),
        ("email", "groups")
    );
    assert_eq!(o.credential_ttl, Duration::from_secs(12 * 3600));
    assert!(o.device_flow);
    assert!(
        Config::from_toml(&config_with("", ""), path)
            .unwrap()
            .oidc
            .is_none()
    );
}

#[test]
fn an_oidc_table_that_cannot_work_is_refused_naming_its_key() {
    let oidc = |rest: &str| format!("[oidc]\nclient_id = \"j\"\n{rest}\n");
    for (rest, key, why) in [
        (
            "issuer = \"http://login.example.com\"",
            "oidc.issuer",
            "https",
        ),
        ("issuer = \"not a url\"", "oidc.issuer", "not a URL"),
        (
            "issuer = \"https://i\"\nscopes = [\"email\"]",
            "oidc.scopes",
            "openid",
        ),
        (
            "issuer = \"https://i\"\ncredential_ttl = \"1s\"",
            "oidc.credential_ttl",
            "10s and 30d",
        ),
        (
            "issuer = \"https://i\"\nclock_skew = \"1h\"",
            "oidc.clock_skew",
            "5m",
        ),
        (
            "issuer = \"https://i\"\nmax_credentials_per_person = 0",
            "oidc.max_credentials_per_person",
            "between 1 and 100",
        ),
        (
            "issuer = \"https://i\"\nclient_secret_env = \"A\"\nclient_secret_file = \"b\"",
            "oidc",
            "at most one",
        ),
    ] {
        let e = refusal("", &oidc(rest));
        assert!(
            e.contains(&format!("`{key}`")) && e.contains(why),
            "{rest}: {e}"
        );
    }
}

#[test]
fn the_admin_table_gives_the_page_its_address_and_tls() {
    let path = Path::new("/etc/jitgate/jitgate.toml");
    let load =
        |listen: &str, tables: &str| Config::from_toml(&config_with(listen, tables), path).unwrap();
    let plain = load("admin = \"127.0.0.1:8080\"", "");
    assert_eq!(plain.admin_url().as_deref(), Some("http://127.0.0.1:8080"));
    assert!(!plain.admin_over_https());
    let everywhere = load("admin = \"0.0.0.0:8080\"", "");
    assert_eq!(everywhere.admin_url(), None, "no one address to link to");
    let tls = load(
        "admin = \"127.0.0.1:8443\"",
        "[admin]\ntls_cert = \"a.pem\"\ntls_key = \"a.key\"\n",
    );
    assert_eq!(tls.admin_url().as_deref(), Some("https://127.0.0.1:8443"));
    assert!(tls.admin_over_https());
    assert_eq!(
        tls.admin.tls.as_ref().map(|t| t.cert.clone()),
        Some(PathBuf::from("/etc/jitgate/a.pem"))
    );
    let named = load(
        "admin = \"0.0.0.0:8080\"",
        "[admin]\nurl = \"https://jitgate.example.com/\"\n",
    );
    assert_eq!(
        named.admin_url().as_deref(),
        Some("https://jitgate.example.com")
    );
    assert!(named.admin_over_https());
}

#[test]
fn an_admin_table_that_cannot_work_is_refused_naming_its_key() {
    for (table, key, why) in [
        ("tls_cert = \"a.pem\"", "admin.tls_cert", "go together"),
        ("url = \"ftp://x\"", "admin.url", "http:// or https://"),
        ("url = \"https://x/jitgate\"", "admin.url", "no path"),
        (
            "url = \"https://u:p@x\"",
            "admin.url",
            "no path, query or user",
        ),
        ("url = \"not a url\"", "admin.url", "must be a URL"),
        (
            "url = \"http://x\"\ntls_cert = \"a\"\ntls_key = \"b\"",
            "admin.url",
            "https://",
        ),
    ] {
        let e = refusal("", &format!("[admin]\n{table}\n"));
        assert!(
            e.contains(&format!("`{key}`")) && e.contains(why),
            "{table}: {e}"
        );
    }
}
