//! Core types shared by every Reins crate: sandbox specifications, resource
//! limits and their parsers. This crate does no I/O, so anything that faces
//! untrusted input here is pure and property-tested.

mod limits;
pub mod net;
mod size;
mod spec;

pub use limits::{CpuQuota, Limits, LimitsError};
pub use net::{Credential, NetEvent, NetMode, NetworkPolicy, Rule, RuleError, SandboxNetwork};
pub use size::{parse_duration, parse_size, ParseError};
pub use spec::{is_plain_name, validate_template_name, EnvVar, SandboxSpec, SpecError, Volume};
