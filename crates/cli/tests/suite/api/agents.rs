//! Agents end to end: `reins up`, a scripted model server on loopback (the
//! only test double), tools that run in real sandboxes, approvals, skills,
//! bad input, and `kill -9` of the server in the middle of a turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reins_harness::scripted::{Reply, Scripted, Seen};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{assert_error, cli, Api, Env, Service};

/// A fresh `reins up` of the test's own, and its admin API.
async fn up(extra: &[&str]) -> (Env, Service, Api) {
    let env = Env::new();
    let svc = env.up("a", extra).await;
    let api = svc.admin();
    (env, svc, api)
}

fn tools(calls: &[(&str, Value)]) -> Reply {
    Reply::Tools(calls.iter().map(|(n, a)| (n.to_string(), a.to_string())).collect())
}

fn agent(name: &str, provider: &str, url: &str, extra: Value) -> Value {
    let mut a = json!({"name": name, "model": {"provider": provider, "base_url": url, "name": "test-model"},
        "system_prompt": "You are a careful test agent."});
    if let (Some(a), Some(e)) = (a.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            a.insert(k.clone(), v.clone());
        }
    }
    a
}

async fn session(api: &Api, agent: &Value) -> String {
    let a = api.ok(Method::POST, "/v1/agents", Some(agent.clone())).await;
    let s = api.ok(Method::POST, &format!("/v1/agents/{}/sessions", a["id"].as_str().expect("id")), None).await;
    s["id"].as_str().expect("session id").to_owned()
}

async fn say(api: &Api, sid: &str, text: &str) -> Value {
    api.ok(Method::POST, &format!("/v1/sessions/{sid}/messages"), Some(json!({"content": text}))).await
}

async fn events(api: &Api, sid: &str) -> Vec<Value> {
    let v = api.ok(Method::GET, &format!("/v1/sessions/{sid}/events"), None).await;
    v["items"].as_array().expect("items").clone()
}

fn kinds(evs: &[Value]) -> Vec<String> {
    evs.iter().map(|e| e["kind"].as_str().unwrap_or_default().to_owned()).collect()
}

