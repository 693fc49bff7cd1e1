//! The service's side of the harness's sync points: named places where a tagged request can be
//! parked. Off by default; when off, [`SyncHooks::reach`] is a branch on `None` and nothing else.
//!
//! The controller itself is [`harbor_syncpoint::SyncPoints`], a runtime-free state machine the
//! harness shares with the service when it runs it in-process.
//!
//! Every path's `*.locked` point comes after the workspace lock and before the connection's row
//! lock. A request waiting for the workspace lock and a writer waiting for the row (a raw session
//! that takes no advisory lock) are let go together when the holder commits; with the point
//! between the two locks, the request parks there and the writer takes the row, every time.
//! With the point after the row lock, which of them took the row first was PostgreSQL's
//! scheduling, and `explore --depth 3` under load saw its replays diverge (authorize or revoke,
//! sync and the raw writer). A request not armed at its `locked` point takes both locks in one
//! statement where its path allows it (`WorkspaceRequest::begin_locked_with_row`,
//! `begin_for_activation`): there is nothing between them to park at.

use std::time::Duration;

use harbor_syncpoint::{SlotKey, SyncPoints};

use crate::context::RequestContext;

/// Every sync point the service has, so scenario files can be checked before anything runs.
pub const SYNC_POINTS: &[&str] = &[
    ACTIVATION_LOCKED,
    ACTIVATION_STATUS_READ,
    ACTIVATION_BEFORE_COMMIT,
    ACTIVATION_FAILING,
    LIFECYCLE_LOCKED,
    LIFECYCLE_BEFORE_COMMIT,
    LIFECYCLE_COMMITTED,
    OAUTH_AUTHORIZE_LOCKED,
    OAUTH_CALLBACK_ADMITTED,
    OAUTH_CALLBACK_STATE_CONSUMED,
    OAUTH_CALLBACK_EXCHANGED,
    OAUTH_CALLBACK_LOCKED,
    OAUTH_CALLBACK_BEFORE_COMMIT,
    SYNC_READ,
    SYNC_LOCKED,
    SYNC_REFRESHED,
    SYNC_BEFORE_FETCH,
];

/// Activation holds the workspace lock and has read, in the lock's round trip, the earlier
/// activation and the entitlement — not the connection's row yet.
pub const ACTIVATION_LOCKED: &str = "activation.locked";
/// Activation has read the QBO connection status under its row lock.
pub const ACTIVATION_STATUS_READ: &str = "activation.status_read";
/// Activation has written its row and is about to commit.
pub const ACTIVATION_BEFORE_COMMIT: &str = "activation.before_commit";
/// Activation has failed and is on its error path, before its rollback (its lock still held).
pub const ACTIVATION_FAILING: &str = "activation.failing";
/// Disconnect or revoke holds the workspace lock, and has not locked the connection's row yet.
pub const LIFECYCLE_LOCKED: &str = "lifecycle.locked";
/// Disconnect or revoke has written the new status and is about to commit.
pub const LIFECYCLE_BEFORE_COMMIT: &str = "lifecycle.before_commit";
/// Disconnect or revoke has committed (the grant's revocation intent with it) and has not called
/// the provider yet.
pub const LIFECYCLE_COMMITTED: &str = "lifecycle.committed";

/// Authorize holds the workspace lock, and has not locked the connection's row yet.
pub const OAUTH_AUTHORIZE_LOCKED: &str = "oauth.authorize.locked";
/// The callback has been charged its rate limits and has not asked Redis for its state yet.
pub const OAUTH_CALLBACK_ADMITTED: &str = "oauth.callback.admitted";
/// The callback has consumed its state (it is gone from Redis) and checked nothing yet.
pub const OAUTH_CALLBACK_STATE_CONSUMED: &str = "oauth.callback.state_consumed";
/// The callback has exchanged the code for tokens and holds no lock yet.
pub const OAUTH_CALLBACK_EXCHANGED: &str = "oauth.callback.exchanged";
/// The callback holds the workspace lock, and has not locked the connection's row yet.
pub const OAUTH_CALLBACK_LOCKED: &str = "oauth.callback.locked";
/// The callback has stored the tokens and is about to commit.
pub const OAUTH_CALLBACK_BEFORE_COMMIT: &str = "oauth.callback.before_commit";
/// A sync is about to read its token without the locks, holding nothing. Armed, it also sends
/// the sync down that path while `sync.locked` is armed (which alone keeps it off the path).
pub const SYNC_READ: &str = "sync.read";
/// A sync holds the workspace lock, and has not read (or locked) the connection's row yet.
pub const SYNC_LOCKED: &str = "sync.locked";
/// A sync has refreshed the token at the provider and not stored it yet.
pub const SYNC_REFRESHED: &str = "sync.refreshed";
/// A sync has committed its token decision and is about to read the provider's documents.
pub const SYNC_BEFORE_FETCH: &str = "sync.before_fetch";

/// A request parked at a sync point was not released in time (test mode only); names the actor
/// and the point as `actor@point`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sync point {0} was not released in time")]
pub struct SyncPointTimeout(pub String);

/// The sync-point hooks of one service instance.
#[derive(Clone, Debug)]
pub struct SyncHooks {
    controller: SyncPoints,
    timeout: Duration,
}

impl SyncHooks {
    /// Hooks backed by `controller`; a parked request fails after `timeout`.
    pub fn new(controller: SyncPoints, timeout: Duration) -> Self {
        Self {
            controller,
            timeout,
        }
    }

    /// The controller, for the harness.
    pub fn controller(&self) -> &SyncPoints {
        &self.controller
    }

    /// Whether the request would park at one of `points`: the harness armed one for its actor (or
    /// holds one occupied, which counts the same: its slot is not free). A request that may not
    /// wait (a callback whose fresh grant is not durable yet) asks first: a parked request waits
    /// for the harness as long as it likes.
    pub fn would_park(
        hooks: Option<&SyncHooks>,
        ctx: &RequestContext,
        points: &[&'static str],
    ) -> bool {
        let (Some(hooks), Some(actor)) = (hooks, ctx.actor.as_ref()) else {
            return false;
        };
        points.iter().any(|point| {
            let key = SlotKey::new(actor.as_str(), *point);
            hooks.controller.state(&key).is_some()
        })
    }

    /// Reaches a sync point: parks if the harness armed it for this request's actor.
    pub async fn reach(
        hooks: Option<&SyncHooks>,
        ctx: &RequestContext,
        point: &'static str,
    ) -> Result<(), SyncPointTimeout> {
        let (Some(hooks), Some(actor)) = (hooks, ctx.actor.as_ref()) else {
            return Ok(());
        };
        debug_assert!(
            SYNC_POINTS.contains(&point),
            "undeclared sync point {point}"
        );
        let arrival = hooks.controller.arrive(SlotKey::new(actor.as_str(), point));
        tokio::time::timeout(hooks.timeout, arrival)
            .await
            .map_err(|_| SyncPointTimeout(format!("{actor}@{point}")))
    }
}
