//! Webhook authentication: Standard Webhooks signatures and URL tokens.
//!
//! Standard Webhooks: the signed content is `{webhook-id}.{webhook-timestamp}.{body}`,
//! HMAC-SHA256 with the secret's bytes (`whsec_<base64>`), sent as `v1,<base64>`; the
//! header may carry several space-separated signatures (secret rotation), and we may
//! hold several secrets. Comparisons are constant-time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why a webhook was not authenticated. Each reads as a sentence for the 401 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A required header is missing.
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    /// The timestamp is not a number.
    #[error("the webhook-timestamp header is not a Unix timestamp")]
    BadTimestamp,
    /// The timestamp is too far from now.
    #[error("the webhook timestamp is {0} s away from now, outside the tolerance")]
    OutsideTolerance(i64),
    /// No signature matched.
    #[error("no webhook signature matches")]
    NoMatch,
    /// The token is missing or wrong.
    #[error("the token is missing or wrong")]
    BadToken,
}

/// A parsed secret: the `whsec_` prefix is optional, the rest is base64.
pub fn parse_secret(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    STANDARD.decode(b64).ok().filter(|k| !k.is_empty())
}

/// Signs content as Standard Webhooks does: `v1,<base64>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Verifies a Standard Webhooks delivery against any of `keys`.
pub fn verify(
    keys: &[Vec<u8>],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), AuthError> {
    let id = id.ok_or(AuthError::MissingHeader("webhook-id"))?;
    let ts = timestamp.ok_or(AuthError::MissingHeader("webhook-timestamp"))?;
    let signatures = signatures.ok_or(AuthError::MissingHeader("webhook-signature"))?;
    let ts: i64 = ts.trim().parse().map_err(|_| AuthError::BadTimestamp)?;
    // `now - ts` overflows for a timestamp near i64::MIN or i64::MAX, and so would
    // `abs()` of i64::MIN (which wraps to itself, a negative number "inside" any
    // tolerance, in a release build): the skew saturates and is compared unsigned.
    let skew = now.saturating_sub(ts);
    if skew.unsigned_abs() > tolerance_secs.max(0).unsigned_abs() {
        return Err(AuthError::OutsideTolerance(skew));
    }
    for key in keys {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        let expected = mac.finalize().into_bytes();
        for sig in signatures.split_whitespace() {
            let Some(b64) = sig.strip_prefix("v1,") else {
                continue;
            };
            let Ok(given) = STANDARD.decode(b64) else {
                continue;
            };
            if bool::from(given.as_slice().ct_eq(expected.as_slice())) {
                return Ok(());
            }
        }
    }
    Err(AuthError::NoMatch)
}

