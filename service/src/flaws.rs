//! Seeded flaws: the v1 defects the seed documents describe, each a named switch, so the harness
//! can show that its catalogue catches every one (`harbor-certify mutants`).
//!
//! The switches exist only in a build with the cargo feature `flaws`. Without it, [`active`] is a
//! constant `false` the compiler removes, [`Flaws`] cannot hold any flaw, and a configuration that
//! asks for one is refused at start-up. A service started with flaws says so in its logs, in
//! `/readyz`, and in every report it appears in.
//!
//! The flaws of a request are read from a task-local set by the request middleware, so the
//! flawed branches need no extra parameters.
//!
//! A leaf module: it uses nothing else of this crate, so that any module may consult [`active`]
//! without a cycle. A flawed variant of some module's code lives in that module.

use std::fmt;

/// One seeded flaw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flaw {
    /// OAuth state in a per-replica in-memory map, without TTL.
    MemoryStateStore,
    /// The callback does not check the state's tenant and user against the caller.
    NoCallbackTenantCheck,
    /// The callback checks the state's tenant but not its user: any admin of the tenant can
    /// finish an authorization another admin started, with that admin's code — the connection
    /// made in their name to an account they never chose (the threat model's fix binds the state
    /// to the tenant alone).
    NoCallbackUserCheck,
    /// The state is read, and deleted only after the code exchange.
    NonAtomicStateConsume,
    /// A failed callback puts its state back.
    StateKeptOnFailure,
    /// Tokens are stored as plaintext.
    PlaintextTokens,
    /// Token ciphertext is not bound to its row (no associated data).
    NoAadBinding,
    /// The OAuth paths derive their workspace lock key in another namespace than activation.
    SplitLockNamespace,
    /// Connection reads take no row lock (`FOR UPDATE` missing).
    NoRowLock,
    /// A failed activation commits (releasing the lock) and then finishes its error bookkeeping.
    EarlyLockRelease,
    /// Activation inserts without `ON CONFLICT` and without looking for an earlier activation.
    NoUniqueActivation,
    /// Identity is taken from an `X-User-Id` header when present.
    TrustUserHeader,
    /// Workspace routes do not check membership.
    NoMembershipCheck,
    /// No PKCE: no challenge at authorize, no verifier at the exchange.
    NoPkce,
    /// No rate limits on the OAuth routes.
    NoRateLimit,
    /// The connection list returns access tokens.
    TokenExposure,
    /// A sync refreshes without the workspace lock or re-reading the row.
    NoRefreshSingleFlight,
    /// A grant the service could not store (the database went away, the replica died) is left
    /// live at the provider: no write-ahead intent for a callback's grant or a rotated refresh
    /// token, and no revocation after a failed store.
    KeepUnstoredGrant,
    /// A refresh that failed for any reason but `invalid_grant` (a lost reply, a timeout) is tried
    /// again at once with the same refresh token.
    RetryFailedRefresh,
    /// Disconnect wipes the tokens and never tells the provider: the grant stays live with no copy
    /// anywhere (the behaviour before the revocation outbox).
    DisconnectWithoutRevocation,
    /// The client credentials always go in the token request's body (`client_secret_post`),
    /// whatever client authentication the provider is configured for: a client that never
    /// learnt QuickBooks's dialect.
    ClientSecretInBody,
    /// A callback whose store failed revokes its fresh grant at once, without finding out
    /// whether the store committed after all (a lost commit reply): the row can end CONNECTED
    /// with a grant the provider no longer honours.
    RevokeOnAnyCommitError,
    /// Revoke and disconnect write the revocation intent in a transaction of its own after the
    /// status change commits, not in the same one: a replica that dies in between leaves the
    /// grant live with no copy anywhere.
    OutboxOutsideTransaction,
    /// A rotated refresh token whose store never committed is never adopted — not by the next
    /// sync, not by the outbox, which revokes it even when its row still holds the spent token it
    /// replaced: the user's connection ends (the next sync is refused) instead of keeping the
    /// grant it still has.
    RevokeUnstoredRotation,
    /// The process ends at SIGTERM without waiting for anything — its open connections, the work
    /// requests handed to tasks of their own, the outbox worker's current intent: a rolling
    /// deploy cuts a callback between its exchange and its store, whether or not its client is
    /// still there.
    ShutdownWithoutWaiting,
    /// Authorize reads the membership in a transaction and keeps it open while it asks Redis (a
    /// design a review turned down): each request waiting on a stalled Redis holds a pooled
    /// connection, and the hold on the membership, until Redis answers or times out.
    AuthorizeTransactionAcrossRedis,
    /// The callback logs the access token it was given (a debugging line left in): the token is in
    /// the service's logs, wherever they are written.
    TokenInLogs,
    /// A refresh token's expiry is never looked at: a sync asks the provider with a token past
    /// it, and activation rests on a QuickBooks grant Intuit has ended.
    IgnoreRefreshExpiry,
    /// A grant given up is revoked at the provider even while another connection holds a grant
    /// of the same Google account: Google ends the account's whole consent, and the other
    /// connection's grant with it.
    RevokeSharedConsent,
    /// A grant parked behind another holder of its account's consent is never let go when that
    /// holder's grant ends without a revocation of its own (a refused refresh, an end passed with
    /// nobody looking: neither the request nor the worker's sweep lets it go): it stays live at
    /// the provider, held by no row.
    ParkedGrantKept,
    /// The callback stores its fresh grant in the write-ahead's transaction even when a lock it
    /// needs is held, and waits for it there, instead of writing the grant ahead first: a replica
    /// that dies while the callback waits leaves a live grant that no row and no intent holds.
    CallbackWaitsUnwritten,
    /// A revoke's or disconnect's settlement (the intent settled and the provider's answer
    /// audited, in one statement run on its own) audits the answer whether or not it found its
    /// intent, and is still sent again on another connection when the first one dies under it,
    /// as a statement that may be repeated is — when only the reply was lost, the answer is
    /// audited twice.
    SettlementSentAgain,
    /// A rotated refresh token adopted from the outbox is stored without the end its provider
    /// gave it (the write-ahead's copy of it ignored): the adopted grant's end is unknown, and an
    /// activation rests on a QuickBooks grant Intuit has ended.
    AdoptionForgetsEnd,
    /// What a sync fetched outlives the grant it was fetched under (migration 0024's trigger
    /// disabled, as before it): a disconnect or revoke leaves the documents readable to every
    /// member, and a reconnect to another account writes over the first one's by id.
    DocumentsOutliveGrant,
    /// A sync stores what it fetched whatever the connection's row says now (the store's
    /// condition on its status and grant dropped, and its answer not checked): a disconnect or
    /// revoke that commits while the sync reads the provider (its revocation not delivered yet,
    /// so the token still works) is followed by the old grant's documents, answered 200 — and
    /// after a reconnect, the old account's documents are stored over the new grant's.
    DocumentsStoredUnchecked,
}

