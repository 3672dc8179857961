//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use reins_api::node::{JoinRequest, JoinResponse};
use reins_api::v1;
use reins_api::ErrorBody;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use reins_api::agent;

use crate::routes::{
    admin, agents, exec, exec_ws, files, network, pools, sandboxes, sessions, skills, snapshots, templates,
};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("A Reins API key")).build(),
            ),
        );
        components
            .add_security_scheme("x_api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
    }
}

/// The error answers any operation can give, each with an [`ErrorBody`]:
/// bad path, query or body (400, 413, 415, 422), a missing or invalid key
/// (401), another tenant's or a missing object (404), a node that cannot take
/// the request now (503); and the ones of their kind of operation.
struct ErrorResponses;

const ALWAYS: &[(&str, &str)] = &[
    ("400", "Invalid path, query or body"),
    ("401", "Missing, invalid or revoked API key"),
    ("404", "No such object (or another tenant's)"),
    ("405", "Method not allowed"),
    ("413", "Request body too large"),
    ("415", "Body is not JSON"),
    ("422", "Body has the wrong shape"),
    ("503", "No node can serve the request now; retry after `Retry-After` seconds"),
];

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = || {
            utoipa::openapi::ResponseBuilder::new().content(
                "application/json",
                utoipa::openapi::Content::new(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody"))),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let ops = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete];
            for op in ops.into_iter().flatten() {
                let mut extra: Vec<(&str, &str)> = ALWAYS.to_vec();
                if path.starts_with("/v1/sandboxes/") {
                    extra.push(("409", "The sandbox is paused, or the object exists"));
                    extra.push(("403", "Permission denied inside the sandbox"));
                }
                if !path.starts_with("/v1/sandboxes") {
                    extra.push(("403", "Needs an admin API key"));
                    extra.push(("409", "The object exists"));
                }
                if path.starts_with("/v1/sessions/") {
                    extra.push(("409", "A turn is running or waits for an approval"));
                }
                if path == "/v1/sandboxes" {
                    extra.push(("429", "Tenant quota reached; retry after `Retry-After` seconds"));
                }
                if path.contains("/files") {
                    extra.push(("507", "No space left in the sandbox"));
                }
                for (code, description) in extra {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error().description(description).build().into());
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Reins API", version = "1", description = "Sandboxes and durable agent sessions for AI agents: create sandboxes, run commands, move files; define agents and talk to them. Errors are `{code, message}`."),
    paths(
        sandboxes::create, sandboxes::list, sandboxes::get, sandboxes::delete, sandboxes::set_timeout,
        sandboxes::pause, sandboxes::resume, sandboxes::hibernate,
        snapshots::create, snapshots::fork, snapshots::list, snapshots::get, snapshots::delete,
        pools::put, pools::list, pools::delete,
        exec::exec, exec::stream, exec_ws::ws, exec::stdin, exec::signal, exec::resize,
        files::download, files::upload, files::list, files::stat, files::remove, files::mkdir, files::rename, files::watch,
        admin::create_tenant, admin::list_tenants, admin::create_key, admin::list_keys, admin::revoke_key,
        admin::create_join_token, admin::list_nodes, admin::join,
        templates::list_templates, templates::import_template, templates::delete_template,
        network::set, network::log, network::put_secret, network::list_secrets, network::delete_secret,
        crate::ingress::set_access,
        agents::create, agents::list, agents::get, agents::update, agents::delete, agents::create_session, agents::list_sessions,
        sessions::list, sessions::get, sessions::delete, sessions::post_message, sessions::events, sessions::stream,
        sessions::cancel, sessions::answer,
        skills::put, skills::list, skills::get, skills::delete,
    ),
    components(schemas(ErrorBody, v1::Sandbox, v1::SandboxState, v1::CreateSandbox, v1::SandboxList, v1::SetTimeout,
        v1::Exec, v1::ExecResult, v1::ExecEvent, v1::ExecSseEvent, v1::Stdin, v1::Signal, v1::PtySize, v1::WsControl, v1::FileEvent, v1::FileEventKind, v1::User, v1::FileEntry, v1::FileKind,
        v1::Mkdir, v1::Move, v1::CreateTenant, v1::Tenant, v1::CreateKey, v1::Key, v1::CreatedKey, v1::Template,
        v1::JoinToken, v1::Node, JoinRequest, JoinResponse, v1::Network, v1::PutSecret, v1::Secret, v1::NetworkEvent, v1::SetPortAccess, v1::PortAccess,
        agent::AgentSpec, agent::ModelSpec, agent::AgentSandbox, agent::ToolPolicy, agent::PolicyRule, agent::Budgets, agent::Agent,
        v1::Snapshot, v1::SnapshotList, v1::Fork, v1::Forked, v1::PutPool, v1::Pool, v1::PoolList,
        agent::Session, agent::PostMessage, agent::Turn, agent::SessionEvent, agent::AnswerApproval, agent::Skill)),
    modifiers(&Security, &ErrorResponses),
)]
struct ApiDoc;

/// The document served at `/v1/openapi.json` (and committed as `docs/openapi.json`).
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
