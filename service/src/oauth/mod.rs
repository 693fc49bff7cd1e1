//! The OAuth connector flow (threat model "proposed solution architecture"; RFC 9700 §2.1, §4.4,
//! §4.7; RFC 7636).
//!
//! - `POST /v1/workspaces/{workspace_id}/connections/{provider}/authorize` ([`authorize`]): under
//!   the workspace lock the connection becomes `PENDING`; a state and a PKCE verifier are stored in
//!   Redis ([`crate::oauth_state`]) bound to tenant, workspace, user and provider; the response is
//!   the provider's authorization URL.
//! - `GET /v1/oauth/{provider}/callback?state&code` ([`callback`]), authenticated as the user:
//!   consume the state (exactly once, whatever happens next) → check it belongs to this caller and
//!   provider → exchange the code with the verifier → under the workspace lock and row lock,
//!   encrypt and store the tokens, `CONNECTED`.
//!
//! Neither codes, states nor tokens are logged, returned in errors or written to audit rows.

use axum::extract::{RawQuery, State};
use axum::{Extension, Json};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::json;

use crate::audit::{self, AuditEvent};
use crate::auth::{Identity, ProviderPath};
use crate::connections::{self, ConnectionView};
use crate::context::RequestContext;
use crate::db;
use crate::domain::ConnectionId;
use crate::domain::{ParseError, Provider, TenantId, UserId};
use crate::error::ApiError;
use crate::flaws::{self, Flaw};
use crate::lifecycle::{self, ConnectionStatus, Transition};
use crate::locks::{self, LockFor};
use crate::oauth_state::{self, OAuthStateRecord, STATE_TTL_SECONDS};
use crate::outbox;
use crate::providers::{ProviderConfig, ProviderError, TokenKind, TokenSet};
use crate::ratelimit::ClientAddress;
use crate::request_tx::WorkspaceRequest;
use crate::state::AppState;
use crate::syncpoints::{self, SyncHooks};
use crate::tokens::{seal_one, seal_token_set};
use crate::vault::{TokenBinding, TokenField};

mod authorize;
mod grant;
pub use authorize::{__path_authorize, authorize, AuthorizeResponse};
use grant::complete_flow;

/// The callback's query parameters. No `Debug`: they are credentials.
pub struct CallbackParams {
    state: SecretString,
    code: Option<SecretString>,
    error: Option<String>,
    iss: Option<String>,
    /// The provider account the grant is for, as QuickBooks names it (`realmId`).
    account: Option<String>,
}

/// Parses the callback's raw query (outside input: public so the fuzz targets reach it). Refuses a
/// query without `state`, or without both `code` and `error`, or with one of the parameters read
/// here more than once (RFC 6749 §3.1: a parameter is never sent twice, and which copy a reader
/// takes is where a polluted query hides a second code or state), with 400 `BAD_REQUEST`.
pub fn callback_params(raw: Option<&str>) -> Result<CallbackParams, ApiError> {
    const READ: [&str; 5] = ["state", "code", "error", "iss", "realmId"];
    let (mut state, mut code, mut error, mut iss, mut account) = (None, None, None, None, None);
    let mut seen = [false; READ.len()];
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if let Some(i) = READ.iter().position(|name| *name == k) {
            if std::mem::replace(&mut seen[i], true) {
                return Err(ParseError::new(READ[i], "given more than once").into());
            }
        }
        match k.as_ref() {
            "state" => state = Some(SecretString::from(v.into_owned())),
            "code" => code = Some(SecretString::from(v.into_owned())),
            // Only the provider's error *code* is kept, and only if it looks like one.
            "error" => error = Some(crate::providers::provider_error_code(&v)),
            "iss" => iss = Some(v.into_owned()),
            "realmId" => account = Some(v.into_owned()),
            _ => {}
        }
    }
    let state = state.ok_or_else(|| ParseError::new("state", "missing from the query"))?;
    if code.is_none() && error.is_none() {
        return Err(ParseError::new("code", "missing from the query").into());
    }
    Ok(CallbackParams {
        state,
        code,
        error,
        iss,
        account,
    })
}

