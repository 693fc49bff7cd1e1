//! [`ScenarioRunner`]: runs one scenario against the service on a fresh isolated environment and
//! records its trace. Blocking is read from the server's lock tables only; a step that should block
//! and completes, or should complete and blocks past its timeout, fails with a lock-table snapshot.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use harbor_service::domain::{Provider, TenantId, UserId, WorkspaceId};
use harbor_service::lifecycle::ConnectionStatus;
use harbor_service::locks::lock_key_for_workspace;
use harbor_service::ratelimit::Quota;
use harbor_syncpoint::{SlotKey, SlotState};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};
use futures::future::BoxFuture;
use tokio::task::JoinHandle;

use super::load::LoadedScenario;
use super::logs::LogCapture;
use super::model::{Action, Assertion, Expect, Scenario, Step, TokenChoice};
use super::trace::{EventKind, LockEvidence, Trace, TraceEvent};
use crate::evidence;
use crate::fake_provider::{self, Consent, Fault};
use crate::fixtures::{self, TenantWorkspace};
use crate::provision::Infra;
use crate::service::{ServiceOptions, ServiceUnderTest};
use crate::tokens::TokenKind;

/// Why a run failed.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Failure {
    /// The step (`None`: a final assertion or the set-up).
    pub step: Option<usize>,
    /// What was expected and what happened.
    pub message: String,
    /// Lock tables and backends when it failed, for blocking-related failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Value>,
    /// True when the environment, not the service, failed (the run could not happen).
    pub environment: bool,
}

/// One run of one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioRun {
    /// What happened, in order.
    pub trace: Trace,
    /// Empty when the run passed.
    pub failures: Vec<Failure>,
    /// Expectations and assertions that held.
    pub checks: usize,
    /// Wall time of the run, set-up and clean-up included.
    pub duration: Duration,
}

/// Runs scenarios on provisioned servers.
pub struct ScenarioRunner<'a> {
    infra: &'a Infra,
    logs: Option<LogCapture>,
    flaws: harbor_service::flaws::Flaws,
}

/// A step's result.
#[derive(Clone, Debug, Default)]
struct Outcome {
    status: u16,
    body: Value,
    raw: String,
    consent: Option<Consent>,
    ok: bool,
    error: Option<String>,
    /// The answer is an error its operation's contract does not list (`service/src/contract.rs`).
    off_contract: Option<String>,
}

impl Outcome {
    fn summary(&self) -> String {
        if self.status == 0 {
            return match &self.error {
                None => "ok".to_owned(),
                Some(e) => format!("error: {}", e.lines().next().unwrap_or_default()),
            };
        }
        // Status plus the fields that say what happened, so repeated runs are compared on them.
        match self.body["error"]["code"].as_str() {
            Some(code) => format!("{} {code}", self.status),
            None => match (
                self.body.get("status").and_then(Value::as_str),
                self.body.get("already_completed"),
                self.body.get("refreshed"),
            ) {
                (Some(s), _, _) => format!("{} {s}", self.status),
                (None, Some(done), _) => format!("{} already_completed={done}", self.status),
                (None, None, Some(refreshed)) => format!("{} refreshed={refreshed}", self.status),
                _ => self.status.to_string(),
            },
        }
    }
}

enum HttpKind {
    Plain { method: reqwest::Method, path: String, body: Option<Value> },
    Authorize { path: String },
    Callback { provider: Provider, consent: Option<Consent>, denied: bool },
    Connect { path: String, provider: Provider, callback_replica: usize },
}

struct HttpJob {
    http: reqwest::Client,
    bases: Vec<String>,
    replica: usize,
    actor: String,
    token: Option<String>,
    headers: Vec<(String, String)>,
    kind: HttpKind,
}

struct SqlJob {
    conn: PgConnection,
    sql: String,
    rows: bool,
    role: Option<String>,
    tenant: Option<TenantId>,
}

enum Job {
    Http(HttpJob),
    Sql(SqlJob),
}

type JobResult = (Outcome, Option<PgConnection>);

async fn send(job: &HttpJob, replica: usize, method: reqwest::Method, path: &str, body: Option<&Value>) -> Outcome {
    let method_name = method.to_string();
    let mut req = job.http.request(method, format!("{}{}", job.bases[replica], path)).header("x-harbor-actor", &job.actor);
    if let Some(t) = &job.token {
        req = req.bearer_auth(t);
    }
    for (k, v) in &job.headers {
        req = req.header(k, v);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let raw = resp.text().await.unwrap_or_default();
            let body: Value = serde_json::from_str(&raw).unwrap_or(Value::String(raw.clone()));
            // Every answer the catalogue provokes is held to the contract, whatever the step expects.
            let off_contract = body["error"]["code"]
                .as_str()
                .and_then(|code| harbor_service::contract::check_answer(&method_name, path, status, code).err());
            Outcome { status, body, raw, ok: (200..300).contains(&status), off_contract, ..Outcome::default() }
        }
        Err(e) => Outcome { error: Some(format!("request failed: {e}")), ..Outcome::default() },
    }
}

fn run_job(job: Job) -> BoxFuture<'static, JobResult> {
    Box::pin(async move {
        match job {
            Job::Http(job) => (run_http(&job).await, None),
            Job::Sql(job) => run_sql(job).await,
        }
    })
}

// Boxed with an explicit `Send` so the spawned futures' lifetimes are concrete (a known limit of
// the compiler's Send inference for async fns taking references).
fn run_http(job: &HttpJob) -> BoxFuture<'_, Outcome> {
    Box::pin(run_http_inner(job))
}

async fn run_http_inner(job: &HttpJob) -> Outcome {
    match &job.kind {
        HttpKind::Plain { method, path, body } => send(job, job.replica, method.clone(), path, body.as_ref()).await,
        HttpKind::Authorize { path } => authorize(job, path).await,
        HttpKind::Callback { provider, consent, denied } => match consent {
            Some(c) => {
                let query = if *denied { c.denied_query() } else { c.callback_query() };
                let path = format!("/v1/oauth/{provider}/callback?{query}");
                send(job, job.replica, reqwest::Method::GET, &path, None).await
            }
            None => Outcome { error: Some("no consent to deliver (its authorize step failed or never ran)".into()), ..Outcome::default() },
        },
        HttpKind::Connect { path, provider, callback_replica } => {
            let started = authorize(job, path).await;
            match &started.consent {
                Some(c) => {
                    let path = format!("/v1/oauth/{provider}/callback?{}", c.callback_query());
                    send(job, *callback_replica, reqwest::Method::GET, &path, None).await
                }
                None => started,
            }
        }
    }
}

