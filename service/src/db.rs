//! The connection pool, migrations, and the one way a request opens and finishes a transaction.
//!
//! A request's transaction is tagged with its actor (`application_name = harbor:<actor>`) so the
//! harness can find its backend in the lock tables, and is always finished with [`finish`]: commit
//! on success, and on failure a rollback that has *completed* before the error response is written.
//! (sqlx only queues the rollback of a dropped transaction; the advisory lock would outlive the
//! response.)
//!
//! Failures are [`DbError`]s, which say what kind of failure it was (the database out of reach, a
//! lock not granted in time, anything else); [`crate::error`] decides what a client is told.

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;

use crate::config::Config;
use crate::domain::{Actor, TenantId};

/// The service's schema migrations, embedded at build time. The harness migrates its template
/// database with the same migrator.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A request's transaction.
pub type Tx = Transaction<'static, Postgres>;

/// A database failure, by what it means for the request that met it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No pooled connection could be had in time, or the request's connection broke under it (the
    /// network, a restart, a terminated backend: SQLSTATE 57P01–57P03). The whole replica (or the
    /// database) is short, not one workspace; nothing of the transaction was committed.
    #[error(transparent)]
    Unavailable(sqlx::Error),
    /// `lock_timeout` expired while waiting for a lock (SQLSTATE 55P03 `lock_not_available`): the
    /// workspace is busy, or the caller's membership is being changed (a request queues behind a
    /// pending removal or demotion, migration 0016).
    #[error(transparent)]
    LockTimeout(sqlx::Error),
    /// Any other failure.
    #[error(transparent)]
    Failed(sqlx::Error),
}

/// Whether `e` says the connection is gone (the network, a restart, a terminated backend:
/// SQLSTATE 57P01–57P03), as opposed to a statement that failed on a live one.
fn connection_lost(e: &sqlx::Error) -> bool {
    let code = e.as_database_error().and_then(|d| d.code());
    matches!(e, sqlx::Error::Io(_)) || code.as_deref().is_some_and(|c| c.starts_with("57P0"))
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        let code = e.as_database_error().and_then(|d| d.code());
        let lost = connection_lost(&e);
        let lock_not_available = code.as_deref() == Some("55P03");
        if matches!(e, sqlx::Error::PoolTimedOut) || lost {
            DbError::Unavailable(e)
        } else if lock_not_available {
            DbError::LockTimeout(e)
        } else {
            DbError::Failed(e)
        }
    }
}

/// Why [`check_row_security`] refused the request role.
#[derive(Debug, thiserror::Error)]
pub enum RowSecurityError {
    /// The check itself could not run.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Requests would run outside row-level security, or could create objects where the owner's
    /// functions look names up; the message names the role and why.
    #[error("{0}")]
    Bypassed(String),
}

/// Opens the service's pool, logged in as the request role (`HARBOR_DATABASE_URL`): a role that
/// owns nothing, so row-level security applies to every query the service makes — and, since it
/// is its own login rather than a `SET ROLE` from the owner, `RESET ROLE` cannot widen it.
///
/// Its idle connections are handed out untested: [`begin`], the reads made outside a
/// transaction and the statements run alone (each one that may be repeated: a read, a
/// settlement that writes its audit row only when it found its intent) go through
/// [`retry_lost`]. (The outbox worker's adoption begins through it too; its statements, which
/// wait for the workspace lock, are not repeated: on a dead connection one fails once, and its
/// intent waits for its lease.)
pub async fn connect(config: &Config) -> Result<PgPool, sqlx::Error> {
    connect_sized(config, config.database_max_connections).await
}

/// How many connections the write-ahead pool holds: as many provider calls that issue a grant
/// (a callback's exchange, a rotating refresh) can run at once on one replica.
pub const WRITE_AHEAD_CONNECTIONS: u32 = 16;

/// The write-ahead pool: the request role again, but a pool of its own. Its connection is taken
/// before the provider call that issues a grant, so that what the provider issues is made durable
/// without waiting for a connection after the call (under load, that wait let a dying replica take
/// a hundred grants of a thousand flows with it); being its own pool, the calls it waits through
/// never starve request traffic. A connection must not turn out dead only after the provider has
/// answered, so each is known alive before the call, but not by a test of the pool's at every
/// hand-out (a round trip of every callback's): the callback's write-ahead begins on it
/// ([`begin`], which replaces a dead one) before its exchange, and a refresh, which sends nothing
/// on it before the provider is called, takes it through [`tested_connection`].
pub async fn connect_write_ahead(config: &Config) -> Result<PgPool, sqlx::Error> {
    connect_sized(config, WRITE_AHEAD_CONNECTIONS).await
}

