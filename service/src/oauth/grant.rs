//! The callback's grant, from the code exchange to the stored connection. Nothing may wait while
//! the fresh grant is not durable, so either the store is made at once, in the transaction opened
//! before the exchange, when every lock it needs is free now (its commit makes the grant durable
//! in the row); or the grant is written ahead (an outbox intent, committed) and then stored under
//! the workspace and row locks in a transaction of its own. And what a failed store does with the
//! grant: give it back, or find out that the store committed after all. Split from [`super`],
//! which parses and checks the callback.
//!
//! Past 500 lines on purpose: the write-ahead, the store and the failed store's two endings are one
//! protocol whose correctness is read across all of them.

use super::*;

/// Steps 3 and 4 of the callback: exchange the code, then store the tokens under the locks.
pub(super) async fn complete_flow(
    state: AppState,
    ctx: RequestContext,
    record: OAuthStateRecord,
    params: CallbackParams,
    member: MemberOfRecord,
    provider: Provider,
) -> Result<ConnectionView, ApiError> {
    // 3a. The caller must still be a member of the workspace the flow was started for. The
    // write-ahead's connection is taken now, before the exchange (from its own pool): once the
    // provider has answered, nothing may wait for a connection before the grant is durable. Its
    // transaction opens here with the membership check, so one transaction checks the caller and,
    // once the provider has answered, makes the grant durable. (While the provider answers it
    // holds no row or advisory lock — only the tables' `ACCESS SHARE`, which blocks nothing but
    // DDL — and its connection was held across the exchange before, too; the store re-checks the
    // membership under its locks.)
    let ahead = match (&params.error, flaws::active(Flaw::KeepUnstoredGrant)) {
        (None, false) => Some(open_write_ahead(&state, &ctx, &record, &member, provider).await?),
        // An error answer issues no grant; under the seeded flaw nothing is written ahead.
        _ => {
            if !flaws::active(Flaw::NoCallbackTenantCheck) {
                crate::auth::membership(&state.db, record.workspace_id, member.user_id)
                    .await?
                    .ok_or(ApiError::NotFound)?;
            }
            None
        }
    };
    // 3b. The answer must come from the authorization server the flow was started with (RFC
    // 9207): otherwise the code is never sent anywhere, and the connection settles back.
    // (A provider no longer configured — a restart, replicas configured apart — fails at the
    // exchange below and settles like any refused exchange.)
    let config = state.providers.config(provider).ok();
    if !issuer_ok(params.iss.as_deref(), &record.issuer, config) {
        abandon(ahead).await;
        return refuse_answer(
            &state,
            &ctx,
            &record,
            &member,
            &params,
            Refusal::IssuerMismatch,
        )
        .await;
    }
    // 3c. The account the dialect's resource API needs (QuickBooks's company), named by the
    // provider beside the code.
    let account = match config.and_then(|c| c.dialect().account_parameter()) {
        Some(name) if params.error.is_none() => match params.account.as_deref() {
            Some(realm) if crate::providers::quickbooks::valid_realm(realm) => {
                Some(realm.to_owned())
            }
            _ => {
                abandon(ahead).await;
                return refuse_answer(
                    &state,
                    &ctx,
                    &record,
                    &member,
                    &params,
                    Refusal::Provider(ProviderError::Protocol(format!(
                        "the callback has no valid {name}"
                    ))),
                )
                .await;
            }
        },
        _ => None,
    };
    // 3d. Exchange the code, proving the PKCE verifier, with the exact redirect URI.
    let exchanged = match (&params.error, &params.code) {
        (Some(error), _) => Err(ProviderError::Rejected {
            status: 400,
            error: error.clone(),
        }),
        (None, Some(code)) => {
            state
                .providers
                .exchange_code(provider, code, &record.verifier, &record.redirect_uri)
                .await
        }
        (None, None) => unreachable!("callback_params requires a code or an error"),
    };
    let mut tokens = match exchanged {
        Ok(tokens) => tokens,
        Err(error) => {
            abandon(ahead).await;
            return refuse_answer(
                &state,
                &ctx,
                &record,
                &member,
                &params,
                Refusal::Provider(error),
            )
            .await;
        }
    };
    // Google names the account in the answer's ID token instead (read, then dropped).
    tokens.account =
        account.or_else(|| config.and_then(|c| c.dialect().account_of_answer(&tokens, c)));
    tokens.id_token = None;
    if flaws::active(Flaw::TokenInLogs) {
        tracing::info!(
            provider = provider.as_str(),
            access_token = tokens.access_token.expose_secret(),
            "code exchanged"
        );
    }
    // 3e. The grant must carry every scope the connection needs: a user can untick some at the
    // consent screen (Google's granular consent), and a grant without them would fail every
    // sync. (Given back below, through its write-ahead intent.)
    let missing = config
        .map(|c| c.scopes_not_granted(&tokens))
        .unwrap_or_default();
    // 3f. An access token that expires with nothing to renew it (Google's answer to an account
    // that consented before, when the request lost `prompt=consent`; a QuickBooks or Box answer
    // outside its protocol) is a grant that ends with that token: it is stored with that end
    // (`grant_ends_at`), so a sync past it ends the connection and activation does not rest on
    // it. Not given back: at Google, revoking it would end the account's whole consent to the
    // client — the grant another connection of the same account holds included.
    if missing.is_empty() && tokens.refresh_token.is_none() && tokens.expires_in.is_some() {
        tracing::warn!(
            provider = provider.as_str(),
            "a callback's grant carries no refresh token: it ends with its access token (does the authorization request ask for offline access and consent?)"
        );
    }
    // From here on a live grant exists, and nothing may wait until it is durable: a replica that
    // died while this request waited would leave a live grant that nothing holds. When every lock
    // the store needs is free now, the grant is stored in the transaction opened before the
    // exchange, and its commit makes it durable in the row (`store_at_once`); the window between
    // the provider's answer and that commit holds no wait.
    let grant = uuid::Uuid::new_v4();
    let mut ahead = ahead;
    if missing.is_empty() && may_store_at_once(&state, &ctx) {
        if let Some(open) = ahead.take() {
            let call = (&record, &member, provider);
            let connection = open.connection;
            let unwritten = (grant, connection, &tokens);
            match store_at_once(&state, &ctx, call, &tokens, grant, open).await {
                AtOnce::Stored(view) => return Ok(*view),
                AtOnce::WriteAheadFirst(open) => ahead = Some(open),
                AtOnce::Failed(error) => {
                    // Rolled back: nothing durable holds the grant, and it goes back.
                    give_back_unwritten(&state, &ctx, call, unwritten).await;
                    return Err(error);
                }
                AtOnce::CommitFailed { error, xid } => {
                    return after_failed_commit(&state, &ctx, call, unwritten, (xid, error)).await
                }
            }
        }
    }
    // Otherwise the grant is written ahead before anything else can fail, so that whatever
    // happens below — a failed store, a lost commit reply, this replica dying — it ends stored
    // or revoked (by this request, or by the outbox once the lease runs out). What remains is
    // the window between the provider's answer and this write's commit (in a transaction opened
    // before the exchange, so no wait for a connection lies inside it).
    let intent = match ahead {
        // Seeded flaw: nothing durable holds the grant until it is stored.
        None => None,
        Some(ahead) => {
            let written =
                write_ahead(&state, ahead, (&record, &member, provider), grant, &tokens).await;
            match written {
                Ok(intent) => Some(intent),
                Err(failed) => {
                    // The commit may have happened with its reply lost: then the intent is there,
                    // and the fresh grant is durable after all. (The broken connection went back
                    // with its transaction: the look-up never waits for the pool while holding one
                    // of its connections.)
                    let found = match failed.sealed {
                        Some(sealed) => {
                            outbox::written_ahead(
                                &state.write_ahead_db,
                                ctx.actor.as_ref(),
                                member.tenant_id,
                                &sealed,
                            )
                            .await
                        }
                        None => None,
                    };
                    match found {
                        Some(intent) => Some(intent),
                        None => {
                            // Nothing durable holds it: give it back now (were the intent there
                            // after all, a second revocation by the outbox is harmless).
                            let _ = give_back(&state, provider, &tokens).await;
                            return Err(failed.error);
                        }
                    }
                }
            }
        }
    };
    // A grant lacking a scope (3e) is given back through its write-ahead intent, so it ends
    // revoked even if this fails.
    if !missing.is_empty() {
        let parked = give_back_settled(&state, member.tenant_id, provider, &tokens, intent).await;
        tracing::info!(
            parked,
            provider = provider.as_str(),
            missing = %missing.join(" "),
            "a callback's grant lacked required scopes; given back"
        );
        return refuse_answer(
            &state,
            &ctx,
            &record,
            &member,
            &params,
            Refusal::ScopesNotGranted(missing),
        )
        .await;
    }
    state.states.finish(params.state.expose_secret()).await?;
    let finished = store_grant(
        &state,
        &ctx,
        &record,
        &member,
        provider,
        &tokens,
        (grant, intent),
    )
    .await;
    if let Err(error) = &finished {
        // The connection changed meanwhile (a disconnect, a newer flow) or storing failed: the
        // fresh grant is useless, so give it back rather than leave it live at the provider —
        // unless the store committed after all and only its reply was lost. What became of it
        // goes in the audit row of a superseded flow.
        let mut grant_end = "revoked";
        match intent {
            // Seeded flaws: no write-ahead (a grant lost to a failed store stays live; a
            // superseded one is still given back), or a revocation whatever the commit did.
            None if matches!(error, ApiError::AuthorizationSuperseded) => {
                let _ = give_back(&state, provider, &tokens).await;
            }
            None => {}
            Some(intent) if flaws::active(Flaw::RevokeOnAnyCommitError) => {
                let _ =
                    give_back_settled(&state, member.tenant_id, provider, &tokens, Some(intent))
                        .await;
            }
            Some(intent) => {
                match store_outcome(&state, &ctx, &record, &member, provider, grant, intent).await {
                    StoreOutcome::Stored(view) => {
                        commit_reply_lost(&state, &ctx, (&record, &member, provider)).await;
                        return Ok(*view);
                    }
                    StoreOutcome::NotStored => {
                        let parked = give_back_settled(
                            &state,
                            member.tenant_id,
                            provider,
                            &tokens,
                            Some(intent),
                        )
                        .await;
                        if parked {
                            grant_end = "parked";
                        }
                    }
                    // The outbox has it (a worker took it, or it cannot be read now): it revokes
                    // the grant if, and only if, the store did not commit.
                    StoreOutcome::LeftToOutbox => {}
                }
            }
        }
        if matches!(error, ApiError::AuthorizationSuperseded) {
            // Recorded in its own transaction: the callback's own was rolled back.
            let mut tx = db::begin(&state.db, ctx.actor.as_ref(), member.tenant_id).await?;
            let event = AuditEvent {
                tenant_id: Some(member.tenant_id),
                workspace_id: Some(record.workspace_id),
                actor_user_id: Some(member.user_id),
                action: "oauth.callback",
                outcome: "superseded",
                detail: json!({ "provider": provider.as_str(), "grant": grant_end }),
            };
            let result = audit::record(&mut tx, &ctx, event)
                .await
                .map_err(ApiError::from);
            db::finish(tx, result).await?;
        }
    }
    finished
}

