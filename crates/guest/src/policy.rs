//! Landlock, where the kernel has it: a domain for the whole sandbox,
//! entered by PID 1 after set-up and so inherited by every command, that
//! forbids creating device nodes and, from ABI 6 on, connecting to abstract
//! Unix sockets of other domains. The rest of the sandbox's boundary
//! (namespaces, seccomp, cgroups) does not depend on it.

use landlock::{path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, ABI};

/// Restricts the calling process and its future children. Best effort: on
/// kernels without Landlock this does nothing.
pub fn landlock() {
    let abi = ABI::V6;
    let all = AccessFs::from_all(abi);
    let allowed = all & !(AccessFs::MakeChar | AccessFs::MakeBlock);
    let result = Ruleset::default()
        .handle_access(all)
        .and_then(|r| r.scope(Scope::AbstractUnixSocket))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(["/"], allowed)))
        .and_then(|r| r.restrict_self());
    if let Err(e) = result {
        let _ = nix::unistd::write(std::io::stderr(), format!("reins: landlock: {e}\n").as_bytes());
    }
}
