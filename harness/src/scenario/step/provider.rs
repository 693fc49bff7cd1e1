//! `do = "provider"`: switches the fake OAuth provider's behaviour for one provider — token
//! endpoint errors, failing revocation, refresh rotation, hostile `expires_in`, document order,
//! `iss` on the redirect, the resource's shape and size — and two things done at the provider
//! by someone else: access tokens ended early, grants revoked.

use harbor_service::domain::Provider;
use serde::{Deserialize, Serialize};

use crate::fake_provider::{ExpiresIn, Fault};
use crate::scenario::check::{Checker, Problem};
use crate::scenario::executor::Executor;
use crate::scenario::outcome::Failure;
use crate::scenario::trace::EventKind;

/// What the token endpoint answers: one of the provider's [`Fault`]s, or `none` (issue tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenFault {
    /// Issue tokens again.
    None,
    /// Answer with this error.
    #[serde(untagged)]
    Fault(Fault),
}

/// A provider step as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    /// A note for the trace.
    pub note: Option<String>,
    /// Which provider.
    pub provider: String,
    /// What the token endpoint answers.
    pub token_fault: Option<TokenFault>,
    /// Make revocation fail.
    pub revoke_fails: Option<bool>,
    /// Rotate refresh tokens.
    pub rotate_refresh_tokens: Option<bool>,
    /// What the token endpoint sends as `expires_in`.
    pub expires_in: Option<ExpiresIn>,
    /// List documents in reverse order.
    pub reverse_documents: Option<bool>,
    /// Issue tokens, then lose the reply (the client gets a 500).
    pub lose_token_reply: Option<bool>,
    /// Pad token answers to over a mebibyte.
    pub oversized_token_reply: Option<bool>,
    /// Answer token requests this many milliseconds late (a slow provider).
    pub token_delay_ms: Option<u64>,
    /// Send `iss` on the authorization redirect (none of the four providers documents it).
    pub send_iss: Option<bool>,
    /// Answer resource reads with a body outside the provider's documented shape.
    pub malformed_resource: Option<bool>,
    /// Answer every token and resource request with 429 and `Retry-After`
    /// ([`crate::fake_provider::RATE_LIMIT_RETRY_AFTER`]): a provider limiting Harbor's calls.
    pub rate_limited: Option<bool>,
    /// List this many documents after the usual two.
    pub extra_documents: Option<usize>,
    /// Box only: this many positions after the first page that the caller cannot see (they count
    /// in `total_count`, and a page of them is empty before the end).
    pub hidden_positions: Option<usize>,
    /// End every access token issued so far now (their refresh tokens stay good).
    pub expire_access_tokens: Option<bool>,
    /// The account (digits) every consent from now on is by; an empty string: each consent by an
    /// account of its own again (the default).
    pub signed_in_account: Option<String>,
    /// Revoke every grant issued so far, as a user removing the app at the provider does.
    pub revoke_grants: Option<bool>,
    /// How long codes issued from now on can be exchanged, in milliseconds (a provider's own
    /// lifetime by default: Box 30 s, the others ten minutes).
    pub code_lifetime_ms: Option<u64>,
}

/// A checked provider step: the provider, typed, and the switches to change as written (unset
/// ones stay as they are; they need no checking beyond their types).
#[derive(Clone, Debug)]
pub struct ProviderSwitch {
    /// Which provider.
    pub provider: Provider,
    /// The switches to change.
    pub changes: RawProvider,
}

impl ProviderSwitch {
    /// Checks a written provider step.
    pub fn parse(r: RawProvider, cx: &mut Checker, place: &str) -> Result<Self, Problem> {
        Ok(ProviderSwitch {
            provider: cx.provider(&format!("{place}.provider"), Some(&r.provider))?,
            changes: r,
        })
    }

