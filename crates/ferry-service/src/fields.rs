//! Bounds on what a command may carry, so that a 2xx is only ever given for an event that fits
//! on the topic.
//!
//! A command's events carry its fields, and a Kafka topic refuses a record batch over its
//! `max.message.bytes` (1 MiB by default) for good. A service that accepted a 1.5 MB course
//! name answered 201 for an event that could never be delivered. So every text field has a
//! length that makes sense for what it is (checked here, answered 422 `invalid_field`), and every
//! request body has a size limit ([`MAX_BODY_BYTES`], answered 413 `payload_too_large`) well
//! under the topic's limit: a body is at most a quarter of it, and an event is its fields plus
//! an envelope of a few hundred bytes. What still cannot be published (a topic configured
//! smaller) is parked by the outbox relay instead of retried forever.

use crate::ApiError;

/// The largest request body a service reads: a quarter of Kafka's default `max.message.bytes`
/// (1 MiB), so that the events made from any accepted body fit with room to spare. JSON may
/// escape a character as 12 bytes (`\ud83d\ude00`), so this still admits the longest text
/// field ([`POST_TEXT`] characters) however it is written.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// How much of an oversized body is read and thrown away before the 413 is sent.
const DRAIN_LIMIT: u64 = 8 * 1024 * 1024;
/// How long that may take.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Answers 413 `payload_too_large` to a request whose `Content-Length` is over
/// [`MAX_BODY_BYTES`], without running its handler. The body is read and discarded first (up to
/// [`DRAIN_LIMIT`] bytes, for at most [`DRAIN_TIME`]): a client still writing its body when the
/// server answers and closes would otherwise get a broken pipe instead of the 413 (nginx's
/// "lingering close" for the same reason). Larger bodies are cut off without reading.
pub async fn refuse_oversized_body(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use futures::StreamExt;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(length) = declared.filter(|&n| n > MAX_BODY_BYTES as u64) else {
        return next.run(request).await;
    };
    if length <= DRAIN_LIMIT {
        let mut body = request.into_body().into_data_stream();
        let drain = async { while let Some(Ok(_)) = body.next().await {} };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    }
    ApiError::new(
        crate::ErrorCode::PayloadTooLarge,
        format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
    )
    .into_response()
}

/// Names of people and things (a course, a customer).
pub const NAME: usize = 200;
/// Short codes (a course code).
pub const CODE: usize = 50;
/// Identifiers chosen by a client (an order or customer id) and user names.
pub const ID: usize = 100;
/// A post's text.
pub const POST_TEXT: usize = 10_000;
/// A comment's text or an invoice line's description.
pub const SHORT_TEXT: usize = 2_000;
/// Items in one list (an invoice's lines).
pub const LIST_ITEMS: usize = 100;

/// A required text field: trimmed, not blank, at most `max` characters.
pub fn required_text(field: &str, value: Option<String>, max: usize) -> Result<String, ApiError> {
    match optional_text(field, value, max)? {
        Some(value) => Ok(value),
        None => Err(ApiError::invalid_field(format!("{field} is required"))),
    }
}

/// An optional text field: trimmed, `None` when absent or blank, at most `max` characters.
pub fn optional_text(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    check_length(field, value, max)?;
    Ok(Some(value.to_owned()))
}

/// Refuses `value` if it is longer than `max` characters (422, naming the field and the bound).
pub fn check_length(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    // Bytes bound characters from above: only count when it could matter.
    if value.len() > max && value.chars().count() > max {
        return Err(ApiError::invalid_field(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(value: Option<&str>, max: usize, expected: Result<Option<&str>, &str>) {
        let got = optional_text("name", value.map(str::to_owned), max);
        match (got, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got.as_deref(), want),
            (Err(e), Err(want)) => {
                assert_eq!(e.code, crate::ErrorCode::InvalidField);
                assert!(e.message.contains(want), "{}", e.message);
            }
            (got, want) => panic!("{value:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn text_fields_are_trimmed_and_bounded_in_characters() {
        check(None, 5, Ok(None));
        check(Some("   "), 5, Ok(None));
        check(Some(" abc "), 5, Ok(Some("abc")));
        check(Some("abcde"), 5, Ok(Some("abcde")));
        check(Some("abcdef"), 5, Err("longer than 5 characters"));
        // Five characters of four bytes each are five characters.
        check(Some("😀😀😀😀😀"), 5, Ok(Some("😀😀😀😀😀")));
        check(Some("😀😀😀😀😀😀"), 5, Err("longer than 5"));
    }

    #[test]
    fn a_required_field_names_itself() {
        let e = required_text("code", Some(" ".into()), 5).unwrap_err();
        assert_eq!(e.message, "code is required");
    }
}
