//! Recovery on open: torn tails of the active segment are truncated, damaged index files rebuilt.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use ferry_log::{LogConfig, PartitionLog};

/// Segments of three small batches each, so the log has closed segments and an active one.
fn config() -> LogConfig {
    small_segments(3 * batch(2, 0).len() as u64)
}

/// Writes seven durable batches (three segments) and returns what a full read gives.
fn populate(dir: &Path) -> Vec<u8> {
    let log = open(dir, config());
    for ts in 0..7 {
        append_durable(&log, &batch(2, 1000 + ts));
    }
    assert_eq!(segment_files(dir).len(), 3);
    read_all(&log)
}

fn active_segment(dir: &Path) -> PathBuf {
    segment_files(dir).pop().unwrap()
}

fn append_to_file(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// Damages the active segment with `damage`, reopens, and checks that the log is back to
/// `expected_end` with exactly the batches below it and takes appends from there.
#[track_caller]
fn check_recovery(damage: impl FnOnce(&Path), expected_end: i64) {
    let dir = tempfile::tempdir().unwrap();
    let before = populate(dir.path());
    damage(&active_segment(dir.path()));

    let log = open(dir.path(), config());
    assert_eq!(
        (log.log_end_offset(), log.high_watermark()),
        (expected_end, expected_end)
    );
    let kept: Vec<u8> = {
        let all = headers(&before);
        let len: usize = all
            .iter()
            .filter(|h| h.base_offset < expected_end)
            .map(|h| h.total_len())
            .sum();
        before[..len].to_vec()
    };
    assert_eq!(read_all(&log), kept);
    let b = batch(1, 5000);
    assert_eq!(append_durable(&log, &b).base_offset, expected_end);
    drop(log);

    // The truncation was made durable and the new batch sits right after the kept data.
    let log = open(dir.path(), config());
    assert_eq!(read_all(&log), [kept, as_stored(&b, expected_end)].concat());
}

#[test]
fn garbage_after_the_last_batch_is_truncated() {
    check_recovery(
        |path| {
            append_to_file(
                path,
                b"this is not a record batch at all, not even close......",
            )
        },
        14,
    );
}

#[test]
fn zero_filled_tail_is_truncated() {
    check_recovery(|path| append_to_file(path, &[0; 4096]), 14);
}

#[test]
fn a_short_header_is_truncated() {
    check_recovery(|path| append_to_file(path, &batch(2, 1)[..30]), 14);
}

#[test]
fn half_a_batch_is_truncated() {
    let half = batch_sized(3, 100, 1);
    check_recovery(|path| append_to_file(path, &half[..half.len() / 2]), 14);
}

#[test]
fn a_batch_with_a_flipped_byte_is_truncated() {
    let mut bad = as_stored(&batch(2, 1), 14);
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    check_recovery(|path| append_to_file(path, &bad), 14);
}

#[test]
fn a_batch_with_the_wrong_offset_is_truncated() {
    // Valid in itself, but its base offset does not continue the log.
    check_recovery(
        |path| append_to_file(path, &as_stored(&batch(2, 1), 99)),
        14,
    );
}

#[test]
fn damage_inside_the_last_good_batch_drops_that_batch() {
    check_recovery(
        |path| {
            let mut bytes = fs::read(path).unwrap();
            let len = bytes.len();
            bytes[len - 3] ^= 0xff;
            fs::write(path, bytes).unwrap();
        },
        12,
    );
}

#[test]
fn an_emptied_active_segment_keeps_the_closed_ones() {
    check_recovery(|path| fs::write(path, b"").unwrap(), 12);
}

fn index_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

#[test]
fn missing_or_inconsistent_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let before = populate(dir.path());
    let offset_indexes = index_files(dir.path(), "index");
    let time_indexes = index_files(dir.path(), "timeindex");
    // Index files exist for the two closed segments only.
    assert_eq!((offset_indexes.len(), time_indexes.len()), (2, 2));
    let originals: Vec<Vec<u8>> = offset_indexes
        .iter()
        .chain(&time_indexes)
        .map(|p| fs::read(p).unwrap())
        .collect();
    assert!(originals.iter().all(|o| !o.is_empty()));

    fs::remove_file(&offset_indexes[0]).unwrap();
    // Not a whole number of entries.
    fs::write(&offset_indexes[1], &originals[1][..5]).unwrap();
    // Entries that do not increase.
    fs::write(
        &time_indexes[0],
        [originals[2].clone(), originals[2].clone()].concat(),
    )
    .unwrap();
    // An entry pointing far past the end of the segment.
    let mut beyond = originals[3].clone();
    beyond[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(&time_indexes[1], beyond).unwrap();

    let log = open(dir.path(), config());
    assert_eq!(read_all(&log), before);
    for offset in 0..14 {
        let read = log.read(offset, 1, true).unwrap();
        assert_eq!(
            headers(&read.records)[0].base_offset,
            offset / 2 * 2,
            "offset {offset}"
        );
    }
    assert_eq!(log.offset_for_timestamp(1003).unwrap(), Some((6, 1003)));
    assert_eq!(log.max_timestamp().unwrap(), Some((12, 1006)));
    let rebuilt: Vec<Vec<u8>> = offset_indexes
        .iter()
        .chain(&time_indexes)
        .map(|p| fs::read(p).unwrap())
        .collect();
    assert_eq!(
        rebuilt, originals,
        "rebuilt index files differ from the ones written at roll"
    );
}

#[test]
fn a_rebuilt_sparse_time_index_keeps_the_segment_maximum() {
    let dir = tempfile::tempdir().unwrap();
    // The default index interval is larger than a segment here: the only time index entry of a
    // closed segment is the one written when it closed.
    let config = LogConfig {
        index_interval_bytes: 4096,
        ..config()
    };
    {
        let log = open(dir.path(), config.clone());
        for ts in [30, 10, 20, 40] {
            append_durable(&log, &batch(2, ts));
        }
    }
    let time_index = &index_files(dir.path(), "timeindex")[0];
    let original = fs::read(time_index).unwrap();
    fs::remove_file(time_index).unwrap();
    for _ in 0..2 {
        // The first open rebuilds the index, the second loads the rebuilt file.
        let log = open(dir.path(), config.clone());
        assert_eq!(fs::read(time_index).unwrap(), original);
        assert_eq!(log.max_timestamp().unwrap(), Some((6, 40)));
        assert_eq!(log.offset_for_timestamp(15).unwrap(), Some((0, 30)));
        assert_eq!(log.offset_for_timestamp(35).unwrap(), Some((6, 40)));
    }
}

#[test]
fn leftovers_of_interrupted_writes_are_cleared() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let stale_tmp = dir.path().join("00000000000000000000.index.tmp");
    let orphan = dir.path().join("00000000000000000099.index");
    fs::write(&stale_tmp, b"x").unwrap();
    fs::write(&orphan, b"x").unwrap();
    let log = PartitionLog::open(dir.path(), config(), std::sync::Arc::new(|| {})).unwrap();
    assert_eq!(log.log_end_offset(), 14);
    assert!(!stale_tmp.exists() && !orphan.exists());
}

#[test]
fn a_new_partition_has_an_empty_first_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir.path().join("p"), config());
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.high_watermark()
        ),
        (0, 0, 0)
    );
    assert!(dir.path().join("p/00000000000000000000.log").exists());
}
