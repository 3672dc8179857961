//! Hibernation and waking, and snapshots of running sandboxes.
//!
//! Hibernating captures a sandbox's writable layer as a snapshot (see
//! [`crate::snapshots`]), records how to make it again in
//! `DATA/hibernated/ID.json`, and ends its processes: its memory is freed, its
//! files and volumes stay. The next request that needs it (a command, a file
//! operation, ingress) makes it again on those layers: the same files, fresh
//! processes. The record survives a node restart. Credentials are not
//! written to disk: when a restarted node connects, the control plane sends
//! its hibernated sandboxes' network settings again.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use reins_api::node::{Mount, SnapshotInfo};
use reins_types::{SandboxNetwork, SandboxSpec};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::{Entry, Live, Node};

/// What a sandbox was made with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub spec: SandboxSpec,
    pub network: SandboxNetwork,
    pub mounts: Vec<Mount>,
    pub idle_timeout: Option<Duration>,
}

/// `DATA/hibernated/ID.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    plan: Plan,
    /// Its snapshot (kept until it wakes) and that snapshot's layers.
    snapshot: String,
    layers: Vec<String>,
}

pub(crate) fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn io(what: &str) -> impl Fn(std::io::Error) -> ApiError + '_ {
    move |e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "node_error", format!("{what}: {e}"))
}

/// Checks idle sandboxes every second and hibernates those past their idle timeout.
pub(crate) async fn hibernate_idle(node: Weak<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        for id in node.idle() {
            match node.hibernate_when(&id, true).await {
                Ok(true) => tracing::info!(sandbox = %id, "idle sandbox hibernated"),
                Ok(false) => {}
                Err(e) => tracing::warn!(sandbox = %id, error = %e.message, "hibernating an idle sandbox"),
            }
        }
    }
}

