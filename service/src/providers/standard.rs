//! The standard dialect: OAuth 2.0 as RFC 6749, RFC 7009 and RFC 9207 write it, for any
//! conforming authorization server (node-oidc-provider in the interop test). Its resource is
//! Harbor's own generic listing, `{"documents": [{"id", "title"}], "next": cursor?}`, paged
//! with `?cursor=`.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::dialect::{unreadable, Dialect, Page};
use super::{ProviderConfig, ProviderError, RemoteDocument};

/// Plain OAuth 2.0: every default of [`Dialect`].
pub struct Standard;

#[derive(Deserialize)]
struct Listing {
    documents: Vec<RemoteDocument>,
    #[serde(default)]
    next: Option<String>,
}

impl Dialect for Standard {
    fn documents_request(
        &self,
        http: &reqwest::Client,
        c: &ProviderConfig,
        access: &SecretString,
        _account: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let mut request = http
            .get(c.resource_url.clone())
            .bearer_auth(access.expose_secret());
        if let Some(cursor) = cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        Ok(request)
    }

    fn documents_answer(&self, _cursor: Option<&str>, body: &[u8]) -> Result<Page, ProviderError> {
        let listing: Listing = serde_json::from_slice(body).map_err(|_| unreadable("resource"))?;
        Ok(Page {
            documents: listing.documents,
            next: listing.next.filter(|n| !n.is_empty()),
        })
    }
}
