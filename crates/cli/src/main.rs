//! `reins`: the single Reins binary. It runs the services (`reins up`,
//! `reins server`, `reins node`), talks to them (`reins sandbox|key|tenant`,
//! `reins agent|chat|session|skill`),
//! runs sandboxes locally without a server (`reins run`), manages templates
//! and benchmarks; the same binary also serves as the sandbox helper (see
//! `reins_sandbox::maybe_run_helper`).

mod bench;
mod bench_agent;
mod bench_api;
mod bench_direct;
mod bench_e2b;
mod bench_idle;
mod bench_lifecycle;
mod bench_net;
mod client;
mod cmd;
mod config;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code when Reins itself fails (bad input, broken host), as opposed to the command.
pub const REINS_FAILED: u8 = 125;

#[derive(Debug, Parser)]
#[command(name = "reins", version, about = "Reins: a self-hosted harness for AI agents")]
struct Cli {
    /// Data directory (templates, runtime state). Default: $XDG_DATA_HOME/reins.
    #[arg(long, global = true, env = "REINS_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane and a local node, with embedded defaults.
    Up(cmd::serve::UpArgs),
    /// Run the control plane alone (nodes join it).
    Server(cmd::serve::ServerArgs),
    /// Run an execution node (`--join URL --token T`), or manage nodes.
    Node(NodeTop),
    /// Sandboxes on a Reins server.
    #[command(subcommand)]
    Sandbox(cmd::sandbox::SandboxCmd),
    /// Snapshots of sandboxes' files.
    #[command(subcommand)]
    Snapshot(cmd::lifecycle::SnapshotCmd),
    /// Warm pools: sandboxes started ahead per template and shape (admin).
    #[command(subcommand)]
    Pool(cmd::lifecycle::PoolCmd),
    /// API keys.
    #[command(subcommand)]
    Key(cmd::admin::KeyCmd),
    /// Tenants (admin).
    #[command(subcommand)]
    Tenant(cmd::admin::TenantCmd),
    /// Secrets the egress proxy adds to sandboxes' requests (values never enter a sandbox).
    #[command(subcommand)]
    Secret(cmd::network::SecretCmd),
    /// Agents: their model, tools, skills, sandbox and approval policy.
    #[command(subcommand)]
    Agent(Box<cmd::agent::AgentCmd>),
    /// Talk to an agent: the answer streams, tool calls show, approvals are asked inline.
    Chat(cmd::chat::ChatArgs),
    /// Agent sessions: transcripts and approvals.
    #[command(subcommand)]
    Session(cmd::agent::SessionCmd),
    /// Skill bundles agents mount read-only at /skills/NAME.
    #[command(subcommand)]
    Skill(cmd::agent::SkillCmd),
    /// Run a command in a fresh sandbox and remove the sandbox afterwards.
    Run(cmd::run::RunArgs),
    /// Manage templates (root file systems of sandboxes).
    Template(cmd::template::TemplateArgs),
    /// Remove what idle sandbox slots keep for reuse (cgroup directories, skeleton layers, locks).
    Cleanup {
        #[arg(long)]
        json: bool,
    },
    /// Print the OpenAPI document of the API.
    #[command(hide = true)]
    Openapi,
    /// Measure the runtime.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct NodeTop {
    #[command(subcommand)]
    cmd: Option<cmd::admin::NodeAdminCmd>,
    #[command(flatten)]
    run: cmd::serve::NodeArgs,
}

fn main() -> ExitCode {
    reins_sandbox::maybe_run_helper();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("REINS_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("reins: cannot start the async runtime: {e}");
            return ExitCode::from(REINS_FAILED);
        }
    };
    let data_dir = config::data_dir(cli.data_dir);
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Openapi => {
                println!("{}", serde_json::to_string_pretty(&reins_server::openapi_document())?);
                Ok(0)
            }
            Command::Up(args) => cmd::serve::up(&data_dir?, args).await,
            Command::Server(args) => cmd::serve::server(&data_dir?, args).await,
            Command::Node(NodeTop { cmd: Some(c), .. }) => cmd::admin::node(c).await,
            Command::Node(NodeTop { cmd: None, run }) => cmd::serve::node(&data_dir?, run).await,
            Command::Sandbox(c) => cmd::sandbox::run(c).await,
            Command::Snapshot(c) => cmd::lifecycle::run_snapshot(c).await,
            Command::Pool(c) => cmd::lifecycle::run_pool(c).await,
            Command::Key(c) => cmd::admin::key(c).await,
            Command::Tenant(c) => cmd::admin::tenant(c).await,
            Command::Secret(c) => cmd::network::secret(c).await,
            Command::Agent(c) => cmd::agent::agent(*c).await,
            Command::Chat(args) => cmd::chat::chat(args).await,
            Command::Session(c) => cmd::agent::session(c).await,
            Command::Skill(c) => cmd::agent::skill(c).await,
            Command::Run(args) => cmd::run::run(&data_dir?, args).await,
            Command::Template(t) => cmd::template::run(data_dir.as_deref().ok(), t).await,
            Command::Bench(b) => bench::run(&data_dir?, b).await,
            Command::Cleanup { json } => cmd::cleanup::run(&data_dir?, json),
        }
    });
    // A blocking read of stdin may still be pending; do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("reins: {e:#}");
            ExitCode::from(REINS_FAILED)
        }
    }
}
