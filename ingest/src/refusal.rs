//! Why a webhook was refused (`Refusal`), and the answer each reason gets: its status,
//! its metrics outcome, its JSON error body and, for a busy or unreachable broker,
//! `Retry-After`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::signature::AuthError;

/// Why a webhook was not accepted: each maps to one status of the bad-input contract.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("unknown system \"{0}\"")]
    UnknownSystem(String),
    #[error("system \"{0}\" does not accept webhooks (no webhook auth configured)")]
    NoWebhookAuth(String),
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body could not be read: {0}")]
    BadBody(String),
    #[error("the body did not arrive in time")]
    SlowBody,
    #[error("too many webhook bodies are being received at once; retry later")]
    Busy,
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the payload lacks {0}, which routing needs")]
    MissingField(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("no sync rule watches app \"{app}\" of system \"{system}\"")]
    NoRule { system: String, app: String },
    #[error("the broker is unavailable ({0}); nothing was queued — retry later")]
    Unavailable(String),
}

impl Refusal {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Refusal::UnknownSystem(_) => StatusCode::NOT_FOUND,
            Refusal::NoWebhookAuth(_) | Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BadBody(_) | Refusal::NotJson(_) => StatusCode::BAD_REQUEST,
            Refusal::SlowBody => StatusCode::REQUEST_TIMEOUT,
            Refusal::MissingField(_) | Refusal::Invalid(_) | Refusal::NoRule { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Refusal::Busy | Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The outcome label for metrics (a bounded set).
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Refusal::UnknownSystem(_) => "unknown_system",
            Refusal::NoWebhookAuth(_) | Refusal::Unauthorized(_) => "unauthorized",
            Refusal::TooLarge(_) => "too_large",
            Refusal::BadBody(_) | Refusal::NotJson(_) => "bad_request",
            Refusal::SlowBody => "timeout",
            Refusal::Busy => "busy",
            Refusal::MissingField(_) => "missing_field",
            Refusal::Invalid(_) => "invalid",
            Refusal::NoRule { .. } => "no_rule",
            Refusal::Unavailable(_) => "unavailable",
        }
    }

    pub(crate) fn code(&self) -> &'static str {
        self.outcome()
    }

    pub(crate) fn retry_after(&self) -> Option<&'static str> {
        match self {
            Refusal::Unavailable(_) => Some("5"),
            Refusal::Busy => Some("1"),
            _ => None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code(), "message": self.to_string()}}));
        let mut resp = (self.status(), body).into_response();
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
        }
        resp
    }
}
