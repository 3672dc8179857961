//! Agents on the command line: `reins agent create|ls|get|rm`,
//! `reins session ls|show|approve|deny`, `reins skill push|ls|rm`.
//! `reins chat` is in [`super::chat`].

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use reins_api::agent::{
    Agent, AgentSandbox, AgentSpec, Budgets, ModelSpec, PolicyRule, Session, SessionEvent, Skill, ToolPolicy,
};
use reins_api::v1::List;
use reqwest::Method;
use serde_json::json;

use crate::client::Client;
use crate::cmd::network::NetworkArgs;
use crate::cmd::table::{json_out, print_table, when};

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Define an agent (or pass a whole definition with --file).
    Create(Box<CreateArgs>),
    /// List agents.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show an agent's definition and token counts.
    Get {
        agent: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete an agent with its sessions and its volume.
    Rm { agent: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The agent's name.
    name: Option<String>,
    /// A JSON definition (the API's AgentSpec); flags are then not used.
    #[arg(long, conflicts_with_all = ["provider", "base_url", "model"])]
    file: Option<std::path::PathBuf>,
    /// `openai` (any OpenAI-compatible endpoint) or `anthropic`.
    #[arg(long, default_value = "openai", value_parser = ["openai", "anthropic"])]
    provider: String,
    /// Such as `https://api.openai.com/v1`, or `http://localhost:11434/v1` for Ollama.
    #[arg(long)]
    base_url: Option<String>,
    /// The model's name at the provider.
    #[arg(long)]
    model: Option<String>,
    /// The secret (`reins secret set`) holding the API key; bound to the base URL's host.
    #[arg(long)]
    api_key_secret: Option<String>,
    /// The system prompt, or @FILE to read it from a file.
    #[arg(long, default_value = "")]
    system: String,
    /// Enable only these tools (repeatable; all when absent).
    #[arg(long = "tool")]
    tools: Vec<String>,
    /// A skill (`reins skill push`) to mount and describe (repeatable).
    #[arg(long = "skill")]
    skills: Vec<String>,
    #[arg(long)]
    template: Option<String>,
    /// Shell commands that need a human's approval, as globs such as `git push*` (repeatable).
    #[arg(long = "ask", value_name = "PATTERN")]
    ask: Vec<String>,
    /// Shell commands that are refused, such as `rm -rf /*` (repeatable).
    #[arg(long = "forbid", value_name = "PATTERN")]
    forbid: Vec<String>,
    /// Shell commands that run without asking when the default is ask (repeatable).
    #[arg(long = "permit", value_name = "PATTERN")]
    permit: Vec<String>,
    /// What applies to other shell commands.
    #[arg(long, default_value = "allow", value_parser = ["allow", "ask", "deny"])]
    shell_default: String,
    /// Model calls per turn.
    #[arg(long)]
    max_steps: Option<u32>,
    /// Tokens per turn.
    #[arg(long)]
    max_tokens: Option<u64>,
    /// Wall time per turn, in seconds.
    #[arg(long)]
    turn_secs: Option<u64>,
    #[command(flatten)]
    network: NetworkArgs,
    #[arg(long)]
    json: bool,
}

impl CreateArgs {
    fn spec(&self) -> Result<AgentSpec> {
        if let Some(f) = &self.file {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            return serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid agent definition", f.display()));
        }
        let (Some(name), Some(base_url), Some(model)) = (&self.name, &self.base_url, &self.model) else {
            bail!("give NAME, --base-url and --model (or --file agent.json)");
        };
        let system_prompt = match self.system.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading the system prompt {path}"))?,
            None => self.system.clone(),
        };
        let mut rules = Vec::new();
        for (patterns, action) in [(&self.forbid, "deny"), (&self.ask, "ask"), (&self.permit, "allow")] {
            rules.extend(patterns.iter().map(|p| PolicyRule { pattern: p.clone(), action: action.into() }));
        }
        let mut approvals = BTreeMap::new();
        if !rules.is_empty() || self.shell_default != "allow" {
            approvals.insert("shell".to_owned(), ToolPolicy { default: self.shell_default.clone(), rules });
        }
        Ok(AgentSpec {
            name: name.clone(),
            model: ModelSpec {
                provider: self.provider.clone(),
                base_url: base_url.clone(),
                name: model.clone(),
                api_key_secret: self.api_key_secret.clone(),
                max_output_tokens: None,
            },
            system_prompt,
            tools: (!self.tools.is_empty()).then(|| self.tools.clone()),
            skills: self.skills.clone(),
            sandbox: AgentSandbox {
                template: self.template.clone(),
                network: self.network.policy(),
                ..Default::default()
            },
            approvals,
            budgets: Budgets {
                max_steps: self.max_steps,
                max_tokens: self.max_tokens,
                turn_secs: self.turn_secs,
                ..Default::default()
            },
        })
    }
}

