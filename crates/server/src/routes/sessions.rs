//! `/v1/sessions/{id}`: messages, the event log (JSON and Server-Sent
//! Events with resumption), cancellation and approvals.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use reins_api::agent::{AnswerApproval, PostMessage, Session, SessionEvent, Turn};
use reins_api::v1::List;
use reins_api::ErrorBody;
use reins_harness::event::Event;
use reins_store::{AppendEffects, EventRow, Lease, SessionRow};
use serde::Deserialize;
use utoipa::IntoParams;

use super::agents::session_view;
use crate::agents::hub::Live;
use crate::auth::Auth;
use crate::error::{ApiError, Body, Path, Query};
use crate::state::{App, Shared};

/// Largest user message.
pub const MAX_MESSAGE: usize = 256 * 1024;

async fn session(app: &App, auth: &Auth, id: &str) -> Result<SessionRow, ApiError> {
    app.store.session(auth.tenant(), id).await.map_err(ApiError::or_not_found("session"))
}

fn busy(status: &str) -> ApiError {
    let why = if status == "waiting" {
        "the session waits for an approval: answer it (`reins session approve|deny`) or cancel the turn"
    } else {
        "a turn is running in this session: wait for it to finish, or cancel it"
    };
    ApiError::new(StatusCode::CONFLICT, "session_busy", why)
}

/// Takes the session's lease when it is in `want`; gives it back otherwise.
/// A worker that has just logged the end of its turn (or its wait) still
/// holds the lease for a moment: that is waited for, briefly.
async fn take(app: &App, row: &SessionRow, want: &str) -> Result<Lease, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let lease = loop {
        if let Some(lease) = app.store.acquire_lease(&row.id, &app.harness.worker, app.harness.ttl_ms()).await? {
            break lease;
        }
        let now = app.store.session_by_id(&row.id).await?;
        if now.status != want || tokio::time::Instant::now() >= deadline {
            return Err(busy(&now.status));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let now = app.store.session_by_id(&row.id).await?;
    if now.status != want {
        app.store.release_lease(&lease, &now.status).await?;
        return Err(busy(&now.status));
    }
    Ok(lease)
}

#[utoipa::path(get, path = "/v1/sessions", tag = "sessions",
    responses((status = 200, body = List<Session>)), security(("api_key" = [])))]
pub async fn list(State(app): Shared, auth: Auth) -> Result<Json<List<Session>>, ApiError> {
    let rows = app.store.sessions(auth.tenant(), None).await?;
    Ok(Json(List { items: rows.into_iter().map(session_view).collect() }))
}

#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn get(State(app): Shared, auth: Auth, Path(id): Path<String>) -> Result<Json<Session>, ApiError> {
    Ok(Json(session_view(session(&app, &auth, &id).await?)))
}

#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted with its log"), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete(State(app): Shared, auth: Auth, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let row = session(&app, &auth, &id).await?;
    app.harness.cancel_local(&row.id);
    if let Some(sb) = &row.sandbox_id {
        crate::agents::workspace::release_sandbox(&app, sb).await;
    }
    app.store.delete_session(auth.tenant(), &row.id).await.map_err(ApiError::or_not_found("session"))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sessions/{id}/messages", tag = "sessions", params(("id" = String, Path)),
    request_body = PostMessage,
    responses((status = 202, body = Turn, description = "The turn started"), (status = 200, body = Turn, description = "The idempotency key was used: the same turn"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn post_message(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Body(req): Body<PostMessage>,
) -> Result<(StatusCode, Json<Turn>), ApiError> {
    if req.content.trim().is_empty() {
        return Err(ApiError::bad_request("the message is empty"));
    }
    if req.content.len() > MAX_MESSAGE {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the message has {} bytes; the most is {MAX_MESSAGE}: put large inputs in files",
                req.content.len()
            ),
        ));
    }
    if req.idempotency_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 200) {
        return Err(ApiError::bad_request("an idempotency key has 1 to 200 characters"));
    }
    let row = session(&app, &auth, &id).await?;
    let same = |turn| (StatusCode::OK, Json(Turn { session_id: row.id.clone(), turn, duplicate: true }));
    if let Some(key) = &req.idempotency_key {
        if let Some(turn) = app.store.message_by_key(&row.id, key).await? {
            return Ok(same(turn));
        }
    }
    let lease = take(&app, &row, "idle").await?;
    let event = Event::Message { content: req.content, idempotency_key: req.idempotency_key.clone() };
    let body = serde_json::to_string(&event).map_err(ApiError::internal)?;
    let effects = AppendEffects {
        status: Some("running"),
        idempotency_key: req.idempotency_key.as_deref(),
        ..Default::default()
    };
    match app.store.append_event(&lease, "message", &body, effects).await {
        Ok(turn) => {
            app.harness.hub.publish(&row.id, Live::Appended);
            crate::agents::kick(&app, lease);
            Ok((StatusCode::ACCEPTED, Json(Turn { session_id: row.id.clone(), turn, duplicate: false })))
        }
        Err(reins_store::Error::Conflict(_)) => {
            // The same key, posted at the same moment, won.
            app.store.release_lease(&lease, "idle").await?;
            let key = req.idempotency_key.unwrap_or_default();
            let turn = app.store.message_by_key(&row.id, &key).await?.ok_or_else(|| ApiError::internal("lost key"))?;
            Ok(same(turn))
        }
        Err(e) => {
            let _ = app.store.release_lease(&lease, "idle").await;
            Err(e.into())
        }
    }
}

/// `?after=SEQ&limit=N`
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Events after this sequence number (0: from the start).
    pub after: Option<i64>,
    /// At most this many, default and maximum 1000.
    pub limit: Option<i64>,
}

