//! Shared helpers for tests that run `ferry` as a child process (so it can be SIGKILLed): a `ferry broker`
//! child that is always killed, and polling with a deadline.
#![allow(dead_code)] // Each test file uses its own subset.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long a broker may take to print its "listening on" line (recovery of a data directory included).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many of the broker's last log lines a failing test prints.
const LOG_TAIL_LINES: usize = 60;

/// A `ferry broker` child process. Dropping it kills the process (SIGKILL); when the test is failing, it also
/// prints the end of the broker's log, so a failure can be understood from the test output alone.
#[derive(Debug)]
pub struct ChildBroker {
    child: Child,
    /// `127.0.0.1:PORT` it listens on.
    pub addr: String,
    log_tail: Arc<Mutex<VecDeque<String>>>,
}

impl ChildBroker {
    /// Starts `ferry broker --listen 127.0.0.1:0 --data DIR [extra...]` and waits for its
    /// "ferry broker listening on ADDR" line.
    pub fn start(data: &Path, extra: &[&str]) -> ChildBroker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["broker", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferry broker");

        // Both pipes are read until the process ends, so the broker never blocks on (or fails writing to) them.
        let log_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn({
            let log_tail = Arc::clone(&log_tail);
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut tail = log_tail.lock().unwrap();
                    if tail.len() == LOG_TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("ferry broker listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });

        let mut broker = ChildBroker {
            child,
            addr: String::new(),
            log_tail,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => broker.addr = addr,
            Err(_) => panic!("ferry broker did not announce its address within {START_TIMEOUT:?}"),
        }
        broker
    }

    /// SIGKILL: no shutdown, no flush; whatever the broker had not made durable is lost.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of the log of the broker at {} ---",
                self.addr
            );
            for line in self.log_tail.lock().unwrap().iter() {
                eprintln!("{line}");
            }
        }
    }
}

/// Poll `cond` until true or `timeout`.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}
