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

    /// Its route on the reference service: the method and the path template (`{workspace}`,
    /// `{provider}`, `{query}`), as [`Routes`] holds them.
    pub fn reference_route(self) -> (Method, &'static str) {
        match self {
            WorkspaceOp::Activate => (Method::POST, "/v1/workspaces/{workspace}/activation"),
            WorkspaceOp::Authorize => (
                Method::POST,
                "/v1/workspaces/{workspace}/connections/{provider}/authorize",
            ),
            WorkspaceOp::Callback => (Method::GET, "/v1/oauth/{provider}/callback?{query}"),
            WorkspaceOp::Disconnect => (
                Method::POST,
                "/v1/workspaces/{workspace}/connections/{provider}/disconnect",
            ),
            WorkspaceOp::Revoke => (
                Method::POST,
                "/v1/workspaces/{workspace}/connections/{provider}/revoke",
            ),
            WorkspaceOp::Sync => (
                Method::POST,
                "/v1/workspaces/{workspace}/connections/{provider}/sync",
            ),
            WorkspaceOp::ListConnections => (Method::GET, "/v1/workspaces/{workspace}/connections"),
            WorkspaceOp::ListDocuments => (Method::GET, "/v1/workspaces/{workspace}/documents"),
        }
    }

    /// The request that does it on the reference service, on `workspace`'s `provider`
    /// connection; `callback_query` is the consent's query string, for the callback.
    pub fn request(
        self,
        workspace: WorkspaceId,
        provider: Provider,
        callback_query: &str,
    ) -> (Method, String) {
        let (method, template) = self.reference_route();
        (
            method,
            render_route(template, workspace, provider.as_str(), callback_query),
        )
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

/// How a target's API spells Harbor's operations and answers: a request (method and path
/// template) per operation, the provider names in its paths, and where an answer holds the stable
/// error code and the authorization URL. [`Routes::reference`] is the reference service's own; a
/// target profile ([`crate::target::profile`]) gives another. Every technique sends operations
/// through [`crate::client::ApiClient::operation`], which reads them here.
#[derive(Clone, Debug)]
pub struct Routes {
    /// Per operation, its method and path template (`{workspace}`, `{provider}`, `{query}`).
    pub requests: std::collections::BTreeMap<WorkspaceOp, (Method, String)>,
    /// The name each provider has in the target's paths (absent: Harbor's name).
    pub provider_names: std::collections::BTreeMap<Provider, String>,
    /// The JSON pointer of the stable error code in an error answer.
    pub error_code: String,
    /// The target's error codes that are Harbor's under another name (the target's → Harbor's);
    /// any other code is taken as it is.
    pub code_names: std::collections::BTreeMap<String, String>,
    /// The JSON pointer of the authorization URL in an `authorize` answer.
    pub authorization_url: String,
}

impl Routes {
    /// The reference service's routes (`paths`, `error.code`, `authorization_url`).
    pub fn reference() -> Self {
        let requests = WorkspaceOp::ALL
            .into_iter()
            .map(|op| {
                let (method, template) = op.reference_route();
                (op, (method, template.to_owned()))
            })
            .collect();
        Self {
            requests,
            provider_names: Default::default(),
            code_names: Default::default(),
            error_code: "/error/code".to_owned(),
            authorization_url: "/authorization_url".to_owned(),
        }
    }

    /// The request that does `op` on `workspace`'s `provider` connection (`callback_query`: the
    /// consent's query string, for the callback).
    pub fn request(
        &self,
        op: WorkspaceOp,
        workspace: WorkspaceId,
        provider: Provider,
        callback_query: &str,
    ) -> (Method, String) {
        let (method, template) = &self.requests[&op];
        let provider = self
            .provider_names
            .get(&provider)
            .map_or(provider.as_str(), String::as_str);
        (
            method.clone(),
            render_route(template, workspace, provider, callback_query),
        )
    }

    /// The stable error code `body` holds, if any, in Harbor's vocabulary.
    pub fn error_code(&self, body: &serde_json::Value) -> Option<String> {
        let code = body.pointer(&self.error_code).and_then(|v| v.as_str())?;
        Some(
            self.code_names
                .get(code)
                .cloned()
                .unwrap_or_else(|| code.to_owned()),
        )
    }

    /// The authorization URL an `authorize` answer holds, if any.
    pub fn authorization_url(&self, body: &serde_json::Value) -> Option<String> {
        body.pointer(&self.authorization_url)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }
}

/// `template` with its placeholders filled.
fn render_route(template: &str, workspace: WorkspaceId, provider: &str, query: &str) -> String {
    // Read left to right as a profile's template parser reads it: `{{` and `}}` are literal
    // braces, `{name}` a placeholder (a profile's check admits only these three).
    let workspace = workspace.to_string();
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{").or_else(|| tail.strip_prefix("}}")) {
            out.push_str(&tail[..1]);
            rest = after;
            continue;
        }
        let filled = tail
            .strip_prefix('{')
            .and_then(|t| t.split_once('}'))
            .and_then(|(name, after)| {
                let value = match name {
                    "workspace" => workspace.as_str(),
                    "provider" => provider,
                    "query" => query,
                    _ => return None,
                };
                Some((value, after))
            });
        match filled {
            Some((value, after)) => {
                out.push_str(value);
                rest = after;
            }
            None => {
                out.push_str(&tail[..1]);
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl std::fmt::Display for WorkspaceOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reference service's paths, built from typed ids (its [`WorkspaceOp::reference_route`]s).
pub mod paths {
    use harbor_service::domain::{Provider, WorkspaceId};

    use super::WorkspaceOp;

    /// `POST /v1/workspaces/{w}/activation`.
    pub fn activation(workspace: WorkspaceId) -> String {
        WorkspaceOp::Activate
            .request(workspace, Provider::Qbo, "")
            .1
    }

    /// `GET /v1/workspaces/{w}/connections`.
    pub fn connections(workspace: WorkspaceId) -> String {
        WorkspaceOp::ListConnections
            .request(workspace, Provider::Qbo, "")
            .1
    }

    /// `GET /v1/workspaces/{w}/documents`.
    pub fn documents(workspace: WorkspaceId) -> String {
        WorkspaceOp::ListDocuments
            .request(workspace, Provider::Qbo, "")
            .1
    }

    /// `GET /v1/oauth/{p}/callback?{query}`.
    pub fn callback(provider: Provider, query: &str) -> String {
        WorkspaceOp::Callback
            .request(WorkspaceId(uuid::Uuid::nil()), provider, query)
            .1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_keeps_doubled_braces_as_literal_ones() {
        let ws = WorkspaceId(uuid::Uuid::nil());
        assert_eq!(
            render_route("/w/{workspace}/{{workspace}}/{provider}", ws, "qbo", ""),
            format!("/w/{ws}/{{workspace}}/qbo")
        );
        // As the template parser reads it: a literal brace, the workspace, a literal brace.
        assert_eq!(
            render_route("/a/{{{workspace}}}", ws, "qbo", ""),
            format!("/a/{{{ws}}}")
        );
        assert_eq!(
            render_route("/cb?{query}", ws, "qbo", "a=\u{1}"),
            "/cb?a=\u{1}"
        );
    }

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

    #[test]
    fn the_reference_routes_are_the_reference_paths() {
        let routes = Routes::reference();
        let ws = WorkspaceId(uuid::Uuid::new_v4());
        for op in WorkspaceOp::ALL {
            for p in Provider::ALL {
                assert_eq!(routes.request(op, ws, p, "a=b"), op.request(ws, p, "a=b"));
            }
        }
        assert_eq!(
            paths::documents(ws),
            format!("/v1/workspaces/{ws}/documents")
        );
        let mut renamed = routes.clone();
        renamed
            .provider_names
            .insert(Provider::Qbo, "quickbooks".into());
        assert_eq!(
            renamed.request(WorkspaceOp::Sync, ws, Provider::Qbo, "").1,
            format!("/v1/workspaces/{ws}/connections/quickbooks/sync")
        );
    }
}