    /// Flips the switches.
    pub async fn apply(
        &self,
        ex: &mut Executor<'_>,
        i: usize,
        note: Option<&str>,
    ) -> Result<(), Failure> {
        let fake = ex
            .target()
            .provider()
            .ok_or_else(|| Failure::at(Some(i), "the target's provider is not the harness's"))?;
        let s = self.changes.clone();
        fake.configure(self.provider, |switches| {
            if let Some(e) = s.expires_in {
                switches.expires_in = e;
            }
            if let Some(r) = s.reverse_documents {
                switches.reverse_documents = r;
            }
            if let Some(f) = s.token_fault {
                switches.token_fault = match f {
                    TokenFault::None => None,
                    TokenFault::Fault(f) => Some(f),
                };
            }
            if let Some(r) = s.revoke_fails {
                switches.revoke_fails = r;
            }
            if let Some(r) = s.rotate_refresh_tokens {
                switches.rotate_refresh_tokens = r;
            }
            if let Some(l) = s.lose_token_reply {
                switches.lose_token_reply = l;
            }
            if let Some(o) = s.oversized_token_reply {
                switches.oversized_token_reply = o;
            }
            if let Some(ms) = s.token_delay_ms {
                switches.token_delay = std::time::Duration::from_millis(ms);
            }
            if let Some(on) = s.send_iss {
                switches.send_iss = on;
            }
            if let Some(on) = s.malformed_resource {
                switches.malformed_resource = on;
            }
            if let Some(on) = s.rate_limited {
                switches.rate_limited = on;
            }
            if let Some(n) = s.hidden_positions {
                switches.hidden_positions = n;
            }
            if let Some(n) = s.extra_documents {
                switches.extra_documents = n;
            }
            if let Some(ms) = s.code_lifetime_ms {
                switches.code_lifetime = std::time::Duration::from_millis(ms);
            }
            if let Some(account) = &s.signed_in_account {
                switches.signed_in_account = Some(account.clone()).filter(|a| !a.is_empty());
            }
        });
        if s.expire_access_tokens == Some(true) {
            fake.expire_access_tokens(self.provider);
        }
        if s.revoke_grants == Some(true) {
            fake.revoke_grants(self.provider);
        }
        // The trace line keeps the spelling of the file (`Some("server_error")`), so traces of
        // runs before and after the typed model compare equal.
        let c = &self.changes;
        let fault = c.token_fault.map(|f| match f {
            TokenFault::None => "none".to_owned(),
            TokenFault::Fault(f) => serde_json::to_value(f)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        });
        let mut detail = format!(
            "provider {}: token_fault={fault:?} revoke_fails={:?} expires_in={:?} reverse_documents={:?}",
            self.provider, c.revoke_fails, c.expires_in, c.reverse_documents
        );
        if let Some(l) = c.lose_token_reply {
            detail.push_str(&format!(" lose_token_reply={l}"));
        }
        if let Some(ms) = c.token_delay_ms {
            detail.push_str(&format!(" token_delay_ms={ms}"));
        }
        if let Some(ms) = c.code_lifetime_ms {
            detail.push_str(&format!(" code_lifetime_ms={ms}"));
        }
        if let Some(o) = c.oversized_token_reply {
            detail.push_str(&format!(" oversized_token_reply={o}"));
        }
        for (name, value) in [
            ("send_iss", c.send_iss),
            ("malformed_resource", c.malformed_resource),
            ("rate_limited", c.rate_limited),
            ("expire_access_tokens", c.expire_access_tokens),
            ("revoke_grants", c.revoke_grants),
        ] {
            if let Some(v) = value {
                detail.push_str(&format!(" {name}={v}"));
            }
        }
        if let Some(n) = c.extra_documents {
            detail.push_str(&format!(" extra_documents={n}"));
        }
        if let Some(account) = &c.signed_in_account {
            detail.push_str(&format!(" signed_in_account={account:?}"));
        }
        ex.event(Some(i), None, EventKind::Note, detail, None);
        ex.annotate(note);
        Ok(())
    }
}
