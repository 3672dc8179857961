//! Set-up of a sandbox from the inside, in its freshly cloned PID 1.
//!
//! Runs synchronously in the single-threaded clone of a zygote. The child
//! starts in new PID, mount, IPC and UTS namespaces (and joins a fresh
//! network namespace from the pool) still as the host's root: it builds its
//! root file system, pivots into it, and only then enters a user namespace of
//! its own in which root is an unprivileged host id range. So the mounts are
//! owned by the host's user namespace and nothing in the sandbox, not even
//! its root, can change them; and the template and data directories need not
//! be reachable by the sandbox's ids.
//!
//! On any failure the child reports `SetupFailed` over the guest socket and
//! exits; the kernel then removes every mount it made with its namespace.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::socket::MsgFlags;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chdir, chown, pivot_root, Gid, Uid};

use reins_guest::proto::{self, Event};

use super::seccomp::Filter;
use super::{Bind, SpawnRequest};

/// The device nodes of every sandbox's `/dev`: (name, major, minor).
///
/// They are created with `mknod` in the slot's skeleton layer, and the
/// overlay is mounted without `nodev` (cheaper than six bind mounts). That
/// is safe because nothing else can put a device node in any layer: the
/// sandbox's root lives in a user namespace where `mknod` of devices is
/// refused, and templates never contain device nodes (imports drop them).
pub const DEVICES: &[(&str, u64, u64)] =
    &[("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

/// uid/gid of the unprivileged `user` account inside every sandbox.
pub const USER_ID: u32 = 1000;

const GUEST_FD: i32 = 3;

/// Open files per process inside a sandbox (soft and hard).
pub const SANDBOX_NOFILE: u64 = 65_536;

/// The cloned child's whole life: receive its sandbox, set up, become the
/// guest. A `parked` child is moved into its cgroups by the host while it
/// waits; otherwise it joins those of its request while its mounts are built.
pub fn child_main(ctl: OwnedFd, net: OwnedFd, filter: &Filter, parked: bool) -> ! {
    let early = early(net);
    // Without a guest socket there is no one to tell: the host sees the socket close.
    let Ok((req, guest)) = early.and_then(|()| receive(&ctl)) else { exit(1) };
    drop(ctl);
    let result = prepare(&req, parked, filter);
    // Whatever happened, the guest socket becomes fd 3, stdio goes to
    // /dev/null, and nothing else inherited from the zygote stays open.
    if nix::unistd::dup2(guest.as_raw_fd(), GUEST_FD).is_err() {
        exit(1);
    }
    std::mem::forget(guest);
    // First on the socket, one byte: 1 with a handle on the writable layer's
    // file system (for snapshots), 0 when set-up failed.
    let result = match result {
        Ok(layer) => send_layer(Some(&layer)).map(|()| drop(layer)),
        Err(e) => send_layer(None).and(Err(e)),
    };
    quiet_stdio();
    // SAFETY: closes every descriptor above the guest socket; none is used afterwards.
    unsafe { libc::syscall(libc::SYS_close_range, GUEST_FD as u32 + 1, u32::MAX, 0u32) };
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

/// Sends the host the handle on the writable layer (see `child_main`).
fn send_layer(layer: Option<&OwnedFd>) -> Result<(), String> {
    let sent = match layer {
        Some(fd) => super::fdpass::send(GUEST_FD, &[1], &[fd.as_raw_fd()]),
        None => super::fdpass::send(GUEST_FD, &[0], &[]),
    };
    sent.map_err(|e| format!("handing over the writable layer: {e}"))
}

/// Moves this process into the given cgroups (`cgroup.procs` files).
fn join_cgroups(procs: &[String]) -> Result<(), String> {
    crate::cgroup::Cgroups::attach(procs, 0).map_err(|e| format!("joining cgroups: {e}"))
}

/// What a child does before it knows its sandbox.
fn early(net: OwnedFd) -> Result<(), String> {
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // The zygote ignores SIGCHLD; the guest must see its children exit.
    // SAFETY: restoring the default disposition runs no code in signal context.
    unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) }.map_err(|e| e.to_string())?;
    nix::sched::setns(&net, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("joining netns: {e}"))?;
    drop(net);
    nix::unistd::sethostname("sandbox").map_err(|e| format!("hostname: {e}"))
}

/// Waits for the sandbox request and its guest socket.
fn receive(ctl: &OwnedFd) -> Result<(SpawnRequest, OwnedFd), String> {
    let mut buf = vec![0u8; 64 << 10];
    let (len, fds) = super::fdpass::recv(ctl.as_raw_fd(), &mut buf, MsgFlags::empty())
        .map_err(|e| format!("waiting for the sandbox: {e}"))?;
    let guest = fds.into_iter().next().ok_or("no guest socket came with the sandbox")?;
    let req = postcard::from_bytes(&buf[..len]).map_err(|e| format!("bad sandbox request: {e}"))?;
    Ok((req, guest))
}

fn quiet_stdio() {
    // SAFETY: open and dup2 on descriptors this process owns.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: `_exit` skips the atexit handlers inherited from the zygote.
    unsafe { libc::_exit(code) }
}

/// Builds and enters the sandbox; returns an `O_PATH` handle on the
/// writable layer's file system (a tmpfs the sandbox cannot reach).
fn prepare(req: &SpawnRequest, in_cgroups: bool, filter: &Filter) -> Result<OwnedFd, String> {
    let (root, layer) = build_root(req)?;
    // No command runs before this process is in its slot's cgroups, and the
    // cgroup namespace is rooted there. (Joined before leaving the host's tree.)
    if !in_cgroups {
        join_cgroups(&req.cgroup_procs)?;
    }
    enter(&root)?;
    // The host process lifts its own descriptor limit (it holds a few per
    // sandbox); commands get a fixed one (or the host's, if lower).
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("descriptor limit: {e}"))?;
    let limit = SANDBOX_NOFILE.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, limit, limit).map_err(|e| format!("descriptor limit: {e}"))?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP).map_err(|e| format!("cgroup namespace: {e}"))?;
    enter_user_namespace(req.id_base)?;
    // SAFETY: plain prctl calls with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    filter.apply().map_err(|e| format!("seccomp: {e}"))?;
    Ok(layer)
}

