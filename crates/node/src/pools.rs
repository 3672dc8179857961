//! Warm pools: per template and resource shape, sandboxes started ahead —
//! fully isolated, guest running, never used — that a matching create takes
//! instead of starting one. A claimed sandbox leaves its pool for good; the
//! pool refills in the background.
//!
//! Each pool keeps between `min` and `max` ready, sized from the recent
//! demand: creates that matched it (claimed or not) in the last
//! [`WINDOW`], as a rate, times [`COVER`] — enough to serve that long a
//! burst while refilling — and shrinks when demand falls. Pool sandboxes
//! count against the node's capacity like any other.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use reins_api::node::{PoolSpec, PoolStatus};
use reins_sandbox::Sandbox;
use reins_types::{Limits, SandboxSpec};
use tokio::sync::Notify;

use crate::state::Node;

/// Demand is counted over this window.
const WINDOW: Duration = Duration::from_secs(10);
/// A pool holds this many seconds of the recent demand.
const COVER: f64 = 2.0;
/// After a failed start, a pool waits this long before trying again.
const BACKOFF: Duration = Duration::from_secs(5);
/// Refills wait this long after the latest claim: starting a sandbox takes
/// a core for ~2 ms, and the claimed sandbox's first command should not
/// share it (on two cores, claim → first output went from 1.8 to 1.2 ms).
const SETTLE: Duration = Duration::from_millis(10);

struct Pool {
    spec: PoolSpec,
    ready: VecDeque<Sandbox>,
    filling: u32,
    demand: VecDeque<Instant>,
    claims: u64,
    target: u32,
    failed_at: Option<Instant>,
}

impl Pool {
    fn new(spec: PoolSpec) -> Self {
        let target = spec.min;
        Self { spec, ready: VecDeque::new(), filling: 0, demand: VecDeque::new(), claims: 0, target, failed_at: None }
    }

    fn matches(&self, spec: &SandboxSpec) -> bool {
        spec.template == self.spec.template
            && spec.limits == self.spec.limits
            && spec.volumes.is_empty()
            && spec.layers.is_empty()
            && spec.timeout.is_none()
    }

    fn retarget(&mut self, now: Instant) {
        while self.demand.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
            self.demand.pop_front();
        }
        let rate = self.demand.len() as f64 / WINDOW.as_secs_f64();
        let wanted = (rate * COVER).ceil() as u32;
        self.target = wanted.clamp(self.spec.min, self.spec.max.max(self.spec.min));
    }

    fn sandbox_spec(&self) -> SandboxSpec {
        SandboxSpec { template: self.spec.template.clone(), limits: self.spec.limits, ..SandboxSpec::default() }
    }
}

#[derive(Default)]
struct Inner {
    pools: Vec<Pool>,
    last_claim: Option<Instant>,
    /// Sandboxes of removed pools or beyond a target, to destroy (with the
    /// limits reserved for them).
    retired: Vec<(Sandbox, Limits)>,
}

/// The node's warm pools.
#[derive(Default)]
pub(crate) struct Pools {
    inner: Mutex<Inner>,
    wake: Arc<Notify>,
}

impl Pools {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the pool list; pools no longer listed are emptied.
    pub fn set(&self, specs: Vec<PoolSpec>) {
        let mut inner = self.lock();
        let old = std::mem::take(&mut inner.pools);
        let mut kept = Vec::with_capacity(specs.len());
        let mut retired = Vec::new();
        let mut old: Vec<Option<Pool>> = old.into_iter().map(Some).collect();
        for spec in specs {
            let same = old
                .iter_mut()
                .find(|p| p.as_ref().is_some_and(|p| p.spec.template == spec.template && p.spec.limits == spec.limits));
            match same.and_then(Option::take) {
                Some(mut p) => {
                    p.spec = spec;
                    kept.push(p);
                }
                None => kept.push(Pool::new(spec)),
            }
        }
        for p in old.into_iter().flatten() {
            let limits = p.spec.limits;
            retired.extend(p.ready.into_iter().map(|sb| (sb, limits)));
        }
        inner.pools = kept;
        inner.retired.extend(retired);
        drop(inner);
        self.wake.notify_one();
    }

    /// A ready sandbox for `spec` if a pool matches and has one; counts the demand either way.
    pub fn claim(&self, spec: &SandboxSpec) -> Option<Sandbox> {
        let mut inner = self.lock();
        let pool = inner.pools.iter_mut().find(|p| p.matches(spec))?;
        pool.demand.push_back(Instant::now());
        let sb = pool.ready.pop_front();
        if sb.is_some() {
            pool.claims += 1;
            inner.last_claim = Some(Instant::now());
        }
        drop(inner);
        self.wake.notify_one();
        sb
    }

    /// Sandboxes pools hold or are starting (they count against capacity).
    pub fn held(&self) -> u32 {
        let inner = self.lock();
        inner.pools.iter().map(|p| p.ready.len() as u32 + p.filling).sum::<u32>() + inner.retired.len() as u32
    }

    pub fn status(&self) -> Vec<PoolStatus> {
        self.lock()
            .pools
            .iter()
            .map(|p| PoolStatus {
                template: p.spec.template.clone(),
                limits: p.spec.limits,
                ready: p.ready.len() as u32,
                target: p.target,
                claims: p.claims,
            })
            .collect()
    }

