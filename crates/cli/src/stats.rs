//! Summary statistics for benchmarks.

use serde::Serialize;

/// Percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| -> f64 {
            if ms.is_empty() {
                return f64::NAN;
            }
            let i = ((ms.len() as f64 - 1.0) * q).round() as usize;
            ms[i.min(ms.len() - 1)]
        };
        Self { n: ms.len(), p50: at(0.5), p90: at(0.9), p99: at(0.99), min: at(0.0), max: at(1.0) }
    }
}

impl std::fmt::Display for Summary {
    /// `p50 1.23 ms  p90 …  p99 …  (n=…)`, for the benches' human output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {:.2} ms  p90 {:.2}  p99 {:.2}  (n={})", self.p50, self.p90, self.p99, self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let s = Summary::of((1..=100).map(f64::from).collect());
        assert_eq!((s.p50, s.p99, s.min, s.max), (51.0, 99.0, 1.0, 100.0));
        assert!(Summary::of(vec![]).p50.is_nan());
    }
}
