//! Which failed reads are worth another try, and how long to wait before it.
//!
//! The loader opens its shard stores with object_store's own retries off (see
//! [`shard_storage_options`]), so every failure reaches this layer, where it is classified:
//!
//! | what | class | retried | effect |
//! |---|---|---|---|
//! | 503 SlowDown, 429 | [`Class::Throttled`] | yes, longer backoff | halves the concurrency limit |
//! | other 5xx, 408, transport errors, a body cut short or reset, a stall ([`Error::Timeout`]) | [`Class::Transient`] | yes | — |
//! | a changed or deleted shard, 4xx, bad credentials | [`Class::Fatal`] | no | error naming the shard |
//!
//! Backoff is exponential with full jitter (AWS's recommendation), capped, so that a fleet of
//! loaders throttled at the same moment does not come back at the same moment.

use std::time::Duration;

use shard_index::StorageOptions;

use crate::Error;

/// object_store retries failed requests itself unless told not to; for shard reads the loader
/// wants to see every failure (to adapt its concurrency and to hedge), so it sets
/// `max_retries=0` unless the caller chose a value.
pub fn shard_storage_options(options: &StorageOptions) -> StorageOptions {
    let mut o = options.clone();
    o.entry("max_retries".into()).or_insert_with(|| "0".into());
    o
}

/// See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Throttled,
    Transient,
    Fatal,
}

pub(crate) fn classify(e: &Error) -> Class {
    match e {
        Error::ShortRead { .. } | Error::Timeout { .. } => Class::Transient,
        Error::Fetch { source, .. } => classify_store(source),
        _ => Class::Fatal,
    }
}

fn classify_store(e: &object_store::Error) -> Class {
    match e {
        object_store::Error::Generic { source, .. } => {
            // With max_retries=0 object_store hands us its terminal RetryError. Its type is not
            // public, but its message carries the status ("... status code: 503 ...").
            let text = source.to_string();
            match status_in(&text) {
                Some(503 | 429) => Class::Throttled,
                Some(s) if s >= 500 || s == 408 => Class::Transient,
                Some(_) => Class::Fatal,
                // Transport errors: refused/reset connections, bodies cut short.
                None if is_throttle_text(&text) => Class::Throttled,
                None => Class::Transient,
            }
        }
        object_store::Error::JoinError { .. } => Class::Transient,
        _ => Class::Fatal,
    }
}

/// The HTTP status in an object_store request error's message, if there is one.
fn status_in(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// S3 may also say SlowDown in the body of a 200 (object_store turns that into an error).
fn is_throttle_text(s: &str) -> bool {
    s.contains("SlowDown") || s.contains("Service Unavailable") || s.contains("Too Many Requests")
}

/// Sleep before attempt `attempt + 1` (`attempt` ≥ 1 failed so far): full jitter over an
/// exponential ceiling; throttling starts higher and may wait longer.
pub(crate) fn backoff(attempt: u32, class: Class) -> Duration {
    let (base_ms, cap_ms) = match class {
        Class::Throttled => (100u64, 5_000u64),
        _ => (20, 2_000),
    };
    let ceiling = base_ms
        .saturating_mul(1u64 << attempt.min(16))
        .min(cap_ms)
        .max(1);
    // Half fixed, half random: never a zero wait, still spread out.
    Duration::from_millis(ceiling / 2 + jitter(ceiling / 2 + 1))
}

/// A cheap random number below `n` (no RNG dependency: hash the clock and a counter).
fn jitter(n: u64) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = t ^ SEQ.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x % n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_never_zero() {
        for attempt in 1..40 {
            let t = backoff(attempt, Class::Transient);
            assert!(t >= Duration::from_millis(1) && t <= Duration::from_millis(2_001));
            let t = backoff(attempt, Class::Throttled);
            assert!(t >= Duration::from_millis(100) && t <= Duration::from_millis(5_001));
        }
        assert!(backoff(1, Class::Transient) <= Duration::from_millis(41));
    }

    #[test]
    fn classifies_errors() {
        let url = "s3://b/k".to_string();
        assert_eq!(
            classify(&Error::ShortRead {
                url: url.clone(),
                got: 1,
                expected: 2
            }),
            Class::Transient
        );
        assert_eq!(
            classify(&Error::ShardChanged {
                url: url.clone(),
                detail: String::new()
            }),
            Class::Fatal
        );
        let generic = |msg: &str| Error::Fetch {
            url: url.clone(),
            source: object_store::Error::Generic {
                store: "S3",
                source: msg.to_string().into(),
            },
        };
        assert_eq!(classify(&generic("connection reset")), Class::Transient);
        assert_eq!(
            classify(&generic("<Code>SlowDown</Code>")),
            Class::Throttled
        );
        let status = |code: &str| {
            generic(&format!(
                "Error performing GET http://x in 1ms - Server returned non-2xx status code: {code}: body"
            ))
        };
        assert_eq!(
            classify(&status("503 Service Unavailable")),
            Class::Throttled
        );
        assert_eq!(classify(&status("429 Too Many Requests")), Class::Throttled);
        assert_eq!(
            classify(&status("500 Internal Server Error")),
            Class::Transient
        );
        assert_eq!(classify(&status("400 Bad Request")), Class::Fatal);
        let denied = Error::Fetch {
            url,
            source: object_store::Error::PermissionDenied {
                path: "k".into(),
                source: "no".to_string().into(),
            },
        };
        assert_eq!(classify(&denied), Class::Fatal);
        let o = shard_storage_options(&StorageOptions::new());
        assert_eq!(o["max_retries"], "0");
        let mut mine = StorageOptions::new();
        mine.insert("max_retries".into(), "5".into());
        assert_eq!(shard_storage_options(&mine)["max_retries"], "5");
    }
}