/// Waits until the session's status is `status` (and, for idle, the turn has finished).
async fn wait_status(api: &Api, sid: &str, status: &str) -> Value {
    for _ in 0..600 {
        let (code, s) = api.call(Method::GET, &format!("/v1/sessions/{sid}"), None).await;
        if code == StatusCode::OK && s["status"] == status {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("session {sid} never became {status}: {:?}", kinds(&events(api, sid).await));
}

/// Waits until the log holds an event of `kind`.
async fn wait_kind(api: &Api, sid: &str, kind: &str) -> Vec<Value> {
    for _ in 0..600 {
        let evs = events(api, sid).await;
        if kinds(&evs).iter().any(|k| k == kind) {
            return evs;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no {kind} event in session {sid}: {:?}", kinds(&events(api, sid).await));
}

/// Waits until the session holds no sandbox and none of the tenant's sandboxes runs.
async fn wait_released(api: &Api, sid: &str) {
    for _ in 0..400 {
        let s = api.ok(Method::GET, &format!("/v1/sessions/{sid}"), None).await;
        let live = api.ok(Method::GET, "/v1/sandboxes", None).await;
        if s["sandbox_id"].is_null() && live["items"].as_array().is_some_and(Vec::is_empty) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("session {sid} still holds a sandbox");
}

fn receipts(evs: &[Value]) -> Vec<Value> {
    evs.iter().filter(|e| e["kind"] == "tool_receipt").map(|e| e["data"].clone()).collect()
}

/// The tool results an OpenAI request carries, in order.
fn tool_results(seen: &Seen) -> Vec<String> {
    seen.body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| m["role"] == "tool")
                .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn system_of(seen: &Seen) -> String {
    seen.body["messages"][0]["content"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_works_in_its_sandbox_and_its_files_and_memory_outlive_the_sandbox() {
    let model = Scripted::start(
        {
            let n = AtomicUsize::new(0);
            move |_| match n.fetch_add(1, Ordering::SeqCst) {
                0 => tools(&[
                    ("write_file", json!({"path": "AGENTS.md", "content": "Answer in haiku."})),
                    ("memory", json!({"action": "append", "text": "the user likes tea"})),
                ]),
                1 => tools(&[("shell", json!({"command": "echo hi > notes.txt && ls /workspace"}))]),
                2 => Reply::Text("All done.".into()),
                3 => tools(&[("read_file", json!({"path": "notes.txt"}))]),
                _ => Reply::Text("It says hi.".into()),
            }
        },
        vec!["sk-test-123".into()],
    )
    .await
    .expect("model");
    let (_env, svc, api) = up(&[]).await;
    api.ok(Method::PUT, "/v1/secrets/llm", Some(json!({"value": "sk-test-123", "hosts": ["localhost"]}))).await;
    let spec = agent("writer", "openai", &model.openai_url(), json!({}));
    let mut spec_with_key = spec.clone();
    spec_with_key["model"]["api_key_secret"] = json!("llm");
    let sid = session(&api, &spec_with_key).await;
    let turn = say(&api, &sid, "take notes").await;
    assert_eq!(turn["duplicate"], false);
    wait_status(&api, &sid, "idle").await;
    wait_released(&api, &sid).await;
    let evs = events(&api, &sid).await;
    assert_eq!(
        kinds(&evs),
        [
            "message",
            "model_request",
            "model_response",
            "tool_intent",
            "tool_receipt",
            "tool_intent",
            "tool_receipt",
            "model_request",
            "model_response",
            "tool_intent",
            "tool_receipt",
            "model_request",
            "model_response",
            "turn_finished"
        ],
    );
    let r = receipts(&evs);
    assert!(r.iter().all(|r| r["outcome"] == "ok"), "{r:?}");
    assert!(r[2]["output"].as_str().expect("out").contains("AGENTS.md"), "{}", r[2]);
    assert!(r[2]["output"].as_str().expect("out").contains("MEMORY.md"), "{}", r[2]);

    let seen = model.seen();
    assert_eq!(seen[0].key.as_deref(), Some("sk-test-123"), "the key from the secret");
    let names: Vec<&str> = seen[0].body["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["shell", "read_file", "write_file", "edit_file", "list_files", "search", "web_fetch", "memory"]);
    assert_eq!(seen[0].body["stream"], true);
    assert_eq!(tool_results(&seen[1]).len(), 2, "both results of the first step are in the history");
    assert!(tool_results(&seen[1])[0].contains("wrote 16 bytes"), "{:?}", tool_results(&seen[1]));
    assert!(system_of(&seen[0]).starts_with("You are a careful test agent."));
    assert!(!system_of(&seen[0]).contains("haiku"), "AGENTS.md did not exist yet");

    // A second turn runs in a new sandbox: the volume kept the files, and AGENTS.md and MEMORY.md are in context.
    say(&api, &sid, "what did you write?").await;
    wait_status(&api, &sid, "idle").await;
    let evs = events(&api, &sid).await;
    let r = receipts(&evs);
    assert_eq!(r.last().expect("receipt")["output"], "hi\n");
    let seen = model.seen();
    let sys = system_of(&seen[3]);
    assert!(sys.contains("# AGENTS.md") && sys.contains("Answer in haiku."), "{sys}");
    assert!(sys.contains("the user likes tea"), "{sys}");
    let history: Vec<&str> =
        seen[3].body["messages"].as_array().expect("m").iter().filter_map(|m| m["content"].as_str()).collect();
    assert!(
        history.contains(&"take notes") && history.contains(&"All done.") && history.contains(&"what did you write?"),
        "{history:?}"
    );

    let s = api.ok(Method::GET, &format!("/v1/sessions/{sid}"), None).await;
    assert_eq!((s["tokens_in"].as_i64(), s["tokens_out"].as_i64()), (Some(500), Some(50)), "5 calls × (100, 10)");
    let agents = api.ok(Method::GET, "/v1/agents/writer", None).await;
    assert_eq!(agents["tokens_in"], 500);
    wait_released(&api, &sid).await;
    let metrics = api.req(Method::GET, "/metrics").send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("reins_model_tokens_total{agent="), "{metrics}");
    svc.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_agent_gets_its_tool_results_as_blocks() {
    let model = Scripted::queue(vec![
        tools(&[("shell", json!({"command": "echo from-shell"})), ("list_files", json!({}))]),
        Reply::Text("ok".into()),
    ])
    .await
    .expect("model");
    let (_env, svc, api) = up(&[]).await;
    api.ok(
        Method::PUT,
        "/v1/secrets/claude",
        Some(json!({"value": "sk-ant-1", "hosts": ["localhost"], "header": "x-api-key", "format": "{secret}"})),
    )
    .await;
    let mut spec = agent("claude", "anthropic", &model.anthropic_url(), json!({}));
    spec["model"]["api_key_secret"] = json!("claude");
    let sid = session(&api, &spec).await;
    say(&api, &sid, "go").await;
    wait_status(&api, &sid, "idle").await;
    let seen = model.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!((seen[0].protocol, seen[0].key.as_deref()), ("anthropic", Some("sk-ant-1")));
    assert_eq!(seen[0].body["system"].as_str().map(|s| s.starts_with("You are a careful")), Some(true));
    assert!(seen[0].body["tools"][0]["input_schema"].is_object());
    let msgs = seen[1].body["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 3, "user, assistant with two tool_use blocks, user with both results: {msgs:?}");
    assert_eq!(msgs[1]["content"][0]["type"], "tool_use");
    let results = msgs[2]["content"].as_array().expect("blocks");
    assert_eq!(results.len(), 2);
    assert!(results[0]["content"].as_str().expect("content").contains("from-shell"), "{results:?}");
    assert_eq!(results[0]["tool_use_id"], msgs[1]["content"][0]["id"]);
    svc.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_park_the_session_without_a_sandbox_and_record_the_approver() {
    let model = Scripted::queue(vec![
        tools(&[("shell", json!({"command": "rm -rf /"}))]),
        tools(&[("shell", json!({"command": "git push origin main"}))]),
        tools(&[("shell", json!({"command": "git status"}))]),
        tools(&[("shell", json!({"command": "git push --force"}))]),
        Reply::Text("finished".into()),
    ])
    .await
    .expect("model");
    let (_env, svc, api) = up(&[]).await;
    let policy = json!({"approvals": {"shell": {"default": "allow", "rules": [
        {"match": "git push*", "action": "ask"}, {"match": "rm -rf /*", "action": "deny"}]}}});
    let sid = session(&api, &agent("careful", "openai", &model.openai_url(), policy)).await;
    say(&api, &sid, "ship it").await;
    wait_status(&api, &sid, "waiting").await;
    wait_released(&api, &sid).await; // no sandbox is held while it waits
    let evs = events(&api, &sid).await;
    let asked: Vec<&Value> = evs.iter().filter(|e| e["kind"] == "approval_requested").collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["data"]["command"], "git push origin main", "the exact command");
    assert_eq!(receipts(&evs)[0]["outcome"], "denied", "rm -rf / is denied by policy");
    let aid = asked[0]["data"]["approval_id"].as_str().expect("id").to_owned();

    // While it waits, a message is refused; a wrong approval id is a 404.
    let busy = api.call(Method::POST, &format!("/v1/sessions/{sid}/messages"), Some(json!({"content": "hey"}))).await;
    assert_error(&busy, StatusCode::CONFLICT, "session_busy");
    let wrong = api
        .call(Method::POST, &format!("/v1/sessions/{sid}/approvals/ap_nope"), Some(json!({"decision": "approve"})))
        .await;
    assert_error(&wrong, StatusCode::NOT_FOUND, "not_found");
    let bad = api
        .call(Method::POST, &format!("/v1/sessions/{sid}/approvals/{aid}"), Some(json!({"decision": "maybe"})))
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "invalid");

    api.ok(Method::POST, &format!("/v1/sessions/{sid}/approvals/{aid}"), Some(json!({"decision": "approve"}))).await;
    wait_status(&api, &sid, "waiting").await; // git status is allowed; the forced push asks again
    let evs = events(&api, &sid).await;
    let asked: Vec<&Value> = evs.iter().filter(|e| e["kind"] == "approval_requested").collect();
    assert_eq!(asked.len(), 2);
    let aid2 = asked[1]["data"]["approval_id"].as_str().expect("id").to_owned();
    api.ok(
        Method::POST,
        &format!("/v1/sessions/{sid}/approvals/{aid2}"),
        Some(json!({"decision": "deny", "reason": "never force"})),
    )
    .await;
    wait_status(&api, &sid, "idle").await;
    let evs = events(&api, &sid).await;
    let answered: Vec<&Value> = evs.iter().filter(|e| e["kind"] == "approval_answered").collect();
    let keys = api.ok(Method::GET, "/v1/keys", None).await;
    let admin_id = keys["items"][0]["id"].as_str().expect("key id");
    assert_eq!(answered[0]["data"]["by"], admin_id, "the approver's key is logged");
    let r = receipts(&evs);
    let outcomes: Vec<&str> = r.iter().map(|r| r["outcome"].as_str().unwrap_or("")).collect();
    assert_eq!(outcomes, ["denied", "ok", "ok", "denied"]);
    assert!(r[1]["output"].as_str().expect("o").contains("exit code: "), "the approved push ran: {}", r[1]);
    assert!(r[3]["output"].as_str().expect("o").contains("never force"));
    assert_eq!(kinds(&evs).last().map(String::as_str), Some("turn_finished"));
    svc.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_cancel_retries_and_bad_input_keep_the_session_usable() {
    let model = Scripted::start(
        {
            let n = AtomicUsize::new(0);
            move |_| match n.fetch_add(1, Ordering::SeqCst) {
                0 => Reply::Status(429, r#"{"error":"slow down"}"#.into(), Some(1)),
                1 => Reply::Text("first".into()),
                2 => Reply::After(Duration::from_secs(30), Box::new(Reply::Text("too late".into()))),
                3 => {
                    tools(&[("shell", json!("not an object")), ("nope", json!({})), ("read_file", json!({"path": 7}))])
                }
                4 => Reply::Tools(vec![("shell".into(), "{\"command\": \"echo".into())]),
                5 => Reply::Text("recovered".into()),
                _ => Reply::Status(401, r#"{"error":{"message":"bad key"}}"#.into(), None),
            }
        },
        vec![],
    )
    .await
    .expect("model");
    let (_env, svc, api) = up(&[]).await;
    let sid = session(&api, &agent("robust", "openai", &model.openai_url(), json!({}))).await;
    let msg = |key: &str| json!({"content": "hello", "idempotency_key": key});

    // 429 with Retry-After is retried; a repeated key answers the same turn.
    let (code, first) = api.call(Method::POST, &format!("/v1/sessions/{sid}/messages"), Some(msg("k1"))).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let (code, again) = api.call(Method::POST, &format!("/v1/sessions/{sid}/messages"), Some(msg("k1"))).await;
    assert_eq!(
        (code, again["turn"].clone(), again["duplicate"].clone()),
        (StatusCode::OK, first["turn"].clone(), json!(true))
    );
    wait_status(&api, &sid, "idle").await;
    let (code, later) = api.call(Method::POST, &format!("/v1/sessions/{sid}/messages"), Some(msg("k1"))).await;
    assert_eq!(
        (code, later["turn"].clone()),
        (StatusCode::OK, first["turn"].clone()),
        "still the same turn afterwards"
    );
    assert_eq!(model.seen().len(), 2, "one 429, one answer");
    assert_eq!(kinds(&events(&api, &sid).await).iter().filter(|k| *k == "message").count(), 1);

    // A running turn refuses another message and stops when cancelled.
    say(&api, &sid, "take your time").await;
    wait_until(|| model.seen().len() == 3).await;
    let busy = api.call(Method::POST, &format!("/v1/sessions/{sid}/messages"), Some(json!({"content": "x"}))).await;
    assert_error(&busy, StatusCode::CONFLICT, "session_busy");
    api.ok(Method::POST, &format!("/v1/sessions/{sid}/cancel"), None).await;
    wait_status(&api, &sid, "idle").await;
    let evs = events(&api, &sid).await;
    assert_eq!(evs.last().expect("last")["data"]["reason"], "cancelled");

    // Wrong arguments, unknown tools and malformed JSON are shown to the model; the turn goes on.
    say(&api, &sid, "use tools badly").await;
    wait_status(&api, &sid, "idle").await;
    let evs = events(&api, &sid).await;
    let r = receipts(&evs);
    let errors: Vec<String> = r.iter().rev().take(4).map(|r| r["output"].as_str().unwrap_or("").to_owned()).collect();
    assert!(r.iter().rev().take(4).all(|r| r["outcome"] == "error"), "{r:?}");
    assert!(errors.iter().any(|e| e.contains("not valid JSON")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("unknown tool `nope`")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("invalid type")), "{errors:?}");
    assert_eq!(evs.last().expect("last")["data"]["reason"], "done");
    let seen = model.seen();
    assert_eq!(tool_results(seen.last().expect("seen")).len(), 4, "the model saw every error");

    // A provider's 401 ends the turn with a clear error event; the session stays usable.
    say(&api, &sid, "now fail").await;
    wait_status(&api, &sid, "idle").await;
    let evs = events(&api, &sid).await;
    let err = evs.iter().rev().find(|e| e["kind"] == "error").expect("error event");
    assert_eq!(err["data"]["code"], "model_auth", "{err}");
    assert_eq!(evs.last().expect("last")["data"]["reason"], "error");

    // Bad definitions and messages are refused up front.
    let url = model.openai_url();
    let cases = [
        (agent("x1", "gemini", &url, json!({})), "unknown model provider"),
        (agent("x2", "openai", "ftp://nowhere", json!({})), "must be an http(s) URL"),
        (agent("x7", "openai", "http://169.254.169.254/v1", json!({})), "link-local"),
        (agent("x8", "openai", "http://[fe80::1]:80/v1", json!({})), "link-local"),
        (agent("x3", "openai", &url, json!({"tools": ["shell", "teleport"]})), "unknown tool `teleport`"),
        (agent("x4", "openai", &url, json!({"skills": ["missing"]})), "skill `missing` does not exist"),
        (agent("x5", "openai", &url, json!({"approvals": {"shell": {"default": "maybe"}}})), "use allow, ask or deny"),
        (agent("bad name", "openai", &url, json!({})), "agent name"),
    ];
    for (spec, want) in cases {
        let got = api.call(Method::POST, "/v1/agents", Some(spec)).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid");
        assert!(got.1["message"].as_str().expect("m").contains(want), "{}", got.1);
    }
    let mut keyed = agent("x6", "openai", &url, json!({}));
    keyed["model"]["api_key_secret"] = json!("nope");
    assert_error(&api.call(Method::POST, "/v1/agents", Some(keyed)).await, StatusCode::BAD_REQUEST, "invalid");
    let big = "x".repeat(300 * 1024);
    let got = api.call(Method::POST, &format!("/v1/sessions/{sid}/messages"), Some(json!({"content": big}))).await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    let got = api.call(Method::POST, &format!("/v1/sessions/{sid}/messages"), Some(json!({"content": "  "}))).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid");

    // Another tenant sees none of it.
    let t = api.ok(Method::POST, "/v1/tenants", Some(json!({"name": "other"}))).await;
    let k = api.ok(Method::POST, "/v1/keys", Some(json!({"tenant_id": t["id"], "name": "k"}))).await;
    let other = svc.api(k["secret"].as_str().expect("secret"));
    for path in [format!("/v1/sessions/{sid}"), format!("/v1/sessions/{sid}/events"), "/v1/agents/robust".into()] {
        assert_error(&other.call(Method::GET, &path, None).await, StatusCode::NOT_FOUND, "not_found");
    }
    let got = other.call(Method::POST, &format!("/v1/sessions/{sid}/messages"), Some(json!({"content": "hi"}))).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(other.ok(Method::GET, "/v1/sessions", None).await["items"].as_array().map(Vec::len), Some(0));
    // The log is intact: every event reads back.
    assert!(events(&api, &sid).await.iter().all(|e| e["seq"].as_i64().is_some() && e["data"].is_object()));
    svc.terminate().await;
}

/// An upstream whose first request never gets an answer; later ones get `page-body`.
async fn first_hangs() -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    let task = tokio::spawn(async move {
        let held = Arc::new(Mutex::new(Vec::new()));
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (h, held) = (Arc::clone(&h), Arc::clone(&held));
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                if h.fetch_add(1, Ordering::SeqCst) == 0 {
                    held.lock().expect("held").push(tcp); // never answered
                    return;
                }
                let _ =
                    tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\npage-body").await;
            });
        }
    });
    (port, hits, task)
}

/// The test upstream's name, which the egress proxy resolves to loopback.
const RESOLVE: [&str; 2] = ["--resolve", "web.test=127.0.0.1"];

async fn restart(env: &Env, key: &str) -> (Service, Api) {
    let svc = env.up("a", &RESOLVE).await;
    let api = svc.api(key);
    (svc, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_turn_continues_without_repeating_side_effects() {
    let (port, hits, _upstream) = first_hangs().await;
    let hung = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let model = Scripted::start(
        {
            let hung = Arc::clone(&hung);
            move |seen: &Seen| {
                let done = tool_results(seen).len();
                // Each step's first request hangs where a kill is wanted (before the model answers).
                let hang_first = done == 0 || done == 2;
                if hang_first && hung.lock().expect("hung").insert(done) {
                    return Reply::Hang;
                }
                match done {
                    0 => tools(&[("shell", json!({"command": "echo one >> /workspace/log.txt && sleep 120"}))]),
                    1 => tools(&[("web_fetch", json!({"url": format!("http://web.test:{port}/page")}))]),
                    _ => Reply::Text("finished".into()),
                }
            }
        },
        vec![],
    )
    .await
    .expect("model");
    let env = Env::new();
    let svc = env.up("a", &RESOLVE).await;
    let key = svc.key().to_owned();
    let api = svc.admin();
    let allow = [format!("web.test:{port}"), format!("127.0.0.1:{port}")];
    let net = json!({"sandbox": {"network": {"mode": "allowlist", "allow": allow}}});
    let sid = session(&api, &agent("durable", "openai", &model.openai_url(), net)).await;
    say(&api, &sid, "do the work").await;

    // 1. Killed while the model has not answered: the request is made again.
    wait_until(|| model.seen().len() == 1).await;
    svc.kill9().await;
    let (svc, api) = restart(&env, &key).await;
    // 2. Killed between a mutating tool's intent and its receipt: it is not run again.
    wait_kind(&api, &sid, "tool_intent").await;
    let agent_id = api.ok(Method::GET, &format!("/v1/sessions/{sid}"), None).await["agent_id"]
        .as_str()
        .expect("agent id")
        .to_owned();
    let log = env.data("a").join("node/volumes").join(&agent_id).join("log.txt");
    // The command has started (its side effect is there), and holds.
    wait_until(|| std::fs::read_to_string(&log).is_ok_and(|t| t == "one\n")).await;
    svc.kill9().await;
    let (svc, _api) = restart(&env, &key).await;
    // 3. Killed while a read-only tool runs (its upstream holds the first request): it is run again.
    wait_until(|| hits.load(Ordering::SeqCst) == 1).await;
    svc.kill9().await;
    let (svc, _api) = restart(&env, &key).await;
    // 4. Killed after the receipt, before the model's next answer.
    wait_until(|| model.seen().iter().filter(|s| tool_results(s).len() == 2).count() == 1).await;
    svc.kill9().await;
    let (svc, api) = restart(&env, &key).await;

    let s = wait_status(&api, &sid, "idle").await;
    let evs = events(&api, &sid).await;
    assert_eq!(kinds(&evs).iter().filter(|k| *k == "message").count(), 1);
    let r = receipts(&evs);
    assert_eq!(r.len(), 2, "one receipt per call: {r:?}");
    assert_eq!(r[0]["outcome"], "unknown", "the interrupted shell is not re-run: {}", r[0]);
    assert!(r[0]["output"].as_str().expect("o").contains("outcome unknown"));
    assert_eq!(r[1]["outcome"], "ok", "the read-only fetch ran again: {}", r[1]);
    assert!(r[1]["output"].as_str().expect("o").contains("page-body"));
    assert_eq!(hits.load(Ordering::SeqCst), 2, "the fetch was made twice, once per run");
    let last = evs.last().expect("last");
    assert_eq!((last["kind"].as_str(), last["data"]["reason"].as_str()), (Some("turn_finished"), Some("done")));
    let finals: Vec<&Value> = evs.iter().filter(|e| e["kind"] == "model_response").collect();
    assert_eq!(finals.last().expect("answer")["data"]["text"], "finished");
    assert_eq!(kinds(&evs).iter().filter(|k| *k == "model_request").count(), 5, "two requests were made again");
    // The side effect happened exactly once, and the model was told so.
    let volume = env.data("a").join("node/volumes").join(s["agent_id"].as_str().expect("agent"));
    assert_eq!(std::fs::read_to_string(volume.join("log.txt")).expect("log.txt"), "one\n");
    let seqs: Vec<i64> = evs.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "the log has no gaps: {seqs:?}");
    svc.terminate().await;
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..800 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met in 20 s");
}

fn bundle(files: &[(&str, &str)]) -> Vec<u8> {
    let mut ar = tar::Builder::new(Vec::new());
    for (path, text) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        ar.append_data(&mut h, path, text.as_bytes()).expect("append");
    }
    ar.into_inner().expect("tar")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skills_are_versioned_mounted_read_only_and_described_in_context() {
    let model = Scripted::queue(vec![
        tools(&[(
            "shell",
            json!({"command": "cat /skills/greet/SKILL.md /skills/greet/hello.sh; touch /skills/greet/x"}),
        )]),
        Reply::Text("greeted".into()),
    ])
    .await
    .expect("model");
    let (_env, svc, api) = up(&[]).await;
    let put = |name: &str, body: Vec<u8>| api.req(Method::PUT, &format!("/v1/skills/{name}")).body(body).send();
    let skill_md = "---\nname: greet\ndescription: says hello politely\n---\nRun hello.sh.\n";
    let r = put("greet", bundle(&[("SKILL.md", skill_md), ("hello.sh", "echo hello\n")])).await.expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = put("greet", bundle(&[("SKILL.md", skill_md), ("hello.sh", "echo hello again\n")])).await.expect("put");
    let v2: Value = r.json().await.expect("json");
    assert_eq!(v2["version"], 2);
    for (name, body, want) in [
        ("greet", bundle(&[("README", "x")]), "no SKILL.md"),
        ("other", bundle(&[("SKILL.md", skill_md)]), "names the skill `greet`"),
        ("greet", b"not a tar".to_vec(), "tar"),
    ] {
        let r = put(name, body).await.expect("put");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let v: Value = r.json().await.expect("json");
        assert!(v["message"].as_str().expect("m").contains(want), "{v}");
    }
    let sid = session(&api, &agent("greeter", "openai", &model.openai_url(), json!({"skills": ["greet"]}))).await;
    say(&api, &sid, "greet me").await;
    wait_status(&api, &sid, "idle").await;
    let r = receipts(&events(&api, &sid).await);
    let out = r[0]["output"].as_str().expect("output");
    assert!(out.contains("Run hello.sh.") && out.contains("echo hello again"), "the latest version is mounted: {out}");
    assert!(out.contains("Read-only file system"), "{out}");
    let sys = system_of(&model.seen()[0]);
    assert!(sys.contains("- greet: says hello politely"), "{sys}");
    let list = api.ok(Method::GET, "/v1/skills", None).await;
    assert_eq!(list["items"][0]["version"], 2);
    svc.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_histories_are_compacted_and_the_log_keeps_everything() {
    let model = Scripted::start(
        |seen: &Seen| {
            let last = seen.body["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or_default();
            if last["content"].as_str().is_some_and(|c| c.starts_with("Summarise the conversation")) {
                Reply::Text("SUMMARY: the user pasted a long text about llamas.".into())
            } else {
                Reply::Text("noted".into())
            }
        },
        vec![],
    )
    .await
    .expect("model");
    let (_env, svc, api) = up(&[]).await;
    let spec = agent("compact", "openai", &model.openai_url(), json!({"budgets": {"context_tokens": 1000}}));
    let sid = session(&api, &spec).await;
    let long = "llamas ".repeat(1000);
    say(&api, &sid, &long).await;
    wait_status(&api, &sid, "idle").await;
    say(&api, &sid, "and now?").await;
    wait_status(&api, &sid, "idle").await;
    let evs = events(&api, &sid).await;
    let compaction = evs.iter().find(|e| e["kind"] == "compaction").expect("a compaction event");
    assert_eq!(
        compaction["data"]["upto_seq"],
        evs.iter().filter(|e| e["kind"] == "message").nth(1).expect("2nd")["seq"].as_i64().expect("seq") - 1
    );
    let seen = model.seen();
    let last = seen.last().expect("last");
    assert!(system_of(last).contains("SUMMARY: the user pasted"), "{}", system_of(last));
    let msgs = last.body["messages"].as_array().expect("m");
    assert_eq!(msgs.len(), 2, "system + the new message only: {msgs:?}");
    assert!(evs.iter().any(|e| e["data"]["content"] == long.as_str()), "the log keeps the original");
    svc.terminate().await;
}

/// Reads Server-Sent Events until `until` says stop: (id, event, data) each.
async fn sse(
    api: &Api,
    path: &str,
    last_id: Option<&str>,
    until: impl Fn(&str) -> bool,
) -> Vec<(Option<String>, String, Value)> {
    read_sse(open_sse(api, path, last_id).await, until).await
}

/// A session's event stream, subscribed once this returns.
async fn open_sse(api: &Api, path: &str, last_id: Option<&str>) -> reqwest::Response {
    let mut req = api.req(Method::GET, path);
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    let resp = req.send().await.expect("stream");
    assert_eq!(resp.status(), StatusCode::OK);
    resp
}

/// Its events as (id, kind, data), up to the first whose kind `until` accepts.
async fn read_sse(resp: reqwest::Response, until: impl Fn(&str) -> bool) -> Vec<(Option<String>, String, Value)> {
    use futures_util::StreamExt;
    let mut body = resp.bytes_stream();
    let (mut buf, mut out) = (String::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, body.next()).await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if event.is_empty() {
                continue;
            }
            let stop = until(&event);
            out.push((id, event, serde_json::from_str(&data).unwrap_or(Value::Null)));
            if stop {
                return out;
            }
        }
    }
    panic!("the stream ended early: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_has_deltas_and_resumes_from_the_last_event_id() {
    let model = Scripted::queue(vec![
        Reply::After(Duration::from_millis(300), Box::new(tools(&[("shell", json!({"command": "echo streamed"}))]))),
        Reply::Text("a fairly long streamed answer".into()),
    ])
    .await
    .expect("model");
    let (_env, svc, api) = up(&[]).await;
    let sid = session(&api, &agent("streamer", "openai", &model.openai_url(), json!({}))).await;
    let path = format!("/v1/sessions/{sid}/events/stream");
    // Subscribed before the message goes: the deltas are live only.
    let follower = tokio::spawn(read_sse(open_sse(&api, &path, None).await, |e| e == "turn_finished"));
    say(&api, &sid, "stream please").await;
    let got = follower.await.expect("stream task");
    let names: Vec<&str> = got.iter().map(|(_, e, _)| e.as_str()).collect();
    assert_eq!(names.first(), Some(&"message"));
    let deltas: String =
        got.iter().filter(|(_, e, _)| e == "text_delta").map(|(_, _, d)| d["text"].as_str().unwrap_or("")).collect();
    assert_eq!(deltas, "a fairly long streamed answer", "{names:?}");
    assert!(got.iter().filter(|(_, e, _)| e == "text_delta").all(|(id, _, _)| id.is_none()), "deltas carry no id");
    for kind in ["tool_intent", "tool_receipt", "model_response", "turn_finished"] {
        assert!(names.contains(&kind), "{kind} in {names:?}");
    }
    // Resuming after the tool's receipt replays exactly what followed it.
    let receipt =
        got.iter().find(|(_, e, _)| e == "tool_receipt").and_then(|(id, _, _)| id.clone()).expect("receipt id");
    let resumed = sse(&api, &path, Some(&receipt), |e| e == "turn_finished").await;
    let first = resumed.first().expect("first");
    assert_eq!(first.0.as_deref().and_then(|i| i.parse::<i64>().ok()), receipt.parse::<i64>().ok().map(|r| r + 1));
    assert_eq!(first.2["seq"].as_i64(), receipt.parse::<i64>().ok().map(|r| r + 1));
    svc.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_defines_agents_pushes_skills_and_chats_with_inline_approvals() {
    let model = Scripted::queue(vec![
        tools(&[("shell", json!({"command": "git push origin main || echo pushed-anyway"}))]),
        Reply::Text("Pushed as asked.".into()),
        tools(&[("shell", json!({"command": "git push --tags"}))]),
        Reply::Text("Not pushed.".into()),
    ])
    .await
    .expect("model");
    let env = Env::new();
    let svc = env.up("a", &[]).await;
    let dir = env.dir.path().join("skill");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("SKILL.md"), "---\nname: deploy\ndescription: how to deploy\n---\n").expect("skill");
    let (code, out, err) = cli(&env, &["skill", "push", dir.to_str().expect("utf8")], "").await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("deploy v1"), "{out}");
    let url = model.openai_url();
    let args =
        ["agent", "create", "ops", "--base-url", &url, "--model", "m", "--skill", "deploy", "--ask", "git push*"];
    let (code, out, err) = cli(&env, &args, "").await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("reins chat ops"), "{out}");
    let (code, out, _) = cli(&env, &["agent", "ls", "--json"], "").await;
    assert_eq!(code, Some(0));
    let list: Vec<Value> = serde_json::from_str(&out).expect("json");
    assert_eq!(list[0]["approvals"]["shell"]["rules"][0]["action"], "ask");

    // Two messages; the first push is approved inline, the second denied.
    let (code, out, err) = cli(&env, &["chat", "ops"], "push it\ny\npush tags\nn\n").await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("? approval") && out.contains("git push origin main"), "{out}");
    assert!(out.contains("agent> Pushed as asked."), "{out}");
    assert!(out.contains("pushed-anyway"), "the approved command ran: {out}");
    assert!(out.contains("denied") && out.contains("agent> Not pushed."), "{out}");
    let session = err.split_whitespace().nth(1).expect("session id in the banner").to_owned();
    let (code, out, _) = cli(&env, &["session", "show", &session], "").await;
    assert_eq!(code, Some(0));
    assert!(out.starts_with("you> push it"), "{out}");
    let (_, out, _) = cli(&env, &["session", "ls", "--agent", "ops", "--json"], "").await;
    let sessions: Vec<Value> = serde_json::from_str(&out).expect("json");
    assert_eq!(sessions[0]["status"], "idle");
    let (code, _, err) = cli(&env, &["session", "approve", &session], "").await;
    assert_ne!(code, Some(0));
    assert!(err.contains("waits for no approval"), "{err}");
    let (code, _, err) = cli(&env, &["agent", "create", "bad", "--base-url", "nope", "--model", "m"], "").await;
    assert_ne!(code, Some(0));
    assert!(err.contains("must be an http(s) URL"), "{err}");
    let (code, _, _) = cli(&env, &["agent", "rm", "ops"], "").await;
    assert_eq!(code, Some(0));
    svc.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_edit_read_search_clip_and_time_out_as_the_model_is_told() {
    let model = Scripted::queue(vec![
        tools(&[
            ("write_file", json!({"path": "src/a.txt", "content": "one\ntwo\ntwo\nthree\n"})),
            ("edit_file", json!({"path": "src/a.txt", "old_string": "two", "new_string": "2"})),
            ("edit_file", json!({"path": "src/a.txt", "old_string": "four", "new_string": "4"})),
            ("edit_file", json!({"path": "src/a.txt", "old_string": "one\n", "new_string": "1\n"})),
            ("read_file", json!({"path": "src/a.txt", "start_line": 2, "end_line": 3})),
            ("search", json!({"pattern": "^t(wo|hree)$", "glob": "*.txt"})),
            ("list_files", json!({"path": "src"})),
            ("shell", json!({"command": "seq 1 100000"})),
            ("shell", json!({"command": "sleep 30", "timeout_secs": 1})),
            ("memory", json!({"action": "read"})),
        ]),
        Reply::Text("checked".into()),
    ])
    .await
    .expect("model");
    let (_env, svc, api) = up(&[]).await;
    let sid = session(&api, &agent("tooler", "openai", &model.openai_url(), json!({}))).await;
    say(&api, &sid, "exercise the tools").await;
    wait_status(&api, &sid, "idle").await;
    let r = receipts(&events(&api, &sid).await);
    let out = |i: usize| r[i]["output"].as_str().unwrap_or_default().to_owned();
    assert_eq!(r.len(), 10);
    assert_eq!(r[1]["outcome"], "error");
    assert!(out(1).contains("occurs 2 times"), "{}", out(1));
    assert!(out(2).contains("was not found"), "{}", out(2));
    assert_eq!(
        (r[3]["outcome"].as_str(), out(3).as_str()),
        (Some("ok"), "replaced 1 occurrence in /workspace/src/a.txt")
    );
    assert_eq!(out(4), "[/workspace/src/a.txt: lines 2-3 of 4]\ntwo\ntwo\n");
    assert!(out(5).contains("a.txt:2:two") && out(5).contains("a.txt:4:three"), "{}", out(5));
    assert!(out(6).contains("a.txt"), "{}", out(6));
    assert!(
        out(7).contains("output truncated") && out(7).contains("100000") && out(7).len() < 17_000,
        "{}",
        out(7).len()
    );
    assert!(out(8).contains("timed out after 1 s"), "{}", out(8));
    assert_eq!(out(9), "MEMORY.md is empty");
    svc.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_and_an_unreachable_model_end_the_turn_with_a_reason() {
    let model = Scripted::start(|_| tools(&[("shell", json!({"command": "true"}))]), vec![]).await.expect("model");
    let (_env, svc, api) = up(&["--model-attempts", "2", "--model-backoff-ms", "10"]).await;
    let sid =
        session(&api, &agent("looper", "openai", &model.openai_url(), json!({"budgets": {"max_steps": 3}}))).await;
    say(&api, &sid, "loop forever").await;
    wait_status(&api, &sid, "idle").await;
    let evs = events(&api, &sid).await;
    let last = evs.last().expect("last");
    assert_eq!(last["data"]["reason"], "max_steps", "{last}");
    assert!(last["data"]["message"].as_str().expect("m").contains("3 model calls"));
    assert_eq!(model.seen().len(), 3);

    let gone = agent("gone", "openai", "http://127.0.0.1:9/v1", json!({}));
    let sid = session(&api, &gone).await;
    say(&api, &sid, "anyone there?").await;
    wait_status(&api, &sid, "idle").await;
    let evs = events(&api, &sid).await;
    let err = evs.iter().find(|e| e["kind"] == "error").expect("error");
    assert_eq!(err["data"]["code"], "model_unreachable", "{err}");
    assert!(err["data"]["message"].as_str().expect("m").contains("127.0.0.1:9"), "{err}");
    assert_eq!(kinds(&evs).iter().filter(|k| *k == "model_request").count(), 1, "retries are inside one request event");
    say(&api, &sid, "still usable").await; // the session takes messages again
    svc.terminate().await;
}
