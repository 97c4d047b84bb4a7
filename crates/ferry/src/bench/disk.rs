//! `ferry bench disk`: this machine's fsynced sequential write bandwidth, the ceiling for an acks=all broker.
//!
//! The method, so that figures from different machines mean the same thing: append 1 MiB blocks to a new
//! file (in the directory the broker would use, hence on its filesystem) and call `fdatasync` after **every**
//! block. That is what a broker with group commit does at best under a steady acks=all load: append about a
//! megabyte of batches, make it durable, answer, repeat. The file grows as it is written (no preallocation),
//! like a log segment. 1 MB here is 10^6 bytes.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Bytes written between two fdatasync calls.
pub const BLOCK_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy)]
pub struct DiskReport {
    pub bytes: u64,
    pub syncs: u64,
    pub elapsed: Duration,
}

impl DiskReport {
    /// Megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

impl std::fmt::Display for DiskReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} MB/s fsynced sequential writes ({} MiB in 1 MiB blocks, fdatasync after each, {:.0} fsyncs/s, {:.2} s)",
            self.mb_per_s(),
            self.bytes >> 20,
            self.syncs as f64 / self.elapsed.as_secs_f64(),
            self.elapsed.as_secs_f64(),
        )
    }
}

/// Writes `mib` MiB to an unnamed temporary file in `dir`, fdatasync after each 1 MiB block.
pub fn measure(dir: &Path, mib: u64) -> anyhow::Result<DiskReport> {
    anyhow::ensure!(mib > 0, "--mb must be at least 1");
    let mut file = tempfile::tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    // Not all zeros, in case some layer below compresses or deduplicates.
    let block: Vec<u8> = (0..BLOCK_BYTES).map(|i| (i * 7 + i / 4096) as u8).collect();
    let started = Instant::now();
    for _ in 0..mib {
        file.write_all(&block).context("disk write failed")?;
        file.sync_data().context("fdatasync failed")?;
    }
    Ok(DiskReport { bytes: mib * BLOCK_BYTES as u64, syncs: mib, elapsed: started.elapsed() })
}
