//! Interactive commands over the API's WebSocket (`/v1/sandboxes/{id}/exec/ws`):
//! `reins sandbox shell` and `reins sandbox exec -t`. The command runs on a
//! terminal in the sandbox; the local one is put in raw mode, so Ctrl-C and
//! window changes reach the command inside.

use std::io::{IsTerminal, Write};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use reins_api::v1::{ws_channel, Exec, ExecEvent, PtySize, WsControl};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

use crate::client::Client;
use crate::cmd::sandbox::exit_byte;
use crate::cmd::term::{next_winch, terminal_size, winch, RawMode};

/// Runs `exec` in sandbox `id` on a terminal; returns the exit code.
pub async fn run(c: &Client, id: &str, mut exec: Exec) -> Result<u8> {
    let (cols, rows) = terminal_size().unwrap_or((80, 24));
    exec.pty = Some(PtySize { cols, rows });
    let mut ws = c.websocket(&format!("/v1/sandboxes/{id}/exec/ws")).await?;
    ws.send(Message::Text(serde_json::to_string(&exec)?.into())).await.context("sending the command")?;
    let _raw = std::io::stdin().is_terminal().then(RawMode::enable).flatten();
    let mut stdin = tokio::io::stdin();
    let mut stdin_open = true;
    let mut buf = vec![0u8; 16 << 10];
    let mut winch = winch();
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(data))) => output(&data)?,
                Some(Ok(Message::Text(text))) => {
                    match serde_json::from_str::<ExecEvent>(&text).context("bad event from the server")? {
                        ExecEvent::Exit { exit_code, timed_out, .. } => {
                            let _ = ws.close(None).await;
                            return Ok(if timed_out { 124 } else { exit_byte(exit_code) });
                        }
                        ExecEvent::Error { code, message } => bail!("{message} ({code})"),
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("the connection broke: {e}"),
                None => bail!("the server closed the connection before the command exited"),
            },
            n = stdin.read(&mut buf), if stdin_open => match n {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    control(&mut ws, &WsControl::Eof).await?;
                }
                Ok(n) => ws.send(Message::Binary(buf[..n].to_vec().into())).await.context("sending input")?,
            },
            () = next_winch(&mut winch) => {
                if let Some((cols, rows)) = terminal_size() {
                    control(&mut ws, &WsControl::Resize { cols, rows }).await?;
                }
            }
        }
    }
}

async fn control(ws: &mut crate::client::WebSocket, ctl: &WsControl) -> Result<()> {
    ws.send(Message::Text(serde_json::to_string(ctl)?.into())).await.context("sending to the server")
}

/// Writes one output frame (channel byte, then data) to stdout or stderr.
fn output(frame: &[u8]) -> Result<()> {
    let Some((&channel, data)) = frame.split_first() else { return Ok(()) };
    if channel == ws_channel::STDERR {
        let mut err = std::io::stderr().lock();
        err.write_all(data)?;
        err.flush()?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(data)?;
        out.flush()?;
    }
    Ok(())
}
