//! The migrated template database every isolated environment is cloned from.
//!
//! Its name carries a hash of the migrations, so a schema change gets a new template. Creation is
//! serialised across processes with an advisory lock on the admin database, since parallel test
//! processes share one server.

use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

use super::ProvisionError;

/// A connection to the admin (`postgres`) database.
pub(super) async fn admin_connection(admin_url: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect(admin_url).await
}

/// The admin URL with its database replaced by `database`.
pub(super) fn database_url(admin_url: &str, database: &str) -> String {
    match url::Url::parse(admin_url) {
        Ok(mut url) => {
            url.set_path(&format!("/{database}"));
            url.to_string()
        }
        Err(_) => admin_url.to_owned(),
    }
}

/// The password the harness gives the service's request role on the servers it uses (which are
/// test servers: the backends' own, or ones the user provided for tests).
const REQUEST_ROLE_PASSWORD: &str = "harbor-app-test-only";

/// A URL to `database` logged in as the service's request role, `harbor_app`.
pub(super) fn request_database_url(admin_url: &str, database: &str) -> String {
    match url::Url::parse(&database_url(admin_url, database)) {
        Ok(mut url) => {
            let _ = url.set_username("harbor_app");
            let _ = url.set_password(Some(REQUEST_ROLE_PASSWORD));
            url.to_string()
        }
        Err(_) => admin_url.to_owned(),
    }
}

fn template_name() -> String {
    let mut hasher = Sha256::new();
    for m in harbor_service::db::MIGRATOR.iter() {
        hasher.update(m.version.to_be_bytes());
        hasher.update(&*m.checksum);
    }
    format!("harbor_tpl_{}", &hex::encode(hasher.finalize())[..12])
}

/// Makes sure the template exists and is migrated; returns its name.
pub(super) async fn ensure(admin_url: &str) -> Result<String, ProvisionError> {
    let name = template_name();
    let mut admin = admin_connection(admin_url).await?;
    // Same key in every process: only one creates the template, the others wait and reuse it.
    sqlx::query("SELECT pg_advisory_lock(7265, 1)")
        .execute(&mut admin)
        .await?;
    let result = async {
        let ready: Option<bool> =
            sqlx::query_scalar("SELECT datistemplate FROM pg_database WHERE datname = $1")
                .bind(&name)
                .fetch_optional(&mut admin)
                .await?;
        if ready != Some(true) {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await?;
            let mut conn = PgConnection::connect(&database_url(admin_url, &name)).await?;
            harbor_service::db::MIGRATOR.run(&mut conn).await?;
            conn.close().await?;
            sqlx::query(&format!(
                "ALTER DATABASE {name} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
            ))
            .execute(&mut admin)
            .await?;
        }
        // The role is the cluster's, not the template's: give it a password the harness knows
        // (servers with password authentication need one; trust ignores it).
        sqlx::query(&format!(
            "ALTER ROLE harbor_app LOGIN PASSWORD '{REQUEST_ROLE_PASSWORD}'"
        ))
        .execute(&mut admin)
        .await?;
        Ok::<_, ProvisionError>(())
    }
    .await;
    sqlx::query("SELECT pg_advisory_unlock(7265, 1)")
        .execute(&mut admin)
        .await?;
    result.map(|()| name)
}
