//! Compaction of a partition log: what survives a clean, that offsets never move, tombstones,
//! the cleaning triggers, and recovery of an interrupted swap. Batches are built and read back
//! with the `kafka-protocol` codec (and gzip through `flate2`), independently of the cleaner's own.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use bytes::{Bytes, BytesMut};
use ferry_log::{CleanerOptions, LogConfig, PartitionLog};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use common::{append_durable, open};

/// (offset, key, value) as a consumer sees it.
type Seen = (i64, Vec<u8>, Option<Vec<u8>>);

fn compact_config(segment_bytes: u64) -> LogConfig {
    LogConfig::default()
        .with_overrides([
            ("cleanup.policy", "compact"),
            ("segment.bytes", &segment_bytes.to_string()),
            ("min.cleanable.dirty.ratio", "0"),
            ("index.interval.bytes", "0"),
        ])
        .unwrap()
}

/// One batch of keyed records (`None` value = tombstone), gzip-compressed when `gzip`.
fn keyed_batch(records: &[(&str, Option<&str>)], timestamp: i64, gzip: bool) -> Vec<u8> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp,
            key: Some(Bytes::from(k.to_string())),
            value: v.map(|v| Bytes::from(v.to_string())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = Vec::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: if gzip {
            Compression::Gzip
        } else {
            Compression::None
        },
    };
    RecordBatchEncoder::encode_with_custom_compression(
        &mut buf,
        &records,
        &options,
        Some(|raw: &mut BytesMut, out: &mut Vec<u8>, c: Compression| {
            if c == Compression::Gzip {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(raw).unwrap();
                out.extend_from_slice(&gz.finish().unwrap());
            } else {
                out.extend_from_slice(raw);
            }
            Ok(())
        }),
    )
    .unwrap();
    buf
}

/// Every record readable from `offset` on, decoded by kafka-protocol.
fn read_from(log: &PartitionLog, offset: i64) -> Vec<Seen> {
    let bytes = log.read(offset, usize::MAX, true).unwrap().records;
    let mut buf = Bytes::from(bytes);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let set = RecordBatchDecoder::decode_with_custom_compression(
            &mut buf,
            Some(|data: &mut Bytes, c: Compression| {
                if c == Compression::Gzip {
                    let mut raw = Vec::new();
                    flate2::read::GzDecoder::new(&data[..])
                        .read_to_end(&mut raw)
                        .unwrap();
                    Ok(Bytes::from(raw))
                } else {
                    Ok(data.clone())
                }
            }),
        )
        .unwrap();
        for r in set.records {
            out.push((
                r.offset,
                r.key.unwrap().to_vec(),
                r.value.map(|v| v.to_vec()),
            ));
        }
    }
    out.retain(|r| r.0 >= offset);
    out
}

fn read_all(log: &PartitionLog) -> Vec<Seen> {
    read_from(log, log.log_start_offset())
}

/// What a consumer must see after a clean up to `cleaned_to` with no tombstone past its horizon:
/// below `cleaned_to` the latest record of each key (among those below it), at its own offset;
/// from `cleaned_to` on, everything.
fn expected(model: &[Seen], cleaned_to: i64) -> Vec<Seen> {
    let mut latest: HashMap<&[u8], i64> = HashMap::new();
    for (offset, key, _) in model.iter().filter(|r| r.0 < cleaned_to) {
        latest.insert(key, *offset);
    }
    model
        .iter()
        .filter(|(offset, key, _)| *offset >= cleaned_to || latest[&key[..]] == *offset)
        .cloned()
        .collect()
}

/// A deterministic sequence of keyed writes over a small key space.
fn write_workload(log: &PartitionLog, batches: usize, now: i64) -> Vec<Seen> {
    let mut model = Vec::new();
    let mut x: u64 = 12345;
    for b in 0..batches {
        let n = 1 + b % 4;
        let mut records = Vec::new();
        for _ in 0..n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = format!("k{}", (x >> 33) % 20);
            let value = format!("v{b}-{}", x >> 50);
            records.push((key, value));
        }
        let refs: Vec<(&str, Option<&str>)> = records
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_str())))
            .collect();
        let info = append_durable(log, &keyed_batch(&refs, now, b % 3 == 0));
        for (i, (k, v)) in records.into_iter().enumerate() {
            model.push((
                info.base_offset + i as i64,
                k.into_bytes(),
                Some(v.into_bytes()),
            ));
        }
    }
    model
}

