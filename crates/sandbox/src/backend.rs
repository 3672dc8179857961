//! The backend abstraction. `ns` is implemented; `vm` (one KVM microVM per
//! sandbox, `reins-guest` as its init, host<->guest over vsock) plugs in
//! behind the same trait on hosts where `/dev/kvm` runs stock guests.

use std::future::Future;

use reins_types::SandboxSpec;

use crate::{Error, Sandbox};

/// Which isolation technology runs a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Namespaces + seccomp + cgroups (+ Landlock).
    Ns,
    /// KVM microVM. Not built yet: this machine's `/dev/kvm` is paravirtual
    /// and cannot boot stock guests.
    Vm,
}

/// What the node daemon needs from a backend.
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    fn create(&self, spec: &SandboxSpec) -> impl Future<Output = Result<Sandbox, Error>> + Send;
}
