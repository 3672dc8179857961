//! `reins bench api`: the API's cost over loopback HTTP against an
//! in-process `reins up`, and the same operations through the library as
//! the reference, in one run.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use reins_sandbox::{ExecRequest, Runtime};
use reins_server::{Limits, Server, ServerOptions};
use reins_types::SandboxSpec;
use serde::Serialize;
use serde_json::{json, Value};

use crate::bench::progress;
use crate::cmd::serve::LocalNode;
use crate::stats::Summary;

#[derive(Debug, Args)]
pub struct ApiBench {
    /// Sequential create + exec + delete cycles to time (and as many through the library).
    #[arg(long, default_value_t = 300)]
    runs: usize,
    /// Concurrent clients of the sustained test.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of the sustained test.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    cpus: usize,
    rcu_expedited: Option<u8>,
    /// create + exec `echo` + delete through the API, one at a time.
    cycle_ms: Summary,
    create_ms: Summary,
    exec_ms: Summary,
    delete_ms: Summary,
    /// `GET /healthz`: HTTP alone.
    health_ms: Summary,
    /// `GET /v1/sandboxes/{id}`: HTTP, key check and one read.
    get_ms: Summary,
    /// The same cycle through `reins-sandbox` directly, in the same process.
    raw_cycle_ms: Summary,
    raw_create_ms: Summary,
    raw_exec_ms: Summary,
    raw_destroy_ms: Summary,
    /// API p50 / library p50.
    overhead_ratio: f64,
    /// Sustained cycles per minute with `clients` concurrent clients.
    cycles_per_min: f64,
    clients: usize,
    sustained_secs: u64,
    sustained_cycles: u64,
    sustained_cycle_ms: Summary,
    errors: u64,
}

/// An API client for the benchmarks.
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub key: String,
}

impl Client {
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut r = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            bail!("{status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? })
    }

    /// One create + exec + delete; the three durations in ms.
    async fn cycle(&self) -> Result<[f64; 3]> {
        let t0 = Instant::now();
        let sb = self.call(reqwest::Method::POST, "/v1/sandboxes", Some(json!({}))).await?;
        let id = sb["id"].as_str().context("no id")?.to_owned();
        let t1 = Instant::now();
        let out = self
            .call(reqwest::Method::POST, &format!("/v1/sandboxes/{id}/exec"), Some(json!({"cmd": ["echo", "hi"]})))
            .await?;
        if out["stdout"] != "hi\n" {
            bail!("unexpected exec result {out}");
        }
        let t2 = Instant::now();
        self.call(reqwest::Method::DELETE, &format!("/v1/sandboxes/{id}"), None).await?;
        let t3 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
        Ok([ms(t0, t1), ms(t1, t2), ms(t2, t3)])
    }
}

/// One create + exec + destroy through the library; the three durations in ms.
async fn raw_cycle(rt: &Runtime, spec: &SandboxSpec) -> Result<[f64; 3]> {
    let t0 = Instant::now();
    let sb = rt.create(spec).await?;
    let t1 = Instant::now();
    let out = sb.exec(ExecRequest::new(["echo", "hi"])).await?.output().await?;
    if out.stdout != b"hi\n" {
        bail!("unexpected output");
    }
    let t2 = Instant::now();
    sb.destroy().await;
    let t3 = Instant::now();
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
    Ok([ms(t0, t1), ms(t1, t2), ms(t2, t3)])
}

/// A control plane and node of their own, in process, in a scratch directory.
pub struct LocalService {
    pub server: Server,
    pub local: LocalNode,
    pub url: String,
    pub key: String,
    dir: std::path::PathBuf,
}

impl LocalService {
    pub async fn start(data_dir: &Path, name: &str, limits: Limits) -> Result<Self> {
        let dir = data_dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let server = Server::start(ServerOptions {
            database_url: format!("sqlite://{}", dir.join("reins.db").display()),
            data_dir: dir.join("server"),
            listen: "127.0.0.1:0".parse()?,
            gateway_listen: "127.0.0.1:0".parse()?,
            gateway_advertise: None,
            tls: None,
            limits,
            secret_key_file: None,
        })
        .await?;
        let url = format!("http://{}", server.api_addr);
        let key = server.bootstrap_admin().await?.context("fresh database without an admin key")?;
        let local = LocalNode::start(&server, &dir, &url, None, reins_node::NodeOptions::default()).await?;
        let http = reqwest::Client::new();
        for _ in 0..200 {
            let r = http.get(format!("{url}/readyz")).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { server, local, url, key, dir })
    }

    /// A client with the admin key.
    pub fn client(&self) -> Client {
        Client { http: reqwest::Client::new(), url: self.url.clone(), key: self.key.clone() }
    }

