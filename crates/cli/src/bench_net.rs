//! `reins bench network`: what the egress proxy costs, against the same
//! requests sent directly to the same local server, in one run.
//!
//! The client sits where a sandbox's program would: its socket to the
//! proxy is made inside the sandbox's network namespace. The "internet" is a
//! server on the host's loopback that the policy names explicitly; nothing
//! leaves the machine. Client and server run on OS threads of their own, as
//! a sandbox's program and an upstream are separate processes: the proxy's
//! runtime runs only the proxy, as on a node.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use reins_net::{AuditSink, Egress, EgressOptions, PROXY_ADDR};
use reins_sandbox::{ExecEvent, ExecRequest, Runtime, RuntimeOptions, Sandbox};
use reins_types::{NetEvent, NetMode, NetworkPolicy, SandboxNetwork, SandboxSpec};
use serde::Serialize;
use std::io::{Read, Write};
use tokio::sync::watch;

use crate::bench::progress;
use crate::config;
use crate::stats::Summary;

#[derive(Debug, Args)]
pub struct NetBench {
    /// Requests timed for the latency test (each direct and through the proxy),
    /// and cold starts (each with policy `none` and `allowlist`).
    #[arg(long, default_value_t = 1000)]
    runs: usize,
    /// Size of the download, in MB.
    #[arg(long, default_value_t = 100)]
    mb: u64,
    /// Rounds of downloads (each: direct, through the proxy, through a tunnel).
    #[arg(long, default_value_t = 21, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rounds: u32,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    cpus: usize,
    /// A small GET on a kept-alive connection, directly to the server.
    direct_ms: Summary,
    /// The same GET through the proxy (plain HTTP; the proxy connects upstream for each).
    proxy_ms: Summary,
    /// Proxy p50 − direct p50.
    proxy_added_ms: Added,
    download_mb: u64,
    /// Rates are medians over the rounds.
    direct_mb_per_s: f64,
    /// Through the proxy as plain HTTP (the proxy parses and relays the response).
    proxy_http_mb_per_s: f64,
    /// Through a CONNECT tunnel (bytes relayed as they are).
    proxy_connect_mb_per_s: f64,
    /// CONNECT tunnel / direct, the median over the rounds (each round downloads
    /// direct, through the proxy and through a tunnel back to back): the path
    /// of every `https://` download.
    proxy_throughput_ratio: f64,
    /// Plain HTTP through the proxy / direct, the same way.
    proxy_http_throughput_ratio: f64,
    /// Create + `echo` to its first output byte, policy `none`.
    cold_none_ms: Summary,
    /// The same with an allowlist: the proxy listener is made inside and served.
    cold_allowlist_ms: Summary,
    /// Allowlist p50 − none p50.
    allowlist_cold_start_added_ms: f64,
    /// Through a node: the allowlist cold start without and with a direct
    /// interface (`"direct": true`); absent without `nft`.
    direct_cold_start_ms: Option<crate::bench_direct::DirectCost>,
    /// With − without, p50.
    direct_cold_start_added_ms: Option<f64>,
    /// Connection attempts the audit sink saw.
    audited: u64,
}

#[derive(Debug, Serialize)]
struct Added {
    p50: f64,
}

#[derive(Debug, Default)]
struct Counting(AtomicU64);

impl AuditSink for Counting {
    fn record(&self, _sandbox: &str, _event: NetEvent) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

const SMALL: &[u8] = b"ok";

/// A keep-alive HTTP/1.1 server, one OS thread per connection, as an
/// upstream outside the node would be: `/small` answers 2 bytes, `/big/N`
/// N bytes. It lives as long as the process.
fn serve_http(listener: std::net::TcpListener) {
    for s in listener.incoming().flatten() {
        let _ = s.set_nodelay(true);
        std::thread::spawn(move || serve_conn(s));
    }
}

fn serve_conn(mut s: std::net::TcpStream) {
    let mut buf = Vec::new();
    let chunk = vec![b'x'; 256 << 10];
    while let Ok(Some(head)) = read_head(&mut s, &mut buf) {
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let len: usize = path.strip_prefix("/big/").and_then(|n| n.parse().ok()).unwrap_or(SMALL.len());
        let header = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
        if s.write_all(header.as_bytes()).is_err() {
            return;
        }
        if len == SMALL.len() {
            let _ = s.write_all(SMALL);
            continue;
        }
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            if s.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n;
        }
    }
}

