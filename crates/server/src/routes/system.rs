//! Health, readiness, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use crate::state::Shared;

/// The process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// The database answers and at least one node is connected.
pub async fn readyz(State(app): Shared) -> impl IntoResponse {
    let db = app.store.ping().await;
    let nodes = app.nodes.all().len();
    let ready = db && nodes > 0;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(serde_json::json!({ "ready": ready, "database": db, "nodes": nodes })))
}

pub async fn metrics(State(app): Shared) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        crate::metrics::render(&app).await,
    )
}

pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}
