//! Property tests: `validate_batches` never panics and rejects every damaged CRC-covered byte.

mod common;

use common::batch_sized;
use ferry_log::{Error, validate_batches};
use proptest::prelude::*;

/// One to three real batches back to back, with the byte ranges each occupies.
fn payload() -> impl Strategy<Value = (Vec<u8>, Vec<std::ops::Range<usize>>)> {
    prop::collection::vec((1usize..5, 0usize..40, any::<i64>()), 1..4).prop_map(|specs| {
        let mut bytes = Vec::new();
        let mut ranges = Vec::new();
        for (records, value_len, ts) in specs {
            let batch = batch_sized(records, value_len, ts);
            ranges.push(bytes.len()..bytes.len() + batch.len());
            bytes.extend(batch);
        }
        (bytes, ranges)
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = validate_batches(&bytes);
    }

    #[test]
    fn bytes_with_a_plausible_header_never_panic(
        mut bytes in prop::collection::vec(any::<u8>(), 61..300),
        length in any::<i32>(),
    ) {
        // Make the magic and length plausible so that the deeper checks run too.
        bytes[16] = 2;
        bytes[8..12].copy_from_slice(&length.to_be_bytes());
        let _ = validate_batches(&bytes);
    }

    #[test]
    fn valid_payloads_are_accepted((bytes, ranges) in payload()) {
        let headers = validate_batches(&bytes).unwrap();
        prop_assert_eq!(headers.len(), ranges.len());
    }

    #[test]
    fn every_damaged_byte_outside_offset_and_epoch_is_rejected(
        (bytes, ranges) in payload(),
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut damaged = bytes.clone();
        let at = position.index(damaged.len());
        damaged[at] ^= flip;
        let range = ranges.iter().find(|r| r.contains(&at)).unwrap();
        let within = at - range.start;
        let result = validate_batches(&damaged);
        if within < 8 || (12..16).contains(&within) {
            // baseOffset and partitionLeaderEpoch are not covered by the CRC: the broker rewrites them.
            prop_assert!(result.is_ok(), "{:?}", result);
        } else {
            // Bytes 21.. are CRC-covered; the length, magic and CRC fields themselves fail other checks.
            prop_assert!(result.is_err(), "byte {} of a batch flipped by {:#x} was accepted", within, flip);
            if within >= 61 {
                // Record bytes: nothing but the CRC can notice.
                prop_assert!(matches!(result, Err(Error::CorruptBatch(_))), "{:?}", result);
            }
        }
    }

    #[test]
    fn truncated_payloads_are_rejected((bytes, ranges) in payload(), cut in any::<prop::sample::Index>()) {
        let len = cut.index(bytes.len());
        // A cut between two batches leaves a valid, shorter payload.
        prop_assume!(ranges.iter().all(|r| r.end != len));
        prop_assert!(validate_batches(&bytes[..len]).is_err());
    }
}
