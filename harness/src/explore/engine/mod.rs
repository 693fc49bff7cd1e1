//! One schedule, executed: the operations on a fresh workspace of a running service, advanced one
//! at a time in the order a [`Scheduler`] picks. After every advance the engine *settles*: it waits
//! until every launched operation is parked at one of its sync points, finished, or waiting for a
//! lock whose holder is itself parked or waiting — proven from `pg_stat_activity` and
//! `pg_blocking_pids`, never from a sleep. An operation that waits for a lock cannot be chosen until
//! its holder moves; if nothing can be chosen and something is unfinished, that is a finding.
//!
//! `setup.rs` makes a schedule's workspace and brings it to its start; `drive.rs` asks the
//! scheduler for each decision; `advance.rs` carries one out (a launch or a release);
//! `settle.rs` waits for the system to come to rest after it; `exclusion.rs` watches mutual
//! exclusion between decisions; `end.rs` reads what the oracles judge once every operation has
//! answered.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use harbor_service::domain::Provider;
use harbor_service::lifecycle::ConnectionStatus;
use harbor_syncpoint::{SlotKey, SlotState};
use reqwest::Method;
use sqlx::{Connection, PgConnection};
use tokio::task::JoinHandle;

mod advance;
mod drive;
mod end;
mod exclusion;
mod settle;
mod setup;

use super::ops::{Does, Operation, PROBE_HOLDING, UNDER_WORKSPACE_LOCK};
pub use super::record::{
    summary_of, Decision, EndState, Finished, Observed, ScheduleRun, Spent, Stop,
};
use super::start::Start;
use crate::client::Answer;
use crate::evidence;
use crate::fake_provider::{Consent, Counters};
use crate::fixtures::TenantWorkspace;
use crate::identity::TokenKind;
use crate::schedule::{Ready, Scheduler};
use crate::target::{Capability, Target, TenantSpec};

/// The replica the starting state is made on (the one `target::start_flow` and `complete_flow`
/// use); operations run on the other one (when there are two), so a state kept in one replica's
/// memory is not found.
pub const SETUP_REPLICA: usize = 0;

/// How long a settle waits for a park or a finished request before it reads the lock tables: a
/// released request reaches its next point within a millisecond or two unless it waits.
const SETTLE_TICK: Duration = Duration::from_millis(2);

/// The longest wait between two readings of the lock tables while nothing happens
/// ([`Engine::settle`]'s back-off).
const SETTLE_TICK_MAX: Duration = Duration::from_millis(16);

/// How long one operation on its way, with no other parked or waiting, goes without a reading of
/// the lock tables: it reaches its next point in a few milliseconds, or waits on something no
/// reading can settle, unless it waits on itself (`settle::reading_can_settle`). Far below any lock
/// timeout, so such a self-wait is still settled and reported as the deadlock it is.
const ALONE_UNREAD: Duration = Duration::from_millis(100);

/// A workspace in its starting state, made ahead of its schedule.
pub struct Prepared {
    /// The state it is to start in.
    pub start: Start,
    /// When its making began (its flow's OAuth state is issued then, and expires in Redis).
    pub made_at: Instant,
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
    Sql(JoinHandle<crate::scenario::executor::jobs::JobResult>),
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

/// Whether a replica has been stopped or crashed in this schedule: from then on a request parked
/// on it may have been taken with it (a stop that does not wait drops what it had; a crash loses
/// it) while its client has yet to see the connection fail, so a parked request's slot must be
/// looked at again before it counts as parked ([`Engine::slot_parked`]).
fn replica_downed(actors: &[Running]) -> bool {
    actors.iter().any(|a| a.launched && a.op.crashes())
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
    /// The probes that held their locks when this request was launched (it must wait for each,
    /// or answer without the lock's effect).
    under_probes: Vec<usize>,
    /// A fault ended the transaction it was inside ([`Engine::note_severed`]).
    severed: bool,
}

/// The executor of schedules on one running service.
pub struct Engine<'a> {
    /// The service.
    pub target: &'a dyn Target,
    /// Bound on every settle.
    pub settle_timeout: Duration,
    /// Woken when any operation's request or statement finishes, so a settle need not poll.
    finished: std::sync::Arc<tokio::sync::Notify>,
    /// Whether requests park at the target's sync points (without: they stop only where they
    /// wait for a lock, the lock probe's among them).
    sync_points: bool,
    /// The lane this engine runs schedules in beside other lanes on the same target (`None`:
    /// alone). Its operations' actor tags then carry it (`L<lane>E<i>`), and its clean-up clears
    /// only their sync-point slots.
    lane: Option<usize>,
    /// Raw operations' sessions whose transactions ended cleanly, kept for later schedules
    /// ([`Engine::raw_session`]).
    raw_sessions: std::sync::Mutex<Vec<PgConnection>>,
}

