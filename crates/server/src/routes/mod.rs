//! The public API's routes.

pub mod admin;
pub mod exec;
pub mod files;
pub mod sandboxes;
pub mod system;

use std::sync::Arc;

use axum::http::StatusCode;
use reins_store::{SandboxRow, SandboxState};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::nodes::NodeConn;
use crate::state::App;

/// The caller's live sandbox `id` and its node. Another tenant's sandbox,
/// and an ended one, are 404: existence never leaks across tenants.
pub async fn live(app: &App, auth: &Auth, id: &str) -> Result<(SandboxRow, Arc<NodeConn>), ApiError> {
    let row = app.store.sandbox(auth.tenant(), id).await.map_err(|e| match e {
        reins_store::Error::NotFound => ApiError::not_found("sandbox"),
        other => other.into(),
    })?;
    if row.state == SandboxState::Ended {
        return Err(ApiError::not_found("sandbox"));
    }
    let node = app.nodes.get(&row.node_id)?;
    Ok((row, node))
}

/// The node of the caller's sandbox `id`, for a command or file call. The
/// node refuses a paused sandbox (409) and one it no longer has (404).
pub async fn running(app: &App, auth: &Auth, id: &str) -> Result<((), Arc<NodeConn>), ApiError> {
    if let Some((tenant, node)) = app.places.get(id) {
        if tenant != auth.tenant() {
            return Err(ApiError::not_found("sandbox"));
        }
        return Ok(((), app.nodes.get(&node)?));
    }
    let (row, node) = live(app, auth, id).await?;
    if row.state == SandboxState::Paused {
        return Err(ApiError::new(StatusCode::CONFLICT, "paused", "the sandbox is paused: resume it first"));
    }
    app.places.put(&row.id, &row.tenant_id, &row.node_id);
    Ok(((), node))
}
