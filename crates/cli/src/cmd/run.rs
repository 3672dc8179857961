//! `reins run`: one command in a fresh sandbox, streamed, then nothing left.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use reins_sandbox::{Error, Exec, ExecEvent, ExecRequest, User};
use reins_types::{
    parse_duration, parse_size, CpuQuota, EnvVar, Limits, NetMode, NetworkPolicy, SandboxNetwork, SandboxSpec, Volume,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cmd::term::{next_winch, terminal_size, winch, RawMode};
use crate::config;

/// Exit code after the sandbox's timeout, as `timeout(1)` uses.
const TIMED_OUT: u8 = 124;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Template (root file system) to start from.
    #[arg(long, default_value = "base")]
    template: String,
    /// Memory limit, such as 512M or 2G.
    #[arg(long, default_value = "512M", value_parser = size)]
    memory: u64,
    /// CPU limit in CPUs, such as 0.5 or 2.
    #[arg(long, default_value = "1", value_parser = cpus, allow_hyphen_values = true)]
    cpus: CpuQuota,
    /// Most processes at once.
    #[arg(long, default_value_t = 256)]
    pids: u32,
    /// Size of the writable layer, such as 1G.
    #[arg(long, default_value = "1G", value_parser = size)]
    disk: u64,
    /// Kill the sandbox after this long (exit code 124), such as 30s or 5m.
    #[arg(long, value_parser = duration)]
    timeout: Option<Duration>,
    /// Environment variable NAME=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<EnvVar>,
    /// Working directory inside the sandbox (default: the user's home).
    #[arg(long, short = 'w')]
    workdir: Option<String>,
    /// Bind a host directory: `HOST:SANDBOX[:ro]` (repeatable).
    #[arg(long = "volume", short = 'v')]
    volumes: Vec<Volume>,
    /// Run as `user` (uid 1000, default) or `root` (uid 0 of the sandbox, no capabilities).
    #[arg(long, default_value = "user", value_parser = user)]
    user: User,
    /// Forward stdin to the command.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Run on a terminal (raw mode, resize and Ctrl-C go to the sandbox).
    #[arg(short = 't', long)]
    tty: bool,
    #[command(flatten)]
    network: crate::cmd::network::NetworkArgs,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| format!("{e}; write a size such as 512M or 1G"))
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| format!("{e}; write a duration such as 30s or 5m"))
}

fn cpus(s: &str) -> Result<CpuQuota, String> {
    CpuQuota::parse(s).map_err(|e| e.to_string())
}

fn user(s: &str) -> Result<User, String> {
    match s {
        "user" => Ok(User::User),
        "root" => Ok(User::Root),
        _ => Err(format!("unknown user `{s}`: use `user` or `root`")),
    }
}

impl RunArgs {
    fn spec(&self) -> SandboxSpec {
        SandboxSpec {
            template: self.template.clone(),
            limits: Limits { memory_bytes: self.memory, cpu: self.cpus, pids: self.pids, disk_bytes: self.disk },
            env: self.env.clone(),
            volumes: self.volumes.clone(),
            timeout: self.timeout,
            layers: Vec::new(),
        }
    }
}

/// The policy the flags ask for; `none` without flags.
fn policy(args: &RunArgs) -> Result<NetworkPolicy> {
    let Some(n) = args.network.policy() else { return Ok(NetworkPolicy::default()) };
    if !n.secrets.is_empty() {
        bail!("--secret needs a Reins server (secrets are stored there): use `reins sandbox create --secret …`");
    }
    if n.direct {
        bail!("--direct needs a Reins server (its node manages the host's interfaces and rules): use `reins up` and `reins sandbox create --direct …`");
    }
    let mode = NetMode::parse(&n.mode).context("unknown --network mode")?;
    Ok(NetworkPolicy::parse(mode, &n.allow, &n.deny)?)
}

/// Refusals are answered to the program itself (HTTP 403 with the reason).
struct Quiet;

