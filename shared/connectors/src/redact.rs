//! Keeping secrets out of what we store and print. An upstream that echoes our request
//! (its headers, its URL) in an error body would otherwise put the API token into the
//! `ConnectorError`, and from there into logs, retry history, dead-letter reasons and
//! admin responses. The connector redacts when it builds the error.

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// The longest upstream message kept in an error, in characters (after redaction,
/// so that a cut can never leave part of a secret behind).
pub const MAX_MESSAGE_CHARS: usize = 2_000;

/// Replaces every configured secret value, in the forms it may be echoed in.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    /// Longest first, so that a secret containing another is replaced whole.
    needles: Vec<String>,
}

impl Redactor {
    /// A redactor for these secret values (pass each token of a list on its own).
    /// Each is also redacted percent-encoded, JSON-escaped, and without a `whsec_`
    /// prefix.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut needles: Vec<String> = vec![];
        let mut add = |s: &str| {
            let s = s.trim();
            if s.is_empty() {
                return;
            }
            let json = serde_json::to_string(s).unwrap_or_default();
            let json = json.trim_matches('"');
            for form in [s, crate::encode(s).as_str(), json] {
                if !form.is_empty() && !needles.iter().any(|n| n == form) {
                    needles.push(form.to_owned());
                }
            }
        };
        for secret in secrets {
            add(&secret);
            if let Some(b64) = secret.trim().strip_prefix("whsec_") {
                add(b64);
            }
        }
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Redactor { needles }
    }

    /// `text` with every secret replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), REDACTED);
            }
        }
        out
    }

    /// An upstream's message as kept in an error: redacted, then cut to
    /// [`MAX_MESSAGE_CHARS`].
    pub fn message(&self, text: &str) -> String {
        let mut out = self.redact(text);
        if let Some((cut, _)) = out.char_indices().nth(MAX_MESSAGE_CHARS) {
            out.truncate(cut);
            out.push('…');
        }
        out
    }

    /// A transport error with its URL's password dropped and secrets in its query
    /// redacted (reqwest prints the URL with the error).
    pub fn reqwest_error(&self, mut e: reqwest::Error) -> reqwest::Error {
        if let Some(url) = e.url_mut() {
            let _ = url.set_password(None);
            let query = url.query().map(|q| redact_url_token(&self.redact(q)));
            url.set_query(query.as_deref());
        }
        e
    }
}

/// A URL or query string with the value of every `token` parameter replaced, as
/// kintone's webhook URLs carry ingest's token (`?token=`).
pub fn redact_url_token(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(at) = find_token_param(rest) {
        let value_start = at + "token=".len();
        out.push_str(&rest[..value_start]);
        let value_len = rest[value_start..]
            .find(['&', '#', ' ', ')', '"'])
            .unwrap_or(rest.len() - value_start);
        if value_len > 0 {
            out.push_str(REDACTED);
        }
        rest = &rest[value_start + value_len..];
    }
    out.push_str(rest);
    out
}

/// Where the next `token=` parameter starts: at the start, or after `?`, `&` or `;`.
fn find_token_param(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find("token=") {
        let at = from + i;
        if at == 0 || matches!(s.as_bytes()[at - 1], b'?' | b'&' | b';') {
            return Some(at);
        }
        from = at + "token=".len();
    }
    None
}

/// A connection URL (`postgres://user:password@host/db`, `amqp://…`) without its
/// password, for messages and logs.
pub fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:{}{}",
        &url[..authority_start],
        &userinfo[..colon],
        REDACTED,
        &url[authority_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_every_secret_is_redacted() {
        let r = Redactor::new([
            "tok-en/1".to_owned(),
            "sec\"ond-token".to_owned(),
            "whsec_c2VjcmV0LWtleQ==".to_owned(),
            "hd-token".to_owned(),
        ]);
        let echoed = r#"x-cybozu-api-token: tok-en/1,sec"ond-token; authorization: Bearer hd-token; {"t":"sec\"ond-token"} q=tok-en%2F1 c2VjcmV0LWtleQ== whsec_c2VjcmV0LWtleQ=="#;
        let clean = r.redact(echoed);
        for leak in ["tok-en", "ond-token", "hd-token", "c2VjcmV0LWtleQ"] {
            assert!(!clean.contains(leak), "{leak} in {clean}");
        }
        assert_eq!(
            clean,
            r#"x-cybozu-api-token: [redacted],[redacted]; authorization: Bearer [redacted]; {"t":"[redacted]"} q=[redacted] [redacted] [redacted]"#
        );
        assert_eq!(r.redact("nothing secret"), "nothing secret");
        assert_eq!(Redactor::default().redact("tok-en/1"), "tok-en/1");
    }

    #[test]
    fn messages_are_cut_after_redaction() {
        let secret = "s".repeat(10);
        let r = Redactor::new([secret.clone()]);
        let text = format!("{}{secret}", "x".repeat(MAX_MESSAGE_CHARS - 3));
        let m = r.message(&text);
        assert!(!m.contains("sss"), "a cut secret must not leak its start");
        assert_eq!(m.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(m.ends_with("[re…"));
        assert_eq!(r.message("short"), "short");
    }

    #[test]
    fn url_tokens_and_passwords() {
        assert_eq!(
            redact_url_token("http://h:1/webhooks/kintone?token=abc&x=1"),
            "http://h:1/webhooks/kintone?token=[redacted]&x=1"
        );
        assert_eq!(
            redact_url_token("error sending request for url (http://h/w?a=1&token=abc)"),
            "error sending request for url (http://h/w?a=1&token=[redacted])"
        );
        assert_eq!(
            redact_url_token("http://h/w?mytoken=abc"),
            "http://h/w?mytoken=abc"
        );
        assert_eq!(redact_url_token("http://h/w?token="), "http://h/w?token=");
        assert_eq!(
            without_password("postgres://postgres:pa:ss@127.0.0.1:5432/db"),
            "postgres://postgres:[redacted]@127.0.0.1:5432/db"
        );
        assert_eq!(
            without_password("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:[redacted]@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            without_password("postgres://postgres@127.0.0.1:5432"),
            "postgres://postgres@127.0.0.1:5432"
        );
        assert_eq!(without_password("not a url"), "not a url");
    }
}
