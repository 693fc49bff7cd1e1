//! One schedule, executed: the operations on a fresh workspace of a running service, advanced one
//! at a time in the order a [`Scheduler`] picks. After every advance the engine *settles*: it waits
//! until every launched operation is parked at one of its sync points, finished, or waiting for a
//! lock whose holder is itself parked or waiting — proven from `pg_stat_activity` and
//! `pg_blocking_pids`, never from a sleep. An operation that waits for a lock cannot be chosen until
//! its holder moves; if nothing can be chosen and something is unfinished, that is a finding.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use harbor_service::domain::Provider;
use harbor_service::lifecycle::ConnectionStatus;
use harbor_syncpoint::{SlotKey, SlotState};
use reqwest::Method;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::task::JoinHandle;

use super::ops::{Does, Operation, Start, RAW_UPDATED};
pub use super::record::{summary_of, Decision, EndState, Finished, Observed, ScheduleRun, Stop};
use crate::client::Answer;
use crate::evidence;
use crate::fake_provider::{Consent, Counters};
use crate::fixtures::TenantWorkspace;
use crate::identity::TokenKind;
use crate::schedule::{Ready, Scheduler};
use crate::target::{Target, TenantSpec};

/// The replica the starting state is made on (the one `target::start_flow` and `complete_flow`
/// use); operations run on the other one (when there are two), so a state kept in one replica's
/// memory is not found.
pub const SETUP_REPLICA: usize = 0;

/// How long a settle waits for a park or a finished request before it reads the lock tables: a
/// released request reaches its next point within a millisecond or two unless it waits.
const SETTLE_TICK: Duration = Duration::from_millis(2);

/// Sync points at which a request holds its workspace's lock (the service's contract): a request
/// parked at one of them excludes every other request on the workspace.
pub const UNDER_WORKSPACE_LOCK: &[&str] = &[
    harbor_service::syncpoints::ACTIVATION_LOCKED,
    harbor_service::syncpoints::ACTIVATION_STATUS_READ,
    harbor_service::syncpoints::ACTIVATION_BEFORE_COMMIT,
    harbor_service::syncpoints::ACTIVATION_FAILING,
    harbor_service::syncpoints::LIFECYCLE_LOCKED,
    harbor_service::syncpoints::LIFECYCLE_BEFORE_COMMIT,
    harbor_service::syncpoints::OAUTH_AUTHORIZE_LOCKED,
    harbor_service::syncpoints::OAUTH_CALLBACK_LOCKED,
    harbor_service::syncpoints::OAUTH_CALLBACK_BEFORE_COMMIT,
    harbor_service::syncpoints::SYNC_LOCKED,
    harbor_service::syncpoints::SYNC_REFRESHED,
];

/// A workspace in its starting state, made ahead of its schedule.
pub struct Prepared {
    /// The state it is to start in.
    pub start: Start,
    workspace: TenantWorkspace,
    consent: Option<Consent>,
    took: Duration,
}

/// Why a schedule stopped before every operation was done.
enum Halt {
    /// The system could not go on: a hang, a deadlock, a request that could not be sent.
    Stuck(String),
    /// The scheduler could not: a replay whose recorded choice cannot run.
    Refused(String),
}

enum Work {
    Http(JoinHandle<Result<Answer, String>>),
    Sql(JoinHandle<(Result<(), String>, PgConnection)>),
}

impl Running {
    /// Whether its request or statement has finished (its result not collected yet).
    fn finished(&self) -> bool {
        match &self.work {
            Some(Work::Http(h)) => h.is_finished(),
            Some(Work::Sql(h)) => h.is_finished(),
            None => false,
        }
    }
}

struct Running {
    op: Operation,
    tag: String,
    replica: usize,
    work: Option<Work>,
    stop: Option<Stop>,
    launched: bool,
    session: Option<PgConnection>,
    sql_step: usize,
}

