//! The provider's OAuth endpoints — authorize, token, revoke — as the module map of [`super`]
//! describes them, and the minting of canary-prefixed codes and tokens. What differs between
//! providers on the wire (client authentication, error and answer shapes) is in [`super::wire`].

use super::wire::{self, ClientPolicy, Refusal};
use super::*;

pub(super) fn mint(inner: &mut Inner, provider: Provider, kind: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let value = format!("{CANARY_PREFIX}-{provider}-{kind}-{}", hex::encode(bytes));
    inner.issued.push(value.clone());
    value
}

// The error is the handler's finished response; boxing it would only add noise.
#[allow(clippy::result_large_err)]
fn parse_provider(raw: &str) -> Result<Provider, Response> {
    Provider::parse(raw).map_err(|_| StatusCode::NOT_FOUND.into_response())
}

#[derive(Deserialize)]
pub(super) struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    access_type: Option<String>,
    prompt: Option<String>,
}

pub(super) async fn authorize(
    State(inner): State<Shared>,
    Path(p): Path<String>,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    let provider = match parse_provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut guard = inner.lock().expect("fake provider state");
    guard.of(provider).counters.authorize += 1;
    let send_iss = guard.of(provider).switches.send_iss;
    let issuer = format!("{}/{provider}", guard.base_url);
    // Errors about the client or redirect URI are shown to the user, never redirected (RFC 6749 §4.1.2.1).
    if q.client_id.as_deref() != Some(FakeProvider::client_id(provider).as_str()) {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    let Some(redirect) = q.redirect_uri.filter(|r| *r == redirect_uri(provider)) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not registered").into_response();
    };
    let location = Url::parse(&redirect).expect("registered redirect URIs are valid");
    // RFC 9207 §2: a server that sends `iss` sends it with error responses too.
    let refuse = |mut location: Url, error: &str, state: Option<&str>| {
        location.query_pairs_mut().append_pair("error", error);
        if let Some(s) = state {
            location.query_pairs_mut().append_pair("state", s);
        }
        if send_iss {
            location.query_pairs_mut().append_pair("iss", &issuer);
        }
        (
            StatusCode::FOUND,
            [(header::LOCATION, location.to_string())],
        )
            .into_response()
    };
    if q.response_type.as_deref() != Some("code") {
        return refuse(location, "unsupported_response_type", q.state.as_deref());
    }
    // A PKCE challenge, when sent, must be S256 (RFC 9700 §2.1.1) and binds the code to its
    // verifier (RFC 7636 §4.4). None of the four providers documents requiring one, and only
    // those that document PKCE at all look at it.
    let challenge = match (q.code_challenge.clone(), q.code_challenge_method.as_deref()) {
        _ if !wire::verifies_pkce(provider) => None,
        (None, None) => None,
        (Some(challenge), Some("S256")) => Some(challenge),
        _ => return refuse(location, "invalid_request", q.state.as_deref()),
    };
    // Slack's scopes are comma-separated; a space inside one is not a scope Slack knows.
    if provider == Provider::Slack && q.scope.as_deref().is_some_and(|s| s.contains(' ')) {
        return refuse(location, "invalid_scope", q.state.as_deref());
    }
    // Google issues a refresh token only to an offline request (`online` is its default).
    let offline = match provider {
        Provider::Gmail => match q.access_type.as_deref() {
            None | Some("online") => false,
            Some("offline") => true,
            Some(_) => return refuse(location, "invalid_request", q.state.as_deref()),
        },
        _ => true,
    };
    let code = mint(&mut guard, provider, "code");
    let expires = guard.now() + guard.of(provider).switches.code_lifetime;
    let account = match guard.of(provider).switches.signed_in_account.clone() {
        Some(account) => account,
        None => {
            guard.accounts += 1;
            format!("1{:020}", guard.accounts)
        }
    };
    // Google issues a refresh token at an account's first consent to the client, and again only
    // when the request says `prompt=consent` (a space-separated list) [G8]; a consent revoked
    // is asked for, and given, afresh.
    let returning = provider == Provider::Gmail && guard.consented(&account);
    let asks_again = q
        .prompt
        .as_deref()
        .is_some_and(|p| p.split(' ').any(|v| v == "consent"));
    let offline = offline && (!returning || asks_again);
    guard.codes.insert(
        code.clone(),
        (
            provider,
            CodeGrant {
                client_id: FakeProvider::client_id(provider),
                redirect_uri: redirect,
                challenge,
                scope: q.scope.unwrap_or_default(),
                offline,
                used: false,
                expires,
                account: account.clone(),
            },
        ),
    );
    drop(guard);
    let mut location = location;
    {
        let mut qp = location.query_pairs_mut();
        qp.append_pair("code", &code);
        if let Some(s) = &q.state {
            qp.append_pair("state", s);
        }
        if provider == Provider::Qbo {
            // The company the user picked at Intuit's consent: a grant is for one company, and
            // its tokens open that company alone [Q3]. Intuit's company ids are digits, as the
            // accounts the fake mints are.
            qp.append_pair("realmId", &account);
        }
        if send_iss {
            qp.append_pair("iss", &issuer);
        }
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct TokenForm {
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

pub(super) async fn token(
    State(inner): State<Shared>,
    Path(p): Path<String>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let provider = match parse_provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    // The grant the request is about (the code that began it), when the provider knows it.
    let (received, delay, fault, grant) = {
        let mut guard = inner.lock().expect("fake provider state");
        // A code's or a refresh token's age is judged when the request arrives, not after the
        // simulated latency.
        let received = guard.now();
        let grant = match form.grant_type.as_str() {
            "authorization_code" => form.code.clone().filter(|c| guard.codes.contains_key(c)),
            "refresh_token" => form
                .refresh_token
                .as_deref()
                .and_then(|rt| guard.grant_of_token(provider, rt)),
            _ => None,
        };
        match form.grant_type.as_str() {
            "authorization_code" => guard.count(provider, grant.as_deref(), |c| {
                c.code_exchanges += 1;
            }),
            "refresh_token" => guard.count(provider, grant.as_deref(), |c| c.refreshes += 1),
            _ => {}
        }
        let switches = &guard.of(provider).switches;
        if switches.rate_limited {
            return wire::rate_limited();
        }
        (received, switches.token_delay, switches.token_fault, grant)
    };
    let grant = grant.as_deref();
    if !delay.is_zero() {
        // Simulated provider latency; never used to order steps.
        tokio::time::sleep(delay).await;
    }
    let refresh = form.grant_type == "refresh_token";
    match fault {
        Some(Fault::ServerError) => return wire::server_error(),
        Some(Fault::InvalidGrant) => {
            let mut guard = inner.lock().expect("fake provider state");
            if refresh {
                guard.count(provider, grant, |c| c.refreshes_invalid_grant += 1);
            }
            return wire::token_refusal(provider, Refusal::Grant { refresh });
        }
        None => {}
    }
    let presented = wire::presented_client(
        &headers,
        form.client_id.as_deref(),
        form.client_secret.as_deref(),
    );
    if let Err(refusal) = wire::check_client(provider, ClientPolicy::of(provider), &presented) {
        inner
            .lock()
            .expect("fake provider state")
            .count(provider, grant, |c| c.client_auth_refused += 1);
        return wire::token_refusal(provider, refusal);
    }
    let mut guard = inner.lock().expect("fake provider state");
    let switches = guard.of(provider).switches.clone();
    // Slack without token rotation (an app that has not opted in) issues an access token that
    // never expires, with no refresh token and no `expires_in` (docs/PROVIDER-DIALECTS.md, [S2]).
    let never_expires = provider == Provider::Slack && !switches.rotate_refresh_tokens;
    let (scope, issue_refresh, family) = match form.grant_type.as_str() {
        "authorization_code" => {
            let Some(code) = form.code else {
                return wire::token_refusal(provider, Refusal::Request);
            };
            let Some((owner, grant)) = guard.codes.get_mut(&code) else {
                return wire::token_refusal(provider, Refusal::Grant { refresh });
            };
            let verifier_ok = match (&grant.challenge, form.code_verifier.as_deref()) {
                _ if !wire::verifies_pkce(provider) => true,
                (None, None) => true,
                (Some(challenge), Some(v)) => {
                    URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())) == *challenge
                }
                _ => false,
            };
            let reused = grant.used;
            let expired = grant.expires <= received;
            if *owner != provider
                || grant.used
                || expired
                || grant.client_id != FakeProvider::client_id(provider)
                || form.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str())
                || !verifier_ok
            {
                grant.used = true;
                if reused {
                    guard.count(provider, Some(&code), |c| c.code_reused += 1);
                    // RFC 6749 §4.1.2: a code used twice SHOULD end what it was exchanged for
                    // (Intuit does: a second exchange invalidates the first's tokens).
                    let families: Vec<u64> = guard
                        .family_code
                        .iter()
                        .filter(|(_, c)| **c == code)
                        .map(|(f, _)| *f)
                        .collect();
                    guard.end_families(&families);
                } else if expired {
                    guard.count(provider, Some(&code), |c| c.code_expired += 1);
                }
                return wire::token_refusal(provider, Refusal::Grant { refresh });
            }
            grant.used = true;
            guard.count(provider, Some(&code), |c| c.code_exchanges_ok += 1);
            let mut scope = guard.codes[&code].1.scope.clone();
            if switches.untick_first_scope {
                let separator = if provider == Provider::Slack {
                    ','
                } else {
                    ' '
                };
                scope = scope
                    .split(separator)
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join(&separator.to_string());
            }
            let offline =
                guard.codes[&code].1.offline && !never_expires && !switches.withhold_refresh_token;
            guard.families += 1;
            let family = guard.families;
            let account = guard.codes[&code].1.account.clone();
            guard.begin_family(family, provider, account);
            guard.family_code.insert(family, code);
            (scope, offline, family)
        }
        "refresh_token" => {
            let Some(rt) = form.refresh_token else {
                return wire::token_refusal(provider, Refusal::Request);
            };
            let family = match guard.refresh.get_mut(&rt) {
                Some(r)
                    if r.provider == provider && r.standing(received) == GrantStanding::Live =>
                {
                    if switches.rotate_refresh_tokens {
                        r.usable = false;
                    }
                    r.family
                }
                _ => {
                    guard.count(provider, grant, |c| c.refreshes_invalid_grant += 1);
                    return wire::token_refusal(provider, Refusal::Grant { refresh });
                }
            };
            guard.count(provider, grant, |c| c.refreshes_ok += 1);
            if switches.revoke_access_on_refresh {
                guard.revoke_access_in(family);
            }
            (String::new(), switches.rotate_refresh_tokens, family)
        }
        _ => return wire::token_refusal(provider, Refusal::GrantType),
    };
    let ttl = switches.access_token_ttl;
    let access = mint(&mut guard, provider, "at");
    let lifetime = if never_expires {
        // A century stands for never.
        Duration::from_secs(100 * 365 * 24 * 3600)
    } else {
        Duration::from_secs(ttl.max(0) as u64)
    };
    let expires = guard.now() + lifetime;
    guard.issue_access(
        access.clone(),
        AccessGrant {
            provider,
            expires,
            revoked: false,
            family,
        },
    );
    let mut body = json!({ "access_token": access, "token_type": "Bearer" });
    match switches.expires_in {
        _ if never_expires => {}
        ExpiresIn::Honest => body["expires_in"] = json!(ttl),
        ExpiresIn::Huge => body["expires_in"] = json!(i64::MAX),
        ExpiresIn::Negative => body["expires_in"] = json!(-3600),
        ExpiresIn::Zero => body["expires_in"] = json!(0),
        ExpiresIn::NonNumeric => body["expires_in"] = json!("soon"),
        ExpiresIn::Missing => {}
    }
    // QuickBooks and Box name no scope in their token answers; Slack and Google the granted
    // ones, each in its own spelling (the authorization request's, here).
    if !scope.is_empty() && !matches!(provider, Provider::Qbo | Provider::Box) {
        body["scope"] = json!(scope);
    }
    if issue_refresh {
        let refresh = mint(&mut guard, provider, "rt");
        let expires = wire::refresh_token_lifetime(provider)
            .map(|life| (guard.now() + life, guard.today() + life));
        guard.issue_refresh(
            refresh.clone(),
            RefreshGrant {
                provider,
                usable: true,
                family,
                expires,
            },
        );
        body["refresh_token"] = json!(refresh);
    }
    wire::decorate_tokens(provider, &mut body);
    // Google answers a code exchange that asked for `openid` with an ID token naming the account
    // (OpenID Connect Core §3.1.3.3).
    if provider == Provider::Gmail
        && form.grant_type == "authorization_code"
        && scope.split(' ').any(|s| s == "openid")
    {
        let account = guard.family_account[&family].1.clone();
        let id_token = wire::id_token(&guard.base_url, &account, guard.today().timestamp());
        guard.issued.push(id_token.clone());
        body["id_token"] = json!(id_token);
    }
    if switches.lose_token_reply {
        // Everything above happened at the provider; only the answer is lost on the way back.
        return wire::server_error();
    }
    if switches.oversized_token_reply {
        body["padding"] = json!("x".repeat(1 << 20));
    }
    Json(body).into_response()
}

