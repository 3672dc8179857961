//! The nodes connected to this control plane, and calls to them over the
//! node protocol.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::client::conn::http2::SendRequest;
use reins_api::node::{Status, PREFIX};
use reins_api::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ApiError;

/// Longest wait for a node's answer to a non-streaming call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How requests reach a node: HTTP/2 over its mutual-TLS connection, or,
/// for the node inside `reins up`, the node's router called in-process
/// (the same requests and answers, without sockets).
#[derive(Clone)]
pub enum Transport {
    H2(SendRequest<Body>),
    Local(axum::Router),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::H2(_) => "H2",
            Self::Local(_) => "Local",
        })
    }
}

/// One live connection to a node.
#[derive(Debug)]
pub struct NodeConn {
    pub id: String,
    pub name: String,
    pub connected_ms: i64,
    transport: Transport,
    status: Mutex<Option<Status>>,
    /// Sandboxes placed since the last status, so placement spreads between heartbeats.
    placed: AtomicU32,
    /// Sandboxes the last reconciliation found on the node without a live row.
    suspects: Mutex<std::collections::HashSet<String>>,
    /// Where collecting the node's egress audit feed stands: (boot, last sequence number).
    pub net_cursor: tokio::sync::Mutex<(String, u64)>,
}

impl NodeConn {
    pub fn new(id: String, name: String, transport: Transport) -> Self {
        Self {
            id,
            name,
            connected_ms: reins_store::now_ms(),
            transport,
            status: Mutex::new(None),
            placed: AtomicU32::new(0),
            suspects: Mutex::default(),
            net_cursor: tokio::sync::Mutex::default(),
        }
    }

    /// Records this reconciliation's unrecorded sandboxes; returns the last one's.
    pub fn swap_suspects(&self, now: std::collections::HashSet<String>) -> std::collections::HashSet<String> {
        std::mem::replace(&mut *self.suspects.lock().unwrap_or_else(|p| p.into_inner()), now)
    }

    pub fn status(&self) -> Option<Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_status(&self, s: Status) {
        self.placed.store(0, Ordering::Relaxed);
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }

    /// Load between 0 and 1 (and beyond when over capacity).
    fn load(&self) -> f64 {
        let placed = f64::from(self.placed.load(Ordering::Relaxed));
        match self.status() {
            // Hibernated sandboxes hold no capacity.
            Some(s) => {
                let running = s.sandboxes.len().saturating_sub(s.hibernated.len()) as f64;
                (running + placed) / f64::from(s.capacity.max_sandboxes.max(1))
            }
            None => 1.0 + placed,
        }
    }

    /// Sends a request to the node; node-side errors come back as [`ApiError`]s.
    pub async fn send(&self, method: Method, path: &str, body: Body, json: bool) -> Result<Response<Body>, ApiError> {
        let mut headers = http::HeaderMap::new();
        if json {
            headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        }
        let resp = self.relay(method, path, headers, body).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let mut e = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => ApiError::new(status, &body.code, body.message),
            Err(_) => ApiError::new(StatusCode::BAD_GATEWAY, "node_error", format!("node answered {status}")),
        };
        if e.status == StatusCode::SERVICE_UNAVAILABLE {
            // A full node: worth retrying soon (capacity frees as sandboxes end).
            e.retry_after = Some(1);
        }
        Err(e)
    }

    /// Sends a request with these headers and streams the answer back as it
    /// is, whatever its status; only a node that cannot be reached is an error.
    pub async fn relay(
        &self,
        method: Method,
        path: &str,
        headers: http::HeaderMap,
        body: Body,
    ) -> Result<Response<Body>, ApiError> {
        let uri = format!("https://{}{PREFIX}{path}", reins_tls::NODE_NAME);
        let mut req = Request::builder().method(method).uri(uri).body(body).map_err(ApiError::internal)?;
        *req.headers_mut() = headers;
        Ok(match &self.transport {
            Transport::H2(sender) => {
                let mut sender = sender.clone();
                let gone =
                    |e: hyper::Error| ApiError::unavailable(format!("node {} is unreachable: {e}", self.name), 2);
                sender.ready().await.map_err(gone)?;
                sender.send_request(req).await.map_err(gone)?.map(Body::new)
            }
            Transport::Local(router) => {
                use tower::ServiceExt;
                router.clone().oneshot(req).await.unwrap_or_else(|e| match e {})
            }
        })
    }

    /// A JSON call with a JSON answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ApiError> {
        let bytes = self.call_raw(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(ApiError::internal)
    }

    /// A JSON call whose answer is ignored.
    pub async fn call_empty(&self, method: Method, path: &str, body: Option<&impl Serialize>) -> Result<(), ApiError> {
        self.call_raw(method, path, body).await.map(drop)
    }

    /// A JSON call and its whole answer, within [`CALL_TIMEOUT`].
    async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<bytes::Bytes, ApiError> {
        let body = match body {
            Some(b) => Body::from(serde_json::to_vec(b).map_err(ApiError::internal)?),
            None => Body::empty(),
        };
        let call = async {
            let resp = self.send(method, path, body, true).await?;
            Ok(resp.into_body().collect().await.map_err(|e| ApiError::unavailable(e.to_string(), 2))?.to_bytes())
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| ApiError::unavailable(format!("node {} did not answer in time", self.name), 2))?
    }
}

