//! Egress through the API: default deny, allowlists enforced by the proxy
//! outside the sandbox, policy changes, credentials that never enter.
//!
//! Every connection goes to the host's loopback (the upstreams below) or is
//! refused before any packet leaves: `evil.test` "resolves" to 10.1.2.3 only
//! through the node's fixed answers, and the proxy refuses it unconnected.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::upstream::Upstream;
use super::{assert_error, cli, Api, Env, Service};

const RESOLVE: [&str; 6] =
    ["--resolve", "web.test=127.0.0.1", "--resolve", "api.test=127.0.0.1", "--resolve", "evil.test=10.1.2.3"];

async fn up(env: &Env, extra: &[&str]) -> Service {
    let mut args: Vec<&str> = RESOLVE.to_vec();
    args.extend_from_slice(extra);
    env.up("d", &args).await
}

/// Runs a bash script in the sandbox: (stdout, stderr, exit code).
async fn bash(api: &Api, id: &str, script: &str) -> (String, String, i64) {
    let r = api.exec(id, &["bash", "-c", script]).await;
    let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
    (s("stdout"), s("stderr"), r["exit_code"].as_i64().unwrap_or(-1))
}

async fn log(api: &Api, id: &str) -> Vec<Value> {
    let v = api.ok(Method::GET, &format!("/v1/sandboxes/{id}/network/log"), None).await;
    v["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn an_allowlist_reaches_what_it_names_and_refuses_the_rest() {
    let env = Env::new();
    let up = up(&env, &[]).await;
    let api = up.admin();
    let web = Upstream::http().await;
    let p = web.port;
    let id = api
        .create(json!({"network": {"mode": "allowlist", "allow": ["web.test", "evil.test", format!("127.0.0.1:{p}")]}}))
        .await;

    // Through the proxy by every protocol it speaks.
    for (how, cmd) in [
        ("plain HTTP", format!("curl -sS http://web.test:{p}/plain")),
        ("CONNECT", format!("curl -sS -p http://web.test:{p}/tunnel")),
        ("SOCKS5", format!("curl -sS -x socks5h://127.0.0.1:3128 http://web.test:{p}/socks")),
    ] {
        let (out, err, code) = bash(&api, &id, &cmd).await;
        assert_eq!(code, 0, "{how}: {err}");
        assert!(out.starts_with("upstream-ok /"), "{how}: {out}");
    }
    assert_eq!(web.heads().len(), 3);

    // A name not on the list, a private IP literal, a name that resolves into a private range.
    let refusals = [
        ("http://other.test/", "`other.test:80` is not in the sandbox's allowlist"),
        ("http://10.1.2.3/", "10.1.2.3 is a private, loopback, link-local or reserved address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a private"),
        ("http://evil.test/", "`evil.test` resolves only to refused addresses (10.1.2.3)"),
    ];
    for (url, reason) in refusals {
        let (out, _, _) = bash(&api, &id, &format!("curl -sS -w ' %{{http_code}}' {url}")).await;
        assert!(out.contains(reason) && out.ends_with(" 403"), "{url}: {out}");
    }
    let (out, _, code) = bash(&api, &id, "curl -sS -p https://other.test/ 2>&1").await;
    assert!(code != 0 && out.contains("403"), "CONNECT to a name not on the list: {out}");

    // The namespace itself has no way out: no route, no resolver; a program
    // that ignores the proxy fails closed.
    let direct = format!(
        "python3 -c 'import socket\ntry:\n socket.create_connection((\"127.0.0.1\", {p}), 2); print(\"connected\")\nexcept OSError as e: print(\"refused\", e.errno)'"
    );
    let (out, _, _) = bash(&api, &id, &direct).await;
    assert!(out.starts_with("refused"), "a direct connect to the host's loopback: {out}");
    let (out, _, _) = bash(&api, &id, "getent hosts web.test example.com; echo rc=$?").await;
    assert_eq!(out.trim(), "rc=2", "DNS from inside must fail: {out}");
    let (_, _, code) = bash(&api, &id, &format!("curl -sS --noproxy '*' --max-time 3 http://web.test:{p}/")).await;
    assert_eq!(code, 6, "a proxy-unaware program cannot even resolve");
    let (_, _, code) = bash(&api, &id, "curl -sS --noproxy '*' --max-time 3 http://192.0.2.1/").await;
    assert_eq!(code, 7, "nor connect to an address (no route)");
    assert_eq!(web.heads().len(), 3, "nothing but the allowed requests arrived");

    // Every attempt is in the log, with traffic for the allowed ones.
    let events = log(&api, &id).await;
    let allowed: Vec<&Value> = events.iter().filter(|e| e["allowed"] == true).collect();
    let denied: Vec<&Value> = events.iter().filter(|e| e["allowed"] == false).collect();
    assert_eq!(allowed.len(), 3, "{events:?}");
    assert!(allowed.iter().all(|e| e["bytes_up"].as_u64() > Some(0) && e["bytes_down"].as_u64() > Some(0)));
    assert!(denied.len() >= 5, "{events:?}");
    assert!(denied.iter().any(|e| e["host"] == "169.254.169.254" && e["protocol"] == "http"));
    // Nodes report their counters every 2 s.
    let mut counted = String::new();
    for _ in 0..50 {
        let m = api.req(Method::GET, "/metrics").send().await.expect("metrics").text().await.expect("text");
        counted = m.lines().filter(|l| l.starts_with("reins_egress_connections_total{")).collect::<Vec<_>>().join("\n");
        if counted.contains("decision=\"allowed\"} 3") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(counted.contains("decision=\"allowed\"} 3"), "{counted}");

    // The record outlives the sandbox (the control plane keeps it, with the tenant).
    api.ok(Method::DELETE, &format!("/v1/sandboxes/{id}"), None).await;
    let after = log(&api, &id).await;
    assert_eq!(after.len(), events.len(), "{after:?}");
    assert!(after.iter().all(|e| e["tenant"].as_str().is_some_and(|t| !t.is_empty()) && e["sandbox"] == id.as_str()));
}

#[tokio::test]
async fn tls_must_name_the_host_of_its_tunnel() {
    let env = Env::new();
    let up = up(&env, &[]).await;
    let api = up.admin();
    let tls = Upstream::https(&["web.test", "other.test"]).await;
    let p = tls.port;
    let id =
        api.create(json!({"network": {"mode": "allowlist", "allow": ["web.test", format!("127.0.0.1:{p}")]}})).await;
    let ca = tls.ca_pem.clone().expect("ca");
    let put = api.req(Method::PUT, &format!("/v1/sandboxes/{id}/files?path=/tmp/ca.pem")).body(ca).send().await;
    assert!(put.expect("upload").status().is_success());

    let (out, err, code) = bash(&api, &id, &format!("curl -sS --cacert /tmp/ca.pem https://web.test:{p}/ok")).await;
    assert_eq!((out.as_str(), code), ("upstream-ok /ok\n", 0), "{err}");
    // The tunnel is asked for web.test, the ClientHello names other.test.
    let fronted =
        format!("curl -sS --cacert /tmp/ca.pem --connect-to other.test:{p}:web.test:{p} https://other.test:{p}/x");
    let (_, err, code) = bash(&api, &id, &fronted).await;
    assert_ne!(code, 0, "a mismatched SNI must not get through: {err}");
    assert_eq!(tls.heads().len(), 1);
    let events = log(&api, &id).await;
    assert!(
        events.iter().any(|e| e["allowed"] == false
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("`other.test` does not match the tunnel's host `web.test`"))),
        "{events:?}"
    );
    // Plain HTTP: the Host header must agree with the request's target.
    let web = Upstream::http().await;
    let q = web.port;
    api.ok(
        Method::PUT,
        &format!("/v1/sandboxes/{id}/network"),
        Some(json!({"mode": "allowlist", "allow": ["web.test", "127.0.0.1"]})),
    )
    .await;
    let (out, _, _) = bash(&api, &id, &format!("curl -sS -H 'Host: other.test' http://web.test:{q}/")).await;
    assert!(out.contains("the Host header `other.test` does not match `web.test:"), "{out}");
    assert!(web.heads().is_empty());
}

#[tokio::test]
async fn policy_changes_apply_to_the_next_connection() {
    let env = Env::new();
    let up = up(&env, &[]).await;
    let api = up.admin();
    let web = Upstream::http().await;
    let url = format!("http://web.test:{}/", web.port);
    let id = api.create(json!({})).await;
    let got = api.ok(Method::GET, &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(got["network"]["mode"], "none");
    let (_, _, code) = bash(&api, &id, &format!("curl -sS --max-time 3 {url}")).await;
    assert_ne!(code, 0, "no network by default");

    let set = |body: Value| {
        let api = api.clone();
        let id = id.clone();
        async move { api.ok(Method::PUT, &format!("/v1/sandboxes/{id}/network"), Some(body)).await }
    };
    let v = set(json!({"mode": "allowlist", "allow": ["WEB.test.", "127.0.0.1"]})).await;
    assert_eq!(v["allow"], json!(["web.test", "127.0.0.1"]), "rules come back normalized");
    let (out, err, _) = bash(&api, &id, &format!("curl -sS {url}")).await;
    assert_eq!(out, "upstream-ok /\n", "{err}");

    set(json!({"mode": "allowlist", "allow": ["127.0.0.1"], "deny": []})).await;
    let (out, _, _) = bash(&api, &id, &format!("curl -sS {url}")).await;
    assert!(out.contains("`web.test:") && out.contains("not in the sandbox's allowlist"), "{out}");

    set(json!({"mode": "open", "allow": ["127.0.0.1"], "deny": ["*.test"]})).await;
    let (out, _, _) = bash(&api, &id, &format!("curl -sS {url}")).await;
    assert!(out.contains("denied by rule `*.test`"), "deny wins: {out}");

    set(json!({"mode": "none"})).await;
    let (out, _, _) = bash(&api, &id, &format!("curl -sS {url}")).await;
    assert!(out.contains("no network (policy `none`)"), "{out}");
    assert_eq!(web.heads().len(), 1);

    // Bad policies are refused whole and change nothing.
    for bad in [
        json!({"mode": "sometimes"}),
        json!({"mode": "allowlist", "allow": ["x.com:0"]}),
        json!({"mode": "allowlist", "allow": ["http://x.com"]}),
        json!({"mode": "allowlist", "secrets": ["missing"]}),
        json!({"mode": "allowlist", "extra": 1}),
    ] {
        let r = api.call(Method::PUT, &format!("/v1/sandboxes/{id}/network"), Some(bad.clone())).await;
        assert!(r.0 == StatusCode::BAD_REQUEST || r.0 == StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {r:?}");
        assert!(r.1["message"].as_str().is_some_and(|m| !m.is_empty()), "{bad}: {r:?}");
    }
    let got = api.ok(Method::GET, &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(got["network"]["mode"], "none");
    let r = api
        .call(Method::POST, "/v1/sandboxes", Some(json!({"network": {"mode": "allowlist", "deny": ["[::1"]}})))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid");

    // Another tenant sees neither the sandbox nor its log.
    let tenant = api.ok(Method::POST, "/v1/tenants", Some(json!({"name": "other"}))).await;
    let key = api.ok(Method::POST, "/v1/keys", Some(json!({"tenant_id": tenant["id"], "name": "k"}))).await;
    let theirs = up.api(key["secret"].as_str().expect("secret"));
    let r = theirs.call(Method::PUT, &format!("/v1/sandboxes/{id}/network"), Some(json!({"mode": "open"}))).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = theirs.call(Method::GET, &format!("/v1/sandboxes/{id}/network/log"), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn credentials_reach_the_upstream_and_nowhere_else() {
    const SECRET: &str = "sk-reins-test-5d9c0e7f3a1b4c2d8e6f";
    let env = Env::new();
    let api_up = Upstream::https(&["api.test"]).await;
    let ca_file = env.data("upstream-ca.pem");
    std::fs::write(&ca_file, api_up.ca_pem.as_deref().expect("ca")).expect("write ca");
    let up = up(&env, &["--upstream-ca", ca_file.to_str().expect("path")]).await;
    let api = up.admin();
    let p = api_up.port;

    let s = api
        .ok(
            Method::PUT,
            "/v1/secrets/model",
            Some(json!({"value": SECRET, "hosts": ["api.test"], "format": "Bearer {secret}"})),
        )
        .await;
    assert_eq!((s["name"].as_str(), s["header"].as_str()), (Some("model"), Some("Authorization")));
    let listed = api.ok(Method::GET, "/v1/secrets", None).await;
    assert!(!listed.to_string().contains(SECRET), "the API never returns a value: {listed}");

    let id = api
        .create(json!({"network": {"mode": "allowlist", "allow": ["api.test", "127.0.0.1"], "secrets": ["model"]}}))
        .await;
    let (out, err, code) = bash(
        &api,
        &id,
        &format!("curl -sS -H 'Authorization: Bearer forged' http://api.test.reins.internal:{p}/v1/models"),
    )
    .await;
    assert_eq!((out.as_str(), code), ("upstream-ok /v1/models\n", 0), "{err}");
    let heads = api_up.heads();
    assert_eq!(heads.len(), 1);
    let auth: Vec<&str> = heads[0].lines().filter(|l| l.to_ascii_lowercase().starts_with("authorization:")).collect();
    assert_eq!(auth, vec![format!("authorization: Bearer {SECRET}").as_str()], "{}", heads[0]);
    assert!(heads[0].contains(&format!("host: api.test:{p}")), "{}", heads[0]);
    // A host the secret is not bound to gets no credential.
    let (out, _, _) = bash(&api, &id, &format!("curl -sS http://web.test.reins.internal:{p}/")).await;
    assert!(out.contains("no credential of this sandbox is bound to `web.test"), "{out}");

    // Search what the sandbox can see for the value: every file (except the
    // host's /usr, bound read-only), every process's environment and command
    // line, as root inside. The search itself never holds the whole value.
    // A canary written on purpose proves that the search finds what is there.
    let (head, tail) = SECRET.split_at(10);
    let canary = format!("open('/tmp/canary', 'w').write('{head}' + '{tail}')");
    api.ok(Method::POST, &format!("/v1/sandboxes/{id}/exec"), Some(json!({"cmd": ["python3", "-c", canary]}))).await;
    let search = format!(
        r#"import os
s = ("{head}" + "{tail}").encode()
hits = []
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "usr")]
    for f in files:
        p = os.path.join(root, f)
        try:
            if os.path.isfile(p) and not os.path.islink(p) and s in open(p, "rb").read():
                hits.append(p)
        except OSError:
            pass
for pid in [d for d in os.listdir("/proc") if d.isdigit()]:
    for part in ("environ", "cmdline"):
        try:
            if s in open(f"/proc/{{pid}}/{{part}}", "rb").read():
                hits.append(f"/proc/{{pid}}/{{part}}")
        except OSError:
            pass
print("found:", hits)"#
    );
    let r = api
        .ok(
            Method::POST,
            &format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"cmd": ["python3", "-c", search], "user": "root"})),
        )
        .await;
    assert_eq!(r["stdout"], "found: ['/tmp/canary']\n", "the secret is visible inside: {r}");
    let server_log = up.log.lock().expect("log").clone();
    assert!(!server_log.contains(SECRET), "the secret is in the server's log");
    let db = std::fs::read(env.data("d").join("reins.db")).expect("db");
    let wal = std::fs::read(env.data("d").join("reins.db-wal")).unwrap_or_default();
    let plain = SECRET.as_bytes();
    assert!(
        !db.windows(plain.len()).any(|w| w == plain) && !wal.windows(plain.len()).any(|w| w == plain),
        "stored in clear"
    );

    // A rotated secret applies to the running sandbox at once; a deleted one is gone from it.
    const ROTATED: &str = "sk-reins-rotated-0a1b2c3d";
    api.ok(Method::PUT, "/v1/secrets/model", Some(json!({"value": ROTATED, "hosts": ["api.test"]}))).await;
    let (out, err, _) = bash(&api, &id, &format!("curl -sS http://api.test.reins.internal:{p}/again")).await;
    assert_eq!(out, "upstream-ok /again\n", "{err}");
    let last = api_up.heads().pop().expect("a request");
    assert!(last.contains(&format!("authorization: Bearer {ROTATED}")), "{last}");
    api.ok(Method::DELETE, "/v1/secrets/model", None).await;
    let (out, _, _) = bash(&api, &id, &format!("curl -sS http://api.test.reins.internal:{p}/gone")).await;
    assert!(out.contains("no credential of this sandbox is bound to `api.test"), "{out}");
    assert_eq!(api_up.heads().len(), 2);
}

// The CLI runs as blocking child processes: other workers serve the upstream meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_policies_and_secrets_and_shows_the_log() {
    let env = Env::new();
    let _up = up(&env, &[]).await;
    let web = Upstream::http().await;
    let args = ["secret", "set", "tok", "--host", "api.test", "--header", "x-api-key", "--format", "{secret}"];
    let (code, out, err) = cli(&env, &args, "s3cr3t-value\n").await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("tok → api.test (x-api-key)"), "{out}");
    let (_, out, _) = cli(&env, &["secret", "ls", "--json"], "").await;
    assert!(out.contains("\"tok\"") && !out.contains("s3cr3t-value"), "{out}");

    let (code, id, err) =
        cli(&env, &["sandbox", "create", "--allow", "web.test", "--allow", "127.0.0.1", "--secret", "tok"], "").await;
    assert_eq!(code, Some(0), "{err}");
    let id = id.trim().to_owned();
    let url = format!("http://web.test:{}/cli", web.port);
    let (code, out, err) = cli(&env, &["sandbox", "exec", &id, "--", "curl", "-sS", &url], "").await;
    assert_eq!((code, out.as_str()), (Some(0), "upstream-ok /cli\n"), "{err}");
    let (code, out, _) = cli(&env, &["sandbox", "network", &id, "--network", "none"], "").await;
    assert_eq!(code, Some(0));
    assert!(out.starts_with("mode:    none"), "{out}");
    let (_, out, _) = cli(&env, &["sandbox", "exec", &id, "--", "curl", "-sS", &url], "").await;
    assert!(out.contains("no network"), "{out}");
    let (code, out, _) = cli(&env, &["sandbox", "logs", &id, "--network", "--json"], "").await;
    assert_eq!(code, Some(0));
    let events: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    let decisions: Vec<bool> = events.iter().map(|e| e["allowed"].as_bool().expect("allowed")).collect();
    assert_eq!(decisions, vec![true, false], "{out}");
    assert!(events.iter().all(|e| e["sandbox"] == id.as_str()));
    let (code, _, err) = cli(&env, &["sandbox", "network", &id, "--allow", "x.com:0"], "").await;
    assert_ne!(code, Some(0));
    assert!(err.contains("invalid network rule `x.com:0`"), "{err}");
}