fn agent_row(a: &Agent) -> Vec<String> {
    vec![
        a.spec.name.clone(),
        a.id.clone(),
        format!("{}:{}", a.spec.model.provider, a.spec.model.name),
        format!("{}/{}", a.tokens_in, a.tokens_out),
        when(a.created_ms),
    ]
}

pub async fn agent(cmd: AgentCmd) -> Result<u8> {
    let c = Client::from_env()?;
    match cmd {
        AgentCmd::Create(args) => {
            let spec = args.spec()?;
            let a: Agent = c.json(c.request(Method::POST, "/v1/agents").json(&spec)).await?;
            if args.json {
                json_out(&a)?;
            } else {
                println!("{} ({}): talk to it with `reins chat {}`", a.spec.name, a.id, a.spec.name);
            }
        }
        AgentCmd::Ls { json } => {
            let list: List<Agent> = c.json(c.request(Method::GET, "/v1/agents")).await?;
            if json {
                return json_out(&list.items).map(|()| 0);
            }
            print_table(
                &["NAME", "ID", "MODEL", "TOKENS IN/OUT", "CREATED"],
                list.items.iter().map(agent_row).collect(),
            );
        }
        AgentCmd::Get { agent, json } => {
            let a: Agent = c.json(c.request(Method::GET, &format!("/v1/agents/{agent}"))).await?;
            if json {
                return json_out(&a).map(|()| 0);
            }
            println!("{}", serde_json::to_string_pretty(&a)?);
        }
        AgentCmd::Rm { agent } => {
            c.send(c.request(Method::DELETE, &format!("/v1/agents/{agent}"))).await?;
            println!("{agent}");
        }
    }
    Ok(0)
}

