//! Where an explored workspace starts: connected, connected with a stale token, or with an
//! authorization pending — and what the reference model says of each start.

use harbor_service::domain::Provider;

use super::ops::Operation;
use crate::model::{Model, Who};
use crate::target::Capability;

/// Where the explored workspace starts.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Start {
    /// QuickBooks connected through the real OAuth flow, token fresh; entitled.
    Connected,
    /// Connected, and the clock moved past the token's expiry (a sync must refresh).
    Stale,
    /// An authorization started (PENDING) whose consent is ready for `callback`; entitled.
    Pending,
}

impl Start {
    /// Its name in outputs and saved files (`connected`, `stale`, `pending`).
    pub fn as_str(self) -> &'static str {
        match self {
            Start::Connected => "connected",
            Start::Stale => "stale",
            Start::Pending => "pending",
        }
    }

    /// The start a set of operations is most interesting from: pending when a callback needs its
    /// flow, stale when a sync would refresh, connected otherwise.
    pub fn for_operations(ops: &[Operation]) -> Start {
        if ops.contains(&Operation::Callback) {
            Start::Pending
        } else if ops.contains(&Operation::Sync) {
            Start::Stale
        } else {
            Start::Connected
        }
    }

    /// What a target must offer to be brought to this start: a stale token is made by moving
    /// the service's clock.
    pub fn needs(self) -> Option<Capability> {
        (self == Start::Stale).then_some(Capability::Clock)
    }

    /// The model of the start.
    pub fn model(self) -> Model {
        let mut m = Model::new(&[Provider::Qbo]);
        match self {
            Start::Pending => {
                m.authorize(Who::Owner, Provider::Qbo);
            }
            Start::Connected | Start::Stale => {
                m.authorize(Who::Owner, Provider::Qbo);
                m.callback(0, Who::Owner, Provider::Qbo, false);
                // The setup's flow is spent: the state index 0 stays consumed.
                if self == Start::Stale {
                    m.clock += crate::model::TOKEN_TTL;
                }
            }
        }
        m
    }
}
