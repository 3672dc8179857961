//! Keys, tenants and the node protocol's authentication.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{assert_error, Env};

#[tokio::test]
async fn tenants_see_only_their_own_sandboxes() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let admin = up.admin();
    let a = admin.ok(Method::POST, "/v1/tenants", Some(json!({"name": "alpha", "max_sandboxes": 2}))).await;
    let b = admin.ok(Method::POST, "/v1/tenants", Some(json!({"name": "beta"}))).await;
    assert_error(
        &admin.call(Method::POST, "/v1/tenants", Some(json!({"name": "alpha"}))).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    let key_a = admin.ok(Method::POST, "/v1/keys", Some(json!({"name": "a", "tenant_id": a["id"]}))).await;
    let key_b = admin.ok(Method::POST, "/v1/keys", Some(json!({"name": "b", "tenant_id": b["id"]}))).await;
    let (ta, tb) =
        (up.api(key_a["secret"].as_str().expect("secret")), up.api(key_b["secret"].as_str().expect("secret")));

    let id = ta.create(json!({})).await;
    let paths = [
        (Method::GET, format!("/v1/sandboxes/{id}"), None),
        (Method::DELETE, format!("/v1/sandboxes/{id}"), None),
        (Method::POST, format!("/v1/sandboxes/{id}/exec"), Some(json!({"cmd": ["true"]}))),
        (Method::POST, format!("/v1/sandboxes/{id}/exec/stream"), Some(json!({"cmd": ["true"]}))),
        (Method::POST, format!("/v1/sandboxes/{id}/timeout"), Some(json!({"timeout_secs": 10}))),
        (Method::POST, format!("/v1/sandboxes/{id}/pause"), None),
        (Method::GET, format!("/v1/sandboxes/{id}/files?path=/etc/hostname"), None),
        (Method::GET, format!("/v1/sandboxes/{id}/files/list?path=/"), None),
        (Method::POST, format!("/v1/sandboxes/{id}/files/mkdir"), Some(json!({"path": "/tmp/x"}))),
    ];
    for (m, p, body) in paths.iter().cloned() {
        // Another tenant, and the admin of the default tenant, get 404: never 403.
        assert_error(&tb.call(m.clone(), &p, body.clone()).await, StatusCode::NOT_FOUND, "not_found");
        assert_error(&admin.call(m, &p, body).await, StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(ta.exec(&id, &["echo", "still mine"]).await["stdout"], "still mine\n");
    assert!(tb.ok(Method::GET, "/v1/sandboxes", None).await["items"].as_array().expect("items").is_empty());

    // Quota: 429 with a retry hint, and the sandboxes are still fine.
    ta.create(json!({})).await;
    let resp = ta.req(Method::POST, "/v1/sandboxes").json(&json!({})).send().await.expect("create");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));

    // A tenant key cannot administer.
    assert_error(
        &ta.call(Method::POST, "/v1/tenants", Some(json!({"name": "x"}))).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(&ta.call(Method::GET, "/v1/tenants", None).await, StatusCode::FORBIDDEN, "forbidden");
    assert_error(
        &ta.call(Method::POST, "/v1/keys", Some(json!({"name": "x", "admin": true}))).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &ta.call(Method::POST, "/v1/keys", Some(json!({"name": "x", "tenant_id": b["id"]}))).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &ta.call(Method::GET, &format!("/v1/keys?tenant_id={}", b["id"].as_str().expect("id")), None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(&ta.call(Method::POST, "/v1/nodes/tokens", None).await, StatusCode::FORBIDDEN, "forbidden");

    // Keys: listed without secrets, revocable, revoked keys are refused.
    let second = ta.ok(Method::POST, "/v1/keys", Some(json!({"name": "second"}))).await;
    let keys = ta.ok(Method::GET, "/v1/keys", None).await;
    assert_eq!(keys["items"].as_array().expect("items").len(), 2);
    assert!(!keys.to_string().contains(second["secret"].as_str().expect("secret")), "a listing shows a secret");
    let kid = key_b["id"].as_str().expect("id");
    assert_error(&ta.call(Method::DELETE, &format!("/v1/keys/{kid}"), None).await, StatusCode::NOT_FOUND, "not_found");
    tb.ok(Method::DELETE, &format!("/v1/keys/{kid}"), None).await;
    assert_error(&tb.call(Method::GET, "/v1/sandboxes", None).await, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_error(
        &up.api("reins_not_a_key").call(Method::GET, "/v1/sandboxes", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let anon = reqwest::Client::new().get(format!("{}/v1/sandboxes", up.url)).send().await.expect("anon");
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    // X-API-Key works too (E2B clients send it).
    let via_header = reqwest::Client::new()
        .get(format!("{}/v1/sandboxes", up.url))
        .header("X-API-Key", key_a["secret"].as_str().expect("secret"))
        .send()
        .await
        .expect("x-api-key");
    assert_eq!(via_header.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_admin_key_is_printed_once_and_stored_hashed() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let key = up.key().to_owned();
    up.terminate().await;
    let db = std::fs::read(env.data("d").join("reins.db")).expect("db");
    let wal = std::fs::read(env.data("d").join("reins.db-wal")).unwrap_or_default();
    let find = |hay: &[u8]| hay.windows(key.len()).any(|w| w == key.as_bytes());
    assert!(!find(&db) && !find(&wal), "the admin key is stored in clear");
    let again = env.up("d", &[]).await;
    assert!(again.admin_key.is_none(), "a second start printed a new admin key");
    assert_eq!(again.api(&key).call(Method::GET, "/v1/sandboxes", None).await.0, StatusCode::OK);
    let config = std::fs::read_to_string(env.dir.path().join("config/reins/config.json")).expect("config");
    assert!(config.contains(&key));
    let mode = std::fs::metadata(env.dir.path().join("config/reins/config.json"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
        .expect("mode");
    assert_eq!(mode & 0o077, 0, "the CLI config is readable by others");
}

#[tokio::test]
async fn join_tokens_work_once_and_the_gateway_refuses_strangers() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let admin = up.admin();
    let token = admin.ok(Method::POST, "/v1/nodes/tokens", None).await["token"].as_str().expect("token").to_owned();
    let cert = reins_tls::Identity::generate("node.reins.internal").expect("cert");
    let join = |token: &str, pem: &str| json!({"token": token, "name": "n1", "cert_pem": pem});
    let anon = super::Api { http: reqwest::Client::new(), url: up.url.clone(), key: String::new() };
    assert_error(
        &anon.call(Method::POST, "/v1/nodes/join", Some(join("join_bogus", &cert.cert_pem))).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        &anon.call(Method::POST, "/v1/nodes/join", Some(join(&token, "not a pem"))).await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    let ok = anon.ok(Method::POST, "/v1/nodes/join", Some(join(&token, &cert.cert_pem))).await;
    assert!(ok["gateway_cert_pem"].as_str().is_some_and(|p| p.contains("BEGIN CERTIFICATE")));
    let other = reins_tls::Identity::generate("node.reins.internal").expect("cert");
    assert_error(
        &anon.call(Method::POST, "/v1/nodes/join", Some(join(&token, &other.cert_pem))).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    let gateway = up.gateway.clone().expect("gateway address printed");
    // Plain TCP speaking HTTP gets nothing back.
    let mut tcp = tokio::net::TcpStream::connect(&gateway).await.expect("tcp");
    tcp.write_all(b"GET /node/v1/status HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"), "plain text was answered");

    // A TLS client with a certificate the control plane never admitted is cut off
    // before any HTTP/2 frame of the control plane arrives.
    let gw_pem = ok["gateway_cert_pem"].as_str().expect("pem");
    let cfg = reins_tls::node_client(&other, gw_pem).expect("config");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(&gateway).await.expect("tcp");
    let name = reins_tls::rustls::pki_types::ServerName::try_from("gateway.reins.internal").expect("name");
    let mut read = 0;
    if let Ok(mut tls) = connector.connect(name, tcp).await {
        let mut buf = [0u8; 1024];
        read = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut buf))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
    }
    assert_eq!(read, 0, "an unknown node received data from the gateway");

    // The registered one (same key as `cert`) is answered: the control plane speaks HTTP/2 first.
    let cfg = reins_tls::node_client(&cert, gw_pem).expect("config");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(&gateway).await.expect("tcp");
    let name = reins_tls::rustls::pki_types::ServerName::try_from("gateway.reins.internal").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("known node connects");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("answer")
        .expect("read");
    assert!(n >= 24 && buf.starts_with(b"PRI * HTTP/2.0"), "expected the HTTP/2 preface from the control plane");
}
