//! Sandboxes' network policies and tenants' secrets: validation, turning
//! secret names into credentials for the node, `PUT /v1/sandboxes/{id}/network`,
//! the network log, and `/v1/secrets`.

use axum::http::{Method, StatusCode};
use axum::Json;
use reins_api::v1::{List, Network, NetworkEvent, PutSecret, Secret};
use reins_api::ErrorBody;
use reins_store::SecretRow;
use reins_types::net::{HostPattern, NetMode, NetworkPolicy, Rule};
use reins_types::{Credential, SandboxNetwork};

use crate::auth::Auth;
use crate::error::{ApiError, Body, Path};
use crate::routes::running;
use crate::state::{App, Shared};

/// Most secrets one sandbox may use.
const MAX_SANDBOX_SECRETS: usize = 16;
const MAX_SECRET_LEN: usize = 8 << 10;

/// Checks a policy and returns it normalized (rules as they print) with its parsed form.
pub fn validate(n: &Network) -> Result<(Network, NetworkPolicy), ApiError> {
    let mode = NetMode::parse(&n.mode).ok_or_else(|| {
        ApiError::bad_request(format!("unknown network mode `{}`: use none, allowlist or open", n.mode))
    })?;
    let mut policy = NetworkPolicy::parse(mode, &n.allow, &n.deny).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if n.direct && mode == NetMode::None {
        return Err(ApiError::bad_request(
            "`direct` needs mode `allowlist` or `open`: with `none` the sandbox has no network",
        ));
    }
    policy.direct = n.direct;
    if n.secrets.len() > MAX_SANDBOX_SECRETS {
        return Err(ApiError::bad_request(format!("at most {MAX_SANDBOX_SECRETS} secrets per sandbox")));
    }
    let mut secrets = n.secrets.clone();
    secrets.sort();
    secrets.dedup();
    for s in &secrets {
        valid_name(s)?;
    }
    let normal = Network {
        mode: mode.as_str().to_owned(),
        allow: policy.allow.iter().map(Rule::to_string).collect(),
        deny: policy.deny.iter().map(Rule::to_string).collect(),
        secrets,
        direct: n.direct,
    };
    Ok((normal, policy))
}

fn valid_name(name: &str) -> Result<(), ApiError> {
    reins_types::is_plain_name(name).then_some(()).ok_or_else(|| {
        ApiError::bad_request(format!("invalid secret name `{name}`: 1–64 letters, digits, `_`, `-`, `.`"))
    })
}

/// What the node enforces: the policy and the named secrets, opened. An
/// unknown secret is refused, unless `skip_missing` (a secret deleted while
/// sandboxes use it: they go on without it).
pub async fn resolve_with(
    app: &App,
    tenant: &str,
    n: &Network,
    policy: NetworkPolicy,
    skip_missing: bool,
) -> Result<SandboxNetwork, ApiError> {
    let mut credentials = Vec::new();
    for name in &n.secrets {
        let row = match app.store.secret(tenant, name).await {
            Ok(row) => row,
            Err(reins_store::Error::NotFound) if skip_missing => continue,
            Err(reins_store::Error::NotFound) => {
                return Err(ApiError::bad_request(format!(
                    "unknown secret `{name}`: create it first (reins secret set {name} --host HOST)"
                )))
            }
            Err(other) => return Err(other.into()),
        };
        credentials.push(credential(app, &row)?);
    }
    Ok(SandboxNetwork { policy, credentials })
}

/// [`resolve_with`], refusing unknown secrets.
pub async fn resolve(app: &App, tenant: &str, n: &Network, policy: NetworkPolicy) -> Result<SandboxNetwork, ApiError> {
    resolve_with(app, tenant, n, policy, false).await
}