async fn authorize(job: &HttpJob, path: &str) -> Outcome {
    let mut outcome = send(job, job.replica, reqwest::Method::POST, path, None).await;
    if let Some(url) = outcome.body["authorization_url"].as_str().map(str::to_owned) {
        match fake_provider::consent(&job.http, &url).await {
            Ok(c) => outcome.consent = Some(c),
            Err(e) => {
                outcome.ok = false;
                outcome.error = Some(format!("consent at the provider failed: {e}"));
            }
        }
    }
    outcome
}

fn run_sql(job: SqlJob) -> BoxFuture<'static, JobResult> {
    Box::pin(run_sql_inner(job))
}

fn exec(conn: &mut PgConnection, sql: String) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move { conn.execute(sqlx::raw_sql(&sql)).await.map(|_| ()) })
}

fn exec_bound<'c>(conn: &'c mut PgConnection, sql: &'static str, value: String) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move { sqlx::query(sql).bind(value).execute(&mut *conn).await.map(|_| ()) })
}

fn fetch_json(conn: &mut PgConnection, sql: String) -> BoxFuture<'_, Result<Value, sqlx::Error>> {
    Box::pin(async move { sqlx::query_scalar::<_, Value>(&sql).fetch_one(&mut *conn).await })
}

async fn sql_steps(job: &mut SqlJob) -> Result<Option<Value>, sqlx::Error> {
    if let Some(role) = job.role.clone() {
        exec(&mut job.conn, format!("SET ROLE \"{role}\"")).await?;
    }
    if let Some(t) = job.tenant {
        exec_bound(&mut job.conn, "SELECT set_config('harbor.tenant_id', $1, false)", t.to_string()).await?;
    }
    let rows = if job.rows {
        let wrapped = format!("SELECT coalesce(json_agg(t), '[]'::json) FROM ({}) t", job.sql.trim().trim_end_matches(';'));
        Some(fetch_json(&mut job.conn, wrapped).await?)
    } else {
        exec(&mut job.conn, job.sql.clone()).await?;
        None
    };
    if job.tenant.is_some() {
        exec(&mut job.conn, "SELECT set_config('harbor.tenant_id', '', false)".to_owned()).await?;
    }
    if job.role.is_some() {
        exec(&mut job.conn, "RESET ROLE".to_owned()).await?;
    }
    Ok(rows)
}

async fn run_sql_inner(mut job: SqlJob) -> JobResult {
    let outcome = match sql_steps(&mut job).await {
        Ok(rows) => Outcome { ok: true, body: rows.unwrap_or(Value::Null), ..Outcome::default() },
        Err(e) => Outcome { ok: false, error: Some(e.to_string()), ..Outcome::default() },
    };
    (outcome, Some(job.conn))
}

struct Background {
    step: usize,
    handle: JoinHandle<JobResult>,
    expect: Option<Expect>,
}

struct Ctx<'s> {
    sc: &'s Scenario,
    sut: &'s ServiceUnderTest,
    tenants: HashMap<String, TenantWorkspace>,
    sets: HashMap<String, Vec<TenantWorkspace>>,
    consents: HashMap<String, Consent>,
    sessions: HashMap<String, PgConnection>,
    background: HashMap<String, Background>,
    parked_on: HashMap<SlotKey, usize>,
    trace: Trace,
    started: Instant,
    responses: Vec<String>,
    /// Error answers that their operation's contract does not list (each fails the run).
    off_contract: Vec<String>,
    step_timeout: Duration,
    checks: usize,
    logs: Option<LogCapture>,
    /// Where this run's logs start in the capture.
    log_mark: Option<super::logs::LogMark>,
}

fn fail(step: Option<usize>, message: impl Into<String>) -> Failure {
    Failure { step, message: message.into(), diagnostics: None, environment: false }
}

impl<'a> ScenarioRunner<'a> {
    /// A runner on `infra`; `logs` is the capture of the service's logs, searched by
    /// `no_canary_leaks` (without it that assertion fails rather than pass unchecked).
    pub fn new(infra: &'a Infra, logs: Option<LogCapture>) -> Self {
        Self { infra, logs, flaws: harbor_service::flaws::Flaws::none() }
    }

    /// Runs the service under test with these seeded flaws (`harbor-certify mutants`).
    pub fn with_flaws(mut self, flaws: harbor_service::flaws::Flaws) -> Self {
        self.flaws = flaws;
        self
    }