#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// List sessions (of one agent with --agent).
    Ls {
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print a session's transcript.
    Show {
        session: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve the pending tool call (or the one named).
    Approve {
        session: String,
        approval: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny the pending tool call (or the one named).
    Deny {
        session: String,
        approval: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Stop the running turn.
    Cancel { session: String },
    /// Delete a session and its log.
    Rm { session: String },
}

/// Every event of a session's log.
pub async fn all_events(c: &Client, session: &str) -> Result<Vec<SessionEvent>> {
    let mut out = Vec::new();
    loop {
        let after = out.last().map_or(0, |e: &SessionEvent| e.seq);
        let page: List<SessionEvent> =
            c.json(c.request(Method::GET, &format!("/v1/sessions/{session}/events?after={after}"))).await?;
        let n = page.items.len();
        out.extend(page.items);
        if n < 1000 {
            return Ok(out);
        }
    }
}

/// One event as a line of the transcript (`None`: not shown).
pub fn describe(e: &SessionEvent) -> Option<String> {
    let d = &e.data;
    let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
    Some(match e.kind.as_str() {
        "message" => format!("you> {}", s("content")),
        "model_response" if !s("text").is_empty() => format!("agent> {}", s("text")),
        "tool_intent" => format!("  ⚙ {} {}", s("name"), s("arguments")),
        "tool_receipt" => {
            let out = s("output");
            let first = out.lines().next().unwrap_or_default();
            format!("  ↳ {} {}{}", s("outcome"), first, if out.lines().count() > 1 { " …" } else { "" })
        }
        "approval_requested" => format!("  ? approval {} for {}: {}", s("approval_id"), s("tool"), s("command")),
        "approval_answered" => {
            format!(
                "  ✓ {} {} by {}",
                s("approval_id"),
                if d["approved"] == true { "approved" } else { "denied" },
                s("by")
            )
        }
        "compaction" => "  (earlier history summarised)".into(),
        "error" => format!("  ! {}: {}", s("code"), s("message")),
        "turn_finished" if s("reason") != "done" => format!("  — turn ended: {} {}", s("reason"), s("message")),
        _ => return None,
    })
}

/// The approval a session waits for.
async fn pending(c: &Client, session: &str) -> Result<String> {
    let evs = all_events(c, session).await?;
    let answered: Vec<String> = evs
        .iter()
        .filter(|e| e.kind == "approval_answered")
        .filter_map(|e| e.data["approval_id"].as_str().map(str::to_owned))
        .collect();
    evs.iter()
        .rev()
        .filter(|e| e.kind == "approval_requested")
        .filter_map(|e| e.data["approval_id"].as_str())
        .find(|id| !answered.iter().any(|a| a == id))
        .map(str::to_owned)
        .context("this session waits for no approval")
}

pub async fn answer(c: &Client, session: &str, approval: &str, approve: bool, reason: Option<String>) -> Result<()> {
    let body = json!({"decision": if approve { "approve" } else { "deny" }, "reason": reason});
    c.send(c.request(Method::POST, &format!("/v1/sessions/{session}/approvals/{approval}")).json(&body)).await?;
    Ok(())
}

async fn decide(
    c: &Client,
    session: &str,
    approval: Option<String>,
    approve: bool,
    reason: Option<String>,
) -> Result<()> {
    let approval = match approval {
        Some(a) => a,
        None => pending(c, session).await?,
    };
    answer(c, session, &approval, approve, reason).await?;
    println!("{approval}: {}", if approve { "approved" } else { "denied" });
    Ok(())
}

pub async fn session(cmd: SessionCmd) -> Result<u8> {
    let c = Client::from_env()?;
    match cmd {
        SessionCmd::Ls { agent, json } => {
            let path = match &agent {
                Some(a) => format!("/v1/agents/{a}/sessions"),
                None => "/v1/sessions".into(),
            };
            let list: List<Session> = c.json(c.request(Method::GET, &path)).await?;
            if json {
                return json_out(&list.items).map(|()| 0);
            }
            let rows = list
                .items
                .iter()
                .map(|s| {
                    vec![s.id.clone(), s.agent_id.clone(), s.status.clone(), s.last_seq.to_string(), when(s.updated_ms)]
                })
                .collect();
            print_table(&["ID", "AGENT", "STATUS", "EVENTS", "UPDATED"], rows);
        }
        SessionCmd::Show { session, json } => {
            let evs = all_events(&c, &session).await?;
            if json {
                return json_out(&evs).map(|()| 0);
            }
            for e in &evs {
                if let Some(line) = describe(e) {
                    println!("{line}");
                }
            }
        }
        SessionCmd::Approve { session, approval, reason } => decide(&c, &session, approval, true, reason).await?,
        SessionCmd::Deny { session, approval, reason } => decide(&c, &session, approval, false, reason).await?,
        SessionCmd::Cancel { session } => {
            c.send(c.request(Method::POST, &format!("/v1/sessions/{session}/cancel"))).await?;
            println!("{session}: cancelling");
        }
        SessionCmd::Rm { session } => {
            c.send(c.request(Method::DELETE, &format!("/v1/sessions/{session}"))).await?;
            println!("{session}");
        }
    }
    Ok(0)
}

#[derive(Debug, Subcommand)]
pub enum SkillCmd {
    /// Upload a folder with a SKILL.md (front matter `name`, `description`) as the skill's next version.
    Push {
        dir: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List skills (their latest versions).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Delete every version of a skill.
    Rm { name: String },
}

/// The folder as a tar archive, SKILL.md at its top; symlinks are not followed.
fn pack(dir: &Path) -> Result<Vec<u8>> {
    anyhow::ensure!(dir.join("SKILL.md").is_file(), "{} has no SKILL.md", dir.display());
    let mut ar = tar::Builder::new(Vec::new());
    ar.follow_symlinks(false);
    ar.append_dir_all(".", dir).with_context(|| format!("packing {}", dir.display()))?;
    Ok(ar.into_inner()?)
}

/// The `name` of a SKILL.md's front matter.
fn skill_name(dir: &Path) -> Result<String> {
    let text = std::fs::read_to_string(dir.join("SKILL.md")).context("reading SKILL.md")?;
    text.lines()
        .skip(1)
        .take_while(|l| l.trim() != "---")
        .find_map(|l| l.strip_prefix("name:").map(|n| n.trim().trim_matches('"').to_owned()))
        .context("SKILL.md needs front matter with a `name:` line")
}

pub async fn skill(cmd: SkillCmd) -> Result<u8> {
    let c = Client::from_env()?;
    match cmd {
        SkillCmd::Push { dir, json } => {
            let name = skill_name(&dir)?;
            let body = pack(&dir)?;
            let size = body.len();
            let s: Skill = c
                .json(
                    c.request(Method::PUT, &format!("/v1/skills/{name}"))
                        .header("content-type", "application/octet-stream")
                        .body(body),
                )
                .await?;
            if json {
                json_out(&s)?;
            } else {
                println!("{} v{} ({size} bytes): {}", s.name, s.version, s.description);
            }
        }
        SkillCmd::Ls { json } => {
            let list: List<Skill> = c.json(c.request(Method::GET, "/v1/skills")).await?;
            if json {
                return json_out(&list.items).map(|()| 0);
            }
            let rows = list
                .items
                .iter()
                .map(|s| vec![s.name.clone(), s.version.to_string(), s.description.clone(), when(s.created_ms)])
                .collect();
            print_table(&["NAME", "VERSION", "DESCRIPTION", "CREATED"], rows);
        }
        SkillCmd::Rm { name } => {
            c.send(c.request(Method::DELETE, &format!("/v1/skills/{name}"))).await?;
            println!("{name}");
        }
    }
    Ok(0)
}
