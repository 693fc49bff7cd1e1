//! What each provider does differently on the wire, as the fake speaks it: which client
//! authentication its token and revocation endpoints take, the shape of its errors and answers,
//! and its resource API with its paging and its way of refusing a token. The facts, with their
//! sources, are `docs/PROVIDER-DIALECTS.md`; the service's side of them is
//! `harbor_service::providers`. The two are written apart on purpose: each is checked against
//! the documentation, not against the other.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use harbor_service::domain::Provider;
use serde_json::{json, Value};

use super::{FakeProvider, Shared};

/// Whether `provider` documents PKCE (RFC 7636): Google lists `S256`, Slack takes
/// `code_verifier`. QuickBooks and Box do not document it, and the fake does there what a server
/// does with parameters it does not know — ignores the challenge and the verifier — so that no
/// check credits Harbor with a defence those providers may not give.
pub(super) fn verifies_pkce(provider: Provider) -> bool {
    matches!(provider, Provider::Gmail | Provider::Slack)
}

/// Why a token or revocation request is refused.
#[derive(Clone, Copy, Debug)]
pub(super) enum Refusal {
    /// The client did not authenticate the way the provider takes it (or not at all, or twice).
    Client,
    /// A required parameter is missing.
    Request,
    /// The code or refresh token is unknown, used, revoked or not this client's.
    Grant {
        /// It was a refresh.
        refresh: bool,
    },
    /// A grant type the provider does not support.
    GrantType,
    /// The token to revoke is unknown or already dead.
    UnknownToken,
}

/// How a client presented its credentials.
pub(super) enum Presented {
    /// Not at all.
    Nothing,
    /// HTTP Basic (`client_secret_basic`), decoded.
    Basic(String, String),
    /// In the form body (`client_secret_post`).
    Body(String, String),
    /// Both at once, which RFC 6749 §2.3 forbids.
    Both,
}

/// Which client authentication a provider's token endpoint takes.
#[derive(Clone, Copy, Debug)]
pub(super) enum ClientPolicy {
    /// HTTP Basic only: QuickBooks, as Intuit documents its token endpoint.
    BasicOnly,
    /// Body only: Box documents nothing else.
    BodyOnly,
    /// Either: Google and Slack take both.
    Either,
}

impl ClientPolicy {
    pub(super) fn of(provider: Provider) -> Self {
        match provider {
            Provider::Qbo => Self::BasicOnly,
            Provider::Box => Self::BodyOnly,
            Provider::Gmail | Provider::Slack => Self::Either,
        }
    }
}

/// The credentials of a request: an `Authorization: Basic` header (whose halves are
/// form-encoded, RFC 6749 §2.3.1) and/or `client_id` + `client_secret` in the body.
pub(super) fn presented_client(
    headers: &HeaderMap,
    id: Option<&str>,
    secret: Option<&str>,
) -> Presented {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| {
            let (id, secret) = pair.split_once(':')?;
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("v={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Some((decode(id)?, decode(secret)?))
        });
    match (basic, id, secret) {
        (Some(_), _, Some(_)) => Presented::Both,
        (Some((id, secret)), _, None) => Presented::Basic(id, secret),
        (None, Some(id), Some(secret)) => Presented::Body(id.to_owned(), secret.to_owned()),
        _ => Presented::Nothing,
    }
}

/// Whether the credentials are the client's and presented the way `policy` takes them.
pub(super) fn check_client(
    provider: Provider,
    policy: ClientPolicy,
    presented: &Presented,
) -> Result<(), Refusal> {
    let (id, secret) = match (policy, presented) {
        (ClientPolicy::BasicOnly | ClientPolicy::Either, Presented::Basic(id, secret)) => {
            (id, secret)
        }
        (ClientPolicy::BodyOnly | ClientPolicy::Either, Presented::Body(id, secret)) => {
            (id, secret)
        }
        _ => return Err(Refusal::Client),
    };
    if *id == FakeProvider::client_id(provider) && *secret == FakeProvider::client_secret(provider)
    {
        Ok(())
    } else {
        Err(Refusal::Client)
    }
}

/// A provider outage: 500, whatever the dialect (Slack too answers outages with 5xx).
pub(super) fn server_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({ "error": "server_error" })),
    )
        .into_response()
}

