//! A session's log, replayed: the conversation the model sees and the next
//! step of the open turn. Pure functions of the log, so any worker that
//! takes a session over continues exactly where the last one stopped.

use std::collections::{HashMap, HashSet};

use crate::event::{Event, Logged, ToolCall, Usage};

/// One message of the provider-neutral conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    User(String),
    Assistant { text: String, calls: Vec<ToolCall> },
    ToolResult { call_id: String, name: String, content: String, is_error: bool },
}

/// What a tool call whose turn is open needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallState {
    /// Nothing recorded: ask the approval policy.
    Fresh,
    /// A human approved it: run it.
    Approved,
    /// A human denied it.
    Denied { reason: Option<String> },
    /// Its approval was requested and is not answered yet.
    Waiting { approval_id: String },
    /// Its intent is logged without a receipt (the worker stopped while it ran).
    Interrupted,
}

/// The open turn's next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// No open turn.
    Idle,
    /// Ask the model (step N of the turn; again if a request had no answer).
    CallModel { step: u32 },
    /// Handle a tool call of the latest answer.
    Tool { call: ToolCall, state: CallState },
    /// The latest answer called no tool: the turn is done.
    Finish,
}

/// A session's log in memory. The worker holding the lease is its only
/// writer, so it appends here what it appends to the store.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    events: Vec<Logged>,
    /// Index of the open turn's message, if a turn is open.
    open: Option<usize>,
}

impl Replay {
    pub fn new(events: Vec<Logged>) -> Self {
        let mut r = Self { events: Vec::with_capacity(events.len()), open: None };
        for e in events {
            r.push(e);
        }
        r
    }

    pub fn push(&mut self, e: Logged) {
        match &e.event {
            Event::Message { .. } => self.open = Some(self.events.len()),
            Event::TurnFinished { .. } => self.open = None,
            _ => {}
        }
        self.events.push(e);
    }

    pub fn events(&self) -> &[Logged] {
        &self.events
    }

    pub fn last_seq(&self) -> i64 {
        self.events.last().map_or(0, |e| e.seq)
    }

    /// The open turn's events, starting with its message.
    pub fn turn(&self) -> Option<&[Logged]> {
        self.open.map(|i| &self.events[i..])
    }

    /// Turns started in the session.
    pub fn turns(&self) -> u32 {
        self.events.iter().filter(|e| matches!(e.event, Event::Message { .. })).count() as u32
    }

    /// Model calls answered and tokens used in the open turn.
    pub fn turn_usage(&self) -> (u32, Usage) {
        let mut steps = 0;
        let mut usage = Usage::default();
        for e in self.turn().unwrap_or_default() {
            if let Event::ModelResponse { usage: u, .. } = &e.event {
                steps += 1;
                usage.input += u.input;
                usage.output += u.output;
            }
        }
        (steps, usage)
    }

    /// The next step of the open turn.
    pub fn next(&self) -> Next {
        let Some(turn) = self.turn() else { return Next::Idle };
        let Some((pos, step, calls)) = turn.iter().enumerate().rev().find_map(|(i, e)| match &e.event {
            Event::ModelResponse { step, tool_calls, .. } => Some((i, *step, tool_calls)),
            _ => None,
        }) else {
            return Next::CallModel { step: 1 };
        };
        if calls.is_empty() {
            return Next::Finish;
        }
        let after = &turn[pos + 1..];
        for call in calls {
            if let Some(state) = call_state(after, &call.id) {
                return Next::Tool { call: call.clone(), state };
            }
        }
        Next::CallModel { step: step + 1 }
    }

    /// The conversation since the latest compaction, and that compaction's
    /// summary. A tool call left without a result (its turn stopped) gets one
    /// saying so, as providers require an answer to every call.
    pub fn conversation(&self) -> (Option<&str>, Vec<Msg>) {
        self.conversation_before(i64::MAX)
    }

