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
    ca_cert: Option<String>,
}

/// Something a WebSocket runs over: TCP, or TLS over TCP.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A WebSocket to the API.
pub type WebSocket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

impl Client {
    pub fn from_env() -> Result<Self> {
        let cfg = ClientConfig::resolve()?;
        let mut b = reqwest::Client::builder().use_rustls_tls();
        if let Some(ca) = &cfg.ca_cert {
            b = b.add_root_certificate(
                reqwest::Certificate::from_pem(ca.as_bytes()).context("the configured CA certificate")?,
            );
        }
        let base = cfg.url.trim_end_matches('/').to_owned();
        Ok(Self { http: b.build()?, base, key: cfg.api_key, ca_cert: cfg.ca_cert })
    }

    /// Opens a WebSocket to `path` (over TLS for an `https` server).
    pub async fn websocket(&self, path: &str) -> Result<WebSocket> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = reqwest::Url::parse(&self.base).with_context(|| format!("the server URL {}", self.base))?;
        let host = url.host_str().context("the server URL has no host")?.to_owned();
        let port = url.port_or_known_default().context("the server URL has no port")?;
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            other => bail!("unsupported URL scheme `{other}` in {}", self.base),
        };
        let ws_url = format!("{}{}{path}", if tls { "wss" } else { "ws" }, &self.base[url.scheme().len()..]);
        let mut req = ws_url.into_client_request().context("building the WebSocket request")?;
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.key).parse().context("the API key is not a valid header value")?,
        );
        let unreachable =
            |e: std::io::Error| anyhow::anyhow!("cannot reach Reins at {}: is `reins up` running? ({e})", self.base);
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(unreachable)?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = if tls {
            let cfg = reins_tls::api_client(self.ca_cert.as_deref())?;
            let name = reins_tls::rustls::pki_types::ServerName::try_from(host.clone())
                .with_context(|| format!("`{host}` is not a valid TLS server name"))?;
            let conn = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
            Box::new(conn.connect(name, tcp).await.with_context(|| format!("TLS with {}", self.base))?)
        } else {
            Box::new(tcp)
        };
        match tokio_tungstenite::client_async(req, io).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body = resp.body().as_deref().and_then(|b| serde_json::from_slice(b).ok());
                Err(refusal(resp.status().as_u16(), body))
            }
            Err(e) => bail!("WebSocket to {} failed: {e}", self.base),
        }
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
        let status = resp.status().as_u16();
        Err(refusal(status, resp.json().await.ok()))
    }

    pub async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        self.send(req).await?.json().await.context("reading the server's answer")
    }
}

/// A refused request as a message that says what to do.
fn refusal(status: u16, body: Option<ErrorBody>) -> anyhow::Error {
    match body {
        Some(b) if status == 401 => {
            anyhow::anyhow!("{} — check REINS_API_KEY or the key in ~/.config/reins/config.json", b.message)
        }
        Some(b) => anyhow::anyhow!("{} ({})", b.message, b.code),
        None => anyhow::anyhow!("the server answered {status}"),
    }
}
