//! The error contract: for every operation, every error it can answer — and so every status and
//! stable code a client must handle. [`ERRORS`] is the one list; the OpenAPI document's error
//! responses are generated from it ([`ErrorResponses`]), so the two cannot drift apart, and the
//! harness checks that every error the service really answers (the catalogue, Schemathesis) is one
//! the list has for that operation.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::json;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{Ref, RefOr};

use crate::error::ApiError;
use crate::lifecycle::{ConnectionStatus, Transition, TransitionError};
use crate::providers::ProviderError;

/// One operation's errors.
pub struct OperationErrors {
    /// `GET` or `POST`.
    pub method: HttpMethod,
    /// The path as in the OpenAPI document.
    pub path: &'static str,
    /// Every error the operation can answer, as a representative value of each.
    pub errors: fn() -> Vec<ApiError>,
}

fn transition() -> ApiError {
    ApiError::InvalidTransition(TransitionError {
        from: ConnectionStatus::NotConnected,
        transition: Transition::Disconnect,
    })
}

fn rate_limited() -> ApiError {
    ApiError::RateLimited {
        scope: "tenant",
        retry_after: std::time::Duration::from_secs(1),
    }
}

/// What every `/v1/…` operation can answer whatever it does: a declared body over the limit, a
/// request that ran past the request timeout, a request whose task the stopping process ended.
fn bounds() -> [ApiError; 3] {
    [
        ApiError::PayloadTooLarge {
            limit: crate::config::MAX_REQUEST_BODY_BYTES,
        },
        ApiError::RequestTimeout,
        ApiError::Stopping,
    ]
}

/// What every `/v1/workspaces/{workspace_id}/…` operation can answer before its own work: a
/// malformed id or actor tag, no valid token, not a member, no pooled connection, a database
/// failure, and the [`bounds`].
fn member_route() -> Vec<ApiError> {
    let [too_large, too_long, stopping] = bounds();
    vec![
        too_large,
        too_long,
        stopping,
        ApiError::BadRequest(crate::domain::ParseError::new("workspace_id", "")),
        ApiError::Unauthenticated(""),
        ApiError::NotFound,
        ApiError::DatabaseUnavailable,
        ApiError::Database(sqlx::Error::PoolClosed),
        // Every member route holds the caller's membership first, and waits there behind a
        // removal or demotion in progress (migration 0016).
        ApiError::LockTimeout,
    ]
}

fn with(mut base: Vec<ApiError>, more: impl IntoIterator<Item = ApiError>) -> Vec<ApiError> {
    base.extend(more);
    base
}

/// Every operation's errors.
pub const ERRORS: &[OperationErrors] = &[
    OperationErrors {
        method: HttpMethod::Post,
        path: "/v1/workspaces/{workspace_id}/activation",
        errors: || {
            with(
                member_route(),
                [
                    ApiError::ActivationNotEntitled,
                    ApiError::ActivationNotReady(""),
                ],
            )
        },
    },
    OperationErrors {
        method: HttpMethod::Get,
        path: "/v1/workspaces/{workspace_id}/connections",
        errors: member_route,
    },
    OperationErrors {
        method: HttpMethod::Get,
        path: "/v1/workspaces/{workspace_id}/documents",
        errors: member_route,
    },
    OperationErrors {
        method: HttpMethod::Post,
        path: "/v1/workspaces/{workspace_id}/connections/{provider}/disconnect",
        errors: || with(member_route(), [ApiError::Forbidden(""), transition()]),
    },
    OperationErrors {
        method: HttpMethod::Post,
        path: "/v1/workspaces/{workspace_id}/connections/{provider}/revoke",
        errors: || with(member_route(), [ApiError::Forbidden(""), transition()]),
    },
    OperationErrors {
        method: HttpMethod::Post,
        path: "/v1/workspaces/{workspace_id}/connections/{provider}/authorize",
        errors: || {
            with(
                member_route(),
                [
                    ApiError::Forbidden(""),
                    transition(),
                    ApiError::Provider(ProviderError::NotConfigured(crate::domain::Provider::Qbo)),
                    rate_limited(),
                    ApiError::Redis(redis::RedisError::from((
                        redis::ErrorKind::IoError,
                        "timeout",
                    ))),
                ],
            )
        },
    },
    OperationErrors {
        method: HttpMethod::Post,
        path: "/v1/workspaces/{workspace_id}/connections/{provider}/sync",
        errors: || {
            with(
                member_route(),
                [
                    ApiError::NotConnected(""),
                    ApiError::ReconnectRequired,
                    ApiError::AuthorizationSuperseded,
                    // A rotated refresh token's write-ahead taken over by the outbox worker.
                    ApiError::AuthorizationInterrupted,
                    ApiError::Provider(ProviderError::NotConfigured(crate::domain::Provider::Qbo)),
                    ApiError::Provider(ProviderError::Unavailable(String::new())),
                    ApiError::Provider(ProviderError::Protocol(String::new())),
                    ApiError::Provider(ProviderError::RateLimited { retry_after: None }),
                    ApiError::Provider(ProviderError::AccessDenied),
                ],
            )
        },
    },
    OperationErrors {
        method: HttpMethod::Get,
        path: "/v1/oauth/{provider}/callback",
        errors: || {
            // Past the request timeout a callback answers AUTHORIZATION_INTERRUPTED (below), not
            // REQUEST_TIMEOUT: its state is spent, a retry could only be refused.
            let [too_large, _, stopping] = bounds();
            vec![
                too_large,
                stopping,
                ApiError::BadRequest(crate::domain::ParseError::new("state", "")),
                ApiError::OAuthStateInvalid,
                ApiError::Unauthenticated(""),
                ApiError::OAuthStateMismatch,
                ApiError::IssuerMismatch,
                ApiError::Forbidden(""),
                ApiError::ConsentDenied,
                ApiError::ScopeNotGranted,
                ApiError::NotFound,
                transition(),
                ApiError::AuthorizationSuperseded,
                ApiError::Provider(ProviderError::NotConfigured(crate::domain::Provider::Qbo)),
                rate_limited(),
                ApiError::Database(sqlx::Error::PoolClosed),
                ApiError::Provider(ProviderError::Unavailable(String::new())),
                ApiError::Provider(ProviderError::Protocol(String::new())),
                // A provider's rate limit, too, is AUTHORIZATION_INTERRUPTED here: its state is
                // spent.
                ApiError::AuthorizationInterrupted,
                ApiError::DatabaseUnavailable,
                ApiError::Redis(redis::RedisError::from((
                    redis::ErrorKind::IoError,
                    "timeout",
                ))),
            ]
        },
    },
];