pub(super) async fn revoke(
    State(inner): State<Shared>,
    Path(p): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let provider = match parse_provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut guard = inner.lock().expect("fake provider state");
    // Read before anything is refused, so that the call counts for its grant whatever happens.
    let presented = wire::revocation_token(provider, &headers, &body);
    let grant = presented
        .as_ref()
        .ok()
        .and_then(|token| guard.grant_of_token(provider, token));
    let grant = grant.as_deref();
    guard.count(provider, grant, |c| c.revocations += 1);
    if guard.of(provider).switches.revoke_fails {
        return wire::server_error();
    }
    if guard.of(provider).switches.rate_limited {
        return wire::rate_limited();
    }
    let token = match presented {
        Ok(token) => token,
        Err(refusal) => {
            if matches!(refusal, Refusal::Client) {
                guard.count(provider, grant, |c| c.client_auth_refused += 1);
            }
            return wire::revocation_refusal(provider, refusal);
        }
    };
    let now = guard.now();
    let known_access = guard
        .access
        .get(&token)
        .filter(|a| a.provider == provider)
        .map(|a| (a.family, !a.revoked && a.expires > now));
    let known_refresh = guard
        .refresh
        .get(&token)
        .filter(|r| r.provider == provider)
        .map(|r| (r.family, r.standing(now)));
    // A refresh token past its end is over at the provider, which may still refuse to revoke it
    // (Intuit's empty 400): the attempt leaves nothing to give back, and the grant is ended.
    if let Some((family, GrantStanding::Expired { .. })) = known_refresh {
        guard.end_families(&[family]);
    }
    let known_refresh = known_refresh.map(|(family, s)| (family, s == GrantStanding::Live));
    // Slack's `auth.revoke` is authenticated by the token it revokes: only a live access token
    // (one the API takes as a bearer) can; a refresh token or a dead one is `invalid_auth`.
    // Google ends only what a live token belongs to: a dead one is `invalid_token` and ends
    // nothing (what matters where one consent holds several grants).
    // Intuit answers an empty 400 to a token already revoked or expired (3P, see
    // docs/PROVIDER-DIALECTS.md); the others follow RFC 7009 (a 200 for a token they no longer
    // know) or their own shape (`wire::revocation_refusal`).
    let live = |(_, live): &(u64, bool)| *live;
    let found = match provider {
        Provider::Slack => known_access.filter(live),
        Provider::Qbo | Provider::Gmail => known_access.filter(live).or(known_refresh.filter(live)),
        Provider::Box => known_access.or(known_refresh),
    };
    let Some((family, _)) = found else {
        return wire::revocation_refusal(provider, Refusal::UnknownToken);
    };
    // Revoking a token ends its whole grant (RFC 7009 §2.1 allows it for access tokens and
    // requires it for refresh tokens; every provider here does it) — at Google, the account's
    // whole consent to the client: every grant of the account.
    let ended = guard.consent_of(family);
    guard.end_families(&ended);
    wire::revoked(provider)
}
