//! Direct interfaces (`"direct": true`): for programs that cannot use a
//! proxy, `eth0` with a route out, filtered on the host by nftables to the
//! addresses and ports the policy's IP rules name.
//!
//! The only "internet" here is a test host: a network namespace this test
//! makes, joined to the host by a veth pair, with two addresses
//! (10.233.77.2 and .3) and HTTP servers on ports 8080 and 8081. No packet
//! goes anywhere else: every other destination below is refused by the
//! node's rules on the host before it could leave.

use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{assert_error, cli, Api, Env};

const SUBNET: &str = "10.231.77.0/24";
/// The first sandbox's host-side address (its gateway).
const GATEWAY: &str = "10.231.77.1";
const HOST_A: &str = "10.233.77.2";
const HOST_B: &str = "10.233.77.3";

fn ip(args: &str) {
    let out = Command::new("ip").args(args.split_whitespace()).output().expect("ip runs");
    assert!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test host in its own network namespace; removed on drop.
struct TestHost {
    ns: String,
    link: String,
    servers: Vec<std::process::Child>,
    _root: tempfile::TempDir,
}

impl TestHost {
    fn start() -> Self {
        Self::remove_leftovers();
        let id = std::process::id() % 100_000;
        let (ns, link) = (format!("reins-th-{id}"), format!("rth{id}"));
        ip(&format!("netns add {ns}"));
        ip(&format!("link add {link} type veth peer name eth0 netns {ns}"));
        ip(&format!("addr add 10.233.77.1/29 dev {link}"));
        ip(&format!("link set {link} up"));
        for a in [HOST_A, HOST_B] {
            ip(&format!("-n {ns} addr add {a}/29 dev eth0"));
        }
        ip(&format!("-n {ns} link set eth0 up"));
        ip(&format!("-n {ns} link set lo up"));
        ip(&format!("-n {ns} route add default via 10.233.77.1"));
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("hello"), "hello from the test host\n").expect("page");
        let servers = [8080, 8081]
            .map(|port| {
                Command::new("ip")
                    .args(["netns", "exec", &ns, "python3", "-m", "http.server", &port.to_string()])
                    .args(["--bind", "0.0.0.0", "--directory"])
                    .arg(root.path())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("http.server")
            })
            .into();
        let host = Self { ns, link, servers, _root: root };
        for port in [8080, 8081] {
            let addr: std::net::SocketAddr = format!("{HOST_A}:{port}").parse().expect("addr");
            let up = (0..100).any(|_| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                    || (std::thread::sleep(Duration::from_millis(50)), false).1
            });
            assert!(up, "the test host's server on {port} did not start");
        }
        host
    }
}

impl TestHost {
    /// Test hosts of an earlier run that was killed before its drop.
    fn remove_leftovers() {
        let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns");
        for ns in String::from_utf8_lossy(&out.stdout).split_whitespace().filter(|n| n.starts_with("reins-th-")) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let out = Command::new("ip").args(["-o", "link", "show"]).output().expect("ip link");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or_default().to_owned());
            if let Some(name) = name.filter(|n| n.starts_with("rth")) {
                let _ = Command::new("ip").args(["link", "del", &name]).status();
            }
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = Command::new("ip").args(["link", "del", &self.link]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

async fn bash(api: &Api, id: &str, script: &str) -> (String, i64) {
    let r = api.exec(id, &["bash", "-c", script]).await;
    let out = format!("{}{}", r["stdout"].as_str().unwrap_or_default(), r["stderr"].as_str().unwrap_or_default());
    (out, r["exit_code"].as_i64().unwrap_or(-1))
}

/// `curl` without the proxy: (body and errors, curl's exit code).
async fn fetch(api: &Api, id: &str, url: &str) -> (String, i64) {
    bash(api, id, &format!("curl -sS --noproxy '*' --max-time 3 {url} 2>&1")).await
}

/// A bare TCP connect from inside: `ok`, or `errno N` (113: no route to host).
async fn connect(api: &Api, id: &str, host: &str, port: u16) -> String {
    let py = format!(
        "import socket\ntry:\n socket.create_connection(('{host}', {port}), 3); print('ok')\nexcept OSError as e: print('errno', e.errno)"
    );
    bash(api, id, &format!("python3 -c \"{py}\"")).await.0.trim().to_owned()
}

/// The sandbox's interfaces, sorted.
async fn interfaces(api: &Api, id: &str) -> String {
    bash(api, id, "awk -F: 'NR > 2 { gsub(/ /, \"\", $1); print $1 }' /proc/net/dev | sort | xargs")
        .await
        .0
        .trim()
        .to_owned()
}

/// Host-side interfaces of direct links (`rv{tag}-{n}`).
fn direct_links() -> Vec<String> {
    let out = Command::new("ip").args(["-o", "link", "show"]).output().expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or_default().to_owned()))
        .filter(|n| n.starts_with("rv") && n.len() > 9 && n.as_bytes()[8] == b'-')
        .collect()
}

