//! Agents, sessions, approvals and skills (`/v1/agents`, `/v1/sessions`,
//! `/v1/skills`). Requests reject unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::v1::Network;

/// `POST /v1/agents` (and `PUT /v1/agents/{id}`): an agent's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    pub model: ModelSpec,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system_prompt: String,
    /// Enabled tools; all of them when absent: `shell`, `read_file`,
    /// `write_file`, `edit_file`, `list_files`, `search`, `web_fetch`, `memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Names of the tenant's skills (their latest version), mounted at `/skills/<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<String>,
    #[serde(default)]
    pub sandbox: AgentSandbox,
    /// Approval policy by tool name; a tool not named is `allow`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub approvals: BTreeMap<String, ToolPolicy>,
    #[serde(default)]
    pub budgets: Budgets,
}

/// Which model an agent talks to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// `openai` (any OpenAI-compatible Chat Completions endpoint) or `anthropic` (the Messages API).
    #[schema(pattern = "^(openai|anthropic)$")]
    pub provider: String,
    /// `https://api.openai.com/v1` (the `/chat/completions` route is added) or
    /// `https://api.anthropic.com` (`/v1/messages` is added).
    pub base_url: String,
    /// The model's name at the provider, such as `gpt-4.1` or `claude-sonnet-4-5`.
    pub name: String,
    /// Name of the tenant secret holding the API key; it must be bound to the
    /// base URL's host. No key is sent when absent (local servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret: Option<String>,
    /// Largest answer per model call, default 4096 tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_output_tokens: Option<u32>,
}

/// The sandbox an agent's sessions work in. Its `/workspace` is the agent's volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSandbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
    /// The sandbox's egress policy (`web_fetch` goes through it); `none` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
}

/// `allow`, `ask` or `deny` for a tool, with rules for `shell` commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolPolicy {
    /// What applies when no rule matches: `allow` (default), `ask` or `deny`.
    #[serde(default = "allow")]
    #[schema(pattern = "^(allow|ask|deny)$")]
    pub default: String,
    /// For `shell`: glob patterns over the command (`*` is any text), such as
    /// `git status*`. A matching `deny` wins over `ask`, `ask` over `allow`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<PolicyRule>,
}

fn allow() -> String {
    "allow".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// A glob over the whole command.
    #[serde(rename = "match")]
    pub pattern: String,
    #[schema(pattern = "^(allow|ask|deny)$")]
    pub action: String,
}

/// Where a turn stops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Model calls in one turn, default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_steps: Option<u32>,
    /// Turns in one session, unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_turns: Option<u32>,
    /// Tokens (input and output) in one turn, default 1,000,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_tokens: Option<u64>,
    /// Wall time of one turn in seconds, default 900.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub turn_secs: Option<u64>,
    /// Context size (estimated tokens) above which older turns are summarised, default 100,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1000)]
    pub context_tokens: Option<u64>,
}

/// An agent as answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub id: String,
    #[serde(flatten)]
    pub spec: AgentSpec,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A session as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub id: String,
    pub agent_id: String,
    /// `idle` (waits for a message), `running` (a turn runs) or `waiting` (for an approval).
    pub status: String,
    /// Sequence number of the latest event (0: none).
    pub last_seq: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// `POST /v1/sessions/{id}/messages`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    pub content: String,
    /// The client's key for this message: posting it again answers the same turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The turn a message started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Turn {
    pub session_id: String,
    /// Sequence number of the message event; events of the turn follow it.
    pub turn: i64,
    /// True when the idempotency key had been used: no new turn was started.
    pub duplicate: bool,
}

/// One event of a session's log (`GET /v1/sessions/{id}/events`, and each
/// Server-Sent Event's `data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionEvent {
    pub seq: i64,
    /// `message`, `model_request`, `model_response`, `tool_intent`,
    /// `tool_receipt`, `approval_requested`, `approval_answered`,
    /// `compaction`, `error`, `turn_finished`. On the stream also
    /// `text_delta` (not logged, without `seq`: the `model_response` has the text).
    pub kind: String,
    pub at_ms: i64,
    /// The event's fields, by kind.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// `POST /v1/sessions/{id}/approvals/{approval_id}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerApproval {
    /// `approve` or `deny`.
    #[schema(pattern = "^(approve|deny)$")]
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A skill bundle's version (`PUT /v1/skills/{name}` with a tar archive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Skill {
    pub name: String,
    pub version: i64,
    pub description: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub created_ms: i64,
}
