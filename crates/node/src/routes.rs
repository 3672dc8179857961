//! The node protocol's routes (see [`reins_api::node`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reins_api::node::{self as proto, ExecFrame};
use reins_sandbox::{Exec, ExecEvent, ExecRequest, ExitStatus, User};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::files;
use crate::state::Node;

type Shared = State<Arc<Node>>;

/// Every route of the node protocol.
pub fn router(node: Arc<Node>) -> Router {
    let sandbox = Router::new()
        .route("/", axum::routing::delete(destroy))
        .route("/pause", post(pause))
        .route("/hibernate", post(hibernate))
        .route("/wake", post(wake))
        .route("/snapshots", post(snapshot))
        .route("/resume", post(resume))
        .route("/network", axum::routing::put(set_network))
        .route("/ports/{port}", axum::routing::any(crate::ports::forward))
        .route("/exec", post(exec))
        .route("/exec/{pid}/stdin", post(stdin))
        .route("/exec/{pid}/signal", post(signal))
        .route("/exec/{pid}/resize", post(resize))
        .route("/exec/{pid}/attach", get(attach))
        .route("/execs", get(execs))
        .route("/metrics", get(metrics))
        .merge(files::router());
    let routes = Router::new()
        .route("/status", get(status))
        .route("/sandboxes", post(create))
        .route("/network/events", get(network_events))
        .route("/templates", get(templates))
        .route("/templates/{name}", axum::routing::delete(delete_template).put(import_template))
        .route("/skills/{sha}", get(has_skill).put(put_skill))
        .route("/volumes/{name}", axum::routing::delete(delete_volume))
        .route("/snapshots/{sid}", get(snapshot_info).delete(delete_snapshot))
        .route("/pools", axum::routing::put(set_pools))
        .nest("/sandboxes/{id}", sandbox)
        .with_state(node);
    Router::new().nest(proto::PREFIX, routes)
}

async fn status(State(node): Shared) -> Json<proto::Status> {
    Json(node.status())
}

async fn create(State(node): Shared, Json(req): Json<proto::CreateSandbox>) -> Result<StatusCode, ApiError> {
    node.create(req).await?;
    Ok(StatusCode::CREATED)
}

async fn templates(State(node): Shared) -> Result<Json<Vec<reins_api::v1::Template>>, ApiError> {
    let list = node.runtime().templates().list()?;
    Ok(Json(list.into_iter().map(|t| reins_api::v1::Template { name: t.name, digest: t.digest }).collect()))
}

/// Imports an OCI image archive (or `docker save` archive) sent as the body:
/// it is written to the template store's staging area, unpacked, and removed.
async fn import_template(
    State(node): Shared,
    Path(name): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<reins_api::v1::Template>), ApiError> {
    reins_types::validate_template_name(&name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?;
    let templates = node.runtime().templates().clone();
    let file = templates.scratch_file();
    let result = match receive(&file, body).await {
        Ok(()) => {
            let archive = file.clone();
            tokio::task::spawn_blocking(move || templates.import_oci(&archive, &name, &mut |_| {}))
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "node_error", e.to_string()))
                .and_then(|r| r.map_err(ApiError::from))
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&file).await;
    let t = result?;
    Ok((StatusCode::CREATED, Json(reins_api::v1::Template { name: t.name, digest: t.digest })))
}

/// Writes a request body to `path`.
async fn receive(path: &std::path::Path, body: Body) -> Result<(), ApiError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let io = |e: std::io::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "node_error", e.to_string());
    let mut out = tokio::fs::File::create(path).await.map_err(io)?;
    let mut data = body.into_data_stream();
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "upload_interrupted", e.to_string()))?;
        out.write_all(&chunk).await.map_err(io)?;
    }
    out.flush().await.map_err(io)
}

async fn has_skill(State(node): Shared, Path(sha): Path<String>) -> Result<StatusCode, ApiError> {
    match node.mounts().has_skill(&sha)? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::new(StatusCode::NOT_FOUND, "skill_missing", "no such skill bundle")),
    }
}

/// Receives a skill bundle (a tar archive named by its SHA-256) and unpacks it.
async fn put_skill(State(node): Shared, Path(sha): Path<String>, body: Body) -> Result<StatusCode, ApiError> {
    let spool = node.mounts().skill_spool(&sha)?;
    let limited = Body::new(http_body_util::Limited::new(body, crate::mounts::MAX_SKILL as usize));
    let result = match receive(&spool, limited).await {
        Ok(()) => {
            let (n, s, p) = (Arc::clone(&node), sha.clone(), spool.clone());
            tokio::task::spawn_blocking(move || n.mounts().install_skill(&s, &p))
                .await
                .unwrap_or_else(|e| Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "node_error", e.to_string())))
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&spool).await;
    result.map(|()| StatusCode::NO_CONTENT)
}

