//! `reins sandbox …`: sandboxes through the API.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use futures_util::StreamExt;
use reins_api::v1::{CreateSandbox, Exec, ExecEvent, ExecResult, Sandbox, SandboxList, SetTimeout, User};
use reqwest::Method;

use crate::client::Client;
use crate::cmd::table::{json_out, print_table, when};

#[derive(Debug, Subcommand)]
pub enum SandboxCmd {
    /// Create a sandbox; prints its id.
    Create {
        #[arg(long)]
        template: Option<String>,
        #[arg(long)]
        cpus: Option<f64>,
        /// Memory limit in MiB.
        #[arg(long)]
        memory_mb: Option<u64>,
        #[arg(long)]
        pids: Option<u32>,
        /// Writable-layer limit in MiB.
        #[arg(long)]
        disk_mb: Option<u64>,
        /// NAME=VALUE (repeatable).
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// KEY=VALUE label (repeatable).
        #[arg(long = "metadata", short = 'm')]
        metadata: Vec<String>,
        /// Seconds until release.
        #[arg(long)]
        timeout: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// List sandboxes.
    Ls {
        /// running, paused, ended (comma-separated).
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
        #[arg(long)]
        json: bool,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
        cmd: Vec<String>,
    },
    /// An interactive shell (needs the PTY WebSocket, not available yet).
    Shell {
        id: String,
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
    Resume {
        id: String,
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
        SandboxCmd::Create { template, cpus, memory_mb, pids, disk_mb, env, metadata, timeout, json } => {
            let body = CreateSandbox {
                template,
                cpus,
                memory_mb,
                pids,
                disk_mb,
                env: pairs(&env, "--env")?,
                metadata: pairs(&metadata, "--metadata")?,
                timeout_secs: timeout,
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
        SandboxCmd::Exec { id, user, cwd, env, timeout, json, cmd } => {
            let body = Exec {
                cmd,
                env: pairs(&env, "--env")?,
                cwd,
                user: if user == "root" { User::Root } else { User::User },
                stdin: if json { None } else { Some(String::new()) },
                timeout_secs: timeout,
            };
            if json {
                let r: ExecResult =
                    c.json(c.request(Method::POST, &format!("/v1/sandboxes/{id}/exec")).json(&body)).await?;
                json_out(&r)?;
                return Ok(exit_byte(r.exit_code));
            }
            return stream_exec(&c, &id, &body).await;
        }
        SandboxCmd::Shell { .. } => {
            bail!("`reins sandbox shell` needs the PTY WebSocket, which is not built yet; use `reins sandbox exec ID -- CMD`, or `reins run -it -- bash` for a local shell")
        }
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

fn exit_byte(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(1)
}

/// Streams an exec's output as it comes (Server-Sent Events).
async fn stream_exec(c: &Client, id: &str, body: &Exec) -> Result<u8> {
    let resp = c.send(c.request(Method::POST, &format!("/v1/sandboxes/{id}/exec/stream")).json(body)).await?;
    let mut bytes = resp.bytes_stream();
    let mut buf = Vec::new();
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some(chunk) = bytes.next().await {
        buf.extend_from_slice(&chunk.context("the stream broke")?);
        while let Some(end) = find(&buf, b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            let data: String = String::from_utf8_lossy(&block)
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect::<Vec<_>>()
                .join("\n");
            if data.is_empty() {
                continue;
            }
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
    }
    bail!("the server ended the stream before the command exited")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