/// Reads one request or response head (up to `\r\n\r\n`); leftover bytes stay in `buf`.
fn read_head<S: Read>(s: &mut S, buf: &mut Vec<u8>) -> Result<Option<String>> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            return Ok(Some(String::from_utf8_lossy(&head).into_owned()));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `request` and reads the whole response; returns the body's length.
fn get<S: Read + Write>(s: &mut S, request: &str, buf: &mut Vec<u8>) -> Result<u64> {
    s.write_all(request.as_bytes())?;
    let head = read_head(s, buf)?.context("connection closed before a response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("unexpected response: {}", head.lines().next().unwrap_or(""));
    }
    let len: u64 = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse().ok())
        .context("no content-length")?;
    let mut got = buf.len() as u64;
    buf.clear();
    let mut chunk = vec![0u8; 256 << 10];
    while got < len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("body ended after {got} of {len} bytes");
        }
        got += n as u64;
    }
    Ok(got)
}

/// A connection to the proxy from inside the sandbox, blocking: the
/// client runs on its own thread, as a sandbox's program would.
async fn to_proxy(sb: &Sandbox) -> Result<std::net::TcpStream> {
    let sock = sb.tcp_socket(false).await?;
    let s = sock.connect(PROXY_ADDR).await.context("connecting to the proxy inside the sandbox")?;
    s.set_nodelay(true)?;
    let s = s.into_std()?;
    s.set_nonblocking(false)?;
    Ok(s)
}

/// The client's work, on a thread of its own (never on the proxy's runtime).
async fn client<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.context("the client thread panicked")?
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Create (and, with `egress`, start its proxy) → `echo` → first output byte.
async fn cold(rt: &Runtime, egress: Option<(&Arc<Egress>, &SandboxNetwork)>) -> Result<f64> {
    let t = Instant::now();
    let sb = rt.create(&SandboxSpec::default()).await?;
    let task = match egress {
        Some((e, net)) => {
            let listener = sb.listen_tcp(PROXY_ADDR).await?;
            let (_tx, rx) = watch::channel(Arc::new(net.clone()));
            Some((e.serve(sb.id().to_owned(), listener, rx), _tx))
        }
        None => None,
    };
    let mut exec = sb.exec(ExecRequest::new(["echo", "hi"])).await?;
    let took = loop {
        match exec.next().await? {
            Some(ExecEvent::Stdout(_)) => break ms(t),
            Some(ExecEvent::Exit(s)) => bail!("echo exited with {s:?} before printing"),
            Some(ExecEvent::Stderr(_)) => {}
            None => bail!("echo printed nothing"),
        }
    };
    drop(exec);
    if let Some((task, _)) = task {
        task.abort();
    }
    sb.destroy().await;
    Ok(took)
}

fn download<S: Read + Write>(s: &mut S, request: &str, bytes: u64) -> Result<f64> {
    let mut buf = Vec::new();
    let t = Instant::now();
    let got = get(s, request, &mut buf)?;
    if got != bytes {
        bail!("downloaded {got} of {bytes} bytes");
    }
    Ok(bytes as f64 / 1e6 / t.elapsed().as_secs_f64())
}