impl reins_net::AuditSink for Quiet {
    fn record(&self, _sandbox: &str, _event: reins_types::NetEvent) {}
}

/// Serves the sandbox's egress proxy under `policy`; the environment that points at it.
async fn egress(
    sandbox: &reins_sandbox::Sandbox,
    policy: NetworkPolicy,
) -> Result<Option<(tokio::task::JoinHandle<()>, Vec<(String, String)>)>> {
    if policy.mode == NetMode::None {
        return Ok(None);
    }
    let egress =
        reins_net::Egress::new(reins_net::EgressOptions::default(), Arc::new(Quiet)).map_err(anyhow::Error::msg)?;
    let listener = sandbox.listen_tcp(reins_net::PROXY_ADDR).await.context("starting the egress proxy")?;
    let settings = Arc::new(SandboxNetwork { policy, credentials: Vec::new() });
    // The sender may go: the proxy keeps the last settings.
    let (_tx, rx) = tokio::sync::watch::channel(settings);
    Ok(Some((egress.serve(sandbox.id().to_owned(), listener, rx), reins_net::proxy_env())))
}

pub async fn run(data_dir: &Path, args: RunArgs) -> Result<u8> {
    let spec = args.spec();
    spec.limits.validate()?;
    let policy = policy(&args)?;
    // One sandbox: nothing to prepare ahead.
    let rt = config::runtime(data_dir, 1, 0)?;
    let sandbox = rt.create(&spec).await.context("creating the sandbox")?;
    let (proxy, env) = match egress(&sandbox, policy).await {
        Ok(Some((task, env))) => (Some(task), env),
        Ok(None) => (None, Vec::new()),
        Err(e) => {
            sandbox.destroy().await;
            return Err(e);
        }
    };
    let tty = args.tty && std::io::stdin().is_terminal();
    let pty = args.tty.then(|| terminal_size().unwrap_or((80, 24)));
    let req = ExecRequest { argv: args.command.clone(), env, cwd: args.workdir.clone(), user: args.user, pty };
    let result = match sandbox.exec(req).await {
        Ok(exec) => drive(exec, args.interactive || args.tty, tty).await,
        Err(e) => Err(e),
    };
    let timed_out = sandbox.timed_out();
    if let Some(task) = proxy {
        task.abort();
    }
    sandbox.destroy().await;
    match result {
        Ok(code) => Ok(code),
        Err(Error::Timeout) => Ok(TIMED_OUT),
        Err(Error::Gone) if timed_out => Ok(TIMED_OUT),
        Err(e) => Err(e).context("running the command"),
    }
}

/// Streams output (and stdin) until the command exits; returns its shell exit code.
async fn drive(mut exec: Exec, forward_stdin: bool, raw: bool) -> Result<u8, Error> {
    let _raw = raw.then(RawMode::enable).flatten();
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    let mut stdin = tokio::io::stdin();
    let mut stdin_open = forward_stdin;
    if !forward_stdin {
        exec.close_stdin().await?;
    }
    let mut winch = winch();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        tokio::select! {
            ev = exec.next() => match ev? {
                Some(ExecEvent::Stdout(d)) => { let _ = out.write_all(&d).await; let _ = out.flush().await; }
                Some(ExecEvent::Stderr(d)) => { let _ = err.write_all(&d).await; let _ = err.flush().await; }
                Some(ExecEvent::Exit(status)) => return Ok(status.shell_code().clamp(0, 255) as u8),
                None => return Err(Error::Gone),
            },
            n = stdin.read(&mut buf), if stdin_open => match n {
                Ok(0) | Err(_) => { stdin_open = false; exec.close_stdin().await?; }
                Ok(n) => exec.write_stdin(&buf[..n]).await?,
            },
            () = next_winch(&mut winch), if raw => {
                if let Some((cols, rows)) = terminal_size() { exec.resize(cols, rows).await?; }
            }
        }
    }
}
