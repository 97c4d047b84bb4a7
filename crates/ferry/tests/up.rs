//! `ferry up` as a person runs it: the binary as a child process with `--free-ports`, its URL table
//! read from stdout, every service's `/health` asked over HTTP, Ctrl-C (SIGINT) answered by a clean
//! exit; and what was created through HTTP is still served after a restart on the same data
//! directory.

mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{ChildProcess, eventually};

/// How long `ferry up` may take to print its table (a loaded CI machine, a debug build).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Regression guard on the start time `ferry up` reports itself (the target, 2 s, is a benchmark).
const START_BOUND_SECS: f64 = 10.0;
/// How long a clean stop after SIGINT may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an event may take from the producer's HTTP answer to the consumer's read side.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `ferry up --free-ports --data DIR`, killed when dropped.
#[derive(Debug)]
struct Up {
    process: ChildProcess,
    /// The seconds from the "ferry is up in X s" line.
    start_secs: f64,
    /// Every row of the URL table but the broker's: (service name, `127.0.0.1:PORT`).
    services: Vec<(String, String)>,
    /// The broker's row.
    broker: String,
    /// The built-in broker's `/metrics` address (`127.0.0.1:PORT`), from its row.
    broker_metrics: String,
}

impl Up {
    fn start(data: &Path) -> Up {
        Up::start_with(data, &[])
    }

    /// `ferry up --free-ports --data DATA EXTRA...`.
    fn start_with(data: &Path, extra: &[&str]) -> Up {
        let mut args = vec![
            OsStr::new("up"),
            OsStr::new("--free-ports"),
            OsStr::new("--data"),
            data.as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        let mut up = Up {
            process: ChildProcess::spawn("ferry up", &args),
            start_secs: f64::NAN,
            services: Vec::new(),
            broker: String::new(),
            broker_metrics: String::new(),
        };
        up.read_table();
        up
    }

    /// Reads stdout up to the blank line that ends the URL table.
    /// The next stdout line containing `needle`, within `timeout`.
    fn line_with(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.process.stdout.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?} on stdout within {timeout:?}: {e}"),
            }
        }
    }

    fn read_table(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut in_table = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.process.stdout.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("ferry up did not print its URL table within {START_TIMEOUT:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "ferry up closed stdout before its URL table was complete (exit status {:?})",
                    self.process.child.try_wait()
                ),
            };
            if let Some(rest) = line.strip_prefix("ferry is up in ") {
                let secs = rest.split_whitespace().next().unwrap_or_default();
                self.start_secs = secs
                    .parse()
                    .unwrap_or_else(|_| panic!("no start time in {line:?}"));
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !in_table {
                in_table = fields.first() == Some(&"SERVICE");
                continue;
            }
            match fields.as_slice() {
                [] => break,
                ["broker", addr, rest @ ..] => {
                    self.broker = (*addr).to_owned();
                    if let Some(url) = rest.iter().find_map(|f| f.strip_prefix("http://")) {
                        self.broker_metrics = url.trim_end_matches("/metrics").to_owned();
                    }
                }
                [name, addr, ..] => self.services.push(((*name).to_owned(), (*addr).to_owned())),
                _ => panic!("unexpected row in the URL table: {line:?}"),
            }
        }
        assert!(
            self.start_secs.is_finite(),
            "no \"ferry is up in X s\" line before the table"
        );
        assert!(!self.broker.is_empty(), "no broker row in the URL table");
        assert!(
            !self.services.is_empty(),
            "no service rows in the URL table"
        );
    }

    /// The address of the service called `name` in the table.
    fn addr(&self, name: &str) -> &str {
        self.services
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| addr.as_str())
            .unwrap_or_else(|| panic!("no {name} in the URL table: {:?}", self.services))
    }

    /// Ctrl-C, as a terminal sends it; waits (bounded) for the exit.
    fn interrupt(mut self) -> ExitStatus {
        let pid = self.process.child.id().to_string();
        let kill = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -INT {pid} failed: {kill}");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.process.child.try_wait().expect("wait for ferry up") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ferry up did not stop within {STOP_TIMEOUT:?} of SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it with SIGINT and asserts the clean exit.
    fn stop_cleanly(self) {
        let status = self.interrupt();
        assert_eq!(
            status.code(),
            Some(0),
            "ferry up exited with {status} on SIGINT"
        );
    }
}

