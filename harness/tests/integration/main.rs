//! The harness crate's one integration-test binary (one link): provisioning, and the reference
//! service against real PostgreSQL and Redis. Each test gets its own database cloned from the
//! migrated template. With `HARBOR_DATABASE_URL`/`HARBOR_REDIS_URL` set (as `cargo xtask test`
//! does) the servers are shared; otherwise each test provisions its own with the `auto` backend,
//! and fails loudly if it cannot.

mod activation;
mod api;
mod auth;
mod connectors;
mod db_cost;
mod dialects;
mod fake_strictness;
mod fuzz;
mod grants;
mod hardening;
mod hardening_round2;
mod helpers;
mod interop;
mod isolation;
mod lifecycle;
mod provision;
mod reports;
mod scenarios;
mod syncpoints;
