//! Sandboxes through the API: the whole life, exec (buffered and streamed),
//! files, pause, timeouts, shutdown.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{assert_error, Env};
use crate::suite::{host_processes_with, settle_processes_with};

#[tokio::test]
async fn a_sandbox_lives_runs_commands_and_is_deleted() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let api = up.admin();
    let id =
        api.create(json!({"memory_mb": 256, "cpus": 0.5, "env": {"GREETING": "hi"}, "metadata": {"team": "a"}})).await;
    assert_eq!(id.len(), 20);
    assert!(!id.contains('-'));

    let got = api.ok(Method::GET, &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(
        (got["state"].as_str(), got["memory_mb"].as_u64(), got["cpus"].as_f64()),
        (Some("running"), Some(256), Some(0.5))
    );
    let left = got["expires_ms"].as_i64().expect("expiry") - got["created_ms"].as_i64().expect("created");
    assert!((299_000..=301_000).contains(&left), "default timeout is 300 s, got {left} ms");

    let r = api
        .ok(
            Method::POST,
            &format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"cmd": ["bash", "-c", "echo $GREETING; echo oops >&2; exit 3"]})),
        )
        .await;
    assert_eq!(
        (r["stdout"].as_str(), r["stderr"].as_str(), r["exit_code"].as_i64()),
        (Some("hi\n"), Some("oops\n"), Some(3))
    );
    let r = api
        .ok(Method::POST, &format!("/v1/sandboxes/{id}/exec"), Some(json!({"cmd": ["cat"], "stdin": "piped"})))
        .await;
    assert_eq!(r["stdout"], "piped");
    let r = api
        .ok(
            Method::POST,
            &format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"cmd": ["id", "-u"], "user": "root", "cwd": "/tmp"})),
        )
        .await;
    assert_eq!(r["stdout"], "0\n");
    let r = api
        .ok(Method::POST, &format!("/v1/sandboxes/{id}/exec"), Some(json!({"cmd": ["sleep", "30"], "timeout_secs": 1})))
        .await;
    assert_eq!((r["timed_out"].as_bool(), r["exit_code"].as_i64()), (Some(true), Some(137)));
    let r = api.ok(Method::POST, &format!("/v1/sandboxes/{id}/exec"), Some(json!({"cmd": ["no-such-program"]}))).await;
    assert_eq!(r["exit_code"], 127);

    // Listing filters by metadata.
    let other = api.create(json!({"metadata": {"team": "b"}})).await;
    let page = api.ok(Method::GET, "/v1/sandboxes?metadata=team=a", None).await;
    let ids: Vec<_> =
        page["items"].as_array().expect("items").iter().map(|s| s["id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(ids, vec![id.clone()]);

    // Extend the timeout.
    let t = api.ok(Method::POST, &format!("/v1/sandboxes/{id}/timeout"), Some(json!({"timeout_secs": 3600}))).await;
    assert!(t["expires_ms"].as_i64().expect("exp") > got["expires_ms"].as_i64().expect("exp") + 3_000_000);

    assert_eq!(api.call(Method::DELETE, &format!("/v1/sandboxes/{id}"), None).await.0, StatusCode::NO_CONTENT);
    assert_error(
        &api.call(Method::POST, &format!("/v1/sandboxes/{id}/exec"), Some(json!({"cmd": ["true"]}))).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &api.call(Method::DELETE, &format!("/v1/sandboxes/{id}"), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let ended = api.ok(Method::GET, &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!((ended["state"].as_str(), ended["end_reason"].as_str()), (Some("ended"), Some("deleted")));
    api.ok(Method::DELETE, &format!("/v1/sandboxes/{other}"), None).await;
    for _ in 0..100 {
        if env.sandbox_processes().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(env.sandbox_processes().is_empty(), "sandbox processes left: {:?}", env.sandbox_processes());
}

/// Reads an SSE body into (event, data JSON) pairs until it ends.
async fn sse_events(resp: reqwest::Response) -> Vec<(String, serde_json::Value)> {
    let mut body = resp.bytes_stream();
    let (mut buf, mut out) = (String::new(), Vec::new());
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut ev = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    ev = e.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if !data.is_empty() {
                out.push((ev, serde_json::from_str(&data).expect("event JSON")));
            }
        }
    }
    out
}

#[tokio::test]
async fn exec_streams_events_and_takes_stdin_and_signals() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let api = up.admin();
    let id = api.create(json!({})).await;
    let resp = api
        .req(Method::POST, &format!("/v1/sandboxes/{id}/exec/stream"))
        .json(&json!({"cmd": ["bash", "-c", "echo one; sleep 0.2; echo two >&2; exit 4"], "stdin": ""}))
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse_events(resp).await;
    let names: Vec<_> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["start", "stdout", "stderr", "exit"], "{events:?}");
    assert_eq!(events[1].1["data"], "one\n");
    assert_eq!(events[3].1["exit_code"], 4);

    // A streamed command with open stdin: write, close, read back; then signal another.
    let resp = api
        .req(Method::POST, &format!("/v1/sandboxes/{id}/exec/stream"))
        .json(&json!({"cmd": ["cat"]}))
        .send()
        .await
        .expect("stream");
    let mut body = Box::pin(resp.bytes_stream());
    let first = String::from_utf8_lossy(&body.next().await.expect("start").expect("chunk")).into_owned();
    let pid: i64 = serde_json::from_str::<serde_json::Value>(
        first.lines().find_map(|l| l.strip_prefix("data:")).expect("data").trim(),
    )
    .expect("json")["pid"]
        .as_i64()
        .expect("pid");
    api.ok(
        Method::POST,
        &format!("/v1/sandboxes/{id}/exec/{pid}/stdin"),
        Some(json!({"data": "via stdin", "eof": true})),
    )
    .await;
    let mut rest = String::new();
    while let Some(c) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&c.expect("chunk")));
    }
    assert!(rest.contains("via stdin"), "{rest}");
    assert!(rest.contains("\"exit_code\":0"), "{rest}");

    let resp = api
        .req(Method::POST, &format!("/v1/sandboxes/{id}/exec/stream"))
        .json(&json!({"cmd": ["sleep", "60"]}))
        .send()
        .await
        .expect("stream");
    let mut body = Box::pin(resp.bytes_stream());
    let first = String::from_utf8_lossy(&body.next().await.expect("start").expect("chunk")).into_owned();
    let pid = first.split("\"pid\":").nth(1).and_then(|s| s.split('}').next()).expect("pid").trim().to_owned();
    api.ok(Method::POST, &format!("/v1/sandboxes/{id}/exec/{pid}/signal"), Some(json!({"signal": "SIGTERM"}))).await;
    let mut rest = String::new();
    while let Some(c) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&c.expect("chunk")));
    }
    assert!(rest.contains("\"exit_code\":143"), "{rest}");
    assert_error(
        &api.call(Method::POST, &format!("/v1/sandboxes/{id}/exec/{pid}/signal"), Some(json!({"signal": "BOGUS"})))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
}

