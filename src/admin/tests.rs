//! The admin API over a real socket, driven with reqwest.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::ApiParts;
use crate::access::AccessModel;
use crate::audit::AuditLog;
use crate::config::Config;
use crate::identity::ScramVerifier;
use crate::session::{NewSession, SessionGuard};

const ALICE: &str = "alice-demo";
const CAROL: &str = "carol-demo";
const BOB: &str = "bob-demo";
const ADMIN: &str = "admin-demo";

/// Verifiers take a while to generate in a debug build; make them once.
fn verifiers() -> &'static [String; 4] {
    static V: OnceLock<[String; 4]> = OnceLock::new();
    V.get_or_init(|| [ALICE, CAROL, BOB, ADMIN].map(ScramVerifier::generate))
}

struct Api {
    base: String,
    http: reqwest::Client,
    shared: Arc<ApiParts>,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        Api::start_with_audit(dir, &audit).await
    }

    async fn start_with_audit(dir: tempfile::TempDir, audit: &Path) -> Api {
        Api::start_with(dir, audit, "").await
    }

    /// `extra` is appended to the config (webhooks, say).
    async fn start_with(dir: tempfile::TempDir, audit: &Path, extra: &str) -> Api {
        let [alice, carol, bob, admin] = verifiers();
        let toml = format!(
            r#"
data_dir = "{data}"
[listen]
admin = "127.0.0.1:0"
[tls]
cert = "cert.pem"
key = "key.pem"
[audit]
path = "{audit}"
fsync = "always"
[limits]
max_login_failures = 3
login_failure_window = "1m"

[[identities]]
name = "alice"
groups = ["developer"]
secret = "{alice}"
[[identities]]
name = "carol"
groups = ["developer"]
secret = "{carol}"
[[identities]]
name = "bob"
groups = ["approver"]
secret = "{bob}"
[[identities]]
name = "admin"
groups = ["admin"]
secret = "{admin}"

[[targets]]
name = "demo-pg"
protocol = "postgres"
address = "127.0.0.1:5432"
database = "postgres"
[targets.levels.read]
user = "reader"
read_only = true
[targets.levels.write]
user = "writer"

# Developers and approvers may ask; approvers decide (never their own).
[[policies]]
name = "demo-read"
targets = ["demo-pg"]
levels = ["read"]
requesters = ["developer", "approver"]
max_duration = "1h"
approvals = 1
approvers = ["approver"]
{extra}
"#,
            data = dir.path().display(),
            audit = audit.display(),
        );
        let config = Arc::new(Config::from_toml(&toml, &dir.path().join("jitgate.toml")).unwrap());
        let audit = AuditLog::open(&config.audit).unwrap();
        let access = AccessModel::new(config.clone(), audit.clone());
        let decoy_key = crate::identity::DecoyKey::load_or_create(dir.path()).unwrap();
        let shared = Arc::new(ApiParts {
            identities: Arc::new(crate::identity::Identities::from_config(
                &config.identities,
                decoy_key,
                access.issued.clone(),
            )),
            logins: Arc::new(crate::identity::LoginLimiter::from_limits(&config.limits)),
            sessions: Arc::default(),
            listeners: Vec::new(),
            provider: Arc::default(),
            reloader: None,
            config,
            access,
            audit,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(super::serve(listener, shared.clone(), None));
        Api {
            base,
            http: reqwest::Client::new(),
            shared,
            _dir: dir,
        }
    }

    fn audit_log(&self) -> String {
        std::fs::read_to_string(self.shared.audit.path()).unwrap()
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Reply::from(req.send().await.unwrap()).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        self.send(reqwest::Method::POST, path, token, body).await
    }

    async fn grant(&self, identity: &str, duration: &str) -> Reply {
        let body = json!({"identity": identity, "target": "demo-pg", "level": "read", "duration": duration, "reason": "INC-42"});
        self.post("/v1/grants", Some(ADMIN), Some(body)).await
    }

    /// `token`'s holder asks for read access to demo-pg.
    async fn request(&self, token: &str, duration: &str) -> Reply {
        let body =
            json!({"target": "demo-pg", "level": "read", "duration": duration, "reason": "INC-42"});
        self.post("/v1/requests", Some(token), Some(body)).await
    }

    /// A pending request by `token`'s holder; its id.
    async fn pending_request(&self, token: &str) -> String {
        let r = self.request(token, "30m").await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["id"].as_str().unwrap().to_owned()
    }

    /// `token`'s holder requests, bob approves; the grant's id.
    async fn approved_grant(&self, token: &str) -> String {
        let id = self.pending_request(token).await;
        let r = self
            .post(&format!("/v1/requests/{id}/approve"), Some(BOB), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json["grant"].as_str().unwrap().to_owned()
    }

    /// Ids of the pending requests `token`'s holder sees.
    async fn pending_seen_by(&self, token: &str) -> Vec<String> {
        let r = self.get("/v1/requests?state=pending", Some(token)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Whose grants `token`'s holder sees in `GET /v1/grants`.
    async fn grant_holders(&self, token: &str) -> Vec<String> {
        ids(&self.get("/v1/grants", Some(token)).await.json["grants"])
    }

    fn session_of(&self, identity: &str) -> SessionGuard {
        self.shared.sessions.register(NewSession {
            identity,
            target: "demo-pg",
            level: "read",
            grant: "g_0000000000000001",
            credential: None,
            client_addr: "127.0.0.1:40000".parse().unwrap(),
        })
    }
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
    json: Value,
}

impl Reply {
    async fn from(r: reqwest::Response) -> Reply {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    /// The body is the API's error shape, with a non-empty phrase and detail.
    fn assert_error(&self, status: StatusCode, error: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.json["error"], error, "{}", self.text);
        assert!(
            self.json["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            self.text
        );
        assert_eq!(self.json.as_object().unwrap().len(), 2, "{}", self.text);
    }
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|g| g["identity"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn healthz_needs_no_token() {
    let api = Api::start().await;
    let r = api.get("/healthz", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json, json!({"status": "ok"}));
}

#[tokio::test]
async fn missing_token_is_401_with_bearer_challenge() {
    let api = Api::start().await;
    let r = api.get("/v1/grants", None).await;
    r.assert_error(StatusCode::UNAUTHORIZED, "missing token");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn wrong_token_is_401_and_never_echoed() {
    let api = Api::start().await;
    let r = api.get("/v1/grants", Some("not-the-secret-xyz")).await;
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    assert!(!r.text.contains("not-the-secret-xyz"));
}

#[tokio::test]
async fn repeated_bad_tokens_from_one_address_get_429_but_known_tokens_still_work() {
    let api = Api::start().await;
    // Known before the address is locked out, so it is in the cache.
    assert_eq!(
        api.get("/v1/grants", Some(ALICE)).await.status,
        StatusCode::OK
    );
    for _ in 0..3 {
        let r = api.get("/v1/grants", Some("guess")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = api.get("/v1/grants", Some("guess")).await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "too many failed logins");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(
        api.get("/v1/grants", Some(ALICE)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn non_admin_cannot_grant() {
    let api = Api::start().await;
    for token in [ALICE, BOB] {
        let body = json!({"identity": "alice", "target": "demo-pg", "level": "read", "duration": "2m", "reason": "x"});
        let r = api.post("/v1/grants", Some(token), Some(body)).await;
        r.assert_error(StatusCode::FORBIDDEN, "forbidden");
    }
    // Checked before the body, so a bad body does not tell a non-admin more.
    let r = api
        .post("/v1/grants", Some(ALICE), Some(json!({"nonsense": 1})))
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn admin_grant_is_201_with_the_grant_and_an_audit_record() {
    let api = Api::start().await;
    let before = SystemTime::now();
    let r = api.grant("alice", "2m").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let g = &r.json;
    assert!(g["id"].as_str().unwrap().starts_with("g_"));
    assert_eq!(g["identity"], "alice");
    assert_eq!(g["target"], "demo-pg");
    assert_eq!(g["level"], "read");
    assert_eq!(g["reason"], "INC-42");
    assert_eq!(g["granted_by"], "admin");
    humantime::parse_rfc3339(g["created_at"].as_str().unwrap()).unwrap();
    let expires_at = humantime::parse_rfc3339(g["expires_at"].as_str().unwrap()).unwrap();
    let lead = expires_at.duration_since(before).unwrap();
    assert!(
        lead >= Duration::from_secs(119) && lead <= Duration::from_secs(125),
        "expires_at is {lead:?} after the request"
    );
    let audit = api.audit_log();
    assert!(audit.contains("grant_created") && audit.contains(g["id"].as_str().unwrap()));
    assert!(
        !audit.contains(ADMIN),
        "the bearer token must not reach the audit log"
    );
}

#[tokio::test]
async fn curl_style_form_content_type_is_still_read_as_json() {
    let api = Api::start().await;
    let r = api
        .http
        .post(format!("{}/v1/grants", api.base))
        .bearer_auth(ADMIN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"identity":"alice","target":"demo-pg","level":"read","duration":"2m","reason":"INC-42"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn bad_duration_is_400_in_the_error_shape() {
    let api = Api::start().await;
    let r = api.grant("alice", "two minutes").await;
    r.assert_error(StatusCode::BAD_REQUEST, "bad duration");
    assert!(r.json["detail"].as_str().unwrap().contains("two minutes"));
    let r = api.grant("alice", "30d").await;
    r.assert_error(StatusCode::BAD_REQUEST, "bad duration");
}

#[tokio::test]
async fn bad_grant_input_is_400_in_the_error_shape() {
    let api = Api::start().await;
    let cases = [
        (
            json!({"identity": "alice", "target": "nope", "level": "read", "duration": "2m", "reason": "r"}),
            "unknown target",
        ),
        (
            json!({"identity": "alice", "target": "demo-pg", "level": "root", "duration": "2m", "reason": "r"}),
            "unknown level",
        ),
        (
            json!({"identity": "mallory", "target": "demo-pg", "level": "read", "duration": "2m", "reason": "r"}),
            "unknown identity",
        ),
        (
            json!({"identity": "alice", "target": "demo-pg", "level": "read", "duration": "2m"}),
            "missing reason",
        ),
        (
            json!({"identity": "alice", "target": "demo-pg", "level": "read", "duration": "2m", "reason": "  "}),
            "missing reason",
        ),
        (
            json!({"target": "demo-pg", "level": "read", "duration": "2m", "reason": "r"}),
            "malformed body",
        ),
        (
            json!({"identity": "alice", "target": "demo-pg", "level": "read", "duration": 120, "reason": "r"}),
            "malformed body",
        ),
        (json!(["alice"]), "malformed body"),
    ];
    for (body, error) in cases {
        let r = api.post("/v1/grants", Some(ADMIN), Some(body)).await;
        r.assert_error(StatusCode::BAD_REQUEST, error);
    }
    for raw in ["{not json", ""] {
        let r = api
            .http
            .post(format!("{}/v1/grants", api.base))
            .bearer_auth(ADMIN)
            .body(raw)
            .send()
            .await
            .unwrap();
        let r = Reply::from(r).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert!(r.json["detail"].is_string(), "{}", r.text);
    }
}

#[tokio::test]
async fn oversized_body_is_413_in_the_error_shape() {
    let api = Api::start().await;
    let reason = "x".repeat(super::MAX_BODY_BYTES + 1);
    let body = json!({"identity": "alice", "target": "demo-pg", "level": "read", "duration": "2m", "reason": reason});
    let r = api.post("/v1/grants", Some(ADMIN), Some(body)).await;
    r.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
}

#[tokio::test]
async fn grantee_can_revoke_their_own_grant() {
    let api = Api::start().await;
    let id = api.grant("alice", "2m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = api
        .post(&format!("/v1/grants/{id}/revoke"), Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["id"], id.as_str());
    assert_eq!(r.json["identity"], "alice");
    assert!(api.audit_log().contains("grant_revoked"));
    assert_eq!(
        api.get("/v1/grants", Some(ADMIN)).await.json,
        json!({"grants": []})
    );
    // Ended grants are gone.
    let r = api
        .post(&format!("/v1/grants/{id}/revoke"), Some(ALICE), None)
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "grant not found");
}

#[tokio::test]
async fn admins_can_revoke_anyones_grant() {
    let api = Api::start().await;
    let id = api.grant("alice", "2m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = api
        .post(&format!("/v1/grants/{id}/revoke"), Some(ADMIN), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn approvers_of_the_policy_can_revoke_its_grants_but_not_direct_ones() {
    let api = Api::start().await;
    let granted = api.approved_grant(ALICE).await;
    let r = api
        .post(&format!("/v1/grants/{granted}/revoke"), Some(BOB), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(api.audit_log().contains("grant_revoked"));

    // A direct grant has no policy, so no approver: the grantee or an admin.
    let direct = api.grant("alice", "2m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = api
        .post(&format!("/v1/grants/{direct}/revoke"), Some(BOB), None)
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn another_developer_cannot_revoke_a_grant() {
    let api = Api::start().await;
    let id = api.grant("alice", "2m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // carol does not see alice's grant, so for her it does not exist.
    let r = api
        .post(&format!("/v1/grants/{id}/revoke"), Some(CAROL), None)
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "grant not found");
    let never = api
        .post("/v1/grants/g_0123456789abcdef/revoke", Some(CAROL), None)
        .await;
    assert_eq!(
        r.json["detail"].as_str().unwrap().replace(&id, "<id>"),
        never.json["detail"]
            .as_str()
            .unwrap()
            .replace("g_0123456789abcdef", "<id>"),
    );
    assert!(!r.text.contains("alice"), "{}", r.text);
    assert_eq!(
        ids(&api.get("/v1/grants", Some(ADMIN)).await.json["grants"]),
        ["alice"]
    );
}

#[tokio::test]
async fn revoking_an_unknown_grant_is_404() {
    let api = Api::start().await;
    let r = api
        .post("/v1/grants/g_doesnotexist/revoke", Some(ADMIN), None)
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "grant not found");
}

#[tokio::test]
async fn grant_list_shows_everyone_only_to_admins_and_approvers() {
    let api = Api::start().await;
    assert_eq!(api.grant("alice", "2m").await.status, StatusCode::CREATED);
    assert_eq!(api.grant("carol", "5m").await.status, StatusCode::CREATED);
    assert_eq!(api.grant_holders(ADMIN).await, ["alice", "carol"]);
    assert_eq!(api.grant_holders(BOB).await, ["alice", "carol"]);
    assert_eq!(api.grant_holders(ALICE).await, ["alice"]);
    assert_eq!(api.grant_holders(CAROL).await, ["carol"]);
}

#[tokio::test]
async fn sessions_list_is_empty_without_sessions() {
    let api = Api::start().await;
    let r = api.get("/v1/sessions", Some(ALICE)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json, json!({"sessions": []}));
}

#[tokio::test]
async fn sessions_are_listed_to_their_owner_and_overseers_only() {
    let api = Api::start().await;
    let session = api.session_of("alice");
    for token in [ALICE, BOB, ADMIN] {
        let r = api.get("/v1/sessions", Some(token)).await;
        assert_eq!(r.json["sessions"][0]["id"], session.info.id.as_str());
        assert_eq!(r.json["sessions"][0]["statements"], 0);
    }
    assert_eq!(
        api.get("/v1/sessions", Some(CAROL)).await.json,
        json!({"sessions": []})
    );
}

#[tokio::test]
async fn owner_can_kill_a_session_and_the_kill_is_audited() {
    let api = Api::start().await;
    let session = api.session_of("alice");
    let id = session.info.id.clone();
    // carol does not see alice's session, so for her it does not exist.
    let r = api
        .post(&format!("/v1/sessions/{id}/kill"), Some(CAROL), None)
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "session not found");
    let never = api
        .post("/v1/sessions/s_nope/kill", Some(CAROL), None)
        .await;
    assert_eq!(
        r.json["detail"].as_str().unwrap().replace(&id, "<id>"),
        never.json["detail"]
            .as_str()
            .unwrap()
            .replace("s_nope", "<id>"),
    );
    assert!(!r.text.contains("alice"), "{}", r.text);

    let r = api
        .post(&format!("/v1/sessions/{id}/kill"), Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["killed"], json!(id));
    assert!(r.json["proxy"].is_string(), "{}", r.text);
    tokio::time::timeout(Duration::from_secs(1), session.info.killed())
        .await
        .expect("the session was told to end");
    let audit = api.audit_log();
    let line = audit
        .lines()
        .find(|l| l.contains("session_kill_requested"))
        .unwrap();
    let record: Value = serde_json::from_str(line).unwrap();
    assert_eq!(record["session"], id.as_str());
    assert_eq!(record["identity"], "alice");
    assert_eq!(record["by"], "alice");
}

#[tokio::test]
async fn killing_an_unknown_session_is_404() {
    let api = Api::start().await;
    let r = api
        .post("/v1/sessions/s_nope/kill", Some(ADMIN), None)
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "session not found");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_unwritable_audit_log_refuses_grants_and_kills_with_503() {
    let api = Api::start_with_audit(tempfile::tempdir().unwrap(), Path::new("/dev/full")).await;
    let r = api.grant("alice", "2m").await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "audit log unavailable");
    assert!(
        !r.text.contains("/dev/full"),
        "server paths stay in the server log"
    );
    assert_eq!(
        api.get("/v1/grants", Some(ADMIN)).await.json,
        json!({"grants": []})
    );

    let session = api.session_of("alice");
    let r = api
        .post(
            &format!("/v1/sessions/{}/kill", session.info.id),
            Some(ADMIN),
            None,
        )
        .await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "audit log unavailable");
    let not_killed = tokio::time::timeout(Duration::from_millis(50), session.info.killed()).await;
    assert!(not_killed.is_err(), "no kill without its audit record");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let api = Api::start().await;
    api.get("/v1/nope", Some(ADMIN))
        .await
        .assert_error(StatusCode::NOT_FOUND, "no such endpoint");
    api.get("/nope", None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "no such endpoint");
    let r = api
        .send(reqwest::Method::DELETE, "/v1/grants", Some(ADMIN), None)
        .await;
    r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
}

/// Send `request` as raw bytes and read until jitgate closes the
/// connection; the status and the body parsed as JSON (`Null` if it is not).
async fn raw_http(api: &Api, request: &[u8]) -> (u16, Value, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = api.base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got))
        .await
        .expect("jitgate closes the connection after a protocol error")
        .unwrap();
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{text}"
    );
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::Null),
        text,
    )
}

/// `{"error": …, "detail": …}` and nothing else, both non-empty.
fn assert_error_shape(json: &Value, error: &str, text: &str) {
    assert_eq!(json["error"], error, "{text}");
    assert!(
        json["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{text}"
    );
    assert_eq!(json.as_object().map(|o| o.len()), Some(2), "{text}");
}

#[tokio::test]
async fn requests_hyper_cannot_parse_answer_in_the_error_shape() {
    let api = Api::start().await;
    let many_headers: String = (0..200).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    let cases: [(&str, String, u16, &str); 6] = [
        ("a bad request line", "GARBAGE\r\n\r\n".into(), 400, "bad request"),
        (
            "a bad method token",
            "G@T /healthz HTTP/1.1\r\nhost: x\r\n\r\n".into(),
            400,
            "bad request",
        ),
        (
            "a Content-Length that is not a number",
            "POST /v1/requests HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n".into(),
            400,
            "bad request",
        ),
        (
            "two Content-Lengths that disagree",
            "POST /v1/requests HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}"
                .into(),
            400,
            "bad request",
        ),
        (
            "a header without a colon",
            "GET /healthz HTTP/1.1\r\nhost x\r\n\r\n".into(),
            400,
            "bad request",
        ),
        (
            "too many headers",
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n"),
            431,
            "headers too large",
        ),
    ];
    for (what, request, status, error) in cases {
        let (got, json, text) = raw_http(&api, request.as_bytes()).await;
        assert_eq!(got, status, "{what}: {text}");
        assert_error_shape(&json, error, &text);
    }
    // The API still answers afterwards.
    assert_eq!(api.get("/healthz", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_bodies_and_methods_answer_in_the_error_shape() {
    let api = Api::start().await;
    let body = "{\"target\": \"demo-pg\",";
    let request = format!(
        "POST /v1/requests HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, json, text) = raw_http(&api, request.as_bytes()).await;
    assert_eq!(status, 400, "{text}");
    assert_error_shape(&json, "malformed body", &text);

    for method in [reqwest::Method::PUT, reqwest::Method::PATCH] {
        api.send(method, "/v1/requests", Some(ALICE), None)
            .await
            .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let r = api
        .send(
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            "/v1/grants",
            Some(ADMIN),
            None,
        )
        .await;
    r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
}

// ---- requests and approvals ---------------------------------------------

#[tokio::test]
async fn a_request_is_201_pending_with_its_own_timeout() {
    let api = Api::start().await;
    let before = SystemTime::now();
    let r = api.request(ALICE, "30m").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let q = &r.json;
    assert!(q["id"].as_str().unwrap().starts_with("r_"), "{}", r.text);
    assert_eq!(q["state"], "pending");
    assert_eq!(q["requested_by"], "alice");
    assert_eq!(q["target"], "demo-pg");
    assert_eq!(q["level"], "read");
    assert_eq!(q["duration_secs"], 1800);
    assert_eq!(q["reason"], "INC-42");
    assert_eq!(q["policy"], "demo-read");
    assert_eq!(q["approvals_required"], 1);
    assert_eq!(q["approvals"], json!([]));
    // The request's own deadline: pending requests time out (default 1 h).
    let expires_at = humantime::parse_rfc3339(q["expires_at"].as_str().unwrap()).unwrap();
    let lead = expires_at.duration_since(before).unwrap();
    assert!(
        lead >= Duration::from_secs(3599) && lead <= Duration::from_secs(3605),
        "expires_at is {lead:?} after the request"
    );
    assert!(api.audit_log().contains("request_created"));
}

#[tokio::test]
async fn a_bad_request_body_is_400_in_the_error_shape() {
    let api = Api::start().await;
    let r = api.request(ALICE, "half an hour").await;
    r.assert_error(StatusCode::BAD_REQUEST, "bad duration");
    assert!(r.json["detail"].as_str().unwrap().contains("half an hour"));
    // Above the policy's maximum: refused by the model, still 400 JSON.
    api.request(ALICE, "5h")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid request");
    let r = api
        .post(
            "/v1/requests",
            Some(ALICE),
            Some(json!({"target": "demo-pg", "level": "read", "duration": "30m"})),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid request");
    let r = api
        .post(
            "/v1/requests",
            Some(ALICE),
            Some(json!({"target": "demo-pg"})),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "malformed body");
    api.post("/v1/requests", Some(ALICE), None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "missing body");
}

#[tokio::test]
async fn approving_your_own_request_is_403_whatever_your_groups() {
    let api = Api::start().await;
    // bob is an approver of the policy he requests under.
    let id = api.pending_request(BOB).await;
    let r = api
        .post(&format!("/v1/requests/{id}/approve"), Some(BOB), None)
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let r = api.get(&format!("/v1/requests/{id}"), Some(BOB)).await;
    assert_eq!(r.json["state"], "pending", "{}", r.text);
}

#[tokio::test]
async fn an_admin_outside_the_policy_is_403() {
    let api = Api::start().await;
    let id = api.pending_request(ALICE).await;
    for action in ["approve", "deny"] {
        let r = api
            .post(&format!("/v1/requests/{id}/{action}"), Some(ADMIN), None)
            .await;
        r.assert_error(StatusCode::FORBIDDEN, "forbidden");
        assert!(r.json["detail"].as_str().unwrap().contains("demo-read"));
    }
}

#[tokio::test]
async fn a_request_the_caller_may_not_see_is_404_on_every_endpoint() {
    let api = Api::start().await;
    let id = api.pending_request(ALICE).await;
    let never = "r_0123456789abcdef";
    // carol neither made it nor may decide it: to her it does not exist, and
    // every answer is the one an id that never existed gets.
    for (method, path) in [
        (reqwest::Method::GET, ""),
        (reqwest::Method::POST, "/approve"),
        (reqwest::Method::POST, "/deny"),
        (reqwest::Method::POST, "/cancel"),
    ] {
        let hidden = api
            .send(
                method.clone(),
                &format!("/v1/requests/{id}{path}"),
                Some(CAROL),
                None,
            )
            .await;
        let absent = api
            .send(
                method,
                &format!("/v1/requests/{never}{path}"),
                Some(CAROL),
                None,
            )
            .await;
        hidden.assert_error(StatusCode::NOT_FOUND, "not found");
        absent.assert_error(StatusCode::NOT_FOUND, "not found");
        assert_eq!(
            hidden.text.replace(&id, "<id>"),
            absent.text.replace(never, "<id>"),
            "{path}"
        );
        assert!(!hidden.text.contains("alice"), "{}", hidden.text);
    }
    let r = api.get(&format!("/v1/requests/{id}"), Some(ALICE)).await;
    assert_eq!(r.json["state"], "pending", "{}", r.text);
    assert!(!api.audit_log().contains("\"by\":\"carol\""));
}

#[tokio::test]
async fn approval_with_a_comment_creates_the_grant_that_shows_its_approver() {
    let api = Api::start().await;
    let id = api.pending_request(ALICE).await;
    let r = api
        .post(
            &format!("/v1/requests/{id}/approve"),
            Some(BOB),
            Some(json!({"comment": "ok for INC-42"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["state"], "approved");
    assert_eq!(r.json["approvals"][0]["by"], "bob");
    assert_eq!(r.json["approvals"][0]["comment"], "ok for INC-42");
    let grant = r.json["grant"].as_str().unwrap();

    let grants = api.get("/v1/grants", Some(ALICE)).await.json;
    let g = &grants["grants"][0];
    assert_eq!(g["id"], grant);
    assert_eq!(g["identity"], "alice");
    assert_eq!(g["approved_by"], json!(["bob"]));
    assert_eq!(g["request"], id.as_str());
    let audit = api.audit_log();
    assert!(audit.contains("request_approved") && audit.contains("ok for INC-42"));
}

#[tokio::test]
async fn deciding_a_request_that_is_no_longer_pending_is_409() {
    let api = Api::start().await;
    let id = api.pending_request(ALICE).await;
    // No body at all is a decision without a comment.
    let r = api
        .post(&format!("/v1/requests/{id}/deny"), Some(BOB), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["state"], "denied");
    assert_eq!(r.json["denial"]["by"], "bob");
    for action in ["approve", "deny"] {
        let r = api
            .post(&format!("/v1/requests/{id}/{action}"), Some(BOB), None)
            .await;
        r.assert_error(StatusCode::CONFLICT, "conflict");
    }
    api.post(&format!("/v1/requests/{id}/cancel"), Some(ALICE), None)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    assert_eq!(
        api.get("/v1/grants", Some(ADMIN)).await.json,
        json!({"grants": []}),
        "a denied request gives no grant"
    );
}

#[tokio::test]
async fn a_decision_body_must_be_the_documented_object() {
    let api = Api::start().await;
    let id = api.pending_request(ALICE).await;
    let r = api
        .post(
            &format!("/v1/requests/{id}/approve"),
            Some(BOB),
            Some(json!({"coment": "typo"})),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "malformed body");
}

#[tokio::test]
async fn the_requester_can_cancel_a_pending_request() {
    let api = Api::start().await;
    let id = api.pending_request(ALICE).await;
    // bob may decide it, so he sees it, but only alice may cancel it.
    let r = api
        .post(&format!("/v1/requests/{id}/cancel"), Some(BOB), None)
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let r = api
        .post(&format!("/v1/requests/{id}/cancel"), Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["state"], "cancelled");
    let r = api
        .post(&format!("/v1/requests/{id}/approve"), Some(BOB), None)
        .await;
    r.assert_error(StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn deciding_an_unknown_request_is_404() {
    let api = Api::start().await;
    for action in ["approve", "deny", "cancel"] {
        let r = api
            .post(&format!("/v1/requests/r_nope/{action}"), Some(BOB), None)
            .await;
        r.assert_error(StatusCode::NOT_FOUND, "not found");
    }
    api.get("/v1/requests/r_nope", Some(ADMIN))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not found");
}

#[tokio::test]
async fn requests_are_listed_to_their_requester_and_deciders_only() {
    let api = Api::start().await;
    let mine = api.pending_request(ALICE).await;
    assert_eq!(api.pending_seen_by(ALICE).await, [mine.as_str()]);
    assert_eq!(api.pending_seen_by(BOB).await, [mine.as_str()]);
    assert!(api.pending_seen_by(CAROL).await.is_empty());

    let r = api.get("/v1/requests?state=approved", Some(ALICE)).await;
    assert_eq!(r.json, json!({"requests": []}));
    let r = api.get("/v1/requests", Some(ALICE)).await;
    assert_eq!(r.json["requests"][0]["id"], mine.as_str());

    for token in [ALICE, BOB, ADMIN] {
        let r = api.get(&format!("/v1/requests/{mine}"), Some(token)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["id"], mine.as_str());
    }
    api.get(&format!("/v1/requests/{mine}"), Some(CAROL))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not found");
}

#[tokio::test]
async fn an_invalid_state_filter_is_400() {
    let api = Api::start().await;
    let r = api.get("/v1/requests?state=open", Some(ALICE)).await;
    r.assert_error(StatusCode::BAD_REQUEST, "bad state");
    assert!(r.json["detail"].as_str().unwrap().contains("pending"));
    let r = api.get("/v1/requests?color=red", Some(ALICE)).await;
    r.assert_error(StatusCode::BAD_REQUEST, "bad query");
}

#[tokio::test]
async fn whoami_and_info_answer_the_caller() {
    let api = Api::start().await;
    let r = api.get("/v1/whoami", Some(BOB)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json, json!({"identity": "bob", "groups": ["approver"]}));
    api.get("/v1/whoami", None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "missing token");
    let r = api.get("/v1/info", Some(ALICE)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["postgres"], Value::Null, "no postgres listener here");
    assert_eq!(r.json["mysql"], Value::Null, "no mysql listener here");
    assert_eq!(r.json["tls_required"], true);
    let targets = r.json["targets"].as_array().expect("the targets");
    assert!(!targets.is_empty());
    assert!(
        targets
            .iter()
            .all(|t| t["name"].is_string()
                && (t["protocol"] == "postgres" || t["protocol"] == "mysql")),
        "{targets:?}"
    );
}

// ---- the OpenAPI document ------------------------------------------------

/// The admin sources whose `routes()` the router merges, by module name.
const ROUTE_SOURCES: [(&str, &str); 8] = [
    ("mod", include_str!("mod.rs")),
    ("requests", include_str!("requests.rs")),
    ("grants", include_str!("grants.rs")),
    ("sessions", include_str!("sessions.rs")),
    ("whoami", include_str!("whoami.rs")),
    ("login", include_str!("login.rs")),
    ("reload", include_str!("reload.rs")),
    ("openapi", include_str!("openapi.rs")),
];

/// `(METHOD, path)` for every `.route("…", get(…).post(…))` in `source`.
fn declared_routes(source: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for chunk in source.split(".route(\"").skip(1) {
        let (path, rest) = chunk.split_once('"').unwrap();
        // The method router runs to the end of the statement or the next route.
        let methods = rest.split([';', '\n']).next().unwrap();
        for method in ["get", "post", "put", "patch", "delete"] {
            let call = format!("{method}(");
            if methods.starts_with(&format!(", {call}")) || methods.contains(&format!(".{call}")) {
                found.push((method.to_uppercase(), path.to_owned()));
            }
        }
    }
    found
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes_the_router_has() {
    use std::collections::BTreeSet;

    let doc: Value = serde_json::from_str(super::openapi::DOCUMENT).expect("openapi.json parses");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if method != "parameters" {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }

    // Every module merged into the router is scanned, and nothing else;
    // the approver page's routes answer HTML to browsers, not the API.
    let merged: BTreeSet<&str> = include_str!("mod.rs")
        .split(".merge(")
        .skip(1)
        .map(|m| m.split("::routes()").next().unwrap())
        .filter(|m| *m != "page")
        .collect();
    let scanned: BTreeSet<&str> = ROUTE_SOURCES
        .iter()
        .map(|(m, _)| *m)
        .filter(|m| *m != "mod")
        .collect();
    assert_eq!(
        merged, scanned,
        "update ROUTE_SOURCES when the router changes"
    );
    let declared: BTreeSet<_> = ROUTE_SOURCES
        .iter()
        .flat_map(|(_, src)| declared_routes(src))
        .collect();
    assert!(declared.contains(&("POST".to_owned(), "/v1/requests".to_owned())));
    assert_eq!(documented, declared, "openapi.json and the router disagree");

    // And the router really answers each documented route (not the fallbacks).
    let api = Api::start().await;
    let served: Value = api.get("/v1/openapi.json", None).await.json;
    assert_eq!(served, doc);
    for (method, path) in &documented {
        let path = path.replace("{id}", "x_0");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = api.send(method.clone(), &path, None, None).await;
        assert_ne!(r.json["error"], "no such endpoint", "{method} {path}");
        assert_ne!(r.json["error"], "method not allowed", "{method} {path}");
        // The sign-on routes answer that this proxy has no provider.
        assert!(
            r.status == StatusCode::OK
                || r.status == StatusCode::UNAUTHORIZED
                || r.json["error"] == "no identity provider",
            "{method} {path}: {}",
            r.text
        );
    }
}

// ---- webhooks --------------------------------------------------------------

/// A tiny HTTP server that answers 200 to every POST and hands over its JSON body.
async fn webhook_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/secret-part",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, length) = loop {
                    let n = socket.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "connection closed before the headers ended");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        assert!(head.starts_with("post "), "{head}");
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse::<usize>().unwrap())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    let n = socket.read(&mut chunk).await.unwrap();
                    assert!(n > 0);
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
                let _ = tx.send(body);
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, rx)
}

/// An address that accepts connections and never answers.
async fn black_hole() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

/// A port nothing listens on.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/hook", listener.local_addr().unwrap())
}

async fn next_event(events: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("the webhook received an event")
        .unwrap()
}

#[tokio::test]
async fn webhooks_receive_events_and_a_dead_one_blocks_nothing() {
    let (live, mut events) = webhook_receiver().await;
    let hooks = [
        (black_hole().await, "10s"),
        (closed_port(), "10s"),
        (live, "2s"),
    ];
    let extra: String = hooks
        .iter()
        .map(|(url, timeout)| {
            format!("[[webhooks]]\nurl = \"{url}\"\ntimeout = \"{timeout}\"\nretries = 3\n")
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let api = Api::start_with(dir, &audit, &extra).await;
    crate::notify::spawn(
        tokio::sync::watch::channel(api.shared.config.webhooks.clone()).1,
        api.shared.access.subscribe(),
    );

    let id = api.pending_request(ALICE).await;
    let created = next_event(&mut events).await;
    assert_eq!(created["event"], "request_created");
    assert_eq!(created["request"]["id"], id.as_str());
    assert!(
        created["text"].as_str().unwrap().contains("alice"),
        "{created}"
    );

    let started = std::time::Instant::now();
    let r = api
        .post(&format!("/v1/requests/{id}/approve"), Some(BOB), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "approval took {:?} with a dead webhook",
        started.elapsed()
    );

    let mut names = Vec::new();
    for _ in 0..2 {
        let event = next_event(&mut events).await;
        assert!(
            event["text"].as_str().is_some_and(|t| !t.is_empty()),
            "{event}"
        );
        names.push(event["event"].as_str().unwrap().to_owned());
    }
    assert_eq!(names, ["request_approved", "grant_created"]);
    assert!(api.audit_log().contains("grant_created"));
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_unwritable_audit_log_refuses_requests_with_503() {
    let api = Api::start_with_audit(tempfile::tempdir().unwrap(), Path::new("/dev/full")).await;
    let r = api.request(ALICE, "30m").await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(
        !r.text.contains("/dev/full"),
        "server paths stay in the server log"
    );
    assert_eq!(
        api.get("/v1/requests", Some(ALICE)).await.json,
        json!({"requests": []})
    );
}

#[tokio::test]
async fn an_overlong_reason_or_comment_is_400_and_changes_nothing() {
    let api = Api::start().await;
    let long = "x".repeat(1001);
    let body = json!({"target": "demo-pg", "level": "read", "duration": "30m", "reason": long});
    let r = api.post("/v1/requests", Some(ALICE), Some(body)).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid request");
    assert!(
        r.json["detail"]
            .as_str()
            .unwrap()
            .contains("max_reason_chars")
    );
    assert!(!api.audit_log().contains("request_created"));

    let body = json!({"identity": "alice", "target": "demo-pg", "level": "read", "duration": "2m", "reason": long});
    let r = api.post("/v1/grants", Some(ADMIN), Some(body)).await;
    r.assert_error(StatusCode::BAD_REQUEST, "reason too long");

    let id = api.pending_request(ALICE).await;
    let r = api
        .post(
            &format!("/v1/requests/{id}/deny"),
            Some(BOB),
            Some(json!({"comment": long})),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid request");
    assert_eq!(api.pending_seen_by(ALICE).await, [id.as_str()]);
}

#[tokio::test]
async fn pending_requests_per_identity_are_capped_with_429() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let api = Api::start_with(dir, &audit, "[requests]\nmax_pending_per_identity = 2\n").await;
    let first = api.pending_request(ALICE).await;
    api.pending_request(ALICE).await;
    let r = api.request(ALICE, "30m").await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "too many pending requests");
    let detail = r.json["detail"].as_str().unwrap();
    assert!(
        detail.contains("max_pending_per_identity") && detail.contains("jitgate cancel"),
        "{detail}"
    );
    // Someone else's budget is their own.
    api.pending_request(CAROL).await;
    // A decided request no longer counts.
    let r = api
        .post(&format!("/v1/requests/{first}/cancel"), Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    api.pending_request(ALICE).await;
}
