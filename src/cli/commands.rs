//! What each client command asks the admin API and how it shows the answer.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::table::{self, Table};
use super::{ApiArgs, Client, Command};
use crate::access::{Grant, Request, RequestState};

/// How often `request --wait` asks whether the request was decided.
const WAIT_POLL_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let done = match command {
        Command::Request {
            target,
            level,
            duration,
            reason,
            wait,
            connect,
            client_args,
            api,
        } => {
            let body =
                json!({"target": target, "level": level, "duration": duration, "reason": reason});
            let server = api.clone();
            request(api, body, wait || connect).await?;
            if connect {
                let ca = std::env::var_os("JITGATE_CA_FILE").map(std::path::PathBuf::from);
                let ca = ca.as_deref();
                return super::connect::connect(server, &target, Some(&level), ca, &client_args)
                    .await;
            }
            Ok(())
        }
        Command::Connect {
            target,
            level,
            ca_file,
            client_args,
            api,
        } => {
            let ca = ca_file.as_deref();
            return super::connect::connect(api, &target, level.as_deref(), ca, &client_args).await;
        }
        Command::Requests { state, api } => requests(api, &state).await,
        Command::Approve { id, comment, api } => decide(api, &id, "approve", comment).await,
        Command::Deny { id, comment, api } => decide(api, &id, "deny", comment).await,
        Command::Cancel { id, api } => decide(api, &id, "cancel", None).await,
        Command::Grants { api } => grants(api).await,
        Command::Revoke { id, api } => revoke(api, &id).await,
        Command::Sessions { api } => sessions(api).await,
        Command::Kill { session, api } => kill(api, &session).await,
        Command::Whoami { api } => whoami(api).await,
        Command::Reload { api } => reload(api).await,
        Command::Login {
            device,
            no_browser,
            port,
            api,
        } => super::login::login(api, device, no_browser, port).await,
        Command::Logout {
            all,
            user,
            free_name,
            api,
        } => super::login::logout(api, all, user, free_name).await,
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// The client and whether to print JSON.
fn connect(api: ApiArgs) -> anyhow::Result<(Client, bool)> {
    let token = super::login::token_for(&api)?;
    Ok((Client::new(&api.server, token)?, api.json))
}

async fn request(api: ApiArgs, body: Value, wait: bool) -> anyhow::Result<()> {
    let (client, json) = connect(api)?;
    let mut latest = client.post("/v1/requests", Some(body)).await?;
    let mut request: Request = parse(&latest)?;
    if !json {
        print!("{}", request_table(std::slice::from_ref(&request)));
    }
    if request.state == RequestState::Pending {
        if !wait {
            if json {
                print_json(&latest)?;
            } else {
                eprintln!(
                    "an approver can run `jitgate approve {}`; add --wait to wait for the decision",
                    request.id
                );
            }
            return Ok(());
        }
        eprintln!(
            "waiting for a decision on {} (Ctrl-C stops waiting; the request stays pending)",
            request.id
        );
        let path = format!("/v1/requests/{}", segment(&request.id)?);
        while request.state == RequestState::Pending {
            tokio::time::sleep(WAIT_POLL_INTERVAL).await;
            latest = client.get(&path).await?;
            request = parse(&latest)?;
        }
    }
    match request.state {
        RequestState::Approved => {
            let command = connection_command(&client, &request).await?;
            if json {
                if let (Some(command), Some(object)) = (&command, latest.as_object_mut()) {
                    // `psql` for PostgreSQL targets, as before; `connect` for every one.
                    if command.starts_with("psql ") {
                        object.insert("psql".into(), Value::from(command.as_str()));
                    }
                    object.insert("connect".into(), Value::from(command.as_str()));
                }
                return print_json(&latest);
            }
            println!("{}", approved_sentence(&request));
            match command {
                Some(command) => {
                    println!("connect with your jitgate secret as the password:");
                    println!("{command}");
                }
                None => println!(
                    "this jitgate has no listener for {}'s protocol; ask its operator where to connect",
                    request.target
                ),
            }
            Ok(())
        }
        _ => {
            if json {
                print_json(&latest)?;
            }
            bail!("{}", ended_sentence(&request))
        }
    }
}

async fn requests(api: ApiArgs, state: &str) -> anyhow::Result<()> {
    let (client, json) = connect(api)?;
    let query: &[(&str, &str)] = match state {
        "all" => &[],
        s => &[("state", s)],
    };
    let reply = client.get_with_query("/v1/requests", query).await?;
    if json {
        return print_json(&reply);
    }
    let list: Vec<Request> = parse(&reply["requests"])?;
    if list.is_empty() {
        let which = if state == "all" { "" } else { state };
        eprintln!("no {which} requests you made or may decide");
    } else {
        print!("{}", request_table(&list));
    }
    Ok(())
}

/// `approve`, `deny` or `cancel` one request.
async fn decide(
    api: ApiArgs,
    id: &str,
    action: &str,
    comment: Option<String>,
) -> anyhow::Result<()> {
    let (client, json) = connect(api)?;
    let body = comment.map(|c| json!({ "comment": c }));
    let reply = client
        .post(&format!("/v1/requests/{}/{action}", segment(id)?), body)
        .await?;
    if json {
        return print_json(&reply);
    }
    let request: Request = parse(&reply)?;
    match request.state {
        RequestState::Approved => println!("{}", approved_sentence(&request)),
        RequestState::Pending => println!(
            "approval recorded for {}: {} of {} distinct approvals; it stays pending",
            request.id,
            request.approvals.len(),
            request.approvals_required
        ),
        _ => println!("{}", ended_sentence(&request)),
    }
    Ok(())
}

async fn grants(api: ApiArgs) -> anyhow::Result<()> {
    let (client, json) = connect(api)?;
    let reply = client.get("/v1/grants").await?;
    if json {
        return print_json(&reply);
    }
    let list: Vec<Grant> = parse(&reply["grants"])?;
    if list.is_empty() {
        eprintln!("no active grants you may see");
        return Ok(());
    }
    let now = SystemTime::now();
    let mut t = Table::new(&[
        "ID",
        "IDENTITY",
        "TARGET",
        "LEVEL",
        "EXPIRES",
        "GRANTED_BY",
        "APPROVED_BY",
        "REASON",
    ]);
    for g in list {
        t.row(vec![
            g.id,
            g.identity,
            g.target,
            g.level,
            table::relative(g.expires_at, now),
            g.granted_by,
            or_dash(g.approved_by.join(",")),
            g.reason,
        ]);
    }
    print!("{t}");
    Ok(())
}

async fn revoke(api: ApiArgs, id: &str) -> anyhow::Result<()> {
    let (client, json) = connect(api)?;
    let reply = client
        .post(&format!("/v1/grants/{}/revoke", segment(id)?), None)
        .await?;
    if json {
        return print_json(&reply);
    }
    let grant: Grant = parse(&reply)?;
    println!(
        "grant {} revoked ({} on {}, {}); its sessions are being closed",
        grant.id, grant.identity, grant.target, grant.level
    );
    Ok(())
}

#[derive(Deserialize)]
struct Session {
    id: String,
    /// The proxy that holds it (with a fleet's store, several).
    #[serde(default)]
    proxy: String,
    identity: String,
    target: String,
    level: String,
    grant: String,
    client_addr: String,
    #[serde(with = "crate::access::requests::rfc3339_serde")]
    started_at: SystemTime,
    statements: u64,
}

async fn sessions(api: ApiArgs) -> anyhow::Result<()> {
    let (client, json) = connect(api)?;
    let reply = client.get("/v1/sessions").await?;
    if json {
        return print_json(&reply);
    }
    if let Some(why) = reply["incomplete"].as_str() {
        eprintln!("warning: {why}");
    }
    let list: Vec<Session> = parse(&reply["sessions"])?;
    if list.is_empty() {
        eprintln!("no live sessions you may see");
        return Ok(());
    }
    // Which proxy holds a session matters once there are several.
    let fleet = list.iter().any(|s| s.proxy != list[0].proxy);
    let now = SystemTime::now();
    let mut header = vec!["ID"];
    if fleet {
        header.push("PROXY");
    }
    header.extend([
        "IDENTITY",
        "TARGET",
        "LEVEL",
        "GRANT",
        "CLIENT",
        "STARTED",
        "STATEMENTS",
    ]);
    let mut t = Table::new(&header);
    for s in list {
        let mut row = vec![s.id];
        if fleet {
            row.push(s.proxy);
        }
        row.extend([
            s.identity,
            s.target,
            s.level,
            s.grant,
            s.client_addr,
            table::relative(s.started_at, now),
            s.statements.to_string(),
        ]);
        t.row(row);
    }
    print!("{t}");
    Ok(())
}

async fn kill(api: ApiArgs, session: &str) -> anyhow::Result<()> {
    let (client, json) = connect(api)?;
    let reply = client
        .post(&format!("/v1/sessions/{}/kill", segment(session)?), None)
        .await?;
    if json {
        return print_json(&reply);
    }
    match reply["proxy"].as_str() {
        Some(proxy) => println!("session {session} killed (held by proxy {proxy})"),
        None => println!("session {session} killed"),
    }
    Ok(())
}

#[derive(Deserialize)]
struct WhoAmI {
    identity: String,
    groups: Vec<String>,
}

async fn whoami(api: ApiArgs) -> anyhow::Result<()> {
    let (client, json) = connect(api)?;
    let reply = client.get("/v1/whoami").await?;
    if json {
        return print_json(&reply);
    }
    let me: WhoAmI = parse(&reply)?;
    let mut t = Table::new(&["IDENTITY", "GROUPS"]);
    t.row(vec![me.identity, or_dash(me.groups.join(","))]);
    print!("{t}");
    Ok(())
}

#[derive(Deserialize)]
struct Info {
    postgres: Option<SocketAddr>,
    #[serde(default = "yes")]
    tls_required: bool,
    #[serde(default)]
    mysql: Option<SocketAddr>,
    #[serde(default)]
    targets: Vec<TargetInfo>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct TargetInfo {
    name: String,
    protocol: String,
}

async fn reload(api: ApiArgs) -> anyhow::Result<()> {
    let (client, json) = connect(api)?;
    let report = client.post("/v1/reload", None).await?;
    if json {
        return print_json(&report);
    }
    println!("config reloaded");
    for table in ["identities", "targets", "policies"] {
        for (change, sign) in [("added", '+'), ("removed", '-'), ("changed", '~')] {
            let names: Vec<&str> = report[table][change]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !names.is_empty() {
                println!(
                    "  {table} {change}: {sign}{}",
                    names.join(&format!(", {sign}"))
                );
            }
        }
    }
    let ended = report["sessions_ended"].as_u64().unwrap_or(0);
    if ended > 0 {
        println!("  {ended} session(s) ended: their identity, target or level is gone");
    }
    if let Some(restart) = report["needs_restart"].as_array().filter(|a| !a.is_empty()) {
        let names: Vec<&str> = restart.iter().filter_map(Value::as_str).collect();
        eprintln!(
            "changes to {} take effect at the next restart only",
            names.join(", ")
        );
    }
    Ok(())
}

/// Where a client reaches a target through this jitgate.
pub(super) struct Listener {
    /// A MySQL/MariaDB target (else PostgreSQL).
    pub(super) mysql: bool,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls_required: bool,
}

/// The listener for `target`'s protocol; `None` when the proxy has none.
pub(super) async fn listener_for(
    client: &Client,
    target: &str,
) -> anyhow::Result<Option<Listener>> {
    let info: Info = parse(&client.get("/v1/info").await?)?;
    let mysql = info
        .targets
        .iter()
        .any(|t| t.name == target && t.protocol == "mysql");
    let Some(addr) = (if mysql { info.mysql } else { info.postgres }) else {
        return Ok(None);
    };
    // Bound to every interface: the proxy is wherever the admin API was reached.
    let host = if addr.ip().is_unspecified() {
        client.server_host().trim_matches(['[', ']']).to_owned()
    } else {
        addr.ip().to_string()
    };
    Ok(Some(Listener {
        mysql,
        host,
        port: addr.port(),
        tls_required: info.tls_required,
    }))
}

/// The command that connects to an approved request's target, never with
/// a password: `psql "host=… port=… user=… dbname=… sslmode=require"` for a
/// PostgreSQL target, `mariadb -h … -P … -u … -p --ssl <target>` for a
/// MySQL/MariaDB one. `None` when the proxy has no listener for it.
async fn connection_command(client: &Client, request: &Request) -> anyhow::Result<Option<String>> {
    let Some(l) = listener_for(client, &request.target).await? else {
        return Ok(None);
    };
    Ok(Some(client_command(
        l.mysql,
        &l.host,
        l.port,
        &request.requested_by,
        &request.target,
    )))
}

/// The psql or mariadb command line that reaches `target` through the
/// listener at `host:port` as `user`, never with a password (the CLI's
/// answer to an approval, and the approver page's).
pub(crate) fn client_command(
    mysql: bool,
    host: &str,
    port: u16,
    user: &str,
    target: &str,
) -> String {
    if mysql {
        return format!(
            "mariadb -h {} -P {port} -u {} -p --ssl {}",
            shell_word(host),
            shell_word(user),
            shell_word(target),
        );
    }
    format!(
        "psql \"host={} port={port} user={} dbname={} sslmode=require\"",
        conninfo_value(host),
        conninfo_value(user),
        conninfo_value(target),
    )
}

/// A word for a POSIX shell: as it is when it holds nothing the shell
/// reads, single-quoted otherwise.
fn shell_word(v: &str) -> String {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b));
    if plain {
        v.to_owned()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

/// A libpq connection-string value, quoted when it has to be.
fn conninfo_value(v: &str) -> String {
    if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return v.to_owned();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn request_table(list: &[Request]) -> Table {
    let now = SystemTime::now();
    let mut t = Table::new(&[
        "ID",
        "STATE",
        "REQUESTER",
        "TARGET",
        "LEVEL",
        "FOR",
        "APPROVALS",
        "TIMES_OUT",
        "REASON",
    ]);
    for r in list {
        let times_out = if r.state == RequestState::Pending {
            table::relative(r.expires_at, now)
        } else {
            "-".to_owned()
        };
        t.row(vec![
            r.id.clone(),
            r.state.as_str().to_owned(),
            r.requested_by.clone(),
            r.target.clone(),
            r.level.clone(),
            table::short(r.duration()),
            format!("{}/{}", r.approvals.len(), r.approvals_required),
            times_out,
            r.reason.clone(),
        ]);
    }
    t
}

fn approved_sentence(r: &Request) -> String {
    let by = if r.auto_approved {
        format!("automatically under policy `{}`", r.policy)
    } else {
        let names: Vec<&str> = r.approvals.iter().map(|d| d.by.as_str()).collect();
        format!("by {}", names.join(", "))
    };
    format!(
        "request {} approved {by}; grant {} gives {} {} access to {} for {}",
        r.id,
        r.grant.as_deref().unwrap_or("-"),
        r.requested_by,
        r.level,
        r.target,
        table::short(r.duration()),
    )
}

/// Why a request is over without a grant (or, for others, its state).
fn ended_sentence(r: &Request) -> String {
    match (r.state, &r.denial) {
        (RequestState::Denied, Some(d)) => match &d.comment {
            Some(c) => format!("request {} was denied by {}: {c}", r.id, d.by),
            None => format!("request {} was denied by {}", r.id, d.by),
        },
        (RequestState::Denied, None) => format!("request {} was denied", r.id),
        (RequestState::Cancelled, _) => format!("request {} was cancelled", r.id),
        (RequestState::Expired, _) => format!(
            "request {} expired: nobody decided it in time; ask again or ping an approver",
            r.id
        ),
        (state, _) => format!("request {} is {}", r.id, state.as_str()),
    }
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".to_owned() } else { s }
}

fn parse<T: DeserializeOwned>(v: &Value) -> anyhow::Result<T> {
    T::deserialize(v).context("the admin API answered with JSON this jitgate does not understand; are the CLI and the server the same version?")
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `id` as one URL path segment, so an id can never reach
/// another endpoint. URL parsers treat `.` and `..` (even percent-encoded)
/// as directions, so those are refused; no jitgate id looks like that.
pub(super) fn segment(id: &str) -> anyhow::Result<String> {
    if id.chars().all(|c| c == '.') {
        bail!("`{id}` is not an id; ids look like r_0123456789abcdef");
    }
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        assert_eq!(segment("r_0123abc").unwrap(), "r_0123abc");
        assert_eq!(segment("../grants").unwrap(), "..%2Fgrants");
        assert_eq!(segment("a?b#c d").unwrap(), "a%3Fb%23c%20d");
        for dots in ["", ".", ".."] {
            assert!(segment(dots).is_err(), "{dots:?}");
        }
    }

    #[test]
    fn conninfo_values_are_quoted_only_when_needed() {
        assert_eq!(conninfo_value("demo-pg"), "demo-pg");
        assert_eq!(conninfo_value("a b"), "'a b'");
        assert_eq!(conninfo_value("o'neil"), "'o\\'neil'");
        assert_eq!(conninfo_value(""), "''");
    }
}
