//! Injected faults and token-bucket rate limits for the simulated systems.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::state::System;

/// A small deterministic PRNG (xorshift64*), so that probabilistic faults are reproducible.
#[derive(Clone, Debug)]
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> XorShift {
        // The state must never be zero, or the generator would only ever produce zeros.
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Returns a number in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Returns true with the given probability; a probability of 1 or more is always true.
    pub(crate) fn chance(&mut self, probability: f64) -> bool {
        let roll = self.next_f64();
        probability >= 1.0 || roll < probability
    }
}

/// The body of `POST /_admin/faults`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultSpec {
    system: System,
    method: Option<String>,
    path_prefix: Option<String>,
    /// Applies only to requests whose query string, percent-decoded, contains this
    /// (for example `$id > 12`, to fail one page of a listing).
    query_contains: Option<String>,
    status: Option<u16>,
    retry_after: Option<Value>,
    probability: Option<f64>,
    count: Option<u64>,
    latency_ms: Option<u64>,
    body_contains: Option<String>,
    /// A JSON body to answer with instead of the system's usual error body.
    body: Option<Value>,
    /// When true the request is processed first and only its response is replaced, which
    /// simulates a response lost after the change was made.
    after: Option<bool>,
    /// The PRNG seed for this fault's probability; derived from the configuration when absent.
    seed: Option<u64>,
    /// When true the error body quotes the request's headers back (credentials
    /// included), as some real servers do; for tests that nothing leaks them further.
    echo_headers: Option<bool>,
}

/// An active fault.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Fault {
    id: String,
    system: System,
    method: Option<String>,
    path_prefix: Option<String>,
    query_contains: Option<String>,
    status: Option<u16>,
    retry_after: Option<String>,
    probability: f64,
    /// How many more times the fault applies; null means without end.
    remaining: Option<u64>,
    latency_ms: u64,
    body_contains: Option<String>,
    body: Option<Value>,
    after: bool,
    echo_headers: bool,
    /// How many times the fault has applied so far.
    hits: u64,
    #[serde(skip)]
    rng: XorShift,
}

