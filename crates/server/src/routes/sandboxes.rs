//! Sandboxes: create, list, get, delete, timeout, pause, resume.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::Json;
use reins_api::v1::{self, CreateSandbox, ListSandboxes, SandboxList, SetTimeout};
use reins_api::ErrorBody;
use reins_store::{now_ms, sandbox_id, EndReason, NewSandbox, SandboxFilter, SandboxRow, SandboxState};
use reins_types::{validate_template_name, CpuQuota, EnvVar, Limits, SandboxSpec};

use super::{node_of, running};
use crate::auth::Auth;
use crate::error::{ApiError, Body, Path, Query};
use crate::state::{App, Shared};

const MIB: u64 = 1 << 20;

fn state(s: SandboxState) -> v1::SandboxState {
    match s {
        SandboxState::Running => v1::SandboxState::Running,
        SandboxState::Paused => v1::SandboxState::Paused,
        SandboxState::Hibernated => v1::SandboxState::Hibernated,
        SandboxState::Ended => v1::SandboxState::Ended,
    }
}

/// The API view of a stored sandbox.
pub fn view(row: SandboxRow) -> v1::Sandbox {
    let spec: SandboxSpec = serde_json::from_str(&row.spec).unwrap_or_default();
    v1::Sandbox {
        id: row.id,
        template: row.template,
        state: state(row.state),
        node_id: row.node_id,
        cpus: f64::from(spec.limits.cpu.millicpus()) / 1000.0,
        memory_mb: spec.limits.memory_bytes / MIB,
        pids: spec.limits.pids,
        disk_mb: spec.limits.disk_bytes / MIB,
        metadata: row.metadata,
        created_ms: row.created_ms,
        expires_ms: row.expires_ms,
        ended_ms: row.ended_ms,
        end_reason: row.end_reason,
        network: super::network::stored(&row.network),
        idle_timeout_secs: row.idle_timeout_ms.map(|ms| (ms / 1000) as u64),
        snapshot: row.snapshot_id,
        access_token: None,
    }
}

/// Checks a create request and turns it into a runtime spec and a timeout;
/// `base` is the spec of the snapshot it starts from (its template, limits
/// and environment, unless the request gives them).
pub fn validate(
    app: &App,
    req: &CreateSandbox,
    base: Option<&SandboxSpec>,
) -> Result<(SandboxSpec, Duration), ApiError> {
    let bad = |m: String| ApiError::bad_request(m);
    let template = match (&req.template, base) {
        (Some(t), Some(b)) if *t != b.template => {
            return Err(bad(format!("the snapshot is of template `{}`: leave `template` out", b.template)));
        }
        (Some(t), _) => t.clone(),
        (None, Some(b)) => b.template.clone(),
        (None, None) => "base".into(),
    };
    validate_template_name(&template).map_err(|e| bad(e.to_string()))?;
    let limits = limits_of(req.cpus, req.memory_mb, req.disk_mb, req.pids, base.map(|b| b.limits))?;
    if req.env.len() > 256 {
        return Err(bad("at most 256 environment variables".into()));
    }
    let mut env = base.map(|b| b.env.clone()).unwrap_or_default();
    for (k, v) in &req.env {
        if v.len() > 32 << 10 {
            return Err(bad(format!("environment variable {k} is longer than 32 KiB")));
        }
        let var = EnvVar::from_str(&format!("{k}={v}")).map_err(|e| bad(e.to_string()))?;
        env.retain(|e| e.name != var.name);
        env.push(var);
    }
    validate_metadata(&req.metadata)?;
    let timeout = match req.timeout_secs {
        Some(s) => timeout(app, s)?,
        None => app.limits.default_timeout,
    };
    if let Some(idle) = req.idle_timeout_secs {
        bounded(idle, 7 * 24 * 3600, "idle_timeout_secs")?;
    }
    Ok((SandboxSpec { template, limits, env, volumes: Vec::new(), timeout: None, layers: Vec::new() }, timeout))
}

