//! Templates: listed from, imported to and removed from the connected nodes.

use std::path::PathBuf;

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::Json;
use futures_util::StreamExt;
use reins_api::v1::{self, List};
use reins_api::ErrorBody;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::Auth;
use crate::error::{ApiError, Path};
use crate::state::{App, Shared};

/// Bytes per piece when an archive is sent on to a node.
const PIECE: usize = 1 << 20;

#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses((status = 200, body = List<v1::Template>), (status = 503, body = ErrorBody)), security(("api_key" = [])))]
pub async fn list_templates(State(app): Shared, _auth: Auth) -> Result<Json<List<v1::Template>>, ApiError> {
    let mut items: Vec<v1::Template> = Vec::new();
    for node in app.nodes.all() {
        for t in node.call::<Vec<v1::Template>>(Method::GET, "/templates", None::<&()>).await? {
            if !items.contains(&t) {
                items.push(t);
            }
        }
    }
    items.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(List { items }))
}

#[utoipa::path(delete, path = "/v1/templates/{name}", tag = "templates", params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn delete_template(State(app): Shared, auth: Auth, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    reins_types::validate_template_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut found = false;
    for node in app.nodes.all() {
        match node.call_empty(Method::DELETE, &format!("/templates/{name}"), None::<&()>).await {
            Ok(()) => found = true,
            Err(e) if e.status == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    if !found {
        return Err(ApiError::not_found("template"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/v1/templates/{name}", tag = "templates", params(("name" = String, Path)),
    description = "Imports an OCI image archive (`skopeo copy … oci-archive:`), or a `docker save` archive, as template \
`name` on every connected node (admin). The archive is received whole before the nodes unpack it; the answer comes when \
every node has the template.",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = v1::Template), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn import_template(
    State(app): Shared,
    auth: Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: HttpBody,
) -> Result<(StatusCode, Json<v1::Template>), ApiError> {
    auth.require_admin()?;
    reins_types::validate_template_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if name == "base" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "reserved",
            "`base` is built from the host; choose another name",
        ));
    }
    let max = app.limits.max_template;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let nodes = app.nodes.all();
    if nodes.is_empty() {
        return Err(ApiError::unavailable("no execution node is connected to import the template on", 5));
    }
    let spool = Spool::new(&app)?;
    spool.receive(body, max).await?;
    let mut imported = None;
    for node in nodes {
        let resp = node.send(Method::PUT, &format!("/templates/{name}"), spool.body().await?, false).await?;
        let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.map_err(ApiError::internal)?.to_bytes();
        imported = Some(serde_json::from_slice::<v1::Template>(&bytes).map_err(ApiError::internal)?);
    }
    tracing::info!(template = %name, "template imported");
    imported.map(|t| (StatusCode::CREATED, Json(t))).ok_or_else(|| ApiError::internal("no node answered"))
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("template archives are limited to {max} bytes"))
}

/// An uploaded archive kept in the control plane's data directory until
/// every node has it; removed on drop.
struct Spool {
    path: PathBuf,
}

impl Spool {
    fn new(app: &App) -> Result<Self, ApiError> {
        std::fs::create_dir_all(&app.upload_dir).map_err(ApiError::internal)?;
        let nonce: u64 = rand::random();
        Ok(Self { path: app.upload_dir.join(format!("template-{nonce:016x}")) })
    }

    async fn receive(&self, body: HttpBody, max: u64) -> Result<(), ApiError> {
        let mut out = tokio::fs::File::create(&self.path).await.map_err(ApiError::internal)?;
        let mut data = body.into_data_stream();
        let mut total = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "upload_interrupted", e.to_string()))?;
            total += chunk.len() as u64;
            if total > max {
                return Err(too_large(max));
            }
            out.write_all(&chunk).await.map_err(ApiError::internal)?;
        }
        if total == 0 {
            return Err(ApiError::bad_request("the body must be an OCI image archive"));
        }
        out.flush().await.map_err(ApiError::internal)
    }

    /// The archive as a streamed request body.
    async fn body(&self) -> Result<HttpBody, ApiError> {
        let file = tokio::fs::File::open(&self.path).await.map_err(ApiError::internal)?;
        Ok(HttpBody::from_stream(futures_util::stream::unfold(file, read_piece)))
    }
}

async fn read_piece(mut file: tokio::fs::File) -> Option<(std::io::Result<bytes::Bytes>, tokio::fs::File)> {
    let mut buf = vec![0u8; PIECE];
    match file.read(&mut buf).await {
        Ok(0) => None,
        Ok(n) => {
            buf.truncate(n);
            Some((Ok(bytes::Bytes::from(buf)), file))
        }
        Err(e) => Some((Err(e), file)),
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