/// The executor of schedules on one running service.
pub struct Engine<'a> {
    /// The service.
    pub target: &'a dyn Target,
    /// Bound on every settle.
    pub settle_timeout: Duration,
    /// Woken when any operation's request or statement finishes, so a settle need not poll.
    finished: std::sync::Arc<tokio::sync::Notify>,
}

impl<'a> Engine<'a> {
    /// An engine on `target`.
    pub fn new(target: &'a dyn Target) -> Self {
        Self {
            target,
            settle_timeout: Duration::from_secs(5),
            finished: Default::default(),
        }
    }

    fn db(&self) -> Result<&sqlx::PgPool, String> {
        self.target
            .database()
            .ok_or_else(|| "exploration needs the target's database".to_owned())
    }

    fn provider(&self) -> Result<&crate::fake_provider::FakeProvider, String> {
        self.target
            .provider()
            .ok_or_else(|| "exploration needs control of the target's provider".to_owned())
    }

    fn tokens(&self) -> Result<&dyn crate::target::TokenInspector, String> {
        self.target
            .tokens()
            .ok_or_else(|| "exploration needs the target's token keys".to_owned())
    }

    fn op_replica(&self) -> usize {
        if self.target.replicas() > 1 {
            1
        } else {
            0
        }
    }

    /// A fresh workspace with an authorization started (PENDING) and its consent in hand. Touches
    /// only its own workspace and counts nothing the oracles read (no code exchange, no clock
    /// move), so it can run while another schedule runs.
    pub async fn prepare(&self, start: Start) -> Result<Prepared, String> {
        let started = Instant::now();
        let name = format!("explore-{}", uuid::Uuid::new_v4().simple());
        let spec = TenantSpec {
            name,
            entitled: true,
            qbo: ConnectionStatus::NotConnected,
        };
        let t = self.target.create_tenant(&spec).await?;
        // A stale start moves the clock past every state's TTL: its flow is started when it runs.
        let consent = if start == Start::Stale {
            None
        } else {
            Some(crate::target::start_flow(self.target, t.owner, t.workspace, Provider::Qbo).await?)
        };
        Ok(Prepared {
            start,
            workspace: t,
            consent,
            took: started.elapsed(),
        })
    }

    /// Brings a prepared workspace to its starting state — completes the flow for a connected
    /// start, moves the clock past the token's expiry for a stale one — and returns the consent a
    /// pending start leaves for `callback`. Runs alone: it exchanges a code and moves the clock.
    async fn finish_setup(&self, p: &Prepared) -> Result<Option<Consent>, String> {
        let consent = match &p.consent {
            Some(c) => c.clone(),
            None => {
                crate::target::start_flow(
                    self.target,
                    p.workspace.owner,
                    p.workspace.workspace,
                    Provider::Qbo,
                )
                .await?
            }
        };
        if p.start == Start::Pending {
            return Ok(Some(consent));
        }
        crate::target::complete_flow(self.target, p.workspace.owner, Provider::Qbo, &consent)
            .await
            .map_err(|e| format!("setup: {e}"))?;
        if p.start == Start::Stale {
            self.target
                .advance_clock(Duration::from_secs(crate::model::TOKEN_TTL as u64));
        }
        Ok(None)
    }

    /// Runs `ops` from `start`, advancing them in the order `scheduler` picks.
    pub async fn run(
        &self,
        ops: &[Operation],
        start: Start,
        scheduler: &mut dyn Scheduler,
    ) -> Result<ScheduleRun, String> {
        let prepared = self.prepare(start).await?;
        self.run_prepared(ops, prepared, scheduler).await
    }

