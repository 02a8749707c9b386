//! RFC 7807 problem documents: every error the gateway answers, and the one table from the
//! contract's error codes (and reasons) to HTTP statuses (docs/http-api.md repeats it).

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flexcore_client::{ClientError, Unanswered};
use flexcore_contracts::{ErrorBody, ErrorCode, ErrorReason};
use serde::Serialize;
use serde_json::{Map, Value};

/// Where the problem types are described.
pub const TYPE_BASE: &str = "https://flexcore.dev/problems/";

/// One field at fault.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct FieldError {
    /// JSON pointer into the request body (or `header:<name>`, `query:<name>`, `path:<name>`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An `application/problem+json` document (boxed: it travels in every handler's `Err`).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Problem(Box<Document>);

impl std::ops::Deref for Problem {
    type Target = Document;

    fn deref(&self) -> &Document {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut Document {
        &mut self.0
    }
}

/// The fields of a [`Problem`].
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Document {
    /// `https://flexcore.dev/problems/<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The status's phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong and how to fix it.
    pub detail: String,
    /// The request's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The contract's error code (`validation_failed`, …, or the gateway's own:
    /// `unauthenticated`, `forbidden`, `rate_limited`, `unsupported_media_type`,
    /// `method_not_allowed`, `timeout`).
    pub code: String,
    /// The contract's reason (`missing_field`, `version`, …), when the refusal had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The request's correlation id (also in `Flexcore-Correlation-Id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Fields at fault.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The refusal's facts (`limit`, `size`, `current_version`, …).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
    #[serde(skip)]
    headers: HeaderMap,
}

impl Problem {
    /// A problem with `status` and the gateway's own `code`.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self(Box::new(Document {
            type_: format!("{TYPE_BASE}{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
            code: code.to_owned(),
            reason: None,
            correlation_id: None,
            errors: Vec::new(),
            details: Map::new(),
            headers: HeaderMap::new(),
        }))
    }

    /// A 400 `validation_failed` for one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut problem = Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ValidationFailed.as_str(),
            message.clone(),
        );
        problem.errors.push(FieldError {
            field: field.into(),
            message,
        });
        problem
    }

    /// A 404 for a path nobody serves.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound.as_str(),
            format!("no resource at {path}; the API is under /api/v1/flexcore (GET /api/v1/openapi.json lists it)"),
        )
    }

    /// The refusal `error` of the contract.
    pub fn refused(error: &ErrorBody) -> Self {
        let status = status_of(error.code, error.details.reason);
        let mut problem = Self::new(status, error.code.as_str(), error.message.clone());
        problem.reason = Some(error.details.reason.as_str().to_owned());
        if let Some(path) = &error.details.path {
            problem.errors.push(FieldError {
                field: path.clone(),
                message: error.message.clone(),
            });
        }
        problem.details = (*error.details.extra).clone();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            problem
                .headers
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        problem
    }

    /// What a failed request to the services becomes.
    pub fn from_client(error: &ClientError) -> Self {
        match error {
            ClientError::Refused { error, .. } => Self::refused(error),
            ClientError::Unanswered { kind, why, .. } => {
                let (status, code, detail) = match kind {
                    Unanswered::TimedOut => (
                        StatusCode::GATEWAY_TIMEOUT,
                        "timeout",
                        "the service did not answer in time; retry (with the same Idempotency-Key for a command)"
                            .to_owned(),
                    ),
                    // The service's own message stays in the gateway's log (it may name
                    // internals); the caller learns that retrying is the remedy.
                    Unanswered::Transient => {
                        tracing::warn!(%why, "a service answered unavailable or internal after retries");
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            ErrorCode::Unavailable.as_str(),
                            "the service is unavailable (it said so after retries); retry later".to_owned(),
                        )
                    }
                    _ => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::Unavailable.as_str(),
                        format!("the service did not answer: {why}"),
                    ),
                };
                let mut problem = Self::new(status, code, detail);
                problem
                    .headers
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                problem
            }
            ClientError::Stopped { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable.as_str(),
                "the gateway is stopping",
            ),
            ClientError::Protocol { message, .. } => {
                tracing::error!(%message, "unreadable answer from a service");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::Internal.as_str(),
                    "a service answered something the gateway cannot read (logged)",
                )
            }
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Sets the request's path and correlation id.
    pub fn at(mut self, instance: &str, correlation_id: Option<&str>) -> Self {
        if self.instance.is_none() {
            self.instance = Some(instance.to_owned());
        }
        if self.correlation_id.is_none() {
            self.correlation_id = correlation_id.map(str::to_owned);
        }
        self
    }
}