/// Empties the capability bounding and ambient sets, so no command can ever
/// gain a capability, whatever it executes. PID 1 keeps its current ones.
fn drop_bounding_set() {
    for cap in 0..=63 {
        // SAFETY: PR_CAPBSET_DROP takes a capability number; EINVAL marks the end.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            break;
        }
    }
    // SAFETY: clears the ambient set; plain integer arguments.
    unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
}

/// Moves into a new user namespace mapping 0..65536 to the slot's host range.
///
/// The map must be written by a process with privileges in the parent
/// namespace, which this one no longer has after `unshare`. A helper that
/// shares this process's memory (`CLONE_VM`, so no page tables are copied)
/// stays behind and writes it. The helper runs on its own stack and makes
/// only raw system calls: it must not touch the allocator or thread-locals
/// it shares with this process.
///
/// While the helper works, this process empties its capability bounding set
/// and enters its Landlock domain (both inherited by every command).
fn enter_user_namespace(id_base: u32) -> Result<(), String> {
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let map = format!("0 {id_base} {}\n", super::ID_RANGE);
    let job = MapJob { ready: ready_r.as_raw_fd(), map: map.as_ptr(), len: map.len() };
    let mut stack = vec![0u8; 16 << 10];
    // SAFETY: the stack grows down from its end, 16-byte aligned; `job`,
    // `map` and `stack` outlive the helper, which this function waits for.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as usize & !15;
        let arg = &job as *const MapJob as *mut libc::c_void;
        libc::clone(write_id_maps, top as *mut libc::c_void, libc::CLONE_VM | libc::SIGCHLD, arg)
    };
    if pid < 0 {
        return Err(format!("starting the id mapper: {}", std::io::Error::last_os_error()));
    }
    let unshared = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER);
    let _ = nix::unistd::write(&ready_w, if unshared.is_ok() { b"u" } else { b"x" });
    if unshared.is_ok() {
        // Work that needs only the new namespace's capabilities, done while the maps are written.
        drop_bounding_set();
        reins_guest::policy::landlock();
    }
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    drop(stack);
    unshared.map_err(|e| format!("user namespace: {e}"))?;
    match status {
        Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => become_root(),
        other => Err(format!("writing the id maps failed: {other:?}")),
    }
}

