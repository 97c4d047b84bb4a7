//! The messages Ferry's reference services exchange, one module per system: types and serde
//! only, no I/O. A message's field names, type name and topic are its wire contract: they keep
//! the names of the system each service replaces, so that system's consumers could read them.
//!
//! Each message type declares the fields that hold secrets
//! ([`ferry_toolkit::Message::SENSITIVE_FIELDS`]); [`sensitive_fields`] looks them up by type
//! name, for whatever shows payloads it did not decode itself (the dashboard).
//!
//! **Architecture invariant:** services depend on this crate, never on each other.

pub mod billing;
pub mod courses;
pub mod orders;
pub mod users;

use ferry_toolkit::Message;

/// Every message type of this crate: its type name and its declared sensitive fields.
macro_rules! contracts {
    ($($ty:path),* $(,)?) => {
        /// `(type name, sensitive fields)` of every message type in this crate.
        pub const MESSAGE_TYPES: &[(&str, &[&str])] =
            &[$((<$ty as Message>::TYPE, <$ty as Message>::SENSITIVE_FIELDS)),*];
    };
}

// A new message type goes here too, so whoever reads payloads by type name knows its secrets.
contracts![
    billing::GenerateInvoice,
    billing::InvoiceGenerated,
    billing::InvoiceRejected,
    billing::CalculateScore,
    billing::ScoreCalculated,
    courses::CourseMessage,
    orders::CustomerCreated,
    orders::CreditLimitChanged,
    orders::OrderCreated,
    orders::OrderValidated,
    orders::OrderShipped,
    orders::OrderCancelled,
    users::Task,
    users::UserRequested,
];

/// The sensitive fields of the message type called `type_name` (on the wire, `ce_type`);
/// none for a type this crate does not define.
pub fn sensitive_fields(type_name: &str) -> &'static [&'static str] {
    MESSAGE_TYPES
        .iter()
        .find(|(name, _)| *name == type_name)
        .map_or(&[], |(_, fields)| fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_fields_are_found_by_type_name() {
        assert_eq!(sensitive_fields("UserRequested"), ["passwordHash"]);
        assert!(sensitive_fields("Task").is_empty());
        assert!(sensitive_fields("NoSuchType").is_empty());
        let mut names: Vec<&str> = MESSAGE_TYPES.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MESSAGE_TYPES.len(), "type names are unique");
    }
}
