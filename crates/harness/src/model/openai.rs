//! OpenAI-compatible Chat Completions (OpenAI, vLLM, Ollama, llama.cpp
//! server, MiniMax, …): `POST {base}/chat/completions` with `stream: true`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::sse::SseEvent;
use super::{Answer, ModelError, Request, StreamError};
use crate::event::{ToolCall, Usage};
use crate::replay::Msg;

pub(super) fn body(model: &str, req: &Request<'_>) -> Value {
    let mut messages = vec![json!({"role": "system", "content": req.system})];
    for m in req.messages {
        messages.push(match m {
            Msg::User(text) => json!({"role": "user", "content": text}),
            Msg::Assistant { text, calls } if calls.is_empty() => json!({"role": "assistant", "content": text}),
            Msg::Assistant { text, calls } => json!({
                "role": "assistant",
                "content": if text.is_empty() { Value::Null } else { json!(text) },
                "tool_calls": calls.iter().map(|c| json!({
                    "id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                })).collect::<Vec<_>>(),
            }),
            Msg::ToolResult { call_id, content, .. } => {
                json!({"role": "tool", "tool_call_id": call_id, "content": content})
            }
        });
    }
    let mut body = json!({
        "model": model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": req.max_tokens,
    });
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
            .collect();
    }
    body
}

/// An answer being streamed.
#[derive(Debug, Default)]
pub(super) struct Stream {
    text: String,
    /// Tool calls by their stream index: id, name, arguments so far.
    calls: BTreeMap<u64, (String, String, String)>,
    usage: Usage,
    finish: Option<String>,
}

impl Stream {
    pub(super) fn event(
        &mut self,
        ev: &SseEvent,
        on_delta: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Option<Answer>, StreamError> {
        if ev.data.trim() == "[DONE]" {
            return std::mem::take(self)
                .finish()
                .map(Some)
                .ok_or_else(|| StreamError::Retry(ModelError::Malformed("`[DONE]` before any finish_reason".into())));
        }
        let v: Value = serde_json::from_str(&ev.data)
            .map_err(|e| StreamError::Fail(ModelError::Malformed(format!("a chunk is not JSON: {e}"))))?;
        if let Some(err) = v.get("error") {
            return Err(StreamError::Retry(ModelError::Rejected { status: 200, body: err.to_string() }));
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage.input = u["prompt_tokens"].as_u64().unwrap_or(self.usage.input);
            self.usage.output = u["completion_tokens"].as_u64().unwrap_or(self.usage.output);
        }
        for choice in v["choices"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let delta = &choice["delta"];
            if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                self.text.push_str(t);
                on_delta(t);
            }
            for tc in delta["tool_calls"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let index = tc["index"].as_u64().unwrap_or(self.calls.len() as u64);
                let entry = self.calls.entry(index).or_default();
                if let Some(id) = tc["id"].as_str() {
                    entry.0 = id.to_owned();
                }
                if let Some(name) = tc["function"]["name"].as_str() {
                    entry.1.push_str(name);
                }
                if let Some(args) = tc["function"]["arguments"].as_str() {
                    entry.2.push_str(args);
                }
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                self.finish = Some(f.to_owned());
            }
        }
        Ok(None)
    }

    /// The answer, once a finish reason was seen.
    pub(super) fn finish(self) -> Option<Answer> {
        let stop_reason = self.finish?;
        let tool_calls = self
            .calls
            .into_iter()
            .map(|(i, (id, name, arguments))| ToolCall {
                id: if id.is_empty() { format!("call_{i}") } else { id },
                name,
                arguments,
            })
            .collect();
        Some(Answer { text: self.text, tool_calls, usage: self.usage, stop_reason })
    }
}
