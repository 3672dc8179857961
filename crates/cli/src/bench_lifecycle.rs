//! `reins bench lifecycle`: warm-pool claims (against cold creates in the
//! same run), wake from hibernation, fork of a sandbox holding 100 MB,
//! 10,000 idle sandboxes, and a sustained creation rate through the API.
//!
//! Pool claims, wakes and forks are timed on the node (in process, as the
//! control plane's node calls run): request → first byte of `echo`'s output.
//! The sustained load goes through the HTTP API.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use reins_api::node::CreateSandbox;
use reins_node::Node;
use reins_sandbox::ExecRequest;
use reins_server::Limits;
use reins_types::SandboxSpec;
use serde::Serialize;
use serde_json::json;

use crate::bench::progress;
use crate::bench_api::{Client, LocalService};
use crate::stats::Summary;

#[derive(Debug, Args)]
pub struct LifecycleBench {
    /// Pool claims and cold creates to time (each).
    #[arg(long, default_value_t = 300)]
    runs: usize,
    /// Wakes from hibernation to time.
    #[arg(long, default_value_t = 50)]
    wakes: usize,
    /// Forks to time.
    #[arg(long, default_value_t = 10)]
    forks: usize,
    /// MiB the forked sandbox has written.
    #[arg(long, default_value_t = 100)]
    fork_mb: u64,
    /// Idle sandboxes held at once (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Sandboxes created (and run `echo`, and deleted) per minute through the API.
    #[arg(long, default_value_t = 15_000)]
    rate_per_min: u64,
    /// Seconds of the sustained load.
    #[arg(long, default_value_t = 300)]
    sustained_secs: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    cpus: usize,
    /// Claim from a warm pool → first output of `echo`.
    pool_claim_ms: Summary,
    /// Of which the claim itself (the create answered).
    pool_claim_create_ms: Summary,
    /// The floor under a claim: a second `echo` in the claimed sandbox → its first output.
    exec_again_ms: Summary,
    /// A third, after [`IDLE_GAP`] without work: what any command costs on a
    /// machine that idled as long (as the claim's does, between iterations).
    exec_after_idle_ms: Summary,
    /// The same without a pool (a fresh create; the runtime's prepared children still help).
    cold_create_ms: Summary,
    /// Claims that found the pool empty (served cold instead).
    pool_misses: u64,
    /// Hibernated → first output of `echo` (the request wakes it).
    wake_ms: Summary,
    /// Running → hibernated (capture of its files, processes ended).
    hibernate_ms: Summary,
    /// Snapshot of a sandbox holding `fork_mb` MiB + a sandbox from it → first output of `echo`.
    fork_ms: Summary,
    /// Of which the snapshot.
    fork_snapshot_ms: Summary,
    fork_mb: u64,
    idle_sandboxes: usize,
    idle_kib_per_sandbox: Option<f64>,
    idle_exec_ms: Option<Summary>,
    /// Achieved creations per minute (each: create, exec `echo`, delete).
    sustained_per_min: f64,
    sustained_target_per_min: u64,
    sustained_secs: u64,
    sustained_errors: u64,
    /// Creates that started late (every worker busy at their scheduled time).
    sustained_late: u64,
    sustained_create_ms: Summary,
    sustained_cycle_ms: Summary,
    /// Resident memory of the service process, sampled during the load (MiB).
    sustained_rss_mb: Vec<f64>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Runs `echo hi` in sandbox `id` (waking it if needed); ms from `t0` to its first output.
pub(crate) async fn first_output(node: &Node, id: &str, t0: Instant) -> Result<f64> {
    let sb = node.get(id).await.map_err(|e| anyhow::anyhow!(e.message))?;
    crate::bench::echo_first_output(&sb, t0).await
}

async fn create(node: &Node, id: &str, spec: SandboxSpec, snapshot: Option<String>) -> Result<()> {
    create_with(node, id, spec, Default::default(), snapshot).await
}

/// Creates sandbox `id` on `node` directly (no control plane), under `network`.
pub(crate) async fn create_with(
    node: &Node,
    id: &str,
    spec: SandboxSpec,
    network: reins_types::SandboxNetwork,
    snapshot: Option<String>,
) -> Result<()> {
    let req = CreateSandbox { id: id.to_owned(), spec, network, mounts: Vec::new(), snapshot, idle_timeout_secs: None };
    node.create(req).await.map_err(|e| anyhow::anyhow!("create: {}", e.message))
}

pub(crate) async fn destroy(node: &Node, id: &str) -> Result<()> {
    node.destroy(id).await.map_err(|e| anyhow::anyhow!("destroy: {}", e.message))
}

fn pool_ready(node: &Node) -> u32 {
    node.status().pools.first().map_or(0, |p| p.ready)
}

struct Claims {
    claim: Summary,
    create: Summary,
    again: Summary,
    after_idle: Summary,
    cold: Summary,
    misses: u64,
}

/// The pause before the claimed sandbox's third `echo`.
const IDLE_GAP: Duration = Duration::from_millis(20);

/// Pool claims and, interleaved, cold creates of another shape. The pool
/// is set through the API (the control plane sends it to the node).
async fn claims(node: &Node, client: &Client, runs: usize) -> Result<Claims> {
    let pooled = SandboxSpec::default();
    let cold = SandboxSpec { limits: reins_types::Limits { pids: 255, ..pooled.limits }, ..pooled.clone() };
    client.call(reqwest::Method::PUT, "/v1/pools/base", Some(json!({"min": 8, "max": 8}))).await?;
    let (mut claim, mut claim_only, mut again, mut after_idle) = (vec![], vec![], vec![], vec![]);
    let (mut fresh, mut misses) = (vec![], 0);
    for i in 0..runs + 20 {
        // Wait for the refill, so each claim meets a ready sandbox (as a sized pool would).
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool_ready(node) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let before = node.status().pools.first().map_or(0, |p| p.claims);
        let t0 = Instant::now();
        create(node, "bench-claim", pooled.clone(), None).await?;
        let only = ms(t0);
        let t = first_output(node, "bench-claim", t0).await?;
        let a = first_output(node, "bench-claim", Instant::now()).await?;
        tokio::time::sleep(IDLE_GAP).await;
        let b = first_output(node, "bench-claim", Instant::now()).await?;
        let claimed = node.status().pools.first().map_or(0, |p| p.claims) > before;
        destroy(node, "bench-claim").await?;
        let t0 = Instant::now();
        create(node, "bench-cold", cold.clone(), None).await?;
        let c = first_output(node, "bench-cold", t0).await?;
        destroy(node, "bench-cold").await?;
        if i < 20 {
            continue;
        }
        if claimed {
            claim.push(t);
            claim_only.push(only);
            again.push(a);
            after_idle.push(b);
        } else {
            misses += 1;
        }
        fresh.push(c);
    }
    client.call(reqwest::Method::DELETE, "/v1/pools/base", None).await?;
    Ok(Claims {
        claim: Summary::of(claim),
        create: Summary::of(claim_only),
        again: Summary::of(again),
        after_idle: Summary::of(after_idle),
        cold: Summary::of(fresh),
        misses,
    })
}

/// Hibernate and wake one sandbox with a few files, `runs` times.
async fn wakes(node: &Node, runs: usize) -> Result<(Summary, Summary)> {
    create(node, "bench-wake", SandboxSpec::default(), None).await?;
    let sb = node.get("bench-wake").await.map_err(|e| anyhow::anyhow!(e.message))?;
    let out =
        sb.exec(ExecRequest::new(["bash", "-c", "mkdir -p work && seq 1 10000 > work/data"])).await?.output().await?;
    drop(sb);
    if out.status.shell_code() != 0 {
        bail!("writing the files failed");
    }
    let (mut wake, mut hib) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t0 = Instant::now();
        node.hibernate("bench-wake").await.map_err(|e| anyhow::anyhow!("hibernate: {}", e.message))?;
        hib.push(ms(t0));
        let t0 = Instant::now();
        wake.push(first_output(node, "bench-wake", t0).await?);
    }
    destroy(node, "bench-wake").await?;
    Ok((Summary::of(wake), Summary::of(hib)))
}