/// Limits from a request's fields, each defaulting to `base` (or the defaults).
pub fn limits_of(
    cpus: Option<f64>,
    memory_mb: Option<u64>,
    disk_mb: Option<u64>,
    pids: Option<u32>,
    base: Option<Limits>,
) -> Result<Limits, ApiError> {
    let mut limits = base.unwrap_or_default();
    if let Some(cpus) = cpus {
        limits.cpu = CpuQuota::from_cpus(cpus)
            .ok_or_else(|| ApiError::bad_request("cpus must be between 0.01 and 1024".to_owned()))?;
    }
    if let Some(mb) = memory_mb {
        limits.memory_bytes = bounded(mb, 1 << 20, "memory_mb")? * MIB;
    }
    if let Some(mb) = disk_mb {
        limits.disk_bytes = bounded(mb, 1 << 20, "disk_mb")? * MIB;
    }
    if let Some(p) = pids {
        limits.pids = bounded(u64::from(p), 1 << 22, "pids")? as u32;
    }
    limits.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(limits)
}

fn bounded(v: u64, max: u64, what: &str) -> Result<u64, ApiError> {
    if v == 0 || v > max {
        return Err(ApiError::bad_request(format!("{what} must be between 1 and {max}")));
    }
    Ok(v)
}

pub fn timeout(app: &App, secs: u64) -> Result<Duration, ApiError> {
    let max = app.limits.max_timeout.as_secs();
    if secs == 0 || secs > max {
        return Err(ApiError::bad_request(format!("timeout_secs must be between 1 and {max}")));
    }
    Ok(Duration::from_secs(secs))
}

fn valid_label(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.contains([',', '=']) && !s.chars().any(char::is_control)
}

