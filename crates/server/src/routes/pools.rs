//! Warm pools (admin): per template and shape, sandboxes every node keeps
//! started ahead. The control plane stores the list and sends it whole to
//! each node at connection and after every change; nodes report how full
//! their pools are in their status.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::Json;
use reins_api::node::PoolSpec;
use reins_api::v1::{self, PoolList, PutPool};
use reins_api::ErrorBody;
use reins_store::PoolRow;
use reins_types::Limits;

use super::sandboxes::limits_of;
use crate::auth::Auth;
use crate::error::{ApiError, Body, Path, Query};
use crate::nodes::NodeConn;
use crate::state::{App, Shared};

/// Most sandboxes one pool keeps on a node.
const MAX_POOL: u32 = 1000;

/// A key of a shape, unique per template.
fn shape(l: &Limits) -> String {
    format!("c{}-m{}-p{}-d{}", l.cpu.millicpus(), l.memory_bytes >> 20, l.pids, l.disk_bytes >> 20)
}

fn spec(row: &PoolRow) -> Option<PoolSpec> {
    let limits = serde_json::from_str(&row.limits).ok()?;
    Some(PoolSpec { template: row.template.clone(), limits, min: row.min as u32, max: row.max as u32 })
}

/// Sends the whole pool list to one node.
pub async fn push_to(app: &App, node: &NodeConn) {
    let specs: Vec<PoolSpec> = match app.store.pools().await {
        Ok(rows) => rows.iter().filter_map(spec).collect(),
        Err(e) => return tracing::warn!(error = %e, "reading warm pools"),
    };
    if let Err(e) = node.call_empty(Method::PUT, "/pools", Some(&specs)).await {
        tracing::warn!(node = %node.id, error = %e.message, "sending warm pools to a node");
    }
}

async fn push_all(app: &App) {
    for node in app.nodes.all() {
        push_to(app, &node).await;
    }
}

fn view(app: &App, row: &PoolRow) -> v1::Pool {
    let limits: Limits = serde_json::from_str(&row.limits).unwrap_or_default();
    let (mut ready, mut target, mut claims) = (0, 0, 0);
    for node in app.nodes.all() {
        let Some(status) = node.status() else { continue };
        for p in status.pools.iter().filter(|p| p.template == row.template && p.limits == limits) {
            ready += p.ready;
            target += p.target;
            claims += p.claims;
        }
    }
    v1::Pool {
        template: row.template.clone(),
        cpus: f64::from(limits.cpu.millicpus()) / 1000.0,
        memory_mb: limits.memory_bytes >> 20,
        pids: limits.pids,
        disk_mb: limits.disk_bytes >> 20,
        min: row.min as u32,
        max: row.max as u32,
        ready,
        target,
        claims,
    }
}

/// A pool of a template no connected node has would only fail to fill: 404.
/// (`base` is assembled by each node on first use.)
async fn known_template(app: &App, name: &str) -> Result<(), ApiError> {
    let nodes = app.nodes.all();
    if name == "base" {
        return Ok(());
    }
    for node in &nodes {
        let list: Vec<v1::Template> = node.call(Method::GET, "/templates", None::<&()>).await?;
        if list.iter().any(|t| t.name == name) {
            return Ok(());
        }
    }
    if nodes.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "template_not_found",
        format!("no node has template `{name}`: import it first (`reins template import`)"),
    ))
}

#[utoipa::path(put, path = "/v1/pools/{template}", tag = "pools", params(("template" = String, Path)),
    request_body = PutPool,
    responses((status = 200, body = v1::Pool), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = [])))]
/// Creates or changes the warm pool of a template and shape (admin).
pub async fn put(
    State(app): Shared,
    auth: Auth,
    Path(template): Path<String>,
    Body(req): Body<PutPool>,
) -> Result<Json<v1::Pool>, ApiError> {
    auth.require_admin()?;
    reins_types::validate_template_name(&template).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if req.min > req.max || req.max > MAX_POOL {
        return Err(ApiError::bad_request(format!("need min ≤ max ≤ {MAX_POOL}")));
    }
    let limits = limits_of(req.cpus, req.memory_mb, req.disk_mb, req.pids, None)?;
    known_template(&app, &template).await?;
    let json = serde_json::to_string(&limits).map_err(ApiError::internal)?;
    let row = app.store.put_pool(&template, &shape(&limits), &json, i64::from(req.min), i64::from(req.max)).await?;
    push_all(&app).await;
    Ok(Json(view(&app, &row)))
}

#[utoipa::path(get, path = "/v1/pools", tag = "pools",
    responses((status = 200, body = PoolList), (status = 403, body = ErrorBody)), security(("api_key" = [])))]
/// Every warm pool, with how many sandboxes the nodes hold ready (admin).
pub async fn list(State(app): Shared, auth: Auth) -> Result<Json<PoolList>, ApiError> {
    auth.require_admin()?;
    let rows = app.store.pools().await?;
    Ok(Json(PoolList { items: rows.iter().map(|r| view(&app, r)).collect() }))
}

/// The shape of `DELETE /v1/pools/{template}` (defaults as for a create).
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PoolShape {
    pub cpus: Option<f64>,
    pub memory_mb: Option<u64>,
    pub pids: Option<u32>,
    pub disk_mb: Option<u64>,
}

#[utoipa::path(delete, path = "/v1/pools/{template}", tag = "pools", params(("template" = String, Path), PoolShape),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
/// Removes the warm pool of a template and shape; its ready sandboxes are destroyed (admin).
pub async fn delete(
    State(app): Shared,
    auth: Auth,
    Path(template): Path<String>,
    Query(q): Query<PoolShape>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let limits = limits_of(q.cpus, q.memory_mb, q.disk_mb, q.pids, None)?;
    if !app.store.delete_pool(&template, &shape(&limits)).await? {
        return Err(ApiError::not_found("pool"));
    }
    push_all(&app).await;
    Ok(StatusCode::NO_CONTENT)
}
