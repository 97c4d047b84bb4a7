//! What every request must pass before any route sees it: a path without dot-segments or
//! encoded slashes, and a `Host` this machine answers to.
//!
//! The dashboard's gateway routes by path prefix, and a service behind it resolves `..` the way
//! any HTTP client on the way might: `GET /api/v1/courses/../../../metrics` would reach a
//! service's `/metrics` and `POST /api/v1/PostLookup/../RestoreReadDb` a command the read/write
//! split meant to keep apart. So a path with a `.` or `..` segment (also percent-encoded, `%2e`)
//! or an encoded slash or backslash (`%2f`, `%5c`, `\`) is refused with 400 `bad_request` before
//! routing, on every service and the gateway: no route of ours needs one.
//!
//! DNS rebinding: a web page on `evil.example` can make its name resolve to `127.0.0.1` and then
//! drive a local Ferry from the victim's browser, as same-origin. The browser still sends
//! `Host: evil.example`, so only hosts that cannot be rebound are served: an IP literal (the
//! origin is then the address itself), `localhost` and `*.localhost` (browsers resolve those to
//! loopback themselves). Anything else is 403 `forbidden`. A request without `Host` (HTTP/1.0
//! tools) passes.

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, ErrorCode};

/// The middleware [`crate::serve`] puts in front of every service's routes.
pub async fn guard(request: Request, next: Next) -> Response {
    if let Some(host) = request.headers().get(header::HOST) {
        let host = host.to_str().unwrap_or("");
        if !host_allowed(host) {
            return ApiError::new(
                ErrorCode::Forbidden,
                "this Host is not served: use an IP address or localhost (a DNS name could be rebound to this machine)",
            )
            .into_response();
        }
    }
    if let Some(why) = unsafe_path(request.uri().path()) {
        return ApiError::new(ErrorCode::BadRequest, why).into_response();
    }
    next.run(request).await
}

/// Whether `host` (`name[:port]`, `[v6][:port]`) cannot be a rebound DNS name.
pub fn host_allowed(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // `[::1]:8000`
        match rest.split_once(']') {
            Some((v6, _)) => return v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
}

/// Why `path` (as sent, percent-encoded) is refused, if it is.
pub fn unsafe_path(path: &str) -> Option<&'static str> {
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || path.contains('\\') {
        return Some("the path has an encoded slash or a backslash; send the resolved path");
    }
    let dots = path
        .split('/')
        .map(|segment| segment.to_ascii_lowercase().replace("%2e", "."))
        .any(|segment| segment == "." || segment == "..");
    dots.then_some(
        "the path has a dot-segment (`.` or `..`, also as `%2e`); send the resolved path",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_path(path: &str, refused: bool) {
        assert_eq!(unsafe_path(path).is_some(), refused, "{path}");
    }

    #[test]
    fn dot_segments_and_encoded_slashes_are_refused() {
        check_path("/api/v1/courses/../../../metrics", true);
        check_path("/api/v1/PostLookup/../RestoreReadDb", true);
        check_path("/api/v1/courses/%2e%2e/x", true);
        check_path("/api/v1/courses/%2E./x", true);
        check_path("/api/v1/courses/./x", true);
        check_path("/a/..", true);
        check_path("/api/v1/courses/a%2fb", true);
        check_path("/api/v1/courses/a%5Cb", true);
        check_path("/api/v1/courses/a\\b", true);
        check_path("/api/v1/courses/7", false);
        check_path("/api/v1/courses/a..b", false);
        check_path("/api/v1/courses/...", false);
        check_path("/", false);
    }

    #[track_caller]
    fn check_host(host: &str, allowed: bool) {
        assert_eq!(host_allowed(host), allowed, "{host}");
    }

    #[test]
    fn only_hosts_that_cannot_be_rebound_are_served() {
        check_host("127.0.0.1:8000", true);
        check_host("10.1.2.3", true);
        check_host("[::1]:8000", true);
        check_host("localhost:8000", true);
        check_host("LOCALHOST", true);
        check_host("app.localhost:8000", true);
        check_host("evil.example:8000", false);
        check_host("localhost.evil.example", false);
        check_host("127.0.0.1.nip.io", false);
        check_host("", false);
    }
}
