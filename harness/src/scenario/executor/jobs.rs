//! Jobs: what a launched step does once it is off on its own task — HTTP through the one
//! [`ApiClient`], or SQL in the actor's own session. A job owns everything it needs, so it can run
//! in the background while the executor goes on.

use futures::future::BoxFuture;
use harbor_service::domain::{Provider, TenantId};
use serde_json::Value;
use sqlx::{Executor as _, PgConnection};

use crate::client::{ApiClient, Call};
use crate::scenario::outcome::Outcome;

/// What a job produced, and the SQL session to keep for the actor's next statement.
pub type JobResult = (Outcome, Option<PgConnection>);

/// A launched step's work.
pub enum Job {
    /// An HTTP exchange (or two, for authorize/connect).
    Http(HttpJob),
    /// SQL in the actor's session.
    Sql(SqlJob),
}

/// What an HTTP job sends.
pub enum HttpJob {
    /// One request.
    Plain(Call),
    /// Authorize, then consent at the provider (the consent is kept for a later callback).
    Authorize(Call),
    /// Deliver a consent to the callback; `None` when there is none to deliver.
    Callback(Option<Call>),
    /// Authorize and consent, then deliver the consent to the callback on `callback_replica`.
    Connect {
        /// The authorize request.
        authorize: Call,
        /// The client for the callback.
        client: ApiClient,
        /// Its provider.
        provider: Provider,
        /// Where the callback goes.
        callback_replica: usize,
        /// The token and actor the callback carries.
        bearer: Option<String>,
        /// The actor tag.
        actor: String,
    },
}

/// A SQL statement in an actor's session.
pub struct SqlJob {
    /// The actor's session.
    pub conn: PgConnection,
    /// The statement(s), placeholders resolved.
    pub sql: String,
    /// Return the rows (as JSON) rather than just run it.
    pub rows: bool,
    /// Run as this role.
    pub role: Option<String>,
    /// With row-level security set to this tenant.
    pub tenant: Option<TenantId>,
}

/// Runs a job. Boxed with an explicit `Send` so the spawned futures' lifetimes are concrete (a
/// known limit of the compiler's Send inference for async fns taking references).
pub fn run_job(job: Job) -> BoxFuture<'static, JobResult> {
    Box::pin(async move {
        match job {
            Job::Http(job) => (run_http(job).await, None),
            Job::Sql(job) => run_sql(job).await,
        }
    })
}

/// Runs an HTTP job to its outcome.
pub fn run_http(job: HttpJob) -> BoxFuture<'static, Outcome> {
    Box::pin(async move {
        match job {
            HttpJob::Plain(call) => send(call).await,
            HttpJob::Authorize(call) => authorize(call).await,
            HttpJob::Callback(Some(call)) => send(call).await,
            HttpJob::Callback(None) => {
                Outcome::failed("no consent to deliver (its authorize step failed or never ran)")
            }
            HttpJob::Connect {
                authorize: call,
                client,
                provider,
                callback_replica,
                bearer,
                actor,
            } => {
                let started = authorize(call).await;
                match &started.consent {
                    Some(c) => {
                        let callback = client
                            .callback(provider, &c.callback_query())
                            .on_replica(callback_replica)
                            .bearer(bearer)
                            .actor(Some(actor));
                        send(callback).await
                    }
                    None => started,
                }
            }
        }
    })
}

async fn send(call: Call) -> Outcome {
    match call.send().await {
        Ok(answer) => Outcome::from_answer(answer),
        Err(e) => Outcome::transport_failure(&e),
    }
}

/// Sends the authorize request and, when it answers with an authorization URL, consents.
async fn authorize(call: Call) -> Outcome {
    let client = call.client().clone();
    match call.send().await {
        Ok(answer) => {
            let url = answer.authorization_url.clone();
            let consent = match url {
                Some(url) => Some(client.consent(&url).await),
                None => None,
            };
            let mut outcome = Outcome::from_answer(answer);
            match consent {
                Some(Ok(c)) => outcome.consent = Some(c),
                Some(Err(e)) => {
                    outcome.ok = false;
                    outcome.error = Some(format!("consent at the provider failed: {e}"));
                }
                None => {}
            }
            outcome
        }
        Err(e) => Outcome::transport_failure(&e),
    }
}

fn run_sql(job: SqlJob) -> BoxFuture<'static, JobResult> {
    Box::pin(async move {
        let mut job = job;
        let outcome = match sql_steps(&mut job).await {
            Ok(rows) => Outcome {
                ok: true,
                body: rows.unwrap_or(Value::Null),
                ..Outcome::default()
            },
            Err(e) => Outcome {
                ok: false,
                error: Some(e.to_string()),
                ..Outcome::default()
            },
        };
        (outcome, Some(job.conn))
    })
}

fn exec(conn: &mut PgConnection, sql: String) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move { conn.execute(sqlx::raw_sql(&sql)).await.map(|_| ()) })
}

fn exec_bound<'c>(
    conn: &'c mut PgConnection,
    sql: &'static str,
    value: String,
) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move {
        sqlx::query(sql)
            .bind(value)
            .execute(&mut *conn)
            .await
            .map(|_| ())
    })
}

fn fetch_json(conn: &mut PgConnection, sql: String) -> BoxFuture<'_, Result<Value, sqlx::Error>> {
    Box::pin(async move {
        sqlx::query_scalar::<_, Value>(&sql)
            .fetch_one(&mut *conn)
            .await
    })
}

async fn sql_steps(job: &mut SqlJob) -> Result<Option<Value>, sqlx::Error> {
    if let Some(role) = job.role.clone() {
        exec(&mut job.conn, format!("SET ROLE \"{role}\"")).await?;
    }
    if let Some(t) = job.tenant {
        exec_bound(
            &mut job.conn,
            "SELECT set_config('harbor.tenant_id', $1, false)",
            t.to_string(),
        )
        .await?;
    }
    let rows = if job.rows {
        let wrapped = format!(
            "SELECT coalesce(json_agg(t), '[]'::json) FROM ({}) t",
            job.sql.trim().trim_end_matches(';')
        );
        Some(fetch_json(&mut job.conn, wrapped).await?)
    } else {
        exec(&mut job.conn, job.sql.clone()).await?;
        None
    };
    if job.tenant.is_some() {
        exec(
            &mut job.conn,
            "SELECT set_config('harbor.tenant_id', '', false)".to_owned(),
        )
        .await?;
    }
    if job.role.is_some() {
        exec(&mut job.conn, "RESET ROLE".to_owned()).await?;
    }
    Ok(rows)
}
