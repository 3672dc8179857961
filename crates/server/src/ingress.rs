//! Ingress: a port of a sandbox reached through the control plane, by path
//! (`/v1/sandboxes/{id}/ports/{port}/…`) or by host (`{port}-{id}.{domain}`),
//! HTTP and WebSocket. A port is private unless made public: a request needs
//! the sandbox's access token in `X-Access-Token` (returned once, at create).
//! The node connects to the port from the host side; an upgrade becomes a
//! duplex byte tunnel through the node protocol, spoken as HTTP/1.1 here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use reins_api::node::{PORT_PATH_HEADER, PORT_TUNNEL_HEADER};
use reins_api::v1::{PortAccess, SetPortAccess};
use reins_api::ErrorBody;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::auth::Auth;
use crate::error::{ApiError, Body as JsonBody, Path};
use crate::state::{App, Shared};

/// The header that carries a sandbox's access token.
pub const TOKEN_HEADER: &str = "x-access-token";
/// How long a sandbox's ingress settings are trusted without a database read
/// (changes through this process apply at once).
const TTL: Duration = Duration::from_secs(2);
const MAX_HEAD: usize = 64 << 10;

/// A sandbox's ingress settings as stored (`access` column).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Access {
    /// The access token, sealed.
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub public: Vec<u16>,
}

/// What a request is checked against.
#[derive(Debug)]
pub struct Entry {
    pub node: String,
    token_hash: String,
    public: Vec<u16>,
}

/// Recently used ingress settings by sandbox id.
#[derive(Debug, Default)]
pub struct Cache(Mutex<HashMap<String, (Instant, Arc<Entry>)>>);

impl Cache {
    pub fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// A new access token and its stored form.
pub fn new_access(app: &App, tenant: &str, id: &str) -> Result<(String, String), ApiError> {
    let token = reins_store::new_secret("sbt");
    let sealed = app.sealing.seal(tenant, &format!("sandbox/{id}"), &token).map_err(ApiError::internal)?;
    let json = serde_json::to_string(&Access { token: sealed, public: Vec::new() }).map_err(ApiError::internal)?;
    Ok((token, json))
}

/// A sandbox's access token, opened (E2B clients get it again at connect).
pub fn access_token(app: &App, row: &reins_store::SandboxRow) -> Result<String, ApiError> {
    let access: Access = serde_json::from_str(&row.access).unwrap_or_default();
    if access.token.is_empty() {
        return Ok(String::new());
    }
    app.sealing.open(&row.tenant_id, &format!("sandbox/{}", row.id), &access.token).map_err(ApiError::internal)
}

async fn entry(app: &App, id: &str) -> Result<Arc<Entry>, ApiError> {
    if let Some((at, e)) = app.ingress.0.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
        if at.elapsed() < TTL {
            return Ok(Arc::clone(e));
        }
    }
    let row = app.store.live_sandbox(id).await.map_err(ApiError::or_not_found("sandbox"))?;
    let access: Access = serde_json::from_str(&row.access).unwrap_or_default();
    let token = if access.token.is_empty() {
        String::new()
    } else {
        app.sealing.open(&row.tenant_id, &format!("sandbox/{id}"), &access.token).map_err(ApiError::internal)?
    };
    let e = Arc::new(Entry {
        node: row.node_id,
        token_hash: if token.is_empty() { String::new() } else { reins_store::hash_secret(&token) },
        public: access.public,
    });
    let mut cache = app.ingress.0.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() > 100_000 {
        cache.clear();
    }
    cache.insert(id.to_owned(), (Instant::now(), Arc::clone(&e)));
    Ok(e)
}

/// A 404 that does not say whether the sandbox exists.
fn hidden() -> ApiError {
    ApiError::not_found("sandbox")
}

