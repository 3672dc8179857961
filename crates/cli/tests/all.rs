//! Integration tests of the sandbox runtime and the `reins` binary.
//!
//! They need root (namespaces, cgroups) and run in CI as root. Every test
//! uses its own cgroup group, run directory and slots, and checks that it
//! left nothing behind.

mod suite;
