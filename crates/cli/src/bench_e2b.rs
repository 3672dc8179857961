//! `reins bench e2b`: the E2B Python SDK against an in-process `reins up`
//! over loopback: `Sandbox.create()` + `commands.run("echo hi")` + `kill()`
//! per cycle, and `commands.run` alone on a running sandbox. The SDK's own
//! client-side cost is part of the figures, as an E2B user would see them.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use clap::Args;
use reins_server::Limits;
use serde::{Deserialize, Serialize};

use crate::bench::progress;
use crate::bench_api::LocalService;
use crate::stats::Summary;

#[derive(Debug, Args)]
pub struct E2bBench {
    /// Cycles (and as many `commands.run` calls).
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// A Python with the `e2b` package (default: the venv `scripts/test-e2b` makes, then `python3`).
    #[arg(long)]
    python: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// What the script measures, in ms.
#[derive(Debug, Deserialize)]
struct Samples {
    version: String,
    cycle: Vec<f64>,
    create: Vec<f64>,
    run: Vec<f64>,
    kill: Vec<f64>,
    run_alone: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    e2b_version: String,
    cpus: usize,
    /// `Sandbox.create()` + `commands.run("echo hi")` + `kill()` (goal: p50 ≤ 20 ms).
    cycle_ms: Summary,
    create_ms: Summary,
    run_ms: Summary,
    kill_ms: Summary,
    /// `commands.run("echo hi")` on a running sandbox.
    run_alone_ms: Summary,
}

const SCRIPT: &str = r#"
import json, sys, time
from importlib.metadata import version
from e2b import Sandbox
n = int(sys.argv[1])
ms = lambda a, b: (b - a) * 1000.0
out = {"version": version("e2b"), "cycle": [], "create": [], "run": [], "kill": [], "run_alone": []}
for i in range(n + 10):
    t0 = time.perf_counter(); sb = Sandbox.create(timeout=60)
    t1 = time.perf_counter(); r = sb.commands.run("echo hi")
    t2 = time.perf_counter(); sb.kill()
    t3 = time.perf_counter()
    assert r.stdout == "hi\n", r.stdout
    if i >= 10:
        out["cycle"].append(ms(t0, t3)); out["create"].append(ms(t0, t1)); out["run"].append(ms(t1, t2)); out["kill"].append(ms(t2, t3))
sb = Sandbox.create(timeout=300)
for i in range(n + 10):
    t0 = time.perf_counter(); sb.commands.run("echo hi"); t1 = time.perf_counter()
    if i >= 10:
        out["run_alone"].append(ms(t0, t1))
sb.kill()
print(json.dumps(out))
"#;

fn python(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let venv = Path::new("target/e2b-venv/latest/bin/python");
        if venv.exists() {
            venv.to_path_buf()
        } else {
            PathBuf::from("python3")
        }
    })
}

pub async fn run(data_dir: &Path, args: E2bBench) -> Result<u8> {
    let py = python(args.python.clone());
    let svc = LocalService::start(data_dir, "bench-e2b", Limits::default()).await?;
    progress(
        args.json,
        &format!("{} cycles of create + run + kill, then {} runs, with {}", args.runs, args.runs, py.display()),
    );
    let out = tokio::process::Command::new(&py)
        .arg("-c")
        .arg(SCRIPT)
        .arg(args.runs.to_string())
        .env("E2B_API_KEY", &svc.key)
        .env("E2B_API_URL", &svc.url)
        .env("E2B_SANDBOX_URL", &svc.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await;
    svc.stop().await;
    let out = out.with_context(|| format!("running {}", py.display()))?;
    if !out.status.success() {
        bail!(
            "the E2B script failed (is the `e2b` package installed for {}? `scripts/test-e2b` makes a venv): {}",
            py.display(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default()
        );
    }
    let s: Samples = serde_json::from_slice(&out.stdout).context("reading the script's figures")?;
    let report = Report {
        e2b_version: s.version,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cycle_ms: Summary::of(s.cycle),
        create_ms: Summary::of(s.create),
        run_ms: Summary::of(s.run),
        kill_ms: Summary::of(s.kill),
        run_alone_ms: Summary::of(s.run_alone),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("E2B Python SDK {} against Reins over loopback", report.e2b_version);
        println!("create + commands.run(echo) + kill: {}", report.cycle_ms);
        println!("  goal p50 ≤ 20 ms: {}", if report.cycle_ms.p50 <= 20.0 { "met" } else { "NOT met" });
        println!("  create {}", report.create_ms);
        println!("  run    {}", report.run_ms);
        println!("  kill   {}", report.kill_ms);
        println!("commands.run(echo) on a running sandbox: {}", report.run_alone_ms);
    }
    Ok(0)
}