#[tokio::test]
async fn files_move_in_and_out() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let api = up.admin();
    let id = api.create(json!({})).await;
    let base = format!("/v1/sandboxes/{id}/files");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let r = api
        .req(Method::PUT, &format!("{base}?path=/home/user/big.bin"))
        .body(data.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), StatusCode::OK);
    let entry: serde_json::Value = r.json().await.expect("entry");
    assert_eq!((entry["size"].as_u64(), entry["kind"].as_str()), (Some(3_000_000), Some("file")));
    let back = api.req(Method::GET, &format!("{base}?path=/home/user/big.bin")).send().await.expect("download");
    assert_eq!(back.status(), StatusCode::OK);
    assert!(back.bytes().await.expect("bytes").as_ref() == data.as_slice(), "downloaded bytes differ");

    api.ok(Method::POST, &format!("{base}/mkdir"), Some(json!({"path": "/home/user/a/b", "parents": true}))).await;
    api.ok(
        Method::POST,
        &format!("{base}/move"),
        Some(json!({"from": "/home/user/big.bin", "to": "/home/user/a/b/moved.bin"})),
    )
    .await;
    let list = api.ok(Method::GET, &format!("{base}/list?path=/home/user/a&depth=2"), None).await;
    let names: Vec<_> =
        list.as_array().expect("list").iter().map(|e| e["name"].as_str().expect("name").to_owned()).collect();
    assert!(names.contains(&"moved.bin".to_owned()), "{names:?}");
    let st = api.ok(Method::GET, &format!("{base}/stat?path=/home/user/a/b/moved.bin"), None).await;
    assert_eq!(st["size"], 3_000_000);
    assert_eq!(
        api.call(Method::DELETE, &format!("{base}?path=/home/user/a&recursive=true"), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &api.call(Method::GET, &format!("{base}/stat?path=/home/user/a"), None).await,
        StatusCode::NOT_FOUND,
        "file_not_found",
    );
    assert_error(
        &api.call(Method::GET, &format!("{base}?path=/nope"), None).await,
        StatusCode::NOT_FOUND,
        "file_not_found",
    );
    assert_error(
        &api.call(Method::GET, &format!("{base}/stat?path=relative"), None).await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    // `user` cannot write where only root may.
    let r = api.req(Method::PUT, &format!("{base}?path=/etc/evil")).body("x").send().await.expect("upload");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = api.req(Method::PUT, &format!("{base}?path=/root/ok&user=root")).body("x").send().await.expect("upload");
    assert_eq!(r.status(), StatusCode::OK);
    // No half-written temporary files stay behind.
    let ls = api.exec(&id, &["ls", "-a", "/home/user"]).await;
    assert!(!ls["stdout"].as_str().expect("ls").contains("reins-upload"), "{ls}");
}

#[tokio::test]
async fn pause_resume_and_timeouts_release() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let api = up.admin();
    let id = api.create(json!({})).await;
    api.ok(Method::POST, &format!("/v1/sandboxes/{id}/pause"), None).await;
    assert_error(
        &api.call(Method::POST, &format!("/v1/sandboxes/{id}/exec"), Some(json!({"cmd": ["true"]}))).await,
        StatusCode::CONFLICT,
        "paused",
    );
    let paused = api.ok(Method::GET, "/v1/sandboxes?state=paused", None).await;
    assert_eq!(paused["items"].as_array().expect("items").len(), 1);
    api.ok(Method::POST, &format!("/v1/sandboxes/{id}/resume"), None).await;
    assert_eq!(api.exec(&id, &["echo", "back"]).await["stdout"], "back\n");

    let short = api.create(json!({"timeout_secs": 1})).await;
    api.ok(
        Method::POST,
        &format!("/v1/sandboxes/{short}/exec"),
        Some(json!({"cmd": ["bash", "-c", "exec -a reins-timeout-marker sleep 600 &"]})),
    )
    .await;
    let mut state = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        state = api.ok(Method::GET, &format!("/v1/sandboxes/{short}"), None).await["end_reason"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if state == "timeout" {
            break;
        }
    }
    assert_eq!(state, "timeout");
    assert!(host_processes_with("reins-timeout-marker").is_empty(), "the timed-out sandbox's processes survived");
    let tenants = api.ok(Method::GET, "/v1/tenants", None).await;
    assert_eq!(tenants["items"][0]["active"], 1, "only the first sandbox still counts: {tenants}");
}

