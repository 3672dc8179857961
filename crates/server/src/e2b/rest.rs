//! E2B's REST API (what the SDKs call at `E2B_API_URL`), mapped onto Reins'
//! own sandboxes: `X-API-KEY` is a Reins API key and tenants apply. Errors
//! are E2B's body, `{"code": <HTTP status>, "message": …}`.

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use reins_api::v1::{CreateSandbox, Network};
use reins_store::{SandboxFilter, SandboxRow, SandboxState};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Auth;
use crate::error::{ApiError, Path};
use crate::routes::sandboxes;
use crate::state::{App, Shared};

/// The envd version Reins reports: the SDK turns features on by it.
pub const ENVD_VERSION: &str = "0.5.7";
const CLIENT_ID: &str = "reins";

/// An error in E2B's shape.
#[derive(Debug)]
pub struct E2bError(pub ApiError);

impl From<ApiError> for E2bError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<reins_store::Error> for E2bError {
    fn from(e: reins_store::Error) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for E2bError {
    fn into_response(self) -> Response {
        let e = self.0;
        let mut resp = (e.status, Json(json!({"code": e.status.as_u16(), "message": e.message, "error_code": e.code})))
            .into_response();
        if let Some(secs) = e.retry_after {
            resp.headers_mut().insert("retry-after", HeaderValue::from(secs));
        }
        resp
    }
}

/// The caller, by `X-API-KEY` (or `Authorization: Bearer`), with E2B's 401.
#[derive(Debug)]
pub struct E2bAuth(pub Auth);

impl FromRequestParts<std::sync::Arc<App>> for E2bAuth {
    type Rejection = E2bError;

    async fn from_request_parts(parts: &mut Parts, app: &std::sync::Arc<App>) -> Result<Self> {
        Auth::from_request_parts(parts, app).await.map(Self).map_err(E2bError)
    }
}

type Result<T> = std::result::Result<T, E2bError>;

/// `NewSandbox` (v1) and `NewSandboxV2`; fields Reins does not serve are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: String,
    timeout: Option<u64>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    env_vars: Option<BTreeMap<String, String>>,
    #[serde(default)]
    auto_pause: Option<bool>,
    #[serde(rename = "allow_internet_access", default)]
    allow_internet_access: Option<bool>,
}

/// E2B's `Sandbox` (create and connect answers).
fn created(row: &SandboxRow, token: &str) -> Value {
    json!({
        "sandboxID": row.id, "templateID": row.template, "alias": row.template, "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION, "envdAccessToken": token, "trafficAccessToken": null, "domain": null,
    })
}

pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn state(s: SandboxState) -> &'static str {
    match s {
        // E2B has one paused state: frozen (pause) and hibernated (autoPause) are both it.
        SandboxState::Paused | SandboxState::Hibernated => "paused",
        _ => "running",
    }
}

/// E2B's `ListedSandbox`, and with `detail` the `SandboxDetail` fields.
fn listed(row: &SandboxRow) -> Value {
    let v = sandboxes::view(row.clone());
    json!({
        "sandboxID": row.id, "templateID": row.template, "alias": row.template, "clientID": CLIENT_ID,
        "startedAt": rfc3339(row.created_ms), "endAt": rfc3339(row.expires_ms), "envdVersion": ENVD_VERSION,
        "cpuCount": v.cpus.ceil() as u64, "memoryMB": v.memory_mb, "diskSizeMB": v.disk_mb,
        "state": state(row.state), "metadata": row.metadata,
    })
}

/// The E2B id in a path: SDK 1.x sent `{sandboxID}-{clientID}`.
fn short(id: &str) -> String {
    id.split('-').next().unwrap_or_default().to_owned()
}

async fn live_row(app: &App, auth: &Auth, id: &str) -> Result<SandboxRow> {
    let row = app.store.sandbox(auth.tenant(), &short(id)).await.map_err(|e| match e {
        reins_store::Error::NotFound => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("sandbox {id} not found"))
        }
        other => other.into(),
    })?;
    if row.state == SandboxState::Ended {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("sandbox {id} not found")).into());
    }
    Ok(row)
}

pub async fn create(
    State(app): Shared,
    E2bAuth(auth): E2bAuth,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    let req: NewSandbox = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("invalid body: {e}")))?;
    let template = if req.template_id.is_empty() { "base".to_owned() } else { req.template_id };
    let network = match req.allow_internet_access {
        Some(false) => None,
        // E2B's default is internet access; an E2B client that does not opt out gets it, audited.
        _ => Some(Network { mode: "open".into(), direct: app.limits.e2b_direct, ..Network::default() }),
    };
    let create = CreateSandbox {
        template: Some(template),
        env: req.env_vars.unwrap_or_default(),
        metadata: req.metadata.unwrap_or_default(),
        timeout_secs: Some(req.timeout.unwrap_or(300)),
        network,
        ..CreateSandbox::default()
    };
    let (row, token) = sandboxes::start(&app, auth.tenant(), &create, Vec::new(), None).await?;
    if req.auto_pause == Some(true) {
        app.store.set_sandbox_on_timeout(auth.tenant(), &row.id, "pause").await?;
    }
    Ok((StatusCode::CREATED, Json(created(&row, &token))))
}

pub async fn get(State(app): Shared, E2bAuth(auth): E2bAuth, Path(id): Path<String>) -> Result<Json<Value>> {
    let row = live_row(&app, &auth, &id).await?;
    let mut v = listed(&row);
    v["envdAccessToken"] = json!(crate::ingress::access_token(&app, &row)?);
    v["domain"] = Value::Null;
    Ok(Json(v))
}

