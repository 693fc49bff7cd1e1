//! Faults done to the in-process service: through its replicas' proxies, on its backends, to its
//! Redis keys, and to the replicas themselves (crash, graceful stop, restart).

use std::time::Duration;

use crate::faults::{Dependency, Fault, FaultDone, FaultKind, ProxyAction};

use super::Started;

impl Started {
    /// Does `fault`; returns what it did, for the trace.
    pub async fn apply_fault(&self, fault: &Fault) -> Result<FaultDone, String> {
        let limit = Duration::from_secs(5);
        let kind = fault.kind;
        let through_proxies = kind.proxy_action().is_some() || kind.takes_duration();
        if through_proxies && !self.has_fault_proxies() {
            return Err(format!(
                "{} needs fault proxies; these replicas were started without them",
                kind.as_str()
            ));
        }
        if let Some(action) = kind.proxy_action() {
            // A cut database link ends its backends, but the server notices the closed socket on
            // its own schedule: the step returns once they are gone, so what follows (a lock
            // check, a retry) sees the effect, not a race with it.
            let cut = kind.dependency() == Dependency::Postgres
                && matches!(action, ProxyAction::Drop | ProxyAction::Down);
            let backends = if cut {
                self.backends_of(fault.replica).await?
            } else {
                Vec::new()
            };
            let started = std::time::Instant::now();
            let mut n = 0;
            for links in self.links(fault.replica) {
                let proxy = match kind.dependency() {
                    Dependency::Redis => &links.redis,
                    Dependency::Postgres => &links.postgres,
                    Dependency::Provider => &links.provider,
                    Dependency::Replica => {
                        return Err(format!("{} is not a proxy fault", kind.as_str()))
                    }
                };
                if kind == FaultKind::PostgresLoseStatementReply {
                    // The actor's tag as a statement binds it: its length, then its bytes.
                    proxy.aim_statement_replies(fault.actor.as_deref().map(|actor| {
                        let tag = crate::evidence::application_name(actor);
                        [&(tag.len() as u32).to_be_bytes()[..], tag.as_bytes()].concat()
                    }));
                }
                proxy.apply(action).await;
                n += 1;
            }
            if !cut {
                return Ok(FaultDone::effect(format!("done on {n} replica link(s)")));
            }
            crate::evidence::until_backends_gone(&self.db, &backends, limit).await?;
            return Ok(FaultDone::measured(
                format!("done on {n} replica link(s); their backends ended"),
                format!(
                    "{} backend(s) ended within {} ms",
                    backends.len(),
                    started.elapsed().as_millis()
                ),
            ));
        }
        match kind {
            FaultKind::RedisRestart => {
                self.proxies_apply(fault.replica, Dependency::Redis, ProxyAction::Down)
                    .await;
                let lost = self.flush_redis().await?;
                tokio::time::sleep(fault.down_for).await;
                self.proxies_apply(fault.replica, Dependency::Redis, ProxyAction::Up)
                    .await;
                Ok(FaultDone::measured(
                    format!(
                        "Redis down for {} ms; its keys lost; up again",
                        fault.down_for.as_millis()
                    ),
                    format!("{lost} keys lost"),
                ))
            }
            FaultKind::RedisFlush => Ok(FaultDone::measured(
                "every key under the service's prefix deleted",
                format!("{} keys deleted", self.flush_redis().await?),
            )),
            FaultKind::PostgresRestart => {
                let backends = self.backends_of(fault.replica).await?;
                self.proxies_apply(fault.replica, Dependency::Postgres, ProxyAction::Down)
                    .await;
                crate::evidence::until_backends_gone(&self.db, &backends, limit).await?;
                tokio::time::sleep(fault.down_for).await;
                self.proxies_apply(fault.replica, Dependency::Postgres, ProxyAction::Up)
                    .await;
                Ok(FaultDone::measured(
                    format!(
                        "PostgreSQL down for {} ms (its backends ended); up again",
                        fault.down_for.as_millis()
                    ),
                    format!("{} backend(s) ended", backends.len()),
                ))
            }
            FaultKind::PostgresTerminateActor => {
                let actor = fault
                    .actor
                    .as_deref()
                    .ok_or("postgres_terminate_actor needs an actor")?;
                let names = [crate::evidence::application_name(actor)];
                match crate::evidence::terminate_backends(&self.db, Some(&names), limit).await? {
                    0 => Err(format!("no backend runs a transaction of {actor}")),
                    n => Ok(FaultDone::measured(
                        format!("terminated the backend(s) of {actor}; gone"),
                        format!("{n} backend(s)"),
                    )),
                }
            }
            FaultKind::PostgresTerminateAll => {
                let n = crate::evidence::terminate_backends(&self.db, None, limit).await?;
                Ok(FaultDone::measured(
                    "terminated every service backend; gone",
                    format!("{n} backend(s)"),
                ))
            }
            FaultKind::ReplicaCrash => {
                self.crash_replica(fault.replica.ok_or("replica_crash needs a replica")?)
                    .await
            }
            FaultKind::ReplicaStop => {
                let replica = fault.replica.ok_or("replica_stop needs a replica")?;
                self.begin_stop(replica).await?;
                Ok(FaultDone::effect(format!(
                    "replica {replica} stopping gracefully: it refuses new connections, and finishes its connections and request tasks"
                )))
            }
            FaultKind::ReplicaRestart => {
                let replica = fault.replica.ok_or("replica_restart needs a replica")?;
                let r = self
                    .replicas
                    .get(replica)
                    .ok_or_else(|| format!("there is no replica {replica}"))?;
                let stopped = r.finish_stop().await?;
                r.restart().await?;
                self.client.reuse_connections(replica);
                // A restarted process starts on the system clock: give it the run's offset again.
                self.push_clock().await?;
                let stop = stopped.map_or(String::new(), |took| {
                    format!(", after a graceful stop of {} ms", took.as_millis())
                });
                Ok(FaultDone::measured(
                    format!("replica {replica} restarted on its address"),
                    format!("at {}{stop}", r.base_url),
                ))
            }
            _ => Err(format!("{} has no effect here", kind.as_str())),
        }
    }