impl Node {
    fn hibernated_dir(&self) -> Result<PathBuf, ApiError> {
        let dir = self.opts.data_dir.as_ref().ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid", "this node cannot hibernate (it has no data directory)")
        })?;
        Ok(dir.join("hibernated"))
    }

    /// Running sandboxes past their idle timeout, with nothing open on them.
    fn idle(&self) -> Vec<String> {
        let inner = self.lock();
        let busy: std::collections::HashSet<&str> = inner.execs.keys().map(|(sb, _)| sb.as_str()).collect();
        inner
            .sandboxes
            .iter()
            .filter(|(id, e)| {
                let idle_for = e.plan.idle_timeout;
                matches!(&e.live, Some(l) if !l.paused)
                    && idle_for.is_some_and(|t| e.last_used.elapsed() >= t)
                    && e.holds.load(Ordering::SeqCst) == 0
                    && !busy.contains(id.as_str())
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Hibernates sandbox `id`: its files become a snapshot, its processes
    /// end (commands still running are killed; their streams end). Nothing
    /// to do when it hibernates already.
    pub async fn hibernate(&self, id: &str) -> Result<(), ApiError> {
        self.hibernate_when(id, false).await.map(drop)
    }

    /// [`Node::hibernate`]; with `if_idle`, only if it is still idle once its
    /// turn comes. True when it hibernated now.
    async fn hibernate_when(&self, id: &str, if_idle: bool) -> Result<bool, ApiError> {
        let dir = self.hibernated_dir()?;
        let turn = self.lock().sandboxes.get(id).map(|e| Arc::clone(&e.turn)).ok_or_else(ApiError::not_found)?;
        let _turn = turn.lock().await;
        // Taken out first: requests from now on wait for the wake.
        let (live, layers, plan) = {
            let mut inner = self.lock();
            let busy = inner.execs.keys().any(|(sb, _)| sb == id);
            let e = inner.sandboxes.get_mut(id).ok_or_else(ApiError::not_found)?;
            // A request may have come since it was found idle.
            let idle = !busy
                && e.holds.load(Ordering::SeqCst) == 0
                && e.plan.idle_timeout.is_some_and(|t| e.last_used.elapsed() >= t);
            if if_idle && !idle {
                return Ok(false);
            }
            let Some(live) = e.live.take() else { return Ok(false) };
            e.hibernating = true;
            let taken = (live, e.layers.clone(), e.plan.clone());
            Self::unreserve(&mut inner, &taken.2.spec.limits);
            taken
        };
        let snapshot = format!("hib-{id}-{}", now_ms());
        let limits = plan.spec.limits;
        let recorded = self.record(&dir, id, &snapshot, &live, &layers, plan).await;
        let new_layers = match recorded {
            Ok(l) => l,
            Err(e) => {
                // Keep it running as it was.
                let mut inner = self.lock();
                inner.reserved_memory += limits.memory_bytes;
                inner.reserved_pids += u64::from(limits.pids);
                if let Some(entry) = inner.sandboxes.get_mut(id) {
                    entry.live = Some(live);
                    entry.hibernating = false;
                }
                return Err(e);
            }
        };
        self.end(id, live).await;
        if let Some(e) = self.lock().sandboxes.get_mut(id) {
            e.layers = new_layers;
            e.hibernating = false;
        }
        self.collect_layers().await;
        Ok(true)
    }

    /// Captures `live` as `snapshot` and writes its hibernation record; returns the snapshot's layers.
    async fn record(
        &self,
        dir: &std::path::Path,
        id: &str,
        snapshot: &str,
        live: &Live,
        layers: &[String],
        mut plan: Plan,
    ) -> Result<Vec<String>, ApiError> {
        self.snapshots.capture(&live.sandbox, snapshot, layers).await?;
        let layers = self.snapshots.layer_ids(snapshot)?;
        plan.network.credentials.clear();
        let record = Record { plan, snapshot: snapshot.to_owned(), layers: layers.clone() };
        let written = serde_json::to_vec(&record)
            .map_err(std::io::Error::other)
            .and_then(|text| {
                std::fs::create_dir_all(dir)?;
                let tmp = dir.join(format!("{id}.json.tmp"));
                std::fs::write(&tmp, text)?;
                std::fs::rename(&tmp, dir.join(format!("{id}.json")))
            })
            .map_err(io("writing the hibernation record"));
        if let Err(e) = written {
            let _ = self.snapshots.delete(snapshot, self.layers_in_use()).await;
            return Err(e);
        }
        Ok(layers)
    }

    /// Makes a hibernated sandbox run again (nothing to do if it runs).
    pub(crate) async fn wake(&self, id: &str, turn: &tokio::sync::Mutex<()>) -> Result<(), ApiError> {
        let started_at = Instant::now();
        let _turn = turn.lock().await;
        let (plan, layers) = {
            let mut inner = self.lock();
            let e = inner.sandboxes.get(id).ok_or_else(ApiError::not_found)?;
            if e.live.is_some() {
                return Ok(());
            }
            let taken = (e.plan.clone(), e.layers.clone());
            self.reserve(&mut inner, &taken.0.spec)?;
            taken
        };
        let started = self.start(id, &plan, &layers).await;
        {
            let mut inner = self.lock();
            inner.pending -= 1;
            match started {
                Ok(live) => match inner.sandboxes.get_mut(id) {
                    Some(e) => {
                        e.live = Some(live);
                        e.last_used = Instant::now();
                    }
                    None => return Err(ApiError::not_found()),
                },
                Err(e) => {
                    Self::unreserve(&mut inner, &plan.spec.limits);
                    return Err(e);
                }
            }
        }
        self.forget_hibernation(id).await;
        tracing::info!(sandbox = %id, ms = started_at.elapsed().as_millis() as u64, "sandbox woke");
        Ok(())
    }

    /// Removes a hibernation record and its snapshot (not the layers: a
    /// woken sandbox stands on them; they go when nothing uses them).
    pub(crate) async fn forget_hibernation(&self, id: &str) {
        let Ok(dir) = self.hibernated_dir() else { return };
        let path = dir.join(format!("{id}.json"));
        let Ok(text) = std::fs::read(&path) else { return };
        if let Ok(record) = serde_json::from_slice::<Record>(&text) {
            if let Err(e) = self.snapshots.delete(&record.snapshot, self.layers_in_use()).await {
                tracing::warn!(sandbox = %id, error = %e.message, "removing a hibernation snapshot");
            }
        }
        let _ = std::fs::remove_file(&path);
    }

    /// Loads the sandboxes that were hibernated when the node last stopped.
    pub(crate) fn load_hibernated(&self) {
        let Ok(dir) = self.hibernated_dir() else { return };
        let Ok(rd) = std::fs::read_dir(&dir) else { return };
        let mut inner = self.lock();
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else { continue };
            match std::fs::read(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_slice::<Record>(&t).map_err(|e| e.to_string()))
            {
                Ok(r) => {
                    inner.sandboxes.insert(id.to_owned(), Entry::new(None, r.plan, r.layers));
                }
                Err(e) => tracing::warn!(sandbox = %id, error = %e, "unreadable hibernation record"),
            }
        }
    }

    /// Snapshot `snapshot` of sandbox `id`'s files: captured if it runs,
    /// its hibernation layers if it hibernates.
    pub async fn snapshot(&self, id: &str, snapshot: &str) -> Result<SnapshotInfo, ApiError> {
        let turn = self.lock().sandboxes.get(id).map(|e| Arc::clone(&e.turn)).ok_or_else(ApiError::not_found)?;
        let _turn = turn.lock().await;
        let (sandbox, layers) = {
            let inner = self.lock();
            let e = inner.sandboxes.get(id).ok_or_else(ApiError::not_found)?;
            (e.live.as_ref().map(|l| Arc::clone(&l.sandbox)), e.layers.clone())
        };
        match sandbox {
            Some(sb) => self.snapshots.capture(&sb, snapshot, &layers).await,
            None => self.snapshots.alias(snapshot, &layers),
        }
    }

    /// Deletes a snapshot of this node.
    pub async fn delete_snapshot(&self, snapshot: &str) -> Result<(), ApiError> {
        self.snapshots.delete(snapshot, self.layers_in_use()).await
    }
}
