//! The admin API as the tests drive it: break-glass grants and revokes as
//! `admin`, the request lifecycle as any identity, sessions, and the
//! `jitgate` client command — plus reading ids and times out of the
//! answers.

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::jitgate::{ADMIN_SECRET, Jitgate, PG_TARGET};
use super::run::Run;
use super::wait::within;

/// The admin API of one [`Jitgate`], cheap to clone into tasks.
#[derive(Clone)]
pub struct AdminApi {
    http: reqwest::Client,
    base: String,
}

impl AdminApi {
    /// One call; the status and the body (JSON, or a string), or the
    /// transport error (refused, reset, timed out).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }
}

impl Jitgate {
    /// One admin-API call; returns the status and the body (JSON, or a string).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.admin_api()
            .call(method.clone(), path, token, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n--- jitgate log\n{}", self.log()))
    }

    /// A handle on the admin API that tasks can own, and that reports a
    /// failed call instead of panicking (the proxy may be dead on purpose).
    pub fn admin_api(&self) -> AdminApi {
        AdminApi {
            http: self.http().clone(),
            base: self.admin_url(),
        }
    }

    /// A break-glass grant by `admin`; returns the grant JSON.
    pub async fn grant(&self, identity: &str, target: &str, level: &str, duration: &str) -> Value {
        let body = json!({
            "identity": identity, "target": target, "level": level,
            "duration": duration, "reason": "integration test",
        });
        let (status, grant) = self
            .api(
                reqwest::Method::POST,
                "/v1/grants",
                Some(ADMIN_SECRET),
                Some(body),
            )
            .await;
        assert_eq!(
            status,
            201,
            "POST /v1/grants answered {status}: {grant}\n--- jitgate log\n{}",
            self.log()
        );
        assert!(
            grant["id"].is_string() || grant["id"].is_number(),
            "grant has no id: {grant}"
        );
        grant
    }

    pub async fn revoke(&self, grant_id: &str) -> Value {
        let (status, body) = self.revoke_as(ADMIN_SECRET, grant_id).await;
        assert!(
            (200..300).contains(&status),
            "revoke answered {status}: {body}"
        );
        body
    }

    pub async fn grants(&self) -> Value {
        let (status, body) = self
            .api(reqwest::Method::GET, "/v1/grants", Some(ADMIN_SECRET), None)
            .await;
        assert_eq!(status, 200, "GET /v1/grants answered {status}: {body}");
        body
    }

    pub async fn sessions(&self) -> Vec<Value> {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                "/v1/sessions",
                Some(ADMIN_SECRET),
                None,
            )
            .await;
        assert_eq!(status, 200, "GET /v1/sessions answered {status}: {body}");
        body["sessions"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /v1/sessions: no `sessions` array in {body}"))
            .clone()
    }

    pub async fn kill_session(&self, session_id: &str) -> Value {
        let (status, body) = self
            .api(
                reqwest::Method::POST,
                &format!("/v1/sessions/{session_id}/kill"),
                Some(ADMIN_SECRET),
                None,
            )
            .await;
        assert!(
            (200..300).contains(&status),
            "kill answered {status}: {body}"
        );
        body
    }

    // ---- the request lifecycle, as a given identity ----

    /// `POST /v1/requests` as the holder of `token`: `level` on demo-pg for
    /// `duration` (like "30m"), for `reason`.
    pub async fn request_access(
        &self,
        token: &str,
        level: &str,
        duration: &str,
        reason: &str,
    ) -> (u16, Value) {
        let body =
            json!({"target": PG_TARGET, "level": level, "duration": duration, "reason": reason});
        self.api(
            reqwest::Method::POST,
            "/v1/requests",
            Some(token),
            Some(body),
        )
        .await
    }

    /// Like [`Jitgate::request_access`], panicking unless it answers `201`;
    /// returns the request.
    pub async fn request_ok(&self, token: &str, level: &str, duration: &str) -> Value {
        let (status, request) = self
            .request_access(token, level, duration, "integration test")
            .await;
        assert_eq!(
            status,
            201,
            "POST /v1/requests answered {status}: {request}\n--- jitgate log\n{}",
            self.log()
        );
        request
    }

    /// `POST /v1/requests/{id}/{verb}` (`approve`, `deny` or `cancel`) as the
    /// holder of `token`, with an optional comment.
    pub async fn decide(
        &self,
        token: &str,
        request_id: &str,
        verb: &str,
        comment: Option<&str>,
    ) -> (u16, Value) {
        let body = comment.map(|c| json!({ "comment": c }));
        self.api(
            reqwest::Method::POST,
            &format!("/v1/requests/{request_id}/{verb}"),
            Some(token),
            body,
        )
        .await
    }

    /// `GET /v1/requests/{id}` as the holder of `token`, panicking unless `200`.
    pub async fn request_by_id(&self, token: &str, request_id: &str) -> Value {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                &format!("/v1/requests/{request_id}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(
            status, 200,
            "GET /v1/requests/{request_id} answered {status}: {body}"
        );
        body
    }

    /// `GET /v1/requests?state=…` as the holder of `token`.
    pub async fn requests_seen_by(&self, token: &str, state: &str) -> Vec<Value> {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                &format!("/v1/requests?state={state}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "GET /v1/requests answered {status}: {body}");
        body["requests"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /v1/requests: no `requests` array in {body}"))
            .clone()
    }

    /// The active grant `grant_id` as `GET /v1/grants` (seen by admin) shows it.
    pub async fn active_grant(&self, grant_id: &str) -> Option<Value> {
        self.grants().await["grants"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /v1/grants: no `grants` array"))
            .iter()
            .find(|g| id_of(g) == grant_id)
            .cloned()
    }

    /// `POST /v1/grants/{id}/revoke` as the holder of `token`.
    pub async fn revoke_as(&self, token: &str, grant_id: &str) -> (u16, Value) {
        self.api(
            reqwest::Method::POST,
            &format!("/v1/grants/{grant_id}/revoke"),
            Some(token),
            None,
        )
        .await
    }

    /// The `jitgate` client command as the holder of `token`, with the server
    /// and token in `JITGATE_SERVER` / `JITGATE_TOKEN`, as a person runs it.
    pub fn cli_command(&self, token: &str, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_jitgate"));
        cmd.args(args)
            .env("JITGATE_SERVER", self.admin_url())
            .env("JITGATE_TOKEN", token)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Run [`Jitgate::cli_command`] to its end.
    pub async fn cli(&self, token: &str, args: &[&str]) -> Run {
        let out = within(
            Duration::from_secs(30),
            "the jitgate CLI to finish",
            self.cli_command(token, args).output(),
        )
        .await
        .expect("run the jitgate CLI");
        Run::from(out)
    }
}

/// `expires_at` of a grant (or request) as a time on this machine's clock.
pub fn expires_at(grant: &Value) -> SystemTime {
    time_of(grant, "expires_at")
}

/// The RFC 3339 UTC time in field `key` of an API object.
pub fn time_of(object: &Value, key: &str) -> SystemTime {
    let text = object[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} string in {object}"));
    let normalized = match text.strip_suffix("+00:00") {
        Some(base) => format!("{base}Z"),
        None => text.to_owned(),
    };
    humantime::parse_rfc3339_weak(&normalized)
        .unwrap_or_else(|e| panic!("{key} `{text}` is not RFC 3339 UTC: {e}"))
}

/// An id as a string, whatever JSON type the API uses for it.
pub fn id_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `id` field of a grant or session.
pub fn id_of(v: &Value) -> String {
    id_string(&v["id"])
}