    async fn proxies_apply(
        &self,
        replica: Option<usize>,
        dependency: Dependency,
        action: ProxyAction,
    ) {
        for links in self.links(replica) {
            match dependency {
                Dependency::Redis => links.redis.apply(action).await,
                Dependency::Postgres => links.postgres.apply(action).await,
                Dependency::Provider => links.provider.apply(action).await,
                Dependency::Replica => {}
            }
        }
    }

    /// Deletes every key under the environment's prefix; returns how many there were.
    async fn flush_redis(&self) -> Result<usize, String> {
        let client = redis::Client::open(self.env.redis_url.as_str()).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let keys = crate::provision::keys_with_prefix(&mut conn, &self.env.redis_key_prefix)
            .await
            .map_err(|e| e.to_string())?;
        for chunk in keys.chunks(500) {
            redis::cmd("UNLINK")
                .arg(chunk)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(keys.len())
    }

    /// The backends of `replica` (or of every replica): those named after its pool or after the
    /// requests parked on it (in-process), and — with fault proxies — those whose client end is
    /// one of its PostgreSQL proxy's upstream connections: every connection the replica opened,
    /// whatever its `application_name`, in any language. When the proxy holds connections but
    /// the server shows none of their ends (a NAT between the harness and PostgreSQL hides them),
    /// that is an error, not an empty set: a crash's evidence would otherwise hold vacuously.
    async fn backends_of(&self, replica: Option<usize>) -> Result<Vec<i32>, String> {
        if let Some(n) = replica {
            if n >= self.replicas.len() {
                return Err(format!("there is no replica {n}"));
            }
        }
        let chosen = || {
            self.replicas
                .iter()
                .enumerate()
                .filter(move |(n, _)| replica.is_none_or(|r| r == *n))
                .map(|(_, r)| r)
        };
        let mut names = Vec::new();
        for r in chosen() {
            names.push(r.application_name.clone());
            names.extend(
                r.sync
                    .history()
                    .into_iter()
                    .filter(|k| r.sync.state(k) == Some(harbor_syncpoint::SlotState::Parked))
                    .map(|k| crate::evidence::application_name(&k.actor)),
            );
        }
        // A connection the proxy has just opened (a pool reconnecting after a cut) may not show in
        // pg_stat_activity yet, and one the server has just ended may still be in the proxy's
        // list: the ends are read again until they agree, within a bound, before a NAT is
        // suspected.
        let started = std::time::Instant::now();
        let rows = loop {
            let ports: Vec<i32> = chosen()
                .filter_map(|r| r.links.as_ref())
                .flat_map(|l| l.postgres.upstream_ends())
                .map(|a| i32::from(a.port()))
                .collect();
            let rows: Vec<(i32, bool)> = sqlx::query_as(
                "SELECT pid, client_port = ANY($2) FROM pg_stat_activity \
                 WHERE datname = current_database() \
                   AND (application_name = ANY($1) OR (client_addr IS NOT NULL AND client_port = ANY($2)))",
            )
            .bind(&names)
            .bind(&ports)
            .fetch_all(&self.db)
            .await
            .map_err(|e| format!("reading the replicas' backends: {e}"))?;
            if ports.is_empty() || rows.iter().any(|(_, by_port)| *by_port) {
                break rows;
            }
            if started.elapsed() >= Duration::from_secs(2) {
                return Err(format!(
                    "the replica's PostgreSQL proxy holds {} connection(s), but the server shows none \
                     of their client ends (is there a NAT between the harness and PostgreSQL?): its \
                     backends cannot be told",
                    ports.len()
                ));
            }
            tokio::time::sleep(crate::evidence::POLL_INTERVAL).await;
        };
        Ok(rows.into_iter().map(|(pid, _)| pid).collect())
    }

    /// Stops `replica` gracefully (SIGTERM semantics) and returns once its process would have
    /// exited.
    pub async fn stop_replica(&self, replica: usize) -> Result<(), String> {
        self.begin_stop(replica)
            .await?
            .finish_stop()
            .await
            .map(|_| ())
    }

    /// Begins `replica`'s graceful stop, its later requests sent on new connections
    /// (`ApiClient::stop_reusing_connections`); returns it once it refuses connections.
    async fn begin_stop(&self, replica: usize) -> Result<&super::Replica, String> {
        let r = self
            .replicas
            .get(replica)
            .ok_or_else(|| format!("there is no replica {replica}"))?;
        self.client.stop_reusing_connections(replica);
        r.begin_stop().await?;
        Ok(r)
    }

    /// Crashes `replica` and returns once the database has ended every backend it had (its
    /// pool's, and those of requests parked on it): the evidence that its transactions and locks
    /// died with it.
    async fn crash_replica(&self, replica: usize) -> Result<FaultDone, String> {
        let r = self
            .replicas
            .get(replica)
            .ok_or_else(|| format!("there is no replica {replica}"))?;
        let pids = self.backends_of(Some(replica)).await?;
        let started = std::time::Instant::now();
        self.client.stop_reusing_connections(replica);
        r.crash().await?;
        crate::evidence::until_backends_gone(&self.db, &pids, Duration::from_secs(5)).await?;
        Ok(FaultDone::measured(
            format!("replica {replica} crashed; its backends ended"),
            format!(
                "{} backend(s) ended within {} ms",
                pids.len(),
                started.elapsed().as_millis()
            ),
        ))
    }
}
