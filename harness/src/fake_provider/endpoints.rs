//! The provider's HTTP endpoints — authorize, token, revoke, resource — as the module map of
//! [`super`] describes them, and the minting of canary-prefixed codes and tokens.

use super::*;

pub(super) fn mint(inner: &mut Inner, provider: Provider, kind: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let value = format!("{CANARY_PREFIX}-{provider}-{kind}-{}", hex::encode(bytes));
    inner.issued.push(value.clone());
    value
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
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
    guard
        .providers
        .entry(provider)
        .or_default()
        .counters
        .authorize += 1;
    // Errors about the client or redirect URI are shown to the user, never redirected (RFC 6749 §4.1.2.1).
    if q.client_id.as_deref() != Some(FakeProvider::client_id(provider).as_str()) {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    let Some(redirect) = q.redirect_uri.filter(|r| *r == redirect_uri(provider)) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not registered").into_response();
    };
    let location = Url::parse(&redirect).expect("registered redirect URIs are valid");
    let refuse = |mut location: Url, error: &str, state: Option<&str>| {
        location.query_pairs_mut().append_pair("error", error);
        if let Some(s) = state {
            location.query_pairs_mut().append_pair("state", s);
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
    // PKCE is required, S256 only (RFC 9700 §2.1.1).
    let (Some(challenge), Some("S256")) =
        (q.code_challenge.clone(), q.code_challenge_method.as_deref())
    else {
        return refuse(location, "invalid_request", q.state.as_deref());
    };
    let code = mint(&mut guard, provider, "code");
    guard.codes.insert(
        code.clone(),
        (
            provider,
            CodeGrant {
                client_id: FakeProvider::client_id(provider),
                redirect_uri: redirect,
                challenge,
                scope: q.scope.unwrap_or_default(),
                used: false,
            },
        ),
    );
    let issuer = format!("{}/{provider}", guard.base_url);
    drop(guard);
    let mut location = location;
    {
        let mut qp = location.query_pairs_mut();
        qp.append_pair("code", &code);
        if let Some(s) = &q.state {
            qp.append_pair("state", s);
        }
        qp.append_pair("iss", &issuer);
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
    Form(form): Form<TokenForm>,
) -> Response {
    let provider = match parse_provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (delay, fault) = {
        let mut guard = inner.lock().expect("fake provider state");
        let state = guard.providers.entry(provider).or_default();
        match form.grant_type.as_str() {
            "authorization_code" => state.counters.code_exchanges += 1,
            "refresh_token" => state.counters.refreshes += 1,
            _ => {}
        }
        (state.switches.token_delay, state.switches.token_fault)
    };
    if !delay.is_zero() {
        // Simulated provider latency; never used to order steps.
        tokio::time::sleep(delay).await;
    }
    match fault {
        Some(Fault::ServerError) => {
            return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error")
        }
        Some(Fault::InvalidGrant) => {
            let mut guard = inner.lock().expect("fake provider state");
            if form.grant_type == "refresh_token" {
                guard
                    .providers
                    .entry(provider)
                    .or_default()
                    .counters
                    .refreshes_invalid_grant += 1;
            }
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
        }
        None => {}
    }
    if form.client_id.as_deref() != Some(FakeProvider::client_id(provider).as_str())
        || form.client_secret.as_deref() != Some(FakeProvider::client_secret(provider).as_str())
    {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let mut guard = inner.lock().expect("fake provider state");
    let ttl = guard
        .providers
        .entry(provider)
        .or_default()
        .switches
        .access_token_ttl;
    let rotate = guard
        .providers
        .entry(provider)
        .or_default()
        .switches
        .rotate_refresh_tokens;
    let revoke_old = guard
        .providers
        .entry(provider)
        .or_default()
        .switches
        .revoke_access_on_refresh;
    let expires_in = guard
        .providers
        .entry(provider)
        .or_default()
        .switches
        .expires_in;
    let lose_reply = guard
        .providers
        .entry(provider)
        .or_default()
        .switches
        .lose_token_reply;
    let oversized = guard
        .providers
        .entry(provider)
        .or_default()
        .switches
        .oversized_token_reply;
    let (scope, issue_refresh, family) = match form.grant_type.as_str() {
        "authorization_code" => {
            let Some(code) = form.code else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
            };
            let Some((owner, grant)) = guard.codes.get_mut(&code) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            let verifier_ok = form.code_verifier.as_deref().is_some_and(|v| {
                URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())) == grant.challenge
            });
            if *owner != provider
                || grant.used
                || grant.client_id != FakeProvider::client_id(provider)
                || form.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str())
                || !verifier_ok
            {
                grant.used = true;
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            grant.used = true;
            guard
                .providers
                .entry(provider)
                .or_default()
                .counters
                .code_exchanges_ok += 1;
            let scope = guard.codes[&code].1.scope.clone();
            guard.families += 1;
            (scope, true, guard.families)
        }
        "refresh_token" => {
            let Some(rt) = form.refresh_token else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
            };
            let family = match guard.refresh.get_mut(&rt) {
                Some((owner, usable, family)) if *owner == provider && *usable => {
                    if rotate {
                        *usable = false;
                    }
                    *family
                }
                _ => {
                    guard
                        .providers
                        .entry(provider)
                        .or_default()
                        .counters
                        .refreshes_invalid_grant += 1;
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
                }
            };
            guard
                .providers
                .entry(provider)
                .or_default()
                .counters
                .refreshes_ok += 1;
            if revoke_old {
                for a in guard.access.values_mut().filter(|a| a.family == family) {
                    a.revoked = true;
                }
            }
            (String::new(), rotate, family)
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    };
    let access = mint(&mut guard, provider, "at");
    guard.access.insert(
        access.clone(),
        AccessGrant {
            provider,
            expires: Instant::now() + Duration::from_secs(ttl.max(0) as u64),
            revoked: false,
            family,
        },
    );
    let mut body = json!({ "access_token": access, "token_type": "Bearer" });
    match expires_in {
        ExpiresIn::Honest => body["expires_in"] = json!(ttl),
        ExpiresIn::Huge => body["expires_in"] = json!(i64::MAX),
        ExpiresIn::Negative => body["expires_in"] = json!(-3600),
        ExpiresIn::Zero => body["expires_in"] = json!(0),
        ExpiresIn::NonNumeric => body["expires_in"] = json!("soon"),
        ExpiresIn::Missing => {}
    }
    if !scope.is_empty() {
        body["scope"] = json!(scope);
    }
    if issue_refresh {
        let refresh = mint(&mut guard, provider, "rt");
        guard
            .refresh
            .insert(refresh.clone(), (provider, true, family));
        body["refresh_token"] = json!(refresh);
    }
    if lose_reply {
        // Everything above happened at the provider; only the answer is lost on the way back.
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    }
    if oversized {
        body["padding"] = json!("x".repeat(1 << 20));
    }
    Json(body).into_response()
}

#[derive(Deserialize)]
pub(super) struct RevokeForm {
    token: String,
}

pub(super) async fn revoke(
    State(inner): State<Shared>,
    Path(p): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Response {
    let provider = match parse_provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut guard = inner.lock().expect("fake provider state");
    let state = guard.providers.entry(provider).or_default();
    state.counters.revocations += 1;
    if state.switches.revoke_fails {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    }
    if let Some(a) = guard.access.get_mut(&form.token) {
        a.revoked = true;
    }
    // Revoking a refresh token ends the whole grant (RFC 7009 §2.1).
    let family = guard.refresh.get(&form.token).map(|r| r.2);
    if let Some(family) = family {
        for r in guard.refresh.values_mut().filter(|r| r.2 == family) {
            r.1 = false;
        }
        for a in guard.access.values_mut().filter(|a| a.family == family) {
            a.revoked = true;
        }
    }
    StatusCode::OK.into_response()
}

pub(super) async fn resource(
    State(inner): State<Shared>,
    Path(p): Path<String>,
    headers: HeaderMap,
) -> Response {
    let provider = match parse_provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let mut guard = inner.lock().expect("fake provider state");
    let valid = token
        .as_ref()
        .and_then(|t| guard.access.get(t))
        .is_some_and(|a| a.provider == provider && !a.revoked && a.expires > Instant::now());
    let state = guard.providers.entry(provider).or_default();
    state.counters.resource_reads += 1;
    if !valid {
        state.counters.resource_unauthorized += 1;
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_token");
    }
    let mut documents = vec![
        json!({ "id": format!("{provider}-doc-1"), "title": format!("{provider} quarterly report") }),
        json!({ "id": format!("{provider}-doc-2"), "title": format!("{provider} onboarding notes") }),
    ];
    if state.switches.reverse_documents {
        documents.reverse();
    }
    Json(json!({ "documents": documents })).into_response()
}
