//! HTTP steps: one of the service's operations as an actor — once (to completion, parked at a
//! sync point, blocked on a lock, or in the background) or as many copies at once.

use std::collections::{BTreeMap, BTreeSet};

use harbor_service::domain::{Provider, UserId, WorkspaceId};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::evidence::LockType;
use crate::operation::WorkspaceOp;
use crate::scenario::check::{problem, Checked, Checker, Problem};
use crate::scenario::executor::jobs::{run_http, HttpJob, Job};
use crate::scenario::executor::Executor;
use crate::scenario::executor::{CopiesExpect, ExpectBlocked, Launch};
use crate::scenario::expect::toml_to_json;
use crate::scenario::format::{CountExpect, Expect};
use crate::scenario::outcome::Failure;
use crate::scenario::trace::EventKind;
use crate::target::Capability;

mod parse;

pub use parse::expect_blocked;

/// An HTTP step as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequest {
    /// Who acts.
    pub actor: String,
    /// A note for the trace.
    pub note: Option<String>,
    /// The tenant whose workspace is addressed (default: the actor's user's tenant).
    pub workspace: Option<String>,
    /// The provider.
    pub provider: Option<String>,
    /// For `http`: the method.
    pub method: Option<String>,
    /// For `http`: the path, with placeholders.
    pub path: Option<String>,
    /// Extra request headers (placeholders allowed).
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub headers: BTreeMap<String, String>,
    /// For `http`: a JSON body.
    pub body: Option<toml::Value>,
    /// For `callback`: deliver this actor's consent instead of one's own.
    pub consent_of: Option<String>,
    /// For `callback`: deliver the provider's answer for a user who declined.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub denied: bool,
    /// Replica the request goes to.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub replica: usize,
    /// For `connect`: replica of the callback.
    pub callback_replica: Option<usize>,
    /// Run this many copies at once.
    pub concurrency: Option<usize>,
    /// With copies: spread them over every replica, round-robin.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub all_replicas: bool,
    /// Run once per tenant of this set, as that tenant's owner, all at once.
    pub each_of: Option<String>,
    /// Park the request at this sync point.
    pub park_at: Option<String>,
    /// Run in the background without parking.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub background: bool,
    /// The step must block on a lock held by another actor.
    pub expect_blocked: Option<RawExpectBlocked>,
    /// What the outcome must be.
    pub expect: Option<Expect>,
    /// With copies: what every copy's outcome must be.
    pub expect_all: Option<Expect>,
    /// With copies: how many copies match each expectation.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub expect_counts: Vec<CountExpect>,
    /// With copies: every copy must match one of these (the outcomes a fault may cause).
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub expect_any: Vec<Expect>,
}

/// `expect_blocked` as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpectBlocked {
    /// The actor that must hold the awaited lock (or, `queued`, wait for it ahead).
    pub on: String,
    /// `on` does not hold the lock but waits for it too, ahead in its queue (a request queued
    /// behind a waiting one).
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub queued: bool,
    /// Acceptable lock types.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub lock: Vec<LockType>,
    /// For advisory locks: the tenant whose workspace lock is awaited.
    pub object: Option<String>,
}

/// Which operation (`do = …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// Any request (`do = "http"`).
    Http,
    /// Authorize, consent and callback (`do = "connect"`).
    Connect,
    /// One workspace operation of Harbor's vocabulary.
    Op(WorkspaceOp),
}

/// The typed request.
#[derive(Clone, Debug)]
pub enum Call {
    /// Any request; path and body keep their placeholders until run.
    Http {
        /// The method.
        method: Method,
        /// The path.
        path: String,
        /// The body.
        body: Option<Value>,
    },
    /// An operation on a workspace (`None`: each tenant's of an `each_of` set).
    Workspace {
        /// Which.
        kind: CallKind,
        /// The tenant.
        tenant: Option<String>,
        /// The provider, for connection operations.
        provider: Option<Provider>,
        /// For `connect`: where the callback goes.
        callback_replica: usize,
    },
    /// Deliver a consent.
    Callback {
        /// The provider.
        provider: Provider,
        /// Whose consent.
        consent_of: String,
        /// Deliver the refusal instead.
        denied: bool,
    },
}

/// How the step runs.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Once.
    Once {
        /// Park at this sync point (on this replica).
        park: Option<(usize, &'static str)>,
        /// Must block on a lock.
        expect_blocked: Option<ExpectBlocked>,
        /// Leave it running.
        background: bool,
        /// What the outcome must be.
        expect: Option<Expect>,
    },
    /// Many copies at once, to completion (or in the background, collected by `wait`).
    Copies {
        /// How many, or one per tenant of a set.
        copies: Copies,
        /// Spread over the replicas.
        all_replicas: bool,
        /// What the copies must be.
        expect: CopiesExpect,
        /// Leave them running.
        background: bool,
    },
}

