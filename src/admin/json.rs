//! JSON request bodies, with failures in the API's own error shape.
//!
//! axum's `Json` answers a bad body in plain text and refuses a body without
//! `Content-Type: application/json` — which is what `curl -d` sends, and the
//! README's demo uses `curl -d`. [`JsonBody`] reads the body as JSON whatever
//! the content type says and turns every failure into an [`ApiError`].
//! Handlers take it as `Result<JsonBody<T>, ApiError>` so they can check the
//! caller's rights before complaining about the body. [`OptionalJsonBody`] is
//! the same for endpoints whose body may be left out (`approve`, `deny`).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct JsonBody<T>(pub T);

/// A JSON body that may be empty, in which case it is `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await?;
        if is_blank(&bytes) {
            return Err(ApiError::bad_request(
                "missing body",
                "this endpoint takes a JSON object as the request body",
            ));
        }
        parse(&bytes).map(JsonBody)
    }
}

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await?;
        if is_blank(&bytes) {
            return Ok(OptionalJsonBody(T::default()));
        }
        parse(&bytes).map(OptionalJsonBody)
    }
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            "malformed body",
            format!("the request body is not the JSON object this endpoint expects: {e}"),
        )
    })
}

/// A body's `duration` field, written like "30m" or "2h".
pub fn duration(text: &str) -> Result<Duration, ApiError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        ApiError::bad_request(
            "bad duration",
            format!("`{text}` is not a duration like \"30m\" or \"2h\": {e}"),
        )
    })
}
