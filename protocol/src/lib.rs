//! The lock protocol the seed audit certifies — workspace activation serialised with every change
//! of the workspace's connection by one advisory-lock namespace plus the row lock — as plain
//! threads over mutexes, small enough for loom to explore every interleaving (`--cfg
//! harbor_loom`; `cargo xtask loom`). Tokio-free on purpose: loom cannot build tokio's networking.
//!
//! How the model corresponds to the service (keep them in step: a change to the order of locks,
//! reads or writes in one of these service functions is a change to its model function here):
//!
//! | model | service |
//! |---|---|
//! | [`Database::workspace_lock`] | `locks::lock_workspace` (`pg_advisory_xact_lock`, one namespace) |
//! | [`Database::oauth_lock`] | the OAuth paths' lock under the seeded flaw `split-lock-namespace` |
//! | [`Database::row_lock`] | `lifecycle::lock_connection` (`SELECT … FOR UPDATE`) and any `UPDATE` of the row |
//! | `Committed` | what `COMMIT` made visible: status, token generation, activation rows |
//! | [`activate`] | `activation::activate_in`: lock, `FOR UPDATE`, status read, `INSERT … ON CONFLICT DO NOTHING`, commit |
//! | [`callback`] | `oauth::store_grant`: lock, `FOR UPDATE`, `PENDING` → `CONNECTED`, commit |
//! | [`disconnect`] | `connections::transition(Disconnect)`: lock, `FOR UPDATE`, `CONNECTED` → `DISCONNECTED`, commit |
//! | [`refresh`] | `documents::decide_token`: lock, `FOR UPDATE`, re-read, refresh only if still stale, commit |
//! | [`raw_writer`] | the audit's "future code path": an `UPDATE` that skips the advisory lock |
//!
//! Variants ([`Protocol`]) remove one defence each, as the seeded flaws and the audit's v1 did;
//! each variant's test expects loom to find the interleaving that breaks an invariant:
//!
//! - **I1 mutual exclusion**: at most one protocol-following flow is inside a workspace critical
//!   section (from taking the workspace lock to its commit) — the audit's "serialization is
//!   guaranteed" (§2.1).
//! - **I2**: an activation commits only while the connection's committed status is `CONNECTED`.
//! - **I3**: at most one activation row (idempotency).
//! - **I4**: one provider refresh per expiry, however many syncs run.
//! - no deadlock (loom itself fails on one).

#[cfg(harbor_loom)]
use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(harbor_loom)]
use loom::thread;
#[cfg(not(harbor_loom))]
use std::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(harbor_loom))]
use std::thread;

/// Which protocol the flows follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The service as it is: one lock namespace, `FOR UPDATE`, locks held to the commit,
    /// single-flight refresh.
    Hardened,
    /// The OAuth paths (callback, refresh) take their advisory lock in another namespace.
    SplitLockNamespace,
    /// Connection reads take no row lock (`FOR UPDATE` missing).
    NoRowLock,
    /// Activation decides under the locks, commits (releasing them), then inserts.
    EarlyLockRelease,
    /// A sync decides to refresh without any lock.
    NoRefreshSingleFlight,
}

/// A connection's lifecycle status (`lifecycle::ConnectionStatus`, the statuses the flows touch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Waiting for its OAuth callback.
    Pending,
    /// Holding a grant.
    Connected,
    /// Disconnected by an admin (or a writer outside the protocol).
    Disconnected,
}

/// What commits have made visible.
#[derive(Debug)]
struct Committed {
    status: Status,
    /// The access token's generation; a refresh makes the next one.
    token_generation: u32,
    /// Whether the access token is inside the refresh margin.
    stale: bool,
    /// Calls to the provider's token endpoint with the refresh token.
    provider_refreshes: u32,
    /// Activation rows, and the committed status each was inserted under.
    activations: Vec<Status>,
}

