//! `reins template ls|import|rm`.

use std::io::Write;
use std::path::{Path, PathBuf};

use std::io::IsTerminal;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use reins_api::v1::{self, List};
use reins_sandbox::template::Templates;
use reqwest::Method;

use crate::client::{Client, ClientConfig};
use crate::cmd::table::{json_out, print_table};

/// `reins template [--local] …`
#[derive(Debug, clap::Args)]
pub struct TemplateArgs {
    /// Manage this machine's data directory instead of the configured server's nodes.
    #[arg(long, global = true)]
    local: bool,
    #[command(subcommand)]
    cmd: TemplateCmd,
}

#[derive(Debug, Subcommand)]
pub enum TemplateCmd {
    /// List templates.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Import a root file system from a directory, an OCI image archive or layout, or a `docker save` archive
    /// (through a server: an archive, uploaded with progress and imported on every node).
    Import {
        source: PathBuf,
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a template.
    Rm { name: String },
}

/// Through the configured server (`REINS_URL`, or the config `reins up`
/// wrote) when there is one, else on this machine's data directory.
pub async fn run(data_dir: Option<&Path>, args: TemplateArgs) -> Result<u8> {
    if !args.local && ClientConfig::resolve().is_ok() {
        return remote(&Client::from_env()?, args.cmd).await;
    }
    let data_dir = data_dir.context("no data directory: set --data-dir or XDG_DATA_HOME")?;
    let store = Templates::open(data_dir.join("templates"))?;
    match args.cmd {
        TemplateCmd::Ls { json } => ls(&store, json),
        TemplateCmd::Import { source, name, json: _ } => import(&store, &source, &name),
        TemplateCmd::Rm { name } => {
            store.remove(&name)?;
            println!("removed {name}");
            Ok(0)
        }
    }
}

async fn remote(c: &Client, cmd: TemplateCmd) -> Result<u8> {
    match cmd {
        TemplateCmd::Ls { json } => {
            let list: List<v1::Template> = c.json(c.request(Method::GET, "/v1/templates")).await?;
            if json {
                json_out(&list.items)?;
            } else {
                let rows = list.items.into_iter().map(|t| vec![t.name, short(&t.digest)]).collect();
                print_table(&["NAME", "DIGEST"], rows);
            }
        }
        TemplateCmd::Import { source, name, json } => {
            if source.is_dir() {
                bail!(
                    "{} is a directory: through a server, import an OCI or `docker save` archive \
                     (`tar -C DIR -cf image.tar .` for an OCI layout), or use `reins template --local import` on the node",
                    source.display()
                );
            }
            let (body, len) = crate::cmd::cp::file_body(&source).await?;
            let req = c.request(Method::PUT, &format!("/v1/templates/{name}")).header("content-length", len).body(body);
            if std::io::stderr().is_terminal() {
                eprintln!("uploading {} to {} …", source.display(), c.base);
            }
            let t: v1::Template = c.json(req).await.with_context(|| format!("importing {}", source.display()))?;
            if json {
                json_out(&t)?;
            } else {
                println!("{} {}", t.name, t.digest);
            }
        }
        TemplateCmd::Rm { name } => {
            c.send(c.request(Method::DELETE, &format!("/v1/templates/{name}"))).await?;
            println!("removed {name}");
        }
    }
    Ok(0)
}

fn short(digest: &str) -> String {
    digest.trim_start_matches("sha256:").chars().take(12).collect()
}

fn ls(store: &Templates, json: bool) -> Result<u8> {
    // The base template is always available; make sure it is listed.
    store.resolve(reins_sandbox::template::BASE)?;
    let list = store.list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    println!("{:<24} {:<14} {:>10}  SOURCE", "NAME", "DIGEST", "SIZE");
    for t in list {
        println!("{:<24} {:<14} {:>10}  {}", t.name, &t.digest[..12], human(t.size_bytes), t.source);
    }
    Ok(0)
}

fn import(store: &Templates, source: &Path, name: &str) -> Result<u8> {
    let t = if source.is_dir() && !source.join("oci-layout").exists() {
        eprintln!("copying {} …", source.display());
        store.import_dir(source, name)?
    } else {
        let mut last = 0usize;
        let mut report = |p: reins_sandbox::template::oci::Progress| {
            if p.layer != last || p.bytes % (8 << 20) < 65536 {
                last = p.layer;
                eprint!("\rlayer {}/{}  {}   ", p.layer, p.layers, human(p.bytes));
                let _ = std::io::stderr().flush();
            }
        };
        let t =
            store.import_oci(source, name, &mut report).with_context(|| format!("importing {}", source.display()))?;
        eprintln!();
        t
    };
    println!("{} {}", t.name, t.digest);
    Ok(0)
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}
