//! Template import from OCI layouts, OCI archives and `docker save` archives.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use reins_sandbox::User;
use reins_types::SandboxSpec;
use sha2::{Digest, Sha256};

use super::{data_dir, reins_bin, TestRuntime};

pub enum Item<'a> {
    Dir(&'a str),
    File(&'a str, &'a str),
    Link(&'a str, &'a str),
    /// A file whose name is written verbatim (the builder refuses `..`).
    Raw(&'a str, &'a str),
}

pub fn layer(items: &[Item<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        match item {
            Item::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).expect("dir");
            }
            Item::File(p, body) => {
                h.set_mode(0o644);
                h.set_size(body.len() as u64);
                b.append_data(&mut h, p, body.as_bytes()).expect("file");
            }
            Item::Raw(p, body) => {
                h.set_mode(0o644);
                h.set_size(body.len() as u64);
                h.as_old_mut().name[..p.len()].copy_from_slice(p.as_bytes());
                h.set_cksum();
                b.append(&h, body.as_bytes()).expect("raw");
            }
            Item::Link(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, p, target).expect("link");
            }
        }
    }
    b.into_inner().expect("layer")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Writes an OCI archive with `layers` (the second one gzipped) to `path`.
pub fn oci_archive(path: &Path, layers: &[Vec<u8>]) {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut descs = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let (data, mt) = if i == 1 { (gzip(l), "tar+gzip") } else { (l.clone(), "tar") };
        descs.push(serde_json::json!({"mediaType": format!("application/vnd.oci.image.layer.v1.{mt}"), "digest": digest(&data), "size": data.len()}));
        blobs.push((digest(&data), data));
    }
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": descs,
    }))
    .expect("manifest");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest), "size": manifest.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .expect("index");
    blobs.push((digest(&config), config));
    blobs.push((digest(&manifest), manifest));
    let mut b = tar::Builder::new(std::fs::File::create(path).expect("archive"));
    add_file(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add_file(&mut b, "index.json", &index);
    for (d, data) in &blobs {
        add_file(&mut b, &format!("blobs/sha256/{}", d.trim_start_matches("sha256:")), data);
    }
    b.finish().expect("finish");
}

fn remove_template(name: &str) {
    let status = Command::new(reins_bin())
        .args(["--data-dir", &data_dir().to_string_lossy(), "template", "--local", "rm", name])
        .status()
        .expect("reins template rm");
    assert!(status.success(), "removing {name}");
}

/// Appends one regular file to an archive being built.
fn add_file<W: Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, name, data).expect("entry");
}

fn import(source: &Path, name: &str) -> std::process::Output {
    Command::new(reins_bin())
        .args(["--data-dir", &data_dir().to_string_lossy(), "template", "--local", "import"])
        .arg(source)
        .arg(name)
        .output()
        .expect("reins template import")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_archive_layers_and_whiteouts_apply() {
    let dir = tempfile::tempdir().expect("dir");
    let l1 = layer(&[
        Item::Dir("etc"),
        Item::File("etc/a", "one"),
        Item::Dir("dir"),
        Item::File("dir/x", "x"),
        Item::File("dir/y", "y"),
        Item::File("old", "old"),
    ]);
    let l2 = layer(&[
        Item::File(".wh.old", ""),
        Item::File("dir/.wh..wh..opq", ""),
        Item::File("dir/z", "z"),
        Item::File("etc/a", "two"),
    ]);
    let archive = dir.path().join("image.tar");
    oci_archive(&archive, &[l1, l2]);
    let name = format!("oci-test-{}", std::process::id());
    let out = import(&archive, &name);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("layer 2/2"), "progress shown");

    let t = TestRuntime::new();
    let sb = t.create(SandboxSpec { template: name.clone(), ..SandboxSpec::default() }).await;
    let (a, _) = sb.read_file(User::Root, "/etc/a", 0, 0).await.expect("etc/a");
    assert_eq!(a, b"two");
    let names: Vec<String> = sb.list(User::Root, "/dir", 1).await.expect("list").into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["z"], "opaque directory hides lower entries");
    assert!(sb.stat(User::Root, "/old").await.is_err(), "whiteout removed /old");
    sb.destroy().await;

    // Import is content-addressed: the same image again gives the same digest.
    let again = import(&archive, &format!("{name}-2"));
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).split_whitespace().nth(1),
        String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1)
    );
    remove_template(&name);
    remove_template(&format!("{name}-2"));
}

#[test]
fn docker_save_archive_imports() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("docker.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).expect("archive"));
    let l = layer(&[Item::Dir("srv"), Item::File("srv/hello", "from docker")]);
    add_file(&mut b, "abc/layer.tar", &l);
    add_file(&mut b, "manifest.json", br#"[{"Config":"c.json","RepoTags":["x:latest"],"Layers":["abc/layer.tar"]}]"#);
    b.finish().expect("finish");
    drop(b);
    let name = format!("docker-test-{}", std::process::id());
    let out = import(&path, &name);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let digest = String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).expect("digest").to_owned();
    let file = data_dir().join("templates/objects").join(&digest).join("rootfs/srv/hello");
    assert_eq!(std::fs::read_to_string(file).expect("unpacked"), "from docker");
    remove_template(&name);
}

#[test]
fn layers_cannot_write_or_delete_outside_the_root() {
    let dir = tempfile::tempdir().expect("dir");
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).expect("victim dir");
    std::fs::write(victim.join("keep"), "precious").expect("victim file");
    let escape = victim.to_string_lossy().into_owned();
    let cases = [
        layer(&[Item::Link("link", &escape), Item::File("link/evil", "x")]),
        layer(&[Item::Link("link", &escape), Item::File("link/.wh.keep", "")]),
        layer(&[Item::Raw("../outside", "x")]),
    ];
    for (i, l) in cases.into_iter().enumerate() {
        let archive = dir.path().join(format!("evil{i}.tar"));
        oci_archive(&archive, &[l]);
        let out = import(&archive, &format!("evil-{i}-{}", std::process::id()));
        assert!(!out.status.success(), "case {i} imported");
        assert!(!victim.join("evil").exists() && victim.join("keep").exists(), "case {i} escaped");
        assert!(!dir.path().join("outside").exists());
    }
    let staging: Vec<_> = std::fs::read_dir(data_dir().join("templates/staging")).expect("staging").flatten().collect();
    assert!(staging.iter().all(|e| !e.file_name().to_string_lossy().starts_with(&std::process::id().to_string())));
}

#[test]
fn import_of_garbage_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tar archive").expect("junk");
    let out = import(&junk, "junk");
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("importing"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = import(dir.path(), "../bad name");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid template name"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn oci_layout_directory_imports() {
    let dir = tempfile::tempdir().expect("dir");
    let archive = dir.path().join("image.tar");
    oci_archive(&archive, &[layer(&[Item::Dir("opt"), Item::File("opt/from-layout", "yes")])]);
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).expect("layout dir");
    tar::Archive::new(std::fs::File::open(&archive).expect("open")).unpack(&layout).expect("unpack layout");
    let name = format!("layout-test-{}", std::process::id());
    let out = import(&layout, &name);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let digest = String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).expect("digest").to_owned();
    let file = data_dir().join("templates/objects").join(&digest).join("rootfs/opt/from-layout");
    assert_eq!(std::fs::read_to_string(file).expect("unpacked"), "yes");
    remove_template(&name);
}
