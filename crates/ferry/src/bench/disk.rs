//! `ferry bench disk`: this machine's fsynced sequential write bandwidth, the ceiling for an acks=all broker.
//!
//! The method, so that figures from different machines mean the same thing: append 1 MiB blocks to a new
//! file (in the directory the broker would use, hence on its filesystem) and call `fdatasync` after **every**
//! block. That is what a broker with group commit does at best under a steady acks=all load: append about a
//! megabyte of batches, make it durable, answer, repeat. The file grows as it is written (no preallocation),
//! like a log segment. The measurement runs several times and reports the median, because a virtual disk's
//! figure can vary threefold between runs. 1 MB here is 10^6 bytes.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Bytes written between two fdatasync calls.
pub const BLOCK_BYTES: usize = 1 << 20;

/// One or more timed runs of the same measurement.
#[derive(Debug, Clone)]
pub struct DiskReport {
    /// MiB written per run.
    pub mib: u64,
    /// Each run's time, in the order they ran.
    pub runs: Vec<Duration>,
}

impl DiskReport {
    fn mb_per_s_of(&self, elapsed: Duration) -> f64 {
        (self.mib * BLOCK_BYTES as u64) as f64 / 1e6 / elapsed.as_secs_f64()
    }

    /// Each run's bandwidth in megabytes (10^6 bytes) per second, ascending.
    fn sorted_mb_per_s(&self) -> Vec<f64> {
        let mut all: Vec<f64> = self.runs.iter().map(|&t| self.mb_per_s_of(t)).collect();
        all.sort_by(f64::total_cmp);
        all
    }

    /// The median run's bandwidth in megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        let all = self.sorted_mb_per_s();
        all[all.len() / 2]
    }
}

impl std::fmt::Display for DiskReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all = self.sorted_mb_per_s();
        write!(f, "{:.1} MB/s fsynced sequential writes", self.mb_per_s())?;
        if all.len() > 1 {
            write!(
                f,
                " (median of {} runs, min {:.1}, max {:.1})",
                all.len(),
                all[0],
                all[all.len() - 1]
            )?;
        }
        write!(
            f,
            "; {} MiB per run in 1 MiB blocks, fdatasync after each",
            self.mib
        )
    }
}

/// Runs the measurement `runs` times: each writes `mib` MiB to a new unnamed temporary file in `dir`, with an
/// fdatasync after each 1 MiB block. Virtual disks in particular vary a lot from one run to the next (a host
/// cache may absorb a whole run), hence the median of several.
pub fn measure(dir: &Path, mib: u64, runs: usize) -> anyhow::Result<DiskReport> {
    anyhow::ensure!(
        mib > 0 && runs > 0,
        "the disk measurement needs at least 1 MiB and 1 run"
    );
    // Not all zeros, in case some layer below compresses or deduplicates.
    let block: Vec<u8> = (0..BLOCK_BYTES).map(|i| (i * 7 + i / 4096) as u8).collect();
    let mut report = DiskReport {
        mib,
        runs: Vec::with_capacity(runs),
    };
    for _ in 0..runs {
        let mut file = tempfile::tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        let started = Instant::now();
        for _ in 0..mib {
            file.write_all(&block).context("disk write failed")?;
            file.sync_data().context("fdatasync failed")?;
        }
        report.runs.push(started.elapsed());
    }
    Ok(report)
}