/// How many copies.
#[derive(Clone, Debug)]
pub enum Copies {
    /// This many, as the actor.
    Concurrency(usize),
    /// One per tenant of this set, as its owner.
    EachOf(String),
}

/// A checked HTTP step.
#[derive(Clone, Debug)]
pub struct RequestStep {
    /// Who acts.
    pub actor: String,
    /// What is sent.
    pub call: Call,
    /// Replica the request goes to.
    pub replica: usize,
    /// Extra headers (placeholders resolved when run).
    pub headers: Vec<(String, String)>,
    /// How it runs.
    pub mode: Mode,
}

impl RequestStep {
    /// What it needs of a target.
    pub fn requires(&self, needs: &mut BTreeSet<Capability>) {
        if let Mode::Once {
            park,
            expect_blocked,
            ..
        } = &self.mode
        {
            if park.is_some() {
                needs.insert(Capability::SyncPoints);
            }
            if let Some(blocked) = expect_blocked {
                needs.insert(Capability::Database);
                if blocked.object.is_some() {
                    needs.insert(Capability::WorkspaceLock);
                }
            }
        }
        let consents = match &self.call {
            Call::Workspace {
                kind: CallKind::Connect,
                ..
            } => true,
            Call::Workspace {
                kind: CallKind::Op(WorkspaceOp::Authorize),
                ..
            } => !self.expects_refusal(),
            _ => false,
        };
        if consents {
            needs.insert(Capability::ProviderControl);
        }
    }

    /// Whether it is sent once and expected to be refused (a status outside 2xx). Such an
    /// authorize is sent as a plain request: the harness consents nowhere, whatever the answer
    /// carries, so it needs no provider of the harness's (a deployed target's auth guard is judged
    /// on its authorize route too), and a target that wrongly answers with an authorization URL
    /// is judged on its status, not sent to a URL of its choosing.
    fn expects_refusal(&self) -> bool {
        matches!(
            &self.mode,
            Mode::Once { expect: Some(Expect { status: Some(s), .. }), .. } if !(200..300).contains(s)
        )
    }

    /// How the trace shows it.
    pub fn describe(&self) -> String {
        match &self.call {
            Call::Http { method, path, .. } => format!("{method} {path}"),
            Call::Callback {
                provider,
                consent_of,
                ..
            } if *consent_of != self.actor => {
                format!("GET {provider}/callback with {consent_of}'s state")
            }
            Call::Callback { provider, .. } => format!("GET {provider}/callback"),
            Call::Workspace { kind, provider, .. } => {
                let p = provider.map(|p| p.to_string()).unwrap_or_default();
                match kind {
                    CallKind::Op(WorkspaceOp::Activate) => "POST activation".into(),
                    CallKind::Op(WorkspaceOp::Authorize) => format!("POST {p}/authorize + consent"),
                    CallKind::Connect => format!("connect {p}"),
                    CallKind::Op(WorkspaceOp::Disconnect) => format!("POST {p}/disconnect"),
                    CallKind::Op(WorkspaceOp::Revoke) => format!("POST {p}/revoke"),
                    CallKind::Op(WorkspaceOp::Sync) => format!("POST {p}/sync"),
                    CallKind::Op(WorkspaceOp::ListConnections) => "GET connections".into(),
                    CallKind::Op(WorkspaceOp::ListDocuments) => "GET documents".into(),
                    CallKind::Http | CallKind::Op(WorkspaceOp::Callback) => format!("{kind:?}"),
                }
            }
        }
    }

