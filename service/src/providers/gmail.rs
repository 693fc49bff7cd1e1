//! Google, for the Gmail API (facts and sources: `docs/PROVIDER-DIALECTS.md`).
//!
//! - Client authentication: the credentials in the form body, as Google's web-server guide
//!   shows (its metadata lists Basic too).
//! - `iss` (RFC 9207): Google's discovery document publishes
//!   `authorization_response_iss_parameter_supported`, so a callback without it is refused; the
//!   issuer is `https://accounts.google.com` (legacy `accounts.google.com` is not accepted).
//! - A refresh token is issued only to an authorization request with `access_type=offline`;
//!   `prompt=consent` asks for it again where the account has consented to this client before
//!   (Google otherwise answers a repeated consent without one). Without a refresh token a Gmail
//!   connection would end with its first access token, an hour later.
//! - Refresh tokens do not rotate: a refresh answers without one and the stored one stays.
//! - Revocation: `POST https://oauth2.googleapis.com/revoke` with `token=` and no client
//!   authentication; a token that is already invalid answers 400 `invalid_token`, which for
//!   a revocation means done.
//! - The account: a grant asked with `openid` comes with an ID token whose `sub` names the Google
//!   account. All of an account's grants to one client are one consent: revoking any token of
//!   any of them ends them all — so a grant given up while another connection holds one of the
//!   same account is left to that connection's revocation (`outbox::record`).
//! - Documents are the mailbox's threads (`users/me/threads`: id and snippet), paged with
//!   `nextPageToken`.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::dialect::{error_code, status_only, under, unreadable, ClientAuth, Dialect, Page};
use super::{ProviderConfig, ProviderError, RemoteDocument, TokenSet};

/// Google (Gmail).
pub struct Gmail;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThreadList {
    /// Always present (0 for an empty mailbox): what tells a thread list from another body.
    #[allow(dead_code)]
    result_size_estimate: u64,
    #[serde(default)]
    threads: Vec<Thread>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct Thread {
    id: String,
    #[serde(default)]
    snippet: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
}

impl Dialect for Gmail {
    fn client_auth(&self) -> ClientAuth {
        ClientAuth::ClientSecretPost
    }

    fn authorize_parameters(&self) -> &'static [(&'static str, &'static str)] {
        &[("access_type", "offline"), ("prompt", "consent")]
    }

    fn account_of_answer(&self, tokens: &TokenSet, config: &ProviderConfig) -> Option<String> {
        account_of_id_token(tokens.id_token.as_ref()?, config)
    }

    fn one_consent_per_account(&self) -> bool {
        true
    }

    fn revocation(
        &self,
        http: &reqwest::Client,
        c: &ProviderConfig,
        token: &SecretString,
    ) -> reqwest::RequestBuilder {
        http.post(c.revoke_url.clone())
            .form(&[("token", token.expose_secret())])
    }

    fn revocation_answer(
        &self,
        status: reqwest::StatusCode,
        body: &[u8],
    ) -> Result<(), ProviderError> {
        if status == reqwest::StatusCode::BAD_REQUEST {
            let error = serde_json::from_slice::<ErrorBody>(body)
                .map(|b| b.error)
                .unwrap_or_default();
            if error == "invalid_token" {
                return Ok(());
            }
            return Err(ProviderError::Rejected {
                status: 400,
                error: error_code(&error),
            });
        }
        status_only(status)
    }

    /// maxResults is at most 500.
    fn page_size(&self) -> usize {
        500
    }

    fn documents_request(
        &self,
        http: &reqwest::Client,
        c: &ProviderConfig,
        access: &SecretString,
        _account: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let url = under(&c.resource_url, "gmail/v1/users/me/threads")?;
        let mut request = http
            .get(url)
            .query(&[("maxResults", self.page_size().to_string())])
            .bearer_auth(access.expose_secret());
        if let Some(token) = cursor {
            request = request.query(&[("pageToken", token)]);
        }
        Ok(request)
    }

    /// Google answers 403 for its usage limits too (`rateLimitExceeded`, `userRateLimitExceeded`,
    /// `dailyLimitExceeded`, `quotaExceeded` in `error.errors[].reason`): those are a limit with
    /// an end, not a grant that lacks access (`insufficientPermissions`).
    fn forbidden(&self, body: &[u8]) -> ProviderError {
        const LIMITS: [&str; 4] = [
            "rateLimitExceeded",
            "userRateLimitExceeded",
            "dailyLimitExceeded",
            "quotaExceeded",
        ];
        let reasons: Vec<String> = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"]["errors"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e["reason"].as_str().map(str::to_owned))
            .collect();
        if reasons.iter().any(|r| LIMITS.contains(&r.as_str())) {
            ProviderError::RateLimited { retry_after: None }
        } else {
            ProviderError::AccessDenied
        }
    }

    fn documents_answer(&self, _cursor: Option<&str>, body: &[u8]) -> Result<Page, ProviderError> {
        let list: ThreadList = serde_json::from_slice(body).map_err(|_| unreadable("threads"))?;
        Ok(Page {
            documents: list
                .threads
                .into_iter()
                .map(|t| RemoteDocument {
                    id: t.id,
                    title: t.snippet,
                })
                .collect(),
            next: list.next_page_token.filter(|t| !t.is_empty()),
        })
    }
}

