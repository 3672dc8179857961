//! Assembling the `base` template from the host's system directories.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use super::tree::copy_tree;
use crate::Error;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash
user:x:1000:1000:user:/home/user:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";
const GROUP: &str = "root:x:0:
tty:x:5:
users:x:100:user
user:x:1000:
nogroup:x:65534:
";
const HOSTS: &str = "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n";
const RESOLV: &str = "# The sandbox has no network of its own; names resolve through the egress proxy.\n";
const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n";
const PROFILE: &str = r#"export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [ -n "$BASH_VERSION" ] && [ -f /etc/bash.bashrc ]; then . /etc/bash.bashrc; fi
"#;

/// Small host files and directories copied into the template's `/etc`.
const HOST_ETC: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl/certs",
    "localtime",
    "os-release",
    "bash.bashrc",
    "python3",
    "python3.11",
    "mime.types",
    "protocols",
    "services",
    "inputrc",
    "debian_version",
    "environment",
];

/// Top-level host directories the base template needs.
const SYSTEM_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Writes the base root into `rootfs`; returns the host directories to bind
/// read-only (always `/usr`, plus `/bin`, `/lib`… on hosts without merged /usr).
pub fn assemble(rootfs: &Path) -> Result<Vec<String>, Error> {
    let mut binds = vec!["/usr".to_owned()];
    for dir in
        ["usr", "home", "etc", "proc", "dev", "run", "mnt", "opt", "srv", "var", "var/lib", "var/cache", "workspace"]
    {
        mkdir(&rootfs.join(dir), 0o755)?;
    }
    mkdir(&rootfs.join("root"), 0o700)?;
    mkdir(&rootfs.join("tmp"), 0o1777)?;
    mkdir(&rootfs.join("var/tmp"), 0o1777)?;
    for name in SYSTEM_DIRS {
        let host = Path::new("/").join(name);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&host).map_err(|e| Error::io(&host, e))?;
                symlink(target, rootfs.join(name)).map_err(|e| Error::io(&host, e))?;
            }
            Ok(m) if m.is_dir() => {
                mkdir(&rootfs.join(name), 0o755)?;
                binds.push(host.to_string_lossy().into_owned());
            }
            _ => {}
        }
    }
    write_etc(&rootfs.join("etc"))?;
    Ok(binds)
}

fn write_etc(etc: &Path) -> Result<(), Error> {
    for (name, body) in [
        ("passwd", PASSWD),
        ("group", GROUP),
        ("hosts", HOSTS),
        ("resolv.conf", RESOLV),
        ("nsswitch.conf", NSSWITCH),
        ("hostname", "sandbox\n"),
        ("profile", PROFILE),
    ] {
        fs::write(etc.join(name), body).map_err(|e| Error::io(&etc.join(name), e))?;
    }
    for item in HOST_ETC {
        let src = Path::new("/etc").join(item);
        if fs::symlink_metadata(&src).is_err() {
            continue;
        }
        let dst = etc.join(item);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        copy_tree(&src, &dst)?;
    }
    Ok(())
}

fn mkdir(path: &Path, mode: u32) -> Result<(), Error> {
    fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| Error::io(path, e))
}
