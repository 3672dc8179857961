//! `reins-guest` is the process that runs as PID 1 inside every sandbox.
//!
//! It is deliberately small and single-threaded: one `poll(2)` loop serves
//! the host's requests over one Unix socket (run commands with pipes or a PTY,
//! stdin, signals, resize, file operations, directory watches) and reaps every
//! process in the sandbox. When the host side of the socket closes, the guest
//! exits, and the kernel kills everything else in the sandbox's PID namespace.
//!
//! [`proto`] defines the wire protocol; the host side lives in `reins-sandbox`.

pub mod proto;

mod daemon;
mod exec;
mod files;
pub mod policy;
mod watch;

pub use daemon::run;
