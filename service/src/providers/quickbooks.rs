//! Intuit QuickBooks Online (facts and sources: `docs/PROVIDER-DIALECTS.md`).
//!
//! - Client authentication: HTTP Basic, as Intuit's OAuth documentation and SDKs send it.
//! - The callback adds `realmId`, the company the grant is for; the accounting API's paths
//!   need it, so it is stored with the grant.
//! - Every token answer says how long its refresh token lasts (`x_refresh_token_expires_in`,
//!   read by `TokenSet`): a grant left unused that long is over, whatever its row says.
//! - Revocation: a JSON body `{"token": …}` with the client's credentials.
//! - Documents are the company's attachables, read with the query API
//!   (`SELECT * FROM Attachable STARTPOSITION n MAXRESULTS m`); a page shorter than asked for is
//!   the last. A rejected token is 401; a 200 can still carry a `Fault`.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::dialect::{
    authenticate, error_code, status_only, under, unreadable, ClientAuth, Dialect, Page,
};
use super::{ProviderConfig, ProviderError, RemoteDocument};

/// QuickBooks Online.
pub struct QuickBooks;

/// The minor version of the accounting API asked for.
const MINOR_VERSION: &str = "75";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    #[serde(default)]
    query_response: Option<QueryResponse>,
    #[serde(default)]
    fault: Option<Fault>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct QueryResponse {
    #[serde(default)]
    attachable: Vec<Attachable>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Attachable {
    id: String,
    #[serde(default)]
    file_name: Option<String>,
}

#[derive(Deserialize)]
struct Fault {
    #[serde(default, rename = "type")]
    kind: String,
}

/// Whether `realm` can be a QuickBooks company id (it goes into a URL path).
pub fn valid_realm(realm: &str) -> bool {
    !realm.is_empty() && realm.len() <= 32 && realm.bytes().all(|b| b.is_ascii_digit())
}

impl Dialect for QuickBooks {
    fn client_auth(&self) -> ClientAuth {
        ClientAuth::ClientSecretBasic
    }

    fn sends_iss(&self) -> bool {
        false
    }

    fn account_parameter(&self) -> Option<&'static str> {
        Some("realmId")
    }

    fn revocation(
        &self,
        http: &reqwest::Client,
        c: &ProviderConfig,
        token: &SecretString,
    ) -> reqwest::RequestBuilder {
        let mut fields = vec![("token", token.expose_secret())];
        let request = authenticate(http.post(c.revoke_url.clone()), c, &mut fields);
        let body: serde_json::Map<String, serde_json::Value> = fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
            .collect();
        request
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body)
    }

    fn revocation_answer(
        &self,
        status: reqwest::StatusCode,
        _body: &[u8],
    ) -> Result<(), ProviderError> {
        status_only(status)
    }

    /// Intuit answers an empty 400 to the revocation of a token already revoked or expired
    /// (intuit/oauth-jsclient#18, #71, 3P) — as it would to a request it cannot read.
    fn revocation_refusal_is_ambiguous(&self) -> bool {
        true
    }

    /// MAXRESULTS is at most 1000.
    fn page_size(&self) -> usize {
        1000
    }

    fn documents_request(
        &self,
        http: &reqwest::Client,
        c: &ProviderConfig,
        access: &SecretString,
        account: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let realm = account.filter(|r| valid_realm(r)).ok_or_else(|| {
            ProviderError::Protocol("the connection has no QuickBooks company (realmId)".into())
        })?;
        let start = cursor.unwrap_or("1");
        let url = under(&c.resource_url, &format!("v3/company/{realm}/query"))?;
        let query = format!(
            "select * from Attachable startposition {start} maxresults {}",
            self.page_size()
        );
        Ok(http
            .get(url)
            .query(&[("query", query.as_str()), ("minorversion", MINOR_VERSION)])
            .header(reqwest::header::ACCEPT, "application/json")
            .bearer_auth(access.expose_secret()))
    }

    fn documents_answer(&self, cursor: Option<&str>, body: &[u8]) -> Result<Page, ProviderError> {
        let answer: Answer = serde_json::from_slice(body).map_err(|_| unreadable("query"))?;
        if let Some(fault) = answer.fault {
            if fault.kind.eq_ignore_ascii_case("AUTHENTICATION") {
                return Err(ProviderError::TokenRefused);
            }
            return Err(ProviderError::Rejected {
                status: 200,
                error: error_code(&fault.kind),
            });
        }
        let rows = answer
            .query_response
            .ok_or_else(|| unreadable("query"))?
            .attachable;
        let start: usize = cursor.and_then(|c| c.parse().ok()).unwrap_or(1);
        let next = (rows.len() >= self.page_size()).then(|| (start + rows.len()).to_string());
        let documents = rows
            .into_iter()
            .map(|a| RemoteDocument {
                title: a.file_name.unwrap_or_default(),
                id: a.id,
            })
            .collect();
        Ok(Page { documents, next })
    }
}
