//! E2B's wire protocol at its edges: bad REST input and bad Connect frames
//! get E2B's errors, and the sandbox and server keep working. (The SDK
//! conformance suite is tests/e2b, with the real SDKs.)

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{Env, Service};

async fn rest(svc: &Service, key: &str, method: Method, path: &str, body: Option<&str>) -> (StatusCode, Value) {
    let mut r = reqwest::Client::new().request(method, format!("{}{path}", svc.url)).header("X-API-KEY", key);
    if let Some(b) = body {
        r = r.header("content-type", "application/json").body(b.to_owned());
    }
    let resp = r.send().await.expect("request");
    let status = resp.status();
    (status, serde_json::from_slice(&resp.bytes().await.expect("body")).unwrap_or(Value::Null))
}

fn envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// An envd call: (status, body bytes).
async fn envd(
    svc: &Service,
    id: &str,
    token: Option<&str>,
    path: &str,
    ct: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let mut r = reqwest::Client::new()
        .post(format!("{}{path}", svc.url))
        .header("content-type", ct)
        .header("connect-protocol-version", "1")
        .header("e2b-sandbox-id", id)
        .header("e2b-sandbox-port", "49983")
        .body(body);
    if let Some(t) = token {
        r = r.header("x-access-token", t);
    }
    let resp = r.send().await.expect("envd");
    (resp.status(), resp.bytes().await.expect("body").to_vec())
}

/// (token, path, content type, body, expected status, expected Connect code)
type EnvdCase<'a> = (Option<&'a str>, &'a str, &'a str, Vec<u8>, StatusCode, &'a str);

fn connect_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).map(|v| v["code"].as_str().unwrap_or("").to_owned()).unwrap_or_default()
}

