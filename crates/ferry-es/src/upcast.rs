//! Upcasting: reading events stored under an older schema version.
//!
//! Events are immutable, so a changed payload shape is handled at read time: each stored event
//! carries the schema version it was written with, and an [`Upcaster`] turns a payload of
//! version `n` of one event type into version `n + 1`. On every read (loading an aggregate,
//! projections, replay) the store applies the chain until no upcaster matches, then decodes.
//! Old rows are never rewritten, so a rollback of the code still reads them.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};

type UpcastFn = dyn Fn(Value) -> std::result::Result<Value, String> + Send + Sync;

/// Turns the payload of one event type from schema version `from` into version `from + 1`.
#[derive(Clone)]
pub struct Upcaster {
    event_type: String,
    from: u32,
    upcast: Arc<UpcastFn>,
}

impl Upcaster {
    /// An upcaster for `event_type` payloads of version `from`. Return `Err` with a reason for
    /// a payload that cannot be converted; reading that event then fails with
    /// [`Error::Upcast`].
    ///
    /// ```
    /// // v1 of PostCreated had `text`; v2 calls it `message`.
    /// let upcaster = ferry_es::Upcaster::new("PostCreated", 1, |mut payload| {
    ///     let text = payload
    ///         .as_object_mut()
    ///         .and_then(|p| p.remove("text"))
    ///         .ok_or("no text field")?;
    ///     payload["message"] = text;
    ///     Ok(payload)
    /// });
    /// # let _ = upcaster;
    /// ```
    pub fn new<F>(event_type: impl Into<String>, from: u32, upcast: F) -> Upcaster
    where
        F: Fn(Value) -> std::result::Result<Value, String> + Send + Sync + 'static,
    {
        Upcaster {
            event_type: event_type.into(),
            from,
            upcast: Arc::new(upcast),
        }
    }
}

impl fmt::Debug for Upcaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Upcaster({} v{} -> v{})",
            self.event_type,
            self.from,
            self.from + 1
        )
    }
}

/// The upcasters of a store, by event type and source version.
#[derive(Clone, Default)]
pub struct Upcasters {
    by_key: HashMap<(String, u32), Upcaster>,
}

impl Upcasters {
    /// No upcasters: every payload is decoded as stored.
    pub fn new() -> Upcasters {
        Upcasters::default()
    }

    /// Adds an upcaster, replacing one registered for the same type and version.
    pub fn add(&mut self, upcaster: Upcaster) {
        self.by_key
            .insert((upcaster.event_type.clone(), upcaster.from), upcaster);
    }

    /// Upcasts `payload`, stored as `event_type` version `version`, as far as the registered
    /// chain goes. Returns the payload and its schema version after upcasting.
    pub fn upcast(&self, event_type: &str, version: u32, payload: Value) -> Result<(Value, u32)> {
        let mut payload = payload;
        let mut version = version;
        if self.by_key.is_empty() {
            return Ok((payload, version));
        }
        // The key is owned, so build it once and bump only the version.
        let mut key = (event_type.to_owned(), version);
        while let Some(upcaster) = self.by_key.get(&key) {
            payload = (upcaster.upcast)(payload).map_err(|reason| Error::Upcast {
                event_type: event_type.to_owned(),
                schema_version: version,
                reason,
            })?;
            version += 1;
            key.1 = version;
        }
        Ok((payload, version))
    }
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_key.values()).finish()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chain() -> Upcasters {
        let mut upcasters = Upcasters::new();
        // v1 -> v2 renames `text` to `message`; v2 -> v3 adds `tags`.
        upcasters.add(Upcaster::new("Created", 1, |mut p| {
            let text = p
                .as_object_mut()
                .and_then(|o| o.remove("text"))
                .ok_or("no text")?;
            p["message"] = text;
            Ok(p)
        }));
        upcasters.add(Upcaster::new("Created", 2, |mut p| {
            p["tags"] = json!([]);
            Ok(p)
        }));
        upcasters
    }

    #[track_caller]
    fn check(event_type: &str, version: u32, stored: Value, expected: Result<(Value, u32), &str>) {
        let got = chain()
            .upcast(event_type, version, stored)
            .map_err(|e| e.to_string());
        assert_eq!(
            got.as_ref().map_err(String::as_str),
            expected.as_ref().map_err(|e| *e)
        );
    }

    #[test]
    fn upcasting_applies_the_chain_from_the_stored_version() {
        check(
            "Created",
            1,
            json!({"text": "hi"}),
            Ok((json!({"message": "hi", "tags": []}), 3)),
        );
        check(
            "Created",
            2,
            json!({"message": "hi"}),
            Ok((json!({"message": "hi", "tags": []}), 3)),
        );
        check(
            "Created",
            3,
            json!({"message": "hi"}),
            Ok((json!({"message": "hi"}), 3)),
        );
        // Other types and versions nobody registered pass through untouched.
        check(
            "Liked",
            1,
            json!({"text": "x"}),
            Ok((json!({"text": "x"}), 1)),
        );
        check(
            "Created",
            1,
            json!({"message": "already"}),
            Err("cannot upcast Created from v1: no text"),
        );
    }
}
