//! `reins-harness` is the agent loop, outside any sandbox and without state
//! of its own.
//!
//! A session is its log ([`event`]): every step is appended before it is
//! acted on. [`replay`] reads a log into the conversation and the next step;
//! [`turn::drive`] performs steps until the turn ends or waits for a human,
//! through two seams the control plane provides: a [`turn::Journal`]
//! (fenced appends to the store, cancellation, live text) and a
//! [`tools::Workspace`] (commands in the session's sandbox). Models are
//! reached through [`model::Provider`]; [`policy`] decides approvals;
//! [`context`] assembles the system prompt and decides compaction.

pub mod context;
pub mod event;
pub mod model;
pub mod policy;
pub mod replay;
#[cfg(feature = "scripted")]
pub mod scripted;
pub mod tools;
pub mod turn;

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut i = max;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        s.truncate(i);
    }
}