/// The token endpoint's refusal in the provider's shape: Slack's `{"ok": false, "error"}` with
/// HTTP 200; RFC 6749 §5.2 for the others (Box answers a bad client with 400, the others 401).
pub(super) fn token_refusal(provider: Provider, refusal: Refusal) -> Response {
    if provider == Provider::Slack {
        let error = match refusal {
            Refusal::Client => "invalid_client_id",
            Refusal::Request | Refusal::UnknownToken => "invalid_arguments",
            Refusal::Grant { refresh: false } => "invalid_code",
            Refusal::Grant { refresh: true } => "invalid_refresh_token",
            Refusal::GrantType => "invalid_grant_type",
        };
        return Json(json!({ "ok": false, "error": error })).into_response();
    }
    let (status, error) = match refusal {
        Refusal::Client if provider == Provider::Box => (StatusCode::BAD_REQUEST, "invalid_client"),
        Refusal::Client => (StatusCode::UNAUTHORIZED, "invalid_client"),
        Refusal::Request | Refusal::UnknownToken => (StatusCode::BAD_REQUEST, "invalid_request"),
        Refusal::Grant { .. } => (StatusCode::BAD_REQUEST, "invalid_grant"),
        Refusal::GrantType => (StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    };
    (
        status,
        Json(json!({ "error": error, "error_description": "refused by the fake provider" })),
    )
        .into_response()
}

/// How long `provider` takes a refresh token after issuing it: Intuit says so in every token
/// answer (`x_refresh_token_expires_in`, about 101 days, rolling with each refresh that issues a
/// new one — every refresh, while [`super::Switches::rotate_refresh_tokens`] is on), Box
/// documents 60 days [B3]; Google's and Slack's last until they are spent or revoked
/// (docs/PROVIDER-DIALECTS.md).
pub(super) fn refresh_token_lifetime(provider: Provider) -> Option<std::time::Duration> {
    const DAY: u64 = 24 * 3600;
    match provider {
        Provider::Qbo => Some(std::time::Duration::from_secs(101 * DAY)),
        Provider::Box => Some(std::time::Duration::from_secs(60 * DAY)),
        Provider::Gmail | Provider::Slack => None,
    }
}

/// Adds what the provider's token answer carries beyond RFC 6749 §5.1.
pub(super) fn decorate_tokens(provider: Provider, body: &mut Value) {
    match provider {
        Provider::Qbo => {
            body["token_type"] = json!("bearer");
            if let (Some(_), Some(life)) =
                (body.get("refresh_token"), refresh_token_lifetime(provider))
            {
                body["x_refresh_token_expires_in"] = json!(life.as_secs());
            }
        }
        Provider::Slack => {
            body["ok"] = json!(true);
            body["token_type"] = json!("bot");
            body["bot_user_id"] = json!("U0HARBOR");
            body["app_id"] = json!("A0HARBOR");
            body["team"] = json!({ "id": "T0HARBOR", "name": "Harbor test" });
            body["enterprise"] = Value::Null;
            body["authed_user"] = json!({ "id": "U0CONSENT" });
        }
        Provider::Box => {
            body["token_type"] = json!("bearer");
            body["restricted_to"] = json!([]);
        }
        Provider::Gmail => {}
    }
}

/// A Google ID token for `account`, as its token endpoint returns one beside the tokens when the
/// authorization asked for `openid`: a JWS whose claims name the issuer, the client and the
/// account (`sub`). Its signature is random bytes: a client that takes the token straight from
/// the token endpoint over TLS may rely on that channel instead of the signature (OpenID Connect
/// Core §3.1.3.7), and the service does not check it.
pub(super) fn id_token(base_url: &str, account: &str, now: i64) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use rand::RngCore;
    let client = FakeProvider::client_id(Provider::Gmail);
    let header = json!({ "alg": "RS256", "kid": "harbor-fake", "typ": "JWT" });
    let claims = json!({
        "iss": format!("{base_url}/{}", Provider::Gmail),
        "azp": client,
        "aud": client,
        "sub": account,
        "iat": now,
        "exp": now + 3600,
    });
    let mut signature = [0u8; 256];
    rand::rngs::OsRng.fill_bytes(&mut signature);
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// The token a revocation request names, taken the provider's way: QuickBooks a JSON body
/// with HTTP Basic; Gmail `token=` (no client authentication); Slack the bearer token itself;
/// Box a form with the client's credentials.
pub(super) fn revocation_token(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, Refusal> {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    match provider {
        Provider::Qbo => {
            check_client(
                provider,
                ClientPolicy::BasicOnly,
                &presented_client(headers, None, None),
            )?;
            let json: Value = serde_json::from_slice(body).map_err(|_| Refusal::Request)?;
            json.get("token")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(Refusal::Request)
        }
        Provider::Gmail => form.get("token").cloned().ok_or(Refusal::Request),
        Provider::Slack => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
            .or_else(|| form.get("token").cloned())
            .ok_or(Refusal::Request),
        Provider::Box => {
            let presented = presented_client(
                headers,
                form.get("client_id").map(String::as_str),
                form.get("client_secret").map(String::as_str),
            );
            check_client(provider, ClientPolicy::BodyOnly, &presented)?;
            form.get("token").cloned().ok_or(Refusal::Request)
        }
    }
}

/// A refused revocation in the provider's shape. An unknown token is "done" for RFC 7009
/// servers (200), 400 `invalid_token` at Google, `invalid_auth` at Slack, an empty 400 at Intuit.
pub(super) fn revocation_refusal(provider: Provider, refusal: Refusal) -> Response {
    match (provider, refusal) {
        (Provider::Slack, Refusal::Request) => Json(json!({ "ok": false, "error": "not_authed" })).into_response(),
        (Provider::Slack, _) => Json(json!({ "ok": false, "error": "invalid_auth" })).into_response(),
        (Provider::Gmail, Refusal::UnknownToken) => {
            (StatusCode::BAD_REQUEST, Json(json!({ "error": "invalid_token", "error_description": "Token expired or revoked" }))).into_response()
        }
        (Provider::Qbo, Refusal::UnknownToken) => StatusCode::BAD_REQUEST.into_response(),
        (_, Refusal::UnknownToken) => StatusCode::OK.into_response(),
        (_, refusal) => token_refusal(provider, refusal),
    }
}

/// A revocation done, in the provider's shape.
pub(super) fn revoked(provider: Provider) -> Response {
    match provider {
        Provider::Slack => Json(json!({ "ok": true, "revoked": true })).into_response(),
        _ => StatusCode::OK.into_response(),
    }
}

/// What a resource request may read: the documents (in the provider's order, paged no larger
/// than `max_page_size`), or nothing for a token that is not live.
struct Reading {
    /// The account that consented to the token's grant (QuickBooks: the company it opens).
    account: Option<String>,
    documents: Vec<(String, String)>,
    /// Box's positions the caller cannot see ([`super::Switches::hidden_positions`]).
    hidden: usize,
    max_page: usize,
    malformed: bool,
    rate_limited: bool,
}

impl Reading {
    /// What the provider answers instead of a page, when a switch says so.
    fn instead(&self) -> Option<Response> {
        if self.rate_limited {
            return Some(rate_limited());
        }
        self.malformed.then(malformed)
    }
}

/// 429 with `Retry-After`: the provider limits the client's calls.
pub(super) fn rate_limited() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(
            header::RETRY_AFTER,
            super::RATE_LIMIT_RETRY_AFTER.to_string(),
        )],
    )
        .into_response()
}