/// Snapshot a sandbox holding `mb` MiB and start one sandbox from it, `runs` times.
async fn forks(node: &Node, runs: usize, mb: u64) -> Result<(Summary, Summary)> {
    let mut spec = SandboxSpec::default();
    spec.limits.disk_bytes = spec.limits.disk_bytes.max((mb + 64) << 20);
    create(node, "bench-fork-src", spec, None).await?;
    let sb = node.get("bench-fork-src").await.map_err(|e| anyhow::anyhow!(e.message))?;
    let script = format!("head -c {mb}M /dev/urandom > /home/user/big && sync");
    let out = sb.exec(ExecRequest::new(["bash", "-c", &script])).await?.output().await?;
    drop(sb);
    if out.status.shell_code() != 0 {
        bail!("writing {mb} MiB failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (mut total, mut snap) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let sid = format!("bench-fork-{i}");
        let t0 = Instant::now();
        let info =
            node.snapshot("bench-fork-src", &sid).await.map_err(|e| anyhow::anyhow!("snapshot: {}", e.message))?;
        snap.push(ms(t0));
        if info.bytes < mb << 20 {
            bail!("the snapshot holds {} bytes, expected at least {}", info.bytes, mb << 20);
        }
        create(node, "bench-fork-child", SandboxSpec::default(), Some(sid.clone())).await?;
        total.push(first_output(node, "bench-fork-child", t0).await?);
        destroy(node, "bench-fork-child").await?;
        node.delete_snapshot(&sid).await.map_err(|e| anyhow::anyhow!(e.message))?;
    }
    destroy(node, "bench-fork-src").await?;
    Ok((Summary::of(total), Summary::of(snap)))
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

struct Sustained {
    per_min: f64,
    errors: u64,
    late: u64,
    create: Summary,
    cycle: Summary,
    rss: Vec<f64>,
}

/// Creates at `rate_per_min` for `secs` (open loop: each create has its
/// scheduled time); each sandbox runs `echo` and is deleted.
async fn sustained(client: Arc<Client>, rate_per_min: u64, secs: u64) -> Result<Sustained> {
    const WORKERS: usize = 64;
    let interval = Duration::from_secs_f64(60.0 / rate_per_min.max(1) as f64);
    let total = (secs as f64 * rate_per_min as f64 / 60.0) as u64;
    let (next, errors, late) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let lat = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let start = tokio::time::Instant::now();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sample_task = {
        let samples = Arc::clone(&samples);
        tokio::spawn(async move {
            loop {
                samples.lock().unwrap_or_else(|p| p.into_inner()).push(rss_mb());
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        })
    };
    let tasks: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (client, next, errors, late, lat) =
                (Arc::clone(&client), Arc::clone(&next), Arc::clone(&errors), Arc::clone(&late), Arc::clone(&lat));
            tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= total {
                        return;
                    }
                    let at = start + interval.mul_f64(k as f64);
                    if tokio::time::Instant::now() > at + Duration::from_millis(50) {
                        late.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep_until(at).await;
                    match one(&client).await {
                        Ok((c, total)) => {
                            let mut l = lat.lock().unwrap_or_else(|p| p.into_inner());
                            l.0.push(c);
                            l.1.push(total);
                        }
                        Err(e) => crate::bench::count_error(&errors, "sustained load", &e),
                    }
                }
            })
        })
        .collect();
    crate::bench::join_all(tasks).await?;
    let elapsed = start.elapsed().as_secs_f64();
    sample_task.abort();
    let mut rss = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    rss.push(rss_mb());
    let (create, cycle) = std::mem::take(&mut *lat.lock().unwrap_or_else(|p| p.into_inner()));
    let done = cycle.len() as f64;
    Ok(Sustained {
        per_min: done / elapsed * 60.0,
        errors: errors.load(Ordering::Relaxed),
        late: late.load(Ordering::Relaxed),
        create: Summary::of(create),
        cycle: Summary::of(cycle),
        rss,
    })
}