#[test]
fn cleaning_keeps_the_latest_record_per_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), compact_config(2048));
    let now = 1_700_000_000_000;
    let model = write_workload(&log, 300, now);
    assert_eq!(read_all(&log), model);

    let stats = log.clean(now, &CleanerOptions::default()).unwrap().unwrap();
    assert!(stats.records_kept < stats.records_read, "{stats:?}");
    assert!(stats.bytes_written < stats.bytes_read, "{stats:?}");
    let want = expected(&model, stats.cleaned_to);
    assert!(want.len() < model.len());
    assert_eq!(read_all(&log), want);
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.log_end_offset(), model.last().unwrap().0 + 1);

    // A consumer positioned on an offset that was cleaned away continues at the next survivor.
    let removed: Vec<i64> = model
        .iter()
        .map(|r| r.0)
        .filter(|o| !want.iter().any(|w| w.0 == *o))
        .collect();
    assert!(!removed.is_empty());
    for &gone in removed.iter().step_by(7) {
        let next = want.iter().find(|w| w.0 > gone).unwrap();
        assert_eq!(
            read_from(&log, gone).first(),
            Some(next),
            "from offset {gone}"
        );
    }

    // Nothing to do until more is written; the result survives a reopen.
    assert!(
        log.clean(now, &CleanerOptions::default())
            .unwrap()
            .is_none()
    );
    drop(log);
    let log = open(dir.path(), compact_config(2048));
    assert_eq!(read_all(&log), want);

    // More writes, another clean: the model still holds, now over the longer log.
    let mut model = model;
    let more = write_workload(&log, 100, now);
    model.extend(more);
    let stats = log.clean(now, &CleanerOptions::default()).unwrap().unwrap();
    assert_eq!(read_all(&log), expected(&model, stats.cleaned_to));
}

#[test]
fn tombstones_stay_until_delete_retention_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let config = compact_config(200)
        .with_overrides([("delete.retention.ms", "1000")])
        .unwrap();
    let log = open(dir.path(), config);
    let t = 1_700_000_000_000;
    let filler = |log: &PartitionLog, n: usize| {
        for i in 0..n {
            let v = format!("f{i}");
            append_durable(log, &keyed_batch(&[("filler", Some(&v))], t, false));
        }
    };
    append_durable(
        &log,
        &keyed_batch(&[("a", Some("1")), ("b", Some("2"))], t, false),
    );
    let tombstone = append_durable(&log, &keyed_batch(&[("a", None)], t, true)).base_offset;
    filler(&log, 5);

    // First clean: a's value goes, its tombstone stays (and gets a delete horizon of t + 1000).
    log.clean(t, &CleanerOptions::default()).unwrap().unwrap();
    let seen = read_all(&log);
    assert!(seen.contains(&(tombstone, b"a".to_vec(), None)), "{seen:?}");
    assert!(!seen.iter().any(|r| r.1 == b"a" && r.2.is_some()));
    assert!(seen.iter().any(|r| r.1 == b"b"));

    // Before the horizon a clean keeps it.
    filler(&log, 5);
    log.clean(t + 999, &CleanerOptions::default())
        .unwrap()
        .unwrap();
    assert!(read_all(&log).contains(&(tombstone, b"a".to_vec(), None)));

    // After the horizon the next clean removes it; b is untouched.
    filler(&log, 5);
    log.clean(t + 1001, &CleanerOptions::default())
        .unwrap()
        .unwrap();
    let seen = read_all(&log);
    assert!(!seen.iter().any(|r| r.1 == b"a"), "{seen:?}");
    assert!(seen.contains(&(1, b"b".to_vec(), Some(b"2".to_vec()))));
}