/// Gives a grant back at the provider (its refresh token when it has one: that ends it all).
async fn give_back(state: &AppState, provider: Provider, tokens: &TokenSet) -> outbox::Delivered {
    let (token, kind) = match &tokens.refresh_token {
        Some(refresh) => (refresh, TokenKind::Refresh),
        None => (&tokens.access_token, TokenKind::Access),
    };
    let delivered = state
        .providers
        .revoke(provider, token, kind)
        .await
        .map_err(outbox::Undelivered::from);
    if let Err(e) = &delivered {
        tracing::warn!(error = %e, "could not revoke an unused grant");
    }
    delivered
}

/// Gives a grant back and settles the intent that wrote it ahead, if any, with the provider's
/// answer: gone once revoked, else due again for the outbox (which also takes it if the settle
/// itself fails). A grant of a Google account whose consent another connection holds alive is
/// not revoked: its intent is parked behind that holder (`outbox::park_unstored`), and the answer
/// is `true`.
async fn give_back_settled(
    state: &AppState,
    tenant: TenantId,
    provider: Provider,
    tokens: &TokenSet,
    intent: Option<outbox::IntentId>,
) -> bool {
    if let Some(intent) = intent {
        let owner = (tenant, provider);
        let account = tokens.account.as_deref();
        let now = state.clock.now();
        if outbox::park_unstored(&state.db, owner, account, intent, now).await {
            tracing::info!(
                provider = provider.as_str(),
                "an unused grant is parked behind another connection holding its account's consent"
            );
            return true;
        }
    }
    let delivered = give_back(state, provider, tokens).await;
    if let Some(intent) = intent {
        if let Err(e) = outbox::settle(&state.db, intent, delivered, 0, state.clock.now()).await {
            tracing::warn!(error = %e, "an unstored grant's intent stays for the outbox");
        }
    }
    false
}

