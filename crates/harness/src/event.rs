//! The events of a session's log. Each is written before it is acted on;
//! the log alone says where a session stands ([`crate::replay`]).

use serde::{Deserialize, Serialize};

/// A tool call as the model asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's call id, answered with the result.
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them (JSON text, possibly invalid).
    pub arguments: String,
}

/// Tokens a model call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
}

/// How a tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// The tool ran and failed, or its arguments were wrong; the model sees why.
    Error,
    /// Refused by the approval policy or by a human.
    Denied,
    /// A mutating tool was interrupted (crash) after its intent: it may or may not have run.
    Unknown,
    /// Not run: the turn stopped first.
    Skipped,
}

/// One entry of a session's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A user message: it starts a turn.
    Message {
        content: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
    },
    /// A model call is about to be made (step N of the turn).
    ModelRequest { step: u32 },
    /// The model's complete answer.
    ModelResponse { step: u32, text: String, tool_calls: Vec<ToolCall>, usage: Usage, stop_reason: String },
    /// A tool is about to run.
    ToolIntent { call_id: String, name: String, arguments: String },
    /// What a tool call gave (or why it did not run).
    ToolReceipt { call_id: String, name: String, outcome: Outcome, output: String },
    /// The approval policy asks a human; the session waits.
    ApprovalRequested { approval_id: String, call_id: String, tool: String, command: String },
    /// A human's answer, with the API key that gave it.
    ApprovalAnswered {
        approval_id: String,
        approved: bool,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Older history summarised: the model sees `summary` instead of events up to `upto_seq`.
    Compaction { summary: String, upto_seq: i64 },
    /// Something went wrong; `code` is stable.
    Error { code: String, message: String },
    /// The turn is over: `done`, `cancelled`, `error`, `max_steps`, `max_tokens`, `turn_timeout`, `max_turns`.
    TurnFinished {
        reason: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        message: String,
    },
}

impl Event {
    /// The event's kind, as the log's `kind` column and the stream's event name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Message { .. } => "message",
            Self::ModelRequest { .. } => "model_request",
            Self::ModelResponse { .. } => "model_response",
            Self::ToolIntent { .. } => "tool_intent",
            Self::ToolReceipt { .. } => "tool_receipt",
            Self::ApprovalRequested { .. } => "approval_requested",
            Self::ApprovalAnswered { .. } => "approval_answered",
            Self::Compaction { .. } => "compaction",
            Self::Error { .. } => "error",
            Self::TurnFinished { .. } => "turn_finished",
        }
    }
}

/// An event with its place in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub seq: i64,
    pub at_ms: i64,
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_their_kind_as_tag() {
        let ev = Event::ToolReceipt {
            call_id: "c1".into(),
            name: "shell".into(),
            outcome: Outcome::Unknown,
            output: "x".into(),
        };
        let json = serde_json::to_value(&ev).expect("json");
        assert_eq!(json["kind"], ev.kind());
        assert_eq!(json["outcome"], "unknown");
        assert_eq!(serde_json::from_value::<Event>(json).expect("back"), ev);
    }
}
