//! Idempotent producers (KIP-98): per producer id, the sequence state that lets a partition reject
//! out-of-order batches and recognise retries of batches it already holds.
//!
//! An idempotent producer stamps each batch with its producer id, an epoch, and the sequence number
//! of the batch's first record; sequences count records per partition and wrap from `i32::MAX` to
//! 0. For each producer id the partition keeps the current epoch and the first/last sequence and
//! offsets of its last [`CACHED_BATCHES`] batches. A batch repeating one of those is a retry whose
//! answer got lost: it is not written again, and the producer is told the original offsets.
//!
//! The state is not persisted on its own: the batch headers in the log carry everything, so
//! `crate::transactions::rebuild` replays them when the partition opens. It lives under the partition's
//! writer lock, since only appends change it.
//!
//! Transactional batches are sequenced like any other batch. Control batches (transaction markers,
//! written by the broker, never by a client) carry no sequence: they only move the producer's epoch
//! forward when the coordinator fenced it, which restarts its sequences at 0.

use std::collections::HashMap;
use std::collections::VecDeque;

use crate::batch::BatchHeader;
use crate::error::{Error, Result};

/// How many of a producer's latest batches are remembered for duplicate detection. Kafka clients
/// keep at most five requests in flight per connection with idempotence on, so a retry always
/// repeats one of the last five batches.
pub(crate) const CACHED_BATCHES: usize = 5;

/// Where one batch of a producer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    first_offset: i64,
    last_offset: i64,
}

impl BatchMeta {
    /// The batch as written; `header.base_offset` must be the offset the log assigned.
    fn of(header: &BatchHeader) -> BatchMeta {
        BatchMeta {
            first_seq: header.base_sequence,
            last_seq: last_sequence(header),
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
        }
    }
}

/// One producer id's state in one partition.
#[derive(Debug, Clone)]
struct ProducerState {
    epoch: i16,
    /// Oldest first, at most [`CACHED_BATCHES`]; empty after a marker moved the epoch forward.
    batches: VecDeque<BatchMeta>,
    /// Max timestamp of the producer's last batch (DescribeProducers).
    last_timestamp: i64,
}

impl ProducerState {
    fn starting_with(epoch: i16, batch: BatchMeta, timestamp: i64) -> ProducerState {
        let mut batches = VecDeque::with_capacity(CACHED_BATCHES);
        batches.push_back(batch);
        ProducerState {
            epoch,
            batches,
            last_timestamp: timestamp,
        }
    }

    fn push(&mut self, batch: BatchMeta) {
        if self.batches.len() == CACHED_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
    }

    /// The sequence the producer's next batch must start with.
    fn next_sequence(&self) -> i32 {
        let last = self.batches.back().map_or(-1, |b| b.last_seq);
        add_sequence(last, 1)
    }

    fn find(&self, first_seq: i32, last_seq: i32) -> Option<&BatchMeta> {
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
    }
}

/// `sequence + n`, wrapping from `i32::MAX` to 0 as Kafka sequences do.
fn add_sequence(sequence: i32, n: i32) -> i32 {
    (i64::from(sequence) + i64::from(n)).rem_euclid(1 << 31) as i32
}

/// Sequence of the batch's last record.
fn last_sequence(header: &BatchHeader) -> i32 {
    add_sequence(header.base_sequence, header.last_offset_delta)
}

/// What [`ProducerStates::check`] found a produce payload to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checked {
    /// New batches, each in sequence: write them, then [`ProducerStates::record`] them.
    New,
    /// Every batch is a retry of one already in the log: write nothing and answer with the offsets
    /// of the originals, from the first one's first offset to the last one's last offset.
    Duplicate { base_offset: i64, last_offset: i64 },
}

/// One producer's state in a partition, as DescribeProducers shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSnapshot {
    /// The producer id.
    pub producer_id: i64,
    /// Its current epoch in this partition.
    pub epoch: i16,
    /// Sequence of its last record here, -1 if none since the epoch began.
    pub last_sequence: i32,
    /// Max timestamp of its last batch, -1 if none.
    pub last_timestamp: i64,
    /// First offset of its open transaction here, -1 if none.
    pub current_txn_start_offset: i64,
}

/// Sequence state of every idempotent producer that has written to one partition.
#[derive(Debug, Default)]
pub(crate) struct ProducerStates {
    producers: HashMap<i64, ProducerState>,
}

