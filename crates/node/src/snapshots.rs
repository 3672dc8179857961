//! The node's snapshot store (the "blob store", a local directory):
//! `DATA/snapshots/layers/ID/` holds one captured writable layer (files with
//! inner ids, see `reins_sandbox::layer`), `DATA/snapshots/ID.json` one
//! snapshot: the layers it stacks, top first. A sandbox made from a snapshot
//! mounts those layers read-only; capturing it again adds one layer on top,
//! and past [`MAX_DEPTH`] the stack is merged into a single layer. Layers are
//! immutable and shared; a layer goes when no snapshot and no sandbox of
//! this node uses it.

use std::collections::HashSet;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use reins_api::node::SnapshotInfo;
use reins_sandbox::Sandbox;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Layers a snapshot stacks before they are merged into one.
pub const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    /// Layer ids, top first.
    layers: Vec<String>,
    /// Bytes of files the capture wrote (its new layer, or the merged one).
    bytes: u64,
}

#[derive(Debug)]
pub struct Snapshots {
    dir: Option<PathBuf>,
    /// Held by captures and collections: a layer being written is in no manifest yet.
    busy: tokio::sync::Mutex<()>,
}

fn io(what: String) -> impl Fn(std::io::Error) -> ApiError {
    move |e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "node_error", format!("{what}: {e}"))
}

fn blocking_failed(e: tokio::task::JoinError) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "node_error", e.to_string())
}

/// Snapshot and layer ids are the control plane's: plain names only.
fn check_id(id: &str) -> Result<(), ApiError> {
    if reins_types::is_plain_name(id) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("bad snapshot id `{id}`")))
    }
}