pub async fn authorize(app: &App, id: &str, port: u16, headers: &HeaderMap) -> Result<Arc<Entry>, ApiError> {
    let e = entry(app, id).await?;
    if e.public.contains(&port) {
        return Ok(e);
    }
    let given = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if given.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "port {port} is private: send the sandbox's access token in X-Access-Token, or make the port public"
            ),
        ));
    }
    if e.token_hash.is_empty() || reins_store::hash_secret(given) != e.token_hash {
        return Err(hidden());
    }
    Ok(e)
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
}

/// Relays `req` to port `port` of sandbox `id`, the sandbox's server seeing `path`.
pub async fn forward(app: &Arc<App>, id: &str, port: u16, path: String, mut req: Request) -> Response {
    if port == 0 {
        return ApiError::bad_request("port must be 1 to 65535").into_response();
    }
    let entry = match authorize(app, id, port, req.headers()).await {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    let node = match app.nodes.get(&entry.node) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    // Ours, never the client's: the node would take them as instructions.
    for h in [TOKEN_HEADER, PORT_PATH_HEADER, PORT_TUNNEL_HEADER] {
        req.headers_mut().remove(h);
    }
    if !is_upgrade(req.headers()) {
        for h in ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding"] {
            req.headers_mut().remove(h);
        }
    }
    let route = format!("/sandboxes/{id}/ports/{port}");
    if is_upgrade(req.headers()) {
        return tunnel(&node, &route, &path, req).await.unwrap_or_else(IntoResponse::into_response);
    }
    let (mut parts, body) = req.into_parts();
    match HeaderValue::from_str(&path) {
        Ok(v) => parts.headers.insert(PORT_PATH_HEADER, v),
        Err(_) => return ApiError::bad_request("bad path").into_response(),
    };
    match node.relay(parts.method, &route, parts.headers, body).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

/// An upgrade (WebSocket): the request head and then the client's bytes go
/// through a tunnel to the port; the port's answer head is read here, and a
/// `101` joins the client's upgraded connection to the tunnel.
async fn tunnel(
    node: &crate::nodes::NodeConn,
    route: &str,
    path: &str,
    mut req: Request,
) -> Result<Response, ApiError> {
    let mut head = format!("{} {path} HTTP/1.1\r\n", req.method());
    for (k, v) in req.headers() {
        head.push_str(&format!("{}: {}\r\n", k, String::from_utf8_lossy(v.as_bytes())));
    }
    head.push_str("\r\n");
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let _ = tx.send(Ok(Bytes::from(head))).await;
    let mut headers = HeaderMap::new();
    headers.insert(PORT_TUNNEL_HEADER, HeaderValue::from_static("1"));
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let resp = node.relay(Method::POST, route, headers, body).await?;
    if !resp.status().is_success() {
        return Ok(resp);
    }
    let mut stream = resp.into_body().into_data_stream();
    let mut buf = Vec::new();
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(ApiError::new(StatusCode::BAD_GATEWAY, "port_error", "the sandbox's answer head is too large"));
        }
        match stream.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "port_error",
                    "the sandbox's server closed the connection",
                ))
            }
        }
    };
    let mut parsed_headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut parsed_headers);
    let bad = |m: String| ApiError::new(StatusCode::BAD_GATEWAY, "port_error", m);
    parsed.parse(&buf[..end]).map_err(|e| bad(format!("the sandbox's server answered no HTTP: {e}")))?;
    let code = parsed.code.unwrap_or(0);
    if code != 101 {
        return Err(bad(format!("the sandbox's server refused the upgrade with status {code}")));
    }
    let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for h in parsed.headers.iter() {
        out = out.header(h.name, h.value);
    }
    let rest = buf[end..].to_vec();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
        let up = async move {
            let mut chunk = vec![0u8; 64 << 10];
            while let Ok(n) = rd.read(&mut chunk).await {
                if n == 0 || tx.send(Ok(Bytes::copy_from_slice(&chunk[..n]))).await.is_err() {
                    break;
                }
            }
        };
        let down = async move {
            if wr.write_all(&rest).await.is_err() {
                return;
            }
            while let Some(Ok(chunk)) = stream.next().await {
                if wr.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        };
        tokio::join!(up, down);
    });
    out.body(Body::empty()).map_err(ApiError::internal)
}

