//! Node errors as HTTP answers with an [`ErrorBody`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use reins_api::ErrorBody;
use reins_sandbox::{Error as SbError, FsErrorKind};

/// A failed node request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such sandbox")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { code: self.code.into(), message: self.message })).into_response()
    }
}

impl From<SbError> for ApiError {
    fn from(e: SbError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            SbError::TemplateNotFound(_) => (StatusCode::NOT_FOUND, "template_not_found"),
            SbError::Limits(_) | SbError::Spec(_) | SbError::Invalid(_) | SbError::VolumeNotFound(_) => {
                (StatusCode::BAD_REQUEST, "invalid")
            }
            SbError::Template(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_template"),
            SbError::Capacity(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_capacity"),
            SbError::Gone | SbError::Timeout => (StatusCode::NOT_FOUND, "not_found"),
            SbError::Exec(_) => (StatusCode::UNPROCESSABLE_ENTITY, "exec_failed"),
            SbError::Fs(fs) => match fs.kind {
                FsErrorKind::NotFound => (StatusCode::NOT_FOUND, "file_not_found"),
                FsErrorKind::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
                FsErrorKind::AlreadyExists => (StatusCode::CONFLICT, "file_exists"),
                FsErrorKind::NotADirectory => (StatusCode::BAD_REQUEST, "not_a_directory"),
                FsErrorKind::IsADirectory => (StatusCode::BAD_REQUEST, "is_a_directory"),
                FsErrorKind::NotEmpty => (StatusCode::CONFLICT, "directory_not_empty"),
                FsErrorKind::NoSpace => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
                FsErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_path"),
                FsErrorKind::Busy => (StatusCode::CONFLICT, "busy"),
                FsErrorKind::Other => (StatusCode::INTERNAL_SERVER_ERROR, "file_error"),
            },
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "node_error"),
        };
        if status.is_server_error() {
            tracing::error!(error = %message, "sandbox runtime error");
        }
        Self { status, code, message }
    }
}
