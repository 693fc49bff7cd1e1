//! `do = "until"`: waits until one of the fake provider's counters reaches a value — progress
//! proven from the provider's own counts, so a fault can be done in the middle of a load rather
//! than after a guessed sleep — or until every replica's `/readyz` answers 200 (the time to
//! recover after a dependency returns, measured into the trace), or until the revocation outbox is
//! empty (every grant given up has been confirmed revoked: what `grants_accounted` is checked
//! after), or until a paused dependency holds a request (`held_by_pause = "redis"`: counted by
//! the fault proxies, so what is checked next happens while a request waits on it), or until an
//! armed lost-commit or lost-reply fault has struck (`faults_struck = "postgres"`: the proxies
//! count the links they cut, so a scenario whose fault never struck fails instead of passing on
//! an untouched run). Bounded by the step timeout; running out is a failure with the lock tables attached.

use harbor_service::domain::Provider;
use serde::{Deserialize, Serialize};

use crate::evidence::POLL_INTERVAL;
use crate::faults::Dependency;
use crate::scenario::assertion::provider_counter;
use crate::scenario::check::{problem, Checker, Problem};
use crate::scenario::executor::Executor;
use crate::scenario::outcome::Failure;
use crate::scenario::trace::EventKind;

/// An until step as written.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUntil {
    /// A note for the trace.
    pub note: Option<String>,
    /// The counter, `<provider>.<counter>` (`qbo.code_exchanges`).
    pub provider_counter: Option<String>,
    /// The value to wait for.
    pub at_least: Option<u64>,
    /// Wait until every replica is ready instead.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub replicas_ready: bool,
    /// Wait until the revocation outbox is empty instead (read from the database).
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub outbox_empty: bool,
    /// Wait until this paused dependency's (`redis`, `postgres` or `provider`) last pause holds
    /// a request on `at_least` connections instead (default one).
    pub held_by_pause: Option<String>,
    /// Wait until the lost-commit and lost-reply faults on this dependency's links (`postgres`)
    /// have cut `at_least` connections instead (default one), since the run began.
    pub faults_struck: Option<String>,
}

/// A checked until step: what to wait for.
#[derive(Clone, Debug)]
pub enum Until {
    /// A provider counter reaches a value.
    Counter {
        /// Whose counter.
        provider: Provider,
        /// Which counter.
        counter: String,
        /// The value to wait for.
        at_least: u64,
    },
    /// Every replica's `/readyz` answers 200.
    ReplicasReady,
    /// No revocation intent is left in the outbox.
    OutboxEmpty,
    /// A count the fault proxies of a dependency keep reaches a value.
    Proxies {
        /// Which count.
        count: ProxyCount,
        /// Which dependency.
        dependency: Dependency,
        /// How many connections.
        at_least: u64,
    },
}

/// What the fault proxies count, for `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyCount {
    /// Connections whose request the last pause holds (`held_by_pause`).
    HeldByPause,
    /// Connections the lost-commit and lost-reply faults cut (`faults_struck`).
    FaultsStruck,
}

impl ProxyCount {
    fn read(self, target: &dyn crate::target::Target, dependency: Dependency) -> Option<u64> {
        match self {
            ProxyCount::HeldByPause => target.held_by_pause(dependency),
            ProxyCount::FaultsStruck => target.faults_struck(dependency),
        }
    }

    /// What is waited for, and what a reading shows, for the trace.
    fn describe(self, dependency: Dependency, at_least: u64, now: Option<u64>) -> String {
        match (self, now) {
            (ProxyCount::HeldByPause, None) => {
                format!("{dependency:?} held by its pause on ≥ {at_least} connection(s)")
            }
            (ProxyCount::HeldByPause, Some(n)) => format!("held on {n} connection(s)"),
            (ProxyCount::FaultsStruck, None) => format!(
                "{dependency:?}'s lost-commit and lost-reply faults struck ≥ {at_least} time(s)"
            ),
            (ProxyCount::FaultsStruck, Some(n)) => format!("{n} connection(s) cut"),
        }
    }
}

impl Until {
    /// Checks a written until step.
    pub fn parse(r: RawUntil, cx: &mut Checker, place: &str) -> Result<Self, Problem> {
        if let Some(name) = r.faults_struck {
            if r.provider_counter.is_some()
                || r.replicas_ready
                || r.outbox_empty
                || r.held_by_pause.is_some()
            {
                return Err(problem(place, "faults_struck waits for nothing else"));
            }
            if name != "postgres" {
                return Err(problem(
                    format!("{place}.faults_struck"),
                    format!("unknown dependency {name:?}: only postgres has lost-commit and lost-reply faults"),
                ));
            }
            return Ok(Until::Proxies {
                count: ProxyCount::FaultsStruck,
                dependency: Dependency::Postgres,
                at_least: r.at_least.unwrap_or(1),
            });
        }
        if let Some(name) = r.held_by_pause {
            if r.provider_counter.is_some() || r.replicas_ready || r.outbox_empty {
                return Err(problem(place, "held_by_pause waits for nothing else"));
            }
            let dependency = match name.as_str() {
                "redis" => Dependency::Redis,
                "postgres" => Dependency::Postgres,
                "provider" => Dependency::Provider,
                other => {
                    return Err(problem(
                        format!("{place}.held_by_pause"),
                        format!(
                            "unknown dependency {other:?}: expected redis, postgres or provider"
                        ),
                    ))
                }
            };
            return Ok(Until::Proxies {
                count: ProxyCount::HeldByPause,
                dependency,
                at_least: r.at_least.unwrap_or(1),
            });
        }
        match (r.provider_counter, r.at_least, r.replicas_ready, r.outbox_empty) {
            (Some(c), Some(at_least), false, false) => {
                let (provider, counter) =
                    provider_counter(cx, &format!("{place}.provider_counter"), &c)?;
                Ok(Until::Counter {
                    provider,
                    counter,
                    at_least,
                })
            }
            (None, None, true, false) => Ok(Until::ReplicasReady),
            (None, None, false, true) => Ok(Until::OutboxEmpty),
            _ => Err(problem(
                place,
                "expected one of: provider_counter with at_least, replicas_ready = true, outbox_empty = true, held_by_pause, faults_struck",
            )),
        }
    }

