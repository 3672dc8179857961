//! Snapshots of sandboxes' files, sandboxes made from them, and forks.
//!
//! A snapshot is recorded (within the tenant's quota) before its node
//! captures it, and the record is removed again if the capture fails. It
//! lives on the node that took it: sandboxes made from it are placed there.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::Json;
use reins_api::node::{SnapshotInfo, TakeSnapshot};
use reins_api::v1::{self, CreateSandbox, Fork, Forked, SnapshotList};
use reins_api::ErrorBody;
use reins_store::{new_id, now_ms, SandboxState, SnapshotRow};

use super::sandboxes::{start, view as sandbox_view};
use crate::auth::Auth;
use crate::error::{ApiError, Body, Path};
use crate::state::{App, Shared};

/// Most sandboxes one fork makes.
const MAX_FORK: u32 = 32;

fn view(row: SnapshotRow) -> v1::Snapshot {
    v1::Snapshot {
        id: row.id,
        sandbox_id: row.sandbox_id,
        template: row.template,
        node_id: row.node_id,
        bytes: row.bytes,
        created_ms: row.created_ms,
    }
}

/// Snapshots the caller's live sandbox `id`.
async fn take(app: &App, auth: &Auth, id: &str) -> Result<SnapshotRow, ApiError> {
    let sb = app.store.sandbox(auth.tenant(), id).await.map_err(ApiError::or_not_found("sandbox"))?;
    if sb.state == SandboxState::Ended {
        return Err(ApiError::not_found("sandbox"));
    }
    let node = app.nodes.get(&sb.node_id)?;
    let mut row = SnapshotRow {
        id: new_id("snap"),
        tenant_id: sb.tenant_id.clone(),
        node_id: sb.node_id.clone(),
        sandbox_id: sb.id.clone(),
        template: sb.template.clone(),
        spec: sb.spec.clone(),
        bytes: 0,
        created_ms: now_ms(),
    };
    app.store.insert_snapshot(&row).await.map_err(|e| match e {
        reins_store::Error::Quota { limit } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "snapshot_quota",
            format!("the tenant holds {limit} snapshots, its limit: delete some first"),
        ),
        other => other.into(),
    })?;
    let taken: Result<SnapshotInfo, ApiError> = node
        .call(Method::POST, &format!("/sandboxes/{id}/snapshots"), Some(&TakeSnapshot { id: row.id.clone() }))
        .await;
    match taken {
        Ok(info) => {
            row.bytes = info.bytes as i64;
            app.store.set_snapshot_bytes(&row.id, row.bytes).await?;
            Ok(row)
        }
        Err(e) => {
            if let Err(d) = app.store.delete_snapshot(auth.tenant(), &row.id).await {
                tracing::warn!(snapshot = %row.id, error = %d, "removing the record of a failed snapshot");
            }
            Err(e)
        }
    }
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/snapshots", tag = "snapshots", params(("id" = String, Path)),
    responses((status = 201, body = v1::Snapshot), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
/// Captures the sandbox's files (its writable layer) as a snapshot; the
/// sandbox is frozen for the copy and then goes on. Processes and memory are not kept.
pub async fn create(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<v1::Snapshot>), ApiError> {
    Ok((StatusCode::CREATED, Json(view(take(&app, &auth, &id).await?))))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/fork", tag = "snapshots", params(("id" = String, Path)),
    request_body = Fork,
    responses((status = 201, body = Forked), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
/// A snapshot of the sandbox and `count` new sandboxes made from it, with
/// its template, limits, environment and network policy.
pub async fn fork(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Body(req): Body<Fork>,
) -> Result<(StatusCode, Json<Forked>), ApiError> {
    let count = req.count.unwrap_or(1);
    if !(1..=MAX_FORK).contains(&count) {
        return Err(ApiError::bad_request(format!("count must be between 1 and {MAX_FORK}")));
    }
    if let Some(t) = req.timeout_secs {
        super::sandboxes::timeout(&app, t)?;
    }
    let source = app.store.sandbox(auth.tenant(), &id).await.map_err(ApiError::or_not_found("sandbox"))?;
    let snap = take(&app, &auth, &id).await?;
    let create = CreateSandbox {
        snapshot: Some(snap.id.clone()),
        timeout_secs: req.timeout_secs,
        network: Some(super::network::stored(&source.network)),
        metadata: source.metadata.clone(),
        ..CreateSandbox::default()
    };
    let starts = (0..count).map(|_| start(&app, auth.tenant(), &create, Vec::new(), None));
    let mut sandboxes = Vec::new();
    let mut failure = None;
    for r in futures_util::future::join_all(starts).await {
        match r {
            Ok((row, token)) => sandboxes.push(v1::Sandbox { access_token: Some(token), ..sandbox_view(row) }),
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        // All or nothing: the ones made are released, the snapshot stays (it can be used or deleted).
        for sb in &sandboxes {
            if let Ok(row) = app.store.sandbox(auth.tenant(), &sb.id).await {
                let _ = super::sandboxes::release(&app, &row, reins_store::EndReason::Failed).await;
            }
        }
        return Err(e);
    }
    Ok((StatusCode::CREATED, Json(Forked { snapshot: view(snap), sandboxes })))
}

#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots",
    responses((status = 200, body = SnapshotList)), security(("api_key" = [])))]
pub async fn list(State(app): Shared, auth: Auth) -> Result<Json<SnapshotList>, ApiError> {
    let rows = app.store.snapshots(auth.tenant()).await?;
    Ok(Json(SnapshotList { items: rows.into_iter().map(view).collect() }))
}

#[utoipa::path(get, path = "/v1/snapshots/{id}", tag = "snapshots", params(("id" = String, Path)),
    responses((status = 200, body = v1::Snapshot), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn get(State(app): Shared, auth: Auth, Path(id): Path<String>) -> Result<Json<v1::Snapshot>, ApiError> {
    let row = app.store.snapshot(auth.tenant(), &id).await.map_err(ApiError::or_not_found("snapshot"))?;
    Ok(Json(view(row)))
}

#[utoipa::path(delete, path = "/v1/snapshots/{id}", tag = "snapshots", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("api_key" = [])))]
/// Deletes a snapshot: its node removes its files (layers still used by
/// sandboxes made from it stay until those end).
pub async fn delete(State(app): Shared, auth: Auth, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let row = app.store.snapshot(auth.tenant(), &id).await.map_err(ApiError::or_not_found("snapshot"))?;
    let node = app.nodes.get(&row.node_id)?;
    match node.call_empty(Method::DELETE, &format!("/snapshots/{id}"), None::<&()>).await {
        Ok(()) => {}
        Err(e) if e.status == StatusCode::NOT_FOUND => {}
        Err(e) => return Err(e),
    }
    app.store.delete_snapshot(auth.tenant(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
