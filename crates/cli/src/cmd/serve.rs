//! `reins up`, `reins server` and `reins node`: the long-running services.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use reins_node::{Node, NodeIdentity, NodeOptions};
use reins_server::{Limits, Server, ServerOptions};
use reins_tls::Identity;
use tokio::sync::watch;

use crate::client::ClientConfig;
use crate::config;

#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Serve the API over TLS with this certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve the API over TLS with a generated test CA and certificate
    /// (the CA is written to DATA/tls/ca.pem and into the CLI config).
    #[arg(long, conflicts_with = "tls_cert")]
    tls_self_signed: bool,
}

/// The egress proxy's settings on a node.
#[derive(Debug, Args, Default)]
pub struct EgressArgs {
    /// A fixed answer for a name the sandboxes' proxy resolves, like `curl
    /// --resolve`: NAME=IP[,IP…] (repeatable; still checked against policies).
    #[arg(long = "resolve", value_name = "NAME=IP")]
    resolve: Vec<String>,
    /// An extra CA (PEM) trusted when the proxy forwards with a credential.
    #[arg(long, value_name = "FILE")]
    upstream_ca: Option<PathBuf>,
    /// The IPv4 subnet direct interfaces (policies with `direct`) take a /30
    /// of each; it must not be in use on this host.
    #[arg(long, value_name = "CIDR", default_value = reins_node::DIRECT_SUBNET)]
    direct_subnet: ipnet::Ipv4Net,
}

impl EgressArgs {
    pub fn options(&self) -> Result<reins_net::EgressOptions> {
        let mut resolve = std::collections::HashMap::new();
        for r in &self.resolve {
            let (name, ips) = r.split_once('=').with_context(|| format!("--resolve {r}: use NAME=IP[,IP]"))?;
            let ips = ips
                .split(',')
                .map(|ip| ip.trim().parse::<std::net::IpAddr>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("--resolve {r}: not an IP address"))?;
            let name =
                reins_types::net::normalize_domain(name).with_context(|| format!("--resolve {r}: not a name"))?;
            resolve.insert(name, ips);
        }
        let upstream_ca = self
            .upstream_ca
            .as_ref()
            .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
            .transpose()?;
        Ok(reins_net::EgressOptions { resolve, upstream_ca })
    }
}

/// How agent sessions are driven.
#[derive(Debug, Args)]
pub struct HarnessArgs {
    /// Attempts of a model call that fails with 408/409/429/5xx or a connection error.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    model_attempts: u32,
    /// First backoff between model call attempts, in ms (doubling, up to 30 s; `Retry-After` wins).
    #[arg(long, default_value_t = 500)]
    model_backoff_ms: u64,
    /// How long a control plane's hold on an agent session lasts without renewal, in seconds
    /// (another control plane on the same database takes the session over after it).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=3600))]
    session_lease_secs: u64,
}

/// What a node accepts; beyond it a create is refused with 503 and `Retry-After`.
#[derive(Debug, Args)]
pub struct CapacityArgs {
    /// Sandboxes running at once (warm pools' included).
    #[arg(long, default_value_t = 1000)]
    max_sandboxes: u32,
    /// Sum of the memory limits accepted, such as 96G (default: 4 × the host's memory).
    #[arg(long, value_parser = size)]
    max_memory: Option<u64>,
    /// Sum of the pids limits accepted (default: 8 × the kernel's pid_max).
    #[arg(long)]
    max_pids: Option<u64>,
}

/// How long stopped sandboxes are kept.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// A hibernated sandbox is released this many seconds after it hibernated (unless woken).
    #[arg(long, default_value_t = 86400, value_parser = clap::value_parser!(u64).range(1..))]
    hibernate_retention_secs: u64,
    /// Ended sandboxes stay visible (with their end reason) this many seconds, then their rows go.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    ended_retention_secs: u64,
}

