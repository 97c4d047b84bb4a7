//! Shared helpers for tests that run `ferry` as a child process (so it can be SIGKILLed): a child whose
//! output is read on threads and which is always killed, a `ferry broker` child, and polling with a deadline.
#![allow(dead_code)] // Each test file uses its own subset.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long a broker may take to print its "listening on" line (recovery of a data directory included).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many of a child's last log lines a failing test prints.
const LOG_TAIL_LINES: usize = 80;

/// A `ferry` child process with its output read on threads: stdout line by line on a channel,
/// the last lines of stderr (the log) kept. Dropping it kills the process (SIGKILL); when the
/// test is failing, it also prints the end of the log, so a failure can be understood from the
/// test output alone.
#[derive(Debug)]
pub struct ChildProcess {
    /// The process.
    pub child: Child,
    /// Its stdout, one line per message; disconnected when the process closes stdout.
    pub stdout: mpsc::Receiver<String>,
    what: String,
    log_tail: Arc<Mutex<VecDeque<String>>>,
}

impl ChildProcess {
    /// Runs `ferry ARGS...` (logs at `RUST_LOG`, default info, without colour).
    pub fn spawn(what: &str, args: &[&OsStr]) -> ChildProcess {
        Self::spawn_with_env(what, args, &[])
    }

    /// Like [`ChildProcess::spawn`], with extra environment variables (test-only fault hooks).
    pub fn spawn_with_env(what: &str, args: &[&OsStr], env: &[(&str, &str)]) -> ChildProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env("NO_COLOR", "1")
            .env_remove("FERRY_BROKERS")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        // Both pipes are read until the process ends, so it never blocks on (or fails writing
        // to) them.
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
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildProcess {
            child,
            stdout: rx,
            what: what.to_owned(),
            log_tail,
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- last lines of the log of {} ---", self.what);
            for line in self.log_tail.lock().unwrap().iter() {
                eprintln!("{line}");
            }
        }
    }
}

/// A `ferry broker` child process, killed when dropped.
#[derive(Debug)]
pub struct ChildBroker {
    process: ChildProcess,
    /// `127.0.0.1:PORT` it listens on.
    pub addr: String,
}

impl ChildBroker {
    /// Starts `ferry broker --listen 127.0.0.1:0 --data DIR [extra...]` and waits for its
    /// "ferry broker listening on ADDR" line.
    pub fn start(data: &Path, extra: &[&str]) -> ChildBroker {
        Self::start_with_env(data, extra, &[])
    }

    /// Like [`ChildBroker::start`], with extra environment variables.
    pub fn start_with_env(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> ChildBroker {
        let mut args: Vec<&OsStr> = ["broker", "--listen", "127.0.0.1:0", "--data"]
            .iter()
            .map(OsStr::new)
            .collect();
        args.push(data.as_os_str());
        args.extend(extra.iter().map(OsStr::new));
        let process = ChildProcess::spawn_with_env("ferry broker", &args, env);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match process.stdout.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("ferry broker listening on ") {
                        let addr = addr.trim().to_owned();
                        return ChildBroker { process, addr };
                    }
                }
                Err(_) => {
                    panic!("ferry broker did not announce its address within {START_TIMEOUT:?}")
                }
            }
        }
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Whether one of the last lines of the broker's log contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        let tail = self.process.log_tail.lock().unwrap();
        tail.iter().any(|line| line.contains(needle))
    }

    /// SIGKILL: no shutdown, no flush; whatever the broker had not made durable is lost.
    pub fn kill(mut self) {
        self.process.child.kill().expect("kill");
        self.process.child.wait().expect("reap");
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
