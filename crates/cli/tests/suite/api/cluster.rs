//! Durability and the control-plane/node split: `kill -9` loses no committed
//! data; a restarted control plane adopts the sandboxes its node still runs.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{reusable_port, Env, Service};

#[tokio::test]
async fn data_survives_kill_9_and_lost_sandboxes_are_marked() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let admin = up.admin();
    let tenant = admin.ok(Method::POST, "/v1/tenants", Some(json!({"name": "durable", "max_sandboxes": 1}))).await;
    let key = admin.ok(Method::POST, "/v1/keys", Some(json!({"name": "k", "tenant_id": tenant["id"]}))).await;
    let api = up.api(key["secret"].as_str().expect("secret"));
    let id = api.create(json!({"metadata": {"keep": "me"}})).await;
    api.exec(&id, &["bash", "-c", "exec -a reins-kill9-marker sleep 600 &"]).await;
    up.kill9().await;
    // Sandboxes die with their supervisor.
    for _ in 0..250 {
        if crate::suite::host_processes_with("reins-kill9-marker").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        crate::suite::host_processes_with("reins-kill9-marker").is_empty(),
        "a sandbox outlived kill -9 of its node"
    );

    let up = env.up("d", &[]).await;
    let api = up.api(key["secret"].as_str().expect("secret"));
    let got = api.ok(Method::GET, &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(got["metadata"]["keep"], "me");
    // The node came back without it: reconciliation marks it lost and frees the quota.
    let mut reason = String::new();
    for _ in 0..100 {
        reason = api.ok(Method::GET, &format!("/v1/sandboxes/{id}"), None).await["end_reason"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if reason == "lost" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reason, "lost");
    api.create(json!({})).await;
}

#[tokio::test]
async fn a_restarted_control_plane_adopts_running_sandboxes() {
    let env = Env::new();
    let port = reusable_port();
    let gw = format!("127.0.0.1:{port}");
    let server = |env: &Env| {
        let mut c = env.command(&env.data("server"));
        c.args(["server", "--listen", "127.0.0.1:0", "--gateway-listen", &gw]);
        c
    };
    let cp = Service::spawn_unready(server(&env), "Reins control plane at ").await;
    let admin = cp.admin();
    let token = admin.ok(Method::POST, "/v1/nodes/tokens", None).await["token"].as_str().expect("token").to_owned();
    let mut node = env.command(&env.data("node"));
    node.args(["node", "--join", &cp.url, "--token", &token, "--name", "worker"]);
    let node = Service::spawn_unready(node, "node ").await;
    cp.wait_ready().await;
    let id = admin.create(json!({})).await;
    admin.exec(&id, &["bash", "-c", "echo kept > /tmp/state"]).await;
    let other = admin.create(json!({})).await;
    let key = cp.key().to_owned();
    cp.kill9().await;
    // Deleted while the control plane is away? No: the node keeps running both.
    let cp = Service::spawn_unready(server(&env), "Reins control plane at ").await;
    cp.wait_ready().await;
    let admin = cp.api(&key);
    assert_eq!(admin.exec(&id, &["cat", "/tmp/state"]).await["stdout"], "kept\n", "the sandbox was not adopted");
    let nodes = admin.ok(Method::GET, "/v1/nodes", None).await;
    assert_eq!(nodes["items"].as_array().expect("nodes").len(), 1);
    assert_eq!(nodes["items"][0]["connected"], true);
    assert_eq!(admin.call(Method::DELETE, &format!("/v1/sandboxes/{other}"), None).await.0, StatusCode::NO_CONTENT);
    let tenants = admin.ok(Method::GET, "/v1/tenants", None).await;
    assert_eq!(tenants["items"][0]["active"], 1, "double-counted after the restart: {tenants}");
    drop(node);
}
