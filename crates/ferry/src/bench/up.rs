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

fn once(exe: &Path, data: &Path, idle: Duration) -> anyhow::Result<Run> {
    let started = Instant::now();
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
                services.push(addr.to_owned());
            }
            if name_is(&line, "dashboard") {
                break;
            }
        }
    }
    let serving = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    for addr in &services {
        while !answers_ok(addr, "/ready") {
            if Instant::now() > deadline {
                stop(&mut child)?;
                bail!("{addr}/ready did not answer 200 within 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let ready = started.elapsed();
    // Keep reading stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    std::thread::sleep(idle);
    let rss_mib = rss_kib(child.id())? as f64 / 1024.0;
    let stopping = Instant::now();
    stop(&mut child)?;
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
fn stop(child: &mut Child) -> anyhow::Result<()> {
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

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("cannot read /proc (this benchmark needs Linux)")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}