/// The (status, code) pairs an operation can answer, by status.
pub fn codes_of(method: HttpMethod, path: &str) -> BTreeMap<u16, Vec<&'static str>> {
    let mut by_status: BTreeMap<u16, Vec<&'static str>> = BTreeMap::new();
    for op in ERRORS
        .iter()
        .filter(|o| o.method == method && o.path == path)
    {
        for e in (op.errors)() {
            let (status, code) = e.status_and_code();
            let codes = by_status.entry(status.as_u16()).or_default();
            if !codes.contains(&code) {
                codes.push(code);
            }
        }
    }
    by_status
}

/// Links between operations (OpenAPI 3 `links`), so a stateful client can walk the API: from a
/// response to the operations its values feed. (source method, source path, status, link name,
/// target method, target path, parameters as (name, runtime expression)).
type LinkSpec = (
    HttpMethod,
    &'static str,
    &'static str,
    &'static str,
    HttpMethod,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const WS: &str = "$request.path.workspace_id";

/// The links: every workspace operation leads to the workspace's other operations, and a listed
/// connection's provider to the operations on that connection.
pub const LINKS: &[LinkSpec] = &[
    (
        HttpMethod::Post,
        "/v1/workspaces/{workspace_id}/activation",
        "200",
        "ListConnections",
        HttpMethod::Get,
        "/v1/workspaces/{workspace_id}/connections",
        &[("workspace_id", "$response.body#/workspace_id")],
    ),
    (
        HttpMethod::Post,
        "/v1/workspaces/{workspace_id}/activation",
        "200",
        "ListDocuments",
        HttpMethod::Get,
        "/v1/workspaces/{workspace_id}/documents",
        &[("workspace_id", "$response.body#/workspace_id")],
    ),
    (
        HttpMethod::Get,
        "/v1/workspaces/{workspace_id}/connections",
        "200",
        "Authorize",
        HttpMethod::Post,
        "/v1/workspaces/{workspace_id}/connections/{provider}/authorize",
        &[
            ("workspace_id", WS),
            ("provider", "$response.body#/connections/0/provider"),
        ],
    ),
    (
        HttpMethod::Get,
        "/v1/workspaces/{workspace_id}/connections",
        "200",
        "Sync",
        HttpMethod::Post,
        "/v1/workspaces/{workspace_id}/connections/{provider}/sync",
        &[
            ("workspace_id", WS),
            ("provider", "$response.body#/connections/0/provider"),
        ],
    ),
    (
        HttpMethod::Get,
        "/v1/workspaces/{workspace_id}/connections",
        "200",
        "Disconnect",
        HttpMethod::Post,
        "/v1/workspaces/{workspace_id}/connections/{provider}/disconnect",
        &[
            ("workspace_id", WS),
            ("provider", "$response.body#/connections/0/provider"),
        ],
    ),
    (
        HttpMethod::Get,
        "/v1/workspaces/{workspace_id}/connections",
        "200",
        "Activate",
        HttpMethod::Post,
        "/v1/workspaces/{workspace_id}/activation",
        &[("workspace_id", WS)],
    ),
    (
        HttpMethod::Post,
        "/v1/workspaces/{workspace_id}/connections/{provider}/authorize",
        "200",
        "ListConnections",
        HttpMethod::Get,
        "/v1/workspaces/{workspace_id}/connections",
        &[("workspace_id", WS)],
    ),
    (
        HttpMethod::Post,
        "/v1/workspaces/{workspace_id}/connections/{provider}/sync",
        "200",
        "ListDocuments",
        HttpMethod::Get,
        "/v1/workspaces/{workspace_id}/documents",
        &[("workspace_id", WS)],
    ),
    (
        HttpMethod::Post,
        "/v1/workspaces/{workspace_id}/connections/{provider}/sync",
        "200",
        "Activate",
        HttpMethod::Post,
        "/v1/workspaces/{workspace_id}/activation",
        &[("workspace_id", WS)],
    ),
    (
        HttpMethod::Post,
        "/v1/workspaces/{workspace_id}/connections/{provider}/disconnect",
        "200",
        "Revoke",
        HttpMethod::Post,
        "/v1/workspaces/{workspace_id}/connections/{provider}/revoke",
        &[
            ("workspace_id", WS),
            ("provider", "$response.body#/provider"),
        ],
    ),
];

fn operation_mut<'a>(
    openapi: &'a mut utoipa::openapi::OpenApi,
    method: &HttpMethod,
    path: &str,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    let item = openapi.paths.paths.get_mut(path)?;
    match method {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        _ => None,
    }
}

