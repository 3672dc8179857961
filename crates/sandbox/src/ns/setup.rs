//! Set-up of a sandbox from the inside, in its freshly cloned PID 1.
//!
//! Runs synchronously in the single-threaded clone of a zygote. The child
//! starts in new PID, mount, network, IPC and UTS namespaces but still as the
//! host's root: it builds its root file system, pivots into it, and only then
//! enters a user namespace of its own in which root is an unprivileged host id
//! range. So the mounts are owned by the host's user namespace and nothing in
//! the sandbox, not even its root, can change them; and the template and data
//! directories need not be reachable by the sandbox's ids.
//!
//! On any failure the child reports `SetupFailed` over the guest socket and
//! exits; the kernel then removes every mount it made with its namespace.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::{chdir, chown, pivot_root, Gid, Uid};

use reins_guest::proto::{self, Event};

use super::seccomp::Filters;
use super::{Bind, SpawnRequest};

/// Devices bound from the host into every sandbox's `/dev`.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// uid/gid of the unprivileged `user` account inside every sandbox.
pub const USER_ID: u32 = 1000;

const GUEST_FD: i32 = 3;

/// The cloned child's whole life: wait for the go, set up, become the guest.
pub fn child_main(req: &SpawnRequest, guest: OwnedFd, go: OwnedFd, filters: &Filters) -> ! {
    let result = prepare(req, &guest, go, filters);
    // Whatever happened, the guest socket becomes fd 3 and nothing else stays open.
    if nix::unistd::dup2(guest.as_raw_fd(), GUEST_FD).is_err() {
        exit(1);
    }
    // SAFETY: closes every descriptor above the guest socket; none is used afterwards.
    unsafe { libc::syscall(libc::SYS_close_range, GUEST_FD as u32 + 1, u32::MAX, 0u32) };
    std::mem::forget(guest);
    // SAFETY: fd 3 is the guest socket, owned by this process alone from here on.
    let mut sock = unsafe { UnixStream::from_raw_fd(GUEST_FD) };
    if let Err(message) = result {
        let _ = proto::write_frame(&mut sock, &Event::SetupFailed { message });
        exit(1);
    }
    let code = match reins_guest::run(sock) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    exit(code)
}

fn exit(code: i32) -> ! {
    // SAFETY: `_exit` skips the atexit handlers inherited from the zygote.
    unsafe { libc::_exit(code) }
}

fn prepare(
    req: &SpawnRequest,
    _guest: &OwnedFd,
    go: OwnedFd,
    filters: &Filters,
) -> Result<(), String> {
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // The zygote ignores SIGCHLD; the guest must see its children exit.
    // SAFETY: restoring the default disposition runs no code in signal context.
    unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) }.map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    match nix::unistd::read(go.as_raw_fd(), &mut byte) {
        Ok(1) => {}
        _ => return Err("the zygote did not release the sandbox".into()),
    }
    drop(go);
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| format!("cgroup namespace: {e}"))?;
    nix::unistd::sethostname("sandbox").map_err(|e| format!("hostname: {e}"))?;
    build_root(req)?;
    loopback_up()?;
    // The network namespace is not the sandbox's to configure, so let its
    // unprivileged root bind low ports (a web server on :80) by sysctl instead.
    fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0")
        .map_err(|e| format!("sysctl: {e}"))?;
    enter_user_namespace(req.id_base)?;
    // SAFETY: plain prctl calls with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    filters.apply().map_err(|e| format!("seccomp: {e}"))
}

/// Moves into a new user namespace mapping 0..65536 to the slot's host range.
/// The map must be written by a process with privileges in the parent
/// namespace, which this one no longer has after `unshare`: a forked helper
/// that stayed behind writes it.
fn enter_user_namespace(id_base: u32) -> Result<(), String> {
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: this process is single-threaded; the child only writes files and exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(ready_w);
            let mut b = [0u8; 1];
            let ok = nix::unistd::read(ready_r.as_raw_fd(), &mut b) == Ok(1)
                && write_id_maps(id_base).is_ok();
            exit(if ok { 0 } else { 1 })
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_r);
            let unshared = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER);
            let _ = nix::unistd::write(&ready_w, if unshared.is_ok() { b"u" } else { b"x" });
            drop(ready_w);
            let status = nix::sys::wait::waitpid(child, None)
                .map_err(|e| format!("waiting for id mapper: {e}"))?;
            unshared.map_err(|e| format!("user namespace: {e}"))?;
            if status != nix::sys::wait::WaitStatus::Exited(child, 0) {
                return Err("writing the id maps failed".into());
            }
            become_root()
        }
    }
}