    /// Runs `ops` on a workspace [`Engine::prepare`] made.
    pub async fn run_prepared(
        &self,
        ops: &[Operation],
        prepared: Prepared,
        scheduler: &mut dyn Scheduler,
    ) -> Result<ScheduleRun, String> {
        let started = Instant::now();
        let consent = self.finish_setup(&prepared).await?;
        let setup = prepared.took + started.elapsed();
        let t = prepared.workspace;
        let counters_before = self.provider()?.counters(Provider::Qbo);
        let replica = self.op_replica();
        let mut actors: Vec<Running> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| Running {
                op: *op,
                tag: format!("E{i}"),
                replica,
                work: None,
                stop: None,
                launched: false,
                session: None,
                sql_step: 0,
            })
            .collect();
        let mut run = ScheduleRun {
            decisions: Vec::new(),
            observed: Vec::new(),
            finished: vec![None; ops.len()],
            completion_order: Vec::new(),
            exclusion_broken: None,
            status_at_activation_commit: Vec::new(),
            stuck: None,
            refused: None,
            end: EndState::default(),
            lock_left: None,
            tokens_unbound: None,
            duration: Duration::ZERO,
            setup,
            checks: Duration::ZERO,
        };
        let outcome = self
            .drive(&t, consent.as_ref(), &mut actors, &mut run, scheduler)
            .await;
        match outcome {
            Ok(()) => {}
            Err(Halt::Stuck(stuck)) => run.stuck = Some(stuck),
            Err(Halt::Refused(why)) => run.refused = Some(why),
        }
        // Clean-up: nothing stays parked, armed or open for the next schedule.
        self.target.release_all();
        for a in &mut actors {
            match a.work.take() {
                Some(Work::Http(h)) => {
                    let _ = tokio::time::timeout(self.settle_timeout, h).await;
                }
                Some(Work::Sql(h)) => {
                    if let Ok(Ok((_, conn))) = tokio::time::timeout(self.settle_timeout, h).await {
                        let _ = conn.close().await;
                    }
                }
                None => {}
            }
            if let Some(conn) = a.session.take() {
                let _ = conn.close().await;
            }
        }
        self.target.release_all();
        let checking = Instant::now();
        let counters_after = self.provider()?.counters(Provider::Qbo);
        run.end = self
            .end_state(&t, &counters_before, &counters_after)
            .await?;
        let key = self
            .target
            .workspace_lock(t.workspace)
            .ok_or("the target does not name its workspace lock")?;
        run.lock_left = crate::oracles::no_workspace_lock_held(self.db()?, t.workspace, key)
            .await
            .err();
        run.tokens_unbound =
            crate::oracles::tokens_bound(self.db()?, self.tokens()?, Some(t.workspace))
                .await
                .err();
        run.checks = checking.elapsed();
        run.duration = started.elapsed() + setup;
        Ok(run)
    }

    async fn end_state(
        &self,
        t: &TenantWorkspace,
        before: &Counters,
        after: &Counters,
    ) -> Result<EndState, String> {
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM connections WHERE workspace_id = $1 AND provider = 'qbo'",
        )
        .bind(t.workspace)
        .fetch_optional(self.db()?)
        .await
        .map_err(|e| e.to_string())?;
        let activations: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workspace_activations WHERE workspace_id = $1",
        )
        .bind(t.workspace)
        .fetch_one(self.db()?)
        .await
        .map_err(|e| e.to_string())?;
        Ok(EndState {
            status: status.and_then(|s| ConnectionStatus::parse(&s).ok()),
            activations,
            exchanges: after.code_exchanges_ok - before.code_exchanges_ok,
            refreshes: after.refreshes_ok - before.refreshes_ok,
            revocations: after.revocations - before.revocations,
        })
    }

    /// Advances the operations until all are done; a [`Halt`] says why it stopped short.
    async fn drive(
        &self,
        t: &TenantWorkspace,
        consent: Option<&Consent>,
        actors: &mut [Running],
        run: &mut ScheduleRun,
        scheduler: &mut dyn Scheduler,
    ) -> Result<(), Halt> {
        loop {
            let decision = run.decisions.len();
            self.settle(actors, run, decision)
                .await
                .map_err(Halt::Stuck)?;
            self.check_exclusion(actors, run);
            let enabled: Vec<usize> = actors
                .iter()
                .enumerate()
                .filter(|(_, a)| !a.launched || matches!(a.stop, Some(Stop::Parked(_))))
                .map(|(i, _)| i)
                .collect();
            if enabled.is_empty() {
                if actors.iter().all(|a| a.stop == Some(Stop::Done)) {
                    return Ok(());
                }
                let waiting: Vec<String> = actors
                    .iter()
                    .filter(|a| a.stop != Some(Stop::Done))
                    .map(|a| format!("{} {:?}", a.tag, a.stop))
                    .collect();
                return Err(Halt::Stuck(format!(
                    "nothing can advance but {} is unfinished (a deadlock)",
                    waiting.join(", ")
                )));
            }
            let ready: Vec<Ready> = enabled
                .iter()
                .map(|&i| Ready {
                    step: i,
                    actor: Some(actors[i].tag.clone()),
                })
                .collect();
            let chosen = match scheduler.next(&ready) {
                Ok(Some(chosen)) if enabled.contains(&chosen) => chosen,
                Ok(Some(chosen)) => {
                    return Err(Halt::Refused(format!(
                        "{} chose {chosen}, which cannot run (only {enabled:?} can)",
                        scheduler.name()
                    )))
                }
                Ok(None) => {
                    return Err(Halt::Refused(format!(
                        "{} stopped with {enabled:?} still able to run",
                        scheduler.name()
                    )))
                }
                Err(e) => return Err(Halt::Refused(format!("{}: {e}", scheduler.name()))),
            };
            run.decisions.push(Decision { enabled, chosen });
            self.advance(t, consent, &mut actors[chosen], chosen, run)
                .await
                .map_err(Halt::Stuck)?;
        }
    }

    /// Launches the operation, or releases it from where it is parked.
    async fn advance(
        &self,
        t: &TenantWorkspace,
        consent: Option<&Consent>,
        a: &mut Running,
        index: usize,
        run: &mut ScheduleRun,
    ) -> Result<(), String> {
        if !a.launched {
            a.launched = true;
            a.stop = None;
            if let Some(kind) = a.op.fault() {
                // Done in place: the fault returns once it has taken effect (cut backends gone),
                // so the next decision sees it (a parked request's transaction is already dead).
                let fault = crate::faults::Fault {
                    kind,
                    replica: None,
                    actor: None,
                    down_for: Duration::ZERO,
                };
                let summary = match self.target.apply_fault(&fault).await {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => return Err(format!("{}: the fault {kind:?} failed: {e}", a.tag)),
                };
                run.finished[index] = Some(Finished {
                    status: 0,
                    code: None,
                    summary,
                    answer: None,
                });
                run.completion_order.push(index);
                a.stop = Some(Stop::Done);
                return Ok(());
            }
            if a.op.is_raw_sql() {
                let url = self
                    .target
                    .database_url()
                    .ok_or("the target has no database")?
                    .parse::<sqlx::postgres::PgConnectOptions>()
                    .map_err(|e| e.to_string())?;
                let conn = url
                    .application_name(&evidence::application_name(&a.tag))
                    .connect()
                    .await
                    .map_err(|e| e.to_string())?;
                let sql = super::ops::raw_disconnect_sql(&t.workspace.to_string());
                a.work = Some(Work::Sql(spawn_sql(conn, sql, self.finished.clone())));
                return Ok(());
            }
            for point in a.op.points() {
                self.target
                    .arm(a.replica, SlotKey::new(a.tag.clone(), *point))
                    .map_err(|e| format!("arming {}@{point}: {e}", a.tag))?;
            }
            let request = self.request(t, consent, a);
            let finished = self.finished.clone();
            a.work = Some(Work::Http(tokio::spawn(async move {
                let answer = request.await;
                finished.notify_one();
                answer
            })));
            return Ok(());
        }
        let Some(Stop::Parked(point)) = a.stop.clone() else {
            return Err(format!("{} is not parked", a.tag));
        };
        a.stop = None;
        if a.op.is_raw_sql() {
            let conn = a.session.take().ok_or("the raw writer's session is gone")?;
            a.sql_step += 1;
            a.work = Some(Work::Sql(spawn_sql(
                conn,
                "COMMIT".into(),
                self.finished.clone(),
            )));
            return Ok(());
        }
        if point == harbor_service::syncpoints::ACTIVATION_BEFORE_COMMIT {
            let committed: Option<String> = sqlx::query_scalar(
                "SELECT status FROM connections WHERE workspace_id = $1 AND provider = 'qbo'",
            )
            .bind(t.workspace)
            .fetch_optional(self.db()?)
            .await
            .map_err(|e| e.to_string())?;
            run.status_at_activation_commit.push((
                index,
                committed.and_then(|s| ConnectionStatus::parse(&s).ok()),
            ));
        }
        self.target
            .release(a.replica, &SlotKey::new(a.tag.clone(), point))
            .map_err(|e| format!("releasing {}@{point}: {e}", a.tag))
    }

    fn request(
        &self,
        t: &TenantWorkspace,
        consent: Option<&Consent>,
        a: &Running,
    ) -> impl std::future::Future<Output = Result<Answer, String>> + Send + 'static {
        let client = self.target.client().clone();
        let bearer = self.target.bearer(t.owner, TokenKind::Valid);
        let query = consent.map(|c| c.callback_query()).unwrap_or_default();
        let (method, path) = match a.op.does() {
            Does::Request(op) => op.request(t.workspace, Provider::Qbo, &query),
            // Not requests: launched by `advance` without one.
            Does::RawSql | Does::Fault(_) => (Method::GET, "/".into()),
        };
        let call = client
            .request(method, path)
            .on_replica(a.replica)
            .bearer(Some(bearer))
            .actor(Some(a.tag.clone()));
        // The failure's class, not its path: paths hold the schedule's workspace id, and the
        // summary is part of the outcome exploration compares.
        async move { call.send().await.map_err(|e| e.failure().to_owned()) }
    }

    /// Waits until every launched operation is parked, done, or blocked on a stable holder. It
    /// wakes on a park or a finished request at once; the lock tables are read only when nothing
    /// has happened for a tick (a request that stays still is waiting for something), in one query
    /// for every operation on its way ([`evidence::activities_of`], the same reading and the same
    /// judgement, [`evidence::BackendActivity::blocked_by`], as the scenario's lock-wait probe),
    /// and a verdict that anything is blocked always rests on a fresh read of them.
    async fn settle(
        &self,
        actors: &mut [Running],
        run: &mut ScheduleRun,
        decision: usize,
    ) -> Result<(), String> {
        let started = Instant::now();
        let mut read_locks = false;
        loop {
            let mut settled = true;
            let mut moving: Vec<usize> = Vec::new();
            for (i, a) in actors.iter_mut().enumerate() {
                // A parked request can only move by finishing (its sync point timed out): look.
                let parked_and_still = matches!(a.stop, Some(Stop::Parked(_))) && !a.finished();
                if !a.launched || a.stop == Some(Stop::Done) || parked_and_still {
                    continue;
                }
                match self.poll_one(a, run, i).await? {
                    Some(stop) => note(&mut a.stop, stop, i, decision, run),
                    None => moving.push(i),
                }
            }
            let mut blocked_by: Vec<(usize, Vec<String>)> = Vec::new();
            if read_locks {
                let waits = self.lock_waits(actors, &moving).await?;
                for (i, by) in waits {
                    match by {
                        Some(by) => {
                            let stop = Stop::Blocked(by.clone());
                            note(&mut actors[i].stop, stop, i, decision, run);
                            blocked_by.push((i, by));
                        }
                        None => {
                            actors[i].stop = None;
                            settled = false;
                        }
                    }
                }
            } else if !moving.is_empty() {
                // Not parked or finished, and the lock tables not read this round: as it was,
                // but not settled until they are.
                settled = false;
            }
            // A wait counts as settled only if every holder is itself parked or waiting: a holder
            // that is still running may be about to let go.
            let tags: BTreeMap<&str, &Running> =
                actors.iter().map(|a| (a.tag.as_str(), a)).collect();
            for (_, by) in &blocked_by {
                let stable = by.iter().all(|h| {
                    tags.get(h.as_str()).is_some_and(|a| {
                        matches!(a.stop, Some(Stop::Parked(_)) | Some(Stop::Blocked(_)))
                    })
                });
                settled &= stable;
            }
            // The waits were read before some holders' states: a holder may have let go and
            // parked in between. With every holder now known to be parked or waiting, a second
            // read of the waiters confirms they still wait (a parked holder cannot let go).
            if settled && !blocked_by.is_empty() {
                let waiters: Vec<usize> = blocked_by.iter().map(|(i, _)| *i).collect();
                let again = self.lock_waits(actors, &waiters).await?;
                for ((i, by), (_, now)) in blocked_by.iter().zip(again) {
                    if now.as_ref() != Some(by) {
                        settled = false;
                        let stop = now.map(Stop::Blocked);
                        if let Some(stop) = &stop {
                            run.observed.push(Observed {
                                decision,
                                op: *i,
                                stop: stop.clone(),
                            });
                        }
                        actors[*i].stop = stop;
                    }
                }
            }
            if settled {
                return Ok(());
            }
            if started.elapsed() > self.settle_timeout {
                let locks = evidence::lock_snapshot(self.db()?)
                    .await
                    .unwrap_or_default();
                let states: Vec<String> = actors
                    .iter()
                    .map(|a| format!("{}={:?}", a.tag, a.stop))
                    .collect();
                return Err(format!(
                    "did not settle within {:?} ({}); locks: {locks:?}",
                    self.settle_timeout,
                    states.join(", ")
                ));
            }
            let parks: Vec<_> = actors
                .iter()
                .filter(|a| {
                    a.launched
                        && !a.op.is_raw_sql()
                        && !matches!(a.stop, Some(Stop::Parked(_)) | Some(Stop::Done))
                })
                .flat_map(|a| {
                    a.op.points().iter().map(|p| {
                        self.target
                            .parked(a.replica, SlotKey::new(a.tag.clone(), *p))
                    })
                })
                .collect();
            let any_park = async {
                if parks.is_empty() {
                    std::future::pending::<()>().await
                } else {
                    futures::future::select_all(parks).await;
                }
            };
            read_locks = tokio::select! {
                _ = self.finished.notified() => false,
                _ = any_park => false,
                _ = tokio::time::sleep(SETTLE_TICK) => true,
            };
        }
    }

    /// For each of `which` (operation indices), who blocks it now (`None`: it does not wait for a
    /// lock): one read of the lock tables for all of them.
    async fn lock_waits(
        &self,
        actors: &[Running],
        which: &[usize],
    ) -> Result<Vec<(usize, Option<Vec<String>>)>, String> {
        if which.is_empty() {
            return Ok(Vec::new());
        }
        let tags: Vec<&str> = which.iter().map(|&i| actors[i].tag.as_str()).collect();
        // A failed read is no evidence of a wait: the operations count as on their way (and a
        // settle that never ends reports the lock table).
        let seen = evidence::activities_of(self.db()?, &tags)
            .await
            .unwrap_or_default();
        Ok(which
            .iter()
            .map(|&i| {
                let by = seen
                    .iter()
                    .find(|s| s.actor() == Some(actors[i].tag.as_str()))
                    .and_then(|s| s.blocked_by());
                (i, by)
            })
            .collect())
    }

    /// Whether one running operation has finished or parked (`None`: on its way, or waiting for
    /// a lock — [`Engine::lock_waits`] tells which).
    async fn poll_one(
        &self,
        a: &mut Running,
        run: &mut ScheduleRun,
        index: usize,
    ) -> Result<Option<Stop>, String> {
        match &mut a.work {
            Some(Work::Http(h)) if h.is_finished() => {
                let Some(Work::Http(h)) = a.work.take() else {
                    unreachable!("matched above")
                };
                let answer = h
                    .await
                    .map_err(|e| format!("{}'s request panicked: {e}", a.tag))?;
                let finished = match answer {
                    Ok(ans) => {
                        let code = ans.error_code().map(str::to_owned);
                        let summary = summary_of(&ans);
                        Finished {
                            status: ans.status.as_u16(),
                            code,
                            summary,
                            answer: Some(ans),
                        }
                    }
                    Err(e) => Finished {
                        status: 0,
                        code: None,
                        summary: format!("request failed: {e}"),
                        answer: None,
                    },
                };
                run.finished[index] = Some(finished);
                run.completion_order.push(index);
                return Ok(Some(Stop::Done));
            }
            Some(Work::Sql(h)) if h.is_finished() => {
                let Some(Work::Sql(h)) = a.work.take() else {
                    unreachable!("matched above")
                };
                let (result, conn) = h
                    .await
                    .map_err(|e| format!("{}'s statement panicked: {e}", a.tag))?;
                if let Err(e) = result {
                    let _ = conn.close().await;
                    run.finished[index] = Some(Finished {
                        status: 0,
                        code: None,
                        summary: format!("error: {e}"),
                        answer: None,
                    });
                    run.completion_order.push(index);
                    return Ok(Some(Stop::Done));
                }
                if a.sql_step == 0 {
                    a.session = Some(conn);
                    return Ok(Some(Stop::Parked(RAW_UPDATED)));
                }
                let _ = conn.close().await;
                run.finished[index] = Some(Finished {
                    status: 0,
                    code: None,
                    summary: "ok".into(),
                    answer: None,
                });
                run.completion_order.push(index);
                return Ok(Some(Stop::Done));
            }
            _ => {}
        }
        if !a.op.is_raw_sql() {
            for point in a.op.points() {
                if self
                    .target
                    .slot_state(a.replica, &SlotKey::new(a.tag.clone(), *point))
                    == Some(SlotState::Parked)
                {
                    return Ok(Some(Stop::Parked(point)));
                }
            }
        }
        Ok(None)
    }

    /// Two operations parked under the workspace lock at once break mutual exclusion.
    fn check_exclusion(&self, actors: &[Running], run: &mut ScheduleRun) {
        if run.exclusion_broken.is_some() {
            return;
        }
        let inside: Vec<(usize, &'static str)> = actors
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a.stop {
                Some(Stop::Parked(p)) if UNDER_WORKSPACE_LOCK.contains(&p) => Some((i, p)),
                _ => None,
            })
            .collect();
        if let [(a, pa), (b, pb), ..] = inside[..] {
            run.exclusion_broken = Some((a, pa, b, pb));
        }
    }
}