impl Snapshots {
    /// Keeps snapshots under `dir/snapshots` (root-only); without a data directory they are refused.
    pub fn new(dir: Option<&Path>) -> Result<Self, String> {
        let dir = dir.map(|d| d.join("snapshots"));
        if let Some(d) = &dir {
            for sub in [d.clone(), d.join("layers")] {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&sub)
                    .and_then(|()| std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)))
                    .map_err(|e| format!("creating {}: {e}", sub.display()))?;
            }
        }
        Ok(Self { dir, busy: tokio::sync::Mutex::new(()) })
    }

    fn dir(&self) -> Result<&Path, ApiError> {
        self.dir.as_deref().ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid", "this node keeps no snapshots (it has no data directory)")
        })
    }

    fn manifest_path(&self, id: &str) -> Result<PathBuf, ApiError> {
        check_id(id)?;
        Ok(self.dir()?.join(format!("{id}.json")))
    }

    fn layer_path(&self, layer: &str) -> Result<PathBuf, ApiError> {
        Ok(self.dir()?.join("layers").join(layer))
    }

    fn manifest(&self, id: &str) -> Result<Manifest, ApiError> {
        let path = self.manifest_path(id)?;
        let text = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "snapshot_not_found", format!("no snapshot {id} on this node"))
            }
            _ => io(format!("reading snapshot {id}"))(e),
        })?;
        serde_json::from_slice(&text).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "node_error", format!("snapshot {id} is damaged: {e}"))
        })
    }

    /// The layer ids of snapshot `id`, top first.
    pub fn layer_ids(&self, id: &str) -> Result<Vec<String>, ApiError> {
        Ok(self.manifest(id)?.layers)
    }

    /// Host directories of `layers`, for a sandbox spec.
    pub fn paths(&self, layers: &[String]) -> Result<Vec<PathBuf>, ApiError> {
        layers.iter().map(|l| self.layer_path(l)).collect()
    }

    pub fn info(&self, id: &str) -> Result<SnapshotInfo, ApiError> {
        let m = self.manifest(id)?;
        Ok(SnapshotInfo { id: id.to_owned(), bytes: m.bytes, layers: m.layers.len() as u32 })
    }

    /// Captures `sandbox`, which stands on `below` (layer ids, top first), as
    /// snapshot `id`. The new layer is named after the snapshot.
    pub async fn capture(&self, sandbox: &Sandbox, id: &str, below: &[String]) -> Result<SnapshotInfo, ApiError> {
        let manifest = self.manifest_path(id)?;
        let _busy = self.busy.lock().await;
        if manifest.exists() {
            return Err(ApiError::new(StatusCode::CONFLICT, "exists", format!("snapshot {id} exists")));
        }
        let top = self.layer_path(id)?;
        let stats = sandbox.capture(top.clone()).await?;
        let mut layers: Vec<String> = std::iter::once(id.to_owned()).chain(below.iter().cloned()).collect();
        let mut bytes = stats.bytes;
        if layers.len() > MAX_DEPTH {
            let paths = self.paths(&layers)?;
            let flat_id = format!("{id}.flat");
            let flat = self.layer_path(&flat_id)?;
            let merged = tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(&flat);
                reins_sandbox::layer::flatten(&paths, &flat)
            })
            .await
            .map_err(blocking_failed)?
            .map_err(io(format!("merging the layers of snapshot {id}")))?;
            let _ = std::fs::remove_dir_all(&top);
            bytes = merged.bytes;
            layers = vec![flat_id];
        }
        let m = Manifest { layers, bytes };
        self.write(&manifest, &m, id)?;
        Ok(SnapshotInfo { id: id.to_owned(), bytes: m.bytes, layers: m.layers.len() as u32 })
    }

    /// Records snapshot `id` as the existing `layers` (of a hibernated sandbox): nothing to copy.
    pub fn alias(&self, id: &str, layers: &[String]) -> Result<SnapshotInfo, ApiError> {
        let manifest = self.manifest_path(id)?;
        if manifest.exists() {
            return Err(ApiError::new(StatusCode::CONFLICT, "exists", format!("snapshot {id} exists")));
        }
        self.write(&manifest, &Manifest { layers: layers.to_vec(), bytes: 0 }, id)?;
        Ok(SnapshotInfo { id: id.to_owned(), bytes: 0, layers: layers.len() as u32 })
    }

    fn write(&self, path: &Path, m: &Manifest, id: &str) -> Result<(), ApiError> {
        let text = serde_json::to_vec(m).map_err(|e| io("encoding".into())(std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(io(format!("recording snapshot {id}")))
    }

    /// Forgets snapshot `id`; its layers go once nothing uses them (`in_use`: live sandboxes' layers).
    pub async fn delete(&self, id: &str, in_use: HashSet<String>) -> Result<(), ApiError> {
        let path = self.manifest_path(id)?;
        std::fs::remove_file(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "snapshot_not_found", format!("no snapshot {id} on this node"))
            }
            _ => io(format!("removing snapshot {id}"))(e),
        })?;
        self.collect(in_use).await
    }

    /// Removes layers that no snapshot and no sandbox in `in_use` uses.
    pub async fn collect(&self, mut in_use: HashSet<String>) -> Result<(), ApiError> {
        let dir = self.dir()?.to_path_buf();
        let _busy = self.busy.lock().await;
        for entry in std::fs::read_dir(&dir).map_err(io("listing snapshots".into()))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                in_use.extend(self.manifest(id).map(|m| m.layers).unwrap_or_default());
            }
        }
        let layers = dir.join("layers");
        let unused: Vec<PathBuf> = std::fs::read_dir(&layers)
            .map_err(io("listing layers".into()))?
            .flatten()
            .filter(|e| !in_use.contains(e.file_name().to_string_lossy().as_ref()))
            .map(|e| e.path())
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || {
            for p in unused {
                if let Err(e) = std::fs::remove_dir_all(&p) {
                    tracing::warn!(layer = %p.display(), error = %e, "removing an unused snapshot layer");
                }
            }
        })
        .await
        .map_err(blocking_failed)
    }
}
