//! The interactive parts of the API: exec over a WebSocket (with and
//! without a terminal), streamed file watches, template import.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::{assert_error, Api, Env};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(api: &Api, id: &str) -> Ws {
    let url = format!("{}/v1/sandboxes/{id}/exec/ws", api.url.replacen("http", "ws", 1));
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert("authorization", format!("Bearer {}", api.key).parse().expect("header"));
    tokio_tungstenite::connect_async(req).await.expect("WebSocket upgrade").0
}

/// What a WebSocket session printed, per channel, and its last event.
#[derive(Default)]
struct Seen {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    events: Vec<Value>,
}

/// Reads until `until` holds for what was seen (or 10 s pass).
async fn read_until(ws: &mut Ws, seen: &mut Seen, until: impl Fn(&Seen) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !until(seen) {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("in time");
        match msg {
            Some(Ok(Message::Binary(b))) => match b.first() {
                Some(1) => seen.stdout.extend_from_slice(&b[1..]),
                Some(2) => seen.stderr.extend_from_slice(&b[1..]),
                other => panic!("unknown channel {other:?}"),
            },
            Some(Ok(Message::Text(t))) => seen.events.push(serde_json::from_str(&t).expect("event JSON")),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("socket broke: {e}"),
            None => break,
        }
    }
}

/// Sends a JSON text frame (the first `Exec`, or a control message).
async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.expect("send");
}

/// Connects, sends `first` and waits for the `start` event.
async fn started(api: &Api, id: &str, first: Value) -> (Ws, Seen) {
    let mut ws = connect(api, id).await;
    send_json(&mut ws, first).await;
    let mut seen = Seen::default();
    read_until(&mut ws, &mut seen, |s| !s.events.is_empty()).await;
    (ws, seen)
}

fn exited(s: &Seen) -> bool {
    s.events.iter().any(|e| e["type"] == "exit" || e["type"] == "error")
}

#[tokio::test]
async fn websocket_exec_streams_stdin_stdout_stderr_and_signals() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let api = up.admin();
    let id = api.create(json!({})).await;

    let mut ws = connect(&api, &id).await;
    let script = "while read l; do echo \"out:$l\"; echo \"err:$l\" >&2; done; exit 7";
    send_json(&mut ws, json!({"cmd": ["bash", "-c", script]})).await;
    ws.send(Message::Binary(b"one\ntwo\n".to_vec().into())).await.expect("stdin");
    send_json(&mut ws, json!({"type": "eof"})).await;
    let mut seen = Seen::default();
    read_until(&mut ws, &mut seen, exited).await;
    assert_eq!(seen.events.first().map(|e| e["type"].clone()), Some(json!("start")));
    assert_eq!(String::from_utf8_lossy(&seen.stdout), "out:one\nout:two\n");
    assert_eq!(String::from_utf8_lossy(&seen.stderr), "err:one\nerr:two\n");
    assert_eq!(seen.events.last().expect("exit")["exit_code"], 7);

    // A signal by name ends a command that would run on.
    let (mut ws, mut seen) = started(&api, &id, json!({"cmd": ["sleep", "30"]})).await;
    send_json(&mut ws, json!({"type": "signal", "signal": "TERM"})).await;
    read_until(&mut ws, &mut seen, exited).await;
    let exit = seen.events.last().expect("exit");
    assert_eq!((exit["type"].as_str(), exit["exit_code"].as_i64()), (Some("exit"), Some(128 + 15)), "{exit}");

    // A bad control message gets an error event and the socket is closed; the sandbox keeps working.
    let (mut ws, mut seen) = started(&api, &id, json!({"cmd": ["cat"]})).await;
    send_json(&mut ws, json!({"type": "bogus"})).await;
    read_until(&mut ws, &mut seen, exited).await;
    assert_eq!(seen.events.last().expect("error")["code"], "invalid");
    assert_eq!(api.exec(&id, &["echo", "still"]).await["stdout"], "still\n");
}