    /// Whether it waits on the provider.
    pub fn needs_provider(&self) -> bool {
        matches!(self, Until::Counter { .. })
    }

    /// Whether it reads the database.
    pub fn needs_database(&self) -> bool {
        matches!(self, Until::OutboxEmpty)
    }

    /// The dependency whose fault proxy it reads, if it reads one.
    pub fn paused_dependency(&self) -> Option<Dependency> {
        match self {
            Until::Proxies { dependency, .. } => Some(*dependency),
            _ => None,
        }
    }

    /// Waits.
    pub async fn apply(
        &self,
        ex: &mut Executor<'_>,
        i: usize,
        note: Option<&str>,
    ) -> Result<(), Failure> {
        let started = std::time::Instant::now();
        let limit = ex.step_timeout();
        let mut why = format!("not reached within {limit:?}");
        let mut measured = None;
        let (what, reached) = match self {
            Until::Counter {
                provider,
                counter,
                at_least,
            } => {
                let fake = ex.target().provider().ok_or_else(|| {
                    Failure::at(Some(i), "the target's provider is not the harness's")
                })?;
                let read = || Ok(fake.counters(*provider).get(counter).unwrap_or(0));
                let reached = count_reaches(ex, *at_least, limit, read, &mut why)
                    .await
                    .map(|now| now.to_string());
                (format!("{provider}.{counter} ≥ {at_least}"), reached)
            }
            Until::Proxies {
                count,
                dependency,
                at_least,
            } => {
                let target = ex.target();
                let read = || {
                    count
                        .read(target, *dependency)
                        .ok_or_else(|| "the target has no fault proxies to count from".to_owned())
                };
                let reached = count_reaches(ex, *at_least, limit, read, &mut why)
                    .await
                    .map(|now| count.describe(*dependency, *at_least, Some(now)));
                (count.describe(*dependency, *at_least, None), reached)
            }
            Until::ReplicasReady => {
                let client = ex.target().client();
                let ready = client.until_ready(limit).await;
                (
                    "every replica ready".to_owned(),
                    (ready == client.replicas()).then(|| format!("{ready} replica(s) ready")),
                )
            }
            Until::OutboxEmpty => {
                let db = ex.target().database().ok_or_else(|| {
                    Failure::at(
                        Some(i),
                        "the target offers no database to read the outbox from",
                    )
                })?;
                let since: Option<chrono::DateTime<chrono::Utc>> =
                    sqlx::query_scalar("SELECT clock_timestamp()")
                        .fetch_one(db)
                        .await
                        .ok();
                let left = limit.saturating_sub(started.elapsed());
                let emptied = crate::oracles::until_outbox_empty(db, None, left).await;
                if let Err(e) = &emptied {
                    why = e.clone();
                }
                if let (Ok(_), Some(since)) = (&emptied, since) {
                    measured = settle_delays(db, since).await;
                }
                (
                    "the revocation outbox empty".to_owned(),
                    emptied.ok().map(|_| "empty".to_owned()),
                )
            }
        };
        match reached {
            Some(now) => {
                ex.event(
                    Some(i),
                    None,
                    EventKind::Note,
                    format!(
                        "until {what}: {now} after {} ms",
                        started.elapsed().as_millis()
                    ),
                    None,
                );
                ex.measured(measured);
                ex.annotate(note);
                Ok(())
            }
            None => Err(ex
                .failure_with_diagnostics(i, format!("until {what}: {why}"))
                .await),
        }
    }
}

/// Polls `read` until it reaches `at_least` (its value), or until the step's `limit` runs out,
/// the count cannot be read, or everything in the background has finished — then the count will
/// not move — (`None`, with `why` saying which).
async fn count_reaches(
    ex: &Executor<'_>,
    at_least: u64,
    limit: std::time::Duration,
    read: impl Fn() -> Result<u64, String>,
    why: &mut String,
) -> Option<u64> {
    let started = std::time::Instant::now();
    loop {
        let now = match read() {
            Ok(now) => now,
            Err(e) => {
                *why = e;
                return None;
            }
        };
        if now >= at_least {
            return Some(now);
        }
        if ex.background_all_finished() {
            *why = format!("not reached: everything running in the background finished at {now}");
            return None;
        }
        if started.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// How long after `since` the outbox's intents were settled (delivered, or stored into their row),
/// read from their audit rows: the drain's latency distribution, for the trace.
async fn settle_delays(db: &sqlx::PgPool, since: chrono::DateTime<chrono::Utc>) -> Option<String> {
    let delays: Vec<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM occurred_at - $1) * 1000)::float8 FROM audit_events \
         WHERE action = 'revocation.outbox' AND occurred_at >= $1 ORDER BY 1",
    )
    .bind(since)
    .fetch_all(db)
    .await
    .ok()?;
    // Nearest rank: the smallest delay at or above the fraction of the intents.
    let rank =
        |q: f64| delays[((q * delays.len() as f64).ceil() as usize).clamp(1, delays.len()) - 1];
    (!delays.is_empty()).then(|| {
        format!(
            "{} intent(s) settled while waiting: median {:.0} ms, p99 {:.0} ms, last {:.0} ms",
            delays.len(),
            rank(0.5),
            rank(0.99),
            delays[delays.len() - 1]
        )
    })
}