/// Sets an operation's stop, recording it when it changed.
fn note(slot: &mut Option<Stop>, stop: Stop, op: usize, decision: usize, run: &mut ScheduleRun) {
    if slot.as_ref() != Some(&stop) {
        run.observed.push(Observed {
            decision,
            op,
            stop: stop.clone(),
        });
    }
    *slot = Some(stop);
}

fn spawn_sql(
    conn: PgConnection,
    sql: String,
    finished: std::sync::Arc<tokio::sync::Notify>,
) -> JoinHandle<(Result<(), String>, PgConnection)> {
    tokio::spawn(async move {
        let done = execute(conn, sql).await;
        finished.notify_one();
        done
    })
}

// Boxed with an explicit `Send` (the compiler's Send inference for sqlx's executor on a borrowed
// connection is not general enough inside `tokio::spawn`).
fn execute(
    mut conn: PgConnection,
    sql: String,
) -> futures::future::BoxFuture<'static, (Result<(), String>, PgConnection)> {
    Box::pin(async move {
        let result = exec_on(&mut conn, &sql).await;
        (result, conn)
    })
}

fn exec_on<'c>(
    conn: &'c mut PgConnection,
    sql: &'c str,
) -> futures::future::BoxFuture<'c, Result<(), String>> {
    Box::pin(async move {
        sqlx::Executor::execute(conn, sqlx::raw_sql(sql))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}