pub async fn run(data_dir: &Path, args: NetBench) -> Result<u8> {
    let rt = config::runtime(data_dir, 1, RuntimeOptions::DEFAULT_EMBRYOS)?;
    rt.templates().resolve("base")?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::Builder::new().name("bench-upstream".into()).spawn(move || serve_http(listener))?;
    let audit = Arc::new(Counting::default());
    let opts = EgressOptions {
        resolve: [("bench.test".to_owned(), vec!["127.0.0.1".parse()?])].into_iter().collect(),
        upstream_ca: None,
    };
    let egress = Egress::new(opts, Arc::clone(&audit) as Arc<dyn AuditSink>).map_err(anyhow::Error::msg)?;
    let policy = NetworkPolicy::parse(NetMode::Allowlist, &["bench.test".into(), format!("127.0.0.1:{port}")], &[])?;
    let net = SandboxNetwork { policy, credentials: Vec::new() };
    let result = measure(&rt, &egress, &net, port, &args).await;
    let direct = match &result {
        Ok(_) => {
            progress(
                args.json,
                &format!("direct interfaces: {} cold starts each without and with", args.runs.min(300)),
            );
            crate::bench_direct::measure(&rt, &net.policy, args.runs.min(300)).await
        }
        Err(_) => Ok(None),
    };
    rt.clear_embryos().await;
    let mut report = result?;
    if let Some(d) = direct? {
        report.direct_cold_start_added_ms = Some(d.with.p50 - d.without.p50);
        report.direct_cold_start_ms = Some(d);
    }
    report.audited = audit.0.load(Ordering::Relaxed);
    print(&report, args.json)?;
    Ok(0)
}