    /// The job of one copy: as `user` on `workspace` when given (each tenant of a set), else as
    /// the actor on the step's workspace; on `replica`.
    fn job(
        &self,
        ex: &Executor<'_>,
        user: Option<UserId>,
        workspace: Option<WorkspaceId>,
        replica: usize,
        callback_replica: Option<usize>,
    ) -> HttpJob {
        let client = ex.target().client();
        let bearer = ex.bearer_of(&self.actor, user);
        let prepare = |method: Method, path: String| {
            let mut call = client
                .request(method, path)
                .on_replica(replica)
                .bearer(bearer.as_deref())
                .actor(Some(&self.actor));
            for (k, v) in &self.headers {
                call = call.header(k.clone(), ex.subst(v));
            }
            call
        };
        match &self.call {
            Call::Http { method, path, body } => {
                let mut call = prepare(method.clone(), ex.subst(path));
                if let Some(b) = body {
                    call = call.json(ex.subst_json(b));
                }
                HttpJob::Plain(call)
            }
            Call::Callback {
                provider,
                consent_of,
                denied,
            } => HttpJob::Callback(ex.consent(consent_of).map(|c| {
                let query = if *denied {
                    c.denied_query()
                } else {
                    c.callback_query()
                };
                let (method, path) = ex.target().client().routes().request(
                    WorkspaceOp::Callback,
                    WorkspaceId(uuid::Uuid::nil()),
                    *provider,
                    &query,
                );
                prepare(method, path)
            })),
            Call::Workspace {
                kind,
                tenant,
                provider,
                callback_replica: written,
            } => {
                let ws = workspace
                    .or_else(|| tenant.as_deref().map(|t| ex.workspace(t)))
                    .unwrap_or(WorkspaceId(uuid::Uuid::nil()));
                let p = provider.unwrap_or(Provider::Qbo);
                let request = |op: WorkspaceOp| {
                    let (method, path) = ex.target().client().routes().request(op, ws, p, "");
                    prepare(method, path)
                };
                match kind {
                    CallKind::Op(WorkspaceOp::Authorize) if self.expects_refusal() => {
                        HttpJob::Plain(request(WorkspaceOp::Authorize))
                    }
                    CallKind::Op(WorkspaceOp::Authorize) => {
                        HttpJob::Authorize(request(WorkspaceOp::Authorize))
                    }
                    CallKind::Connect => HttpJob::Connect {
                        authorize: request(WorkspaceOp::Authorize),
                        client: client.clone(),
                        provider: p,
                        callback_replica: callback_replica.unwrap_or(*written),
                        bearer: bearer.clone(),
                        actor: self.actor.clone(),
                    },
                    // A callback is a `Call::Callback` (it needs a kept consent), and a plain
                    // request a `Call::Http`: neither is made here.
                    CallKind::Http | CallKind::Op(WorkspaceOp::Callback) => {
                        HttpJob::Plain(prepare(Method::GET, "/".into()))
                    }
                    CallKind::Op(op) => HttpJob::Plain(request(*op)),
                }
            }
        }
    }

    /// Runs it.
    pub async fn apply(
        &self,
        ex: &mut Executor<'_>,
        i: usize,
        note: Option<&str>,
    ) -> Result<(), Failure> {
        match &self.mode {
            Mode::Once {
                park,
                expect_blocked,
                background,
                expect,
            } => {
                let job = Job::Http(self.job(ex, None, None, self.replica, None));
                let how = Launch {
                    park: *park,
                    expect_blocked: expect_blocked.as_ref(),
                    background: *background,
                    expect: expect.as_ref(),
                };
                ex.launch(i, &self.actor, job, self.describe(), note, how)
                    .await
            }
            Mode::Copies {
                copies,
                all_replicas,
                expect,
                background,
            } => {
                self.copies(ex, i, note, copies, *all_replicas, expect, *background)
                    .await
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // the fields of `Mode::Copies`, passed apart to borrow them
    async fn copies(
        &self,
        ex: &mut Executor<'_>,
        i: usize,
        note: Option<&str>,
        copies: &Copies,
        all_replicas: bool,
        expect: &CopiesExpect,
        background: bool,
    ) -> Result<(), Failure> {
        let actor = self.actor.as_str();
        let replicas = ex.target().client().replicas();
        let place = |k: usize| {
            if all_replicas {
                (k % replicas, Some((k + 1) % replicas))
            } else {
                (self.replica, None)
            }
        };
        let jobs: Vec<HttpJob> = match copies {
            Copies::EachOf(set) => ex
                .tenant_set(set)
                .iter()
                .enumerate()
                .map(|(k, t)| {
                    let (replica, callback) = place(k);
                    self.job(ex, Some(t.owner), Some(t.workspace), replica, callback)
                })
                .collect(),
            Copies::Concurrency(n) => (0..*n)
                .map(|k| {
                    let (replica, callback) = place(k);
                    self.job(ex, None, None, replica, callback)
                })
                .collect(),
        };
        let n = jobs.len();
        ex.event(
            Some(i),
            Some(actor),
            EventKind::Launched,
            format!("{n} × {}", self.describe()),
            None,
        );
        ex.annotate(note);
        let all = futures::future::join_all(jobs.into_iter().map(run_http));
        if background {
            ex.background_copies(i, actor, Box::pin(all), expect.clone());
            return Ok(());
        }
        let limit = ex.step_timeout();
        let Ok(outcomes) = tokio::time::timeout(limit, all).await else {
            return Err(ex
                .failure_with_diagnostics(
                    i,
                    format!(
                        "{actor}: {n} concurrent requests did not all complete within {limit:?}"
                    ),
                )
                .await);
        };
        ex.settle_copies(i, actor, &outcomes, expect)
    }
}
