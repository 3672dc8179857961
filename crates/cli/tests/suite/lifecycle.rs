//! Pause and resume, timeouts, destroy, and death with the supervisor.

use std::path::PathBuf;
use std::time::Duration;

use reins_sandbox::{Error, ExecEvent, ExecRequest};
use reins_types::SandboxSpec;

use super::{host_processes_with, reins_bin, settle_processes_with, sh, text, TestRuntime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_freezes_every_process_and_resume_thaws() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let mut exec =
        sb.exec(ExecRequest::new(["bash", "-c", "while true; do echo tick; sleep 0.02; done"])).await.expect("exec");
    assert!(matches!(exec.next().await.expect("event"), Some(ExecEvent::Stdout(_))));
    sb.pause().expect("pause");
    // Drain what was in flight, then nothing may arrive while frozen.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), exec.next()).await.map(|r| r.ok().flatten())
    {
    }
    let frozen = tokio::time::timeout(Duration::from_millis(500), exec.next()).await;
    assert!(frozen.is_err(), "output while paused: {frozen:?}");
    sb.resume().expect("resume");
    let ev = tokio::time::timeout(Duration::from_secs(5), exec.next()).await.expect("output after resume");
    assert!(matches!(ev, Ok(Some(ExecEvent::Stdout(_)))), "{ev:?}");
    drop(exec);
    sb.destroy().await;
    t.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_sandbox() {
    let t = TestRuntime::new();
    let spec = SandboxSpec { timeout: Some(Duration::from_millis(500)), ..SandboxSpec::default() };
    let sb = t.create(spec).await;
    let exec = sb.exec(ExecRequest::new(["sleep", "30"])).await.expect("exec");
    let err = exec.output().await.expect_err("killed");
    assert!(matches!(err, Error::Timeout), "{err:?}");
    assert!(sb.timed_out());
    assert!(matches!(sb.exec(ExecRequest::new(["true"])).await, Err(Error::Timeout)));
    sb.destroy().await;
    t.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_removes_every_process() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let marker = "reins-destroy-marker";
    let out = sh(&sb, &format!("(exec -a {marker} sleep 1000) & (exec -a {marker} sleep 1000) & echo started")).await;
    assert_eq!(text(&out.stdout), "started\n");
    assert_eq!(settle_processes_with(marker, 2).await, 2);
    let slot = sb.slot().expect("slot");
    sb.destroy().await;
    assert!(host_processes_with(marker).is_empty());
    assert!(t.rt.cgroups().procs(slot).is_empty());
    t.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_sandbox_kills_it() {
    let t = TestRuntime::new();
    let marker = "reins-drop-marker";
    {
        let sb = t.sandbox().await;
        sh(&sb, &format!("(exec -a {marker} sleep 1000) & true")).await;
        assert_eq!(settle_processes_with(marker, 1).await, 1);
    }
    // Its PID 1 gone (no longer dying) means every process of its PID namespace is too.
    assert_eq!(t.settle_dying(Duration::from_secs(2)).await, 0);
    assert!(host_processes_with(marker).is_empty());
}

/// A command still running when its sandbox goes (destroyed, or dropped
/// before its reader saw the guest's end) ends with an error at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_command_ends_when_its_sandbox_goes() {
    let t = TestRuntime::new();
    for destroy in [true, false] {
        let sb = t.sandbox().await;
        let mut exec = sb.exec(ExecRequest::new(["sleep", "600"])).await.expect("exec");
        if destroy {
            sb.destroy().await;
        } else {
            drop(sb);
        }
        let end = tokio::time::timeout(Duration::from_secs(2), exec.next()).await;
        assert!(matches!(end, Ok(Err(Error::Gone))), "destroy={destroy}: {end:?}");
    }
    assert_eq!(t.settle_dying(Duration::from_secs(2)).await, 0);
    t.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_dies_with_its_supervisor() {
    // Unique per run, and built at run time inside, so that no host command
    // line contains the marker itself.
    let id = format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    );
    let marker = format!("reins-orphan-{id}");
    let mut child = tokio::process::Command::new(reins_bin())
        .args([
            "--data-dir",
            &super::data_dir().to_string_lossy(),
            "run",
            "--env",
            &format!("ID={id}"),
            "--",
            "bash",
            "-c",
        ])
        .arg("(exec -a reins-orphan-$ID sleep 1000) & echo up; wait")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("reins run");
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = [0u8; 3];
    tokio::io::AsyncReadExt::read_exact(&mut out, &mut buf).await.expect("up");
    assert_eq!(settle_processes_with(&marker, 1).await, 1);
    child.kill().await.expect("kill -9 the supervisor");
    for _ in 0..250 {
        if host_processes_with(&marker).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(host_processes_with(&marker).is_empty(), "sandbox outlived its supervisor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_children_become_sandboxes_with_the_requested_limits() {
    let t = TestRuntime::with_embryos(1);
    for _ in 0..500 {
        if t.rt.parked() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(t.rt.parked(), 1, "a child is parked ahead of time");
    let spec = super::spec_with(|l| {
        l.pids = 16;
        l.memory_bytes = 96 << 20;
    });
    let sb = t.create(spec).await;
    let slot = sb.slot().expect("slot");
    let dirs = t.rt.cgroups().slot_dirs(slot);
    let read = |f: &str| dirs.iter().find_map(|d| std::fs::read_to_string(d.join(f)).ok()).unwrap_or_default();
    assert_eq!(read("pids.max").trim(), "16");
    assert!(t.rt.cgroups().procs(slot).contains(&sb.host_pid()), "PID 1 is in the slot's cgroups");
    assert_eq!(text(&sh(&sb, "echo hatched").await.stdout), "hatched\n");
    sb.destroy().await;
    t.assert_clean().await;
}

/// A parked child counts only once it is in its slot's cgroups, in every
/// hierarchy: a create must never wait for that move (on cgroup v1 it can
/// wait 10-15 ms for an RCU grace period: the cold-start p99 tail when
/// children moved themselves after they were counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_children_are_in_their_cgroups_before_they_count() {
    let t = TestRuntime::with_embryos(4);
    let mut checks = 0;
    for _ in 0..20 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let parked = t.rt.parked();
            let in_groups = processes_in_slots_per_hierarchy(&t);
            assert!(
                in_groups.iter().all(|&n| n >= parked),
                "{parked} children counted as parked, but slot cgroups hold {in_groups:?} processes per hierarchy"
            );
            checks += 1;
            if parked == 4 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "4 children parked within 10 s");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        // Take one, so that another is made.
        t.sandbox().await.destroy().await;
    }
    assert!(checks >= 20);
    t.assert_clean().await;
}

/// For each cgroup hierarchy, how many processes its slot directories hold.
fn processes_in_slots_per_hierarchy(t: &TestRuntime) -> Vec<usize> {
    let mut per_parent = std::collections::BTreeMap::<PathBuf, usize>::new();
    for dir in t.rt.cgroups().existing_slot_dirs() {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let parent = dir.parent().map(PathBuf::from).unwrap_or_default();
        *per_parent.entry(parent).or_default() += procs.lines().filter(|l| !l.trim().is_empty()).count();
    }
    per_parent.into_values().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sandbox_can_be_destroyed_and_its_slot_reused() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let slot = sb.slot().expect("slot");
    sh(&sb, "(sleep 1000 &) ; true").await;
    sb.pause().expect("pause");
    tokio::time::timeout(Duration::from_secs(10), sb.destroy()).await.expect("destroy of a paused sandbox returns");
    // The next sandbox on that slot must not start frozen.
    let next = t.sandbox().await;
    assert_eq!(next.slot(), Some(slot), "the slot is reused");
    let out = tokio::time::timeout(Duration::from_secs(10), sh(&next, "echo thawed")).await.expect("not frozen");
    assert_eq!(text(&out.stdout), "thawed\n");
    next.destroy().await;
    t.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sandbox_still_times_out() {
    let t = TestRuntime::new();
    let spec = SandboxSpec { timeout: Some(Duration::from_millis(300)), ..SandboxSpec::default() };
    let sb = t.create(spec).await;
    let exec = sb.exec(ExecRequest::new(["sleep", "30"])).await.expect("exec");
    sb.pause().expect("pause");
    let err =
        tokio::time::timeout(Duration::from_secs(10), exec.output()).await.expect("ends in time").expect_err("killed");
    assert!(matches!(err, Error::Timeout), "{err:?}");
    sb.destroy().await;
    t.assert_clean().await;
}
