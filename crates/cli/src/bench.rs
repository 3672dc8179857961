//! `reins bench sandbox`: cold start, churn, density, and bubblewrap as the
//! reference, all in one run on this machine.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use reins_sandbox::{Cgroups, ExecEvent, ExecRequest, Runtime, RuntimeOptions};
use reins_types::SandboxSpec;
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::config;
use crate::stats::Summary;

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Sandbox cold start, churn and density, with bubblewrap as reference.
    Sandbox(SandboxBench),
    /// The API over loopback HTTP against an in-process `reins up`, with the library as reference.
    Api(crate::bench_api::ApiBench),
    /// The egress proxy: added latency, throughput, and the cold-start cost of an allowlist.
    Network(crate::bench_net::NetBench),
    /// The agent harness: overhead per step, and many sessions at once, against a scripted model.
    Agent(crate::bench_agent::AgentBench),
    /// The E2B Python SDK against Reins: create + run + kill, and run alone.
    E2b(crate::bench_e2b::E2bBench),
    /// Warm pools, hibernation and wake, fork, idle density, sustained creation through the API.
    Lifecycle(crate::bench_lifecycle::LifecycleBench),
    /// Holds idle sandboxes for `bench lifecycle` (a worker process).
    #[command(hide = true)]
    IdleWorker(crate::bench_idle::IdleWorker),
}

#[derive(Debug, Args)]
pub struct SandboxBench {
    /// Cold starts to measure (each for Reins and for bubblewrap).
    #[arg(long, default_value_t = 500)]
    runs: usize,
    /// Seconds of churn.
    #[arg(long, default_value_t = 20)]
    churn_secs: u64,
    /// Churn workers (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Idle sandboxes held at once for the density test (0 skips it).
    #[arg(long, default_value_t = 2000)]
    density: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Host settings that change the figures, recorded with them.
#[derive(Debug, Serialize)]
struct Host {
    /// `/sys/kernel/rcu_expedited`: 1 makes every RCU grace period expedited,
    /// which removes most of the cold-start tail (see docs/benchmarks.md).
    rcu_expedited: Option<u8>,
    /// `favordynmods` on the cgroup2 mount: task moves skip their RCU grace
    /// period, which removes the tail of creates that find nothing prepared.
    cgroup_favordynmods: Option<bool>,
    cpus: usize,
    cgroup_layout: String,
}

impl Host {
    fn read(rt: &Runtime, cpus: usize) -> Self {
        let rcu = std::fs::read_to_string("/sys/kernel/rcu_expedited").ok().and_then(|s| s.trim().parse().ok());
        Self {
            rcu_expedited: rcu,
            cgroup_favordynmods: Cgroups::favordynmods(),
            cpus,
            cgroup_layout: format!("{:?}", rt.cgroups().layout()),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    host: Host,
    cold_start_ms: Summary,
    /// The part of the cold start until the sandbox is ready for commands.
    create_ms: Summary,
    /// The same cold start from a runtime that prepares no sandbox ahead
    /// (every step, including clone and cgroup move, on the request's path).
    cold_start_unprepared_ms: Summary,
    bwrap_cold_start_ms: Option<Summary>,
    bwrap_ratio: Option<f64>,
    churn_per_min: f64,
    churn_workers: usize,
    churn_errors: u64,
    density: usize,
    idle_kib_per_sandbox: Option<f64>,
    density_exec_ms: Option<Summary>,
}

pub async fn run(data_dir: &Path, cmd: BenchCmd) -> Result<u8> {
    let args = match cmd {
        BenchCmd::Sandbox(args) => args,
        BenchCmd::Api(args) => return crate::bench_api::run(data_dir, args).await,
        BenchCmd::Network(args) => return crate::bench_net::run(data_dir, args).await,
        BenchCmd::Agent(args) => return crate::bench_agent::run(data_dir, args).await,
        BenchCmd::E2b(args) => return crate::bench_e2b::run(data_dir, args).await,
        BenchCmd::Lifecycle(args) => return crate::bench_lifecycle::run(data_dir, args).await,
        BenchCmd::IdleWorker(args) => return crate::bench_idle::worker(data_dir, args).await,
    };
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let rt = config::runtime(data_dir, workers, RuntimeOptions::DEFAULT_EMBRYOS)?;
    let spec = SandboxSpec::default();
    rt.templates().resolve(&spec.template)?;
    progress(args.json, &format!("cold start: {} runs", args.runs));
    let (cold, create) = cold_starts(&rt, &spec, args.runs).await?;
    progress(args.json, &format!("cold start with nothing prepared ahead: {} runs", args.runs));
    let unprepared = {
        let rt0 = config::runtime(data_dir, 1, 0)?;
        cold_starts(&rt0, &spec, args.runs).await?.0
    };
    progress(args.json, "bubblewrap cold start");
    let bwrap = bwrap_cold(args.runs).await?;
    progress(args.json, &format!("churn: {workers} workers for {}s", args.churn_secs));
    let (churn_per_min, churn_errors) = churn(&rt, &spec, workers, Duration::from_secs(args.churn_secs)).await;
    let (idle, density_exec) = if args.density > 0 {
        progress(args.json, &format!("density: {} idle sandboxes", args.density));
        let (kib, exec) = density(&rt, &spec, args.density, data_dir).await?;
        (Some(kib), Some(exec))
    } else {
        (None, None)
    };
    let report = Report {
        host: Host::read(&rt, workers),
        cold_start_ms: cold,
        create_ms: create,
        cold_start_unprepared_ms: unprepared,
        bwrap_ratio: bwrap.map(|b| b.p50 / cold.p50),
        bwrap_cold_start_ms: bwrap,
        churn_per_min,
        churn_workers: workers,
        churn_errors,
        density: args.density,
        idle_kib_per_sandbox: idle,
        density_exec_ms: density_exec,
    };
    print(&report, args.json)?;
    Ok(0)
}

/// Prints a report: as JSON for scripts, or with `human`.
pub(crate) fn emit<R: Serialize>(report: &R, json: bool, human: impl FnOnce(&R)) -> Result<u8> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        human(report);
    }
    Ok(0)
}

/// Counts a failed operation of a load test; the first three are printed.
pub(crate) fn count_error(errors: &AtomicU64, what: &str, e: &anyhow::Error) {
    if errors.fetch_add(1, Ordering::Relaxed) < 3 {
        eprintln!("{what}: {e:#}");
    }
}

/// Waits for a load test's tasks.
pub(crate) async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) -> Result<()> {
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// A progress line on stderr, unless the output is JSON.
pub(crate) fn progress(json: bool, msg: &str) {
    if !json {
        eprintln!("… {msg}");
    }
}

/// `runs` cold starts after 20 warm-up runs: total and create-only summaries.
async fn cold_starts(rt: &Runtime, spec: &SandboxSpec, runs: usize) -> Result<(Summary, Summary)> {
    for _ in 0..20 {
        cold_start(rt, spec).await?;
    }
    let (mut total, mut create) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        let (t, c) = cold_start(rt, spec).await?;
        total.push(t);
        create.push(c);
    }
    Ok((Summary::of(total), Summary::of(create)))
}

