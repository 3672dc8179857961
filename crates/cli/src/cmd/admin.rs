//! `reins key …`, `reins tenant …`, `reins node token|ls`.

use anyhow::Result;
use clap::Subcommand;
use reins_api::v1::{CreateKey, CreateTenant, CreatedKey, JoinToken, Key, List, Node, Tenant};
use reqwest::Method;

use crate::client::Client;
use crate::cmd::table::{json_out, print_table, when};

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create an API key; its secret is printed once.
    Create {
        name: String,
        /// For another tenant (admin keys only).
        #[arg(long)]
        tenant: Option<String>,
        /// An admin key (admin keys only).
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        json: bool,
    },
    /// List keys.
    Ls {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key.
    Rm {
        id: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Create a tenant (admin).
    Create {
        name: String,
        /// Concurrent sandboxes allowed.
        #[arg(long)]
        max_sandboxes: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// List tenants (admin).
    Ls {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeAdminCmd {
    /// Create a one-time join token for `reins node --join URL --token TOKEN`.
    Token,
    /// List nodes.
    Ls {
        #[arg(long)]
        json: bool,
    },
}

pub async fn key(cmd: KeyCmd) -> Result<u8> {
    let c = Client::from_env()?;
    match cmd {
        KeyCmd::Create { name, tenant, admin, json } => {
            let k: CreatedKey =
                c.json(c.request(Method::POST, "/v1/keys").json(&CreateKey { name, tenant_id: tenant, admin })).await?;
            if json {
                json_out(&k)?;
            } else {
                println!("{}", k.secret);
                eprintln!("key {} created; the secret above is shown only once", k.key.id);
            }
        }
        KeyCmd::Ls { tenant, json } => {
            let mut req = c.request(Method::GET, "/v1/keys");
            if let Some(t) = &tenant {
                req = req.query(&[("tenant_id", t)]);
            }
            let keys: List<Key> = c.json(req).await?;
            if json {
                return json_out(&keys.items).map(|()| 0);
            }
            let rows = keys
                .items
                .into_iter()
                .map(|k| {
                    let state = if k.revoked_ms.is_some() { "revoked" } else { "active" };
                    vec![k.id, k.name, format!("{}…", k.prefix), k.admin.to_string(), state.into(), when(k.created_ms)]
                })
                .collect();
            print_table(&["ID", "NAME", "PREFIX", "ADMIN", "STATE", "CREATED"], rows);
        }
        KeyCmd::Rm { id, tenant } => {
            let mut req = c.request(Method::DELETE, &format!("/v1/keys/{id}"));
            if let Some(t) = &tenant {
                req = req.query(&[("tenant_id", t)]);
            }
            c.send(req).await?;
            println!("{id} revoked");
        }
    }
    Ok(0)
}

pub async fn tenant(cmd: TenantCmd) -> Result<u8> {
    let c = Client::from_env()?;
    match cmd {
        TenantCmd::Create { name, max_sandboxes, json } => {
            let t: Tenant =
                c.json(c.request(Method::POST, "/v1/tenants").json(&CreateTenant { name, max_sandboxes })).await?;
            if json {
                json_out(&t)?;
            } else {
                println!("{}", t.id);
            }
        }
        TenantCmd::Ls { json } => {
            let list: List<Tenant> = c.json(c.request(Method::GET, "/v1/tenants")).await?;
            if json {
                return json_out(&list.items).map(|()| 0);
            }
            let rows = list
                .items
                .into_iter()
                .map(|t| vec![t.id, t.name, format!("{}/{}", t.active, t.max_sandboxes), when(t.created_ms)])
                .collect();
            print_table(&["ID", "NAME", "SANDBOXES", "CREATED"], rows);
        }
    }
    Ok(0)
}

pub async fn node(cmd: NodeAdminCmd) -> Result<u8> {
    let c = Client::from_env()?;
    match cmd {
        NodeAdminCmd::Token => {
            let t: JoinToken = c.json(c.request(Method::POST, "/v1/nodes/tokens")).await?;
            println!("{}", t.token);
            eprintln!("valid once, for {} s: reins node --join {} --token {}", t.ttl_secs, c.base, t.token);
        }
        NodeAdminCmd::Ls { json } => {
            let list: List<Node> = c.json(c.request(Method::GET, "/v1/nodes")).await?;
            if json {
                return json_out(&list.items).map(|()| 0);
            }
            let rows =
                list.items.into_iter().map(|n| vec![n.id, n.name, n.connected.to_string(), when(n.seen_ms)]).collect();
            print_table(&["ID", "NAME", "CONNECTED", "SEEN"], rows);
        }
    }
    Ok(0)
}