fn write_id_maps(id_base: u32) -> std::io::Result<()> {
    let map = format!("0 {id_base} {}\n", super::ID_RANGE);
    fs::write("/proc/1/uid_map", &map)?;
    fs::write("/proc/1/gid_map", &map)
}

fn become_root() -> Result<(), String> {
    let root = (Uid::from_raw(0), Gid::from_raw(0));
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(root.1, root.1, root.1).map_err(|e| format!("setresgid: {e}"))?;
    nix::unistd::setresuid(root.0, root.0, root.0).map_err(|e| format!("setresuid: {e}"))
}

fn m(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(src, target, fstype, flags, data).map_err(|e| {
        format!(
            "mounting {} on {}: {e}",
            src.unwrap_or("-"),
            target.display()
        )
    })
}

fn build_root(req: &SpawnRequest) -> Result<(), String> {
    let base = Path::new(&req.mount_dir);
    m(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    let opts = format!("size={},mode=0755", req.disk_bytes);
    m(
        Some("tmpfs"),
        base,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&opts),
    )?;
    let (upper, work, root) = (base.join("upper"), base.join("work"), base.join("root"));
    for d in [&upper, &work, &root] {
        mkdir(d, 0o755)?;
    }
    skeleton(&upper, &req.binds, req.id_base)?;
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        req.rootfs,
        upper.display(),
        work.display()
    );
    m(
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::MS_NOSUID,
        Some(&opts),
    )?;
    for dev in DEVICES {
        let host = format!("/dev/{dev}");
        m(
            Some(&host),
            &root.join("dev").join(dev),
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }
    let pts = "newinstance,ptmxmode=0666,mode=0620";
    m(
        Some("devpts"),
        &root.join("dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(pts),
    )?;
    let proc_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    m(
        Some("proc"),
        &root.join("proc"),
        Some("proc"),
        proc_flags,
        None,
    )?;
    for b in &req.binds {
        bind(b, &root)?;
    }
    enter(&root)
}

/// Mount points and the `user` account's home, made in the writable layer so
/// that any template works, however little it contains. Owners are host ids
/// of the slot's range: `id_base` is root inside, `id_base + 1000` is `user`.
fn skeleton(upper: &Path, binds: &[Bind], id_base: u32) -> Result<(), String> {
    let dev = upper.join("dev");
    mkdir(&dev, 0o755)?;
    for d in DEVICES {
        fs::write(dev.join(d), b"").map_err(|e| format!("creating /dev/{d}: {e}"))?;
    }
    mkdir(&dev.join("pts"), 0o755)?;
    mkdir(&dev.join("shm"), 0o1777)?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link)).map_err(|e| format!("creating /dev/{link}: {e}"))?;
    }
    mkdir(&upper.join("proc"), 0o555)?;
    mkdir(&upper.join("tmp"), 0o1777)?;
    mkdir(&upper.join("home"), 0o755)?;
    let home = upper.join("home/user");
    mkdir(&home, 0o750)?;
    for (dir, id) in [
        (upper.to_path_buf(), id_base),
        (upper.join("tmp"), id_base),
        (dev.join("shm"), id_base),
        (home, id_base + USER_ID),
    ] {
        chown(&dir, Some(Uid::from_raw(id)), Some(Gid::from_raw(id)))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    for b in binds {
        let rel = b.target.trim_start_matches('/');
        fs::create_dir_all(upper.join(rel))
            .map_err(|e| format!("creating mount point {}: {e}", b.target))?;
    }
    Ok(())
}

fn mkdir(path: &Path, mode: u32) -> Result<(), String> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
        .map_err(|e| format!("creating {}: {e}", path.display()))
}

fn bind(b: &Bind, root: &Path) -> Result<(), String> {
    let target: PathBuf = root.join(b.target.trim_start_matches('/'));
    m(
        Some(&b.host),
        &target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if b.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    m(None, &target, None, flags, None)
}

fn enter(root: &Path) -> Result<(), String> {
    chdir(root).map_err(|e| format!("chdir to new root: {e}"))?;
    pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching old root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))
}

/// Brings up `lo`, the only interface of the sandbox's network namespace.
fn loopback_up() -> Result<(), String> {
    // SAFETY: a plain datagram socket used only for the ioctls below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created and is owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = CString::new("lo").unwrap_or_default();
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.as_bytes_with_nul()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the `ifreq` passed by pointer.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(format!(
                "reading lo flags: {}",
                std::io::Error::last_os_error()
            ));
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(format!(
                "bringing lo up: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
