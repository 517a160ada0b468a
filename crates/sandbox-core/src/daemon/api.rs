//! Types of the daemon API shared by server and client.

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use crate::manager::ManagerError;
use crate::state::StoreError;
use crate::templates::TemplateError;

/// Version of the HTTP/JSON API (the `/v1/` prefix).
pub const API_VERSION: u32 = 1;

/// `GET /v1/version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Moat version of the daemon.
    pub version: String,
    /// API version.
    pub api: u32,
    /// Daemon process id.
    pub pid: u32,
    /// Identity of the daemon's executable (path, size, mtime): a client built
    /// differently restarts the daemon, so the two never disagree about the API.
    #[serde(default)]
    pub build: String,
}

impl VersionInfo {
    /// This process's version info.
    pub fn current() -> VersionInfo {
        VersionInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            api: API_VERSION,
            pid: std::process::id(),
            build: build_id(),
        }
    }
}

/// This executable's identity: path, size and modification time (cheap: one `stat`).
pub fn build_id() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(exe) = std::env::current_exe() else { return String::new() };
    match std::fs::metadata(&exe) {
        Ok(m) => format!("{}:{}:{}.{}", exe.display(), m.size(), m.mtime(), m.mtime_nsec()),
        Err(_) => exe.display().to_string(),
    }
}

/// An API failure: an HTTP status plus `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// HTTP status code.
    #[serde(skip, default)]
    pub status: u16,
    /// The error body.
    pub error: ErrorBody,
}

/// The body of an [`ApiError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `name_taken`, `invalid`.
    pub code: String,
    /// What went wrong and what to do, with its causes.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError { status: status.as_u16(), error: ErrorBody { code: code.into(), message: message.into() } }
    }

    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error.message)
    }
}

impl std::error::Error for ApiError {}

/// An error and its causes on one line, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> ApiError {
        let (status, code) = match &e {
            ManagerError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ManagerError::Spec(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ManagerError::Share(_) => (StatusCode::UNPROCESSABLE_ENTITY, "protected_share"),
            ManagerError::Disk(_) => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
            ManagerError::Store(StoreError::NameTaken(_)) => (StatusCode::CONFLICT, "name_taken"),
            ManagerError::Backend(_) => (StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable"),
            ManagerError::Images(_) => (StatusCode::SERVICE_UNAVAILABLE, "images_unavailable"),
            ManagerError::StartFailed { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "start_failed"),
            ManagerError::StopTimeout(_) => (StatusCode::INTERNAL_SERVER_ERROR, "stop_timeout"),
            ManagerError::Checkpoint(_) => (StatusCode::CONFLICT, "checkpoint"),
            ManagerError::Template(t) => template_status(t),
            ManagerError::Store(_) | ManagerError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, error_chain(&e))
    }
}

fn template_status(e: &TemplateError) -> (StatusCode, &'static str) {
    use std::io::ErrorKind;
    match e {
        TemplateError::NotFound(_) => (StatusCode::NOT_FOUND, "no_template"),
        TemplateError::Exists(_) => (StatusCode::CONFLICT, "template_exists"),
        TemplateError::InUse { .. } => (StatusCode::CONFLICT, "in_use"),
        TemplateError::Running(_) | TemplateError::Unclean { .. } => (StatusCode::CONFLICT, "running"),
        TemplateError::ParentGone { .. } => (StatusCode::CONFLICT, "template_gone"),
        TemplateError::OtherBase { .. } => (StatusCode::CONFLICT, "other_base"),
        TemplateError::Archive { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "bad_archive"),
        TemplateError::Name(_)
        | TemplateError::Shipped { .. }
        | TemplateError::OtherAgent { .. }
        | TemplateError::TooManyLayers { .. }
        | TemplateError::Manifest { .. }
        | TemplateError::NoLaunch(_)
        | TemplateError::Program(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        TemplateError::Images { .. } => (StatusCode::SERVICE_UNAVAILABLE, "images_unavailable"),
        TemplateError::Zstd(_) => (StatusCode::SERVICE_UNAVAILABLE, "zstd_unavailable"),
        TemplateError::NoSpace { .. } => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
        TemplateError::Io { source, .. } => match source.kind() {
            ErrorKind::NotFound | ErrorKind::AlreadyExists | ErrorKind::PermissionDenied | ErrorKind::Other => {
                (StatusCode::UNPROCESSABLE_ENTITY, "bad_file")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        },
    }
}
