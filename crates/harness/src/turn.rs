//! The driver: performs a session's next steps, appending each to the log
//! before acting on it, until the turn ends or waits for a human.
//!
//! Crash semantics follow from the log alone ([`crate::replay`]): a model
//! request without an answer is made again; a read-only tool whose receipt
//! is missing is run again; a mutating one is not: its receipt says the
//! outcome is unknown, and the model can check.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use reins_api::agent::ToolPolicy;

use crate::context::{self, Context};
use crate::event::{Event, Logged, Outcome, ToolCall, Usage};
use crate::model::{self, Provider, ToolSchema};
use crate::policy::{self, Decision};
use crate::replay::{CallState, Next, Replay};
use crate::tools::{Tool, Workspace};

/// Why an append failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("another worker took the session over")]
    Fenced,
    #[error("the session log cannot be written: {0}")]
    Store(String),
}

/// The session's log and signals, as the driver sees them.
pub trait Journal: Send + Sync {
    /// Appends `event` under the worker's lease; `usage` is added to the counts.
    fn append(&self, event: Event, usage: Option<Usage>) -> impl Future<Output = Result<Logged, JournalError>> + Send;
    /// True once the turn's cancellation was asked for.
    fn cancelled(&self) -> bool;
    /// Resolves when cancellation is asked for.
    fn on_cancel(&self) -> impl Future<Output = ()> + Send;
    /// Text as the model streams it (not logged: the answer is).
    fn delta(&self, text: &str);
    /// A fresh approval id.
    fn approval_id(&self) -> String;
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// An agent's settings for the driver.
#[derive(Debug, Clone)]
pub struct Settings {
    pub provider: Provider,
    pub system_prompt: String,
    pub enabled: Vec<String>,
    pub tools: Vec<ToolSchema>,
    pub approvals: BTreeMap<String, ToolPolicy>,
    pub skills: Vec<(String, String)>,
    pub max_steps: u32,
    pub max_turns: Option<u32>,
    pub max_tokens: u64,
    pub turn_time: Duration,
    pub context_tokens: u64,
    pub max_output_tokens: u32,
}

/// Where a drive stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The turn is over (or none was open).
    Idle,
    /// An approval is pending; nothing should be held while it waits.
    Waiting,
}

/// What one step did.
enum Step {
    Continue,
    Stop(Ending),
}

/// Performs steps of the open turn until it ends or waits.
pub async fn drive<J: Journal, W: Workspace>(
    s: &Settings,
    journal: &J,
    ws: &W,
    replay: &mut Replay,
) -> Result<Ending, JournalError> {
    let mut ctx: Option<Context> = None;
    loop {
        if replay.turn().is_some() && journal.cancelled() {
            finish(journal, replay, "cancelled", "the turn was cancelled").await?;
            return Ok(Ending::Idle);
        }
        let step = match replay.next() {
            Next::Idle => return Ok(Ending::Idle),
            Next::Finish => {
                finish(journal, replay, "done", "").await?;
                Step::Stop(Ending::Idle)
            }
            Next::CallModel { step } => call_model(s, journal, ws, replay, &mut ctx, step).await?,
            Next::Tool { call, state } => tool_step(s, journal, ws, replay, call, state).await?,
        };
        if let Step::Stop(e) = step {
            return Ok(e);
        }
    }
}

async fn push(
    journal: &impl Journal,
    replay: &mut Replay,
    event: Event,
    usage: Option<Usage>,
) -> Result<(), JournalError> {
    let logged = journal.append(event, usage).await?;
    replay.push(logged);
    Ok(())
}

async fn finish(journal: &impl Journal, replay: &mut Replay, reason: &str, message: &str) -> Result<(), JournalError> {
    let ev = Event::TurnFinished { reason: reason.into(), message: message.into() };
    push(journal, replay, ev, None).await
}

/// Appends an error event and ends the turn.
async fn fail(journal: &impl Journal, replay: &mut Replay, code: &str, message: String) -> Result<Step, JournalError> {
    push(journal, replay, Event::Error { code: code.into(), message: message.clone() }, None).await?;
    finish(journal, replay, "error", &message).await?;
    Ok(Step::Stop(Ending::Idle))
}

