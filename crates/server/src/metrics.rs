//! Prometheus metrics: requests and latency by route and status, exec
//! durations; sandboxes by state and node capacity are read at scrape time.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::state::App;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub agent: String,
    pub direction: String,
}

/// The control plane's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    pub exec_seconds: Histogram,
    /// Session log events appended, by kind.
    pub session_events: Family<KindLabel, Counter>,
    /// Model tokens, by agent and direction (`input`, `output`).
    pub model_tokens: Family<TokenLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("reins");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let exec_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        registry.register("http_requests", "API requests by method, route and status", requests.clone());
        registry.register("http_request_duration_seconds", "API request latency by route", latency.clone());
        registry.register("exec_duration_seconds", "Duration of commands run through the API", exec_seconds.clone());
        let session_events = Family::<KindLabel, Counter>::default();
        let model_tokens = Family::<TokenLabels, Counter>::default();
        registry.register("session_events", "Agent session log events appended, by kind", session_events.clone());
        registry.register("model_tokens", "Model tokens used, by agent and direction", model_tokens.clone());
        Self { registry: Mutex::new(registry), requests, latency, exec_seconds, session_events, model_tokens }
    }
}

/// Middleware counting every request under its route template.
pub async fn track(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let m = &app.metrics;
    m.latency.get_or_create(&RouteLabels { route: route.clone() }).observe(start.elapsed().as_secs_f64());
    m.requests.get_or_create(&RequestLabels { method, route, status: resp.status().as_u16() }).inc();
    resp
}

/// The text exposition, with gauges computed now.
pub async fn render(app: &App) -> String {
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &app.metrics.registry.lock().unwrap_or_else(|p| p.into_inner())) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    // Strip the registry's trailing `# EOF` so the gauges below stay in the exposition.
    if let Some(stripped) = out.strip_suffix("# EOF\n") {
        out.truncate(stripped.len());
    }
    out.push_str("# HELP reins_sandboxes Live sandboxes by state.\n# TYPE reins_sandboxes gauge\n");
    let counts = app.store.sandbox_counts().await.unwrap_or_default();
    for state in ["running", "paused"] {
        let n = counts.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "reins_sandboxes{{state=\"{state}\"}} {n}");
    }
    out.push_str(
        "# HELP reins_node_sandboxes Sandboxes hosted by each connected node.\n# TYPE reins_node_sandboxes gauge\n",
    );
    let nodes = app.nodes.all();
    let statuses: Vec<_> = nodes.iter().filter_map(|n| n.status().map(|s| (n.id.clone(), s))).collect();
    for (id, s) in &statuses {
        let _ = writeln!(out, "reins_node_sandboxes{{node=\"{id}\"}} {}", s.sandboxes.len());
    }
    out.push_str("# HELP reins_node_capacity_sandboxes Sandboxes each node accepts.\n# TYPE reins_node_capacity_sandboxes gauge\n");
    for (id, s) in &statuses {
        let _ = writeln!(out, "reins_node_capacity_sandboxes{{node=\"{id}\"}} {}", s.capacity.max_sandboxes);
    }
    out.push_str("# HELP reins_node_memory_reserved_bytes Memory limits of running sandboxes per node.\n# TYPE reins_node_memory_reserved_bytes gauge\n");
    for (id, s) in &statuses {
        let _ = writeln!(out, "reins_node_memory_reserved_bytes{{node=\"{id}\"}} {}", s.memory_reserved_bytes);
    }
    out.push_str("# HELP reins_node_capacity_memory_bytes Memory each node accepts in limits.\n# TYPE reins_node_capacity_memory_bytes gauge\n");
    for (id, s) in &statuses {
        let _ = writeln!(out, "reins_node_capacity_memory_bytes{{node=\"{id}\"}} {}", s.capacity.memory_bytes);
    }
    out.push_str("# HELP reins_egress_connections_total Connection attempts through sandboxes' egress proxies, per node (as of its last status).\n# TYPE reins_egress_connections_total counter\n");
    for (id, s) in &statuses {
        let _ =
            writeln!(out, "reins_egress_connections_total{{node=\"{id}\",decision=\"allowed\"}} {}", s.egress.allowed);
        let _ =
            writeln!(out, "reins_egress_connections_total{{node=\"{id}\",decision=\"denied\"}} {}", s.egress.denied);
    }
    out.push_str("# HELP reins_egress_bytes_total Bytes through sandboxes' egress proxies, per node.\n# TYPE reins_egress_bytes_total counter\n");
    for (id, s) in &statuses {
        let _ = writeln!(out, "reins_egress_bytes_total{{node=\"{id}\",direction=\"up\"}} {}", s.egress.bytes_up);
        let _ = writeln!(out, "reins_egress_bytes_total{{node=\"{id}\",direction=\"down\"}} {}", s.egress.bytes_down);
    }
    let _ = writeln!(
        out,
        "# HELP reins_nodes_connected Connected nodes.\n# TYPE reins_nodes_connected gauge\nreins_nodes_connected {}",
        nodes.len()
    );
    out.push_str("# EOF\n");
    out
}
