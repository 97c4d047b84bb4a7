//! Redaction: secrets stay in the service that owns them.
//!
//! A payload is shown to people (the dashboard's event list, traces and live stream) or written
//! to a log only after [`json`] (or, for a payload that is not JSON, [`text`]) replaced every
//! secret in it with [`REDACTED`]. A value is a secret when
//! - its field is declared sensitive by the message's contract ([`crate::Message::SENSITIVE_FIELDS`]);
//! - its field's name says so, whatever the contract: it contains `password`, `passwd`,
//!   `secret`, `token`, `credential`, `apikey` or `privatekey`, compared case-insensitively and
//!   ignoring `_`, `-` and `.` (so `passwordHash`, `client_secret`, `Refresh-Token`, `API_KEY`);
//! - it is a password hash (`$argon2…`, `$scrypt$…`, `$pbkdf2…`, bcrypt's `$2a$`/`$2b$`/`$2y$`),
//!   in whatever field, even inside a longer string: a hash is a secret even when a contract
//!   forgot to say so. A string that holds JSON text loses its `"password": "…"` values too.
//!
//! The whole value of a sensitive field goes, objects and arrays included; the field itself
//! stays, so a reader still sees that it was there. Redaction is total (it never fails) and
//! changes nothing else: field order, numbers and other strings are kept as they were.

use std::borrow::Cow;

use serde_json::Value;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Words that make a field name sensitive, lower-case, without separators.
const SENSITIVE_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "apikey",
    "privatekey",
];

/// How password hashes in well-known string formats begin (PHC strings and bcrypt's modular
/// crypt format).
const HASH_PREFIXES: &[&str] = &["$argon2", "$scrypt$", "$pbkdf2", "$2a$", "$2b$", "$2y$"];

/// Whether a field called `name` holds a secret by its name alone.
pub fn is_sensitive_name(name: &str) -> bool {
    let folded: String = name
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | '.'))
        .flat_map(char::to_lowercase)
        .collect();
    SENSITIVE_WORDS.iter().any(|w| folded.contains(w))
}

/// Whether `s` is (or begins with) a password hash in a well-known format.
pub fn looks_like_password_hash(s: &str) -> bool {
    HASH_PREFIXES.iter().any(|p| s.starts_with(p))
}

/// Replaces every secret in `value`, at any depth, with [`REDACTED`]: the values of fields named
/// in `declared` (the contract's sensitive fields, as they are spelled on the wire, compared
/// case-insensitively), of fields whose name is sensitive ([`is_sensitive_name`]), and within
/// strings what [`text`] finds. Answers how many values it changed.
pub fn json(value: &mut Value, declared: &[&str]) -> usize {
    match value {
        Value::Object(fields) => fields
            .iter_mut()
            .map(|(name, v)| {
                let sensitive = declared.iter().any(|d| d.eq_ignore_ascii_case(name))
                    || is_sensitive_name(name);
                if sensitive {
                    let was_redacted = v.as_str() == Some(REDACTED);
                    *v = Value::String(REDACTED.to_owned());
                    usize::from(!was_redacted)
                } else {
                    json(v, declared)
                }
            })
            .sum(),
        Value::Array(items) => items.iter_mut().map(|v| json(v, declared)).sum(),
        // A string may hold a hash, or JSON text of its own (a payload quoted in an error).
        Value::String(s) => match text(s) {
            Cow::Owned(redacted) => {
                *s = redacted;
                1
            }
            Cow::Borrowed(_) => 0,
        },
        _ => 0,
    }
}

/// Replaces the secrets in text that is not (whole) JSON: a payload that did not parse, an
/// error message that quotes one. Two kinds are found: password hashes (to the end of the
/// hash), and the string value after a quoted sensitive field name and a colon
/// (`"password": "…"`, as in broken or cut-off JSON).
///
/// This is a scan for those shapes, not a parser, so it is a last line of defence: contracts
/// and [`json`] come first. Hand-written rather than a regular expression so the toolkit takes
/// no regex engine for two fixed patterns.
pub fn text(input: &str) -> Cow<'_, str> {
    match quoted_secrets(input) {
        Cow::Borrowed(_) => hashes(input),
        Cow::Owned(pairs_done) => Cow::Owned(hashes(&pairs_done).into_owned()),
    }
}

/// `"<sensitive name>" : "<value>"` with the value replaced.
fn quoted_secrets(input: &str) -> Cow<'_, str> {
    let mut out = String::new();
    // How much of `input` is already in `out` (or dropped as a secret).
    let mut done = 0;
    let mut i = 0;
    while let Some(open) = input[i..].find('"').map(|at| i + at) {
        let Some(close) = closing_quote(input, open + 1) else {
            break;
        };
        i = close + 1;
        if !is_sensitive_name(&input[open + 1..close]) {
            continue;
        }
        let value = input[i..]
            .trim_start()
            .strip_prefix(':')
            .map(str::trim_start)
            .filter(|rest| rest.starts_with('"'));
        if let Some(value) = value {
            let value_start = input.len() - value.len() + 1;
            let value_end = closing_quote(input, value_start).unwrap_or(input.len());
            out.push_str(&input[done..value_start]);
            out.push_str(REDACTED);
            done = value_end;
            i = value_end;
        }
    }
    if done == 0 {
        return Cow::Borrowed(input);
    }
    out.push_str(&input[done..]);
    Cow::Owned(out)
}