/// The control plane's sandbox settings, the same for `up` and `server`.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Default sandbox timeout in seconds.
    #[arg(long, default_value_t = 300)]
    default_timeout: u64,
    /// Longest sandbox timeout in seconds.
    #[arg(long, default_value_t = 86400)]
    max_timeout: u64,
    /// Sandbox ports are reached at PORT-ID.DOMAIN (point a wildcard DNS name at the API).
    #[arg(long, default_value = "localhost")]
    sandbox_domain: String,
    /// Give E2B sandboxes (which have internet access unless they opt out) a
    /// direct interface as well as the proxy, for programs that ignore
    /// HTTP_PROXY (Node's fetch, say); the node needs nftables.
    #[arg(long)]
    e2b_direct: bool,
    #[command(flatten)]
    retention: RetentionArgs,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// API address.
    #[arg(long, env = "REINS_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Database; the embedded SQLite file DATA/reins.db by default.
    #[arg(long, env = "REINS_DATABASE_URL")]
    database_url: Option<String>,
    #[command(flatten)]
    capacity: CapacityArgs,
    #[command(flatten)]
    sandboxes: SandboxArgs,
    /// Do not write the CLI config (~/.config/reins/config.json).
    #[arg(long)]
    no_config: bool,
    /// The key that seals secrets (base64, 32 bytes; generated as DATA/server/secret.key
    /// when absent). `REINS_SECRET_KEY` holds the key itself and wins.
    #[arg(long, env = "REINS_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    egress: EgressArgs,
    #[command(flatten)]
    harness: HarnessArgs,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    #[arg(long, env = "REINS_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Where nodes connect.
    #[arg(long, default_value = "0.0.0.0:7071")]
    gateway_listen: SocketAddr,
    /// `host:port` nodes are told to dial (default: the gateway's address).
    #[arg(long)]
    gateway_advertise: Option<String>,
    #[arg(long, env = "REINS_DATABASE_URL")]
    database_url: Option<String>,
    #[command(flatten)]
    sandboxes: SandboxArgs,
    /// The key that seals secrets (see `reins up --help`); every control plane on one database needs the same.
    #[arg(long, env = "REINS_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    harness: HarnessArgs,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The control plane's API URL; runs this host as an execution node.
    #[arg(long)]
    join: Option<String>,
    /// A join token from `reins node token` (needed once; the identity is kept).
    #[arg(long, env = "REINS_JOIN_TOKEN", default_value = "")]
    token: String,
    /// This node's name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// A CA certificate to trust for an https --join URL.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    #[command(flatten)]
    capacity: CapacityArgs,
    #[command(flatten)]
    egress: EgressArgs,
}

fn size(s: &str) -> Result<u64, String> {
    reins_types::parse_size(s).map_err(|e| e.to_string())
}

fn node_options(c: &CapacityArgs, egress: &EgressArgs) -> Result<NodeOptions> {
    let d = NodeOptions::default();
    anyhow::ensure!(c.max_sandboxes >= 1, "--max-sandboxes must be at least 1");
    Ok(NodeOptions {
        max_sandboxes: c.max_sandboxes,
        memory_bytes: c.max_memory.unwrap_or(d.memory_bytes),
        pids: c.max_pids.unwrap_or(d.pids),
        egress: egress.options()?,
        data_dir: None,
        direct_subnet: egress.direct_subnet,
    })
}

fn limits(s: &SandboxArgs, h: &HarnessArgs) -> Result<Limits> {
    let domain = s.sandbox_domain.as_str();
    anyhow::ensure!(
        reins_types::net::normalize_domain(domain).as_deref() == Some(domain),
        "--sandbox-domain must be a lower-case DNS name, such as sandboxes.example.com"
    );
    anyhow::ensure!(
        s.default_timeout >= 1 && s.default_timeout <= s.max_timeout,
        "--default-timeout must be between 1 and --max-timeout"
    );
    let secs = std::time::Duration::from_secs;
    Ok(Limits {
        default_timeout: secs(s.default_timeout),
        max_timeout: secs(s.max_timeout),
        sandbox_domain: domain.to_owned(),
        model_attempts: h.model_attempts,
        model_backoff: std::time::Duration::from_millis(h.model_backoff_ms),
        session_lease: secs(h.session_lease_secs),
        hibernate_retention: secs(s.retention.hibernate_retention_secs),
        ended_retention: secs(s.retention.ended_retention_secs),
        e2b_direct: s.e2b_direct,
        ..Limits::default()
    })
}

fn tls(args: &TlsArgs, data_dir: &Path, listen: SocketAddr) -> Result<(Option<Identity>, Option<String>)> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
        return Ok((Some(Identity { cert_pem: read(cert)?, key_pem: read(key)? }), None));
    }
    if !args.tls_self_signed {
        if !listen.ip().is_loopback() {
            tracing::warn!(%listen, "the API listens beyond loopback without TLS; use --tls-cert/--tls-key");
            eprintln!("warning: the API on {listen} is not loopback and has no TLS: keys travel in clear text. Use --tls-cert/--tls-key.");
        }
        return Ok((None, None));
    }
    let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if !listen.ip().is_unspecified() {
        hosts.push(listen.ip().to_string());
    }
    let (id, ca) = reins_tls::self_signed_ca(&hosts)?;
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("ca.pem"), &ca)?;
    Ok((Some(id), Some(ca)))
}

