//! E2B's in-sandbox protocol (envd), served by the control plane for the
//! sandbox named by the request (`E2b-Sandbox-Id` or the host
//! `49983-{id}.{domain}`) and carried out by its node: Connect-RPC
//! `process.Process` over the node's exec streams, and `/health`.
//! The sandbox's access token (`X-Access-Token`) is required.
//!
//! Files are in [`super::files`], watchers in [`super::watch`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures_util::StreamExt;
use reins_api::node::{self as proto, ExecFrame};
use serde::Deserialize;
use serde_json::{json, Value};

use super::connect::{self, Code, ConnectError};
use crate::state::App;

/// envd's port: requests for it are envd's; other ports are the sandbox's own.
pub const ENVD_PORT: u16 = 49983;
/// Largest request body (an RPC, or a `/files` upload held in memory).
const MAX_BODY: usize = 256 << 20;

pub(super) fn unary_error(e: &ConnectError) -> Response {
    let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(e.json())).into_response()
}

pub(super) fn from_api(e: crate::error::ApiError) -> ConnectError {
    let code = match e.status.as_u16() {
        400 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::FailedPrecondition,
        413 | 429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        _ => Code::Internal,
    };
    ConnectError::new(code, e.message)
}

/// Serves one envd request for sandbox `id`.
pub async fn serve(app: &Arc<App>, id: &str, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let entry = match crate::ingress::authorize(app, id, ENVD_PORT, req.headers()).await {
        Ok(e) => e,
        // E2B's proxy answers 502 for a sandbox that is gone: the SDKs' `is_running()` reads it as false.
        Err(e) if path == "/health" && e.status == StatusCode::NOT_FOUND => {
            return StatusCode::BAD_GATEWAY.into_response()
        }
        Err(e) => return unary_error(&from_api(e)),
    };
    if path == "/health" {
        return StatusCode::NO_CONTENT.into_response();
    }
    let ctx =
        Ctx { app: Arc::clone(app), id: id.to_owned(), node: entry.node.clone(), user_root: is_root(req.headers()) };
    let query: super::files::FilesQuery =
        serde_urlencoded::from_str(req.uri().query().unwrap_or_default()).unwrap_or_default();
    if path == "/files" && req.method() == Method::GET {
        return ctx.read(query).await;
    }
    if req.method() != Method::POST {
        return unary_error(&ConnectError::new(Code::Unimplemented, format!("{} {path} is not served", req.method())));
    }
    if path == "/process.Process/StreamInput" {
        return ctx.stream_input(req.into_body()).await;
    }
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return unary_error(&ConnectError::new(
                Code::ResourceExhausted,
                format!("request body over {MAX_BODY} bytes"),
            ))
        }
    };
    match path.as_str() {
        "/process.Process/Start" => ctx.start(&headers, &body).await,
        "/process.Process/Connect" => ctx.attach(&body).await,
        "/process.Process/List" => unary(ctx.list().await),
        "/process.Process/SendInput" => unary(ctx.send_input(&body).await),
        "/process.Process/SendSignal" => unary(ctx.send_signal(&body).await),
        "/process.Process/CloseStdin" => unary(ctx.close_stdin(&body).await),
        "/process.Process/Update" => unary(ctx.update(&body).await),
        "/files" => ctx.write(query, &headers, body).await,
        "/filesystem.Filesystem/WatchDir" => ctx.watch_dir(&body).await,
        p if p.starts_with("/filesystem.Filesystem/") => {
            unary(ctx.filesystem(p.trim_start_matches("/filesystem.Filesystem/"), &body).await)
        }
        other => unary_error(&ConnectError::new(
            Code::Unimplemented,
            format!("{} is not served by Reins yet", other.trim_start_matches('/')),
        )),
    }
}

fn unary(r: Result<Value, ConnectError>) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => unary_error(&e),
    }
}