/// The write-ahead's transaction, opened before the code exchange on a connection of the
/// write-ahead pool.
struct OpenWriteAhead {
    /// The transaction: the membership checked, nothing written yet.
    tx: db::Tx,
    /// The connection row the grant is for (its tokens are sealed to it).
    connection: ConnectionId,
}

/// Ends a write-ahead's transaction that will write nothing (the answer gave no grant), its
/// rollback completed before the refusal is answered, as `db::finish` does for every request.
async fn abandon(ahead: Option<OpenWriteAhead>) {
    if let Some(ahead) = ahead {
        if let Err(e) = ahead.tx.rollback().await {
            // The connection is unusable; sqlx closes it rather than return it to the pool.
            tracing::warn!(error = %e, "the rollback of an unused write-ahead failed");
        }
    }
}

/// Opens the write-ahead's transaction on the write-ahead pool, scoped to the caller's tenant:
/// one statement checks that the caller is still a member of the flow's workspace (404 if not)
/// and reads the connection row the grant will be sealed to.
async fn open_write_ahead(
    state: &AppState,
    ctx: &RequestContext,
    record: &OAuthStateRecord,
    member: &MemberOfRecord,
    provider: Provider,
) -> Result<OpenWriteAhead, ApiError> {
    let mut tx = db::begin(&state.write_ahead_db, ctx.actor.as_ref(), member.tenant_id).await?;
    let read = async {
        // The membership through the owner's look-up function, as `auth::membership` reads it.
        let (role, connection): (Option<String>, Option<ConnectionId>) = sqlx::query_as(
            "SELECT (SELECT role FROM harbor_membership($1, $2)), \
                    (SELECT id FROM connections WHERE workspace_id = $1 AND provider = $3)",
        )
        .bind(record.workspace_id)
        .bind(member.user_id)
        .bind(provider.as_str())
        .fetch_one(&mut *tx)
        .await?;
        if role.is_none() && !flaws::active(Flaw::NoCallbackTenantCheck) {
            return Err(ApiError::NotFound);
        }
        connection.ok_or(ApiError::NotFound)
    }
    .await;
    match read {
        Ok(connection) => Ok(OpenWriteAhead { tx, connection }),
        Err(error) => db::finish(tx, Err(error)).await,
    }
}