/// Completes a connection: the provider redirected the user's browser here.
#[utoipa::path(
    get,
    path = "/v1/oauth/{provider}/callback",
    params(
        ("provider" = Provider, Path, description = "qbo, gmail, slack or box"),
        ("state" = String, Query, description = "The state from the authorization URL (this and the other parameters below once each: one given twice is a 400 BAD_REQUEST)"),
        ("code" = Option<String>, Query, description = "The authorization code (absent when the provider sends `error`)"),
        ("error" = Option<String>, Query, description = "The provider's OAuth error code instead of a code (`access_denied`: the user declined)"),
        ("iss" = Option<String>, Query, description = "The provider's issuer (RFC 9207): checked whenever present, required for providers that always send it"),
        ("realmId" = Option<String>, Query, description = "QuickBooks Online: the company the user authorized (digits); required from that provider"),
    ),
    responses(
        (status = 200, description = "Connected", body = ConnectionView),
    ),
    security(("bearer" = [])),
    tag = "oauth"
)]
pub async fn callback(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    address: ClientAddress,
    identity: Identity,
    ProviderPath(provider): ProviderPath,
    RawQuery(query): RawQuery,
) -> Result<Json<ConnectionView>, ApiError> {
    // Remembered by this replica once read (a workspace request of the caller's tells it): a
    // user's row keeps its tenant. It names a scope, nothing more: the write-ahead's transaction,
    // scoped to it, finds the connection row only in it, and the membership, or answers 404.
    let mut caller_tenant = state
        .user_tenants
        .tenant_of(&state.db, identity.user_id)
        .await?
        .ok_or(ApiError::Unauthenticated("unknown user"))?;
    let params = match callback_params(query.as_deref()) {
        Ok(params) => params,
        Err(malformed) => {
            // Refused before it names a state: charged to the address alone.
            state.limiter.admit_address("callback", &address).await?;
            return Err(malformed);
        }
    };
    // Every look-up is paid for before it is made, in one atomic step with the check: concurrent
    // guesses cannot all pass a check that none of them has been charged for yet. The address,
    // the caller's reservation and then the tenant's budget, in one round trip: the caller's own
    // budget before the tenant's, which the tenant's admins need for their callbacks (charged
    // first, the tenant's went to whoever sent the most guesses).
    let user = identity.user_id.to_string();
    state
        .limiter
        .admit_callback(&address, &user, &caller_tenant.to_string())
        .await?;
    let hooks = state.sync_points.as_ref();
    if let Err(parked_too_long) =
        SyncHooks::reach(hooks, &ctx, syncpoints::OAUTH_CALLBACK_ADMITTED).await
    {
        // Nothing was asked of the state: the reservation goes back, as on a Redis failure.
        state.limiter.refund_failed_state(&user).await;
        return Err(parked_too_long.into());
    }
    // 1. Consume the state: after this line it is gone, whatever happens below.
    let consumed = match state.states.consume(params.state.expose_secret()).await {
        Ok(consumed) => consumed,
        Err(e) => {
            // Nothing was learnt about the state (Redis failed): the guess is not charged.
            state.limiter.refund_failed_state(&user).await;
            if e.outcome_unknown() {
                // The state may be spent (Redis may still run the command sent before the link
                // failed): a retry of this callback could only be OAUTH_STATE_INVALID, so the
                // answer says to start again, as after any interruption once the state is spent.
                tracing::warn!(request_id = %crate::context::current_request_id(), cause = %e, "a callback's state consumption failed after it was sent");
                return Err(ApiError::AuthorizationInterrupted);
            }
            return Err(e.into());
        }
    };
    let record = match consumed {
        Some(record)
            if state.clock.now() - record.created_at
                <= chrono::Duration::seconds(STATE_TTL_SECONDS) =>
        {
            record
        }
        _ => return Err(ApiError::OAuthStateInvalid),
    };
    // A state that exists was no guess: give the reservation back.
    state.limiter.refund_failed_state(&user).await;
    SyncHooks::reach(hooks, &ctx, syncpoints::OAUTH_CALLBACK_STATE_CONSUMED).await?;

    // 2. The state must have been issued to this user, in this tenant, for this provider.
    let binds = |tenant: TenantId| {
        let same_user =
            record.user_id == identity.user_id || flaws::active(Flaw::NoCallbackUserCheck);
        let same_party = same_user && record.tenant_id == tenant;
        let same_party = same_party || flaws::active(Flaw::NoCallbackTenantCheck);
        same_party && record.provider == provider
    };
    let mut bound = binds(caller_tenant);
    if !bound {
        // A state is not refused, nor the refusal audited, on a remembered tenant: it is read
        // again. (A user's row cannot change tenant, but an id deleted and provisioned again in
        // another tenant could.) A user gone since keeps the remembered one, for the audit.
        // The state is spent from here on: a busy database is an interrupted authorization.
        if let Some(fresh) = state
            .user_tenants
            .read_again(&state.db, identity.user_id)
            .await
            .map_err(|e| interrupted(e.into()))?
        {
            caller_tenant = fresh;
            bound = binds(caller_tenant);
        }
    }
    if !bound {
        // Both tenants learn of it: the caller's without the other tenant's ids, the state
        // owner's with who presented their state.
        let mut rows = vec![(
            caller_tenant,
            None,
            json!({ "provider": provider.as_str(), "state_provider": record.provider.as_str() }),
        )];
        if record.tenant_id != caller_tenant {
            rows.push((
                record.tenant_id,
                Some(record.workspace_id),
                json!({
                    "provider": provider.as_str(),
                    "state_provider": record.provider.as_str(),
                    "presented_by_tenant_id": caller_tenant,
                    "presented_by_user_id": identity.user_id,
                }),
            ));
        }
        for (tenant, workspace, detail) in rows {
            // Each row in its own tenant's transaction (row-level security); see `MemberOfRecord`
            // for why the callback opens its transactions with `db::begin` itself.
            let mut tx = db::begin(&state.db, ctx.actor.as_ref(), tenant)
                .await
                .map_err(|e| interrupted(e.into()))?;
            let event = AuditEvent {
                tenant_id: Some(tenant),
                workspace_id: workspace,
                actor_user_id: Some(identity.user_id),
                action: "oauth.callback",
                outcome: "csrf_suspected",
                detail,
            };
            let result = audit::record(&mut tx, &ctx, event)
                .await
                .map_err(ApiError::from);
            db::finish(tx, result).await.map_err(interrupted)?;
        }
        tracing::warn!(
            provider = provider.as_str(),
            "OAuth callback with a state issued to someone else"
        );
        return Err(ApiError::OAuthStateMismatch);
    }
    // Row-level security is scoped to the caller's own tenant (equal to the state's, unless a
    // seeded flaw skipped the check above — then the database still refuses the other tenant).
    let member = MemberOfRecord {
        tenant_id: caller_tenant,
        user_id: identity.user_id,
    };

    // 3–4 (from the membership check on) run in their own task: a client that disconnects mid-way (the handler's future is then
    // dropped) must not cancel between the code exchange and storing — or revoking — its result.
    let flaws_of_request = state.flaws.clone();
    let tasks = state.tasks.clone();
    let user_tenants = state.user_tenants.clone();
    let flow = complete_flow(state, ctx, record, params, member, provider);
    let caller = identity.user_id;
    let task = tasks.spawn(crate::context::within_request(async move {
        let finished = flaws::scope(&flaws_of_request, flow).await;
        if matches!(finished, Err(ApiError::NotFound)) {
            // Not a member where the tenant scoped it: the next callback reads the tenant again.
            user_tenants.forget(caller);
        }
        finished
    }));
    let finished = task
        .await
        .map_err(|e| interrupted(ApiError::task_failed("callback", e)))?;
    // The state is spent: "busy, retry" would only lead to OAUTH_STATE_INVALID.
    finished.map(Json).map_err(interrupted)
}

