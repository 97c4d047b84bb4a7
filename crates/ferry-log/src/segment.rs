//! One segment: a `.log` file of batches back to back, its in-memory indexes, and its recovery.
//!
//! A segment is named by the offset of its first batch (`<base_offset:020>.log`). Only the
//! partition's last segment (the *active* one) is ever written; earlier ones are *closed*: fsynced,
//! with their `.index` and `.timeindex` written, and never modified again except by deletion.
//!
//! All file access is positional (`read_at`/`write_at`), so readers and the single writer share one
//! `File` without a seek position to fight over. The byte size is an atomic that the writer publishes
//! after a write completes; the indexes and offsets sit behind a short `RwLock`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use parking_lot::RwLock;

use crate::batch::{self, BATCH_HEADER_LEN, BatchHeader};
use crate::error::{Error, IoContext, Result};
use crate::index::{OffsetIndex, TimeIndex};

/// Read size when walking headers to find a batch: about one index interval plus a header.
const SCAN_CHUNK: usize = 16 * 1024;
/// Read size when recovery checks every byte of the active segment.
const RECOVERY_CHUNK: usize = 1024 * 1024;

pub(crate) fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

fn index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

fn time_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.timeindex"))
}

/// Everything about a segment that changes as batches are appended.
#[derive(Debug)]
struct SegmentMeta {
    offsets: OffsetIndex,
    times: TimeIndex,
    /// Offset the next batch appended here gets.
    next_offset: i64,
    /// Largest batch max timestamp seen, `i64::MIN` while the segment is empty.
    max_timestamp: i64,
    /// Base offset of the first batch that reached `max_timestamp`.
    offset_of_max_timestamp: i64,
    bytes_since_index: u64,
    /// Start of the segment's age for `segment.ms`: wall clock of the first append, or after
    /// recovery the first batch's max timestamp.
    rolling_base_ms: Option<i64>,
}

impl SegmentMeta {
    fn new(base_offset: i64) -> Self {
        SegmentMeta {
            offsets: OffsetIndex::default(),
            times: TimeIndex::default(),
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            offset_of_max_timestamp: base_offset,
            bytes_since_index: 0,
            rolling_base_ms: None,
        }
    }

    /// Makes the time index's last entry the segment's true maximum, which a closed segment's
    /// max timestamp is read back from when it is next opened.
    fn seal(&mut self, base: i64) {
        if self.max_timestamp != i64::MIN {
            let relative = (self.offset_of_max_timestamp - base) as u32;
            self.times.maybe_push(self.max_timestamp, relative);
        }
    }

    /// Accounts for a batch written at `position`, adding index entries when one interval of bytes
    /// has gone by since the previous entry.
    fn record(&mut self, base: i64, position: u64, header: &BatchHeader, interval: u32) {
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if self.bytes_since_index >= u64::from(interval) {
            // Rolls keep relative offsets and positions within u32 (see PartitionLog::must_roll).
            self.offsets
                .push((header.base_offset - base) as u32, position as u32);
            self.times.maybe_push(
                self.max_timestamp,
                (self.offset_of_max_timestamp - base) as u32,
            );
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.total_len() as u64;
        self.next_offset = header.next_offset();
    }
}

/// Reads a file through a buffer so that walking many small headers costs few system calls.
struct ChunkReader<'a> {
    file: &'a File,
    path: &'a Path,
    limit: u64,
    chunk: usize,
    buf: Vec<u8>,
    start: u64,
}

