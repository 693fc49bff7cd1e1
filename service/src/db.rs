//! The connection pool, migrations, and the one way a request opens and finishes a transaction.
//!
//! A request's transaction is tagged with its actor (`application_name = harbor:<actor>`) so the
//! harness can find its backend in the lock tables, and is always finished with [`finish`]: commit
//! on success, and on failure a rollback that has *completed* before the error response is written.
//! (sqlx only queues the rollback of a dropped transaction; the advisory lock would outlive the
//! response.)

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;

use crate::config::Config;
use crate::domain::{Actor, TenantId};
use crate::error::ApiError;

/// The service's schema migrations, embedded at build time. The harness migrates its template
/// database with the same migrator.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A request's transaction.
pub type Tx = Transaction<'static, Postgres>;

/// Opens the service's pool: every session runs as the configured non-owner role, so row-level
/// security applies to every query the service makes.
pub async fn connect(config: &Config) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(config.database_url.expose_secret())?.application_name("harbor-service");
    let role = config.database_role.clone();
    let lock_timeout = lock_timeout_statement(config.lock_timeout);
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .after_connect(move |conn, _| {
            let role = role.clone();
            let lock_timeout = lock_timeout.clone();
            Box::pin(async move {
                sqlx::query(&lock_timeout).execute(&mut *conn).await?;
                if let Some(role) = role {
                    // The name is checked by `Config::validate` ([A-Za-z0-9_]+), so quoting is enough.
                    sqlx::query(&format!("SET ROLE \"{role}\"")).execute(conn).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
}

/// Refuses to serve if requests would bypass row-level security: the session role must be one
/// the policies apply to (not the tables' owner, not a superuser, not `BYPASSRLS`).
pub async fn check_row_security(pool: &PgPool) -> Result<(), crate::app::StartupError> {
    let (role, active): (String, bool) =
        sqlx::query_as("SELECT current_user::text, row_security_active('connections')").fetch_one(pool).await?;
    if active {
        Ok(())
    } else {
        Err(crate::app::StartupError::RowSecurity(format!(
            "requests would run as {role:?}, which bypasses row-level security; set HARBOR_DATABASE_ROLE to a non-owner role (harbor_app)"
        )))
    }
}

/// Opens a pool as the login role itself (the schema owner): for migrations and key rotation,
/// which must see every tenant. Request handling never uses it.
pub async fn connect_owner(config: &Config, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options =
        PgConnectOptions::from_str(config.database_url.expose_secret())?.application_name("harbor-service-owner");
    PgPoolOptions::new().max_connections(max_connections).connect_with(options).await
}

/// Begins a request's transaction: scoped to `tenant` for row-level security
/// (`harbor.tenant_id`), and tagged with the request's actor when there is one.
pub async fn begin(pool: &PgPool, actor: Option<&Actor>, tenant: TenantId) -> Result<Tx, ApiError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('harbor.tenant_id', $1, true), set_config('application_name', $2, true)")
        .bind(tenant.to_string())
        .bind(actor.map(Actor::application_name).unwrap_or_else(|| "harbor-service".to_owned()))
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Sets every pooled session's `lock_timeout` (see `Config::lock_timeout`).
pub(crate) fn lock_timeout_statement(timeout: std::time::Duration) -> String {
    // 0 disables the timeout, as in PostgreSQL itself.
    format!("SET lock_timeout = {}", timeout.as_millis())
}

/// Finishes a request's transaction: commits on `Ok`; on `Err` rolls back and waits for the
/// rollback, so every lock the transaction held is gone before the caller writes its response.
pub async fn finish<T>(tx: Tx, result: Result<T, ApiError>) -> Result<T, ApiError> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(error) => {
            if let Err(rollback) = tx.rollback().await {
                // The connection is unusable; sqlx closes it rather than return it to the pool,
                // which ends the session and with it every lock.
                tracing::error!(error = %rollback, "rollback failed");
            }
            Err(error)
        }
    }
}