/// After its state is consumed a callback cannot be retried: "busy, come back later" (a lock or
/// pool timeout) would only lead to OAUTH_STATE_INVALID, so it is answered as an interrupted
/// authorization — start again.
fn interrupted(error: ApiError) -> ApiError {
    match error {
        // The provider's limit has an end, but this authorization's state does not outlive it:
        // the answer says to start again (the audit row says why: `rate_limited`), not to retry.
        ApiError::Provider(ProviderError::RateLimited { .. }) => {
            tracing::warn!(request_id = %crate::context::current_request_id(), "a callback's code exchange was rate limited by the provider after its state was spent");
            ApiError::AuthorizationInterrupted
        }
        ApiError::LockTimeout | ApiError::DatabaseUnavailable | ApiError::Stopping => {
            // The answer no longer says which: the log does.
            tracing::warn!(request_id = %crate::context::current_request_id(), cause = %error, "a callback was interrupted after its state was spent");
            ApiError::AuthorizationInterrupted
        }
        other => other,
    }
}

/// A provider answer that gives no grant (an error, a refused exchange, a callback missing what
/// the dialect requires): the state stays spent, the connection settles back, audited; the
/// caller learns why.
async fn refuse_answer(
    state: &AppState,
    ctx: &RequestContext,
    record: &OAuthStateRecord,
    member: &MemberOfRecord,
    params: &CallbackParams,
    why: Refusal,
) -> Result<ConnectionView, ApiError> {
    state.states.finish(params.state.expose_secret()).await?;
    state
        .states
        .after_failure(params.state.expose_secret(), record)
        .await?;
    settle_failed_authorization(state, ctx, record, member, &why).await?;
    match why {
        Refusal::IssuerMismatch => {
            tracing::warn!(
                provider = record.provider.as_str(),
                "OAuth callback whose issuer is not the provider's (possible mix-up)"
            );
            Err(ApiError::IssuerMismatch)
        }
        // The user said no at the provider: not a provider failure.
        Refusal::Provider(ProviderError::Rejected { error, .. }) if error == "access_denied" => {
            Err(ApiError::ConsentDenied)
        }
        Refusal::ScopesNotGranted(_) => Err(ApiError::ScopeNotGranted),
        Refusal::Provider(error) => Err(ApiError::Provider(error)),
    }
}

