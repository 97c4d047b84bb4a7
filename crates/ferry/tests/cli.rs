//! The kcat-like tools end to end: `ferry topics`, `ferry produce` and `ferry consume` against a real
//! `ferry broker` child process, as a person or a script would run them.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::ChildBroker;

/// Longest any one tool invocation may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `ferry ARGS` against `brokers` with `stdin` as input, killing it after TOOL_TIMEOUT.
fn ferry(brokers: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("FERRY_BROKERS", brokers)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry");
    let mut input = child.stdin.take().expect("piped stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let deadline = Instant::now() + TOOL_TIMEOUT;
    while child.try_wait().expect("poll ferry").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ferry {args:?} did not finish within {TOOL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect ferry's output")
}

/// Runs a tool that must succeed and returns its stdout.
#[track_caller]
fn ok(brokers: &str, args: &[&str], stdin: &str) -> String {
    let out = ferry(brokers, args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ferry {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs a tool that must fail and returns its one-line error.
#[track_caller]
fn fails(brokers: &str, args: &[&str]) -> String {
    let out = ferry(brokers, args, "");
    assert!(!out.status.success(), "ferry {args:?} should have failed");
    let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected, got: {stderr}");
    errors[0].to_owned()
}

#[test]
fn topics_produce_and_consume_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), &[]);
    let b = broker.addr.as_str();

    let out = ok(
        b,
        &[
            "topics",
            "create",
            "orders",
            "--partitions",
            "2",
            "--config",
            "retention.ms=3600000",
        ],
        "",
    );
    assert_eq!(out, "created topic orders with 2 partition(s)\n");
    let error = fails(b, &["topics", "create", "orders"]);
    assert!(error.contains("already exists"), "{error}");

    let list = ok(b, &["topics", "list"], "");
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().eq(["orders", "2"])),
        "{list}"
    );

    let out = ok(
        b,
        &["produce", "orders", "--partition", "1", "--key", "k"],
        "one\ntwo\n\nfour with spaces\n",
    );
    assert_eq!(
        out,
        "produced 4 message(s) to orders: 4 acknowledged, 0 failed\n"
    );
    let out = ok(
        b,
        &["produce", "orders", "--partition", "0", "--acks", "1"],
        "zero",
    );
    assert_eq!(
        out,
        "produced 1 message(s) to orders: 1 acknowledged, 0 failed\n"
    );

    let out = ok(
        b,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--partition",
            "1",
            "--exit",
        ],
        "",
    );
    assert_eq!(out, "one\ntwo\n\nfour with spaces\n");
    let out = ok(
        b,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--count",
            "2",
            "--partition",
            "1",
        ],
        "",
    );
    assert_eq!(out, "one\ntwo\n");
    let mut all: Vec<String> = ok(b, &["consume", "orders", "--from-beginning", "--exit"], "")
        .lines()
        .map(str::to_owned)
        .collect();
    all.sort();
    assert_eq!(all, ["", "four with spaces", "one", "two", "zero"]);
    // Without --from-beginning the consumer starts at the end: nothing old is printed.
    assert_eq!(ok(b, &["consume", "orders", "--exit"], ""), "");

    let described = ok(b, &["topics", "describe", "orders"], "");
    let rows: Vec<Vec<&str>> = described
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.first().is_some_and(|c| c.parse::<i32>().is_ok()))
        .collect();
    assert_eq!(
        rows,
        [vec!["0", "0", "1", "1"], vec!["1", "0", "4", "4"]],
        "{described}"
    );
    assert!(described.contains("retention.ms = 3600000"), "{described}");
}

#[test]
fn tools_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), &["--auto-create-topics=false"]);
    let b = broker.addr.as_str();

    assert_eq!(
        fails(b, &["topics", "describe", "missing"]),
        "error: topic missing does not exist"
    );
    assert_eq!(
        fails(b, &["consume", "missing", "--exit"]),
        "error: topic missing does not exist"
    );
    ok(b, &["topics", "create", "one"], "");
    let error = fails(b, &["consume", "one", "--partition", "3"]);
    assert_eq!(error, "error: topic one has no partition 3 (it has 1)");

    // Nothing listens on port 1.
    let error = fails("127.0.0.1:1", &["topics", "list"]);
    assert!(
        error.starts_with("error: cannot reach a Kafka broker at 127.0.0.1:1. "),
        "{error}"
    );
}

/// `ferry dlq`: the pending count falls after a re-drive, and a re-drive of a topic that does not
/// exist fails with one line and creates nothing, even on a broker that auto-creates topics.
#[test]
fn dlq_list_and_redrive_never_create_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), &[]);
    let b = broker.addr.as_str();

    assert_eq!(
        fails(b, &["dlq", "redrive", "nowhere.dlq"]),
        "error: no topic nowhere.dlq (nothing was re-driven or created)"
    );
    let error = fails(b, &["dlq", "redrive", "plain"]);
    assert!(error.contains("not a dead-letter topic"), "{error}");
    let topics = ok(b, &["topics", "list"], "");
    assert!(!topics.contains("nowhere"), "{topics}");

    // Two letters without dead-letter headers: they go back to the topic named by their own.
    ok(b, &["topics", "create", "lessons"], "");
    ok(b, &["produce", "lessons.dlq"], "one\ntwo\n");
    let pending = |listing: &str| -> Vec<String> {
        listing
            .lines()
            .find(|l| l.starts_with("lessons.dlq"))
            .map(|l| l.split_whitespace().skip(1).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        pending(&ok(b, &["dlq", "list"], "")),
        ["2", "2"],
        "pending, held"
    );
    let out = ok(b, &["dlq", "redrive", "lessons.dlq"], "");
    assert!(out.starts_with("re-drove 2 dead letter(s)"), "{out}");
    assert_eq!(pending(&ok(b, &["dlq", "list"], "")), ["0", "2"]);
    let back = ok(
        b,
        &[
            "consume",
            "lessons",
            "--from-beginning",
            "--count",
            "2",
            "--exit",
        ],
        "",
    );
    assert_eq!(back.lines().collect::<Vec<_>>(), ["one", "two"]);
}

