//! Collecting the nodes' egress audit feeds into the store, where each
//! attempt is kept (with its tenant) after its sandbox ended, for
//! [`RETENTION_MS`]. Collected at every heartbeat and before a log is read.

use std::collections::HashMap;

use axum::http::Method;
use reins_api::node::NetFeed;
use reins_store::NetLogRow;

use crate::nodes::NodeConn;
use crate::state::App;

/// How long recorded connection attempts are kept.
pub const RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
const BATCH: usize = 5000;

/// Stores the node's events not stored yet.
pub async fn collect(app: &App, node: &NodeConn) {
    let mut cursor = node.net_cursor.lock().await;
    loop {
        let path = format!("/network/events?after={}", cursor.1);
        let feed: NetFeed = match node.call(Method::GET, &path, None::<&()>).await {
            Ok(f) => f,
            Err(e) => return tracing::warn!(node = %node.id, error = %e.message, "collecting egress events"),
        };
        if feed.boot != cursor.0 {
            // A new node process (or our first look): its numbering starts again.
            let restart = cursor.1 > 0;
            *cursor = (feed.boot, 0);
            if restart {
                continue;
            }
        }
        if feed.dropped > 0 {
            tracing::warn!(node = %node.id, dropped = feed.dropped, "egress events were lost before they were collected");
        }
        let Some(last) = feed.events.last().map(|e| e.seq) else { return };
        let mut tenants: HashMap<String, Option<String>> = HashMap::new();
        let mut rows = Vec::with_capacity(feed.events.len());
        for e in &feed.events {
            if !tenants.contains_key(&e.sandbox) {
                let t = match app.places.get(&e.sandbox) {
                    Some((t, _)) => Some(t),
                    None => app.store.sandbox_tenant(&e.sandbox).await.ok().flatten(),
                };
                tenants.insert(e.sandbox.clone(), t);
            }
            // A sandbox whose row was purged: nobody could read its log.
            let Some(Some(tenant)) = tenants.get(&e.sandbox) else { continue };
            rows.push(NetLogRow {
                node_id: node.id.clone(),
                boot: cursor.0.clone(),
                seq: e.seq as i64,
                sandbox_id: e.sandbox.clone(),
                tenant_id: tenant.clone(),
                at_ms: e.event.at_ms,
                event: serde_json::to_string(&e.event).unwrap_or_default(),
            });
        }
        if let Err(e) = app.store.insert_network_events(&rows).await {
            return tracing::warn!(node = %node.id, error = %e, "storing egress events");
        }
        cursor.1 = last;
        if feed.events.len() < BATCH {
            return;
        }
    }
}
