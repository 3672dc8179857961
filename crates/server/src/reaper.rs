//! Releases sandboxes whose timeout passed (or pauses those whose timeout
//! says so, until a longer retention passes), and forgets ended ones after
//! a retention period.

use std::sync::Arc;
use std::time::Duration;

use reins_store::{now_ms, EndReason};
use tokio::sync::watch;

use crate::routes::sandboxes::release;
use crate::state::App;

/// How long ended sandboxes stay visible (`GET` answers with their end reason).
const RETENTION_MS: i64 = 3600 * 1000;

pub async fn run(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = 0u64;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
        tick += 1;
        match app.store.expired_sandboxes(now_ms()).await {
            Ok(rows) => {
                for row in rows {
                    if row.on_timeout == "pause" && row.state == reins_store::SandboxState::Running {
                        match crate::routes::sandboxes::pause_on_timeout(&app, &row).await {
                            Ok(()) => tracing::info!(sandbox = %row.id, "sandbox timed out and was paused"),
                            Err(e) => {
                                tracing::warn!(sandbox = %row.id, error = %e.message, "pausing an expired sandbox")
                            }
                        }
                        continue;
                    }
                    if let Err(e) = release(&app, &row, EndReason::Timeout).await {
                        tracing::warn!(sandbox = %row.id, error = %e.message, "releasing an expired sandbox");
                    } else {
                        tracing::info!(sandbox = %row.id, "sandbox timed out and was released");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reaper cannot read expired sandboxes"),
        }
        if tick.is_multiple_of(120) {
            if let Err(e) = app.store.purge_ended(now_ms() - RETENTION_MS).await {
                tracing::warn!(error = %e, "purging ended sandboxes");
            }
            if let Err(e) = app.store.purge_network_events(now_ms() - crate::netlog::RETENTION_MS).await {
                tracing::warn!(error = %e, "purging old egress events");
            }
        }
    }
}
