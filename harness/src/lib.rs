//! Harbor's certification harness: it provisions real PostgreSQL and Redis, runs the reference
//! service in-process (one or more replicas), replays interleavings, and proves blocking from the
//! server's own lock tables.
//!
//! Map of the modules:
//! - [`provision`]: one interface over the `docker`, `local` and `external` backends; a migrated
//!   template database cloned per scenario/test, and a Redis key prefix per scenario/test.
//! - [`target`]: [`target::Target`], the one boundary every technique reaches the service through,
//!   and [`target::started`]: a target's replicas on one isolated environment — the reference
//!   in-process, a profile's service as child processes, or a deployed one at its URL (with
//!   `harbor-certify serve` and the raw activation ceiling the benches compare with).
//! - [`identity`]: [`identity::TokenMint`], the stand-in for the identity gateway: an Ed25519 key pair,
//!   its JWK set for the service, and good or deliberately bad tokens.
//! - [`fixtures`]: tenants, workspaces, users, memberships, entitlements and connection states.
//! - [`fake_provider`]: [`fake_provider::FakeProvider`], a real HTTP OAuth provider with PKCE,
//!   refresh rotation, revocation, injectable errors and delays, and call counters.
//! - [`scenario`]: scenario files, their typed model and checks, schedules, the
//!   [`scenario::run::ScenarioRunner`], traces and verdicts over repeated runs.
//! - [`client`]: [`client::ApiClient`], the one HTTP client of the service's API, and
//!   [`operation`]: [`operation::WorkspaceOp`], the one vocabulary of workspace operations that
//!   scenarios, exploration and the state machine share (request, model answer, name).
//! - [`schedule`]: [`schedule::Scheduler`], the one scheduling trait, with its strategies
//!   (file order, replay, DFS, PCT), one file each.
//! - [`isolation`]: PostgreSQL isolation specs (`*.spec`) run the isolation tester's way, blocking
//!   judged from the lock tables, output compared with expected files.
//! - [`explore`]: `harbor-certify explore` — every interleaving (or PCT-random ones) of a
//!   workspace's operations on the real service, checked against invariants and the model.
//! - [`commands`]: the `harbor-certify` command line, one file per command.
//! - [`catalogue`]: the audit areas and the threat matrix that scenarios name and reports group by.
//! - [`oracles`]: checks of the stored state shared by scenarios and the load test (tokens bound
//!   to their row and grant).
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
//! - [`db_cost`]: what each kind of request costs the database — round trips, statements,
//!   transactions — counted on the wire (`harbor-certify db-cost`, the bench's table).
//! - [`evidence`]: lock-table probes (`pg_stat_activity`, `pg_locks`, `pg_blocking_pids`).
//! - [`stats`]: the median and the percentile every summarised figure is taken with.
//! - [`untrusted`]: text a target wrote, made safe for report.md, junit.xml and the console.

pub mod catalogue;
pub mod client;
pub mod commands;
pub mod db_cost;
pub mod evidence;
pub mod explore;
pub mod fake_provider;
pub mod faults;
pub mod fixtures;
pub mod fuzzing;
pub mod isolation;
pub mod model;
pub mod mutants;
pub mod operation;
pub mod oracles;
pub mod provision;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod secret_file;
pub mod stats;
pub mod untrusted;

pub mod identity;
pub mod statemachine;
pub mod target;

/// The layers of the harness's modules, checked from its own sources (`harbor-layering`): no
/// import cycle, and no import from a lower layer into a higher one. ARCHITECTURE.md's harness
/// table is this one.
#[cfg(test)]
mod layering {
    /// The layers, bottom first. A module may use the modules of its own layer (without a cycle)
    /// and of the layers below it; a new module has to be placed here.
    const LAYERS: &[(&str, &[&str])] = &[
        (
            "leaves",
            &[
                "catalogue",
                "model",
                "schedule",
                "secret_file",
                "stats",
                "untrusted",
            ],
        ),
        (
            "parts",
            &[
                "evidence",
                "fake_provider",
                "faults",
                "fixtures",
                "provision",
                "identity",
            ],
        ),
        ("wire", &["client", "operation"]),
        ("boundary", &["target"]),
        ("checks", &["oracles"]),
        (
            "techniques",
            &[
                "db_cost",
                "explore",
                "isolation",
                "scenario",
                "statemachine",
            ],
        ),
        ("verdicts", &["fuzzing", "mutants", "report"]),
        ("command line", &["commands", "lib"]),
    ];

    fn src() -> std::path::PathBuf {
        harbor_layering::crate_dir(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    #[test]
    fn no_module_is_part_of_an_import_cycle() {
        harbor_layering::assert_no_cycle(&src());
    }

    /// Inside the larger modules too: no file-level circle (the scenario steps use the checker
    /// and the executor, which know nothing of them).
    #[test]
    fn no_circle_inside_the_larger_modules() {
        for module in [
            "scenario",
            "explore",
            "isolation",
            "target",
            "statemachine",
            "schedule",
            "commands",
        ] {
            harbor_layering::assert_no_cycle_within(&src(), module);
        }
    }

    #[test]
    fn modules_use_only_their_own_layer_and_the_ones_below() {
        harbor_layering::assert_layers(&src(), LAYERS, "LAYERS in harness/src/lib.rs");
    }
}
