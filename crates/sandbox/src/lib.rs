//! `reins-sandbox` creates, drives and destroys sandboxes on one host.
//!
//! [`Runtime`] is the entry point: it owns the zygote helpers, the slot
//! allocator, the cgroup layout and the template store. [`Runtime::create`]
//! returns a [`Sandbox`], whose methods run commands ([`Sandbox::exec`]) and
//! operate on files; [`Sandbox::destroy`] removes it without a trace.
//!
//! Binaries that use this crate must call [`maybe_run_helper`] first thing in
//! `main`, before any thread exists: the runtime re-executes the binary in a
//! helper role to do namespace set-up single-threaded.

mod backend;
mod cgroup;
mod cleanup;
mod conn;
mod embryo;
mod error;
mod exec;
pub mod layer;
pub mod ns;
mod runtime;
mod sandbox;
mod slots;
pub mod template;

pub use backend::{Backend, BackendKind};
pub use cgroup::{Cgroups, Layout};
pub use cleanup::{cleanup, Cleanup};
pub use error::Error;
pub use exec::{Exec, ExecControl, ExecEvent, ExecRequest, Output, User};
pub use ns::iface::Iface;
pub use reins_guest::proto::{EntryInfo, ExitStatus, FileKind, FsError, FsErrorKind, WatchKind};
pub use runtime::{Runtime, RuntimeOptions};
pub use sandbox::{Sandbox, Watch, WatchEvent};

/// Runs the helper role and exits if this process was started as a helper;
/// returns otherwise. Call it before starting any thread or runtime.
pub fn maybe_run_helper() {
    if std::env::args_os().nth(1).is_some_and(|a| a == ns::ZYGOTE_ARG) {
        ns::zygote::main();
    }
}
