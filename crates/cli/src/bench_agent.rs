//! `reins bench agent`: the harness's own cost per step, against the
//! scripted model server on loopback, through an in-process `reins up`.
//!
//! A step's overhead is the time from the model's answer being ready (a
//! tool call) to the next model request arriving: parsing the answer,
//! logging the intent, running the tool in the session's (ready) sandbox,
//! logging the receipt and the next request, and building and sending it.
//! Model time is excluded by construction. As the reference, the same run
//! times a bare `POST /v1/sandboxes/{id}/exec` of the same command.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use reins_harness::scripted::{Reply, Scripted, Seen};
use reins_server::Limits;
use serde::Serialize;
use serde_json::{json, Value};

use crate::bench::progress;
use crate::bench_api::{Client, LocalService};
use crate::stats::Summary;

#[derive(Debug, Args)]
pub struct AgentBench {
    /// Tool steps in the sequential turn.
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// Sessions at once in the concurrent test (0 skips it).
    #[arg(long, default_value_t = 200)]
    sessions: usize,
    /// Tool steps per session in the concurrent test.
    #[arg(long, default_value_t = 10)]
    session_steps: usize,
    /// The model's answer time in the concurrent test, in ms.
    #[arg(long, default_value_t = 100)]
    model_ms: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    cpus: usize,
    /// Harness time per step with a model that answers at once (target: p50 ≤ 5 ms).
    step_overhead_ms: Summary,
    /// The reference: the step's command alone, `POST /v1/sandboxes/{id}/exec` on a ready sandbox.
    exec_api_ms: Summary,
    /// Sessions at once, their steps each, the model's answer time.
    concurrent_sessions: usize,
    concurrent_session_steps: usize,
    model_ms: u64,
    /// Tool steps per second across all sessions.
    concurrent_steps_per_s: f64,
    /// Harness time per step while they all run.
    concurrent_step_overhead_ms: Summary,
    /// From the first message to the last turn's end.
    concurrent_wall_s: f64,
    concurrent_errors: usize,
}

/// The session a model request belongs to: its first user message.
fn session_of(seen: &Seen) -> String {
    seen.body["messages"][1]["content"].as_str().unwrap_or_default().to_owned()
}

fn tool_results(seen: &Seen) -> usize {
    seen.body["messages"].as_array().map_or(0, |m| m.iter().filter(|m| m["role"] == "tool").count())
}

