//! `harbor-load`: a goose load test of the reference service (or a target profile's) on the
//! harness's provisioning layer.
//!
//! It provisions PostgreSQL and Redis (`auto` backend, or `HARBOR_DATABASE_URL`/`HARBOR_REDIS_URL`),
//! starts two replicas with the fake OAuth provider, makes one tenant per goose user, and lets every
//! user loop through the whole QuickBooks connection flow — authorize on replica 0, consent at the
//! provider, callback on replica 1, sync, activation, disconnect — as fast as the service allows.
//! Afterwards it checks the invariants the load must not break (one activation per workspace, every
//! stored token bound to its own row and to no other, no `CONNECTED` row without tokens) and exits
//! 1 if one is broken or any request failed.
//!
//! With `HARBOR_LOAD_TARGET=<profile>` (and `HARBOR_LOAD_TARGET_MODE`) it starts that target's
//! replicas from its profile instead (`docs/TARGET-PROFILE.md`): tenants through its fixtures,
//! tokens with its claims, every request as its routes spell it. A target with its own schema is
//! held to one activation per workspace through its state queries (the stored-token and grant
//! oracles read the reference's); a flow the target lacks a step of fails that step — the seeds'
//! Flask port, which has no disconnect, answers it 404 every time.
//!
//! Goose's own options work as usual (`-u` users, `-r` hatch rate, `-t` run time, `--report-file`);
//! the defaults are 100 users, all started at once, for 20 s. Traffic goes to loopback only.
//!
//! With `HARBOR_LOAD_EXTERNAL=<file>` it starts nothing: it loads the service another process runs
//! (`harbor-certify serve --bench-file <file>`), one goose user per tenant listed there, and checks
//! the invariants it can see from the database (token binding needs the service's keys: not
//! checked then, and said so). `HARBOR_LOAD_SUMMARY=<file>` writes the figures as JSON (flows per
//! second, latency percentiles per request, and — with `HARBOR_LOAD_SERVICE_PID` — the service
//! process's peak RSS and CPU seconds). `harbor-load activation …` is the macro bench's
//! activation load ([`activation`]).
//!
//! Past 500 lines on purpose: goose's transactions, the set-up they need and the invariant checks
//! after the load are one program read top to bottom.

mod activation;
mod process;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use goose::prelude::*;
use harbor_harness::client::ApiClient;
use harbor_harness::identity::TokenKind;
use harbor_harness::operation::{Routes, WorkspaceOp};
use harbor_harness::provision::{BackendChoice, Infra};
use harbor_harness::target::profile::Profile;
use harbor_harness::target::started::{How, ServiceOptions, Started};
use harbor_harness::target::{Capability, Target as _, TenantSpec};
use harbor_service::domain::{Provider, WorkspaceId};
use harbor_service::lifecycle::ConnectionStatus;
use harbor_service::ratelimit::{Quota, RateLimits};

/// One goose user's identity and workspace.
struct LoadUser {
    token: String,
    workspace: WorkspaceId,
}

/// Everything the transactions share: set once before the attack starts.
struct Shared {
    users: Vec<LoadUser>,
    replicas: Vec<String>,
    /// Plays the browser at the fake provider (never follows redirects).
    browser: ApiClient,
    /// How the target spells each request and where its answers put things.
    routes: Routes,
}

static SHARED: OnceLock<Shared> = OnceLock::new();
static NEXT_USER: AtomicUsize = AtomicUsize::new(0);

/// The index of this goose user's tenant.
struct Claimed(usize);

fn shared() -> &'static Shared {
    SHARED.get().expect("set before the attack")
}

async fn claim_user(user: &mut GooseUser) -> TransactionResult {
    // One tenant per goose user: `run` makes at least as many tenants as users.
    let i = NEXT_USER.fetch_add(1, Ordering::SeqCst);
    user.set_session_data(Claimed(i));
    Ok(())
}

