//! The cleaner's map from key to the offset of its latest record in the dirty section.
//!
//! Kafka's `SkimpyOffsetMap` stores a 16-byte MD5 of each key in a fixed buffer, accepting a
//! (tiny) chance that two keys collide and one of them loses its latest value. We keep the key
//! bytes themselves in a `HashMap`: exact, and bounded the same way, by a memory budget
//! (`log.cleaner.dedupe.buffer.size` in Kafka); when the budget is reached the cleaner stops the
//! map at a segment boundary and cleans only that far.

use std::collections::HashMap;

/// Bytes one entry costs besides its key: the boxed slice's pointer and length, the offset, and
/// the hash table's own slot overhead, roughly.
const ENTRY_OVERHEAD: usize = 48;

#[derive(Debug, Default)]
pub(crate) struct OffsetMap {
    map: HashMap<Box<[u8]>, i64>,
    bytes: usize,
    /// The largest offset put in the map; -1 when empty.
    latest: i64,
}

impl OffsetMap {
    pub(crate) fn new() -> Self {
        OffsetMap {
            latest: -1,
            ..OffsetMap::default()
        }
    }

    /// Records that `key`'s latest record so far is at `offset` (offsets come in increasing order).
    pub(crate) fn put(&mut self, key: &[u8], offset: i64) {
        match self.map.get_mut(key) {
            Some(slot) => *slot = offset,
            None => {
                self.bytes += key.len() + ENTRY_OVERHEAD;
                self.map.insert(key.into(), offset);
            }
        }
        self.latest = self.latest.max(offset);
    }

    /// The offset of `key`'s latest record in the map, or -1.
    pub(crate) fn get(&self, key: &[u8]) -> i64 {
        self.map.get(key).copied().unwrap_or(-1)
    }

    /// The largest offset in the map: records after it were not considered and are always kept.
    pub(crate) fn latest_offset(&self) -> i64 {
        self.latest
    }

    /// Approximate memory the map holds.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_offset_wins() {
        let mut map = OffsetMap::new();
        map.put(b"a", 1);
        map.put(b"b", 2);
        map.put(b"a", 5);
        assert_eq!(map.get(b"a"), 5);
        assert_eq!(map.get(b"c"), -1);
        assert_eq!(map.latest_offset(), 5);
        assert_eq!(map.len(), 2);
    }
}
