//! Users: the sign-up queue. The producer sends plain work items to `tasks` ([`Task`]) and
//! sign-up requests to `user_tasks` ([`UserRequested`]); the consumer stores the users.
//!
//! A sign-up request never carries a password, only its argon2 hash (PHC string format,
//! `$argon2id$...`). Requests are keyed by the lower-cased email, so two requests for one email
//! reach the consumer in order and the first one wins.

use ferry_toolkit::Message;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The queue (topic) of plain work items.
pub const TASKS: &str = "tasks";
/// The queue (topic) of sign-up requests.
pub const USER_TASKS: &str = "user_tasks";

/// A work item: text for the consumer to act on (it logs it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// The task id (a UUID the producer assigns).
    pub id: String,
    /// What to do, e.g. "something to do".
    pub message: String,
}

impl Message for Task {
    ferry_toolkit::schema_from_schemars!();
    const TYPE: &'static str = "Task";
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// Someone asked to sign up. The consumer creates the user, or rejects the request (the email
/// is taken) and records why under `task_id`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRequested {
    /// The id the producer answered with, to look the outcome up by.
    pub task_id: String,
    /// Display name.
    pub name: String,
    /// The email, trimmed and lower-cased.
    pub email: String,
    /// The argon2 hash of the password, in PHC string format.
    pub password_hash: String,
}

impl std::fmt::Debug for UserRequested {
    /// Leaves the hash out: it is a secret too.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRequested")
            .field("task_id", &self.task_id)
            .field("name", &self.name)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

impl Message for UserRequested {
    ferry_toolkit::schema_from_schemars!();
    const TYPE: &'static str = "UserRequested";
    // A hash is not the password, but it is what an offline guesser needs: it stays between
    // the two users services.
    const SENSITIVE_FIELDS: &'static [&'static str] = &["passwordHash"];
    fn key(&self) -> String {
        self.email.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_and_debug() {
        let m = UserRequested {
            task_id: "t1".into(),
            name: "Ada".into(),
            email: "ada@example.com".into(),
            password_hash: "$argon2id$v=19$secret".into(),
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"taskId": "t1", "name": "Ada", "email": "ada@example.com",
                "passwordHash": "$argon2id$v=19$secret"})
        );
        assert!(!format!("{m:?}").contains("argon2"));
        assert_eq!(m.key(), "ada@example.com");
    }
}