/// Sends the current form of secret `name` (or its absence) to every live
/// sandbox of the tenant that uses it, so a rotated key applies at once;
/// how many were updated.
async fn refresh_users(app: &App, tenant: &str, name: &str) -> Result<usize, ApiError> {
    let mut filter = reins_store::SandboxFilter { limit: 1000, ..Default::default() };
    let mut updated = 0;
    loop {
        let page = app.store.sandboxes(tenant, &filter).await?;
        for row in &page.items {
            let n = stored(&row.network);
            if !n.secrets.iter().any(|s| s == name) {
                continue;
            }
            let (normal, policy) = validate(&n)?;
            let network = resolve_with(app, tenant, &normal, policy, true).await?;
            let Ok(node) = app.nodes.get(&row.node_id) else { continue };
            match node.call_empty(Method::PUT, &format!("/sandboxes/{}/network", row.id), Some(&network)).await {
                Ok(()) => updated += 1,
                Err(e) => tracing::warn!(sandbox = %row.id, error = %e.message, "updating a sandbox's credentials"),
            }
        }
        match page.next {
            Some(next) => filter.cursor = Some(next),
            None => return Ok(updated),
        }
    }
}

/// Sends a sandbox's stored policy, with its secrets opened again, to its
/// node (which keeps credentials only in memory: after a node restart a
/// sandbox it woke from hibernation needs them again).
pub async fn resend(app: &App, node: &crate::nodes::NodeConn, row: &reins_store::SandboxRow) -> Result<(), ApiError> {
    let (normal, policy) = validate(&stored(&row.network))?;
    let network = resolve_with(app, &row.tenant_id, &normal, policy, true).await?;
    node.call_empty(Method::PUT, &format!("/sandboxes/{}/network", row.id), Some(&network)).await
}

fn credential(app: &App, row: &SecretRow) -> Result<Credential, ApiError> {
    let value = app.sealing.open(&row.tenant_id, &row.name, &row.sealed).map_err(ApiError::internal)?;
    let hosts: Vec<Rule> = serde_json::from_str(&row.hosts).map_err(ApiError::internal)?;
    Ok(Credential {
        name: row.name.clone(),
        hosts,
        header_name: row.header_name.clone(),
        header_value: row.header_format.replace("{secret}", &value),
    })
}

/// The stored policy of a sandbox row (`none` for rows from before policies).
pub fn stored(json: &str) -> Network {
    serde_json::from_str(json).unwrap_or_default()
}

