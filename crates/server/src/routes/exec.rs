//! Running commands: buffered, or streamed as Server-Sent Events; stdin and
//! signals for a streamed command.

use std::convert::Infallible;
use std::str::FromStr;
use std::time::{Duration, Instant};

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures_util::{Stream, StreamExt};
use http_body_util::BodyExt;
use reins_api::node::{self as proto, ExecFrame};
use reins_api::v1::{Exec, ExecEvent, ExecResult, PtySize, Signal, Stdin, User};
use reins_api::ErrorBody;
use reins_types::EnvVar;

use super::running;
use crate::auth::Auth;
use crate::error::{ApiError, Body, Path};
use crate::nodes::NodeConn;
use crate::state::{App, Shared};

/// Output kept per stream of a buffered exec.
const MAX_OUTPUT: usize = 16 << 20;
const DEFAULT_EXEC_TIMEOUT: u64 = 60;

/// Checks a request and turns it into the node's form.
pub(super) fn node_exec(app: &App, req: Exec, keep_stdin: bool) -> Result<proto::Exec, ApiError> {
    if req.cmd.is_empty() || req.cmd[0].is_empty() {
        return Err(ApiError::bad_request("cmd must name a program"));
    }
    if req.cmd.iter().any(|s| s.contains('\0')) {
        return Err(ApiError::bad_request("cmd must not contain NUL"));
    }
    if let Some(cwd) = &req.cwd {
        if !cwd.starts_with('/') || cwd.contains('\0') {
            return Err(ApiError::bad_request("cwd must be an absolute path"));
        }
    }
    for (k, v) in &req.env {
        EnvVar::from_str(&format!("{k}={v}")).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if req.pty.is_some_and(|p| !p.is_valid()) {
        return Err(ApiError::bad_request("pty cols and rows must be between 1 and 1000"));
    }
    let secs = req.timeout_secs.unwrap_or(DEFAULT_EXEC_TIMEOUT);
    if secs == 0 || secs > app.limits.max_timeout.as_secs() {
        return Err(ApiError::bad_request("timeout_secs must be between 1 and the maximum sandbox timeout"));
    }
    Ok(proto::Exec {
        cmd: req.cmd,
        env: req.env,
        cwd: req.cwd,
        root: req.user == User::Root,
        stdin: req.stdin.map(String::into_bytes).unwrap_or_default(),
        keep_stdin,
        pty: req.pty.map(|p| (p.cols, p.rows)),
        timeout_ms: secs * 1000,
    })
}

/// Starts a command on `node` and returns its frames as they come. The last
/// one is always an exit or an error: a stream the node ends early (its
/// connection lost) gets an `unavailable` error.
pub(crate) async fn frames(
    node: &NodeConn,
    id: &str,
    req: &proto::Exec,
) -> Result<impl Stream<Item = ExecFrame>, ApiError> {
    let body = HttpBody::from(serde_json::to_vec(req).map_err(ApiError::internal)?);
    let resp = node.send(Method::POST, &format!("/sandboxes/{id}/exec"), body, true).await?;
    let frames = crate::nodes::ndjson(resp.into_body())
        .map(|f| f.unwrap_or_else(|b| ExecFrame::Error { code: b.code().into(), message: b.message().into() }));
    Ok(ending(frames))
}

/// `frames` up to its first exit or error; one error frame when it ends without either.
fn ending(frames: impl Stream<Item = ExecFrame>) -> impl Stream<Item = ExecFrame> {
    futures_util::stream::unfold((Box::pin(frames), false), |(mut frames, ended)| async move {
        if ended {
            return None;
        }
        let frame = frames.next().await.unwrap_or_else(|| ExecFrame::Error {
            code: "unavailable".into(),
            message: "the node ended the command's stream before it exited".into(),
        });
        let last = matches!(frame, ExecFrame::Exit { .. } | ExecFrame::Error { .. });
        Some((frame, (frames, last)))
    })
}

/// Turns bytes into text without splitting a UTF-8 sequence across chunks.
#[derive(Debug, Default)]
struct Utf8 {
    carry: Vec<u8>,
}

impl Utf8 {
    fn push(&mut self, data: &[u8]) -> String {
        self.carry.extend_from_slice(data);
        let valid = match std::str::from_utf8(&self.carry) {
            Ok(_) => self.carry.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.carry.len(),
        };
        let rest = self.carry.split_off(valid);
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry = rest;
        text
    }
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", tag = "exec", params(("id" = String, Path)), request_body = Exec,
    responses((status = 200, body = ExecResult), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn exec(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Body(req): Body<Exec>,
) -> Result<Json<ExecResult>, ApiError> {
    let req = node_exec(&app, req, false)?;
    let node = running(&app, &auth, &id).await?;
    let start = Instant::now();
    let mut stream = Box::pin(frames(&node, &id, &req).await?);
    let (mut out, mut err, mut truncated) = (Vec::new(), Vec::new(), false);
    let mut keep = |buf: &mut Vec<u8>, b64: &str| {
        let data = B64.decode(b64).unwrap_or_default();
        let room = MAX_OUTPUT.saturating_sub(buf.len());
        truncated |= data.len() > room;
        buf.extend_from_slice(&data[..data.len().min(room)]);
    };
    while let Some(frame) = stream.next().await {
        match frame {
            ExecFrame::Start { .. } => {}
            ExecFrame::Stdout { b64 } => keep(&mut out, &b64),
            ExecFrame::Stderr { b64 } => keep(&mut err, &b64),
            ExecFrame::Exit { code, signal, timed_out } => {
                app.metrics.exec_seconds.observe(start.elapsed().as_secs_f64());
                return Ok(Json(ExecResult {
                    stdout: String::from_utf8_lossy(&out).into_owned(),
                    stderr: String::from_utf8_lossy(&err).into_owned(),
                    exit_code: exit_code(code, signal),
                    signal,
                    timed_out,
                    truncated,
                }));
            }
            ExecFrame::Error { code, message } => return Err(ApiError::new(StatusCode::CONFLICT, &code, message)),
        }
    }
    Err(ApiError::unavailable("the node ended the command's stream early", 1))
}

/// The shell convention: the exit code, or 128 + N after signal N.
pub(super) fn exit_code(code: Option<i32>, signal: Option<i32>) -> i32 {
    code.unwrap_or_else(|| 128 + signal.unwrap_or(0))
}

fn sse(ev: &ExecEvent) -> Event {
    let name = match ev {
        ExecEvent::Start { .. } => "start",
        ExecEvent::Stdout { .. } => "stdout",
        ExecEvent::Stderr { .. } => "stderr",
        ExecEvent::Exit { .. } => "exit",
        ExecEvent::Error { .. } => "error",
    };
    Event::default().event(name).json_data(ev).unwrap_or_default()
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec/stream", tag = "exec", params(("id" = String, Path)), request_body = Exec,
    responses((status = 200, description = "Server-Sent Events; each `data` is an `ExecEvent` in JSON", content_type = "text/event-stream", body = reins_api::v1::ExecSseEvent),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn stream(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Body(req): Body<Exec>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let keep_stdin = req.stdin.is_none();
    let req = node_exec(&app, req, keep_stdin)?;
    let node = running(&app, &auth, &id).await?;
    let frames = frames(&node, &id, &req).await?;
    let start = Instant::now();
    let (mut out, mut err) = (Utf8::default(), Utf8::default());
    let events = frames.map(move |frame| {
        let ev = match frame {
            ExecFrame::Start { pid } => ExecEvent::Start { pid },
            ExecFrame::Stdout { b64 } => ExecEvent::Stdout { data: out.push(&B64.decode(b64).unwrap_or_default()) },
            ExecFrame::Stderr { b64 } => ExecEvent::Stderr { data: err.push(&B64.decode(b64).unwrap_or_default()) },
            ExecFrame::Exit { code, signal, timed_out } => {
                app.metrics.exec_seconds.observe(start.elapsed().as_secs_f64());
                ExecEvent::Exit { exit_code: exit_code(code, signal), signal, timed_out }
            }
            ExecFrame::Error { code, message } => ExecEvent::Error { code, message },
        };
        Ok(sse(&ev))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec/{pid}/stdin", tag = "exec",
    params(("id" = String, Path), ("pid" = i32, Path)), request_body = Stdin,
    responses((status = 204), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn stdin(
    State(app): Shared,
    auth: Auth,
    Path((id, pid)): Path<(String, i32)>,
    Body(req): Body<Stdin>,
) -> Result<StatusCode, ApiError> {
    let node = running(&app, &auth, &id).await?;
    let path = format!("/sandboxes/{id}/exec/{pid}/stdin{}", if req.eof { "?eof=1" } else { "" });
    let resp = node.send(Method::POST, &path, HttpBody::from(req.data.into_bytes()), false).await?;
    let _ = resp.into_body().collect().await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec/{pid}/resize", tag = "exec",
    params(("id" = String, Path), ("pid" = i32, Path)), request_body = PtySize,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn resize(
    State(app): Shared,
    auth: Auth,
    Path((id, pid)): Path<(String, i32)>,
    Body(size): Body<PtySize>,
) -> Result<StatusCode, ApiError> {
    if !size.is_valid() {
        return Err(ApiError::bad_request("cols and rows must be between 1 and 1000"));
    }
    let node = running(&app, &auth, &id).await?;
    let body = proto::Resize { cols: size.cols, rows: size.rows };
    node.call_empty(Method::POST, &format!("/sandboxes/{id}/exec/{pid}/resize"), Some(&body)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A signal number from `9`, `KILL` or `SIGKILL`.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    })
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec/{pid}/signal", tag = "exec",
    params(("id" = String, Path), ("pid" = i32, Path)), request_body = Signal,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn signal(
    State(app): Shared,
    auth: Auth,
    Path((id, pid)): Path<(String, i32)>,
    Body(req): Body<Signal>,
) -> Result<StatusCode, ApiError> {
    let signal =
        parse_signal(&req.signal).ok_or_else(|| ApiError::bad_request(format!("unknown signal `{}`", req.signal)))?;
    let node = running(&app, &auth, &id).await?;
    node.call_empty(Method::POST, &format!("/sandboxes/{id}/exec/{pid}/signal"), Some(&proto::Signal { signal }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_never_split() {
        let mut u = Utf8::default();
        let bytes = "héllo".as_bytes();
        let a = u.push(&bytes[..2]);
        let b = u.push(&bytes[2..]);
        assert_eq!(format!("{a}{b}"), "héllo");
        assert_eq!(Utf8::default().push(&[0xff, b'a']), "\u{fffd}a");
    }

    #[tokio::test]
    async fn a_stream_always_ends_with_an_exit_or_an_error() {
        let cut = ending(futures_util::stream::iter([ExecFrame::Start { pid: 2 }])).collect::<Vec<_>>().await;
        assert!(
            matches!(&cut[..], [ExecFrame::Start { pid: 2 }, ExecFrame::Error { code, .. }] if code == "unavailable")
        );
        let exit = ExecFrame::Exit { code: Some(0), signal: None, timed_out: false };
        let whole =
            ending(futures_util::stream::iter([exit.clone(), ExecFrame::Start { pid: 3 }])).collect::<Vec<_>>().await;
        assert!(matches!(&whole[..], [ExecFrame::Exit { code: Some(0), .. }]), "nothing after the exit: {whole:?}");
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("INT"), Some(2));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("65"), None);
        assert_eq!(parse_signal("BOGUS"), None);
    }
}
