//! A scripted model server on loopback that speaks both OpenAI Chat
//! Completions and Anthropic Messages, streamed. Each request is recorded
//! and answered by a responder (a queue of replies or a function of the
//! request). It is the project's only test double: it stands in for a
//! model provider in tests and in `reins bench agent`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// One scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A text answer (streamed in two deltas when long enough).
    Text(String),
    /// Tool calls: (name, arguments as JSON text, possibly invalid).
    Tools(Vec<(String, String)>),
    /// An HTTP error with a body, and `Retry-After` seconds if any.
    Status(u16, String, Option<u32>),
    /// Wait, then answer.
    After(Duration, Box<Reply>),
    /// Never answer (the connection stays open).
    Hang,
}

/// What a request was: its protocol and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// `openai` or `anthropic`.
    pub protocol: &'static str,
    pub body: Value,
    /// The API key sent (`Authorization: Bearer` or `x-api-key`).
    pub key: Option<String>,
    /// When it arrived, and when its answer was ready to send.
    pub received: Instant,
    pub answered: Option<Instant>,
}

type Responder = dyn Fn(&Seen) -> Reply + Send + Sync;

struct Inner {
    seen: Mutex<Vec<Seen>>,
    responder: Box<Responder>,
    /// Keys accepted; any when empty.
    keys: Vec<String>,
}

/// A running scripted server; it stops when dropped.
pub struct Scripted {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripted").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    /// Answers with `replies` in order, then with `Text("done")`.
    pub async fn queue(replies: Vec<Reply>) -> std::io::Result<Self> {
        let q = Mutex::new(VecDeque::from(replies));
        Self::start(
            move |_| q.lock().unwrap_or_else(|p| p.into_inner()).pop_front().unwrap_or(Reply::Text("done".into())),
            vec![],
        )
        .await
    }

    /// Answers each request with `responder(request)`; only `keys` are accepted (any when empty).
    pub async fn start(
        responder: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
        keys: Vec<String>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner { seen: Mutex::new(Vec::new()), responder: Box::new(responder), keys });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .with_state(Arc::clone(&inner));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, inner, task })
    }

    /// Base URL for provider `openai`.
    pub fn openai_url(&self) -> String {
        format!("http://localhost:{}/v1", self.addr.port())
    }

    /// Base URL for provider `anthropic`.
    pub fn anthropic_url(&self) -> String {
        format!("http://localhost:{}", self.addr.port())
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn key(h: &HeaderMap) -> Option<String> {
    let bearer =
        h.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::to_owned);
    bearer.or_else(|| h.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned))
}

async fn answer(inner: Arc<Inner>, protocol: &'static str, headers: HeaderMap, body: String) -> Response {
    let received = Instant::now();
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let seen = Seen { protocol, body, key: key(&headers), received, answered: None };
    let index = {
        let mut all = inner.seen.lock().unwrap_or_else(|p| p.into_inner());
        all.push(seen.clone());
        all.len() - 1
    };
    if !inner.keys.is_empty() && !seen.key.as_ref().is_some_and(|k| inner.keys.contains(k)) {
        return error(401, r#"{"error":{"message":"invalid api key","type":"authentication_error"}}"#.into(), None);
    }
    let mut reply = (inner.responder)(&seen);
    loop {
        match reply {
            Reply::After(d, next) => {
                tokio::time::sleep(d).await;
                reply = *next;
            }
            Reply::Hang => std::future::pending::<()>().await,
            Reply::Status(code, body, retry) => return error(code, body, retry),
            Reply::Text(_) | Reply::Tools(_) => break,
        }
    }
    let sse = if protocol == "openai" { openai_sse(&reply) } else { anthropic_sse(&reply) };
    if let Some(s) = inner.seen.lock().unwrap_or_else(|p| p.into_inner()).get_mut(index) {
        s.answered = Some(Instant::now());
    }
    Response::builder().header("content-type", "text/event-stream").body(Body::from(sse)).unwrap_or_default()
}

fn error(code: u16, body: String, retry: Option<u32>) -> Response {
    let mut r = Response::builder().status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    if let Some(s) = retry {
        r = r.header("retry-after", s.to_string());
    }
    r.header("content-type", "application/json").body(Body::from(body)).unwrap_or_default()
}

async fn openai(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    answer(inner, "openai", headers, body).await
}

async fn anthropic(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    answer(inner, "anthropic", headers, body).await
}

fn halves(text: &str) -> (String, String) {
    let mut mid = text.len() / 2;
    while !text.is_char_boundary(mid) {
        mid -= 1;
    }
    (text[..mid].to_owned(), text[mid..].to_owned())
}

fn openai_sse(reply: &Reply) -> String {
    let mut out = String::new();
    let mut push = |v: Value| out.push_str(&format!("data: {v}\n\n"));
    let finish = match reply {
        Reply::Text(t) => {
            let (a, b) = halves(t);
            for part in [a, b].into_iter().filter(|p| !p.is_empty()) {
                push(json!({"choices": [{"index": 0, "delta": {"content": part}}]}));
            }
            "stop"
        }
        Reply::Tools(calls) => {
            for (i, (name, args)) in calls.iter().enumerate() {
                let (a, b) = halves(args);
                push(
                    json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "id": format!("call_{i}_{}", rand::random::<u32>()), "type": "function", "function": {"name": name, "arguments": a}}]}}]}),
                );
                push(
                    json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "function": {"arguments": b}}]}}]}),
                );
            }
            "tool_calls"
        }
        _ => "stop",
    };
    push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}));
    push(json!({"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}));
    out.push_str("data: [DONE]\n\n");
    out
}

fn anthropic_sse(reply: &Reply) -> String {
    let mut out = String::new();
    let mut push = |kind: &str, v: Value| out.push_str(&format!("event: {kind}\ndata: {v}\n\n"));
    push(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "role": "assistant", "content": [], "usage": {"input_tokens": 100, "output_tokens": 1}}}),
    );
    let stop = match reply {
        Reply::Text(t) => {
            push(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            );
            let (a, b) = halves(t);
            for part in [a, b].into_iter().filter(|p| !p.is_empty()) {
                push(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": part}}),
                );
            }
            push("content_block_stop", json!({"type": "content_block_stop", "index": 0}));
            "end_turn"
        }
        Reply::Tools(calls) => {
            for (i, (name, args)) in calls.iter().enumerate() {
                let id = format!("toolu_{i}_{}", rand::random::<u32>());
                push(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                );
                push(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": args}}),
                );
                push("content_block_stop", json!({"type": "content_block_stop", "index": i}));
            }
            "tool_use"
        }
        _ => "end_turn",
    };
    push(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 10}}),
    );
    push("message_stop", json!({"type": "message_stop"}));
    out
}
