//! [`Dialect`]: what one provider does differently from plain OAuth 2.0, behind one trait, and
//! the helpers every dialect shares (client authentication, the RFC 6749 token answer).

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{box_com, gmail, quickbooks, slack, standard};
use super::{ProviderConfig, ProviderError, RemoteDocument, TokenSet};
use crate::domain::Provider;

/// How the client proves who it is at the token endpoint (RFC 6749 §2.3.1; the names are the
/// ones of RFC 8414 metadata and OIDC client registration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded client id and secret: the method every server must
    /// support, and the default.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// The dialects Harbor speaks, by the name a providers file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DialectName {
    /// OAuth 2.0 as the RFCs write it (any conforming authorization server).
    Standard,
    /// Intuit QuickBooks Online.
    Qbo,
    /// Google, for the Gmail API.
    Gmail,
    /// Slack (OAuth v2).
    Slack,
    /// Box.
    Box,
}

impl DialectName {
    /// The provider's own dialect.
    pub fn of(provider: Provider) -> Self {
        match provider {
            Provider::Qbo => Self::Qbo,
            Provider::Gmail => Self::Gmail,
            Provider::Slack => Self::Slack,
            Provider::Box => Self::Box,
        }
    }

    /// The dialect's implementation.
    pub fn get(self) -> &'static dyn Dialect {
        match self {
            Self::Standard => &standard::Standard,
            Self::Qbo => &quickbooks::QuickBooks,
            Self::Gmail => &gmail::Gmail,
            Self::Slack => &slack::Slack,
            Self::Box => &box_com::BoxCom,
        }
    }
}

/// One page of a resource listing.
#[derive(Debug, Default)]
pub struct Page {
    /// The documents on this page.
    pub documents: Vec<RemoteDocument>,
    /// The cursor of the next page (a token, an offset), or `None` on the last page.
    pub next: Option<String>,
}

/// What a provider does its own way. The defaults are the RFCs'.
pub trait Dialect: Send + Sync {
    /// The client authentication the provider documents for its token endpoint.
    fn client_auth(&self) -> ClientAuth {
        ClientAuth::ClientSecretBasic
    }

    /// Parameters the provider's authorization request needs beyond RFC 6749's, added to every
    /// authorization URL (Google issues a refresh token only to `access_type=offline`).
    fn authorize_parameters(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// How the provider separates scopes, in the authorization request and in the token
    /// answer's `scope` (RFC 6749 §3.3: a space; Slack: a comma).
    fn scope_separator(&self) -> char {
        ' '
    }

    /// Whether the provider sends `iss` with its authorization responses (RFC 9207).
    fn sends_iss(&self) -> bool {
        true
    }

    /// The callback parameter naming the provider account the grant is for, which the
    /// resource API then needs (QuickBooks's `realmId`); a callback without it is refused.
    fn account_parameter(&self) -> Option<&'static str> {
        None
    }

    /// The provider account a code exchange's answer names, when the dialect reads one from the
    /// answer itself (Google's ID token); the callback's parameter ([`Self::account_parameter`])
    /// comes first.
    fn account_of_answer(&self, _tokens: &TokenSet, _config: &ProviderConfig) -> Option<String> {
        None
    }

    /// Whether all of one provider account's grants to the client are one consent, so that
    /// revoking any token of any of them ends them all (Google). Then a grant given up while
    /// another connection holds one of the same account is not revoked: the last holder's
    /// revocation ends it (`outbox::record`).
    fn one_consent_per_account(&self) -> bool {
        false
    }

    /// Reads the token endpoint's answer (RFC 6749 §5.1 and §5.2); its `scope`, when present,
    /// comes back space-separated whatever the provider's separator.
    fn token_answer(&self, status: StatusCode, body: &[u8]) -> Result<TokenSet, ProviderError> {
        oauth_token_answer(status, body)
    }

    /// The revocation request for `token` (RFC 7009: `token=` in a form, client authenticated).
    fn revocation(
        &self,
        http: &reqwest::Client,
        c: &ProviderConfig,
        token: &SecretString,
    ) -> reqwest::RequestBuilder {
        let mut form = vec![("token", token.expose_secret())];
        authenticate(http.post(c.revoke_url.clone()), c, &mut form).form(&form)
    }

    /// Reads the revocation endpoint's answer: any 2xx is done (RFC 7009 §2.2).
    fn revocation_answer(&self, status: StatusCode, _body: &[u8]) -> Result<(), ProviderError> {
        status_only(status)
    }

    /// How many documents to ask for per page: the most the provider's API allows (or
    /// recommends).
    fn page_size(&self) -> usize {
        100
    }