/// The shared database of one modelled execution.
pub struct Database {
    protocol: Protocol,
    /// The workspace's advisory lock.
    pub workspace_lock: Mutex<()>,
    /// The other namespace's lock (only the split-namespace variant uses it).
    pub oauth_lock: Mutex<()>,
    /// The connection row's lock.
    pub row_lock: Mutex<()>,
    committed: Mutex<Committed>,
    /// Flows inside a workspace critical section now (I1).
    inside: Mutex<u32>,
    /// This execution's steps, printed with a counterexample.
    events: Mutex<Vec<String>>,
}

/// The locks a flow holds until its commit.
struct Held<'a> {
    _advisory: Option<MutexGuard<'a, ()>>,
    _row: Option<MutexGuard<'a, ()>>,
    critical: bool,
    db: &'a Database,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.critical {
            *self.db.inside.lock().unwrap() -= 1;
        }
    }
}

impl Database {
    /// A database whose connection is `status`, its token `stale` or fresh.
    pub fn new(protocol: Protocol, status: Status, stale: bool) -> Arc<Self> {
        Arc::new(Self {
            protocol,
            workspace_lock: Mutex::new(()),
            oauth_lock: Mutex::new(()),
            row_lock: Mutex::new(()),
            committed: Mutex::new(Committed {
                status,
                token_generation: 1,
                stale,
                provider_refreshes: 0,
                activations: Vec::new(),
            }),
            inside: Mutex::new(0),
            events: Mutex::new(Vec::new()),
        })
    }

    fn log(&self, event: String) {
        self.events.lock().unwrap().push(event);
    }

    /// The steps of this execution so far, one per line.
    pub fn interleaving(&self) -> String {
        self.events.lock().unwrap().join("\n  ")
    }

    fn violation(&self, what: &str) -> ! {
        panic!(
            "{what}\ninterleaving ({:?}):\n  {}",
            self.protocol,
            self.interleaving()
        )
    }

    /// Takes the advisory lock (`oauth` paths use the other namespace when split) and the row lock
    /// (unless `FOR UPDATE` is missing), and enters the critical section.
    fn begin(&self, who: &str, oauth: bool) -> Held<'_> {
        let lock = if oauth && self.protocol == Protocol::SplitLockNamespace {
            &self.oauth_lock
        } else {
            &self.workspace_lock
        };
        let advisory = lock.lock().unwrap();
        {
            let mut inside = self.inside.lock().unwrap();
            *inside += 1;
            self.log(format!("{who}: advisory lock"));
            if *inside > 1 {
                drop(inside);
                self.violation(&format!("I1 broken: {who} entered the workspace's critical section while another flow was inside it"));
            }
        }
        let row = (self.protocol != Protocol::NoRowLock).then(|| self.row_lock.lock().unwrap());
        if row.is_some() {
            self.log(format!("{who}: row lock (FOR UPDATE)"));
        }
        Held {
            _advisory: Some(advisory),
            _row: row,
            critical: true,
            db: self,
        }
    }

    fn status(&self) -> Status {
        self.committed.lock().unwrap().status
    }

    /// Commits a status change (the `UPDATE` takes the row lock if the flow does not hold it).
    fn write_status(&self, who: &str, to: Status) {
        self.committed.lock().unwrap().status = to;
        self.log(format!("{who}: COMMIT status = {to:?}"));
    }
}

/// `POST …/activation`: under the locks, read the status; if `CONNECTED`, insert the activation
/// (`ON CONFLICT DO NOTHING`) and commit.
pub fn activate(db: &Database) {
    let held = db.begin("activation", false);
    let status = db.status();
    db.log(format!("activation: reads {status:?}"));
    let held = if db.protocol == Protocol::EarlyLockRelease {
        // Commit (releasing both locks), then act on what was read.
        drop(held);
        db.log("activation: COMMIT (locks released), decision kept".to_owned());
        None
    } else {
        Some(held)
    };
    if status == Status::Connected {
        let mut committed = db.committed.lock().unwrap();
        if committed.activations.is_empty() {
            let now = committed.status;
            committed.activations.push(now);
            drop(committed);
            db.log(format!(
                "activation: INSERT activation, COMMIT (status now {now:?})"
            ));
        }
    }
    drop(held);
}