/// A pooled connection known to be alive: taken and pinged (one round trip, no query), another
/// taken as long as the one it got turns out dead ([`retry_lost`]). For a connection held
/// through a provider call before anything is sent on it.
pub async fn tested_connection(
    pool: &PgPool,
) -> Result<sqlx::pool::PoolConnection<Postgres>, sqlx::Error> {
    retry_lost(pool, || async {
        let mut conn = pool.acquire().await?;
        sqlx::Connection::ping(&mut *conn).await?;
        Ok(conn)
    })
    .await
}

/// Runs `attempt` — a `BEGIN`, or one statement that may be repeated and waits for no lock
/// longer than the session's `lock_timeout` — on a pooled connection, and again on another as
/// long as the one it got turns out dead.
///
/// The request pool hands out its idle connections untested (`test_before_acquire(false)`): a
/// test is a round trip before every transaction, about one in six of a request's
/// (`harbor-certify db-cost`). Every connection was tested when it came back to the pool (sqlx
/// pings on release), so the only ones that can be dead are those that died idle — a restarted
/// server, a terminated backend, a link reset. Such a connection fails at once, and sqlx closes
/// it instead of returning it.
/// - Every idle connection may have died together: another attempt is made while the pool had
///   idle connections to offer, and once more after the pool had none (that attempt opened a
///   connection, or waited for one to come back). A connection that cannot even be opened is the
///   database out of reach, not a dead idle one, and is not tried again and again.
/// - A link that died without a reset, or a server that stopped answering, fails nothing: the
///   attempt would wait for it. Each attempt is bounded by the pool's acquire timeout, as the
///   test it replaces was, and one that runs out is answered as the pool's
///   [`sqlx::Error::PoolTimedOut`] (503 `DATABASE_UNAVAILABLE`).
pub async fn retry_lost<T, F, Fut>(pool: &PgPool, attempt: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    retry_lost_within(pool, Some(pool.options().get_acquire_timeout()), attempt).await
}

/// [`retry_lost`] for one statement run alone that may wait for row locks as well as for the
/// pool (a sync's store, `documents::STORE`): its attempts are not bounded by the pool's acquire
/// timeout, which a statement queued behind a row's holder could outlast without anything being
/// wrong, and which would then answer 503 while the statement, dropped mid-flight, still ran to
/// its commit (sqlx waits for a dropped statement's end before it reuses the connection). Each of
/// its lock waits ends at the session's `lock_timeout` (when it is on), the pool's own wait at
/// its acquire timeout; a link that dies without a reset and never answers holds the attempt until the
/// request's timeout, as the statement after a `BEGIN` always could.
pub async fn retry_lost_waiting<T, F, Fut>(pool: &PgPool, attempt: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    retry_lost_within(pool, None, attempt).await
}

async fn retry_lost_within<T, F, Fut>(
    pool: &PgPool,
    bound: Option<std::time::Duration>,
    mut attempt: F,
) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut attempts = 0;
    let mut tried_without_idle = false;
    loop {
        let idle_before = pool.num_idle();
        attempts += 1;
        let result = match bound {
            Some(bound) => match tokio::time::timeout(bound, attempt()).await {
                Ok(result) => result,
                Err(_) => Err(sqlx::Error::PoolTimedOut),
            },
            None => attempt().await,
        };
        match result {
            Err(e)
                if connection_lost(&e)
                    && attempts <= pool.options().get_max_connections()
                    && (idle_before > 0 || !tried_without_idle) =>
            {
                tried_without_idle |= idle_before == 0;
                tracing::debug!(error = %e, "a pooled connection was dead; trying another");
            }
            other => return other,
        }
    }
}

