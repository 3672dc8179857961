//! Files in a sandbox: download, upload, list, stat, mkdir, remove, move,
//! and watches streamed as Server-Sent Events.

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Response;
use axum::Json;
use futures_util::{Stream, StreamExt};
use reins_api::node::FileQuery as NodeQuery;
use reins_api::v1::{FileEntry, FileEvent, FileQuery, Mkdir, Move, User, WatchQuery};
use reins_api::ErrorBody;
use std::convert::Infallible;
use std::time::Duration;

use super::running;
use crate::auth::Auth;
use crate::error::{ApiError, Body, Path, Query};
use crate::state::Shared;

fn check_path(p: &str) -> Result<(), ApiError> {
    if !p.starts_with('/') || p.contains('\0') || p.len() > 4096 {
        return Err(ApiError::bad_request("path must be absolute, without NUL, at most 4096 bytes"));
    }
    Ok(())
}

fn node_query(q: &FileQuery) -> Result<String, ApiError> {
    check_path(&q.path)?;
    if q.depth.is_some_and(|d| !(1..=16).contains(&d)) {
        return Err(ApiError::bad_request("depth must be between 1 and 16"));
    }
    let nq = NodeQuery {
        path: q.path.clone(),
        root: q.user == Some(User::Root),
        depth: q.depth,
        recursive: q.recursive,
        ..Default::default()
    };
    encode(&nq)
}

fn encode(q: &NodeQuery) -> Result<String, ApiError> {
    serde_urlencoded::to_string(q).map_err(ApiError::internal)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", tag = "files", params(("id" = String, Path), FileQuery),
    responses((status = 200, description = "The file's bytes", content_type = "application/octet-stream"), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn download(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<Response, ApiError> {
    let query = node_query(&q)?;
    let node = running(&app, &auth, &id).await?;
    let resp = node.send(Method::GET, &format!("/sandboxes/{id}/files?{query}"), HttpBody::empty(), false).await?;
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(HttpBody::new(resp.into_body()))
        .unwrap_or_default())
}

#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", tag = "files", params(("id" = String, Path), FileQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = FileEntry), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn upload(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
    headers: HeaderMap,
    body: HttpBody,
) -> Result<Json<FileEntry>, ApiError> {
    let query = node_query(&q)?;
    let max = app.limits.max_upload;
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("uploads are limited to {max} bytes"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let node = running(&app, &auth, &id).await?;
    // Beyond the limit the stream breaks off, and the node discards the partial upload.
    let limited = HttpBody::new(http_body_util::Limited::new(body, max as usize));
    let resp = node.send(Method::PUT, &format!("/sandboxes/{id}/files?{query}"), limited, false).await;
    let resp = match resp {
        Err(e) if e.code == "upload_interrupted" && declared.is_none() => return Err(too_large()),
        other => other?,
    };
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.map_err(ApiError::internal)?.to_bytes();
    Ok(Json(serde_json::from_slice(&bytes).map_err(ApiError::internal)?))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/list", tag = "files", params(("id" = String, Path), FileQuery),
    responses((status = 200, body = Vec<FileEntry>), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn list(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<Json<Vec<FileEntry>>, ApiError> {
    let query = node_query(&q)?;
    let node = running(&app, &auth, &id).await?;
    Ok(Json(node.call(Method::GET, &format!("/sandboxes/{id}/files/list?{query}"), None::<&()>).await?))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", tag = "files", params(("id" = String, Path), FileQuery),
    responses((status = 200, body = FileEntry), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn stat(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<Json<FileEntry>, ApiError> {
    let query = node_query(&q)?;
    let node = running(&app, &auth, &id).await?;
    Ok(Json(node.call(Method::GET, &format!("/sandboxes/{id}/files/stat?{query}"), None::<&()>).await?))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", tag = "files", params(("id" = String, Path), FileQuery),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn remove(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<StatusCode, ApiError> {
    let query = node_query(&q)?;
    let node = running(&app, &auth, &id).await?;
    node.call_empty(Method::POST, &format!("/sandboxes/{id}/files/remove?{query}"), None::<&()>).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", tag = "files", params(("id" = String, Path)), request_body = Mkdir,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("api_key" = [])))]
pub async fn mkdir(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Body(req): Body<Mkdir>,
) -> Result<StatusCode, ApiError> {
    check_path(&req.path)?;
    let node = running(&app, &auth, &id).await?;
    let q =
        NodeQuery { path: req.path, root: req.user == User::Root, parents: Some(req.parents), ..Default::default() };
    node.call_empty(Method::POST, &format!("/sandboxes/{id}/files/mkdir?{}", encode(&q)?), None::<&()>).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/move", tag = "files", params(("id" = String, Path)), request_body = Move,
    responses((status = 204), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn rename(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Body(req): Body<Move>,
) -> Result<StatusCode, ApiError> {
    check_path(&req.from)?;
    check_path(&req.to)?;
    let node = running(&app, &auth, &id).await?;
    let q = NodeQuery { path: req.from, to: Some(req.to), root: req.user == User::Root, ..Default::default() };
    node.call_empty(Method::POST, &format!("/sandboxes/{id}/files/move?{}", encode(&q)?), None::<&()>).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/watch", tag = "files", params(("id" = String, Path), WatchQuery),
    responses((status = 200, description = "Server-Sent Events named `file`, each `data` a `FileEvent` in JSON; \
an `error` event ends the stream if the sandbox's node is lost", content_type = "text/event-stream", body = FileEvent),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn watch(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<WatchQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    check_path(&q.path)?;
    let node = running(&app, &auth, &id).await?;
    let nq = NodeQuery { path: q.path, recursive: q.recursive, ..Default::default() };
    let resp = node
        .send(Method::GET, &format!("/sandboxes/{id}/files/watch?{}", encode(&nq)?), HttpBody::empty(), false)
        .await?;
    let events = crate::nodes::ndjson::<FileEvent>(resp.into_body()).map(|item| {
        Ok(match item {
            Ok(ev) => Event::default().event("file").json_data(&ev).unwrap_or_default(),
            Err(b) => Event::default()
                .event("error")
                .json_data(ErrorBody { code: b.code().into(), message: b.message().into() })
                .unwrap_or_default(),
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_queries_are_escaped() {
        let q = NodeQuery { path: "/a b&c=d".into(), root: true, ..Default::default() };
        let s = encode(&q).expect("encode");
        assert!(!s.contains(' ') && !s.contains("&c="), "{s}");
        assert_eq!(serde_urlencoded::from_str::<NodeQuery>(&s).expect("decode"), q);
        assert!(check_path("relative").is_err());
        assert!(check_path("/ok").is_ok());
    }
}
