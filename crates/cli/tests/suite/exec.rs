//! Running commands: output, exit status, stdin, signals, terminals, concurrency.

use reins_sandbox::{ExecEvent, ExecRequest, ExitStatus, User};
use reins_types::{EnvVar, SandboxSpec};

use super::{sh, sh_as, text, TestRuntime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_stderr_and_exit_code_are_kept_apart() {
    let t = TestRuntime::new();
    // Through the backend interface the node daemon will use.
    assert_eq!(reins_sandbox::Backend::kind(&t.rt), reins_sandbox::BackendKind::Ns);
    let sb = reins_sandbox::Backend::create(&t.rt, &SandboxSpec::default()).await.expect("create");
    let out = sh(&sb, "echo out; echo err >&2; exit 3").await;
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.status, ExitStatus::Code(3));
    sb.destroy().await;
    t.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_program_is_127_and_signal_death_is_reported() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let out = sb.exec(ExecRequest::new(["no-such-program"])).await.expect("exec").output().await.expect("output");
    assert_eq!(out.status, ExitStatus::Code(127));
    assert!(text(&out.stderr).contains("command not found"), "{}", text(&out.stderr));
    let out = sh(&sb, "kill -KILL $$").await;
    assert_eq!(out.status, ExitStatus::Signal(9));
    assert_eq!(out.status.shell_code(), 137);
    let out = sh(&sb, "touch /tmp/f; chmod 644 /tmp/f; /tmp/f").await;
    assert_eq!(out.status, ExitStatus::Code(126));
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_streamed_and_closed() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let exec = sb.exec(ExecRequest::new(["wc", "-c"])).await.expect("exec");
    let data = vec![b'x'; 300_000];
    exec.write_stdin(&data).await.expect("stdin");
    exec.close_stdin().await.expect("close");
    let out = exec.output().await.expect("output");
    assert_eq!(text(&out.stdout).trim(), "300000");
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_streams_before_the_command_ends() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let mut exec = sb.exec(ExecRequest::new(["bash", "-c", "echo first; read line; echo $line"])).await.expect("exec");
    // The command blocks on stdin after its first line: that line must arrive now.
    assert_eq!(exec.next().await.expect("event"), Some(ExecEvent::Stdout(b"first\n".to_vec())));
    exec.write_stdin(b"second\n").await.expect("stdin");
    assert_eq!(exec.next().await.expect("event"), Some(ExecEvent::Stdout(b"second\n".to_vec())));
    assert_eq!(exec.next().await.expect("event"), Some(ExecEvent::Exit(ExitStatus::Code(0))));
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_the_command() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let mut exec = sb.exec(ExecRequest::new(["bash", "-c", "echo ready; exec sleep 100"])).await.expect("exec");
    assert_eq!(exec.next().await.expect("event"), Some(ExecEvent::Stdout(b"ready\n".to_vec())));
    exec.signal(libc::SIGTERM).await.expect("signal");
    assert_eq!(exec.output().await.expect("output").status, ExitStatus::Signal(libc::SIGTERM));
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_has_a_size_that_follows_resize() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let mut req = ExecRequest::new(["bash", "-c", "tty >/dev/null && echo isatty; stty size; read x; stty size"]);
    req.pty = Some((100, 30));
    let mut exec = sb.exec(req).await.expect("exec");
    let mut seen = String::new();
    while !seen.contains("30 100") {
        match exec.next().await.expect("event") {
            Some(ExecEvent::Stdout(d)) => seen.push_str(&text(&d)),
            other => panic!("unexpected {other:?} after {seen:?}"),
        }
    }
    assert!(seen.contains("isatty"), "{seen}");
    exec.resize(120, 40).await.expect("resize");
    exec.write_stdin(b"go\r").await.expect("stdin");
    let out = exec.output().await.expect("output");
    assert!(text(&out.stdout).contains("40 120"), "{}", text(&out.stdout));
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_a_terminal_interrupts_the_command() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let mut req = ExecRequest::new(["bash", "-c", "echo ready; sleep 100; echo not-interrupted"]);
    req.pty = Some((80, 24));
    let mut exec = sb.exec(req).await.expect("exec");
    let mut seen = String::new();
    while !seen.contains("ready") {
        if let Some(ExecEvent::Stdout(d)) = exec.next().await.expect("event") {
            seen.push_str(&text(&d));
        }
    }
    exec.write_stdin(&[3]).await.expect("ctrl-c");
    let out = exec.output().await.expect("output");
    assert!(!text(&out.stdout).contains("not-interrupted"));
    assert_eq!(out.status, ExitStatus::Signal(libc::SIGINT));
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_workdir_and_users() {
    let t = TestRuntime::new();
    let spec = SandboxSpec { env: vec!["FROM_SPEC=1".parse::<EnvVar>().expect("env")], ..SandboxSpec::default() };
    let sb = t.create(spec).await;
    let mut req = ExecRequest::new(["bash", "-c", "echo $FROM_SPEC $FROM_EXEC $HOME $USER; pwd; id -u"]);
    req.env = vec![("FROM_EXEC".into(), "2".into())];
    req.cwd = Some("/tmp".into());
    let out = sb.exec(req).await.expect("exec").output().await.expect("output");
    assert_eq!(text(&out.stdout), "1 2 /home/user user\n/tmp\n1000\n");
    let out = sh_as(&sb, User::Root, "id -u; echo $HOME; touch /root/x && echo ok").await;
    assert_eq!(text(&out.stdout), "0\n/root\nok\n");
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_template_has_bash_coreutils_python_and_git() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let out = sh(
        &sb,
        "python3 -c 'print(6*7)' && git --version >/dev/null && ls / >/dev/null && cd && git init -q r && echo ok",
    )
    .await;
    assert_eq!(text(&out.stdout), "42\nok\n", "stderr: {}", text(&out.stderr));
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sandboxes_run_concurrently_from_one_process() {
    let t = TestRuntime::with_embryos(2);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let rt = t.rt.clone();
        tasks.spawn(async move {
            let sb = rt.create(&SandboxSpec::default()).await.expect("create");
            let out = sh(&sb, &format!("echo {i} > /tmp/me; sleep 0.2; cat /tmp/me")).await;
            sb.destroy().await;
            (i, text(&out.stdout))
        });
    }
    while let Some(r) = tasks.join_next().await {
        let (i, out) = r.expect("task");
        assert_eq!(out, format!("{i}\n"), "each sandbox sees only its own files");
    }
    t.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_1_reaps_orphans() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    // Orphans re-parent to PID 1 and exit there; none may stay a zombie.
    sh(&sb, "for i in 1 2 3 4 5; do (sleep 0.05 &); done; sleep 0.3").await;
    let out = sh(&sb, "ps -eo stat= | grep -c '^Z' || true").await;
    assert_eq!(text(&out.stdout).trim(), "0");
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_output_arrives_whole_to_a_slow_reader() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let mut exec = sb.exec(ExecRequest::new(["head", "-c", "40000000", "/dev/zero"])).await.expect("exec");
    let mut total = 0usize;
    let mut chunks = 0usize;
    loop {
        match exec.next().await.expect("event") {
            Some(ExecEvent::Stdout(d)) => {
                total += d.len();
                chunks += 1;
                // A reader slower than the command: the guest must wait, nothing is lost.
                if chunks.is_multiple_of(64) {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
            Some(ExecEvent::Exit(status)) => {
                assert_eq!(status, ExitStatus::Code(0));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(total, 40_000_000);
    sb.destroy().await;
}
