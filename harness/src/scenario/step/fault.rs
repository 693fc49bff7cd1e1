//! `do = "fault"`: does something to a dependency of the replicas or to a replica — stalls, cuts
//! or refuses their Redis, PostgreSQL or provider connections through the fault proxies, ends
//! backends, loses Redis data, crashes and restarts a replica ([`crate::faults`]).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::faults::{Fault, FaultKind};
use crate::scenario::check::{problem, Checker, Problem};
use crate::scenario::executor::Executor;
use crate::scenario::outcome::Failure;
use crate::scenario::trace::EventKind;
use crate::target::Capability;

/// A fault step as written.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFault {
    /// A note for the trace.
    pub note: Option<String>,
    /// What happens.
    pub fault: FaultKind,
    /// The replica it is done to (`replica_*`: required; proxy faults: only this replica's link).
    pub replica: Option<usize>,
    /// For `postgres_terminate_actor`: whose backend is ended; for
    /// `postgres_lose_statement_reply`, whose statement's reply is lost.
    pub actor: Option<String>,
    /// For `*_restart`: how long the server stays down, in milliseconds (default 0).
    pub for_ms: Option<u64>,
}

/// A checked fault step.
#[derive(Clone, Debug)]
pub struct FaultStep {
    /// What happens, and to whom.
    pub fault: Fault,
}

impl FaultStep {
    /// Checks a written fault step.
    pub fn parse(r: RawFault, cx: &mut Checker, place: &str) -> Result<Self, Problem> {
        let kind = r.fault;
        let name = kind.as_str();
        let replica = r
            .replica
            .map(|n| cx.replica(&format!("{place}.replica"), n))
            .transpose()?;
        if kind.needs_replica() && replica.is_none() {
            return Err(problem(place, format!("{name} needs `replica`")));
        }
        if replica.is_some()
            && !kind.needs_replica()
            && kind.proxy_action().is_none()
            && !kind.takes_duration()
        {
            return Err(problem(
                place,
                format!("{name} is done to the server, not to one replica's link: drop `replica`"),
            ));
        }
        let actor = match (&r.actor, kind.needs_actor(), kind.takes_actor()) {
            (Some(a), _, true) => Some(cx.actor(&format!("{place}.actor"), a)?.name.clone()),
            (None, true, _) => return Err(problem(place, format!("{name} needs `actor`"))),
            (Some(_), _, false) => return Err(problem(place, format!("{name} takes no `actor`"))),
            (None, false, _) => None,
        };
        if r.for_ms.is_some() && !kind.takes_duration() {
            return Err(problem(
                place,
                format!("{name} takes no `for_ms` (only restarts do)"),
            ));
        }
        Ok(FaultStep {
            fault: Fault {
                kind,
                replica,
                actor,
                down_for: Duration::from_millis(r.for_ms.unwrap_or(0)),
            },
        })
    }

    /// What it needs of a target.
    pub fn requires(&self, needs: &mut BTreeSet<Capability>) {
        needs.extend(Capability::to_fault(self.fault.kind.dependency()));
        if matches!(
            self.fault.kind,
            FaultKind::PostgresTerminateActor
                | FaultKind::PostgresTerminateAll
                | FaultKind::ReplicaCrash
        ) {
            needs.insert(Capability::Database);
        }
    }

    /// How the trace names it.
    pub fn describe(&self) -> String {
        let f = &self.fault;
        let mut text = format!("fault: {}", f.kind.as_str());
        if let Some(a) = &f.actor {
            text.push_str(&format!(" of {a}"));
        }
        if let Some(r) = f.replica {
            text.push_str(&format!(" (replica {r})"));
        }
        text
    }

    /// Does the fault; the trace gets what was done, once its effect is visible.
    pub async fn apply(
        &self,
        ex: &mut Executor<'_>,
        i: usize,
        note: Option<&str>,
    ) -> Result<(), Failure> {
        match ex.target().apply_fault(&self.fault).await {
            Ok(done) => {
                ex.event(
                    Some(i),
                    None,
                    EventKind::Fault,
                    format!("{}: {}", self.describe(), done.effect),
                    None,
                );
                ex.measured(done.measured);
                ex.annotate(note);
                Ok(())
            }
            Err(e) => Err(ex
                .failure_with_diagnostics(i, format!("{}: {e}", self.describe()))
                .await),
        }
    }
}