pub async fn kill(State(app): Shared, E2bAuth(auth): E2bAuth, Path(id): Path<String>) -> Result<StatusCode> {
    let row = live_row(&app, &auth, &id).await?;
    sandboxes::release(&app, &row, reins_store::EndReason::Deleted).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct Timeout {
    timeout: u64,
}

pub async fn set_timeout(
    State(app): Shared,
    E2bAuth(auth): E2bAuth,
    Path(id): Path<String>,
    Json(t): Json<Timeout>,
) -> Result<StatusCode> {
    let row = live_row(&app, &auth, &id).await?;
    let d = sandboxes::timeout(&app, t.timeout)?;
    app.store.set_sandbox_expiry(auth.tenant(), &row.id, reins_store::now_ms() + d.as_millis() as i64).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
pub struct ConnectBody {
    timeout: Option<u64>,
}

/// Connect (and resume): a running sandbox's timeout is only extended (200); a paused one is resumed (201).
pub async fn connect(
    State(app): Shared,
    E2bAuth(auth): E2bAuth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    let req: ConnectBody =
        if body.is_empty() { ConnectBody::default() } else { serde_json::from_slice(&body).unwrap_or_default() };
    let row = live_row(&app, &auth, &id).await?;
    let mut status = StatusCode::OK;
    let was_paused = matches!(row.state, SandboxState::Paused | SandboxState::Hibernated);
    if was_paused {
        let _resumed =
            sandboxes::resume(State(std::sync::Arc::clone(&app)), auth.clone(), Path(row.id.clone())).await?;
        status = StatusCode::CREATED;
    }
    // A resumed sandbox's timeout starts again (after autoPause its expiry was the retention's);
    // a running one's is only ever extended.
    let secs = req.timeout.or(was_paused.then_some(300));
    if let Some(secs) = secs {
        let want = reins_store::now_ms() + sandboxes::timeout(&app, secs)?.as_millis() as i64;
        if was_paused || want > row.expires_ms {
            app.store.set_sandbox_expiry(auth.tenant(), &row.id, want).await?;
        }
    }
    let token = crate::ingress::access_token(&app, &row)?;
    Ok((status, Json(created(&row, &token))))
}

pub async fn pause(State(app): Shared, E2bAuth(auth): E2bAuth, Path(id): Path<String>) -> Result<StatusCode> {
    let row = live_row(&app, &auth, &id).await?;
    if matches!(row.state, SandboxState::Paused | SandboxState::Hibernated) {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", format!("sandbox {id} is already paused")).into());
    }
    let _paused = sandboxes::pause(State(app), auth, Path(row.id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /sandboxes/{id}/metrics`: one sample taken now (E2B keeps a
/// history; Reins answers the current use whatever `start`/`end` say).
pub async fn metrics(State(app): Shared, E2bAuth(auth): E2bAuth, Path(id): Path<String>) -> Result<Json<Value>> {
    let row = live_row(&app, &auth, &id).await?;
    let view = sandboxes::view(row.clone());
    let node = app.nodes.get(&row.node_id)?;
    let m: reins_api::node::SandboxMetrics =
        node.call(axum::http::Method::GET, &format!("/sandboxes/{}/metrics", row.id), None::<&()>).await?;
    let now = reins_store::now_ms();
    let cpus = view.cpus.max(0.01);
    Ok(Json(json!([{
        "timestamp": rfc3339(now), "timestampUnix": now / 1000,
        "cpuCount": view.cpus.ceil() as u64, "cpuUsedPct": (m.cpus_used / cpus * 100.0).min(100.0),
        "memUsed": m.mem_used_bytes, "memTotal": view.memory_mb << 20, "memCache": 0,
        "diskUsed": m.disk_used_bytes, "diskTotal": m.disk_total_bytes,
    }])))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    metadata: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
    next_token: Option<String>,
}

/// `GET /v2/sandboxes` (and `GET /sandboxes`): filters by metadata (`k=v&k2=v2`) and state; `X-Next-Token` pages.
pub async fn list(
    State(app): Shared,
    E2bAuth(auth): E2bAuth,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
) -> Result<(HeaderMap, Json<Value>)> {
    let mut metadata = BTreeMap::new();
    if let Some(m) = q.metadata.as_deref().filter(|m| !m.is_empty()) {
        for (k, v) in serde_urlencoded::from_str::<Vec<(String, String)>>(m)
            .map_err(|_| ApiError::bad_request("metadata is k=v pairs joined by &"))?
        {
            metadata.insert(k, v);
        }
    }
    let mut states = Vec::new();
    for s in q.state.as_deref().unwrap_or("running,paused").split(',').filter(|s| !s.is_empty()) {
        match s {
            "running" => states.push(SandboxState::Running),
            "paused" => states.extend([SandboxState::Paused, SandboxState::Hibernated]),
            other => return Err(ApiError::bad_request(format!("unknown state `{other}`: running or paused")).into()),
        }
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 100);
    let filter = SandboxFilter { states, metadata, cursor: q.next_token.filter(|t| !t.is_empty()), limit };
    let page = app.store.sandboxes(auth.tenant(), &filter).await.map_err(|e| match e {
        reins_store::Error::NotFound => ApiError::bad_request("invalid nextToken"),
        other => other.into(),
    })?;
    let mut headers = HeaderMap::new();
    if let Some(next) = page.next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        headers.insert("x-next-token", next);
    }
    Ok((headers, Json(Value::Array(page.items.iter().map(listed).collect()))))
}