    /// The request for one page of the documents (`cursor` is `None` for the first).
    fn documents_request(
        &self,
        http: &reqwest::Client,
        c: &ProviderConfig,
        access: &SecretString,
        account: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<reqwest::RequestBuilder, ProviderError>;

    /// Reads one successful (2xx) page of documents, asked for with `cursor`. A 2xx that says
    /// the token is bad (Slack) is [`ProviderError::TokenRefused`]; an unreadable one is
    /// [`ProviderError::Protocol`].
    fn documents_answer(&self, cursor: Option<&str>, body: &[u8]) -> Result<Page, ProviderError>;

    /// How long a refresh token lasts when the provider documents a fixed lifetime and its token
    /// answers do not say (`None`: unknown, or said in each answer).
    fn refresh_token_lifetime(&self) -> Option<std::time::Duration> {
        None
    }

    /// Whether revocation takes only an access token (Slack's `auth.revoke` is authenticated by
    /// the token it revokes, so it must be one the API accepts as a bearer): a refresh token is
    /// then first exchanged for a fresh access token, which is revoked.
    fn revocation_needs_access_token(&self) -> bool {
        false
    }

    /// What a resource's 403 means: by default that the grant does not reach what Harbor reads
    /// ([`ProviderError::AccessDenied`]); a provider that also says "slow down" with a 403 tells
    /// the two apart in its body.
    fn forbidden(&self, _body: &[u8]) -> ProviderError {
        ProviderError::AccessDenied
    }

    /// Whether the provider answers a bare 400 both to a refresh token it no longer knows (revoked,
    /// expired) and to a request it cannot read, so that a refused revocation of a refresh token
    /// must be told apart by refreshing it (Intuit: an empty 400 for a token already revoked).
    fn revocation_refusal_is_ambiguous(&self) -> bool {
        false
    }
}

/// Adds the client's credentials to a request to the token or revocation endpoint, the way
/// the provider is configured to take them. Basic encodes id and secret with
/// `application/x-www-form-urlencoded` first, as RFC 6749 §2.3.1 requires.
pub(super) fn authenticate<'a>(
    request: reqwest::RequestBuilder,
    c: &'a ProviderConfig,
    form: &mut Vec<(&'a str, &'a str)>,
) -> reqwest::RequestBuilder {
    let method = if crate::flaws::active(crate::flaws::Flaw::ClientSecretInBody) {
        // Seeded flaw: the credentials always go in the body, whatever the provider wants.
        ClientAuth::ClientSecretPost
    } else {
        c.client_auth
    };
    match method {
        ClientAuth::ClientSecretBasic => {
            let encode =
                |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            request.basic_auth(
                encode(&c.client_id),
                Some(encode(c.client_secret.expose_secret())),
            )
        }
        ClientAuth::ClientSecretPost => {
            form.push(("client_id", c.client_id.as_str()));
            form.push(("client_secret", c.client_secret.expose_secret()));
            request
        }
    }
}

/// The RFC 6749 token answer: tokens on 2xx, `{"error"}` otherwise.
pub(super) fn oauth_token_answer(
    status: StatusCode,
    body: &[u8],
) -> Result<TokenSet, ProviderError> {
    if status.is_success() {
        return serde_json::from_slice(body).map_err(|_| {
            ProviderError::Protocol("the token answer is not an RFC 6749 token response".into())
        });
    }
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let error = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_default();
    oauth_error(status, &error)
}

/// An error answer as a [`ProviderError`]. The provider's error code is echoed into logs and
/// audit rows: only what a code can look like is kept.
pub(super) fn oauth_error(status: StatusCode, error: &str) -> Result<TokenSet, ProviderError> {
    let error = error_code(error);
    if error == "invalid_grant" {
        return Err(ProviderError::InvalidGrant);
    }
    // A rate limit (429) says "later", as an outage does: not a refusal of the request.
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(ProviderError::Unavailable(format!(
            "status {}",
            status.as_u16()
        )));
    }
    Err(ProviderError::Rejected {
        status: status.as_u16(),
        error,
    })
}

/// A provider's error code, kept only if it looks like one: letters and underscores, at most 64
/// (`invalid_grant`, Slack's `token_revoked`, Intuit's `AuthenticationFault`). Anything else is
/// `unrecognized`, never a filtered copy: the code goes into answers, logs and audit rows, and a
/// provider echoing a token there (Box's are 32 letters and digits) must not carry it along.
/// No code stays no code (the caller names the status instead).
pub(crate) fn error_code(raw: &str) -> String {
    let looks_like_a_code =
        raw.len() <= 64 && raw.chars().all(|c| c.is_ascii_alphabetic() || c == '_');
    if looks_like_a_code {
        raw.to_owned()
    } else {
        "unrecognized".to_owned()
    }
}

/// Done on 2xx, unavailable on 5xx and 429, refused otherwise.
pub(super) fn status_only(status: StatusCode) -> Result<(), ProviderError> {
    match status {
        s if s.is_success() => Ok(()),
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
            Err(ProviderError::Unavailable(format!("status {}", s.as_u16())))
        }
        s => Err(ProviderError::Rejected {
            status: s.as_u16(),
            error: String::new(),
        }),
    }
}

/// A resource answer that does not decode as the dialect's documented shape.
pub(super) fn unreadable(what: &str) -> ProviderError {
    ProviderError::Protocol(format!("the {what} answer is not in its documented shape"))
}

/// `base` with `path` appended (the resource base URL may or may not end with a slash).
pub(super) fn under(base: &url::Url, path: &str) -> Result<url::Url, ProviderError> {
    let joined = format!(
        "{}/{}",
        base.as_str().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    url::Url::parse(&joined)
        .map_err(|_| ProviderError::Protocol("the resource URL does not join".into()))
}

#[cfg(test)]
mod error_code_tests {
    /// Codes pass whole; a token-shaped value (digits) or an overlong one does not pass at all.
    #[test]
    fn only_what_looks_like_an_error_code_is_kept() {
        for code in ["invalid_grant", "token_revoked", "AuthenticationFault"] {
            assert_eq!(super::error_code(code), code);
        }
        for not in [
            "Xk2f9QpLmN3vB7sT1aZ8cD4eF6gH0jK5",
            "ya29.a0AfH6SM",
            &"a".repeat(65),
        ] {
            assert_eq!(super::error_code(not), "unrecognized", "{not}");
        }
        assert_eq!(super::error_code(""), "");
    }
}
