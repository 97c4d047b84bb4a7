//! The JSON error contract: `{"error":{"code":"…","message":"…"}}`.
//!
//! Every code is listed once in [`ErrorCode`] with its HTTP status (as meilisearch keeps one
//! table of error codes), so handlers say *what* went wrong and the status follows. A client's
//! mistake is always a 4xx; only a fault of ours is a 500, and its message says nothing internal.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Stable error codes of Ferry's HTTP APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not valid JSON or lacks required fields.
    InvalidBody,
    /// A field has an invalid value (empty name, negative amount, bad email).
    InvalidField,
    /// A query or path parameter is invalid.
    InvalidParameter,
    /// The request itself is malformed (a header, the URL's encoding).
    BadRequest,
    /// The request's `Host` is not one this server answers to (see `edge`).
    Forbidden,
    /// The path exists but not with this method; the answer's `Allow` header lists those it takes.
    MethodNotAllowed,
    /// No such resource.
    NotFound,
    /// The request conflicts with existing state (duplicate code or email).
    Conflict,
    /// A domain rule forbids the command (edit a deleted post, delete someone else's post).
    RuleViolated,
    /// The request body is larger than the service accepts.
    PayloadTooLarge,
    /// The request needs a media type we do not accept.
    UnsupportedMediaType,
    /// A dependency (database, broker) is not available right now; retry later.
    Unavailable,
    /// A fault of ours.
    Internal,
}

impl ErrorCode {
    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::InvalidParameter => "invalid_parameter",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RuleViolated => "rule_violated",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidBody | ErrorCode::InvalidParameter | ErrorCode::BadRequest => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::InvalidField | ErrorCode::RuleViolated => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An HTTP API error. Build one with [`ApiError::new`] or the shorthands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What went wrong.
    pub code: ErrorCode,
    /// For the person reading it.
    pub message: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
    /// 404 for `what` (e.g. "course 42").
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }
    /// 422: a field's value is not acceptable.
    pub fn invalid_field(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidField, message)
    }
    /// 409: conflicts with existing state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    /// 422: a domain rule says no.
    pub fn rule(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::RuleViolated, message)
    }
    /// 500, logging the cause and hiding it from the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error answering a request");
        Self::new(ErrorCode::Internal, "internal error; see the service log")
    }
}

/// Puts every error answer in the JSON contract: axum's own rejections (a path parameter that is
/// not UTF-8 or not a number, a 405, a body over the limit read by `Bytes`, a header it cannot
/// read) answer in plain text or with no body at all; this rewrites any 4xx or 5xx whose body is
/// not JSON into `{"error":{"code","message"}}`, keeping its status and headers (`Allow`,
/// `Retry-After`). [`crate::serve`] applies it to every service, so handlers and extractors need
/// not remember to. A 5xx's text is logged, never sent.
pub async fn json_errors(response: Response) -> Response {
    use axum::http::header;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.split(';').next().unwrap_or("").trim();
            ct.eq_ignore_ascii_case("application/json") || ct.ends_with("+json")
        });
    if json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let error = ApiError::for_status(status, text);
    let mut out = error.into_response();
    *out.status_mut() = status;
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

impl ApiError {
    /// The error for an answer that only had a status and maybe a plain-text reason.
    pub fn for_status(status: StatusCode, text: String) -> ApiError {
        let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
        let or_reason = |text: String| {
            if text.is_empty() {
                reason.clone()
            } else {
                text
            }
        };
        match status {
            StatusCode::BAD_REQUEST if text.starts_with("Invalid URL") || text.contains("path") => {
                ApiError::new(ErrorCode::InvalidParameter, text)
            }
            StatusCode::BAD_REQUEST => ApiError::new(
                ErrorCode::BadRequest,
                if text.is_empty() {
                    "the request is malformed (a header or the URL cannot be read)".to_string()
                } else {
                    text
                },
            ),
            StatusCode::NOT_FOUND => ApiError::new(ErrorCode::NotFound, or_reason(text)),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this path does not take this method; the Allow header lists those it takes",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the request body is larger than {} bytes",
                    crate::fields::MAX_BODY_BYTES
                ),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ApiError::new(ErrorCode::UnsupportedMediaType, or_reason(text))
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                ApiError::new(ErrorCode::InvalidBody, or_reason(text))
            }
            StatusCode::CONFLICT => ApiError::new(ErrorCode::Conflict, or_reason(text)),
            StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::BAD_GATEWAY
            | StatusCode::GATEWAY_TIMEOUT => ApiError::new(ErrorCode::Unavailable, or_reason(text)),
            s if s.is_server_error() => {
                tracing::error!(status = %s, error = %text, "internal error answering a request");
                ApiError::new(ErrorCode::Internal, "internal error; see the service log")
            }
            _ => ApiError::new(ErrorCode::BadRequest, or_reason(text)),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code.as_str(),
                message: &self.message,
            },
        };
        (self.code.status(), Json(body)).into_response()
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s in the JSON contract instead of axum's plain text.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    "send the body as JSON (Content-Type: application/json)",
                ),
                // The body limit (`fields::MAX_BODY_BYTES`) stopped the read.
                other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "the request body is larger than {} bytes",
                        crate::fields::MAX_BODY_BYTES
                    ),
                ),
                other => ApiError::new(ErrorCode::InvalidBody, other.body_text()),
            }),
        }
    }
}

/// `Query<T>` whose rejections are [`ApiError`]s (`invalid_parameter`, 400) in the JSON contract.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(ApiError::new(
                ErrorCode::InvalidParameter,
                rejection.body_text(),
            )),
        }
    }
}

/// How many items a list answer holds unless the caller asks otherwise.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most items one list answer holds.
pub const MAX_LIMIT: u32 = 1000;

/// A list's `limit` parameter: [`DEFAULT_LIMIT`] when absent, 1 to [`MAX_LIMIT`] otherwise.
pub fn limit(requested: Option<u32>) -> Result<u32, ApiError> {
    let limit = requested.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("limit must be from 1 to {MAX_LIMIT}"),
        ))
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[track_caller]
    fn check(err: ApiError, status: u16, code: &str) {
        let resp = err.into_response();
        assert_eq!(resp.status().as_u16(), status);
        let body = futures_body(resp);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], code);
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    fn futures_body(resp: Response) -> Vec<u8> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                resp.into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .to_vec()
            })
    }

    #[test]
    fn every_shorthand_maps_to_its_status_and_code() {
        check(ApiError::not_found("course 7"), 404, "not_found");
        check(
            ApiError::invalid_field("name is required"),
            422,
            "invalid_field",
        );
        check(ApiError::conflict("code taken"), 409, "conflict");
        check(ApiError::rule("post was deleted"), 422, "rule_violated");
        check(ApiError::internal("db exploded"), 500, "internal");
        check(
            ApiError::new(ErrorCode::InvalidBody, "x"),
            400,
            "invalid_body",
        );
        check(
            ApiError::new(ErrorCode::PayloadTooLarge, "x"),
            413,
            "payload_too_large",
        );
    }
}
