//! Harbor's reference service: a multi-tenant SaaS backend that implements, correctly, the two flows
//! the certification harness certifies — workspace activation and third-party OAuth connectors.
//!
//! Map of the modules:
//! - [`app`]: `Application::build` (binds port 0 in tests), the router and the request middleware.
//! - [`state`]: [`state::AppState`], what every handler shares (one reference-counted [`state::Shared`]).
//! - [`config`]: environment → typed [`config::Config`]; secrets in `secrecy` types.
//! - [`error`]: [`error::ApiError`], the one mapping from errors to HTTP status + stable code.
//! - [`context`]: request id and the harness's actor tag, per request.
//! - [`domain`]: newtypes that validate on `parse` (ids, providers, roles, actor tags).
//! - [`jwt`]: bearer-token verification against the gateway's keys.
//! - [`auth`]: the verified identity (an extractor) and the workspace membership a request's transaction finds.
//! - [`request_tx`]: [`request_tx::WorkspaceRequest`], a member's request and the one way its
//!   handler opens a transaction (tenant-scoped, tagged with the actor).
//! - [`db`]: pool, migrations, the begin/finish discipline for transactions, [`db::DbError`].
//! - [`locks`]: `lock_key_for_workspace`, the only place the workspace lock's key is derived (the
//!   membership's own key is derived in SQL, `harbor_membership_lock_key`).
//! - [`lifecycle`]: the connection state machine, the only place transitions are decided.
//! - [`activation`]: `POST /v1/workspaces/{id}/activation`.
//! - [`connections`]: list (metadata only), disconnect and revoke (both give the grant back at
//!   the provider through the outbox).
//! - [`outbox`]: the revocation outbox — intents written with the status change, delivered at
//!   once and retried by every replica's worker until the provider confirms.
//! - [`oauth`]: authorize and callback — the tenant-bound OAuth flow with PKCE.
//! - [`oauth_state`]: [`oauth_state::OAuthStateStore`], states in Redis, consumed once.
//! - [`providers`]: provider configuration and the HTTP client (exchange, refresh, revoke, fetch).
//! - [`vault`]: AES-256-GCM token encryption bound to its row, the key ring, key rotation.
//! - [`tokens`]: a connection's tokens sealed with the vault before storing, opened for use.
//! - [`user_tenants`]: each user's tenant, remembered per replica once read (a user's row keeps its tenant).
//! - [`documents`]: connector sync with single-flight refresh, and the documents list.
//! - [`ratelimit`]: GCRA rate limits in Redis, shared by replicas.
//! - [`clock`]: the service's clock, which the harness can move.
//! - [`flaws`]: seeded flaws (the v1 audit's and later reviews') for the harness's mutation run
//!   (cargo feature `flaws` only).
//! - [`audit`]: the append-only audit trail.
//! - [`syncpoints`]: the named points where the harness can park a request, and
//!   [`syncpoint_protocol`]: the same points over HTTP (test mode only), for a harness outside
//!   the process; [`clock_protocol`]: the clock's offset over HTTP, likewise.
//! - [`health`], [`openapi`]: operations endpoints and the API description; [`contract`]: every
//!   operation's errors, from which the document's error responses are generated.
//! - [`telemetry`]: log set-up and the shutdown signal for the binary.
//!
//! The modules form layers, each using only its own and lower ones (ARCHITECTURE.md, "Service
//! layers"); the `layering` unit test below refuses an import cycle or an upward import.

pub mod activation;
pub mod app;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod clock_protocol;
pub mod config;
pub mod connections;
pub mod context;
pub mod contract;
pub mod db;
pub mod documents;
pub mod domain;
pub mod error;
pub mod flaws;
pub mod health;
pub mod jwt;
pub mod lifecycle;
pub mod locks;
pub mod oauth;
pub mod oauth_state;
pub mod openapi;
pub mod outbox;
pub mod providers;
pub mod ratelimit;
pub mod request_tx;
pub mod state;
pub mod syncpoint_protocol;
pub mod syncpoints;
pub mod telemetry;
pub mod tokens;
pub mod user_tenants;
pub mod vault;

pub use app::{Application, Hooks};
pub use config::Config;

/// The layers of this crate's modules, checked from its own sources (`harbor-layering`): no
/// import cycle, and no import from a lower layer into a higher one.
#[cfg(test)]
mod layering {
    /// The layers, bottom first. A module may use the modules of its own layer (without a cycle)
    /// and of the layers below it; a new module has to be placed here.
    const LAYERS: &[(&str, &[&str])] = &[
        (
            "leaves",
            &["clock", "context", "domain", "flaws", "telemetry"],
        ),
        (
            "infrastructure",
            &[
                "audit",
                "config",
                "db",
                "jwt",
                "lifecycle",
                "locks",
                "oauth_state",
                "outbox",
                "providers",
                "ratelimit",
                "syncpoints",
                "tokens",
                "user_tenants",
                "vault",
            ],
        ),
        ("errors", &["error"]),
        ("requests", &["auth", "request_tx", "state"]),
        (
            "handlers",
            &[
                "activation",
                "connections",
                "documents",
                "health",
                "oauth",
                "syncpoint_protocol",
                "clock_protocol",
            ],
        ),
        ("api description", &["contract", "openapi"]),
        ("application", &["app", "lib"]),
    ];

    fn src() -> std::path::PathBuf {
        harbor_layering::crate_dir(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    #[test]
    fn no_module_is_part_of_an_import_cycle() {
        harbor_layering::assert_no_cycle(&src());
    }

    #[test]
    fn modules_use_only_their_own_layer_and_the_ones_below() {
        harbor_layering::assert_layers(&src(), LAYERS, "LAYERS in service/src/lib.rs");
    }
}
