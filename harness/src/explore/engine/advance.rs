//! One decision carried out: launching an operation (its request, the raw writer's statement, or
//! a fault applied in place) or releasing it from the sync point it is parked at.

use super::*;
use crate::scenario::executor::jobs::{run_job, Job, JobResult, SqlJob};

impl Engine<'_> {
    /// Launches the operation, or releases it from where it is parked.
    pub(super) async fn advance(
        &self,
        t: &TenantWorkspace,
        consent: Option<&Consent>,
        a: &mut Running,
        index: usize,
        run: &mut ScheduleRun,
    ) -> Result<(), String> {
        if !a.launched {
            a.launched = true;
            a.stop = None;
            if let Some(kinds) = a.op.fault() {
                // Done in place: each fault returns once it has taken effect (cut backends gone,
                // a crashed replica's backends gone and the replica listening again), so the next
                // decision sees it (a parked request's transaction is already dead).
                self.do_faults(kinds, a.replica)
                    .await
                    .map_err(|e| format!("{}: {e}", a.tag))?;
                run.finished[index] = Some(Finished {
                    status: 0,
                    code: None,
                    summary: "ok".to_owned(),
                    answer: None,
                });
                run.completion_order.push(index);
                a.stop = Some(Stop::Done);
                return Ok(());
            }
            if a.op.is_raw_sql() {
                let conn = self.raw_session(&a.tag).await?;
                let lock = self
                    .target
                    .workspace_lock(t.workspace)
                    .ok_or("the target does not name its workspace lock")?;
                let lock_row = self.target.state_query("lock_qbo_row", t.workspace);
                let names = crate::explore::ops::RawNames {
                    workspace: &t.workspace.to_string(),
                    workspace_lock: &lock.sql_arguments(),
                    lock_row: lock_row.as_deref(),
                };
                let sql =
                    a.op.raw_sql(&names)
                        .ok_or("the target answers no `lock_qbo_row` state query")?;
                a.work = Some(Work::Sql(spawn_sql(conn, sql, self.finished.clone())));
                return Ok(());
            }
            for point in a.op.armed().filter(|p| self.has_point(p)) {
                self.target
                    .arm(a.replica, SlotKey::new(a.tag.clone(), *point))
                    .await
                    .map_err(|e| format!("arming {}@{point}: {e}", a.tag))?;
            }
            let request = self.request(t, consent, a);
            let finished = self.finished.clone();
            a.work = Some(Work::Http(tokio::spawn(async move {
                let answer = request.await;
                finished.notify_one();
                answer
            })));
            return Ok(());
        }
        let Some(Stop::Parked(point)) = a.stop.clone() else {
            return Err(format!("{} is not parked", a.tag));
        };
        a.stop = None;
        if a.op.is_raw_sql() {
            let conn = a.session.take().ok_or("the raw writer's session is gone")?;
            a.sql_step += 1;
            a.work = Some(Work::Sql(spawn_sql(
                conn,
                "COMMIT".into(),
                self.finished.clone(),
            )));
            return Ok(());
        }
        if point == harbor_service::syncpoints::ACTIVATION_BEFORE_COMMIT {
            let committed = self.qbo_status(t).await?;
            run.status_at_activation_commit.push((index, committed));
        }
        self.target
            .release(a.replica, &SlotKey::new(a.tag.clone(), point))
            .await
            .map_err(|e| format!("releasing {}@{point}: {e}", a.tag))
    }

    fn request(
        &self,
        t: &TenantWorkspace,
        consent: Option<&Consent>,
        a: &Running,
    ) -> impl std::future::Future<Output = Result<Answer, String>> + Send + 'static {
        let client = self.target.client().clone();
        let bearer = self.target.bearer(t.owner, TokenKind::Valid);
        let query = consent.map(|c| c.callback_query()).unwrap_or_default();
        let (method, path) = match a.op.does() {
            Does::Request(op) => client
                .routes()
                .request(op, t.workspace, Provider::Qbo, &query),
            // Not requests: launched by `advance` without one.
            Does::RawSql(_) | Does::Faults(_) => (Method::GET, "/".into()),
        };
        let call = client
            .request(method, path)
            .on_replica(a.replica)
            .bearer(Some(bearer))
            .actor(Some(a.tag.clone()));
        // The failure's class, not its path: paths hold the schedule's workspace id, and the
        // summary is part of the outcome exploration compares.
        async move { call.send().await.map_err(|e| e.failure().to_owned()) }
    }
}

/// Runs the raw writer's statement through the scenario's one job runner, in its own session.
fn spawn_sql(
    conn: PgConnection,
    sql: String,
    finished: std::sync::Arc<tokio::sync::Notify>,
) -> JoinHandle<JobResult> {
    tokio::spawn(async move {
        let done = run_job(Job::Sql(SqlJob {
            conn,
            sql,
            rows: false,
            role: None,
            tenant: None,
        }))
        .await;
        finished.notify_one();
        done
    })
}
