//! `harbor-certify serve`: the reference service, ready to poke, in one command — PostgreSQL and
//! Redis from the usual backends, N replicas with the fake OAuth provider, a demo tenant with an
//! owner and a member, another tenant to try cross-tenant access with, and bearer tokens for all
//! three. [`Demo`] is what gets printed and written to the `--env-file`.

use std::fmt::Write as _;
use std::path::Path;

use harbor_service::domain::WorkspaceId;
use harbor_service::lifecycle::ConnectionStatus;

use super::Started;
use crate::fixtures::TenantWorkspace;
use crate::identity::TokenKind;

/// The running demo: where it is and who can call it.
#[derive(Clone, Debug)]
pub struct Demo {
    /// Each replica's base URL (replica 0 first).
    pub base_urls: Vec<String>,
    /// The fake OAuth provider's base URL (its consent pages answer with redirects).
    pub provider_url: String,
    /// The demo workspace (entitled, nothing connected yet).
    pub workspace: WorkspaceId,
    /// A bearer token of the demo workspace's owner (valid 24 h).
    pub owner_token: String,
    /// A bearer token of the demo workspace's plain member (valid 24 h).
    pub member_token: String,
    /// The other tenant's workspace.
    pub other_workspace: WorkspaceId,
    /// A bearer token of a verified user of another tenant: every demo-workspace route must
    /// answer it 403 or 404.
    pub other_tenant_token: String,
    /// Where the target publishes its OpenAPI document (`None`: it publishes none).
    pub openapi_url: Option<String>,
    /// The reference service (its routes, for the printed walk-through), not a profile's target.
    pub reference: bool,
}

impl Demo {
    /// Seeds the demo tenants on a running target (through its fixtures: the reference's, or a
    /// profile's) and mints their tokens (with its claims).
    pub async fn seed(sut: &Started) -> Result<Self, String> {
        use crate::target::{Target, TenantSpec};
        let spec = |name: &str| TenantSpec {
            name: name.to_owned(),
            entitled: true,
            qbo: ConnectionStatus::NotConnected,
        };
        let demo = sut.create_tenant(&spec("demo")).await?;
        let other = sut.create_tenant(&spec("other")).await?;
        let token = |user: harbor_service::domain::UserId| sut.bearer(user, TokenKind::LongLived);
        Ok(Self {
            base_urls: sut.replicas.iter().map(|r| r.base_url.clone()).collect(),
            provider_url: sut.provider.base_url().to_owned(),
            workspace: demo.workspace,
            owner_token: token(demo.owner),
            member_token: token(demo.member),
            other_workspace: other.workspace,
            other_tenant_token: token(other.owner),
            openapi_url: match &sut.profile {
                None => Some(format!("{}/openapi.json", sut.replicas[0].base_url)),
                Some(p) => p
                    .openapi
                    .as_ref()
                    .map(|path| format!("{}{path}", sut.replicas[0].base_url)),
            },
            reference: sut.profile.is_none(),
        })
    }

    /// `NAME=value` lines for shells and tools (`set -a; . FILE`).
    pub fn env_lines(&self) -> String {
        format!(
            "HARBOR_BASE_URL={}\nHARBOR_BASE_URLS={}\nHARBOR_OPENAPI_URL={}\nHARBOR_WORKSPACE_ID={}\n\
             HARBOR_OWNER_TOKEN={}\nHARBOR_MEMBER_TOKEN={}\nHARBOR_OTHER_WORKSPACE_ID={}\nHARBOR_OTHER_TENANT_TOKEN={}\n\
             HARBOR_FAKE_PROVIDER_URL={}\n",
            self.base_urls[0],
            self.base_urls.join(","),
            self.openapi_url.as_deref().unwrap_or(""),
            self.workspace,
            self.owner_token,
            self.member_token,
            self.other_workspace,
            self.other_tenant_token,
            self.provider_url,
        )
    }

    /// Writes [`Demo::env_lines`] (owner tokens, database URLs) to `path` as a secret file.
    pub fn write_env_file(&self, path: &Path) -> std::io::Result<()> {
        crate::secret_file::write_secret_file(path, self.env_lines().as_bytes())
    }

