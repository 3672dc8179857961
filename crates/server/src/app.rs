//! The HTTP router of the public API.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{middleware, Router};

use crate::error::ApiError;
use crate::routes::{
    admin, agents, exec, exec_ws, files, network, pools, sandboxes, sessions, skills, snapshots, system, templates,
};
use crate::state::App;

pub fn router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/sandboxes", post(sandboxes::create).get(sandboxes::list))
        .route("/sandboxes/{id}", get(sandboxes::get).delete(sandboxes::delete))
        .route("/sandboxes/{id}/timeout", post(sandboxes::set_timeout))
        .route("/sandboxes/{id}/pause", post(sandboxes::pause))
        .route("/sandboxes/{id}/resume", post(sandboxes::resume))
        .route("/sandboxes/{id}/hibernate", post(sandboxes::hibernate))
        .route("/sandboxes/{id}/snapshots", post(snapshots::create))
        .route("/sandboxes/{id}/fork", post(snapshots::fork))
        .route("/snapshots", get(snapshots::list))
        .route("/snapshots/{id}", get(snapshots::get).delete(snapshots::delete))
        .route("/pools", get(pools::list))
        .route("/pools/{template}", axum::routing::put(pools::put).delete(pools::delete))
        .route("/sandboxes/{id}/network", axum::routing::put(network::set))
        .route("/sandboxes/{id}/network/log", get(network::log))
        .route("/sandboxes/{id}/access/ports/{port}", axum::routing::put(crate::ingress::set_access))
        .route("/sandboxes/{id}/ports/{port}", axum::routing::any(crate::ingress::by_path))
        .route("/sandboxes/{id}/ports/{port}/", axum::routing::any(crate::ingress::by_path))
        .route("/sandboxes/{id}/ports/{port}/{*rest}", axum::routing::any(crate::ingress::by_path))
        .route("/sandboxes/{id}/exec", post(exec::exec))
        .route("/sandboxes/{id}/exec/stream", post(exec::stream))
        .route("/sandboxes/{id}/exec/ws", get(exec_ws::ws))
        .route("/sandboxes/{id}/exec/{pid}/stdin", post(exec::stdin))
        .route("/sandboxes/{id}/exec/{pid}/signal", post(exec::signal))
        .route("/sandboxes/{id}/exec/{pid}/resize", post(exec::resize))
        .route("/sandboxes/{id}/files", get(files::download).put(files::upload).delete(files::remove))
        .route("/sandboxes/{id}/files/list", get(files::list))
        .route("/sandboxes/{id}/files/stat", get(files::stat))
        .route("/sandboxes/{id}/files/mkdir", post(files::mkdir))
        .route("/sandboxes/{id}/files/move", post(files::rename))
        .route("/sandboxes/{id}/files/watch", get(files::watch))
        .route("/tenants", post(admin::create_tenant).get(admin::list_tenants))
        .route("/keys", post(admin::create_key).get(admin::list_keys))
        .route("/keys/{id}", delete(admin::revoke_key))
        .route("/nodes", get(admin::list_nodes))
        .route("/nodes/tokens", post(admin::create_join_token))
        .route("/nodes/join", post(admin::join))
        .route("/secrets", get(network::list_secrets))
        .route("/secrets/{name}", axum::routing::put(network::put_secret).delete(network::delete_secret))
        .route("/templates", get(templates::list_templates))
        .route("/templates/{name}", delete(templates::delete_template).put(templates::import_template))
        .route("/agents", post(agents::create).get(agents::list))
        .route("/agents/{id}", get(agents::get).put(agents::update).delete(agents::delete))
        .route("/agents/{id}/sessions", post(agents::create_session).get(agents::list_sessions))
        .route("/sessions", get(sessions::list))
        .route("/sessions/{id}", get(sessions::get).delete(sessions::delete))
        .route("/sessions/{id}/messages", post(sessions::post_message))
        .route("/sessions/{id}/events", get(sessions::events))
        .route("/sessions/{id}/events/stream", get(sessions::stream))
        .route("/sessions/{id}/cancel", post(sessions::cancel))
        .route("/sessions/{id}/approvals/{approval_id}", post(sessions::answer))
        .route("/skills", get(skills::list))
        .route(
            "/skills/{name}",
            get(skills::get)
                .delete(skills::delete)
                .put(skills::put)
                .layer(DefaultBodyLimit::max(crate::agents::skills::MAX_BUNDLE)),
        )
        .route("/openapi.json", get(system::openapi));
    Router::new()
        .nest("/v1", v1)
        .merge(crate::e2b::router())
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), crate::metrics::track))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route: see /v1/openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
        .layer(DefaultBodyLimit::max(app.limits.max_body))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), crate::ingress::by_host))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), crate::e2b::by_header))
        .with_state(app)
}