/// A budget the next model call would pass, as (reason, message).
fn over_budget(s: &Settings, journal: &impl Journal, replay: &Replay, step: u32) -> Option<(&'static str, String)> {
    let (steps, usage) = replay.turn_usage();
    let started = turn_started_ms(replay);
    if step == 1 {
        if let Some(max) = s.max_turns.filter(|m| replay.turns() > *m) {
            return Some(("max_turns", format!("the session reached its budget of {max} turns")));
        }
    }
    if steps >= s.max_steps {
        return Some(("max_steps", format!("the turn reached its budget of {} model calls", s.max_steps)));
    }
    if usage.input + usage.output >= s.max_tokens {
        return Some((
            "max_tokens",
            format!("the turn used {} tokens, its budget is {}", usage.input + usage.output, s.max_tokens),
        ));
    }
    if journal.now_ms() - started >= s.turn_time.as_millis() as i64 {
        return Some(("turn_timeout", format!("the turn ran past its {} s budget", s.turn_time.as_secs())));
    }
    None
}

/// When the open turn's message was logged.
fn turn_started_ms(replay: &Replay) -> i64 {
    replay.turn().and_then(|t| t.first()).map_or(0, |e| e.at_ms)
}

/// Time left in the turn's wall-time budget.
fn time_left(s: &Settings, journal: &impl Journal, replay: &Replay) -> Duration {
    let started = turn_started_ms(replay);
    let left = s.turn_time.as_millis() as i64 - (journal.now_ms() - started);
    Duration::from_millis(left.max(0) as u64)
}

async fn call_model<J: Journal, W: Workspace>(
    s: &Settings,
    journal: &J,
    ws: &W,
    replay: &mut Replay,
    ctx: &mut Option<Context>,
    step: u32,
) -> Result<Step, JournalError> {
    if let Some((reason, message)) = over_budget(s, journal, replay, step) {
        finish(journal, replay, reason, &message).await?;
        return Ok(Step::Stop(Ending::Idle));
    }
    if ctx.is_none() {
        match Context::load(ws, s.skills.clone()).await {
            Ok(c) => *ctx = Some(c),
            Err(e) => {
                return fail(journal, replay, "sandbox_unavailable", format!("the sandbox could not be reached: {e}"))
                    .await
            }
        }
    }
    let ctx = ctx.as_ref().map_or_else(Context::default, Clone::clone);
    compact_if_needed(s, journal, replay, &ctx).await?;
    push(journal, replay, Event::ModelRequest { step }, None).await?;
    let (summary, messages) = replay.conversation();
    let system = context::system_prompt(&s.system_prompt, &ctx, summary);
    let req = model::Request { system: &system, messages: &messages, tools: &s.tools, max_tokens: s.max_output_tokens };
    let mut on_delta = |t: &str| journal.delta(t);
    let call = s.provider.complete(&req, &mut on_delta);
    let answer = tokio::select! {
        a = tokio::time::timeout(time_left(s, journal, replay), call) => a,
        () = journal.on_cancel() => {
            finish(journal, replay, "cancelled", "the turn was cancelled").await?;
            return Ok(Step::Stop(Ending::Idle));
        }
    };
    match answer {
        Err(_) => {
            let message = format!("the turn ran past its {} s budget", s.turn_time.as_secs());
            finish(journal, replay, "turn_timeout", &message).await?;
            Ok(Step::Stop(Ending::Idle))
        }
        Ok(Err(e)) => fail(journal, replay, e.code(), e.to_string()).await,
        Ok(Ok(a)) => {
            let ev = Event::ModelResponse {
                step,
                text: a.text,
                tool_calls: a.tool_calls,
                usage: a.usage,
                stop_reason: a.stop_reason,
            };
            push(journal, replay, ev, Some(a.usage)).await?;
            Ok(Step::Continue)
        }
    }
}

/// Summarises the turns before the open one when the context is over budget.
async fn compact_if_needed(
    s: &Settings,
    journal: &impl Journal,
    replay: &mut Replay,
    ctx: &Context,
) -> Result<(), JournalError> {
    let (summary, messages) = replay.conversation();
    let system = context::system_prompt(&s.system_prompt, ctx, summary);
    if context::estimate_tokens(&system, &messages) <= s.context_tokens {
        return Ok(());
    }
    let Some(open) = replay.turn().and_then(|t| t.first()).map(|e| e.seq) else { return Ok(()) };
    let (previous, mut old) = replay.conversation_before(open);
    if old.is_empty() {
        return Ok(()); // only the open turn is large: nothing earlier to summarise
    }
    old.push(crate::replay::Msg::User(context::COMPACT_PROMPT.into()));
    let system = match previous {
        Some(p) => format!("You summarise conversations.\n\nAn earlier summary:\n{p}"),
        None => "You summarise conversations.".to_owned(),
    };
    let req = model::Request { system: &system, messages: &old, tools: &[], max_tokens: s.max_output_tokens };
    match s.provider.complete(&req, &mut |_| {}).await {
        Ok(a) => {
            let ev = Event::Compaction { summary: a.text, upto_seq: open - 1 };
            push(journal, replay, ev, Some(a.usage)).await
        }
        Err(e) => {
            tracing::warn!(error = %e, "compaction failed; the full history is sent");
            Ok(())
        }
    }
}

