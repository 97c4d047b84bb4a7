//! `ferry bench up`: how long `ferry up` takes to be ready and how much memory it holds while
//! every service idles.
//!
//! Each run starts this very binary as `ferry up --free-ports` in a child process, times it
//! from spawn to the printed URL table (every service's HTTP port bound, the broker serving)
//! and on until every service's `/ready` answers 200 (consumer groups joined), lets it idle, reads its resident set size from `/proc/<pid>/status`, and stops it with
//! SIGINT, timing the graceful shutdown. The first run starts on an empty data directory, the
//! later ones on the data the earlier ones left (a restart).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct UpBenchArgs {
    /// How many times to start and stop `ferry up`.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// How long to let it idle before reading its memory, in seconds.
    #[arg(long, default_value_t = 5)]
    idle_s: u64,
}

struct Run {
    serving: Duration,
    ready: Duration,
    rss_mib: f64,
    stop: Duration,
}

pub fn bench(args: UpBenchArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let dir = tempfile::tempdir().context("cannot create a data directory")?;
    println!(
        "ferry bench up: {} run(s) of `ferry up --free-ports`, idle {} s each; data in {}",
        args.runs,
        args.idle_s,
        dir.path().display()
    );
    let mut runs = Vec::new();
    for n in 1..=args.runs {
        let run = once(&exe, dir.path(), Duration::from_secs(args.idle_s))?;
        println!(
            "run {n} ({}): serving in {:.2} s, all /ready in {:.2} s, {:.0} MiB resident when idle, stopped in {:.2} s",
            if n == 1 { "empty data" } else { "restart" },
            run.serving.as_secs_f64(),
            run.ready.as_secs_f64(),
            run.rss_mib,
            run.stop.as_secs_f64()
        );
        runs.push(run);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median: serving in {:.2} s, all /ready in {:.2} s, {:.0} MiB resident, stopped in {:.2} s",
        median(runs.iter().map(|r| r.serving.as_secs_f64()).collect()),
        median(runs.iter().map(|r| r.ready.as_secs_f64()).collect()),
        median(runs.iter().map(|r| r.rss_mib).collect()),
        median(runs.iter().map(|r| r.stop.as_secs_f64()).collect()),
    );
    Ok(())
}

/// `ferry up --free-ports` running as a child process.
pub(super) struct UpChild {
    pub(super) child: Child,
    /// Every HTTP service's name and address (`127.0.0.1:PORT`), as its table lists them.
    pub(super) services: Vec<(String, String)>,
}

impl UpChild {
    /// Starts this binary as `ferry up --free-ports --data <data>` and waits for its table of
    /// services (every HTTP port bound, the broker serving). Its stdout is drained from then on.
    pub(super) fn start(exe: &Path, data: &Path) -> anyhow::Result<UpChild> {
        let mut child = Command::new(exe)
            .args(["up", "--free-ports", "--data"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ferry up")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        // The table follows the "ferry is up" line; every row but the broker's is an HTTP service.
        let mut up = false;
        let mut services = Vec::new();
        loop {
            let Some(line) = lines.next() else {
                stop(&mut child)?;
                bail!("ferry up exited before it was ready");
            };
            let line = line?;
            if line.starts_with("ferry is up") {
                up = true;
            } else if up && line.starts_with("  ") {
                let mut columns = line.split_whitespace();
                if let (Some(name), Some(addr)) = (columns.next(), columns.next())
                    && name != "SERVICE"
                    && name != "broker"
                {
                    services.push((name.to_owned(), addr.to_owned()));
                }
                if name_is(&line, "dashboard") {
                    break;
                }
            }
        }
        // Keep reading stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(UpChild { child, services })
    }

    /// The address of the service called `name`.
    pub(super) fn addr(&self, name: &str) -> anyhow::Result<&str> {
        self.services
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| addr.as_str())
            .with_context(|| format!("ferry up lists no {name}"))
    }

    /// Waits until every service's `/ready` answers 200 (consumer groups joined), at most 60 s.
    pub(super) fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for (_, addr) in &self.services {
            while !answers_ok(addr, "/ready") {
                if Instant::now() > deadline {
                    stop(&mut self.child)?;
                    bail!("{addr}/ready did not answer 200 within 60 s");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }
}

impl Drop for UpChild {
    /// A benchmark that failed half-way does not leave `ferry up` running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn once(exe: &Path, data: &Path, idle: Duration) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut up = UpChild::start(exe, data)?;
    let serving = started.elapsed();
    up.wait_ready()?;
    let ready = started.elapsed();
    std::thread::sleep(idle);
    let rss_mib = status_kib(up.child.id(), "VmRSS")? as f64 / 1024.0;
    let stopping = Instant::now();
    stop(&mut up.child)?;
    Ok(Run {
        serving,
        ready,
        rss_mib,
        stop: stopping.elapsed(),
    })
}

fn name_is(line: &str, name: &str) -> bool {
    line.split_whitespace().next() == Some(name)
}

/// Whether `GET path` on `addr` answers 200 (HTTP/1.0 by hand: a blocking check needs no client).
fn answers_ok(addr: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

/// SIGINT, as Ctrl-C sends, then wait; a non-zero exit is an error.
pub(super) fn stop(child: &mut Child) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .context("cannot run kill")?;
    if !status.success() {
        bail!("kill -INT failed");
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("ferry up exited with {status}");
    }
    Ok(())
}

/// A memory figure of process `pid` from `/proc/<pid>/status`, in KiB: `VmRSS` (resident now),
/// `VmHWM` (the most it was ever resident).
pub(super) fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("cannot read /proc (this benchmark needs Linux)")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/<pid>/status"))
}
