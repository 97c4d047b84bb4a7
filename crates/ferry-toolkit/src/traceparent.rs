//! W3C Trace Context `traceparent` values (<https://www.w3.org/TR/trace-context/>).
//!
//! A message carries the `traceparent` of the span that produced it. Handling a message starts
//! a child span: same trace id, a new span id, recorded on the handler's `tracing` span and
//! carried by every message the handler publishes. That is enough to stitch a flow together
//! across services; exporting to an OpenTelemetry collector is left to the service's subscriber.

use std::fmt;
use std::str::FromStr;

use rand::RngExt;

/// One `traceparent` value: version 00, a 16-byte trace id, an 8-byte parent (span) id, flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

/// The `sampled` trace flag.
const SAMPLED: u8 = 0x01;

impl TraceParent {
    /// A new trace: random trace and span ids, sampled.
    pub fn new_root() -> TraceParent {
        let mut rng = rand::rng();
        TraceParent {
            trace_id: nonzero(|| rng.random()),
            span_id: nonzero(|| rng.random()),
            flags: SAMPLED,
        }
    }

    /// A child span of this one: the same trace id and flags, a new span id.
    pub fn child(&self) -> TraceParent {
        let mut rng = rand::rng();
        TraceParent {
            trace_id: self.trace_id,
            span_id: nonzero(|| rng.random()),
            flags: self.flags,
        }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span (parent) id as 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    /// Whether the sampled flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

/// All-zero ids are invalid in Trace Context; the odds of drawing one are nil, but cheap to rule out.
fn nonzero<const N: usize>(mut draw: impl FnMut() -> [u8; N]) -> [u8; N] {
    loop {
        let id = draw();
        if id.iter().any(|b| *b != 0) {
            return id;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id(),
            self.span_id(),
            self.flags
        )
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

/// A `traceparent` string that does not follow the W3C format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a W3C traceparent")]
pub struct InvalidTraceParent;

impl FromStr for TraceParent {
    type Err = InvalidTraceParent;

    /// Parses version 00 strictly; a higher version is read by its first four fields, as the
    /// spec asks of parsers that meet a version they do not know.
    fn from_str(s: &str) -> Result<TraceParent, InvalidTraceParent> {
        let mut parts = s.split('-');
        let (Some(version), Some(trace), Some(span), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidTraceParent);
        };
        let version: [u8; 1] = unhex(version).ok_or(InvalidTraceParent)?;
        if version[0] == 0xff || (version[0] == 0 && parts.next().is_some()) {
            return Err(InvalidTraceParent);
        }
        let trace_id: [u8; 16] = unhex(trace).ok_or(InvalidTraceParent)?;
        let span_id: [u8; 8] = unhex(span).ok_or(InvalidTraceParent)?;
        let [flags] = unhex::<1>(flags).ok_or(InvalidTraceParent)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return Err(InvalidTraceParent);
        }
        Ok(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, valid: bool) {
        assert_eq!(input.parse::<TraceParent>().is_ok(), valid, "{input}");
    }

    #[test]
    fn parses_only_valid_traceparents() {
        check(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            true,
        );
        check(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            true,
        );
        check(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            true,
        );
        check(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            false,
        );
        check(
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            false,
        );
        check(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            false,
        );
        check(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            false,
        );
        check(
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            false,
        );
        check(
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            false,
        );
        check("garbage", false);
        check("", false);
    }

    #[test]
    fn round_trips_and_children_keep_the_trace() {
        let root = TraceParent::new_root();
        assert_eq!(root.to_string().parse::<TraceParent>().unwrap(), root);
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.span_id(), root.span_id());
        assert!(child.sampled());
    }
}
