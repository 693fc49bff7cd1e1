//! `do = "until"`: waits until one of the fake provider's counters reaches a value — progress
//! proven from the provider's own counts, so a fault can be done in the middle of a load rather
//! than after a guessed sleep — or until every replica's `/readyz` answers 200 (the time to
//! recover after a dependency returns, measured into the trace), or until the revocation outbox is
//! empty (every grant given up has been confirmed revoked: what `grants_accounted` is checked
//! after). Bounded by the step timeout; running out is a failure with the lock tables attached.

use harbor_service::domain::Provider;
use serde::{Deserialize, Serialize};

use crate::evidence::POLL_INTERVAL;
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
}

impl Until {
    /// Checks a written until step.
    pub fn parse(r: RawUntil, cx: &mut Checker, place: &str) -> Result<Self, Problem> {
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
                "expected one of: provider_counter with at_least, replicas_ready = true, outbox_empty = true",
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
        let (what, reached) = match self {
            Until::Counter {
                provider,
                counter,
                at_least,
            } => {
                let fake = ex.target().provider().ok_or_else(|| {
                    Failure::at(Some(i), "the target's provider is not the harness's")
                })?;
                let reached = loop {
                    let now = fake.counters(*provider).get(counter).unwrap_or(0);
                    if now >= *at_least {
                        break Some(now.to_string());
                    }
                    // Whatever was to make progress has finished: the counter will not move.
                    let all_done = ex.background_all_finished();
                    if all_done {
                        why = format!(
                            "not reached: everything running in the background finished at {now}"
                        );
                        break None;
                    }
                    if started.elapsed() >= limit {
                        break None;
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                };
                (format!("{provider}.{counter} ≥ {at_least}"), reached)
            }
            Until::ReplicasReady => {
                let client = ex.target().client();
                let mut ready = 0;
                while ready < client.replicas() && started.elapsed() < limit {
                    let answer = client
                        .request(reqwest::Method::GET, "/readyz")
                        .on_replica(ready)
                        .send()
                        .await;
                    if answer.is_ok_and(|a| a.status.is_success()) {
                        ready += 1;
                    } else {
                        tokio::time::sleep(POLL_INTERVAL).await;
                    }
                }
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
                let mut left = -1i64;
                while started.elapsed() < limit {
                    left = sqlx::query_scalar("SELECT count(*) FROM revocation_outbox")
                        .fetch_one(db)
                        .await
                        .map_err(|e| Failure::at(Some(i), format!("reading the outbox: {e}")))?;
                    if left == 0 {
                        break;
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                if left != 0 {
                    why =
                        format!("{left} revocation intent(s) still in the outbox after {limit:?}");
                }
                (
                    "the revocation outbox empty".to_owned(),
                    (left == 0).then(|| "empty".to_owned()),
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
                ex.annotate(note);
                Ok(())
            }
            None => Err(ex
                .failure_with_diagnostics(i, format!("until {what}: {why}"))
                .await),
        }
    }
}
