//! Bad input gets a clear error and leaves nothing behind.

use reins_sandbox::Error;
use reins_types::{SandboxSpec, Volume};

use super::{data_dir, spec_with, TestRuntime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_refused_with_a_reason() {
    let t = TestRuntime::new();
    let unknown = SandboxSpec { template: "no-such-template".into(), ..SandboxSpec::default() };
    let err = t.rt.create(&unknown).await.expect_err("unknown template");
    assert!(matches!(err, Error::TemplateNotFound(_)) && err.is_user_error(), "{err}");
    assert!(err.to_string().contains("reins template ls"), "{err}");
    let err = t.rt.create(&spec_with(|l| l.memory_bytes = 0)).await.expect_err("memory 0");
    assert!(err.to_string().contains("memory limit"), "{err}");
    let err = t.rt.create(&spec_with(|l| l.pids = 0)).await.expect_err("pids 0");
    assert!(err.is_user_error(), "{err}");
    let missing: Volume = "/does/not/exist:/data".parse().expect("syntax ok");
    let err = t.rt.create(&SandboxSpec { volumes: vec![missing], ..SandboxSpec::default() }).await.expect_err("volume");
    assert!(
        matches!(err, Error::VolumeNotFound(ref p) if p.as_path() == std::path::Path::new("/does/not/exist")),
        "{err}"
    );
    let sb = t.sandbox().await;
    let err = sb.exec(reins_sandbox::ExecRequest::new(Vec::<String>::new())).await.expect_err("no command");
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    sb.destroy().await;
    t.assert_clean().await;
}

/// A spec that passes validation but fails inside set-up: a volume mounted
/// under /proc, which exists only after the sandbox's proc is mounted.
fn late_failure() -> SandboxSpec {
    let v: Volume = format!("{}:/proc/sys/x", data_dir().display()).parse().expect("volume");
    SandboxSpec { volumes: vec![v], ..SandboxSpec::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cycles_with_failures_leave_nothing() {
    let t = TestRuntime::with_embryos(2);
    let err = t.rt.create(&late_failure()).await.expect_err("late failure");
    assert!(matches!(err, Error::Setup(_)), "{err}");
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let rt = t.rt.clone();
        tasks.spawn(async move {
            let mut failures = 0;
            for i in 0..250 {
                let spec = match (worker + i) % 5 {
                    0 => late_failure(),
                    1 => spec_with(|l| l.memory_bytes = 1),
                    _ => SandboxSpec::default(),
                };
                match rt.create(&spec).await {
                    Ok(sb) if i % 2 == 0 => sb.destroy().await,
                    Ok(sb) => drop(sb),
                    Err(_) => failures += 1,
                }
            }
            failures
        });
    }
    let mut failures = 0;
    while let Some(r) = tasks.join_next().await {
        failures += r.expect("worker");
    }
    assert_eq!(failures, 400, "every fifth spec fails late and every fifth early");
    assert_eq!(t.settle_dying(std::time::Duration::from_secs(4)).await, 0);
    t.assert_clean().await;
    let staging: Vec<_> = std::fs::read_dir(data_dir().join("templates/staging")).expect("staging").flatten().collect();
    assert!(staging.is_empty(), "staging left: {staging:?}");
    // Slots (and their cgroup directories) are reused, not piled up: 1000
    // sandboxes from 4 workers, 2 parked children and the dropped ones not
    // yet reaped used a handful of slots (up to 4 directories each on v1).
    let dirs = t.rt.cgroups().existing_slot_dirs().len();
    assert!(dirs <= 4 * 16, "{dirs} slot directories for 1000 sandboxes");
}
