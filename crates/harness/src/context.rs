//! What the model is told besides the conversation: the agent's system
//! prompt, `AGENTS.md` and `MEMORY.md` from its volume (each within a size
//! budget), its skills' names and descriptions, and the summary of
//! compacted history.

use crate::replay::Msg;
use crate::tools::{ExecSpec, Workspace};

/// Bytes of each of `AGENTS.md` and `MEMORY.md` put into the context.
pub const FILE_BUDGET: usize = 16 * 1024;

/// What the volume and the skills add to the prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    pub agents_md: Option<String>,
    pub memory_md: Option<String>,
    /// (name, description) of each enabled skill.
    pub skills: Vec<(String, String)>,
}

impl Context {
    /// Reads `AGENTS.md` and `MEMORY.md` from `/workspace` in one command
    /// (absent files are skipped).
    pub async fn load(ws: &impl Workspace, skills: Vec<(String, String)>) -> Result<Self, String> {
        let limit = (FILE_BUDGET + 1).to_string();
        let script = r#"cd /workspace && for f in AGENTS.md MEMORY.md; do [ -f "$f" ] && head -c "$1" -- "$f"; printf '\0'; done"#;
        let out = ws
            .exec(ExecSpec {
                cmd: ["sh", "-c", script, "sh", &limit].iter().map(|s| s.to_string()).collect(),
                stdin: Vec::new(),
                timeout: std::time::Duration::from_secs(10),
            })
            .await?;
        let mut parts = out.stdout.split(|b| *b == 0).map(|p| String::from_utf8_lossy(p).into_owned());
        let mut next = |name: &str| parts.next().filter(|t| !t.trim().is_empty()).map(|t| budget(name, t));
        let agents_md = next("AGENTS.md");
        let memory_md = next("MEMORY.md");
        Ok(Self { agents_md, memory_md, skills })
    }
}

fn budget(name: &str, mut text: String) -> String {
    if text.len() > FILE_BUDGET {
        crate::truncate_utf8(&mut text, FILE_BUDGET);
        text.push_str(&format!("\n[{name} is longer than {FILE_BUDGET} bytes; the rest is not shown: read the file]"));
    }
    text
}

/// The system prompt of a model call.
pub fn system_prompt(base: &str, ctx: &Context, summary: Option<&str>) -> String {
    let mut s = String::from(base.trim());
    s.push_str(
        "\n\nYou work in a sandbox. /workspace is your persistent directory: files there are kept between \
         sessions; everything else is discarded when the sandbox is released.",
    );
    if let Some(a) = &ctx.agents_md {
        s.push_str("\n\n# AGENTS.md (from /workspace)\n");
        s.push_str(a);
    }
    if let Some(m) = &ctx.memory_md {
        s.push_str("\n\n# MEMORY.md (your memory; use the `memory` tool to add to it)\n");
        s.push_str(m);
    }
    if !ctx.skills.is_empty() {
        s.push_str(
            "\n\n# Skills\nEach skill is a folder at /skills/<name> (read-only); read its SKILL.md before using it.\n",
        );
        for (name, description) in &ctx.skills {
            s.push_str(&format!("- {name}: {description}\n"));
        }
    }
    if let Some(summary) = summary {
        s.push_str("\n\n# Summary of the earlier conversation\n");
        s.push_str(summary);
    }
    s
}

/// A rough token count (4 bytes per token), enough to decide on compaction.
pub fn estimate_tokens(system: &str, msgs: &[Msg]) -> u64 {
    let body: usize = msgs
        .iter()
        .map(|m| match m {
            Msg::User(t) => t.len(),
            Msg::Assistant { text, calls } => {
                text.len() + calls.iter().map(|c| c.arguments.len() + c.name.len()).sum::<usize>()
            }
            Msg::ToolResult { content, .. } => content.len(),
        })
        .sum();
    ((system.len() + body) / 4) as u64
}

/// The instruction for a compaction call.
pub const COMPACT_PROMPT: &str = "Summarise the conversation so far for your own later use: the user's goals, \
    decisions made, files created or changed, facts learned, and what is still open. Be concise and specific; \
    keep paths, names and numbers exactly.";