impl Flaw {
    /// Every flaw, in a stable order.
    pub const ALL: [Flaw; 35] = [
        Flaw::MemoryStateStore,
        Flaw::NoCallbackTenantCheck,
        Flaw::NoCallbackUserCheck,
        Flaw::NonAtomicStateConsume,
        Flaw::StateKeptOnFailure,
        Flaw::PlaintextTokens,
        Flaw::NoAadBinding,
        Flaw::SplitLockNamespace,
        Flaw::NoRowLock,
        Flaw::EarlyLockRelease,
        Flaw::NoUniqueActivation,
        Flaw::TrustUserHeader,
        Flaw::NoMembershipCheck,
        Flaw::NoPkce,
        Flaw::NoRateLimit,
        Flaw::TokenExposure,
        Flaw::NoRefreshSingleFlight,
        Flaw::KeepUnstoredGrant,
        Flaw::RetryFailedRefresh,
        Flaw::DisconnectWithoutRevocation,
        Flaw::ClientSecretInBody,
        Flaw::RevokeOnAnyCommitError,
        Flaw::OutboxOutsideTransaction,
        Flaw::RevokeUnstoredRotation,
        Flaw::ShutdownWithoutWaiting,
        Flaw::AuthorizeTransactionAcrossRedis,
        Flaw::TokenInLogs,
        Flaw::IgnoreRefreshExpiry,
        Flaw::RevokeSharedConsent,
        Flaw::ParkedGrantKept,
        Flaw::CallbackWaitsUnwritten,
        Flaw::SettlementSentAgain,
        Flaw::AdoptionForgetsEnd,
        Flaw::DocumentsOutliveGrant,
        Flaw::DocumentsStoredUnchecked,
    ];

