//! The specification of a sandbox and of its parts given on the command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Limits;

/// A spec part that is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("invalid volume `{0}`: use HOST:SANDBOX or HOST:SANDBOX:ro with absolute paths")]
    Volume(String),
    #[error("invalid environment variable `{0}`: use NAME=VALUE with a name of letters, digits and _")]
    Env(String),
    #[error("invalid template name `{0}`: use letters, digits, `.`, `_` and `-`")]
    Template(String),
}

/// A host directory bound into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub host: PathBuf,
    pub sandbox: PathBuf,
    pub read_only: bool,
    /// Ids stored in the directory are the sandbox's inner ids (0 root,
    /// 1000 `user`): it is mounted id-mapped (the node's agent volumes).
    #[serde(default)]
    pub idmap: bool,
}

impl std::str::FromStr for Volume {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let err = || SpecError::Volume(s.to_owned());
        let mut parts = s.split(':');
        let host = PathBuf::from(parts.next().ok_or_else(err)?);
        let sandbox = PathBuf::from(parts.next().ok_or_else(err)?);
        let read_only = match parts.next() {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(_) => return Err(err()),
        };
        let clean = |p: &PathBuf| {
            p.is_absolute()
                && p.components().all(|c| !matches!(c, std::path::Component::ParentDir | std::path::Component::CurDir))
        };
        if parts.next().is_some() || !clean(&host) || !clean(&sandbox) || sandbox == Path::new("/") {
            return Err(err());
        }
        Ok(Self { host, sandbox, read_only, idmap: false })
    }
}

/// One `NAME=VALUE` environment entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

impl std::str::FromStr for EnvVar {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (name, value) = s.split_once('=').ok_or_else(|| SpecError::Env(s.to_owned()))?;
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !value.contains('\0');
        if !valid {
            return Err(SpecError::Env(s.to_owned()));
        }
        Ok(Self { name: name.to_owned(), value: value.to_owned() })
    }
}

/// True for a name of 1 to 64 characters of `[A-Za-z0-9._-]`, not starting
/// with `.` (templates, secrets): safe as a path component and in a URL.
pub fn is_plain_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Checks a template name ([`is_plain_name`]).
pub fn validate_template_name(name: &str) -> Result<(), SpecError> {
    is_plain_name(name).then_some(()).ok_or_else(|| SpecError::Template(name.to_owned()))
}

/// Everything needed to create a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub template: String,
    pub limits: Limits,
    /// Environment every command in the sandbox starts with.
    pub env: Vec<EnvVar>,
    pub volumes: Vec<Volume>,
    /// Lifetime after which the sandbox is destroyed; `None` means no limit.
    pub timeout: Option<Duration>,
    /// Read-only layers between the writable layer and the template, top
    /// first: directories written by `Sandbox::capture` (a snapshot), whose
    /// files carry the sandbox's inner ids. Host paths: a node fills them in
    /// from snapshot ids and never accepts them from the control plane.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<std::path::PathBuf>,
}

impl Default for SandboxSpec {
    fn default() -> Self {
        Self {
            template: "base".to_owned(),
            limits: Limits::default(),
            env: Vec::new(),
            volumes: Vec::new(),
            timeout: None,
            layers: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn volumes() {
        let v: Volume = "/data:/mnt/data:ro".parse().expect("valid");
        assert!(v.read_only);
        assert_eq!(v.sandbox, PathBuf::from("/mnt/data"));
        assert!("relative:/x".parse::<Volume>().is_err());
        assert!("/a:/".parse::<Volume>().is_err());
        assert!("/a:/b/../etc".parse::<Volume>().is_err());
        assert!("/a:/b:rx".parse::<Volume>().is_err());
        assert!("/a".parse::<Volume>().is_err());
    }

    #[test]
    fn env() {
        let e: EnvVar = "A_1=x=y".parse().expect("valid");
        assert_eq!((e.name.as_str(), e.value.as_str()), ("A_1", "x=y"));
        assert!("1A=x".parse::<EnvVar>().is_err());
        assert!("=x".parse::<EnvVar>().is_err());
        assert!("NOEQ".parse::<EnvVar>().is_err());
    }

    #[test]
    fn template_names() {
        assert!(validate_template_name("base").is_ok());
        assert!(validate_template_name("../etc").is_err());
        assert!(validate_template_name("").is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC*") {
            let _ = s.parse::<Volume>();
            let _ = s.parse::<EnvVar>();
            let _ = validate_template_name(&s);
        }
    }
}
