//! The console's sealed session: what its cookie holds instead of the token (the
//! token's name and an expiry, sealed with HMAC-SHA256 under the token's digest).

use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::tokens::digest;
use super::{Auth, Principal};

/// How long a console sign-in lasts, in seconds.
pub const SESSION_SECONDS: i64 = 8 * 3600;

type HmacSha256 = hmac::Hmac<Sha256>;

/// HMAC-SHA256 of `body` under `key` (a token's digest).
fn seal_of(key: &[u8; 32], body: &str) -> [u8; 32] {
    use hmac::Mac;
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Bytes as lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex back into bytes; `None` for anything else (or more than 1 KiB).
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 2048 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Auth {
    /// A console session for the holder of `presented`, a valid token, until
    /// `expires_at` (Unix seconds): the token's name and the expiry, sealed with
    /// HMAC-SHA256 under the token's digest, which only this configuration holds. The
    /// console's cookie carries this, never the token: a copied cookie opens the console
    /// until it expires, not the API, and taking the token out of the configuration ends
    /// every session it opened.
    pub fn seal_session(&self, presented: &str, expires_at: i64) -> Option<String> {
        let p = self.authenticate(presented)?;
        let body = format!("{}.{expires_at}", hex(p.name.as_bytes()));
        Some(format!(
            "{body}.{}",
            hex(&seal_of(&digest(presented), &body))
        ))
    }

    /// Who a sealed session belongs to: `None` unless its seal holds under a configured
    /// token of its name (compared in constant time) and it has not expired at `now`.
    pub fn open_session(&self, sealed: &str, now: i64) -> Option<&Principal> {
        let (body, tag) = sealed.rsplit_once('.')?;
        let (name, expires_at) = body.split_once('.')?;
        let expires_at: i64 = expires_at.parse().ok()?;
        if expires_at <= now {
            return None;
        }
        let name = String::from_utf8(unhex(name)?).ok()?;
        let tag = unhex(tag)?;
        let mut found = None;
        for t in self.tokens.iter().filter(|t| t.principal.name == name) {
            if bool::from(seal_of(&t.digest, body).as_slice().ct_eq(&tag)) {
                found = Some(&t.principal);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_for_its_token_until_it_expires_and_never_when_tampered_with() {
        let a = "aaaaaaaaaaaaaaaa-1";
        let auth = Auth::from_spec(&format!("olga:operator:{a},vera:viewer:bbbbbbbbbbbbbbbb-2"))
            .expect("valid");
        let sealed = auth.seal_session(a, 1_000).expect("a valid token seals");
        assert!(!sealed.contains(a), "{sealed}");
        assert_eq!(
            auth.open_session(&sealed, 999).map(|p| p.name.as_str()),
            Some("olga")
        );
        assert!(auth.open_session(&sealed, 1_000).is_none(), "expired");
        assert!(auth.seal_session("not-a-token-0123456789", 1_000).is_none());
        // Another name, a later expiry, another seal: each refused.
        let (body, tag) = sealed.rsplit_once('.').expect("three parts");
        let (_, expiry) = body.split_once('.').expect("name and expiry");
        let vera = hex(b"vera");
        for forged in [
            format!("{vera}.{expiry}.{tag}"),
            format!("{}.99999.{tag}", hex(b"olga")),
            format!("{body}.{}", hex(&[0u8; 32])),
            format!("{body}.zz"),
            "olga".to_owned(),
        ] {
            assert!(auth.open_session(&forged, 0).is_none(), "{forged}");
        }
        // The token taken out of the configuration: its sessions end.
        let rotated = Auth::from_spec("olga:operator:cccccccccccccccc-3").expect("valid");
        assert!(rotated.open_session(&sealed, 0).is_none());
        assert_eq!(unhex(&hex(b"\x00\xff")), Some(vec![0, 255]));
        assert_eq!(unhex("f"), None);
    }
}
