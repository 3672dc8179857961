//! The node's side of the connection: dial the gateway over pinned mutual
//! TLS, serve the node protocol on it with HTTP/2, redial when it drops.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

use crate::identity::NodeIdentity;
use crate::routes::router;
use crate::state::Node;

/// Serves `node` to its control plane until `shutdown` turns true, then
/// destroys every sandbox of the node.
pub async fn serve(node: Arc<Node>, identity: NodeIdentity, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let tls = reins_tls::node_client(identity.tls()?, &identity.gateway_cert_pem).context("node TLS set-up")?;
    let connector = TlsConnector::from(Arc::new(tls));
    let app = router(Arc::clone(&node));
    let mut backoff = Duration::from_millis(50);
    while !*shutdown.borrow() {
        match connect(&connector, &identity.gateway).await {
            Ok(stream) => {
                tracing::info!(gateway = %identity.gateway, node = node.id(), "connected to the control plane");
                backoff = Duration::from_millis(50);
                let service = TowerToHyperService::new(app.clone());
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(hyper_util::rt::TokioTimer::new())
                    .max_concurrent_streams(4096)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r {
                        tracing::warn!(error = %e, "control plane connection ended");
                    },
                    _ = shutdown.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), gateway = %identity.gateway, "cannot reach the control plane; retrying")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    node.destroy_all().await;
    Ok(())
}

async fn connect(connector: &TlsConnector, gateway: &str) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(gateway).await.with_context(|| format!("connecting to {gateway}"))?;
    tcp.set_nodelay(true)?;
    let name = rustls_name()?;
    connector.connect(name, tcp).await.context("TLS handshake with the gateway")
}

fn rustls_name() -> Result<reins_tls::rustls::pki_types::ServerName<'static>> {
    Ok(reins_tls::rustls::pki_types::ServerName::try_from(reins_tls::GATEWAY_NAME)?)
}