#[repr(C)]
struct MapJob {
    ready: i32,
    map: *const u8,
    len: usize,
}

extern "C" fn write_id_maps(arg: *mut libc::c_void) -> i32 {
    // SAFETY: `arg` points to the `MapJob` of `enter_user_namespace`, alive
    // until this helper has exited; only raw system calls follow.
    unsafe {
        let job = &*(arg as *const MapJob);
        let mut b = 0u8;
        if libc::read(job.ready, &mut b as *mut u8 as *mut libc::c_void, 1) != 1 || b != b'u' {
            return 1;
        }
        for file in [c"/proc/1/uid_map", c"/proc/1/gid_map"] {
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return 2;
            }
            let n = libc::write(fd, job.map as *const libc::c_void, job.len);
            libc::close(fd);
            if n != job.len as isize {
                return 3;
            }
        }
        0
    }
}

fn become_root() -> Result<(), String> {
    let root = (Uid::from_raw(0), Gid::from_raw(0));
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(root.1, root.1, root.1).map_err(|e| format!("setresgid: {e}"))?;
    nix::unistd::setresuid(root.0, root.0, root.0).map_err(|e| format!("setresuid: {e}"))
}

fn m(src: Option<&str>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> Result<(), String> {
    mount(src, target, fstype, flags, data)
        .map_err(|e| format!("mounting {} on {}: {e}", src.unwrap_or("-"), target.display()))
}

/// Mounts the sandbox's root; returns where it is (still in the host's
/// tree) and a handle on the tmpfs holding the writable layer.
fn build_root(req: &SpawnRequest) -> Result<(PathBuf, OwnedFd), String> {
    let base = Path::new(&req.mount_dir);
    m(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    let opts = format!("size={},mode=0755", req.disk_bytes);
    m(Some("tmpfs"), base, Some("tmpfs"), MsFlags::MS_NOSUID, Some(&opts))?;
    let (upper, work, root) = (base.join("upper"), base.join("work"), base.join("root"));
    for d in [&upper, &work, &root] {
        mkdir(d, 0o755)?;
    }
    let layer = nix::fcntl::open(base, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("opening the writable layer: {e}"))?;
    // SAFETY: a descriptor just opened, owned by nothing else.
    let layer = unsafe { OwnedFd::from_raw_fd(layer) };
    // The writable layer's root is the overlay's root: owned by root inside.
    let id = Some(req.id_base);
    chown(&upper, id.map(Uid::from_raw), id.map(Gid::from_raw)).map_err(|e| format!("chown upper: {e}"))?;
    let skel = Path::new(&req.skeleton);
    ensure_skeleton(skel, req.id_base)?;
    for b in &req.binds {
        let rel = b.target.trim_start_matches('/');
        fs::create_dir_all(upper.join(rel)).map_err(|e| format!("creating mount point {}: {e}", b.target))?;
    }
    let mut userns = None;
    let mut lower = String::new();
    if !req.layers.is_empty() {
        // The id map needs a proc of this PID namespace; the overlay's own comes later.
        let proc = base.join("proc");
        mkdir(&proc, 0o555)?;
        m(Some("proc"), &proc, Some("proc"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None)?;
        let ns = super::idmap::userns(req.id_base, &proc)?;
        for (i, layer) in req.layers.iter().enumerate() {
            let target = format!("l{i}");
            mkdir(&base.join(&target), 0o755)?;
            let b = Bind { host: layer.clone(), target, read_only: true, idmap: true };
            super::idmap::bind(&b, base, &ns)?;
            lower.push_str(&format!("{}:", base.join(&b.target).display()));
        }
        userns = Some(ns);
    }
    let opts = format!(
        "lowerdir={lower}{}:{},upperdir={},workdir={}",
        skel.display(),
        req.rootfs,
        upper.display(),
        work.display()
    );
    m(Some("overlay"), &root, Some("overlay"), MsFlags::MS_NOSUID, Some(&opts))?;
    let pts = "newinstance,ptmxmode=0666,mode=0620";
    m(Some("devpts"), &root.join("dev/pts"), Some("devpts"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some(pts))?;
    let proc_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    m(Some("proc"), &root.join("proc"), Some("proc"), proc_flags, None)?;
    if userns.is_none() && req.binds.iter().any(|b| b.idmap) {
        userns = Some(super::idmap::userns(req.id_base, &root.join("proc"))?);
    }
    for b in &req.binds {
        match &userns {
            Some(ns) if b.idmap => super::idmap::bind(b, &root, ns)?,
            _ => bind(b, &root)?,
        }
    }
    Ok((root, layer))
}

/// The slot's skeleton: a small read-only layer on top of the template with
/// the mount points, device nodes, `/tmp`, `/root` and the `user` account's
/// home, so that any template works however little it contains. Owners are
/// host ids of the slot's range (`id_base` is root inside, `id_base + 1000`
/// is `user`), so the skeleton is per slot; it is built once and reused by
/// every sandbox of the slot (the slot lock makes this process its only user).
fn ensure_skeleton(skel: &Path, id_base: u32) -> Result<(), String> {
    // Beside the skeleton, not in it: holds the id base it was built for.
    let marker = skel.with_extension("done");
    if fs::read_to_string(&marker).is_ok_and(|s| s == id_base.to_string()) {
        return Ok(());
    }
    if skel.exists() {
        fs::remove_dir_all(skel).map_err(|e| format!("removing stale skeleton: {e}"))?;
    }
    fs::create_dir_all(skel).map_err(|e| format!("creating {}: {e}", skel.display()))?;
    build_skeleton(skel, id_base)?;
    fs::write(&marker, id_base.to_string()).map_err(|e| format!("finishing skeleton: {e}"))
}

fn build_skeleton(skel: &Path, id_base: u32) -> Result<(), String> {
    let dev = skel.join("dev");
    mkdir(&dev, 0o755)?;
    for (name, major, minor) in DEVICES {
        let path = dev.join(name);
        mknod(&path, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), makedev(*major, *minor))
            .map_err(|e| format!("creating /dev/{name}: {e}"))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).map_err(|e| format!("chmod /dev/{name}: {e}"))?;
    }
    mkdir(&dev.join("pts"), 0o755)?;
    mkdir(&dev.join("shm"), 0o1777)?;
    let links = [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (link, target) in links {
        symlink(target, dev.join(link)).map_err(|e| format!("creating /dev/{link}: {e}"))?;
    }
    mkdir(&skel.join("proc"), 0o555)?;
    mkdir(&skel.join("tmp"), 0o1777)?;
    mkdir(&skel.join("home"), 0o755)?;
    mkdir(&skel.join("root"), 0o700)?;
    let home = skel.join("home/user");
    mkdir(&home, 0o750)?;
    let owned = [
        (skel.to_path_buf(), id_base),
        (skel.join("tmp"), id_base),
        (skel.join("root"), id_base),
        (dev.join("shm"), id_base),
        (home, id_base + USER_ID),
    ];
    for (dir, id) in owned {
        chown(&dir, Some(Uid::from_raw(id)), Some(Gid::from_raw(id)))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
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
    // Not recursive: a read-only remount would not reach submounts of the source.
    m(Some(&b.host), &target, None, MsFlags::MS_BIND, None)?;
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