    /// Runs the scenario once on a fresh environment.
    pub async fn run(&self, loaded: &LoadedScenario) -> ScenarioRun {
        let started = Instant::now();
        let sc = &loaded.scenario;
        let mut options = ServiceOptions {
            replicas: sc.service.replicas,
            sync_points: true,
            flaws: self.flaws.clone(),
            ..ServiceOptions::default()
        };
        options.sync_point_timeout = Duration::from_millis(sc.service.step_timeout_ms * 4);
        if let Some(n) = sc.service.database_max_connections {
            options.database_max_connections = n;
        }
        if let Some(ms) = sc.service.database_acquire_timeout_ms {
            options.database_acquire_timeout = Duration::from_millis(ms);
        }
        if let Some(q) = &sc.service.rate_limit_tenant {
            options.rate_limits.per_tenant = q.parse::<Quota>().expect("checked at load");
        }
        if let Some(q) = &sc.service.rate_limit_failed_states {
            options.rate_limits.failed_states_per_user = q.parse::<Quota>().expect("checked at load");
        }
        let sut = match ServiceUnderTest::start(self.infra, options).await {
            Ok(sut) => sut,
            Err(e) => {
                let mut f = fail(None, format!("the service under test did not start: {e}"));
                f.environment = true;
                return ScenarioRun { trace: Trace::default(), failures: vec![f], checks: 0, duration: started.elapsed() };
            }
        };
        let mut ctx = Ctx {
            sc,
            sut: &sut,
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
            step_timeout: Duration::from_millis(sc.service.step_timeout_ms),
            checks: 0,
            log_mark: self.logs.as_ref().map(LogCapture::mark),
            logs: self.logs.clone(),
        };
        let mut failures = Vec::new();
        if let Err(f) = ctx.fixtures().await {
            failures.push(f);
        } else {
            ctx.started = Instant::now();
            let mut described: Vec<String> = sc.tenants.iter().map(|t| t.name.clone()).collect();
            described.extend(sc.tenant_sets.iter().map(|s| format!("{}×{}", s.count, s.prefix)));
            ctx.event(None, None, EventKind::Note, format!("fixtures: tenants {}", described.join(", ")), None);
            for (i, step) in sc.steps.iter().enumerate() {
                if let Err(f) = ctx.step(i, step).await {
                    ctx.event(Some(i), step.actor.clone(), EventKind::Failed, f.message.clone(), None);
                    failures.push(f);
                    break;
                }
            }
            if failures.is_empty() {
                failures.extend(ctx.finish_background().await);
            }
            // An answer outside the contract fails the run even if the step expected it.
            let mut seen = std::collections::BTreeSet::new();
            for answer in std::mem::take(&mut ctx.off_contract) {
                if seen.insert(answer.clone()) {
                    ctx.event(None, None, EventKind::Failed, answer.clone(), None);
                    failures.push(fail(None, answer));
                }
            }
            if failures.is_empty() {
                for a in &sc.assertions {
                    if let Err(f) = ctx.assertion(None, a).await {
                        ctx.event(None, None, EventKind::Failed, f.message.clone(), None);
                        failures.push(f);
                    }
                }
            }
        }
        // Clean-up: free every parked request, end every background step and session.
        for r in &sut.replicas {
            r.sync.release_all();
        }
        for (_, b) in ctx.background.drain() {
            b.handle.abort();
        }
        for (_, conn) in ctx.sessions.drain() {
            let _ = conn.close().await;
        }
        let trace = std::mem::take(&mut ctx.trace);
        let checks = ctx.checks;
        drop(ctx);
        if let Err(e) = sut.stop().await {
            let mut f = fail(None, format!("clean-up failed: {e}"));
            f.environment = true;
            failures.push(f);
        }
        ScenarioRun { trace, failures, checks, duration: started.elapsed() }
    }
}

fn toml_to_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn json_eq(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_eq(x, y)),
        (Value::Object(a), Value::Object(b)) => a.len() == b.len() && b.iter().all(|(k, y)| a.get(k).is_some_and(|x| json_eq(x, y))),
        _ => actual == expected,
    }
}

fn lookup<'v>(body: &'v Value, dotted: &str) -> Option<&'v Value> {
    dotted.split('.').try_fold(body, |v, k| match v {
        Value::Array(items) => k.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => v.get(k),
    })
}

fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

