//! What `ferry` says when a person gets something wrong, as snapshots: each message names what
//! is wrong (the port, the file, the broker address, the config key) and what to do about it.
//! Temp paths and free ports are replaced by `[DATA]` and `[PORT]` so the snapshots are stable.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ChildBroker;

/// Runs `ferry ARGS` (no FERRY_BROKERS, no DATABASE_URL) to its end, at most 60 s, and returns
/// (success, stderr's error lines with `data` and `port` replaced).
fn run(args: &[&str], data: &Path, port: Option<u16>) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("FERRY_BROKERS")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ferry {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("error") || l.starts_with("  ") || l.starts_with("tip"))
        .collect::<Vec<_>>()
        .join("\n");
    text = text.replace(&data.display().to_string(), "[DATA]");
    if let Some(port) = port {
        text = text.replace(&port.to_string(), "[PORT]");
    }
    (out.status.success(), text)
}

#[test]
fn tools_that_cannot_reach_a_broker_name_it_and_say_what_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = String::new();
    for tool in [
        &["topics", "list"][..],
        &["topics", "describe", "x"],
        &["groups", "list"],
        &["transactions", "list"],
        &["dlq", "list"],
        &["consume", "x", "--exit"],
    ] {
        let mut args = tool.to_vec();
        // Nothing listens on port 1 of loopback.
        args.extend(["--brokers", "127.0.0.1:1"]);
        let (ok, text) = run(&args, dir.path(), None);
        assert!(!ok, "{tool:?}");
        all.push_str(&format!("ferry {}\n{text}\n", tool.join(" ")));
    }
    insta::assert_snapshot!(all);
}

#[test]
fn an_unknown_topic_config_is_named_with_the_valid_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = run(
        &[
            "topics",
            "create",
            "t",
            "--config",
            "foo=bar",
            "--brokers",
            "127.0.0.1:1",
        ],
        dir.path(),
        None,
    );
    assert!(!ok);
    insta::assert_snapshot!(text);
}

#[test]
fn data_pointing_at_a_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let file = file.to_str().unwrap();
    let (ok, up) = run(&["up", "--free-ports", "--data", file], dir.path(), None);
    assert!(!ok);
    let (ok, one) = run(
        &[
            "run",
            "customers",
            "--port",
            "0",
            "--data",
            file,
            "--brokers",
            "127.0.0.1:1",
        ],
        dir.path(),
        None,
    );
    assert!(!ok);
    insta::assert_snapshot!(format!("ferry up\n{up}\nferry run\n{one}"));
}

#[test]
fn a_taken_port_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (ok, text) = run(
        &[
            "run",
            "customers",
            "--port",
            &port.to_string(),
            "--data",
            dir.path().to_str().unwrap(),
            "--brokers",
            "127.0.0.1:1",
        ],
        dir.path(),
        Some(port),
    );
    assert!(!ok);
    // The built-in broker's port, under `ferry up`.
    let data = dir.path().join("up");
    // Held here, or by something else already: the same message follows.
    let _held = std::net::TcpListener::bind("127.0.0.1:9092");
    let (ok, up) = run(
        &["up", "--data", data.to_str().unwrap()],
        dir.path(),
        Some(9092),
    );
    assert!(!ok);
    insta::assert_snapshot!(format!("ferry run\n{text}\nferry up\n{up}"));
    drop(taken);
}

#[test]
fn an_unopenable_sqlite_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be: what a read-only file is to any user but root.
    std::fs::create_dir_all(dir.path().join("customers.db")).unwrap();
    let (ok, text) = run(
        &[
            "run",
            "customers",
            "--port",
            "0",
            "--data",
            dir.path().to_str().unwrap(),
            "--brokers",
            "127.0.0.1:1",
        ],
        dir.path(),
        None,
    );
    assert!(!ok);
    insta::assert_snapshot!(text);
}

#[test]
fn a_closed_pipe_ends_the_tool_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), &[]);
    let status = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "topics",
            "create",
            "test",
            "--partitions",
            "4",
            "--brokers",
            &broker.addr,
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // `ferry topics describe test | head -0`: the reader is gone before the first line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["topics", "describe", "test", "--brokers", &broker.addr])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert_eq!(stderr, "", "nothing said about the closed pipe");
}