    /// [`Self::conversation`] of the events before seq `end`.
    pub fn conversation_before(&self, end: i64) -> (Option<&str>, Vec<Msg>) {
        let (summary, from) = self.compaction();
        let mut msgs = Vec::new();
        let mut pending: Vec<ToolCall> = Vec::new();
        let close = |msgs: &mut Vec<Msg>, pending: &mut Vec<ToolCall>| {
            for c in pending.drain(..) {
                msgs.push(Msg::ToolResult {
                    call_id: c.id,
                    name: c.name,
                    content: "not run: the turn ended before this call".into(),
                    is_error: true,
                });
            }
        };
        for e in self.events.iter().filter(|e| e.seq > from && e.seq < end) {
            match &e.event {
                Event::Message { content, .. } => {
                    close(&mut msgs, &mut pending);
                    msgs.push(Msg::User(content.clone()));
                }
                Event::ModelResponse { text, tool_calls, .. } => {
                    close(&mut msgs, &mut pending);
                    pending = tool_calls.clone();
                    msgs.push(Msg::Assistant { text: text.clone(), calls: tool_calls.clone() });
                }
                Event::ToolReceipt { call_id, name, outcome, output } => {
                    if let Some(i) = pending.iter().position(|c| &c.id == call_id) {
                        pending.remove(i);
                        msgs.push(Msg::ToolResult {
                            call_id: call_id.clone(),
                            name: name.clone(),
                            content: output.clone(),
                            is_error: *outcome != crate::event::Outcome::Ok,
                        });
                    }
                }
                _ => {}
            }
        }
        let open_turn = self.open.is_some_and(|i| self.events[i].seq < end);
        if !open_turn {
            close(&mut msgs, &mut pending);
        }
        (summary, msgs)
    }

    /// The latest compaction's summary and the seq it covers up to.
    fn compaction(&self) -> (Option<&str>, i64) {
        self.events
            .iter()
            .rev()
            .find_map(|e| match &e.event {
                Event::Compaction { summary, upto_seq } => Some((Some(summary.as_str()), *upto_seq)),
                _ => None,
            })
            .unwrap_or((None, 0))
    }

    /// Seq of the message that starts each turn, oldest first (compaction keeps the latest ones).
    pub fn turn_starts(&self) -> Vec<i64> {
        self.events.iter().filter(|e| matches!(e.event, Event::Message { .. })).map(|e| e.seq).collect()
    }

    /// Approval requests not answered yet, by id.
    pub fn open_approvals(&self) -> HashMap<&str, &Logged> {
        let answered: HashSet<&str> = self
            .events
            .iter()
            .filter_map(|e| match &e.event {
                Event::ApprovalAnswered { approval_id, .. } => Some(approval_id.as_str()),
                _ => None,
            })
            .collect();
        self.turn()
            .unwrap_or_default()
            .iter()
            .filter_map(|e| match &e.event {
                Event::ApprovalRequested { approval_id, .. } if !answered.contains(approval_id.as_str()) => {
                    Some((approval_id.as_str(), e))
                }
                _ => None,
            })
            .collect()
    }
}