/// Create → exec `echo` → first stdout byte, and create alone, in ms; the
/// sandbox is destroyed untimed.
async fn cold_start(rt: &Runtime, spec: &SandboxSpec) -> Result<(f64, f64)> {
    let t0 = Instant::now();
    let sb = rt.create(spec).await?;
    let created = t0.elapsed().as_secs_f64() * 1000.0;
    let ms = echo_first_output(&sb, t0).await?;
    sb.destroy().await;
    Ok((ms, created))
}

/// Runs `echo hi` in `sb`; ms from `t0` to the first byte of its output.
pub(crate) async fn echo_first_output(sb: &reins_sandbox::Sandbox, t0: Instant) -> Result<f64> {
    let mut exec = sb.exec(ExecRequest::new(["echo", "hi"])).await?;
    loop {
        match exec.next().await? {
            Some(ExecEvent::Stdout(_)) => return Ok(t0.elapsed().as_secs_f64() * 1000.0),
            Some(ExecEvent::Exit(s)) => bail!("echo exited with {s:?} before printing"),
            Some(ExecEvent::Stderr(_)) => {}
            None => bail!("echo printed nothing"),
        }
    }
}

/// The same measurement with bubblewrap, or `None` when `bwrap` is not installed.
async fn bwrap_cold(runs: usize) -> Result<Option<Summary>> {
    if which("bwrap").is_none() {
        eprintln!("bwrap not found (apt-get install bubblewrap); skipping the reference");
        return Ok(None);
    }
    let mut ms = Vec::with_capacity(runs);
    for i in 0..runs + 20 {
        let t0 = Instant::now();
        let mut child = tokio::process::Command::new("bwrap")
            .args(["--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr"])
            .args(["--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64"])
            .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--", "echo", "hi"])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .context("starting bwrap")?;
        let mut out = child.stdout.take().context("bwrap stdout")?;
        let mut byte = [0u8; 1];
        let n = out.read(&mut byte).await?;
        let elapsed = t0.elapsed().as_secs_f64() * 1000.0;
        child.wait().await?;
        if n == 0 {
            bail!("bwrap printed nothing");
        }
        if i >= 20 {
            ms.push(elapsed);
        }
    }
    Ok(Some(Summary::of(ms)))
}

