//! The direct-interface part of `reins bench network`: what `"direct": true`
//! adds to a cold start (a veth pair, its addresses and route, one `ip` and
//! one `nft` run on the host), against the same allowlist without it, through
//! a node as `reins up` runs one. No traffic is sent: the interfaces are
//! made and removed.

use std::time::Instant;

use anyhow::{anyhow, Result};
use reins_api::node::CreateSandbox;
use reins_node::{Node, NodeOptions};
use reins_sandbox::Runtime;
use reins_types::{NetworkPolicy, SandboxNetwork, SandboxSpec};

use crate::stats::Summary;

/// A subnet for the bench's own node only.
const SUBNET: &str = "10.231.254.0/24";

/// Cold starts without and with a direct interface, interleaved.
pub struct DirectCost {
    pub without: Summary,
    pub with: Summary,
}

async fn cold(node: &Node, id: &str, policy: &NetworkPolicy) -> Result<f64> {
    let t0 = Instant::now();
    let req = CreateSandbox {
        id: id.to_owned(),
        spec: SandboxSpec::default(),
        network: SandboxNetwork { policy: policy.clone(), credentials: Vec::new() },
        mounts: Vec::new(),
        snapshot: None,
        idle_timeout_secs: None,
    };
    node.create(req).await.map_err(|e| anyhow!("create: {}", e.message))?;
    let sb = node.get(id).await.map_err(|e| anyhow!(e.message))?;
    let took = crate::bench::echo_first_output(&sb, t0).await;
    drop(sb);
    node.destroy(id).await.map_err(|e| anyhow!("destroy: {}", e.message))?;
    took
}

/// `runs` of each; `None` (with the reason printed) when this host has no `nft`.
pub async fn measure(rt: &Runtime, policy: &NetworkPolicy, runs: usize) -> Result<Option<DirectCost>> {
    if crate::bench::which("nft").is_none() {
        eprintln!("nft not found (apt-get install nftables); skipping the direct-interface part");
        return Ok(None);
    }
    let opts = NodeOptions { direct_subnet: SUBNET.parse()?, ..NodeOptions::default() };
    let node = Node::new("bench-direct".into(), rt.clone(), opts).map_err(|e| anyhow!(e))?;
    let direct = NetworkPolicy { direct: true, ..policy.clone() };
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let outcome = async {
        for i in 0..runs + 10 {
            let a = cold(&node, "bench-allowlist", policy).await?;
            let b = cold(&node, "bench-direct", &direct).await?;
            if i >= 10 {
                without.push(a);
                with.push(b);
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    node.destroy_all().await;
    outcome?;
    Ok(Some(DirectCost { without: Summary::of(without), with: Summary::of(with) }))
}
