//! Model-based testing against the real service: proptest draws sequences of [`Op`]s, each case
//! runs them on a fresh in-process service (two replicas, one isolated database and Redis prefix
//! from the usual provisioning), and after every step the response and the stored state are
//! compared with the reference [`Model`], and the oracles must hold (tokens bound to their row and
//! grant, `CONNECTED` ⇔ tokens present, one activation, no lock left held, no token in any
//! response). A failure is shrunk to a minimal sequence, printed, and its seed persisted under
//! `proptest-regressions/` so the next run replays it first.
//!
//! `ops.rs` holds the operations and their strategy; `invariants.rs` what is compared after
//! every step; `verdicts.rs` the account of a run, a failure saved as a scenario file, and the
//! kill matrix.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use harbor_service::domain::{Provider, UserId};
use harbor_service::flaws::Flaws;
use harbor_service::lifecycle::ConnectionStatus;
use harbor_service::ratelimit::Quota;
use proptest::prelude::*;
use proptest::test_runner::{
    Config, FileFailurePersistence, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};

use crate::fake_provider::{Consent, Fault, CANARY_PREFIX};
use crate::fixtures::TenantWorkspace;
use crate::identity::TokenKind;
use crate::model::{Expected, Model, Who};
use crate::operation::WorkspaceOp;
use crate::target::{Launcher, Setup, Target, TenantSpec};

/// The providers the sequences use: two, so that flows collide often.
pub const PROVIDERS: [Provider; 2] = [Provider::Qbo, Provider::Gmail];

/// How long a lock may outlive the answer of the request that took it (its connection closing).
const LOCK_RELEASE_BOUND: Duration = Duration::from_secs(2);

/// What the state machine needs of a target: the database and the lock's name for its
/// invariants, and the harness's provider for consents, counters and token faults.
pub const NEEDED: [crate::target::Capability; 3] = [
    crate::target::Capability::Database,
    crate::target::Capability::WorkspaceLock,
    crate::target::Capability::ProviderControl,
];

/// The invariants left out on a target without the reference's schema (each with why): the
/// stored state is compared through the state queries instead.
pub const OFF_WITHOUT_REFERENCE_SCHEMA: [&str; 3] = [
    "every connection's status and CONNECTED ⇔ tokens stored: only QuickBooks' status is compared (the `qbo_status` state query); the other providers are judged by their answers",
    "the OAuth states left in Redis: the target's key layout is its own",
    "tokens bound to their row and grant: the target's token format is its own",
];

/// How to run the state machine.
#[derive(Clone, Debug)]
pub struct Options {
    /// Cases (sequences) to run.
    pub cases: u32,
    /// Longest sequence.
    pub max_ops: usize,
    /// Seeded flaws of the service under test.
    pub flaws: Flaws,
    /// Replay exactly this seed's cases.
    pub seed: Option<u64>,
    /// Where failing seeds are kept (and replayed from first); `None` keeps nothing.
    pub persistence: Option<PathBuf>,
    /// How many shrinking steps a failure gets (each is a fresh service).
    pub max_shrink_iters: u32,
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    /// Cases run (shrinking included).
    pub cases: u32,
    /// Wall time.
    pub duration: Duration,
    /// The seed the run used.
    pub seed: u64,
    /// The minimal failing sequence and why it fails.
    pub failure: Option<(Vec<Op>, String)>,
}