async fn delete_volume(State(node): Shared, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    let n = Arc::clone(&node);
    tokio::task::spawn_blocking(move || n.mounts().delete_volume(&name))
        .await
        .unwrap_or_else(|e| Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "node_error", e.to_string())))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_template(State(node): Shared, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    node.runtime().templates().remove(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn destroy(State(node): Shared, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    node.destroy(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_network(
    State(node): Shared,
    Path(id): Path<String>,
    Json(network): Json<reins_types::SandboxNetwork>,
) -> Result<StatusCode, ApiError> {
    node.set_network(&id, network).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn network_events(
    State(node): Shared,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Json<proto::NetFeed> {
    let after = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    Json(node.net_feed(after, 5000))
}

async fn pause(State(node): Shared, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    node.set_paused(&id, true)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn hibernate(State(node): Shared, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    node.hibernate(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn wake(State(node): Shared, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    node.get(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn snapshot(
    State(node): Shared,
    Path(id): Path<String>,
    Json(req): Json<proto::TakeSnapshot>,
) -> Result<(StatusCode, Json<proto::SnapshotInfo>), ApiError> {
    Ok((StatusCode::CREATED, Json(node.snapshot(&id, &req.id).await?)))
}

async fn snapshot_info(State(node): Shared, Path(sid): Path<String>) -> Result<Json<proto::SnapshotInfo>, ApiError> {
    Ok(Json(node.snapshots.info(&sid)?))
}

async fn delete_snapshot(State(node): Shared, Path(sid): Path<String>) -> Result<StatusCode, ApiError> {
    node.delete_snapshot(&sid).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_pools(State(node): Shared, Json(pools): Json<Vec<proto::PoolSpec>>) -> Result<StatusCode, ApiError> {
    node.set_pools(pools)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn resume(State(node): Shared, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    node.set_paused(&id, false)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn exec(State(node): Shared, Path(id): Path<String>, Json(req): Json<proto::Exec>) -> Result<Response, ApiError> {
    let sandbox = node.get(&id).await?;
    // The proxy's variables first: the caller's own settings win.
    let mut env = node.net_env(&id);
    env.extend(req.env);
    let (cmd, cwd, pty) = (req.cmd.clone(), req.cwd.clone(), req.pty.is_some());
    let request = ExecRequest {
        argv: req.cmd,
        env,
        cwd: req.cwd,
        user: if req.root { User::Root } else { User::User },
        pty: req.pty,
    };
    let exec = sandbox.exec(request).await?;
    drop(sandbox);
    let control = exec.control();
    if !req.stdin.is_empty() {
        control.write_stdin(&req.stdin).await?;
    }
    if !req.keep_stdin {
        control.close_stdin().await?;
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let timeout = Duration::from_millis(req.timeout_ms.max(1));
    let (frames, _) = tokio::sync::broadcast::channel(256);
    let running = crate::state::RunningExec { control: control.clone(), cmd, cwd, pty, frames };
    tokio::spawn(pump(node, id, exec, running, tx, timeout));
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_default())
}

fn line(frame: &ExecFrame) -> Bytes {
    let mut v = serde_json::to_vec(frame).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Forwards a command's events as frames until it exits; kills it on its
/// timeout or when the caller goes away.
async fn pump(
    node: Arc<Node>,
    id: String,
    mut exec: Exec,
    running: crate::state::RunningExec,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    timeout: Duration,
) {
    let pid = exec.pid();
    let (control, copies) = (running.control.clone(), running.frames.clone());
    node.add_exec(&id, pid, running);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut timed_out = false;
    let mut frames = vec![ExecFrame::Start { pid }];
    loop {
        for f in frames.drain(..) {
            let _ = copies.send(f.clone());
            if tx.send(Ok(line(&f))).await.is_err() {
                let _ = control.signal(libc::SIGKILL).await;
                node.remove_exec(&id, pid);
                return;
            }
        }
        tokio::select! {
            ev = exec.next() => match ev {
                Ok(Some(ExecEvent::Stdout(d))) => frames.push(ExecFrame::Stdout { b64: B64.encode(d) }),
                Ok(Some(ExecEvent::Stderr(d))) => frames.push(ExecFrame::Stderr { b64: B64.encode(d) }),
                Ok(Some(ExecEvent::Exit(status))) => {
                    let (code, signal) = match status {
                        ExitStatus::Code(c) => (Some(c), None),
                        ExitStatus::Signal(s) => (None, Some(s)),
                    };
                    let end = ExecFrame::Exit { code, signal, timed_out };
                    let _ = copies.send(end.clone());
                    let _ = tx.send(Ok(line(&end))).await;
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    let e = ApiError::from(e);
                    let end = ExecFrame::Error { code: e.code.into(), message: e.message };
                    let _ = copies.send(end.clone());
                    let _ = tx.send(Ok(line(&end))).await;
                    break;
                }
            },
            () = &mut deadline, if !timed_out => {
                timed_out = true;
                let _ = control.signal(libc::SIGKILL).await;
            }
            () = tx.closed() => {
                let _ = control.signal(libc::SIGKILL).await;
                break;
            }
        }
    }
    node.remove_exec(&id, pid);
}

/// A sample over 200 ms of the sandbox's CPU, and its memory and disk now.
/// A hibernated sandbox is not woken for this: it uses nothing (all zeros).
async fn metrics(State(node): Shared, Path(id): Path<String>) -> Result<Json<proto::SandboxMetrics>, ApiError> {
    let Some(sandbox) = node.peek(&id)? else { return Ok(Json(proto::SandboxMetrics::default())) };
    let slot = sandbox.slot().ok_or_else(ApiError::not_found)?;
    let cgroups = node.runtime().cgroups().clone();
    let window = Duration::from_millis(200);
    let first = cgroups.cpu_ns(slot);
    tokio::time::sleep(window).await;
    let cpus_used = cgroups.cpu_ns(slot).saturating_sub(first) as f64 / window.as_nanos() as f64;
    let root = format!("/proc/{}/root", sandbox.host_pid());
    let (disk_used_bytes, disk_total_bytes) = nix::sys::statvfs::statvfs(root.as_str())
        .map(|v| {
            let f = v.fragment_size();
            ((v.blocks() - v.blocks_free()) * f, v.blocks() * f)
        })
        .unwrap_or((0, 0));
    Ok(Json(proto::SandboxMetrics {
        cpus_used,
        mem_used_bytes: cgroups.memory_current(slot).unwrap_or(0),
        disk_used_bytes,
        disk_total_bytes,
    }))
}

async fn execs(State(node): Shared, Path(id): Path<String>) -> Result<Json<Vec<proto::ExecInfo>>, ApiError> {
    node.peek(&id)?;
    Ok(Json(node.execs(&id)))
}

/// A running command's frames from now on, after a `Start`: its output goes
/// to every attached caller as well as to the one that started it.
async fn attach(State(node): Shared, Path((id, pid)): Path<(String, i32)>) -> Result<Response, ApiError> {
    let (mut frames, pty) = node.attach(&id, pid)?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        if tx.send(Ok(line(&ExecFrame::Start { pid }))).await.is_err() {
            return;
        }
        loop {
            let f = tokio::select! {
                f = frames.recv() => f,
                () = tx.closed() => return,
            };
            let f = match f {
                Ok(f) => f,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let end = matches!(f, ExecFrame::Exit { .. } | ExecFrame::Error { .. });
            if tx.send(Ok(line(&f))).await.is_err() || end {
                return;
            }
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(proto::EXEC_PTY_HEADER, if pty { "1" } else { "0" })
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_default())
}

async fn stdin(
    State(node): Shared,
    Path((id, pid)): Path<(String, i32)>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let control = node.exec(&id, pid)?;
    if !body.is_empty() {
        control.write_stdin(&body).await?;
    }
    if q.get("eof").is_some_and(|v| v == "1" || v == "true") {
        control.close_stdin().await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn signal(
    State(node): Shared,
    Path((id, pid)): Path<(String, i32)>,
    Json(req): Json<proto::Signal>,
) -> Result<StatusCode, ApiError> {
    if !(1..=64).contains(&req.signal) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "signal must be 1 to 64"));
    }
    node.exec(&id, pid)?.signal(req.signal).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn resize(
    State(node): Shared,
    Path((id, pid)): Path<(String, i32)>,
    Json(req): Json<proto::Resize>,
) -> Result<StatusCode, ApiError> {
    node.exec(&id, pid)?.resize(req.cols, req.rows).await?;
    Ok(StatusCode::NO_CONTENT)
}
