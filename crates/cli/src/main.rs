//! `reins`: the single Reins binary. Today it runs sandboxes locally
//! (`reins run`), manages templates and benchmarks the runtime; the same
//! binary also serves as the sandbox helper (see `reins_sandbox::maybe_run_helper`).

mod bench;
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
    /// Run a command in a fresh sandbox and remove the sandbox afterwards.
    Run(cmd::run::RunArgs),
    /// Manage templates (root file systems of sandboxes).
    #[command(subcommand)]
    Template(cmd::template::TemplateCmd),
    /// Remove what idle sandbox slots keep for reuse (cgroup directories, skeleton layers, locks).
    Cleanup {
        #[arg(long)]
        json: bool,
    },
    /// Measure the runtime.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
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
            Command::Run(args) => cmd::run::run(&data_dir?, args).await,
            Command::Template(t) => cmd::template::run(&data_dir?, t).await,
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