fn database_url(flag: Option<String>, data_dir: &Path) -> String {
    flag.unwrap_or_else(|| format!("sqlite://{}", data_dir.join("reins.db").display()))
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

fn print_admin_key(secret: &str) {
    eprintln!("\nAdmin API key (shown once; only its hash is stored):\n\n    {secret}\n");
}

fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

/// `reins up`: control plane and one local node in one process.
pub async fn up(data_dir: &Path, args: UpArgs) -> Result<u8> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let (tls, ca) = tls(&args.tls, data_dir, args.listen)?;
    let is_tls = tls.is_some();
    let server = Server::start(ServerOptions {
        database_url: database_url(args.database_url, data_dir),
        data_dir: data_dir.join("server"),
        listen: args.listen,
        gateway_listen: "127.0.0.1:0".parse()?,
        gateway_advertise: None,
        tls,
        limits: limits(&args.sandboxes, &args.harness)?,
        secret_key_file: args.secret_key_file,
    })
    .await
    .map_err(|e| {
        if e.chain().any(|c| c.to_string().contains("Address already in use")) {
            e.context("is another `reins up` running? Stop it, or pick another address with --listen")
        } else {
            e
        }
    })?;
    let url = format!("{}://{}", scheme(is_tls), server.api_addr);
    let admin = server.bootstrap_admin().await?;
    if let Some(secret) = &admin {
        print_admin_key(secret);
        if !args.no_config {
            let path = ClientConfig { url: url.clone(), api_key: secret.clone(), ca_cert: ca.clone() }.save()?;
            eprintln!("CLI config written to {} (reins commands use it).", path.display());
        }
    } else if !args.no_config {
        ClientConfig::update_url(&url, ca.as_deref())?;
    }

    let opts = node_options(&args.capacity, &args.egress)?;
    let local = LocalNode::start(&server, data_dir, &url, ca.as_deref(), opts).await?;
    println!("Reins is up at {url}");
    eprintln!("  node gateway: {}", server.gateway_addr);
    eprintln!("  try:  reins sandbox create && reins sandbox exec ID -- echo hello");
    eprintln!("  stop: Ctrl-C (sandboxes are removed)");
    terminated().await;
    eprintln!("shutting down: removing sandboxes…");
    local.stop().await;
    server.shutdown().await;
    Ok(0)
}

/// The node of `reins up` (and of `reins bench api`), in this process. It
/// joins like any node (one-time token, recorded identity), then serves the
/// node protocol in-process: the control plane calls its router directly.
pub struct LocalNode {
    pub node: std::sync::Arc<Node>,
    stop: watch::Sender<bool>,
}

impl LocalNode {
    pub async fn start(
        server: &Server,
        data_dir: &Path,
        url: &str,
        ca: Option<&str>,
        opts: NodeOptions,
    ) -> Result<Self> {
        let identity = match NodeIdentity::load(data_dir)? {
            Some(id) => id,
            None => {
                let token = server.join_token().await?;
                reins_node::join(url, &token, data_dir, "local", ca).await?
            }
        };
        let runtime = config::runtime(data_dir, 2, 4)?;
        let opts = NodeOptions { data_dir: Some(data_dir.join("node")), ..opts };
        let node = Node::new(identity.node_id.clone(), runtime, opts).map_err(anyhow::Error::msg)?;
        let (stop, rx) = watch::channel(false);
        server.attach_local(&identity.node_id, reins_node::router(std::sync::Arc::clone(&node)), rx).await?;
        Ok(Self { node, stop })
    }

    /// Detaches the node and destroys every sandbox of it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.node.destroy_all().await;
        self.node.runtime().clear_embryos().await;
    }
}

/// `reins server`: the control plane alone.
pub async fn server(data_dir: &Path, args: ServerArgs) -> Result<u8> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let (tls, _) = tls(&args.tls, data_dir, args.listen)?;
    let is_tls = tls.is_some();
    let server = Server::start(ServerOptions {
        database_url: database_url(args.database_url, data_dir),
        data_dir: data_dir.join("server"),
        listen: args.listen,
        gateway_listen: args.gateway_listen,
        gateway_advertise: args.gateway_advertise,
        tls,
        limits: limits(&args.sandboxes, &args.harness)?,
        secret_key_file: args.secret_key_file,
    })
    .await?;
    if let Some(secret) = server.bootstrap_admin().await? {
        print_admin_key(&secret);
    }
    println!("Reins control plane at {}://{} (node gateway {})", scheme(is_tls), server.api_addr, server.gateway_addr);
    eprintln!("  add a node: reins node token, then on the node: reins node --join URL --token TOKEN");
    terminated().await;
    server.shutdown().await;
    Ok(0)
}

/// `reins node`: an execution node joined to a control plane.
pub async fn node(data_dir: &Path, args: NodeArgs) -> Result<u8> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let join = args.join.context("pass --join URL to run a node, or use `reins node token|ls`")?;
    let ca = args.ca_cert.as_ref().map(std::fs::read_to_string).transpose().context("reading --ca-cert")?;
    let name = args.name.unwrap_or_else(|| {
        nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "node".into())
    });
    let identity = match NodeIdentity::load(data_dir)? {
        Some(id) => id,
        None => {
            anyhow::ensure!(!args.token.is_empty(), "this node has not joined yet: pass --token (create one with `reins node token` against the control plane)");
            reins_node::join(&join, &args.token, data_dir, &name, ca.as_deref()).await?
        }
    };
    println!("node {} serving control plane gateway {}", identity.node_id, identity.gateway);
    let runtime = config::runtime(data_dir, 2, 4)?;
    let opts = NodeOptions { data_dir: Some(data_dir.join("node")), ..node_options(&args.capacity, &args.egress)? };
    let node = Node::new(identity.node_id.clone(), runtime, opts).map_err(anyhow::Error::msg)?;
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(reins_node::serve(std::sync::Arc::clone(&node), identity, rx));
    terminated().await;
    let _ = stop.send(true);
    task.await??;
    node.runtime().clear_embryos().await;
    Ok(0)
}
