//! Tenants, API keys and nodes.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use reins_api::node::{JoinRequest, JoinResponse};
use reins_api::v1::{self, CreateKey, CreateTenant, CreatedKey, JoinToken, Key, List, Tenant};
use reins_api::ErrorBody;
use reins_store::{new_id, now_ms, ApiKey, Node};

use crate::auth::Auth;
use crate::error::{ApiError, Body, Path, Query};
use crate::state::Shared;

/// How long a node join token stays valid.
const JOIN_TTL_SECS: u64 = 3600;

fn tenant(t: reins_store::Tenant) -> Tenant {
    Tenant { id: t.id, name: t.name, max_sandboxes: t.max_sandboxes, active: t.active, created_ms: t.created_ms }
}

fn key(k: ApiKey) -> Key {
    Key {
        id: k.id,
        tenant_id: k.tenant_id,
        name: k.name,
        prefix: k.prefix,
        admin: k.admin,
        created_ms: k.created_ms,
        revoked_ms: k.revoked_ms,
    }
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = Tenant), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create_tenant(
    State(app): Shared,
    auth: Auth,
    Body(req): Body<CreateTenant>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    auth.require_admin()?;
    if !valid_name(&req.name) {
        return Err(ApiError::bad_request("tenant name: 1–64 letters, digits, `.`, `_` or `-`"));
    }
    if req.max_sandboxes.is_some_and(|m| !(1..=1_000_000).contains(&m)) {
        return Err(ApiError::bad_request("max_sandboxes must be between 1 and 1000000"));
    }
    let t = app.store.create_tenant(&req.name, req.max_sandboxes.map(i64::from)).await?;
    Ok((StatusCode::CREATED, Json(tenant(t))))
}

#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    responses((status = 200, body = List<Tenant>), (status = 403, body = ErrorBody)), security(("api_key" = [])))]
pub async fn list_tenants(State(app): Shared, auth: Auth) -> Result<Json<List<Tenant>>, ApiError> {
    auth.require_admin()?;
    Ok(Json(List { items: app.store.tenants().await?.into_iter().map(tenant).collect() }))
}

#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create_key(
    State(app): Shared,
    auth: Auth,
    Body(req): Body<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    if req.name.is_empty() || req.name.len() > 128 || req.name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("key name: 1–128 characters, no control characters"));
    }
    let tenant = req.tenant_id.unwrap_or_else(|| auth.tenant().to_owned());
    if (tenant != auth.tenant() || req.admin) && !auth.0.admin {
        return Err(ApiError::forbidden());
    }
    let (k, secret) =
        app.store.create_key(&tenant, &req.name, req.admin).await.map_err(ApiError::or_not_found("tenant"))?;
    Ok((StatusCode::CREATED, Json(CreatedKey { key: key(k), secret })))
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys", params(("tenant_id" = Option<String>, Query, description = "admin keys only")),
    responses((status = 200, body = List<Key>), (status = 403, body = ErrorBody)), security(("api_key" = [])))]
pub async fn list_keys(
    State(app): Shared,
    auth: Auth,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<List<Key>>, ApiError> {
    let tenant = scoped_tenant(&auth, &q)?;
    Ok(Json(List { items: app.store.keys(&tenant).await?.into_iter().map(key).collect() }))
}

fn scoped_tenant(auth: &Auth, q: &HashMap<String, String>) -> Result<String, ApiError> {
    if let Some(unknown) = q.keys().find(|k| *k != "tenant_id") {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", format!("unknown parameter `{unknown}`")));
    }
    match q.get("tenant_id") {
        Some(t) if t != auth.tenant() => {
            auth.require_admin()?;
            Ok(t.clone())
        }
        _ => Ok(auth.tenant().to_owned()),
    }
}

#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path), ("tenant_id" = Option<String>, Query)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn revoke_key(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let tenant = scoped_tenant(&auth, &q)?;
    app.store.revoke_key(&tenant, &id).await.map_err(ApiError::or_not_found("key"))?;
    app.keys.forget(&id);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/nodes/tokens", tag = "nodes",
    responses((status = 201, body = JoinToken), (status = 403, body = ErrorBody)), security(("api_key" = [])))]
pub async fn create_join_token(State(app): Shared, auth: Auth) -> Result<(StatusCode, Json<JoinToken>), ApiError> {
    auth.require_admin()?;
    let token = app.store.create_join_token(JOIN_TTL_SECS as i64 * 1000).await?;
    Ok((StatusCode::CREATED, Json(JoinToken { token, ttl_secs: JOIN_TTL_SECS })))
}

#[utoipa::path(get, path = "/v1/nodes", tag = "nodes",
    responses((status = 200, body = List<v1::Node>), (status = 403, body = ErrorBody)), security(("api_key" = [])))]
pub async fn list_nodes(State(app): Shared, auth: Auth) -> Result<Json<List<v1::Node>>, ApiError> {
    auth.require_admin()?;
    let connected: Vec<String> = app.nodes.all().iter().map(|n| n.id.clone()).collect();
    let items = app
        .store
        .nodes()
        .await?
        .into_iter()
        .map(|n| v1::Node {
            connected: connected.contains(&n.id),
            id: n.id,
            name: n.name,
            joined_ms: n.joined_ms,
            seen_ms: n.seen_ms,
        })
        .collect();
    Ok(Json(List { items }))
}

#[utoipa::path(post, path = "/v1/nodes/join", tag = "nodes", request_body = JoinRequest,
    responses((status = 200, body = JoinResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn join(State(app): Shared, Body(req): Body<JoinRequest>) -> Result<Json<JoinResponse>, ApiError> {
    if !valid_name(&req.name) {
        return Err(ApiError::bad_request("node name: 1–64 letters, digits, `.`, `_` or `-`"));
    }
    let fp = reins_tls::fingerprint_pem(&req.cert_pem).map_err(|e| ApiError::bad_request(format!("cert_pem: {e}")))?;
    let node = Node { id: new_id("node"), name: req.name, cert_sha256: fp, joined_ms: now_ms(), seen_ms: now_ms() };
    app.store.join_node(&req.token, &node).await.map_err(|e| match e {
        reins_store::Error::NotFound => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid, used or expired join token: create one with `reins node token`",
        ),
        other => other.into(),
    })?;
    tracing::info!(node = %node.id, name = %node.name, "node joined");
    Ok(Json(JoinResponse {
        node_id: node.id,
        gateway: app.gateway_addr.clone(),
        gateway_cert_pem: app.gateway_cert_pem.clone(),
    }))
}