/// `GET /v1/oauth/{p}/callback` after the code exchange: under the locks, `PENDING` → `CONNECTED`.
pub fn callback(db: &Database) {
    let _held = db.begin("callback", true);
    if db.status() == Status::Pending {
        db.write_status("callback", Status::Connected);
    }
}

/// `POST …/disconnect`: under the locks, `CONNECTED` → `DISCONNECTED`.
pub fn disconnect(db: &Database) {
    let _held = db.begin("disconnect", false);
    if db.status() == Status::Connected {
        db.write_status("disconnect", Status::Disconnected);
    }
}

/// A writer outside the protocol: `UPDATE connections SET status = 'DISCONNECTED'` with no
/// advisory lock. The `UPDATE` still takes the row lock.
pub fn raw_writer(db: &Database) {
    let _row = db.row_lock.lock().unwrap();
    db.log("raw writer: row lock (UPDATE)".to_owned());
    db.write_status("raw writer", Status::Disconnected);
}

/// A sync's token decision: under the locks, re-read; if the token is still stale, refresh at the
/// provider and store the new generation.
pub fn refresh(db: &Database, who: &str) {
    let _held = (db.protocol != Protocol::NoRefreshSingleFlight).then(|| db.begin(who, true));
    let stale = db.committed.lock().unwrap().stale;
    db.log(format!("{who}: reads stale = {stale}"));
    if stale {
        let mut committed = db.committed.lock().unwrap();
        committed.provider_refreshes += 1;
        committed.token_generation += 1;
        committed.stale = false;
        drop(committed);
        db.log(format!(
            "{who}: refreshes at the provider, COMMIT new token"
        ));
    }
}

/// Runs `flows` on their own threads over one database, then checks I2–I4 on what was committed.
pub fn execute(db: Arc<Database>, flows: Vec<fn(&Database)>) {
    let handles: Vec<_> = flows
        .into_iter()
        .map(|flow| {
            let db = db.clone();
            thread::spawn(move || flow(&db))
        })
        .collect();
    for h in handles {
        if let Err(panic) = h.join() {
            std::panic::resume_unwind(panic);
        }
    }
    let committed = db.committed.lock().unwrap();
    let (activations, refreshes) = (committed.activations.clone(), committed.provider_refreshes);
    drop(committed);
    if let Some(bad) = activations.iter().find(|s| **s != Status::Connected) {
        db.violation(&format!(
            "I2 broken: an activation committed while the connection was {bad:?}"
        ));
    }
    if activations.len() > 1 {
        db.violation(&format!("I3 broken: {} activation rows", activations.len()));
    }
    if refreshes > 1 {
        db.violation(&format!(
            "I4 broken: {refreshes} provider refreshes for one expiry"
        ));
    }
}

/// The model checks: each names its starting state and flows; `expect_violation` is whether the
/// protocol variant must break an invariant there.
pub struct Check {
    /// What the check is about.
    pub name: &'static str,
    /// The protocol.
    pub protocol: Protocol,
    /// The connection's status at the start.
    pub status: Status,
    /// Whether the token is inside the refresh margin at the start.
    pub stale: bool,
    /// The concurrent flows.
    pub flows: Vec<fn(&Database)>,
}

fn sync_a(db: &Database) {
    refresh(db, "sync A");
}

fn sync_b(db: &Database) {
    refresh(db, "sync B");
}

