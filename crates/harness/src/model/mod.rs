//! Model providers: OpenAI-compatible Chat Completions and Anthropic
//! Messages, both streamed. A [`Provider`] turns the provider-neutral
//! conversation into the provider's request, streams text deltas to the
//! caller, and returns the complete answer. 429, 5xx and connection
//! failures are retried with exponential backoff, honouring `Retry-After`.

mod anthropic;
pub mod guard;
mod openai;
pub mod sse;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::event::{ToolCall, Usage};
use crate::replay::Msg;

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSchema {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON schema of the arguments.
    pub parameters: Value,
}

/// One model call.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub system: &'a str,
    pub messages: &'a [Msg],
    pub tools: &'a [ToolSchema],
    pub max_tokens: u32,
}

/// A complete answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub stop_reason: String,
}

/// Why a model call failed, after retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("the model provider refused the API key (HTTP {status}): {body}")]
    Auth { status: u16, body: String },
    #[error("the model provider is unreachable at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the model provider answered HTTP {status}: {body}")]
    Rejected { status: u16, body: String },
    #[error("the model's stream is malformed: {0}")]
    Malformed(String),
}

impl ModelError {
    /// A stable code for the session's `error` event.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Auth { .. } => "model_auth",
            Self::Unreachable { .. } => "model_unreachable",
            Self::Rejected { .. } => "model_rejected",
            Self::Malformed(_) => "model_malformed",
        }
    }
}

/// Which wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OpenAi,
    Anthropic,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "openai" => Some(Self::OpenAi),
            "anthropic" => Some(Self::Anthropic),
            _ => None,
        }
    }
}

/// Backoff between attempts.
#[derive(Debug, Clone)]
pub struct Retry {
    pub attempts: u32,
    pub first: Duration,
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self { attempts: 5, first: Duration::from_millis(500), max: Duration::from_secs(30) }
    }
}

/// A configured model endpoint.
#[derive(Debug, Clone)]
pub struct Provider {
    pub kind: Kind,
    pub base_url: String,
    pub model: String,
    api_key: Option<String>,
    client: reqwest::Client,
    pub retry: Retry,
}

/// What one attempt gave: an answer, or a failure and whether to retry (and when).
enum Attempt {
    Done(Answer),
    Retry(ModelError, Option<Duration>),
    Fail(ModelError),
}

/// Largest error body kept for a message.
const MAX_ERROR_BODY: usize = 2048;

impl Provider {
    pub fn new(kind: Kind, base_url: &str, model: &str, api_key: Option<String>, client: reqwest::Client) -> Self {
        Self {
            kind,
            base_url: base_url.trim_end_matches('/').to_owned(),
            model: model.to_owned(),
            api_key,
            client,
            retry: Retry::default(),
        }
    }

    fn url(&self) -> String {
        match self.kind {
            Kind::OpenAi => format!("{}/chat/completions", self.base_url),
            Kind::Anthropic => format!("{}/v1/messages", self.base_url),
        }
    }

    /// Makes the call, retrying what can be retried; `on_delta` gets text as it streams.
    pub async fn complete(
        &self,
        req: &Request<'_>,
        on_delta: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Answer, ModelError> {
        let body = match self.kind {
            Kind::OpenAi => openai::body(&self.model, req),
            Kind::Anthropic => anthropic::body(&self.model, req),
        };
        let mut delay = self.retry.first;
        let mut attempt = 1;
        loop {
            match self.attempt(&body, on_delta).await {
                Attempt::Done(a) => return Ok(a),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(e, _) if attempt >= self.retry.attempts => return Err(e),
                Attempt::Retry(e, after) => {
                    let wait = after.unwrap_or(delay).min(Duration::from_secs(60));
                    tracing::info!(error = %e, attempt, wait_ms = wait.as_millis() as u64, "model call failed; retrying");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(self.retry.max);
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(&self, body: &Value, on_delta: &mut (dyn FnMut(&str) + Send)) -> Attempt {
        let url = self.url();
        let mut rb = self.client.post(&url).json(body).header("accept", "text/event-stream");
        rb = match (self.kind, &self.api_key) {
            (Kind::OpenAi, Some(k)) => rb.bearer_auth(k),
            (Kind::Anthropic, Some(k)) => rb.header("x-api-key", k),
            (_, None) => rb,
        };
        if self.kind == Kind::Anthropic {
            rb = rb.header("anthropic-version", "2023-06-01");
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(ModelError::Unreachable { url, reason: error_chain(&e) }, None),
        };
        let status = resp.status().as_u16();
        if status != 200 {
            let after = retry_after(resp.headers());
            let mut text = resp.text().await.unwrap_or_default();
            crate::truncate_utf8(&mut text, MAX_ERROR_BODY);
            return match status {
                401 | 403 => Attempt::Fail(ModelError::Auth { status, body: text }),
                408 | 409 | 429 | 500..=599 => Attempt::Retry(ModelError::Rejected { status, body: text }, after),
                _ => Attempt::Fail(ModelError::Rejected { status, body: text }),
            };
        }
        let mut stream = resp.bytes_stream();
        let mut parser = sse::SseParser::default();
        let mut acc = match self.kind {
            Kind::OpenAi => Accumulator::OpenAi(openai::Stream::default()),
            Kind::Anthropic => Accumulator::Anthropic(anthropic::Stream::default()),
        };
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Attempt::Retry(ModelError::Unreachable { url, reason: error_chain(&e) }, None),
            };
            let events = match parser.feed(&chunk) {
                Ok(ev) => ev,
                Err(e) => return Attempt::Fail(ModelError::Malformed(e)),
            };
            for ev in events {
                let step = match &mut acc {
                    Accumulator::OpenAi(s) => s.event(&ev, on_delta),
                    Accumulator::Anthropic(s) => s.event(&ev, on_delta),
                };
                match step {
                    Ok(Some(answer)) => return Attempt::Done(answer),
                    Ok(None) => {}
                    Err(StreamError::Retry(e)) => return Attempt::Retry(e, None),
                    Err(StreamError::Fail(e)) => return Attempt::Fail(e),
                }
            }
        }
        match acc {
            Accumulator::OpenAi(s) => s.finish().map_or_else(
                || Attempt::Retry(ModelError::Malformed("the stream ended before the answer did".into()), None),
                Attempt::Done,
            ),
            Accumulator::Anthropic(_) => {
                Attempt::Retry(ModelError::Malformed("the stream ended before `message_stop`".into()), None)
            }
        }
    }
}

enum Accumulator {
    OpenAi(openai::Stream),
    Anthropic(anthropic::Stream),
}

/// A stream event that ends the attempt.
pub(crate) enum StreamError {
    Retry(ModelError),
    Fail(ModelError),
}

/// `Retry-After` in seconds (the HTTP-date form is not used by model APIs).
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<f64>().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v.min(3600.0)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
