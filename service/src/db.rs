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
use crate::domain::Actor;
use crate::error::ApiError;

/// The service's schema migrations, embedded at build time. The harness migrates its template
/// database with the same migrator.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A request's transaction.
pub type Tx = Transaction<'static, Postgres>;

/// Opens the pool described by the configuration.
pub async fn connect(config: &Config) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(config.database_url.expose_secret())?.application_name("harbor-service");
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(options)
        .await
}

/// Begins a transaction, tagged with the request's actor when there is one.
pub async fn begin(pool: &PgPool, actor: Option<&Actor>) -> Result<Tx, ApiError> {
    let mut tx = pool.begin().await?;
    if let Some(actor) = actor {
        sqlx::query("SELECT set_config('application_name', $1, true)")
            .bind(actor.application_name())
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
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