/// Create (timed alone too), exec `echo`, delete.
async fn one(client: &Client) -> Result<(f64, f64)> {
    let t0 = Instant::now();
    let sb = client.call(reqwest::Method::POST, "/v1/sandboxes", Some(json!({"timeout_secs": 60}))).await?;
    let created = ms(t0);
    let id = sb["id"].as_str().context("no id")?.to_owned();
    let out = client
        .call(reqwest::Method::POST, &format!("/v1/sandboxes/{id}/exec"), Some(json!({"cmd": ["echo", "hi"]})))
        .await;
    let deleted = client.call(reqwest::Method::DELETE, &format!("/v1/sandboxes/{id}"), None).await;
    if out?["stdout"] != "hi\n" {
        bail!("unexpected exec result");
    }
    deleted?;
    Ok((created, ms(t0)))
}

pub async fn run(data_dir: &Path, args: LifecycleBench) -> Result<u8> {
    let svc = LocalService::start(data_dir, "bench-lifecycle", Limits::default()).await?;
    let result = measure(&svc, data_dir, &args).await;
    svc.stop().await;
    crate::bench::emit(&result?, args.json, print)
}

async fn measure(svc: &LocalService, data_dir: &Path, args: &LifecycleBench) -> Result<Report> {
    let node = &svc.local.node;
    progress(args.json, &format!("warm-pool claims and cold creates: {} each", args.runs));
    let c = claims(node, &svc.client(), args.runs).await?;
    progress(args.json, &format!("hibernate and wake: {} times", args.wakes));
    let (wake_ms, hibernate_ms) = wakes(node, args.wakes).await?;
    progress(args.json, &format!("fork of a sandbox holding {} MiB: {} times", args.fork_mb, args.forks));
    let (fork_ms, fork_snapshot_ms) = forks(node, args.forks, args.fork_mb).await?;
    progress(
        args.json,
        &format!("sustained: {} creations per minute through the API for {} s", args.rate_per_min, args.sustained_secs),
    );
    let s = sustained(Arc::new(svc.client()), args.rate_per_min, args.sustained_secs).await?;
    let (idle_kib_per_sandbox, idle_exec_ms) = if args.idle > 0 {
        progress(args.json, &format!("{} idle sandboxes held at once (in worker processes)", args.idle));
        let (kib, exec) = crate::bench_idle::density(args.idle, data_dir).await?;
        (Some(kib), Some(exec))
    } else {
        (None, None)
    };
    Ok(Report {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        pool_claim_ms: c.claim,
        pool_claim_create_ms: c.create,
        exec_again_ms: c.again,
        exec_after_idle_ms: c.after_idle,
        cold_create_ms: c.cold,
        pool_misses: c.misses,
        wake_ms,
        hibernate_ms,
        fork_ms,
        fork_snapshot_ms,
        fork_mb: args.fork_mb,
        idle_sandboxes: args.idle,
        idle_kib_per_sandbox,
        idle_exec_ms,
        sustained_per_min: s.per_min,
        sustained_target_per_min: args.rate_per_min,
        sustained_secs: args.sustained_secs,
        sustained_errors: s.errors,
        sustained_late: s.late,
        sustained_create_ms: s.create,
        sustained_cycle_ms: s.cycle,
        sustained_rss_mb: s.rss,
    })
}

