//! `POST /v1/workspaces/{workspace_id}/connections/{provider}/authorize`: the caller known to be
//! the workspace's owner or admin (as this replica last read them, or read from the pool now),
//! Redis asked (the rate limit, the state and PKCE verifier), then one transaction that checks
//! the membership and role (again, where they were read now) and, under the workspace lock,
//! writes — nothing waits on Redis while a pooled connection or the
//! lock is held. Split from [`super`], which holds the callback.

use super::*;

/// Where to send the user's browser. No `Debug`: the URL carries the flow's state, a secret
/// until the callback consumes it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"authorization_url": "https://appcenter.intuit.com/connect/oauth2?response_type=code&client_id=harbor&redirect_uri=https%%3A%%2F%%2Fharbor.example%%2Fv1%%2Foauth%%2Fqbo%%2Fcallback&scope=com.intuit.quickbooks.accounting&state=J0v1pI5yTzX3u6F7hQk2mN8bR4cW9eA1sD0gH5jK7lL&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256", "expires_in": 600, "status": "PENDING"}))]
pub struct AuthorizeResponse {
    /// The provider's authorization URL, with state and PKCE challenge.
    pub authorization_url: String,
    /// Seconds until the state expires.
    pub expires_in: i64,
    /// The connection's status now (`PENDING`).
    pub status: ConnectionStatus,
}

/// Starts connecting the workspace to a provider. The workspace's owner or admins may start it.
#[utoipa::path(
    post,
    path = "/v1/workspaces/{workspace_id}/connections/{provider}/authorize",
    params(
        ("workspace_id" = uuid::Uuid, Path, description = "The workspace"),
        ("provider" = Provider, Path, description = "qbo, gmail, slack or box"),
    ),
    responses(
        (status = 200, description = "Authorization started", body = AuthorizeResponse),
    ),
    security(("bearer" = [])),
    tag = "oauth"
)]
pub async fn authorize(
    State(state): State<AppState>,
    address: ClientAddress,
    request: WorkspaceRequest,
    ProviderPath(provider): ProviderPath,
) -> Result<Json<AuthorizeResponse>, ApiError> {
    // The state is bound to the caller's tenant and goes to Redis before the transaction begins,
    // after the caller's rate limit is charged — so the tenant is needed first, and only for a
    // caller allowed to connect: a plain member or an outsider must not spend the budget of the
    // tenant's admins. Where this replica last read the caller as the workspace's owner or admin
    // (any earlier request of theirs to the workspace told it), that read is taken as the cue —
    // once: it is taken out of the replica's memory, and only a transaction that finds the caller
    // an admin again puts it back, so a caller demoted or removed since spends at most one charge
    // however many authorizes they send at once — and the transaction checks the membership, the
    // role and the tenant before it writes; otherwise the membership is read from the pool
    // first. (One transaction opened on the
    // membership and asking Redis before its workspace lock would save that read too, but would
    // hold a pooled connection, and the hold on the membership, for as long as Redis takes to answer: a
    // stalled Redis would then drain the pool every route shares.)
    let administered = request.take_administered_tenant();
    // The seeded flaw reads the membership in a transaction it keeps open while Redis is asked.
    let across_redis = if flaws::active(Flaw::AuthorizeTransactionAcrossRedis) {
        Some(request.begin_as_admin().await?)
    } else {
        None
    };
    let tenant = match (&across_redis, administered) {
        (Some((_, member)), _) => member.tenant_id,
        (None, Some(tenant)) => tenant,
        (None, None) => {
            let member = request.member_before_transaction().await?;
            // Connecting a workspace's provider account needs the role disconnecting it needs:
            // otherwise any member could replace an admin's in-flight authorization with their
            // own account. (The transaction checks it again, on the row it locks.)
            member.require_admin()?;
            member.tenant_id
        }
    };
    // Redis is asked (the rate limit, then the state) before the transaction: nothing waits on
    // Redis (or any peer but PostgreSQL) while a pooled connection or the workspace lock is held.
    // Without Redis the request fails here, with nothing written (fail closed: no PENDING
    // connection waiting for a state that does not exist).
    let issued = issue_state(&state, &address, &request, tenant, provider).await;
    drop(across_redis);
    let issued = issued?;
    let status = match start_flow(&state, &request, provider, tenant, issued.flow_id).await {
        Ok(status) => status,
        Err(error) => {
            // Nothing was committed, so the state leads nowhere; remove it now (after the lock
            // is gone) rather than leave it to its TTL. Its holder never saw it anyway. (Best
            // effort: if Redis fails here, the state expires with its TTL, unused.)
            if let Err(e) = state.states.discard(issued.state.expose_secret()).await {
                tracing::warn!(error = %e, "could not discard the state of a failed authorization; it expires with its TTL");
            }
            return Err(error);
        }
    };
    let config = issued.config;
    let mut url = config.authorize_url.clone();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &config.client_id)
        .append_pair("redirect_uri", config.redirect_uri.as_str())
        .append_pair(
            "scope",
            &config
                .scopes
                .join(&config.dialect().scope_separator().to_string()),
        )
        .append_pair("state", issued.state.expose_secret());
    // The dialect's own parameters, unless the configured authorization URL already sets them.
    // (Read only for a dialect that has some: nothing is copied for the others.)
    for (name, value) in config.dialect().authorize_parameters() {
        if !config.authorize_url.query_pairs().any(|(k, _)| k == *name) {
            url.query_pairs_mut().append_pair(name, value);
        }
    }
    if !flaws::active(Flaw::NoPkce) {
        url.query_pairs_mut()
            .append_pair("code_challenge", &issued.challenge)
            .append_pair("code_challenge_method", "S256");
    }
    Ok(Json(AuthorizeResponse {
        authorization_url: url.to_string(),
        expires_in: STATE_TTL_SECONDS,
        status,
    }))
}

