//! The OAuth flow as a fixture, through any [`Target`]: authorize on replica 0, consent at the
//! provider, deliver the callback.

use harbor_service::domain::{Provider, UserId, WorkspaceId};

use super::Target;
use crate::identity::TokenKind;

/// `user` connects `provider` to `workspace` through the real OAuth flow on replica 0 — authorize,
/// consent at the provider, callback — and it must answer 200 (a fixture, not a check).
pub async fn connect(
    target: &dyn Target,
    user: UserId,
    workspace: WorkspaceId,
    provider: Provider,
) -> Result<(), String> {
    let consent = start_flow(target, user, workspace, provider).await?;
    complete_flow(target, user, provider, &consent).await
}

/// The first half of [`connect`]: authorize on replica 0 and consent at the provider; the
/// connection is then PENDING and the consent ready for its callback.
pub async fn start_flow(
    target: &dyn Target,
    user: UserId,
    workspace: WorkspaceId,
    provider: Provider,
) -> Result<crate::fake_provider::Consent, String> {
    start_flow_on(target, 0, user, workspace, provider).await
}

/// [`start_flow`] with the authorize sent to `replica`.
pub async fn start_flow_on(
    target: &dyn Target,
    replica: usize,
    user: UserId,
    workspace: WorkspaceId,
    provider: Provider,
) -> Result<crate::fake_provider::Consent, String> {
    let bearer = target.bearer(user, TokenKind::Valid);
    let (answer, consent) = target
        .client()
        .authorize_and_consent(replica, Some(&bearer), None, workspace, provider)
        .await
        .map_err(|e| e.to_string())?;
    consent.ok_or_else(|| format!("authorize answered {}: {}", answer.status, answer.body))?
}

/// The second half of [`connect`]: deliver `consent` to the callback on replica 0; it must
/// answer 200.
pub async fn complete_flow(
    target: &dyn Target,
    user: UserId,
    provider: Provider,
    consent: &crate::fake_provider::Consent,
) -> Result<(), String> {
    let bearer = target.bearer(user, TokenKind::Valid);
    let callback = target
        .client()
        .callback(provider, &consent.callback_query())
        .bearer(Some(&bearer))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if callback.status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "callback answered {}: {}",
            callback.status, callback.body
        ))
    }
}
