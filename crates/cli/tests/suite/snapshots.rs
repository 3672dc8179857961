//! Snapshot layers of the sandbox library: capture, create from layers, flatten.

use std::path::PathBuf;

use reins_sandbox::layer;
use reins_sandbox::{ExitStatus, User};
use reins_types::SandboxSpec;

use super::{sh, sh_as, text, TestRuntime};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("reins-snap-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// What a sandbox's changes look like from inside: the files, owners and
/// modes under the places the script below touches.
const VIEW: &str = "stat -c '%n %U %a %F' /home/user/notes.txt /home/user/bin/tool /tmp /tmp/new /fresh 2>&1; \
    cat /home/user/notes.txt; ls /home/user/gone 2>&1; test -e /root && echo root-present || echo root-gone; \
    readlink /home/user/link; ls /fresh";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_layer_recreates_the_sandbox_in_another_slot() {
    let t = TestRuntime::new();
    let dir = scratch("capture");
    let first = t.sandbox().await;
    let setup = "mkdir -p /home/user/bin /home/user/gone && echo hello > /home/user/notes.txt \
        && printf '#!/bin/sh\\necho tool' > /home/user/bin/tool && chmod 750 /home/user/bin/tool \
        && ln -s notes.txt /home/user/link && rm -r /home/user/gone";
    assert_eq!(sh(&first, setup).await.status, ExitStatus::Code(0));
    // As root: delete a directory of a lower layer (a whiteout), and replace one (opaque).
    let root = "rmdir /root && rmdir /tmp && mkdir -m 1777 /tmp && touch /tmp/new \
        && mkdir /fresh && touch /fresh/a";
    assert_eq!(sh_as(&first, User::Root, root).await.status, ExitStatus::Code(0));
    let before = text(&sh(&first, VIEW).await.stdout);
    let stats = first.capture(dir.join("l1")).await.expect("capture");
    assert!(stats.bytes >= 6 && stats.entries >= 6, "{stats:?}");
    // The sandbox keeps running after a capture.
    assert_eq!(text(&sh(&first, "cat /home/user/notes.txt").await.stdout), "hello\n");
    // Owners on disk are inner ids, whatever the slot.
    let meta = std::fs::metadata(dir.join("l1/home/user/notes.txt")).expect("captured file");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 1000);

    let spec = SandboxSpec { layers: vec![dir.join("l1")], ..SandboxSpec::default() };
    let second = t.create(spec.clone()).await;
    assert_ne!(first.slot(), second.slot(), "the copy runs in another slot");
    assert_eq!(text(&sh(&second, VIEW).await.stdout), before);
    assert!(before.contains("root-gone") && before.contains("/home/user/bin/tool user 750"), "{before}");
    // The layer is read-only underneath: changes go to the new sandbox's own layer.
    assert_eq!(
        sh(&second, "echo more >> /home/user/notes.txt && rm /home/user/bin/tool").await.status,
        ExitStatus::Code(0)
    );
    let stats2 = second.capture(dir.join("l2")).await.expect("second capture");
    assert!(stats2.entries >= 2, "{stats2:?}");
    let third = t.create(spec).await;
    assert_eq!(text(&sh(&third, "cat /home/user/notes.txt").await.stdout), "hello\n", "layers never change");

    // A stack of two layers, and the same stack flattened into one, show the same tree.
    let stacked =
        t.create(SandboxSpec { layers: vec![dir.join("l2"), dir.join("l1")], ..SandboxSpec::default() }).await;
    let view = text(&sh(&stacked, VIEW).await.stdout);
    assert!(view.contains("hello\nmore\n") && view.contains("tool': No such file"), "{view}");
    layer::flatten(&[dir.join("l2"), dir.join("l1")], &dir.join("flat")).expect("flatten");
    let flat = t.create(SandboxSpec { layers: vec![dir.join("flat")], ..SandboxSpec::default() }).await;
    assert_eq!(text(&sh(&flat, VIEW).await.stdout), view);

    for sb in [first, second, third, stacked, flat] {
        sb.destroy().await;
    }
    t.assert_clean().await;
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_keeps_nothing_but_files_and_a_missing_layer_is_refused() {
    let t = TestRuntime::new();
    let dir = scratch("filter");
    let sb = t.sandbox().await;
    // A socket and a FIFO in the writable layer: the FIFO is kept, the socket is not.
    let script =
        "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.bind('/tmp/sock')\" && mkfifo /tmp/fifo";
    assert_eq!(sh(&sb, script).await.status, ExitStatus::Code(0));
    sb.capture(dir.join("l")).await.expect("capture");
    assert!(!dir.join("l/tmp/sock").exists());
    let fifo = std::fs::symlink_metadata(dir.join("l/tmp/fifo")).expect("fifo kept");
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fifo.file_type()));
    // Capturing into an existing directory fails and leaves it as it was.
    std::fs::create_dir(dir.join("taken")).expect("mkdir");
    sb.capture(dir.join("taken")).await.expect_err("destination exists");
    let missing = SandboxSpec { layers: vec![dir.join("nope")], ..SandboxSpec::default() };
    let err = t.rt.create(&missing).await.expect_err("missing layer");
    assert!(err.to_string().contains("nope"), "{err}");
    sb.destroy().await;
    t.assert_clean().await;
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