/// Compares a URL token in constant time.
pub fn verify_token(expected: &str, given: Option<&str>) -> Result<(), AuthError> {
    let given = given.ok_or(AuthError::BadToken)?;
    if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        Ok(())
    } else {
        Err(AuthError::BadToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks specification's published example.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn key() -> Vec<u8> {
        parse_secret(SECRET).unwrap()
    }

    #[test]
    fn the_spec_example_signs_and_verifies() {
        assert_eq!(sign(&key(), ID, TS, BODY), SIG);
        assert_eq!(
            verify(
                &[key()],
                Some(ID),
                Some("1614265330"),
                Some(SIG),
                BODY,
                TS,
                300
            ),
            Ok(())
        );
    }

    #[test]
    fn rotation_several_signatures_and_several_keys() {
        let other = parse_secret("whsec_c2VjcmV0LXR3by1zZWNyZXQtdHdvLXNlY3JldA==").unwrap();
        let header = format!("v1,AAAA {SIG} v2,xyz");
        assert_eq!(
            verify(
                &[other.clone(), key()],
                Some(ID),
                Some("1614265330"),
                Some(&header),
                BODY,
                TS,
                300
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                &[other],
                Some(ID),
                Some("1614265330"),
                Some(&header),
                BODY,
                TS,
                300
            ),
            Err(AuthError::NoMatch)
        );
    }

    #[test]
    fn tampering_and_tolerance() {
        let k = [key()];
        assert_eq!(
            verify(
                &k,
                Some(ID),
                Some("1614265330"),
                Some(SIG),
                b"{\"test\": 1}",
                TS,
                300
            ),
            Err(AuthError::NoMatch)
        );
        assert_eq!(
            verify(
                &k,
                Some("msg_other"),
                Some("1614265330"),
                Some(SIG),
                BODY,
                TS,
                300
            ),
            Err(AuthError::NoMatch)
        );
        assert_eq!(
            verify(
                &k,
                Some(ID),
                Some("1614265330"),
                Some(SIG),
                BODY,
                TS + 301,
                300
            ),
            Err(AuthError::OutsideTolerance(301))
        );
        assert_eq!(
            verify(
                &k,
                Some(ID),
                Some("1614265330"),
                Some(SIG),
                BODY,
                TS - 301,
                300
            ),
            Err(AuthError::OutsideTolerance(-301))
        );
        // The tolerance's edges are inside it, on both sides.
        for now in [TS + 300, TS - 300] {
            assert_eq!(
                verify(&k, Some(ID), Some("1614265330"), Some(SIG), BODY, now, 300),
                Ok(()),
                "{} s away",
                now - TS
            );
        }
        assert_eq!(
            verify(&k, Some(ID), Some("soon"), Some(SIG), BODY, TS, 300),
            Err(AuthError::BadTimestamp)
        );
        assert_eq!(
            verify(&k, None, Some("1"), Some(SIG), BODY, TS, 300),
            Err(AuthError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            verify(&k, Some(ID), None, Some(SIG), BODY, TS, 300),
            Err(AuthError::MissingHeader("webhook-timestamp"))
        );
        assert_eq!(
            verify(&k, Some(ID), Some("1"), None, BODY, TS, 300),
            Err(AuthError::MissingHeader("webhook-signature"))
        );
        assert_eq!(
            verify(
                &k,
                Some(ID),
                Some("1614265330"),
                Some("v1,not-base64!"),
                BODY,
                TS,
                300
            ),
            Err(AuthError::NoMatch)
        );
    }

    #[test]
    fn timestamps_at_the_ends_of_the_range_are_refused_without_overflow() {
        let k = [key()];
        let now = TS;
        // i64::MIN: `now - ts` overflowed (a panic in debug builds).
        assert_eq!(
            verify(
                &k,
                Some(ID),
                Some(&i64::MIN.to_string()),
                Some(SIG),
                BODY,
                now,
                300
            ),
            Err(AuthError::OutsideTolerance(i64::MAX))
        );
        assert_eq!(
            verify(
                &k,
                Some(ID),
                Some(&i64::MAX.to_string()),
                Some(SIG),
                BODY,
                now,
                300
            ),
            Err(AuthError::OutsideTolerance(now - i64::MAX))
        );
        // `now + i64::MIN` made the wrapped skew i64::MIN, whose wrapped `abs()` is
        // negative: a correctly signed delivery with that timestamp passed the
        // tolerance check in release builds.
        let ts = now + i64::MIN;
        let sig = sign(&key(), ID, ts, BODY);
        assert_eq!(
            verify(
                &k,
                Some(ID),
                Some(&ts.to_string()),
                Some(&sig),
                BODY,
                now,
                300
            ),
            Err(AuthError::OutsideTolerance(i64::MAX))
        );
        // A negative tolerance counts as none.
        assert_eq!(
            verify(
                &k,
                Some(ID),
                Some("1614265330"),
                Some(SIG),
                BODY,
                now,
                i64::MIN
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                &k,
                Some(ID),
                Some("1614265330"),
                Some(SIG),
                BODY,
                now + 1,
                i64::MIN
            ),
            Err(AuthError::OutsideTolerance(1))
        );
    }

    #[test]
    fn tokens() {
        assert_eq!(verify_token("s3cret", Some("s3cret")), Ok(()));
        assert_eq!(
            verify_token("s3cret", Some("s3cre")),
            Err(AuthError::BadToken)
        );
        assert_eq!(verify_token("s3cret", None), Err(AuthError::BadToken));
        assert!(parse_secret("whsec_!!").is_none());
    }
}