impl<'a> ChunkReader<'a> {
    fn new(file: &'a File, path: &'a Path, limit: u64, chunk: usize) -> Self {
        ChunkReader {
            file,
            path,
            limit,
            chunk,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The bytes `pos..pos + len`, or `None` if they reach past the limit.
    fn get(&mut self, pos: u64, len: usize) -> Result<Option<&[u8]>> {
        let Some(end) = pos.checked_add(len as u64).filter(|&end| end <= self.limit) else {
            return Ok(None);
        };
        if pos < self.start || end > self.start + self.buf.len() as u64 {
            let want = (len.max(self.chunk) as u64).min(self.limit - pos) as usize;
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, pos).at(self.path)?;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        Ok(Some(&self.buf[from..from + len]))
    }
}

/// What a scan of a segment file found.
struct Scan {
    meta: SegmentMeta,
    /// Byte position after the last good batch.
    valid_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    stopped: Option<String>,
}

/// Walks every batch of a file from the start, rebuilding the indexes. With `verify_crc`, each
/// batch is read whole and its CRC-32C checked (the active segment after a crash); otherwise only
/// headers are read (a closed segment whose index file is unusable).
fn scan_file(
    file: &File,
    path: &Path,
    base: i64,
    size: u64,
    verify_crc: bool,
    interval: u32,
) -> Result<Scan> {
    let chunk = if verify_crc {
        RECOVERY_CHUNK
    } else {
        SCAN_CHUNK
    };
    let mut reader = ChunkReader::new(file, path, size, chunk);
    let mut meta = SegmentMeta::new(base);
    let mut pos = 0;
    let stopped = loop {
        if pos == size {
            break None;
        }
        let Some(bytes) = reader.get(pos, BATCH_HEADER_LEN)? else {
            break Some(format!("incomplete batch header ({} bytes)", size - pos));
        };
        let header = match BatchHeader::parse(bytes) {
            Ok(header) => header,
            Err(e) => break Some(e.to_string()),
        };
        let total = header.total_len();
        if verify_crc {
            let Some(bytes) = reader.get(pos, total)? else {
                break Some(format!(
                    "batch of {total} bytes extends past the end of the file"
                ));
            };
            if let Err(e) = batch::check_batch(bytes) {
                break Some(e.to_string());
            }
        } else if pos + total as u64 > size {
            break Some(format!(
                "batch of {total} bytes extends past the end of the file"
            ));
        }
        // The active segment's offsets are contiguous; a closed one may have gaps where the
        // cleaner removed batches, but its offsets still only grow.
        let in_order = if verify_crc {
            header.base_offset == meta.next_offset
        } else {
            header.base_offset >= meta.next_offset
        };
        if !in_order {
            break Some(format!(
                "batch base offset {} where {} was expected",
                header.base_offset, meta.next_offset
            ));
        }
        meta.record(base, pos, &header, interval);
        pos += total as u64;
    };
    Ok(Scan {
        meta,
        valid_len: pos,
        stopped,
    })
}

/// A segment file with its indexes.
#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: i64,
    dir: PathBuf,
    path: PathBuf,
    file: File,
    size: AtomicU64,
    meta: RwLock<SegmentMeta>,
}

impl Segment {
    /// Creates an empty segment file, replacing anything left under that name (a stale file there
    /// holds offsets beyond the log end, which recovery already discarded).
    pub(crate) fn create(dir: &Path, base_offset: i64) -> Result<Segment> {
        let path = log_path(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .at(&path)?;
        for stale in [
            index_path(dir, base_offset),
            time_index_path(dir, base_offset),
        ] {
            remove_if_present(&stale)?;
        }
        Ok(Segment::new(
            dir,
            base_offset,
            path,
            file,
            0,
            SegmentMeta::new(base_offset),
        ))
    }

    fn new(
        dir: &Path,
        base_offset: i64,
        path: PathBuf,
        file: File,
        size: u64,
        meta: SegmentMeta,
    ) -> Segment {
        Segment {
            base_offset,
            dir: dir.to_path_buf(),
            path,
            file,
            size: AtomicU64::new(size),
            meta: RwLock::new(meta),
        }
    }

    /// Opens a closed segment whose offsets end at `end_offset` (the next segment's base). Its index
    /// files are trusted if consistent, otherwise rebuilt from the batch headers and rewritten.
    pub(crate) fn open_closed(
        dir: &Path,
        base_offset: i64,
        end_offset: i64,
        interval: u32,
    ) -> Result<Segment> {
        let path = log_path(dir, base_offset);
        let file = open_rw(&path)?;
        let size = file.metadata().at(&path)?.len();
        let span = end_offset.saturating_sub(base_offset).max(0) as u64;
        match load_indexes(dir, base_offset, span, size) {
            Ok((offsets, times)) => {
                let mut meta = SegmentMeta::new(base_offset);
                meta.next_offset = end_offset;
                if let Some((timestamp, relative)) = times.last() {
                    meta.max_timestamp = timestamp;
                    meta.offset_of_max_timestamp = base_offset + i64::from(relative);
                }
                meta.offsets = offsets;
                meta.times = times;
                Ok(Segment::new(dir, base_offset, path, file, size, meta))
            }
            Err(reason) => {
                tracing::warn!(file = %path.display(), %reason, "rebuilding index of closed segment");
                let scan = scan_file(&file, &path, base_offset, size, false, interval)?;
                if let Some(reason) = &scan.stopped {
                    tracing::warn!(
                        file = %path.display(),
                        position = scan.valid_len,
                        %reason,
                        "closed segment has an unreadable batch; data after it cannot be indexed"
                    );
                }
                let mut meta = scan.meta;
                meta.next_offset = end_offset;
                meta.seal(base_offset);
                let segment = Segment::new(dir, base_offset, path, file, size, meta);
                segment.write_indexes()?;
                Ok(segment)
            }
        }
    }

    /// Opens a closed segment that the cleaner has just written whole (no index files yet):
    /// builds its indexes from the batch headers and writes them.
    pub(crate) fn open_rebuilt(
        dir: &Path,
        base_offset: i64,
        end_offset: i64,
        interval: u32,
    ) -> Result<Segment> {
        let path = log_path(dir, base_offset);
        let file = open_rw(&path)?;
        let size = file.metadata().at(&path)?.len();
        let scan = scan_file(&file, &path, base_offset, size, false, interval)?;
        if let Some(reason) = scan.stopped {
            return Err(Error::CorruptLog {
                path,
                position: scan.valid_len,
                reason,
            });
        }
        let mut meta = scan.meta;
        meta.next_offset = end_offset;
        meta.seal(base_offset);
        let segment = Segment::new(dir, base_offset, path, file, size, meta);
        segment.write_indexes()?;
        Ok(segment)
    }

    /// Opens the active segment after a possible crash: checks every batch (lengths, magic, CRC-32C,
    /// offset continuity), truncates the file at the first bad one, and rebuilds the indexes.
    pub(crate) fn recover_active(
        dir: &Path,
        base_offset: i64,
        interval: u32,
        now_ms: i64,
    ) -> Result<Segment> {
        let path = log_path(dir, base_offset);
        let file = open_rw(&path)?;
        let size = file.metadata().at(&path)?.len();
        let mut scan = scan_file(&file, &path, base_offset, size, true, interval)?;
        if let Some(reason) = &scan.stopped {
            tracing::warn!(
                file = %path.display(),
                position = scan.valid_len,
                dropped_bytes = size - scan.valid_len,
                %reason,
                "truncating torn or invalid tail of the active segment"
            );
            file.set_len(scan.valid_len).at(&path)?;
            file.sync_all().at(&path)?;
        }
        if scan.valid_len > 0 {
            // The first batch's max timestamp is the segment's age; without one, start counting now.
            let first = first_batch_max_timestamp(&file, &path)?.filter(|&t| t >= 0);
            scan.meta.rolling_base_ms = Some(first.unwrap_or(now_ms));
        }
        Ok(Segment::new(
            dir,
            base_offset,
            path,
            file,
            scan.valid_len,
            scan.meta,
        ))
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written (all of them whole batches).
    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.meta.read().next_offset
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size() == 0
    }

    /// Wall-clock start of this segment's age for `segment.ms`, if it holds any batch.
    pub(crate) fn rolling_base_ms(&self) -> Option<i64> {
        self.meta.read().rolling_base_ms
    }

    /// `(max timestamp, base offset of the first batch with it)`, `None` while empty.
    pub(crate) fn max_timestamp(&self) -> Option<(i64, i64)> {
        let meta = self.meta.read();
        (meta.max_timestamp != i64::MIN)
            .then_some((meta.max_timestamp, meta.offset_of_max_timestamp))
    }

    /// Timestamp retention judges this segment by: its newest batch timestamp, or the file's
    /// modification time when batches carry no timestamps (as Kafka does).
    pub(crate) fn retention_timestamp(&self) -> i64 {
        match self.max_timestamp() {
            Some((ts, _)) if ts >= 0 => ts,
            _ => self
                .file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(i64::MAX, |d| d.as_millis() as i64),
        }
    }

    /// Writes `batches` (already validated, offsets already assigned; `headers` describe them) at
    /// the end of the file. On failure the file is cut back so that no partial batch stays behind.
    pub(crate) fn append(
        &self,
        batches: &[u8],
        headers: &[BatchHeader],
        interval: u32,
        now_ms: i64,
    ) -> Result<()> {
        let start = self.size();
        if let Err(e) = self.file.write_all_at(batches, start) {
            let _ = self.file.set_len(start);
            return Err(Error::Io {
                path: self.path.clone(),
                source: e,
            });
        }
        let mut meta = self.meta.write();
        meta.rolling_base_ms.get_or_insert(now_ms);
        let mut pos = start;
        for header in headers {
            meta.record(self.base_offset, pos, header, interval);
            pos += header.total_len() as u64;
        }
        self.size
            .store(start + batches.len() as u64, Ordering::Release);
        Ok(())
    }

    pub(crate) fn sync(&self) -> Result<()> {
        self.file.sync_data().at(&self.path)
    }

    /// Turns the active segment into a closed one: fsync the data, make the time index's last entry
    /// the true maximum, and write both index files.
    pub(crate) fn close(&self) -> Result<()> {
        self.sync()?;
        self.meta.write().seal(self.base_offset);
        self.write_indexes()
    }

    fn write_indexes(&self) -> Result<()> {
        let (offsets, times) = {
            let meta = self.meta.read();
            (meta.offsets.encode(), meta.times.encode())
        };
        write_atomically(&index_path(&self.dir, self.base_offset), &offsets)?;
        write_atomically(&time_index_path(&self.dir, self.base_offset), &times)
    }

    /// Removes the segment's files. Readers holding the segment keep reading the unlinked file.
    pub(crate) fn delete_files(&self) -> Result<()> {
        remove_if_present(&self.path)?;
        remove_if_present(&index_path(&self.dir, self.base_offset))?;
        remove_if_present(&time_index_path(&self.dir, self.base_offset))
    }

    /// Calls `f` with the position and header of each batch in `from..limit`, until it breaks.
    /// Every batch there must be whole and well-formed; anything else is [`Error::CorruptLog`].
    pub(crate) fn scan_headers(
        &self,
        from: u64,
        limit: u64,
        mut f: impl FnMut(u64, &BatchHeader) -> ControlFlow<()>,
    ) -> Result<()> {
        let mut reader = ChunkReader::new(&self.file, &self.path, limit, SCAN_CHUNK);
        let mut pos = from;
        while pos < limit {
            let corrupt = |reason: String| Error::CorruptLog {
                path: self.path.clone(),
                position: pos,
                reason,
            };
            let Some(bytes) = reader.get(pos, BATCH_HEADER_LEN)? else {
                return Err(corrupt("incomplete batch header".into()));
            };
            let header = BatchHeader::parse(bytes).map_err(|e| corrupt(e.to_string()))?;
            let end = pos + header.total_len() as u64;
            if end > limit {
                return Err(corrupt("batch extends past the readable end".into()));
            }
            if f(pos, &header).is_break() {
                break;
            }
            pos = end;
        }
        Ok(())
    }

    /// Position and header of the batch containing `offset`, looking no further than `limit` bytes.
    pub(crate) fn find_batch(&self, offset: i64, limit: u64) -> Result<Option<(u64, BatchHeader)>> {
        let start = u64::from(
            self.meta
                .read()
                .offsets
                .lookup(relative(offset, self.base_offset)),
        );
        let mut found = None;
        self.scan_headers(start.min(limit), limit, |pos, header| {
            if header.last_offset() >= offset {
                found = Some((pos, *header));
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(found)
    }

    /// `(offset, timestamp)` of the first record within `limit` bytes whose timestamp is at least
    /// `timestamp`. Headers are walked from the time index's hint; only batches whose max timestamp
    /// qualifies are decoded (a cleaned batch may hold no record that does: the walk goes on).
    pub(crate) fn find_timestamp(&self, timestamp: i64, limit: u64) -> Result<Option<(i64, i64)>> {
        let start = {
            let meta = self.meta.read();
            meta.offsets.lookup(meta.times.lookup(timestamp))
        };
        let mut found = Ok(None);
        self.scan_headers(u64::from(start).min(limit), limit, |pos, header| {
            if header.max_timestamp < timestamp {
                return ControlFlow::Continue(());
            }
            found = self
                .record_times(pos, header)
                .map(|times| times.into_iter().find(|&(_, t)| t >= timestamp));
            match found {
                Ok(None) => ControlFlow::Continue(()),
                _ => ControlFlow::Break(()),
            }
        })?;
        found
    }

    /// `(offset, timestamp)` of the first record with the largest timestamp in the batch that
    /// contains `offset` (the batch the segment's max timestamp names), looking no further than
    /// `limit` bytes. Falls back to the batch's first offset if no record carries that maximum
    /// (a batch the cleaner emptied keeps its header's timestamp).
    pub(crate) fn max_timestamp_record(
        &self,
        offset: i64,
        timestamp: i64,
        limit: u64,
    ) -> Result<(i64, i64)> {
        let Some((pos, header)) = self.find_batch(offset, limit)? else {
            return Ok((offset, timestamp));
        };
        let times = self.record_times(pos, &header)?;
        let best = times
            .iter()
            .fold(None, |best: Option<(i64, i64)>, &(o, t)| match best {
                Some((_, bt)) if bt >= t => best,
                _ => Some((o, t)),
            });
        Ok(best.unwrap_or((header.base_offset, header.max_timestamp)))
    }

    /// Reads the batch at `pos` and decodes its records' offsets and timestamps.
    fn record_times(&self, pos: u64, header: &BatchHeader) -> Result<Vec<(i64, i64)>> {
        let mut bytes = Vec::with_capacity(header.total_len());
        self.read_into(pos, header.total_len(), &mut bytes)?;
        crate::cleaner::records::record_times(header, &bytes)
    }

    /// Appends the bytes `pos..pos + len` of the file to `out`.
    pub(crate) fn read_into(&self, pos: u64, len: usize, out: &mut Vec<u8>) -> Result<()> {
        let old = out.len();
        out.resize(old + len, 0);
        let result = self.file.read_exact_at(&mut out[old..], pos).at(&self.path);
        if result.is_err() {
            out.truncate(old);
        }
        result
    }
}

/// Offset relative to a segment base, clamped into `u32` for index lookups.
fn relative(offset: i64, base: i64) -> u32 {
    offset.saturating_sub(base).clamp(0, i64::from(u32::MAX)) as u32
}

fn first_batch_max_timestamp(file: &File, path: &Path) -> Result<Option<i64>> {
    let mut header = [0u8; BATCH_HEADER_LEN];
    match file.read_exact_at(&mut header, 0) {
        Ok(()) => Ok(BatchHeader::parse(&header).ok().map(|h| h.max_timestamp)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(Error::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn load_indexes(
    dir: &Path,
    base: i64,
    span: u64,
    size: u64,
) -> Result<(OffsetIndex, TimeIndex), String> {
    let read = |path: PathBuf| fs::read(&path).map_err(|e| format!("{}: {e}", path.display()));
    let offsets = OffsetIndex::decode(&read(index_path(dir, base))?, span, size)?;
    let times = TimeIndex::decode(&read(time_index_path(dir, base))?, span)?;
    if size > 0 && times.last().is_none() {
        return Err("time index is empty for a non-empty segment".into());
    }
    Ok((offsets, times))
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .at(path)
}

pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content: write a
/// temporary file, fsync it, rename it over. The caller fsyncs the directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp).at(&tmp)?;
    file.write_all(bytes).at(&tmp)?;
    file.sync_all().at(&tmp)?;
    fs::rename(&tmp, path).at(path)
}

/// Makes directory entries (created, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
