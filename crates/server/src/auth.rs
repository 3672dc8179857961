//! API keys on requests: `Authorization: Bearer KEY` or `X-API-Key: KEY`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use reins_store::Principal;

use crate::error::ApiError;
use crate::state::App;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl Auth {
    pub fn tenant(&self) -> &str {
        &self.0.tenant_id
    }

    /// Fails with 403 unless the key is an admin key.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.0.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }
}

fn presented(parts: &Parts) -> Option<&str> {
    let h = &parts.headers;
    if let Some(v) = h.get("authorization").and_then(|v| v.to_str().ok()) {
        return v.strip_prefix("Bearer ").map(str::trim);
    }
    h.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

impl FromRequestParts<Arc<App>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let key = presented(parts).ok_or_else(|| {
            unauthorized("missing API key: send `Authorization: Bearer KEY` (see `reins key create`)")
        })?;
        if key.is_empty() || key.len() > 200 {
            return Err(unauthorized("invalid API key"));
        }
        match app.store.authenticate(key).await? {
            Some(p) => Ok(Self(p)),
            None => Err(unauthorized("invalid or revoked API key")),
        }
    }
}
