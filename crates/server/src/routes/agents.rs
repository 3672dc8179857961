//! `/v1/agents` and `/v1/agents/{id}/sessions`: definitions and their sessions.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::Json;
use reins_api::agent::{Agent, AgentSpec, Session};
use reins_api::v1::List;
use reins_api::ErrorBody;
use reins_store::{AgentRow, SessionRow};

use crate::agents::settings;
use crate::auth::Auth;
use crate::error::{ApiError, Body, Path};
use crate::state::{App, Shared};

pub fn agent_view(row: AgentRow) -> Result<Agent, ApiError> {
    let spec = settings::spec(&row)?;
    Ok(Agent {
        id: row.id,
        spec,
        tokens_in: row.tokens_in,
        tokens_out: row.tokens_out,
        created_ms: row.created_ms,
        updated_ms: row.updated_ms,
    })
}

pub fn session_view(row: SessionRow) -> Session {
    Session {
        id: row.id,
        agent_id: row.agent_id,
        status: row.status,
        last_seq: row.next_seq - 1,
        sandbox_id: row.sandbox_id,
        tokens_in: row.tokens_in,
        tokens_out: row.tokens_out,
        created_ms: row.created_ms,
        updated_ms: row.updated_ms,
    }
}

/// The caller's agent by id or name; another tenant's is a 404.
async fn agent(app: &App, auth: &Auth, id: &str) -> Result<AgentRow, ApiError> {
    app.store.agent(auth.tenant(), id).await.map_err(ApiError::or_not_found("agent"))
}

/// Checks a definition, including that its secret and skills exist for the tenant.
async fn check(app: &App, tenant: &str, spec: &AgentSpec) -> Result<String, ApiError> {
    settings::validate(spec)?;
    if let Some(name) = &spec.model.api_key_secret {
        app.store.secret(tenant, name).await.map_err(|e| match e {
            reins_store::Error::NotFound => {
                ApiError::bad_request(format!("the secret `{name}` does not exist: create it with `reins secret set`"))
            }
            other => other.into(),
        })?;
    }
    for skill in &spec.skills {
        app.store.skill(tenant, skill, None).await.map_err(|e| match e {
            reins_store::Error::NotFound => {
                ApiError::bad_request(format!("the skill `{skill}` does not exist: upload it with `reins skill push`"))
            }
            other => other.into(),
        })?;
    }
    serde_json::to_string(spec).map_err(ApiError::internal)
}

#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = AgentSpec,
    responses((status = 201, body = Agent), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create(
    State(app): Shared,
    auth: Auth,
    Body(spec): Body<AgentSpec>,
) -> Result<(StatusCode, Json<Agent>), ApiError> {
    let json = check(&app, auth.tenant(), &spec).await?;
    let row = app.store.create_agent(auth.tenant(), &spec.name, &json).await?;
    Ok((StatusCode::CREATED, Json(agent_view(row)?)))
}

#[utoipa::path(put, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path)), request_body = AgentSpec,
    responses((status = 200, body = Agent), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn update(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Body(spec): Body<AgentSpec>,
) -> Result<Json<Agent>, ApiError> {
    let current = agent(&app, &auth, &id).await?;
    if spec.name != current.name {
        return Err(ApiError::bad_request("an agent's name cannot change; create a new agent"));
    }
    let json = check(&app, auth.tenant(), &spec).await?;
    let row =
        app.store.update_agent(auth.tenant(), &current.id, &json).await.map_err(ApiError::or_not_found("agent"))?;
    Ok(Json(agent_view(row)?))
}

#[utoipa::path(get, path = "/v1/agents", tag = "agents",
    responses((status = 200, body = List<Agent>)), security(("api_key" = [])))]
pub async fn list(State(app): Shared, auth: Auth) -> Result<Json<List<Agent>>, ApiError> {
    let rows = app.store.agents(auth.tenant()).await?;
    Ok(Json(List { items: rows.into_iter().map(agent_view).collect::<Result<_, _>>()? }))
}

#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path, description = "Id or name")),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn get(State(app): Shared, auth: Auth, Path(id): Path<String>) -> Result<Json<Agent>, ApiError> {
    let row = agent(&app, &auth, &id).await?;
    Ok(Json(agent_view(row)?))
}

#[utoipa::path(delete, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted with its sessions and its volume"), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete(State(app): Shared, auth: Auth, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let row = agent(&app, &auth, &id).await?;
    for s in app.store.sessions(auth.tenant(), Some(&row.id)).await? {
        app.harness.cancel_local(&s.id);
        if let Some(sb) = &s.sandbox_id {
            crate::agents::workspace::release_sandbox(&app, sb).await;
        }
    }
    app.store.delete_agent(auth.tenant(), &row.id).await.map_err(ApiError::or_not_found("agent"))?;
    if let Some(node) = row.volume_node.as_deref().and_then(|n| app.nodes.get(n).ok()) {
        if let Err(e) = node.call_empty(Method::DELETE, &format!("/volumes/{}", row.id), None::<&()>).await {
            tracing::warn!(agent = %row.id, error = %e.message, "deleting an agent's volume");
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/agents/{id}/sessions", tag = "sessions", params(("id" = String, Path)),
    responses((status = 201, body = Session), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn create_session(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let agent = agent(&app, &auth, &id).await?;
    let row = app.store.create_session(auth.tenant(), &agent.id).await?;
    Ok((StatusCode::CREATED, Json(session_view(row))))
}

#[utoipa::path(get, path = "/v1/agents/{id}/sessions", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = List<Session>), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn list_sessions(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<List<Session>>, ApiError> {
    let agent = agent(&app, &auth, &id).await?;
    let rows = app.store.sessions(auth.tenant(), Some(&agent.id)).await?;
    Ok(Json(List { items: rows.into_iter().map(session_view).collect() }))
}
