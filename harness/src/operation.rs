//! Harbor's one vocabulary of workspace operations. A scenario's request step of kind X, an
//! exploration operation X and a state-machine op X are the same [`WorkspaceOp`]: one name, one
//! request on the wire, one answer in the reference model.

use harbor_service::domain::{Provider, WorkspaceId};
use reqwest::Method;

use crate::model::{Expected, Model, Transition, Who};

/// One operation on a workspace, as the API offers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkspaceOp {
    /// `POST …/activation`.
    Activate,
    /// `POST …/connections/{p}/authorize`: start an OAuth authorization.
    Authorize,
    /// `GET /v1/oauth/{p}/callback?…`: deliver a consent (or its refusal).
    Callback,
    /// `POST …/connections/{p}/disconnect`: keep nothing usable, allow reconnecting.
    Disconnect,
    /// `POST …/connections/{p}/revoke`: revoke at the provider and locally.
    Revoke,
    /// `POST …/connections/{p}/sync`: fetch documents (refreshing the access token when needed).
    Sync,
    /// `GET …/connections`: metadata only.
    ListConnections,
    /// `GET …/documents`.
    ListDocuments,
}

impl WorkspaceOp {
    /// Every operation.
    pub const ALL: [WorkspaceOp; 8] = [
        WorkspaceOp::Activate,
        WorkspaceOp::Authorize,
        WorkspaceOp::Callback,
        WorkspaceOp::Disconnect,
        WorkspaceOp::Revoke,
        WorkspaceOp::Sync,
        WorkspaceOp::ListConnections,
        WorkspaceOp::ListDocuments,
    ];

    /// Its name in files and reports (a scenario's `do`, an exploration's `--ops`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceOp::Activate => "activate",
            WorkspaceOp::Authorize => "authorize",
            WorkspaceOp::Callback => "callback",
            WorkspaceOp::Disconnect => "disconnect",
            WorkspaceOp::Revoke => "revoke",
            WorkspaceOp::Sync => "sync",
            WorkspaceOp::ListConnections => "list_connections",
            WorkspaceOp::ListDocuments => "list_documents",
        }
    }

    /// The operation named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }

    /// The request that does it on `workspace`'s `provider` connection; `callback_query` is the
    /// consent's query string, for the callback.
    pub fn request(
        self,
        workspace: WorkspaceId,
        provider: Provider,
        callback_query: &str,
    ) -> (Method, String) {
        let on_connection =
            |op: &str| format!("/v1/workspaces/{workspace}/connections/{provider}/{op}");
        match self {
            WorkspaceOp::Activate => (Method::POST, paths::activation(workspace)),
            WorkspaceOp::Authorize => (Method::POST, on_connection("authorize")),
            WorkspaceOp::Callback => (Method::GET, paths::callback(provider, callback_query)),
            WorkspaceOp::Disconnect => (Method::POST, on_connection("disconnect")),
            WorkspaceOp::Revoke => (Method::POST, on_connection("revoke")),
            WorkspaceOp::Sync => (Method::POST, on_connection("sync")),
            WorkspaceOp::ListConnections => (Method::GET, paths::connections(workspace)),
            WorkspaceOp::ListDocuments => (Method::GET, paths::documents(workspace)),
        }
    }

    /// What the reference model says it answers when `who` does it on `provider` (the callback
    /// presents the model's issued state `state`, refused at the provider when `denied`), applied
    /// to `model`.
    pub fn apply(
        self,
        model: &mut Model,
        who: Who,
        provider: Provider,
        state: usize,
        denied: bool,
    ) -> Expected {
        match self {
            WorkspaceOp::Activate => model.activate(who),
            WorkspaceOp::Authorize => model.authorize(who, provider),
            WorkspaceOp::Callback => model.callback(state, who, provider, denied),
            WorkspaceOp::Disconnect => model.end(who, provider, Transition::Disconnect),
            WorkspaceOp::Revoke => model.end(who, provider, Transition::Revoke),
            WorkspaceOp::Sync => model.sync(provider),
            WorkspaceOp::ListConnections | WorkspaceOp::ListDocuments => match who {
                Who::Outsider => Expected::error(404, "NOT_FOUND"),
                _ => Expected {
                    status: 200,
                    code: None,
                    field: None,
                },
            },
        }
    }
}

impl std::fmt::Display for WorkspaceOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The service's paths, built from typed ids.
pub mod paths {
    use harbor_service::domain::{Provider, WorkspaceId};

    /// `POST /v1/workspaces/{w}/activation`.
    pub fn activation(workspace: WorkspaceId) -> String {
        format!("/v1/workspaces/{workspace}/activation")
    }

    /// `GET /v1/workspaces/{w}/connections`.
    pub fn connections(workspace: WorkspaceId) -> String {
        format!("/v1/workspaces/{workspace}/connections")
    }

    /// `GET /v1/workspaces/{w}/documents`.
    pub fn documents(workspace: WorkspaceId) -> String {
        format!("/v1/workspaces/{workspace}/documents")
    }

    /// `GET /v1/oauth/{p}/callback?{query}`.
    pub fn callback(provider: Provider, query: &str) -> String {
        format!("/v1/oauth/{provider}/callback?{query}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_requests_name_the_connection() {
        for op in WorkspaceOp::ALL {
            assert_eq!(WorkspaceOp::parse(op.as_str()), Some(op));
        }
        let ws = WorkspaceId(uuid::Uuid::nil());
        let (m, p) = WorkspaceOp::Revoke.request(ws, Provider::Gmail, "");
        assert_eq!(m, Method::POST);
        assert_eq!(p, format!("/v1/workspaces/{ws}/connections/gmail/revoke"));
        let (m, p) = WorkspaceOp::Callback.request(ws, Provider::Qbo, "state=s&code=c");
        assert_eq!(
            (m, p.as_str()),
            (Method::GET, "/v1/oauth/qbo/callback?state=s&code=c")
        );
    }
}
