//! The driver's [`Journal`]: fenced appends to the session's log in the
//! store, live events for streams in this process, and cancellation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reins_harness::event::{Event, Logged, Usage};
use reins_harness::turn::{Journal, JournalError};
use reins_store::{AppendEffects, Lease};
use tokio::sync::Notify;

use super::hub::Live;
use crate::state::App;

/// A cancellation request for a session driven here.
#[derive(Debug, Default)]
pub struct Cancel {
    flag: AtomicBool,
    notify: Notify,
}

impl Cancel {
    pub fn fire(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn fired(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.fired() {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Debug)]
pub struct DbJournal {
    pub app: Arc<App>,
    pub lease: Lease,
    pub agent_id: String,
    pub cancel: Arc<Cancel>,
}

impl Journal for DbJournal {
    async fn append(&self, event: Event, usage: Option<Usage>) -> Result<Logged, JournalError> {
        let body = serde_json::to_string(&event).map_err(|e| JournalError::Store(e.to_string()))?;
        // The head says where the session stands as soon as the event is logged.
        let status = match event {
            Event::TurnFinished { .. } => Some("idle"),
            Event::ApprovalRequested { .. } => Some("waiting"),
            _ => None,
        };
        let effects = AppendEffects {
            status,
            tokens: usage.map(|u| (u.input as i64, u.output as i64)),
            clear_cancel: matches!(event, Event::TurnFinished { .. }),
            ..Default::default()
        };
        let seq = match self.app.store.append_event(&self.lease, event.kind(), &body, effects).await {
            Ok(seq) => seq,
            Err(reins_store::Error::Fenced) => return Err(JournalError::Fenced),
            Err(e) => return Err(JournalError::Store(e.to_string())),
        };
        self.app.harness.hub.publish(&self.lease.session_id, Live::Appended);
        if let Some(u) = usage {
            let m = &self.app.metrics.model_tokens;
            for (direction, n) in [("input", u.input), ("output", u.output)] {
                let labels = crate::metrics::TokenLabels { agent: self.agent_id.clone(), direction: direction.into() };
                m.get_or_create(&labels).inc_by(n);
            }
        }
        self.app
            .metrics
            .session_events
            .get_or_create(&crate::metrics::KindLabel { kind: event.kind().to_owned() })
            .inc();
        Ok(Logged { seq, at_ms: reins_store::now_ms(), event })
    }

    fn cancelled(&self) -> bool {
        self.cancel.fired()
    }

    async fn on_cancel(&self) {
        self.cancel.wait().await;
    }

    fn delta(&self, text: &str) {
        self.app.harness.hub.publish(&self.lease.session_id, Live::Delta(text.to_owned()));
    }

    fn approval_id(&self) -> String {
        reins_store::new_id("ap")
    }

    fn now_ms(&self) -> i64 {
        reins_store::now_ms()
    }
}
