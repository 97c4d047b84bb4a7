//! Given/when/then tests for aggregates, without a database (after cqrs-es's
//! `TestFramework`): given past events, when a command, then these events or this error.
//!
//! ```ignore
//! use ferry_es::testing::given;
//!
//! given::<Post>([created("alice", "hello")])
//!     .when(PostCommand::DeletePost { username: "bob".into() })
//!     .then_expect_error(PostError::NotPostAuthor);
//! ```
//!
//! Every assertion is `#[track_caller]`, so a failure points at the test's line.

use std::fmt::Debug;

use crate::aggregate::Aggregate;

/// The past: the aggregate built from events.
pub struct Given<A: Aggregate> {
    state: A,
}

/// Starts a test from these past events.
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let mut state = A::default();
    for event in events {
        state.evolve(&event);
    }
    Given { state }
}

/// Starts a test from an aggregate that has no events yet.
pub fn given_no_previous_events<A: Aggregate>() -> Given<A> {
    given(std::iter::empty())
}

impl<A: Aggregate> Given<A> {
    /// Decides `command` against the state.
    pub fn when(self, command: A::Command) -> Then<A> {
        let result = self.state.decide(&command);
        Then {
            state: self.state,
            result,
        }
    }

    /// The state built from the given events.
    pub fn state(&self) -> &A {
        &self.state
    }
}

impl<A: Aggregate> Debug for Given<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Given")
            .field("aggregate", &A::TYPE)
            .finish_non_exhaustive()
    }
}

/// The outcome of a command, to assert on.
pub struct Then<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Debug for Then<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Then")
            .field("aggregate", &A::TYPE)
            .field("accepted", &self.result.is_ok())
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> Then<A> {
    /// Asserts the command was accepted with exactly these events. Returns the state after
    /// them, for further checks.
    #[track_caller]
    pub fn then_expect_events(self, expected: impl IntoIterator<Item = A::Event>) -> A
    where
        A::Event: PartialEq + Debug,
    {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "the command produced other events");
                let mut state = self.state;
                for event in &events {
                    state.evolve(event);
                }
                state
            }
            Err(e) => panic!("expected events {expected:?}, the command was refused: {e}"),
        }
    }

    /// Asserts the command was refused with exactly this error.
    #[track_caller]
    pub fn then_expect_error(self, expected: A::Error)
    where
        A::Error: PartialEq,
        A::Event: Debug,
    {
        match self.result {
            Ok(events) => panic!("expected the error \"{expected}\", got events {events:?}"),
            Err(e) => assert!(
                e == expected,
                "expected the error \"{expected}\", got \"{e}\""
            ),
        }
    }

    /// Asserts the command was refused with an error whose message is `expected`.
    #[track_caller]
    pub fn then_expect_error_message(self, expected: &str)
    where
        A::Event: Debug,
    {
        match self.result {
            Ok(events) => panic!("expected the error \"{expected}\", got events {events:?}"),
            Err(e) => assert_eq!(e.to_string(), expected),
        }
    }

    /// The raw outcome, for checks the helpers do not cover.
    pub fn into_result(self) -> Result<Vec<A::Event>, A::Error> {
        self.result
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::Event;

    /// A counter that refuses to go below zero.
    #[derive(Default, Serialize, Deserialize)]
    struct Counter(u32);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Counted {
        Added(u32),
        Removed(u32),
    }

    impl Event for Counted {
        fn event_type(&self) -> &'static str {
            match self {
                Counted::Added(_) => "Added",
                Counted::Removed(_) => "Removed",
            }
        }
    }

    #[derive(Debug, PartialEq, thiserror::Error)]
    #[error("only {0} left")]
    struct TooFew(u32);

    impl Aggregate for Counter {
        const TYPE: &'static str = "Counter";
        type Command = i32;
        type Event = Counted;
        type Error = TooFew;

        fn decide(&self, delta: &i32) -> Result<Vec<Counted>, TooFew> {
            match u32::try_from(*delta) {
                Ok(0) => Ok(vec![]),
                Ok(n) => Ok(vec![Counted::Added(n)]),
                Err(_) if delta.unsigned_abs() > self.0 => Err(TooFew(self.0)),
                Err(_) => Ok(vec![Counted::Removed(delta.unsigned_abs())]),
            }
        }

        fn evolve(&mut self, event: &Counted) {
            match event {
                Counted::Added(n) => self.0 += n,
                Counted::Removed(n) => self.0 -= n,
            }
        }
    }

    #[test]
    fn given_when_then_checks_events_errors_and_state() {
        let state = given::<Counter>([Counted::Added(2)])
            .when(-1)
            .then_expect_events([Counted::Removed(1)]);
        assert_eq!(state.0, 1);
        given::<Counter>([Counted::Added(2)])
            .when(-3)
            .then_expect_error(TooFew(2));
        given_no_previous_events::<Counter>()
            .when(-1)
            .then_expect_error_message("only 0 left");
        given_no_previous_events::<Counter>()
            .when(0)
            .then_expect_events([]);
    }

    #[test]
    #[should_panic(expected = "the command was refused: only 0 left")]
    fn then_expect_events_fails_on_a_refusal() {
        given_no_previous_events::<Counter>()
            .when(-1)
            .then_expect_events([Counted::Added(1)]);
    }

    #[test]
    fn default_payload_is_the_variant_content_and_round_trips() {
        let event = Counted::Added(7);
        let payload = event.to_payload().unwrap();
        assert_eq!(payload, serde_json::json!(7));
        assert_eq!(Counted::from_payload("Added", payload).unwrap(), event);
        assert!(Counted::from_payload("Nope", serde_json::json!(7)).is_err());
    }
}
