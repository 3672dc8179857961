//! Commands over a WebSocket (`GET /v1/sandboxes/{id}/exec/ws`), with or
//! without a terminal: the interactive counterpart of the SSE stream.
//!
//! The client's first frame is an [`Exec`] in JSON (text). Then the client
//! sends stdin as binary frames and [`WsControl`] messages (EOF, resize,
//! signal) as text frames; the server sends output as binary frames whose
//! first byte is the channel ([`ws_channel`]) and `start`, `exit` and `error`
//! as text frames holding an [`ExecEvent`], then closes. Closing the socket
//! kills the command.

use std::time::{Duration, Instant};

use axum::body::Body as HttpBody;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use reins_api::node::{self as proto, ExecFrame};
use reins_api::v1::{ws_channel, Exec, ExecEvent, PtySize, WsControl};
use reins_api::ErrorBody;
use std::sync::Arc;
use tokio::sync::mpsc;

use super::exec::{exit_code, frames, node_exec, parse_signal};
use super::running;
use crate::auth::Auth;
use crate::error::{ApiError, Path};
use crate::nodes::NodeConn;
use crate::state::{App, Shared};

/// Largest message a client may send (stdin pieces, control messages).
const MAX_MESSAGE: usize = 1 << 20;
/// How long the server waits for the first frame.
const FIRST_FRAME: Duration = Duration::from_secs(10);
const PING_EVERY: Duration = Duration::from_secs(20);

/// Close codes (RFC 6455): normal, policy violation (bad client input), server error.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_ERROR: u16 = 1011;

#[utoipa::path(get, path = "/v1/sandboxes/{id}/exec/ws", tag = "exec", params(("id" = String, Path)),
    description = "Upgrades to a WebSocket. The first client frame is an `Exec` (JSON text; `pty` for a terminal). \
Then binary client frames are stdin and text client frames are `WsControl` messages. The server sends output as \
binary frames whose first byte is the channel (1 stdout, 2 stderr) and `start`, `exit`, `error` as `ExecEvent` text \
frames, then closes. Closing the socket kills the command.",
    responses((status = 101, description = "Switching to the WebSocket protocol"),
              (status = 400, body = ErrorBody, description = "Not a WebSocket upgrade request"), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn ws(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let node = running(&app, &auth, &id).await?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "not_websocket", format!("this route speaks WebSocket only: {e}"))
    })?;
    Ok(upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| session(app, node, id, socket)))
}

type Tx = SplitSink<WebSocket, Message>;
type Rx = SplitStream<WebSocket>;

/// What the reading half tells the writing half.
enum Note {
    /// The client broke the protocol: report and close.
    Invalid(String),
    /// The client closed or vanished: end (the command is killed).
    Gone,
}

async fn session(app: Arc<App>, node: Arc<NodeConn>, id: String, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let req = match first_frame(&mut rx).await.and_then(|req| node_exec(&app, req, true)) {
        Ok(req) => req,
        Err(e) => return fail(&mut tx, e.code, e.message, CLOSE_POLICY).await,
    };
    let stream = match frames(&node, &id, &req).await {
        Ok(s) => s,
        Err(e) => return fail(&mut tx, e.code, e.message, CLOSE_ERROR).await,
    };
    let mut rx = Some(rx);
    let mut stream = Box::pin(stream);
    let start = Instant::now();
    let (notes_tx, mut notes) = mpsc::channel::<Note>(4);
    let mut reader: Option<tokio::task::JoinHandle<()>> = None;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let outcome = loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(frame) = frame else {
                    break Some(("unavailable".to_owned(), "the node ended the command's stream early".to_owned()));
                };
                match frame {
                    ExecFrame::Start { pid } => {
                        if send_event(&mut tx, &ExecEvent::Start { pid }).await.is_err() {
                            break None;
                        }
                        // Input is read only once the command has a pid to address.
                        if let Some(rx) = rx.take() {
                            let input = Input { node: Arc::clone(&node), id: id.clone(), pid, notes: notes_tx.clone() };
                            reader = Some(tokio::spawn(input.run(rx)));
                        }
                    }
                    ExecFrame::Stdout { b64 } => if send_data(&mut tx, ws_channel::STDOUT, &b64).await.is_err() { break None },
                    ExecFrame::Stderr { b64 } => if send_data(&mut tx, ws_channel::STDERR, &b64).await.is_err() { break None },
                    ExecFrame::Exit { code, signal, timed_out } => {
                        app.metrics.exec_seconds.observe(start.elapsed().as_secs_f64());
                        let ev = ExecEvent::Exit { exit_code: exit_code(code, signal), signal, timed_out };
                        if send_event(&mut tx, &ev).await.is_ok() {
                            close(&mut tx, CLOSE_NORMAL, "exited").await;
                        }
                        break None;
                    }
                    ExecFrame::Error { code, message } => break Some((code, message)),
                }
            }
            note = notes.recv() => match note {
                Some(Note::Invalid(message)) => {
                    fail(&mut tx, "invalid".into(), message, CLOSE_POLICY).await;
                    break None;
                }
                Some(Note::Gone) | None => break None,
            },
            _ = ping.tick() => if tx.send(Message::Ping(Default::default())).await.is_err() { break None },
        }
    };
    if let Some((code, message)) = outcome {
        fail(&mut tx, code, message, CLOSE_ERROR).await;
    }
    if let Some(r) = reader {
        r.abort();
    }
    // Dropping the node's stream makes the node kill a command still running.
}