#[tokio::test]
async fn websocket_pty_has_a_terminal_that_resizes() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let api = up.admin();
    let id = api.create(json!({})).await;
    let mut ws = connect(&api, &id).await;
    let first = json!({"cmd": ["bash", "--norc", "--noprofile", "-i"], "pty": {"cols": 91, "rows": 23}});
    send_json(&mut ws, first).await;
    ws.send(Message::Binary(b"stty size; tty\n".to_vec().into())).await.expect("stdin");
    let mut seen = Seen::default();
    read_until(&mut ws, &mut seen, |s| String::from_utf8_lossy(&s.stdout).contains("/dev/pts/")).await;
    let out = String::from_utf8_lossy(&seen.stdout).into_owned();
    assert!(out.contains("23 91"), "{out}");
    assert!(seen.stderr.is_empty(), "a terminal has one output stream");

    send_json(&mut ws, json!({"type": "resize", "cols": 120, "rows": 40})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws.send(Message::Binary(b"stty size\n".to_vec().into())).await.expect("stdin");
    read_until(&mut ws, &mut seen, |s| String::from_utf8_lossy(&s.stdout).contains("40 120")).await;

    // Ctrl-C reaches the foreground command through the terminal, not the shell.
    ws.send(Message::Binary(b"sleep 29.75\n".to_vec().into())).await.expect("stdin");
    assert_eq!(crate::suite::settle_processes_with("sleep 29.75", 1).await, 1, "the command runs");
    ws.send(Message::Binary(vec![3].into())).await.expect("ctrl-c");
    ws.send(Message::Binary(b"echo after-$?\n".to_vec().into())).await.expect("stdin");
    read_until(&mut ws, &mut seen, |s| String::from_utf8_lossy(&s.stdout).contains("after-130")).await;
    ws.send(Message::Binary(b"exit 5\n".to_vec().into())).await.expect("stdin");
    read_until(&mut ws, &mut seen, exited).await;
    assert_eq!(seen.events.last().expect("exit")["exit_code"], 5);
}

#[tokio::test]
async fn websocket_refusals_are_clear() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let api = up.admin();
    // A plain GET (no upgrade) is a 400 with a body, another tenant's or a missing sandbox a 404.
    let plain = api.call(Method::GET, "/v1/sandboxes/nosuchsandbox/exec/ws", None).await;
    assert_error(&plain, StatusCode::NOT_FOUND, "not_found");
    let id = api.create(json!({})).await;
    let plain = api.call(Method::GET, &format!("/v1/sandboxes/{id}/exec/ws"), None).await;
    assert_error(&plain, StatusCode::BAD_REQUEST, "not_websocket");
    // A first frame that is not an Exec is answered with an error event.
    let mut ws = connect(&api, &id).await;
    send_json(&mut ws, json!({"cmd": []})).await;
    let mut seen = Seen::default();
    read_until(&mut ws, &mut seen, exited).await;
    assert_eq!(seen.events.last().expect("error")["code"], "invalid");
}

#[tokio::test]
async fn file_watch_streams_changes() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let api = up.admin();
    let id = api.create(json!({})).await;
    api.exec(&id, &["mkdir", "-p", "/home/user/w/sub"]).await;
    let resp = api
        .req(Method::GET, &format!("/v1/sandboxes/{id}/files/watch"))
        .query(&[("path", "/home/user/w"), ("recursive", "true")])
        .send()
        .await
        .expect("watch");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    api.exec(
        &id,
        &["bash", "-c", "echo x > /home/user/w/a.txt; echo y > /home/user/w/sub/b.txt; rm /home/user/w/a.txt"],
    )
    .await;
    let mut text = String::new();
    let want = ["/home/user/w/a.txt", "/home/user/w/sub/b.txt", "\"remove\""];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !want.iter().all(|w| text.contains(w)) {
        let chunk = tokio::time::timeout_at(deadline, body.next()).await.expect("events in time");
        text.push_str(&String::from_utf8_lossy(&chunk.expect("open").expect("chunk")));
    }
    assert!(text.contains("event: file"), "{text}");
    assert!(text.contains("\"kind\":\"create\""), "{text}");

    let missing = api.call(Method::GET, &format!("/v1/sandboxes/{id}/files/watch?path=/nowhere"), None).await;
    assert_eq!(missing.0, StatusCode::NOT_FOUND, "{}", missing.1);
    let relative = api.call(Method::GET, &format!("/v1/sandboxes/{id}/files/watch?path=rel"), None).await;
    assert_error(&relative, StatusCode::BAD_REQUEST, "invalid");
}

