//! The connector flow against the threat model's testing checklist (one named test per item), plus
//! the extra cases of the connector issue: key rotation, ciphertext swaps, provider mix-up, rate
//! limits, single-flight refresh, revocation at the provider.
//! One file per part of the checklist; the helpers they share are here.

mod checklist_integration;
mod checklist_unit;
mod overlapping_flows;
mod rate_limits;
mod refresh;
mod security;
mod token_storage;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use harbor_harness::evidence::{self, RedisEntry};
use harbor_harness::fake_provider::{Fault, CANARY_PREFIX};
use harbor_harness::fixtures::TenantWorkspace;
use harbor_harness::target::started::ServiceOptions;
use harbor_service::domain::{ConnectionId, Provider, TenantId, UserId, WorkspaceId};
use harbor_service::lifecycle::ConnectionStatus;
use harbor_service::ratelimit::{Quota, RateLimits};
use harbor_service::vault::{self, KeyRing, TokenBinding, TokenField};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};

use crate::helpers::{spawn_app, spawn_app_with, Reply, TestApp};

struct Row {
    id: ConnectionId,
    tenant: TenantId,
    grant: Option<uuid::Uuid>,
    status: String,
    access: Option<Vec<u8>>,
    refresh: Option<Vec<u8>>,
    key_id: Option<String>,
}

async fn row(app: &TestApp, w: WorkspaceId, p: Provider) -> Row {
    let (id, tenant, grant, status, access, refresh, key_id) = sqlx::query_as(
        "SELECT id, tenant_id, grant_id, status, access_token, refresh_token, token_key_id FROM connections \
         WHERE workspace_id = $1 AND provider = $2",
    )
    .bind(w)
    .bind(p.as_str())
    .fetch_one(app.db())
    .await
    .unwrap();
    Row {
        id,
        tenant,
        grant,
        status,
        access,
        refresh,
        key_id,
    }
}

fn decrypt(
    ring: &KeyRing,
    r: &Row,
    p: Provider,
    field: TokenField,
    sealed: &[u8],
) -> Result<String, vault::VaultError> {
    let binding = TokenBinding {
        tenant_id: r.tenant,
        connection_id: r.id,
        provider: p,
        field,
        grant_id: r.grant,
    };
    ring.decrypt(sealed, &binding)
        .map(|s| s.expose_secret().to_owned())
}

/// The harness's defaults with a tenant rate limit of `per_minute`, `burst` at once.
fn tenant_quota(per_minute: u32, burst: u32) -> ServiceOptions {
    let defaults = ServiceOptions::default();
    ServiceOptions {
        rate_limits: RateLimits {
            per_tenant: Quota { per_minute, burst },
            ..defaults.rate_limits
        },
        ..defaults
    }
}

async fn state_keys(app: &TestApp) -> Vec<RedisEntry> {
    evidence::redis_dump(&app.sut.env.redis_url, &app.sut.env.redis_key_prefix)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.key.contains("oauth:state:"))
        .collect()
}

async fn callback(
    app: &TestApp,
    user: uuid::Uuid,
    p: Provider,
    consent: &harbor_harness::fake_provider::Consent,
) -> Reply {
    app.call(
        Method::GET,
        format!("/v1/oauth/{p}/callback?{}", consent.callback_query()),
    )
    .as_user(user)
    .send()
    .await
}

async fn sync(app: &TestApp, t: &TenantWorkspace, p: Provider, replica: usize) -> Reply {
    app.call(
        Method::POST,
        format!("/v1/workspaces/{}/connections/{p}/sync", t.workspace),
    )
    .as_user(t.member.0)
    .on_replica(replica)
    .send()
    .await
}

/// A user of `tenant` with no membership, written straight into the database.
async fn insert_user(app: &TestApp, id: uuid::Uuid, tenant: TenantId) {
    sqlx::query("INSERT INTO users (id, tenant_id, email) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(tenant)
        .bind(format!("{id}@example.test"))
        .execute(app.db())
        .await
        .unwrap();
}

/// The user's memberships and row deleted, straight in the database (a deprovisioned user).
async fn delete_user(app: &TestApp, user: UserId) {
    for sql in [
        "DELETE FROM memberships WHERE user_id = $1",
        "DELETE FROM users WHERE id = $1",
    ] {
        sqlx::query(sql).bind(user).execute(app.db()).await.unwrap();
    }
}

async fn audit_outcomes(app: &TestApp, action: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT outcome FROM audit_events WHERE action = $1 ORDER BY id")
        .bind(action)
        .fetch_all(app.db())
        .await
        .unwrap()
}