/// `ferry produce` could not set headers and `ferry consume` could show only values: keys,
/// headers and binary values now round-trip byte for byte, with kcat's habits (`--header`,
/// `--key-delimiter`, `--format`, `--offset`) plus `--json` and CloudEvents' `--type`.
#[test]
fn keys_headers_and_binary_values_round_trip_byte_exact() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), &[]);
    let b = broker.addr.as_str();
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    let file = dir.path().join("value.bin");
    std::fs::write(&file, &binary).unwrap();
    let file = file.to_str().unwrap();
    ok(
        b,
        &[
            "produce",
            "bin",
            "--partition",
            "0",
            "--key",
            "k1",
            "--header",
            "a=1",
            "--header",
            "b=",
            "--value-file",
            file,
        ],
        "",
    );
    ok(
        b,
        &[
            "produce",
            "bin",
            "--partition",
            "0",
            "--key-delimiter",
            "::",
            "--type",
            "orders.placed",
            "--header",
            "x=y=z",
        ],
        "k2::{\"n\":1}\nno key here\n",
    );

    // The binary value, exactly.
    let raw = ferry(
        b,
        &[
            "consume",
            "bin",
            "--offset",
            "beginning",
            "--max-messages",
            "1",
            "--format",
            "%s",
        ],
        "",
    );
    assert!(raw.status.success());
    assert_eq!(raw.stdout, binary);

    // Every field as JSON.
    let json = ok(
        b,
        &["consume", "bin", "--offset", "0", "--json", "--exit"],
        "",
    );
    let records: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "{json}");
    assert_eq!(records[0]["key"], "k1");
    assert_eq!(
        records[0]["headers"],
        serde_json::json!([["a", "1"], ["b", ""]])
    );
    assert_eq!(
        records[0]["value"]["base64"],
        base64::engine::general_purpose::STANDARD.encode(&binary)
    );
    assert_eq!(records[1]["key"], "k2");
    assert_eq!(records[1]["value"], "{\"n\":1}");
    let headers: Vec<(String, String)> = records[1]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("ce_specversion"), Some("1.0"));
    assert_eq!(header("ce_type"), Some("orders.placed"));
    assert_eq!(header("ce_source"), Some("/ferry/cli"));
    assert_eq!(header("content-type"), Some("application/json"));
    assert_eq!(header("x"), Some("y=z"));
    assert!(header("ce_id").unwrap().parse::<uuid::Uuid>().is_ok());
    assert!(header("ce_time").unwrap().ends_with('Z'));
    assert_eq!(records[2]["key"], serde_json::Value::Null);
    assert_eq!(records[2]["value"], "no key here");

    // --format, from an offset, and the last N.
    let formatted = ok(
        b,
        &[
            "consume",
            "bin",
            "--offset",
            "1",
            "--exit",
            "--format",
            r"%t/%p@%o key=%k (%K) value=%s (%S)\n",
        ],
        "",
    );
    insta::assert_snapshot!(formatted, @r#"
    bin/0@1 key=k2 (2) value={"n":1} (7)
    bin/0@2 key= (-1) value=no key here (11)
    "#);
    let last = ok(
        b,
        &[
            "consume", "bin", "--offset", "-1", "--exit", "--format", r"%o\n",
        ],
        "",
    );
    assert_eq!(last, "2\n");
    // By time: everything is after the epoch, nothing is after the far future.
    let all = ok(
        b,
        &[
            "consume", "bin", "--offset", "@0", "--exit", "--format", r"%o ",
        ],
        "",
    );
    assert_eq!(all, "0 1 2 ");
    let none = ok(
        b,
        &["consume", "bin", "--offset", "@99999999999999", "--exit"],
        "",
    );
    assert_eq!(none, "");
    assert!(
        fails(b, &["consume", "bin", "--group", "g", "--offset", "5"])
            .contains("--offset can only be beginning or end")
    );
}

/// `ferry broker --metrics-listen`: the standalone broker serves its own Prometheus series.
#[test]
fn broker_serves_its_metrics_when_asked() {
    use std::ffi::OsStr;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        OsStr::new("broker"),
        OsStr::new("--listen"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--metrics-listen"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--data"),
        dir.path().as_os_str(),
    ];
    let broker = common::ChildProcess::spawn("ferry broker", &args);
    let (mut addr, mut metrics) = (String::new(), String::new());
    while addr.is_empty() || metrics.is_empty() {
        let line = broker
            .stdout
            .recv_timeout(Duration::from_secs(30))
            .expect("the broker's address lines");
        if let Some(a) = line.strip_prefix("ferry broker listening on ") {
            addr = a.trim().to_owned();
        } else if let Some(m) = line.strip_prefix("ferry broker metrics on http://") {
            metrics = m.trim().trim_end_matches("/metrics").to_owned();
        }
    }
    ok(&addr, &["topics", "list"], "");
    let mut stream = std::net::TcpStream::connect(&metrics).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nhost: {metrics}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut page = String::new();
    std::io::Read::read_to_string(&mut stream, &mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("ferry_broker_requests_total{service=\"broker\",api=\"Metadata\"}"),
        "{page}"
    );
}