    /// Destroys retired sandboxes and gives back what was reserved for them.
    pub async fn drain(&self, node: &Node) {
        let retired = std::mem::take(&mut self.lock().retired);
        if retired.is_empty() {
            return;
        }
        let limits: Vec<Limits> = retired.iter().map(|(_, l)| *l).collect();
        futures_util::future::join_all(retired.into_iter().map(|(sb, _)| sb.destroy())).await;
        let mut inner = node.lock();
        for l in limits {
            Node::unreserve(&mut inner, &l);
        }
    }

    /// Recomputes targets, retires what is beyond them, and picks a pool to
    /// fill by one: its index and the spec to start.
    fn next_fill(&self) -> Option<(usize, SandboxSpec)> {
        let now = Instant::now();
        let mut inner = self.lock();
        let Inner { pools, retired, .. } = &mut *inner;
        let mut pick = None;
        for (i, p) in pools.iter_mut().enumerate() {
            p.retarget(now);
            // Shrink gently: one per pass.
            if p.ready.len() as u32 > p.target {
                let limits = p.spec.limits;
                retired.extend(p.ready.pop_back().map(|sb| (sb, limits)));
            }
            let backing_off = p.failed_at.is_some_and(|t| now.duration_since(t) < BACKOFF);
            if pick.is_none() && !backing_off && (p.ready.len() as u32 + p.filling) < p.target {
                p.filling += 1;
                pick = Some((i, p.sandbox_spec()));
            }
        }
        pick
    }

    /// How long to wait before a refill so the latest claim settles.
    fn settle(&self) -> Option<Duration> {
        let since = self.lock().last_claim?.elapsed();
        SETTLE.checked_sub(since).filter(|d| !d.is_zero())
    }

    /// Puts a started sandbox into pool `index` (if that pool still is what it was).
    fn fill(&self, index: usize, spec: &SandboxSpec, started: Option<Sandbox>) {
        let mut inner = self.lock();
        let Inner { pools, retired, .. } = &mut *inner;
        match pools.get_mut(index).filter(|p| p.matches(spec)) {
            Some(p) => {
                p.filling = p.filling.saturating_sub(1);
                match started {
                    Some(sb) => {
                        p.ready.push_back(sb);
                        p.failed_at = None;
                    }
                    None => p.failed_at = Some(Instant::now()),
                }
            }
            None => retired.extend(started.map(|sb| (sb, spec.limits))),
        }
    }
}

/// Keeps the node's pools at their targets. Ends with the node.
pub(crate) async fn keep(node: Weak<Node>) {
    loop {
        let Some(n) = node.upgrade() else { return };
        if let Some(wait) = n.pools.settle() {
            drop(n);
            tokio::time::sleep(wait).await;
            continue;
        }
        n.pools.drain(&n).await;
        let Some((index, spec)) = n.pools.next_fill() else {
            let wake = Arc::clone(&n.pools.wake);
            drop(n);
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            continue;
        };
        let started = start_one(&n, &spec).await;
        n.pools.fill(index, &spec, started);
    }
}

/// Starts one pool sandbox within the node's capacity (`None` if full or failed).
async fn start_one(node: &Arc<Node>, spec: &SandboxSpec) -> Option<Sandbox> {
    if node.reserve_for_pool(spec).is_err() {
        return None;
    }
    match node.runtime.create(spec).await {
        Ok(sb) => Some(sb),
        Err(e) => {
            Node::unreserve(&mut node.lock(), &spec.limits);
            tracing::warn!(template = %spec.template, error = %e, "warm pool cannot start a sandbox");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(min: u32, max: u32) -> Pool {
        let limits = reins_types::Limits::default();
        Pool::new(PoolSpec { template: "base".into(), limits, min, max })
    }

    #[test]
    fn a_pool_sizes_itself_from_recent_demand_between_min_and_max() {
        let now = Instant::now();
        let mut p = pool(2, 16);
        p.retarget(now);
        assert_eq!(p.target, 2, "no demand: min");
        // 30 claims in the window: 3 per second, two seconds' worth ready.
        p.demand.extend((0..30).map(|i| now - Duration::from_millis(i * 100)));
        p.retarget(now);
        assert_eq!(p.target, 6);
        // A burst beyond max is capped.
        p.demand.extend((0..500).map(|_| now));
        p.retarget(now);
        assert_eq!(p.target, 16);
        // Demand falls: once the window has passed, back to min.
        p.retarget(now + WINDOW + Duration::from_millis(1));
        assert_eq!((p.target, p.demand.len()), (2, 0));
    }

    #[test]
    fn a_pool_matches_only_its_own_plain_shape() {
        let p = pool(0, 1);
        let plain = SandboxSpec::default();
        assert!(p.matches(&plain));
        let other = SandboxSpec { limits: reins_types::Limits { pids: 1, ..plain.limits }, ..plain.clone() };
        assert!(!p.matches(&other));
        let layered = SandboxSpec { layers: vec!["/x".into()], ..plain.clone() };
        assert!(!p.matches(&layered));
        let timed = SandboxSpec { timeout: Some(Duration::from_secs(1)), ..plain };
        assert!(!p.matches(&timed));
    }
}