/// Password hashes replaced, each to its last character.
fn hashes(input: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut done = 0;
    let mut i = 0;
    while let Some(dollar) = input[i..].find('$').map(|at| i + at) {
        if !looks_like_password_hash(&input[dollar..]) {
            i = dollar + 1;
            continue;
        }
        let end = input[dollar..]
            .find(|c: char| !is_hash_char(c))
            .map_or(input.len(), |len| dollar + len);
        // A hash ends in its base64 digest: a comma or the like after it belongs to the text.
        let end = dollar
            + input[dollar..end]
                .trim_end_matches([',', '=', '$', '-'])
                .len();
        out.push_str(&input[done..dollar]);
        out.push_str(REDACTED);
        done = end;
        i = end;
    }
    if done == 0 {
        return Cow::Borrowed(input);
    }
    out.push_str(&input[done..]);
    Cow::Owned(out)
}

/// Characters of a PHC string or a bcrypt hash (base64 with `.`/`/`, parameters with `=`/`,`).
fn is_hash_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "$=,.+/-".contains(c)
}

/// The index of the quote closing a JSON-like string whose content starts at `from`.
fn closing_quote(input: &str, from: usize) -> Option<usize> {
    let bytes = input.as_bytes();
    let mut j = from;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 2,
            b'"' => return Some(j),
            _ => j += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                        Jz0vD0ZRkMgQ2HSuHLNNw4PqYrdZ7M3kI9zk0KJWYbM";

    #[track_caller]
    fn check_json(declared: &[&str], mut input: Value, expected: Value, replaced: usize) {
        assert_eq!(json(&mut input, declared), replaced, "{input}");
        assert_eq!(input, expected);
    }

    #[test]
    fn declared_fields_are_redacted_at_any_depth() {
        check_json(
            &["pin"],
            json!({"name": "Ada", "pin": "1234", "card": {"PIN": 42, "last4": "4242"}}),
            json!({"name": "Ada", "pin": REDACTED, "card": {"PIN": REDACTED, "last4": "4242"}}),
            2,
        );
        check_json(
            &["pin"],
            json!([{"pin": {"nested": true}}, {"pins": [1, 2]}]),
            json!([{"pin": REDACTED}, {"pins": [1, 2]}]),
            1,
        );
    }

    #[test]
    fn fields_named_password_secret_or_token_are_redacted_whatever_the_contract() {
        check_json(
            &[],
            json!({
                "taskId": "t1",
                "passwordHash": "whatever",
                "PASSWORD": "hunter2",
                "user": {"client_secret": {"a": 1}, "Refresh-Token": ["x", "y"]},
                "auth": [{"apiKey": "k"}, {"private.key": "p"}, {"passwd": null}],
                "tokens": 3,
                "credentials": true,
                "email": "ada@example.com"
            }),
            json!({
                "taskId": "t1",
                "passwordHash": REDACTED,
                "PASSWORD": REDACTED,
                "user": {"client_secret": REDACTED, "Refresh-Token": REDACTED},
                "auth": [{"apiKey": REDACTED}, {"private.key": REDACTED}, {"passwd": REDACTED}],
                "tokens": REDACTED,
                "credentials": REDACTED,
                "email": "ada@example.com"
            }),
            9,
        );
    }

    #[test]
    fn password_hashes_are_redacted_in_any_field() {
        check_json(
            &[],
            json!({"h": HASH, "list": ["$2b$12$abcdefghijklmnopqrstuv", "$5 off", "fine"]}),
            json!({"h": REDACTED, "list": [REDACTED, "$5 off", "fine"]}),
            2,
        );
        check_json(
            &[],
            json!({"error": format!("bad {HASH}!"), "quoted": r#"{"password":"hunter2"}"#}),
            json!({"error": "bad [redacted]!", "quoted": r#"{"password":"[redacted]"}"#}),
            2,
        );
    }

    #[test]
    fn names_that_say_nothing_are_kept() {
        for name in [
            "taskId",
            "name",
            "email",
            "pass",
            "key",
            "hash",
            "tok",
            "secretary",
        ] {
            let sensitive = is_sensitive_name(name);
            // "secretary" contains "secret": better one field too many than one too few.
            assert_eq!(sensitive, name == "secretary", "{name}");
        }
        check_json(
            &[],
            json!({"a": 1, "b": [true, null]}),
            json!({"a": 1, "b": [true, null]}),
            0,
        );
        // Redacting twice changes nothing more.
        check_json(
            &[],
            json!({"token": REDACTED}),
            json!({"token": REDACTED}),
            0,
        );
    }

    #[track_caller]
    fn check_text(input: &str, expected: &str) {
        assert_eq!(text(input), expected, "{input}");
    }

    #[test]
    fn text_loses_hashes_and_quoted_secret_values() {
        check_text("nothing here", "nothing here");
        check_text(
            &format!("bad hash {HASH}, rejected"),
            "bad hash [redacted], rejected",
        );
        check_text(
            &format!(r#"{{"name":"Ada","passwordHash":"{HASH}","email":"a@b.c""#),
            r#"{"name":"Ada","passwordHash":"[redacted]","email":"a@b.c""#,
        );
        check_text(
            r#"{"Password" : "hun\"ter2", "token": 5, "x": "y"}"#,
            r#"{"Password" : "[redacted]", "token": 5, "x": "y"}"#,
        );
        // Cut off inside the secret: everything after the name goes.
        check_text(r#"{"secret": "abc"#, r#"{"secret": "[redacted]"#);
        check_text(r#"unterminated "quote"#, r#"unterminated "quote"#);
        check_text(
            &format!(r#"{{"h":"{HASH}"}} and "{HASH}""#),
            r#"{"h":"[redacted]"} and "[redacted]""#,
        );
        check_text("$2y$10$abc/def.ghi and $", "[redacted] and $");
    }
}