/// Runs the state machine, each case on a fresh target `launcher` starts. Must be called from a
/// multi-threaded tokio runtime.
pub fn run(launcher: &dyn Launcher, options: &Options) -> Outcome {
    let seed = options.seed.unwrap_or_else(rand::random);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases: options.cases,
        max_shrink_iters: options.max_shrink_iters,
        max_shrink_time: 120_000,
        failure_persistence: options.persistence.as_ref().map(|p| {
            Box::new(FileFailurePersistence::Direct(Box::leak(
                p.display().to_string().into_boxed_str(),
            ))) as _
        }),
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let handle = tokio::runtime::Handle::current();
    let started = Instant::now();
    let cases = std::sync::atomic::AtomicU32::new(0);
    // A target that cannot move its clock gets no clock steps: they would move nothing, and the
    // model would expect what they cause.
    let clock = launcher
        .offers()
        .is_none_or(|o| o.contains(&crate::target::Capability::Clock));
    let one = if clock {
        op().boxed()
    } else {
        op().prop_filter("the target has no clock", |o| {
            !matches!(o, Op::AdvanceClock { .. })
        })
        .boxed()
    };
    let strategy = prop::collection::vec(one, 1..=options.max_ops);
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |ops| {
            cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            handle
                .block_on(run_case(launcher, &ops))
                .map_err(TestCaseError::fail)
        })
    });
    let failure = match result {
        Ok(()) => None,
        Err(proptest::test_runner::TestError::Fail(reason, ops)) => Some((ops, reason.to_string())),
        Err(proptest::test_runner::TestError::Abort(reason)) => {
            Some((Vec::new(), format!("aborted: {reason}")))
        }
    };
    Outcome {
        cases: cases.into_inner(),
        duration: started.elapsed(),
        seed,
        failure,
    }
}

/// One case: a fresh service, the sequence, the comparisons.
async fn run_case(launcher: &dyn Launcher, ops: &[Op]) -> Result<(), String> {
    // Sequences are short and fast: the limits are not what is tested here.
    let generous = Some(Quota {
        per_minute: 60_000,
        burst: 10_000,
    });
    let setup = Setup {
        replicas: 2,
        sync_points: false,
        rate_limit_tenant: generous,
        rate_limit_address: generous,
        rate_limit_failed_states: generous,
        ..Setup::default()
    };
    let launched = launcher
        .launch(&setup)
        .await
        .map_err(|e| format!("the service did not start: {e}"))?;
    let target = launched.target();
    let result = async {
        let tenant = |name: &str| TenantSpec {
            name: name.to_owned(),
            entitled: true,
            qbo: ConnectionStatus::NotConnected,
        };
        let a = target.create_tenant(&tenant("a")).await?;
        let b = target.create_tenant(&tenant("b")).await?;
        let mut subject = Subject {
            target,
            a,
            b,
            model: Model::new(&PROVIDERS),
            consents: Vec::new(),
        };
        for (i, op) in ops.iter().enumerate() {
            subject
                .step(op)
                .await
                .map_err(|e| format!("step {i} ({op:?}): {e}"))?;
        }
        Ok::<(), String>(())
    }
    .await;
    let stopped = launched.stop().await;
    result?;
    stopped.map_err(|e| format!("clean-up: {e}"))
}

struct Subject<'a> {
    target: &'a dyn Target,
    a: TenantWorkspace,
    b: TenantWorkspace,
    model: Model,
    /// The consent of each issued state, in the model's order.
    consents: Vec<Consent>,
}