async fn receipt(
    journal: &impl Journal,
    replay: &mut Replay,
    call: &ToolCall,
    outcome: Outcome,
    output: String,
) -> Result<Step, JournalError> {
    let ev = Event::ToolReceipt { call_id: call.id.clone(), name: call.name.clone(), outcome, output };
    push(journal, replay, ev, None).await?;
    Ok(Step::Continue)
}

async fn tool_step<J: Journal, W: Workspace>(
    s: &Settings,
    journal: &J,
    ws: &W,
    replay: &mut Replay,
    call: ToolCall,
    state: CallState,
) -> Result<Step, JournalError> {
    let tool = match Tool::parse(&call.name, &call.arguments) {
        Ok(t) if s.enabled.iter().any(|e| e == t.name()) => t,
        Ok(t) => {
            let msg =
                format!("the tool `{}` is not enabled for this agent; use one of: {}", t.name(), s.enabled.join(", "));
            return receipt(journal, replay, &call, Outcome::Error, msg).await;
        }
        Err(msg) => return receipt(journal, replay, &call, Outcome::Error, msg).await,
    };
    match state {
        CallState::Waiting { .. } => Ok(Step::Stop(Ending::Waiting)),
        CallState::Denied { reason } => {
            let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
            receipt(journal, replay, &call, Outcome::Denied, format!("a human denied this call{why}")).await
        }
        CallState::Interrupted if tool.mutating() => {
            let msg = format!(
                "outcome unknown: the harness stopped while `{}` was running, and it is not run again because it \
                 may change things. Check its effect (for example list or read the files) before retrying.",
                tool.name()
            );
            receipt(journal, replay, &call, Outcome::Unknown, msg).await
        }
        CallState::Interrupted => run(journal, ws, replay, &call, &tool, false).await,
        CallState::Approved => run(journal, ws, replay, &call, &tool, true).await,
        CallState::Fresh => match policy::decide(&s.approvals, &tool) {
            Decision::Allow => run(journal, ws, replay, &call, &tool, true).await,
            Decision::Deny => {
                let msg = format!("denied by the approval policy: `{}` may not run `{}`", tool.name(), tool.command());
                receipt(journal, replay, &call, Outcome::Denied, msg).await
            }
            Decision::Ask => {
                let ev = Event::ApprovalRequested {
                    approval_id: journal.approval_id(),
                    call_id: call.id.clone(),
                    tool: tool.name().into(),
                    command: tool.command(),
                };
                push(journal, replay, ev, None).await?;
                Ok(Step::Stop(Ending::Waiting))
            }
        },
    }
}

/// Logs the intent (unless re-running one), runs the tool, logs the receipt.
async fn run<J: Journal, W: Workspace>(
    journal: &J,
    ws: &W,
    replay: &mut Replay,
    call: &ToolCall,
    tool: &Tool,
    intent: bool,
) -> Result<Step, JournalError> {
    if intent {
        let ev =
            Event::ToolIntent { call_id: call.id.clone(), name: call.name.clone(), arguments: call.arguments.clone() };
        push(journal, replay, ev, None).await?;
    }
    tokio::select! {
        (outcome, output) = tool.run(ws) => receipt(journal, replay, call, outcome, output).await,
        () = journal.on_cancel() => {
            let (outcome, output) = if tool.mutating() {
                (Outcome::Unknown, "cancelled while running: its effect may be partial".to_owned())
            } else {
                (Outcome::Skipped, "cancelled while running".to_owned())
            };
            receipt(journal, replay, call, outcome, output).await?;
            finish(journal, replay, "cancelled", "the turn was cancelled").await?;
            Ok(Step::Stop(Ending::Idle))
        }
    }
}
