//! envd's directory watchers over the node's watch stream: the polling
//! kind the synchronous SDK uses (`CreateWatcher`, `GetWatcherEvents`,
//! `RemoveWatcher`; events are buffered here between polls) and the
//! streaming `WatchDir` of the asynchronous SDK.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Method;
use axum::response::Response;
use futures_util::StreamExt;
use reins_api::node::FileQuery;
use reins_api::v1::{FileEvent, FileEventKind};
use serde::Deserialize;
use serde_json::{json, Value};

use super::connect::{self, Code, ConnectError};
use super::envd::{from_api, Ctx};

/// Events kept per watcher between polls; older ones are dropped.
const MAX_BUFFERED: usize = 10_000;
/// A watcher nobody polled for this long is removed.
const IDLE: Duration = Duration::from_secs(600);
/// Watchers at once in this process.
const MAX_WATCHERS: usize = 10_000;

struct Watcher {
    sandbox: String,
    events: Arc<Mutex<Vec<Value>>>,
    polled: Instant,
    task: tokio::task::JoinHandle<()>,
}

/// The polling watchers of this process, by id.
#[derive(Default)]
pub struct Watchers(Mutex<HashMap<String, Watcher>>);

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchers").finish_non_exhaustive()
    }
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watcher>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WatchRequest {
    path: String,
    #[serde(default)]
    recursive: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WatcherId {
    watcher_id: String,
}

fn event_type(k: FileEventKind) -> &'static str {
    match k {
        FileEventKind::Create => "EVENT_TYPE_CREATE",
        FileEventKind::Write => "EVENT_TYPE_WRITE",
        FileEventKind::Remove => "EVENT_TYPE_REMOVE",
        FileEventKind::Rename => "EVENT_TYPE_RENAME",
        FileEventKind::Chmod => "EVENT_TYPE_CHMOD",
    }
}

/// envd's `FilesystemEvent`: the name relative to the watched directory.
fn fs_event(root: &str, e: &FileEvent) -> Value {
    let name = e.path.strip_prefix(root).map_or(e.path.as_str(), |r| r.trim_start_matches('/'));
    json!({"name": name, "type": event_type(e.kind)})
}

impl Ctx {
    /// The node's watch stream of a directory (a missing one is `not_found` now).
    async fn node_watch(
        &self,
        body: &[u8],
    ) -> Result<(String, impl futures_util::Stream<Item = FileEvent>), ConnectError> {
        let req: WatchRequest = connect::parse(body)?;
        let path = super::files::absolute(&req.path, self.user_root)?;
        let q = FileQuery {
            recursive: Some(req.recursive),
            root: self.user_root,
            path: path.clone(),
            ..Default::default()
        };
        let route = self.files_path("files/watch", &q)?;
        let resp = self.conn()?.send(Method::GET, &route, Body::empty(), false).await.map_err(from_api)?;
        let events =
            crate::nodes::ndjson::<FileEvent>(Body::new(resp.into_body())).filter_map(|e| async move { e.ok() });
        Ok((path, events))
    }

    pub async fn watchers(&self, method: &str, body: &[u8]) -> Result<Value, ConnectError> {
        let watchers = &self.app.e2b_watchers;
        match method {
            "CreateWatcher" => {
                let (root, events) = self.node_watch(body).await?;
                let buffer = Arc::new(Mutex::new(Vec::new()));
                let sink = Arc::clone(&buffer);
                let task = tokio::spawn(async move {
                    let mut events = Box::pin(events);
                    while let Some(e) = events.next().await {
                        let mut b = sink.lock().unwrap_or_else(|p| p.into_inner());
                        if b.len() >= MAX_BUFFERED {
                            b.remove(0);
                        }
                        b.push(fs_event(&root, &e));
                    }
                });
                let id = reins_store::new_id("w");
                let mut all = watchers.lock();
                all.retain(|_, w| {
                    let keep = w.polled.elapsed() < IDLE;
                    if !keep {
                        w.task.abort();
                    }
                    keep
                });
                if all.len() >= MAX_WATCHERS {
                    task.abort();
                    return Err(ConnectError::new(Code::ResourceExhausted, "too many watchers: remove some"));
                }
                all.insert(
                    id.clone(),
                    Watcher { sandbox: self.id.clone(), events: buffer, polled: Instant::now(), task },
                );
                Ok(json!({"watcherId": id}))
            }
            "GetWatcherEvents" => {
                let req: WatcherId = connect::parse(body)?;
                let mut all = watchers.lock();
                let w = all
                    .get_mut(&req.watcher_id)
                    .filter(|w| w.sandbox == self.id)
                    .ok_or_else(|| not_found(&req.watcher_id))?;
                w.polled = Instant::now();
                let events: Vec<Value> = std::mem::take(&mut *w.events.lock().unwrap_or_else(|p| p.into_inner()));
                Ok(json!({"events": events}))
            }
            "RemoveWatcher" => {
                let req: WatcherId = connect::parse(body)?;
                let mut all = watchers.lock();
                match all.get(&req.watcher_id) {
                    Some(w) if w.sandbox == self.id => {
                        w.task.abort();
                        all.remove(&req.watcher_id);
                        Ok(json!({}))
                    }
                    _ => Err(not_found(&req.watcher_id)),
                }
            }
            other => {
                Err(ConnectError::new(Code::Unimplemented, format!("filesystem.Filesystem/{other} is not served")))
            }
        }
    }

    /// `WatchDir`: a stream of `start`, then `filesystem` events (keep-alive every 30 s).
    pub async fn watch_dir(&self, body: &[u8]) -> Response {
        let msg = match connect::single_message(body) {
            Ok(m) => m,
            Err(e) => return super::envd::unary_error(&e),
        };
        let (root, events) = match self.node_watch(&msg).await {
            Ok(w) => w,
            Err(e) => return super::envd::unary_error(&e),
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
        tokio::spawn(async move {
            // WatchDirResponse's oneof members stand at the top level (unlike a ProcessEvent's wrapper).
            let send = |v: Value| bytes::Bytes::from(connect::envelope(0, v.to_string().as_bytes()));
            if tx.send(send(json!({"start": {}}))).await.is_err() {
                return;
            }
            let mut events = Box::pin(events);
            let mut keepalive = tokio::time::interval(Duration::from_secs(30));
            keepalive.tick().await;
            loop {
                let msg = tokio::select! {
                    e = events.next() => match e {
                        Some(e) => json!({"filesystem": fs_event(&root, &e)}),
                        None => break,
                    },
                    _ = keepalive.tick() => json!({"keepalive": {}}),
                    () = tx.closed() => return,
                };
                if tx.send(send(msg)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(bytes::Bytes::from(connect::end_stream(None))).await;
        });
        super::envd::stream_response(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

fn not_found(id: &str) -> ConnectError {
    ConnectError::new(Code::NotFound, format!("watcher {id} not found"))
}
