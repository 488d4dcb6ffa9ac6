//! The admin API's one error type, [`ApiError`]: every refusal and failure a route
//! answers with, and how it is written — its status and `{"error": {"code",
//! "message"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The realm announced in `WWW-Authenticate`.
const REALM: &str = "recordsync-admin";

/// What went wrong with an admin request. The message is the `Display` text; the
/// status and the code come from the variant ([`ApiError::status`],
/// [`ApiError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 503 `unavailable`: PostgreSQL or the broker failed.
    #[error("{0}")]
    Unavailable(String),
    /// 404 `not_found`: the request names something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 404 `not_open`: the conflict is not open (any more).
    #[error("no open conflict {0}")]
    NotOpen(i64),
    /// 404, as plain text (the timeline's own format): a record without history.
    #[error("no history for record {record_id} under rule {rule}")]
    NoHistory {
        /// The rule.
        rule: String,
        /// The record.
        record_id: String,
    },
    /// 400 `bad_time_zone`.
    #[error("{0}")]
    BadTimeZone(String),
    /// 400 `bad_status`: a conflict status other than open, resolved or dismissed.
    #[error("status is open, resolved or dismissed")]
    BadStatus,
    /// 400 `confirm`: a purge without `"confirm": true`.
    #[error("a purge deletes dead letters for good: send \"confirm\": true")]
    Unconfirmed,
    /// 422 `invalid`: the request contradicts itself or the conflict.
    #[error("{0}")]
    Invalid(String),
    /// 422 `not_a_candidate`: a resolution names a record the conflict does not list.
    #[error("{0}")]
    NotACandidate(String),
    /// 422 `already_linked`: a resolution names a record another one is linked to.
    #[error("{0}")]
    AlreadyLinked(String),
    /// 422 `invalid_rules`: a preview's rules document does not parse.
    #[error("{0}")]
    InvalidRules(String),
    /// 422 `not_a_file_source`: an import for a rule whose source has an API.
    #[error("{0}")]
    NotAFileSource(String),
    /// 422 `unreadable`, with the `problems`: an import file nothing could be read of.
    #[error("{file}: nothing was imported")]
    Unreadable {
        /// The file.
        file: String,
        /// Why, as the import found it.
        problems: Value,
    },
    /// 409 `held_back`: an API budget holds the rule's background work back.
    #[error("{0}")]
    HeldBack(String),
    /// 409 `already_running`: the rule's resync or reconcile runs.
    #[error("{0}")]
    AlreadyRunning(String),
    /// 502 `source_failed`: the source system failed.
    #[error("{0}")]
    SourceFailed(String),
    /// 421 `unknown_host`: the listener does not answer to the request's `Host`.
    #[error("{0}")]
    UnknownHost(String),
    /// 401 `unauthorized`, with a `WWW-Authenticate` challenge (saying
    /// `invalid_token` when a token was sent and is not valid).
    #[error("{message}")]
    Unauthorized {
        /// Whether a token was presented and refused.
        invalid_token: bool,
        /// What to send.
        message: String,
    },
    /// 403 `forbidden`: the token's role is too weak for the route.
    #[error("{0}")]
    Forbidden(String),
}

