//! Evidence from the server's own tables. "B blocks on A" is decided here, from `pg_stat_activity`,
//! `pg_locks` and `pg_blocking_pids()`, polled every few milliseconds as PostgreSQL's isolation
//! tester does — never from elapsed time. A probe that runs out of time is a failure carrying a
//! lock-table snapshot, never a pass.
//!
//! Past 500 lines on purpose: every reading of the lock and activity tables, and the one judgement
//! of who blocks whom, live in one file, so that scenarios, exploration and the isolation tester
//! share one query shape and one poller.

use std::time::{Duration, Instant};

use harbor_service::domain::Actor;
use serde::Serialize;
use sqlx::PgPool;

/// How often the probes poll the lock tables.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// One backend of the scenario's database, as `pg_stat_activity` shows it.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct BackendActivity {
    /// The backend's process id.
    pub pid: i32,
    /// `harbor:<actor>` for a tagged request's transaction.
    pub application_name: String,
    /// `active`, `idle in transaction`, …
    pub state: Option<String>,
    /// `Lock` when the backend waits for a heavyweight lock.
    pub wait_event_type: Option<String>,
    /// The lock type waited for: `advisory`, `tuple`, `transactionid`, …
    pub wait_event: Option<String>,
    /// `pg_blocking_pids(pid)` when it waits for a heavyweight lock; empty otherwise (not asked).
    pub blocking_pids: Vec<i32>,
    /// The `application_name` of each blocking backend, in the same order.
    pub blocking_apps: Vec<String>,
}

impl BackendActivity {
    /// The actor tag, when the backend's transaction is tagged.
    pub fn actor(&self) -> Option<&str> {
        Actor::from_application_name(&self.application_name)
    }

    /// The actors of the blocking backends (untagged blockers are shown by their application name).
    pub fn blocking_actors(&self) -> Vec<String> {
        self.blocking_apps
            .iter()
            .map(|a| Actor::from_application_name(a).unwrap_or(a).to_owned())
            .collect()
    }

    /// Whether the backend waits for a heavyweight lock.
    pub fn is_lock_waiting(&self) -> bool {
        self.wait_event_type.as_deref() == Some("Lock")
    }

    /// The actors blocking it, when it waits for a heavyweight lock that someone blocks. `None`
    /// when it does not wait, or when the list of blockers came back empty: `pg_blocking_pids` is
    /// read twice by the query, and an empty list means the lock was let go between the reads.
    pub fn blocked_by(&self) -> Option<Vec<String>> {
        let by = self.blocking_actors();
        (self.is_lock_waiting() && !self.blocking_pids.is_empty() && !by.is_empty()).then_some(by)
    }
}

/// An advisory lock's two-part key as `pg_locks` shows it (`classid`, `objid`, each half of the
/// key read as unsigned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct AdvisoryKey {
    /// The first half (`pg_locks.classid`).
    pub classid: u32,
    /// The second half (`pg_locks.objid`).
    pub objid: u32,
    /// Taken with one `bigint` (`pg_advisory_xact_lock(k)`: `objsubid` 1) rather than two
    /// `int`s (`objsubid` 2) — two different locks with the same halves.
    pub bigint: bool,
}

/// The arguments of the advisory-lock functions that take an [`AdvisoryKey`]'s lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdvisoryArguments {
    /// One `bigint`: the form `pg_advisory_xact_lock(k)`.
    Bigint(i64),
    /// Two `int`s: the form `pg_advisory_xact_lock(a, b)`.
    Pair(i32, i32),
}

impl AdvisoryKey {
    /// The signed arguments that take this lock: pg_locks shows each half unsigned, the functions
    /// take them signed.
    pub fn arguments(&self) -> AdvisoryArguments {
        if self.bigint {
            AdvisoryArguments::Bigint((i64::from(self.classid) << 32) | i64::from(self.objid))
        } else {
            AdvisoryArguments::Pair(self.classid as i32, self.objid as i32)
        }
    }

    /// The arguments that take this lock, as SQL text: `k` for the `bigint` form, `a, b` for the
    /// pair.
    pub fn sql_arguments(&self) -> String {
        match self.arguments() {
            AdvisoryArguments::Bigint(k) => k.to_string(),
            AdvisoryArguments::Pair(a, b) => format!("{a}, {b}"),
        }
    }
}

