//! Approval policy: for each tool `allow`, `ask` or `deny`, with glob rules
//! over the exact command (for `shell`, the command line). A matching `deny`
//! rule wins over `ask`, and `ask` over `allow`; without a match the tool's
//! default applies, and a tool without a policy is allowed.

use std::collections::BTreeMap;

use reins_api::agent::ToolPolicy;

use crate::tools::Tool;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Ask,
    Deny,
}

impl Decision {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Self::Allow),
            "ask" => Some(Self::Ask),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }
}

/// Checks a policy map: known tools, known actions, non-empty patterns.
pub fn validate(policies: &BTreeMap<String, ToolPolicy>) -> Result<(), String> {
    for (tool, p) in policies {
        if !crate::tools::ALL.contains(&tool.as_str()) {
            return Err(format!("approval policy for unknown tool `{tool}`"));
        }
        if Decision::parse(&p.default).is_none() {
            return Err(format!("approval default `{}` of `{tool}`: use allow, ask or deny", p.default));
        }
        for r in &p.rules {
            if Decision::parse(&r.action).is_none() {
                return Err(format!("approval rule action `{}` of `{tool}`: use allow, ask or deny", r.action));
            }
            if r.pattern.trim().is_empty() || r.pattern.len() > 1024 {
                return Err(format!("approval rule of `{tool}`: a pattern is 1 to 1024 characters"));
            }
        }
    }
    Ok(())
}

/// What the policy says about a call.
pub fn decide(policies: &BTreeMap<String, ToolPolicy>, tool: &Tool) -> Decision {
    let Some(p) = policies.get(tool.name()) else { return Decision::Allow };
    let command = tool.command();
    let command = command.trim();
    let matched: Vec<Decision> =
        p.rules.iter().filter(|r| glob(r.pattern.trim(), command)).filter_map(|r| Decision::parse(&r.action)).collect();
    for d in [Decision::Deny, Decision::Ask, Decision::Allow] {
        if matched.contains(&d) {
            return d;
        }
    }
    Decision::parse(&p.default).unwrap_or(Decision::Ask)
}

/// `*` matches any text (also none); everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use reins_api::agent::PolicyRule;

    fn rule(pattern: &str, action: &str) -> PolicyRule {
        PolicyRule { pattern: pattern.into(), action: action.into() }
    }

    fn shell(cmd: &str) -> Tool {
        Tool::parse("shell", &serde_json::json!({ "command": cmd }).to_string()).expect("shell")
    }

    #[test]
    fn deny_beats_ask_beats_allow_then_the_default() {
        let mut p = BTreeMap::new();
        p.insert(
            "shell".to_owned(),
            ToolPolicy {
                default: "ask".into(),
                rules: vec![
                    rule("git status*", "allow"),
                    rule("git push*", "ask"),
                    rule("rm -rf /*", "deny"),
                    rule("*", "allow"),
                ],
            },
        );
        validate(&p).expect("valid");
        assert_eq!(decide(&p, &shell("git status --short")), Decision::Allow);
        assert_eq!(decide(&p, &shell("git push origin main")), Decision::Ask);
        assert_eq!(decide(&p, &shell("rm -rf /")), Decision::Deny);
        assert_eq!(decide(&p, &shell("ls")), Decision::Allow, "the catch-all allow rule");
        p.get_mut("shell").expect("shell").rules.pop();
        assert_eq!(decide(&p, &shell("ls")), Decision::Ask, "the default");
        let read = Tool::parse("read_file", r#"{"path":"a"}"#).expect("read");
        assert_eq!(decide(&p, &read), Decision::Allow, "no policy");
        p.insert("nope".into(), ToolPolicy { default: "allow".into(), rules: vec![] });
        assert!(validate(&p).is_err());
    }

    #[test]
    fn globs() {
        assert!(glob("git status*", "git status"));
        assert!(glob("*push*", "git push -f"));
        assert!(glob("a*b*c", "abc"));
        assert!(!glob("a*b*c", "acb"));
        assert!(!glob("ab*ba", "aba"));
        assert!(glob("ls", "ls"));
        assert!(!glob("ls", "ls -l"));
    }

    proptest! {
        #[test]
        fn a_star_pattern_made_from_the_text_matches_it(text in ".{0,40}", a in 0usize..40, b in 0usize..40) {
            let chars: Vec<char> = text.chars().collect();
            let (a, b) = (a.min(chars.len()), b.min(chars.len()));
            let (lo, hi) = (a.min(b), a.max(b));
            let pattern: String = chars[..lo].iter().collect::<String>() + "*" + &chars[hi..].iter().collect::<String>();
            prop_assert!(glob(&pattern, &text));
        }
    }
}
