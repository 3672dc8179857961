//! Many idle sandboxes held at once, across worker processes.
//!
//! The host side of a sandbox holds four descriptors (its socket, pidfd,
//! writable-layer handle and slot lock). Where a process may not raise its
//! descriptor limit (no `CAP_SYS_RESOURCE`, as on the reference machine:
//! 20,000), ten thousand sandboxes do not fit in one process, so the bench
//! holds them in several `reins bench idle-worker` processes — each a
//! runtime with its own zygote, as several nodes on one host would be — and
//! measures the host's memory around them.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use reins_sandbox::{ExecRequest, RuntimeOptions};
use reins_types::SandboxSpec;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::config;
use crate::stats::Summary;

/// Descriptors a worker may use for sandboxes (4 each), under a 20,000 limit.
const PER_WORKER: usize = 4_000;

#[derive(Debug, Args)]
pub struct IdleWorker {
    /// Sandboxes to hold.
    count: usize,
}

/// `reins bench idle-worker N`: creates N idle sandboxes, prints `ready`,
/// then on `exec` runs `true` in each and prints the times (ms, one line,
/// space-separated); on `stop` or end of input destroys them and exits.
pub async fn worker(data_dir: &Path, args: IdleWorker) -> Result<u8> {
    let rt = config::runtime(data_dir, 1, RuntimeOptions::DEFAULT_EMBRYOS)?;
    let spec = SandboxSpec::default();
    let mut held = Vec::with_capacity(args.count);
    for i in 0..args.count {
        held.push(rt.create(&spec).await.with_context(|| format!("creating idle sandbox {i}"))?);
    }
    rt.clear_embryos().await;
    println!("ready");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() != "exec" {
            break;
        }
        let mut times = Vec::with_capacity(held.len());
        for sb in &held {
            let t0 = Instant::now();
            let out = sb.exec(ExecRequest::new(["true"])).await?.output().await?;
            if out.status.shell_code() != 0 {
                bail!("exec in an idle sandbox failed");
            }
            times.push(format!("{:.3}", t0.elapsed().as_secs_f64() * 1000.0));
        }
        println!("{}", times.join(" "));
    }
    for sb in held {
        sb.destroy().await;
    }
    Ok(0)
}

/// Holds `n` idle sandboxes in worker processes; returns host memory per
/// sandbox (KiB) and the latency of an exec in each.
pub async fn density(n: usize, data_dir: &Path) -> Result<(f64, Summary)> {
    let exe = std::env::current_exe()?;
    let before = crate::bench::used_kib()?;
    let mut workers = Vec::new();
    let mut left = n;
    while left > 0 {
        let count = left.min(PER_WORKER);
        left -= count;
        let mut child = tokio::process::Command::new(&exe)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["bench", "idle-worker", &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting an idle worker")?;
        let out = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        workers.push((child, out));
    }
    for (_, out) in &mut workers {
        match tokio::time::timeout(Duration::from_secs(600), out.next_line()).await {
            Ok(Ok(Some(l))) if l == "ready" => {}
            other => bail!("an idle worker did not get ready: {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = crate::bench::used_kib()?;
    let mut ms = Vec::with_capacity(n);
    for (child, out) in &mut workers {
        child.stdin.as_mut().context("worker stdin")?.write_all(b"exec\n").await?;
        let line = out.next_line().await?.context("worker ended")?;
        ms.extend(line.split_whitespace().filter_map(|t| t.parse::<f64>().ok()));
    }
    for (mut child, _) in workers {
        drop(child.stdin.take());
        child.wait().await?;
    }
    // Thousands of idle slot cgroups slow every later cgroup and fork path on
    // this kernel: remove them again (`cleanup` empties each memory cgroup first).
    reins_sandbox::cleanup(&config::options(data_dir)?).context("removing the idle slots")?;
    Ok((after.saturating_sub(before) as f64 / n as f64, Summary::of(ms)))
}
