//! Box (facts and sources: `docs/PROVIDER-DIALECTS.md`).
//!
//! - Client authentication: `client_id` and `client_secret` in the form body, the only way
//!   Box documents; revocation takes them the same way, with `token`.
//! - Refresh tokens are single-use: every refresh returns a new pair. A refresh token lasts 60
//!   days (Box's token guide), and the token answer does not say so.
//! - Documents are the items of the root folder (`2.0/folders/0/items`), paged by `offset`
//!   against `total_count`. A rejected token is 401 with an empty body.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::dialect::{under, unreadable, ClientAuth, Dialect, Page};
use super::{ProviderConfig, ProviderError, RemoteDocument};

/// Box.
pub struct BoxCom;

#[derive(Deserialize)]
struct Items {
    total_count: usize,
    entries: Vec<Item>,
    #[serde(default)]
    offset: usize,
    /// The page size Box used (the one asked for, unless past its maximum).
    #[serde(default)]
    limit: usize,
}

/// The largest offset Box's offset paging takes: past it Box answers 400, and only its marker
/// paging reaches further.
const MAX_OFFSET: usize = 9_999;

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
        Ok(http
            .get(url)
            .query(&[
                ("limit", self.page_size().to_string()),
                ("offset", cursor.unwrap_or("0").to_owned()),
                ("fields", "id,name,type".to_owned()),
            ])
            .bearer_auth(access.expose_secret()))
    }

    fn documents_answer(&self, _cursor: Option<&str>, body: &[u8]) -> Result<Page, ProviderError> {
        let items: Items = serde_json::from_slice(body).map_err(|_| unreadable("folder items"))?;
        // The next page starts a limit further on, not after the entries received: a page may
        // hold fewer than its limit, or none, before the end (items the caller cannot see count
        // in `total_count`); the listing ends when the next offset reaches `total_count`.
        let step = if items.limit > 0 {
            items.limit
        } else {
            items.entries.len()
        };
        // Saturating: the numbers are the provider's, and a hostile answer must not overflow.
        let after = items.offset.saturating_add(step);
        let more = step > 0 && after < items.total_count;
        let beyond_reach = more && after > MAX_OFFSET;
        let next = (more && !beyond_reach).then(|| after.to_string());
        Ok(Page {
            beyond_reach,
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
