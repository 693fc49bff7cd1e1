//! The per-request context: a request id for every request, and the harness's actor tag when
//! sync points are enabled. The id lives in a task-local so that any error rendered while the
//! request runs carries it.

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::app::AppState;
use crate::domain::Actor;
use crate::error::ApiError;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `fut` (typically in a spawned task) as part of the current request: same request id and
/// tracing span, so its logs stay attributable.
pub fn within_request<F: std::future::Future>(fut: F) -> impl std::future::Future<Output = F::Output> {
    let id = current_request_id();
    REQUEST_ID.scope(id, fut).instrument(tracing::Span::current())
}

/// The request id of the request this task serves, or `-` outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| "-".to_owned())
}

/// What the service knows about the request before any handler runs.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// A fresh id for this request (a UUID); echoed in `x-request-id`.
    pub request_id: String,
    /// The harness's actor tag, present only when sync points are enabled and the header was sent.
    pub actor: Option<Actor>,
}

/// Middleware: assigns the request id, reads the actor tag, and runs the rest of the stack inside
/// a tracing span and the task-local scope.
pub async fn request_context(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let id_for_scope = request_id.clone();
    REQUEST_ID
        .scope(id_for_scope, async move {
            let actor = if state.sync_points.is_some() {
                match request.headers().get(Actor::HEADER).map(|v| v.to_str().map(Actor::parse)) {
                    None => None,
                    Some(Ok(Ok(actor))) => Some(actor),
                    Some(Ok(Err(e))) => return with_request_id(ApiError::from(e).into_response(), &request_id),
                    Some(Err(_)) => {
                        let e = crate::domain::ParseError::new(Actor::HEADER, "not visible ASCII");
                        return with_request_id(ApiError::from(e).into_response(), &request_id);
                    }
                }
            } else {
                None
            };
            let span = tracing::info_span!(
                "request",
                request_id = %request_id,
                method = %request.method(),
                path = %request.uri().path(),
                actor = actor.as_ref().map(Actor::as_str),
            );
            request.extensions_mut().insert(RequestContext { request_id: request_id.clone(), actor });
            let response = crate::flaws::scope(&state.flaws, next.run(request)).instrument(span.clone()).await;
            span.in_scope(|| tracing::info!(status = response.status().as_u16(), "request finished"));
            with_request_id(response, &request_id)
        })
        .await
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}