fn read(inner: &Shared, provider: Provider, headers: &HeaderMap) -> Option<Reading> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let mut guard = inner.lock().expect("fake provider state");
    let now = guard.now();
    let access = token
        .as_ref()
        .and_then(|t| guard.access.get(t))
        .filter(|a| a.provider == provider);
    let valid = access.is_some_and(|a| !a.revoked && a.expires > now);
    // The account that consented to the token's grant (QuickBooks: the company it opens).
    let account = access
        .and_then(|a| guard.family_account.get(&a.family))
        .map(|(_, account)| account.clone());
    let grant = token
        .as_deref()
        .and_then(|t| guard.grant_of_token(provider, t));
    guard.count(provider, grant.as_deref(), |c| c.resource_reads += 1);
    if !valid {
        guard.count(provider, grant.as_deref(), |c| c.resource_unauthorized += 1);
        return None;
    }
    let state = guard.of(provider);
    let mut documents = vec![
        (
            format!("{provider}-doc-1"),
            format!("{provider} quarterly report"),
        ),
        (
            format!("{provider}-doc-2"),
            format!("{provider} onboarding notes"),
        ),
    ];
    documents.extend((1..=state.switches.extra_documents).map(|i| {
        (
            format!("{provider}-extra-{i:03}"),
            format!("{provider} archive {i:03}"),
        )
    }));
    if state.switches.reverse_documents {
        documents.reverse();
    }
    Some(Reading {
        account,
        documents,
        hidden: state.switches.hidden_positions,
        max_page: state.switches.max_page_size.max(1),
        malformed: state.switches.malformed_resource,
        rate_limited: state.switches.rate_limited,
    })
}

/// The page at `offset` of at most `asked` (capped by the provider's own maximum) documents, and
/// the offset after it when there is more.
fn page(reading: &Reading, offset: usize, asked: usize) -> (Vec<(String, String)>, Option<usize>) {
    let size = asked.clamp(1, reading.max_page);
    let rows: Vec<_> = reading
        .documents
        .iter()
        .skip(offset)
        .take(size)
        .cloned()
        .collect();
    let after = offset + rows.len();
    (rows, (after < reading.documents.len()).then_some(after))
}