fn print(r: &Report) {
    println!("{:<34} {}", "pool claim → first output (ms)", r.pool_claim_ms);
    println!("{:<34} {}", "  of which the claim (ms)", r.pool_claim_create_ms);
    println!("{:<34} {}", "  floor: a second echo (ms)", r.exec_again_ms);
    println!("{:<34} {}", format!("  a third, after {} ms idle (ms)", IDLE_GAP.as_millis()), r.exec_after_idle_ms);
    println!("{:<34} {}", "  reference: cold create (ms)", r.cold_create_ms);
    println!("{:<34} {}", "  claims that missed the pool", r.pool_misses);
    println!("{:<34} {}", "wake → first output (ms)", r.wake_ms);
    println!("{:<34} {}", "hibernate (ms)", r.hibernate_ms);
    println!("{:<34} {}", format!("fork of {} MiB → output (ms)", r.fork_mb), r.fork_ms);
    println!("{:<34} {}", "  of which the snapshot (ms)", r.fork_snapshot_ms);
    if let (Some(kib), Some(exec)) = (r.idle_kib_per_sandbox, &r.idle_exec_ms) {
        println!("{:<34} {:.0} KiB each; exec in one: {exec}", format!("{} idle sandboxes", r.idle_sandboxes), kib);
    }
    println!(
        "{:<34} {:.0}/min of {} target over {} s, {} errors, {} late",
        "sustained creations (API)",
        r.sustained_per_min,
        r.sustained_target_per_min,
        r.sustained_secs,
        r.sustained_errors,
        r.sustained_late
    );
    println!("{:<34} {}", "  create (ms)", r.sustained_create_ms);
    println!("{:<34} {}", "  create + echo + delete (ms)", r.sustained_cycle_ms);
    let rss: Vec<String> = r.sustained_rss_mb.iter().map(|m| format!("{m:.0}")).collect();
    println!("{:<34} {}", "  service RSS every 10 s (MiB)", rss.join(" "));
}