/// Sends an authenticated request and records it under `name`; unexpected statuses are failures.
/// With `then`, a check of the body that can still fail the request (recorded under its name).
async fn send(
    user: &mut GooseUser,
    method: GooseMethod,
    url: &str,
    name: &str,
    expected: &[u16],
) -> Result<Option<serde_json::Value>, Box<TransactionError>> {
    send_checked(user, method, url, name, expected, |_| async { Ok(()) }).await
}

async fn send_checked<F, Fut>(
    user: &mut GooseUser,
    method: GooseMethod,
    url: &str,
    name: &str,
    expected: &[u16],
    then: F,
) -> Result<Option<serde_json::Value>, Box<TransactionError>>
where
    F: FnOnce(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let me = &shared().users[user.get_session_data_unchecked::<Claimed>().0];
    let builder = user
        .get_request_builder(&method, url)?
        .bearer_auth(&me.token);
    let request = GooseRequest::builder()
        .set_request_builder(builder)
        .name(name)
        .build();
    let mut goose = user.request(request).await?;
    let response = match goose.response {
        Ok(r) => r,
        Err(e) => {
            let tag = format!("{name}: {e}");
            user.set_failure(&tag, &mut goose.request, None, None)?;
            return Ok(None);
        }
    };
    let status = response.status().as_u16();
    let retry_after = retry_after(&response);
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !expected.contains(&status) {
        // Told to come back later (a rate limit, a lock or request timeout, a dependency down), the
        // user waits as a client should instead of looping on refusals: 8 users over the
        // per-tenant limit sent 68,353 refused authorizes in 15 s that way, and measured how fast
        // the service says no. (Before the failure is recorded: goose's `set_failure` always
        // returns the error that ends the transaction.)
        if let Some(wait) = retry_after {
            tokio::time::sleep(wait).await;
        }
        let tag = format!("{name}: unexpected {status} {}", body["error"]["code"]);
        user.set_failure(&tag, &mut goose.request, None, None)?;
        return Ok(None);
    }
    if let Err(why) = then(body.clone()).await {
        user.set_failure(&format!("{name}: {why}"), &mut goose.request, None, None)?;
        return Ok(None);
    }
    Ok(Some(body))
}

/// How long a refusal asks the client to wait (`Retry-After` in seconds, on 429 and 503), capped
/// at 2 s: goose notices the end of a run only between transactions, so a longer wait would run
/// past `-t`, and a wrong header must not stall the run.
fn retry_after(response: &reqwest::Response) -> Option<std::time::Duration> {
    if !matches!(response.status().as_u16(), 429 | 503) {
        return None;
    }
    let seconds: u64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(std::time::Duration::from_secs(seconds.min(2)))
}

/// The whole connection flow, across replicas, then a sync, an activation and a disconnect so the
/// next iteration can connect again — each request as the target's routes spell it.
async fn connection_flow(user: &mut GooseUser) -> TransactionResult {
    let s = shared();
    let workspace = s.users[user.get_session_data_unchecked::<Claimed>().0].workspace;
    let base0 = &s.replicas[0];
    let base1 = &s.replicas[s.replicas.len() - 1];
    let at = |base: &str, op: WorkspaceOp, query: &str| {
        let (method, path) = s.routes.request(op, workspace, Provider::Qbo, query);
        (goose_method(&method), format!("{base}{path}"))
    };
    // The provider's consent page is not the service under test: not timed, but a failure there
    // fails the authorize request it follows.
    let consent = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = consent.clone();
    let (method, url) = at(base0, WorkspaceOp::Authorize, "");
    let started = send_checked(user, method, &url, "authorize", &[200], |body| async move {
        let url = body
            .pointer(&s.routes.authorization_url)
            .and_then(|u| u.as_str())
            .ok_or("no authorization URL where the target's answers put it")?
            .to_owned();
        let c = s.browser.consent(&url).await?;
        *slot.lock().expect("consent slot") = Some(c);
        Ok(())
    })
    .await?;
    let consent = consent.lock().expect("consent slot").take();
    let (Some(_), Some(consent)) = (started, consent) else {
        return Ok(());
    };
    let (method, url) = at(base1, WorkspaceOp::Callback, &consent.callback_query());
    if send(user, method, &url, "callback (other replica)", &[200])
        .await?
        .is_none()
    {
        return Ok(());
    }
    let (method, url) = at(base1, WorkspaceOp::Sync, "");
    send(user, method, &url, "sync", &[200]).await?;
    // Activation succeeds once per workspace, then reports already_completed.
    let (method, url) = at(base0, WorkspaceOp::Activate, "");
    send(user, method, &url, "activation", &[200]).await?;
    let (method, url) = at(base0, WorkspaceOp::Disconnect, "");
    send(user, method, &url, "disconnect", &[200]).await?;
    Ok(())
}

