//! Network policies on the command line: `--network/--allow/--deny/--secret`
//! at create, `reins sandbox network`, `reins sandbox logs --network`, and
//! `reins secret set|ls|rm`.

use std::io::{IsTerminal, Read};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use reins_api::v1::{List, Network, NetworkEvent, PutSecret, Sandbox, Secret};
use reqwest::Method;

use crate::client::Client;
use crate::cmd::table::{json_out, print_table, when};

/// A network policy from flags.
#[derive(Debug, Args, Default, Clone)]
pub struct NetworkArgs {
    /// `none` (loopback only), `allowlist` or `open`. `allowlist` when --allow is given.
    #[arg(long = "network", value_name = "MODE", value_parser = ["none", "allowlist", "open"])]
    pub mode: Option<String>,
    /// A rule to allow, HOST or HOST:PORTS: `api.openai.com`, `*.pypi.org:443`, `10.0.0.0/8:5432` (repeatable).
    #[arg(long = "allow", value_name = "RULE")]
    pub allow: Vec<String>,
    /// A rule to deny, HOST or HOST:PORTS; deny wins (repeatable).
    #[arg(long = "deny", value_name = "RULE")]
    pub deny: Vec<String>,
    /// A secret (from `reins secret set`) the proxy adds for its hosts (repeatable).
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    /// Also give the sandbox a network interface with a route out, for programs
    /// that cannot use a proxy; the host lets through only the IP/CIDR rules.
    #[arg(long)]
    pub direct: bool,
}

impl NetworkArgs {
    fn given(&self) -> bool {
        self.mode.is_some()
            || !self.allow.is_empty()
            || !self.deny.is_empty()
            || !self.secrets.is_empty()
            || self.direct
    }

    /// The policy, or `None` when no flag was given.
    pub fn policy(&self) -> Option<Network> {
        self.given().then(|| Network {
            mode: self.mode.clone().unwrap_or_else(|| if self.allow.is_empty() { "none" } else { "allowlist" }.into()),
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            secrets: self.secrets.clone(),
            direct: self.direct,
        })
    }
}

fn show_policy(n: &Network) {
    println!("mode:    {}", n.mode);
    if n.direct {
        println!("direct:  eth0, IP/CIDR rules only");
    }
    for (label, items) in [("allow:", &n.allow), ("deny:", &n.deny), ("secrets:", &n.secrets)] {
        if !items.is_empty() {
            println!("{label:<8} {}", items.join(" "));
        }
    }
}

/// `reins sandbox network ID [flags]`: shows the policy, or replaces it.
pub async fn network(c: &Client, id: &str, args: &NetworkArgs, json: bool) -> Result<()> {
    let policy = match args.policy() {
        Some(p) => c.json(c.request(Method::PUT, &format!("/v1/sandboxes/{id}/network")).json(&p)).await?,
        None => c.json::<Sandbox>(c.request(Method::GET, &format!("/v1/sandboxes/{id}"))).await?.network,
    };
    if json {
        json_out(&policy)?;
    } else {
        show_policy(&policy);
    }
    Ok(())
}

/// `reins sandbox logs ID --network`.
pub async fn logs(c: &Client, id: &str, json: bool) -> Result<()> {
    let list: List<NetworkEvent> = c.json(c.request(Method::GET, &format!("/v1/sandboxes/{id}/network/log"))).await?;
    if json {
        return json_out(&list.items);
    }
    let rows = list
        .items
        .iter()
        .map(|e| {
            vec![
                when(e.at_ms),
                e.protocol.clone(),
                format!("{}:{}", e.host, e.port),
                if e.allowed { "allowed".into() } else { "denied".into() },
                format!("{}/{}", e.bytes_up, e.bytes_down),
                format!("{}ms", e.duration_ms),
                e.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["WHEN", "PROTO", "DESTINATION", "DECISION", "UP/DOWN", "TIME", "REASON"], rows);
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Store a secret (the value is read from stdin, or from --from-env).
    Set {
        name: String,
        /// Domain rules of the hosts it is sent to (repeatable; at least one).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Header it goes in.
        #[arg(long, default_value = "Authorization")]
        header: String,
        /// Header value, with `{secret}` where the value goes.
        #[arg(long, default_value = "Bearer {secret}")]
        format: String,
        /// Read the value from this environment variable instead of stdin.
        #[arg(long, value_name = "VAR")]
        from_env: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List secrets (never their values).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Delete a secret.
    Rm { name: String },
}

fn read_value(from_env: Option<&str>) -> Result<String> {
    if let Some(var) = from_env {
        return std::env::var(var).with_context(|| format!("the environment variable {var} is not set"));
    }
    if std::io::stdin().is_terminal() {
        eprintln!("value (end with Ctrl-D):");
    }
    let mut v = String::new();
    std::io::stdin().read_to_string(&mut v).context("reading the value from stdin")?;
    let v = v.trim_end_matches(['\n', '\r']).to_owned();
    if v.is_empty() {
        bail!("the value is empty: pipe it in (echo \"$KEY\" | reins secret set …) or use --from-env VAR");
    }
    Ok(v)
}

pub async fn secret(cmd: SecretCmd) -> Result<u8> {
    let c = Client::from_env()?;
    match cmd {
        SecretCmd::Set { name, hosts, header, format, from_env, json } => {
            let body = PutSecret {
                value: read_value(from_env.as_deref())?,
                hosts,
                header: Some(header),
                format: Some(format),
            };
            let s: Secret = c.json(c.request(Method::PUT, &format!("/v1/secrets/{name}")).json(&body)).await?;
            if json {
                json_out(&s)?;
            } else {
                println!("{} → {} ({})", s.name, s.hosts.join(" "), s.header);
            }
        }
        SecretCmd::Ls { json } => {
            let list: List<Secret> = c.json(c.request(Method::GET, "/v1/secrets")).await?;
            if json {
                json_out(&list.items)?;
            } else {
                let rows = list
                    .items
                    .iter()
                    .map(|s| vec![s.name.clone(), s.hosts.join(" "), s.header.clone(), when(s.updated_ms)])
                    .collect();
                print_table(&["NAME", "HOSTS", "HEADER", "UPDATED"], rows);
            }
        }
        SecretCmd::Rm { name } => {
            c.send(c.request(Method::DELETE, &format!("/v1/secrets/{name}"))).await?;
            println!("{name}");
        }
    }
    Ok(0)
}