#[utoipa::path(put, path = "/v1/sandboxes/{id}/network", tag = "network", params(("id" = String, Path)),
    request_body = Network,
    responses((status = 200, body = Network), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn set(
    axum::extract::State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Body(req): Body<Network>,
) -> Result<Json<Network>, ApiError> {
    let (normal, policy) = validate(&req)?;
    let node = running(&app, &auth, &id).await?;
    let network = resolve(&app, auth.tenant(), &normal, policy).await?;
    let json = serde_json::to_string(&normal).map_err(ApiError::internal)?;
    let before = app.store.sandbox(auth.tenant(), &id).await.map_err(ApiError::or_not_found("sandbox"))?.network;
    app.store.set_sandbox_network(auth.tenant(), &id, &json).await.map_err(ApiError::or_not_found("sandbox"))?;
    if let Err(e) = node.call_empty(Method::PUT, &format!("/sandboxes/{id}/network"), Some(&network)).await {
        // The node kept the old policy: so does the record.
        if let Err(undo) = app.store.set_sandbox_network(auth.tenant(), &id, &before).await {
            tracing::error!(sandbox = %id, error = %undo, "restoring the network policy after a failed change");
        }
        return Err(e);
    }
    tracing::info!(sandbox = %id, tenant = %auth.tenant(), mode = %normal.mode, allow = ?normal.allow,
        deny = ?normal.deny, secrets = ?normal.secrets, "network policy changed");
    Ok(Json(normal))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/network/log", tag = "network", params(("id" = String, Path)),
    responses((status = 200, body = List<NetworkEvent>), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn log(
    axum::extract::State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<List<NetworkEvent>>, ApiError> {
    // Ended sandboxes keep their log (until the row is purged).
    let row = app.store.sandbox(auth.tenant(), &id).await.map_err(ApiError::or_not_found("sandbox"))?;
    if let Ok(node) = app.nodes.get(&row.node_id) {
        crate::netlog::collect(&app, &node).await;
    }
    let rows = app.store.network_events(auth.tenant(), &id, 1000).await?;
    let items = rows
        .into_iter()
        .filter_map(|r| serde_json::from_str::<reins_types::NetEvent>(&r.event).ok())
        .map(|e| NetworkEvent::of(&id, auth.tenant(), e))
        .collect();
    Ok(Json(List { items }))
}

fn secret_view(row: SecretRow) -> Secret {
    let hosts: Vec<String> = serde_json::from_str(&row.hosts).unwrap_or_default();
    Secret {
        name: row.name,
        hosts,
        header: row.header_name,
        format: row.header_format,
        created_ms: row.created_ms,
        updated_ms: row.updated_ms,
    }
}

/// Checks a secret: its hosts are domain rules, its header a plain request
/// header, its formatted value a valid header value.
fn validate_secret(req: &PutSecret) -> Result<(Vec<Rule>, String, String), ApiError> {
    let bad = |m: String| ApiError::bad_request(m);
    if req.value.is_empty() || req.value.len() > MAX_SECRET_LEN {
        return Err(bad(format!("the value must have 1 to {MAX_SECRET_LEN} bytes")));
    }
    if req.hosts.is_empty() || req.hosts.len() > 32 {
        return Err(bad("a secret is bound to 1 to 32 hosts".into()));
    }
    let hosts =
        req.hosts.iter().map(|h| h.parse::<Rule>()).collect::<Result<Vec<_>, _>>().map_err(|e| bad(e.to_string()))?;
    if let Some(r) = hosts.iter().find(|r| matches!(r.host, HostPattern::Net(_))) {
        return Err(bad(format!("`{r}`: secrets are bound to domain names (TLS needs one), not addresses")));
    }
    let header = req.header.clone().unwrap_or_else(|| "Authorization".into());
    let forbidden = ["host", "connection", "content-length", "transfer-encoding", "upgrade", "te", "trailer"];
    if http::HeaderName::from_bytes(header.as_bytes()).is_err()
        || forbidden.contains(&header.to_ascii_lowercase().as_str())
    {
        return Err(bad(format!("`{header}` cannot carry a secret: use a header such as Authorization or x-api-key")));
    }
    let format = req.format.clone().unwrap_or_else(|| "Bearer {secret}".into());
    if !format.contains("{secret}") {
        return Err(bad("the format must contain `{secret}`".into()));
    }
    if http::HeaderValue::from_str(&format.replace("{secret}", &req.value)).is_err() {
        return Err(bad(
            "the value (in its format) is not a valid header value: no line breaks or control characters".into()
        ));
    }
    Ok((hosts, header, format))
}

#[utoipa::path(put, path = "/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)),
    request_body = PutSecret,
    responses((status = 200, body = Secret), (status = 400, body = ErrorBody)), security(("api_key" = [])))]
pub async fn put_secret(
    axum::extract::State(app): Shared,
    auth: Auth,
    Path(name): Path<String>,
    Body(req): Body<PutSecret>,
) -> Result<Json<Secret>, ApiError> {
    valid_name(&name)?;
    let (hosts, header, format) = validate_secret(&req)?;
    let sealed = app.sealing.seal(auth.tenant(), &name, &req.value).map_err(ApiError::internal)?;
    let row = SecretRow {
        tenant_id: auth.tenant().to_owned(),
        name,
        hosts: serde_json::to_string(&hosts).map_err(ApiError::internal)?,
        header_name: header,
        header_format: format,
        sealed,
        created_ms: 0,
        updated_ms: 0,
    };
    let row = app.store.put_secret(&row).await?;
    let updated = refresh_users(&app, auth.tenant(), &row.name).await?;
    tracing::info!(tenant = %row.tenant_id, secret = %row.name, sandboxes = updated, "secret stored");
    Ok(Json(secret_view(row)))
}

#[utoipa::path(get, path = "/v1/secrets", tag = "secrets",
    responses((status = 200, body = List<Secret>)), security(("api_key" = [])))]
pub async fn list_secrets(axum::extract::State(app): Shared, auth: Auth) -> Result<Json<List<Secret>>, ApiError> {
    let rows = app.store.secrets(auth.tenant()).await?;
    Ok(Json(List { items: rows.into_iter().map(secret_view).collect() }))
}

#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn delete_secret(
    axum::extract::State(app): Shared,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.store.delete_secret(auth.tenant(), &name).await.map_err(ApiError::or_not_found("secret"))?;
    let updated = refresh_users(&app, auth.tenant(), &name).await?;
    tracing::info!(tenant = %auth.tenant(), secret = %name, sandboxes = updated, "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}