/// What a kept raw session is put back to before it waits, in one simple query: what `DISCARD
/// ALL` does (which cannot run in a multi-statement query) but `DEALLOCATE ALL`, since the
/// client's statement cache holds the session's prepared statements. A target's `lock_qbo_row`
/// state query is the profile's SQL: it may set a parameter or a role, take a session-level
/// advisory lock, `LISTEN` or make a temporary table, and none of it may reach a later schedule.
/// The name it then waits under, `certify-explore-idle`, is set last (`RESET ALL` gives back the
/// startup name, an actor's): no actor's, so no reading of the lock tables takes it for an
/// operation, and outside `harbor%`, so no fault that ends the service's backends counts it.
const RESET_RAW_SESSION: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
    UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES; \
    SELECT set_config('application_name', 'certify-explore-idle', false)";

impl<'a> Engine<'a> {
    /// An engine on `target`.
    pub fn new(target: &'a dyn Target) -> Self {
        Self {
            target,
            settle_timeout: Duration::from_secs(5),
            finished: Default::default(),
            sync_points: true,
            lane: None,
            raw_sessions: Default::default(),
        }
    }

    /// A session for a raw operation, named with its actor tag: one kept from an earlier
    /// schedule when there is one, a new one otherwise. A new session is a backend PostgreSQL
    /// forks and ends — about 6 ms of CPU on a 2-core host, once for every schedule of a set
    /// with a raw operation before sessions were kept; a rename is one round trip.
    async fn raw_session(&self, tag: &str) -> Result<PgConnection, String> {
        let name = evidence::application_name(tag);
        let kept = self
            .raw_sessions
            .lock()
            .ok()
            .and_then(|mut kept| kept.pop());
        if let Some(mut conn) = kept {
            if rename(&mut conn, &name).await.is_ok() {
                return Ok(conn);
            }
        }
        let url = self
            .target
            .database_url()
            .ok_or("the target has no database")?;
        evidence::tagged_session(url, tag)
            .await
            .map_err(|e| e.to_string())
    }

    /// Keeps a raw session whose transaction ended cleanly (committed, nothing left open) for a
    /// later schedule on this engine (its lane's next, or the next of the sets run alone), put
    /// back to its defaults and renamed first so that it is no actor's while it waits.
    async fn keep_raw_session(&self, mut conn: PgConnection) {
        use sqlx::Executor;
        if conn
            .execute(sqlx::raw_sql(RESET_RAW_SESSION))
            .await
            .is_err()
        {
            let _ = conn.close().await;
            return;
        }
        if let Ok(mut kept) = self.raw_sessions.lock() {
            kept.push(conn);
        }
    }

    /// The engine of lane `lane`, whose schedules run while other lanes' run on the same target:
    /// its actor tags are its own, and its clean-up leaves the other lanes' parked requests alone.
    pub fn in_lane(mut self, lane: usize) -> Self {
        self.lane = Some(lane);
        self
    }

    /// The actor tag of operation `i`.
    fn tag(&self, i: usize) -> String {
        match self.lane {
            None => format!("E{i}"),
            Some(lane) => format!("L{lane}E{i}"),
        }
    }

    /// Releases what this engine's schedule left parked and drops its armed slots: every slot
    /// when it runs alone, only its operations' when other lanes run beside it.
    async fn release_own(&self, actors: &[Running]) {
        if self.lane.is_none() {
            self.target.release_all().await;
            return;
        }
        for a in actors.iter().filter(|a| a.launched && !a.op.is_raw_sql()) {
            for point in a.op.armed().filter(|p| self.has_point(p)) {
                self.target
                    .clear_slot(a.replica, &SlotKey::new(a.tag.clone(), *point))
                    .await;
            }
        }
    }

    /// The engine, parking requests at the target's sync points or (`false`) only where they
    /// wait for a lock: a target explored with lock probes alone.
    pub fn with_sync_points(mut self, on: bool) -> Self {
        self.sync_points = on;
        self
    }

    /// Whether a request is armed and looked for at `point`.
    fn has_point(&self, point: &str) -> bool {
        self.sync_points && self.target.has_point(point)
    }

    /// Whether an operation's request is parked at `point`, as its replica's controller says.
    async fn slot_parked(&self, a: &Running, point: &'static str) -> bool {
        self.target
            .slot_state(a.replica, &SlotKey::new(a.tag.clone(), point))
            .await
            == Some(SlotState::Parked)
    }

    fn db(&self) -> Result<&sqlx::PgPool, String> {
        self.target.need_database()
    }

    fn provider(&self) -> Result<&crate::fake_provider::FakeProvider, String> {
        self.target.need_provider()
    }

    fn offers(&self, capability: Capability) -> bool {
        self.target.capabilities().contains(&capability)
    }