/// A row of `pg_locks` for the scenario's database or an advisory lock.
#[derive(Clone, Debug, Serialize, serde::Deserialize, sqlx::FromRow, PartialEq, Eq)]
pub struct LockRow {
    /// The holding or waiting backend.
    pub pid: i32,
    /// Its `application_name`.
    pub application_name: String,
    /// `advisory`, `tuple`, `transactionid`, `relation`, …
    pub locktype: String,
    /// For advisory locks: the first key.
    pub classid: Option<i64>,
    /// For advisory locks: the second key.
    pub objid: Option<i64>,
    /// For advisory locks: 1 when taken with one `bigint`, 2 with two `int`s.
    pub objsubid: Option<i16>,
    /// The relation, when the lock is on one.
    pub relation: Option<String>,
    /// For tuple locks: the page.
    pub page: Option<i32>,
    /// For tuple locks: the tuple.
    pub tuple: Option<i16>,
    /// For transaction-id locks: the transaction.
    pub transactionid: Option<String>,
    /// The lock mode.
    pub mode: String,
    /// Whether it is held (true) or awaited (false).
    pub granted: bool,
}

// The blockers are asked for only of a backend that waits for a heavyweight lock: no other is
// ever judged blocked ([`BackendActivity::blocked_by`]), and `pg_blocking_pids` takes every lock
// partition's lock to answer — the explorer's settle reads this several times a schedule.
const ACTIVITY_SQL: &str = "\
    SELECT a.pid, a.application_name, a.state, a.wait_event_type, a.wait_event, \
           CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) ELSE '{}' END AS blocking_pids, \
           CASE WHEN a.wait_event_type = 'Lock' THEN \
               ARRAY(SELECT coalesce(b.application_name, '') FROM unnest(pg_blocking_pids(a.pid)) WITH ORDINALITY AS u(p, n) \
                     LEFT JOIN pg_stat_activity b ON b.pid = u.p ORDER BY u.n) \
           ELSE '{}' END AS blocking_apps \
    FROM pg_stat_activity a \
    WHERE a.datname = current_database() AND a.application_name = ANY($1)";

// The columns of a `LockRow`, from `pg_locks l` and `pg_stat_activity a`.
macro_rules! lock_row_columns {
    () => {
        "l.pid, coalesce(a.application_name, '') AS application_name, l.locktype, \
         l.classid::bigint AS classid, l.objid::bigint AS objid, l.objsubid, l.relation::regclass::text AS relation, \
         l.page, l.tuple, l.transactionid::text AS transactionid, l.mode, l.granted"
    };
}

const LOCKS_SQL: &str = concat!(
    "SELECT ",
    lock_row_columns!(),
    " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
      WHERE (l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) OR l.locktype = 'transactionid') \
        AND l.pid <> pg_backend_pid() \
      ORDER BY l.pid, l.locktype"
);

/// [`WAITS_AMONG_SQL`]'s row: blocked, the lock's blockers, the snapshot's, the lock awaited and
/// the wait event's type.
type WaitsAmongRow = (
    bool,
    Vec<i32>,
    Vec<i32>,
    Option<sqlx::types::Json<LockRow>>,
    Option<String>,
);

// The tester's question, its proof and the lock awaited, in one statement: read apart, a wait
// that ends between the reads would leave its proof naming nothing.
const WAITS_AMONG_SQL: &str = concat!(
    "SELECT pg_isolation_test_session_is_blocked($1, $2), \
            ARRAY(SELECT p FROM unnest(pg_blocking_pids($1)) AS u(p) WHERE p = ANY($2)), \
            pg_safe_snapshot_blocking_pids($1), \
            (SELECT row_to_json(w) FROM (SELECT ",
    lock_row_columns!(),
    " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
       WHERE l.pid = $1 AND NOT l.granted LIMIT 1) w), \
            (SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1)"
);

/// The backend currently running the transaction tagged with `actor`, if any.
pub async fn activity_of(
    pool: &PgPool,
    actor: &str,
) -> Result<Option<BackendActivity>, sqlx::Error> {
    Ok(activities_of(pool, &[actor]).await?.into_iter().next())
}

/// The backends running the transactions tagged with any of `actors`, read in one query: a settle
/// over many actors costs one round trip, not one per actor.
pub async fn activities_of(
    pool: &PgPool,
    actors: &[&str],
) -> Result<Vec<BackendActivity>, sqlx::Error> {
    let names: Vec<String> = actors.iter().map(|a| application_name(a)).collect();
    sqlx::query_as(ACTIVITY_SQL)
        .bind(names)
        .fetch_all(pool)
        .await
}