/// A write-ahead that failed.
struct WriteAheadFailed {
    /// Why.
    error: ApiError,
    /// The sealed token, when it was written: its intent may have committed with its reply lost.
    sealed: Option<Vec<u8>>,
}

/// Writes the fresh grant ahead of its store (`outbox::write_ahead`) in the transaction opened
/// before the exchange, sealed to the connection row and the grant like the tokens the store will
/// write (the refresh token when there is one: revoking it ends the whole grant), and commits.
async fn write_ahead(
    state: &AppState,
    ahead: OpenWriteAhead,
    (record, member, provider): (&OAuthStateRecord, &MemberOfRecord, Provider),
    grant: uuid::Uuid,
    tokens: &TokenSet,
) -> Result<outbox::IntentId, WriteAheadFailed> {
    let OpenWriteAhead { mut tx, connection } = ahead;
    let (field, token) = match &tokens.refresh_token {
        Some(refresh) => (TokenField::Refresh, refresh),
        None => (TokenField::Access, &tokens.access_token),
    };
    let binding = TokenBinding {
        tenant_id: member.tenant_id,
        connection_id: connection,
        provider,
        field,
        grant_id: Some(grant),
    };
    let sealed = match seal_one(&state.vault, &binding, token) {
        Ok(sealed) => sealed,
        Err(error) => {
            let error = db::finish(tx, Err::<(), ApiError>(error.into()))
                .await
                .unwrap_err();
            return Err(WriteAheadFailed {
                error,
                sealed: None,
            });
        }
    };
    let now = state.clock.now();
    let ahead = outbox::Ahead::FreshGrant;
    let result = outbox::write_ahead(&mut tx, &binding, record.workspace_id, &sealed, ahead, now)
        .await
        .map_err(ApiError::from);
    db::finish(tx, result)
        .await
        .map_err(|error| WriteAheadFailed {
            error,
            sealed: Some(sealed),
        })
}

