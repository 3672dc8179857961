//! The `reins run` command as a user sees it.

use std::process::{Command, Output};

use super::{data_dir, reins_bin};

fn reins(args: &[&str]) -> Output {
    let data = data_dir();
    Command::new(reins_bin())
        .arg("--data-dir")
        .arg(&data)
        .args(args)
        .env("XDG_CONFIG_HOME", data.join("no-config"))
        .env_remove("REINS_URL")
        .env_remove("REINS_API_KEY")
        .output()
        .expect("reins runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn run_streams_output_and_returns_the_exit_code() {
    let o = reins(&["run", "--", "echo", "hello"]);
    assert_eq!((o.status.code(), o.stdout.as_slice()), (Some(0), b"hello\n".as_slice()));
    let o = reins(&["run", "--", "bash", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!((o.stdout.as_slice(), o.stderr.as_slice()), (b"out\n".as_slice(), b"err\n".as_slice()));
    assert_eq!(reins(&["run", "--", "no-such-command"]).status.code(), Some(127));
    assert_eq!(reins(&["run", "--", "bash", "-c", "kill -TERM $$"]).status.code(), Some(143));
    assert_eq!(reins(&["run", "--timeout", "300ms", "--", "sleep", "10"]).status.code(), Some(124));
}

#[test]
fn run_options_apply() {
    let o = reins(&[
        "run",
        "--env",
        "A=1",
        "-e",
        "B=two",
        "--workdir",
        "/tmp",
        "--memory",
        "256M",
        "--cpus",
        "0.5",
        "--pids",
        "100",
        "--",
        "bash",
        "-c",
        "echo $A $B $(pwd)",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "1 two /tmp\n", "{}", stderr(&o));
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("f"), "vol").expect("write");
    let v = format!("{}:/mnt/v:ro", dir.path().display());
    let o = reins(&["run", "--volume", &v, "--", "cat", "/mnt/v/f"]);
    assert_eq!(o.stdout, b"vol");
    let o = Command::new(reins_bin())
        .args(["--data-dir", &data_dir().to_string_lossy(), "run", "-i", "--", "tr", "a-z", "A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(b"shout")?;
            c.wait_with_output()
        })
        .expect("run -i");
    assert_eq!(o.stdout, b"SHOUT");
}

#[test]
fn bad_input_names_the_problem_and_exits_non_zero() {
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--template", "nope", "--", "true"], "template `nope` not found"),
        (&["run", "--memory", "0", "--", "true"], "memory limit 0 bytes is too small"),
        (&["run", "--memory", "lots", "--", "true"], "write a size such as 512M"),
        (&["run", "--cpus", "-1", "--", "true"], "invalid cpu count `-1`"),
        (&["run", "--disk", "12Q", "--", "true"], "unknown unit"),
        (&["run", "--volume", "/no/such/dir:/x", "--", "true"], "volume source /no/such/dir does not exist"),
        (&["run", "--volume", "relative:/x", "--", "true"], "invalid volume"),
        (&["run", "--env", "1X=y", "--", "true"], "invalid environment variable"),
        (&["run"], "required"),
    ];
    for (args, want) in cases {
        let o = reins(args);
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn template_ls_lists_base() {
    let o = reins(&["template", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(list.as_array().expect("array").iter().any(|t| t["name"] == "base"), "{list}");
}

#[test]
fn after_run_and_cleanup_nothing_is_left() {
    // A run directory and cgroup group of its own, so no other test shares them.
    let tag = format!("cleanup-{}", std::process::id());
    let run_dir = std::path::PathBuf::from("/run/reins-test").join(&tag);
    let with_env = |args: &[&str]| {
        Command::new(reins_bin())
            .arg("--data-dir")
            .arg(data_dir())
            .args(args)
            .env("REINS_RUN_DIR", &run_dir)
            .env("REINS_CGROUP", &tag)
            .output()
            .expect("reins")
    };
    assert_eq!(with_env(&["run", "--", "true"]).status.code(), Some(0));
    let o = with_env(&["cleanup", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!((report["slots"].as_u64(), report["busy"].as_u64()), (Some(1), Some(0)), "{report}");
    for ctl in ["memory", "pids", "cpu", "freezer"] {
        let dir = std::path::Path::new("/sys/fs/cgroup").join(ctl).join(&tag);
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    let skel: Vec<_> = std::fs::read_dir(run_dir.join("skel")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(skel.is_empty(), "skeletons left: {skel:?}");
    let locks: Vec<_> = std::fs::read_dir(run_dir.join("slots")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(locks.is_empty(), "locks left: {locks:?}");
    let _ = std::fs::remove_dir_all(&run_dir);
}

#[test]
fn interactive_terminal_session() {
    // `script` gives `reins run -it` a real terminal, as a user's shell would.
    let cmd = format!(
        "stty cols 91 rows 33; {} --data-dir {} run -it -- bash --norc -i",
        reins_bin().display(),
        data_dir().display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        std::thread::sleep(std::time::Duration::from_millis(500));
        stdin.write_all(b"stty size; echo in-$((6*7)); exit 5\r").expect("type");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let out = child.wait_with_output().expect("session");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("33 91"), "the terminal size reached the sandbox: {s}");
    assert!(s.contains("in-42"), "{s}");
    assert_eq!(out.status.code(), Some(5), "{s}");
}

#[test]
fn run_reaches_only_what_its_allowlist_names() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut b).expect("read");
            assert!(n > 0);
            head.extend_from_slice(&b[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nhi\n").expect("write");
    });
    let url = format!("http://localhost:{port}/");
    let exact = format!("127.0.0.1:{port}");
    // `localhost` is in NO_PROXY for programs that talk to their own loopback;
    // `--noproxy ''` sends it through the proxy, as any other name.
    let o = reins(&["run", "--allow", "localhost", "--allow", &exact, "--", "curl", "-sS", "--noproxy", "", &url]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi\n", "{}", stderr(&o));
    server.join().expect("server");
    let o = reins(&["run", "--allow", "localhost", "--", "curl", "-sS", "--noproxy", "", &url]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("`localhost` resolves only to refused addresses"), "a name is not enough for loopback: {out}");
    let o = reins(&["run", "--", "curl", "-sS", "--max-time", "3", &url]);
    assert_eq!(o.status.code(), Some(7), "no network by default: {}", stderr(&o));
    let o = reins(&["run", "--secret", "x", "--", "true"]);
    assert!(stderr(&o).contains("--secret needs a Reins server"), "{}", stderr(&o));
    let o = reins(&["run", "--allow", "10.0.0.1", "--direct", "--", "true"]);
    assert!(stderr(&o).contains("--direct needs a Reins server") && !o.status.success(), "{}", stderr(&o));
}