async fn connect_sized(config: &Config, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let mut options = PgConnectOptions::from_str(config.database_url.expose_secret())?;
    // A name given in the URL wins (the harness names each replica's connections).
    if options.get_application_name().is_none() {
        options = options.application_name("harbor-service");
    }
    // A backend whose client is gone (a cut link, a killed replica) stops within a second even
    // while it waits for a lock, and its transaction's locks go with it: PostgreSQL otherwise
    // notices a vanished client only when it next writes to it, and a wait for a row lock can
    // last as long as its holder. (A startup parameter: no round trip.) Found by
    // `explore --depth 3`: an activation queued behind another session's row lock outlived a
    // database cut.
    // The lock timeout is a startup parameter too: no `SET` round trip on each new connection,
    // and pools reconnect after every fault `explore` injects.
    options = options.options([
        ("client_connection_check_interval", "1s".to_owned()),
        ("lock_timeout", lock_timeout_millis(config.lock_timeout)),
    ]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(config.database_acquire_timeout)
        // Idle connections are handed out untested; see `retry_lost` and `tested_connection`.
        .test_before_acquire(false)
        .connect_with(options)
        .await
}

/// Refuses to serve if a request session could step outside row-level security altogether, even
/// after `RESET ROLE`: the session's login role must be subject to the policies, and must not be —
/// or be able to become — a superuser, a `BYPASSRLS` role, a `CREATEROLE` role (which could grant
/// itself the owner) or the tables' owner. (It does not stop code running in a session from setting
/// `harbor.tenant_id` to another tenant: the policies scope by that setting, which the service sets
/// from the caller's membership. RLS guards against forgotten filters, not against arbitrary SQL.)
///
/// Nor may it — or any role it may become with `SET ROLE`, inherited or not — create objects in
/// schema `public`: the owner's settlement function looks names up there (migration 0019), after
/// `pg_catalog`, and an object planted in `public` could stand in for one it means. (The function
/// names its tables and its one call in full, so today nothing could; the check keeps a later edit
/// of its body from depending on that.)
pub async fn check_row_security(pool: &PgPool) -> Result<(), RowSecurityError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("RESET ROLE").execute(&mut *conn).await?;
    let (role, active, widening, creates_in_public): (String, bool, Vec<String>, bool) =
        sqlx::query_as(
            "SELECT session_user::text, row_security_active('connections'), \
               ARRAY(SELECT r.rolname::text FROM pg_roles r \
                     WHERE pg_has_role(session_user, r.oid, 'MEMBER') \
                       AND (r.rolsuper OR r.rolbypassrls OR r.rolcreaterole \
                            OR r.oid = (SELECT relowner FROM pg_class WHERE oid = 'connections'::regclass)) \
                     ORDER BY 1), \
               EXISTS (SELECT 1 FROM pg_roles r \
                       WHERE pg_has_role(session_user, r.oid, 'MEMBER') \
                         AND has_schema_privilege(r.oid, 'public', 'CREATE'))",
        )
        .fetch_one(&mut *conn)
        .await?;
    if !(active && widening.is_empty()) {
        return Err(RowSecurityError::Bypassed(format!(
            "requests would log in as {role:?}, which bypasses row-level security or can become {widening:?}; \
             set HARBOR_DATABASE_URL to a role that owns nothing and is not a member of the owner (harbor_app)"
        )));
    }
    if creates_in_public {
        return Err(RowSecurityError::Bypassed(format!(
            "requests would log in as {role:?}, which can create objects in schema public, where the owner's \
             functions look names up; revoke CREATE ON SCHEMA public from it and from the roles it belongs to"
        )));
    }
    Ok(())
}

/// Opens a pool as the schema owner (`HARBOR_MIGRATION_DATABASE_URL`): for migrations and key
/// rotation, which must see every tenant. Request handling never uses it.
pub async fn connect_owner(
    config: &Config,
    max_connections: u32,
) -> Result<Option<PgPool>, sqlx::Error> {
    let Some(url) = &config.migration_database_url else {
        return Ok(None);
    };
    let options =
        PgConnectOptions::from_str(url.expose_secret())?.application_name("harbor-service-owner");
    PgPoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options)
        .await
        .map(Some)
}

/// Begins a transaction like [`begin`] on a connection already held (the write-ahead's, taken
/// before a provider call so that nothing waits for a pooled connection after it).
pub async fn begin_on<'c>(
    conn: &'c mut sqlx::pool::PoolConnection<Postgres>,
    actor: Option<&Actor>,
    tenant: TenantId,
) -> Result<Transaction<'c, Postgres>, DbError> {
    use sqlx::Connection;
    Ok(conn.begin_with(begin_statement(actor, tenant)).await?)
}

/// Begins a transaction scoped to `tenant` for row-level security (`harbor.tenant_id`), and
/// tagged with the request's actor when there is one. A member's request to a workspace route
/// opens its transaction through [`crate::request_tx::WorkspaceRequest::begin`] instead, which
/// learns the tenant inside it.
pub async fn begin(pool: &PgPool, actor: Option<&Actor>, tenant: TenantId) -> Result<Tx, DbError> {
    let statement = begin_statement(actor, tenant);
    Ok(retry_lost(pool, || pool.begin_with(statement.clone())).await?)
}

/// The `application_name` a transaction of `actor`'s carries: its tag, or `harbor-service` when
/// the request has none.
pub(crate) fn application_name(actor: Option<&Actor>) -> String {
    actor
        .map(Actor::application_name)
        .unwrap_or_else(|| "harbor-service".to_owned())
}

/// A `FROM` item that scopes a statement run alone (no transaction of its own) to the tenant in
/// parameter `$tenant` and tags it with the `application_name` in `$tag`: the row it yields is
/// produced only once both settings are made (`set_config` is volatile, so the item is never
/// dropped), and a row inserted from it is checked by row-level security after them. Settings
/// made so last until the statement's implicit transaction ends. For a lone statement that must
/// write in a tenant's scope, it saves the round trips of [`begin`] and of the `COMMIT`.
pub(crate) fn scoped_to(tenant: usize, tag: usize) -> String {
    format!(
        "(SELECT set_config('harbor.tenant_id', ${tenant}::text, true), \
          set_config('application_name', ${tag}, true)) AS scoped"
    )
}

