//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use reins_api::node::{JoinRequest, JoinResponse};
use reins_api::v1;
use reins_api::ErrorBody;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{admin, exec, files, sandboxes};

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

#[derive(OpenApi)]
#[openapi(
    info(title = "Reins API", version = "1", description = "Sandboxes for AI agents: create, run commands, move files. Errors are `{code, message}`."),
    paths(
        sandboxes::create, sandboxes::list, sandboxes::get, sandboxes::delete, sandboxes::set_timeout,
        sandboxes::pause, sandboxes::resume,
        exec::exec, exec::stream, exec::stdin, exec::signal,
        files::download, files::upload, files::list, files::stat, files::remove, files::mkdir, files::rename,
        admin::create_tenant, admin::list_tenants, admin::create_key, admin::list_keys, admin::revoke_key,
        admin::create_join_token, admin::list_nodes, admin::join, admin::list_templates, admin::delete_template,
    ),
    components(schemas(ErrorBody, v1::Sandbox, v1::SandboxState, v1::CreateSandbox, v1::SandboxList, v1::SetTimeout,
        v1::Exec, v1::ExecResult, v1::ExecEvent, v1::Stdin, v1::Signal, v1::User, v1::FileEntry, v1::FileKind,
        v1::Mkdir, v1::Move, v1::CreateTenant, v1::Tenant, v1::CreateKey, v1::Key, v1::CreatedKey, v1::Template,
        v1::JoinToken, v1::Node, JoinRequest, JoinResponse)),
    modifiers(&Security),
)]
struct ApiDoc;

/// The document served at `/v1/openapi.json` (and committed as `docs/openapi.json`).
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