/// Reads the first frame: an [`Exec`] as JSON text.
async fn first_frame(rx: &mut Rx) -> Result<Exec, ApiError> {
    let msg = tokio::time::timeout(FIRST_FRAME, async {
        loop {
            match rx.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    })
    .await
    .map_err(|_| ApiError::bad_request("no Exec frame within 10 seconds"))?;
    match msg {
        Some(Ok(Message::Text(text))) => serde_json::from_str::<Exec>(&text)
            .map_err(|e| ApiError::bad_request(format!("the first frame must be an Exec in JSON: {e}"))),
        Some(Ok(_)) => Err(ApiError::bad_request("the first frame must be an Exec in JSON text")),
        Some(Err(e)) => Err(ApiError::bad_request(format!("broken WebSocket: {e}"))),
        None => Err(ApiError::bad_request("closed before the Exec frame")),
    }
}

/// Input from the client to a running command, in order.
struct Input {
    node: Arc<NodeConn>,
    id: String,
    pid: i32,
    notes: mpsc::Sender<Note>,
}

impl Input {
    async fn run(self, mut rx: Rx) {
        while let Some(msg) = rx.next().await {
            let step = match msg {
                Ok(Message::Binary(data)) => self.stdin(data.to_vec(), false).await,
                Ok(Message::Text(text)) => match serde_json::from_str::<WsControl>(&text) {
                    Ok(ctl) => self.control(ctl).await,
                    Err(e) => Err(format!("not a control message: {e}")),
                },
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(Message::Ping(_) | Message::Pong(_)) => Ok(()),
            };
            if let Err(message) = step {
                let _ = self.notes.send(Note::Invalid(message)).await;
                return;
            }
        }
        let _ = self.notes.send(Note::Gone).await;
    }

    async fn control(&self, ctl: WsControl) -> Result<(), String> {
        match ctl {
            WsControl::Eof => self.stdin(Vec::new(), true).await,
            WsControl::Resize { cols, rows } => {
                if !(PtySize { cols, rows }).is_valid() {
                    return Err("cols and rows must be between 1 and 1000".into());
                }
                let body = proto::Resize { cols, rows };
                self.call(&format!("/exec/{}/resize", self.pid), HttpBody::from(json(&body)), true).await;
                Ok(())
            }
            WsControl::Signal { signal } => {
                let signal = parse_signal(&signal).ok_or_else(|| format!("unknown signal `{signal}`"))?;
                let body = proto::Signal { signal };
                self.call(&format!("/exec/{}/signal", self.pid), HttpBody::from(json(&body)), true).await;
                Ok(())
            }
        }
    }

    async fn stdin(&self, data: Vec<u8>, eof: bool) -> Result<(), String> {
        let path = format!("/exec/{}/stdin{}", self.pid, if eof { "?eof=1" } else { "" });
        self.call(&path, HttpBody::from(data), false).await;
        Ok(())
    }

    /// A call to the command on the node. A failure means the command has
    /// ended; its exit (or error) frame is on its way, so it is not reported.
    async fn call(&self, path: &str, body: HttpBody, is_json: bool) {
        let path = format!("/sandboxes/{}{path}", self.id);
        if let Ok(resp) = self.node.send(Method::POST, &path, body, is_json).await {
            let _ = resp.into_body().collect().await;
        }
    }
}

fn json(v: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

async fn send_event(tx: &mut Tx, ev: &ExecEvent) -> Result<(), axum::Error> {
    tx.send(Message::Text(String::from_utf8(json(ev)).unwrap_or_default().into())).await
}

async fn send_data(tx: &mut Tx, channel: u8, b64: &str) -> Result<(), axum::Error> {
    let data = B64.decode(b64).unwrap_or_default();
    let mut frame = Vec::with_capacity(data.len() + 1);
    frame.push(channel);
    frame.extend_from_slice(&data);
    tx.send(Message::Binary(frame.into())).await
}

async fn close(tx: &mut Tx, code: u16, reason: &str) {
    let _ = tx.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

/// Sends an `error` event and closes with `code`.
async fn fail(tx: &mut Tx, code: String, message: String, close_code: u16) {
    let _ = send_event(tx, &ExecEvent::Error { code, message }).await;
    close(tx, close_code, "error").await;
}
