//! An agent's stored definition, checked (at create) and turned into the
//! driver's settings (at each drive): the model's API key is opened from the
//! tenant's secret only when the secret is bound to the model's host.

use std::time::Duration;

use reins_api::agent::AgentSpec;
use reins_harness::model::{Kind, Provider};
use reins_harness::turn::Settings;
use reins_store::AgentRow;

use crate::error::ApiError;
use crate::state::App;

/// Largest system prompt.
const MAX_PROMPT: usize = 256 * 1024;

/// Checks a definition; the message says what to fix.
pub fn validate(spec: &AgentSpec) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::bad_request(m));
    if !reins_types::is_plain_name(&spec.name) {
        return bad(format!("agent name {:?}: 1 to 64 letters, digits, `.`, `_`, `-`", spec.name));
    }
    if Kind::parse(&spec.model.provider).is_none() {
        return bad(format!("unknown model provider `{}`: use `openai` or `anthropic`", spec.model.provider));
    }
    match reqwest::Url::parse(&spec.model.base_url) {
        Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host_str().is_some() => {
            let literal = u.host_str().unwrap_or_default().trim_matches(['[', ']']).parse::<std::net::IpAddr>();
            if literal.is_ok_and(reins_harness::model::guard::forbidden) {
                return bad("model base_url is a link-local address (such as the metadata service): refused".into());
            }
        }
        _ => return bad(format!("model base_url {:?} must be an http(s) URL", spec.model.base_url)),
    }
    if spec.model.name.trim().is_empty() || spec.model.name.len() > 256 {
        return bad("model name must be 1 to 256 characters".into());
    }
    if spec.system_prompt.len() > MAX_PROMPT {
        return bad(format!("system_prompt is larger than {MAX_PROMPT} bytes"));
    }
    for t in spec.tools.iter().flatten() {
        if !reins_harness::tools::ALL.contains(&t.as_str()) {
            return bad(format!("unknown tool `{t}`; the tools are: {}", reins_harness::tools::ALL.join(", ")));
        }
    }
    for s in &spec.skills {
        if !reins_types::is_plain_name(s) {
            return bad(format!("skill name {s:?} is invalid"));
        }
    }
    reins_harness::policy::validate(&spec.approvals).map_err(ApiError::bad_request)?;
    let b = &spec.budgets;
    if b.max_steps == Some(0) || b.max_turns == Some(0) || b.max_tokens == Some(0) || b.turn_secs == Some(0) {
        return bad("budgets must be at least 1".into());
    }
    if b.context_tokens.is_some_and(|c| c < 1000) {
        return bad("budgets.context_tokens must be at least 1000".into());
    }
    if spec.model.max_output_tokens == Some(0) {
        return bad("model.max_output_tokens must be at least 1".into());
    }
    if let Some(n) = &spec.sandbox.network {
        crate::routes::network::validate(n)?;
    }
    Ok(())
}

/// The stored definition of an agent.
pub fn spec(row: &AgentRow) -> Result<AgentSpec, ApiError> {
    serde_json::from_str(&row.spec).map_err(ApiError::internal)
}

/// The turn's wall-time budget.
pub fn turn_time(spec: &AgentSpec) -> Duration {
    Duration::from_secs(spec.budgets.turn_secs.unwrap_or(900))
}

/// The driver's settings; `Err` is a message for the session's error event.
pub async fn settings(app: &App, tenant: &str, spec: &AgentSpec) -> Result<Settings, String> {
    let kind = Kind::parse(&spec.model.provider).ok_or("unknown model provider")?;
    let api_key = match &spec.model.api_key_secret {
        Some(name) => Some(model_key(app, tenant, name, &spec.model.base_url).await?),
        None => None,
    };
    let mut provider = Provider::new(kind, &spec.model.base_url, &spec.model.name, api_key, app.harness.client.clone());
    provider.retry = app.harness.retry.clone();
    let enabled: Vec<String> =
        spec.tools.clone().unwrap_or_else(|| reins_harness::tools::ALL.iter().map(|s| s.to_string()).collect());
    let mut skills = Vec::new();
    for name in &spec.skills {
        match app.store.skill(tenant, name, None).await {
            Ok(s) => skills.push((s.name, s.description)),
            Err(reins_store::Error::NotFound) => tracing::warn!(skill = %name, "an agent's skill was deleted"),
            Err(e) => return Err(format!("reading skills: {e}")),
        }
    }
    Ok(Settings {
        provider,
        system_prompt: spec.system_prompt.clone(),
        tools: reins_harness::tools::schemas(&enabled),
        enabled,
        approvals: spec.approvals.clone(),
        skills,
        max_steps: spec.budgets.max_steps.unwrap_or(50),
        max_turns: spec.budgets.max_turns,
        max_tokens: spec.budgets.max_tokens.unwrap_or(1_000_000),
        turn_time: turn_time(spec),
        context_tokens: spec.budgets.context_tokens.unwrap_or(100_000),
        max_output_tokens: spec.model.max_output_tokens.unwrap_or(4096),
    })
}

/// Opens the tenant's secret `name`, provided it is bound to the host of `base_url`.
async fn model_key(app: &App, tenant: &str, name: &str, base_url: &str) -> Result<String, String> {
    let row = match app.store.secret(tenant, name).await {
        Ok(r) => r,
        Err(reins_store::Error::NotFound) => return Err(format!("the model's API key secret `{name}` does not exist")),
        Err(e) => return Err(format!("reading the secret `{name}`: {e}")),
    };
    let url = reqwest::Url::parse(base_url).map_err(|e| e.to_string())?;
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_ascii_lowercase();
    let port = url.port_or_known_default().unwrap_or(443);
    let rules: Vec<reins_types::net::Rule> = serde_json::from_str(&row.hosts).map_err(|e| e.to_string())?;
    let bound = rules.iter().any(|r| match host.parse::<std::net::IpAddr>() {
        Ok(ip) => r.matches_addr(ip, port),
        Err(_) => r.matches_name(&host, port),
    });
    if !bound {
        return Err(format!(
            "the secret `{name}` is not bound to {host}:{port}, the model's host; add it to the secret's hosts"
        ));
    }
    app.sealing.open(&row.tenant_id, &row.name, &row.sealed).map_err(|e| format!("opening the secret `{name}`: {e}"))
}