/// `ANY /v1/sandboxes/{id}/ports/{port}` and `…/{port}/{*rest}`.
pub async fn by_path(State(app): Shared, Path(params): Path<HashMap<String, String>>, req: Request) -> Response {
    let (Some(id), Some(port)) = (params.get("id"), params.get("port")) else { return hidden().into_response() };
    let Ok(port) = port.parse::<u16>() else { return ApiError::bad_request("port must be 1 to 65535").into_response() };
    let rest = params.get("rest").map(String::as_str).unwrap_or("");
    let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let path = format!("/{rest}{query}");
    forward(&app, id, port, path, req).await
}

/// `(port, sandbox id)` when `host` is `{port}-{id}.{domain}` (any port suffix ignored).
pub fn parse_host<'a>(host: &'a str, domain: &str) -> Option<(u16, &'a str)> {
    let name = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let label = name.strip_suffix(domain)?.strip_suffix('.')?;
    let (port, id) = label.split_once('-')?;
    let valid_id = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (valid_id && !label.contains('.')).then_some(())?;
    Some((port.parse().ok()?, id))
}

/// Middleware: requests whose `Host` names a sandbox port go there, whatever their path.
pub async fn by_host(State(app): Shared, req: Request, next: axum::middleware::Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host());
    if let Some((port, id)) = host.and_then(|h| parse_host(h, &app.limits.sandbox_domain)) {
        let id = id.to_owned();
        return crate::e2b::to_sandbox(&app, &id, port, req).await;
    }
    next.run(req).await
}

#[utoipa::path(put, path = "/v1/sandboxes/{id}/access/ports/{port}", tag = "ingress",
    params(("id" = String, Path), ("port" = u16, Path)), request_body = SetPortAccess,
    responses((status = 200, body = PortAccess), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn set_access(
    State(app): Shared,
    auth: Auth,
    Path((id, port)): Path<(String, u16)>,
    JsonBody(req): JsonBody<SetPortAccess>,
) -> Result<Json<PortAccess>, ApiError> {
    if port == 0 {
        return Err(ApiError::bad_request("port must be 1 to 65535"));
    }
    let row = app.store.sandbox(auth.tenant(), &id).await.map_err(ApiError::or_not_found("sandbox"))?;
    if row.state == reins_store::SandboxState::Ended {
        return Err(hidden());
    }
    let mut access: Access = serde_json::from_str(&row.access).unwrap_or_default();
    access.public.retain(|p| *p != port);
    if req.public {
        access.public.push(port);
        access.public.sort_unstable();
    }
    let json = serde_json::to_string(&access).map_err(ApiError::internal)?;
    app.store.set_sandbox_access(auth.tenant(), &id, &json).await.map_err(ApiError::or_not_found("sandbox"))?;
    app.ingress.forget(&id);
    tracing::info!(sandbox = %id, tenant = %auth.tenant(), port, public = req.public, "port access changed");
    Ok(Json(PortAccess { port, public: req.public, public_ports: access.public }))
}

#[cfg(test)]
mod tests {
    use super::parse_host;

    #[test]
    fn hosts_name_a_port_and_a_sandbox() {
        assert_eq!(parse_host("8080-abc123.localhost", "localhost"), Some((8080, "abc123")));
        assert_eq!(parse_host("8080-abc123.localhost:7070", "localhost"), Some((8080, "abc123")));
        assert_eq!(parse_host("80-x.sb.example.com", "sb.example.com"), Some((80, "x")));
        for bad in [
            "localhost",
            "abc.localhost",
            "8080-.localhost",
            "x-abc.localhost",
            "8080-ABC.localhost",
            "8080-a.b.localhost",
            "8080-abcevil-localhost",
            "99999-a.localhost",
            "8080-a.localhostx",
        ] {
            assert_eq!(parse_host(bad, "localhost"), None, "{bad}");
        }
    }
}