/// A body in no provider's documented shape.
fn malformed() -> Response {
    Json(json!({ "items": "not what the documentation promises" })).into_response()
}

/// QuickBooks's query API: `select * from Attachable startposition N maxresults M`, for the
/// company the grant is for; a bad token is 401 with a `fault`.
pub(super) async fn qbo_query(
    State(inner): State<Shared>,
    Path(realm): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(reading) = read(&inner, Provider::Qbo, &headers) else {
        let fault = json!({ "fault": { "error": [{ "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401", "detail": "Token expired or revoked", "code": "3200" }], "type": "AUTHENTICATION" }, "time": "2026-12-01T00:00:00.000-08:00" });
        return (StatusCode::UNAUTHORIZED, Json(fault)).into_response();
    };
    // The token opens the company its grant is for, and no other [Q3].
    if reading.account.as_deref() != Some(realm.as_str()) {
        let fault = json!({ "Fault": { "Error": [{ "Message": "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403", "code": "003100" }], "type": "AUTHORIZATION" } });
        return (StatusCode::FORBIDDEN, Json(fault)).into_response();
    }
    if let Some(answer) = reading.instead() {
        return answer;
    }
    let query = q
        .get("query")
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let words: Vec<&str> = query.split_whitespace().collect();
    let after = |word: &str| {
        words
            .iter()
            .position(|w| *w == word)
            .and_then(|i| words.get(i + 1))
            .and_then(|n| n.parse::<usize>().ok())
    };
    if !query.starts_with("select * from attachable") {
        let fault = json!({ "Fault": { "Error": [{ "Message": "Error parsing query", "code": "4000" }], "type": "ValidationFault" } });
        return (StatusCode::BAD_REQUEST, Json(fault)).into_response();
    }
    // STARTPOSITION is 1-based; MAXRESULTS at most 1000.
    let start = after("startposition").unwrap_or(1).max(1);
    let asked = after("maxresults").unwrap_or(100).min(1000);
    let (rows, _) = page(&reading, start - 1, asked);
    let mut response = json!({ "time": "2026-12-01T00:00:00.000-08:00" });
    if rows.is_empty() {
        response["QueryResponse"] = json!({});
    } else {
        let attachables: Vec<Value> = rows
            .iter()
            .map(|(id, title)| json!({ "Id": id, "FileName": title, "SyncToken": "0", "domain": "QBO" }))
            .collect();
        response["QueryResponse"] =
            json!({ "Attachable": attachables, "startPosition": start, "maxResults": rows.len() });
    }
    Json(response).into_response()
}

/// Gmail's `users/me/threads`, paged with an opaque `nextPageToken`; a bad token is 401
/// `UNAUTHENTICATED`.
pub(super) async fn gmail_threads(
    State(inner): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(reading) = read(&inner, Provider::Gmail, &headers) else {
        let error = json!({ "error": { "code": 401, "message": "Request had invalid authentication credentials.", "errors": [{ "reason": "authError" }], "status": "UNAUTHENTICATED" } });
        return (StatusCode::UNAUTHORIZED, Json(error)).into_response();
    };
    if let Some(answer) = reading.instead() {
        return answer;
    }
    let offset = match q.get("pageToken") {
        None => 0,
        Some(token) => match STANDARD.decode(token).ok().and_then(|b| String::from_utf8(b).ok()).and_then(|s| s.strip_prefix("page:").and_then(|n| n.parse().ok())) {
            Some(offset) => offset,
            None => return (StatusCode::BAD_REQUEST, Json(json!({ "error": { "code": 400, "message": "Invalid pageToken", "status": "INVALID_ARGUMENT" } }))).into_response(),
        },
    };
    let asked = q
        .get("maxResults")
        .and_then(|n| n.parse().ok())
        .unwrap_or(100)
        .min(500);
    let (rows, next) = page(&reading, offset, asked);
    let mut response = json!({ "resultSizeEstimate": reading.documents.len() });
    if !rows.is_empty() {
        response["threads"] = rows
            .iter()
            .map(|(id, title)| json!({ "id": id, "snippet": title, "historyId": "1" }))
            .collect();
    }
    if let Some(next) = next {
        response["nextPageToken"] = json!(STANDARD.encode(format!("page:{next}")));
    }
    Json(response).into_response()
}

