//! Shared helpers for the integration suite.

mod api;
mod bad_input;
mod cli;
mod exec;
mod files;
mod lifecycle;
mod resources;
mod security;
mod snapshots;
mod templates;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use reins_sandbox::{ExecRequest, Output, Runtime, RuntimeOptions, Sandbox, User};
use reins_types::{Limits, SandboxSpec};

/// The `reins` binary under test; it is also the sandbox helper.
pub fn reins_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_reins"))
}

/// One data directory for the whole suite, so the base template is built once.
pub fn data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("reins-test-data");
    std::fs::create_dir_all(&dir).expect("data dir");
    dir
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A runtime with its own cgroup group and run directory; removed on drop.
pub struct TestRuntime {
    pub rt: Runtime,
    pub run_dir: PathBuf,
}

impl TestRuntime {
    /// A runtime that keeps no children parked (so every create is a full one).
    pub fn new() -> Self {
        Self::with_embryos(0)
    }

    pub fn with_embryos(embryos: usize) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("t{}-{n}", std::process::id());
        let mut opts = RuntimeOptions::new(data_dir()).expect("options");
        opts.helper = reins_bin();
        opts.cgroup = format!("reins-test-{tag}");
        opts.run_dir = PathBuf::from("/run/reins-test").join(&tag);
        opts.embryos = embryos;
        let run_dir = opts.run_dir.clone();
        let rt = Runtime::start(opts).expect("runtime starts (tests need root)");
        Self { rt, run_dir }
    }

    pub async fn sandbox(&self) -> Sandbox {
        self.create(SandboxSpec::default()).await
    }

    pub async fn create(&self, spec: SandboxSpec) -> Sandbox {
        self.rt.create(&spec).await.expect("sandbox starts")
    }

    /// Waits up to `within` for dropped sandboxes to be gone; returns how
    /// many are still dying.
    pub async fn settle_dying(&self, within: std::time::Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        while self.rt.dying() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.rt.dying()
    }

    /// Asserts that no sandbox of this runtime left anything: processes in
    /// its cgroups, mounts on the host, files in its run directory. Parked
    /// children are cleared first.
    pub async fn assert_clean(&self) {
        self.rt.clear_embryos().await;
        for dir in self.rt.cgroups().existing_slot_dirs() {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            assert!(procs.trim().is_empty(), "processes left in {}: {procs}", dir.display());
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let run = self.run_dir.to_string_lossy().into_owned();
        assert!(!mounts.contains(&run), "host mount table mentions {run}");
        let mnt = self.run_dir.join("mnt");
        let left: Vec<_> = std::fs::read_dir(&mnt).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "files left in {}: {left:?}", mnt.display());
    }
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        // Slot directories are kept for reuse by a real node; tests remove theirs.
        remove_cgroups(self.rt.cgroups());
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// Removes a test's cgroup group and slots, waiting up to 5 s for processes
/// still dying in them (a service killed just before, its sandboxes going
/// with it): leftover memory cgroups slow every later test on this kernel.
pub fn remove_cgroups(cgroups: &reins_sandbox::Cgroups) {
    let mut last = None;
    for _ in 0..250 {
        match cgroups.remove_group() {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!("warning: test cgroups left behind: {last:?}");
}

pub fn spec_with(f: impl FnOnce(&mut Limits)) -> SandboxSpec {
    let mut spec = SandboxSpec::default();
    f(&mut spec.limits);
    spec
}

/// Runs `bash -c script` as `user` and collects the output.
pub async fn sh(sb: &Sandbox, script: &str) -> Output {
    sh_as(sb, User::User, script).await
}

pub async fn sh_as(sb: &Sandbox, user: User, script: &str) -> Output {
    let mut req = ExecRequest::new(["bash", "-c", script]);
    req.user = user;
    sb.exec(req).await.expect("exec starts").output().await.expect("exec finishes")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Waits (up to 5 s) until exactly `n` host processes carry `marker`; returns
/// how many there were last. (A process in the middle of `execve` briefly has
/// no readable command line, so one look is not enough.)
pub async fn settle_processes_with(marker: &str, n: usize) -> usize {
    let mut seen = host_processes_with(marker).len();
    for _ in 0..250 {
        if seen == n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        seen = host_processes_with(marker).len();
    }
    seen
}

/// Processes on the host whose command line contains `marker`.
pub fn host_processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(marker))
                .unwrap_or(false)
        })
        .collect()
}