impl ProducerStates {
    /// How many producer ids have state.
    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }

    /// Checks a produce payload against the producers' states without changing them. `headers`
    /// must carry the offsets the append would assign. A payload is new, or made only of duplicates;
    /// one that mixes both is [`Error::OutOfOrderSequence`] (clients never send that).
    pub(crate) fn check(&self, headers: &[BatchHeader]) -> Result<Checked> {
        // States as the earlier batches of this payload leave them, for the later ones to see.
        let mut pending: HashMap<i64, ProducerState> = HashMap::new();
        let mut duplicates: Vec<(BatchMeta, Error)> = Vec::new();
        for header in headers.iter().filter(|h| h.producer_id >= 0) {
            let id = header.producer_id;
            let current = pending.get(&id).or_else(|| self.producers.get(&id));
            match check_batch(current, header)? {
                Some(original) => {
                    let mixed = Error::OutOfOrderSequence {
                        producer_id: id,
                        expected: current.map_or(0, ProducerState::next_sequence),
                        got: header.base_sequence,
                    };
                    duplicates.push((original, mixed));
                }
                None => {
                    let next = apply_to(current.cloned(), header);
                    pending.insert(id, next);
                }
            }
        }
        if duplicates.len() == headers.len() {
            let base_offset = duplicates[0].0.first_offset;
            let last_offset = duplicates.iter().map(|(b, _)| b.last_offset).max();
            return Ok(Checked::Duplicate {
                base_offset,
                last_offset: last_offset.unwrap_or(base_offset),
            });
        }
        match duplicates.into_iter().next() {
            Some((_, mixed)) => Err(mixed),
            None => Ok(Checked::New),
        }
    }

    /// Every producer's state, by producer id.
    pub(crate) fn snapshots(&self) -> Vec<ProducerSnapshot> {
        let mut out: Vec<ProducerSnapshot> = self
            .producers
            .iter()
            .map(|(&producer_id, s)| ProducerSnapshot {
                producer_id,
                epoch: s.epoch,
                last_sequence: s.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: s.last_timestamp,
                current_txn_start_offset: -1,
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    /// The epoch the partition knows for `producer_id`, if any.
    pub(crate) fn epoch(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|s| s.epoch)
    }

    /// Checks a transaction marker for `producer_id` at `epoch`: the coordinator never writes one
    /// with an epoch older than the partition has seen (that would be a zombie coordinator's).
    pub(crate) fn check_marker(&self, producer_id: i64, epoch: i16) -> Result<()> {
        match self.producers.get(&producer_id) {
            Some(state) if state.epoch > epoch => Err(Error::InvalidProducerEpoch {
                producer_id,
                epoch,
                current: state.epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Takes written batches into the state. They must have passed [`check`](Self::check).
    pub(crate) fn record(&mut self, headers: &[BatchHeader]) {
        for header in headers {
            self.apply(header);
        }
    }

    /// Takes one written batch into the state, unchecked: the log is the truth.
    pub(crate) fn apply(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        if header.is_control() {
            // A marker carries no sequence; a newer epoch (the coordinator fenced the producer)
            // restarts the sequences.
            let newer = self
                .producers
                .get(&header.producer_id)
                .is_none_or(|s| s.epoch < header.producer_epoch);
            if newer {
                self.producers.insert(
                    header.producer_id,
                    ProducerState {
                        epoch: header.producer_epoch,
                        batches: VecDeque::new(),
                        last_timestamp: header.max_timestamp,
                    },
                );
            }
            return;
        }
        let current = self.producers.remove(&header.producer_id);
        self.producers
            .insert(header.producer_id, apply_to(current, header));
    }
}

/// The state after `header` was written on top of `current`. A batch of an older epoch cannot have
/// been written after a newer one; should one appear in the log anyway, it is ignored.
fn apply_to(current: Option<ProducerState>, header: &BatchHeader) -> ProducerState {
    let batch = BatchMeta::of(header);
    match current {
        Some(mut state) if state.epoch == header.producer_epoch => {
            state.push(batch);
            state.last_timestamp = header.max_timestamp;
            state
        }
        Some(state) if state.epoch > header.producer_epoch => state,
        _ => ProducerState::starting_with(header.producer_epoch, batch, header.max_timestamp),
    }
}

/// Checks one batch of producer `header.producer_id` against its state: `Some(original)` if it
/// repeats a cached batch, `None` if it is the next one in sequence.
fn check_batch(current: Option<&ProducerState>, header: &BatchHeader) -> Result<Option<BatchMeta>> {
    let producer_id = header.producer_id;
    let got = header.base_sequence;
    let out_of_order = |expected| Error::OutOfOrderSequence {
        producer_id,
        expected,
        got,
    };
    let Some(state) = current else {
        // No state at all: a producer new to this partition, or one whose batches retention has
        // deleted. Kafka would answer the latter UNKNOWN_PRODUCER_ID, which makes the client reset
        // its sequences; accepting whatever sequence comes is the safer choice for a producer that
        // has merely been quiet for longer than the retention period. Only a negative sequence
        // (NO_SEQUENCE) cannot start a producer's history.
        return if got < 0 {
            Err(out_of_order(0))
        } else {
            Ok(None)
        };
    };
    match header.producer_epoch.cmp(&state.epoch) {
        std::cmp::Ordering::Less => Err(Error::InvalidProducerEpoch {
            producer_id,
            epoch: header.producer_epoch,
            current: state.epoch,
        }),
        // A new epoch restarts the sequences.
        std::cmp::Ordering::Greater if got == 0 => Ok(None),
        std::cmp::Ordering::Greater => Err(out_of_order(0)),
        std::cmp::Ordering::Equal => {
            if let Some(original) = state.find(got, last_sequence(header)) {
                return Ok(Some(*original));
            }
            let expected = state.next_sequence();
            if got == expected {
                Ok(None)
            } else {
                Err(out_of_order(expected))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_wrap_from_max_to_zero() {
        assert_eq!(add_sequence(5, 3), 8);
        assert_eq!(add_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(add_sequence(i32::MAX, 1), 0);
        assert_eq!(add_sequence(i32::MAX - 1, 4), 2);
        assert_eq!(add_sequence(-1, 1), 0);
    }

    #[test]
    fn only_the_last_five_batches_are_cached() {
        let meta = |n: i32| BatchMeta {
            first_seq: n,
            last_seq: n,
            first_offset: i64::from(n),
            last_offset: i64::from(n),
        };
        let mut state = ProducerState::starting_with(0, meta(0), 0);
        for n in 1..7 {
            state.push(meta(n));
        }
        assert_eq!(state.batches.len(), CACHED_BATCHES);
        assert!(state.find(1, 1).is_none());
        assert_eq!(state.find(2, 2), Some(&meta(2)));
        assert_eq!(state.next_sequence(), 7);
    }
}