async fn measure(
    rt: &Runtime,
    egress: &Arc<Egress>,
    net: &SandboxNetwork,
    port: u16,
    args: &NetBench,
) -> Result<Report> {
    let sb = rt.create(&SandboxSpec::default()).await?;
    let (_settings, rx) = watch::channel(Arc::new(net.clone()));
    let proxy = egress.serve(sb.id().to_owned(), sb.listen_tcp(PROXY_ADDR).await?, rx);

    progress(args.json, &format!("latency: {} small GETs direct and through the proxy, interleaved", args.runs));
    let mut direct_conn = std::net::TcpStream::connect(("127.0.0.1", port))?;
    direct_conn.set_nodelay(true)?;
    let mut proxy_conn = to_proxy(&sb).await?;
    let runs = args.runs;
    let (direct, via, mut direct_conn, mut proxy_conn) = client(move || {
        let direct_req = format!("GET /small HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        let proxy_req = format!("GET http://bench.test:{port}/small HTTP/1.1\r\nHost: bench.test:{port}\r\n\r\n");
        let (mut direct, mut via) = (Vec::new(), Vec::new());
        let (mut b1, mut b2) = (Vec::new(), Vec::new());
        for i in 0..runs + 50 {
            let t = Instant::now();
            get(&mut direct_conn, &direct_req, &mut b1)?;
            let d = ms(t);
            let t = Instant::now();
            get(&mut proxy_conn, &proxy_req, &mut b2).context("GET through the proxy")?;
            let p = ms(t);
            if i >= 50 {
                direct.push(d);
                via.push(p);
            }
        }
        Ok((direct, via, direct_conn, proxy_conn))
    })
    .await?;

    progress(
        args.json,
        &format!("throughput: {} MB direct, through the proxy, through a tunnel ({} rounds)", args.mb, args.rounds),
    );
    let bytes = args.mb * 1_000_000;
    // Rounds of direct, HTTP and tunnel back to back: each round's ratios
    // compare downloads made under the same machine conditions.
    let (mut d_rate, mut h_rate, mut c_rate) = (Vec::new(), Vec::new(), Vec::new());
    let (mut tunnel_ratios, mut http_ratios) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        let mut tunnel = to_proxy(&sb).await?;
        let (d, h, c, conns) = client(move || {
            let req = format!("GET /big/{bytes} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
            let d = download(&mut direct_conn, &req, bytes)?;
            let req = format!("GET http://bench.test:{port}/big/{bytes} HTTP/1.1\r\nHost: bench.test:{port}\r\n\r\n");
            let h = download(&mut proxy_conn, &req, bytes)?;
            let mut buf = Vec::new();
            tunnel.write_all(
                format!("CONNECT bench.test:{port} HTTP/1.1\r\nHost: bench.test:{port}\r\n\r\n").as_bytes(),
            )?;
            let head = read_head(&mut tunnel, &mut buf)?.context("no CONNECT answer")?;
            if !head.starts_with("HTTP/1.1 200") {
                bail!("CONNECT refused: {head}");
            }
            let req = format!("GET /big/{bytes} HTTP/1.1\r\nHost: bench.test:{port}\r\n\r\n");
            let c = download(&mut tunnel, &req, bytes)?;
            Ok((d, h, c, (direct_conn, proxy_conn)))
        })
        .await?;
        (direct_conn, proxy_conn) = conns;
        d_rate.push(d);
        h_rate.push(h);
        c_rate.push(c);
        tunnel_ratios.push(c / d);
        http_ratios.push(h / d);
    }
    proxy.abort();
    sb.destroy().await;

    progress(args.json, &format!("cold start: {} runs each with policy none and allowlist, interleaved", args.runs));
    let (mut none, mut allow) = (Vec::new(), Vec::new());
    for i in 0..args.runs + 20 {
        let a = cold(rt, None).await?;
        let b = cold(rt, Some((egress, net))).await?;
        if i >= 20 {
            none.push(a);
            allow.push(b);
        }
    }
    let (direct_ms, proxy_ms) = (Summary::of(direct), Summary::of(via));
    let (cold_none_ms, cold_allowlist_ms) = (Summary::of(none), Summary::of(allow));
    Ok(Report {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        proxy_added_ms: Added { p50: proxy_ms.p50 - direct_ms.p50 },
        direct_ms,
        proxy_ms,
        download_mb: args.mb,
        direct_mb_per_s: Summary::of(d_rate).p50,
        proxy_http_mb_per_s: Summary::of(h_rate).p50,
        proxy_connect_mb_per_s: Summary::of(c_rate).p50,
        proxy_throughput_ratio: Summary::of(tunnel_ratios).p50,
        proxy_http_throughput_ratio: Summary::of(http_ratios).p50,
        allowlist_cold_start_added_ms: cold_allowlist_ms.p50 - cold_none_ms.p50,
        cold_none_ms,
        cold_allowlist_ms,
        direct_cold_start_ms: None,
        direct_cold_start_added_ms: None,
        audited: 0,
    })
}

fn print(r: &Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    let row =
        |name: &str, s: &Summary| println!("{name:<34} p50 {:>7.3} ms   p99 {:>7.3} ms   (n={})", s.p50, s.p99, s.n);
    println!("Egress proxy ({} CPUs)", r.cpus);
    row("small GET, direct (kept alive)", &r.direct_ms);
    row("small GET, through the proxy", &r.proxy_ms);
    println!("{:<34} {:+.3} ms (p50)", "added by the proxy", r.proxy_added_ms.p50);
    println!("{:<34} {:.0} MB/s (median)", format!("{} MB download, direct", r.download_mb), r.direct_mb_per_s);
    println!("{:<34} {:.0} MB/s", "  through the proxy (HTTP)", r.proxy_http_mb_per_s);
    println!("{:<34} {:.0} MB/s", "  through a CONNECT tunnel", r.proxy_connect_mb_per_s);
    println!(
        "{:<34} {:.2} (tunnel)  {:.2} (HTTP)",
        "proxy / direct", r.proxy_throughput_ratio, r.proxy_http_throughput_ratio
    );
    row("cold start, policy none", &r.cold_none_ms);
    row("cold start, allowlist", &r.cold_allowlist_ms);
    println!("{:<34} {:+.3} ms (p50)", "added by an allowlist", r.allowlist_cold_start_added_ms);
    if let (Some(d), Some(added)) = (&r.direct_cold_start_ms, r.direct_cold_start_added_ms) {
        row("cold start via a node, allowlist", &d.without);
        row("  … with a direct interface", &d.with);
        println!("{:<34} {:+.3} ms (p50)", "added by a direct interface", added);
    }
    println!("{:<34} {}", "connections audited", r.audited);
    Ok(())
}
