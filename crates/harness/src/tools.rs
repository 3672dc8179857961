//! The tools an agent calls, run inside its session's sandbox through one
//! primitive, [`Workspace::exec`]. Arguments from the model are never
//! pasted into shell code: they travel as positional parameters or stdin.

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::event::Outcome;
use crate::model::ToolSchema;

/// Where relative paths start, the agent's volume.
pub const WORKSPACE: &str = "/workspace";
/// The agent's memory file.
pub const MEMORY_FILE: &str = "/workspace/MEMORY.md";
/// Most bytes of a tool's output shown to the model.
pub const MAX_OUTPUT: usize = 16 * 1024;
/// Largest file `read_file` and `edit_file` handle.
const MAX_FILE: usize = 4 << 20;

/// A command to run in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    pub stdin: Vec<u8>,
    pub timeout: Duration,
}

/// What a command gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOut {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
    pub timed_out: bool,
}

/// The session's sandbox, as the tools see it.
pub trait Workspace: Send + Sync {
    /// Runs `spec` in `/workspace`; `Err` when the sandbox could not run it at all.
    fn exec(&self, spec: ExecSpec) -> impl Future<Output = Result<ExecOut, String>> + Send;
}

/// Every tool's name, in the order the model is shown them.
pub const ALL: [&str; 8] =
    ["shell", "read_file", "write_file", "edit_file", "list_files", "search", "web_fetch", "memory"];