pub(crate) fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(cmd)).find(|c| c.is_file()))
}

async fn churn(rt: &Runtime, spec: &SandboxSpec, workers: usize, dur: Duration) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (rt, spec, done, errors) = (rt.clone(), spec.clone(), Arc::clone(&done), Arc::clone(&errors));
        tasks.spawn(async move {
            while t0.elapsed() < dur {
                match one_true(&rt, &spec).await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let per_min = done.load(Ordering::Relaxed) as f64 * 60.0 / t0.elapsed().as_secs_f64();
    (per_min, errors.load(Ordering::Relaxed))
}

async fn one_true(rt: &Runtime, spec: &SandboxSpec) -> Result<()> {
    let sb = rt.create(spec).await?;
    let out = sb.exec(ExecRequest::new(["true"])).await?.output().await?;
    sb.destroy().await;
    if out.status.shell_code() != 0 {
        bail!("true failed");
    }
    Ok(())
}

pub(crate) fn used_kib() -> Result<u64> {
    let info = std::fs::read_to_string("/proc/meminfo")?;
    let field = |name: &str| -> u64 {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(field("MemTotal:").saturating_sub(field("MemAvailable:")))
}

/// Holds `n` idle sandboxes; returns host memory per sandbox (KiB) and exec latency.
async fn density(rt: &Runtime, spec: &SandboxSpec, n: usize, data_dir: &Path) -> Result<(f64, Summary)> {
    let before = used_kib()?;
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        held.push(rt.create(spec).await.with_context(|| format!("creating idle sandbox {i}"))?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = used_kib()?;
    let mut ms = Vec::with_capacity(n);
    for sb in &held {
        let t0 = Instant::now();
        let out = sb.exec(ExecRequest::new(["true"])).await?.output().await?;
        if out.status.shell_code() != 0 {
            bail!("exec in an idle sandbox failed");
        }
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    for sb in held {
        sb.destroy().await;
    }
    // Thousands of idle slot cgroups slow every later cgroup and fork path on
    // this kernel (the next run measured ~20% slower): remove them again.
    // `cleanup` empties each memory cgroup first, so none lingers as "dying".
    reins_sandbox::cleanup(&config::options(data_dir)?).context("removing the idle slots of the density test")?;
    Ok((after.saturating_sub(before) as f64 / n as f64, Summary::of(ms)))
}

fn print(r: &Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    let row = |name: &str, s: &Summary| println!("{name:<28} {:>8.2} {:>8.2} {:>8.2} {:>6}", s.p50, s.p90, s.p99, s.n);
    let h = &r.host;
    let rcu = h.rcu_expedited.map_or("unknown".to_owned(), |v| v.to_string());
    let dynmods = h.cgroup_favordynmods.map_or("no cgroup2 mount".to_owned(), |v| v.to_string());
    println!("host: {} CPUs, cgroups {}, rcu_expedited {rcu}, favordynmods {dynmods}", h.cpus, h.cgroup_layout);
    println!("{:<28} {:>8} {:>8} {:>8} {:>6}", "latency (ms)", "p50", "p90", "p99", "n");
    row("reins cold start", &r.cold_start_ms);
    row("  of which create", &r.create_ms);
    row("  nothing prepared ahead", &r.cold_start_unprepared_ms);
    if let Some(b) = &r.bwrap_cold_start_ms {
        row("bwrap cold start", b);
    }
    if let Some(e) = &r.density_exec_ms {
        row("exec in idle sandbox", e);
    }
    if let Some(ratio) = r.bwrap_ratio {
        println!("bwrap p50 / reins p50: {ratio:.2}x");
    }
    println!(
        "churn: {:.0} sandboxes/min with {} workers ({} errors)",
        r.churn_per_min, r.churn_workers, r.churn_errors
    );
    if let Some(kib) = r.idle_kib_per_sandbox {
        println!("density: {} idle sandboxes, {:.0} KiB host memory each", r.density, kib);
    }
    Ok(())
}
