//! The HTTP core every connector sends through: a request with the system's
//! credential header and timeout, its transport error and its upstream's error text
//! redacted, its `Retry-After` read, and a failed status classified into a
//! [`ConnectorError`]. What a body means is the connector's (kintone's error codes, a
//! rest entity's 404).

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use crate::{ConnectorError, Redactor};

/// Builds the HTTP client every connector shares.
pub(crate) fn http_client() -> reqwest::Client {
    // reqwest is built without a bundled crypto provider; ring is the one we ship.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("recordsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client builds")
}

/// Reads a `Retry-After` header: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// Classifies a non-success status into an error, `message` being the body's text,
/// already redacted.
pub(crate) fn status_error(
    system: &str,
    status: u16,
    retry_after: Option<Duration>,
    message: String,
) -> ConnectorError {
    let system = system.to_owned();
    match status {
        429 => ConnectorError::RateLimited {
            system,
            retry_after,
        },
        401 | 403 => ConnectorError::Unauthorized {
            system,
            status,
            message,
        },
        500..=599 => ConnectorError::Server {
            system,
            status,
            message,
        },
        _ => ConnectorError::Rejected {
            system,
            status,
            message,
        },
    }
}

/// One system's base URL, credential header, timeout and redactor.
pub(crate) struct Http {
    client: reqwest::Client,
    system: String,
    base: String,
    /// The credential header and its value, sent with every request.
    auth: Option<(String, String)>,
    timeout: Duration,
    redactor: Arc<Redactor>,
}

/// What the system answered: its status, its `Retry-After` and its JSON body (`null`
/// when it sent none).
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Value,
}

impl Answer {
    /// A 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl Http {
    /// A system's HTTP core, redacting `auth`'s value (until
    /// [`Http::with_redactor`] gives it every configured secret).
    pub fn new(
        client: reqwest::Client,
        system: &str,
        base: &str,
        auth: Option<(String, String)>,
        own_secrets: Vec<String>,
        timeout: Duration,
    ) -> Http {
        Http {
            client,
            system: system.to_owned(),
            base: base.to_owned(),
            auth,
            timeout,
            redactor: Arc::new(Redactor::new(own_secrets)),
        }
    }

    /// Redacts these secrets from upstream errors instead.
    pub fn set_redactor(&mut self, redactor: Arc<Redactor>) {
        self.redactor = redactor;
    }

    /// The system's name in the rules.
    pub fn system(&self) -> &str {
        &self.system
    }

    /// A request to `path` under the base URL, with the credential and the timeout.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .timeout(self.timeout);
        match &self.auth {
            Some((h, v)) => req.header(h, v),
            None => req,
        }
    }

    /// Sends a request: what the system answered, whatever its status, or a
    /// transport error (with no secret in its URL).
    pub async fn send(&self, req: RequestBuilder) -> Result<Answer, ConnectorError> {
        let resp = req
            .send()
            .await
            .map_err(|source| ConnectorError::Transport {
                system: self.system.clone(),
                source: self.redactor.reqwest_error(source),
            })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// A failed answer as an error, `message` being the upstream's text: redacted
    /// first, since the body is the upstream's and may echo our credentials back.
    pub fn error(&self, answer: &Answer, message: &str) -> ConnectorError {
        status_error(
            &self.system,
            answer.status,
            answer.retry_after,
            self.redactor.message(message),
        )
    }

    /// The response was not what the API documents.
    pub fn bad(&self, message: &str) -> ConnectorError {
        ConnectorError::BadResponse {
            system: self.system.clone(),
            message: message.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(
            status_error("h", 429, None, String::new()).class(),
            "rate_limited"
        );
        assert_eq!(
            status_error("h", 503, None, String::new()).class(),
            "server"
        );
        assert_eq!(
            status_error("h", 401, None, String::new()).class(),
            "unauthorized"
        );
        let e = status_error("h", 422, None, "subject is required".into());
        assert_eq!(e.class(), "rejected");
        assert_eq!(
            e.to_string(),
            "h refused the request (422): subject is required"
        );
    }
}