#[tokio::test]
async fn sigterm_closes_streams_and_leaves_no_sandbox() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let api = up.admin();
    let id = api.create(json!({})).await;
    api.create(json!({})).await;
    let resp = api
        .req(Method::POST, &format!("/v1/sandboxes/{id}/exec/stream"))
        .json(&json!({"cmd": ["bash", "-c", "exec -a reins-shutdown-marker sleep 600"]}))
        .send()
        .await
        .expect("stream");
    let reader = tokio::spawn(async move { sse_events(resp).await });
    assert_eq!(settle_processes_with("reins-shutdown-marker", 1).await, 1);
    let status = up.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    let events = tokio::time::timeout(Duration::from_secs(5), reader).await.expect("stream ended").expect("reader");
    assert!(
        events.last().is_some_and(|(e, _)| e == "error" || e == "exit"),
        "stream ended without a final event: {events:?}"
    );
    assert!(host_processes_with("reins-shutdown-marker").is_empty());
    assert!(env.sandbox_processes().is_empty(), "{:?}", env.sandbox_processes());
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let api = up.admin();
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{}/healthz", up.url)).send().await.expect("healthz").status(), StatusCode::OK);
    let id = api.create(json!({})).await;
    api.exec(&id, &["true"]).await;
    let metrics = http.get(format!("{}/metrics", up.url)).send().await.expect("metrics").text().await.expect("text");
    for needle in [
        "reins_http_requests_total{method=\"POST\",route=\"/v1/sandboxes\",status=\"201\"} 1",
        "route=\"/v1/sandboxes/{id}/exec\"}",
        "reins_exec_duration_seconds_count 1",
        "reins_sandboxes{state=\"running\"} 1",
        "reins_node_capacity_sandboxes{node=",
        "reins_nodes_connected 1",
    ] {
        assert!(metrics.contains(needle), "metrics lack `{needle}`:\n{metrics}");
    }
    let served: serde_json::Value =
        http.get(format!("{}/v1/openapi.json", up.url)).send().await.expect("openapi").json().await.expect("json");
    assert!(served["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", served["openapi"]);
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json"))
            .expect("docs/openapi.json"),
    )
    .expect("committed JSON");
    assert_eq!(
        served, committed,
        "docs/openapi.json is stale: run `cargo run -p reins -- openapi > docs/openapi.json`"
    );
}

