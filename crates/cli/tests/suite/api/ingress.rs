//! Ingress: a sandbox's ports through the control plane, by path and by
//! host, private behind the sandbox's access token unless made public, and
//! upgrades (WebSocket and the like) as a duplex tunnel.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{assert_error, Env};

/// A server inside the sandbox on 127.0.0.1:8000: `GET /…` answers the path
/// and the request's Host and X-Access-Token headers; a request with
/// `Upgrade: echo` is switched and then echoed byte for byte.
const SERVER: &str = r#"
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 8000)); s.listen(16)
def serve(c):
    data = b""
    while b"\r\n\r\n" not in data:
        part = c.recv(4096)
        if not part: return
        data += part
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    hdr = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    if hdr.get("upgrade") == "echo":
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n" + rest)
        while True:
            d = c.recv(4096)
            if not d: break
            c.sendall(d)
    else:
        body = ("%s host=%s token=%s\n" % (lines[0].split()[1], hdr.get("host"), hdr.get("x-access-token"))).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

#[tokio::test]
async fn ports_are_reached_by_path_and_host_with_the_sandbox_token() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let api = up.admin();
    let created = api.ok(Method::POST, "/v1/sandboxes", Some(json!({}))).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let token = created["access_token"].as_str().expect("token returned at create").to_owned();
    let got = api.ok(Method::GET, &format!("/v1/sandboxes/{id}"), None).await;
    assert!(got.get("access_token").is_none(), "the token is shown only once");
    let script =
        format!("cat > /tmp/srv.py <<'EOF'\n{SERVER}\nEOF\n(setsid python3 /tmp/srv.py >/dev/null 2>&1 &) ; sleep 0.5");
    api.exec(&id, &["bash", "-c", &script]).await;

    let http = reqwest::Client::new();
    let path = format!("{}/v1/sandboxes/{id}/ports/8000/hello?x=1", up.url);
    let r = http.get(&path).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http.get(&path).header("x-access-token", "sbt_wrong").send().await.expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "a wrong token learns nothing");
    let r = http.get(&path).header("x-access-token", &token).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.expect("body");
    assert!(
        body.starts_with("/hello?x=1 host=") && body.ends_with("token=None\n"),
        "the token is not passed on: {body}"
    );

    // The node's own instructions cannot be smuggled in.
    let r = http
        .get(&path)
        .header("x-access-token", &token)
        .header("x-reins-port-tunnel", "1")
        .header("x-reins-port-path", "/elsewhere")
        .send()
        .await
        .expect("send");
    assert!(r.text().await.expect("body").starts_with("/hello?x=1 host="));

    // By host: {port}-{id}.localhost, whatever the path.
    let addr = up.url.trim_start_matches("http://").to_owned();
    let host = format!("8000-{id}.localhost:{}", addr.rsplit(':').next().expect("port"));
    let r =
        http.get(format!("{}/some/where", up.url)).header("host", &host).header("x-access-token", &token).send().await;
    let body = r.expect("send").text().await.expect("body");
    assert_eq!(body, format!("/some/where host={host} token=None\n"));

    // A closed port, an unknown sandbox.
    let r = http.get(format!("{}/v1/sandboxes/{id}/ports/8001/", up.url)).header("x-access-token", &token).send().await;
    let r = r.expect("send");
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let v: serde_json::Value = r.json().await.expect("json error");
    assert_eq!(v["code"], "port_closed");
    let r = http.get(format!("{}/v1/sandboxes/nosuchsandbox/ports/8000/", up.url)).header("x-access-token", &token);
    assert_eq!(r.send().await.expect("send").status(), StatusCode::NOT_FOUND);

    // Made public, no token is needed; another tenant cannot change it.
    let tenant = api.ok(Method::POST, "/v1/tenants", Some(json!({"name": "other"}))).await;
    let key = api.ok(Method::POST, "/v1/keys", Some(json!({"tenant_id": tenant["id"], "name": "k"}))).await;
    let theirs = up.api(key["secret"].as_str().expect("secret"));
    let r =
        theirs.call(Method::PUT, &format!("/v1/sandboxes/{id}/access/ports/8000"), Some(json!({"public": true}))).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let v = api.ok(Method::PUT, &format!("/v1/sandboxes/{id}/access/ports/8000"), Some(json!({"public": true}))).await;
    assert_eq!(v["public_ports"], json!([8000]));
    let r = http.get(&path).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    api.ok(Method::PUT, &format!("/v1/sandboxes/{id}/access/ports/8000"), Some(json!({"public": false}))).await;
    assert_eq!(http.get(&path).send().await.expect("send").status(), StatusCode::UNAUTHORIZED);

    // An upgrade becomes a tunnel, both ways.
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let req = format!(
        "GET /v1/sandboxes/{id}/ports/8000/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: echo\r\nConnection: Upgrade\r\nX-Access-Token: {token}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
    for msg in ["ping", "a longer message through the tunnel"] {
        s.write_all(msg.as_bytes()).await.expect("write");
        let mut echoed = Vec::new();
        while echoed.len() < msg.len() {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0);
            echoed.extend_from_slice(&buf[..n]);
        }
        assert_eq!(echoed, msg.as_bytes());
    }
    api.ok(Method::DELETE, &format!("/v1/sandboxes/{id}"), None).await;
    let r = http.get(&path).header("x-access-token", &token).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "a deleted sandbox's ports are gone");
}
