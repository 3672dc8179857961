//! Every repository, run against SQLite and PostgreSQL with the same
//! assertions. PostgreSQL comes from `REINS_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/test`); each test gets its
//! own schema, so runs never collide.

use std::collections::BTreeMap;
use std::future::Future;

use reins_store::{
    now_ms, sandbox_id, AppendEffects, EndReason, Error, NetLogRow, NewSandbox, Node, SandboxFilter, SandboxState,
    SecretRow, Store, DEFAULT_TENANT,
};

struct Db {
    store: Store,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("reins.db").display());
    Db { store: Store::connect(&url).await.expect("sqlite store"), _dir: Some(dir), schema: None }
}

fn pg_base() -> String {
    std::env::var("REINS_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn postgres() -> Db {
    let schema = format!("reins_t_{}", sandbox_id());
    let admin = Store::connect_raw(&pg_base()).await.expect("postgres at REINS_TEST_POSTGRES");
    admin.execute_raw(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
    admin.close().await;
    let url = format!("{}?options=-c%20search_path%3D{schema}", pg_base());
    Db { store: Store::connect(&url).await.expect("postgres store"), _dir: None, schema: Some(schema) }
}

impl Db {
    async fn finish(self) {
        self.store.close().await;
        if let Some(schema) = self.schema {
            let admin = Store::connect_raw(&pg_base()).await.expect("postgres");
            admin.execute_raw(&format!("DROP SCHEMA {schema} CASCADE")).await.expect("drop schema");
            admin.close().await;
        }
    }
}

/// Runs `body` on both engines.
async fn both<F, Fut>(body: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    for db in [sqlite().await, postgres().await] {
        body(db.store.clone()).await;
        db.finish().await;
    }
}

fn new_sandbox(tenant: &str, meta: &[(&str, &str)]) -> NewSandbox {
    NewSandbox {
        id: sandbox_id(),
        tenant_id: tenant.into(),
        node_id: "node_a".into(),
        template: "base".into(),
        spec: "{}".into(),
        network: "{}".into(),
        access: "{}".into(),
        metadata: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        timeout_ms: 60_000,
        idle_timeout_ms: None,
        snapshot_id: None,
    }
}

#[tokio::test]
async fn tenants_are_created_listed_and_unique() {
    both(|s| async move {
        let t = s.create_tenant("acme", Some(3)).await.expect("create");
        assert_eq!(s.tenant(&t.id).await.expect("get"), t);
        assert!(matches!(s.create_tenant("acme", None).await, Err(Error::Conflict(_))));
        let names: Vec<_> = s.tenants().await.expect("list").into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["default", "acme"]);
        assert!(matches!(s.tenant("tn_nope").await, Err(Error::NotFound)));
        s.set_tenant_quota(&t.id, 9).await.expect("quota");
        assert_eq!(s.tenant(&t.id).await.expect("get").max_sandboxes, 9);
    })
    .await;
}

#[tokio::test]
async fn keys_authenticate_until_revoked_and_stay_in_their_tenant() {
    both(|s| async move {
        let t = s.create_tenant("acme", None).await.expect("tenant");
        assert!(!s.has_admin_key().await.expect("admin?"));
        let (admin, admin_secret) = s.create_key(DEFAULT_TENANT, "admin", true).await.expect("admin key");
        assert!(s.has_admin_key().await.expect("admin?"));
        let (key, secret) = s.create_key(&t.id, "ci", false).await.expect("key");
        assert!(secret.starts_with(&key.prefix));
        let p = s.authenticate(&secret).await.expect("auth").expect("valid");
        assert_eq!((p.tenant_id.as_str(), p.admin), (t.id.as_str(), false));
        assert!(s.authenticate(&admin_secret).await.expect("auth").expect("valid").admin);
        assert_eq!(s.authenticate("reins_wrong").await.expect("auth"), None);
        // Another tenant cannot revoke it, and does not see it.
        assert!(matches!(s.revoke_key(DEFAULT_TENANT, &key.id).await, Err(Error::NotFound)));
        assert_eq!(s.keys(DEFAULT_TENANT).await.expect("keys"), vec![admin]);
        s.revoke_key(&t.id, &key.id).await.expect("revoke");
        assert_eq!(s.authenticate(&secret).await.expect("auth"), None);
        assert!(s.keys(&t.id).await.expect("keys")[0].revoked_ms.is_some());
        assert!(matches!(s.create_key("tn_nope", "x", false).await, Err(Error::NotFound)));
    })
    .await;
}

#[tokio::test]
async fn join_tokens_admit_one_node_once() {
    both(|s| async move {
        let token = s.create_join_token(60_000).await.expect("token");
        let node = Node {
            id: "node_a".into(),
            name: "a".into(),
            cert_sha256: "ab".repeat(32),
            joined_ms: now_ms(),
            seen_ms: now_ms(),
        };
        s.join_node(&token, &node).await.expect("join");
        let again = Node { id: "node_b".into(), cert_sha256: "cd".repeat(32), ..node.clone() };
        assert!(matches!(s.join_node(&token, &again).await, Err(Error::NotFound)), "token reused");
        let expired = s.create_join_token(-1).await.expect("token");
        assert!(matches!(s.join_node(&expired, &again).await, Err(Error::NotFound)), "expired token");
        assert_eq!(s.node_by_cert(&"ab".repeat(32)).await.expect("lookup"), Some(node.clone()));
        assert_eq!(s.node_by_cert(&"cd".repeat(32)).await.expect("lookup"), None);
        assert_eq!(s.nodes().await.expect("nodes").len(), 1);
        s.remove_node("node_a").await.expect("remove");
        assert_eq!(s.node_by_cert(&"ab".repeat(32)).await.expect("lookup"), None);
    })
    .await;
}

#[tokio::test]
async fn sandboxes_respect_quota_and_free_it_once() {
    both(|s| async move {
        let t = s.create_tenant("acme", Some(2)).await.expect("tenant");
        let a = s.insert_sandbox(&new_sandbox(&t.id, &[])).await.expect("a");
        s.insert_sandbox(&new_sandbox(&t.id, &[])).await.expect("b");
        assert!(matches!(s.insert_sandbox(&new_sandbox(&t.id, &[])).await, Err(Error::Quota { limit: 2 })));
        assert!(s.end_sandbox(&a.id, EndReason::Deleted).await.expect("end"));
        assert!(!s.end_sandbox(&a.id, EndReason::Deleted).await.expect("end twice"), "ended twice");
        assert_eq!(s.tenant(&t.id).await.expect("tenant").active, 1);
        s.insert_sandbox(&new_sandbox(&t.id, &[])).await.expect("c fits again");
        let ended = s.sandbox(&t.id, &a.id).await.expect("get");
        assert_eq!((ended.state, ended.end_reason.as_deref()), (SandboxState::Ended, Some("deleted")));
        assert!(matches!(s.insert_sandbox(&new_sandbox("tn_nope", &[])).await, Err(Error::NotFound)));
    })
    .await;
}

#[tokio::test]
async fn concurrent_creates_never_exceed_the_quota() {
    both(|s| async move {
        let t = s.create_tenant("acme", Some(5)).await.expect("tenant");
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (s, t) = (s.clone(), t.id.clone());
                tokio::spawn(async move { s.insert_sandbox(&new_sandbox(&t, &[])).await })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            match task.await.expect("join") {
                Ok(_) => ok += 1,
                Err(Error::Quota { .. }) => {}
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(ok, 5);
        assert_eq!(s.tenant(&t.id).await.expect("tenant").active, 5);
    })
    .await;
}

#[tokio::test]
async fn sandboxes_are_tenant_scoped_filtered_and_paged() {
    both(|s| async move {
        let t = s.create_tenant("acme", None).await.expect("tenant");
        let mut ids = Vec::new();
        for i in 0..7 {
            let env = if i % 2 == 0 { "prod" } else { "dev" };
            ids.push(
                s.insert_sandbox(&new_sandbox(&t.id, &[("env", env), ("n", &i.to_string())])).await.expect("ins").id,
            );
        }
        let other = s.insert_sandbox(&new_sandbox(DEFAULT_TENANT, &[("env", "prod")])).await.expect("other");
        assert!(matches!(s.sandbox(&t.id, &other.id).await, Err(Error::NotFound)), "cross-tenant get");
        assert!(matches!(s.end_sandbox("nope", EndReason::Deleted).await, Ok(false)));

        let mut seen = Vec::new();
        let mut filter = SandboxFilter { limit: 3, ..Default::default() };
        loop {
            let page = s.sandboxes(&t.id, &filter).await.expect("page");
            assert!(page.items.len() <= 3);
            seen.extend(page.items.into_iter().map(|r| r.id));
            match page.next {
                Some(next) => filter.cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 7);
        assert_eq!(seen.iter().collect::<std::collections::BTreeSet<_>>(), ids.iter().collect());

        let prod = SandboxFilter {
            metadata: BTreeMap::from([("env".into(), "prod".into())]),
            limit: 100,
            ..Default::default()
        };
        assert_eq!(s.sandboxes(&t.id, &prod).await.expect("prod").items.len(), 4);
        s.set_sandbox_state(&t.id, &ids[0], SandboxState::Paused).await.expect("pause");
        let paused = SandboxFilter { states: vec![SandboxState::Paused], limit: 100, ..Default::default() };
        let page = s.sandboxes(&t.id, &paused).await.expect("paused");
        assert_eq!(page.items.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![ids[0].clone()]);
        assert!(matches!(
            s.sandboxes(&t.id, &SandboxFilter { cursor: Some("!!".into()), ..Default::default() }).await,
            Err(Error::Conflict(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn expiry_state_and_purge() {
    both(|s| async move {
        let mut n = new_sandbox(DEFAULT_TENANT, &[("a", "b")]);
        n.timeout_ms = -1;
        let old = s.insert_sandbox(&n).await.expect("old");
        let young = s.insert_sandbox(&new_sandbox(DEFAULT_TENANT, &[])).await.expect("young");
        let expired: Vec<_> = s.expired_sandboxes(now_ms()).await.expect("expired").into_iter().map(|r| r.id).collect();
        assert_eq!(expired, vec![old.id.clone()]);
        s.set_sandbox_expiry(DEFAULT_TENANT, &old.id, now_ms() + 60_000).await.expect("extend");
        assert!(s.expired_sandboxes(now_ms()).await.expect("expired").is_empty());
        assert!(matches!(s.set_sandbox_expiry("tn_other", &old.id, 0).await, Err(Error::NotFound)));
        assert_eq!(s.node_sandboxes("node_a").await.expect("node").len(), 2);
        s.end_sandbox(&old.id, EndReason::Timeout).await.expect("end");
        assert!(matches!(
            s.set_sandbox_state(DEFAULT_TENANT, &old.id, SandboxState::Paused).await,
            Err(Error::NotFound)
        ));
        assert_eq!(s.sandbox_counts().await.expect("counts"), vec![("running".to_string(), 1)]);
        assert_eq!(s.purge_ended(now_ms() + 1).await.expect("purge"), 1);
        assert!(matches!(s.sandbox(DEFAULT_TENANT, &old.id).await, Err(Error::NotFound)));
        assert!(s.sandbox(DEFAULT_TENANT, &young.id).await.is_ok());
    })
    .await;
}

#[tokio::test]
async fn networks_change_and_secrets_stay_in_their_tenant() {
    both(|s| async move {
        let sb = s.insert_sandbox(&new_sandbox(DEFAULT_TENANT, &[])).await.expect("insert");
        assert_eq!(sb.network, "{}");
        s.set_sandbox_network(DEFAULT_TENANT, &sb.id, r#"{"mode":"open"}"#).await.expect("set");
        assert_eq!(s.sandbox(DEFAULT_TENANT, &sb.id).await.expect("get").network, r#"{"mode":"open"}"#);
        assert!(matches!(s.set_sandbox_network("tn_other", &sb.id, "{}").await, Err(Error::NotFound)));
        s.set_sandbox_access(DEFAULT_TENANT, &sb.id, r#"{"public":[80]}"#).await.expect("access");
        assert_eq!(s.live_sandbox(&sb.id).await.expect("live").access, r#"{"public":[80]}"#);
        assert!(matches!(s.set_sandbox_access("tn_other", &sb.id, "{}").await, Err(Error::NotFound)));
        s.end_sandbox(&sb.id, EndReason::Deleted).await.expect("end");
        assert!(matches!(s.live_sandbox(&sb.id).await, Err(Error::NotFound)));

        let other = s.create_tenant("other", None).await.expect("tenant");
        let row = |tenant: &str, sealed: &str| SecretRow {
            tenant_id: tenant.into(),
            name: "openai".into(),
            hosts: r#"["api.openai.com"]"#.into(),
            header_name: "Authorization".into(),
            header_format: "Bearer {secret}".into(),
            sealed: sealed.into(),
            created_ms: 0,
            updated_ms: 0,
        };
        let first = s.put_secret(&row(DEFAULT_TENANT, "v1")).await.expect("put");
        let again = s.put_secret(&row(DEFAULT_TENANT, "v2")).await.expect("replace");
        assert_eq!((again.sealed.as_str(), again.created_ms), ("v2", first.created_ms));
        s.put_secret(&row(&other.id, "theirs")).await.expect("other tenant's");
        assert_eq!(s.secrets(DEFAULT_TENANT).await.expect("list").len(), 1);
        assert_eq!(s.secret(&other.id, "openai").await.expect("theirs").sealed, "theirs");
        s.delete_secret(DEFAULT_TENANT, "openai").await.expect("delete");
        assert!(matches!(s.secret(DEFAULT_TENANT, "openai").await, Err(Error::NotFound)));
        assert!(matches!(s.delete_secret(DEFAULT_TENANT, "openai").await, Err(Error::NotFound)));
        assert_eq!(s.secret(&other.id, "openai").await.expect("still theirs").sealed, "theirs");

        let ev = |seq: i64, at_ms: i64| NetLogRow {
            node_id: "node_a".into(),
            boot: "b1".into(),
            seq,
            sandbox_id: sb.id.clone(),
            tenant_id: DEFAULT_TENANT.into(),
            at_ms,
            event: format!("{{\"seq\":{seq}}}"),
        };
        s.insert_network_events(&[ev(1, 10), ev(2, 20), ev(3, 30)]).await.expect("insert");
        s.insert_network_events(&[ev(3, 30), ev(4, 40)]).await.expect("a repeated event is skipped");
        let got: Vec<i64> =
            s.network_events(DEFAULT_TENANT, &sb.id, 3).await.expect("read").iter().map(|r| r.seq).collect();
        assert_eq!(got, vec![2, 3, 4], "the last three, oldest first");
        assert!(s.network_events(&other.id, &sb.id, 10).await.expect("other tenant").is_empty());
        assert_eq!(s.sandbox_tenant(&sb.id).await.expect("tenant").as_deref(), Some(DEFAULT_TENANT));
        assert_eq!(s.purge_network_events(25).await.expect("purge"), 2);
        assert_eq!(s.network_events(DEFAULT_TENANT, &sb.id, 10).await.expect("read").len(), 2);
    })
    .await;
}

#[tokio::test]
async fn session_appends_are_fenced_by_the_lease_epoch() {
    both(|s| async move {
        let agent = s.create_agent(DEFAULT_TENANT, "helper", "{}").await.expect("agent");
        assert!(matches!(s.create_agent(DEFAULT_TENANT, "helper", "{}").await, Err(Error::Conflict(_))));
        assert_eq!(s.agent(DEFAULT_TENANT, "helper").await.expect("by name").id, agent.id);
        assert!(matches!(s.agent("tn_other", &agent.id).await, Err(Error::NotFound)));
        let ses = s.create_session(DEFAULT_TENANT, &agent.id).await.expect("session");
        let first = s.acquire_lease(&ses.id, "w1", 60_000).await.expect("acquire").expect("free");
        assert_eq!(s.acquire_lease(&ses.id, "w2", 60_000).await.expect("acquire"), None, "held");
        let fx = AppendEffects { status: Some("running"), idempotency_key: Some("k1"), ..Default::default() };
        assert_eq!(s.append_event(&first, "message", "{}", fx).await.expect("append"), 1);
        let again = AppendEffects { idempotency_key: Some("k1"), ..Default::default() };
        assert!(matches!(s.append_event(&first, "message", "{}", again).await, Err(Error::Conflict(_))));
        assert_eq!(s.message_by_key(&ses.id, "k1").await.expect("key"), Some(1));
        let usage = AppendEffects { tokens: Some((10, 3)), ..Default::default() };
        assert_eq!(s.append_event(&first, "model_response", "{}", usage).await.expect("append"), 2);

        // The holder stalls; its lease expires and another worker takes over.
        s.renew_lease(&first, -1).await.expect("expire");
        assert_eq!(s.orphaned_sessions(10).await.expect("orphans"), vec![ses.id.clone()]);
        let second = s.acquire_lease(&ses.id, "w2", 60_000).await.expect("acquire").expect("expired");
        assert!(second.epoch > first.epoch);
        assert!(matches!(
            s.append_event(&first, "tool_intent", "{}", AppendEffects::default()).await,
            Err(Error::Fenced)
        ));
        assert!(matches!(s.renew_lease(&first, 60_000).await, Err(Error::Fenced)));
        assert!(matches!(s.release_lease(&first, "idle").await, Err(Error::Fenced)));
        assert_eq!(s.append_event(&second, "tool_intent", "{}", AppendEffects::default()).await.expect("append"), 3);
        s.release_lease(&second, "idle").await.expect("release");

        let log: Vec<(i64, String)> =
            s.events(&ses.id, 0, 100).await.expect("events").into_iter().map(|e| (e.seq, e.kind)).collect();
        assert_eq!(log, vec![(1, "message".into()), (2, "model_response".into()), (3, "tool_intent".into())]);
        assert_eq!(s.events(&ses.id, 2, 100).await.expect("after").len(), 1);
        let head = s.session(DEFAULT_TENANT, &ses.id).await.expect("head");
        assert_eq!((head.status.as_str(), head.tokens_in, head.tokens_out), ("idle", 10, 3));
        assert_eq!(s.agent(DEFAULT_TENANT, &agent.id).await.expect("agent").tokens_in, 10);
        assert!(matches!(s.session("tn_other", &ses.id).await, Err(Error::NotFound)));

        let v1 = s.put_skill(DEFAULT_TENANT, "pdf", "reads PDFs", "aa", 10).await.expect("skill");
        let v2 = s.put_skill(DEFAULT_TENANT, "pdf", "reads PDFs well", "bb", 11).await.expect("skill");
        assert_eq!((v1.version, v2.version), (1, 2));
        assert_eq!(s.skill(DEFAULT_TENANT, "pdf", None).await.expect("latest").sha256, "bb");
        assert_eq!(s.skill(DEFAULT_TENANT, "pdf", Some(1)).await.expect("v1").sha256, "aa");
        assert_eq!(s.skills(DEFAULT_TENANT).await.expect("list").len(), 1);
        assert_eq!(s.delete_skill(DEFAULT_TENANT, "pdf").await.expect("delete").len(), 2);

        s.delete_agent(DEFAULT_TENANT, &agent.id).await.expect("delete agent");
        assert!(matches!(s.session(DEFAULT_TENANT, &ses.id).await, Err(Error::NotFound)));
        assert!(s.events(&ses.id, 0, 10).await.expect("events").is_empty());
    })
    .await;
}

#[tokio::test]
async fn committed_data_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("reins.db").display());
    let s = Store::connect(&url).await.expect("store");
    let t = s.create_tenant("acme", None).await.expect("tenant");
    drop(s);
    let s = Store::connect(&url).await.expect("reopen");
    assert_eq!(s.tenant(&t.id).await.expect("tenant").name, "acme");
    assert!(Store::connect("mysql://x").await.is_err());
}

fn snapshot_row(tenant: &str, id: &str) -> reins_store::SnapshotRow {
    reins_store::SnapshotRow {
        id: id.into(),
        tenant_id: tenant.into(),
        node_id: "node_a".into(),
        sandbox_id: "sb".into(),
        template: "base".into(),
        spec: "{}".into(),
        bytes: 0,
        created_ms: now_ms(),
    }
}

#[tokio::test]
async fn snapshots_count_against_a_quota_and_stay_with_their_tenant() {
    both(|s| async move {
        let a = s.create_tenant("snap-a", None).await.expect("tenant");
        let b = s.create_tenant("snap-b", None).await.expect("tenant");
        for i in 0..100 {
            s.insert_snapshot(&snapshot_row(&a.id, &format!("snap_{i}"))).await.expect("under quota");
        }
        assert!(matches!(s.insert_snapshot(&snapshot_row(&a.id, "snap_x")).await, Err(Error::Quota { limit: 100 })));
        s.set_snapshot_bytes("snap_3", 42).await.expect("bytes");
        assert_eq!(s.snapshot(&a.id, "snap_3").await.expect("get").bytes, 42);
        assert!(matches!(s.snapshot(&b.id, "snap_3").await, Err(Error::NotFound)), "another tenant's");
        assert!(!s.delete_snapshot(&b.id, "snap_3").await.expect("delete"), "not b's to delete");
        assert!(s.delete_snapshot(&a.id, "snap_3").await.expect("delete"));
        assert_eq!(s.snapshots(&a.id).await.expect("list").len(), 99);
        // The quota came back.
        s.insert_snapshot(&snapshot_row(&a.id, "snap_y")).await.expect("room again");
    })
    .await;
}

#[tokio::test]
async fn pools_are_upserted_by_template_and_shape() {
    both(|s| async move {
        s.put_pool("base", "512m", "{}", 1, 4).await.expect("put");
        s.put_pool("base", "512m", "{}", 2, 8).await.expect("replace");
        s.put_pool("base", "1g", "{}", 0, 2).await.expect("second shape");
        let pools = s.pools().await.expect("list");
        assert_eq!(
            pools.iter().map(|p| (p.shape.as_str(), p.min, p.max)).collect::<Vec<_>>(),
            [("1g", 0, 2), ("512m", 2, 8)]
        );
        assert!(s.delete_pool("base", "1g").await.expect("delete"));
        assert!(!s.delete_pool("base", "1g").await.expect("again"));
        assert_eq!(s.pools().await.expect("list").len(), 1);
    })
    .await;
}