/// What a backend waits for, as PostgreSQL's isolation tester asks it: the server's own
/// `pg_isolation_test_session_is_blocked` decides (a heavyweight lock held or queued for ahead of
/// it by one of `among`, a safe snapshot, and whatever else the server's version counts), and
/// `pg_blocking_pids` / `pg_safe_snapshot_blocking_pids` and the lock awaited in `pg_locks`, read
/// in the same statement, are the proof. `None` when it does not wait, or when the server says it
/// does but the proof names no backend (the wait ended between the statement's reads): the
/// caller asks again. A wait at an injection point (PostgreSQL 17's `InjectionPoint` wait event,
/// which the server counts as blocked) has no blocker to name, and is taken on the server's word
/// as PostgreSQL's own tester takes it.
pub async fn waits_among(
    pool: &PgPool,
    pid: i32,
    among: &[i32],
) -> Result<Option<SessionWait>, sqlx::Error> {
    let (blocked, lock, snapshot, awaited, wait_event_type): WaitsAmongRow =
        sqlx::query_as(WAITS_AMONG_SQL)
            .bind(pid)
            .bind(among)
            .fetch_one(pool)
            .await?;
    let wait = SessionWait {
        lock,
        snapshot,
        awaited: awaited.map(|j| j.0),
        wait_event_type,
    };
    Ok((blocked && wait.is_proven()).then_some(wait))
}

/// Who a waiting backend waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionWait {
    /// The backends among the asked ones that hold (or queue ahead for) the lock it awaits.
    pub lock: Vec<i32>,
    /// The backends whose serializable transactions keep it from a safe snapshot.
    pub snapshot: Vec<i32>,
    /// The lock it awaited, as `pg_locks` showed it (none for a safe-snapshot wait).
    pub awaited: Option<LockRow>,
    /// What `pg_stat_activity` said it waited on (`Lock`, `InjectionPoint`, …).
    pub wait_event_type: Option<String>,
}

impl SessionWait {
    /// Whether it names a backend waited for, or waits where there is none to name (an
    /// injection point).
    pub fn is_proven(&self) -> bool {
        !self.lock.is_empty()
            || !self.snapshot.is_empty()
            || self.wait_event_type.as_deref() == Some("InjectionPoint")
    }
}

/// Every lock on the scenario's database (and every transaction-id lock), held or awaited.
pub async fn lock_snapshot(pool: &PgPool) -> Result<Vec<LockRow>, sqlx::Error> {
    sqlx::query_as(LOCKS_SQL).fetch_all(pool).await
}

/// Whether no backend holds `key` now, as the lock manager itself answers: the lock tried in a
/// statement of its own, let go at its end. Nothing waits for a lock nobody holds (its waiters are
/// granted it as it is let go), so a free lock is neither held nor awaited. For an end check,
/// after every request has answered: a take that wins holds the lock for that one statement.
/// Cheaper than reading `pg_locks`, which copies every backend slot's fast-path locks: 0.14 ms
/// against 0.32 ms a call, round trip included, at `max_connections` 500 (pgbench, this host).
/// The lock tables are read when it is held, to say by whom.
pub async fn advisory_lock_free(pool: &PgPool, key: AdvisoryKey) -> Result<bool, sqlx::Error> {
    let query = match key.arguments() {
        AdvisoryArguments::Bigint(k) => {
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(k)
        }
        AdvisoryArguments::Pair(a, b) => {
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
                .bind(a)
                .bind(b)
        }
    };
    query.fetch_one(pool).await
}

/// The advisory locks held by the actor's backend.
pub async fn advisory_locks_of(pool: &PgPool, actor: &str) -> Result<Vec<LockRow>, sqlx::Error> {
    let app = application_name(actor);
    Ok(lock_snapshot(pool)
        .await?
        .into_iter()
        .filter(|l| l.application_name == app && l.locktype == LockType::Advisory.as_str())
        .collect())
}

/// The `application_name` of `actor`'s tagged sessions, as the service's [`Actor`] spells it.
/// Tags the harness checked at load time always parse; anything else never matches a backend.
pub fn application_name(actor: &str) -> String {
    Actor::parse(actor)
        .map(|a| a.application_name())
        .unwrap_or_default()
}

