//! The error every actor and tool speaks: a contract error code, a human
//! message, optional details and whether a retry may succeed.

use serde::Serialize;
use serde_json::{Map, Value};

/// The error codes of the contract (§1). Serialised in SCREAMING_SNAKE_CASE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationError,
    PayloadTooLarge,
    SessionNotFound,
    SessionExists,
    SessionNotActive,
    HandoffNotFound,
    NotFound,
    Unauthorized,
    Forbidden,
    RateLimited,
    StorageUnavailable,
    InternalError,
}

impl ErrorCode {
    /// Every code (published in the tools' output schemas).
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::ValidationError,
        ErrorCode::PayloadTooLarge,
        ErrorCode::SessionNotFound,
        ErrorCode::SessionExists,
        ErrorCode::SessionNotActive,
        ErrorCode::HandoffNotFound,
        ErrorCode::NotFound,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::StorageUnavailable,
        ErrorCode::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::SessionNotFound => "SESSION_NOT_FOUND",
            ErrorCode::SessionExists => "SESSION_EXISTS",
            ErrorCode::SessionNotActive => "SESSION_NOT_ACTIVE",
            ErrorCode::HandoffNotFound => "HANDOFF_NOT_FOUND",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::StorageUnavailable => "STORAGE_UNAVAILABLE",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// Only throttling and an unavailable dependency are worth retrying as is.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::RateLimited | ErrorCode::StorageUnavailable)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HandoffError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Map<String, Value>,
    /// What went wrong inside (a database's own message, a path): for the
    /// log, under the reply's `request_id`, never for the client.
    pub internal: Option<String>,
}

impl HandoffError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Map::new(),
            internal: None,
        }
    }

    /// Keep `cause` for the log only (see `internal`).
    pub fn internal_cause(mut self, cause: impl Into<String>) -> Self {
        self.internal = Some(cause.into());
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalError, message)
    }

    pub fn storage_unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::StorageUnavailable, message)
    }

    /// The refusal of an open circuit breaker (`BreakerHandle::check`): at
    /// once, retryable, naming the dependency.
    pub fn breaker_open(dependency: &str) -> Self {
        Self::storage_unavailable(format!(
            "the {dependency} is unavailable (circuit breaker open); retry shortly"
        ))
        .detail("breaker", dependency)
        .detail("state", "open")
    }

    /// Made by `breaker_open`.
    pub fn is_breaker_refusal(&self) -> bool {
        self.code == ErrorCode::StorageUnavailable
            && self.details.get("state").and_then(Value::as_str) == Some("open")
    }

    /// A write that lost an optimistic race (see `StoreError::Conflict`).
    pub fn is_write_conflict(&self) -> bool {
        self.details.get("reason").and_then(Value::as_str) == Some(WRITE_CONFLICT)
    }

    pub fn session_not_found(session_key: &str) -> Self {
        Self::new(
            ErrorCode::SessionNotFound,
            "no session with this session_key",
        )
        .detail("session_key", session_key)
    }
}

impl std::fmt::Display for HandoffError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for HandoffError {}

/// What a storage adapter reports. The persistence actor and the breaker only
/// need to know whether the dependency itself failed (`Unavailable`, counts
/// against the breaker) or the data was refused (`Rejected`, does not).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage rejected the write: {0}")]
    Rejected(String),
    /// Another writer (a second replica or process on the same database)
    /// changed what this write was built on: the writer reloads and retries.
    #[error("write conflict: {0}")]
    Conflict(String),
}

/// `details.reason` of the error a write gets when it kept losing races.
pub const WRITE_CONFLICT: &str = "write_conflict";

impl From<StoreError> for HandoffError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => {
                HandoffError::storage_unavailable("the database is unavailable; retry shortly")
                    .internal_cause(m)
            }
            StoreError::Rejected(m) => {
                HandoffError::internal("the database refused the request").internal_cause(m)
            }
            StoreError::Conflict(m) => HandoffError::storage_unavailable(
                "another writer changed this session at the same time; retry",
            )
            .detail("reason", WRITE_CONFLICT)
            .internal_cause(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` lists each code once, at its place: a new variant fails to
    /// compile here until it is listed.
    #[test]
    fn all_lists_every_code_once() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            let place = match code {
                ErrorCode::ValidationError => 0,
                ErrorCode::PayloadTooLarge => 1,
                ErrorCode::SessionNotFound => 2,
                ErrorCode::SessionExists => 3,
                ErrorCode::SessionNotActive => 4,
                ErrorCode::HandoffNotFound => 5,
                ErrorCode::NotFound => 6,
                ErrorCode::Unauthorized => 7,
                ErrorCode::Forbidden => 8,
                ErrorCode::RateLimited => 9,
                ErrorCode::StorageUnavailable => 10,
                ErrorCode::InternalError => 11,
            };
            assert_eq!(place, i, "{code:?}");
        }
    }
}
