//! Box (facts and sources: `docs/PROVIDER-DIALECTS.md`).
//!
//! - Client authentication: `client_id` and `client_secret` in the form body, the only way
//!   Box documents; revocation takes them the same way, with `token`.
//! - Refresh tokens are single-use: every refresh returns a new pair. A refresh token lasts 60
//!   days (Box's token guide), and the token answer does not say so.
//! - Documents are the items of the root folder (`2.0/folders/0/items`), paged by marker
//!   (`usemarker=true`, then each answer's `next_marker` until it is null or empty): Box's offset
//!   paging stops at offset 9,999, its marker reaches every item. A rejected token is 401 with an
//!   empty body.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::dialect::{under, unreadable, ClientAuth, Dialect, Page};
use super::{ProviderConfig, ProviderError, RemoteDocument};

/// Box.
pub struct BoxCom;

/// A page of marker paging: no `total_count` and no `offset`, only the marker of the next page.
#[derive(Deserialize)]
struct Items {
    entries: Vec<Item>,
    /// Where the next page starts, opaque; null or empty on the last page.
    #[serde(default)]
    next_marker: Option<String>,
}

/// The longest marker taken from an answer: Harbor's bound, not Box's (which documents none) — a
/// marker goes back into the next request's URL. Box's markers seen in its own answers are a few
/// dozen characters of base64 (a support thread's example under [B9]'s guide), far inside it.
const MAX_MARKER_LEN: usize = 8 * 1024;

#[derive(Deserialize)]
struct Item {
    id: String,
    #[serde(default)]
    name: String,
}

impl Dialect for BoxCom {
    fn client_auth(&self) -> ClientAuth {
        ClientAuth::ClientSecretPost
    }

    fn refresh_token_lifetime(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(60 * 24 * 3600))
    }

    fn sends_iss(&self) -> bool {
        false
    }

    /// limit is at most 1000.
    fn page_size(&self) -> usize {
        1000
    }

    fn documents_request(
        &self,
        http: &reqwest::Client,
        c: &ProviderConfig,
        access: &SecretString,
        _account: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let url = under(&c.resource_url, "2.0/folders/0/items")?;
        let mut request = http.get(url).query(&[
            ("limit", self.page_size().to_string()),
            ("usemarker", "true".to_owned()),
            ("fields", "id,name,type".to_owned()),
        ]);
        if let Some(marker) = cursor {
            request = request.query(&[("marker", marker)]);
        }
        Ok(request.bearer_auth(access.expose_secret()))
    }

    fn documents_answer(&self, _cursor: Option<&str>, body: &[u8]) -> Result<Page, ProviderError> {
        let items: Items = serde_json::from_slice(body).map_err(|_| unreadable("folder items"))?;
        // A page may hold fewer entries than its limit, or none, before the end (items the caller
        // cannot see): only the marker says whether there is more.
        let next = items.next_marker.filter(|m| !m.is_empty());
        if next.as_ref().is_some_and(|m| m.len() > MAX_MARKER_LEN) {
            return Err(unreadable(
                "folder items (a marker longer than any Box sends)",
            ));
        }
        Ok(Page {
            documents: items
                .entries
                .into_iter()
                .map(|i| RemoteDocument {
                    id: i.id,
                    title: i.name,
                })
                .collect(),
            next,
        })
    }
}