    /// The flaw's switch name, such as `split-lock-namespace`.
    pub fn name(self) -> &'static str {
        match self {
            Flaw::MemoryStateStore => "memory-state-store",
            Flaw::NoCallbackTenantCheck => "no-callback-tenant-check",
            Flaw::NoCallbackUserCheck => "no-callback-user-check",
            Flaw::NonAtomicStateConsume => "non-atomic-state-consume",
            Flaw::StateKeptOnFailure => "state-kept-on-failure",
            Flaw::PlaintextTokens => "plaintext-tokens",
            Flaw::NoAadBinding => "no-aad-binding",
            Flaw::SplitLockNamespace => "split-lock-namespace",
            Flaw::NoRowLock => "no-row-lock",
            Flaw::EarlyLockRelease => "early-lock-release",
            Flaw::NoUniqueActivation => "no-unique-activation",
            Flaw::TrustUserHeader => "trust-user-header",
            Flaw::NoMembershipCheck => "no-membership-check",
            Flaw::NoPkce => "no-pkce",
            Flaw::NoRateLimit => "no-rate-limit",
            Flaw::TokenExposure => "token-exposure",
            Flaw::NoRefreshSingleFlight => "no-refresh-single-flight",
            Flaw::KeepUnstoredGrant => "keep-unstored-grant",
            Flaw::RetryFailedRefresh => "retry-failed-refresh",
            Flaw::DisconnectWithoutRevocation => "disconnect-without-revocation",
            Flaw::ClientSecretInBody => "client-secret-in-body",
            Flaw::RevokeOnAnyCommitError => "revoke-on-any-commit-error",
            Flaw::OutboxOutsideTransaction => "outbox-outside-transaction",
            Flaw::RevokeUnstoredRotation => "revoke-unstored-rotation",
            Flaw::ShutdownWithoutWaiting => "shutdown-without-waiting",
            Flaw::AuthorizeTransactionAcrossRedis => "authorize-transaction-across-redis",
            Flaw::TokenInLogs => "token-in-logs",
            Flaw::IgnoreRefreshExpiry => "ignore-refresh-expiry",
            Flaw::RevokeSharedConsent => "revoke-shared-consent",
            Flaw::ParkedGrantKept => "parked-grant-kept",
            Flaw::CallbackWaitsUnwritten => "callback-waits-unwritten",
            Flaw::SettlementSentAgain => "settlement-sent-again",
            Flaw::AdoptionForgetsEnd => "adoption-forgets-end",
            Flaw::DocumentsOutliveGrant => "documents-outlive-grant",
            Flaw::DocumentsStoredUnchecked => "documents-stored-unchecked",
        }
    }

    /// Parses a switch name.
    pub fn parse(raw: &str) -> Option<Flaw> {
        Self::ALL.into_iter().find(|f| f.name() == raw)
    }
}

impl fmt::Display for Flaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether this build can enable flaws at all.
pub const COMPILED_IN: bool = cfg!(feature = "flaws");

/// The flaws a service instance runs with. Always empty without the `flaws` feature.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flaws {
    #[cfg(feature = "flaws")]
    enabled: std::collections::BTreeSet<Flaw>,
}

/// A request for flaws in a build that cannot have them.
#[derive(Debug, thiserror::Error)]
#[error("flaws {0:?} were requested, but this build has no `flaws` feature")]
pub struct NotCompiledIn(pub Vec<String>);

impl Flaws {
    /// No flaw: the correct service.
    pub fn none() -> Self {
        Self::default()
    }

    /// The given flaws; refused unless the build has the `flaws` feature (or the list is empty).
    pub fn enable(flaws: impl IntoIterator<Item = Flaw>) -> Result<Self, NotCompiledIn> {
        let wanted: Vec<Flaw> = flaws.into_iter().collect();
        #[cfg(feature = "flaws")]
        {
            Ok(Self {
                enabled: wanted.into_iter().collect(),
            })
        }
        #[cfg(not(feature = "flaws"))]
        {
            if wanted.is_empty() {
                Ok(Self::default())
            } else {
                Err(NotCompiledIn(
                    wanted.iter().map(|f| f.name().to_owned()).collect(),
                ))
            }
        }
    }

    /// Whether `flaw` is enabled.
    #[inline]
    pub fn has(&self, flaw: Flaw) -> bool {
        #[cfg(feature = "flaws")]
        {
            self.enabled.contains(&flaw)
        }
        #[cfg(not(feature = "flaws"))]
        {
            let _ = flaw;
            false
        }
    }

    /// The enabled flaws' names.
    pub fn names(&self) -> Vec<&'static str> {
        Flaw::ALL
            .into_iter()
            .filter(|f| self.has(*f))
            .map(Flaw::name)
            .collect()
    }

    /// Whether no flaw is enabled.
    pub fn is_empty(&self) -> bool {
        self.names().is_empty()
    }
}

#[cfg(feature = "flaws")]
tokio::task_local! {
    static REQUEST_FLAWS: Flaws;
}

/// Runs `fut` with `flaws` as the flaws of the current request.
pub async fn scope<F: std::future::Future>(flaws: &Flaws, fut: F) -> F::Output {
    #[cfg(feature = "flaws")]
    {
        REQUEST_FLAWS.scope(flaws.clone(), fut).await
    }
    #[cfg(not(feature = "flaws"))]
    {
        let _ = flaws;
        fut.await
    }
}

/// Whether `flaw` is enabled for the request this task serves. Always `false` without the feature.
#[inline]
pub fn active(flaw: Flaw) -> bool {
    #[cfg(feature = "flaws")]
    {
        REQUEST_FLAWS.try_with(|f| f.has(flaw)).unwrap_or(false)
    }
    #[cfg(not(feature = "flaws"))]
    {
        let _ = flaw;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Flaw::ALL {
            assert_eq!(Flaw::parse(f.name()), Some(f));
        }
    }

    #[cfg(not(feature = "flaws"))]
    #[test]
    fn the_default_build_cannot_enable_flaws() {
        assert!(Flaws::enable([Flaw::NoRowLock]).is_err());
        assert!(!active(Flaw::NoRowLock));
        assert!(Flaws::enable([]).unwrap().is_empty());
    }
}