/// Goose's name for an HTTP method the target's routes use.
fn goose_method(method: &reqwest::Method) -> GooseMethod {
    match *method {
        reqwest::Method::GET => GooseMethod::Get,
        reqwest::Method::PUT => GooseMethod::Put,
        reqwest::Method::PATCH => GooseMethod::Patch,
        reqwest::Method::DELETE => GooseMethod::Delete,
        reqwest::Method::HEAD => GooseMethod::Head,
        _ => GooseMethod::Post,
    }
}

/// What the load did not break, and what it could not check.
struct Invariants {
    /// The invariants broken.
    broken: Vec<String>,
    /// The oracles that could not run here, each with why: in the summary beside the figures, so
    /// that a clean run is read for what it checked.
    not_checked: Vec<String>,
}

/// What the load must not have broken: the harness's oracles, one implementation each. With the
/// target at hand (started here), every grant must be accounted for once the outbox has drained
/// (a bounded wait, read from the database); a target with its own schema is held to one
/// activation per workspace through its state queries.
async fn invariants(
    db: &sqlx::PgPool,
    target: Option<&dyn harbor_harness::target::Target>,
    workspaces: &[WorkspaceId],
) -> Invariants {
    use harbor_harness::oracles;
    let reference = target.is_none_or(|t| t.capabilities().contains(&Capability::ReferenceSchema));
    if !reference {
        let target = target.expect("a target with its own schema was started here");
        let mut broken = Vec::new();
        for w in workspaces {
            let Some(sql) = target.state_query("activations", *w) else {
                broken.push("the target answers no `activations` state query".to_owned());
                break;
            };
            match sqlx::query_scalar::<_, i64>(&sql).fetch_one(db).await {
                Ok(n) if n > 1 => broken.push(format!("workspace {w} has {n} activations")),
                Ok(_) => {}
                Err(e) => broken.push(format!("the `activations` state query: {e}")),
            }
        }
        return Invariants {
            broken,
            not_checked: vec![format!(
                "tokens bound, connected rows hold tokens, documents under live grants, grants accounted for: the target has its own schema (one activation per workspace checked through its state queries, {} workspaces)",
                workspaces.len()
            )],
        };
    }
    let mut not_checked = Vec::new();
    let ring = target.and_then(|t| t.tokens());
    let bound = match ring {
        Some(ring) => oracles::tokens_bound(db, ring, None).await,
        None => {
            not_checked.push(match target {
                None => "tokens bound: the service's keys are in its own process".to_owned(),
                Some(_) => "tokens bound: the target gives no key ring".to_owned(),
            });
            Ok(String::new())
        }
    };
    let accounted = match (ring, target.and_then(|t| t.provider())) {
        (Some(ring), Some(provider)) => {
            match oracles::until_outbox_empty(db, None, std::time::Duration::from_secs(60)).await {
                Ok(waited) => {
                    println!(
                        "harbor-load: the revocation outbox drained {} ms after the load",
                        waited.as_millis()
                    );
                    oracles::grants_accounted(db, ring, provider, 0).await
                }
                Err(e) => Err(e),
            }
        }
        _ => {
            not_checked.push(match target {
                None => {
                    "grants accounted for: the provider and the keys are in the service's process"
                        .to_owned()
                }
                Some(_) => {
                    "grants accounted for: the target gives no key ring or provider".to_owned()
                }
            });
            Ok(String::new())
        }
    };
    if let Ok(done) = &accounted {
        if !done.is_empty() {
            println!("harbor-load: {done}");
        }
    }
    let checks = [
        oracles::one_activation_per_workspace(db).await,
        bound,
        oracles::connected_have_tokens(db).await,
        oracles::documents_under_live_grants(db, None).await,
        accounted,
    ];
    for skipped in &not_checked {
        eprintln!("harbor-load: not checked: {skipped}");
    }
    Invariants {
        broken: checks.into_iter().filter_map(Result::err).collect(),
        not_checked,
    }
}

