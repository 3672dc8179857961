//! `reins snapshot …`, `reins pool …`, and the snapshot and fork commands of `reins sandbox`.

use anyhow::Result;
use clap::Subcommand;
use reins_api::v1::{Fork, Forked, Pool, PoolList, PutPool, Snapshot, SnapshotList};
use reqwest::Method;

use crate::client::Client;
use crate::cmd::table::{json_out, print_table, when};

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// List snapshots.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Delete snapshots (sandboxes made from them keep running).
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// A sandbox's limits (`reins sandbox create`, and a pool's shape).
#[derive(Debug, Clone, clap::Args)]
pub struct Shape {
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory limit in MiB.
    #[arg(long)]
    pub memory_mb: Option<u64>,
    #[arg(long)]
    pub pids: Option<u32>,
    /// Writable-layer limit in MiB.
    #[arg(long)]
    pub disk_mb: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum PoolCmd {
    /// Keep MIN..MAX sandboxes of TEMPLATE (and this shape) started ahead on every node (admin).
    Set {
        template: String,
        #[arg(long)]
        min: u32,
        #[arg(long)]
        max: u32,
        #[command(flatten)]
        shape: Shape,
        #[arg(long)]
        json: bool,
    },
    /// Warm pools and how many sandboxes are ready.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove the pool of TEMPLATE and this shape (its ready sandboxes are destroyed).
    Rm {
        template: String,
        #[command(flatten)]
        shape: Shape,
    },
}

fn show_snapshots(items: &[Snapshot]) {
    let rows = items
        .iter()
        .map(|s| {
            vec![s.id.clone(), s.sandbox_id.clone(), s.template.clone(), format!("{}", s.bytes), when(s.created_ms)]
        })
        .collect();
    print_table(&["ID", "SANDBOX", "TEMPLATE", "BYTES", "CREATED"], rows);
}

pub async fn snapshot(c: &Client, id: &str, json: bool) -> Result<()> {
    let s: Snapshot = c.json(c.request(Method::POST, &format!("/v1/sandboxes/{id}/snapshots"))).await?;
    if json {
        json_out(&s)
    } else {
        println!("{}", s.id);
        Ok(())
    }
}

pub async fn fork(c: &Client, id: &str, count: u32, timeout: Option<u64>, json: bool) -> Result<()> {
    let body = Fork { count: Some(count), timeout_secs: timeout };
    let f: Forked = c.json(c.request(Method::POST, &format!("/v1/sandboxes/{id}/fork")).json(&body)).await?;
    if json {
        return json_out(&f);
    }
    for s in &f.sandboxes {
        println!("{}", s.id);
    }
    eprintln!("snapshot {} ({} bytes)", f.snapshot.id, f.snapshot.bytes);
    Ok(())
}

pub async fn run_snapshot(cmd: SnapshotCmd) -> Result<u8> {
    let c = Client::from_env()?;
    match cmd {
        SnapshotCmd::Ls { json } => {
            let list: SnapshotList = c.json(c.request(Method::GET, "/v1/snapshots")).await?;
            if json {
                json_out(&list.items)?;
            } else {
                show_snapshots(&list.items);
            }
        }
        SnapshotCmd::Rm { ids } => {
            for id in ids {
                c.send(c.request(Method::DELETE, &format!("/v1/snapshots/{id}"))).await?;
                println!("{id}");
            }
        }
    }
    Ok(0)
}

fn show_pools(items: &[Pool]) {
    let rows = items
        .iter()
        .map(|p| {
            vec![
                p.template.clone(),
                format!("{} cpu, {}M, {} pids, {}M disk", p.cpus, p.memory_mb, p.pids, p.disk_mb),
                format!("{}..{}", p.min, p.max),
                format!("{}/{}", p.ready, p.target),
                p.claims.to_string(),
            ]
        })
        .collect();
    print_table(&["TEMPLATE", "SHAPE", "MIN..MAX", "READY/TARGET", "CLAIMS"], rows);
}

fn shape_query(s: &Shape) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(v) = s.cpus {
        q.push(("cpus", v.to_string()));
    }
    if let Some(v) = s.memory_mb {
        q.push(("memory_mb", v.to_string()));
    }
    if let Some(v) = s.pids {
        q.push(("pids", v.to_string()));
    }
    if let Some(v) = s.disk_mb {
        q.push(("disk_mb", v.to_string()));
    }
    q
}

pub async fn run_pool(cmd: PoolCmd) -> Result<u8> {
    let c = Client::from_env()?;
    match cmd {
        PoolCmd::Set { template, min, max, shape, json } => {
            let body = PutPool {
                min,
                max,
                cpus: shape.cpus,
                memory_mb: shape.memory_mb,
                pids: shape.pids,
                disk_mb: shape.disk_mb,
            };
            let p: Pool = c.json(c.request(Method::PUT, &format!("/v1/pools/{template}")).json(&body)).await?;
            if json {
                json_out(&p)?;
            } else {
                show_pools(&[p]);
            }
        }
        PoolCmd::Ls { json } => {
            let list: PoolList = c.json(c.request(Method::GET, "/v1/pools")).await?;
            if json {
                json_out(&list.items)?;
            } else {
                show_pools(&list.items);
            }
        }
        PoolCmd::Rm { template, shape } => {
            c.send(c.request(Method::DELETE, &format!("/v1/pools/{template}")).query(&shape_query(&shape))).await?;
            println!("{template}");
        }
    }
    Ok(0)
}
