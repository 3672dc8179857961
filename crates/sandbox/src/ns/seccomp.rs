//! The seccomp filter every sandbox runs under, installed in the sandbox's
//! PID 1 after set-up and so inherited by every command.
//!
//! Default allow, with a deny list: the syscalls in [`DENIED`] fail with
//! `EPERM`; `clone` fails when asked for a new namespace; `ioctl(TIOCSTI)`
//! fails; `clone3` fails with `ENOSYS` (its flags live in memory a filter
//! cannot read, and libc falls back to `clone` on `ENOSYS`); x32-ABI calls
//! fail; a foreign architecture kills the process.
//!
//! The program is generated here rather than with `seccompiler`, which emits
//! a linear chain with one action per filter: the kernel evaluates a new
//! filter for every syscall number when it is installed (to build its action
//! cache), so a chain of ~50 comparisons cost ~0.2 ms per sandbox on this
//! machine. This generator emits a balanced search tree (about 8 comparisons
//! per syscall) in one filter, and the tests check every syscall number
//! against the policy with an interpreter.

/// Syscalls no sandboxed process may make.
pub const DENIED: &[(i64, &str)] = &[
    (libc::SYS_mount, "mount"),
    (libc::SYS_umount2, "umount2"),
    (libc::SYS_pivot_root, "pivot_root"),
    (libc::SYS_chroot, "chroot"),
    (libc::SYS_unshare, "unshare"),
    (libc::SYS_setns, "setns"),
    (libc::SYS_ptrace, "ptrace"),
    (libc::SYS_process_vm_readv, "process_vm_readv"),
    (libc::SYS_process_vm_writev, "process_vm_writev"),
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_request_key, "request_key"),
    (libc::SYS_userfaultfd, "userfaultfd"),
    (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    (libc::SYS_name_to_handle_at, "name_to_handle_at"),
    (libc::SYS_reboot, "reboot"),
    (libc::SYS_swapon, "swapon"),
    (libc::SYS_swapoff, "swapoff"),
    (libc::SYS_iopl, "iopl"),
    (libc::SYS_ioperm, "ioperm"),
    (libc::SYS_acct, "acct"),
    (libc::SYS_quotactl, "quotactl"),
    (libc::SYS_quotactl_fd, "quotactl_fd"),
    (libc::SYS_fsopen, "fsopen"),
    (libc::SYS_fsconfig, "fsconfig"),
    (libc::SYS_fsmount, "fsmount"),
    (libc::SYS_fspick, "fspick"),
    (libc::SYS_move_mount, "move_mount"),
    (libc::SYS_open_tree, "open_tree"),
    (libc::SYS_mount_setattr, "mount_setattr"),
    (libc::SYS_lookup_dcookie, "lookup_dcookie"),
    (libc::SYS_syslog, "syslog"),
    (libc::SYS_settimeofday, "settimeofday"),
    (libc::SYS_clock_settime, "clock_settime"),
    (libc::SYS_clock_adjtime, "clock_adjtime"),
    (libc::SYS_adjtimex, "adjtimex"),
    (libc::SYS_personality, "personality"),
];

/// `clone` flags that create namespaces (CLONE_NEWTIME is 0x80).
pub const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP
    | 0x80) as u32;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

// Offsets into `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LO: u32 = 16;
const OFF_ARG1_LO: u32 = 24;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// What the filter does with one syscall number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Deny,
    NoSys,
    CloneFlags,
    IoctlTiocsti,
}

fn rules() -> Vec<(u32, Rule)> {
    let mut r: Vec<(u32, Rule)> = DENIED.iter().map(|(nr, _)| (*nr as u32, Rule::Deny)).collect();
    r.push((libc::SYS_clone as u32, Rule::CloneFlags));
    r.push((libc::SYS_clone3 as u32, Rule::NoSys));
    r.push((libc::SYS_ioctl as u32, Rule::IoctlTiocsti));
    r.sort_unstable_by_key(|(nr, _)| *nr);
    r.dedup_by_key(|(nr, _)| *nr);
    r
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: usize, jf: usize) -> Result<libc::sock_filter, FilterError> {
    let jt = u8::try_from(jt).map_err(|_| FilterError::TooLong)?;
    let jf = u8::try_from(jf).map_err(|_| FilterError::TooLong)?;
    Ok(libc::sock_filter { code, jt, jf, k })
}

fn action(rule: Rule) -> Result<Vec<libc::sock_filter>, FilterError> {
    let eperm = RET_ERRNO | libc::EPERM as u32;
    Ok(match rule {
        Rule::Deny => vec![stmt(RET, eperm)],
        Rule::NoSys => vec![stmt(RET, RET_ERRNO | libc::ENOSYS as u32)],
        Rule::CloneFlags => vec![
            stmt(LD_W_ABS, OFF_ARG0_LO),
            jump(JSET, NAMESPACE_FLAGS, 0, 1)?,
            stmt(RET, eperm),
            stmt(RET, RET_ALLOW),
        ],
        // ioctl's request is an `unsigned int`: the low 32 bits are what the kernel uses.
        Rule::IoctlTiocsti => vec![
            stmt(LD_W_ABS, OFF_ARG1_LO),
            jump(JEQ, libc::TIOCSTI as u32, 0, 1)?,
            stmt(RET, eperm),
            stmt(RET, RET_ALLOW),
        ],
    })
}

