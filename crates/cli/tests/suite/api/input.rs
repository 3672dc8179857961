//! Bad input gets a clear error with the right status, and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{assert_error, Env};

#[tokio::test]
async fn bad_requests_are_refused_with_structured_errors() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let api = up.admin();
    let bad = StatusCode::BAD_REQUEST;
    for body in [
        json!({"unknown_field": 1}),
        json!({"memory_mb": 1}),
        json!({"memory_mb": 0}),
        json!({"memory_mb": u64::MAX}),
        json!({"cpus": -1}),
        json!({"cpus": 5000}),
        json!({"pids": 2}),
        json!({"disk_mb": 0}),
        json!({"template": "../etc"}),
        json!({"env": {"1BAD": "x"}}),
        json!({"env": {"A": "nul\u{0}"}}),
        json!({"metadata": {"k=v": "x"}}),
        json!({"timeout_secs": 0}),
        json!({"timeout_secs": 10_000_000}),
    ] {
        let got = api.call(Method::POST, "/v1/sandboxes", Some(body.clone())).await;
        assert!(got.0 == bad || got.0 == StatusCode::UNPROCESSABLE_ENTITY, "{body}: {got:?}");
        assert!(got.1["code"].is_string() && got.1["message"].is_string(), "{body}: {got:?}");
    }
    assert_error(
        &api.call(Method::POST, "/v1/sandboxes", Some(json!({"template": "missing"}))).await,
        StatusCode::NOT_FOUND,
        "template_not_found",
    );
    let raw = api
        .req(Method::POST, "/v1/sandboxes")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(raw.status(), bad);
    let no_type = api.req(Method::POST, "/v1/sandboxes").body("{}").send().await.expect("send");
    assert_eq!(no_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = api
        .req(Method::POST, "/v1/sandboxes")
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .expect("send");
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&api.call(Method::GET, "/v1/sandboxes?limit=0", None).await, bad, "invalid");
    assert_error(&api.call(Method::GET, "/v1/sandboxes?state=zombie", None).await, bad, "invalid");
    assert_error(&api.call(Method::GET, "/v1/sandboxes?cursor=!!", None).await, bad, "invalid");
    assert_error(&api.call(Method::GET, "/v1/sandboxes?bogus=1", None).await, bad, "invalid_query");
    assert_error(&api.call(Method::GET, "/v1/nope", None).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &api.call(Method::PATCH, "/v1/sandboxes", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert_error(
        &api.call(Method::GET, "/v1/sandboxes/does-not-exist", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let id = api.create(json!({})).await;
    for body in [
        json!({"cmd": []}),
        json!({"cmd": [""]}),
        json!({"cmd": ["a\u{0}b"]}),
        json!({"cmd": ["true"], "cwd": "rel"}),
        json!({"cmd": ["true"], "timeout_secs": 0}),
        json!({"cmd": "true"}),
    ] {
        let got = api.call(Method::POST, &format!("/v1/sandboxes/{id}/exec"), Some(body.clone())).await;
        assert!(got.0 == bad || got.0 == StatusCode::UNPROCESSABLE_ENTITY, "{body}: {got:?}");
    }
    // Nothing of the above created a sandbox or broke this one.
    let list = api.ok(Method::GET, "/v1/sandboxes", None).await;
    assert_eq!(list["items"].as_array().expect("items").len(), 1);
    assert_eq!(api.exec(&id, &["echo", "fine"]).await["stdout"], "fine\n");
}

#[tokio::test]
async fn bodies_must_be_objects_and_tiny_cpu_quotas_are_refused() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let api = up.admin();
    for body in [json!([null, null]), json!(null), json!("x"), json!(3)] {
        let got = api.call(Method::POST, "/v1/sandboxes", Some(body.clone())).await;
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    }
    // Found by the schema fuzzer: 0.001 CPU is below the kernel's smallest CFS quota.
    assert_error(
        &api.call(Method::POST, "/v1/sandboxes", Some(json!({"cpus": 0.001}))).await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    let id = api.create(json!({"cpus": 0.01})).await;
    assert_eq!(api.exec(&id, &["echo", "slow but fine"]).await["stdout"], "slow but fine\n");
    assert_error(
        &api.call(Method::POST, "/v1/tenants", Some(json!({"name": "big", "max_sandboxes": 2147483648u64}))).await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    assert!(api.ok(Method::GET, "/v1/sandboxes", None).await["items"].as_array().is_some_and(|a| a.len() == 1));
}
