//! The node gateway: nodes dial in over pinned mutual TLS; a node whose
//! certificate is not registered is dropped before anything is said. On
//! each accepted connection the control plane is the HTTP/2 *client*.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use hyper_util::rt::{TokioExecutor, TokioIo};
use reins_api::node::Status;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::nodes::{NodeConn, Transport};
use crate::reconcile::reconcile;
use crate::state::App;

/// How often a connected node is asked for its status.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A full reconciliation runs every this many heartbeats.
const RECONCILE_EVERY: u32 = 5;

pub async fn run(listener: TcpListener, app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let acceptor = TlsAcceptor::from(Arc::clone(&app.gateway_tls));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!(error = %e, "gateway accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let (app, acceptor, shutdown) = (Arc::clone(&app), acceptor.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_node(tcp, acceptor, app, shutdown).await {
                tracing::warn!(%peer, error = %e, "node connection refused or ended");
            }
        });
    }
}

async fn serve_node(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    app: Arc<App>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await??;
    let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec());
    let Some(cert) = cert else { anyhow::bail!("no client certificate") };
    let Some(node) = app.store.node_by_cert(&reins_tls::fingerprint(&cert)).await? else {
        anyhow::bail!("unknown node certificate");
    };
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .handshake(TokioIo::new(tls))
        .await?;
    let conn_task = tokio::spawn(conn);
    let node_conn = Arc::new(NodeConn::new(node.id.clone(), node.name.clone(), Transport::H2(sender)));
    tracing::info!(node = %node.id, name = %node.name, "node connected");
    let done = async move {
        let _ = conn_task.await;
    };
    attend(app, node_conn, done, shutdown).await
}

/// Registers a connected node, reconciles it, and keeps its status fresh
/// until `done` resolves (the connection ended), it stops answering, or the
/// control plane shuts down.
pub async fn attend(
    app: Arc<App>,
    node_conn: Arc<NodeConn>,
    done: impl std::future::Future<Output = ()>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let node_id = node_conn.id.clone();
    let status: Status =
        node_conn.call(Method::GET, "/status", None::<&()>).await.map_err(|e| anyhow::anyhow!(e.message))?;
    node_conn.set_status(status.clone());
    app.nodes.insert(Arc::clone(&node_conn));
    reconcile(&app, &node_conn, &status, node_conn.connected_ms, false).await;
    crate::reconcile::sync_states(&app, &node_conn, None, &status).await;
    crate::routes::pools::push_to(&app, &node_conn).await;
    let mut ticks = 0u32;
    tokio::pin!(done);
    loop {
        tokio::select! {
            () = &mut done => break,
            _ = shutdown.changed() => break,
            () = tokio::time::sleep(HEARTBEAT) => {
                match node_conn.call::<Status>(Method::GET, "/status", None::<&()>).await {
                    Ok(s) => {
                        let before = node_conn.status();
                        node_conn.set_status(s.clone());
                        crate::reconcile::sync_states(&app, &node_conn, before.as_ref(), &s).await;
                        let _ = app.store.node_seen(&node_id).await;
                        crate::netlog::collect(&app, &node_conn).await;
                        ticks += 1;
                        if ticks.is_multiple_of(RECONCILE_EVERY) {
                            // Rows younger than a minute may still be starting on the node.
                            reconcile(&app, &node_conn, &s, reins_store::now_ms() - 60_000, true).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(node = %node_id, error = %e.message, "node heartbeat failed");
                        break;
                    }
                }
            }
        }
    }
    app.nodes.remove(&node_conn);
    tracing::info!(node = %node_id, "node disconnected");
    Ok(())
}