/// The connected nodes.
#[derive(Debug, Default)]
pub struct Nodes {
    map: RwLock<HashMap<String, Arc<NodeConn>>>,
}

impl Nodes {
    pub fn insert(&self, conn: Arc<NodeConn>) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).insert(conn.id.clone(), conn);
    }

    /// Removes `conn` unless a newer connection of its node replaced it.
    pub fn remove(&self, conn: &Arc<NodeConn>) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.get(&conn.id).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            map.remove(&conn.id);
        }
    }

    pub fn get(&self, id: &str) -> Result<Arc<NodeConn>, ApiError> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned().ok_or_else(|| {
            ApiError::unavailable(format!("the node of this sandbox ({id}) is not connected; retry shortly"), 5)
        })
    }

    pub fn all(&self) -> Vec<Arc<NodeConn>> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// The least-loaded node with room for one more sandbox of `memory` bytes
    /// (by the last reported status). A sandbox larger than any node can ever
    /// hold is a 422, not a 503.
    pub fn pick(&self, memory: u64) -> Result<Arc<NodeConn>, ApiError> {
        let all = self.all();
        if all.is_empty() {
            return Err(ApiError::unavailable("no execution node is connected: start one with `reins node --join`", 5));
        }
        let largest = all.iter().filter_map(|n| n.status().map(|s| s.capacity.memory_bytes)).max().unwrap_or(u64::MAX);
        if memory > largest {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too_large",
                format!("no node accepts {} MiB of memory (the largest accepts {} MiB)", memory >> 20, largest >> 20),
            ));
        }
        let fits = |n: &NodeConn| {
            n.status().is_none_or(|s| s.memory_reserved_bytes.saturating_add(memory) <= s.capacity.memory_bytes)
        };
        // The statuses are up to a heartbeat old: they rank the nodes, and
        // the node itself refuses when it is really full (503 with a retry hint).
        let best = all
            .into_iter()
            .map(|n| ((!fits(&n) || n.load() >= 1.0, n.load()), n))
            .min_by(|a, b| a.0 .0.cmp(&b.0 .0).then(a.0 .1.total_cmp(&b.0 .1)))
            .map(|(_, n)| n)
            .ok_or_else(|| ApiError::unavailable("every node is at capacity; retry later", 5))?;
        best.placed.fetch_add(1, Ordering::Relaxed);
        Ok(best)
    }
}

/// A node's stream broke off (the connection to the node was lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broken;

impl Broken {
    pub fn code(self) -> &'static str {
        "node_error"
    }

    pub fn message(self) -> &'static str {
        "the node connection broke"
    }
}

/// The items of a newline-delimited JSON body as they arrive, parsed in
/// place (no extra task). Lines that do not parse are skipped; a broken
/// connection ends the stream with one `Err(Broken)`.
pub fn ndjson<T: DeserializeOwned>(body: Body) -> impl futures_util::Stream<Item = Result<T, Broken>> {
    use futures_util::StreamExt;
    // (body, buffered bytes, done)
    let state = (body.into_data_stream(), Vec::<u8>::new(), false);
    futures_util::stream::unfold(state, |(mut data, mut buf, done)| async move {
        loop {
            if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                match serde_json::from_slice::<T>(&line) {
                    Ok(item) => return Some((Ok(item), (data, buf, done))),
                    Err(_) => continue,
                }
            }
            if done {
                return None;
            }
            match data.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(_)) => return Some((Err(Broken), (data, Vec::new(), true))),
                None => return None,
            }
        }
    })
}
