//! One shape for every admin-API failure.
//!
//! Whatever goes wrong — no token, a typo in a body, a grant that already
//! ended, an audit log that cannot be written — the caller gets the same JSON,
//! `{"error": "<short phrase>", "detail": "<what happened and what to do>"}`,
//! with a status that says whose move it is. The CLI prints these as the API
//! said them, so the detail is written for a person. Nothing secret (tokens,
//! verifiers, upstream passwords, server paths) ever goes into one.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::access::store::SharedStoreError;
use crate::access::{AccessError, GrantError, StoreError};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    detail: String,
    /// Seconds the client should wait before trying again (429).
    retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            detail: detail.into(),
            retry_after_secs: None,
        }
    }

    /// The status, the short phrase and the detail, for the approver page,
    /// which shows the API's own answer as HTML.
    pub(super) fn parts(&self) -> (StatusCode, &'static str, &str) {
        (self.status, self.error, &self.detail)
    }

    pub fn bad_request(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error, detail)
    }

    /// 401: no credentials, or credentials that match nobody. The response
    /// carries `WWW-Authenticate: Bearer`.
    pub fn unauthorized(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, error, detail)
    }

    /// 403: the caller is known but may not do this.
    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, error, detail)
    }

    pub fn too_many_failed_logins(retry_after_secs: u64) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins",
            format!(
                "too many failed logins (bearer tokens or database passwords) from this address; wait {retry_after_secs}s and try again with the right secret"
            ),
        )
        .retry_after(retry_after_secs)
    }

    /// 503: the audit log cannot be written, so nothing was changed. The
    /// cause (which names server paths) goes to the proxy's log, not the caller.
    pub fn audit_unavailable(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "admin API: audit log write failed; refusing the change");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit log unavailable",
            "the audit log cannot be written, so nothing was changed; an operator must check the proxy's log and disk",
        )
    }

    /// The fleet's store cannot be reached: nothing changed (or, for an
    /// unconfirmed commit, the message says it may have).
    pub fn store_unavailable(cause: &SharedStoreError) -> ApiError {
        tracing::warn!(error = %cause, "admin API: the store refused or could not take a change");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store unavailable",
            format!(
                "{}; try again once the store is back (GET /healthz says when)",
                cause.to_caller()
            ),
        )
        .retry_after(1)
    }

    pub fn internal(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error", detail)
    }

    /// Ask the client to wait `secs` before trying again (`Retry-After`).
    pub fn retry_after(self, secs: u64) -> ApiError {
        ApiError {
            retry_after_secs: Some(secs),
            ..self
        }
    }

    /// The whole HTTP/1.1 response, for answers written on the socket below
    /// the router (see `connections.rs`); the connection closes after it.
    pub fn to_http1_bytes(&self) -> Vec<u8> {
        let body = serde_json::to_vec(&ErrorBody {
            error: self.error,
            detail: &self.detail,
        })
        .unwrap_or_default();
        let retry_after = self
            .retry_after_secs
            .map(|s| format!("retry-after: {s}\r\n"))
            .unwrap_or_default();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\n{retry_after}connection: close\r\ncontent-length: {}\r\n\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error,
            detail: &self.detail,
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<GrantError> for ApiError {
    fn from(e: GrantError) -> ApiError {
        match &e {
            GrantError::UnknownTarget(_) => ApiError::bad_request(
                "unknown target",
                format!("{e}; use a target name from the proxy config"),
            ),
            GrantError::UnknownLevel { .. } => {
                ApiError::bad_request("unknown level", e.to_string())
            }
            GrantError::UnknownIdentity(_) => ApiError::bad_request(
                "unknown identity",
                format!(
                    "{e}; use an identity name from the proxy config, or the name of someone signed on through the identity provider"
                ),
            ),
            GrantError::BadDuration(_) => ApiError::bad_request(
                "bad duration",
                format!("{e}, written like \"30m\" or \"2h\""),
            ),
            GrantError::MissingReason => ApiError::bad_request(
                "missing reason",
                "a reason is required: say why access is needed, e.g. an incident or ticket number",
            ),
            GrantError::ReasonTooLong { .. } => ApiError::bad_request(
                "reason too long",
                format!(
                    "{e} (requests.max_reason_chars): name the ticket or incident and say why in a sentence or two"
                ),
            ),
            GrantError::NotFound(_) => ApiError::not_found(
                "grant not found",
                format!("{e}; list active grants with GET /v1/grants"),
            ),
            GrantError::Audit(StoreError::Shared(cause)) => ApiError::store_unavailable(cause),
            GrantError::Audit(cause) => ApiError::audit_unavailable(cause),
            // The model logged the cause; it may name a server path.
            GrantError::RevokeNotRecorded { id, .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "revoke not recorded",
                format!(
                    "grant {id} has ended and its sessions are closed, but the audit log or the journal \
                     cannot be written, so a restart would restore the grant until it expires; an operator \
                     must check the proxy's log and disk before restarting it"
                ),
            ),
        }
    }
}

impl From<AccessError> for ApiError {
    /// The model's messages are written for people, so they become the detail
    /// as-is; the cause picks the status. The model logged the cause of an
    /// `Unavailable`, and its message names no server path.
    fn from(e: AccessError) -> ApiError {
        let (status, error) = match &e {
            AccessError::MissingReason
            | AccessError::ReasonTooLong { .. }
            | AccessError::CommentTooLong { .. }
            | AccessError::UnknownTarget { .. }
            | AccessError::UnknownLevel { .. }
            | AccessError::DurationTooShort
            | AccessError::NoPolicy(_)
            | AccessError::DurationTooLong
            | AccessError::RequestedDurationTooLong => (StatusCode::BAD_REQUEST, "invalid request"),
            AccessError::OwnApproval
            | AccessError::OwnDenial
            | AccessError::PolicyGone { .. }
            | AccessError::NotAnApprover { .. }
            | AccessError::NotTheRequester { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            AccessError::RequestNotFound { .. } => (StatusCode::NOT_FOUND, "not found"),
            AccessError::NotPending { .. } => (StatusCode::CONFLICT, "conflict"),
            AccessError::NameBound { .. } => (StatusCode::CONFLICT, "name taken"),
            AccessError::PolicyNarrowed { .. } => (StatusCode::CONFLICT, "conflict"),
            AccessError::NameHoldsAccess { .. } => (StatusCode::CONFLICT, "name holds access"),
            AccessError::TooManyPending { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too many pending requests")
            }
            AccessError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            AccessError::StoreDown(_) | AccessError::Behind => {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store unavailable",
                    e.to_string(),
                )
                .retry_after(1);
            }
        };
        ApiError::new(status, error, e.to_string())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> ApiError {
        ApiError::new(e.status(), "bad path", e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::bad_request("bad query", e.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> ApiError {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large",
                format!(
                    "request bodies are limited to {} KiB; send a smaller JSON object",
                    super::MAX_BODY_BYTES / 1024
                ),
            )
        } else {
            ApiError::new(e.status(), "unreadable body", e.body_text())
        }
    }
}
