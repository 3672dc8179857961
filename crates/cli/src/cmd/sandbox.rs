//! `reins sandbox …`: sandboxes through the API.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use futures_util::StreamExt;
use reins_api::v1::{CreateSandbox, Exec, ExecEvent, ExecResult, FileEvent, Sandbox, SandboxList, SetTimeout, User};
use reqwest::Method;

use crate::client::Client;
use crate::cmd::network::NetworkArgs;
use crate::cmd::table::{json_out, print_table, when};

#[derive(Debug, Subcommand)]
pub enum SandboxCmd {
    /// Create a sandbox; prints its id.
    Create {
        #[arg(long)]
        template: Option<String>,
        #[command(flatten)]
        limits: crate::cmd::lifecycle::Shape,
        /// NAME=VALUE (repeatable).
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// KEY=VALUE label (repeatable).
        #[arg(long = "metadata", short = 'm')]
        metadata: Vec<String>,
        /// Seconds until release.
        #[arg(long)]
        timeout: Option<u64>,
        /// Hibernate after this many idle seconds (files kept, memory freed; the next request wakes it).
        #[arg(long)]
        idle_timeout: Option<u64>,
        /// Start from this snapshot's files.
        #[arg(long)]
        snapshot: Option<String>,
        #[command(flatten)]
        network: NetworkArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show a sandbox's network policy, or replace it (new connections follow at once).
    Network {
        id: String,
        #[command(flatten)]
        network: NetworkArgs,
        #[arg(long)]
        json: bool,
    },
    /// A sandbox's logs; `--network`: its connection attempts through the egress proxy.
    Logs {
        id: String,
        #[arg(long, required = true)]
        network: bool,
        #[arg(long)]
        json: bool,
    },
    /// List sandboxes.
    Ls {
        /// running, paused, hibernated, ended (comma-separated).
        #[arg(long)]
        state: Option<String>,
        /// KEY=VALUE filters (repeatable).
        #[arg(long = "metadata", short = 'm')]
        metadata: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one sandbox.
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Run a command; output streams live and the exit code is the command's.
    Exec {
        id: String,
        #[arg(long, default_value = "user", value_parser = ["user", "root"])]
        user: String,
        #[arg(long, short = 'w')]
        cwd: Option<String>,
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// Seconds before the command is killed.
        #[arg(long)]
        timeout: Option<u64>,
        /// Print the buffered result as JSON instead of streaming.
        #[arg(long, conflicts_with = "tty")]
        json: bool,
        /// Run on a terminal (raw mode; Ctrl-C and window changes go to the sandbox).
        #[arg(long, short = 't')]
        tty: bool,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
        cmd: Vec<String>,
    },
    /// An interactive shell on a terminal (`bash -l` unless a COMMAND is given).
    Shell {
        id: String,
        #[arg(long, default_value = "user", value_parser = ["user", "root"])]
        user: String,
        #[arg(long, short = 'w')]
        cwd: Option<String>,
        /// Seconds before the shell is killed (default: the server's exec default, 60).
        #[arg(long)]
        timeout: Option<u64>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
        cmd: Vec<String>,
    },
    /// Print changes below a directory as they happen, until interrupted.
    Watch {
        id: String,
        path: String,
        /// Subdirectories too.
        #[arg(long, short = 'r')]
        recursive: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Copy a file: `reins sandbox cp LOCAL ID:/path` or `reins sandbox cp ID:/path LOCAL`.
    Cp {
        src: String,
        dst: String,
    },
    /// Delete sandboxes.
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    Pause {
        id: String,
    },
    /// Thaw a paused sandbox, or wake a hibernated one.
    Resume {
        id: String,
    },
    /// Hibernate now: files kept, processes ended, memory freed; the next request wakes it.
    Hibernate {
        id: String,
    },
    /// Capture the sandbox's files as a snapshot; prints its id.
    Snapshot {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// A snapshot and N new sandboxes made from it; prints their ids.
    Fork {
        id: String,
        #[arg(long, short = 'n', default_value_t = 1)]
        count: u32,
        /// Seconds until each new sandbox is released.
        #[arg(long)]
        timeout: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Set the time left to SECS seconds from now.
    Timeout {
        id: String,
        secs: u64,
    },
}

fn pairs(items: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|s| {
            let (k, v) = s.split_once('=').with_context(|| format!("{what} `{s}` must be KEY=VALUE"))?;
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn show(sandboxes: &[Sandbox]) {
    let rows = sandboxes
        .iter()
        .map(|s| {
            let meta = s.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            vec![
                s.id.clone(),
                s.template.clone(),
                format!("{:?}", s.state).to_lowercase(),
                format!("{}", s.cpus),
                format!("{}M", s.memory_mb),
                when(s.expires_ms),
                meta,
            ]
        })
        .collect();
    print_table(&["ID", "TEMPLATE", "STATE", "CPUS", "MEMORY", "EXPIRES", "METADATA"], rows);
}

pub async fn run(cmd: SandboxCmd) -> Result<u8> {
    let c = Client::from_env()?;
    match cmd {
        SandboxCmd::Create { template, limits, env, metadata, timeout, idle_timeout, snapshot, network, json } => {
            let body = CreateSandbox {
                template,
                cpus: limits.cpus,
                memory_mb: limits.memory_mb,
                pids: limits.pids,
                disk_mb: limits.disk_mb,
                env: pairs(&env, "--env")?,
                metadata: pairs(&metadata, "--metadata")?,
                timeout_secs: timeout,
                network: network.policy(),
                idle_timeout_secs: idle_timeout,
                snapshot,
            };
            let s: Sandbox = c.json(c.request(Method::POST, "/v1/sandboxes").json(&body)).await?;
            if json {
                json_out(&s)?;
            } else {
                println!("{}", s.id);
            }
        }
        SandboxCmd::Ls { state, metadata, json } => {
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            let meta =
                pairs(&metadata, "--metadata")?.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            loop {
                let mut q: Vec<(&str, String)> = vec![("limit", "1000".into())];
                if let Some(s) = &state {
                    q.push(("state", s.clone()));
                }
                if !meta.is_empty() {
                    q.push(("metadata", meta.clone()));
                }
                if let Some(cur) = &cursor {
                    q.push(("cursor", cur.clone()));
                }
                let page: SandboxList = c.json(c.request(Method::GET, "/v1/sandboxes").query(&q)).await?;
                all.extend(page.items);
                match page.next_cursor {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
            if json {
                json_out(&all)?;
            } else {
                show(&all);
            }
        }
        SandboxCmd::Get { id, json } => {
            let s: Sandbox = c.json(c.request(Method::GET, &format!("/v1/sandboxes/{id}"))).await?;
            if json {
                json_out(&s)?;
            } else {
                show(&[s]);
            }
        }
        SandboxCmd::Exec { id, user, cwd, env, timeout, json, tty, cmd } => {
            let body = Exec {
                cmd,
                env: pairs(&env, "--env")?,
                cwd,
                user: user_of(&user),
                stdin: if json || tty { None } else { Some(String::new()) },
                timeout_secs: timeout,
                pty: None,
            };
            if tty {
                return crate::cmd::shell::run(&c, &id, body).await;
            }
            if json {
                let r: ExecResult =
                    c.json(c.request(Method::POST, &format!("/v1/sandboxes/{id}/exec")).json(&body)).await?;
                json_out(&r)?;
                return Ok(exit_byte(r.exit_code));
            }
            return stream_exec(&c, &id, &body).await;
        }
        SandboxCmd::Shell { id, user, cwd, timeout, cmd } => {
            let cmd = if cmd.is_empty() { vec!["bash".into(), "-l".into()] } else { cmd };
            let body = Exec { cmd, cwd, user: user_of(&user), timeout_secs: timeout, ..Exec::default() };
            return crate::cmd::shell::run(&c, &id, body).await;
        }
        SandboxCmd::Network { id, network, json } => crate::cmd::network::network(&c, &id, &network, json).await?,
        SandboxCmd::Logs { id, network: _, json } => crate::cmd::network::logs(&c, &id, json).await?,
        SandboxCmd::Watch { id, path, recursive, json } => watch(&c, &id, &path, recursive, json).await?,
        SandboxCmd::Cp { src, dst } => crate::cmd::cp::run(&c, &src, &dst).await?,
        SandboxCmd::Rm { ids } => {
            for id in ids {
                c.send(c.request(Method::DELETE, &format!("/v1/sandboxes/{id}")))
                    .await
                    .with_context(|| format!("deleting {id}"))?;
                println!("{id}");
            }
        }
        SandboxCmd::Pause { id } => {
            let _: Sandbox = c.json(c.request(Method::POST, &format!("/v1/sandboxes/{id}/pause"))).await?;
        }
        SandboxCmd::Resume { id } => {
            let _: Sandbox = c.json(c.request(Method::POST, &format!("/v1/sandboxes/{id}/resume"))).await?;
        }
        SandboxCmd::Hibernate { id } => {
            let s: Sandbox = c.json(c.request(Method::POST, &format!("/v1/sandboxes/{id}/hibernate"))).await?;
            println!("{} {}", s.id, format!("{:?}", s.state).to_lowercase());
        }
        SandboxCmd::Snapshot { id, json } => crate::cmd::lifecycle::snapshot(&c, &id, json).await?,
        SandboxCmd::Fork { id, count, timeout, json } => {
            crate::cmd::lifecycle::fork(&c, &id, count, timeout, json).await?
        }
        SandboxCmd::Timeout { id, secs } => {
            let s: Sandbox = c
                .json(
                    c.request(Method::POST, &format!("/v1/sandboxes/{id}/timeout"))
                        .json(&SetTimeout { timeout_secs: secs }),
                )
                .await?;
            println!("{} expires {}", s.id, when(s.expires_ms));
        }
    }
    Ok(0)
}

fn user_of(name: &str) -> User {
    if name == "root" {
        User::Root
    } else {
        User::User
    }
}

/// Prints a directory's changes (Server-Sent Events) until interrupted.
async fn watch(c: &Client, id: &str, path: &str, recursive: bool, json: bool) -> Result<()> {
    let q = [("path", path.to_owned()), ("recursive", recursive.to_string())];
    let resp = c.send(c.request(Method::GET, &format!("/v1/sandboxes/{id}/files/watch")).query(&q)).await?;
    if std::io::stderr().is_terminal() {
        eprintln!("watching {path} in {id} (Ctrl-C to stop)");
    }
    let mut events = Box::pin(sse_events(resp));
    while let Some(ev) = events.next().await {
        let (name, data) = ev?;
        if name == "error" {
            bail!("the watch ended: {data}");
        }
        if json {
            println!("{data}");
        } else if let Ok(ev) = serde_json::from_str::<FileEvent>(&data) {
            println!("{:<7} {}", format!("{:?}", ev.kind).to_lowercase(), ev.path);
        }
    }
    bail!("the server ended the watch (the sandbox is gone?)")
}

/// The (event name, data) pairs of a Server-Sent Events body.
fn sse_events(resp: reqwest::Response) -> impl futures_util::Stream<Item = Result<(String, String)>> {
    let state = (resp.bytes_stream(), Vec::<u8>::new());
    futures_util::stream::unfold(state, |(mut bytes, mut buf)| async move {
        loop {
            if let Some(end) = find(&buf, b"\n\n") {
                let block: Vec<u8> = buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block).into_owned();
                let field = |name: &str| {
                    text.lines()
                        .filter_map(|l| l.strip_prefix(name))
                        .map(str::trim_start)
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                let data = field("data:");
                if data.is_empty() {
                    continue;
                }
                return Some((Ok((field("event:"), data)), (bytes, buf)));
            }
            match bytes.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Some((Err(anyhow::anyhow!("the stream broke: {e}")), (bytes, Vec::new()))),
                None => return None,
            }
        }
    })
}

/// A command's exit code as this process's exit code.
pub fn exit_byte(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(1)
}

/// Streams an exec's output as it comes (Server-Sent Events).
async fn stream_exec(c: &Client, id: &str, body: &Exec) -> Result<u8> {
    let resp = c.send(c.request(Method::POST, &format!("/v1/sandboxes/{id}/exec/stream")).json(body)).await?;
    let mut events = Box::pin(sse_events(resp));
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some(ev) = events.next().await {
        let (_, data) = ev?;
        match serde_json::from_str::<ExecEvent>(&data).context("bad event from the server")? {
            ExecEvent::Start { .. } => {}
            ExecEvent::Stdout { data } => {
                out.write_all(data.as_bytes())?;
                out.flush()?;
            }
            ExecEvent::Stderr { data } => {
                err.write_all(data.as_bytes())?;
                err.flush()?;
            }
            ExecEvent::Exit { exit_code, timed_out, .. } => {
                if timed_out && std::io::stderr().is_terminal() {
                    eprintln!("reins: the command ran out of time");
                }
                return Ok(if timed_out { 124 } else { exit_byte(exit_code) });
            }
            ExecEvent::Error { code, message } => bail!("{message} ({code})"),
        }
    }
    bail!("the server ended the stream before the command exited")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