/// A new session on `database_url` tagged as `actor`'s (`application_name`), so that the lock
/// tables name it: the harness's own sessions that hold or take locks (a scenario's SQL actor, an
/// exploration's raw operation, a lock probe).
pub async fn tagged_session(
    database_url: &str,
    actor: &str,
) -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::ConnectOptions as _;
    database_url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .application_name(&application_name(actor))
        .connect()
        .await
}

/// The kinds of heavyweight lock a scenario can expect a step to wait for (`pg_locks.locktype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LockType {
    /// `pg_advisory_xact_lock` and its shared form: the workspace lock, or a membership's hold
    /// (migration 0016).
    Advisory,
    /// A row lock being taken (`FOR UPDATE` on a row another transaction locks).
    Tuple,
    /// Waiting for another transaction to end (a row it updated or locked).
    Transactionid,
    /// A table-level lock.
    Relation,
}

impl LockType {
    /// Every lock type, for messages.
    pub const ALL: [LockType; 4] = [
        LockType::Advisory,
        LockType::Tuple,
        LockType::Transactionid,
        LockType::Relation,
    ];

    /// The `pg_locks.locktype` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LockType::Advisory => "advisory",
            LockType::Tuple => "tuple",
            LockType::Transactionid => "transactionid",
            LockType::Relation => "relation",
        }
    }
}

impl LockRow {
    /// Whether this row is the advisory lock `key` (a target names its workspace lock this way).
    /// The one place a key is matched against `pg_locks`.
    pub fn is_advisory(&self, key: AdvisoryKey) -> bool {
        self.locktype == LockType::Advisory.as_str()
            && self.classid == Some(i64::from(key.classid))
            && self.objid == Some(i64::from(key.objid))
            && self.objsubid == Some(if key.bigint { 1 } else { 2 })
    }

    /// Whether `self` and `other` are the same lockable object (same lock tag): what a waiter
    /// awaits and a holder holds.
    pub fn same_object(&self, other: &LockRow) -> bool {
        self.locktype == other.locktype
            && match self.locktype.as_str() {
                "advisory" => {
                    (self.classid, self.objid, self.objsubid)
                        == (other.classid, other.objid, other.objsubid)
                }
                "transactionid" => self.transactionid == other.transactionid,
                "tuple" => {
                    (&self.relation, self.page, self.tuple)
                        == (&other.relation, other.page, other.tuple)
                }
                "relation" => self.relation.is_some() && self.relation == other.relation,
                // Lock types the probe does not identify precisely never match: better a failed
                // expectation than a false pass.
                _ => false,
            }
    }
}

/// Why a probe gave up: what it waited for, and the lock tables when it gave up.
#[derive(Debug, Serialize)]
pub struct ProbeTimeout {
    /// What the probe was waiting for.
    pub waited_for: String,
    /// How long it waited.
    pub waited: Duration,
    /// The actor's backend when it gave up (None: no tagged backend at all).
    pub last_seen: Option<BackendActivity>,
    /// `pg_locks` when it gave up.
    pub locks: Vec<LockRow>,
    /// The last error reading the lock tables, if a reading failed: a probe that could not read
    /// them says so, not only that it saw nothing.
    pub last_error: Option<String>,
}

impl std::fmt::Display for ProbeTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}; backend: {:?}; ",
            self.waited, self.waited_for, self.last_seen
        )?;
        if let Some(e) = &self.last_error {
            write!(f, "last reading failed: {e}; ")?;
        }
        write!(f, "locks: ")?;
        for l in &self.locks {
            write!(
                f,
                "[{} {} {} {:?}/{:?} {:?} granted={}] ",
                l.application_name, l.locktype, l.mode, l.classid, l.objid, l.relation, l.granted
            )?;
        }
        Ok(())
    }
}

/// What the lock tables showed when a step was proven blocked.
#[derive(Clone, Debug, Serialize)]
pub struct Blocked {
    /// The waiting backend.
    pub waiter: BackendActivity,
    /// The lock it awaits (its `pg_locks` row, not granted).
    pub awaited: LockRow,
    /// The whole lock table at that moment.
    pub locks: Vec<LockRow>,
}

/// Why [`until_blocked`] gave up.
#[derive(Debug)]
pub enum NotBlocked {
    /// The step ended before it was seen waiting (`finished` said so).
    Finished,
    /// It was not seen waiting within the limit (boxed: it carries the lock table).
    TimedOut(Box<ProbeTimeout>),
}

