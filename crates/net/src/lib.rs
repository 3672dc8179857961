//! `reins-net` is the egress proxy of Reins' sandboxes.
//!
//! A sandbox's network namespace has only loopback. The node creates a
//! listening socket *inside* that namespace ([`PROXY_ADDR`]) and serves it
//! here, outside the sandbox: programs reach the world only through it, as
//! an HTTP proxy (`CONNECT` for TLS and other TCP, absolute-form requests for
//! plain HTTP) or a SOCKS5 proxy, on the same port. Every connection is
//! decided by the sandbox's current [`NetworkPolicy`](reins_types::NetworkPolicy); names are resolved
//! here, never inside, and every address they resolve to is checked too.
//! `CONNECT` tunnels check the TLS ClientHello's SNI against the host asked
//! for. Requests to `http://HOST.reins.internal/…` are forwarded over TLS to
//! `https://HOST/…` with the sandbox's credential for HOST added, so secrets
//! never enter the sandbox. Each attempt is reported to an [`AuditSink`].

mod count;
mod dial;
mod http;
mod http_cred;
pub mod nft;
mod relay;
mod resolve;
mod sni;
mod socks;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reins_types::net::{NetEvent, NetMode, SandboxNetwork};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

pub use resolve::Resolver;

/// The proxy's address inside every sandbox.
pub const PROXY_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3128);

/// The suffix of names that reach a host with a credential added.
pub const CREDENTIAL_SUFFIX: &str = ".reins.internal";

/// Connections one sandbox may have open through the proxy at once.
pub const MAX_CONNECTIONS: usize = 512;

/// The environment that points programs at the proxy, upper and lower case.
pub fn proxy_env() -> Vec<(String, String)> {
    let http = format!("http://{PROXY_ADDR}");
    let socks = format!("socks5h://{PROXY_ADDR}");
    let no_proxy = "localhost,127.0.0.1,::1".to_owned();
    let mut env = Vec::new();
    for (k, v) in [("HTTP_PROXY", &http), ("HTTPS_PROXY", &http), ("ALL_PROXY", &socks), ("NO_PROXY", &no_proxy)] {
        env.push((k.to_owned(), v.clone()));
        env.push((k.to_ascii_lowercase(), v.clone()));
    }
    env
}

/// Receives every connection attempt.
pub trait AuditSink: Send + Sync + 'static {
    fn record(&self, sandbox: &str, event: NetEvent);
}

/// Node-wide settings and state of the proxy.
pub struct Egress {
    resolver: Resolver,
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    audit: Arc<dyn AuditSink>,
    own: dial::OwnAddrs,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress").field("resolver", &self.resolver).finish_non_exhaustive()
    }
}

/// How to build an [`Egress`].
#[derive(Debug, Clone, Default)]
pub struct EgressOptions {
    /// Fixed answers for names, like `curl --resolve` (checked like any other answer).
    pub resolve: HashMap<String, Vec<IpAddr>>,
    /// PEM of an extra CA trusted for credential forwarding (a private or test CA).
    pub upstream_ca: Option<String>,
}

impl Egress {
    pub fn new(opts: EgressOptions, audit: Arc<dyn AuditSink>) -> Result<Arc<Self>, String> {
        let tls = reins_tls::api_client(opts.upstream_ca.as_deref()).map_err(|e| e.to_string())?;
        Ok(Arc::new(Self {
            resolver: Resolver::new(opts.resolve),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            connect_timeout: Duration::from_secs(10),
            audit,
            own: dial::OwnAddrs::default(),
        }))
    }

    /// Serves sandbox `id`'s proxy on `listener` (a socket inside its
    /// namespace) under the settings `settings` holds at each new connection;
    /// stops when the task is aborted or the listener fails.
    pub fn serve(
        self: &Arc<Self>,
        id: String,
        listener: TcpListener,
        settings: watch::Receiver<Arc<SandboxNetwork>>,
    ) -> JoinHandle<()> {
        let sb = Arc::new(SandboxCtx { id, settings, egress: Arc::clone(self) });
        tokio::spawn(accept_loop(sb, listener))
    }
}

/// One sandbox's view of the proxy.
pub(crate) struct SandboxCtx {
    pub id: String,
    pub settings: watch::Receiver<Arc<SandboxNetwork>>,
    pub egress: Arc<Egress>,
}

impl SandboxCtx {
    pub fn current(&self) -> Arc<SandboxNetwork> {
        Arc::clone(&self.settings.borrow())
    }

    pub fn record(&self, event: NetEvent) {
        if event.allowed {
            tracing::debug!(sandbox = %self.id, host = %event.host, port = event.port, "egress allowed");
        } else {
            tracing::info!(sandbox = %self.id, host = %event.host, port = event.port,
                reason = event.reason.as_deref().unwrap_or(""), "egress refused");
        }
        self.egress.audit.record(&self.id, event);
    }
}

async fn accept_loop(sb: Arc<SandboxCtx>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) if is_transient(&e) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(sandbox = %sb.id, error = %e, "egress proxy stops");
                return;
            }
        };
        // Over the limit, the connection is closed at once: the sandbox cannot
        // exhaust the host's descriptors.
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else { continue };
        let _ = stream.set_nodelay(true);
        let sb = Arc::clone(&sb);
        tokio::spawn(async move {
            serve_connection(sb, stream).await;
            drop(permit);
        });
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
        || e.kind() == std::io::ErrorKind::ConnectionAborted
}

/// SOCKS5 when the first byte is 5, HTTP otherwise.
async fn serve_connection(sb: Arc<SandboxCtx>, stream: TcpStream) {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(Duration::from_secs(30), stream.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return;
    }
    if sb.current().policy.mode == NetMode::None {
        // Answer in the protocol the program speaks, so it reports the reason.
        return refuse_all(&sb, stream, first[0]).await;
    }
    if first[0] == 5 {
        socks::serve(sb, stream).await;
    } else {
        http::serve(sb, stream).await;
    }
}

async fn refuse_all(sb: &SandboxCtx, mut stream: TcpStream, first: u8) {
    use tokio::io::AsyncWriteExt;
    let reason = reins_types::net::Denial::NoNetwork.to_string();
    if first == 5 {
        let mut hello = [0u8; 2];
        if stream.read_exact(&mut hello).await.is_ok() {
            let _ = stream.write_all(&[5, 0xff]).await;
        }
    } else {
        let body = format!("reins egress proxy: refused: {reason}\n");
        let resp = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(resp.as_bytes()).await;
    }
    sb.record(dial::event("proxy", "", 0, None, Err(&reason)));
}
