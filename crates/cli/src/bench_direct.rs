//! The direct-interface part of `reins bench network`: what `"direct": true`
//! adds to a cold start (a veth pair, its addresses and route, one `ip` and
//! one `nft` run on the host), against the same allowlist without it, through
//! a node as `reins up` runs one. No traffic is sent: the interfaces are
//! made and removed.

use std::time::Instant;

use anyhow::{anyhow, Result};
use reins_node::{Node, NodeOptions};
use reins_sandbox::Runtime;
use reins_types::{NetworkPolicy, SandboxNetwork, SandboxSpec};

use crate::bench_lifecycle::{create_with, destroy, first_output};
use crate::stats::Summary;

/// A subnet for the bench's own node only.
const SUBNET: &str = "10.231.254.0/24";

/// Cold starts without and with a direct interface, interleaved.
#[derive(Debug, serde::Serialize)]
pub struct DirectCost {
    pub without: Summary,
    pub with: Summary,
}

async fn cold(node: &Node, id: &str, policy: &NetworkPolicy) -> Result<f64> {
    let t0 = Instant::now();
    let network = SandboxNetwork { policy: policy.clone(), credentials: Vec::new() };
    create_with(node, id, SandboxSpec::default(), network, None).await?;
    let took = first_output(node, id, t0).await;
    destroy(node, id).await?;
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
