//! The service as its users see it: `reins up` (and `reins server` +
//! `reins node`) started as real processes, driven over real HTTP.

mod agents;
mod auth;
mod cluster;
mod direct;
mod e2b;
mod elastic;
mod ingress;
mod input;
mod interactive;
mod network;
mod sandboxes;
mod upstream;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::reins_bin;

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A unique tag for cgroup group and run directory names.
pub fn tag() -> String {
    format!("api{}-{}", std::process::id(), SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// A free loopback port for a service that must bind the same port again
/// after a restart. It lies below the kernel's ephemeral range (32768 and
/// up), so no outgoing connection of another test can take it meanwhile.
pub fn reusable_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = std::process::id().wrapping_mul(97).wrapping_add(seq.wrapping_mul(7919));
    (0..SPAN)
        .map(|i| (LOW + start.wrapping_add(i) % SPAN) as u16)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port in 20000..32000")
}

/// A running `reins` service process with its own data dir, cgroups and run dir.
pub struct Service {
    pub child: Child,
    pub url: String,
    pub admin_key: Option<String>,
    pub gateway: Option<String>,
    pub log: Arc<Mutex<String>>,
}

/// Environment that keeps a test's services apart from others.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub tag: String,
}

impl Env {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir"), tag: tag() }
    }

    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self, data: &Path) -> Command {
        let mut c = Command::new(reins_bin());
        c.arg("--data-dir")
            .arg(data)
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("REINS_RUN_DIR", Path::new("/run/reins-test").join(&self.tag))
            .env("REINS_CGROUP", format!("reins-test-{}", self.tag))
            .env("REINS_EMBRYOS", "0")
            .env_remove("REINS_URL")
            .env_remove("REINS_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Starts `reins up` on a free loopback port in data dir `name`.
    pub async fn up(&self, name: &str, extra: &[&str]) -> Service {
        let mut c = self.command(&self.data(name));
        c.args(["up", "--listen", "127.0.0.1:0"]).args(extra);
        Service::spawn(c, "Reins is up at ").await
    }

    /// Processes still in this test's sandbox cgroups.
    pub fn sandbox_processes(&self) -> Vec<String> {
        let group = Path::new("/sys/fs/cgroup/pids").join(format!("reins-test-{}", self.tag));
        let mut procs = Vec::new();
        for slot in std::fs::read_dir(&group).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default() {
            let p = std::fs::read_to_string(slot.path().join("cgroup.procs")).unwrap_or_default();
            procs.extend(p.lines().map(str::to_owned));
        }
        procs
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(cgroups) = reins_sandbox::Cgroups::detect(&format!("reins-test-{}", self.tag)) {
            super::remove_cgroups(&cgroups);
        }
        let _ = std::fs::remove_dir_all(Path::new("/run/reins-test").join(&self.tag));
    }
}

impl Service {
    /// Spawns `c`, waits for its announcement, then until a node is connected.
    pub async fn spawn(c: Command, ready: &str) -> Self {
        let s = Self::spawn_unready(c, ready).await;
        s.wait_ready().await;
        s
    }

    /// Spawns `c` and waits until stdout announces `ready` followed by the URL.
    pub async fn spawn_unready(mut c: Command, ready: &str) -> Self {
        let mut child = c.spawn().expect("reins starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let (key_tx, mut key_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
        let log2 = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let t = line.trim();
                if t.starts_with("reins_") {
                    let _ = key_tx.send(("key".into(), t.to_owned()));
                }
                if let Some(gw) = t.strip_prefix("node gateway: ") {
                    let _ = key_tx.send(("gateway".into(), gw.to_owned()));
                }
                log2.lock().expect("log").push_str(&format!("{line}\n"));
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = stdout.next_line().await {
                if let Some(rest) = line.strip_prefix(ready) {
                    return rest.split_whitespace().next().map(str::to_owned);
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(url) = url else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            panic!("service did not start; its log:\n{}", log.lock().expect("log"));
        };
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        // The banner lines on stderr follow the URL closely.
        let (mut admin_key, mut gateway) = (None, None);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some((k, v))) = tokio::time::timeout_at(deadline, key_rx.recv()).await {
            match k.as_str() {
                "key" => admin_key = Some(v),
                _ => gateway = Some(v),
            }
        }
        Self { child, url, admin_key, gateway, log }
    }

    /// Waits until `/readyz` says a node is connected.
    pub async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = http.get(format!("{}/readyz", self.url)).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("service never became ready; log:\n{}", self.log.lock().expect("log"));
    }

    pub fn key(&self) -> &str {
        self.admin_key.as_deref().expect("admin key printed at first start")
    }

    pub fn api(&self, key: &str) -> Api {
        Api { http: reqwest::Client::new(), url: self.url.clone(), key: key.to_owned() }
    }

    pub fn admin(&self) -> Api {
        self.api(self.key())
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("pid") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await.expect("exits in time").expect("wait")
    }

    /// Sends SIGKILL and reaps it.
    pub async fn kill9(mut self) {
        self.child.kill().await.expect("kill");
    }
}

/// An API client with a key.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub url: String,
    pub key: String,
}

impl Api {
    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.key)
    }

    /// Sends and returns (status, JSON body or Null).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self.req(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method.clone(), path, body).await;
        assert!(s.is_success(), "{method} {path}: {s} {v}");
        v
    }

    pub async fn create(&self, body: Value) -> String {
        let v = self.ok(Method::POST, "/v1/sandboxes", Some(body)).await;
        v["id"].as_str().expect("id").to_owned()
    }

    pub async fn exec(&self, id: &str, cmd: &[&str]) -> Value {
        self.ok(Method::POST, &format!("/v1/sandboxes/{id}/exec"), Some(serde_json::json!({ "cmd": cmd }))).await
    }
}

/// Asserts an error answer: status and `code`, with a message.
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert_eq!(got.1["code"], code, "body: {}", got.1);
    assert!(got.1["message"].as_str().is_some_and(|m| !m.is_empty()), "message missing: {}", got.1);
}

/// Runs the `reins` CLI against this test's `reins up` (through the config it wrote).
async fn cli(env: &Env, args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut c = tokio::process::Command::new(crate::suite::reins_bin());
    c.args(args)
        .env("XDG_CONFIG_HOME", env.dir.path().join("config"))
        .env_remove("REINS_URL")
        .env_remove("REINS_API_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("reins");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).await.expect("stdin");
    drop(input);
    let o =
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.expect("in time").expect("reins");
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}