    /// What to print: the URLs, the ids, and `curl` lines that walk one connection from authorize
    /// to activation.
    pub fn instructions(&self, env_file: Option<&Path>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Harbor reference service: {} replica(s)",
            self.base_urls.len()
        );
        for (i, url) in self.base_urls.iter().enumerate() {
            let _ = writeln!(out, "  replica {i}: {url}");
        }
        if let Some(url) = &self.openapi_url {
            let _ = writeln!(out, "  OpenAPI:   {url}");
        }
        let _ = writeln!(out, "  fake OAuth provider: {}", self.provider_url);
        let _ = writeln!(
            out,
            "  demo workspace {} (entitled; QuickBooks not connected)",
            self.workspace
        );
        match env_file {
            Some(path) => {
                let _ = writeln!(
                    out,
                    "\nEnvironment written to {} — load it with:\n  set -a; . {}; set +a",
                    path.display(),
                    path.display()
                );
            }
            None => {
                let _ = writeln!(out, "\nEnvironment (or pass --env-file FILE):\n");
                for line in self.env_lines().lines() {
                    let _ = writeln!(out, "  export {line}");
                }
            }
        }
        // The walk-through uses the reference's routes; a profile's target has its own.
        if !self.reference {
            let _ = writeln!(
                out,
                "\nStop with Ctrl-C (or end of standard input); everything started is removed."
            );
            return out;
        }
        let _ = writeln!(
            out,
            r#"
Walk a connection (owner token; the fake provider consents at once and redirects to the
registered https://harbor.test/... URI, whose query goes to the service's callback):

  H="Authorization: Bearer $HARBOR_OWNER_TOKEN"; W="$HARBOR_BASE_URL/v1/workspaces/$HARBOR_WORKSPACE_ID"
  AUTH=$(curl -s -X POST -H "$H" "$W/connections/qbo/authorize" | sed -E 's/.*"authorization_url":"([^"]*)".*/\1/')
  QUERY=$(curl -s -o /dev/null -w '%{{redirect_url}}' "$AUTH" | cut -d'?' -f2)
  curl -s -H "$H" "$HARBOR_BASE_URL/v1/oauth/qbo/callback?$QUERY"; echo
  curl -s -X POST -H "$H" "$W/connections/qbo/sync"; echo
  curl -s -X POST -H "$H" "$W/activation"; echo
  curl -s -H "Authorization: Bearer $HARBOR_OTHER_TENANT_TOKEN" "$W/connections"; echo   # 404: not your workspace

Stop with Ctrl-C (or end of standard input); everything started is removed."#
        );
        out
    }
}

/// Waits for SIGINT, SIGTERM or the end of standard input — a parent that dies without signalling
/// (a CI timeout) closes our standard input, so what we hold never outlives whoever asked for it.
pub async fn hold_until_stopped() {
    let stdin_closed = async {
        use tokio::io::AsyncReadExt;
        let mut sink = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        _ = harbor_service::telemetry::shutdown_signal() => {}
        _ = stdin_closed => {}
    }
}

/// Tenants for a load generator in another process (`harbor-load --external`, the macro bench):
/// what `serve --bench-file` writes. Tokens are long-lived (24 h) and signed by the stand-in
/// gateway the replicas trust.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BenchTenants {
    /// Each replica's base URL.
    pub base_urls: Vec<String>,
    /// The scenario database, logged in as the service's request role (the raw ceiling's login).
    pub request_database_url: String,
    /// The same database as its owner (fixtures and invariants).
    pub database_url: String,
    /// Entitled workspaces with QuickBooks connected through the OAuth flow: activation's load.
    pub activation: Vec<BenchUser>,
    /// Entitled workspaces with nothing connected: one per goose user of the OAuth flow.
    pub flows: Vec<BenchUser>,
}

/// One tenant's workspace and its owner's token.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BenchUser {
    /// The tenant, workspace and users.
    pub tenant: TenantWorkspace,
    /// The owner's bearer token.
    pub token: String,
}

impl BenchTenants {
    /// Makes `activation` connected and `flows` unconnected tenants on the running service.
    pub async fn seed(sut: &Started, activation: usize, flows: usize) -> Result<Self, sqlx::Error> {
        let activation = bench_users(
            sut,
            "bench-act-",
            activation,
            ConnectionStatus::NotConnected,
        )
        .await?;
        // Connected through the real OAuth flow, so they hold tokens like any connected workspace
        // (the load's invariants hold for every row).
        for u in &activation {
            crate::target::connect(
                sut,
                u.tenant.owner,
                u.tenant.workspace,
                harbor_service::domain::Provider::Qbo,
            )
            .await
            .map_err(|e| sqlx::Error::Protocol(format!("connecting a bench workspace: {e}")))?;
        }
        let flows = bench_users(sut, "bench-flow-", flows, ConnectionStatus::NotConnected).await?;
        Ok(Self {
            base_urls: sut.replicas.iter().map(|r| r.base_url.clone()).collect(),
            request_database_url: sut.env.request_database_url.clone(),
            database_url: sut.env.database_url.clone(),
            activation,
            flows,
        })
    }

    /// Writes it as JSON (tokens, database URLs) to `path` as a secret file.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::secret_file::write_secret_file(
            path,
            &serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )
    }
}

async fn bench_users(
    sut: &Started,
    prefix: &str,
    n: usize,
    status: ConnectionStatus,
) -> Result<Vec<BenchUser>, sqlx::Error> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let tenant =
            TenantWorkspace::create(&sut.db, &format!("{prefix}{i}"), true, status).await?;
        let token = sut.tokens.token(tenant.owner.0, TokenKind::LongLived);
        out.push(BenchUser { tenant, token });
    }
    Ok(out)
}