/// A block that expects the syscall number in A and returns for every number.
fn tree(rules: &[(u32, Rule)]) -> Result<Vec<libc::sock_filter>, FilterError> {
    if rules.len() <= 3 {
        let blocks = rules.iter().map(|(_, r)| action(*r)).collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::new();
        let mut before = 0;
        for (i, (nr, _)) in rules.iter().enumerate() {
            let remaining = rules.len() - i - 1;
            out.push(jump(JEQ, *nr, remaining + 1 + before, 0)?);
            before += blocks[i].len();
        }
        out.push(stmt(RET, RET_ALLOW));
        out.extend(blocks.into_iter().flatten());
        return Ok(out);
    }
    let mid = rules.len() / 2;
    let left = tree(&rules[..mid])?;
    let right = tree(&rules[mid..])?;
    let mut out = vec![jump(JGE, rules[mid].0, left.len(), 0)?];
    out.extend(left);
    out.extend(right);
    Ok(out)
}

/// A filter that cannot be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("filter too long for 8-bit jumps")]
    TooLong,
    #[error("installing the filter: {0}")]
    Install(std::io::Error),
}

/// The compiled sandbox filter.
#[derive(Debug, Clone)]
pub struct Filter {
    program: Vec<libc::sock_filter>,
}

/// Compiles the sandbox filter for x86-64.
pub fn compile() -> Result<Filter, FilterError> {
    let mut program = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ, AUDIT_ARCH_X86_64, 1, 0)?,
        stmt(RET, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFF_NR),
        jump(JSET, X32_SYSCALL_BIT, 0, 1)?,
        stmt(RET, RET_ERRNO | libc::EPERM as u32),
    ];
    program.extend(tree(&rules())?);
    Ok(Filter { program })
}

impl Filter {
    /// Installs the filter on the calling thread (`no_new_privs` must be set).
    pub fn apply(&self) -> Result<(), FilterError> {
        let prog = libc::sock_fprog { len: self.program.len() as u16, filter: self.program.as_ptr() as *mut _ };
        // SAFETY: `prog` points to a valid program that outlives the call.
        let rc = unsafe {
            libc::syscall(libc::SYS_seccomp, 1u32 /* SET_MODE_FILTER */, 0u32, &prog)
        };
        if rc != 0 {
            return Err(FilterError::Install(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.program.len()
    }

    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }

    /// Runs the program on one `seccomp_data` (tests and audits).
    pub fn evaluate(&self, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u32; 16];
        data[0] = nr;
        data[1] = arch;
        for (i, a) in args.iter().enumerate() {
            data[4 + 2 * i] = *a as u32;
            data[5 + 2 * i] = (*a >> 32) as u32;
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        while let Some(ins) = self.program.get(pc) {
            pc += 1;
            match ins.code {
                LD_W_ABS => acc = data[(ins.k / 4) as usize],
                RET => return ins.k,
                JEQ | JGE | JSET => {
                    let taken = match ins.code {
                        JEQ => acc == ins.k,
                        JGE => acc >= ins.k,
                        _ => acc & ins.k != 0,
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                _ => return RET_KILL_PROCESS,
            }
        }
        RET_KILL_PROCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(f: &Filter, nr: i64, args: [u64; 6]) -> u32 {
        f.evaluate(AUDIT_ARCH_X86_64, nr as u32, args)
    }

    #[test]
    fn every_syscall_number_follows_the_policy() {
        let f = compile().expect("compiles");
        let eperm = RET_ERRNO | libc::EPERM as u32;
        for nr in 0..1024i64 {
            let got = eval(&f, nr, [0; 6]);
            let want = if DENIED.iter().any(|(d, _)| *d == nr) {
                eperm
            } else if nr == libc::SYS_clone3 {
                RET_ERRNO | libc::ENOSYS as u32
            } else {
                RET_ALLOW
            };
            assert_eq!(got, want, "syscall {nr}");
        }
    }

    #[test]
    fn clone_with_namespace_flags_is_refused() {
        let f = compile().expect("compiles");
        let eperm = RET_ERRNO | libc::EPERM as u32;
        assert_eq!(eval(&f, libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), RET_ALLOW);
        for flag in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET, libc::CLONE_NEWPID, 0x80] {
            let flags = (flag | libc::SIGCHLD) as u64;
            assert_eq!(eval(&f, libc::SYS_clone, [flags, 0, 0, 0, 0, 0]), eperm, "flag {flag:#x}");
        }
    }

    #[test]
    fn tiocsti_is_refused_even_with_high_bits_set() {
        let f = compile().expect("compiles");
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let tiocsti = libc::TIOCSTI;
        assert_eq!(eval(&f, libc::SYS_ioctl, [0, tiocsti, 0, 0, 0, 0]), eperm);
        assert_eq!(eval(&f, libc::SYS_ioctl, [0, tiocsti | (1 << 40), 0, 0, 0, 0]), eperm);
        assert_eq!(eval(&f, libc::SYS_ioctl, [0, libc::TIOCGWINSZ, 0, 0, 0, 0]), RET_ALLOW);
    }

    #[test]
    fn foreign_arch_and_x32_are_refused() {
        let f = compile().expect("compiles");
        assert_eq!(f.evaluate(0x4000_0003, 1, [0; 6]), RET_KILL_PROCESS);
        assert_eq!(eval(&f, (X32_SYSCALL_BIT | 1) as i64, [0; 6]), RET_ERRNO | libc::EPERM as u32);
    }

    #[test]
    fn short_paths() {
        let f = compile().expect("compiles");
        assert!(f.len() < 200, "{} instructions", f.len());
    }
}
