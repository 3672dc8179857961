//! Resource limits of a sandbox, validated on construction.

use serde::{Deserialize, Serialize};

/// CPU bandwidth in thousandths of a CPU (`1.5` CPUs = 1500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CpuQuota(u32);

impl CpuQuota {
    /// Parses a CPU count such as `1.5`; must be in [0.01, 1024].
    pub fn parse(input: &str) -> Result<Self, LimitsError> {
        let cpus: f64 = input.trim().parse().map_err(|_| LimitsError::Cpus(input.to_owned()))?;
        Self::from_cpus(cpus).ok_or_else(|| LimitsError::Cpus(input.to_owned()))
    }

    /// A quota of `cpus` CPUs, if it is finite and in [0.01, 1024]. The kernel's
    /// smallest CFS quota is 1 ms per 100 ms period, that is 0.01 CPU.
    pub fn from_cpus(cpus: f64) -> Option<Self> {
        let milli = (cpus * 1000.0).round();
        (cpus.is_finite() && milli >= 10.0 && cpus <= 1024.0).then_some(Self(milli as u32))
    }

    /// Thousandths of a CPU.
    pub fn millicpus(self) -> u32 {
        self.0
    }
}

/// Limits that are out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("invalid cpu count `{0}`: give a number of CPUs from 0.01 to 1024, such as 0.5 or 2")]
    Cpus(String),
    #[error("memory limit {0} bytes is too small: give at least 8M")]
    Memory(u64),
    #[error("pids limit {0} is too small: give at least 8")]
    Pids(u32),
    #[error("disk limit {0} bytes is too small: give at least 1M")]
    Disk(u64),
}

/// The resource limits of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpu: CpuQuota,
    pub pids: u32,
    pub disk_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { memory_bytes: 512 << 20, cpu: CpuQuota(1000), pids: 256, disk_bytes: 1 << 30 }
    }
}

impl Limits {
    /// Checks that every limit leaves a sandbox able to start.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.memory_bytes < 8 << 20 {
            return Err(LimitsError::Memory(self.memory_bytes));
        }
        if self.pids < 8 {
            return Err(LimitsError::Pids(self.pids));
        }
        if self.disk_bytes < 1 << 20 {
            return Err(LimitsError::Disk(self.disk_bytes));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus() {
        assert_eq!(CpuQuota::parse("1.5").map(CpuQuota::millicpus), Ok(1500));
        assert!(CpuQuota::parse("-1").is_err());
        assert!(CpuQuota::parse("0").is_err());
        assert!(CpuQuota::parse("0.001").is_err(), "below the kernel's smallest quota");
        assert_eq!(CpuQuota::parse("0.01").map(CpuQuota::millicpus), Ok(10));
        assert!(CpuQuota::parse("NaN").is_err());
        assert!(CpuQuota::parse("abc").is_err());
    }

    #[test]
    fn validate() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let zero = Limits { memory_bytes: 0, ..Limits::default() };
        assert_eq!(zero.validate(), Err(LimitsError::Memory(0)));
    }
}