/// Slack's `conversations.list`, paged with `response_metadata.next_cursor`; a bad token is
/// HTTP 200 with `{"ok": false, "error": "invalid_auth"}`.
pub(super) async fn slack_conversations(
    State(inner): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(reading) = read(&inner, Provider::Slack, &headers) else {
        return Json(json!({ "ok": false, "error": "invalid_auth" })).into_response();
    };
    if let Some(answer) = reading.instead() {
        return answer;
    }
    let offset = match q.get("cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(cursor) => match cursor.strip_prefix("dGVhbTo").and_then(|n| n.parse().ok()) {
            Some(offset) => offset,
            None => return Json(json!({ "ok": false, "error": "invalid_cursor" })).into_response(),
        },
    };
    let asked = q
        .get("limit")
        .and_then(|n| n.parse().ok())
        .unwrap_or(100)
        .min(1000);
    let (rows, next) = page(&reading, offset, asked);
    let channels: Vec<Value> = rows
        .iter()
        .map(|(id, title)| json!({ "id": id, "name": title, "is_channel": true }))
        .collect();
    let next_cursor = next.map(|n| format!("dGVhbTo{n}")).unwrap_or_default();
    Json(json!({ "ok": true, "channels": channels, "response_metadata": { "next_cursor": next_cursor } })).into_response()
}

/// The largest offset Box's offset paging takes [B8].
const BOX_MAX_OFFSET: usize = 9_999;

/// Box's `folders/0/items`, paged two ways. By `offset` against `total_count`, the offset at most
/// 9,999 (a 400 past it [B8]); positions the caller cannot see count in `total_count` and are
/// never listed, so the next page starts at `offset + limit`, not after the entries received
/// [B5]. Or, with `usemarker=true`, by marker [B9]: no total and no limit on how far, each page
/// naming the next one's opaque `next_marker` (null on the last; a page of hidden positions is
/// empty and still names one); a marker Box did not issue is a 400. A bad token is 401 with an
/// empty body and a `WWW-Authenticate` challenge.
pub(super) async fn box_items(
    State(inner): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(reading) = read(&inner, Provider::Box, &headers) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"Service\", error=\"invalid_token\", error_description=\"The access token provided is invalid.\"")],
        )
            .into_response();
    };
    if let Some(answer) = reading.instead() {
        return answer;
    }
    let bad_request = |message: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "type": "error", "status": 400, "code": "bad_request", "message": message })),
        )
            .into_response()
    };
    let asked = q
        .get("limit")
        .and_then(|n| n.parse().ok())
        .unwrap_or(100)
        .min(1000);
    let limit = asked.clamp(1, reading.max_page);
    // The listing's positions: the documents, with the hidden ones after the first page.
    let first = reading.documents.len().min(reading.max_page);
    let total = reading.documents.len() + reading.hidden;
    let entries = |from: usize, to: usize| -> Vec<Value> {
        (from..to)
            .filter_map(|at| match at {
                _ if at < first => Some(at),
                _ if at < first + reading.hidden => None,
                _ => Some(at - reading.hidden),
            })
            .map(|at| &reading.documents[at])
            .map(|(id, title)| json!({ "type": "file", "id": id, "name": title, "etag": "0" }))
            .collect()
    };
    if q.get("usemarker").is_some_and(|v| v == "true") {
        let start = match q.get("marker").map(String::as_str) {
            // No marker, or `0`, is the first page [B9].
            None | Some("") | Some("0") => 0,
            Some(marker) => match box_marker_position(marker) {
                // Only a position a page ended at, short of the end, was ever issued.
                Some(at) if at > 0 && at < total => at,
                _ => return bad_request("Invalid marker"),
            },
        };
        let end = start.saturating_add(limit).min(total);
        let next_marker = (end < total).then(|| box_marker(end));
        return Json(
            json!({ "entries": entries(start, end), "limit": limit, "next_marker": next_marker }),
        )
        .into_response();
    }
    let offset = q.get("offset").and_then(|n| n.parse().ok()).unwrap_or(0);
    if offset > BOX_MAX_OFFSET {
        return bad_request("offset must be at most 9999");
    }
    let end = offset.saturating_add(limit).min(total);
    Json(json!({ "total_count": total, "entries": entries(offset, end), "offset": offset, "limit": limit }))
        .into_response()
}

/// The marker of the page that starts at `position`: opaque to the client, as Box's are (base64
/// of a small JSON object).
fn box_marker(position: usize) -> String {
    URL_SAFE_NO_PAD.encode(
        json!({ "type": "position", "dir": "next", "tail": position.to_string() }).to_string(),
    )
}

/// The position a marker of [`box_marker`]'s names, or `None` for one the fake did not issue.
fn box_marker_position(marker: &str) -> Option<usize> {
    let json: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(marker).ok()?).ok()?;
    json["tail"].as_str()?.parse().ok()
}