/// What a failed store turns out to have done, read on a fresh connection.
enum StoreOutcome {
    /// It committed: the reply was lost, the grant is stored.
    Stored(Box<ConnectionView>),
    /// It did not, and the request still holds the intent: revoke now.
    NotStored,
    /// A worker holds the intent, or the database cannot say now: the outbox decides.
    LeftToOutbox,
}

/// Finds out whether a store whose commit failed committed after all: its intent is deleted in
/// the store's own transaction, so the row holding this grant (and no intent) means it did.
async fn store_outcome(
    state: &AppState,
    ctx: &RequestContext,
    record: &OAuthStateRecord,
    member: &MemberOfRecord,
    provider: Provider,
    grant: uuid::Uuid,
    intent: outbox::IntentId,
) -> StoreOutcome {
    let read = async {
        let mut tx = db::begin(&state.db, ctx.actor.as_ref(), member.tenant_id).await?;
        let result: Result<StoreOutcome, ApiError> = async {
            let call = (record, member, provider);
            if let Some(view) = stored_view(&mut tx, call, grant).await? {
                return Ok(StoreOutcome::Stored(Box::new(view)));
            }
            Ok(if outbox::held(&mut tx, intent).await? {
                StoreOutcome::NotStored
            } else {
                StoreOutcome::LeftToOutbox
            })
        }
        .await;
        db::finish(tx, result).await
    };
    let outcome: Result<StoreOutcome, ApiError> = read.await;
    outcome.unwrap_or(StoreOutcome::LeftToOutbox)
}

/// A callback's flow, its caller and its provider, as the store's steps take them.
type Call<'a> = (&'a OAuthStateRecord, &'a MemberOfRecord, Provider);

/// The store's one write, under the workspace lock and the row lock: the tokens sealed to the new
/// grant (so no ciphertext of an earlier grant of this row can ever be taken for one of this
/// grant), the connection `CONNECTED`, and its audit row.
async fn write_grant(
    state: &AppState,
    ctx: &RequestContext,
    (record, member, provider): Call<'_>,
    tx: &mut db::Tx,
    (lock, connection): (&locks::WorkspaceLock, &lifecycle::LockedConnection),
    tokens: &TokenSet,
    grant: uuid::Uuid,
) -> Result<lifecycle::ViewRow, ApiError> {
    let asked = state
        .providers
        .config(provider)
        .map(|c| c.scopes.as_slice())
        .unwrap_or_default();
    let sealed = seal_token_set(
        &state.vault,
        connection,
        grant,
        tokens,
        (None, asked),
        state.clock.now(),
    )?;
    let audit = lifecycle::Audit {
        ctx,
        event: |to: ConnectionStatus| AuditEvent {
            tenant_id: Some(member.tenant_id),
            workspace_id: Some(record.workspace_id),
            actor_user_id: Some(member.user_id),
            action: "oauth.callback",
            outcome: to.as_str(),
            detail: json!({ "provider": provider.as_str() }),
        },
    };
    let (_, row) = lifecycle::apply(
        tx,
        lock,
        connection,
        Transition::CompleteAuthorization,
        Some(sealed),
        audit,
    )
    .await?;
    Ok(row)
}

/// Whether the callback may store its grant in the write-ahead's transaction. Not when the
/// harness would park it at one of the store's points: a parked request waits, and nothing may
/// wait before the grant is durable. Not under a seeded flaw of the store either: each keeps the
/// path it was seeded in (`callback-waits-unwritten`, the flaw of this path, excepted) —
/// `non-atomic-state-consume`'s late delete of the state, for one, runs between the write-ahead
/// and the store, a moment this path does not have.
fn may_store_at_once(state: &AppState, ctx: &RequestContext) -> bool {
    const STORE_POINTS: [&str; 3] = [
        syncpoints::OAUTH_CALLBACK_EXCHANGED,
        syncpoints::OAUTH_CALLBACK_LOCKED,
        syncpoints::OAUTH_CALLBACK_BEFORE_COMMIT,
    ];
    let seeded_in_the_store = [
        Flaw::NoCallbackTenantCheck,
        Flaw::NoRowLock,
        Flaw::NonAtomicStateConsume,
    ];
    !SyncHooks::would_park(state.sync_points.as_ref(), ctx, &STORE_POINTS)
        && !seeded_in_the_store.into_iter().any(flaws::active)
}