/// What authorize stored in Redis for the flow it starts.
struct IssuedState {
    /// The flow the connection will wait for.
    flow_id: uuid::Uuid,
    /// The state, as the authorization URL carries it.
    state: SecretString,
    /// The PKCE challenge of the verifier stored with it.
    challenge: String,
    /// The provider's configuration the state was issued under.
    config: crate::providers::ProviderConfig,
}

/// Charges the caller's authorize rate limit, then stores a state and a PKCE verifier bound to
/// the caller's tenant, the workspace, the caller and the provider.
async fn issue_state(
    state: &AppState,
    address: &ClientAddress,
    request: &WorkspaceRequest,
    tenant: TenantId,
    provider: Provider,
) -> Result<IssuedState, ApiError> {
    state
        .limiter
        .charge("authorize", address, &tenant.to_string())
        .await?;
    let config = state.providers.config(provider)?.clone();
    let flow_id = uuid::Uuid::new_v4();
    let verifier = oauth_state::random_token();
    let challenge = oauth_state::pkce_challenge(&verifier);
    let record = OAuthStateRecord {
        tenant_id: tenant,
        workspace_id: request.workspace_id,
        user_id: request.caller,
        provider,
        issuer: config.issuer.clone(),
        redirect_uri: config.redirect_uri.to_string(),
        verifier,
        created_at: state.clock.now(),
        flow_id: Some(flow_id),
    };
    let state_value = state.states.issue(&record).await?;
    Ok(IssuedState {
        flow_id,
        state: state_value,
        challenge,
        config,
    })
}

/// Authorize's transaction: the caller must be an owner or admin of the workspace in `tenant`,
/// the one its state is bound to; then, under the workspace lock and the row lock, the connection
/// becomes `PENDING` and waits for `flow_id`; audited.
async fn start_flow(
    state: &AppState,
    request: &WorkspaceRequest,
    provider: Provider,
    tenant: TenantId,
    flow_id: uuid::Uuid,
) -> Result<ConnectionStatus, ApiError> {
    let ctx = &request.ctx;
    let hooks = state.sync_points.as_ref();
    // The workspace lock and the row lock, with the `locked` point between them where the
    // harness parks the request (`WorkspaceRequest::begin_locked_with_row`).
    let locked_at = (hooks, syncpoints::OAUTH_AUTHORIZE_LOCKED);
    let (mut tx, member, lock, connection) = request
        .begin_locked_with_row(true, LockFor::OAuth, provider, locked_at)
        .await?;
    let result = async {
        // The state is bound to `tenant`: it must be the membership's. (A workspace's tenant
        // never changes, so a remembered one cannot differ; this keeps the binding a check. It
        // runs under the locks, taken with the membership: a refusal here, which cannot happen,
        // would hold them until its rollback.)
        if member.tenant_id != tenant {
            return Err(ApiError::NotFound);
        }
        let audit = lifecycle::Audit {
            ctx,
            event: |to: ConnectionStatus| AuditEvent {
                tenant_id: Some(member.tenant_id),
                workspace_id: Some(member.workspace_id),
                actor_user_id: Some(member.user_id),
                action: "oauth.authorize",
                outcome: to.as_str(),
                detail: json!({ "provider": provider.as_str(), "from": connection.status.as_str() }),
            },
        };
        let (status, _) =
            lifecycle::begin_flow(&mut tx, &lock, &connection, flow_id, audit).await?;
        Ok(status)
    }
    .await;
    db::finish(tx, result).await
}