/// The HTTP status of a refusal: the code decides, except where a reason is more precise.
pub fn status_of(code: ErrorCode, reason: ErrorReason) -> StatusCode {
    match (code, reason) {
        (_, ErrorReason::Version) => StatusCode::PRECONDITION_FAILED,
        (_, ErrorReason::CommandIdReused) => StatusCode::UNPROCESSABLE_ENTITY,
        (ErrorCode::ValidationFailed, ErrorReason::MalformedJson | ErrorReason::NotAnObject) => StatusCode::BAD_REQUEST,
        (ErrorCode::ValidationFailed, _) => StatusCode::UNPROCESSABLE_ENTITY,
        (ErrorCode::NotFound, _) => StatusCode::NOT_FOUND,
        (ErrorCode::Conflict, _) => StatusCode::CONFLICT,
        (ErrorCode::InvalidState, _) => StatusCode::CONFLICT,
        (ErrorCode::Unauthorized, _) => StatusCode::FORBIDDEN,
        (ErrorCode::PayloadTooLarge, _) => StatusCode::PAYLOAD_TOO_LARGE,
        (ErrorCode::Stale, _) => StatusCode::SERVICE_UNAVAILABLE,
        (ErrorCode::Unavailable, _) => StatusCode::SERVICE_UNAVAILABLE,
        (ErrorCode::Internal, _) => StatusCode::BAD_GATEWAY,
    }
}

impl IntoResponse for Problem {
    fn into_response(mut self) -> Response {
        if let Some((path, correlation_id)) = crate::current_request() {
            self = self.at(&path, Some(&correlation_id));
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in &self.headers {
            response.headers_mut().insert(name, value.clone());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_client_or_service_status() {
        let reasons = [
            ErrorReason::MalformedJson,
            ErrorReason::MissingField,
            ErrorReason::NotFound,
            ErrorReason::Version,
            ErrorReason::MaxActiveRuns,
            ErrorReason::CommandIdReused,
            ErrorReason::InvalidState,
            ErrorReason::Unauthorized,
            ErrorReason::TooLarge,
            ErrorReason::NotReached,
            ErrorReason::Unavailable,
            ErrorReason::Internal,
        ];
        let statuses: Vec<u16> = reasons.iter().map(|r| status_of(r.code(), *r).as_u16()).collect();
        assert_eq!(statuses, [400, 422, 404, 412, 409, 422, 409, 403, 413, 503, 503, 502]);
        // Never a 500: what clients send is answered 4xx, what services fail 502/503/504.
        assert!(statuses.iter().all(|s| *s != 500));
    }

    #[test]
    fn a_refusal_keeps_its_field_and_facts() {
        let error = ErrorBody::at(ErrorReason::MissingField, "/name", "name is required").with("limit", 3);
        let problem = Problem::refused(&error).at("/api/v1/flexcore/pipelines", Some("c-1"));
        let json = serde_json::to_value(&problem).unwrap_or_default();
        assert_eq!(json["status"], 422);
        assert_eq!(json["code"], "validation_failed");
        assert_eq!(json["reason"], "missing_field");
        assert_eq!(json["errors"][0]["field"], "/name");
        assert_eq!(json["details"]["limit"], 3);
        assert_eq!(json["instance"], "/api/v1/flexcore/pipelines");
        assert_eq!(json["type"], "https://flexcore.dev/problems/validation_failed");
    }
}
