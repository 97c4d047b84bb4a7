//! What a sign-up must satisfy. The producer checks a request before it queues it (422 for the
//! client); the consumer checks again, because anything may be put on a queue, and rejects the
//! task with the reason.

use argon2::password_hash::PasswordHash;

/// The longest name accepted, in characters.
const MAX_NAME: usize = 200;
/// The longest email accepted (RFC 5321's path limit, less the angle brackets).
const MAX_EMAIL: usize = 254;
/// The longest password accepted, in bytes: argon2 takes any length, but hashing megabytes on
/// request would be an easy way to burn the server's CPU.
const MAX_PASSWORD: usize = 1024;

/// A name: trimmed, not blank, at most 200 characters.
pub(crate) fn name(name: Option<&str>) -> Result<String, String> {
    let name = name.unwrap_or_default().trim();
    if name.is_empty() {
        return Err("name is required".into());
    }
    if name.chars().count() > MAX_NAME {
        return Err(format!("name is longer than {MAX_NAME} characters"));
    }
    Ok(name.to_owned())
}

/// An email: trimmed and lower-cased (emails are unique regardless of case), of the form
/// `local@domain.tld` with a dot-separated domain of letters, digits and inner hyphens.
pub(crate) fn email(email: Option<&str>) -> Result<String, String> {
    let email = email.unwrap_or_default().trim().to_lowercase();
    if email.is_empty() {
        return Err("email is required".into());
    }
    let invalid = || Err(format!("email {email:?} is not a valid address"));
    if email.len() > MAX_EMAIL {
        return invalid();
    }
    let Some((local, domain)) = email.split_once('@') else {
        return invalid();
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(email)
    } else {
        invalid()
    }
}

/// A password: not empty, at most 1024 bytes. Kept as given (spaces count).
pub(crate) fn password(password: Option<&str>) -> Result<&str, String> {
    match password {
        None | Some("") => Err("password is required".into()),
        Some(p) if p.len() > MAX_PASSWORD => {
            Err(format!("password is longer than {MAX_PASSWORD} bytes"))
        }
        Some(p) => Ok(p),
    }
}

/// Whether `hash` is an argon2 hash in PHC string format (and so not a plain password).
pub(crate) fn is_argon2_hash(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_email(input: &str, expected: Option<&str>) {
        assert_eq!(email(Some(input)).ok().as_deref(), expected, "{input:?}");
    }

    #[test]
    fn emails() {
        check_email("ada@example.com", Some("ada@example.com"));
        check_email(
            "  Ada.Lovelace+x@Mail.Example.org ",
            Some("ada.lovelace+x@mail.example.org"),
        );
        check_email("o'brien@ex-ample.io", Some("o'brien@ex-ample.io"));
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "a b@example.com",
            "ada@exa mple.com",
            "ada@-example.com",
            "ada@example-.com",
            ".ada@example.com",
            "ada..x@example.com",
            "ada@example..com",
            "ada@example.com.",
            "<ada>@example.com",
        ] {
            check_email(bad, None);
        }
        check_email(&format!("{}@example.com", "a".repeat(65)), None);
    }

    #[test]
    fn names_and_passwords() {
        assert_eq!(name(Some("  Ada ")), Ok("Ada".to_owned()));
        assert!(name(Some("   ")).is_err());
        assert!(name(None).is_err());
        assert!(name(Some(&"x".repeat(201))).is_err());
        assert_eq!(password(Some(" secret ")), Ok(" secret "));
        assert!(password(Some("")).is_err());
        assert!(password(None).is_err());
        assert!(password(Some(&"x".repeat(1025))).is_err());
    }

    #[test]
    fn only_argon2_hashes_pass_for_hashes() {
        assert!(is_argon2_hash(
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
             Jz0vD0ZRkMgQ2HSuHLNNw4PqYrdZ7M3kI9zk0KJWYbM"
        ));
        assert!(!is_argon2_hash("hunter2"));
        assert!(!is_argon2_hash(
            "$pbkdf2-sha256$i=1000$c29tZXNhbHQ$aGFzaGhhc2hoYXNo"
        ));
    }
}