/// One HTTP/1.1 exchange on a new connection: (status, body).
fn http(
    method: &str,
    addr: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let timeout = Duration::from_secs(10);
    let socket = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr} resolves to nothing")))?;
    let mut stream = TcpStream::connect_timeout(&socket, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = body.unwrap_or_default();
    let content_type = if body.is_empty() {
        ""
    } else {
        "content-type: application/json\r\n"
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n{content_type}content-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, rest) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {response:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

/// The body of a `transfer-encoding: chunked` response.
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || tail.len() < size {
            break;
        }
        body.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    body
}

fn get(addr: &str, path: &str) -> (u16, String) {
    http("GET", addr, path, None).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// Creates a course on the producer; returns its id.
fn create_course(up: &Up, name: &str, code: &str) -> String {
    let body = serde_json::json!({ "name": name, "code": code, "active": true }).to_string();
    let producer = up.addr("courses-producer");
    let (status, answer) = http("POST", producer, "/api/v1/courses", Some(&body))
        .unwrap_or_else(|e| panic!("POST a course to {producer}: {e}"));
    assert_eq!(status, 201, "creating course {code}: {answer}");
    let course: serde_json::Value = serde_json::from_str(&answer).expect("course JSON");
    course["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {answer}"))
        .to_owned()
}

/// The consumer's view of one course: (status, body).
fn consumer_course(up: &Up, id: &str) -> (u16, String) {
    get(
        up.addr("courses-consumer"),
        &format!("/api/v1/courses/{id}"),
    )
}

/// Waits until the courses consumer serves course `id`, with `code`.
fn await_consumed(up: &Up, id: &str, code: &str) {
    let mut last = (0, String::new());
    let seen = eventually(PROPAGATION_TIMEOUT, || {
        last = consumer_course(up, id);
        last.0 == 200
    });
    assert!(
        seen,
        "the courses consumer did not serve course {id} within {PROPAGATION_TIMEOUT:?}; last answer: {last:?}"
    );
    assert!(
        last.1.contains(code),
        "course {id} without its code {code}: {}",
        last.1
    );
}

#[test]
fn up_serves_every_service_and_stops_cleanly_on_sigint() {
    let data = tempfile::tempdir().expect("temp dir");
    let up = Up::start(data.path());
    assert!(
        up.start_secs < START_BOUND_SECS,
        "ferry up took {} s to start (regression guard: < {START_BOUND_SECS} s)",
        up.start_secs
    );
    for expected in ["courses-producer", "courses-consumer", "dashboard"] {
        up.addr(expected);
    }
    for (name, addr) in &up.services {
        let (status, body) = get(addr, "/health");
        assert_eq!(status, 200, "GET /health of {name} at {addr}: {body}");
    }
    up.stop_cleanly();
}

#[test]
fn courses_survive_a_restart() {
    let data = tempfile::tempdir().expect("temp dir");
    // A code per run, so the assertions cannot pass on another run's leftovers.
    let unique = std::process::id();
    let code = format!("UP-{unique}");

    let up = Up::start(data.path());
    let id = create_course(&up, "Restarts", &code);
    await_consumed(&up, &id, &code);
    up.stop_cleanly();

    let up = Up::start(data.path());
    // The read side keeps what it had: served at once, without waiting for a replay.
    let (status, body) = consumer_course(&up, &id);
    assert_eq!(status, 200, "course {id} after the restart: {body}");
    assert!(
        body.contains(&code),
        "course {id} after the restart: {body}"
    );
    // The write side too: the code is still taken.
    let duplicate =
        serde_json::json!({ "name": "again", "code": code, "active": true }).to_string();
    let (status, body) = http(
        "POST",
        up.addr("courses-producer"),
        "/api/v1/courses",
        Some(&duplicate),
    )
    .expect("POST a duplicate course");
    assert_eq!(
        status, 409,
        "a second course with code {code} after the restart: {body}"
    );
    // And the flow still runs end to end after the restart.
    let second_code = format!("UP2-{unique}");
    let second = create_course(&up, "After the restart", &second_code);
    await_consumed(&up, &second, &second_code);
    up.stop_cleanly();
}

/// One raw exchange (a head as given, then `body`): (status, lowercased head, body).
fn raw(addr: &str, head: &str, body: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("{head}\r\nhost: {addr}\r\nconnection: close\r\n\r\n").into_bytes();
    request.extend_from_slice(body);
    // The server may answer (413) and close before the whole body is read.
    let _ = stream.write_all(&request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, rest) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no whole head from {addr}: {response:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    (
        head[9..12].parse().unwrap(),
        head.to_ascii_lowercase(),
        body,
    )
}

#[track_caller]
fn check_shape(what: &str, got: &(u16, String, String), status: u16, code: &str) {
    assert_eq!(got.0, status, "{what}: {}\n{}", got.1, got.2);
    assert!(
        got.1.contains("content-type: application/json"),
        "{what}: {}",
        got.1
    );
    let v: serde_json::Value = serde_json::from_str(&got.2)
        .unwrap_or_else(|e| panic!("{what}: {e}: not JSON: {:?}", got.2));
    assert_eq!(v["error"]["code"], code, "{what}: {}", got.2);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        got.2
    );
}

/// A route with a path parameter on each service (`None`: the service has none).
fn param_route(service: &str) -> Option<(&'static str, &'static str)> {
    Some(match service {
        "courses-producer" => ("PUT", "/api/v1/courses/"),
        "courses-consumer" => ("GET", "/api/v1/courses/"),
        "customers" => ("GET", "/api/Customer/"),
        "orders" => ("GET", "/api/Orders/"),
        "invoice-generator" => ("GET", "/api/invoices/"),
        "score-calculator" => ("GET", "/api/scores/"),
        "posts-command" => ("PUT", "/api/v1/EditMessage/"),
        "posts-query" => ("GET", "/api/v1/PostLookup/byId/"),
        "users-consumer" => ("GET", "/users/"),
        "dashboard" => ("GET", "/api/ferry/traces/"),
        _ => return None,
    })
}

#[test]
fn every_service_answers_every_rejection_in_one_error_shape() {
    let data = tempfile::tempdir().expect("temp dir");
    let up = Up::start(data.path());
    let big = vec![b' '; 300 * 1024];
    for (name, addr) in &up.services {
        // 405, with the methods the path takes.
        let got = raw(addr, "DELETE /health HTTP/1.1", b"");
        check_shape(
            &format!("{name}: DELETE /health"),
            &got,
            405,
            "method_not_allowed",
        );
        assert!(got.1.contains("\r\nallow: get,head"), "{name}: {}", got.1);
        // A Content-Type with a control character (hyper refuses the head itself).
        let got = raw(
            addr,
            "POST /health HTTP/1.1\r\ncontent-type: application/json\x01\r\ncontent-length: 2",
            b"{}",
        );
        check_shape(
            &format!("{name}: control character"),
            &got,
            400,
            "bad_request",
        );
        let Some((method, prefix)) = param_route(name) else {
            continue;
        };
        // A path parameter that is not UTF-8.
        let got = raw(
            addr,
            &format!(
                "{method} {prefix}%FF%FE HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 2"
            ),
            b"{}",
        );
        check_shape(
            &format!("{name}: {method} {prefix}%FF%FE"),
            &got,
            400,
            "invalid_parameter",
        );
        // A body over the limit, announced and chunked.
        let got = raw(
            addr,
            &format!(
                "{method} {prefix}1 HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: {}",
                big.len()
            ),
            &big,
        );
        check_shape(
            &format!("{name}: announced body over the limit"),
            &got,
            413,
            "payload_too_large",
        );
        if method != "GET" {
            let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
            chunked.extend_from_slice(&big);
            chunked.extend_from_slice(b"\r\n0\r\n\r\n");
            let got = raw(
                addr,
                &format!(
                    "{method} {prefix}1 HTTP/1.1\r\ncontent-type: application/json\r\ntransfer-encoding: chunked"
                ),
                &chunked,
            );
            check_shape(
                &format!("{name}: chunked body over the limit"),
                &got,
                413,
                "payload_too_large",
            );
        }
    }
    up.stop_cleanly();
}

#[test]
fn shutdown_with_the_broker_down_ends_within_the_grace_period_and_keeps_the_outbox() {
    let data = tempfile::tempdir().expect("temp dir");
    let code = format!("DOWN-{}", std::process::id());
    // Nothing listens on port 1 of loopback.
    let up = Up::start_with(
        data.path(),
        &["--brokers", "127.0.0.1:1", "--shutdown-grace", "2"],
    );
    // ferry up says the broker cannot be reached, naming it.
    let warning = up.line_with("cannot reach the broker", Duration::from_secs(20));
    assert!(warning.contains("127.0.0.1:1"), "{warning}");
    // /ready says so too, on a service without consumers.
    let (status, ready) = get(up.addr("courses-producer"), "/ready");
    assert_eq!(status, 503, "{ready}");
    // A course accepted while the broker is down waits in the outbox.
    let id = create_course(&up, "Waits", &code);

    let pid = up.process.child.id().to_string();
    let asked = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let stopping = up.line_with("stopping", Duration::from_secs(5));
    assert!(stopping.contains("2.0 s"), "{stopping}");
    let mut up = up;
    let status = loop {
        if let Some(status) = up.process.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(6),
            "ferry up did not stop within its 2 s grace period (+4 s)"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.code().is_some(), "exited by a signal: {status}");
    drop(up);

    // With the built-in broker, the course accepted before the stop arrives.
    let up = Up::start(data.path());
    await_consumed(&up, &id, &code);
    up.stop_cleanly();
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut up = Up::start_with(
        data.path(),
        &["--brokers", "127.0.0.1:1", "--shutdown-grace", "60"],
    );
    let body = serde_json::json!({ "name": "x", "code": "SECOND", "active": true }).to_string();
    let (status, _) = http(
        "POST",
        up.addr("courses-producer"),
        "/api/v1/courses",
        Some(&body),
    )
    .expect("POST a course");
    assert_eq!(status, 201);
    let pid = up.process.child.id().to_string();
    let kill = || {
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    kill();
    up.line_with("stopping", Duration::from_secs(5));
    let asked = Instant::now();
    kill();
    let status = loop {
        if let Some(status) = up.process.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "a second Ctrl-C did not exit at once"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Either the second Ctrl-C (130) or everything had stopped already (0).
    assert!(matches!(status.code(), Some(130 | 0)), "{status}");
}

#[test]
fn each_service_exposes_only_its_own_metrics_with_a_service_label() {
    let data = tempfile::tempdir().expect("temp dir");
    let up = Up::start(data.path());
    let code = format!("MET-{}", std::process::id());
    let id = create_course(&up, "Metrics", &code);
    await_consumed(&up, &id, &code);
    // The producer's relay published the course; the consumer handled it and reports its lag
    // by group, topic and partition.
    let wanted = [
        (
            "courses-producer",
            "ferry_outbox_published_total{service=\"courses-producer\"} ",
        ),
        (
            "courses-consumer",
            "ferry_messages_handled_total{service=\"courses-consumer\",group=\"",
        ),
        (
            "courses-consumer",
            "ferry_consumer_lag_messages{service=\"courses-consumer\",group=\"",
        ),
    ];
    for (service, series) in wanted {
        let mut last = String::new();
        let found = eventually(PROPAGATION_TIMEOUT, || {
            last = get(up.addr(service), "/metrics").1;
            last.contains(series)
        });
        assert!(found, "{service} /metrics lacks {series}:\n{last}");
    }
    let (_, lag) = get(up.addr("courses-consumer"), "/metrics");
    let lag_line = lag
        .lines()
        .find(|l| l.starts_with("ferry_consumer_lag_messages{"))
        .unwrap();
    assert!(
        lag_line.contains("topic=\"") && lag_line.contains("partition=\""),
        "{lag_line}"
    );
    // Every sample a service shows is its own: scraping all of them counts nothing twice.
    for (name, addr) in &up.services {
        let (status, page) = get(addr, "/metrics");
        assert_eq!(status, 200, "{name}");
        for line in page
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(
                line.contains(&format!("service=\"{name}\"")),
                "{name} /metrics shows another's series: {line}"
            );
        }
    }
    up.stop_cleanly();
}

#[test]
fn every_service_serves_its_docs_and_a_spec_with_parameters_and_error_answers() {
    let data = tempfile::tempdir().expect("temp dir");
    let up = Up::start(data.path());
    for (name, addr) in &up.services {
        let (status, page) = get(addr, "/docs");
        assert_eq!(status, 200, "{name} /docs");
        assert!(
            page.contains("openapi.json"),
            "{name} /docs renders the spec"
        );
        // Self-contained: nothing is loaded from another origin.
        assert!(
            !page.contains("src=\"http"),
            "{name} /docs loads from a CDN"
        );
        let (status, spec) = get(addr, "/openapi.json");
        assert_eq!(status, 200, "{name}");
        let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
        assert!(spec["components"]["schemas"]["Error"].is_object(), "{name}");
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let declared: Vec<&str> = op["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p["in"] == "path")
                            .filter_map(|p| p["name"].as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                for segment in path.split('/') {
                    if let Some(param) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
                    {
                        assert!(
                            declared.contains(&param),
                            "{name}: {method} {path} lacks {param}"
                        );
                    }
                }
                for status in ["400", "404", "500", "503"] {
                    assert_eq!(
                        op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{name}: {method} {path} {status}"
                    );
                }
            }
        }
    }
    up.stop_cleanly();
}

#[test]
fn the_broker_has_its_own_metrics() {
    let data = tempfile::tempdir().expect("temp dir");
    let up = Up::start(data.path());
    assert!(
        !up.broker_metrics.is_empty(),
        "no metrics URL in the broker row"
    );
    let code = format!("BRK-{}", std::process::id());
    let id = create_course(&up, "Broker metrics", &code);
    await_consumed(&up, &id, &code);
    let (status, page) = get(&up.broker_metrics, "/metrics");
    assert_eq!(status, 200);
    for series in [
        "ferry_broker_requests_total{service=\"broker\",api=\"Produce\"} ",
        "ferry_broker_requests_total{service=\"broker\",api=\"Fetch\"} ",
        "ferry_broker_request_duration_seconds_bucket{service=\"broker\",api=\"Produce\",le=\"0.001\"} ",
        "ferry_broker_received_bytes_total{service=\"broker\"} ",
        "ferry_broker_sent_bytes_total{service=\"broker\"} ",
        "ferry_broker_connections{service=\"broker\"} ",
    ] {
        assert!(
            page.contains(series),
            "broker /metrics lacks {series}:\n{page}"
        );
    }
    // Only the broker's series; and no service shows the broker's.
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.contains("service=\"broker\""), "{line}");
    }
    let (_, courses) = get(up.addr("courses-producer"), "/metrics");
    assert!(!courses.contains("ferry_broker_"), "{courses}");
    up.stop_cleanly();
}
