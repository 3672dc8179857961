//! Elastic lifecycle through the API: snapshots and forks, hibernation and
//! transparent wake (also across a restart), warm pools, capacity limits.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{assert_error, cli, Api, Env};

async fn state(api: &Api, id: &str) -> String {
    api.ok(Method::GET, &format!("/v1/sandboxes/{id}"), None).await["state"].as_str().unwrap_or_default().to_owned()
}

/// Waits (up to `secs`) until sandbox `id` is in `want`.
async fn wait_state(api: &Api, id: &str, want: &str, secs: u64) {
    for _ in 0..secs * 10 {
        if state(api, id).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("sandbox {id} never became {want} (it is {})", state(api, id).await);
}

fn stdout(v: &Value) -> &str {
    v["stdout"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_starts_sandboxes_with_the_source_files_and_snapshots_are_kept_apart() {
    let env = Env::new();
    let up = env.up("data", &[]).await;
    let api = up.admin();
    let src = api.create(json!({"env": {"ROLE": "source"}, "memory_mb": 256})).await;
    api.exec(&src, &["bash", "-c", "mkdir -p work && seq 1 1000 > work/data && echo v1 > work/version"]).await;
    let forked = api.ok(Method::POST, &format!("/v1/sandboxes/{src}/fork"), Some(json!({"count": 2}))).await;
    let snap = forked["snapshot"]["id"].as_str().expect("snapshot id").to_owned();
    assert!(forked["snapshot"]["bytes"].as_i64().unwrap_or(0) >= 3893, "{forked}");
    let kids: Vec<String> = forked["sandboxes"]
        .as_array()
        .expect("sandboxes")
        .iter()
        .map(|s| s["id"].as_str().expect("id").into())
        .collect();
    assert_eq!(kids.len(), 2);
    for kid in &kids {
        let got = api.exec(kid, &["bash", "-c", "wc -l < work/data; cat work/version; echo $ROLE"]).await;
        assert_eq!(stdout(&got), "1000\nv1\nsource\n", "the fork has the files, the environment");
        let view = api.ok(Method::GET, &format!("/v1/sandboxes/{kid}"), None).await;
        assert_eq!((view["snapshot"].as_str(), view["memory_mb"].as_u64()), (Some(snap.as_str()), Some(256)));
    }
    // Forks are independent of each other and of the source.
    api.exec(&kids[0], &["bash", "-c", "echo changed > work/version"]).await;
    assert_eq!(stdout(&api.exec(&kids[1], &["cat", "work/version"]).await), "v1\n");
    assert_eq!(stdout(&api.exec(&src, &["cat", "work/version"]).await), "v1\n");

    // A sandbox from the snapshot by id, and the snapshot's listing.
    let again = api.create(json!({"snapshot": snap})).await;
    assert_eq!(stdout(&api.exec(&again, &["cat", "work/version"]).await), "v1\n");
    let list = api.ok(Method::GET, "/v1/snapshots", None).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    // Bad input: an unknown snapshot, a template that is not the snapshot's, a fork of 0.
    assert_error(
        &api.call(Method::POST, "/v1/sandboxes", Some(json!({"snapshot": "snap_nope"}))).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let wrong = json!({"snapshot": snap, "template": "other"});
    assert_error(&api.call(Method::POST, "/v1/sandboxes", Some(wrong)).await, StatusCode::BAD_REQUEST, "invalid");
    let zero = api.call(Method::POST, &format!("/v1/sandboxes/{src}/fork"), Some(json!({"count": 0}))).await;
    assert_error(&zero, StatusCode::BAD_REQUEST, "invalid");

    // Another tenant sees neither the snapshot nor can start from it.
    let t = api.ok(Method::POST, "/v1/tenants", Some(json!({"name": "other"}))).await;
    let k = api.ok(Method::POST, "/v1/keys", Some(json!({"tenant_id": t["id"], "name": "k"}))).await;
    let other = up.api(k["secret"].as_str().expect("secret"));
    assert_error(
        &other.call(Method::GET, &format!("/v1/snapshots/{snap}"), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let theirs = other.call(Method::POST, "/v1/sandboxes", Some(json!({"snapshot": snap}))).await;
    assert_error(&theirs, StatusCode::NOT_FOUND, "not_found");

    // Deleting the snapshot leaves the sandboxes made from it working; the CLI lists and removes.
    let (code, out, err) = cli(&env, &["snapshot", "ls"], "").await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&snap), "{out}");
    let (code, _, err) = cli(&env, &["snapshot", "rm", &snap], "").await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(stdout(&api.exec(&kids[1], &["cat", "work/version"]).await), "v1\n");
    assert_error(
        &api.call(Method::GET, &format!("/v1/snapshots/{snap}"), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    for id in kids.iter().chain([&src, &again]) {
        api.ok(Method::DELETE, &format!("/v1/sandboxes/{id}"), None).await;
    }
    // Every layer went with the last sandbox that used it.
    let layers = env.data("data").join("node/snapshots/layers");
    let left: Vec<_> = std::fs::read_dir(&layers).expect("layers dir").flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "layers left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_sandbox_hibernates_and_the_next_request_wakes_it_even_after_a_restart() {
    let env = Env::new();
    let up = env.up("data", &[]).await;
    let api = up.admin();
    let id = api.create(json!({"idle_timeout_secs": 1, "timeout_secs": 600})).await;
    // A background process does not count as activity; the files stay, the process does not.
    api.exec(&id, &["bash", "-c", "echo kept > notes && (setsid sleep 1000 >/dev/null 2>&1 &)"]).await;
    wait_state(&api, &id, "hibernated", 15).await;
    assert!(env.sandbox_processes().is_empty(), "no process of a hibernated sandbox: {:?}", env.sandbox_processes());
    // A command wakes it transparently.
    let got = api.exec(&id, &["bash", "-c", "cat notes; pgrep -c sleep || true"]).await;
    assert_eq!(stdout(&got), "kept\n0\n");
    // (Idle again, it hibernates again a second later.)

    // Explicitly, then across a restart of the whole service (with a snapshot taken before it).
    let snap = api.ok(Method::POST, &format!("/v1/sandboxes/{id}/snapshots"), None).await;
    let hib = api.ok(Method::POST, &format!("/v1/sandboxes/{id}/hibernate"), None).await;
    assert_eq!(hib["state"], "hibernated");
    let key = api.key.clone();
    up.terminate().await;
    let up = env.up("data", &[]).await;
    let api = up.api(&key);
    assert_eq!(state(&api, &id).await, "hibernated", "survives the restart");
    let raw =
        api.req(Method::GET, &format!("/v1/sandboxes/{id}/files?path=/home/user/notes")).send().await.expect("get");
    assert_eq!(raw.text().await.expect("body"), "kept\n", "a file request wakes it");
    let from_snap = api.create(json!({"snapshot": snap["id"]})).await;
    assert_eq!(stdout(&api.exec(&from_snap, &["cat", "notes"]).await), "kept\n", "the snapshot survived the restart");
    api.ok(Method::DELETE, &format!("/v1/sandboxes/{from_snap}"), None).await;
    // Resume wakes too.
    api.ok(Method::POST, &format!("/v1/sandboxes/{id}/hibernate"), None).await;
    let resumed = api.ok(Method::POST, &format!("/v1/sandboxes/{id}/resume"), None).await;
    assert_eq!(resumed["state"], "running");
    api.ok(Method::DELETE, &format!("/v1/sandboxes/{id}"), None).await;
    let hibernated = env.data("data").join("node/hibernated");
    let left: Vec<_> =
        std::fs::read_dir(&hibernated).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "hibernation records left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_serves_matching_creates_and_refills() {
    let env = Env::new();
    let up = env.up("data", &[]).await;
    let api = up.admin();
    let (code, out, err) =
        cli(&env, &["pool", "set", "base", "--min", "2", "--max", "4", "--memory-mb", "128"], "").await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("base"), "{out}");
    let ready = || async {
        let pools = api.ok(Method::GET, "/v1/pools", None).await;
        (pools["items"][0]["ready"].as_u64().unwrap_or(0), pools["items"][0]["claims"].as_u64().unwrap_or(0))
    };
    for _ in 0..100 {
        if ready().await.0 == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready().await.0, 2, "the pool filled");
    let id = api.create(json!({"memory_mb": 128, "env": {"WHO": "claimer"}})).await;
    assert_eq!(stdout(&api.exec(&id, &["bash", "-c", "echo $WHO"]).await), "claimer\n", "its own environment");
    // Another shape does not match the pool.
    let other = api.create(json!({"memory_mb": 256})).await;
    for _ in 0..100 {
        if ready().await == (2, 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready().await, (2, 1), "one claim, and refilled");
    // Only an admin sets pools; bad sizes are refused.
    let t = api.ok(Method::POST, "/v1/tenants", Some(json!({"name": "t"}))).await;
    let k = api.ok(Method::POST, "/v1/keys", Some(json!({"tenant_id": t["id"], "name": "k"}))).await;
    let user = up.api(k["secret"].as_str().expect("secret"));
    assert_error(
        &user.call(Method::PUT, "/v1/pools/base", Some(json!({"min": 1, "max": 1}))).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &api.call(Method::PUT, "/v1/pools/base", Some(json!({"min": 3, "max": 1}))).await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    let (code, _, err) = cli(&env, &["pool", "rm", "base", "--memory-mb", "128"], "").await;
    assert_eq!(code, Some(0), "{err}");
    for id in [id, other] {
        api.ok(Method::DELETE, &format!("/v1/sandboxes/{id}"), None).await;
    }
    // The pool's ready sandboxes went with it.
    for _ in 0..100 {
        if env.sandbox_processes().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(env.sandbox_processes().is_empty(), "{:?}", env.sandbox_processes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_refuses_with_503_and_a_retry_hint() {
    let env = Env::new();
    let up = env.up("data", &["--max-sandboxes", "2"]).await;
    let api = up.admin();
    let a = api.create(json!({})).await;
    let b = api.create(json!({})).await;
    let resp = api.req(Method::POST, "/v1/sandboxes").json(&json!({})).send().await.expect("create");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().get("retry-after").is_some(), "{:?}", resp.headers());
    let body: Value = resp.json().await.expect("json");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("retry")), "{body}");
    // Nothing half-made: after a delete there is room again.
    api.ok(Method::DELETE, &format!("/v1/sandboxes/{a}"), None).await;
    let c = api.create(json!({})).await;
    for id in [b, c] {
        api.ok(Method::DELETE, &format!("/v1/sandboxes/{id}"), None).await;
    }
}

/// Live (or ended) sandboxes the API still lists.
async fn listed(api: &Api, states: &str) -> usize {
    let v = api.ok(Method::GET, &format!("/v1/sandboxes?state={states}&limit=1000"), None).await;
    v["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_short_lived_sandboxes_leave_nothing_behind() {
    use futures_util::StreamExt;
    let env = Env::new();
    let up = env.up("data", &["--ended-retention-secs", "1"]).await;
    let api = up.admin();
    let run_dir = std::path::Path::new("/run/reins-test").join(&env.tag);
    // Most end by their 1 s timeout (the reaper), every tenth by a delete, every hundredth fails (unknown template).
    let failures = std::sync::atomic::AtomicU32::new(0);
    futures_util::stream::iter(0..10_000u32)
        .for_each_concurrent(16, |i| {
            let (api, failures) = (api.clone(), &failures);
            async move {
                if i % 100 == 99 {
                    let bad = api.call(Method::POST, "/v1/sandboxes", Some(json!({"template": "no-such"}))).await;
                    assert_error(&bad, StatusCode::NOT_FOUND, "template_not_found");
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                let id = api.create(json!({"timeout_secs": 1, "memory_mb": 64})).await;
                if i % 10 == 0 {
                    api.ok(Method::DELETE, &format!("/v1/sandboxes/{id}"), None).await;
                }
            }
        })
        .await;
    assert_eq!(failures.into_inner(), 100);
    // Every sandbox ends, then every row goes.
    for (states, what) in [("running,paused,hibernated", "live sandboxes"), ("ended", "ended rows")] {
        let mut left = usize::MAX;
        for _ in 0..600 {
            left = listed(&api, states).await;
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(left, 0, "{what} remain");
    }
    // No process in any slot cgroup, no mount, no directory of a sandbox.
    assert!(env.sandbox_processes().is_empty(), "processes left: {:?}", env.sandbox_processes());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&run_dir.to_string_lossy().into_owned()), "a mount of the run dir is left");
    let entries = |p: std::path::PathBuf| -> Vec<std::ffi::OsString> {
        std::fs::read_dir(&p).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default()
    };
    assert!(entries(run_dir.join("mnt")).is_empty(), "files under the mount point");
    for sub in ["node/hibernated", "node/snapshots/layers", "node/volumes"] {
        assert!(entries(env.data("data").join(sub)).is_empty(), "{sub} is not empty");
    }
    // Slots (and their cgroup directories) were reused, not made per sandbox.
    let slots = entries(std::path::Path::new("/sys/fs/cgroup/pids").join(format!("reins-test-{}", env.tag))).len();
    assert!(slots > 0 && slots < 1000, "{slots} slot cgroups for 10,000 sandboxes");
}
