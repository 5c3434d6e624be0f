//! The admin API as the CLI sees it: one authenticated HTTP client.
//!
//! Every failure becomes a [`ClientError`] whose text is what the user
//! reads after `jitgate: `. An API error is shown exactly as the API said it
//! (`<error>: <detail>`), an unreachable server names the URL that was tried,
//! and the token never appears in any of them.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

/// How long one API call may take before the CLI gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with its error shape.
    #[error("{error}: {detail}")]
    Api {
        status: StatusCode,
        error: String,
        detail: String,
    },
    #[error(
        "cannot reach the jitgate admin API at {url}: {cause}; is jitgate running there? Point JITGATE_SERVER (or --server) at its admin address"
    )]
    Unreachable { url: String, cause: String },
    #[error(
        "{url} answered {status} without the jitgate error shape; is that the jitgate admin API?"
    )]
    Unexpected { url: String, status: StatusCode },
    #[error("{url} answered with something that is not the JSON jitgate sends: {cause}")]
    BadResponse { url: String, cause: String },
    #[error(
        "`{0}` is not a server URL like http://127.0.0.1:8080 (set JITGATE_SERVER or --server)"
    )]
    BadServer(String),
    #[error(
        "no token: sign in with `jitgate login`, or set JITGATE_TOKEN to your jitgate secret (or pass --token, which other users can see in `ps`)"
    )]
    MissingToken,
    #[error("cannot start the HTTP client: {0}")]
    Setup(String),
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    detail: String,
}

pub struct Client {
    /// The server URL without a trailing slash.
    base: Url,
    /// `None` for the sign-on calls, which are how a token is got.
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// `server` may leave out `http://`.
    pub fn new(server: &str, token: Option<String>) -> Result<Client, ClientError> {
        let token = token
            .filter(|t| !t.trim().is_empty())
            .ok_or(ClientError::MissingToken)?;
        let mut client = Client::anonymous(server)?;
        client.token = Some(token);
        Ok(client)
    }

    /// A client without a token, for signing on.
    pub fn anonymous(server: &str) -> Result<Client, ClientError> {
        let with_scheme = if server.contains("://") {
            server.to_owned()
        } else {
            format!("http://{server}")
        };
        let base = Url::parse(with_scheme.trim_end_matches('/'))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| ClientError::BadServer(server.to_owned()))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("jitgate-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Client {
            base,
            token: None,
            http,
        })
    }

    /// The server URL as the user would write it.
    pub fn server(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// The host part of the server URL (where the proxy itself most likely is).
    pub fn server_host(&self) -> &str {
        self.base.host_str().unwrap_or("127.0.0.1")
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(Method::GET, path, &[], None).await
    }

    /// GET with query parameters, encoded here.
    pub async fn get_with_query(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, ClientError> {
        self.send(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        self.send(Method::POST, path, &[], body).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.server());
        let mut request = self.http.request(method, &url).query(query);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: self.server(),
            cause: innermost_cause(&e),
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.server(),
                cause: innermost_cause(&e),
            })?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| ClientError::BadResponse {
                url: url.clone(),
                cause: e.to_string(),
            });
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(ClientError::Api {
                status,
                error: body.error,
                detail: body.detail,
            }),
            Err(_) => Err(ClientError::Unexpected { url, status }),
        }
    }
}

/// reqwest's own text is "error sending request for url (…)"; the useful
/// part ("Connection refused", "operation timed out") is at the end of the chain.
fn innermost_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {}s", REQUEST_TIMEOUT.as_secs());
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