/// `BEGIN` and the transaction's settings in one simple query, one round trip. PostgreSQL parses
/// and plans its `SELECT` every time (a simple query cannot be prepared): on this host's local
/// servers that costs more CPU than the round trip it saves (benches/README.md). A member's
/// request to a workspace route therefore begins bare, and its first statement takes the tag as
/// a parameter ([`crate::request_tx::WorkspaceRequest::begin`], migration 0017); the
/// transactions here each start with a different statement, 2–3 of a flow's 8. The simple
/// protocol takes no parameters, so the values are written into the text; both are of a closed
/// alphabet — a UUID, and `Actor`'s 1–32 characters of `A-Z a-z 0-9 _ -` (checked when it is
/// parsed) — and quotes are doubled all the same.
fn begin_statement(actor: Option<&Actor>, tenant: TenantId) -> String {
    let application = application_name(actor).replace('\'', "''");
    format!(
        "BEGIN; SELECT set_config('harbor.tenant_id', '{}', true), set_config('application_name', '{application}', true)",
        tenant.0
    )
}

/// Every pooled session's `lock_timeout` (see `Config::lock_timeout`), in milliseconds as its
/// startup parameter takes it (0 disables the timeout, as in PostgreSQL itself, so a fraction of a
/// millisecond rounds up).
pub(crate) fn lock_timeout_millis(timeout: std::time::Duration) -> String {
    crate::config::millis(timeout).to_string()
}

/// What became of the transaction whose id `pg_current_xact_id()` gave as `xid`, when its
/// commit's reply never arrived: `Some(true)` committed (and visible: PostgreSQL answers
/// `committed` only once the transaction is no longer in progress), `Some(false)` aborted, `None`
/// not known — the server cannot be asked, or the transaction is still in progress after twenty
/// askings 100 ms apart (a commit being made durable, or a session whose client the server has
/// not yet found gone), or the id is too old for the server to remember. Each asking may wait for
/// the pool: the caller bounds the whole.
pub async fn commit_status(pool: &PgPool, xid: i64) -> Option<bool> {
    for asked in 1..=20 {
        // A read that repeats harmlessly, so a dead idle connection (the likeliest kind right
        // after a commit failed) is replaced at once rather than costing an asking and a pause.
        let status: Result<Option<String>, sqlx::Error> = retry_lost(pool, || {
            sqlx::query_scalar("SELECT pg_xact_status($1::bigint::text::xid8)")
                .bind(xid)
                .fetch_one(pool)
        })
        .await;
        match status.as_ref().map(|s| s.as_deref()) {
            Ok(Some("committed")) => return Some(true),
            Ok(Some("aborted")) => return Some(false),
            Ok(None) => return None,
            // In progress, or the server did not answer: asked again.
            Ok(Some(_)) | Err(_) => {}
        }
        if asked < 20 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    None
}

/// Finishes a request's transaction: commits on `Ok`; on `Err` rolls back and waits for the
/// rollback, so every lock the transaction held is gone before the caller writes its response.
/// Generic over the caller's error type, which must be able to say that the commit failed.
pub async fn finish<T, E: From<DbError>>(
    tx: Transaction<'_, Postgres>,
    result: Result<T, E>,
) -> Result<T, E> {
    match result {
        Ok(value) => {
            tx.commit().await.map_err(|e| E::from(DbError::from(e)))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_statement_carries_the_tenant_and_the_tag_in_one_query() {
        let tenant = TenantId(uuid::Uuid::nil());
        let actor = Actor::parse("A-1_x").expect("a valid tag");
        assert_eq!(
            begin_statement(Some(&actor), tenant),
            "BEGIN; SELECT set_config('harbor.tenant_id', '00000000-0000-0000-0000-000000000000', true), set_config('application_name', 'harbor:A-1_x', true)"
        );
        assert!(begin_statement(None, tenant).ends_with("'harbor-service', true)"));
        assert!(
            Actor::parse("x'; DROP TABLE t; --").is_err(),
            "a tag can never carry a quote"
        );
    }

    #[test]
    fn a_sub_millisecond_lock_timeout_stays_a_timeout() {
        use std::time::Duration;
        assert_eq!(lock_timeout_millis(Duration::from_micros(300)), "1");
        assert_eq!(lock_timeout_millis(Duration::from_micros(1500)), "2");
        assert_eq!(lock_timeout_millis(Duration::from_millis(300)), "300");
        assert_eq!(
            lock_timeout_millis(Duration::ZERO),
            "0",
            "0 still disables it"
        );
    }
}
