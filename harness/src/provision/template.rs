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

/// The template of a target's own schema: `schema`'s SQL applied as the owner, the request role
/// given `SELECT, INSERT, UPDATE, DELETE` on its tables and the use of its sequences. Named after
/// the SQL's digest, so a changed schema gets a new template.
pub(super) async fn ensure_schema(admin_url: &str, schema: &str) -> Result<String, ProvisionError> {
    let name = format!(
        "harbor_tpl_s_{}",
        &hex::encode(Sha256::digest(schema.as_bytes()))[..12]
    );
    let grants = "DO $$ BEGIN \
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'harbor_app') THEN \
             CREATE ROLE harbor_app NOLOGIN; \
           END IF; \
         END $$; \
         GRANT USAGE ON SCHEMA public TO harbor_app; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO harbor_app; \
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO harbor_app;";
    let apply = |mut conn: PgConnection| async move {
        use sqlx::Executor as _;
        conn.execute(sqlx::raw_sql(schema)).await?;
        conn.execute(sqlx::raw_sql(grants)).await?;
        conn.close().await
    };
    ensure_named(admin_url, name, apply).await
}

/// Makes sure the template exists and is migrated; returns its name.
pub(super) async fn ensure(admin_url: &str) -> Result<String, ProvisionError> {
    let migrate = |mut conn: PgConnection| async move {
        harbor_service::db::MIGRATOR.run(&mut conn).await?;
        conn.close().await?;
        Ok::<_, ProvisionError>(())
    };
    ensure_named(admin_url, template_name(), migrate).await
}

/// Makes sure template `name` exists, made by `fill` on a connection to it when it does not;
/// returns its name.
async fn ensure_named<F, Fut, E>(
    admin_url: &str,
    name: String,
    fill: F,
) -> Result<String, ProvisionError>
where
    F: FnOnce(PgConnection) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    ProvisionError: From<E>,
{
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
            let conn = PgConnection::connect(&database_url(admin_url, &name)).await?;
            fill(conn).await?;
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