/// `harbor-load activation`: the activation endpoint beside its raw ceiling.
#[derive(clap::Parser, Debug)]
#[command(name = "harbor-load activation")]
struct ActivationArgs {
    /// What `harbor-certify serve --bench-file` wrote.
    #[arg(long)]
    bench_file: std::path::PathBuf,
    /// Concurrent clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
    clients: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds per workload and concurrency, each measuring the raw side and then the service.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The service's process, to sample its RSS and CPU.
    #[arg(long)]
    service_pid: Option<u32>,
    /// Where to write the points as JSON.
    #[arg(long)]
    out: std::path::PathBuf,
}

async fn activation_main(args: ActivationArgs) -> Result<(), Box<dyn std::error::Error>> {
    let bench: harbor_harness::target::started::serve::BenchTenants =
        serde_json::from_slice(&std::fs::read(&args.bench_file)?)?;
    let points = activation::run(
        &bench,
        &args.clients,
        args.seconds,
        args.rounds,
        args.service_pid,
    )
    .await?;
    std::fs::write(&args.out, serde_json::to_vec_pretty(&points)?)?;
    let failed: u64 = points.iter().map(|p| p.failures).sum();
    if failed > 0 {
        return Err(format!("{failed} activations failed").into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("activation") {
        let args = <ActivationArgs as clap::Parser>::parse_from(std::env::args().skip(1));
        return match activation_main(args).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("harbor-load activation: {e}");
                std::process::ExitCode::from(1)
            }
        };
    }
    match run().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("harbor-load: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Provisions PostgreSQL and Redis, starts two replicas with the load's rate limits, and makes one
/// tenant per goose user (`HARBOR_LOAD_TENANTS`, default 100).
async fn start_here(
) -> Result<(Target, Vec<LoadUser>, Vec<String>, usize), Box<dyn std::error::Error>> {
    let choice = if std::env::var("HARBOR_DATABASE_URL").is_ok() {
        BackendChoice::External
    } else {
        BackendChoice::Auto
    };
    let infra = Infra::provision(choice).await?;
    // The per-address limit is lifted (every simulated user is 127.0.0.1), and the per-tenant one
    // raised tenfold above the default: one user looping as fast as it can is not an attack.
    let options = ServiceOptions {
        replicas: 2,
        sync_points: false,
        fault_proxies: false,
        rate_limits: RateLimits {
            per_tenant: Quota {
                per_minute: 600,
                burst: 100,
            },
            per_address: Quota {
                per_minute: 1_000_000,
                burst: 100_000,
            },
            failed_states_per_user: RateLimits::default().failed_states_per_user,
        },
        ..ServiceOptions::default()
    };
    // The reference in this process, or — `HARBOR_LOAD_TARGET=PROFILE` (`HARBOR_LOAD_TARGET_MODE`)
    // — a target started from its profile, reached only through it.
    let sut = match std::env::var("HARBOR_LOAD_TARGET") {
        Ok(path) => {
            let mut profile = Profile::load(std::path::Path::new(&path))?;
            if let Ok(mode) = std::env::var("HARBOR_LOAD_TARGET_MODE") {
                profile = profile.in_mode(&mode)?;
            }
            let profile = std::sync::Arc::new(profile);
            Started::start_as(&infra, options, None, How::Process(&profile)).await?
        }
        Err(_) => Started::start(&infra, options).await?,
    };
    let tenants: usize = std::env::var("HARBOR_LOAD_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .max(1);
    let mut users = Vec::with_capacity(tenants);
    for i in 0..tenants {
        let spec = TenantSpec {
            name: format!("load{i}"),
            entitled: true,
            qbo: ConnectionStatus::NotConnected,
        };
        let t = sut.create_tenant(&spec).await?;
        users.push(LoadUser {
            token: sut.bearer(t.owner, TokenKind::Valid),
            workspace: t.workspace,
        });
    }
    let replicas: Vec<String> = sut.replicas.iter().map(|r| r.base_url.clone()).collect();
    eprintln!(
        "harbor-load: {} backend, {}, 2 replicas, {tenants} tenants; goose starts",
        infra.kind,
        sut.profile
            .as_ref()
            .map_or("the reference in this process".to_owned(), |p| format!(
                "target {}",
                p.name
            ))
    );
    Ok((
        Target::Here(Box::new((infra, sut))),
        users,
        replicas,
        tenants,
    ))
}

/// Where the load goes: replicas this process starts, or a service another process runs.
enum Target {
    /// Started here (and stopped at the end).
    Here(Box<(Infra, Started)>),
    /// Run elsewhere; the database as its owner, for the invariants.
    Elsewhere(sqlx::PgPool),
}

async fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let (target, users, replicas, tenants) = match std::env::var("HARBOR_LOAD_EXTERNAL") {
        Ok(file) => {
            let bench: harbor_harness::target::started::serve::BenchTenants =
                serde_json::from_slice(&std::fs::read(&file)?)?;
            let db = sqlx::PgPool::connect(&bench.database_url).await?;
            // Runs one after another on one service take disjoint tenants: a flow cut off by the
            // end of a run may leave its workspace mid-flow.
            let offset: usize = std::env::var("HARBOR_LOAD_TENANT_OFFSET")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let users: Vec<LoadUser> = bench
                .flows
                .iter()
                .skip(offset)
                .map(|u| LoadUser {
                    token: u.token.clone(),
                    workspace: u.tenant.workspace,
                })
                .collect();
            let n = users.len();
            eprintln!(
                "harbor-load: the service of {file} ({} replicas), {n} tenants; goose starts",
                bench.base_urls.len()
            );
            (Target::Elsewhere(db), users, bench.base_urls, n)
        }
        Err(_) => start_here().await?,
    };
    let browser = ApiClient::with_bases(Vec::new());
    let host = replicas[0].clone();
    let routes = match &target {
        Target::Here(here) => here.1.client.routes().clone(),
        Target::Elsewhere(_) => Routes::reference(),
    };
    SHARED
        .set(Shared {
            users,
            replicas,
            browser,
            routes,
        })
        .map_err(|_| "shared state set twice")?;
    let sampler = std::env::var("HARBOR_LOAD_SERVICE_PID")
        .ok()
        .and_then(|p| p.parse().ok())
        .map(process::Sampler::start);

    let attack = GooseAttack::initialize()?;
    // Goose users beyond the tenants would share one and supersede each other's flows.
    let wanted_users = std::env::args()
        .skip_while(|a| a != "-u" && a != "--users")
        .nth(1)
        .and_then(|u| u.parse::<usize>().ok())
        .unwrap_or(100);
    if wanted_users > tenants {
        return Err(format!("{wanted_users} goose users but {tenants} tenants: set HARBOR_LOAD_TENANTS to at least the user count").into());
    }
    let metrics = attack
        .register_scenario(
            scenario!("ConnectSyncActivate")
                .register_transaction(transaction!(claim_user).set_on_start())
                .register_transaction(transaction!(connection_flow)),
        )
        .set_default(GooseDefault::Host, host.as_str())?
        .set_default(GooseDefault::Users, 100)?
        .set_default(GooseDefault::HatchRate, "100")?
        .set_default(GooseDefault::RunTime, 20)?
        .execute()
        .await?;

    let usage = match sampler {
        Some(s) => s.finish().await,
        None => None,
    };
    let workspaces: Vec<WorkspaceId> = shared().users.iter().map(|u| u.workspace).collect();
    let Invariants {
        broken,
        not_checked,
    } = match &target {
        Target::Here(here) => invariants(&here.1.db, Some(&here.1), &workspaces).await,
        Target::Elsewhere(db) => invariants(db, None, &workspaces).await,
    };
    let requests: usize = metrics
        .requests
        .values()
        .map(|r| r.success_count + r.fail_count)
        .sum();
    let failures: usize = metrics.requests.values().map(|r| r.fail_count).sum();
    println!(
        "harbor-load: {requests} requests, {failures} failed, over {} s",
        metrics.duration
    );
    for b in &broken {
        println!("INVARIANT BROKEN: {b}");
    }
    // A run that sent nothing proved nothing: its invariants held over untouched data.
    if requests == 0 {
        println!("NOTHING LOADED: no request was sent");
    }
    if let Ok(path) = std::env::var("HARBOR_LOAD_SUMMARY") {
        std::fs::write(
            path,
            serde_json::to_vec_pretty(&summary(&metrics, failures, &broken, &not_checked, usage))?,
        )?;
    }
    match target {
        Target::Here(here) => {
            let (mut infra, sut) = *here;
            sut.stop().await?;
            infra.shutdown().await;
        }
        Target::Elsewhere(db) => db.close().await,
    }
    Ok(requests > 0 && broken.is_empty() && failures == 0)
}

/// How long the counted requests ran: from the metrics' reset, once every user was launched (the
/// plan's `Maintaining` step), to the end of the run (`Finished`, after the users' drain and the
/// last metrics). Goose's own `duration` is whole seconds, last updated before the drain: up to
/// half a second either way in a 10-second run, a 5 % error in every rate divided by it. Falls
/// back on it where the plan's history lacks a step.
fn measured_seconds(metrics: &GooseMetrics) -> f64 {
    use goose::test_plan::TestPlanStepAction;
    let at = |wanted: fn(&TestPlanStepAction) -> bool| {
        metrics
            .history
            .iter()
            .find(|step| wanted(&step.action))
            .map(|step| step.timestamp)
    };
    let maintaining = at(|a| matches!(a, TestPlanStepAction::Maintaining));
    let finished = at(|a| matches!(a, TestPlanStepAction::Finished));
    match (maintaining, finished) {
        (Some(from), Some(to)) if to > from => {
            (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
        }
        _ => metrics.duration.max(1) as f64,
    }
}

/// The run's figures as JSON: flows per second (completed disconnects, the flow's last request),
/// and per request name the count, failures and latency percentiles.
fn summary(
    metrics: &GooseMetrics,
    failures: usize,
    broken: &[String],
    not_checked: &[String],
    usage: Option<process::Usage>,
) -> serde_json::Value {
    let seconds = measured_seconds(metrics);
    let mut per_request = serde_json::Map::new();
    let mut flows = 0;
    for (name, r) in &metrics.requests {
        let times = &r.raw_data.times;
        let total: usize = times.values().sum();
        let pct = |q: f64| {
            let want = (total as f64 * q).ceil().max(1.0) as usize;
            let mut seen = 0;
            times
                .iter()
                .find(|(_, n)| {
                    seen += **n;
                    seen >= want
                })
                .map_or(0, |(ms, _)| *ms)
        };
        if name.contains("disconnect") {
            flows = r.success_count;
        }
        per_request.insert(name.clone(), serde_json::json!({ "ok": r.success_count, "failed": r.fail_count, "p50_ms": pct(0.5), "p99_ms": pct(0.99) }));
    }
    serde_json::json!({
        "users": metrics.maximum_users,
        "seconds": seconds,
        "flows": flows,
        "flows_per_s": flows as f64 / seconds,
        "requests_per_s": metrics.requests.values().map(|r| r.success_count + r.fail_count).sum::<usize>() as f64 / seconds,
        "failures": failures,
        "broken_invariants": broken,
        "not_checked": not_checked,
        "requests": per_request,
        "service": usage,
    })
}
