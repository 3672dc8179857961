//! Resource abuse stays inside the sandbox.

use reins_sandbox::ExitStatus;

use super::{sh, spec_with, text, TestRuntime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_hits_the_pids_limit_only() {
    let t = TestRuntime::new();
    let bomb = t.create(spec_with(|l| l.pids = 64)).await;
    let neighbour = t.sandbox().await;
    let slot = bomb.slot().expect("slot");
    let exec = bomb
        .exec(reins_sandbox::ExecRequest::new([
            "python3",
            "-c",
            "
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(60); os._exit(0)
        n += 1
except OSError as e:
    print('refused after', n, e.strerror, flush=True)
",
        ]))
        .await
        .expect("exec");
    let out = exec.output().await.expect("output");
    let s = text(&out.stdout);
    assert!(s.contains("Resource temporarily unavailable"), "{s} / {}", text(&out.stderr));
    assert!(t.rt.cgroups().procs(slot).len() <= 64);
    // The neighbour and the host keep working.
    assert_eq!(text(&sh(&neighbour, "echo fine").await.stdout), "fine\n");
    assert!(std::process::Command::new("true").status().expect("host fork").success());
    bomb.destroy().await;
    neighbour.destroy().await;
    t.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_past_the_limit_is_oom_killed_inside() {
    let t = TestRuntime::new();
    let sb = t.create(spec_with(|l| l.memory_bytes = 64 << 20)).await;
    let out = sh(&sb, "python3 -c 'b = bytearray(256 << 20); print(len(b))'").await;
    assert!(matches!(out.status, ExitStatus::Code(137) | ExitStatus::Signal(9)), "{:?}", out.status);
    // The sandbox itself survives and still answers.
    assert_eq!(text(&sh(&sb, "echo alive").await.stdout), "alive\n");
    sb.destroy().await;
    t.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_the_disk_gives_enospc_inside() {
    let t = TestRuntime::new();
    let sb = t.create(spec_with(|l| l.disk_bytes = 16 << 20)).await;
    let out = sh(&sb, "dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>&1; echo rc=$?").await;
    let s = text(&out.stdout);
    assert!(s.contains("No space left on device"), "{s}");
    assert!(s.contains("rc=1"), "{s}");
    // Deleting frees it again.
    assert_eq!(text(&sh(&sb, "rm /tmp/fill && echo x > /tmp/small && cat /tmp/small").await.stdout), "x\n");
    sb.destroy().await;
    t.assert_clean().await;
}

fn pids_max(t: &TestRuntime, slot: u32) -> String {
    let dirs = t.rt.cgroups().slot_dirs(slot);
    dirs.iter().find_map(|d| std::fs::read_to_string(d.join("pids.max")).ok()).unwrap_or_default().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_on_reused_and_recreated_slots() {
    let t = TestRuntime::new();
    let mut seen = Vec::new();
    // Same limits twice (the second skips rewriting them), then new ones.
    for pids in [20, 20, 30] {
        let sb = t.create(spec_with(|l| l.pids = pids)).await;
        let slot = sb.slot().expect("slot");
        seen.push((slot, pids_max(&t, slot)));
        sb.destroy().await;
    }
    assert_eq!(seen, [(0, "20".to_owned()), (0, "20".to_owned()), (0, "30".to_owned())]);
    // The slot's directories removed behind its back (as `reins cleanup` or an
    // operator might): the record says 30, the new directories must get 30 too.
    t.rt.cgroups().remove_group().expect("remove");
    let sb = t.create(spec_with(|l| l.pids = 30)).await;
    assert_eq!(pids_max(&t, sb.slot().expect("slot")), "30");
    sb.destroy().await;
    t.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_get_a_bounded_descriptor_limit() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let out = sh(&sb, "ulimit -Sn; ulimit -Hn").await;
    let got: Vec<u64> = text(&out.stdout).lines().map(|l| l.parse().expect("number")).collect();
    assert_eq!(got.len(), 2);
    assert!(got[0] == got[1] && (1024..=65_536).contains(&got[0]), "{got:?}");
    sb.destroy().await;
    t.assert_clean().await;
}
