//! Releases sandboxes whose timeout passed (or hibernates those whose
//! timeout says so, until a longer retention passes), and forgets ended ones
//! after a retention period.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reins_store::{now_ms, EndReason, SandboxRow, SandboxState};
use tokio::sync::watch;

use crate::routes::sandboxes::release;
use crate::state::App;

/// Releases (or hibernations) under way at once.
const PARALLEL: usize = 16;

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
                futures_util::stream::iter(rows).for_each_concurrent(PARALLEL, |row| expire(&app, row)).await;
            }
            Err(e) => tracing::warn!(error = %e, "reaper cannot read expired sandboxes"),
        }
        if tick.is_multiple_of(10) {
            let cutoff = now_ms() - app.limits.ended_retention.as_millis() as i64;
            if let Err(e) = app.store.purge_ended(cutoff).await {
                tracing::warn!(error = %e, "purging ended sandboxes");
            }
        }
        if tick.is_multiple_of(120) {
            if let Err(e) = app.store.purge_network_events(now_ms() - crate::netlog::RETENTION_MS).await {
                tracing::warn!(error = %e, "purging old egress events");
            }
        }
    }
}

/// What a passed timeout does to `row`: hibernate it when its timeout says
/// `pause` (E2B's autoPause) and it still runs, release it otherwise.
async fn expire(app: &App, row: SandboxRow) {
    let live = matches!(row.state, SandboxState::Running | SandboxState::Paused);
    if row.on_timeout == "pause" && live {
        match crate::routes::sandboxes::hibernate_on_timeout(app, &row).await {
            Ok(()) => tracing::info!(sandbox = %row.id, "sandbox timed out and was hibernated"),
            Err(e) => tracing::warn!(sandbox = %row.id, error = %e.message, "hibernating an expired sandbox"),
        }
        return;
    }
    match release(app, &row, EndReason::Timeout).await {
        Ok(_) => tracing::debug!(sandbox = %row.id, "sandbox timed out and was released"),
        Err(e) => tracing::warn!(sandbox = %row.id, error = %e.message, "releasing an expired sandbox"),
    }
}
