//! The driver's [`Workspace`]: the session's sandbox, made on first use
//! with the agent's template, limits and network policy, its volume at
//! `/workspace` and its skills at `/skills/<name>`, on the node that holds
//! the volume; released when the drive ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures_util::StreamExt;
use reins_api::agent::AgentSpec;
use reins_api::node::{self as proto, ExecFrame, Mount, MountSource};
use reins_api::v1::CreateSandbox;
use reins_harness::tools::{ExecOut, ExecSpec, Workspace};
use reins_store::{EndReason, Lease};
use tokio::sync::Mutex;

use crate::error::ApiError;
use crate::state::App;

/// Most bytes kept of each of a command's stdout and stderr (the tools clip further).
const MAX_STREAM: usize = 8 << 20;

#[derive(Debug)]
pub struct SessionWorkspace {
    pub app: Arc<App>,
    pub lease: Lease,
    pub tenant: String,
    pub agent_id: String,
    /// The node holding the agent's volume, as the drive read the agent.
    volume_node: Option<String>,
    pub spec: AgentSpec,
    /// (sandbox id, node id) once made.
    sandbox: Mutex<Option<(String, String)>>,
}

impl SessionWorkspace {
    pub fn new(app: Arc<App>, lease: Lease, agent: &reins_store::AgentRow, spec: AgentSpec) -> Self {
        Self {
            app,
            lease,
            tenant: agent.tenant_id.clone(),
            agent_id: agent.id.clone(),
            volume_node: agent.volume_node.clone(),
            spec,
            sandbox: Mutex::new(None),
        }
    }

    /// The session's sandbox, made if needed. A node that cannot take it
    /// now (503: not connected yet, full) is retried for up to 30 s: that is
    /// the harness's trouble, not something to tell the model.
    async fn ensure(&self) -> Result<(String, String), ApiError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.ensure_once().await {
                Err(e)
                    if e.status == axum::http::StatusCode::SERVICE_UNAVAILABLE
                        && tokio::time::Instant::now() < deadline =>
                {
                    tracing::info!(session = %self.lease.session_id, error = %e.message, "no node for the session's sandbox yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => return other,
            }
        }
    }

    async fn ensure_once(&self) -> Result<(String, String), ApiError> {
        let mut slot = self.sandbox.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let sb = &self.spec.sandbox;
        let timeout = super::settings::turn_time(&self.spec) + Duration::from_secs(120);
        let req = CreateSandbox {
            template: sb.template.clone(),
            cpus: sb.cpus,
            memory_mb: sb.memory_mb,
            pids: sb.pids,
            disk_mb: sb.disk_mb,
            env: BTreeMap::new(),
            metadata: BTreeMap::from([
                ("reins.agent".to_owned(), self.agent_id.clone()),
                ("reins.session".to_owned(), self.lease.session_id.clone()),
            ]),
            timeout_secs: Some(timeout.as_secs().min(self.app.limits.max_timeout.as_secs())),
            network: sb.network.clone(),
            idle_timeout_secs: None,
            snapshot: None,
        };
        let node = self.volume_node(req.memory_mb.unwrap_or(512) << 20).await?;
        let mut mounts = vec![Mount {
            source: MountSource::Volume { name: self.agent_id.clone() },
            target: "/workspace".into(),
            read_only: false,
        }];
        for name in &self.spec.skills {
            match self.app.store.skill(&self.tenant, name, None).await {
                Ok(skill) => {
                    super::skills::ensure_on_node(&self.app, &node, &skill.sha256).await?;
                    mounts.push(Mount {
                        source: MountSource::Skill { sha256: skill.sha256 },
                        target: format!("/skills/{name}"),
                        read_only: true,
                    });
                }
                Err(reins_store::Error::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let (row, _token) = crate::routes::sandboxes::start(&self.app, &self.tenant, &req, mounts, Some(&node)).await?;
        if let Err(e) = self.app.store.set_session_sandbox(&self.lease, Some(&row.id)).await {
            let _ = crate::routes::sandboxes::release(&self.app, &row, EndReason::Deleted).await;
            return Err(e.into());
        }
        *slot = Some((row.id.clone(), row.node_id.clone()));
        Ok((row.id, row.node_id))
    }

    /// The node holding the agent's volume (chosen at its first sandbox; a
    /// concurrent first choice by another session wins the claim).
    async fn volume_node(&self, memory: u64) -> Result<String, ApiError> {
        if let Some(node) = &self.volume_node {
            return Ok(node.clone());
        }
        let node = self.app.nodes.pick(memory)?;
        Ok(self.app.store.claim_volume_node(&self.agent_id, &node.id).await?)
    }

    /// Releases the sandbox, if one was made.
    pub async fn release(&self) {
        let Some((id, _)) = self.sandbox.lock().await.take() else { return };
        release_sandbox(&self.app, &id).await;
        let _ = self.app.store.set_session_sandbox(&self.lease, None).await;
    }
}

/// Ends a session's sandbox, whatever state it is in.
pub async fn release_sandbox(app: &App, id: &str) {
    if let Ok(row) = app.store.live_sandbox(id).await {
        if let Err(e) = crate::routes::sandboxes::release(app, &row, EndReason::Completed).await {
            tracing::warn!(sandbox = %id, error = %e.message, "releasing a session's sandbox; the reaper will");
        }
    }
}

impl Workspace for SessionWorkspace {
    async fn exec(&self, spec: ExecSpec) -> Result<ExecOut, String> {
        let (id, node) = self.ensure().await.map_err(|e| e.message)?;
        let conn = self.app.nodes.get(&node).map_err(|e| e.message)?;
        let req = proto::Exec {
            cmd: spec.cmd,
            env: BTreeMap::from([("HOME".to_owned(), "/home/user".to_owned())]),
            cwd: Some("/workspace".into()),
            root: false,
            stdin: spec.stdin,
            keep_stdin: false,
            pty: None,
            timeout_ms: spec.timeout.as_millis() as u64,
        };
        let mut frames = Box::pin(crate::routes::exec::frames(&conn, &id, &req).await.map_err(|e| e.message)?);
        let mut out = ExecOut::default();
        let keep = |buf: &mut Vec<u8>, b64: &str| {
            let data = B64.decode(b64).unwrap_or_default();
            let room = MAX_STREAM.saturating_sub(buf.len());
            buf.extend_from_slice(&data[..data.len().min(room)]);
        };
        while let Some(frame) = frames.next().await {
            match frame {
                ExecFrame::Start { .. } => {}
                ExecFrame::Stdout { b64 } => keep(&mut out.stdout, &b64),
                ExecFrame::Stderr { b64 } => keep(&mut out.stderr, &b64),
                ExecFrame::Exit { code, signal, timed_out } => {
                    out.exit_code = code.unwrap_or_else(|| 128 + signal.unwrap_or(0));
                    out.timed_out = timed_out;
                    return Ok(out);
                }
                ExecFrame::Error { message, .. } => return Err(message),
            }
        }
        Err("the node ended the command's stream early".into())
    }
}
