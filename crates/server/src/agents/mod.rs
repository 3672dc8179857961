//! Agent sessions in the control plane: who drives which session, and how.
//!
//! A session is driven by whichever worker holds its lease. Posting a
//! message or answering an approval takes the lease in the request, appends
//! the event, and hands the lease to a drive task in this process. A
//! recovery loop takes over sessions with a turn to drive whose lease is
//! free or expired (their worker died), and at start the leases of this
//! instance's earlier runs are expired at once, so after `kill -9` and a
//! restart a session continues within a second.

pub mod hub;
pub mod journal;
pub mod settings;
pub mod skills;
pub mod workspace;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reins_harness::event::{Event, Logged};
use reins_harness::replay::Replay;
use reins_harness::turn::{self, Ending, Journal, JournalError};
use reins_store::Lease;
use tokio::sync::watch;

use crate::state::App;
use journal::{Cancel, DbJournal};
use workspace::SessionWorkspace;

/// The harness's shared state in the control plane.
#[derive(Debug)]
pub struct Harness {
    pub hub: hub::Hub,
    /// This process's worker id: `INSTANCE/BOOT`.
    pub worker: String,
    /// This server instance's id (kept in its data directory).
    pub instance: String,
    pub lease_ttl: Duration,
    /// Sessions driven by this process, with their cancellation.
    running: Mutex<HashMap<String, Arc<Cancel>>>,
    pub client: reqwest::Client,
    pub retry: reins_harness::model::Retry,
}

impl Harness {
    pub fn new(instance: String, lease_ttl: Duration, retry: reins_harness::model::Retry) -> Self {
        let boot = reins_store::new_id("boot");
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(reins_harness::model::guard::GuardedResolver))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .build()
            .unwrap_or_default();
        Self {
            hub: hub::Hub::default(),
            worker: format!("{instance}/{boot}"),
            instance,
            lease_ttl,
            running: Mutex::new(HashMap::new()),
            client,
            retry,
        }
    }

    pub fn ttl_ms(&self) -> i64 {
        self.lease_ttl.as_millis() as i64
    }

    /// Asks this process's drive of `session`, if any, to stop its turn.
    pub fn cancel_local(&self, session: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.get(session).map(|c| c.fire()).is_some()
    }

    fn register(&self, session: &str) -> Arc<Cancel> {
        let cancel = Arc::new(Cancel::default());
        self.running.lock().unwrap_or_else(|p| p.into_inner()).insert(session.to_owned(), Arc::clone(&cancel));
        cancel
    }

    fn unregister(&self, session: &str) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(session);
    }
}

/// The instance id kept in `dir` (made on first start).
pub fn instance_id(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = dir.join("instance-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_owned());
        }
    }
    std::fs::create_dir_all(dir)?;
    let id = reins_store::new_id("srv");
    std::fs::write(&path, &id)?;
    Ok(id)
}

/// Drives the session whose lease this is, in a task of its own.
pub fn kick(app: &Arc<App>, lease: Lease) {
    let app = Arc::clone(app);
    tokio::spawn(async move {
        let session = lease.session_id.clone();
        if let Err(e) = drive_session(&app, lease).await {
            tracing::warn!(%session, error = %e, "a session's drive stopped");
        }
    });
}

/// Reads the whole log of a session.
pub async fn load(app: &App, session: &str) -> Result<Replay, reins_store::Error> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = app.store.events(session, after, 1000).await?;
        let n = page.len();
        for row in page {
            after = row.seq;
            match serde_json::from_str::<Event>(&row.body) {
                Ok(event) => events.push(Logged { seq: row.seq, at_ms: row.at_ms, event }),
                Err(e) => {
                    tracing::error!(%session, seq = row.seq, error = %e, "an unreadable session event is skipped")
                }
            }
        }
        if n < 1000 {
            return Ok(Replay::new(events));
        }
    }
}

