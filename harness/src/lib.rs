//! Harbor's certification harness: it provisions real PostgreSQL and Redis, runs the reference
//! service in-process (one or more replicas), replays interleavings, and proves blocking from the
//! server's own lock tables.
//!
//! Map of the modules:
//! - [`provision`]: one interface over the `docker`, `local` and `external` backends; a migrated
//!   template database cloned per scenario/test, and a Redis key prefix per scenario/test.
//! - [`service`]: [`service::ServiceUnderTest`], the service's replicas started in-process on one
//!   isolated environment, with the sync-point controllers the runner drives.
//! - [`tokens`]: [`tokens::TokenMint`], the stand-in for the identity gateway: an Ed25519 key pair,
//!   its JWK set for the service, and good or deliberately bad tokens.
//! - [`fixtures`]: tenants, workspaces, users, memberships, entitlements and connection states.
//! - [`fake_provider`]: [`fake_provider::FakeProvider`], a real HTTP OAuth provider with PKCE,
//!   refresh rotation, revocation, injectable errors and delays, and call counters.
//! - [`scenario`]: scenario files, their typed model and checks, schedules, the
//!   [`scenario::run::ScenarioRunner`], traces and verdicts over repeated runs.
//! - [`target`]: [`target::Target`], the one boundary between the executor and the service, with
//!   its capabilities. [`client`]: [`client::ApiClient`], the one HTTP client of the service's API.
//! - [`explore`]: `harbor-certify explore` — every interleaving (or PCT-random ones) of a
//!   workspace's operations on the real service, checked against invariants and the model.
//! - [`commands`]: the `harbor-certify` command line, one file per command.
//! - [`ceiling`]: the activation transaction through raw sqlx, the ceiling benches compare the
//!   endpoint with.
//! - [`catalogue`]: the audit areas and the threat matrix that scenarios name and reports group by.
//! - [`oracles`]: checks of the stored state shared by scenarios and the load test (tokens bound
//!   to their row and grant).
//! - [`serve`]: `harbor-certify serve` — the service with demo tenants and tokens, for people and
//!   external tools (Schemathesis, goose, curl).
//! - [`model`]: the reference model of the workspace flows (pure, no I/O), and
//!   [`statemachine`]: proptest sequences of operations run against the real service and compared
//!   with it after every step.
//! - [`mutants`]: the kill matrix — the catalogue against each seeded flaw of the service.
//! - [`report`]: the run folder and `report.json`.
//! - [`faults`]: [`faults::FaultKind`] and [`faults::FaultProxy`], the TCP proxies through which
//!   each replica reaches Redis, PostgreSQL and the provider, so a scenario can stall, cut or
//!   refuse them (`do = "fault"`).
//! - [`fuzzing`]: the fuzz targets' bodies, shared by `fuzz/` (libFuzzer) and the bounded pass on
//!   stable that the test suite runs.
//! - [`secret_file`]: files that hold secrets, written 0600 and never through a planted name.
//! - [`evidence`]: lock-table probes (`pg_stat_activity`, `pg_locks`, `pg_blocking_pids`).

pub mod catalogue;
pub mod ceiling;
pub mod client;
pub mod commands;
pub mod evidence;
pub mod explore;
pub mod fake_provider;
pub mod faults;
pub mod fixtures;
pub mod fuzzing;
pub mod model;
pub mod mutants;
pub mod oracles;
pub mod provision;
pub mod report;
pub mod scenario;
pub mod secret_file;
pub mod serve;
pub mod service;
pub mod statemachine;
pub mod target;
pub mod tokens;
