//! An append-only file of CRC-framed JSON records, fsynced per append and replayed at start: the
//! durable form of the broker's small internal state (transactions; the group store frames its
//! records the same way).
//!
//! Why not an internal Kafka topic like `__transaction_state`: ferry-log has no compaction, and this
//! state is small and read only at start. Each frame is `u32 length`, `u32 CRC-32C`, payload.
//! Replay stops at the first torn or corrupt frame and truncates the file there, like the
//! partition logs; [`Journal::rewrite`] replaces the file (temp file, fsync, rename) when it has
//! grown well past the live state.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// An open journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    records: usize,
}

impl Journal {
    /// Opens (creating) `dir/name`, returning the journal and its intact records in order.
    pub fn open<R: DeserializeOwned>(dir: &Path, name: &str) -> std::io::Result<(Journal, Vec<R>)> {
        let path = dir.join(name);
        fs::create_dir_all(dir)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut records = Vec::new();
        let mut pos = 0usize;
        while let Some((record, len)) = parse_frame(&bytes[pos..]) {
            records.push(record);
            pos += len;
        }
        if pos < bytes.len() {
            tracing::warn!(file = %path.display(), position = pos, dropped = bytes.len() - pos, "journal: truncating a torn or corrupt tail");
            file.set_len(pos as u64)?;
            file.sync_all()?;
        }
        let count = records.len();
        Ok((
            Journal {
                path,
                file,
                records: count,
            },
            records,
        ))
    }

    /// Appends one record and fsyncs it. Blocking.
    pub fn append<R: Serialize>(&mut self, record: &R) -> std::io::Result<()> {
        self.file.write_all(&frame(record))?;
        self.file.sync_data()?;
        self.records += 1;
        Ok(())
    }

    /// How many records the file holds.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Replaces the file's content with `records`: temp file, fsync, rename, fsync the directory.
    pub fn rewrite<R: Serialize>(
        &mut self,
        records: impl IntoIterator<Item = R>,
    ) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut out = File::create(&tmp)?;
        let mut count = 0;
        for record in records {
            out.write_all(&frame(&record))?;
            count += 1;
        }
        out.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .read(true)
            .open(&self.path)?;
        self.records = count;
        Ok(())
    }
}

/// One framed record.
pub fn frame<R: Serialize>(record: &R) -> Vec<u8> {
    let payload = serde_json::to_vec(record).expect("journal records serialize");
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// A whole, intact frame at the start of `bytes`, and its length.
pub fn parse_frame<R: DeserializeOwned>(bytes: &[u8]) -> Option<(R, usize)> {
    let len = u32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
    let payload = bytes.get(8..8usize.checked_add(len)?)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    Some((serde_json::from_slice(payload).ok()?, 8 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_torn_tail_is_cut_and_rewrite_replaces() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut j, old) = Journal::open::<String>(dir.path(), "j.log").unwrap();
            assert!(old.is_empty());
            j.append(&"a".to_owned()).unwrap();
            j.append(&"b".to_owned()).unwrap();
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("j.log"))
            .unwrap();
        f.write_all(&[0, 0, 0, 9, 1]).unwrap();
        drop(f);
        let (mut j, got) = Journal::open::<String>(dir.path(), "j.log").unwrap();
        assert_eq!(got, ["a", "b"]);
        j.rewrite(["c".to_owned()]).unwrap();
        j.append(&"d".to_owned()).unwrap();
        drop(j);
        let (j, got) = Journal::open::<String>(dir.path(), "j.log").unwrap();
        assert_eq!(got, ["c", "d"]);
        assert_eq!(j.records(), 2);
    }
}
