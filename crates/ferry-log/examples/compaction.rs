//! Compaction figures: how fast the cleaner rewrites a partition (MB/s of segments read), and what a
//! clean running beside appends does to append latency. In-process, on a temp directory:
//!
//! `cargo run --release -p ferry-log --example compaction [MB] [KEYS]`
//!
//! Appends are timed as `append` + `flush_to` (what an acks=all produce waits for, minus network).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferry_log::{CleanerOptions, LogConfig, PartitionLog};

/// One uncompressed magic-2 batch of `n` records `key-<k>` → 100-byte value, CRC filled in.
fn batch(first_key: u64, n: u64, keys: u64, now: i64) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push(z as u8 | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
    let mut records = Vec::new();
    for i in 0..n {
        let key = format!("key-{}", (first_key + i) * 2654435761 % keys);
        let mut body = vec![0u8];
        varint(&mut body, 0);
        varint(&mut body, i as i64);
        varint(&mut body, key.len() as i64);
        body.extend_from_slice(key.as_bytes());
        varint(&mut body, 100);
        body.extend_from_slice(&[b'v'; 100]);
        varint(&mut body, 0);
        varint(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let mut b = Vec::with_capacity(61 + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&((n - 1) as i32).to_be_bytes());
    b.extend_from_slice(&now.to_be_bytes());
    b.extend_from_slice(&now.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&(n as i32).to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Appends `count` batches, returning each append+flush latency.
fn timed_appends(log: &PartitionLog, count: u64, keys: u64, now: i64) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(count as usize);
    for i in 0..count {
        let b = batch(i * 10, 10, keys, now);
        let t = Instant::now();
        let info = log.append(&b).unwrap();
        log.flush_to(info.end_offset).unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    lat
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mb: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let keys: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default()
        .with_overrides([
            ("cleanup.policy", "compact"),
            ("segment.bytes", &(64 << 20).to_string()),
        ])
        .unwrap();
    let log = Arc::new(PartitionLog::open(dir.path(), config, Arc::new(|| {})).unwrap());
    let now = 1_700_000_000_000;
    let per_batch = batch(0, 100, keys, now).len() as u64;
    let batches = (mb << 20) / per_batch;
    for i in 0..batches {
        log.append(&batch(i * 100, 100, keys, now)).unwrap();
    }
    log.flush().unwrap();
    println!(
        "wrote {} MiB in {batches} batches of 100 records over {keys} keys",
        log.size_bytes() >> 20
    );

    let idle = timed_appends(&log, 2000, keys, now);

    let busy = Arc::new(AtomicBool::new(true));
    let cleaner = {
        let log = log.clone();
        let busy = busy.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let stats = log.clean(now, &CleanerOptions::default()).unwrap().unwrap();
            busy.store(false, Ordering::SeqCst);
            (stats, t.elapsed())
        })
    };
    let mut during = Vec::new();
    while busy.load(Ordering::SeqCst) {
        during.extend(timed_appends(&log, 50, keys, now));
    }
    let (stats, took) = cleaner.join().unwrap();
    during.sort();
    let mib = stats.bytes_read as f64 / (1 << 20) as f64;
    println!(
        "cleaned {mib:.0} MiB -> {:.0} MiB ({} of {} records kept, {} keys) in {:.2} s: {:.0} MiB/s",
        stats.bytes_written as f64 / (1 << 20) as f64,
        stats.records_kept,
        stats.records_read,
        stats.keys,
        took.as_secs_f64(),
        mib / took.as_secs_f64()
    );
    for (name, lat) in [("idle", &idle), ("during clean", &during)] {
        println!(
            "append+fsync latency {name:>12}: p50 {:?} p99 {:?} max {:?} ({} appends)",
            percentile(lat, 0.5),
            percentile(lat, 0.99),
            lat[lat.len() - 1],
            lat.len()
        );
    }
}
