//! Id-mapped bind mounts (Linux 5.12+, on ext4, xfs, btrfs, tmpfs…): a
//! directory whose files carry the sandbox's *inner* ids (0 root, 1000
//! `user`) appears correctly owned in a sandbox of any slot, because the
//! mount translates the ids by the slot's mapping. Agent volumes use this:
//! sandboxes of different slots share them, at once or in turn, without
//! re-owning any file.
//!
//! Runs in the sandbox's PID 1 before it pivots (single-threaded, host root).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::Bind;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstr(p: &str) -> Result<std::ffi::CString, String> {
    std::ffi::CString::new(p).map_err(|_| format!("path {p:?} contains NUL"))
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// A user namespace with the slot's mapping (`0 id_base 65536`), to describe
/// the mounts' translation: a child enters a new one, this process writes
/// its maps and keeps a handle, and the child exits.
///
/// `proc` is a proc mounted in this process's PID namespace (the host's
/// `/proc` shows other pids).
pub fn userns(id_base: u32, proc: &Path) -> Result<OwnedFd, String> {
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (done_r, done_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: this process is single-threaded (a sandbox's PID 1 before it
    // runs anything); the child makes only raw system calls and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_err("fork for the id map"));
    }
    if pid == 0 {
        // SAFETY: raw system calls only, then _exit.
        unsafe {
            // Its copy of the write end would keep `done` from ever ending.
            libc::close(done_w.as_raw_fd());
            let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
            let b: u8 = if ok { b'u' } else { b'x' };
            libc::write(ready_w.as_raw_fd(), &b as *const u8 as *const libc::c_void, 1);
            let mut x = 0u8;
            libc::read(done_r.as_raw_fd(), &mut x as *mut u8 as *mut libc::c_void, 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(done_r);
    let mut b = [0u8; 1];
    let got = nix::unistd::read(ready_r.as_raw_fd(), &mut b);
    let result = (|| {
        if got != Ok(1) || b[0] != b'u' {
            return Err("the id-map child could not enter a user namespace".to_owned());
        }
        let map = format!("0 {id_base} {}\n", super::ID_RANGE);
        for f in ["uid_map", "gid_map"] {
            std::fs::write(proc.join(format!("{pid}/{f}")), &map).map_err(|e| format!("writing {f}: {e}"))?;
        }
        std::fs::File::open(proc.join(format!("{pid}/ns/user")))
            .map(OwnedFd::from)
            .map_err(|e| format!("opening the id map: {e}"))
    })();
    drop(done_w);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    result
}

/// Binds `b.host` at `b.target` under `root`, id-mapped by `userns`, nosuid
/// and nodev (and read-only when asked).
pub fn bind(b: &Bind, root: &Path, userns: &OwnedFd) -> Result<(), String> {
    let src = cstr(&b.host)?;
    let target = root.join(b.target.trim_start_matches('/'));
    let dst = cstr(&target.to_string_lossy())?;
    // SAFETY: plain system calls on valid C strings and a stack struct.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        );
        if fd < 0 {
            return Err(os_err(&format!("open_tree {}", b.host)));
        }
        let tree = OwnedFd::from_raw_fd(fd as i32);
        let mut set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        if b.read_only {
            set |= MOUNT_ATTR_RDONLY;
        }
        let attr = MountAttr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
        let empty = c"";
        let r = libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        );
        if r < 0 {
            return Err(os_err(&format!("id-mapping {} (the file system must support id-mapped mounts)", b.host)));
        }
        let r = libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        );
        if r < 0 {
            return Err(os_err(&format!("mounting {} on {}", b.host, b.target)));
        }
    }
    Ok(())
}
