//! Every error answer is `{"error":{"code","message"}}`, including axum's own rejections, over a
//! real socket: a path parameter that is not UTF-8, a 405 (with `Allow`), a body over the limit
//! (announced or chunked, read by `ApiJson` or by `Bytes`), and a header hyper cannot read.

use axum::body::Bytes;
use axum::extract::Path;
use axum::routing::{get, post, put};
use ferry_service::{ApiJson, Runtime, ServiceConfig, ServiceHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

async fn start(dir: &std::path::Path, shutdown: CancellationToken) -> ServiceHandle {
    let config = ServiceConfig::new("127.0.0.1:1", dir, 0);
    let runtime = Runtime::new("errors-test", config, shutdown).unwrap();
    let app = axum::Router::new()
        .route(
            "/things/{id}",
            put(
                |Path(id): Path<String>, ApiJson(v): ApiJson<serde_json::Value>| async move {
                    format!("{id} {v}")
                },
            )
            .get(|Path(id): Path<u64>| async move { id.to_string() }),
        )
        .route(
            "/raw",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .route("/only-get", get(|| async { "ok" }));
    let openapi = utoipa::openapi::OpenApiBuilder::new().build();
    runtime.serve(app, openapi).await.unwrap()
}

/// Sends `request` as is on a new connection and reads the whole answer: (status, head, body).
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut got),
    )
    .await
    .expect("an answer within 10 s");
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    let status = head[9..12].parse().unwrap();
    // A chunked body: take the JSON between the chunk sizes.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => body[a..=b].to_string(),
        _ => body.to_string(),
    };
    (status, head.to_ascii_lowercase(), body)
}

#[track_caller]
fn check(answer: &(u16, String, String), status: u16, code: &str) {
    let (got, head, body) = answer;
    assert_eq!(*got, status, "{head}\n{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: not JSON: {body:?}"));
    assert_eq!(v["error"]["code"], code, "{body}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn req(head: &str, body: &[u8]) -> Vec<u8> {
    let mut r = head.replace('\n', "\r\n").into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test]
async fn every_rejection_is_in_the_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let server = start(dir.path(), shutdown.clone()).await;
    let addr = server.addr;
    let close = "Connection: close\nHost: localhost";

    // A path parameter that is not UTF-8, and one that is not a number.
    let a = exchange(addr, &req(&format!("PUT /things/%FF%FE HTTP/1.1\n{close}\nContent-Type: application/json\nContent-Length: 2\n\n"), b"{}")).await;
    check(&a, 400, "invalid_parameter");
    let a = exchange(
        addr,
        &req(&format!("GET /things/abc HTTP/1.1\n{close}\n\n"), b""),
    )
    .await;
    check(&a, 400, "invalid_parameter");

    // 405 names the methods the path takes.
    let a = exchange(
        addr,
        &req(&format!("DELETE /only-get HTTP/1.1\n{close}\n\n"), b""),
    )
    .await;
    check(&a, 405, "method_not_allowed");
    assert!(a.1.contains("allow: get,head"), "{}", a.1);
    let a = exchange(
        addr,
        &req(
            &format!("POST /health HTTP/1.1\n{close}\nContent-Length: 0\n\n"),
            b"",
        ),
    )
    .await;
    check(&a, 405, "method_not_allowed");

    // Over the limit: announced, and chunked (no Content-Length), through ApiJson and Bytes.
    let big = vec![b' '; ferry_service::fields::MAX_BODY_BYTES + 10];
    for path in ["/things/x", "/raw"] {
        let method = if path == "/raw" { "POST" } else { "PUT" };
        let a = exchange(addr, &req(&format!("{method} {path} HTTP/1.1\n{close}\nContent-Type: application/json\nContent-Length: {}\n\n", big.len()), &big)).await;
        check(&a, 413, "payload_too_large");
        let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
        chunked.extend_from_slice(&big);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        let a = exchange(addr, &req(&format!("{method} {path} HTTP/1.1\n{close}\nContent-Type: application/json\nTransfer-Encoding: chunked\n\n"), &chunked)).await;
        check(&a, 413, "payload_too_large");
    }

    // A Content-Type with a control character.
    let a = exchange(addr, &req(&format!("PUT /things/x HTTP/1.1\n{close}\nContent-Type: application/json\x01\nContent-Length: 2\n\n"), b"{}")).await;
    check(&a, 400, "bad_request");

    // An unknown path, and the answers that were JSON already, stay as they were.
    let a = exchange(
        addr,
        &req(&format!("GET /nowhere HTTP/1.1\n{close}\n\n"), b""),
    )
    .await;
    check(&a, 404, "not_found");
    let a = exchange(
        addr,
        &req(
            &format!(
                "PUT /things/x HTTP/1.1\n{close}\nContent-Type: text/plain\nContent-Length: 2\n\n"
            ),
            b"{}",
        ),
    )
    .await;
    check(&a, 415, "unsupported_media_type");

    shutdown.cancel();
    server.task.await.unwrap();
}