#[tokio::test]
async fn the_cli_uses_the_config_written_by_up() {
    let env = Env::new();
    let _up = env.up("d", &[]).await;
    let run = |args: &[&str]| {
        let mut c = std::process::Command::new(crate::suite::reins_bin());
        c.args(args)
            .env("XDG_CONFIG_HOME", env.dir.path().join("config"))
            .env_remove("REINS_URL")
            .env_remove("REINS_API_KEY");
        c.output().expect("reins")
    };
    let o = run(&["sandbox", "create", "--metadata", "who=cli"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let o = run(&["sandbox", "exec", &id, "--", "bash", "-c", "echo out; echo err >&2; exit 5"]);
    assert_eq!(
        (o.status.code(), o.stdout.as_slice(), o.stderr.as_slice()),
        (Some(5), b"out\n".as_slice(), b"err\n".as_slice())
    );
    let o = run(&["sandbox", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(list[0]["metadata"]["who"], "cli");
    let file = env.dir.path().join("note.txt");
    std::fs::write(&file, "from host").expect("write");
    let dst = format!("{id}:/home/user/note.txt");
    assert!(run(&["sandbox", "cp", file.to_str().expect("path"), &dst]).status.success());
    let back = env.dir.path().join("back.txt");
    assert!(run(&["sandbox", "cp", &dst, back.to_str().expect("path")]).status.success());
    assert_eq!(std::fs::read_to_string(&back).expect("back"), "from host");
    let o = run(&["sandbox", "rm", &id]);
    assert!(o.status.success());
    let o = run(&["sandbox", "get", &id, "--json"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"ended\""));

    // Without a server: an error that says what to do.
    let o = std::process::Command::new(crate::suite::reins_bin())
        .args(["sandbox", "ls"])
        .env("REINS_URL", "http://127.0.0.1:9")
        .env("REINS_API_KEY", "reins_x")
        .output()
        .expect("reins");
    assert_eq!(o.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is `reins up` running?"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