/// What storing the grant in the write-ahead's transaction came to.
enum AtOnce {
    /// Stored and committed: the grant is durable in its row.
    Stored(Box<ConnectionView>),
    /// A lock the store needs is held by someone else, or the caller is no longer an admin, or
    /// the connection is not this flow's to complete: nothing was written, and the transaction
    /// (with whatever it took) goes on to write the grant ahead.
    WriteAheadFirst(OpenWriteAhead),
    /// A statement failed: rolled back, nothing durable holds the grant.
    Failed(ApiError),
    /// The commit failed: whether it happened is not known yet.
    CommitFailed {
        /// Why.
        error: ApiError,
        /// The transaction's id, to ask the server what became of it.
        xid: i64,
    },
}

/// Stores the grant in the write-ahead's transaction when nothing has to wait: the membership's
/// hold and the workspace lock in one statement that tries them (`admin_membership_try_lock`),
/// then the row `SKIP LOCKED`, each given up at once when held. The connection must be `PENDING`
/// for this flow; anything else is left to the written-ahead store, which decides it as always.
/// (Seeded flaw `callback-waits-unwritten`: the locks are waited for, the grant still unwritten.)
async fn store_at_once(
    state: &AppState,
    ctx: &RequestContext,
    call: Call<'_>,
    tokens: &TokenSet,
    grant: uuid::Uuid,
    ahead: OpenWriteAhead,
) -> AtOnce {
    let (record, member, provider) = call;
    let OpenWriteAhead { mut tx, connection } = ahead;
    let waits = flaws::active(Flaw::CallbackWaitsUnwritten);
    let mut xid = 0;
    let attempt: Result<Option<ConnectionView>, ApiError> = async {
        let (workspace, user) = (record.workspace_id, member.user_id);
        let lock = if waits {
            use crate::auth::AdminEntry;
            match crate::auth::admin_membership_then_lock(&mut tx, workspace, user, LockFor::OAuth)
                .await?
            {
                AdminEntry::Locked(lock) => {
                    xid = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
                        .fetch_one(&mut *tx)
                        .await?;
                    Some(lock)
                }
                AdminEntry::NotMember | AdminEntry::NotAdmin => None,
            }
        } else {
            let (lock, id) =
                crate::auth::admin_membership_try_lock(&mut tx, workspace, user, LockFor::OAuth)
                    .await?;
            xid = id;
            lock
        };
        let Some(lock) = lock else {
            return Ok(None);
        };
        let row = if waits {
            Some(lifecycle::lock_connection(&mut tx, &lock, provider).await?)
        } else {
            lifecycle::try_lock_connection(&mut tx, &lock, provider).await?
        };
        let Some(row) = row else {
            return Ok(None);
        };
        if row.status != ConnectionStatus::Pending || row.pending_flow != record.flow_id {
            return Ok(None);
        }
        let written = write_grant(state, ctx, call, &mut tx, (&lock, &row), tokens, grant).await?;
        connections::view(written).map(Some)
    }
    .await;
    match attempt {
        Ok(None) => AtOnce::WriteAheadFirst(OpenWriteAhead { tx, connection }),
        Ok(Some(view)) => match db::finish(tx, Ok::<_, ApiError>(view)).await {
            Ok(view) => AtOnce::Stored(Box::new(view)),
            Err(error) => AtOnce::CommitFailed { error, xid },
        },
        Err(error) => AtOnce::Failed(db::finish(tx, Err::<(), _>(error)).await.unwrap_err()),
    }
}

/// A grant that nothing durable holds, as the store-at-once knows it: the grant's id, the row
/// its tokens are sealed to, and the tokens.
type Unwritten<'a> = (uuid::Uuid, ConnectionId, &'a TokenSet);