/// The callback's caller, in place of a [`WorkspaceRequest`]: the callback's path names no
/// workspace, so there is no membership to extract before the handler runs. The workspace comes
/// from the consumed state and the tenant is the caller's own (checked against the state's), so
/// the callback opens its transactions with [`db::begin`] for that tenant, tagged with the
/// request's actor — what [`WorkspaceRequest::begin`] does for the other routes.
struct MemberOfRecord {
    tenant_id: TenantId,
    user_id: UserId,
}

/// Why a callback gave no grant.
enum Refusal {
    /// The provider refused, failed, or answered outside its protocol.
    Provider(ProviderError),
    /// The answer's `iss` is not the provider's (RFC 9207).
    IssuerMismatch,
    /// The grant lacked these required scopes; it was given back.
    ScopesNotGranted(Vec<String>),
}

/// After a callback that gave no grant: back to the settled status (if still `PENDING`), audited.
async fn settle_failed_authorization(
    state: &AppState,
    ctx: &RequestContext,
    record: &OAuthStateRecord,
    member: &MemberOfRecord,
    why: &Refusal,
) -> Result<(), ApiError> {
    let (outcome_name, code) = match why {
        Refusal::Provider(error) => ("provider_error", error_code(error)),
        Refusal::IssuerMismatch => ("issuer_mismatch", "iss".to_owned()),
        Refusal::ScopesNotGranted(missing) => ("scope_not_granted", missing.join(" ")),
    };
    let mut tx = db::begin(&state.db, ctx.actor.as_ref(), member.tenant_id).await?;
    let result = async {
        let lock = locks::lock_for_oauth(&mut tx, record.workspace_id).await?;
        let connection = lifecycle::lock_connection(&mut tx, &lock, record.provider).await?;
        let event = |status_now: ConnectionStatus| AuditEvent {
            tenant_id: Some(member.tenant_id),
            workspace_id: Some(record.workspace_id),
            actor_user_id: Some(member.user_id),
            action: "oauth.callback",
            outcome: outcome_name,
            detail: json!({
                "provider": record.provider.as_str(),
                "error": code,
                "status_now": status_now.as_str(),
            }),
        };
        // Only the flow the connection waits for may send it back; a stale flow changes nothing.
        if connection.status == ConnectionStatus::Pending
            && connection.pending_flow == record.flow_id
        {
            let audit = lifecycle::Audit { ctx, event };
            lifecycle::apply(
                &mut tx,
                &lock,
                &connection,
                Transition::FailAuthorization,
                None,
                audit,
            )
            .await?;
        } else {
            audit::record(&mut tx, ctx, event(connection.status)).await?;
        }
        Ok(())
    }
    .await;
    db::finish(tx, result).await
}