/// Every check: the hardened protocol on each set of flows, and each variant on the flows that
/// expose it.
pub fn checks() -> Vec<(Check, bool)> {
    use Protocol::*;
    let check = |name, protocol, status, stale, flows: Vec<fn(&Database)>| Check {
        name,
        protocol,
        status,
        stale,
        flows,
    };
    vec![
        (
            check(
                "activation vs callback",
                Hardened,
                Status::Pending,
                false,
                vec![activate, callback],
            ),
            false,
        ),
        (
            check(
                "activation vs disconnect",
                Hardened,
                Status::Connected,
                false,
                vec![activate, disconnect],
            ),
            false,
        ),
        (
            check(
                "activation vs an unlocked writer",
                Hardened,
                Status::Connected,
                false,
                vec![activate, raw_writer],
            ),
            false,
        ),
        (
            check(
                "two activations",
                Hardened,
                Status::Connected,
                false,
                vec![activate, activate],
            ),
            false,
        ),
        (
            check(
                "two syncs of a stale token",
                Hardened,
                Status::Connected,
                true,
                vec![sync_a, sync_b],
            ),
            false,
        ),
        (
            check(
                "activation vs callback vs disconnect",
                Hardened,
                Status::Pending,
                false,
                vec![activate, callback, disconnect],
            ),
            false,
        ),
        (
            check(
                "v1 split lock namespace: activation vs callback",
                SplitLockNamespace,
                Status::Pending,
                false,
                vec![activate, callback],
            ),
            true,
        ),
        (
            check(
                "v1 missing FOR UPDATE: activation vs an unlocked writer",
                NoRowLock,
                Status::Connected,
                false,
                vec![activate, raw_writer],
            ),
            true,
        ),
        (
            check(
                "early lock release: activation vs disconnect",
                EarlyLockRelease,
                Status::Connected,
                false,
                vec![activate, disconnect],
            ),
            true,
        ),
        (
            check(
                "no single-flight: two syncs of a stale token",
                NoRefreshSingleFlight,
                Status::Connected,
                true,
                vec![sync_a, sync_b],
            ),
            true,
        ),
    ]
}

/// Runs one check once on real threads (a smoke test; loom explores every interleaving).
pub fn run_once(check: &Check) {
    execute(
        Database::new(check.protocol, check.status, check.stale),
        check.flows.clone(),
    );
}

#[cfg(all(test, not(harbor_loom)))]
mod tests {
    use super::*;

    /// Without loom the hardened checks run on real threads a few times: the model code itself
    /// works. (The variants' counterexamples need loom's schedules.)
    #[test]
    fn hardened_checks_hold_on_real_threads() {
        for (check, _) in checks()
            .into_iter()
            .filter(|(c, _)| c.protocol == Protocol::Hardened)
        {
            for _ in 0..20 {
                run_once(&check);
            }
        }
    }
}

#[cfg(all(test, harbor_loom))]
mod loom_tests {
    use super::*;

    /// Every check under loom: the hardened protocol holds on every interleaving; each variant's
    /// counterexample is found, and printed.
    #[test]
    fn the_protocol_holds_and_every_variant_is_caught() {
        let mut summary = Vec::new();
        for (check, expect_violation) in checks() {
            let started = std::time::Instant::now();
            let flows = check.flows.clone();
            let (protocol, status, stale) = (check.protocol, check.status, check.stale);
            let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counted = executions.clone();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut builder = loom::model::Builder::new();
                if builder.preemption_bound.is_none() {
                    builder.preemption_bound = Some(3);
                }
                builder.check(move || {
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    execute(Database::new(protocol, status, stale), flows.clone());
                });
            }));
            let n = executions.load(std::sync::atomic::Ordering::Relaxed);
            let took = started.elapsed();
            match (outcome, expect_violation) {
                (Ok(()), false) => summary.push(format!("HOLDS     {:<58} {n} executions, {took:.2?}", check.name)),
                (Err(_), true) => summary.push(format!("CAUGHT    {:<58} after {n} executions, {took:.2?}", check.name)),
                (Ok(()), true) => panic!("{}: the variant was expected to break an invariant, but every interleaving held", check.name),
                (Err(e), false) => std::panic::resume_unwind(e),
            }
        }
        eprintln!("protocol model:\n  {}", summary.join("\n  "));
    }
}
