//! File operations of the sandbox library.

use std::time::Duration;

use reins_sandbox::{Error, FileKind, FsErrorKind, User, WatchKind};

use super::{sh, sh_as, text, TestRuntime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_stat_list_rename_remove() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let info = sb.write_file(User::User, "/home/user/a/b.txt", b"hello".to_vec(), false).await.expect("write");
    assert_eq!((info.size, info.uid, info.kind), (5, 1000, FileKind::File));
    sb.write_file(User::User, "/home/user/a/b.txt", b" world".to_vec(), true).await.expect("append");
    let (data, eof) = sb.read_file(User::User, "/home/user/a/b.txt", 0, 0).await.expect("read");
    assert_eq!((data.as_slice(), eof), (b"hello world".as_slice(), true));
    let (part, eof) = sb.read_file(User::User, "/home/user/a/b.txt", 6, 3).await.expect("range");
    assert_eq!((part.as_slice(), eof), (b"wor".as_slice(), false));
    // Commands see what the API wrote.
    assert_eq!(text(&sh(&sb, "cat /home/user/a/b.txt").await.stdout), "hello world");
    sb.mkdir(User::User, "/home/user/a/c/d", true).await.expect("mkdir -p");
    let names: Vec<String> =
        sb.list(User::User, "/home/user/a", 2).await.expect("list").into_iter().map(|e| e.path).collect();
    assert_eq!(names, ["/home/user/a/b.txt", "/home/user/a/c", "/home/user/a/c/d"]);
    sb.rename(User::User, "/home/user/a/b.txt", "/home/user/a/c/e.txt").await.expect("rename");
    assert_eq!(sb.stat(User::User, "/home/user/a/c/e.txt").await.expect("stat").size, 11);
    sb.remove(User::User, "/home/user/a", true).await.expect("rm -r");
    let err = sb.stat(User::User, "/home/user/a").await.expect_err("gone");
    assert!(matches!(err, Error::Fs(ref e) if e.kind == FsErrorKind::NotFound), "{err:?}");
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_apply_as_the_user() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let err = sb.write_file(User::User, "/etc/evil", b"x".to_vec(), false).await.expect_err("user cannot write /etc");
    assert!(matches!(err, Error::Fs(ref e) if e.kind == FsErrorKind::PermissionDenied), "{err:?}");
    let err = sb.read_file(User::User, "/root/x", 0, 0).await.expect_err("user cannot read /root");
    assert!(matches!(err, Error::Fs(ref e) if e.kind == FsErrorKind::PermissionDenied), "{err:?}");
    let info = sb.write_file(User::Root, "/root/x", b"r".to_vec(), false).await.expect("root writes /root");
    assert_eq!(info.uid, 0);
    let err = sb.remove(User::User, "/home/user", false).await.expect_err("not empty or denied");
    assert!(matches!(err, Error::Fs(_)), "{err:?}");
    let err = sb.read_file(User::User, "relative/path", 0, 0).await.expect_err("relative");
    assert!(matches!(err, Error::Fs(ref e) if e.kind == FsErrorKind::InvalidInput), "{err:?}");
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_changes() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    sb.mkdir(User::User, "/home/user/w/sub", true).await.expect("mkdir");
    let mut watch = sb.watch("/home/user/w", true).await.expect("watch");
    sh(&sb, "echo x > /home/user/w/new.txt; echo y > /home/user/w/sub/deep.txt; rm /home/user/w/new.txt").await;
    let mut seen = Vec::new();
    while !seen.iter().any(|(k, p): &(WatchKind, String)| *k == WatchKind::Remove && p.ends_with("new.txt")) {
        let ev =
            tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("event in time").expect("event");
        seen.push((ev.kind, ev.path));
    }
    assert!(seen.contains(&(WatchKind::Create, "/home/user/w/new.txt".into())), "{seen:?}");
    assert!(seen.iter().any(|(_, p)| p == "/home/user/w/sub/deep.txt"), "{seen:?}");
    let err = sb.watch("/nonexistent", false).await.expect_err("missing dir");
    assert!(matches!(err, Error::Fs(ref e) if e.kind == FsErrorKind::NotFound), "{err:?}");
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_go_in_pieces() {
    let t = TestRuntime::new();
    let sb = t.sandbox().await;
    let data: Vec<u8> = (0..10_000_000u32).map(|i| (i % 251) as u8).collect();
    let info = sb.write_file(User::User, "/home/user/big.bin", data.clone(), false).await.expect("write 10 MB");
    assert_eq!(info.size, 10_000_000);
    let back = sb.read_to_end(User::User, "/home/user/big.bin", 20_000_000).await.expect("read back");
    assert!(back == data, "content differs");
    let err = sb.read_to_end(User::User, "/home/user/big.bin", 1_000_000).await.expect_err("over the cap");
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_mapped_volume_is_shared_by_sandboxes_of_different_slots() {
    use std::os::unix::fs::MetadataExt;
    let t = TestRuntime::new();
    let dir = tempfile::tempdir().expect("dir");
    let vol = dir.path().join("data");
    std::fs::create_dir(&vol).expect("mkdir");
    std::os::unix::fs::chown(&vol, Some(1000), Some(1000)).expect("chown");
    let mut spec = reins_types::SandboxSpec::default();
    spec.volumes.push(reins_types::Volume {
        host: vol.clone(),
        sandbox: "/workspace".into(),
        read_only: false,
        idmap: true,
    });
    // Both alive at once: they hold different slots, so different host id ranges.
    let (a, b) = (t.create(spec.clone()).await, t.create(spec).await);
    assert_ne!(a.id_base(), b.id_base());
    let o = sh(&a, "echo one > /workspace/f && mkdir /workspace/d && stat -c '%U %u' /workspace/f").await;
    assert_eq!(text(&o.stdout).trim(), "user 1000", "{}", text(&o.stderr));
    let o =
        sh(&b, "echo two >> /workspace/f && touch /workspace/d/g && cat /workspace/f && stat -c '%U' /workspace/d/g")
            .await;
    assert_eq!(text(&o.stdout), "one\ntwo\nuser\n", "{}", text(&o.stderr));
    // On disk the files carry the inner ids, not either sandbox's host ids.
    let meta = std::fs::metadata(vol.join("f")).expect("f");
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    assert_eq!(std::fs::metadata(vol.join("d/g")).expect("g").uid(), 1000);
    // Root inside has no capabilities: the user's files are the user's.
    let o = sh_as(&a, User::Root, "stat -c %U /workspace/d; touch /workspace/d/r").await;
    assert_eq!(text(&o.stdout).trim(), "user");
    assert_ne!(o.status, reins_sandbox::ExitStatus::Code(0));
    a.destroy().await;
    b.destroy().await;
    t.assert_clean().await;
}
