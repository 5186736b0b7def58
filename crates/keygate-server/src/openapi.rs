//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let comps = api.components.get_or_insert_with(Default::default);
        comps.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "keygate", description = "Vault and signing gateway for exchange API keys. Errors are RFC 9457 problem+json with a stable `code`."),
    modifiers(&Bearer),
    paths(
        routes::health::healthz,
        routes::health::readyz,
        routes::health::metrics,
        routes::health::openapi,
        routes::credentials::create,
        routes::credentials::list,
        routes::credentials::read,
        routes::credentials::update,
        routes::credentials::remove,
        routes::credentials::rotate,
        routes::credentials::reveal,
        routes::credentials::generations,
        routes::credentials::usage,
        routes::keygen::generate,
        routes::keygen::attach_key,
        routes::connections::create,
        routes::connections::list,
        routes::connections::read,
        routes::connections::update,
        routes::connections::remove,
        routes::connections::calls,
        routes::connections::balances,
        routes::vault::setup,
        routes::vault::unlock,
        routes::vault::lock,
        routes::vault::status,
        routes::vault::settings,
        routes::vault::change_password,
        routes::vault::access_log,
        routes::vault::shred_own,
        routes::vault::shred_user,
        routes::tokens::revoke_own,
        routes::tokens::revoke_current,
        routes::tokens::revoke_user,
        routes::tokens::revoke_session_own,
        routes::tokens::revoke_session_user,
        routes::dek_rotation::rotate_key,
        routes::audit::list,
        routes::audit::verify,
        crate::gateway::proxy,
        crate::gateway::sync::sync_route,
        routes::audit::export,
        routes::rotation::read_schedule,
        routes::rotation::put_schedule,
        routes::rotation::delete_schedule,
        routes::rotation::due,
        routes::rotation::reactivate,
        routes::site_keys::create,
        routes::site_keys::list,
        routes::site_keys::read,
        routes::site_keys::update,
        routes::site_keys::remove,
        routes::site_keys::use_key,
        routes::site_keys::use_provider_key,
        routes::integrations::create,
        routes::integrations::list,
        routes::integrations::read,
        routes::integrations::update,
        routes::integrations::remove,
        routes::integrations::put_tokens,
        routes::integrations::token,
        routes::integrations::refresh_now,
        routes::webhooks::create,
        routes::webhooks::list,
        routes::webhooks::read,
        routes::webhooks::update,
        routes::webhooks::remove,
        routes::webhooks::deliveries,
        routes::webhooks::send_test,
        routes::admin::credentials,
        routes::admin::integrations,
        routes::admin::settings,
    ),
    components(schemas(crate::error::Problem, crate::error::FieldError))
)]
struct ApiDoc;

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
