//! [`Executor`]: the state of one run — bindings of names to fixtures, consents, SQL sessions,
//! background steps, parked requests, the trace — and the operations every step kind shares:
//! launching a job (in the foreground, parked, blocked or in the background), collecting it,
//! checking its outcome, substituting placeholders. It reaches the service only through the
//! [`Target`].
//!
//! - [`jobs`]: what a launched step does on its own task.
//! - [`probes`]: parked and blocked, proven.

pub mod jobs;
mod launch;
pub mod probes;

pub use launch::{Background, BackgroundWork, CopiesExpect, ExpectBlocked, Launch};

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use harbor_service::domain::{UserId, WorkspaceId};
use harbor_syncpoint::SlotKey;
use serde_json::{json, Value};
use sqlx::PgConnection;
use tokio::task::JoinHandle;

use crate::evidence::{self, LockType};
use crate::fake_provider::Consent;
use crate::fixtures::TenantWorkspace;
use crate::scenario::actor::{ActorSpec, MemberRole, UserRef};
use crate::scenario::expect;
use crate::scenario::format::{CountExpect, Expect};
use crate::scenario::logs::{LogCapture, LogMark};
use crate::scenario::outcome::{Failure, Outcome};
use crate::scenario::trace::{EventKind, LockEvidence, Trace, TraceEvent};
use crate::target::Target;
use jobs::{run_job, Job, JobResult};

/// One run's state, reached by the steps through its methods.
pub struct Executor<'s> {
    /// The scenario's actors.
    actors: &'s [ActorSpec],
    /// The service under certification.
    target: &'s dyn Target,
    /// Named tenants' fixtures.
    tenants: HashMap<String, TenantWorkspace>,
    /// Tenant sets' fixtures.
    sets: HashMap<String, Vec<TenantWorkspace>>,
    /// Each actor's last consent at the provider.
    consents: HashMap<String, Consent>,
    /// Each SQL actor's session, kept across steps.
    sessions: HashMap<String, PgConnection>,
    /// Steps running in the background, by actor.
    background: HashMap<String, Background>,
    /// Which replica each armed sync point is on.
    parked_on: HashMap<SlotKey, usize>,
    /// What happened.
    trace: Trace,
    /// When the first step started.
    started: Instant,
    /// Every response body (for the leak search).
    responses: Vec<String>,
    /// Error answers their operation's contract does not list (each fails the run).
    off_contract: Vec<String>,
    /// Bound on each step and probe.
    step_timeout: Duration,
    /// Expectations and assertions that held.
    checks: usize,
    /// The service's log capture and where this run's lines start.
    logs: Option<(LogCapture, LogMark)>,
}

impl<'s> Executor<'s> {
    /// A fresh executor on `target` for a scenario with these `actors`, each step bounded by
    /// `step_timeout`.
    pub fn new(
        actors: &'s [ActorSpec],
        step_timeout: Duration,
        target: &'s dyn Target,
        logs: Option<&LogCapture>,
    ) -> Self {
        Executor {
            actors,
            target,
            tenants: HashMap::new(),
            sets: HashMap::new(),
            consents: HashMap::new(),
            sessions: HashMap::new(),
            background: HashMap::new(),
            parked_on: HashMap::new(),
            trace: Trace::default(),
            started: Instant::now(),
            responses: Vec::new(),
            off_contract: Vec::new(),
            step_timeout,
            checks: 0,
            logs: logs.map(|c| (c.clone(), c.mark())),
        }
    }

