//! What is compared after every step: the stored state against the model — every connection,
//! the Redis states and the stored tokens on the reference's schema; QuickBooks' status and the
//! activations through the state queries on a target's own — the lock tables and the provider's
//! counters.

use super::*;

impl Subject<'_> {
    /// The stored state against the model, and the oracles: on the reference's schema every
    /// connection, the Redis states and the stored tokens; on a target's own, what its state
    /// queries say ([`OFF_WITHOUT_REFERENCE_SCHEMA`]).
    pub(super) async fn invariants(&self) -> Result<(), String> {
        let db = self.target.need_database()?;
        let reference = self
            .target
            .capabilities()
            .contains(&crate::target::Capability::ReferenceSchema);
        if !reference {
            return self.invariants_through_state_queries(db).await;
        }
        let rows: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT provider, status, access_token IS NOT NULL FROM connections WHERE workspace_id = $1 AND provider = ANY($2)",
        )
        .bind(self.a.workspace)
        .bind(PROVIDERS.iter().map(|p| p.as_str()).collect::<Vec<_>>())
        .fetch_all(db)
        .await
        .map_err(|e| e.to_string())?;
        for (provider, status, has_tokens) in rows {
            let p = Provider::parse(&provider).map_err(|e| e.to_string())?;
            let expected = self.model.connections[&p].status;
            if status != expected.as_str() {
                return Err(format!(
                    "{provider} is {status} in the database, {} in the model",
                    expected.as_str()
                ));
            }
            if has_tokens != (status == "CONNECTED") {
                return Err(format!(
                    "{provider} is {status} with tokens stored: {has_tokens}"
                ));
            }
        }
        let activations: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workspace_activations WHERE workspace_id = $1",
        )
        .bind(self.a.workspace)
        .fetch_one(db)
        .await
        .map_err(|e| e.to_string())?;
        if activations != i64::from(self.model.activated) {
            return Err(format!(
                "{activations} activation row(s), the model has {}",
                u8::from(self.model.activated)
            ));
        }
        self.no_lock_held(db).await?;
        // Redis: every state issued and not yet consumed is still there (its TTL is real time, the
        // model's clock only decides whether the service still honours it), and none other.
        let live = self.model.unconsumed_states();
        let redis = self.target.need_redis()?;
        let keys = crate::evidence::redis_dump(redis.url, redis.prefix)
            .await
            .map_err(|e| format!("redis: {e}"))?
            .into_iter()
            .filter(|e| e.key.contains("oauth:state:"))
            .count();
        if keys != live {
            return Err(format!(
                "{keys} OAuth state(s) in Redis, the model has {live} unconsumed"
            ));
        }
        self.provider_counted_as_modelled()?;
        crate::oracles::documents_under_live_grants(db, Some(self.a.workspace)).await?;
        let ring = self.target.need_tokens()?;
        crate::oracles::tokens_bound(db, ring, None)
            .await
            .map(|_| ())
    }

    /// On a target with its own schema: QuickBooks' status and the activations through its state
    /// queries, the lock tables, the provider's counters.
    async fn invariants_through_state_queries(&self, db: &sqlx::PgPool) -> Result<(), String> {
        let read = |name: &str| {
            self.target
                .state_query(name, self.a.workspace)
                .ok_or_else(|| format!("the target answers no `{name}` state query"))
        };
        let status: Option<String> = sqlx::query_scalar(&read("qbo_status")?)
            .fetch_optional(db)
            .await
            .map_err(|e| format!("the `qbo_status` state query: {e}"))?;
        let expected = self.model.connections[&Provider::Qbo].status;
        if status.as_deref().unwrap_or("NOT_CONNECTED") != expected.as_str() {
            return Err(format!(
                "qbo is {} in the database, {} in the model",
                status.as_deref().unwrap_or("(no row)"),
                expected.as_str()
            ));
        }
        let activations: i64 = sqlx::query_scalar(&read("activations")?)
            .fetch_one(db)
            .await
            .map_err(|e| format!("the `activations` state query: {e}"))?;
        if activations != i64::from(self.model.activated) {
            return Err(format!(
                "{activations} activation row(s), the model has {}",
                u8::from(self.model.activated)
            ));
        }
        self.no_lock_held(db).await?;
        self.provider_counted_as_modelled()
    }

    /// No workspace lock of either tenant is held or awaited between two steps. A service whose
    /// transaction ends as its connection closes after the answer (a request teardown) frees
    /// its lock a moment later: one still held after [`LOCK_RELEASE_BOUND`] is left held.
    async fn no_lock_held(&self, db: &sqlx::PgPool) -> Result<(), String> {
        // The reference ends its transaction before it answers: no grace.
        let bound = if self
            .target
            .capabilities()
            .contains(&crate::target::Capability::ReferenceSchema)
        {
            Duration::ZERO
        } else {
            LOCK_RELEASE_BOUND
        };
        for workspace in [self.a.workspace, self.b.workspace] {
            let key = self
                .target
                .workspace_lock(workspace)
                .ok_or("the target does not name its workspace lock")?;
            crate::oracles::until_no_workspace_lock_held(db, workspace, key, bound).await?;
        }
        Ok(())
    }

    /// Each provider saw exactly the exchanges, revocations and refreshes the model predicts.
    fn provider_counted_as_modelled(&self) -> Result<(), String> {
        for p in PROVIDERS {
            let c = self.target.need_provider()?.counters(p);
            let counted = crate::model::Counted {
                exchanges: c.code_exchanges_ok,
                revocations: c.revocations,
                refreshes: c.refreshes_ok,
            };
            if counted != self.model.counters[&p] {
                return Err(format!(
                    "{p}: the provider counted {counted:?}, the model {:?}",
                    self.model.counters[&p]
                ));
            }
        }
        Ok(())
    }
}
