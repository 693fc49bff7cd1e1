//! `do = "sql"`: raw SQL in the actor's own PostgreSQL session, kept across steps (so `BEGIN`
//! here and `COMMIT` later work) and tagged with the actor, so the lock tables show it.

use serde::{Deserialize, Serialize};

use crate::scenario::check::{problem, Checked, Checker, Problem};
use crate::scenario::executor::jobs::{Job, SqlJob};
use crate::scenario::executor::Executor;
use crate::scenario::executor::{ExpectBlocked, Launch};
use crate::scenario::format::Expect;
use crate::scenario::outcome::Failure;

/// A SQL step as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSql {
    /// Who acts.
    pub actor: String,
    /// A note for the trace.
    pub note: Option<String>,
    /// The statement(s), with placeholders.
    pub sql: String,
    /// Run as this role (`harbor_app` to play the service's session).
    pub role: Option<String>,
    /// The tenant set for row-level security (`harbor.tenant_id`).
    pub tenant: Option<String>,
    /// Run in the background (finish it with `wait`).
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub background: bool,
    /// The statement must block on a lock held by another actor.
    pub expect_blocked: Option<super::request::RawExpectBlocked>,
    /// What the outcome must be.
    pub expect: Option<Expect>,
}

/// A checked SQL step.
#[derive(Clone, Debug)]
pub struct SqlStep {
    /// Who acts.
    pub actor: String,
    /// The statement(s), placeholders resolved when run.
    pub sql: String,
    /// The role to run as.
    pub role: Option<String>,
    /// The tenant for row-level security.
    pub tenant: Option<String>,
    /// Leave it running.
    pub background: bool,
    /// Must block on a lock.
    pub expect_blocked: Option<ExpectBlocked>,
    /// What the outcome must be.
    pub expect: Option<Expect>,
}

impl SqlStep {
    /// Checks a written SQL step.
    pub fn parse(r: RawSql, cx: &mut Checker, place: &str) -> Result<Self, Problem> {
        cx.actor(&format!("{place}.actor"), &r.actor)?;
        cx.placeholders(&format!("{place}.sql"), &r.sql)?;
        let tenant = r
            .tenant
            .as_deref()
            .map(|t| cx.tenant(&format!("{place}.tenant"), t))
            .transpose()?;
        if let Some(role) = &r.role {
            if !role.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(problem(
                    format!("{place}.role"),
                    "a role name of [A-Za-z0-9_]",
                ));
            }
        }
        if let Some(e) = &r.expect {
            cx.expectation(&format!("{place}.expect"), e)?;
        }
        let expect_blocked = r
            .expect_blocked
            .as_ref()
            .map(|b| super::request::expect_blocked(b, cx, place, &r.actor))
            .transpose()?;
        if r.background || expect_blocked.is_some() {
            cx.start_background(place, &r.actor, Checked::when(r.expect.is_some()))?;
        }
        Ok(SqlStep {
            actor: r.actor,
            sql: r.sql,
            role: r.role,
            tenant,
            background: r.background,
            expect_blocked,
            expect: r.expect,
        })
    }

    /// Runs it in the actor's session (opened on first use).
    pub async fn apply(
        &self,
        ex: &mut Executor<'_>,
        i: usize,
        note: Option<&str>,
    ) -> Result<(), Failure> {
        let conn = match ex.take_session(&self.actor) {
            Some(conn) => conn,
            None => {
                let url = ex
                    .target()
                    .database_url()
                    .ok_or_else(|| Failure::at(Some(i), "the target has no database"))?;
                crate::evidence::tagged_session(url, &self.actor)
                    .await
                    .map_err(|e| {
                        Failure::at(
                            Some(i),
                            format!("opening {}'s SQL session: {e}", self.actor),
                        )
                    })?
            }
        };
        let job = Job::Sql(SqlJob {
            conn,
            sql: ex.subst(&self.sql),
            rows: self.expect.as_ref().is_some_and(|e| e.rows.is_some()),
            role: self.role.clone(),
            tenant: self.tenant.as_ref().map(|t| ex.tenant(t).tenant),
        });
        let describe = self.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        let how = Launch {
            park: None,
            expect_blocked: self.expect_blocked.as_ref(),
            background: self.background,
            expect: self.expect.as_ref(),
        };
        ex.launch(i, &self.actor, job, describe, note, how).await
    }
}
