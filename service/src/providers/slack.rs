//! Slack, OAuth v2 (facts and sources: `docs/PROVIDER-DIALECTS.md`).
//!
//! - Client authentication: HTTP Basic, which Slack prefers (it takes body credentials too).
//! - Every Web API answer, `oauth.v2.access` included, carries `ok`; a failure is `ok: false`
//!   with an `error` code, and Slack sends it with HTTP 200 — so the status alone says nothing.
//! - Scopes are comma-separated, in the authorization request and in the token answer.
//! - With token rotation, access tokens last 12 hours and each refresh returns a new refresh
//!   token and ends the old one.
//! - Revocation is `auth.revoke`, authenticated by the token being revoked as a bearer token:
//!   so it takes an access token, and a refresh token is first exchanged for a fresh one (which
//!   also works when the stored access token has expired). `invalid_auth`/`token_revoked` there
//!   means it is already dead.
//! - Documents are the workspace's channels (`conversations.list`), paged with
//!   `response_metadata.next_cursor` (empty on the last page).

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::dialect::{
    error_code, oauth_error, oauth_token_answer, status_only, under, unreadable, ClientAuth,
    Dialect, Page,
};
use super::{ProviderConfig, ProviderError, RemoteDocument, TokenSet};

/// Slack.
pub struct Slack;

/// Slack's error codes that mean the token presented is not (or no longer) valid.
const TOKEN_DEAD: [&str; 5] = [
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
];

/// Slack's `oauth.v2.access` error codes that mean the code or refresh token is spent.
const GRANT_DEAD: [&str; 3] = ["invalid_code", "code_already_used", "invalid_refresh_token"];

#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct Channels {
    #[serde(default)]
    channels: Vec<Channel>,
    #[serde(default)]
    response_metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Channel {
    id: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    next_cursor: String,
}

/// A scope list in `separator`'s spelling, as RFC 6749 spells it (space-separated).
fn spaced(scope: &str, separator: char) -> String {
    scope
        .split(separator)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn envelope(body: &[u8], what: &str) -> Result<Envelope, ProviderError> {
    serde_json::from_slice(body).map_err(|_| unreadable(what))
}

impl Dialect for Slack {
    fn client_auth(&self) -> ClientAuth {
        ClientAuth::ClientSecretBasic
    }

    fn sends_iss(&self) -> bool {
        false
    }

    fn scope_separator(&self) -> char {
        ','
    }

    fn token_answer(&self, status: StatusCode, body: &[u8]) -> Result<TokenSet, ProviderError> {
        if !status.is_success() {
            return oauth_token_answer(status, body);
        }
        let answer = envelope(body, "oauth.v2.access")?;
        if !answer.ok {
            if GRANT_DEAD.contains(&answer.error.as_str()) {
                return Err(ProviderError::InvalidGrant);
            }
            if answer.error == "ratelimited" {
                return Err(ProviderError::RateLimited { retry_after: None });
            }
            return oauth_error(status, &answer.error);
        }
        let mut tokens = oauth_token_answer(status, body)?;
        tokens.scope = tokens.scope.map(|s| spaced(&s, self.scope_separator()));
        Ok(tokens)
    }

    fn revocation(
        &self,
        http: &reqwest::Client,
        c: &ProviderConfig,
        token: &SecretString,
    ) -> reqwest::RequestBuilder {
        http.post(c.revoke_url.clone())
            .bearer_auth(token.expose_secret())
    }

    fn revocation_answer(&self, status: StatusCode, body: &[u8]) -> Result<(), ProviderError> {
        status_only(status)?;
        let answer = envelope(body, "auth.revoke")?;
        // `not_authed` says no token reached Slack: Harbor's own fault, not a dead token, and
        // counting it as done would lose the revocation. (`invalid_auth` is also Slack's answer
        // to a request from an address outside a token's allow-list: a deployment that sets one
        // must let Harbor's egress through, or revocations are taken as done.)
        if answer.error == "not_authed" {
            return Err(ProviderError::Protocol(
                "auth.revoke answered not_authed: the token was not sent".into(),
            ));
        }
        if answer.ok || TOKEN_DEAD.contains(&answer.error.as_str()) {
            return Ok(());
        }
        if answer.error == "ratelimited" {
            return Err(ProviderError::RateLimited { retry_after: None });
        }
        Err(ProviderError::Rejected {
            status: status.as_u16(),
            error: error_code(&answer.error),
        })
    }

    fn revocation_needs_access_token(&self) -> bool {
        true
    }

    /// Slack recommends no more than 200.
    fn page_size(&self) -> usize {
        200
    }

    fn documents_request(
        &self,
        http: &reqwest::Client,
        c: &ProviderConfig,
        access: &SecretString,
        _account: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let url = under(&c.resource_url, "conversations.list")?;
        let mut request = http
            .get(url)
            .query(&[("limit", self.page_size().to_string())])
            .bearer_auth(access.expose_secret());
        if let Some(cursor) = cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        Ok(request)
    }

    fn documents_answer(&self, _cursor: Option<&str>, body: &[u8]) -> Result<Page, ProviderError> {
        let answer = envelope(body, "conversations.list")?;
        if !answer.ok {
            if TOKEN_DEAD.contains(&answer.error.as_str()) {
                return Err(ProviderError::TokenRefused);
            }
            if answer.error == "ratelimited" {
                return Err(ProviderError::RateLimited { retry_after: None });
            }
            // The token is good, but not for this method (a scope the app lost).
            if answer.error == "missing_scope" {
                return Err(ProviderError::AccessDenied);
            }
            return Err(ProviderError::Rejected {
                status: 200,
                error: error_code(&answer.error),
            });
        }
        let list: Channels =
            serde_json::from_slice(body).map_err(|_| unreadable("conversations.list"))?;
        Ok(Page {
            documents: list
                .channels
                .into_iter()
                .map(|c| RemoteDocument {
                    id: c.id,
                    title: c.name,
                })
                .collect(),
            next: list
                .response_metadata
                .map(|m| m.next_cursor)
                .filter(|c| !c.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_no_token_reached_is_not_taken_as_done() {
        let answer = |body: &str| Slack.revocation_answer(StatusCode::OK, body.as_bytes());
        assert!(answer(r#"{"ok":true,"revoked":true}"#).is_ok());
        assert!(answer(r#"{"ok":false,"error":"token_revoked"}"#).is_ok());
        assert!(matches!(
            answer(r#"{"ok":false,"error":"not_authed"}"#),
            Err(ProviderError::Protocol(_))
        ));
        assert!(matches!(
            answer(r#"{"ok":false,"error":"ratelimited"}"#),
            Err(ProviderError::RateLimited { .. })
        ));
    }
}