/// A provider error's code for audit rows: never a message that could echo a token.
pub fn error_code(error: &ProviderError) -> String {
    match error {
        ProviderError::NotConfigured(_) => "not_configured".into(),
        ProviderError::InvalidGrant => "invalid_grant".into(),
        ProviderError::Rejected { error, status } if error.is_empty() => format!("http_{status}"),
        ProviderError::Rejected { error, .. } => error.clone(),
        ProviderError::Unavailable(_) => "unavailable".into(),
        ProviderError::RateLimited { .. } => "rate_limited".into(),
        ProviderError::AccessDenied => "resource_access_denied".into(),
        ProviderError::TokenRefused => "invalid_token".into(),
        ProviderError::Protocol(_) => "protocol_error".into(),
    }
}

/// Whether a callback's `iss` (RFC 9207) is the authorization server's the flow was started with:
/// an `iss` sent must equal the issuer recorded in the state; none is accepted unless the
/// provider's configuration says its server always sends one. A provider no longer configured
/// (a restart, replicas configured apart) does not make a missing `iss` a mix-up: its exchange
/// fails below and settles like any refused one.
fn issuer_ok(iss: Option<&str>, recorded: &str, config: Option<&ProviderConfig>) -> bool {
    match iss {
        Some(iss) => iss == recorded,
        None => config.is_none_or(|c| !c.requires_iss),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callback_s_issuer_is_the_recorded_one_or_absent_where_allowed() {
        // Built by the providers file's parser, the one constructor; the secret's variable only
        // has to be set (PATH is), it is never used here.
        let config = |requires_iss| {
            let mut config = crate::providers::ProvidersConfig::from_json(
                r#"{"gmail":{"dialect":"standard","issuer":"https://i","authorize_url":"https://i/a","token_url":"https://i/t","revoke_url":"https://i/r","resource_url":"https://i/d","client_id":"c","client_secret_env":"PATH","scopes":["s"],"redirect_uri":"https://h/cb"}}"#,
                std::time::Duration::from_secs(1),
            )
            .unwrap()
            .providers
            .remove(&Provider::Gmail)
            .unwrap();
            config.requires_iss = requires_iss;
            config
        };
        let (strict, lenient) = (config(true), config(false));
        assert!(issuer_ok(Some("https://i"), "https://i", Some(&strict)));
        assert!(!issuer_ok(
            Some("https://evil"),
            "https://i",
            Some(&lenient)
        ));
        assert!(!issuer_ok(Some("https://evil"), "https://i", None));
        assert!(!issuer_ok(None, "https://i", Some(&strict)));
        assert!(issuer_ok(None, "https://i", Some(&lenient)));
        // Not configured any more: not a mix-up (the exchange fails instead).
        assert!(issuer_ok(None, "https://i", None));
    }

    #[test]
    fn a_callback_parameter_given_twice_is_refused() {
        assert!(callback_params(Some("state=s&code=c&iss=https%3A%2F%2Fi&realmId=1")).is_ok());
        for (query, field) in [
            ("state=s&code=c&state=t", "state"),
            ("state=s&code=c&code=d", "code"),
            ("state=s&error=access_denied&error=x", "error"),
            ("state=s&code=c&iss=a&iss=b", "iss"),
            ("state=s&code=c&realmId=1&realmId=2", "realmId"),
        ] {
            match callback_params(Some(query)) {
                Err(ApiError::BadRequest(refused)) => assert_eq!(refused.field, field, "{query}"),
                Err(other) => panic!("{query}: {other}"),
                Ok(_) => panic!("{query}: accepted"),
            }
        }
        // Parameters it does not read may repeat.
        assert!(callback_params(Some("state=s&code=c&scope=a&scope=b")).is_ok());
    }
}
