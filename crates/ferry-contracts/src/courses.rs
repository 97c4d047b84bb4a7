//! Courses: the producer publishes every change of a course to topic `test` as
//! `{id, name, code, active, method}`, keyed by course id so one course's changes stay in order.

use ferry_toolkit::Message;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The topic (the original system's name for it).
pub const TOPIC: &str = "test";

/// What happened to the course.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Method {
    /// Created.
    #[serde(rename = "POST")]
    Post,
    /// Changed.
    #[serde(rename = "PUT")]
    Put,
    /// Deleted.
    #[serde(rename = "DELETE")]
    Delete,
}

/// A course's new state and how it got there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CourseMessage {
    /// The course id (a UUID the producer assigns).
    pub id: String,
    /// Display name. The bounds are the producer's (`ferry_service::fields::NAME`), so a
    /// producer elsewhere that skips them has its message dead-lettered, not stored.
    #[schemars(length(min = 1, max = 200))]
    pub name: String,
    /// Unique course code (bounds: `ferry_service::fields::CODE`).
    #[schemars(length(min = 1, max = 50))]
    pub code: String,
    /// Whether the course is offered.
    pub active: bool,
    /// POST, PUT or DELETE.
    pub method: Method,
}

impl Message for CourseMessage {
    ferry_toolkit::schema_from_schemars!();
    const TYPE: &'static str = "CourseMessage";
    fn key(&self) -> String {
        self.id.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_matches_the_original() {
        let m = CourseMessage {
            id: "1".into(),
            name: "Rust".into(),
            code: "R1".into(),
            active: true,
            method: Method::Put,
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"id": "1", "name": "Rust", "code": "R1", "active": true, "method": "PUT"})
        );
    }
}