/// What call `id` needs, given the events after its model answer; `None`
/// when its receipt is logged.
fn call_state(after: &[Logged], id: &str) -> Option<CallState> {
    let mut state = CallState::Fresh;
    let mut approval: Option<&str> = None;
    for e in after {
        match &e.event {
            Event::ToolReceipt { call_id, .. } if call_id == id => return None,
            Event::ToolIntent { call_id, .. } if call_id == id => state = CallState::Interrupted,
            Event::ApprovalRequested { approval_id, call_id, .. } if call_id == id => {
                approval = Some(approval_id);
                state = CallState::Waiting { approval_id: approval_id.clone() };
            }
            Event::ApprovalAnswered { approval_id, approved, reason, .. } if Some(approval_id.as_str()) == approval => {
                state = if *approved { CallState::Approved } else { CallState::Denied { reason: reason.clone() } };
            }
            _ => {}
        }
    }
    Some(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Outcome;

    fn log(events: Vec<Event>) -> Replay {
        Replay::new(
            events.into_iter().enumerate().map(|(i, event)| Logged { seq: i as i64 + 1, at_ms: 0, event }).collect(),
        )
    }

    fn msg(s: &str) -> Event {
        Event::Message { content: s.into(), idempotency_key: None }
    }

    fn call(id: &str) -> ToolCall {
        ToolCall { id: id.into(), name: "shell".into(), arguments: "{}".into() }
    }

    fn answer(step: u32, calls: Vec<ToolCall>) -> Event {
        Event::ModelResponse {
            step,
            text: String::new(),
            tool_calls: calls,
            usage: Usage { input: 5, output: 1 },
            stop_reason: "stop".into(),
        }
    }

    fn receipt(id: &str) -> Event {
        Event::ToolReceipt { call_id: id.into(), name: "shell".into(), outcome: Outcome::Ok, output: "ok".into() }
    }

    fn intent(id: &str) -> Event {
        Event::ToolIntent { call_id: id.into(), name: "shell".into(), arguments: "{}".into() }
    }

    #[test]
    fn a_turn_walks_model_tools_model_then_finishes() {
        assert_eq!(log(vec![]).next(), Next::Idle);
        assert_eq!(log(vec![msg("hi")]).next(), Next::CallModel { step: 1 });
        // A request without an answer (the worker died mid-call) is made again.
        assert_eq!(log(vec![msg("hi"), Event::ModelRequest { step: 1 }]).next(), Next::CallModel { step: 1 });
        let two = vec![msg("hi"), Event::ModelRequest { step: 1 }, answer(1, vec![call("a"), call("b")])];
        assert_eq!(log(two.clone()).next(), Next::Tool { call: call("a"), state: CallState::Fresh });
        let mut more = two.clone();
        more.extend([intent("a")]);
        assert_eq!(log(more.clone()).next(), Next::Tool { call: call("a"), state: CallState::Interrupted });
        more.extend([receipt("a")]);
        assert_eq!(log(more.clone()).next(), Next::Tool { call: call("b"), state: CallState::Fresh });
        more.extend([intent("b"), receipt("b")]);
        assert_eq!(log(more.clone()).next(), Next::CallModel { step: 2 });
        more.extend([answer(2, vec![])]);
        assert_eq!(log(more.clone()).next(), Next::Finish);
        assert_eq!(log(more.clone()).turn_usage().0, 2);
        more.push(Event::TurnFinished { reason: "done".into(), message: String::new() });
        assert_eq!(log(more).next(), Next::Idle);
    }

    #[test]
    fn approvals_park_and_resume_the_call() {
        let base = vec![msg("push"), answer(1, vec![call("a")])];
        let asked = |mut v: Vec<Event>| {
            v.push(Event::ApprovalRequested {
                approval_id: "ap1".into(),
                call_id: "a".into(),
                tool: "shell".into(),
                command: "git push".into(),
            });
            v
        };
        let r = log(asked(base.clone()));
        assert_eq!(r.next(), Next::Tool { call: call("a"), state: CallState::Waiting { approval_id: "ap1".into() } });
        assert_eq!(r.open_approvals().len(), 1);
        let mut yes = asked(base.clone());
        yes.push(Event::ApprovalAnswered { approval_id: "ap1".into(), approved: true, by: "key".into(), reason: None });
        assert_eq!(log(yes.clone()).next(), Next::Tool { call: call("a"), state: CallState::Approved });
        assert!(log(yes).open_approvals().is_empty());
        let mut no = asked(base);
        no.push(Event::ApprovalAnswered {
            approval_id: "ap1".into(),
            approved: false,
            by: "key".into(),
            reason: Some("no".into()),
        });
        assert_eq!(
            log(no).next(),
            Next::Tool { call: call("a"), state: CallState::Denied { reason: Some("no".into()) } }
        );
    }

    #[test]
    fn the_conversation_answers_every_call_and_starts_at_the_compaction() {
        let r = log(vec![
            msg("one"),
            answer(1, vec![call("a")]),
            Event::TurnFinished { reason: "cancelled".into(), message: String::new() },
            msg("two"),
        ]);
        let (summary, msgs) = r.conversation();
        assert_eq!(summary, None);
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert!(matches!(&msgs[2], Msg::ToolResult { is_error: true, .. }));
        assert_eq!(msgs[3], Msg::User("two".into()));
        let r = log(vec![
            msg("one"),
            answer(1, vec![]),
            Event::Compaction { summary: "s".into(), upto_seq: 2 },
            msg("two"),
        ]);
        let (summary, msgs) = r.conversation();
        assert_eq!((summary, msgs), (Some("s"), vec![Msg::User("two".into())]));
    }
}
