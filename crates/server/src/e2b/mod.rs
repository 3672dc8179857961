//! E2B compatibility: the E2B SDKs (Python, JavaScript) work against Reins
//! by setting `E2B_API_URL` and `E2B_SANDBOX_URL` to Reins' address. The
//! REST API ([`rest`]) sits beside `/v1`; envd requests ([`envd`]) are
//! recognised by their `E2b-Sandbox-Id` header (one URL for every sandbox)
//! or by a host `{port}-{id}.{domain}` naming envd's port.

pub mod connect;
pub mod envd;
pub mod files;
pub mod rest;
pub mod watch;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::state::App;

/// The REST routes, mounted at the root.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/sandboxes", post(rest::create).get(rest::list))
        .route("/v2/sandboxes", post(rest::create).get(rest::list))
        .route("/sandboxes/{id}", get(rest::get).delete(rest::kill))
        .route("/sandboxes/{id}/timeout", post(rest::set_timeout))
        .route("/sandboxes/{id}/connect", post(rest::connect))
        .route("/v2/sandboxes/{id}/connect", post(rest::connect))
        .route("/sandboxes/{id}/resume", post(rest::connect))
        .route("/sandboxes/{id}/pause", post(rest::pause))
        .route("/sandboxes/{id}/metrics", get(rest::metrics))
}

/// Middleware: requests carrying `E2b-Sandbox-Id` go to that sandbox: to
/// envd for port 49983 (the default), to the sandbox's own port otherwise.
pub async fn by_header(State(app): State<Arc<App>>, req: Request, next: axum::middleware::Next) -> Response {
    let Some(id) = req.headers().get("e2b-sandbox-id").and_then(|v| v.to_str().ok()).map(str::to_owned) else {
        return next.run(req).await;
    };
    let port = req
        .headers()
        .get("e2b-sandbox-port")
        .and_then(|v| v.to_str().ok())
        .and_then(|p| p.trim().parse::<u16>().ok())
        .unwrap_or(envd::ENVD_PORT);
    to_sandbox(&app, &id, port, req).await
}

/// A request for `port` of sandbox `id`, however it was addressed: envd's
/// port is served here, any other is the sandbox's own (ingress).
pub async fn to_sandbox(app: &Arc<App>, id: &str, port: u16, req: Request) -> Response {
    if port == envd::ENVD_PORT {
        return envd::serve(app, id, req).await;
    }
    let path = req.uri().path_and_query().map_or("/".to_owned(), |p| p.as_str().to_owned());
    crate::ingress::forward(app, id, port, path, req).await
}