fn event_view(row: EventRow) -> SessionEvent {
    let mut data: serde_json::Value = serde_json::from_str(&row.body).unwrap_or_default();
    if let Some(obj) = data.as_object_mut() {
        obj.remove("kind");
    }
    SessionEvent { seq: row.seq, kind: row.kind, at_ms: row.at_ms, data }
}

#[utoipa::path(get, path = "/v1/sessions/{id}/events", tag = "sessions", params(("id" = String, Path), EventsQuery),
    responses((status = 200, body = List<SessionEvent>), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn events(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<List<SessionEvent>>, ApiError> {
    let row = session(&app, &auth, &id).await?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 1000);
    let rows = app.store.events(&row.id, q.after.unwrap_or(0).max(0), limit).await?;
    Ok(Json(List { items: rows.into_iter().map(event_view).collect() }))
}

#[utoipa::path(get, path = "/v1/sessions/{id}/events/stream", tag = "sessions", params(("id" = String, Path), EventsQuery),
    responses((status = 200, description = "Server-Sent Events: each logged event with `id` = its seq and `event` = its kind \
        (`data` is a SessionEvent); `text_delta` events without id while the model streams. Resume with `Last-Event-ID` or `?after=`.",
        content_type = "text/event-stream", body = SessionEvent), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn stream(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let row = session(&app, &auth, &id).await?;
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());
    let after = last.or(q.after).unwrap_or(0).max(0);
    Ok(Sse::new(follow(app, row.id, after)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Logged events after `after`, then new ones as they are appended (woken
/// by this process's hub, or by a poll for sessions driven elsewhere).
fn follow(app: Arc<App>, session: String, after: i64) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let mut live = app.harness.hub.subscribe(&session);
    async_stream(move |tx| async move {
        let mut cursor = after;
        loop {
            let rows = match app.store.events(&session, cursor, 500).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%session, error = %e, "reading a session's events");
                    return;
                }
            };
            let full = rows.len() == 500;
            for row in rows {
                cursor = row.seq;
                let (seq, kind) = (row.seq, row.kind.clone());
                let ev =
                    SseEvent::default().id(seq.to_string()).event(kind).json_data(event_view(row)).unwrap_or_default();
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            // Wait for news: an append here, a delta, or a second (appends by another replica).
            let wait = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    m = live.recv() => match m {
                        Ok(Live::Appended) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Ok(Live::Delta(text)) => {
                            let data = serde_json::json!({"kind": "text_delta", "text": text});
                            let ev = SseEvent::default().event("text_delta").data(data.to_string());
                            if tx.send(Ok(ev)).await.is_err() {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        }
    })
}

/// A stream fed by a task through a small channel; the task ends when the client goes.
fn async_stream<F, Fut>(body: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<SseEvent, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(body(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[utoipa::path(post, path = "/v1/sessions/{id}/cancel", tag = "sessions", params(("id" = String, Path)),
    responses((status = 202, body = Session), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn cancel(
    State(app): Shared,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let row = session(&app, &auth, &id).await?;
    if row.status != "idle" {
        app.store.request_cancel(auth.tenant(), &row.id).await.map_err(ApiError::or_not_found("session"))?;
        app.harness.cancel_local(&row.id);
        if row.status == "waiting" {
            // Parked: nobody drives it; a drive notices the request and ends the turn.
            if let Some(lease) = app.store.acquire_lease(&row.id, &app.harness.worker, app.harness.ttl_ms()).await? {
                crate::agents::kick(&app, lease);
            }
        }
    }
    Ok((StatusCode::ACCEPTED, Json(session_view(session(&app, &auth, &id).await?))))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/approvals/{approval_id}", tag = "sessions",
    params(("id" = String, Path), ("approval_id" = String, Path)), request_body = AnswerApproval,
    responses((status = 202, body = Session), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn answer(
    State(app): Shared,
    auth: Auth,
    Path((id, approval_id)): Path<(String, String)>,
    Body(req): Body<AnswerApproval>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let approved = match req.decision.as_str() {
        "approve" => true,
        "deny" => false,
        other => return Err(ApiError::bad_request(format!("decision `{other}`: use approve or deny"))),
    };
    if req.reason.as_ref().is_some_and(|r| r.len() > 4096) {
        return Err(ApiError::bad_request("the reason is longer than 4096 bytes"));
    }
    let row = session(&app, &auth, &id).await?;
    let lease = take(&app, &row, "waiting").await?;
    let replay = match crate::agents::load(&app, &row.id).await {
        Ok(r) => r,
        Err(e) => {
            let _ = app.store.release_lease(&lease, "waiting").await;
            return Err(e.into());
        }
    };
    if !replay.open_approvals().contains_key(approval_id.as_str()) {
        app.store.release_lease(&lease, "waiting").await?;
        return Err(ApiError::not_found("pending approval"));
    }
    let event = Event::ApprovalAnswered { approval_id, approved, by: auth.0.key_id.clone(), reason: req.reason };
    let body = serde_json::to_string(&event).map_err(ApiError::internal)?;
    let effects = AppendEffects { status: Some("running"), ..Default::default() };
    match app.store.append_event(&lease, event.kind(), &body, effects).await {
        Ok(_) => {
            app.harness.hub.publish(&row.id, Live::Appended);
            crate::agents::kick(&app, lease);
        }
        Err(e) => {
            let _ = app.store.release_lease(&lease, "waiting").await;
            return Err(e.into());
        }
    }
    Ok((StatusCode::ACCEPTED, Json(session_view(session(&app, &auth, &id).await?))))
}