/// How long a callback whose store made at once could not commit spends learning what became of
/// it, and then writing the intent that leaves it to the outbox: each a bound of its own.
const FATE_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// After a store-at-once whose commit failed: the server is asked what became of the transaction
/// (`pg_xact_status` of the id it was given, on the write-ahead pool, for at most
/// [`FATE_WITHIN`]). Committed, and the row holds the grant: kept, answered with the row's view,
/// and the lost reply audited. Aborted: given back. Not known (the database cannot be asked, the
/// commit is still in progress, or a committed grant is not read back in its row): left to the
/// outbox through an intent written now, which the worker drops when the row holds the grant and
/// revokes otherwise — so a stored grant is not revoked for a reply that was lost unless not
/// even that intent can be written. Seeded flaw `revoke-on-any-commit-error`: given back without
/// asking.
async fn after_failed_commit(
    state: &AppState,
    ctx: &RequestContext,
    call: Call<'_>,
    unwritten: Unwritten<'_>,
    (xid, error): (i64, ApiError),
) -> Result<ConnectionView, ApiError> {
    let (grant, _, tokens) = unwritten;
    if flaws::active(Flaw::RevokeOnAnyCommitError) {
        let _ = give_back(state, call.2, tokens).await;
        return Err(error);
    }
    let fate = tokio::time::timeout(FATE_WITHIN, db::commit_status(&state.write_ahead_db, xid))
        .await
        .ok()
        .flatten();
    match fate {
        Some(true) => {
            if let Ok(Some(view)) = read_stored(state, ctx, call, grant).await {
                commit_reply_lost(state, ctx, call).await;
                return Ok(view);
            }
            leave_to_outbox(state, ctx, call, unwritten).await;
        }
        Some(false) => give_back_unwritten(state, ctx, call, unwritten).await,
        None => leave_to_outbox(state, ctx, call, unwritten).await,
    }
    Err(error)
}

/// A grant whose store may or may not have committed: an intent for the outbox's worker, which
/// decides under the locks by the row (`found_stored`, or revoked). When not even the intent can
/// be written within [`FATE_WITHIN`], revoked at once — the one way left to end it, and a grant
/// the commit may have stored is revoked with it.
async fn leave_to_outbox(
    state: &AppState,
    ctx: &RequestContext,
    call: Call<'_>,
    unwritten: Unwritten<'_>,
) {
    if write_intent(state, ctx, call, unwritten).await.is_none() {
        let _ = give_back(state, call.2, unwritten.2).await;
    }
}

/// Gives back a grant nothing durable holds. A Google grant whose account may be held by another
/// connection goes back through an intent written for it now (parked, not revoked, when the
/// account is held: `give_back_settled`); any other goes back at once, with nothing to wait for —
/// and so does a Google grant whose intent cannot be written within [`FATE_WITHIN`].
async fn give_back_unwritten(
    state: &AppState,
    ctx: &RequestContext,
    call: Call<'_>,
    unwritten: Unwritten<'_>,
) {
    let (_, member, provider) = call;
    let tokens = unwritten.2;
    if outbox::may_park(provider, tokens.account.as_deref()) {
        if let Some(intent) = write_intent(state, ctx, call, unwritten).await {
            give_back_settled(state, member.tenant_id, provider, tokens, Some(intent)).await;
            return;
        }
    }
    let _ = give_back(state, provider, tokens).await;
}

/// Writes the intent of a grant nothing durable holds, in a transaction of its own on the
/// write-ahead pool, as the write-ahead writes it (`None`: it could not be written within
/// [`FATE_WITHIN`]).
async fn write_intent(
    state: &AppState,
    ctx: &RequestContext,
    call: Call<'_>,
    (grant, connection, tokens): Unwritten<'_>,
) -> Option<outbox::IntentId> {
    let (_, member, _) = call;
    let written = async {
        let tx = db::begin(&state.write_ahead_db, ctx.actor.as_ref(), member.tenant_id)
            .await
            .ok()?;
        let ahead = OpenWriteAhead { tx, connection };
        write_ahead(state, ahead, call, grant, tokens).await.ok()
    };
    tokio::time::timeout(FATE_WITHIN, written)
        .await
        .ok()
        .flatten()
}

/// The connection's view when its row holds `grant`, read in a transaction of its own.
async fn read_stored(
    state: &AppState,
    ctx: &RequestContext,
    call: Call<'_>,
    grant: uuid::Uuid,
) -> Result<Option<ConnectionView>, ApiError> {
    let mut tx = db::begin(&state.db, ctx.actor.as_ref(), call.1.tenant_id).await?;
    let result = stored_view(&mut tx, call, grant).await;
    db::finish(tx, result).await
}