fn validate_metadata(m: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if m.len() > 64 {
        return Err(ApiError::bad_request("at most 64 metadata entries"));
    }
    for (k, v) in m {
        if !valid_label(k, 128) || !(v.is_empty() || valid_label(v, 1024)) {
            return Err(ApiError::bad_request(format!(
                "metadata `{k}`: keys have 1–128 and values up to 1024 characters, without `,`, `=` or control characters"
            )));
        }
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes", request_body = CreateSandbox,
    responses((status = 201, body = v1::Sandbox), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create(
    State(app): Shared,
    auth: Auth,
    Body(req): Body<CreateSandbox>,
) -> Result<(StatusCode, Json<v1::Sandbox>), ApiError> {
    let (row, token) = start(&app, auth.tenant(), &req, Vec::new(), None).await?;
    Ok((StatusCode::CREATED, Json(v1::Sandbox { access_token: Some(token), ..view(row) })))
}

/// Creates a sandbox of `tenant` with the node directories `mounts`, on
/// node `on` if given (where those directories are); returns its row and
/// its access token.
pub async fn start(
    app: &App,
    tenant: &str,
    req: &CreateSandbox,
    mounts: Vec<reins_api::node::Mount>,
    on: Option<&str>,
) -> Result<(SandboxRow, String), ApiError> {
    let snapshot = match &req.snapshot {
        Some(id) => Some(app.store.snapshot(tenant, id).await.map_err(ApiError::or_not_found("snapshot"))?),
        None => None,
    };
    let base: Option<SandboxSpec> = snapshot.as_ref().and_then(|s| serde_json::from_str(&s.spec).ok());
    let (spec, timeout) = validate(app, req, base.as_ref())?;
    let (network_view, policy) = super::network::validate(&req.network.clone().unwrap_or_default())?;
    let network = super::network::resolve(app, tenant, &network_view, policy).await?;
    if network.policy.mode == reins_types::NetMode::Open {
        tracing::info!(tenant = %tenant, "sandbox created with an open network");
    }
    // A snapshot lives on the node that took it.
    let on = snapshot.as_ref().map(|s| s.node_id.as_str()).or(on);
    let node = match on {
        Some(node) => app.nodes.get(node)?,
        None => app.nodes.pick(spec.limits.memory_bytes)?,
    };
    let id = sandbox_id();
    let (token, access) = crate::ingress::new_access(app, tenant, &id)?;
    let new = NewSandbox {
        id,
        access,
        tenant_id: tenant.to_owned(),
        node_id: node.id.clone(),
        template: spec.template.clone(),
        spec: serde_json::to_string(&spec).map_err(ApiError::internal)?,
        network: serde_json::to_string(&network_view).map_err(ApiError::internal)?,
        metadata: req.metadata.clone(),
        timeout_ms: timeout.as_millis() as i64,
        idle_timeout_ms: req.idle_timeout_secs.map(|s| s as i64 * 1000),
        snapshot_id: req.snapshot.clone(),
    };
    // The row and the sandbox are made at once. Whatever fails, the other is undone;
    // and after a crash in between the reconciler ends a row without a sandbox
    // (lost) and destroys a sandbox without a live row (orphan).
    let body = reins_api::node::CreateSandbox {
        id: new.id.clone(),
        spec,
        network,
        mounts,
        snapshot: req.snapshot.clone(),
        idle_timeout_secs: req.idle_timeout_secs,
    };
    let (row, started) =
        tokio::join!(app.store.insert_sandbox(&new), node.call_empty(Method::POST, "/sandboxes", Some(&body)));
    match (row, started) {
        (Ok(row), Ok(())) => {
            app.places.put(&row.id, &row.tenant_id, &row.node_id);
            Ok((row, token))
        }
        (Ok(row), Err(e)) => {
            app.store.end_sandbox(&row.id, EndReason::Failed).await?;
            Err(e)
        }
        (Err(e), started) => {
            if started.is_ok() {
                let path = format!("/sandboxes/{}", new.id);
                if let Err(d) = node.call_empty(Method::DELETE, &path, None::<&()>).await {
                    tracing::warn!(sandbox = %new.id, error = %d.message, "undoing a refused create; the reconciler will");
                }
            }
            Err(e.into())
        }
    }
}

#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes", params(ListSandboxes),
    responses((status = 200, body = SandboxList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(app): Shared,
    auth: Auth,
    Query(q): Query<ListSandboxes>,
) -> Result<Json<SandboxList>, ApiError> {
    let mut filter = SandboxFilter { limit: q.limit.unwrap_or(100), cursor: q.cursor, ..Default::default() };
    if !(1..=1000).contains(&filter.limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    for s in q.state.iter().flat_map(|s| s.split(',')).filter(|s| !s.is_empty()) {
        filter.states.push(SandboxState::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!("unknown state `{s}`: use running, paused, hibernated or ended"))
        })?);
    }
    for pair in q.metadata.iter().flat_map(|m| m.split(',')).filter(|s| !s.is_empty()) {
        let (k, v) =
            pair.split_once('=').ok_or_else(|| ApiError::bad_request("metadata filter is key=value[,key=value]"))?;
        filter.metadata.insert(k.to_owned(), v.to_owned());
    }
    let page = app.store.sandboxes(auth.tenant(), &filter).await.map_err(|e| match e {
        reins_store::Error::Conflict(m) => ApiError::bad_request(m),
        other => other.into(),
    })?;
    Ok(Json(SandboxList { items: page.items.into_iter().map(view).collect(), next_cursor: page.next }))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}", tag = "sandboxes", params(("id" = String, Path)),
    responses((status = 200, body = v1::Sandbox), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn get(State(app): Shared, auth: Auth, Path(id): Path<String>) -> Result<Json<v1::Sandbox>, ApiError> {
    let row = app.store.sandbox(auth.tenant(), &id).await.map_err(ApiError::or_not_found("sandbox"))?;
    Ok(Json(view(row)))
}

/// Ends a sandbox: the row is ended and the node destroys it at once (if
/// reachable; otherwise the reconciler destroys the orphan later).
pub async fn release(app: &App, row: &SandboxRow, reason: EndReason) -> Result<bool, ApiError> {
    release_at(app, &row.id, &row.node_id, reason).await
}

/// [`release`] by id and node; true when this call ended it.
async fn release_at(app: &App, id: &str, node_id: &str, reason: EndReason) -> Result<bool, ApiError> {
    let destroy = async {
        let Ok(node) = app.nodes.get(node_id) else { return };
        match node.call_empty(Method::DELETE, &format!("/sandboxes/{id}"), None::<&()>).await {
            Ok(()) => {}
            Err(e) if e.status == StatusCode::NOT_FOUND => {}
            // The reconciler removes it once the node is back.
            Err(e) => tracing::warn!(sandbox = %id, error = %e.message, "node did not destroy the sandbox"),
        }
    };
    app.places.forget(id);
    app.ingress.forget(id);
    let (ended, ()) = tokio::join!(app.store.end_sandbox(id, reason), destroy);
    Ok(ended?)
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}", tag = "sandboxes", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn delete(State(app): Shared, auth: Auth, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let node_id = node_of(&app, &auth, &id).await?;
    if !release_at(&app, &id, &node_id, EndReason::Deleted).await? {
        return Err(ApiError::not_found("sandbox"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/timeout", tag = "sandboxes", params(("id" = String, Path)),
    request_body = SetTimeout, responses((status = 200, body = v1::Sandbox), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn set_timeout(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Body(req): Body<SetTimeout>,
) -> Result<Json<v1::Sandbox>, ApiError> {
    let t = timeout(&app, req.timeout_secs)?;
    app.store
        .set_sandbox_expiry(auth.tenant(), &id, now_ms() + t.as_millis() as i64)
        .await
        .map_err(|_| ApiError::not_found("sandbox"))?;
    get(State(app), auth, Path(id)).await
}

/// Hibernates a sandbox whose timeout says `pause` (E2B's autoPause): its
/// files are kept for the hibernation retention, then it is released unless woken.
pub async fn hibernate_on_timeout(app: &App, row: &SandboxRow) -> Result<(), ApiError> {
    let node = app.nodes.get(&row.node_id)?;
    node.call_empty(Method::POST, &format!("/sandboxes/{}/hibernate", row.id), None::<&()>).await?;
    // Its timeout passed, so the expiry moves to the retention's end.
    app.store.mark_hibernated(&row.id, hibernation_end(app)).await?;
    Ok(())
}

fn hibernation_end(app: &App) -> i64 {
    now_ms() + app.limits.hibernate_retention.as_millis() as i64
}

async fn set_paused(app: &App, auth: &Auth, id: &str, pause: bool) -> Result<Json<v1::Sandbox>, ApiError> {
    let node = running(app, auth, id).await?;
    let row = app.store.sandbox(auth.tenant(), id).await.map_err(ApiError::or_not_found("sandbox"))?;
    if row.state == SandboxState::Hibernated {
        if pause {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "hibernated",
                "the sandbox is hibernated: nothing to pause",
            ));
        }
        // Resuming a hibernated sandbox wakes it.
        node.call_empty(Method::POST, &format!("/sandboxes/{id}/wake"), None::<&()>).await?;
        app.store.mark_woken(id).await?;
        return Ok(Json(view(app.store.sandbox(auth.tenant(), id).await?)));
    }
    let path = format!("/sandboxes/{id}/{}", if pause { "pause" } else { "resume" });
    node.call_empty(Method::POST, &path, None::<&()>).await?;
    let s = if pause { SandboxState::Paused } else { SandboxState::Running };
    app.store.set_sandbox_state(auth.tenant(), id, s).await.map_err(|_| ApiError::not_found("sandbox"))?;
    Ok(Json(view(app.store.sandbox(auth.tenant(), id).await?)))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/hibernate", tag = "sandboxes", params(("id" = String, Path)),
    responses((status = 200, body = v1::Sandbox), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
/// Hibernates a sandbox now: files kept, processes ended (running commands
/// are killed), memory freed. The next command, file request or ingress
/// request wakes it, as does `resume`.
pub async fn hibernate(State(app): Shared, auth: Auth, Path(id): Path<String>) -> Result<Json<v1::Sandbox>, ApiError> {
    let node = running(&app, &auth, &id).await?;
    node.call_empty(Method::POST, &format!("/sandboxes/{id}/hibernate"), None::<&()>).await?;
    app.store.mark_hibernated(&id, hibernation_end(&app)).await?;
    Ok(Json(view(app.store.sandbox(auth.tenant(), &id).await?)))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/pause", tag = "sandboxes", params(("id" = String, Path)),
    responses((status = 200, body = v1::Sandbox), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn pause(State(app): Shared, auth: Auth, Path(id): Path<String>) -> Result<Json<v1::Sandbox>, ApiError> {
    set_paused(&app, &auth, &id, true).await
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/resume", tag = "sandboxes", params(("id" = String, Path)),
    responses((status = 200, body = v1::Sandbox), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn resume(State(app): Shared, auth: Auth, Path(id): Path<String>) -> Result<Json<v1::Sandbox>, ApiError> {
    set_paused(&app, &auth, &id, false).await
}

use axum::extract::State;
