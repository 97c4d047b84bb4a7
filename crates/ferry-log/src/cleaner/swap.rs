//! Replacing segments with their cleaned copy so that a crash at any point leaves either the old
//! segment set or the new one, as Kafka does with its `.cleaned` and `.swap` files.
//!
//! 1. The cleaned copy of a group of segments `[b1, b2, ... bn]` is written to
//!    `<b1>.log.cleaned` and fsynced. A crash now: recovery deletes `.cleaned` files (the old
//!    segments are untouched).
//! 2. It is renamed to `<b1>.log.swap` and the directory fsynced: the commit point. A crash from
//!    here on: recovery finishes the swap.
//! 3. The old segments' `.log`, `.index` and `.timeindex` files are deleted (the index files
//!    first go with them: `<b1>.index` must never be paired with the new `<b1>.log`).
//! 4. `<b1>.log.swap` is renamed to `<b1>.log`; its indexes are written; the directory fsynced.
//!
//! Recovery of a `.swap` needs the range of offsets it replaces: from its base to the next offset
//! after its last batch. The cleaner always keeps the last batch of each source segment (empty if
//! all its records went), exactly so that this end is the end of the old group.
//!
//! The cleaner checkpoint (`cleaner.checkpoint`, Kafka's `cleaner-offset-checkpoint`) holds the
//! first dirty offset: where the next clean's offset map starts.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::batch::{BATCH_HEADER_LEN, BatchHeader};
use crate::error::{IoContext, Result};
use crate::segment::{log_path, remove_if_present, sync_dir, write_atomically};

const CHECKPOINT: &str = "cleaner.checkpoint";

pub(crate) fn cleaned_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log.cleaned"))
}

pub(crate) fn swap_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log.swap"))
}

/// Deletes a segment's three files.
pub(crate) fn delete_segment_files(dir: &Path, base: i64) -> Result<()> {
    remove_if_present(&log_path(dir, base))?;
    remove_if_present(&dir.join(format!("{base:020}.index")))?;
    remove_if_present(&dir.join(format!("{base:020}.timeindex")))
}

/// Base offset from a `<20 digits>.log.<suffix>` file name.
fn base_of(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?.strip_suffix(".log")?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

/// The next offset after the last whole batch of `path`, reading headers only; `None` if empty.
fn end_offset(path: &Path) -> Result<Option<i64>> {
    let file = File::open(path).at(path)?;
    let size = file.metadata().at(path)?.len();
    let mut pos = 0u64;
    let mut end = None;
    let mut buf = [0u8; BATCH_HEADER_LEN];
    while pos + BATCH_HEADER_LEN as u64 <= size {
        file.read_exact_at(&mut buf, pos).at(path)?;
        let Ok(header) = BatchHeader::parse(&buf) else {
            break;
        };
        if pos + header.total_len() as u64 > size {
            break;
        }
        end = Some(header.next_offset());
        pos += header.total_len() as u64;
    }
    Ok(end)
}

/// Finishes or undoes an interrupted clean in a partition directory; runs before the segments are
/// listed when a partition opens.
pub(crate) fn recover(dir: &Path) -> Result<()> {
    let mut swaps = Vec::new();
    let mut logs = Vec::new();
    let mut touched = false;
    for entry in fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if base_of(name, ".cleaned").is_some() {
            tracing::warn!(file = %path.display(), "deleting the output of an interrupted clean");
            remove_if_present(&path)?;
            touched = true;
        } else if let Some(base) = base_of(name, ".swap") {
            swaps.push((base, path));
        } else if let Some(base) = name
            .strip_suffix(".log")
            .filter(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<i64>().ok())
        {
            logs.push(base);
        }
    }
    for (base, swap) in swaps {
        let Some(end) = end_offset(&swap)? else {
            // Never written by the cleaner (it keeps each group's last batch); the old files rule.
            tracing::warn!(file = %swap.display(), "deleting an empty swap file");
            remove_if_present(&swap)?;
            touched = true;
            continue;
        };
        tracing::warn!(file = %swap.display(), base, end, "completing an interrupted segment swap");
        for &old in logs.iter().filter(|&&b| b >= base && b < end) {
            delete_segment_files(dir, old)?;
        }
        // Index files of the base may remain even when its .log was already deleted.
        delete_segment_files(dir, base)?;
        fs::rename(&swap, log_path(dir, base)).at(&swap)?;
        touched = true;
    }
    if touched {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The first dirty offset recorded by the last clean, if any.
pub(crate) fn read_checkpoint(dir: &Path) -> Result<Option<i64>> {
    let path = dir.join(CHECKPOINT);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().parse().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at(&path),
    }
}

pub(crate) fn write_checkpoint(dir: &Path, first_dirty: i64) -> Result<()> {
    write_atomically(&dir.join(CHECKPOINT), first_dirty.to_string().as_bytes())?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(base_of("00000000000000000042.log.swap", ".swap"), Some(42));
        assert_eq!(
            base_of("00000000000000000042.log.cleaned", ".cleaned"),
            Some(42)
        );
        assert_eq!(base_of("42.log.swap", ".swap"), None);
        assert_eq!(base_of("00000000000000000042.index", ".swap"), None);
    }
}