/// What the backend named in [`until_blocked`] must be to the awaited lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockedBy {
    /// It holds the very object awaited.
    #[default]
    Holder,
    /// It waits for the very object awaited too, ahead in its queue: PostgreSQL queues a request
    /// that conflicts with a waiting one behind it, even when the holders would grant it. Needs a
    /// named actor, whose waiting backend must be among the waiter's `pg_blocking_pids`.
    QueuedAhead,
}

impl BlockedBy {
    /// How a waiter stands to the named actor, in words: "blocked on" or "queued behind".
    pub fn relation(self) -> &'static str {
        match self {
            BlockedBy::Holder => "blocked on",
            BlockedBy::QueuedAhead => "queued behind",
        }
    }
}

/// The one lock-wait poller. Polls until `waiter`'s backend waits for a heavyweight lock that a
/// backend *holds* — `holder`'s when given, anyone's otherwise — or, with
/// [`BlockedBy::QueuedAhead`], that `holder`'s backend awaits too, ahead of it. Not merely
/// "somewhere in `pg_blocking_pids`": a waiter queued ahead is listed there too, and a holder or a
/// waiter of the very object awaited is what proves who blocks whom, and how. `finished` is asked
/// before every poll and ends the probe when the waiting step has completed (it can no longer
/// block).
pub async fn until_blocked(
    pool: &PgPool,
    waiter: &str,
    holder: Option<&str>,
    how: BlockedBy,
    limit: Duration,
    mut finished: impl FnMut() -> bool,
) -> Result<Blocked, NotBlocked> {
    let started = Instant::now();
    let mut last_seen = None;
    let mut last_error = None;
    let holder_app = holder.map(application_name);
    while started.elapsed() < limit {
        if finished() {
            return Err(NotBlocked::Finished);
        }
        let seen = activity_of(pool, waiter)
            .await
            .map_err(|e| last_error = Some(e.to_string()));
        if let Ok(seen) = seen {
            if let Some((a, by)) = seen.as_ref().and_then(|a| Some((a, a.blocked_by()?))) {
                let named = holder.is_none_or(|h| by.iter().any(|b| b == h));
                if named {
                    let locks = lock_snapshot(pool)
                        .await
                        .map_err(|e| last_error = Some(e.to_string()))
                        .unwrap_or_default();
                    let awaited = locks.iter().find(|l| l.pid == a.pid && !l.granted).cloned();
                    if let Some(awaited) = awaited {
                        let held = locks.iter().any(|l| {
                            l.granted == (how == BlockedBy::Holder)
                                && l.pid != a.pid
                                // Queued ahead: that very backend, among the waiter's blockers
                                // (`pg_blocking_pids` lists the waiters ahead that conflict), not
                                // another of the actor's, nor anyone's when no actor is named.
                                && (how == BlockedBy::Holder
                                    || (holder.is_some() && a.blocking_pids.contains(&l.pid)))
                                && holder_app.as_ref().is_none_or(|h| &l.application_name == h)
                                && l.same_object(&awaited)
                        });
                        if held {
                            return Ok(Blocked {
                                waiter: a.clone(),
                                awaited,
                                locks,
                            });
                        }
                    }
                }
            }
            last_seen = seen;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Err(NotBlocked::TimedOut(Box::new(ProbeTimeout {
        waited_for: match (holder, how) {
            (Some(h), BlockedBy::Holder) => format!("{waiter} to wait for a lock held by {h}"),
            (Some(h), BlockedBy::QueuedAhead) => {
                format!("{waiter} to wait for a lock behind {h}, which waits for it too")
            }
            (None, _) => format!("{waiter} to wait for a lock"),
        },
        waited: limit,
        last_seen,
        locks: match lock_snapshot(pool).await {
            Ok(locks) => locks,
            Err(e) => {
                last_error = Some(e.to_string());
                Vec::new()
            }
        },
        last_error,
    })))
}

/// Polls until none of `pids` is a backend any more: the proof that what a crash or a terminate
/// took away (a transaction, its locks) is gone, read from `pg_stat_activity`, not assumed after a
/// sleep. `Err` names the survivors and their state.
pub async fn until_backends_gone(
    pool: &PgPool,
    pids: &[i32],
    limit: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let alive: Vec<(i32, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT pid, application_name, state FROM pg_stat_activity WHERE pid = ANY($1)",
        )
        .bind(pids)
        .fetch_all(pool)
        .await
        .map_err(|e| format!("reading pg_stat_activity: {e}"))?;
        if alive.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= limit {
            return Err(format!("backends still alive after {limit:?}: {alive:?}"));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Ends (`pg_terminate_backend`) every backend of the scenario's database whose
/// `application_name` is one of `names` — or, with `None`, every backend but the harness's own —
/// and waits until they are gone. Returns how many were ended.
pub async fn terminate_backends(
    pool: &PgPool,
    names: Option<&[String]>,
    limit: Duration,
) -> Result<usize, String> {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND backend_type = 'client backend' \
           AND CASE WHEN $1::text[] IS NULL THEN application_name LIKE 'harbor%' ELSE application_name = ANY($1) END",
    )
    .bind(names)
    .fetch_all(pool)
    .await
    .map_err(|e| format!("finding the backends: {e}"))?;
    for pid in &pids {
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(pool)
            .await
            .map_err(|e| format!("pg_terminate_backend({pid}): {e}"))?;
    }
    until_backends_gone(pool, &pids, limit).await?;
    Ok(pids.len())
}

/// A full `pg_dump` (schema and data, plain SQL) of the database at `database_url`, made with the
/// newest `pg_dump` on this machine (on `PATH` or under `/usr/lib/postgresql/*/bin`). Leak
/// searches read it like an attacker who stole a backup would.
pub async fn pg_dump(database_url: &str) -> Result<String, String> {
    let mut candidates: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path().join("bin/pg_dump")))
        .filter(|p| p.is_file())
        .collect();
    candidates.sort();
    candidates.reverse();
    candidates.push("pg_dump".into());
    let mut last_error = String::from("no pg_dump found");
    for bin in candidates {
        let out = tokio::process::Command::new(&bin)
            .arg("--no-owner")
            .arg(database_url)
            .output()
            .await;
        match out {
            Ok(out) if out.status.success() => {
                return String::from_utf8(out.stdout).map_err(|e| e.to_string())
            }
            Ok(out) => {
                last_error = format!(
                    "{}: {}",
                    bin.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            }
            Err(e) => last_error = format!("{}: {e}", bin.display()),
        }
    }
    Err(last_error)
}

/// One Redis key of an environment, as an attacker with a Redis dump would see it.
#[derive(Clone, Debug, Serialize)]
pub struct RedisEntry {
    /// The key.
    pub key: String,
    /// The value (strings as they are, other types rendered by `DUMP` in hex).
    pub value: String,
    /// Seconds to live; -1 for none.
    pub ttl: i64,
}

/// Every key under `prefix`, with its value and TTL.
pub async fn redis_dump(
    redis_url: &str,
    prefix: &str,
) -> Result<Vec<RedisEntry>, redis::RedisError> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys = crate::provision::keys_with_prefix(&mut conn, prefix).await?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut conn).await?;
        let value = if kind == "string" {
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(&mut conn)
                .await?
                .unwrap_or_default()
        } else {
            let raw: Option<Vec<u8>> = redis::cmd("DUMP").arg(&key).query_async(&mut conn).await?;
            hex::encode(raw.unwrap_or_default())
        };
        let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await?;
        out.push(RedisEntry { key, value, ttl });
    }
    Ok(out)
}

#[cfg(test)]
mod key_form_tests {
    use super::*;

    #[test]
    fn a_bigint_key_and_a_pair_with_the_same_halves_are_different_locks() {
        let row = |objsubid| LockRow {
            pid: 1,
            application_name: String::new(),
            locktype: "advisory".into(),
            classid: Some(7),
            objid: Some(9),
            objsubid: Some(objsubid),
            relation: None,
            page: None,
            tuple: None,
            transactionid: None,
            mode: "ExclusiveLock".into(),
            granted: true,
        };
        let pair = AdvisoryKey {
            classid: 7,
            objid: 9,
            bigint: false,
        };
        let bigint = AdvisoryKey {
            bigint: true,
            ..pair
        };
        assert!(row(2).is_advisory(pair) && !row(2).is_advisory(bigint));
        assert!(row(1).is_advisory(bigint) && !row(1).is_advisory(pair));
        assert!(!row(1).same_object(&row(2)));
        assert_eq!(bigint.sql_arguments(), ((7i64 << 32) | 9).to_string());
        assert_eq!(pair.sql_arguments(), "7, 9");
    }
}
