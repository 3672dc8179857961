//! Templates: read-only root file systems, stored content-addressed under
//! `<data>/templates/objects/<sha256>/rootfs` with names in
//! `<data>/templates/names/<name>`. A sandbox uses one as the lower layer of
//! its overlay; nothing a sandbox does can change it.
//!
//! The `base` template is assembled from the host's own system directories:
//! a small root of its own (`/etc` with a `user` account, `hosts`,
//! `resolv.conf`, `nsswitch.conf`) plus the host's `/usr` bound read-only,
//! so it works offline. Other templates come from a directory or an OCI image
//! ([`oci`]).

mod base;
mod digest;
pub mod oci;
mod store;
mod tree;

pub use store::{Template, TemplateInfo, Templates};

/// The default template's name.
pub const BASE: &str = "base";
