//! The OpenAPI document, generated from the handlers' annotations and served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The service's API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Harbor reference service", description = "Workspace activation and third-party connectors."),
    paths(
        crate::health::healthz,
        crate::health::readyz,
        crate::activation::activate,
        crate::connections::list,
        crate::connections::disconnect,
        crate::connections::revoke,
        crate::oauth::authorize,
        crate::oauth::callback,
        crate::documents::sync,
        crate::documents::list,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Serves the document.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
