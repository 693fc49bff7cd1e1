//! The auth matrix (finding 7.2): no token, expired, not yet valid, wrong key, wrong audience,
//! wrong issuer, non-member, spoofed `X-User-Id` — none may activate or even learn the workspace.

use harbor_harness::identity::TokenKind;
use harbor_service::lifecycle::ConnectionStatus;
use reqwest::{Method, StatusCode};

use crate::helpers::spawn_app;

#[tokio::test]
async fn bad_or_missing_tokens_are_unauthenticated() {
    let app = spawn_app().await;
    let t = app
        .tenant("guarded", true, ConnectionStatus::Connected)
        .await;
    let path = format!("/v1/workspaces/{}/activation", t.workspace);

    app.call(Method::POST, &path)
        .send()
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    app.call(Method::POST, &path)
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    app.call(Method::POST, &path)
        .bearer("not.a.jwt")
        .send()
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    for kind in [
        TokenKind::Expired,
        TokenKind::NotYetValid,
        TokenKind::WrongKey,
        TokenKind::WrongAudience,
        TokenKind::WrongIssuer,
        TokenKind::UnknownCriticalHeader,
    ] {
        let token = app.sut.tokens.token(t.owner.0, kind);
        let reply = app.call(Method::POST, &path).bearer(token).send().await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM workspace_activations")
            .await,
        0,
        "no bad token activated anything"
    );
    // The scheme is case-insensitive (RFC 7235 §2.1); the token is not.
    let token = app.sut.tokens.token(t.owner.0, TokenKind::Valid);
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let reply = app
            .call(
                Method::GET,
                format!("/v1/workspaces/{}/connections", t.workspace),
            )
            .header("authorization", &format!("{scheme} {token}"))
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{scheme}: {}", reply.body);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_spoofed_user_header_is_never_trusted() {
    let app = spawn_app().await;
    let victim = app
        .tenant("victim", true, ConnectionStatus::Connected)
        .await;
    let attacker = app
        .tenant("attacker", true, ConnectionStatus::Connected)
        .await;
    let path = format!("/v1/workspaces/{}/activation", victim.workspace);

    // The header alone is not an identity.
    app.call(Method::POST, &path)
        .header("x-user-id", &victim.owner.to_string())
        .send()
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    // A valid token for someone else plus the victim's id in the header: the token wins.
    app.call(Method::POST, &path)
        .as_user(attacker.owner.0)
        .header("x-user-id", &victim.owner.to_string())
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(
        app.count("SELECT count(*) FROM workspace_activations")
            .await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn non_members_cannot_tell_a_workspace_exists() {
    let app = spawn_app().await;
    let t = app
        .tenant("private", true, ConnectionStatus::Connected)
        .await;
    let outsider = app
        .tenant("outsider", true, ConnectionStatus::Connected)
        .await;
    let existing = app
        .call(
            Method::POST,
            format!("/v1/workspaces/{}/activation", t.workspace),
        )
        .as_user(outsider.owner.0)
        .send()
        .await;
    let missing = app
        .call(
            Method::POST,
            format!("/v1/workspaces/{}/activation", uuid::Uuid::new_v4()),
        )
        .as_user(outsider.owner.0)
        .send()
        .await;
    existing.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    missing.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(
        existing.body["error"]["message"], missing.body["error"]["message"],
        "indistinguishable"
    );
    app.stop().await;
}

#[tokio::test]
async fn every_workspace_route_checks_membership() {
    let app = spawn_app().await;
    let t = app
        .tenant("routes", true, ConnectionStatus::Connected)
        .await;
    let outsider = app
        .tenant("prober", true, ConnectionStatus::Connected)
        .await;
    let doc = app.call(Method::GET, "/openapi.json").send().await;
    assert_eq!(doc.status, StatusCode::OK);
    let paths = doc.body["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, item) in paths {
        if !path.starts_with("/v1/workspaces/{workspace_id}") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{workspace_id}", &t.workspace.to_string())
                .replace("{provider}", "qbo");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let reply = app
                .call(m.clone(), &concrete)
                .as_user(outsider.owner.0)
                .send()
                .await;
            assert_eq!(
                reply.status,
                StatusCode::NOT_FOUND,
                "{m} {path} let a non-member through: {}",
                reply.body
            );
            let anonymous = app.call(m.clone(), &concrete).send().await;
            assert_eq!(
                anonymous.status,
                StatusCode::UNAUTHORIZED,
                "{m} {path} without a token"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "the OpenAPI document lists the workspace routes (saw {checked})"
    );
    app.stop().await;
}

/// The claim rules of the verifier's single pass over a token, signed claims by signed claims:
/// each registered claim must be there with its type, a repeated one is refused, `aud` may be a
/// list, an `nbf` that is not a number is not checked (jsonwebtoken's rules), and every member's
/// text is UTF-8.
#[test]
fn signed_claims_are_judged_member_by_member() {
    use harbor_harness::identity::{TokenMint, AUDIENCE, ISSUER};
    use harbor_service::auth::JwtVerifier;
    let mint = TokenMint::new();
    let verifier = JwtVerifier::new(&mint.jwt_config()).unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    let sub = uuid::Uuid::new_v4();
    let verdict = |claims: String| verifier.verify(&mint.sign_raw_claims(claims.as_bytes()));
    let good = format!(
        r#""sub":"{sub}","iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{}"#,
        now + 60
    );
    assert_eq!(verdict(format!("{{{good}}}")).unwrap().0, sub);
    let listed = format!(
        r#"{{"sub":"{sub}","iss":"{ISSUER}","aud":["other","{AUDIENCE}"],"exp":{}}}"#,
        now + 60
    );
    assert!(
        verdict(listed).is_ok(),
        "aud may list the service among others"
    );
    let not_listed = format!(
        r#"{{"sub":"{sub}","iss":"{ISSUER}","aud":["other"],"exp":{}}}"#,
        now + 60
    );
    assert_eq!(
        verdict(not_listed).unwrap_err().0,
        "token audience mismatch"
    );
    let repeated = format!(r#"{{{good},"sub":"{}"}}"#, uuid::Uuid::new_v4());
    assert!(verdict(repeated).is_err(), "a repeated sub is refused");
    let float_exp = format!(
        r#"{{"sub":"{sub}","iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{}.5}}"#,
        now + 60
    );
    assert!(verdict(float_exp).is_err(), "exp must be whole seconds");
    let no_iss = format!(r#"{{"sub":"{sub}","aud":"{AUDIENCE}","exp":{}}}"#, now + 60);
    assert!(verdict(no_iss).is_err(), "iss is required");
    let late = format!(r#"{{{good},"nbf":{}}}"#, now + 3600);
    assert_eq!(verdict(late).unwrap_err().0, "token not yet valid");
    let late_float = format!(r#"{{{good},"nbf":{}.0}}"#, now + 3600);
    assert_eq!(
        verdict(late_float).unwrap_err().0,
        "token not yet valid",
        "a number of seconds with a fraction is still checked"
    );
    let odd_nbf = format!(r#"{{{good},"nbf":"soon"}}"#);
    assert!(
        verdict(odd_nbf).is_ok(),
        "an nbf that is no number is not checked"
    );
    let listed_nbf = format!(r#"{{{good},"nbf":[1]}}"#);
    assert!(
        verdict(listed_nbf).is_err(),
        "an nbf that is a list is refused"
    );
    let as_array = format!(r#"[{},null,"{sub}","{ISSUER}","{AUDIENCE}"]"#, now + 60);
    assert!(
        verdict(as_array).is_err(),
        "claims that are not an object are refused"
    );
    let expired = format!(
        r#"{{"sub":"{sub}","iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{}}}"#,
        now - 60
    );
    assert_eq!(verdict(expired).unwrap_err().0, "token expired");
    // Headers: an array, a mistyped standard member, a byte that is not UTF-8.
    let with_header = |header: &[u8]| {
        verifier.verify(&mint.sign_with_raw_header(header, format!("{{{good}}}").as_bytes()))
    };
    let kid = mint.jwks_json()["keys"][0]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(with_header(format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#).as_bytes()).is_ok());
    assert!(with_header(format!(r#"["EdDSA","{kid}"]"#).as_bytes()).is_err());
    assert!(with_header(format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":1}}"#).as_bytes()).is_err());
    let mut odd = format!(r#"{{"alg":"EdDSA","kid":"{kid}","x":""#).into_bytes();
    odd.extend_from_slice(&[0xff]);
    odd.extend_from_slice(b"\"}");
    assert!(with_header(&odd).is_err());
    let mut bad_utf8 = format!("{{{good},\"note\":\"").into_bytes();
    bad_utf8.extend_from_slice(&[0xff, 0xfe]);
    bad_utf8.extend_from_slice(b"\"}");
    assert_eq!(
        verifier
            .verify(&mint.sign_raw_claims(&bad_utf8))
            .unwrap_err()
            .0,
        "token claims are not UTF-8"
    );
}
