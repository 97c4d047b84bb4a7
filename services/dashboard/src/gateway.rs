//! The gateway: one origin for every service.
//!
//! `/api/...` goes to the service that owns the path ([`ROUTES`]: the reference systems keep
//! their originals' paths, which do not overlap), `/svc/{service}/...` to any service by name
//! (the users services' paths, `/health`, `/openapi.json`). Method, path, query, body and the
//! content headers pass through unchanged; so do the answer's status, content type, `Location`,
//! `Retry-After` and body, errors included. A service that does not answer is a `503` in Ferry's error shape.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use ferry_service::{ApiError, ErrorCode};

use crate::AppState;

/// Which methods a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Methods {
    Any,
    /// GET and HEAD: the read side of a CQRS pair.
    Reads,
    /// Everything else: the write side.
    Writes,
}

/// `(path prefix, methods, service)`, first match wins. A prefix matches the path itself and
/// anything below it.
const ROUTES: &[(&str, Methods, &str)] = &[
    ("/api/v1/courses", Methods::Reads, "courses-consumer"),
    ("/api/v1/courses", Methods::Writes, "courses-producer"),
    ("/api/Customer", Methods::Any, "customers"),
    ("/api/Orders", Methods::Any, "orders"),
    ("/api/v1/PostLookup", Methods::Any, "posts-query"),
    // A rebuild's progress is on the query side; asking for one goes to the command side.
    ("/api/v1/RestoreReadDb", Methods::Reads, "posts-query"),
    ("/api/invoices", Methods::Any, "invoice-generator"),
    ("/api/scores", Methods::Any, "score-calculator"),
    // The posts commands (NewPost, LikePost/{id}, ..., RestoreReadDb) share no prefix.
    ("/api/v1", Methods::Any, "posts-command"),
];

/// The service owning `path` for `method`, if any.
fn owner(method: &Method, path: &str) -> Option<&'static str> {
    let reads = method == Method::GET || method == Method::HEAD;
    ROUTES
        .iter()
        .find(|(prefix, methods, _)| {
            let below = path == *prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'));
            let method_ok = match methods {
                Methods::Any => true,
                Methods::Reads => reads,
                Methods::Writes => !reads,
            };
            below && method_ok
        })
        .map(|(_, _, service)| *service)
}

/// `/api/...`: to the owning service.
pub(crate) async fn forward_api(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(service) = owner(&method, uri.path()) else {
        return ApiError::not_found(format!("path {}", uri.path())).into_response();
    };
    forward(
        &state,
        service,
        method,
        uri.path(),
        uri.query(),
        headers,
        body,
    )
    .await
}

/// `/svc/{service}/{path}`: to that service.
pub(crate) async fn forward_service(
    State(state): State<AppState>,
    Path((service, path)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/{path}");
    forward(&state, &service, method, &path, uri.query(), headers, body).await
}

/// `/svc/{service}`: that service's root.
pub(crate) async fn forward_service_root(
    State(state): State<AppState>,
    Path(service): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    forward(&state, &service, method, "/", uri.query(), headers, body).await
}

/// Request headers passed on: what says what the body is and what the caller accepts.
const PASSED: [HeaderName; 3] = [header::CONTENT_TYPE, header::ACCEPT, header::AUTHORIZATION];

async fn forward(
    state: &AppState,
    service: &str,
    method: Method,
    path: &str,
    query: Option<&str>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(upstream) = state.upstreams.iter().find(|u| u.name == service) else {
        return ApiError::not_found(format!("service {service}")).into_response();
    };
    let mut url = format!("{}{path}", upstream.url);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    let mut request = state.http.request(method, &url).body(body);
    for name in PASSED {
        if let Some(value) = headers.get(&name) {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => {
            // The path without its query, and the error without the URL: a query may carry a
            // token.
            let e = e.without_url();
            tracing::warn!(service, %path, error = %e, "gateway: service did not answer");
            return ApiError::new(
                ErrorCode::Unavailable,
                format!("{service} did not answer: {e}"),
            )
            .into_response();
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::LOCATION, header::RETRY_AFTER] {
        if let Some(value) = answer.headers().get(&name) {
            out.insert(name, value.clone());
        }
    }
    match answer.bytes().await {
        Ok(body) => (status, out, body).into_response(),
        Err(e) => ApiError::new(
            ErrorCode::Unavailable,
            format!("{service} broke off its answer: {e}"),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(method: Method, path: &str, want: Option<&str>) {
        assert_eq!(owner(&method, path), want, "{method} {path}");
    }

    #[test]
    fn every_path_goes_to_its_owner() {
        check(Method::GET, "/api/v1/courses", Some("courses-consumer"));
        check(Method::GET, "/api/v1/courses/7", Some("courses-consumer"));
        check(Method::POST, "/api/v1/courses", Some("courses-producer"));
        check(
            Method::DELETE,
            "/api/v1/courses/7",
            Some("courses-producer"),
        );
        check(Method::POST, "/api/Customer/NewCustomer", Some("customers"));
        check(Method::GET, "/api/Orders/42", Some("orders"));
        check(
            Method::GET,
            "/api/v1/PostLookup/byId/1",
            Some("posts-query"),
        );
        check(Method::POST, "/api/v1/NewPost", Some("posts-command"));
        check(Method::PUT, "/api/v1/LikePost/1", Some("posts-command"));
        check(Method::POST, "/api/v1/RestoreReadDb", Some("posts-command"));
        check(Method::GET, "/api/v1/RestoreReadDb/7", Some("posts-query"));
        check(Method::GET, "/api/v1/EventFeed", Some("posts-command"));
        check(Method::GET, "/api/invoices/3", Some("invoice-generator"));
        check(Method::GET, "/api/scores/acme", Some("score-calculator"));
        // A prefix matches whole segments only.
        check(Method::GET, "/api/v1/coursesX", Some("posts-command"));
        check(Method::GET, "/api/invoicesX", None);
        check(Method::GET, "/api/unknown", None);
    }
}
