//! The admin API over a real socket, driven with reqwest.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::access::AccessModel;
use crate::audit::AuditLog;
use crate::config::Config;
use crate::identity::{Identities, ScramVerifier};
use crate::server::Shared;
use crate::session::{NewSession, SessionGuard, Sessions};

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
    shared: Arc<Shared>,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        Api::start_with_audit(dir, &audit).await
    }

    async fn start_with_audit(dir: tempfile::TempDir, audit: &Path) -> Api {
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
"#,
            data = dir.path().display(),
            audit = audit.display(),
        );
        let config = Arc::new(Config::from_toml(&toml, &dir.path().join("jitgate.toml")).unwrap());
        let audit = AuditLog::open(&config.audit).unwrap();
        let shared = Arc::new(Shared {
            identities: Arc::new(Identities::from_config(&config.identities)),
            access: AccessModel::new(config.clone(), audit.clone()),
            sessions: Arc::new(Sessions::default()),
            audit,
            config,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(super::serve(listener, shared.clone()));
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
async fn approvers_and_admins_can_revoke_anyones_grant() {
    let api = Api::start().await;
    for token in [BOB, ADMIN] {
        let id = api.grant("alice", "2m").await.json["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = api
            .post(&format!("/v1/grants/{id}/revoke"), Some(token), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
}

#[tokio::test]
async fn another_developer_cannot_revoke_a_grant() {
    let api = Api::start().await;
    let id = api.grant("alice", "2m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = api
        .post(&format!("/v1/grants/{id}/revoke"), Some(CAROL), None)
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "forbidden");
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
    let r = api
        .post(&format!("/v1/sessions/{id}/kill"), Some(CAROL), None)
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "forbidden");

    let r = api
        .post(&format!("/v1/sessions/{id}/kill"), Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json, json!({"killed": id}));
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
    api.get("/", None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "no such endpoint");
    let r = api
        .send(reqwest::Method::DELETE, "/v1/grants", Some(ADMIN), None)
        .await;
    r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
}