    pub async fn stop(self) {
        self.local.stop().await;
        self.server.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn run(data_dir: &Path, args: ApiBench) -> Result<u8> {
    let svc = LocalService::start(data_dir, "bench-api", Limits::default()).await?;
    let client = Arc::new(svc.client());
    let result = measure(&client, svc.local.node.runtime(), &args).await;
    svc.stop().await;
    crate::bench::emit(&result?, args.json, print)
}

async fn measure(client: &Arc<Client>, rt: &Runtime, args: &ApiBench) -> Result<Report> {
    progress(args.json, "warm-up");
    for _ in 0..20 {
        client.cycle().await?;
    }
    let spec = SandboxSpec::default();
    for _ in 0..20 {
        raw_cycle(rt, &spec).await?;
    }
    progress(
        args.json,
        &format!("{} sequential cycles through the API and through the library, interleaved", args.runs),
    );
    let (mut cycle, mut create, mut exec, mut delete) = (vec![], vec![], vec![], vec![]);
    let (mut raw, mut raw_create, mut raw_exec, mut raw_delete) = (vec![], vec![], vec![], vec![]);
    for _ in 0..args.runs {
        let [c, e, d] = client.cycle().await?;
        cycle.push(c + e + d);
        create.push(c);
        exec.push(e);
        delete.push(d);
        let [c, e, d] = raw_cycle(rt, &spec).await?;
        raw.push(c + e + d);
        raw_create.push(c);
        raw_exec.push(e);
        raw_delete.push(d);
    }
    let sb = client.call(reqwest::Method::POST, "/v1/sandboxes", Some(json!({}))).await?;
    let get_path = format!("/v1/sandboxes/{}", sb["id"].as_str().context("id")?);
    let (mut health, mut get) = (vec![], vec![]);
    for _ in 0..args.runs {
        let t = Instant::now();
        client.http.get(format!("{}/healthz", client.url)).send().await?.bytes().await?;
        health.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        client.call(reqwest::Method::GET, &get_path, None).await?;
        get.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    client.call(reqwest::Method::DELETE, &get_path, None).await?;
    progress(args.json, &format!("sustained: {} clients for {} s", args.clients, args.secs));
    let deadline = Instant::now() + Duration::from_secs(args.secs);
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|_| {
            let (client, done, errors, lat) =
                (Arc::clone(client), Arc::clone(&done), Arc::clone(&errors), Arc::clone(&lat));
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    match client.cycle().await {
                        Ok(ms) => {
                            done.fetch_add(1, Ordering::Relaxed);
                            lat.lock().unwrap_or_else(|p| p.into_inner()).push(ms.iter().sum::<f64>());
                        }
                        Err(e) => crate::bench::count_error(&errors, "cycle failed", &e),
                    }
                }
            })
        })
        .collect();
    crate::bench::join_all(tasks).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let cycles = done.load(Ordering::Relaxed);
    let cycle_s = Summary::of(cycle);
    let raw_s = Summary::of(raw);
    let sustained = std::mem::take(&mut *lat.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(Report {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rcu_expedited: std::fs::read_to_string("/sys/kernel/rcu_expedited").ok().and_then(|s| s.trim().parse().ok()),
        overhead_ratio: cycle_s.p50 / raw_s.p50,
        cycle_ms: cycle_s,
        create_ms: Summary::of(create),
        exec_ms: Summary::of(exec),
        delete_ms: Summary::of(delete),
        raw_cycle_ms: raw_s,
        raw_create_ms: Summary::of(raw_create),
        raw_exec_ms: Summary::of(raw_exec),
        raw_destroy_ms: Summary::of(raw_delete),
        health_ms: Summary::of(health),
        get_ms: Summary::of(get),
        cycles_per_min: cycles as f64 * 60.0 / elapsed,
        clients: args.clients,
        sustained_secs: args.secs,
        sustained_cycles: cycles,
        sustained_cycle_ms: Summary::of(sustained),
        errors: errors.load(Ordering::Relaxed),
    })
}

fn print(r: &Report) {
    let row =
        |name: &str, s: &Summary| println!("{name:<28} p50 {:>7.2} ms   p99 {:>7.2} ms   (n={})", s.p50, s.p99, s.n);
    println!("API over loopback HTTP ({} CPUs, rcu_expedited={:?})", r.cpus, r.rcu_expedited);
    row("create+exec+delete (API)", &r.cycle_ms);
    row("  create", &r.create_ms);
    row("  exec echo", &r.exec_ms);
    row("  delete", &r.delete_ms);
    row("same through the library", &r.raw_cycle_ms);
    row("  create", &r.raw_create_ms);
    row("  exec echo", &r.raw_exec_ms);
    row("  destroy", &r.raw_destroy_ms);
    row("GET /healthz", &r.health_ms);
    row("GET /v1/sandboxes/{id}", &r.get_ms);
    println!("{:<28} {:.2}x", "API / library (p50)", r.overhead_ratio);
    println!(
        "{:<28} {:.0} cycles/min with {} clients over {} s ({} cycles, {} errors; p50 {:.1} ms, p99 {:.1} ms)",
        "sustained",
        r.cycles_per_min,
        r.clients,
        r.sustained_secs,
        r.sustained_cycles,
        r.errors,
        r.sustained_cycle_ms.p50,
        r.sustained_cycle_ms.p99
    );
}