/// A tool call's arguments, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shell {
    pub command: String,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFile {
    pub path: String,
    #[serde(default)]
    pub start_line: Option<usize>,
    #[serde(default)]
    pub end_line: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFile {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditFile {
    pub path: String,
    pub old_string: String,
    pub new_string: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListFiles {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub depth: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    pub pattern: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub glob: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebFetch {
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// `read` or `append`.
    pub action: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// A parsed tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    Shell(Shell),
    ReadFile(ReadFile),
    WriteFile(WriteFile),
    EditFile(EditFile),
    ListFiles(ListFiles),
    Search(Search),
    WebFetch(WebFetch),
    Memory(Memory),
}

impl Tool {
    /// Parses a call's arguments; the error is what the model is told.
    pub fn parse(name: &str, arguments: &str) -> Result<Self, String> {
        let args = if arguments.trim().is_empty() { "{}" } else { arguments };
        let v: Value =
            serde_json::from_str(args).map_err(|e| format!("the arguments of `{name}` are not valid JSON: {e}"))?;
        fn typed<T: serde::de::DeserializeOwned>(name: &str, v: Value) -> Result<T, String> {
            serde_json::from_value(v).map_err(|e| format!("invalid arguments for `{name}`: {e}"))
        }
        let tool = match name {
            "shell" => Self::Shell(typed(name, v)?),
            "read_file" => Self::ReadFile(typed(name, v)?),
            "write_file" => Self::WriteFile(typed(name, v)?),
            "edit_file" => Self::EditFile(typed(name, v)?),
            "list_files" => Self::ListFiles(typed(name, v)?),
            "search" => Self::Search(typed(name, v)?),
            "web_fetch" => Self::WebFetch(typed(name, v)?),
            "memory" => Self::Memory(typed(name, v)?),
            _ => return Err(format!("unknown tool `{name}`; the tools are: {}", ALL.join(", "))),
        };
        tool.check()?;
        Ok(tool)
    }

    fn check(&self) -> Result<(), String> {
        let paths: Vec<&str> = match self {
            Self::ReadFile(a) => vec![&a.path],
            Self::WriteFile(a) => vec![&a.path],
            Self::EditFile(a) => vec![&a.path],
            Self::ListFiles(a) => a.path.iter().map(String::as_str).collect(),
            Self::Search(a) => a.path.iter().map(String::as_str).collect(),
            _ => vec![],
        };
        if paths.iter().any(|p| p.is_empty() || p.contains('\0')) {
            return Err("a path must be non-empty and without NUL".into());
        }
        match self {
            Self::Shell(a) if a.command.trim().is_empty() => Err("`command` is empty".into()),
            Self::Shell(Shell { timeout_secs: Some(t), .. }) if !(1..=1800).contains(t) => {
                Err("`timeout_secs` must be between 1 and 1800".into())
            }
            Self::EditFile(a) if a.old_string.is_empty() => Err("`old_string` is empty".into()),
            Self::Search(a) if a.pattern.is_empty() => Err("`pattern` is empty".into()),
            Self::ListFiles(ListFiles { depth: Some(d), .. }) if !(1..=10).contains(d) => {
                Err("`depth` must be between 1 and 10".into())
            }
            Self::WebFetch(a) if !(a.url.starts_with("http://") || a.url.starts_with("https://")) => {
                Err("`url` must start with http:// or https://".into())
            }
            Self::Memory(a) if a.action != "read" && a.action != "append" => {
                Err("`action` is `read` or `append`".into())
            }
            Self::Memory(Memory { action, text: None }) if action == "append" => Err("`append` needs `text`".into()),
            _ => Ok(()),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Shell(_) => "shell",
            Self::ReadFile(_) => "read_file",
            Self::WriteFile(_) => "write_file",
            Self::EditFile(_) => "edit_file",
            Self::ListFiles(_) => "list_files",
            Self::Search(_) => "search",
            Self::WebFetch(_) => "web_fetch",
            Self::Memory(_) => "memory",
        }
    }

    /// True when running it twice could differ from running it once: such a
    /// call interrupted after its intent is not run again.
    pub fn mutating(&self) -> bool {
        match self {
            Self::Shell(_) | Self::WriteFile(_) | Self::EditFile(_) => true,
            Self::Memory(m) => m.action == "append",
            _ => false,
        }
    }

    /// What an approver is shown, and what `shell` rules match: the exact command.
    pub fn command(&self) -> String {
        match self {
            Self::Shell(a) => a.command.clone(),
            Self::WriteFile(a) => format!("write_file {} ({} bytes)", a.path, a.content.len()),
            Self::EditFile(a) => format!("edit_file {}", a.path),
            Self::ReadFile(a) => format!("read_file {}", a.path),
            Self::ListFiles(a) => format!("list_files {}", a.path.as_deref().unwrap_or(".")),
            Self::Search(a) => format!("search {:?} in {}", a.pattern, a.path.as_deref().unwrap_or(".")),
            Self::WebFetch(a) => format!("web_fetch {}", a.url),
            Self::Memory(a) => format!("memory {}", a.action),
        }
    }

    /// Runs the call; the text is what the model sees.
    pub async fn run(&self, ws: &impl Workspace) -> (Outcome, String) {
        match self.run_inner(ws).await {
            Ok(text) => (Outcome::Ok, clip(&text)),
            Err(text) => (Outcome::Error, clip(&text)),
        }
    }

    async fn run_inner(&self, ws: &impl Workspace) -> Result<String, String> {
        match self {
            Self::Shell(a) => {
                let timeout = Duration::from_secs(a.timeout_secs.unwrap_or(120));
                let out = exec(ws, vec!["bash".into(), "-c".into(), a.command.clone()], Vec::new(), timeout).await?;
                Ok(shell_text(&out, timeout))
            }
            Self::ReadFile(a) => read_file(ws, a).await,
            Self::WriteFile(a) => {
                let p = resolve(&a.path);
                sh(ws, r#"mkdir -p -- "$(dirname -- "$1")" && cat > "$1""#, &[&p], a.content.as_bytes().to_vec())
                    .await?;
                Ok(format!("wrote {} bytes to {p}", a.content.len()))
            }
            Self::EditFile(a) => edit_file(ws, a).await,
            Self::ListFiles(a) => {
                let p = resolve(a.path.as_deref().unwrap_or("."));
                let depth = a.depth.unwrap_or(2).to_string();
                let script = r#"cd -- "$1" && find . -mindepth 1 -maxdepth "$2" -printf '%y %8s %P\n' | sort -k3 | head -n 1000"#;
                let out = sh(ws, script, &[&p, &depth], Vec::new()).await?;
                Ok(if out.is_empty() { format!("{p} is empty") } else { format!("{p} (type, size, path):\n{out}") })
            }
            Self::Search(a) => {
                let p = resolve(a.path.as_deref().unwrap_or("."));
                let glob = a.glob.clone().unwrap_or_else(|| "*".into());
                let script = r#"grep -rnEI --max-count=50 --include="$3" -e "$1" -- "$2"; s=$?; [ $s -le 1 ] && exit 0; exit $s"#;
                let out = sh(ws, script, &[&a.pattern, &p, &glob], Vec::new()).await?;
                Ok(if out.is_empty() { format!("no match for {:?} in {p}", a.pattern) } else { out })
            }
            Self::WebFetch(a) => {
                let cmd = [
                    "curl",
                    "-sS",
                    "-L",
                    "--max-time",
                    "30",
                    "--max-filesize",
                    "4000000",
                    "-w",
                    "\n[HTTP %{http_code}]",
                    "--",
                    &a.url,
                ];
                let out =
                    exec(ws, cmd.iter().map(|s| s.to_string()).collect(), Vec::new(), Duration::from_secs(40)).await?;
                if out.exit_code != 0 {
                    return Err(format!("fetching {} failed: {}", a.url, String::from_utf8_lossy(&out.stderr).trim()));
                }
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
            Self::Memory(m) if m.action == "append" => {
                let text = m.text.clone().unwrap_or_default();
                sh(ws, r#"printf '%s\n' "$1" >> "$2""#, &[&text, MEMORY_FILE], Vec::new()).await?;
                Ok(format!("appended {} bytes to MEMORY.md", text.len() + 1))
            }
            Self::Memory(_) => {
                let out = sh(ws, r#"[ -f "$1" ] && cat -- "$1"; true"#, &[MEMORY_FILE], Vec::new()).await?;
                Ok(if out.is_empty() { "MEMORY.md is empty".into() } else { out })
            }
        }
    }
}

/// A path as the sandbox sees it: relative ones start at `/workspace`.
pub fn resolve(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else if path == "." {
        WORKSPACE.to_owned()
    } else {
        format!("{WORKSPACE}/{}", path.trim_start_matches("./"))
    }
}

async fn exec(ws: &impl Workspace, cmd: Vec<String>, stdin: Vec<u8>, timeout: Duration) -> Result<ExecOut, String> {
    ws.exec(ExecSpec { cmd, stdin, timeout }).await.map_err(|e| format!("the sandbox could not run the tool: {e}"))
}

/// Runs a fixed script with `args` as `$1…`; its stdout, or its stderr as the error.
async fn sh(ws: &impl Workspace, script: &str, args: &[&str], stdin: Vec<u8>) -> Result<String, String> {
    let mut cmd = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned(), "sh".to_owned()];
    cmd.extend(args.iter().map(|a| a.to_string()));
    let out = exec(ws, cmd, stdin, Duration::from_secs(60)).await?;
    if out.exit_code != 0 || out.timed_out {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(if err.trim().is_empty() {
            format!("failed with exit code {}", out.exit_code)
        } else {
            err.trim().to_owned()
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn shell_text(out: &ExecOut, timeout: Duration) -> String {
    let mut s = String::new();
    if out.timed_out {
        s.push_str(&format!("[timed out after {} s and was killed]\n", timeout.as_secs()));
    }
    s.push_str(&format!("exit code: {}\n", out.exit_code));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !stdout.is_empty() {
        s.push_str("stdout:\n");
        s.push_str(&stdout);
        if !stdout.ends_with('\n') {
            s.push('\n');
        }
    }
    if !stderr.is_empty() {
        s.push_str("stderr:\n");
        s.push_str(&stderr);
    }
    s
}

async fn read_whole(ws: &impl Workspace, path: &str) -> Result<String, String> {
    let limit = (MAX_FILE + 1).to_string();
    let text = sh(ws, r#"exec head -c "$2" -- "$1""#, &[path, &limit], Vec::new()).await?;
    if text.len() > MAX_FILE {
        return Err(format!("{path} is larger than {MAX_FILE} bytes; use shell tools such as sed or grep on it"));
    }
    Ok(text)
}

async fn read_file(ws: &impl Workspace, a: &ReadFile) -> Result<String, String> {
    let p = resolve(&a.path);
    let text = read_whole(ws, &p).await?;
    if a.start_line.is_none() && a.end_line.is_none() {
        return Ok(text);
    }
    let lines: Vec<&str> = text.lines().collect();
    let start = a.start_line.unwrap_or(1).max(1);
    let end = a.end_line.unwrap_or(lines.len()).min(lines.len());
    if start > end {
        return Ok(format!("{p} has {} lines; nothing in {start}..{end}", lines.len()));
    }
    let body: Vec<String> = lines[start - 1..end].iter().map(|l| (*l).to_owned()).collect();
    Ok(format!("[{p}: lines {start}-{end} of {}]\n{}\n", lines.len(), body.join("\n")))
}

async fn edit_file(ws: &impl Workspace, a: &EditFile) -> Result<String, String> {
    let p = resolve(&a.path);
    let text = read_whole(ws, &p).await?;
    match text.matches(a.old_string.as_str()).count() {
        0 => return Err(format!("`old_string` was not found in {p}; read the file and copy the text exactly")),
        1 => {}
        n => return Err(format!("`old_string` occurs {n} times in {p}; add surrounding text so that it is unique")),
    }
    let new = text.replacen(a.old_string.as_str(), &a.new_string, 1);
    sh(ws, r#"cat > "$1""#, &[&p], new.into_bytes()).await?;
    Ok(format!("replaced 1 occurrence in {p}"))
}

/// Keeps at most [`MAX_OUTPUT`] bytes, the head and the tail, saying what was cut.
pub fn clip(text: &str) -> String {
    if text.len() <= MAX_OUTPUT {
        return text.to_owned();
    }
    let half = MAX_OUTPUT / 2;
    let head = &text[..floor(text, half)];
    let tail = &text[floor(text, text.len() - half)..];
    let cut = text.len() - head.len() - tail.len();
    format!(
        "{head}\n[output truncated: {} bytes in all; {cut} bytes cut from the middle. Narrow the command \
         (grep, head, tail, sed -n) to see the rest]\n{tail}",
        text.len()
    )
}

fn floor(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The schemas of the enabled tools.
pub fn schemas(enabled: &[String]) -> Vec<ToolSchema> {
    all_schemas().into_iter().filter(|s| enabled.iter().any(|e| e == s.name)).collect()
}

fn all_schemas() -> Vec<ToolSchema> {
    let path = json!({"type": "string", "description": "A path; relative paths start at /workspace"});
    vec![
        ToolSchema {
            name: "shell",
            description: "Run a bash command in /workspace. Output over 16 KiB is cut in the middle.",
            parameters: json!({"type": "object", "properties": {
                "command": {"type": "string"},
                "timeout_secs": {"type": "integer", "minimum": 1, "maximum": 1800, "description": "Default 120"}},
                "required": ["command"], "additionalProperties": false}),
        },
        ToolSchema {
            name: "read_file",
            description: "Read a text file, optionally lines start_line..end_line (1-based, inclusive).",
            parameters: json!({"type": "object", "properties": {"path": path,
                "start_line": {"type": "integer", "minimum": 1}, "end_line": {"type": "integer", "minimum": 1}},
                "required": ["path"], "additionalProperties": false}),
        },
        ToolSchema {
            name: "write_file",
            description: "Create or replace a file with the given content (directories are made).",
            parameters: json!({"type": "object", "properties": {"path": path, "content": {"type": "string"}},
                "required": ["path", "content"], "additionalProperties": false}),
        },
        ToolSchema {
            name: "edit_file",
            description: "Replace old_string by new_string in a file; old_string must occur exactly once.",
            parameters: json!({"type": "object", "properties": {"path": path,
                "old_string": {"type": "string"}, "new_string": {"type": "string"}},
                "required": ["path", "old_string", "new_string"], "additionalProperties": false}),
        },
        ToolSchema {
            name: "list_files",
            description: "List files and directories under a path (default /workspace, depth 2).",
            parameters: json!({"type": "object", "properties": {"path": path,
                "depth": {"type": "integer", "minimum": 1, "maximum": 10}}, "additionalProperties": false}),
        },
        ToolSchema {
            name: "search",
            description: "Search files for an extended regular expression; glob filters file names (such as *.rs).",
            parameters: json!({"type": "object", "properties": {"pattern": {"type": "string"}, "path": path,
                "glob": {"type": "string"}}, "required": ["pattern"], "additionalProperties": false}),
        },
        ToolSchema {
            name: "web_fetch",
            description: "Fetch a URL (GET) through the sandbox's network policy.",
            parameters: json!({"type": "object", "properties": {"url": {"type": "string"}},
                "required": ["url"], "additionalProperties": false}),
        },
        ToolSchema {
            name: "memory",
            description: "Read your MEMORY.md, or append a line to it; it is kept across sessions.",
            parameters: json!({"type": "object", "properties": {"action": {"type": "string", "enum": ["read", "append"]},
                "text": {"type": "string"}}, "required": ["action"], "additionalProperties": false}),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked_with_messages_for_the_model() {
        assert!(matches!(Tool::parse("shell", r#"{"command":"ls"}"#), Ok(Tool::Shell(_))));
        let cases = [
            ("shell", "{not json", "not valid JSON"),
            ("shell", r#"{"command": 5}"#, "invalid type"),
            ("shell", r#"{"command":"ls","x":1}"#, "unknown field"),
            ("shell", r#"{"command":"  "}"#, "empty"),
            ("nope", "{}", "unknown tool `nope`"),
            ("edit_file", r#"{"path":"a","old_string":"","new_string":"b"}"#, "empty"),
            ("web_fetch", r#"{"url":"file:///etc/passwd"}"#, "http"),
            ("read_file", r#"{"path":"a\u0000b"}"#, "NUL"),
        ];
        for (name, args, want) in cases {
            let err = Tool::parse(name, args).expect_err(args);
            assert!(err.contains(want), "{name} {args}: {err}");
        }
    }

    #[test]
    fn mutating_tools_are_the_ones_with_side_effects() {
        let m = |n: &str, a: &str| Tool::parse(n, a).expect("parse").mutating();
        assert!(m("shell", r#"{"command":"ls"}"#));
        assert!(m("write_file", r#"{"path":"a","content":""}"#));
        assert!(m("edit_file", r#"{"path":"a","old_string":"x","new_string":"y"}"#));
        assert!(m("memory", r#"{"action":"append","text":"t"}"#));
        assert!(!m("read_file", r#"{"path":"a"}"#));
        assert!(!m("memory", r#"{"action":"read"}"#));
        assert!(!m("search", r#"{"pattern":"x"}"#));
    }

    #[test]
    fn clipping_keeps_head_and_tail_and_says_so() {
        let text = "é".repeat(MAX_OUTPUT);
        let c = clip(&text);
        assert!(c.len() < MAX_OUTPUT + 300);
        assert!(c.contains(&format!("{} bytes in all", text.len())));
        assert_eq!(clip("short"), "short");
        assert_eq!(resolve("a/b"), "/workspace/a/b");
        assert_eq!(resolve("/etc"), "/etc");
    }
}
