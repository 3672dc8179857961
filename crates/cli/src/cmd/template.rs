//! `reins template ls|import|rm`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use reins_sandbox::template::Templates;

#[derive(Debug, Subcommand)]
pub enum TemplateCmd {
    /// List templates.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Import a root file system from a directory, an OCI image archive or layout, or a `docker save` archive.
    Import { source: PathBuf, name: String },
    /// Remove a template.
    Rm { name: String },
}

pub async fn run(data_dir: &Path, cmd: TemplateCmd) -> Result<u8> {
    let store = Templates::open(data_dir.join("templates"))?;
    match cmd {
        TemplateCmd::Ls { json } => ls(&store, json),
        TemplateCmd::Import { source, name } => import(&store, &source, &name),
        TemplateCmd::Rm { name } => {
            store.remove(&name)?;
            println!("removed {name}");
            Ok(0)
        }
    }
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
