//! `reins sandbox cp`: upload and download with progress.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use crate::client::Client;

/// `ID:/path` → (ID, /path).
fn remote(s: &str) -> Option<(&str, &str)> {
    let (id, path) = s.split_once(':')?;
    (!id.is_empty() && !id.contains('/') && path.starts_with('/')).then_some((id, path))
}

struct Progress {
    on: bool,
    total: Option<u64>,
    done: u64,
    last: std::time::Instant,
}

impl Progress {
    fn new(total: Option<u64>) -> Self {
        Self { on: std::io::stderr().is_terminal(), total, done: 0, last: std::time::Instant::now() }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        if self.on && self.last.elapsed().as_millis() >= 100 {
            self.last = std::time::Instant::now();
            self.draw();
        }
    }

    fn draw(&self) {
        let mib = self.done as f64 / 1048576.0;
        match self.total {
            Some(t) if t > 0 => {
                let pct = self.done * 100 / t;
                let bar = "#".repeat((pct / 4) as usize);
                eprint!("\r[{bar:<25}] {pct:>3}% {mib:.1} MiB");
            }
            _ => eprint!("\r{mib:.1} MiB"),
        }
    }

    fn finish(&self) {
        if self.on {
            self.draw();
            eprintln!();
        }
    }
}

pub async fn run(c: &Client, src: &str, dst: &str) -> Result<()> {
    match (remote(src), remote(dst)) {
        (None, Some((id, path))) => upload(c, Path::new(src), id, path).await,
        (Some((id, path)), None) => download(c, id, path, Path::new(dst)).await,
        _ => bail!("give one local path and one ID:/absolute/path, such as `reins sandbox cp notes.txt abc123:/home/user/notes.txt`"),
    }
}

async fn upload(c: &Client, local: &Path, id: &str, path: &str) -> Result<()> {
    let (body, len) = file_body(local).await?;
    let req = c
        .request(Method::PUT, &format!("/v1/sandboxes/{id}/files"))
        .query(&[("path", path)])
        .header("content-length", len)
        .body(body);
    c.send(req).await?;
    Ok(())
}

/// A local file as a streamed request body that draws a progress bar on a
/// terminal as it is sent; and its length.
pub async fn file_body(local: &Path) -> Result<(reqwest::Body, u64)> {
    let file = tokio::fs::File::open(local).await.with_context(|| format!("opening {}", local.display()))?;
    let len = file.metadata().await?.len();
    let mut progress = Progress::new(Some(len));
    let stream = chunks(file).map(move |chunk| {
        if let Ok(c) = &chunk {
            progress.add(c.len() as u64);
            if progress.done == len {
                progress.finish();
            }
        }
        chunk
    });
    Ok((reqwest::Body::wrap_stream(stream), len))
}

/// A file as a stream of 256 KiB chunks.
fn chunks(file: tokio::fs::File) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

async fn download(c: &Client, id: &str, path: &str, local: &Path) -> Result<()> {
    let resp = c.send(c.request(Method::GET, &format!("/v1/sandboxes/{id}/files")).query(&[("path", path)])).await?;
    let tmp = local.with_extension("reins-part");
    let mut out = tokio::fs::File::create(&tmp).await.with_context(|| format!("creating {}", tmp.display()))?;
    let mut progress = Progress::new(resp.content_length());
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the download broke off")?;
        out.write_all(&chunk).await?;
        progress.add(chunk.len() as u64);
    }
    out.flush().await?;
    progress.finish();
    tokio::fs::rename(&tmp, local).await.with_context(|| format!("writing {}", local.display()))?;
    Ok(())
}