/// [`read_stored`]'s read, in `tx`.
async fn stored_view(
    tx: &mut db::Tx,
    (record, _, provider): Call<'_>,
    grant: uuid::Uuid,
) -> Result<Option<ConnectionView>, ApiError> {
    let stored: Option<Option<uuid::Uuid>> = sqlx::query_scalar(
        "SELECT grant_id FROM connections WHERE workspace_id = $1 AND provider = $2",
    )
    .bind(record.workspace_id)
    .bind(provider.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    if stored.flatten() != Some(grant) {
        return Ok(None);
    }
    connections::read_view(tx, record.workspace_id, provider)
        .await
        .map(Some)
}

/// A store whose commit's reply was lost committed after all: said in the log and, best effort
/// (the store and its own audit row are committed already), in the audit trail.
async fn commit_reply_lost(state: &AppState, ctx: &RequestContext, call: Call<'_>) {
    let (record, member, provider) = call;
    tracing::warn!(
        provider = provider.as_str(),
        "the callback's store committed although its reply was lost"
    );
    let event = AuditEvent {
        tenant_id: Some(member.tenant_id),
        workspace_id: Some(record.workspace_id),
        actor_user_id: Some(member.user_id),
        action: "oauth.callback",
        outcome: "commit_reply_lost",
        detail: json!({ "provider": provider.as_str(), "grant": "kept" }),
    };
    if let Ok(mut tx) = db::begin(&state.db, ctx.actor.as_ref(), member.tenant_id).await {
        let result = audit::record(&mut tx, ctx, event)
            .await
            .map_err(ApiError::from);
        let _ = db::finish(tx, result).await;
    }
}

/// Step 4: under the workspace lock and the row lock, encrypt and store the tokens, `CONNECTED`.
async fn store_grant(
    state: &AppState,
    ctx: &RequestContext,
    record: &OAuthStateRecord,
    member: &MemberOfRecord,
    provider: Provider,
    tokens: &TokenSet,
    (grant, intent): (uuid::Uuid, Option<outbox::IntentId>),
) -> Result<ConnectionView, ApiError> {
    let hooks = state.sync_points.as_ref();
    SyncHooks::reach(hooks, ctx, syncpoints::OAUTH_CALLBACK_EXCHANGED).await?;
    let mut tx = db::begin(&state.db, ctx.actor.as_ref(), member.tenant_id).await?;
    let result = async {
        // The caller must still be an admin of the workspace now, not only when the flow started
        // or the callback arrived: the exchange can take up to the provider timeout. The
        // membership is held (a shared lock that every change to it waits for), so a removal or
        // demotion waits for this commit or is seen here — and then the fresh grant is given back
        // (`complete_flow`). The workspace lock comes in the same statement, for an admin only.
        // (Seeded flaw `no-callback-tenant-check`: no membership, the lock on its own.)
        let lock = if flaws::active(Flaw::NoCallbackTenantCheck) {
            locks::lock_for_oauth(&mut tx, record.workspace_id).await?
        } else {
            use crate::auth::AdminEntry;
            let entry = crate::auth::admin_membership_then_lock(
                &mut tx,
                record.workspace_id,
                member.user_id,
                locks::LockFor::OAuth,
            )
            .await?;
            match entry {
                AdminEntry::Locked(lock) => lock,
                AdminEntry::NotMember => return Err(ApiError::NotFound),
                AdminEntry::NotAdmin => {
                    return Err(ApiError::Forbidden(
                        "connecting a provider needs the owner or admin role",
                    ))
                }
            }
        };
        // Before the row lock, as every path's `locked` point: the schedule, not PostgreSQL, then
        // decides who takes the row next when this request and a writer waiting for the row are
        // let go together.
        SyncHooks::reach(hooks, ctx, syncpoints::OAUTH_CALLBACK_LOCKED).await?;
        let connection = lifecycle::lock_connection(&mut tx, &lock, provider).await?;
        if connection.status == ConnectionStatus::Pending
            && connection.pending_flow != record.flow_id
        {
            return Err(ApiError::AuthorizationSuperseded);
        }
        let call = (record, member, provider);
        let locked = (&lock, &connection);
        let row = write_grant(state, ctx, call, &mut tx, locked, tokens, grant).await?;
        // The grant is stored in this transaction, so its write-ahead intent goes in it too.
        if let Some(intent) = intent {
            if !outbox::discard(&mut tx, intent).await? {
                // This request outlived its lease and a worker took the intent to revoke the
                // grant: storing it would keep a grant the provider is about to end.
                tracing::warn!(
                    request_id = %crate::context::current_request_id(),
                    lease_until = %intent.lease_until,
                    "a worker took this callback's write-ahead intent (its lease ran out, by the clock the worker read): the grant is being revoked"
                );
                return Err(ApiError::AuthorizationInterrupted);
            }
        }
        SyncHooks::reach(hooks, ctx, syncpoints::OAUTH_CALLBACK_BEFORE_COMMIT).await?;
        connections::view(row)
    }
    .await;
    db::finish(tx, result).await
}