async fn drive_session(app: &Arc<App>, lease: Lease) -> Result<(), String> {
    let session = app.store.session_by_id(&lease.session_id).await.map_err(|e| e.to_string())?;
    let cancel = app.harness.register(&session.id);
    if session.cancel_requested {
        cancel.fire();
    }
    let (stop_renew, renewing) = watch::channel(false);
    let renew = tokio::spawn(keep_lease(Arc::clone(app), lease.clone(), Arc::clone(&cancel), renewing));
    let result = drive_inner(app, &lease, &session, Arc::clone(&cancel)).await;
    let _ = stop_renew.send(true);
    let _ = renew.await;
    app.harness.unregister(&session.id);
    let status = match result {
        Ok(Ending::Idle) => "idle",
        Ok(Ending::Waiting) => "waiting",
        Err(JournalError::Fenced) => return Ok(()),
        Err(JournalError::Store(e)) => return Err(e), // the lease expires; recovery retries
    };
    match app.store.release_lease(&lease, status).await {
        Ok(()) | Err(reins_store::Error::Fenced) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

async fn drive_inner(
    app: &Arc<App>,
    lease: &Lease,
    session: &reins_store::SessionRow,
    cancel: Arc<Cancel>,
) -> Result<Ending, JournalError> {
    let store_err = |e: reins_store::Error| JournalError::Store(e.to_string());
    // A sandbox left by a worker that died: its files are on the volume; start afresh.
    if let Some(old) = &session.sandbox_id {
        workspace::release_sandbox(app, old).await;
    }
    let mut replay = load(app, &session.id).await.map_err(store_err)?;
    let journal = DbJournal { app: Arc::clone(app), lease: lease.clone(), agent_id: session.agent_id.clone(), cancel };
    let agent = app.store.agent(&session.tenant_id, &session.agent_id).await.map_err(store_err)?;
    let spec = match settings::spec(&agent) {
        Ok(s) => s,
        Err(e) => return fail_turn(&journal, &mut replay, "agent_invalid", e.message).await,
    };
    let settings = match settings::settings(app, &session.tenant_id, &spec).await {
        Ok(s) => s,
        Err(message) => return fail_turn(&journal, &mut replay, "agent_unusable", message).await,
    };
    let ws = SessionWorkspace::new(Arc::clone(app), lease.clone(), &agent, spec);
    let ending = turn::drive(&settings, &journal, &ws, &mut replay).await;
    ws.release().await;
    ending
}

/// Ends the open turn (if any) with an error the user can act on.
async fn fail_turn(
    journal: &DbJournal,
    replay: &mut Replay,
    code: &str,
    message: String,
) -> Result<Ending, JournalError> {
    if replay.turn().is_some() {
        for ev in [
            Event::Error { code: code.into(), message: message.clone() },
            Event::TurnFinished { reason: "error".into(), message },
        ] {
            replay.push(journal.append(ev, None).await?);
        }
    }
    Ok(Ending::Idle)
}

/// Renews the lease until told to stop; a cancel request made through
/// another replica is noticed here too.
async fn keep_lease(app: Arc<App>, lease: Lease, cancel: Arc<Cancel>, mut stop: watch::Receiver<bool>) {
    let every = app.harness.lease_ttl / 3;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(every) => {}
        }
        match app.store.renew_lease(&lease, app.harness.ttl_ms()).await {
            Ok(()) => {}
            Err(reins_store::Error::Fenced) => {
                tracing::warn!(session = %lease.session_id, "lost the session's lease; stopping");
                cancel.fire();
                return;
            }
            Err(e) => tracing::warn!(session = %lease.session_id, error = %e, "renewing a session's lease"),
        }
        if let Ok(s) = app.store.session_by_id(&lease.session_id).await {
            if s.cancel_requested {
                cancel.fire();
            }
        }
    }
}

/// Takes over sessions whose worker is gone, every second until shutdown.
pub async fn recover(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    // Sessions need sandboxes: give the nodes a moment to connect after a start.
    for _ in 0..40 {
        if !app.nodes.all().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    match app.store.expire_leases_of(&format!("{}/", app.harness.instance), &app.harness.worker).await {
        Ok(n) if n > 0 => tracing::info!(sessions = n, "taking over the sessions of this server's previous run"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "expiring the previous run's session leases"),
    }
    loop {
        match app.store.orphaned_sessions(32).await {
            Ok(ids) => {
                for id in ids {
                    match app.store.acquire_lease(&id, &app.harness.worker, app.harness.ttl_ms()).await {
                        Ok(Some(lease)) => {
                            tracing::info!(session = %id, "continuing a session whose worker stopped");
                            kick(&app, lease);
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(session = %id, error = %e, "taking a session's lease"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "looking for sessions to continue"),
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