/// A model that calls `shell echo hi` until the request carries `steps` results, then answers.
async fn model(steps: usize, delay: Duration) -> Result<Scripted> {
    Ok(Scripted::start(
        move |seen: &Seen| {
            let reply = if tool_results(seen) < steps {
                Reply::Tools(vec![("shell".into(), r#"{"command":"echo hi"}"#.into())])
            } else {
                Reply::Text("done".into())
            };
            if delay.is_zero() {
                reply
            } else {
                Reply::After(delay, Box::new(reply))
            }
        },
        vec![],
    )
    .await?)
}

/// Step overheads in ms: for each session, next request's arrival − previous answer.
fn overheads(seen: &[Seen]) -> Vec<f64> {
    let mut by_session: HashMap<String, Vec<&Seen>> = HashMap::new();
    for s in seen {
        by_session.entry(session_of(s)).or_default().push(s);
    }
    let mut out = Vec::new();
    for list in by_session.values() {
        for w in list.windows(2) {
            if let Some(done) = w[0].answered {
                out.push((w[1].received - done).as_secs_f64() * 1000.0);
            }
        }
    }
    out
}

/// The API, with the few calls this bench makes.
struct Api(Client);

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        self.0.call(method, path, body).await
    }

    async fn agent(&self, name: &str, url: &str, max_steps: usize) -> Result<String> {
        let spec = json!({"name": name, "model": {"provider": "openai", "base_url": url, "name": "bench"},
            "tools": ["shell"], "sandbox": {"memory_mb": 128}, "budgets": {"max_steps": max_steps + 5}});
        let a = self.call(reqwest::Method::POST, "/v1/agents", Some(spec)).await?;
        Ok(a["id"].as_str().context("agent id")?.to_owned())
    }

    async fn turn(&self, agent: &str, text: &str) -> Result<String> {
        let s = self.call(reqwest::Method::POST, &format!("/v1/agents/{agent}/sessions"), None).await?;
        let sid = s["id"].as_str().context("session id")?.to_owned();
        self.call(reqwest::Method::POST, &format!("/v1/sessions/{sid}/messages"), Some(json!({"content": text})))
            .await?;
        Ok(sid)
    }

    /// Follows the session's event stream until its turn ends; the end reason.
    async fn finished(&self, sid: &str) -> Result<String> {
        use futures_util::StreamExt;
        let url = format!("{}/v1/sessions/{sid}/events/stream", self.0.url);
        let resp = self.0.http.get(url).bearer_auth(&self.0.key).send().await?;
        if !resp.status().is_success() {
            bail!("event stream: {}", resp.status());
        }
        let mut body = resp.bytes_stream();
        let mut parser = reins_harness::model::sse::SseParser::default();
        while let Some(chunk) = body.next().await {
            for ev in parser.feed(&chunk?).map_err(anyhow::Error::msg)? {
                if ev.event == "turn_finished" {
                    let v: Value = serde_json::from_str(&ev.data)?;
                    return Ok(v["data"]["reason"].as_str().unwrap_or("?").to_owned());
                }
            }
        }
        bail!("the event stream ended before the turn")
    }
}

pub async fn run(data_dir: &Path, args: AgentBench) -> Result<u8> {
    let svc = LocalService::start(data_dir, "bench-agent", Limits::default()).await?;
    let api = Arc::new(Api(svc.client()));
    let result = measure(&api, &args).await;
    svc.stop().await;
    crate::bench::emit(&result?, args.json, print)
}

async fn measure(api: &Arc<Api>, args: &AgentBench) -> Result<Report> {
    progress(args.json, &format!("one turn of {} tool steps, the model answering at once", args.steps));
    let fast = model(args.steps, Duration::ZERO).await?;
    let agent = api.agent("bench-seq", &fast.openai_url(), args.steps).await?;
    let sid = api.turn(&agent, "sequential").await?;
    let reason = api.finished(&sid).await?;
    if reason != "done" {
        bail!("the sequential turn ended with `{reason}`");
    }
    let step_overhead_ms = Summary::of(overheads(&fast.seen()));

    progress(args.json, "reference: the same command through the exec API");
    let sb = api.call(reqwest::Method::POST, "/v1/sandboxes", Some(json!({}))).await?;
    let path = format!("/v1/sandboxes/{}/exec", sb["id"].as_str().context("id")?);
    let mut exec = Vec::new();
    for _ in 0..args.steps {
        let t = Instant::now();
        api.call(reqwest::Method::POST, &path, Some(json!({"cmd": ["bash", "-c", "echo hi"], "cwd": "/tmp"}))).await?;
        exec.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    api.call(reqwest::Method::DELETE, &format!("/v1/sandboxes/{}", sb["id"].as_str().unwrap_or("")), None).await?;

    let mut report = Report {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        step_overhead_ms,
        exec_api_ms: Summary::of(exec),
        concurrent_sessions: args.sessions,
        concurrent_session_steps: args.session_steps,
        model_ms: args.model_ms,
        concurrent_steps_per_s: 0.0,
        concurrent_step_overhead_ms: Summary::of(vec![]),
        concurrent_wall_s: 0.0,
        concurrent_errors: 0,
    };
    if args.sessions == 0 {
        return Ok(report);
    }
    progress(
        args.json,
        &format!(
            "{} sessions at once, {} steps each, the model answering in {} ms",
            args.sessions, args.session_steps, args.model_ms
        ),
    );
    let slow = model(args.session_steps, Duration::from_millis(args.model_ms)).await?;
    let agent = api.agent("bench-par", &slow.openai_url(), args.session_steps).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.sessions {
        let (api, agent) = (Arc::clone(api), agent.clone());
        tasks.push(tokio::spawn(async move {
            let sid = api.turn(&agent, &format!("session {i}")).await?;
            api.finished(&sid).await
        }));
    }
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(reason)) if reason == "done" => {}
            Ok(Ok(reason)) => {
                errors += 1;
                tracing::warn!(%reason, "a concurrent session's turn did not finish cleanly");
            }
            _ => errors += 1,
        }
    }
    let wall = start.elapsed().as_secs_f64();
    report.concurrent_wall_s = wall;
    report.concurrent_errors = errors;
    report.concurrent_steps_per_s = (args.sessions * args.session_steps) as f64 / wall;
    report.concurrent_step_overhead_ms = Summary::of(overheads(&slow.seen()));
    Ok(report)
}

fn print(r: &Report) {
    let verdict = if r.step_overhead_ms.p50 <= 5.0 { "met" } else { "NOT met" };
    println!("harness overhead per step (model answers at once): {}", r.step_overhead_ms);
    println!("  target p50 ≤ 5 ms: {verdict}");
    println!("  reference, the step's command alone via POST …/exec: {}", r.exec_api_ms);
    if r.concurrent_sessions > 0 {
        println!(
            "{} concurrent sessions × {} steps, model {} ms: {:.0} steps/s in {:.1} s, {} errors",
            r.concurrent_sessions,
            r.concurrent_session_steps,
            r.model_ms,
            r.concurrent_steps_per_s,
            r.concurrent_wall_s,
            r.concurrent_errors
        );
        println!("  step overhead under load: {}", r.concurrent_step_overhead_ms);
    }
}
