//! A node's identity: its id, its certificate, and the gateway it trusts.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use reins_api::node::{JoinRequest, JoinResponse};
use reins_api::ErrorBody;
use reins_tls::Identity;
use serde::{Deserialize, Serialize};

/// What a node keeps after joining (`DATA/node/identity.json`, mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node_id: String,
    pub gateway: String,
    pub gateway_cert_pem: String,
    #[serde(skip)]
    pub tls: Option<Identity>,
}

fn paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("node");
    (dir.join("identity.json"), dir.join("tls"))
}

impl NodeIdentity {
    /// The identity saved in `data_dir`, if this node has joined.
    pub fn load(data_dir: &Path) -> Result<Option<Self>> {
        let (file, tls) = paths(data_dir);
        if !file.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let mut id: Self = serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        id.tls = Some(Identity::load_or_generate(&tls, reins_tls::NODE_NAME)?);
        Ok(Some(id))
    }

    pub fn tls(&self) -> Result<&Identity> {
        self.tls.as_ref().context("node identity without its certificate")
    }
}

/// Joins the control plane at `api_url` with a one-time `token`, unless this
/// node already has an identity in `data_dir`. `ca_pem` is trusted for an
/// `https` URL with a self-signed certificate.
pub async fn join(
    api_url: &str,
    token: &str,
    data_dir: &Path,
    name: &str,
    ca_pem: Option<&str>,
) -> Result<NodeIdentity> {
    if let Some(id) = NodeIdentity::load(data_dir)? {
        return Ok(id);
    }
    let (file, tls_dir) = paths(data_dir);
    let tls = Identity::load_or_generate(&tls_dir, reins_tls::NODE_NAME)?;
    let mut client = reqwest::Client::builder().use_rustls_tls();
    if let Some(ca) = ca_pem {
        client = client.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?);
    }
    let url = format!("{}/v1/nodes/join", api_url.trim_end_matches('/'));
    let req = JoinRequest { token: token.to_owned(), name: name.to_owned(), cert_pem: tls.cert_pem.clone() };
    let resp =
        client.build()?.post(&url).json(&req).send().await.with_context(|| {
            format!("cannot reach the control plane at {api_url}: is `reins server` running there?")
        })?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body: Option<ErrorBody> = resp.json().await.ok();
        let msg = body.map_or_else(|| status.to_string(), |b| b.message);
        bail!("joining {api_url} failed ({status}): {msg}");
    }
    let answer: JoinResponse = resp.json().await.context("reading the join answer")?;
    let id = NodeIdentity {
        node_id: answer.node_id,
        gateway: answer.gateway,
        gateway_cert_pem: answer.gateway_cert_pem,
        tls: Some(tls),
    };
    reins_tls::write_private(&file, &serde_json::to_string_pretty(&id)?)?;
    Ok(id)
}
