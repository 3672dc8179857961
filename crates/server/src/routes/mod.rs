//! The public API's routes.

pub mod admin;
pub mod agents;
pub mod exec;
pub mod exec_ws;
pub mod files;
pub mod network;
pub mod pools;
pub mod sandboxes;
pub mod sessions;
pub mod skills;
pub mod snapshots;
pub mod system;
pub mod templates;

use std::sync::Arc;

use reins_store::SandboxState;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::nodes::NodeConn;
use crate::state::App;

/// The node of the caller's live sandbox `id`. Another tenant's sandbox, and
/// an ended one, are 404: existence never leaks across tenants. A sandbox's
/// tenant and node never change, so once known they come from
/// [`App::places`] without a database read; whether it still runs or is
/// paused is the node's to answer (404, 409 `paused`).
pub async fn node_of(app: &App, auth: &Auth, id: &str) -> Result<String, ApiError> {
    if let Some((tenant, node)) = app.places.get(id) {
        return if tenant == auth.tenant() { Ok(node) } else { Err(ApiError::not_found("sandbox")) };
    }
    let row = app.store.sandbox(auth.tenant(), id).await.map_err(ApiError::or_not_found("sandbox"))?;
    if row.state == SandboxState::Ended {
        return Err(ApiError::not_found("sandbox"));
    }
    app.places.put(&row.id, &row.tenant_id, &row.node_id);
    Ok(row.node_id)
}

/// The connection to the node of the caller's live sandbox `id` (see [`node_of`]).
pub async fn running(app: &App, auth: &Auth, id: &str) -> Result<Arc<NodeConn>, ApiError> {
    app.nodes.get(&node_of(app, auth, id).await?)
}
