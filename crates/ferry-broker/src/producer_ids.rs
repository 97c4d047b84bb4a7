//! Producer ids for idempotent producers (InitProducerId), unique across restarts.
//!
//! Ids are handed out from blocks: the file `producer-ids` holds the first id of the next block,
//! and is advanced (and fsynced) before any id of a block is given out, so a crash can skip ids
//! but never repeat one.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;

const BLOCK: i64 = 1000;

/// The allocator.
#[derive(Debug)]
pub struct ProducerIds {
    path: PathBuf,
    /// (next id to give, end of the reserved block)
    range: Mutex<(i64, i64)>,
}

impl ProducerIds {
    /// Load the allocator from `<data>/producer-ids`.
    pub fn open(data_dir: &Path) -> std::io::Result<ProducerIds> {
        let path = data_dir.join("producer-ids");
        let start = match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        // Nothing reserved yet in this run: the first allocation reserves a block.
        Ok(ProducerIds {
            path,
            range: Mutex::new((start, start)),
        })
    }

    /// A fresh producer id. Blocking (an fsync once per block).
    pub fn next(&self) -> std::io::Result<i64> {
        let mut range = self.range.lock();
        if range.0 >= range.1 {
            let end = range.0 + BLOCK;
            let tmp = self.path.with_extension("tmp");
            std::fs::write(&tmp, end.to_string())?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            range.1 = end;
        }
        let id = range.0;
        range.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIds::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| a.next().unwrap()).collect();
        assert_eq!(first, [0, 1, 2]);
        drop(a);
        let b = ProducerIds::open(dir.path()).unwrap();
        assert!(b.next().unwrap() > 2);
    }
}
