//! The OpenAPI document, generated from the handlers' annotations and served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::contract::ErrorResponses;

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
    components(schemas(crate::error::ErrorBody)),
    modifiers(&BearerAuth, &ErrorResponses)
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

/// The document as served: utoipa 5 writes a link's `operationRef` as `operation_ref`, which
/// no OpenAPI tool reads, so the links are corrected here; and each error response lists its
/// stable codes in `x-error-codes`, so a client (Harbor's contract check) reads them as data.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    for op in crate::contract::ERRORS {
        let method = crate::contract::method_name(&op.method).to_lowercase();
        for (status, codes) in crate::contract::codes_of(op.method.clone(), op.path) {
            if let Some(response) = doc["paths"][op.path][&method]["responses"]
                .get_mut(status.to_string())
                .and_then(|r| r.as_object_mut())
            {
                response.insert("x-error-codes".to_owned(), serde_json::json!(codes));
            }
        }
    }
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        let operations = paths
            .values_mut()
            .filter_map(|item| item.as_object_mut())
            .flat_map(|item| item.values_mut());
        let responses = operations
            .filter_map(|op| op.get_mut("responses").and_then(|r| r.as_object_mut()))
            .flat_map(|r| r.values_mut());
        for links in responses.filter_map(|r| r.get_mut("links").and_then(|l| l.as_object_mut())) {
            for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
                if let Some(target) = link.remove("operation_ref") {
                    link.insert("operationRef".to_owned(), target);
                }
            }
        }
    }
    doc
}

/// Serves the document.
pub async fn serve() -> Json<serde_json::Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use crate::contract::{codes_of, method_name, ERRORS};

    #[test]
    fn every_response_body_has_an_example() {
        let doc = super::document();
        for schema in [
            "ActivationResponse",
            "ConnectionList",
            "EndedConnection",
            "AuthorizeResponse",
            "SyncResponse",
            "DocumentList",
            "ConnectionView",
        ] {
            assert!(
                doc["components"]["schemas"][schema]["example"].is_object(),
                "{schema} has no example"
            );
        }
    }

    /// Every answer declares the request id it carries, and a 401 the scheme it names.
    #[test]
    fn every_response_declares_its_request_id_and_a_401_its_scheme() {
        let doc = super::document();
        let paths = doc["paths"].as_object().expect("paths");
        let mut seen = 0;
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("an operation map") {
                let responses = operation["responses"].as_object().expect("responses");
                for (status, response) in responses {
                    seen += 1;
                    assert!(
                        response["headers"]["x-request-id"].is_object(),
                        "{method} {path} {status}: no x-request-id"
                    );
                    if status == "401" {
                        assert!(
                            response["headers"]["WWW-Authenticate"].is_object(),
                            "{method} {path} 401: no WWW-Authenticate"
                        );
                    }
                }
            }
        }
        assert!(seen > 20, "only {seen} responses in the document");
    }

    #[test]
    fn every_operation_in_the_table_is_in_the_document() {
        let doc = super::document();
        for op in ERRORS {
            let method = method_name(&op.method).to_lowercase();
            let responses = &doc["paths"][op.path][&method]["responses"];
            assert!(
                responses.is_object(),
                "{method} {} is not in the document",
                op.path
            );
            for (status, codes) in codes_of(op.method.clone(), op.path) {
                let description = responses[status.to_string()]["description"]
                    .as_str()
                    .unwrap_or_default();
                let listed = &responses[status.to_string()]["x-error-codes"];
                assert_eq!(
                    listed,
                    &serde_json::json!(codes),
                    "{method} {} {status}",
                    op.path
                );
                for code in codes {
                    assert!(
                        description.contains(code),
                        "{method} {} {status}: {code} missing from {description:?}",
                        op.path
                    );
                }
            }
        }
    }
}