/// The user of `Authorization: Basic base64("<user>:")`: root, or `user` (the default).
fn is_root(h: &HeaderMap) -> bool {
    let Some(b) = h.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic ")) else {
        return false;
    };
    let user = B64.decode(b.trim()).ok().and_then(|d| String::from_utf8(d).ok()).unwrap_or_default();
    user.split(':').next() == Some("root")
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProcessConfig {
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    envs: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct PtySize {
    cols: u16,
    rows: u16,
}

#[derive(Debug, Default, Deserialize)]
struct Pty {
    size: Option<PtySize>,
}

#[derive(Debug, Deserialize)]
struct StartRequest {
    process: ProcessConfig,
    #[serde(default)]
    pty: Option<Pty>,
    #[serde(default)]
    stdin: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct Selector {
    pid: Option<i32>,
}

#[derive(Debug, Default, Deserialize)]
struct Input {
    stdin: Option<String>,
    pty: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SendInputRequest {
    process: Selector,
    input: Input,
}

#[derive(Debug, Default, Deserialize)]
struct InputData {
    #[serde(default)]
    input: Input,
}

/// One message of `Process/StreamInput`: `start` (which process), then `data`, or `keepalive`.
#[derive(Debug, Deserialize)]
struct StreamInputRequest {
    start: Option<ProcessOnly>,
    data: Option<InputData>,
}

#[derive(Debug, Deserialize)]
struct SignalRequest {
    process: Selector,
    signal: Value,
}

#[derive(Debug, Deserialize)]
struct ProcessOnly {
    process: Selector,
}

#[derive(Debug, Deserialize)]
struct UpdateRequest {
    process: Selector,
    pty: Option<Pty>,
}

#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) app: Arc<App>,
    pub(super) id: String,
    pub(super) node: String,
    pub(super) user_root: bool,
}

/// A server-streaming answer: envelopes as `stream` yields them.
pub(super) fn stream_response(stream: impl futures_util::Stream<Item = bytes::Bytes> + Send + 'static) -> Response {
    Response::builder()
        .header("content-type", "application/connect+json")
        .body(Body::from_stream(stream.map(Ok::<_, std::convert::Infallible>)))
        .unwrap_or_default()
}

/// The deadline a Connect client gave, if any.
fn deadline(h: &HeaderMap) -> Option<Duration> {
    let ms = h.get("connect-timeout-ms")?.to_str().ok()?.trim().parse::<u64>().ok()?;
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn pid_of(s: &Selector) -> Result<i32, ConnectError> {
    s.pid.ok_or_else(|| ConnectError::new(Code::InvalidArgument, "select the process by pid"))
}

impl Ctx {
    /// The sandbox's node.
    pub(super) fn conn(&self) -> Result<Arc<crate::nodes::NodeConn>, ConnectError> {
        self.app.nodes.get(&self.node).map_err(from_api)
    }

    async fn start(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        let prepared = (|| {
            let msg = connect::single_message(body)?;
            let req: StartRequest = connect::parse(&msg)?;
            if req.process.cmd.is_empty() || req.process.cmd.contains('\0') {
                return Err(ConnectError::new(Code::InvalidArgument, "process.cmd must name a program"));
            }
            let pty = req.pty.as_ref().map(|p| p.size.as_ref().map_or((80, 24), |s| (s.cols.max(1), s.rows.max(1))));
            let timeout = deadline(headers).unwrap_or(self.app.limits.max_timeout);
            let mut cmd = vec![req.process.cmd];
            cmd.extend(req.process.args);
            Ok(proto::Exec {
                cmd,
                env: req.process.envs,
                cwd: req.process.cwd.filter(|c| !c.is_empty()),
                root: self.user_root,
                stdin: Vec::new(),
                keep_stdin: pty.is_some() || req.stdin.unwrap_or(true),
                pty,
                timeout_ms: timeout.as_millis() as u64,
            })
        })();
        let exec = match prepared {
            Ok(e) => e,
            Err(e) => return unary_error(&e),
        };
        let conn = match self.conn() {
            Ok(c) => c,
            Err(e) => return unary_error(&e),
        };
        match crate::routes::exec::frames(&conn, &self.id, &exec).await {
            Ok(frames) => stream_response(events(Box::pin(frames), exec.pty.is_some())),
            Err(e) => unary_error(&from_api(e)),
        }
    }

    /// `Process/Connect`: the events of a running command from now on (start first).
    async fn attach(&self, body: &[u8]) -> Response {
        let prepared = (|| {
            let msg = connect::single_message(body)?;
            let req: ProcessOnly = connect::parse(&msg)?;
            pid_of(&req.process)
        })();
        let pid = match prepared {
            Ok(p) => p,
            Err(e) => return unary_error(&e),
        };
        let conn = match self.conn() {
            Ok(c) => c,
            Err(e) => return unary_error(&e),
        };
        let resp = match conn
            .send(Method::GET, &format!("/sandboxes/{}/exec/{pid}/attach", self.id), Body::empty(), false)
            .await
        {
            Ok(r) => r,
            Err(e) => return unary_error(&from_api(e)),
        };
        // A terminal's output is `pty` data, as at its start.
        let pty = resp.headers().get(proto::EXEC_PTY_HEADER).is_some_and(|v| v == "1");
        let frames = crate::nodes::ndjson::<ExecFrame>(Body::new(resp.into_body()))
            .map(|f| f.unwrap_or_else(|b| ExecFrame::Error { code: b.code().into(), message: b.message().into() }));
        stream_response(events(Box::pin(frames), pty))
    }

    /// `Process/List`: the commands running in the sandbox.
    async fn list(&self) -> Result<Value, ConnectError> {
        let conn = self.conn()?;
        let execs: Vec<proto::ExecInfo> =
            conn.call(Method::GET, &format!("/sandboxes/{}/execs", self.id), None::<&()>).await.map_err(from_api)?;
        let processes: Vec<Value> = execs
            .into_iter()
            .map(|e| {
                let (cmd, args) = e.cmd.split_first().map_or((String::new(), vec![]), |(c, a)| (c.clone(), a.to_vec()));
                let mut config = json!({"cmd": cmd, "args": args, "envs": {}});
                if let Some(cwd) = e.cwd {
                    config["cwd"] = json!(cwd);
                }
                json!({"config": config, "pid": e.pid})
            })
            .collect();
        Ok(json!({"processes": processes}))
    }

    async fn node_post(&self, path: &str, body: Body, json: bool) -> Result<(), ConnectError> {
        let conn = self.conn()?;
        conn.send(Method::POST, &format!("/sandboxes/{}/{path}", self.id), body, json).await.map_err(from_api)?;
        Ok(())
    }

    /// Writes an input message (stdin or PTY bytes, base64) to command `pid`.
    async fn write_input(&self, pid: i32, input: Input) -> Result<(), ConnectError> {
        let data = input.stdin.or(input.pty).unwrap_or_default();
        let bytes = B64.decode(data).map_err(|_| ConnectError::new(Code::InvalidArgument, "input is not base64"))?;
        self.node_post(&format!("exec/{pid}/stdin"), Body::from(bytes), false).await
    }

    async fn send_input(&self, body: &[u8]) -> Result<Value, ConnectError> {
        let req: SendInputRequest = connect::parse(body)?;
        self.write_input(pid_of(&req.process)?, req.input).await?;
        Ok(json!({}))
    }

    /// `Process/StreamInput` (client streaming): each `data` message goes to
    /// the command's stdin as it arrives; the answer is one `{}` and the end.
    async fn stream_input(&self, mut body: Body) -> Response {
        use http_body_util::BodyExt;
        let mut buf = Vec::new();
        let mut pid: Option<i32> = None;
        let result: Result<(), ConnectError> = async {
            while let Some(frame) = body.frame().await {
                let frame =
                    frame.map_err(|e| ConnectError::new(Code::InvalidArgument, format!("request stream: {e}")))?;
                let Ok(data) = frame.into_data() else { continue };
                buf.extend_from_slice(&data);
                for env in connect::decode(&mut buf)? {
                    if env.flags & connect::FLAG_END != 0 {
                        continue;
                    }
                    let msg: StreamInputRequest = connect::parse(&env.payload)?;
                    if let Some(start) = msg.start {
                        pid = Some(pid_of(&start.process)?);
                    } else if let Some(d) = msg.data {
                        let pid = pid.ok_or_else(|| ConnectError::new(Code::InvalidArgument, "send `start` first"))?;
                        self.write_input(pid, d.input).await?;
                    }
                }
            }
            if !buf.is_empty() {
                return Err(ConnectError::new(Code::InvalidArgument, "the request ends inside an envelope"));
            }
            Ok(())
        }
        .await;
        let mut out = Vec::new();
        match result {
            Ok(()) => {
                out.extend(connect::envelope(0, b"{}"));
                out.extend(connect::end_stream(None));
            }
            Err(e) => out.extend(connect::end_stream(Some(&e))),
        }
        Response::builder().header("content-type", "application/connect+json").body(Body::from(out)).unwrap_or_default()
    }

    async fn close_stdin(&self, body: &[u8]) -> Result<Value, ConnectError> {
        let req: ProcessOnly = connect::parse(body)?;
        let pid = pid_of(&req.process)?;
        self.node_post(&format!("exec/{pid}/stdin?eof=1"), Body::empty(), false).await?;
        Ok(json!({}))
    }

    async fn send_signal(&self, body: &[u8]) -> Result<Value, ConnectError> {
        let req: SignalRequest = connect::parse(body)?;
        let pid = pid_of(&req.process)?;
        let signal = match &req.signal {
            Value::String(s) if s == "SIGNAL_SIGKILL" => 9,
            Value::String(s) if s == "SIGNAL_SIGTERM" => 15,
            Value::Number(n) if n.as_i64() == Some(9) || n.as_i64() == Some(15) => n.as_i64().unwrap_or(9) as i32,
            other => return Err(ConnectError::new(Code::InvalidArgument, format!("unknown signal {other}"))),
        };
        let body = serde_json::to_vec(&proto::Signal { signal })
            .map_err(|e| ConnectError::new(Code::Internal, e.to_string()))?;
        self.node_post(&format!("exec/{pid}/signal"), Body::from(body), true).await?;
        Ok(json!({}))
    }

    async fn update(&self, body: &[u8]) -> Result<Value, ConnectError> {
        let req: UpdateRequest = connect::parse(body)?;
        let pid = pid_of(&req.process)?;
        let Some(size) = req.pty.and_then(|p| p.size) else { return Ok(json!({})) };
        let resize = proto::Resize { cols: size.cols.max(1), rows: size.rows.max(1) };
        let body = serde_json::to_vec(&resize).map_err(|e| ConnectError::new(Code::Internal, e.to_string()))?;
        self.node_post(&format!("exec/{pid}/resize"), Body::from(body), true).await?;
        Ok(json!({}))
    }
}

fn event(v: Value) -> bytes::Bytes {
    bytes::Bytes::from(connect::envelope(0, json!({ "event": v }).to_string().as_bytes()))
}

/// The node's exec frames as envd's `StartResponse` envelopes, with a
/// keep-alive every 30 s, ending with the end-of-stream envelope.
fn events(
    mut frames: std::pin::Pin<Box<impl futures_util::Stream<Item = ExecFrame> + Send + 'static>>,
    pty: bool,
) -> impl futures_util::Stream<Item = bytes::Bytes> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    tokio::spawn(async move {
        let mut keepalive = tokio::time::interval(Duration::from_secs(30));
        keepalive.tick().await;
        let end = loop {
            let frame = tokio::select! {
                f = frames.next() => f,
                _ = keepalive.tick() => {
                    if tx.send(event(json!({"keepalive": {}}))).await.is_err() { return; }
                    continue;
                }
            };
            let msg = match frame {
                None => {
                    break Some(ConnectError::new(Code::Unavailable, "the sandbox ended the command's stream early"))
                }
                Some(ExecFrame::Start { pid }) => json!({"start": {"pid": pid}}),
                Some(ExecFrame::Stdout { b64 }) => json!({"data": { (if pty { "pty" } else { "stdout" }): b64 }}),
                Some(ExecFrame::Stderr { b64 }) => json!({"data": {"stderr": b64}}),
                Some(ExecFrame::Exit { code, signal, .. }) => {
                    let status = match (code, signal) {
                        (Some(c), _) => format!("exit status {c}"),
                        (None, Some(9)) => "signal: killed".to_owned(),
                        (None, s) => format!("signal: {}", s.unwrap_or(0)),
                    };
                    let end =
                        json!({"end": {"exitCode": code.unwrap_or(-1), "exited": code.is_some(), "status": status}});
                    if tx.send(event(end)).await.is_err() {
                        return;
                    }
                    break None;
                }
                Some(ExecFrame::Error { code, message }) => {
                    break Some(ConnectError::new(
                        if code == "not_found" { Code::NotFound } else { Code::Unavailable },
                        message,
                    ))
                }
            };
            if tx.send(event(msg)).await.is_err() {
                return;
            }
        };
        let _ = tx.send(bytes::Bytes::from(connect::end_stream(end.as_ref()))).await;
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
