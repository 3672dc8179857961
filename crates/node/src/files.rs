//! File routes of the node protocol: streamed download and upload, listing,
//! stat, mkdir, remove, move, and directory watches (newline-delimited JSON).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use reins_api::node::FileQuery;
use reins_api::v1::{FileEntry, FileEvent, FileEventKind, FileKind};
use reins_sandbox::{EntryInfo, User, WatchKind};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::state::Node;

/// Bytes per guest read or write.
const PIECE: usize = 1 << 20;

pub fn router() -> Router<Arc<Node>> {
    Router::new()
        .route("/files", get(download).put(upload))
        .route("/files/list", get(list))
        .route("/files/stat", get(stat))
        .route("/files/mkdir", post(mkdir))
        .route("/files/remove", post(remove))
        .route("/files/move", post(rename))
        .route("/files/watch", get(watch))
}

fn user(q: &FileQuery) -> User {
    if q.root {
        User::Root
    } else {
        User::User
    }
}

pub fn entry(e: EntryInfo) -> FileEntry {
    FileEntry {
        path: e.path,
        name: e.name,
        kind: match e.kind {
            reins_sandbox::FileKind::File => FileKind::File,
            reins_sandbox::FileKind::Dir => FileKind::Dir,
            reins_sandbox::FileKind::Symlink => FileKind::Symlink,
            reins_sandbox::FileKind::Other => FileKind::Other,
        },
        size: e.size,
        mode: e.mode & 0o7777,
        mtime_ms: (e.mtime_ns / 1_000_000) as i64,
        symlink_target: e.symlink_target,
    }
}

type Shared = State<Arc<Node>>;

async fn download(
    State(node): Shared,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<Response, ApiError> {
    let sandbox = node.get(&id).await?;
    let who = user(&q);
    // The first piece is read before answering, so a missing file is a clean 404.
    let (first, eof) = sandbox.read_file(who, &q.path, 0, PIECE as u64).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut offset = first.len() as u64;
        if tx.send(Ok(Bytes::from(first))).await.is_err() || eof {
            return;
        }
        loop {
            match sandbox.read_file(who, &q.path, offset, PIECE as u64).await {
                Ok((data, eof)) => {
                    offset += data.len() as u64;
                    if tx.send(Ok(Bytes::from(data))).await.is_err() || eof {
                        return;
                    }
                }
                Err(e) => {
                    // Cut the body short: the client sees a broken transfer, not a short file.
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            }
        }
    });
    Ok(Response::new(Body::from_stream(ReceiverStream::new(rx))))
}

/// Writes the body to a temporary name beside `path`, then renames it into
/// place: an interrupted upload leaves the old file (or nothing), never half.
async fn upload(
    State(node): Shared,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
    body: Body,
) -> Result<Json<FileEntry>, ApiError> {
    let sandbox = node.get(&id).await?;
    let who = user(&q);
    let tmp = temp_name(&q.path)?;
    let written = write_all(&sandbox, who, &tmp, body).await;
    let result = match written {
        Ok(()) => sandbox.rename(who, &tmp, &q.path).await.map_err(ApiError::from),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        let _ = sandbox.remove(who, &tmp, false).await;
        return Err(e);
    }
    Ok(Json(entry(sandbox.stat(who, &q.path).await?)))
}

fn temp_name(path: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", format!("`{path}` is not a file path"));
    let (dir, name) = path.rsplit_once('/').ok_or_else(invalid)?;
    if name.is_empty() || name == "." || name == ".." {
        return Err(invalid());
    }
    let nonce: u64 =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    Ok(format!("{dir}/.{name}.reins-upload-{nonce:x}"))
}

async fn write_all(sandbox: &reins_sandbox::Sandbox, who: User, path: &str, body: Body) -> Result<(), ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(PIECE);
    let mut started = false;
    loop {
        let chunk = stream.next().await;
        let end = chunk.is_none();
        if let Some(chunk) = chunk {
            let chunk =
                chunk.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "upload_interrupted", e.to_string()))?;
            buf.extend_from_slice(&chunk);
        }
        while buf.len() >= PIECE || (end && (!buf.is_empty() || !started)) {
            let take = buf.len().min(PIECE);
            let piece: Vec<u8> = buf.drain(..take).collect();
            sandbox.write_file(who, path, piece, started).await?;
            started = true;
        }
        if end {
            return Ok(());
        }
    }
}

async fn list(
    State(node): Shared,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<Json<Vec<FileEntry>>, ApiError> {
    let depth = q.depth.unwrap_or(1).clamp(1, 16);
    let entries = node.get(&id).await?.list(user(&q), &q.path, depth).await?;
    Ok(Json(entries.into_iter().map(entry).collect()))
}

async fn stat(
    State(node): Shared,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<Json<FileEntry>, ApiError> {
    Ok(Json(entry(node.get(&id).await?.stat(user(&q), &q.path).await?)))
}

async fn mkdir(
    State(node): Shared,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<StatusCode, ApiError> {
    node.get(&id).await?.mkdir(user(&q), &q.path, q.parents.unwrap_or(false)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove(
    State(node): Shared,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<StatusCode, ApiError> {
    node.get(&id).await?.remove(user(&q), &q.path, q.recursive.unwrap_or(false)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rename(
    State(node): Shared,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<StatusCode, ApiError> {
    let to = q.to.as_deref().ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid", "missing `to`"))?;
    node.get(&id).await?.rename(user(&q), &q.path, to).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Streams changes below a directory as newline-delimited [`FileEvent`]s
/// until the caller goes away or the sandbox ends. The watch is set up
/// before answering, so a missing directory is a clean 404.
async fn watch(State(node): Shared, Path(id): Path<String>, Query(q): Query<FileQuery>) -> Result<Response, ApiError> {
    let mut watch = node.get(&id).await?.watch(&q.path, q.recursive.unwrap_or(false)).await?;
    let hold = node.hold(&id);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let _hold = hold;
        loop {
            tokio::select! {
                ev = watch.next() => {
                    let Some(ev) = ev else { return };
                    let mut line = serde_json::to_vec(&FileEvent { kind: event_kind(ev.kind), path: ev.path }).unwrap_or_default();
                    line.push(b'\n');
                    if tx.send(Ok(Bytes::from(line))).await.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        }
    });
    Ok(Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_default())
}

fn event_kind(k: WatchKind) -> FileEventKind {
    match k {
        WatchKind::Create => FileEventKind::Create,
        WatchKind::Write => FileEventKind::Write,
        WatchKind::Remove => FileEventKind::Remove,
        WatchKind::Rename => FileEventKind::Rename,
        WatchKind::Chmod => FileEventKind::Chmod,
    }
}