impl Subject<'_> {
    fn user(&self, who: Who) -> uuid::Uuid {
        match who {
            Who::Owner => self.a.owner.0,
            Who::Member => self.a.member.0,
            Who::Outsider => self.b.owner.0,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        replica: usize,
        path: &str,
        token: Option<String>,
    ) -> Result<crate::client::Answer, String> {
        self.target
            .client()
            .request(method, path)
            .on_replica(replica)
            .bearer(token)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))
    }

    /// Sends `op` as `who` on `replica` for `provider` (the callback presents issued state `state`,
    /// refused when `denied`), and applies it to the model: the answer and what the model expects.
    async fn send(
        &mut self,
        who: Who,
        op: WorkspaceOp,
        provider: Provider,
        replica: usize,
        (state, denied): (usize, bool),
    ) -> Result<(crate::client::Answer, Expected), String> {
        let query = match (op, self.consents.get(state)) {
            (WorkspaceOp::Callback, Some(c)) if denied => c.denied_query(),
            (WorkspaceOp::Callback, Some(c)) => c.callback_query(),
            _ => String::new(),
        };
        let (method, path) =
            self.target
                .client()
                .routes()
                .request(op, self.a.workspace, provider, &query);
        let bearer = self.target.bearer(UserId(self.user(who)), TokenKind::Valid);
        let answer = self.call(method, replica, &path, Some(bearer)).await?;
        let expected = op.apply(&mut self.model, who, provider, state, denied);
        Ok((answer, expected))
    }

    async fn step(&mut self, op: &Op) -> Result<(), String> {
        let (answer, expected) = match op {
            Op::Authorize {
                who,
                provider,
                replica,
            } => {
                let (answer, expected) = self
                    .send(
                        *who,
                        WorkspaceOp::Authorize,
                        *provider,
                        *replica,
                        (0, false),
                    )
                    .await?;
                if answer.status == 200 && expected.status == 200 {
                    let url = answer
                        .authorization_url
                        .as_deref()
                        .ok_or("no authorization URL in the answer")?;
                    self.consents.push(self.target.client().consent(url).await?);
                }
                (answer, expected)
            }
            Op::Callback {
                state,
                presenter,
                path,
                denied,
                replica,
            } => {
                if self.consents.is_empty() {
                    return Ok(());
                }
                let index = state % self.consents.len();
                let at = path.unwrap_or(self.model.states[index].provider);
                self.send(
                    *presenter,
                    WorkspaceOp::Callback,
                    at,
                    *replica,
                    (index, *denied),
                )
                .await?
            }
            Op::Activate { who, replica } => {
                self.send(
                    *who,
                    WorkspaceOp::Activate,
                    Provider::Qbo,
                    *replica,
                    (0, false),
                )
                .await?
            }
            Op::Disconnect { who, provider } => {
                self.send(*who, WorkspaceOp::Disconnect, *provider, 0, (0, false))
                    .await?
            }
            Op::Revoke { who, provider } => {
                self.send(*who, WorkspaceOp::Revoke, *provider, 1, (0, false))
                    .await?
            }
            Op::Sync { provider, replica } => {
                self.send(
                    Who::Member,
                    WorkspaceOp::Sync,
                    *provider,
                    *replica,
                    (0, false),
                )
                .await?
            }
            Op::ListConnections => {
                self.send(
                    Who::Member,
                    WorkspaceOp::ListConnections,
                    Provider::Qbo,
                    0,
                    (0, false),
                )
                .await?
            }
            Op::AdvanceClock { seconds } => {
                self.target
                    .advance_clock(Duration::from_secs(*seconds as u64))
                    .await?;
                self.model.clock += seconds;
                return self.invariants().await;
            }
            Op::TokenFault { on } => {
                let fault = on.then_some(Fault::ServerError);
                for p in PROVIDERS {
                    self.target
                        .need_provider()?
                        .configure(p, |s| s.token_fault = fault);
                }
                self.model.token_fault = *on;
                return self.invariants().await;
            }
            Op::ExpiredToken => {
                let token = self.target.bearer(self.a.owner, TokenKind::Expired);
                let (method, path) = self.target.client().routes().request(
                    WorkspaceOp::ListConnections,
                    self.a.workspace,
                    Provider::Qbo,
                    "",
                );
                let answer = self.call(method, 0, &path, Some(token)).await?;
                (
                    answer,
                    Expected {
                        status: 401,
                        code: Some("UNAUTHENTICATED"),
                        field: None,
                    },
                )
            }
        };
        compare(&answer, &expected)?;
        if answer.raw.contains(CANARY_PREFIX) {
            return Err("a response carries a token or code the provider issued".into());
        }
        self.invariants().await
    }
}

/// Whether an answer is what the model expects (status, code, and the one field it names).
pub fn compare(answer: &crate::client::Answer, expected: &Expected) -> Result<(), String> {
    let code = answer.error_code();
    if answer.status != expected.status || (expected.code.is_some() && code != expected.code) {
        return Err(format!(
            "answered {} {}, the model expects {} {}",
            answer.status,
            code.unwrap_or(""),
            expected.status,
            expected.code.unwrap_or("")
        ));
    }
    if let Some((field, value)) = &expected.field {
        if &answer.body[*field] != value {
            return Err(format!(
                "answered {field} = {}, the model expects {value}",
                answer.body[*field]
            ));
        }
    }
    Ok(())
}

mod invariants;
mod ops;
mod verdicts;

pub use ops::{op, Op};
pub use verdicts::{
    describe, kill_matrix, replay_command, save_failure, saved_line, to_scenario, FLAWS_IT_SEES,
    KILL_MATRIX_SEED, REGRESSIONS,
};