impl Ctx<'_> {
    fn event(&mut self, step: Option<usize>, actor: Option<String>, kind: EventKind, detail: String, evidence: Option<LockEvidence>) {
        let at_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.trace.events.push(TraceEvent { at_ms, step, actor, kind, detail, note: None, evidence });
    }

    fn annotate(&mut self, note: Option<&String>) {
        if let (Some(n), Some(last)) = (note, self.trace.events.last_mut()) {
            last.note = Some(n.trim().to_owned());
        }
    }

    async fn fixtures(&mut self) -> Result<(), Failure> {
        let db = &self.sut.db;
        let env_fail = |e: String| Failure { step: None, message: format!("fixtures: {e}"), diagnostics: None, environment: false };
        for t in &self.sc.tenants {
            let qbo = t.connections.get("qbo").map(|s| ConnectionStatus::parse(s).expect("checked")).unwrap_or(ConnectionStatus::NotConnected);
            let tw = TenantWorkspace::create(db, &t.name, t.entitled, qbo).await.map_err(|e| env_fail(e.to_string()))?;
            for (p, status) in &t.connections {
                let provider = Provider::parse(p).expect("checked");
                let status = ConnectionStatus::parse(status).expect("checked");
                fixtures::connection_status(db, tw.workspace, provider, status).await.map_err(|e| env_fail(e.to_string()))?;
            }
            for p in &t.oauth {
                let provider = Provider::parse(p).expect("checked");
                self.sut.connect(tw.owner, tw.workspace, provider).await.map_err(|e| env_fail(format!("connecting {} to {p}: {e}", t.name)))?;
            }
            self.tenants.insert(t.name.clone(), tw);
        }
        for set in &self.sc.tenant_sets {
            let mut members = Vec::with_capacity(set.count);
            for i in 0..set.count {
                let name = format!("{}{i}", set.prefix);
                let tw = TenantWorkspace::create(db, &name, set.entitled, ConnectionStatus::NotConnected)
                    .await
                    .map_err(|e| env_fail(e.to_string()))?;
                members.push(tw);
            }
            self.sets.insert(set.prefix.clone(), members);
        }
        Ok(())
    }

    fn subst(&self, text: &str) -> String {
        let mut out = text.replace("{prefix}", &self.sut.env.redis_key_prefix);
        for (name, t) in &self.tenants {
            out = out
                .replace(&format!("{{workspace:{name}}}"), &t.workspace.to_string())
                .replace(&format!("{{tenant:{name}}}"), &t.tenant.to_string())
                .replace(&format!("{{user:{name}.owner}}"), &t.owner.to_string())
                .replace(&format!("{{user:{name}.member}}"), &t.member.to_string());
        }
        out
    }

    fn user(&self, user_ref: &str) -> UserId {
        let (tenant, role) = user_ref.rsplit_once('.').expect("checked");
        let t = &self.tenants[tenant];
        if role == "owner" {
            t.owner
        } else {
            t.member
        }
    }

    fn actor_def(&self, name: &str) -> &super::model::ActorDef {
        self.sc.actors.iter().find(|a| a.name == name).expect("checked")
    }

    fn token_for(&self, actor: &str, user: Option<UserId>) -> Option<String> {
        let def = self.actor_def(actor);
        let kind = match def.token {
            TokenChoice::None => return None,
            TokenChoice::Valid => TokenKind::Valid,
            TokenChoice::Expired => TokenKind::Expired,
            TokenChoice::NotYetValid => TokenKind::NotYetValid,
            TokenChoice::WrongKey => TokenKind::WrongKey,
            TokenChoice::WrongAudience => TokenKind::WrongAudience,
            TokenChoice::WrongIssuer => TokenKind::WrongIssuer,
        };
        let user = user.or_else(|| def.user.as_deref().map(|u| self.user(u)))?;
        Some(self.sut.tokens.token(user.0, kind))
    }

    fn workspace_of(&self, step: &Step, actor: &str) -> WorkspaceId {
        if let Some(w) = &step.workspace {
            return self.tenants[w].workspace;
        }
        let user = self.actor_def(actor).user.as_deref().expect("checked: actor has a user or the step a workspace");
        let (tenant, _) = user.rsplit_once('.').expect("checked");
        self.tenants[tenant].workspace
    }

    fn describe(&self, step: &Step) -> String {
        let p = step.provider.as_deref().unwrap_or("");
        match step.action {
            Action::Http => format!("{} {}", step.method.as_deref().unwrap_or(""), step.path.as_deref().unwrap_or("")),
            Action::Activate => "POST activation".into(),
            Action::Authorize => format!("POST {p}/authorize + consent"),
            Action::Callback => match &step.consent_of {
                Some(o) => format!("GET {p}/callback with {o}'s state"),
                None => format!("GET {p}/callback"),
            },
            Action::Connect => format!("connect {p}"),
            Action::Disconnect => format!("POST {p}/disconnect"),
            Action::Revoke => format!("POST {p}/revoke"),
            Action::Sync => format!("POST {p}/sync"),
            Action::ListConnections => "GET connections".into(),
            Action::ListDocuments => "GET documents".into(),
            Action::Sql => step.sql.as_deref().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" "),
            Action::Redis => step.redis.as_ref().map(|r| r.join(" ")).unwrap_or_default(),
            _ => format!("{:?}", step.action),
        }
    }

    /// The HTTP job of `step` for `actor`, as `user` on `workspace` (overrides for `each_of`).
    fn http_job(&self, step: &Step, actor: &str, user: Option<UserId>, workspace: Option<WorkspaceId>) -> HttpJob {
        let ws = workspace.unwrap_or_else(|| if step.action == Action::Http { WorkspaceId(uuid::Uuid::nil()) } else { self.workspace_of(step, actor) });
        let provider = step.provider.as_deref().map(|p| Provider::parse(p).expect("checked"));
        let conn_path = |op: &str| format!("/v1/workspaces/{ws}/connections/{}/{op}", provider.expect("checked"));
        let kind = match step.action {
            Action::Http => HttpKind::Plain {
                method: step.method.as_deref().unwrap_or("GET").parse().expect("checked"),
                path: self.subst(step.path.as_deref().unwrap_or("/")),
                body: step.body.as_ref().map(|b| serde_json::from_str(&self.subst(&toml_to_json(b).to_string())).unwrap_or(Value::Null)),
            },
            Action::Activate => HttpKind::Plain { method: reqwest::Method::POST, path: format!("/v1/workspaces/{ws}/activation"), body: None },
            Action::Authorize => HttpKind::Authorize { path: conn_path("authorize") },
            Action::Callback => HttpKind::Callback {
                provider: provider.expect("checked"),
                consent: self.consents.get(step.consent_of.as_deref().unwrap_or(actor)).cloned(),
                denied: step.denied,
            },
            Action::Connect => HttpKind::Connect {
                path: conn_path("authorize"),
                provider: provider.expect("checked"),
                callback_replica: step.callback_replica.unwrap_or(step.replica),
            },
            Action::Disconnect => HttpKind::Plain { method: reqwest::Method::POST, path: conn_path("disconnect"), body: None },
            Action::Revoke => HttpKind::Plain { method: reqwest::Method::POST, path: conn_path("revoke"), body: None },
            Action::Sync => HttpKind::Plain { method: reqwest::Method::POST, path: conn_path("sync"), body: None },
            Action::ListConnections => HttpKind::Plain { method: reqwest::Method::GET, path: format!("/v1/workspaces/{ws}/connections"), body: None },
            Action::ListDocuments => HttpKind::Plain { method: reqwest::Method::GET, path: format!("/v1/workspaces/{ws}/documents"), body: None },
            _ => unreachable!("not an HTTP action"),
        };
        HttpJob {
            http: self.sut.http.clone(),
            bases: self.sut.replicas.iter().map(|r| r.base_url.clone()).collect(),
            replica: step.replica,
            actor: actor.to_owned(),
            token: self.token_for(actor, user),
            headers: step.headers.iter().map(|(k, v)| (k.clone(), self.subst(v))).collect(),
            kind,
        }
    }

    async fn session(&mut self, actor: &str) -> Result<PgConnection, Failure> {
        if let Some(conn) = self.sessions.remove(actor) {
            return Ok(conn);
        }
        let options: sqlx::postgres::PgConnectOptions = self.sut.env.database_url.parse().map_err(|e: sqlx::Error| fail(None, e.to_string()))?;
        options
            .application_name(&format!("harbor:{actor}"))
            .connect()
            .await
            .map_err(|e| fail(None, format!("opening {actor}'s SQL session: {e}")))
    }

    async fn job(&mut self, step: &Step, actor: &str) -> Result<Job, Failure> {
        if step.action == Action::Sql {
            let conn = self.session(actor).await?;
            let rows = step.expect.as_ref().is_some_and(|e| e.rows.is_some());
            return Ok(Job::Sql(SqlJob {
                conn,
                sql: self.subst(step.sql.as_deref().unwrap_or_default()),
                rows,
                role: step.role.clone(),
                tenant: step.tenant.as_ref().map(|t| self.tenants[t].tenant),
            }));
        }
        Ok(Job::Http(self.http_job(step, actor, None, None)))
    }

    fn absorb(&mut self, actor: &str, result: JobResult) -> Outcome {
        let (outcome, conn) = result;
        if let Some(conn) = conn {
            self.sessions.insert(actor.to_owned(), conn);
        }
        if let Some(c) = &outcome.consent {
            self.consents.insert(actor.to_owned(), c.clone());
        }
        if !outcome.raw.is_empty() {
            self.responses.push(outcome.raw.clone());
        }
        self.off_contract.extend(outcome.off_contract.clone());
        outcome
    }

    async fn diagnostics(&self) -> Value {
        let locks = evidence::lock_snapshot(&self.sut.db).await.unwrap_or_default();
        let mut backends = Vec::new();
        for a in &self.sc.actors {
            if let Ok(Some(act)) = evidence::activity_of(&self.sut.db, &a.name).await {
                backends.push(act);
            }
        }
        json!({ "locks": locks, "backends": backends })
    }

    fn check_expect(&self, outcome: &Outcome, e: &Expect) -> Result<(), String> {
        if let Some(s) = e.status {
            if outcome.status != s {
                return Err(format!("expected status {s}, got {}", outcome.summary()));
            }
        }
        if let Some(c) = &e.code {
            if outcome.body["error"]["code"].as_str() != Some(c.as_str()) {
                return Err(format!("expected error code {c}, got {}", outcome.summary()));
            }
        }
        for (path, want) in &e.body {
            let want = toml_to_json(want);
            match lookup(&outcome.body, path) {
                Some(got) if json_eq(got, &want) => {}
                got => return Err(format!("expected body.{path} = {want}, got {}", got.map_or("nothing".to_owned(), Value::to_string))),
            }
        }
        for x in &e.body_excludes {
            let x = self.subst(x);
            if outcome.raw.contains(&x) {
                return Err(format!("the body contains {x:?}"));
            }
        }
        for x in &e.body_contains {
            let x = self.subst(x);
            if !outcome.raw.contains(&x) {
                return Err(format!("the body does not contain {x:?}"));
            }
        }
        if let Some(ok) = e.ok {
            if outcome.ok != ok {
                return Err(format!("expected ok = {ok}, got {}", outcome.summary()));
            }
        }
        if let Some(x) = &e.error_contains {
            if !outcome.error.as_deref().unwrap_or_default().contains(x.as_str()) {
                return Err(format!("expected an error containing {x:?}, got {}", outcome.summary()));
            }
        }
        if let Some(rows) = &e.rows {
            let want = Value::Array(rows.iter().map(|r| serde_json::to_value(r).unwrap_or(Value::Null)).collect());
            let want: Value = serde_json::from_str(&self.subst(&want.to_string())).unwrap_or(want);
            if !json_eq(&outcome.body, &want) {
                return Err(format!("expected rows {want}, got {}", outcome.body));
            }
        }
        if let (Some(error), None, None) = (&outcome.error, e.ok, &e.error_contains) {
            return Err(format!("{} ({error})", outcome.summary()));
        }
        Ok(())
    }

    fn expect_outcome(&mut self, step: usize, actor: &str, outcome: &Outcome, expect: Option<&Expect>) -> Result<(), Failure> {
        self.event(Some(step), Some(actor.to_owned()), EventKind::Completed, outcome.summary(), None);
        match expect {
            Some(e) => {
                self.check_expect(outcome, e).map_err(|m| fail(Some(step), format!("{actor}: {m}")))?;
                self.checks += 1;
                Ok(())
            }
            None if outcome.error.is_some() => Err(fail(Some(step), format!("{actor}: {} ({})", outcome.summary(), outcome.error.as_deref().unwrap_or_default()))),
            // A step without an expectation still must not crash the service.
            None if outcome.status >= 500 => Err(fail(Some(step), format!("{actor}: {} (a server error, and the step expected nothing)", outcome.summary()))),
            None => Ok(()),
        }
    }

    async fn step(&mut self, i: usize, step: &Step) -> Result<(), Failure> {
        let actor = step.actor.clone();
        match step.action {
            Action::AdvanceClock => {
                let secs = step.seconds.expect("checked");
                self.sut.clock.advance(Duration::from_secs(secs));
                self.event(Some(i), None, EventKind::Note, format!("clock +{secs} s"), None);
                return Ok(());
            }
            Action::Provider => {
                let provider = Provider::parse(step.provider.as_deref().expect("checked")).expect("checked");
                let fault = step.token_fault.clone();
                let revoke = step.revoke_fails;
                let rotate = step.rotate_refresh_tokens;
                let (expires_in, reverse) = (step.expires_in, step.reverse_documents);
                self.sut.provider.configure(provider, |s| {
                    if let Some(e) = expires_in {
                        s.expires_in = e;
                    }
                    if let Some(r) = reverse {
                        s.reverse_documents = r;
                    }
                    if let Some(f) = &fault {
                        s.token_fault = match f.as_str() {
                            "server_error" => Some(Fault::ServerError),
                            "invalid_grant" => Some(Fault::InvalidGrant),
                            _ => None,
                        };
                    }
                    if let Some(r) = revoke {
                        s.revoke_fails = r;
                    }
                    if let Some(r) = rotate {
                        s.rotate_refresh_tokens = r;
                    }
                });
                self.event(Some(i), None, EventKind::Note, format!("provider {provider}: token_fault={fault:?} revoke_fails={revoke:?} expires_in={expires_in:?} reverse_documents={reverse:?}"), None);
                return Ok(());
            }
            Action::Assert => return self.assertion(Some(i), step.check.as_ref().expect("checked")).await,
            Action::Fault => {
                let fault = step.fault.expect("checked");
                self.sut.apply_fault(fault);
                self.event(Some(i), None, EventKind::Note, format!("fault: {}", fault.as_str()), None);
                self.annotate(step.note.as_ref());
                return Ok(());
            }
            Action::Release => {
                let actor = actor.expect("checked");
                let key = SlotKey::new(actor.clone(), step.point.clone().expect("checked"));
                let replica = self.parked_on.get(&key).copied().unwrap_or(step.replica);
                self.sut.replicas[replica]
                    .sync
                    .release(&key)
                    .map_err(|e| fail(Some(i), format!("releasing {key}: {e} (was it parked?)")))?;
                self.event(Some(i), Some(actor.clone()), EventKind::Released, key.point.clone(), None);
                if let Some(blocked) = &step.expect_blocked {
                    // The released request goes on in its background job and must block next.
                    let mut bg = self.background.remove(&actor).ok_or_else(|| fail(Some(i), format!("{actor} has no request running to block")))?;
                    let evidence = self.until_blocked(i, &actor, blocked, &mut bg.handle).await;
                    self.background.insert(actor.clone(), bg);
                    let detail = format!("blocked on {}", blocked.on);
                    self.event(Some(i), Some(actor), EventKind::Blocked, detail, Some(evidence?));
                    self.checks += 1;
                }
                return Ok(());
            }
            Action::Wait => {
                let actor = actor.expect("checked");
                let bg = self.background.remove(&actor).expect("checked at load");
                let limit = self.step_timeout;
                let result = match tokio::time::timeout(limit, bg.handle).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => return Err(fail(Some(i), format!("{actor}'s step panicked: {e}"))),
                    Err(_) => {
                        let mut f = fail(Some(i), format!("{actor}'s step {} did not finish within {limit:?}", bg.step));
                        f.diagnostics = Some(self.diagnostics().await);
                        return Err(f);
                    }
                };
                let outcome = self.absorb(&actor, result);
                let checked = self.expect_outcome(bg.step, &actor, &outcome, bg.expect.as_ref());
                self.annotate(step.note.as_ref());
                return checked;
            }
            Action::Redis => {
                let actor = actor.expect("checked");
                let args: Vec<String> = step.redis.as_ref().expect("checked").iter().map(|a| self.subst(a)).collect();
                self.event(Some(i), Some(actor.clone()), EventKind::Launched, args.join(" "), None);
                let outcome = self.redis(&args).await;
                return self.expect_outcome(i, &actor, &outcome, step.expect.as_ref());
            }
            _ => {}
        }
        let actor = actor.expect("checked");
        if step.concurrency.is_some() || step.each_of.is_some() {
            return self.many(i, step, &actor).await;
        }
        let job = self.job(step, &actor).await?;
        let background = step.park_at.is_some() || step.expect_blocked.is_some() || step.background;
        // The request that reaches the point runs on the step's replica (a `connect`'s callback on
        // its callback replica); only that replica's controller is armed.
        let park_replica = match (step.action, step.park_at.as_deref()) {
            (Action::Connect, Some(p)) if p.starts_with("oauth.callback") => step.callback_replica.unwrap_or(step.replica),
            _ => step.replica,
        };
        if let Some(point) = &step.park_at {
            let key = SlotKey::new(actor.clone(), point.clone());
            self.sut.replicas[park_replica].sync.arm(key.clone()).map_err(|e| fail(Some(i), format!("arming {key}: {e}")))?;
            self.parked_on.insert(key, park_replica);
        }
        self.event(Some(i), Some(actor.clone()), EventKind::Launched, self.describe(step), None);
        self.annotate(step.note.as_ref());
        if !background {
            let limit = self.step_timeout;
            return match tokio::time::timeout(limit, run_job(job)).await {
                Ok(result) => {
                    let outcome = self.absorb(&actor, result);
                    self.expect_outcome(i, &actor, &outcome, step.expect.as_ref())
                }
                Err(_) => {
                    let mut f = fail(Some(i), format!("{actor}: did not complete within {limit:?} (blocked?)"));
                    f.diagnostics = Some(self.diagnostics().await);
                    Err(f)
                }
            };
        }
        let mut handle = tokio::spawn(run_job(job));
        if let Some(point) = &step.park_at {
            self.until_parked(i, &actor, point, &mut handle).await?;
        }
        if let Some(blocked) = &step.expect_blocked {
            let evidence = self.until_blocked(i, &actor, blocked, &mut handle).await?;
            let detail = format!("blocked on {}", blocked.on);
            self.event(Some(i), Some(actor.clone()), EventKind::Blocked, detail, Some(evidence));
            self.checks += 1;
        }
        self.background.insert(actor, Background { step: i, handle, expect: step.expect.clone() });
        Ok(())
    }

    async fn completed_early(&mut self, i: usize, actor: &str, handle: &mut JoinHandle<JobResult>, expected: &str) -> Failure {
        let result = handle.await;
        let summary = match result {
            Ok(r) => self.absorb(actor, r).summary(),
            Err(e) => format!("panicked: {e}"),
        };
        let mut f = fail(Some(i), format!("{actor}: expected to {expected}, but it completed: {summary}"));
        f.diagnostics = Some(self.diagnostics().await);
        f
    }

    async fn until_parked(&mut self, i: usize, actor: &str, point: &str, handle: &mut JoinHandle<JobResult>) -> Result<(), Failure> {
        let key = SlotKey::new(actor.to_owned(), point.to_owned());
        let replica = self.parked_on.get(&key).copied().unwrap_or(0);
        let parked = self.sut.replicas[replica].sync.until(key.clone(), SlotState::Parked);
        let deadline = tokio::time::sleep(self.step_timeout);
        tokio::select! {
            _ = parked => {
                self.event(Some(i), Some(actor.to_owned()), EventKind::Parked, point.to_owned(), None);
                self.checks += 1;
                Ok(())
            }
            _ = &mut *handle => {
                // The handle's result is consumed by select; report what we know.
                let mut f = fail(Some(i), format!("{actor}: expected to park at {point}, but the request completed first"));
                f.diagnostics = Some(self.diagnostics().await);
                Err(f)
            }
            _ = deadline => {
                let mut f = fail(Some(i), format!("{actor}: never reached sync point {point} within {:?}", self.step_timeout));
                f.diagnostics = Some(self.diagnostics().await);
                Err(f)
            }
        }
    }

    async fn until_blocked(
        &mut self,
        i: usize,
        actor: &str,
        blocked: &super::model::ExpectBlocked,
        handle: &mut JoinHandle<JobResult>,
    ) -> Result<LockEvidence, Failure> {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < self.step_timeout {
            if handle.is_finished() {
                return Err(self.completed_early(i, actor, handle, &format!("block on {}", blocked.on)).await);
            }
            if let Ok(Some(a)) = evidence::activity_of(&self.sut.db, actor).await {
                if a.is_lock_waiting() && a.blocking_actors().iter().any(|b| b == &blocked.on) {
                    let locks = evidence::lock_snapshot(&self.sut.db).await.unwrap_or_default();
                    let holder_app = format!("harbor:{}", blocked.on);
                    // Not merely "somewhere in pg_blocking_pids" (a waiter queued ahead is listed
                    // too): the `on` actor must *hold* the very lock being awaited.
                    let awaited = locks.iter().find(|l| l.pid == a.pid && !l.granted);
                    let held_by_on = awaited.is_some_and(|w| {
                        locks.iter().any(|l| l.granted && l.application_name == holder_app && l.same_object(w))
                    });
                    if let (Some(w), true) = (awaited, held_by_on) {
                        let ev = LockEvidence {
                            pid: a.pid,
                            blocking_pids: a.blocking_pids.clone(),
                            blocking_actors: a.blocking_actors(),
                            lock_type: w.locktype.clone(),
                            mode: w.mode.clone(),
                            classid: w.classid,
                            objid: w.objid,
                            relation: w.relation.clone(),
                        };
                        if !blocked.lock.is_empty() && !blocked.lock.contains(&ev.lock_type) {
                            let mut f = fail(Some(i), format!("{actor}: blocked on {} but on a {} lock, expected {}", blocked.on, ev.lock_type, blocked.lock.join(" or ")));
                            f.diagnostics = Some(json!({ "evidence": ev, "locks": locks }));
                            return Err(f);
                        }
                        if let Some(t) = &blocked.object {
                            let key = lock_key_for_workspace(self.tenants[t].workspace);
                            let holder_has_it = locks.iter().any(|l| {
                                l.granted
                                    && l.locktype == "advisory"
                                    && l.application_name == format!("harbor:{}", blocked.on)
                                    && l.classid == Some(i64::from(key.classid as u32))
                                    && l.objid == Some(i64::from(key.objid as u32))
                            });
                            let same = ev.classid == Some(i64::from(key.classid as u32)) && ev.objid == Some(i64::from(key.objid as u32));
                            if !(same && holder_has_it) {
                                let mut f = fail(
                                    Some(i),
                                    format!(
                                        "{actor}: waits for ({:?}, {:?}), but {t}'s workspace lock is ({:#x}, {}) and {} must hold it",
                                        ev.classid, ev.objid, key.classid, key.objid as u32, blocked.on
                                    ),
                                );
                                f.diagnostics = Some(json!({ "evidence": ev, "locks": locks }));
                                return Err(f);
                            }
                        }
                        return Ok(ev);
                    }
                }
                last = Some(a);
            }
            tokio::time::sleep(evidence::POLL_INTERVAL).await;
        }
        let mut f = fail(
            Some(i),
            format!(
                "{actor}: expected to wait for a lock held by {} within {:?}; last seen {:?}",
                blocked.on, self.step_timeout, last
            ),
        );
        f.diagnostics = Some(self.diagnostics().await);
        Err(f)
    }

    async fn many(&mut self, i: usize, step: &Step, actor: &str) -> Result<(), Failure> {
        let jobs: Vec<HttpJob> = match &step.each_of {
            Some(set) => self.sets[set].iter().map(|t| self.http_job(step, actor, Some(t.owner), Some(t.workspace))).collect(),
            None => (0..step.concurrency.unwrap_or(1)).map(|_| self.http_job(step, actor, None, None)).collect(),
        };
        let mut jobs = jobs;
        if step.all_replicas {
            let n = self.sut.replicas.len();
            for (k, job) in jobs.iter_mut().enumerate() {
                job.replica = k % n;
                if let HttpKind::Connect { callback_replica, .. } = &mut job.kind {
                    *callback_replica = (k + 1) % n;
                }
            }
        }
        let n = jobs.len();
        self.event(Some(i), Some(actor.to_owned()), EventKind::Launched, format!("{n} × {}", self.describe(step)), None);
        self.annotate(step.note.as_ref());
        let limit = self.step_timeout;
        let all = futures::future::join_all(jobs.iter().map(run_http));
        let outcomes = match tokio::time::timeout(limit, all).await {
            Ok(o) => o,
            Err(_) => {
                let mut f = fail(Some(i), format!("{actor}: {n} concurrent requests did not all complete within {limit:?}"));
                f.diagnostics = Some(self.diagnostics().await);
                return Err(f);
            }
        };
        let mut by_summary: std::collections::BTreeMap<String, usize> = Default::default();
        for o in &outcomes {
            *by_summary.entry(o.summary()).or_default() += 1;
            if !o.raw.is_empty() {
                self.responses.push(o.raw.clone());
                self.off_contract.extend(o.off_contract.clone());
            }
        }
        let summary = by_summary.iter().map(|(s, c)| format!("{c} × {s}")).collect::<Vec<_>>().join(", ");
        self.event(Some(i), Some(actor.to_owned()), EventKind::Completed, summary, None);
        if step.expect_all.is_none() {
            if let Some((k, o)) = outcomes.iter().enumerate().find(|(_, o)| o.status >= 500 || o.error.is_some()) {
                return Err(fail(Some(i), format!("{actor} copy {k}: {} (a server error, and the step expected nothing)", o.summary())));
            }
        }
        if let Some(e) = &step.expect_all {
            for (k, o) in outcomes.iter().enumerate() {
                self.check_expect(o, e).map_err(|m| fail(Some(i), format!("{actor} copy {k}: {m}")))?;
            }
            self.checks += 1;
        }
        for c in &step.expect_counts {
            let matched = outcomes.iter().filter(|o| self.check_expect(o, &c.expect).is_ok()).count();
            if matched != c.count {
                let wanted = serde_json::to_string(&c.expect).unwrap_or_default();
                return Err(fail(Some(i), format!("{actor}: expected {} copies matching {wanted}, got {matched}", c.count)));
            }
            self.checks += 1;
        }
        Ok(())
    }

    async fn finish_background(&mut self) -> Vec<Failure> {
        let mut failures = Vec::new();
        let mut pending: Vec<(String, Background)> = self.background.drain().collect();
        pending.sort_by_key(|(_, b)| b.step);
        for (actor, bg) in pending {
            match tokio::time::timeout(self.step_timeout, bg.handle).await {
                Ok(Ok(result)) => {
                    let outcome = self.absorb(&actor, result);
                    if let Err(f) = self.expect_outcome(bg.step, &actor, &outcome, bg.expect.as_ref()) {
                        failures.push(f);
                    }
                }
                Ok(Err(e)) => failures.push(fail(Some(bg.step), format!("{actor}'s step panicked: {e}"))),
                Err(_) => {
                    let mut f = fail(Some(bg.step), format!("{actor}'s background step never finished (still parked or blocked at the end)"));
                    f.diagnostics = Some(self.diagnostics().await);
                    failures.push(f);
                }
            }
        }
        failures
    }

    async fn redis(&self, args: &[String]) -> Outcome {
        let result: Result<redis::Value, redis::RedisError> = async {
            let client = redis::Client::open(self.sut.env.redis_url.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            let mut cmd = redis::cmd(&args[0]);
            for a in &args[1..] {
                cmd.arg(a);
            }
            cmd.query_async(&mut conn).await
        }
        .await;
        match result {
            Ok(v) => Outcome { ok: true, body: Value::String(format!("{v:?}")), ..Outcome::default() },
            Err(e) => Outcome { ok: false, error: Some(e.to_string()), ..Outcome::default() },
        }
    }

    async fn assertion(&mut self, step: Option<usize>, a: &Assertion) -> Result<(), Failure> {
        let note = a.note.clone();
        let result = self.evaluate(a).await;
        match result {
            Ok(detail) => {
                self.checks += 1;
                self.event(step, None, EventKind::Checked, note.unwrap_or(detail), None);
                Ok(())
            }
            Err(message) => Err(fail(step, match note {
                Some(n) => format!("{n}: {message}"),
                None => message,
            })),
        }
    }

    async fn evaluate(&mut self, a: &Assertion) -> Result<String, String> {
        if let Some(written) = &a.sql {
            let sql = self.subst(written);
            let wrapped = format!("SELECT coalesce(json_agg(t), '[]'::json) FROM ({}) t", sql.trim().trim_end_matches(';'));
            let sql = written.trim();
            let rows: Value = sqlx::query_scalar(&wrapped).fetch_one(&self.sut.db).await.map_err(|e| format!("{sql}: {e}"))?;
            if let Some(want) = &a.rows {
                let want = Value::Array(want.iter().map(|r| serde_json::to_value(r).unwrap_or(Value::Null)).collect());
                let want: Value = serde_json::from_str(&self.subst(&want.to_string())).unwrap_or(want);
                return if json_eq(&rows, &want) { Ok(format!("{sql} = {want}")) } else { Err(format!("{sql}: expected rows {want}, got {rows}")) };
            }
            let want = toml_to_json(a.equals.as_ref().expect("checked"));
            let single = rows.as_array().filter(|r| r.len() == 1).and_then(|r| r[0].as_object()).filter(|o| o.len() == 1);
            let Some(got) = single.and_then(|o| o.values().next()).cloned() else {
                return Err(format!("{sql}: `equals` needs exactly one row of one column, got {rows}"));
            };
            return if json_eq(&got, &want) { Ok(format!("{sql} = {want}")) } else { Err(format!("{sql}: expected {want}, got {got}")) };
        }
        if let Some(pattern) = &a.redis_keys {
            let prefix = &self.sut.env.redis_key_prefix;
            let entries = evidence::redis_dump(&self.sut.env.redis_url, prefix).await.map_err(|e| e.to_string())?;
            let matching: Vec<_> = entries.iter().filter(|e| glob_match(pattern, &e.key[prefix.len()..])).collect();
            let want = toml_to_json(a.equals.as_ref().expect("checked"));
            if !json_eq(&json!(matching.len()), &want) {
                return Err(format!("expected {want} Redis key(s) matching {pattern}, found {}", matching.len()));
            }
            if let Some([lo, hi]) = a.ttl_between {
                if let Some(bad) = matching.iter().find(|e| e.ttl < lo || e.ttl > hi) {
                    return Err(format!("{} has TTL {} s, expected {lo}..={hi}", &bad.key[prefix.len()..], bad.ttl));
                }
            }
            let ttls: Vec<i64> = matching.iter().map(|e| e.ttl).collect();
            return Ok(format!("{} Redis key(s) matching {pattern} (TTL {ttls:?})", matching.len()));
        }
        if let Some(counter) = &a.provider_counter {
            let (p, name) = counter.split_once('.').expect("checked");
            let counters = serde_json::to_value(self.sut.provider.counters(Provider::parse(p).expect("checked"))).unwrap_or(Value::Null);
            let got = counters.get(name).cloned().unwrap_or(Value::Null);
            let want = toml_to_json(a.equals.as_ref().expect("checked"));
            return if json_eq(&got, &want) { Ok(format!("provider {counter} = {got}")) } else { Err(format!("provider {counter}: expected {want}, got {got}")) };
        }
        if let Some(t) = &a.no_lock_held {
            return crate::oracles::no_workspace_lock_held(&self.sut.db, self.tenants[t].workspace)
                .await
                .map_err(|e| format!("{t}: {e}"));
        }
        if a.no_canary_leaks == Some(true) {
            return self.leak_search().await;
        }
        if a.tokens_bound == Some(true) {
            return self.tokens_bound().await;
        }
        Err("empty assertion".into())
    }

    async fn leak_search(&self) -> Result<String, String> {
        let canaries = self.sut.provider.issued();
        if canaries.is_empty() {
            return Err("the fake provider issued nothing: the leak search would prove nothing".into());
        }
        let (capture, mark) = match (&self.logs, self.log_mark) {
            (Some(c), Some(m)) => (c, m),
            _ => return Err("the service's logs were not captured, so they cannot be searched".into()),
        };
        let logs = capture
            .text_since(mark)
            .ok_or("the log capture overflowed and dropped this scenario's lines, so its logs cannot be searched completely")?;
        let dump = evidence::pg_dump(&self.sut.env.database_url).await.map_err(|e| format!("pg_dump: {e}"))?;
        let redis = evidence::redis_dump(&self.sut.env.redis_url, &self.sut.env.redis_key_prefix).await.map_err(|e| e.to_string())?;
        let redis_text = serde_json::to_string(&redis).unwrap_or_default();
        let places: [(&str, &str); 3] = [("pg_dump", &dump), ("Redis", &redis_text), ("logs", &logs)];
        for canary in &canaries {
            // As text, as hex (how pg_dump writes bytea), and as base64 / base64url at each of the
            // three alignments it can have inside a longer encoded blob.
            use base64::Engine;
            let mut forms = vec![("text", canary.clone()), ("hex", hex::encode(canary.as_bytes()))];
            for engine in [&base64::engine::general_purpose::STANDARD_NO_PAD, &base64::engine::general_purpose::URL_SAFE_NO_PAD] {
                for shift in 0..3usize {
                    let mut bytes = vec![0u8; shift];
                    bytes.extend_from_slice(canary.as_bytes());
                    let encoded = engine.encode(&bytes);
                    // Drop the characters that mix in the filler bytes, and the last, partial group.
                    let skip = if shift == 0 { 0 } else { 4 };
                    let keep = encoded.len().saturating_sub(4);
                    if keep > skip + 8 {
                        forms.push(("base64", encoded[skip..keep].to_owned()));
                    }
                }
            }
            for (form, needle) in &forms {
                for (name, text) in places {
                    if text.contains(needle.as_str()) {
                        return Err(format!("{name} contains an issued token or code ({form}: {}…)", &canary[..canary.len().min(24)]));
                    }
                }
                if self.responses.iter().any(|r| r.contains(needle.as_str())) {
                    return Err(format!("a response contains an issued token or code ({form}: {}…)", &canary[..canary.len().min(24)]));
                }
            }
        }
        Ok(format!(
            "{} issued codes/tokens absent from pg_dump ({} KiB), {} Redis keys, {} responses and {} KiB of logs",
            canaries.len(),
            dump.len() / 1024,
            redis.len(),
            self.responses.len(),
            logs.len() / 1024
        ))
    }

    async fn tokens_bound(&self) -> Result<String, String> {
        crate::oracles::tokens_bound(&self.sut.db, &self.sut.key_ring()).await
    }
}