#[test]
fn dirty_ratio_and_compaction_lags_decide_when_to_clean() {
    let dir = tempfile::tempdir().unwrap();
    let config = compact_config(2048)
        .with_overrides([("min.cleanable.dirty.ratio", "0.5")])
        .unwrap();
    let log = open(dir.path(), config.clone());
    let now = 1_700_000_000_000;
    write_workload(&log, 200, now);
    assert!(
        log.clean(now, &CleanerOptions::default())
            .unwrap()
            .is_some()
    );
    // A little new data is under a high ratio.
    let config = config
        .with_overrides([("min.cleanable.dirty.ratio", "0.99")])
        .unwrap();
    log.set_config(config.clone());
    write_workload(&log, 30, now);
    assert!(
        log.clean(now, &CleanerOptions::default())
            .unwrap()
            .is_none()
    );

    // max.compaction.lag.ms forces it once the dirty records are old enough.
    log.set_config(
        config
            .with_overrides([("max.compaction.lag.ms", "60000")])
            .unwrap(),
    );
    assert!(
        log.clean(now + 30_000, &CleanerOptions::default())
            .unwrap()
            .is_none()
    );
    assert!(
        log.clean(now + 61_000, &CleanerOptions::default())
            .unwrap()
            .is_some()
    );

    // min.compaction.lag.ms holds back segments with records younger than it.
    let dir = tempfile::tempdir().unwrap();
    let lagged = compact_config(2048)
        .with_overrides([("min.compaction.lag.ms", "60000")])
        .unwrap();
    let log = open(dir.path(), lagged);
    write_workload(&log, 200, now);
    assert!(
        log.clean(now + 1000, &CleanerOptions::default())
            .unwrap()
            .is_none()
    );
    assert!(
        log.clean(now + 61_000, &CleanerOptions::default())
            .unwrap()
            .is_some()
    );

    // A topic that does not compact is never cleaned.
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), common::small_segments(2048));
    write_workload(&log, 200, now);
    assert!(
        log.clean(now, &CleanerOptions::default())
            .unwrap()
            .is_none()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn an_interrupted_swap_is_finished_and_an_unfinished_clean_undone() {
    let root = tempfile::tempdir().unwrap();
    let original = root.path().join("original");
    let cleaned = root.path().join("cleaned");
    let now = 1_700_000_000_000;
    // One segment group (segment.bytes large enough to merge them all) keeps the setup simple:
    // segments are rolled small, then the config lets the cleaner group them into one file.
    let log = open(&original, compact_config(2048));
    let model = write_workload(&log, 200, now);
    drop(log);
    copy_dir(&original, &cleaned);
    let log = open(&cleaned, compact_config(1 << 30));
    let stats = log.clean(now, &CleanerOptions::default()).unwrap().unwrap();
    assert_eq!(stats.segments_after, 1);
    let after = read_all(&log);
    drop(log);
    assert_eq!(after, expected(&model, stats.cleaned_to));
    let new_segment = std::fs::read(cleaned.join(format!("{:020}.log", 0))).unwrap();

    // Crash after the .cleaned file was written: the old segments rule.
    let case = root.path().join("cleaned-file");
    copy_dir(&original, &case);
    std::fs::write(case.join(format!("{:020}.log.cleaned", 0)), &new_segment).unwrap();
    let log = open(&case, compact_config(1 << 30));
    assert_eq!(read_all(&log), model);
    drop(log);
    assert!(!case.join(format!("{:020}.log.cleaned", 0)).exists());

    // Crash after the rename to .swap, with some old segments already deleted: the swap completes.
    let case = root.path().join("swap-file");
    copy_dir(&original, &case);
    std::fs::write(case.join(format!("{:020}.log.swap", 0)), &new_segment).unwrap();
    std::fs::remove_file(case.join(format!("{:020}.log", 0))).unwrap();
    let log = open(&case, compact_config(1 << 30));
    assert_eq!(read_all(&log), after);
    assert_eq!(log.log_end_offset(), model.last().unwrap().0 + 1);
    drop(log);
    let files = common::segment_files(&case);
    assert_eq!(files.len(), 2, "{files:?}");
}

#[test]
fn an_idempotent_producers_last_batch_survives_cleaning_as_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), compact_config(300));
    let now = 1_700_000_000_000;
    // Producer 9 writes key "p" twice, then others overwrite "p"; its batches become removable.
    let producer_batch = |seq: i32| {
        let mut b = keyed_batch(&[("p", Some("x"))], now, false);
        // Producer id, epoch and base sequence sit outside the records; set them and fix the CRC.
        b[43..51].copy_from_slice(&9i64.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    };
    append_durable(&log, &producer_batch(0));
    let last = append_durable(&log, &producer_batch(1));
    for i in 0..20 {
        let v = format!("{i}");
        append_durable(&log, &keyed_batch(&[("p", Some(&v))], now, false));
    }
    log.clean(now, &CleanerOptions::default()).unwrap().unwrap();
    let headers = log.batch_headers_from(0).unwrap();
    let kept: Vec<_> = headers.iter().filter(|h| h.producer_id == 9).collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        (
            kept[0].base_offset,
            kept[0].record_count,
            kept[0].base_sequence
        ),
        (last.base_offset, 0, 1)
    );
    // After a restart the producer's next sequence (2) is accepted, a gap is not.
    drop(log);
    let log = open(dir.path(), compact_config(300));
    assert!(log.append(&producer_batch(5)).is_err());
    log.append(&producer_batch(2)).unwrap();
}

#[test]
fn keyless_records_are_found_by_index() {
    let mut payload = keyed_batch(&[("a", Some("1"))], 0, false);
    // A keyless record: build it with kafka-protocol directly.
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 0,
        key: None,
        value: Some(Bytes::from_static(b"v")),
        headers: Default::default(),
    };
    let keyed = Record {
        key: Some(Bytes::from_static(b"k")),
        offset: 1,
        ..record.clone()
    };
    let mut second = Vec::new();
    RecordBatchEncoder::encode(
        &mut second,
        &[record, keyed],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    payload.extend(second);
    assert_eq!(ferry_log::keyless_records(&payload).unwrap(), vec![1]);
}
