//! The end of a schedule: what the oracles read once every operation has answered — the
//! workspace's state through the target's state queries, the provider's counters, and the
//! outbox drained after a fault.

use super::*;

impl Engine<'_> {
    /// After a fault, lets the outbox settle what the interrupted requests left (a grant written
    /// ahead, a revocation): if the workspace has intents, the service's clock moves past the
    /// lease a request holds on them, and they are waited for, read from the database (bounded by
    /// the settle timeout).
    pub(super) async fn drain_outbox(&self, t: &TenantWorkspace) -> Result<(), String> {
        if crate::oracles::outbox_intents(self.db()?, Some(t.workspace)).await? == 0 {
            // Nothing to drain: the clock stays put.
            return Ok(());
        }
        self.target
            .advance_clock(harbor_service::outbox::LEASE + Duration::from_secs(1))
            .await?;
        crate::oracles::until_outbox_empty(self.db()?, Some(t.workspace), self.settle_timeout)
            .await
            .map(|_| ())
            .map_err(|e| format!("{e} (the workspace's, after a fault)"))
    }

    pub(super) async fn end_state(
        &self,
        t: &TenantWorkspace,
        before: &Counters,
        after: &Counters,
    ) -> Result<EndState, String> {
        let status = self.qbo_status(t).await?;
        let activations = match self.state("activations", t).await? {
            Some(row) => sqlx::Row::try_get::<i64, _>(&row, 0)
                .map_err(|e| format!("the `activations` state query's count: {e}"))?,
            None => return Err("the target's `activations` state query answered no row".into()),
        };
        Ok(EndState {
            status,
            activations,
            exchanges: after.code_exchanges_ok - before.code_exchanges_ok,
            refreshes: after.refreshes_ok - before.refreshes_ok,
            revocations: after.revocations - before.revocations,
        })
    }

    /// The workspace's QuickBooks connection status, read through the target's `qbo_status`
    /// state query (in Harbor's names).
    pub(super) async fn qbo_status(
        &self,
        t: &TenantWorkspace,
    ) -> Result<Option<ConnectionStatus>, String> {
        let Some(row) = self.state("qbo_status", t).await? else {
            return Ok(None);
        };
        let status = sqlx::Row::try_get::<String, _>(&row, 0)
            .map_err(|e| format!("the `qbo_status` state query's status: {e}"))?;
        ConnectionStatus::parse(&status).map(Some).map_err(|_| {
            format!(
                "the `qbo_status` state query answered {status:?}, not one of Harbor's statuses"
            )
        })
    }

    /// The first row of the target's state query `name` on `t`'s workspace, sent as a simple
    /// query: its text names the workspace, so no two schedules send the same statement, and a
    /// prepared one would cost a round trip to prepare it and a slot in the connection's cache.
    pub(super) async fn state(
        &self,
        name: &str,
        t: &TenantWorkspace,
    ) -> Result<Option<sqlx::postgres::PgRow>, String> {
        let sql = self
            .target
            .state_query(name, t.workspace)
            .ok_or_else(|| format!("the target answers no `{name}` state query"))?;
        // Through the executor: sqlx 0.8's `RawSql::fetch_optional` is `fetch_one`, which fails on
        // no row.
        sqlx::Executor::fetch_optional(self.db()?, sqlx::raw_sql(&sql))
            .await
            .map_err(|e| format!("the `{name}` state query: {e}"))
    }
}
