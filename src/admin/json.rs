//! JSON request bodies, with failures in the API's own error shape.
//!
//! axum's `Json` answers a bad body in plain text and refuses a body without
//! `Content-Type: application/json` — which is what `curl -d` sends, and the
//! README's demo uses `curl -d`. [`JsonBody`] reads the body as JSON whatever
//! the content type says and turns every failure into an [`ApiError`].
//! Handlers take it as `Result<JsonBody<T>, ApiError>` so they can check the
//! caller's rights before complaining about the body.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "missing body",
                "this endpoint takes a JSON object as the request body",
            ));
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::bad_request(
                "malformed body",
                format!("the request body is not the JSON object this endpoint expects: {e}"),
            )
        })
    }
}
