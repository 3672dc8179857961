//! Reconciliation: the database and a node agree on which sandboxes exist.
//! Sandboxes the node still runs are adopted (nothing to do); recorded ones
//! it no longer has are marked `lost`; ones it runs that are not recorded as
//! live are destroyed, so none is orphaned and none counted twice.

use std::collections::HashSet;

use axum::http::Method;
use reins_api::node::Status;
use reins_store::EndReason;

use crate::nodes::NodeConn;
use crate::state::App;

/// Reconciles `node` against its `status`; rows created after `cutoff_ms`
/// are left alone (they may still be starting). A create writes its row and
/// asks the node at once, so a sandbox may be on the node a moment before
/// its row is committed: when `confirm` is set (periodic runs), an
/// unrecorded sandbox is destroyed only if the previous run saw it
/// unrecorded too; at a (re)connection, at once.
pub async fn reconcile(app: &App, node: &NodeConn, status: &Status, cutoff_ms: i64, confirm: bool) {
    let rows = match app.store.node_sandboxes(&node.id).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "reconcile: cannot read sandboxes");
            return;
        }
    };
    let on_node: HashSet<&str> = status.sandboxes.iter().map(String::as_str).collect();
    let recorded: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let (mut adopted, mut lost, mut orphans) = (0, 0, 0);
    for row in &rows {
        if on_node.contains(row.id.as_str()) {
            adopted += 1;
        } else if row.created_ms < cutoff_ms {
            app.places.forget(&row.id);
            if let Ok(true) = app.store.end_sandbox(&row.id, EndReason::Lost).await {
                lost += 1;
            }
        }
    }
    let unrecorded: HashSet<String> =
        status.sandboxes.iter().filter(|id| !recorded.contains(id.as_str())).cloned().collect();
    let suspected = node.swap_suspects(unrecorded.clone());
    for id in &unrecorded {
        if confirm && !suspected.contains(id) {
            continue;
        }
        // A live row may have been inserted since we read: check again before destroying.
        if app.store.node_sandboxes(&node.id).await.is_ok_and(|rows| rows.iter().any(|r| &r.id == id)) {
            continue;
        }
        if node.call_empty(Method::DELETE, &format!("/sandboxes/{id}"), None::<&()>).await.is_ok() {
            orphans += 1;
        }
    }
    if lost + orphans > 0 {
        tracing::info!(node = %node.id, adopted, lost, orphans, "reconciled node");
    } else {
        tracing::debug!(node = %node.id, adopted, "reconciled node");
    }
}

/// Follows what the node did on its own: sandboxes it hibernated (idle)
/// and those it woke (a request came). `before` is the node's previous
/// status (`None` at a connection: every hibernated one is checked).
pub async fn sync_states(app: &App, node: &NodeConn, before: Option<&Status>, now: &Status) {
    let was: HashSet<&str> = before.map(|s| s.hibernated.iter().map(String::as_str).collect()).unwrap_or_default();
    let is: HashSet<&str> = now.hibernated.iter().map(String::as_str).collect();
    let keep = reins_store::now_ms() + app.limits.hibernate_retention.as_millis() as i64;
    for id in is.difference(&was) {
        if let Err(e) = app.store.mark_hibernated(id, keep).await {
            tracing::warn!(sandbox = %id, error = %e, "recording a hibernation");
        }
    }
    if before.is_none() && !is.is_empty() {
        resend_credentials(app, node, &is).await;
    }
    let present: HashSet<&str> = now.sandboxes.iter().map(String::as_str).collect();
    for id in was.difference(&is).filter(|id| present.contains(*id)) {
        if let Err(e) = app.store.mark_woken(id).await {
            tracing::warn!(sandbox = %id, error = %e, "recording a wake");
        }
    }
}

/// At a node's (re)connection: the credentials of its hibernated sandboxes,
/// which the node did not keep on disk.
async fn resend_credentials(app: &App, node: &NodeConn, hibernated: &HashSet<&str>) {
    let Ok(rows) = app.store.node_sandboxes(&node.id).await else { return };
    for row in rows.iter().filter(|r| hibernated.contains(r.id.as_str())) {
        if crate::routes::network::stored(&row.network).secrets.is_empty() {
            continue;
        }
        if let Err(e) = crate::routes::network::resend(app, node, row).await {
            tracing::warn!(sandbox = %row.id, error = %e.message, "sending a hibernated sandbox's credentials");
        }
    }
}