fn reins_tables() -> String {
    let out = Command::new("nft").args(["list", "tables"]).output().expect("nft runs");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("reins_")).collect::<Vec<_>>().join("\n")
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}");
}

#[tokio::test]
async fn direct_interfaces_reach_only_the_addresses_their_rules_name() {
    let host = TestHost::start();
    let env = Env::new();
    let up = env.up("d", &["--direct-subnet", SUBNET]).await;
    let api = up.admin();
    let a = format!("http://{HOST_A}:8080/hello");
    let a_other_port = format!("http://{HOST_A}:8081/hello");

    // Without `direct` a sandbox has loopback only, as always.
    let plain = api.create(json!({"network": {"mode": "allowlist", "allow": [format!("{HOST_A}:8080")]}})).await;
    assert_eq!(interfaces(&api, &plain).await, "lo");
    let (_, code) = fetch(&api, &plain, &a).await;
    assert_eq!(code, 7, "no route without direct");

    let id = api
        .create(
            json!({"network": {"mode": "allowlist", "allow": [format!("{HOST_A}:8080"), "web.test"], "direct": true}}),
        )
        .await;
    let got = api.ok(Method::GET, &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(got["network"]["direct"], true);
    assert_eq!(interfaces(&api, &id).await, "eth0 lo");
    let (out, _) = bash(&api, &id, "grep -c eth0 /proc/net/if_inet6").await;
    assert_eq!(out.trim(), "0", "eth0 has no IPv6 address");
    assert_eq!(direct_links().len(), 1);

    // The named address and port, and nothing else.
    let (out, code) = fetch(&api, &id, &a).await;
    assert_eq!((out.as_str(), code), ("hello from the test host\n", 0));
    for (addr, port) in [(HOST_A, 8081), (HOST_B, 8080)] {
        assert_eq!(connect(&api, &id, addr, port).await, "errno 113", "{addr}:{port} is refused at once");
    }
    assert_eq!(connect(&api, &id, HOST_A, 8080).await, "ok");
    // The host's own address (the sandbox's gateway), with a listener on it.
    let listener = tokio::net::TcpListener::bind(format!("{GATEWAY}:0")).await.expect("bind the gateway");
    let port = listener.local_addr().expect("addr").port();
    assert_eq!(connect(&api, &id, GATEWAY, port).await, "errno 113", "the host's own address is refused");
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "nothing reached the host's listener");
    // Each attempt is in the network log, allowed or refused.
    let mut events = Vec::new();
    for _ in 0..50 {
        let v = api.ok(Method::GET, &format!("/v1/sandboxes/{id}/network/log"), None).await;
        events = v["items"].as_array().cloned().unwrap_or_default();
        if events.iter().filter(|e| e["protocol"] == "direct-tcp").count() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = |host: &str, port: u16, allowed: bool| {
        events
            .iter()
            .any(|e| e["protocol"] == "direct-tcp" && e["host"] == host && e["port"] == port && e["allowed"] == allowed)
    };
    assert!(seen(HOST_A, 8080, true) && seen(HOST_A, 8081, false) && seen(HOST_B, 8080, false), "{events:?}");
    assert!(seen(GATEWAY, port, false), "{events:?}");
    // Still no resolver inside: names need the proxy, which still works.
    let (out, _) = bash(&api, &id, "getent hosts web.test; echo rc=$?").await;
    assert_eq!(out.trim(), "rc=2");

    // Policy changes apply to the next connection; deny rules win.
    let set = |body: Value| {
        let (api, id) = (api.clone(), id.clone());
        async move { api.ok(Method::PUT, &format!("/v1/sandboxes/{id}/network"), Some(body)).await }
    };
    set(json!({"mode": "allowlist", "allow": ["10.233.77.0/29"], "deny": [HOST_B], "direct": true})).await;
    assert_eq!(fetch(&api, &id, &a_other_port).await.1, 0, "the whole test subnet is named now");
    assert_eq!(connect(&api, &id, HOST_B, 8080).await, "errno 113", "but its .3 is denied");
    // `open` reaches public addresses only: the test host's are private.
    set(json!({"mode": "open", "direct": true})).await;
    assert_eq!(connect(&api, &id, HOST_A, 8080).await, "errno 113", "private addresses need a rule naming them");

    // A sandbox never accepts connections, even from another one whose rules name it.
    let (out, code) =
        bash(&api, &id, "nohup python3 -m http.server 9000 >/dev/null 2>&1 & sleep 0.5; echo started").await;
    assert_eq!((out.trim(), code), ("started", 0));
    let other = api.create(json!({"network": {"mode": "allowlist", "allow": [SUBNET], "direct": true}})).await;
    assert_eq!(connect(&api, &other, "10.231.77.2", 9000).await, "errno None", "sandbox to sandbox: dropped");
    api.ok(Method::DELETE, &format!("/v1/sandboxes/{other}"), None).await;

    // Turning `direct` off takes the interface away; on again brings it back.
    set(json!({"mode": "allowlist", "allow": [format!("{HOST_A}:8080")]})).await;
    assert_eq!(interfaces(&api, &id).await, "lo");
    eventually("the host-side link goes with direct off", || direct_links().is_empty()).await;
    set(json!({"mode": "allowlist", "allow": [format!("{HOST_A}:8080")], "direct": true})).await;
    assert_eq!(fetch(&api, &id, &a).await.1, 0);

    // Bad input is refused whole.
    let r = api.call(Method::PUT, &format!("/v1/sandboxes/{id}/network"), Some(json!({"direct": true}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid");
    assert!(r.1["message"].as_str().is_some_and(|m| m.contains("allowlist")), "{}", r.1);
    let r = api.call(Method::PUT, &format!("/v1/sandboxes/{id}/network"), Some(json!({"direct": "yes"}))).await;
    assert!(r.0.is_client_error(), "{r:?}");
    assert_eq!(fetch(&api, &id, &a).await.1, 0, "the refused changes changed nothing");

    // The CLI asks for it with --direct and shows it.
    let allow = format!("{HOST_A}:8080");
    let (code, out, err) = cli(&env, &["sandbox", "create", "--allow", &allow, "--direct"], "").await;
    assert_eq!(code, Some(0), "{err}");
    let by_cli = out.trim().to_owned();
    let (code, out, err) =
        cli(&env, &["sandbox", "exec", &by_cli, "--", "curl", "-sS", "--noproxy", "*", &a], "").await;
    assert_eq!((code, out.as_str()), (Some(0), "hello from the test host\n"), "{err}");
    let (_, out, _) = cli(&env, &["sandbox", "network", &by_cli], "").await;
    assert!(out.contains("direct:"), "{out}");
    api.ok(Method::DELETE, &format!("/v1/sandboxes/{by_cli}"), None).await;

    // A second node on the same subnet is refused; a refused change changes nothing.
    let other = env.up("other", &["--direct-subnet", SUBNET]).await;
    let theirs = other.admin();
    let direct = json!({"mode": "allowlist", "allow": [HOST_A], "direct": true});
    let r = theirs.call(Method::POST, "/v1/sandboxes", Some(json!({ "network": direct }))).await;
    assert_error(&r, StatusCode::INTERNAL_SERVER_ERROR, "network_setup");
    assert!(r.1["message"].as_str().is_some_and(|m| m.contains("--direct-subnet")), "{}", r.1);
    let listed = theirs.ok(Method::GET, "/v1/sandboxes", None).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(0), "the failed create left nothing: {listed}");
    let sid = theirs.create(json!({"network": {"mode": "allowlist", "allow": [HOST_A]}})).await;
    let r = theirs.call(Method::PUT, &format!("/v1/sandboxes/{sid}/network"), Some(direct)).await;
    assert_error(&r, StatusCode::INTERNAL_SERVER_ERROR, "network_setup");
    let got = theirs.ok(Method::GET, &format!("/v1/sandboxes/{sid}"), None).await;
    assert_eq!(got["network"], json!({"mode": "allowlist", "allow": [HOST_A]}), "the old policy");
    assert_eq!(interfaces(&theirs, &sid).await, "lo");
    assert!(other.terminate().await.success());
    assert_eq!(direct_links().len(), 1, "the first node's sandbox kept its link");

    // Nothing is left: links and rules go with the sandbox, the table with the node.
    api.ok(Method::DELETE, &format!("/v1/sandboxes/{id}"), None).await;
    eventually("the link goes with the sandbox", || direct_links().is_empty()).await;
    let table = reins_tables();
    assert_eq!(table.lines().count(), 1, "{table}");
    let name = table.split_whitespace().last().expect("a table name").to_owned();
    let rules = Command::new("nft").args(["list", "table", "inet", &name]).output().expect("nft");
    assert!(!String::from_utf8_lossy(&rules.stdout).contains("chain sb"), "no sandbox chain is left");
    api.ok(Method::DELETE, &format!("/v1/sandboxes/{plain}"), None).await;
    assert!(up.terminate().await.success());
    assert_eq!(reins_tables(), "", "the node removed its table");

    // With --e2b-direct, E2B sandboxes (internet access: `open`) get one too.
    let up = env.up("d2", &["--direct-subnet", SUBNET, "--e2b-direct"]).await;
    let api = up.admin();
    let created = reqwest::Client::new()
        .post(format!("{}/sandboxes", up.url))
        .header("X-API-KEY", up.key())
        .json(&json!({"templateID": "base", "timeout": 60}))
        .send()
        .await
        .expect("E2B create");
    assert!(created.status().is_success(), "{}", created.status());
    let e2b: Value = created.json().await.expect("json");
    let e2b_id = e2b["sandboxID"].as_str().expect("sandboxID").to_owned();
    let got = api.ok(Method::GET, &format!("/v1/sandboxes/{e2b_id}"), None).await;
    assert_eq!((&got["network"]["mode"], &got["network"]["direct"]), (&json!("open"), &json!(true)));
    assert_eq!(interfaces(&api, &e2b_id).await, "eth0 lo");
    assert_eq!(connect(&api, &e2b_id, HOST_A, 8080).await, "errno 113", "open: private addresses need a rule");

    // A node that dies leaves its table; the next one on the subnet takes it over.
    let id = api.create(json!({"network": {"mode": "allowlist", "allow": [HOST_A], "direct": true}})).await;
    assert_eq!(fetch(&api, &id, &a).await.1, 0);
    up.kill9().await;
    assert!(reins_tables().contains("reins_"), "a killed node cannot clean up");
    let up = env.up("d3", &["--direct-subnet", SUBNET]).await;
    eventually("the new node empties the stale table", || {
        let out = Command::new("nft").args(["list", "ruleset"]).output().expect("nft");
        let rules = String::from_utf8_lossy(&out.stdout).into_owned();
        rules.contains("reins_") && !rules.contains("chain sb")
    })
    .await;
    eventually("no link is left", || direct_links().is_empty()).await;
    assert!(up.terminate().await.success());
    assert_eq!(reins_tables(), "");
    drop(host);
}