    fn op_replica(&self) -> usize {
        if self.target.replicas() > 1 {
            1
        } else {
            0
        }
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
        let flow = self.finish_setup(&prepared).await?;
        let consent = (prepared.start == Start::Pending).then_some(flow.clone());
        let start_took = started.elapsed();
        let made = prepared.took;
        let setup = made + start_took;
        let t = prepared.workspace;
        // The workspace's own grant's calls: other sets' schedules may run beside this one.
        let counters_before = self.provider()?.grant_counters(&flow.code);
        let replica = self.op_replica();
        let mut actors: Vec<Running> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| Running {
                op: *op,
                tag: self.tag(i),
                replica,
                work: None,
                stop: None,
                launched: false,
                session: None,
                sql_step: 0,
                under_probes: Vec::new(),
                severed: false,
            })
            .collect();
        let mut run = ScheduleRun {
            finished: vec![None; ops.len()],
            setup,
            spent: Spent {
                start: start_took,
                ..Spent::default()
            },
            ..ScheduleRun::default()
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
        let cleaning = Instant::now();
        self.release_own(&actors).await;
        for a in &mut actors {
            match a.work.take() {
                Some(Work::Http(h)) => {
                    let _ = tokio::time::timeout(self.settle_timeout, h).await;
                }
                Some(Work::Sql(h)) => {
                    if let Ok(Ok((_, Some(conn)))) =
                        tokio::time::timeout(self.settle_timeout, h).await
                    {
                        let _ = conn.close().await;
                    }
                }
                None => {}
            }
            if let Some(conn) = a.session.take() {
                let _ = conn.close().await;
            }
        }
        self.release_own(&actors).await;
        for a in &actors {
            if a.launched {
                if let Err(e) = self.do_faults(a.op.entry().cleanup, a.replica).await {
                    run.stuck
                        .get_or_insert(format!("cleaning up after {}: {e}", a.tag));
                }
            }
        }
        if ops.iter().any(|o| o.cuts_redis()) {
            // Each replica reconnects to Redis on its own back-off; the next schedule (and the
            // end checks' reads through the service) must not meet one still reconnecting.
            let client = self.target.client();
            if client.until_ready(self.settle_timeout).await < client.replicas() {
                run.stuck.get_or_insert(format!(
                    "a replica was not ready again {:?} after Redis came back",
                    self.settle_timeout
                ));
            }
        }
        run.spent.cleanup = cleaning.elapsed();
        let checking = Instant::now();
        if ops.iter().any(|o| o.fault().is_some()) && self.offers(Capability::ReferenceSchema) {
            // What a fault interrupted may have left an intent (a grant written ahead, a
            // revocation): one that never drains is a grant left live — a finding, not an error.
            if let Err(stuck) = self.drain_outbox(&t).await {
                run.stuck.get_or_insert(stuck);
            }
        }
        let counters_after = self.provider()?.grant_counters(&flow.code);
        run.end = self
            .end_state(&t, &counters_before, &counters_after)
            .await?;
        let key = self
            .target
            .workspace_lock(t.workspace)
            .ok_or("the target does not name its workspace lock")?;
        // Every operation has answered; a lock still held once the settle bound is over is left
        // held.
        run.lock_left = crate::oracles::until_no_workspace_lock_held(
            self.db()?,
            t.workspace,
            key,
            self.settle_timeout,
        )
        .await
        .err();
        // The stored-token oracles open tokens with the service's keys in the reference's format;
        // a target that does not offer them is judged on everything else.
        let tokens = self
            .target
            .tokens()
            .filter(|_| self.offers(Capability::ReferenceSchema));
        if let Some(ring) = tokens {
            run.tokens_unbound = crate::oracles::tokens_bound(self.db()?, ring, Some(t.workspace))
                .await
                .err();
        }
        // A store that committed must not be followed by giving its grant back, and a rotation a
        // crash or a cut interrupted must leave the row holding the rotated token (the outbox
        // adopts it), not the spent one.
        if let Some(ring) = tokens {
            run.stored_grant_dead =
                crate::oracles::stored_grants_live(self.db()?, ring, self.provider()?, t.workspace)
                    .await
                    .err();
        }
        // Only a sync stores documents, and the table is the reference's: one read, where a
        // schedule could have left one.
        if ops.iter().any(|o| o.is_sync()) && self.offers(Capability::ReferenceSchema) {
            run.documents_orphaned =
                crate::oracles::documents_under_live_grants(self.db()?, Some(t.workspace))
                    .await
                    .err();
        }
        run.checks = checking.elapsed();
        // `started` covers the start (the setup's part on the schedule's path) already.
        run.duration = started.elapsed() + made;
        Ok(run)
    }
}

/// Sets a session's `application_name`, outside any transaction (a raw operation's `BEGIN` comes
/// after it, and its `COMMIT` before the rename back to idle).
async fn rename(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('application_name', $1, false)")
        .bind(name)
        .execute(conn)
        .await
        .map(|_| ())
}
