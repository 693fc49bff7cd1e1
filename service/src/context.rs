//! The per-request context: a request id for every request, and the harness's actor tag when
//! sync points are enabled. The id lives in a task-local so that any error rendered while the
//! request runs carries it.
//!
//! Only the data and the task-local live here, so that the lower layers (errors, audit, sync
//! points) can use them; the middleware that fills them in is [`crate::app::request_context`].

use tracing::Instrument;

use crate::domain::Actor;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `fut` as the request `request_id`: the middleware's entry into the task-local scope.
pub fn scope<F: std::future::Future>(
    request_id: String,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    REQUEST_ID.scope(request_id, fut)
}

/// Runs `fut` (typically in a spawned task) as part of the current request: same request id and
/// tracing span, so its logs stay attributable.
pub fn within_request<F: std::future::Future>(
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    let id = current_request_id();
    REQUEST_ID
        .scope(id, fut)
        .instrument(tracing::Span::current())
}

/// The request id of the request this task serves, or `-` outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".to_owned())
}

/// What the service knows about the request before any handler runs.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// A fresh id for this request (a UUID); echoed in `x-request-id`.
    pub request_id: String,
    /// The harness's actor tag, present only when sync points are enabled and the header was sent.
    pub actor: Option<Actor>,
}