/// The method's name as HTTP spells it (the operations here are GETs and POSTs).
pub(crate) fn method_name(method: &HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        _ => "OTHER",
    }
}

/// An `operationRef` to `method path` in this document (RFC 6901 escaping).
fn operation_ref(method: &HttpMethod, path: &str) -> String {
    format!(
        "#/paths/{}/{}",
        path.replace('~', "~0").replace('/', "~1"),
        method_name(method).to_lowercase()
    )
}

/// A response header of one type, described.
fn header(kind: utoipa::openapi::Type, description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(utoipa::openapi::ObjectBuilder::new().schema_type(kind))
        .description(Some(description))
        .build()
}

/// Writes every operation's error responses into the OpenAPI document from [`ERRORS`]: one
/// response per status, its codes in the description, an example body, and `Retry-After` or
/// `WWW-Authenticate` where the answer carries one.
pub struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (method, path, status, name, target_method, target_path, parameters) in LINKS {
            let Some(operation) = operation_mut(openapi, method, path) else {
                continue;
            };
            let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) else {
                continue;
            };
            let mut link = utoipa::openapi::link::LinkBuilder::new()
                .operation_ref(operation_ref(target_method, target_path));
            for (parameter, expression) in *parameters {
                link = link.parameter(*parameter, *expression);
            }
            response
                .links
                .insert((*name).to_owned(), RefOr::T(link.build()));
        }
        for op in ERRORS {
            let Some(operation) = operation_mut(openapi, &op.method, op.path) else {
                continue;
            };
            for (status, codes) in codes_of(op.method.clone(), op.path) {
                let reason = StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Error");
                let example = json!({ "error": { "code": codes[0], "message": reason, "request_id": "7d0c2f4e-5a3b-4c1d-9e8f-0a1b2c3d4e5f" } });
                let content = ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .example(Some(example))
                    .build();
                let mut response = ResponseBuilder::new()
                    .description(format!("{reason}: {}", codes.join(", ")))
                    .content("application/json", content);
                if status == 429 || status == 503 {
                    response = response.header(
                        "Retry-After",
                        header(
                            utoipa::openapi::Type::Integer,
                            "Seconds to wait before retrying",
                        ),
                    );
                }
                if status == 401 {
                    response = response.header(
                        "WWW-Authenticate",
                        header(utoipa::openapi::Type::String, "`Bearer` (RFC 6750 §3)"),
                    );
                }
                operation
                    .responses
                    .responses
                    .insert(status.to_string(), RefOr::T(response.build()));
            }
        }
        // Every answer, whatever its status and route, carries the request's id (the request
        // middleware sets it on the way out).
        for item in openapi.paths.paths.values_mut() {
            for operation in [item.get.as_mut(), item.post.as_mut()]
                .into_iter()
                .flatten()
            {
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response.headers.insert(
                            "x-request-id".to_owned(),
                            header(
                                utoipa::openapi::Type::String,
                                "The request's id, as in the error body and the logs",
                            ),
                        );
                    }
                }
            }
        }
    }
}
