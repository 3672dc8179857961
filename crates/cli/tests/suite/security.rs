//! Escapes that must fail, each asserting the specific refusal.

use std::net::TcpListener;
use std::time::Duration;

use reins_sandbox::User;
use reins_types::{SandboxSpec, Volume};

use super::{data_dir, sh, sh_as, text, TestRuntime};

/// Runs python code inside; the code prints one result line per check.
async fn py(sb: &reins_sandbox::Sandbox, user: User, code: &str) -> String {
    let out = sh_as(sb, user, &format!("python3 - <<'EOF'\n{code}\nEOF")).await;
    assert!(out.stderr.is_empty(), "python failed: {}", text(&out.stderr));
    text(&out.stdout)
}

const SYSCALL_PRELUDE: &str = r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def err(rc):
    return "ok" if rc >= 0 else errno.errorcode[ctypes.get_errno()]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_files_are_invisible() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let checkout = env!("CARGO_MANIFEST_DIR");
    let data = data_dir();
    for path in [checkout, &data.to_string_lossy(), "/root/.bash_history", "/etc/shadow", &t.run_dir.to_string_lossy()]
    {
        let out = sh_as(&sb, User::Root, &format!("cat '{path}' 2>&1 || ls '{path}' 2>&1")).await;
        assert!(text(&out.stdout).contains("No such file or directory"), "{path}: {}", text(&out.stdout));
    }
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_sandbox_is_invisible() {
    let t = TestRuntime::new();
    let a = t.sandbox().await;
    let b = t.sandbox().await;
    sh(&a, "echo secret > /tmp/a-secret; (exec -a a-secret-proc sleep 100) & true").await;
    let a_pid = a.host_pid();
    let script =
        format!("cat /tmp/a-secret 2>&1; ls /proc/{a_pid}/root 2>&1; pgrep -f a-secret-pro[c] || echo no-such-process");
    let out = sh_as(&b, User::Root, &script).await;
    let s = text(&out.stdout);
    assert!(s.contains("/tmp/a-secret: No such file or directory"), "{s}");
    assert!(s.contains(&format!("/proc/{a_pid}/root': No such file or directory")), "{s}");
    assert!(s.contains("no-such-process"), "{s}");
    a.destroy().await;
    b.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_and_host_directories_are_read_only() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let out =
        sh_as(&sb, User::Root, "{ touch /usr/bin/evil; echo x >> /etc/passwd; rm /bin/ls; } 2>&1; echo done").await;
    let s = text(&out.stdout);
    assert!(s.contains("/usr/bin/evil': Read-only file system"), "{s}");
    assert!(s.contains("/etc/passwd: Permission denied"), "{s}");
    assert!(s.contains("Read-only file system"), "{s}");
    assert!(!std::path::Path::new("/usr/bin/evil").exists());
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_syscalls_are_refused() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let code = format!(
        "{SYSCALL_PRELUDE}
print('mount', err(libc.mount(b'none', b'/mnt', b'tmpfs', 0, None)))
print('umount', err(libc.umount2(b'/proc', 2)))
print('unshare', err(libc.unshare(0x10000000)))
print('finit_module', err(libc.syscall(313, 0, b'', 0)))
print('init_module', err(libc.syscall(175, None, 0, b'')))
print('ptrace', err(libc.ptrace(16, 1, None, None)))
print('bpf', err(libc.syscall(321, 0, None, 0)))
print('keyctl', err(libc.syscall(250, 0, 0, 0, 0, 0)))
print('perf', err(libc.syscall(298, None, 0, -1, -1, 0)))
print('reboot', err(libc.syscall(169, 0xfee1dead, 672274793, 0x1234567, None)))
print('kexec', err(libc.syscall(246, 0, 0, None, 0)))
print('swapon', err(libc.syscall(167, b'/tmp/x', 0)))
print('iopl', err(libc.syscall(172, 3)))
print('userfaultfd', err(libc.syscall(323, 0)))
print('open_by_handle_at', err(libc.syscall(304, -100, None, 0)))
print('pivot_root', err(libc.syscall(155, b'/', b'/')))
print('setns', err(libc.syscall(308, 0, 0)))
print('acct', err(libc.syscall(163, None)))
"
    );
    for user in [User::User, User::Root] {
        let s = py(&sb, user, &code).await;
        for line in s.lines() {
            assert!(line.ends_with(" EPERM"), "{user:?}: {line}");
        }
        assert_eq!(s.lines().count(), 18);
    }
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_capabilities_and_no_escalation_through_setuid() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    for user in [User::User, User::Root] {
        let out = sh_as(
            &sb,
            user,
            "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status; grep NoNewPrivs /proc/self/status",
        )
        .await;
        let s = text(&out.stdout);
        assert_eq!(s.matches("0000000000000000").count(), 5, "{user:?}: {s}");
        assert!(s.contains("NoNewPrivs:\t1"), "{s}");
    }
    // A setuid-root copy planted by the sandbox's root does not make `user` root.
    let out = sh_as(&sb, User::Root, "cp /usr/bin/id /tmp/suid-id && chmod 4755 /tmp/suid-id && echo planted").await;
    assert_eq!(text(&out.stdout), "planted\n", "{}", text(&out.stderr));
    let out =
        sh(&sb, "ls -l /tmp/suid-id | cut -c1-10; /tmp/suid-id -u; su -c id root </dev/null 2>&1; echo rc=$?").await;
    let s = text(&out.stdout);
    assert!(s.starts_with("-rwsr-xr-x\n1000\n"), "{s}");
    assert!(!s.contains("uid=0"), "{s}");
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_1_and_proc_do_not_lead_out() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let code = format!(
        "{SYSCALL_PRELUDE}
import signal
for p in ['/proc/1/root/', '/proc/1/exe', '/proc/1/environ', '/proc/1/mem']:
    try:
        os.listdir(p) if p.endswith('/') else open(p, 'rb').read(1)
        print(p, 'opened')
    except OSError as e:
        print(p, errno.errorcode[e.errno])
try:
    os.kill(1, signal.SIGKILL)
except OSError as e:
    print('kill', errno.errorcode[e.errno])
print('alive')
"
    );
    for user in [User::User, User::Root] {
        let s = py(&sb, user, &code).await;
        for line in s.lines().filter(|l| l.starts_with('/')) {
            assert!(line.ends_with("EACCES") || line.ends_with("EPERM"), "{user:?}: {line}");
        }
        assert!(s.ends_with("alive\n"), "{s}");
    }
    // PID 1 ignored or refused the signals: the sandbox still answers.
    assert_eq!(text(&sh(&sb, "echo still-here").await.stdout), "still-here\n");
    // A symlink in the writable layer resolves inside the sandbox, also for the file API.
    sh(&sb, "ln -s /proc/1/root/etc/hostname /home/user/link; ln -s ../../../../../../etc /home/user/up").await;
    // The guest is PID 1, so for the file API /proc/1/root is the sandbox's own root.
    let (data, _) = sb.read_file(User::User, "/home/user/link", 0, 0).await.expect("inside the sandbox");
    assert_eq!(data, b"sandbox\n");
    assert_ne!(data, std::fs::read("/etc/hostname").unwrap_or_default());
    let (data, _) = sb.read_file(User::User, "/home/user/up/hostname", 0, 0).await.expect("sandbox's own /etc");
    assert_eq!(data, b"sandbox\n");
    // Only the sandbox's own processes are visible.
    let out = sh(&sb, "ls /proc | grep -c '^[0-9]'").await;
    let n: usize = text(&out.stdout).trim().parse().expect("count");
    assert!(n <= 5, "{n} processes visible");
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_network_beyond_its_own_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("host listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let code = format!(
        "{SYSCALL_PRELUDE}
import socket
try:
    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('tcp connected')
except OSError as e:
    print('tcp', errno.errorcode[e.errno])
print('ifaces', sorted(n for _, n in socket.if_nameindex()))
print('routes', len(open('/proc/net/route').read().splitlines()) - 1)
try:
    socket.getaddrinfo('example.com', 80); print('dns resolved')
except socket.gaierror as e:
    print('dns failed')
s = socket.socket(); s.bind(('127.0.0.1', 80)); s.listen(); print('own loopback ok')
"
    );
    let s = py(&sb, User::User, &code).await;
    assert!(s.contains("tcp ECONNREFUSED"), "{s}");
    assert!(s.contains("ifaces ['lo']"), "{s}");
    assert!(s.contains("routes 0"), "{s}");
    assert!(s.contains("dns failed"), "{s}");
    assert!(s.contains("own loopback ok"), "{s}");
    std::thread::sleep(Duration::from_millis(50));
    assert!(listener.accept().is_err(), "the host listener got a connection");
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_bound_read_only_when_asked() {
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("in.txt"), "from host").expect("write");
    let t = TestRuntime::new();
    let volume: Volume = format!("{}:/data:ro", host.path().display()).parse().expect("volume");
    let sb = t.create(SandboxSpec { volumes: vec![volume], ..SandboxSpec::default() }).await;
    let out = sh_as(&sb, User::Root, "cat /data/in.txt; echo; touch /data/new 2>&1").await;
    let s = text(&out.stdout);
    assert!(s.starts_with("from host\n"), "{s}");
    assert!(s.contains("Read-only file system"), "{s}");
    assert!(!host.path().join("new").exists());
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_hostname_cgroup_root_and_no_signals_out() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let me = std::process::id();
    let out = sh_as(
        &sb,
        User::Root,
        &format!("hostname; cat /proc/self/cgroup | cut -d: -f3 | sort -u; kill -0 {me} 2>&1; echo rc=$?"),
    )
    .await;
    let s = text(&out.stdout);
    assert!(s.starts_with("sandbox\n/\n"), "{s}");
    assert!(s.contains("No such process") && s.contains("rc=1"), "{s}");
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_volumes_stay_read_only_below_host_submounts() {
    let host = tempfile::tempdir().expect("tempdir");
    let sub = host.path().join("sub");
    std::fs::create_dir(&sub).expect("sub");
    let mounted = std::process::Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&sub).status().expect("mount");
    assert!(mounted.success());
    let t = TestRuntime::new();
    let volume: Volume = format!("{}:/data:ro", host.path().display()).parse().expect("volume");
    let sb = t.create(SandboxSpec { volumes: vec![volume], ..SandboxSpec::default() }).await;
    let out = sh_as(&sb, User::Root, "touch /data/sub/x 2>&1; echo rc=$?").await;
    let s = text(&out.stdout);
    sb.destroy().await;
    let _ = std::process::Command::new("umount").arg(&sub).status();
    assert!(s.contains("Read-only file system") && s.contains("rc=1"), "{s}");
    assert!(!sub.join("x").exists());
}
