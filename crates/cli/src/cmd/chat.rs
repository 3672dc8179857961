//! `reins chat AGENT`: talk to an agent. Each line is a message; the answer
//! streams as it is written, tool calls and their results are shown, an
//! approval is asked for inline, and Ctrl-C cancels the running turn.

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result};
use clap::Args;
use futures_util::StreamExt;
use reins_api::agent::{Session, SessionEvent, Turn};
use reins_harness::model::sse::SseParser;
use reqwest::Method;
use serde_json::json;
use tokio::sync::mpsc;

use crate::client::Client;
use crate::cmd::agent::{answer, describe};

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The agent's name or id.
    agent: String,
    /// Continue this session instead of starting one.
    #[arg(long)]
    session: Option<String>,
}

/// Lines of stdin, read on a thread of their own.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn prompt(text: &str) {
    if std::io::stdin().is_terminal() {
        print!("{text}");
        let _ = std::io::stdout().flush();
    }
}

pub async fn chat(args: ChatArgs) -> Result<u8> {
    let c = Client::from_env()?;
    let session = match args.session {
        Some(s) => s,
        None => {
            let s: Session = c.json(c.request(Method::POST, &format!("/v1/agents/{}/sessions", args.agent))).await?;
            eprintln!("session {} (continue it later with --session {})", s.id, s.id);
            s.id
        }
    };
    let mut lines = stdin_lines();
    loop {
        prompt("you> ");
        let Some(line) = lines.recv().await else { break };
        if line.trim().is_empty() {
            continue;
        }
        let key = format!("chat-{}", rand_key());
        let body = json!({"content": line, "idempotency_key": key});
        let turn: Turn =
            c.json(c.request(Method::POST, &format!("/v1/sessions/{session}/messages")).json(&body)).await?;
        follow_turn(&c, &session, turn.turn, &mut lines).await?;
    }
    Ok(0)
}

fn rand_key() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{t:x}{:x}", std::process::id())
}

/// Streams the turn's events until it finishes, answering approvals from `lines`.
async fn follow_turn(c: &Client, session: &str, turn: i64, lines: &mut mpsc::Receiver<String>) -> Result<()> {
    let resp = c.send(c.request(Method::GET, &format!("/v1/sessions/{session}/events/stream?after={turn}"))).await?;
    let mut body = resp.bytes_stream();
    let mut parser = SseParser::default();
    let mut streaming = false;
    let mut cancelled = false;
    loop {
        let chunk = tokio::select! {
            c = body.next() => c,
            _ = tokio::signal::ctrl_c(), if !cancelled => {
                cancelled = true;
                eprintln!("\n(cancelling the turn…)");
                c.send(c.request(Method::POST, &format!("/v1/sessions/{session}/cancel"))).await?;
                continue;
            }
        };
        let Some(chunk) = chunk else {
            anyhow::bail!("the event stream ended before the turn did; see `reins session show {session}`")
        };
        for ev in parser.feed(&chunk.context("reading the event stream")?).map_err(anyhow::Error::msg)? {
            if ev.event == "text_delta" {
                let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
                print!("{}{}", if streaming { "" } else { "agent> " }, v["text"].as_str().unwrap_or_default());
                let _ = std::io::stdout().flush();
                streaming = true;
                continue;
            }
            let Ok(e) = serde_json::from_str::<SessionEvent>(&ev.data) else { continue };
            if e.kind == "model_response" && streaming {
                println!();
                streaming = false;
            } else if let Some(line) = describe(&e) {
                println!("{line}");
            }
            match e.kind.as_str() {
                "approval_requested" => {
                    let id = e.data["approval_id"].as_str().unwrap_or_default().to_owned();
                    prompt(&format!("approve `{}`? [y/N] ", e.data["command"].as_str().unwrap_or_default()));
                    let yes = lines.recv().await.is_some_and(|l| matches!(l.trim(), "y" | "Y" | "yes"));
                    answer(c, session, &id, yes, None).await?;
                }
                "turn_finished" => return Ok(()),
                _ => {}
            }
        }
    }
}