/// A minimal OCI image archive: one layer holding `hello.txt`.
fn oci_archive() -> Vec<u8> {
    use crate::suite::templates::{layer, oci_archive, Item};
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("image.tar");
    oci_archive(&path, &[layer(&[Item::File("hello.txt", "from the archive\n")])]);
    std::fs::read(&path).expect("archive")
}

#[tokio::test]
async fn templates_are_imported_through_the_api() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let api = up.admin();
    let resp = api.req(Method::PUT, "/v1/templates/hello").body(oci_archive()).send().await.expect("import");
    let status = resp.status();
    let t: Value = resp.json().await.expect("json");
    assert_eq!(status, StatusCode::CREATED, "{t}");
    assert_eq!(t["name"], "hello");
    let list = api.ok(Method::GET, "/v1/templates", None).await;
    assert!(list["items"].as_array().expect("items").iter().any(|i| i["name"] == "hello"), "{list}");
    let id = api.create(json!({"template": "hello"})).await;
    // The template has no programs: read the file back through the file API.
    let got = api.req(Method::GET, &format!("/v1/sandboxes/{id}/files?path=/hello.txt")).send().await.expect("get");
    assert_eq!(got.text().await.expect("text"), "from the archive\n");

    let bad = api.req(Method::PUT, "/v1/templates/broken").body(b"not a tar".to_vec()).send().await.expect("bad");
    let status = bad.status();
    let body: Value = bad.json().await.expect("error body");
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_template")), "{body}");
    let base = api.req(Method::PUT, "/v1/templates/base").body(oci_archive()).send().await.expect("base");
    assert_eq!(base.status(), StatusCode::CONFLICT);
    // Only admins import.
    let tenant = api.ok(Method::POST, "/v1/tenants", Some(json!({"name": "t"}))).await;
    let key = api.ok(Method::POST, "/v1/keys", Some(json!({"name": "k", "tenant_id": tenant["id"]}))).await;
    let user = up.api(key["secret"].as_str().expect("secret"));
    let denied = user.req(Method::PUT, "/v1/templates/x").body(oci_archive()).send().await.expect("denied");
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    api.ok(Method::DELETE, "/v1/templates/hello", None).await;
}

#[tokio::test]
async fn the_cli_shell_gets_a_terminal_and_templates_go_through_the_server() {
    let env = Env::new();
    let up = env.up("d", &[]).await;
    let id = up.admin().create(json!({})).await;
    // `script` gives `reins sandbox shell` a real terminal, as a user's shell would.
    let cmd =
        format!("stty cols 97 rows 31; {} sandbox shell {id} -- bash --norc -i", crate::suite::reins_bin().display());
    let config = env.dir.path().join("config");
    let session = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("XDG_CONFIG_HOME", config)
            .env_remove("REINS_URL")
            .env_remove("REINS_API_KEY")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("script (util-linux)");
        let mut stdin = child.stdin.take().expect("stdin");
        std::thread::sleep(Duration::from_millis(800));
        stdin.write_all(b"stty size; echo in-$((6*7)); exit 6\r").expect("type");
        std::thread::sleep(Duration::from_millis(800));
        drop(stdin);
        child.wait_with_output().expect("session")
    });
    let out = session.await.expect("session");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("31 97"), "the terminal size reached the sandbox: {s}");
    assert!(s.contains("in-42"), "{s}");
    assert_eq!(out.status.code(), Some(6), "{s}");

    // `reins template import` uploads to the configured server.
    let archive = env.dir.path().join("image.tar");
    std::fs::write(&archive, oci_archive()).expect("archive");
    let o = std::process::Command::new(crate::suite::reins_bin())
        .args(["template", "import", archive.to_str().expect("path"), "viacli", "--json"])
        .env("XDG_CONFIG_HOME", env.dir.path().join("config"))
        .env_remove("REINS_URL")
        .env_remove("REINS_API_KEY")
        .output()
        .expect("reins");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(t["name"], "viacli");
    let list = up.admin().ok(Method::GET, "/v1/templates", None).await;
    assert!(list["items"].as_array().expect("items").iter().any(|i| i["name"] == "viacli"), "{list}");
}
