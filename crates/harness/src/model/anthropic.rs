//! Anthropic Messages: `POST {base}/v1/messages` with `stream: true`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::sse::SseEvent;
use super::{Answer, ModelError, Request, StreamError};
use crate::event::{ToolCall, Usage};
use crate::replay::Msg;

pub(super) fn body(model: &str, req: &Request<'_>) -> Value {
    // Tool results go in a user message; consecutive ones share it.
    let mut messages: Vec<Value> = Vec::new();
    for m in req.messages {
        match m {
            Msg::User(text) => messages.push(json!({"role": "user", "content": [{"type": "text", "text": text}]})),
            Msg::Assistant { text, calls } => {
                let mut content = Vec::new();
                if !text.is_empty() {
                    content.push(json!({"type": "text", "text": text}));
                }
                for c in calls {
                    // The arguments were checked before the call ran; invalid ones are sent as a string.
                    let input = serde_json::from_str::<Value>(&c.arguments)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({"_invalid_arguments": c.arguments}));
                    content.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
                }
                if content.is_empty() {
                    content.push(json!({"type": "text", "text": "(no answer)"}));
                }
                messages.push(json!({"role": "assistant", "content": content}));
            }
            Msg::ToolResult { call_id, content, is_error, .. } => {
                let block =
                    json!({"type": "tool_result", "tool_use_id": call_id, "content": content, "is_error": is_error});
                match messages.last_mut() {
                    Some(last) if last["role"] == "user" && last["content"][0]["type"] == "tool_result" => {
                        if let Some(arr) = last["content"].as_array_mut() {
                            arr.push(block);
                        }
                    }
                    _ => messages.push(json!({"role": "user", "content": [block]})),
                }
            }
        }
    }
    let mut body = json!({
        "model": model,
        "max_tokens": req.max_tokens,
        "system": req.system,
        "messages": messages,
        "stream": true,
    });
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
    }
    body
}

/// An answer being streamed: content blocks by index.
#[derive(Debug, Default)]
pub(super) struct Stream {
    text: String,
    /// tool_use blocks: id, name, partial JSON.
    tools: BTreeMap<u64, (String, String, String)>,
    usage: Usage,
    stop: String,
}

impl Stream {
    pub(super) fn event(
        &mut self,
        ev: &SseEvent,
        on_delta: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Option<Answer>, StreamError> {
        let v: Value = serde_json::from_str(&ev.data)
            .map_err(|e| StreamError::Fail(ModelError::Malformed(format!("an event is not JSON: {e}"))))?;
        let kind = v["type"].as_str().unwrap_or(&ev.event).to_owned();
        match kind.as_str() {
            "message_start" => {
                let u = &v["message"]["usage"];
                self.usage.input = u["input_tokens"].as_u64().unwrap_or(0)
                    + u["cache_read_input_tokens"].as_u64().unwrap_or(0)
                    + u["cache_creation_input_tokens"].as_u64().unwrap_or(0);
                self.usage.output = u["output_tokens"].as_u64().unwrap_or(0);
            }
            "content_block_start" => {
                let block = &v["content_block"];
                if block["type"] == "tool_use" {
                    let id = block["id"].as_str().unwrap_or_default().to_owned();
                    let name = block["name"].as_str().unwrap_or_default().to_owned();
                    self.tools.insert(v["index"].as_u64().unwrap_or(0), (id, name, String::new()));
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        let t = d["text"].as_str().unwrap_or_default();
                        self.text.push_str(t);
                        on_delta(t);
                    }
                    Some("input_json_delta") => {
                        if let Some(e) = self.tools.get_mut(&v["index"].as_u64().unwrap_or(0)) {
                            e.2.push_str(d["partial_json"].as_str().unwrap_or_default());
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(s) = v["delta"]["stop_reason"].as_str() {
                    self.stop = s.to_owned();
                }
                if let Some(o) = v["usage"]["output_tokens"].as_u64() {
                    self.usage.output = o;
                }
            }
            "message_stop" => return Ok(Some(self.answer())),
            "error" => {
                let e = v["error"].to_string();
                let overloaded = v["error"]["type"] == "overloaded_error" || v["error"]["type"] == "api_error";
                let err = ModelError::Rejected { status: 200, body: e };
                return Err(if overloaded { StreamError::Retry(err) } else { StreamError::Fail(err) });
            }
            _ => {} // ping, content_block_stop
        }
        Ok(None)
    }

    fn answer(&mut self) -> Answer {
        let tool_calls = std::mem::take(&mut self.tools)
            .into_values()
            .map(|(id, name, args)| ToolCall { id, name, arguments: if args.is_empty() { "{}".into() } else { args } })
            .collect();
        Answer { text: std::mem::take(&mut self.text), tool_calls, usage: self.usage, stop_reason: self.stop.clone() }
    }
}
