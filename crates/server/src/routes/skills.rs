//! `/v1/skills`: versioned skill bundles (tar archives with a `SKILL.md`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use reins_api::agent::Skill;
use reins_api::v1::List;
use reins_api::ErrorBody;
use reins_store::SkillRow;
use sha2::Digest;

use crate::agents::skills;
use crate::auth::Auth;
use crate::error::{ApiError, Path};
use crate::state::Shared;

fn view(r: SkillRow) -> Skill {
    Skill {
        name: r.name,
        version: r.version,
        description: r.description,
        sha256: r.sha256,
        size_bytes: r.size_bytes,
        created_ms: r.created_ms,
    }
}

#[utoipa::path(put, path = "/v1/skills/{name}", tag = "skills", params(("name" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A tar archive of the skill's folder, SKILL.md at its top"),
    responses((status = 201, body = Skill), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn put(
    State(app): Shared,
    auth: Auth,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Skill>), ApiError> {
    if !reins_types::is_plain_name(&name) {
        return Err(ApiError::bad_request(format!("skill name {name:?}: letters, digits, `.`, `_`, `-`")));
    }
    let meta = skills::inspect(&body).map_err(ApiError::bad_request)?;
    if meta.name != name {
        return Err(ApiError::bad_request(format!("SKILL.md names the skill `{}`, not `{name}`", meta.name)));
    }
    let sha = hex::encode(sha2::Sha256::digest(&body));
    skills::store_blob(&app, &sha, &body).await?;
    let row = app.store.put_skill(auth.tenant(), &name, &meta.description, &sha, body.len() as i64).await?;
    Ok((StatusCode::CREATED, Json(view(row))))
}

#[utoipa::path(get, path = "/v1/skills", tag = "skills",
    responses((status = 200, body = List<Skill>)), security(("api_key" = [])))]
pub async fn list(State(app): Shared, auth: Auth) -> Result<Json<List<Skill>>, ApiError> {
    Ok(Json(List { items: app.store.skills(auth.tenant()).await?.into_iter().map(view).collect() }))
}

#[utoipa::path(get, path = "/v1/skills/{name}", tag = "skills", params(("name" = String, Path)),
    responses((status = 200, body = Skill), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn get(State(app): Shared, auth: Auth, Path(name): Path<String>) -> Result<Json<Skill>, ApiError> {
    let row = app.store.skill(auth.tenant(), &name, None).await.map_err(ApiError::or_not_found("skill"))?;
    Ok(Json(view(row)))
}

#[utoipa::path(delete, path = "/v1/skills/{name}", tag = "skills", params(("name" = String, Path)),
    responses((status = 204, description = "Every version deleted"), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn delete(State(app): Shared, auth: Auth, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    app.store.delete_skill(auth.tenant(), &name).await.map_err(ApiError::or_not_found("skill"))?;
    // Bundles stay in the blob store: other tenants' versions may share them (content-addressed).
    Ok(StatusCode::NO_CONTENT)
}
