//! The two sparse per-segment indexes, kept in memory and written to disk when a segment closes.
//!
//! * The offset index maps a batch's base offset (relative to the segment's base, `u32`) to the byte
//!   position of the batch in the segment file (`u32`). An entry is added once at least
//!   `index.interval.bytes` of batches were appended since the previous one, so a lookup finds a
//!   position at most one interval (plus one batch) before the wanted batch; the reader then walks
//!   batch headers from there.
//! * The time index records `(max timestamp so far, relative offset of the first batch that reached
//!   it)`, added alongside an offset index entry whenever the maximum grew, and once more when the
//!   segment closes so that its last entry is the segment's true maximum. Because each entry names
//!   the *first* batch to reach that timestamp, every batch before it has a smaller max timestamp,
//!   which is what makes a timestamp lookup start its scan there.
//!
//! File formats, big-endian: `.index` is 8-byte entries `relative offset u32, position u32`;
//! `.timeindex` is 12-byte entries `timestamp i64, relative offset u32`. Entries strictly increase.
//! The active segment's indexes live only in memory and are rebuilt by recovery's full scan, so an
//! index file on disk always belongs to a closed, fsynced segment.

/// One offset index entry: relative offset and file position.
pub(crate) const OFFSET_ENTRY_LEN: usize = 8;
/// One time index entry: timestamp and relative offset.
pub(crate) const TIME_ENTRY_LEN: usize = 12;

/// Sparse map from relative offset to file position.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub(crate) fn push(&mut self, relative_offset: u32, position: u32) {
        self.entries.push((relative_offset, position));
    }

    /// Position of the last indexed batch starting at or before `relative_offset`; 0 when none.
    pub(crate) fn lookup(&self, relative_offset: u32) -> u32 {
        let n = self.entries.partition_point(|e| e.0 <= relative_offset);
        if n == 0 { 0 } else { self.entries[n - 1].1 }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_LEN);
        for (offset, position) in &self.entries {
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&position.to_be_bytes());
        }
        out
    }

    /// Decodes an index file and checks it against its segment: whole entries only, strictly
    /// increasing, every offset below `offset_span` and every position below `log_size`. Any
    /// inconsistency returns the reason, and the caller rebuilds the index by scanning.
    pub(crate) fn decode(bytes: &[u8], offset_span: u64, log_size: u64) -> Result<Self, String> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_LEN) {
            return Err(format!(
                "size {} is not a multiple of {OFFSET_ENTRY_LEN}",
                bytes.len()
            ));
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_LEN) {
            let offset = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let position = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            if u64::from(offset) >= offset_span || u64::from(position) >= log_size {
                return Err(format!(
                    "entry ({offset}, {position}) lies beyond the segment"
                ));
            }
            if let Some(&(last_offset, last_position)) = index.entries.last()
                && (offset <= last_offset || position <= last_position)
            {
                return Err(format!("entry ({offset}, {position}) does not increase"));
            }
            index.push(offset, position);
        }
        Ok(index)
    }
}

/// Sparse map from timestamp to the relative offset of the first batch reaching it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Appends an entry unless the timestamp does not exceed the last one.
    pub(crate) fn maybe_push(&mut self, timestamp: i64, relative_offset: u32) {
        if self.entries.last().is_none_or(|last| timestamp > last.0) {
            self.entries.push((timestamp, relative_offset));
        }
    }

    /// Relative offset to start a scan for the first batch with max timestamp >= `timestamp`: the
    /// entry with the largest timestamp <= `timestamp`, since every earlier batch is below it.
    pub(crate) fn lookup(&self, timestamp: i64) -> u32 {
        let n = self.entries.partition_point(|e| e.0 <= timestamp);
        if n == 0 { 0 } else { self.entries[n - 1].1 }
    }

    /// The last (largest) entry: for a closed segment, its max timestamp and where it was reached.
    pub(crate) fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_LEN);
        for (timestamp, offset) in &self.entries {
            out.extend_from_slice(&timestamp.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
        }
        out
    }

    /// Decodes a time index file; same consistency rules as [`OffsetIndex::decode`].
    pub(crate) fn decode(bytes: &[u8], offset_span: u64) -> Result<Self, String> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_LEN) {
            return Err(format!(
                "size {} is not a multiple of {TIME_ENTRY_LEN}",
                bytes.len()
            ));
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(TIME_ENTRY_LEN) {
            let mut ts = [0; 8];
            ts.copy_from_slice(&chunk[..8]);
            let timestamp = i64::from_be_bytes(ts);
            let offset = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            if u64::from(offset) >= offset_span {
                return Err(format!(
                    "entry ({timestamp}, {offset}) lies beyond the segment"
                ));
            }
            if let Some(&(last_ts, last_offset)) = index.entries.last()
                && (timestamp <= last_ts || offset <= last_offset)
            {
                return Err(format!("entry ({timestamp}, {offset}) does not increase"));
            }
            index.entries.push((timestamp, offset));
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_floor_entry() {
        let mut index = OffsetIndex::default();
        index.push(10, 100);
        index.push(20, 200);
        assert_eq!(index.lookup(5), 0);
        assert_eq!(index.lookup(10), 100);
        assert_eq!(index.lookup(19), 100);
        assert_eq!(index.lookup(25), 200);
        assert_eq!(
            OffsetIndex::decode(&index.encode(), 30, 300).unwrap(),
            index
        );
    }

    #[test]
    fn inconsistent_offset_index_is_rejected() {
        let mut index = OffsetIndex::default();
        index.push(10, 100);
        index.push(5, 200);
        assert!(OffsetIndex::decode(&index.encode(), 30, 300).is_err());
        assert!(OffsetIndex::decode(&[0; 7], 30, 300).is_err());
        let mut beyond = OffsetIndex::default();
        beyond.push(1, 500);
        assert!(OffsetIndex::decode(&beyond.encode(), 30, 300).is_err());
    }

    #[test]
    fn time_index_keeps_only_growing_timestamps() {
        let mut index = TimeIndex::default();
        index.maybe_push(100, 0);
        index.maybe_push(90, 3);
        index.maybe_push(200, 5);
        assert_eq!(index.lookup(50), 0);
        assert_eq!(index.lookup(150), 0);
        assert_eq!(index.lookup(200), 5);
        assert_eq!(index.last(), Some((200, 5)));
        assert_eq!(TimeIndex::decode(&index.encode(), 10).unwrap(), index);
    }
}