impl Fault {
    fn matches(&self, system: System, method: &str, path: &str, query: &str, body: &[u8]) -> bool {
        self.system == system
            && self
                .query_contains
                .as_deref()
                .is_none_or(|needle| decode_query(query).contains(needle))
            && self
                .method
                .as_deref()
                .is_none_or(|wanted| wanted.eq_ignore_ascii_case(method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
            && self
                .body_contains
                .as_deref()
                .is_none_or(|needle| String::from_utf8_lossy(body).contains(needle))
    }
}

/// A query string as text: `+` as a space, `%XX` as its byte.
fn decode_query(query: &str) -> String {
    let bytes = query.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match query.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                    Some(Ok(b)) => {
                        out.push(b);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a fault does to a request that it applies to.
#[derive(Clone, Debug)]
pub(crate) struct FaultAction {
    pub(crate) fault_id: String,
    pub(crate) status: u16,
    pub(crate) retry_after: Option<String>,
    pub(crate) body: Option<Value>,
    pub(crate) after: bool,
    pub(crate) echo_headers: bool,
}

/// The combined effect of all faults that apply to one request.
#[derive(Debug, Default)]
pub(crate) struct FaultOutcome {
    /// The sum of the latencies of all applying faults.
    pub(crate) latency_ms: u64,
    /// The first applying fault that has a status, if any.
    pub(crate) action: Option<FaultAction>,
}

pub(crate) struct Faults {
    list: Vec<Fault>,
    created: u64,
    seed: u64,
}

impl Faults {
    pub(crate) fn new(seed: u64) -> Faults {
        Faults {
            list: Vec::new(),
            created: 0,
            seed,
        }
    }

    pub(crate) fn add(&mut self, spec: FaultSpec) -> Result<String, String> {
        let probability = spec.probability.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&probability) {
            return Err("probability must be between 0 and 1".to_owned());
        }
        if let Some(status) = spec.status
            && !(100..=599).contains(&status)
        {
            return Err("status must be an HTTP status between 100 and 599".to_owned());
        }
        let latency_ms = spec.latency_ms.unwrap_or(0);
        if spec.status.is_none() && latency_ms == 0 {
            return Err("a fault needs a status, a latency_ms, or both".to_owned());
        }
        if spec.count == Some(0) {
            return Err("count must be at least 1 when given".to_owned());
        }
        let retry_after = match spec.retry_after {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text),
            Some(Value::Number(number)) => Some(number.to_string()),
            Some(_) => return Err("retry_after must be a string or a number".to_owned()),
        };
        self.created += 1;
        let id = format!("fault-{}", self.created);
        let seed = spec
            .seed
            .unwrap_or_else(|| self.seed ^ self.created.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        self.list.push(Fault {
            id: id.clone(),
            system: spec.system,
            method: spec.method,
            path_prefix: spec.path_prefix,
            query_contains: spec.query_contains,
            status: spec.status,
            retry_after,
            probability,
            remaining: spec.count,
            latency_ms,
            body_contains: spec.body_contains,
            body: spec.body,
            after: spec.after.unwrap_or(false),
            echo_headers: spec.echo_headers.unwrap_or(false),
            hits: 0,
            rng: XorShift::new(seed),
        });
        Ok(id)
    }

    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let before = self.list.len();
        self.list.retain(|fault| fault.id != id);
        self.list.len() != before
    }

    pub(crate) fn clear(&mut self) {
        self.list.clear();
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({ "faults": self.list })
    }

    /// Decides which faults apply to a request, consuming their counts.
    ///
    /// Faults are considered in the order in which they were added. Every matching latency-only
    /// fault that wins its probability roll adds its latency; the first matching fault with a
    /// status that wins its roll decides the response, and later faults with a status are not
    /// considered (their counts are not consumed).
    pub(crate) fn evaluate(
        &mut self,
        system: System,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> FaultOutcome {
        let mut outcome = FaultOutcome::default();
        for fault in &mut self.list {
            if !fault.matches(system, method, path, query, body) {
                continue;
            }
            if fault.status.is_some() && outcome.action.is_some() {
                continue;
            }
            if !fault.rng.chance(fault.probability) {
                continue;
            }
            fault.hits += 1;
            if let Some(remaining) = &mut fault.remaining {
                *remaining = remaining.saturating_sub(1);
            }
            outcome.latency_ms += fault.latency_ms;
            if let Some(status) = fault.status {
                outcome.action = Some(FaultAction {
                    fault_id: fault.id.clone(),
                    status,
                    retry_after: fault.retry_after.clone(),
                    body: fault.body.clone(),
                    after: fault.after,
                    echo_headers: fault.echo_headers,
                });
            }
        }
        self.list.retain(|fault| fault.remaining != Some(0));
        outcome
    }
}

/// The body of `POST /_admin/limits`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitSpec {
    system: System,
    requests_per_second: f64,
    burst: Option<f64>,
}

/// A token bucket that starts full.
#[derive(Clone, Debug, Serialize)]
struct Bucket {
    requests_per_second: f64,
    burst: f64,
    tokens: f64,
    #[serde(skip)]
    last: Instant,
}

#[derive(Default)]
pub(crate) struct Limits {
    buckets: BTreeMap<&'static str, (System, Bucket)>,
}

impl Limits {
    pub(crate) fn set(&mut self, spec: LimitSpec, now: Instant) -> Result<Value, String> {
        if !(spec.requests_per_second.is_finite() && spec.requests_per_second > 0.0) {
            return Err("requests_per_second must be a positive number".to_owned());
        }
        let burst = spec
            .burst
            .unwrap_or_else(|| spec.requests_per_second.ceil());
        if !(burst.is_finite() && burst >= 1.0) {
            return Err("burst must be at least 1".to_owned());
        }
        let bucket = Bucket {
            requests_per_second: spec.requests_per_second,
            burst,
            tokens: burst,
            last: now,
        };
        let value = json!({
            "system": spec.system,
            "requests_per_second": bucket.requests_per_second,
            "burst": bucket.burst,
        });
        self.buckets
            .insert(spec.system.as_str(), (spec.system, bucket));
        Ok(value)
    }

    pub(crate) fn remove(&mut self, system: System) -> bool {
        self.buckets.remove(system.as_str()).is_some()
    }

    pub(crate) fn to_json(&self) -> Value {
        let limits: Vec<Value> = self
            .buckets
            .values()
            .map(|(system, bucket)| {
                json!({
                    "system": system,
                    "requests_per_second": bucket.requests_per_second,
                    "burst": bucket.burst,
                    "tokens": bucket.tokens,
                })
            })
            .collect();
        json!({ "limits": limits })
    }

    /// Takes one token for a request to `system`, or returns the whole number of seconds (at
    /// least 1) until a token becomes available.
    pub(crate) fn take(&mut self, system: System, now: Instant) -> Result<(), u64> {
        let Some((_, bucket)) = self.buckets.get_mut(system.as_str()) else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * bucket.requests_per_second).min(bucket.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / bucket.requests_per_second;
            Err((wait.ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_query_is_matched_decoded() {
        assert_eq!(
            decode_query("query=%24id+%3E+12+order+by&x=%E6%9B%B4%"),
            "query=$id > 12 order by&x=更%"
        );
        let mut faults = Faults::new(7);
        let spec: FaultSpec = serde_json::from_value(serde_json::json!({
            "system": "kintone", "method": "GET", "query_contains": "$id > 12", "status": 500
        }))
        .unwrap();
        faults.add(spec).unwrap();
        let get = |faults: &mut Faults, q: &str| {
            faults
                .evaluate(System::Kintone, "GET", "/k/v1/records.json", q, b"")
                .action
                .is_some()
        };
        assert!(!get(&mut faults, "query=%24id+%3E+0"));
        assert!(get(&mut faults, "query=%24id+%3E+12+limit+2"));
    }

    fn spec(value: Value) -> FaultSpec {
        serde_json::from_value(value).expect("valid fault spec")
    }

    #[test]
    fn xorshift_is_deterministic_and_in_range() {
        let mut a = XorShift::new(42);
        let mut b = XorShift::new(42);
        for _ in 0..1000 {
            let x = a.next_f64();
            assert_eq!(x, b.next_f64());
            assert!((0.0..1.0).contains(&x));
        }
        let mut zero = XorShift::new(0);
        assert_ne!(zero.next_u64(), 0);
    }

    #[test]
    fn counted_faults_expire() {
        let mut faults = Faults::new(1);
        faults
            .add(spec(
                json!({"system": "kintone", "status": 503, "count": 2}),
            ))
            .expect("valid");
        for _ in 0..2 {
            let outcome = faults.evaluate(System::Kintone, "GET", "/k/v1/record.json", "", b"");
            assert_eq!(outcome.action.map(|action| action.status), Some(503));
        }
        let outcome = faults.evaluate(System::Kintone, "GET", "/k/v1/record.json", "", b"");
        assert!(outcome.action.is_none());
    }

    #[test]
    fn faults_match_on_method_path_and_body() {
        let mut faults = Faults::new(1);
        faults
            .add(spec(json!({
                "system": "helpdesk",
                "method": "post",
                "path_prefix": "/api/tickets",
                "body_contains": "boom",
                "status": 500
            })))
            .expect("valid");
        let hit = |faults: &mut Faults, system, method, path, body: &[u8]| {
            faults
                .evaluate(system, method, path, "", body)
                .action
                .is_some()
        };
        assert!(hit(
            &mut faults,
            System::Helpdesk,
            "POST",
            "/api/tickets",
            b"{\"s\":\"boom\"}"
        ));
        assert!(!hit(
            &mut faults,
            System::Helpdesk,
            "GET",
            "/api/tickets",
            b"boom"
        ));
        assert!(!hit(
            &mut faults,
            System::Helpdesk,
            "POST",
            "/api/other",
            b"boom"
        ));
        assert!(!hit(
            &mut faults,
            System::Helpdesk,
            "POST",
            "/api/tickets",
            b"fine"
        ));
        assert!(!hit(
            &mut faults,
            System::Kintone,
            "POST",
            "/api/tickets",
            b"boom"
        ));
    }

    #[test]
    fn probability_is_reproducible_with_a_seed() {
        let run = || {
            let mut faults = Faults::new(7);
            faults
                .add(spec(
                    json!({"system": "kintone", "status": 500, "probability": 0.5, "seed": 99}),
                ))
                .expect("valid");
            (0..64)
                .map(|_| {
                    faults
                        .evaluate(System::Kintone, "GET", "/", "", b"")
                        .action
                        .is_some()
                })
                .collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        let hits = first.iter().filter(|hit| **hit).count();
        assert!((10..=54).contains(&hits), "{hits} hits out of 64");
    }

    #[test]
    fn invalid_faults_are_rejected() {
        let mut faults = Faults::new(1);
        assert!(faults.add(spec(json!({"system": "kintone"}))).is_err());
        assert!(
            faults
                .add(spec(
                    json!({"system": "kintone", "status": 500, "probability": 2.0})
                ))
                .is_err()
        );
        assert!(
            serde_json::from_value::<FaultSpec>(json!({"system": "kintone", "statuss": 500}))
                .is_err()
        );
    }

    #[test]
    fn token_bucket_is_exact() {
        let mut limits = Limits::default();
        let start = Instant::now();
        limits
            .set(
                serde_json::from_value(
                    json!({"system": "kintone", "requests_per_second": 2.0, "burst": 3.0}),
                )
                .expect("valid"),
                start,
            )
            .expect("valid");
        for _ in 0..3 {
            assert_eq!(limits.take(System::Kintone, start), Ok(()));
        }
        assert_eq!(limits.take(System::Kintone, start), Err(1));
        assert_eq!(limits.take(System::Helpdesk, start), Ok(()));
        let later = start + Duration::from_millis(500);
        assert_eq!(limits.take(System::Kintone, later), Ok(()));
        assert_eq!(limits.take(System::Kintone, later), Err(1));
    }
}