impl ApiError {
    /// A store or broker failure, as a 503.
    pub fn unavailable(e: impl std::fmt::Display) -> ApiError {
        ApiError::Unavailable(e.to_string())
    }

    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) | ApiError::NotOpen(_) | ApiError::NoHistory { .. } => {
                StatusCode::NOT_FOUND
            }
            ApiError::BadTimeZone(_) | ApiError::BadStatus | ApiError::Unconfirmed => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Invalid(_)
            | ApiError::NotACandidate(_)
            | ApiError::AlreadyLinked(_)
            | ApiError::InvalidRules(_)
            | ApiError::NotAFileSource(_)
            | ApiError::Unreadable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::HeldBack(_) | ApiError::AlreadyRunning(_) => StatusCode::CONFLICT,
            ApiError::SourceFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::UnknownHost(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The answer's `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unavailable(_) => "unavailable",
            ApiError::NotFound(_) | ApiError::NoHistory { .. } => "not_found",
            ApiError::NotOpen(_) => "not_open",
            ApiError::BadTimeZone(_) => "bad_time_zone",
            ApiError::BadStatus => "bad_status",
            ApiError::Unconfirmed => "confirm",
            ApiError::Invalid(_) => "invalid",
            ApiError::NotACandidate(_) => "not_a_candidate",
            ApiError::AlreadyLinked(_) => "already_linked",
            ApiError::InvalidRules(_) => "invalid_rules",
            ApiError::NotAFileSource(_) => "not_a_file_source",
            ApiError::Unreadable { .. } => "unreadable",
            ApiError::HeldBack(_) => "held_back",
            ApiError::AlreadyRunning(_) => "already_running",
            ApiError::SourceFailed(_) => "source_failed",
            ApiError::UnknownHost(_) => "unknown_host",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::NoHistory { .. } = self {
            return (status, format!("{self}\n")).into_response();
        }
        let mut error = json!({"code": self.code(), "message": self.to_string()});
        if let ApiError::Unreadable { problems, .. } = &self {
            error["problems"] = problems.clone();
        }
        let mut resp = (status, Json(json!({ "error": error }))).into_response();
        if let ApiError::Unauthorized { invalid_token, .. } = self {
            let challenge = if invalid_token {
                format!("Bearer realm=\"{REALM}\", error=\"invalid_token\"")
            } else {
                format!("Bearer realm=\"{REALM}\"")
            };
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> ApiError {
        ApiError::unavailable(e)
    }
}

impl From<queue::QueueError> for ApiError {
    fn from(e: queue::QueueError) -> ApiError {
        ApiError::unavailable(e)
    }
}

impl From<crate::dlq::ReplayError> for ApiError {
    fn from(e: crate::dlq::ReplayError) -> ApiError {
        ApiError::unavailable(e)
    }
}

impl From<crate::ops::OpsError> for ApiError {
    fn from(e: crate::ops::OpsError) -> ApiError {
        use crate::ops::OpsError;
        let message = e.to_string();
        match e {
            OpsError::NotACandidate { .. } => ApiError::NotACandidate(message),
            OpsError::AlreadyLinked { .. } => ApiError::AlreadyLinked(message),
            OpsError::Invalid(_) => ApiError::Invalid(message),
            OpsError::Unknown(_) => ApiError::NotFound(message),
            OpsError::Connector(_) => ApiError::SourceFailed(message),
            _ => ApiError::Unavailable(message),
        }
    }
}

/// Why a resync or reconcile could not start: 404 for an unknown rule, 409 while one
/// runs, else a failure.
impl From<crate::resync::ResyncError> for ApiError {
    fn from(e: crate::resync::ResyncError) -> ApiError {
        use crate::resync::ResyncError;
        let message = e.to_string();
        match e {
            ResyncError::UnknownRule(_) => ApiError::NotFound(message),
            ResyncError::AlreadyRunning(_) => ApiError::AlreadyRunning(message),
            _ => ApiError::Unavailable(message),
        }
    }
}

impl From<crate::preview::PreviewError> for ApiError {
    fn from(e: crate::preview::PreviewError) -> ApiError {
        use crate::preview::PreviewError;
        match e {
            PreviewError::UnknownRule(_) | PreviewError::NotInNewRules(_) => {
                ApiError::NotFound(e.to_string())
            }
            _ => ApiError::unavailable(e),
        }
    }
}

impl From<crate::import::ImportError> for ApiError {
    fn from(e: crate::import::ImportError) -> ApiError {
        use crate::import::ImportError;
        match e {
            ImportError::UnknownRule(_) => ApiError::NotFound(e.to_string()),
            ImportError::Unreadable { file, problems } => ApiError::Unreadable {
                file,
                problems: json!(problems),
            },
            ImportError::NotAFileSource { .. } => ApiError::NotAFileSource(e.to_string()),
            _ => ApiError::unavailable(e),
        }
    }
}

impl From<crate::schema::SchemaError> for ApiError {
    fn from(e: crate::schema::SchemaError) -> ApiError {
        match e {
            crate::schema::SchemaError::UnknownSystem(_) => ApiError::NotFound(e.to_string()),
            _ => ApiError::unavailable(e),
        }
    }
}