/// The messages of a Connect stream: (flags, JSON).
fn messages(mut b: &[u8]) -> Vec<(u8, Value)> {
    let mut out = Vec::new();
    while b.len() >= 5 {
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        out.push((b[0], serde_json::from_slice(&b[5..5 + len]).expect("json message")));
        b = &b[5 + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_e2b_input_gets_e2b_errors_and_nothing_breaks() {
    let env = Env::new();
    let svc = env.up("a", &[]).await;
    let key = svc.key().to_owned();
    let (s, sb) = rest(&svc, &key, Method::POST, "/v2/sandboxes", Some(r#"{"templateID":"base","timeout":60}"#)).await;
    assert_eq!(s, StatusCode::CREATED, "{sb}");
    let id = sb["sandboxID"].as_str().expect("id").to_owned();
    let token = sb["envdAccessToken"].as_str().expect("token").to_owned();
    assert!(!id.contains('-') && sb["envdVersion"].is_string());

    // REST: E2B's error body, `code` the HTTP status.
    for (method, path, body, want) in [
        (Method::POST, "/v2/sandboxes", Some("{not json"), StatusCode::BAD_REQUEST),
        (Method::POST, "/v2/sandboxes", Some(r#"{"timeout":5}"#), StatusCode::BAD_REQUEST),
        (Method::POST, "/sandboxes", Some(r#"{"templateID":"no-such-template"}"#), StatusCode::NOT_FOUND),
        (Method::POST, "/v2/sandboxes", Some(r#"{"templateID":"base","timeout":0}"#), StatusCode::BAD_REQUEST),
        (Method::GET, "/sandboxes/nosuchsandbox0000000", None, StatusCode::NOT_FOUND),
        (Method::POST, "/sandboxes/nosuchsandbox0000000/timeout", Some(r#"{"timeout":10}"#), StatusCode::NOT_FOUND),
        (Method::GET, "/v2/sandboxes?state=exploded", None, StatusCode::BAD_REQUEST),
    ] {
        let (s, v) = rest(&svc, &key, method.clone(), path, body).await;
        assert_eq!(s, want, "{method} {path}: {v}");
        assert_eq!(v["code"], want.as_u16(), "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    let (s, v) = rest(&svc, "reins_wrong", Method::GET, "/v2/sandboxes", None).await;
    assert_eq!((s, v["code"].as_u64()), (StatusCode::UNAUTHORIZED, Some(401)));

    // envd: Connect errors with the right codes.
    let start =
        |cmd: &str| json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd]}, "stdin": false}).to_string();
    let stream = "application/connect+json";
    let cases: Vec<EnvdCase> = vec![
        (Some(&token), "/process.Process/Start", stream, vec![0, 0, 0], StatusCode::BAD_REQUEST, "invalid_argument"),
        (
            Some(&token),
            "/process.Process/Start",
            stream,
            vec![0, 0xff, 0xff, 0xff, 0xff, b'{'],
            StatusCode::TOO_MANY_REQUESTS,
            "resource_exhausted",
        ),
        (
            Some(&token),
            "/process.Process/Start",
            stream,
            envelope(1, b"x"),
            StatusCode::NOT_IMPLEMENTED,
            "unimplemented",
        ),
        (
            Some(&token),
            "/process.Process/Start",
            stream,
            envelope(0, b"{not json"),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Some(&token),
            "/process.Process/Teleport",
            "application/json",
            b"{}".to_vec(),
            StatusCode::NOT_IMPLEMENTED,
            "unimplemented",
        ),
        (
            Some(&token),
            "/nosuch.Service/Method",
            "application/json",
            b"{}".to_vec(),
            StatusCode::NOT_IMPLEMENTED,
            "unimplemented",
        ),
        (
            Some(&token),
            "/process.Process/SendInput",
            "application/json",
            b"{oops".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Some(&token),
            "/filesystem.Filesystem/Stat",
            "application/json",
            br#"{"path":"/no/such"}"#.to_vec(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Some("sbt_wrong"),
            "/process.Process/Start",
            stream,
            envelope(0, start("echo x").as_bytes()),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            None,
            "/process.Process/Start",
            stream,
            envelope(0, start("echo x").as_bytes()),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
    ];
    for (tok, path, ct, body, status, code) in cases {
        let (s, b) = envd(&svc, &id, tok, path, ct, body).await;
        assert_eq!((s, connect_code(&b).as_str()), (status, code), "{path}: {}", String::from_utf8_lossy(&b));
    }

    // A client stream whose data comes before its start ends with an error in the end-of-stream message.
    let early = envelope(0, br#"{"data":{"input":{"stdin":"eA=="}}}"#);
    let (s, b) = envd(&svc, &id, Some(&token), "/process.Process/StreamInput", stream, early).await;
    let end = messages(&b);
    assert_eq!((s, end.len(), end[0].0), (StatusCode::OK, 1, 2), "{end:?}");
    assert_eq!(end[0].1["error"]["code"], "invalid_argument");

    // And the sandbox still answers.
    let (s, b) = envd(
        &svc,
        &id,
        Some(&token),
        "/process.Process/Start",
        stream,
        envelope(0, start("echo ok; exit 3").as_bytes()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let msgs = messages(&b);
    assert!(msgs[0].1["event"]["start"]["pid"].as_i64().is_some(), "{msgs:?}");
    assert_eq!(msgs[1].1["event"]["data"]["stdout"], "b2sK", "base64 of ok\\n");
    assert_eq!(msgs[msgs.len() - 2].1["event"]["end"]["exitCode"], 3);
    assert_eq!(msgs.last().map(|m| (m.0, m.1.clone())), Some((2, json!({}))), "end of stream");
    // The other way E2B clients address a sandbox: the host 49983-ID.DOMAIN.
    let port = svc.url.rsplit(':').next().expect("port").to_owned();
    let by_host = reqwest::Client::new()
        .post(format!("{}/process.Process/Start", svc.url))
        .header("host", format!("49983-{id}.localhost:{port}"))
        .header("content-type", stream)
        .header("x-access-token", &token)
        .body(envelope(0, start("echo by-host").as_bytes()))
        .send()
        .await
        .expect("by host");
    assert_eq!(by_host.status(), StatusCode::OK);
    let msgs = messages(&by_host.bytes().await.expect("body"));
    assert_eq!(msgs[1].1["event"]["data"]["stdout"], "YnktaG9zdAo=", "base64 of by-host\n");
    let (s, _) = rest(&svc, &key, Method::DELETE, &format!("/sandboxes/{id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) =
        envd(&svc, &id, Some(&token), "/process.Process/Start", stream, envelope(0, start("echo x").as_bytes())).await;
    assert_eq!((s, connect_code(&b).as_str()), (StatusCode::NOT_FOUND, "not_found"), "a killed sandbox is gone");
    svc.terminate().await;
}