/// The claims of an ID token this dialect reads.
#[derive(Deserialize)]
struct IdClaims {
    iss: String,
    aud: Audience,
    sub: String,
}

/// `aud`: one client id, or several (OpenID Connect Core §2).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The account (`sub`) an ID token names, when it was issued by the configured issuer to this
/// client and `sub` is the digits Google uses (what `connections.provider_account` takes).
/// The signature is not checked: the token came straight from the token endpoint in the answer
/// that carries the grant, a channel OpenID Connect Core §3.1.3.7 lets a client rely on instead,
/// and it names only the account of that grant — nothing is authenticated with it. Anything
/// else is `None`: the account unknown, the grant revoked on its own like any other.
fn account_of_id_token(id_token: &SecretString, config: &ProviderConfig) -> Option<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let payload = id_token.expose_secret().split('.').nth(1)?;
    let claims: IdClaims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?)
            .ok()?;
    let for_this_client = match &claims.aud {
        Audience::One(aud) => *aud == config.client_id,
        Audience::Many(auds) => auds.contains(&config.client_id),
    };
    let digits =
        (1..=32).contains(&claims.sub.len()) && claims.sub.bytes().all(|b| b.is_ascii_digit());
    // Google's ID tokens name their issuer with or without the scheme (Google's OpenID Connect
    // reference says both occur).
    let issuer_ok = claims.iss == config.issuer
        || (config.issuer == "https://accounts.google.com" && claims.iss == "accounts.google.com");
    (issuer_ok && for_this_client && digits).then_some(claims.sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_is_the_id_tokens_sub_for_this_client_from_this_issuer() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        // Any variable that is set will do for the secret here; its value is not read.
        let file = serde_json::json!({"gmail": {
            "issuer": "https://accounts.google.com",
            "authorize_url": "https://accounts.google.com/o/oauth2/v2/auth",
            "token_url": "https://oauth2.googleapis.com/token",
            "revoke_url": "https://oauth2.googleapis.com/revoke",
            "resource_url": "https://gmail.googleapis.com/gmail/v1",
            "client_id": "harbor.apps.googleusercontent.com",
            "client_secret_env": "PATH",
            "redirect_uri": "https://harbor.example/v1/oauth/gmail/callback",
            "scopes": ["openid"]
        }});
        let providers = super::super::ProvidersConfig::from_json(
            &file.to_string(),
            std::time::Duration::from_secs(1),
        )
        .expect("a providers file");
        let config = &providers.providers[&crate::domain::Provider::Gmail];
        let token = |claims: serde_json::Value| {
            SecretString::from(format!(
                "eyJhbGciOiJSUzI1NiJ9.{}.c2lnbmF0dXJl",
                URL_SAFE_NO_PAD.encode(claims.to_string())
            ))
        };
        let google = "https://accounts.google.com";
        let client = "harbor.apps.googleusercontent.com";
        let read = |claims| account_of_id_token(&token(claims), config);
        let sub = "110169484474386276334";
        assert_eq!(
            read(serde_json::json!({"iss": google, "aud": client, "sub": sub})).as_deref(),
            Some(sub)
        );
        assert_eq!(
            read(serde_json::json!({"iss": google, "aud": ["other", client], "sub": sub}))
                .as_deref(),
            Some(sub)
        );
        // Another client's token, another issuer, a sub the column would refuse: unknown.
        assert_eq!(
            read(serde_json::json!({"iss": google, "aud": "other", "sub": sub})),
            None
        );
        assert_eq!(
            read(serde_json::json!({"iss": "accounts.google.com", "aud": client, "sub": sub}))
                .as_deref(),
            Some(sub)
        );
        assert_eq!(
            read(serde_json::json!({"iss": "https://issuer.example", "aud": client, "sub": sub})),
            None
        );
        assert_eq!(
            read(serde_json::json!({"iss": google, "aud": client, "sub": "alice@example.com"})),
            None
        );
        assert_eq!(
            read(serde_json::json!({"iss": google, "aud": client, "sub": "1".repeat(33)})),
            None
        );
        assert_eq!(
            account_of_id_token(&SecretString::from("not a jwt"), config),
            None
        );
    }

    #[test]
    fn a_403_for_a_usage_limit_is_a_limit_not_a_grant_without_access() {
        let limited = br#"{"error":{"code":403,"errors":[{"reason":"userRateLimitExceeded"}]}}"#;
        assert!(matches!(
            Gmail.forbidden(limited),
            ProviderError::RateLimited { .. }
        ));
        let denied = br#"{"error":{"code":403,"errors":[{"reason":"insufficientPermissions"}]}}"#;
        assert!(matches!(
            Gmail.forbidden(denied),
            ProviderError::AccessDenied
        ));
        assert!(matches!(
            Gmail.forbidden(b"not json"),
            ProviderError::AccessDenied
        ));
    }
}
