//! The API client of the CLI: where the server is, which key to use, and
//! requests with errors that say what to do next.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use reins_api::ErrorBody;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `~/.config/reins/config.json`, written by `reins up` (mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientConfig {
    pub url: String,
    pub api_key: String,
    /// A CA to trust (from `--tls-self-signed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
}

fn config_path() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("reins/config.json"));
    }
    let home = std::env::var_os("HOME").context("neither XDG_CONFIG_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".config/reins/config.json"))
}

impl ClientConfig {
    pub fn save(&self) -> Result<PathBuf> {
        let path = config_path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        reins_tls::write_private(&path, &serde_json::to_string_pretty(self)?)?;
        Ok(path)
    }

    fn load() -> Result<Option<Self>> {
        let path = config_path()?;
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?))
    }

    /// Points an existing config at `url` (a restarted `reins up` may use TLS now).
    pub fn update_url(url: &str, ca: Option<&str>) -> Result<()> {
        if let Some(mut c) = Self::load()? {
            c.url = url.to_owned();
            c.ca_cert = ca.map(str::to_owned);
            c.save()?;
        }
        Ok(())
    }

    /// `REINS_URL`/`REINS_API_KEY` (and `REINS_CA_CERT`, a PEM file), else the config file.
    pub fn resolve() -> Result<Self> {
        let file = Self::load()?;
        let url =
            std::env::var("REINS_URL").ok().filter(|s| !s.is_empty()).or_else(|| file.as_ref().map(|f| f.url.clone()));
        let key = std::env::var("REINS_API_KEY")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| file.as_ref().map(|f| f.api_key.clone()));
        let ca = match std::env::var_os("REINS_CA_CERT").filter(|s| !s.is_empty()) {
            Some(p) => Some(std::fs::read_to_string(&p).with_context(|| format!("reading REINS_CA_CERT {p:?}"))?),
            None => file.as_ref().and_then(|f| f.ca_cert.clone()),
        };
        match (url, key) {
            (Some(url), Some(api_key)) => Ok(Self { url, api_key, ca_cert: ca }),
            _ => bail!("no Reins server configured: start one with `reins up`, or set REINS_URL and REINS_API_KEY"),
        }
    }
}

/// An authenticated API client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    pub base: String,
    key: String,
}

impl Client {
    pub fn from_env() -> Result<Self> {
        let cfg = ClientConfig::resolve()?;
        let mut b = reqwest::Client::builder().use_rustls_tls();
        if let Some(ca) = &cfg.ca_cert {
            b = b.add_root_certificate(
                reqwest::Certificate::from_pem(ca.as_bytes()).context("the configured CA certificate")?,
            );
        }
        Ok(Self { http: b.build()?, base: cfg.url.trim_end_matches('/').to_owned(), key: cfg.api_key })
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key)
    }

    /// Sends and turns failures into messages that say what to do.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow::anyhow!("cannot reach Reins at {}: is `reins up` running?", self.base)
            } else {
                anyhow::anyhow!("request to {} failed: {e}", self.base)
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Option<ErrorBody> = resp.json().await.ok();
        match body {
            Some(b) if status == reqwest::StatusCode::UNAUTHORIZED => {
                bail!("{} — check REINS_API_KEY or the key in ~/.config/reins/config.json", b.message)
            }
            Some(b) => bail!("{} ({})", b.message, b.code),
            None => bail!("the server answered {status}"),
        }
    }

    pub async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        self.send(req).await?.json().await.context("reading the server's answer")
    }
}