    /// The service under certification.
    pub fn target(&self) -> &'s dyn Target {
        self.target
    }

    /// The bound on each step and probe.
    pub fn step_timeout(&self) -> Duration {
        self.step_timeout
    }

    /// The fixtures of tenant `name` (steps only name declared tenants).
    pub fn tenant(&self, name: &str) -> &TenantWorkspace {
        &self.tenants[name]
    }

    /// The fixtures of tenant set `prefix`.
    pub fn tenant_set(&self, prefix: &str) -> &[TenantWorkspace] {
        &self.sets[prefix]
    }

    /// Binds tenant `name` to its fixtures.
    pub fn add_tenant(&mut self, name: &str, fixtures: TenantWorkspace) {
        self.tenants.insert(name.to_owned(), fixtures);
    }

    /// Binds tenant set `prefix` to its members' fixtures.
    pub fn add_tenant_set(&mut self, prefix: &str, members: Vec<TenantWorkspace>) {
        self.sets.insert(prefix.to_owned(), members);
    }

    /// `actor`'s last consent at the provider.
    pub fn consent(&self, actor: &str) -> Option<&Consent> {
        self.consents.get(actor)
    }

    /// Takes `actor`'s open SQL session, if it has one (a step gives it back through its job).
    pub fn take_session(&mut self, actor: &str) -> Option<PgConnection> {
        self.sessions.remove(actor)
    }

    /// Takes `actor`'s background step, if it has one; [`Executor::put_background`] returns it.
    pub fn take_background(&mut self, actor: &str) -> Option<Background> {
        self.background.remove(actor)
    }

    /// Gives `actor`'s background step back.
    pub fn put_background(&mut self, actor: &str, step: Background) {
        self.background.insert(actor.to_owned(), step);
    }

    /// Whether something runs in the background and all of it has finished.
    pub fn background_all_finished(&self) -> bool {
        !self.background.is_empty() && self.background.values().all(|b| b.is_finished())
    }

    /// The replica sync point `key` was armed on, if this run armed it.
    pub fn armed_on(&self, key: &SlotKey) -> Option<usize> {
        self.parked_on.get(key).copied()
    }

    /// Records that sync point `key` is armed on `replica`.
    pub fn note_armed(&mut self, key: SlotKey, replica: usize) {
        self.parked_on.insert(key, replica);
    }

    /// Counts an expectation or assertion that held.
    pub fn count_check(&mut self) {
        self.checks += 1;
    }

    /// Starts the run's clock (trace times count from here).
    pub fn start_clock(&mut self) {
        self.started = Instant::now();
    }

    /// Records that step `i` ran next (the schedule followed).
    pub fn record_scheduled(&mut self, i: usize) {
        self.trace.schedule.0.push(i);
    }

    /// Takes the error answers outside the target's contract seen so far.
    pub fn take_off_contract(&mut self) -> Vec<String> {
        std::mem::take(&mut self.off_contract)
    }

    /// Ends the run: aborts what still runs in the background, closes every SQL session, and
    /// returns the trace and how many checks held.
    pub async fn finish(mut self) -> (Trace, usize) {
        for (_, b) in self.background.drain() {
            b.abort();
        }
        for (_, conn) in self.sessions.drain() {
            let _ = sqlx::Connection::close(conn).await;
        }
        (std::mem::take(&mut self.trace), self.checks)
    }

    /// Appends a trace event.
    pub fn event(
        &mut self,
        step: Option<usize>,
        actor: Option<&str>,
        kind: EventKind,
        detail: String,
        evidence: Option<LockEvidence>,
    ) {
        let at_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.trace.events.push(TraceEvent {
            at_ms,
            step,
            actor: actor.map(str::to_owned),
            kind,
            detail,
            note: None,
            evidence,
            measured: None,
        });
    }

    /// Puts what was measured on the last event (kept out of the flake signature).
    pub fn measured(&mut self, measured: Option<String>) {
        if let Some(last) = self.trace.events.last_mut() {
            last.measured = measured;
        }
    }

    /// Puts the step's note on the last event.
    pub fn annotate(&mut self, note: Option<&str>) {
        if let (Some(n), Some(last)) = (note, self.trace.events.last_mut()) {
            last.note = Some(n.to_owned());
        }
    }

    /// Resolves `{workspace:T}`, `{tenant:T}`, `{user:T.owner|admin|member}`, `{prefix}` and
    /// `{workspace_lock:T}` — the workspace lock's two keys as `pg_advisory_xact_lock(int, int)`
    /// takes them, from the target (left as written when the target cannot name its lock, so the
    /// statement fails visibly).
    pub fn subst(&self, text: &str) -> String {
        let prefix = self.target.redis().map(|r| r.prefix).unwrap_or_default();
        let mut out = text.replace("{prefix}", prefix);
        for (query, _) in crate::target::state_queries::STATE_QUERIES {
            let placeholder = format!("{{query:{query}}}");
            if out.contains(&placeholder) {
                // A query on the whole database takes no workspace: the nil one stands in.
                let sql = self
                    .target
                    .state_query(query, WorkspaceId(uuid::Uuid::nil()))
                    .unwrap_or_else(|| {
                        format!("SELECT 'the target defines no state query {query}'::int")
                    });
                out = out.replace(&placeholder, &sql);
            }
        }
        for (name, t) in &self.tenants {
            if let Some(key) = self.target.workspace_lock(t.workspace) {
                out = out.replace(&format!("{{workspace_lock:{name}}}"), &key.sql_arguments());
            }
            for (query, _) in crate::target::state_queries::STATE_QUERIES {
                let placeholder = format!("{{query:{query}:{name}}}");
                if out.contains(&placeholder) {
                    let sql = self
                        .target
                        .state_query(query, t.workspace)
                        .unwrap_or_else(|| {
                            // Fails where it runs, naming what is missing.
                            format!("SELECT 'the target defines no state query {query}'::int")
                        });
                    out = out.replace(&placeholder, &sql);
                }
            }
            out = out
                .replace(&format!("{{workspace:{name}}}"), &t.workspace.to_string())
                .replace(&format!("{{tenant:{name}}}"), &t.tenant.to_string())
                .replace(&format!("{{user:{name}.owner}}"), &t.owner.to_string())
                .replace(&format!("{{user:{name}.admin}}"), &t.admin.to_string())
                .replace(&format!("{{user:{name}.member}}"), &t.member.to_string());
        }
        out
    }

    /// [`Executor::subst`] inside every string of a JSON value.
    pub fn subst_json(&self, v: &Value) -> Value {
        serde_json::from_str(&self.subst(&v.to_string())).unwrap_or_else(|_| v.clone())
    }

    /// The user's id.
    pub fn user(&self, user: &UserRef) -> UserId {
        let t = &self.tenants[&user.tenant];
        match user.role {
            MemberRole::Owner => t.owner,
            MemberRole::Admin => t.admin,
            MemberRole::Member => t.member,
        }
    }

    /// The bearer token `actor` presents, as `user` when given (else its own user).
    pub fn bearer_of(&self, actor: &str, user: Option<UserId>) -> Option<String> {
        let spec = self.actors.iter().find(|a| a.name == actor)?;
        let kind = spec.token?;
        let user = user.or_else(|| spec.user.as_ref().map(|u| self.user(u)))?;
        Some(self.target.bearer(user, kind))
    }

    /// The workspace of tenant `name`.
    pub fn workspace(&self, name: &str) -> WorkspaceId {
        self.tenants[name].workspace
    }

    /// Lock tables and the actors' backends, for a failure's diagnostics.
    pub async fn diagnostics(&self) -> Value {
        let Some(db) = self.target.database() else {
            return json!({ "locks": "the target has no database" });
        };
        let locks = evidence::lock_snapshot(db).await.unwrap_or_default();
        let mut backends = Vec::new();
        for a in self.actors {
            if let Ok(Some(act)) = evidence::activity_of(db, &a.name).await {
                backends.push(act);
            }
        }
        json!({ "locks": locks, "backends": backends })
    }

    /// A failure of step `step` with the lock tables attached.
    pub async fn failure_with_diagnostics(
        &self,
        step: usize,
        message: impl Into<String>,
    ) -> Failure {
        Failure::at(Some(step), message).with_diagnostics(self.diagnostics().await)
    }

    /// Takes a finished job's result in: its session, its consent, its response.
    pub fn absorb(&mut self, actor: &str, result: JobResult) -> Outcome {
        let (outcome, conn) = result;
        if let Some(conn) = conn {
            self.sessions.insert(actor.to_owned(), conn);
        }
        if let Some(c) = &outcome.consent {
            self.consents.insert(actor.to_owned(), c.clone());
        }
        self.record_response(&outcome);
        outcome
    }

    /// Keeps a response for the leak search and its contract check.
    pub fn record_response(&mut self, outcome: &Outcome) {
        // HTTP answers, and requests that got none (`Outcome::failed`); not SQL or Redis replies.
        if outcome.status != 0
            || outcome
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("request failed") || e.starts_with("no consent"))
        {
            *self.trace.answers.entry(outcome.summary()).or_default() += 1;
        }
        if !outcome.raw.is_empty() {
            self.responses.push(outcome.raw.clone());
        }
        if let (Some(contract), Some((method, path))) = (self.target.contract(), &outcome.request) {
            let code = outcome.code.as_deref();
            self.off_contract
                .extend(contract.check(method, path, outcome.status, code));
        }
    }

    /// Checks an outcome against an expectation (`Err`: what differs).
    pub fn check(&self, outcome: &Outcome, e: &Expect) -> Result<(), String> {
        expect::check(outcome, e, &|s| self.subst(s))
    }

    /// Records a step's completion and checks it: against `expect` when given, else it must not
    /// have failed or answered 5xx (a step without an expectation still must not crash the service).
    pub fn expect_outcome(
        &mut self,
        step: usize,
        actor: &str,
        outcome: &Outcome,
        expect: Option<&Expect>,
    ) -> Result<(), Failure> {
        self.event(
            Some(step),
            Some(actor),
            EventKind::Completed,
            outcome.summary(),
            None,
        );
        match expect {
            Some(e) => {
                self.check(outcome, e).map_err(|m| {
                    Failure::at(
                        Some(step),
                        format!("{actor}: {m}{}", self.logged_for(outcome)),
                    )
                })?;
                self.checks += 1;
                Ok(())
            }
            None if outcome.error.is_some() => Err(Failure::at(
                Some(step),
                format!(
                    "{actor}: {} ({})",
                    outcome.summary(),
                    outcome.error.as_deref().unwrap_or_default()
                ),
            )),
            None if outcome.status >= 500 => Err(Failure::at(
                Some(step),
                format!(
                    "{actor}: {} (a server error, and the step expected nothing){}",
                    outcome.summary(),
                    self.logged_for(outcome)
                ),
            )),
            None => Ok(()),
        }
    }

    /// For an unexpected 5xx answer, the warnings and errors the service logged under its request
    /// id (at most the last ten lines): the answer's code alone does not say what a dependency
    /// did. Empty for any other answer, or when the logs are not captured (a process target).
    fn logged_for(&self, outcome: &Outcome) -> String {
        const MOST: usize = 10;
        let (Some(id), true, Some((capture, mark))) =
            (&outcome.request_id, outcome.status >= 500, &self.logs)
        else {
            return String::new();
        };
        let text = capture.text_since(*mark).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(id.as_str()) && (l.contains(" WARN ") || l.contains(" ERROR ")))
            .collect();
        if lines.is_empty() {
            return format!("\n  the service logged no warning or error under request {id}");
        }
        let shown = &lines[lines.len().saturating_sub(MOST)..];
        format!(
            "\n  the service logged under request {id}:\n    {}",
            shown.join("\n    ")
        )
    }

    /// Searches every place an attacker could look for every code and token the provider issued.
    pub async fn leak_search(&self) -> Result<String, String> {
        let canaries = self
            .target
            .provider()
            .map(|p| p.issued())
            .unwrap_or_default();
        let (capture, mark) = self
            .logs
            .as_ref()
            .ok_or("the service's logs were not captured, so they cannot be searched")?;
        let mut logs = capture
            .text_since(*mark)
            .ok_or("the log capture overflowed and dropped this scenario's lines, so its logs cannot be searched completely")?;
        // A started process's replicas write their own files, which the capture never sees: a
        // target whose logs cannot be read is not searched as if they were empty.
        if let Some(own) = self
            .target
            .own_logs()
            .map_err(|e| format!("the service's logs cannot be searched: {e}"))?
        {
            logs.push_str(&own);
        }
        let url = self
            .target
            .database_url()
            .ok_or("the target has no database to dump")?;
        let dump = evidence::pg_dump(url)
            .await
            .map_err(|e| format!("pg_dump: {e}"))?;
        let redis_access = self.target.need_redis()?;
        let redis = evidence::redis_dump(redis_access.url, redis_access.prefix)
            .await
            .map_err(|e| e.to_string())?;
        let redis_text = serde_json::to_string(&redis).unwrap_or_default();
        let sources = crate::oracles::LeakSources {
            pg_dump: &dump,
            redis: &redis_text,
            logs: &logs,
            responses: &self.responses,
        };
        crate::oracles::no_canary_leaks(&canaries, &sources)?;
        Ok(format!(
            "{} issued codes/tokens absent from pg_dump ({} KiB), {} Redis keys, {} responses and {} KiB of logs",
            canaries.len(),
            dump.len() / 1024,
            redis.len(),
            self.responses.len(),
            logs.len() / 1024
        ))
    }
}
