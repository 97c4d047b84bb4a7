//! One process per data directory. Two brokers on one `--data` once both started and each
//! acknowledged offsets 0-499 for different records; after a restart half of the acknowledged
//! messages were gone. Now the second process exits at once, non-zero, naming the directory and
//! the pid that holds it; and the lock dies with its holder, even by SIGKILL.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildBroker, ChildProcess};

/// A refused process must give up at once, not after a timeout of its own.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `ferry ARGS...` expecting it to exit by itself; returns (exit code, stderr).
fn run_to_exit(args: &[&OsStr]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("FERRY_BROKERS")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry");
    let deadline = Instant::now() + REFUSAL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ferry {args:?} still ran after {REFUSAL_TIMEOUT:?}; it should have been refused"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[track_caller]
fn assert_refused((code, stderr): (Option<i32>, String), dir: &Path, pid: u32) {
    assert!(
        code.is_some_and(|c| c != 0),
        "expected a non-zero exit, got {code:?}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&dir.display().to_string()),
        "the message should name {}:\n{stderr}",
        dir.display()
    );
    assert!(
        stderr.contains(&format!("pid {pid}")),
        "the message should name pid {pid}:\n{stderr}"
    );
}

#[test]
fn second_broker_on_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = ChildBroker::start(dir.path(), &[]);
    let pid = first.pid();
    let refused = run_to_exit(&[
        OsStr::new("broker"),
        OsStr::new("--listen"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--data"),
        dir.path().as_os_str(),
    ]);
    assert_refused(refused, dir.path(), pid);

    // The kernel drops the lock with its holder, however it died.
    first.kill();
    let again = ChildBroker::start(dir.path(), &[]);
    assert_ne!(again.pid(), pid);
}

#[test]
fn up_on_a_broker_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir_all(&broker_dir).unwrap();
    let broker = ChildBroker::start(&broker_dir, &[]);
    let refused = run_to_exit(&[
        OsStr::new("up"),
        OsStr::new("--free-ports"),
        OsStr::new("--data"),
        dir.path().as_os_str(),
    ]);
    assert_refused(refused, &broker_dir, broker.pid());
}

#[test]
fn second_service_on_same_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker_dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(broker_dir.path(), &[]);
    let args = [
        OsStr::new("run"),
        OsStr::new("courses-producer"),
        OsStr::new("--port"),
        OsStr::new("0"),
        OsStr::new("--brokers"),
        OsStr::new(&broker.addr),
        OsStr::new("--data"),
        dir.path().as_os_str(),
    ];
    let first = ChildProcess::spawn("ferry run courses-producer", &args);
    let line = first
        .stdout
        .recv_timeout(Duration::from_secs(60))
        .expect("the first courses-producer should start");
    assert!(line.contains("listening on"), "{line}");
    let refused = run_to_exit(&args);
    assert_refused(
        refused.clone(),
        &dir.path().join("courses-producer.db.lock"),
        first.child.id(),
    );

    // Another service on the same directory has files of its own and starts.
    let mut other = args;
    other[1] = OsStr::new("courses-consumer");
    let consumer = ChildProcess::spawn("ferry run courses-consumer", &other);
    let line = consumer
        .stdout
        .recv_timeout(Duration::from_secs(60))
        .expect("courses-consumer should start beside the producer");
    assert!(line.contains("listening on"), "{line}");
}
