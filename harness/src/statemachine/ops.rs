//! The state machine's operations and the strategy that draws them: who does what, on which
//! provider and replica. Each request op is sent and modelled as its [`WorkspaceOp`], the
//! vocabulary scenarios and exploration share.

use super::*;

/// One operation of a sequence.
#[derive(Clone, Debug)]
pub enum Op {
    /// `POST …/authorize` (and the user's consent at the provider).
    Authorize {
        /// Who asks.
        who: Who,
        /// For which provider.
        provider: Provider,
        /// On which replica.
        replica: usize,
    },
    /// A callback with an issued state.
    Callback {
        /// Which issued state (modulo how many there are).
        state: usize,
        /// Who presents it.
        presenter: Who,
        /// At which provider's callback (`None`: the state's own provider).
        path: Option<Provider>,
        /// The user declined at the provider (`error=access_denied`).
        denied: bool,
        /// On which replica.
        replica: usize,
    },
    /// `POST …/activation`.
    Activate {
        /// Who asks.
        who: Who,
        /// On which replica.
        replica: usize,
    },
    /// `POST …/disconnect`.
    Disconnect {
        /// Who asks.
        who: Who,
        /// Which connection.
        provider: Provider,
    },
    /// `POST …/revoke`.
    Revoke {
        /// Who asks.
        who: Who,
        /// Which connection.
        provider: Provider,
    },
    /// `POST …/sync` (by the plain member).
    Sync {
        /// Which connection.
        provider: Provider,
        /// On which replica.
        replica: usize,
    },
    /// `GET …/connections`: metadata only.
    ListConnections,
    /// Move the service's clock (values that never land exactly on a state or token deadline).
    AdvanceClock {
        /// By how much.
        seconds: i64,
    },
    /// The provider's token endpoint answers 500 (or stops doing so).
    TokenFault {
        /// On or off.
        on: bool,
    },
    /// A request with an expired token: 401.
    ExpiredToken,
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![3 => Just(Who::Owner), 2 => Just(Who::Member), 1 => Just(Who::Outsider)]
}

/// Who starts or completes a connection: connecting needs the owner or admin role, so a member's
/// attempt is one answer (403) — drawn now and then, not a third of the time, or few sequences
/// would ever reach a connected state for the later operations to work on.
fn who_connects() -> impl Strategy<Value = Who> {
    prop_oneof![8 => Just(Who::Owner), 1 => Just(Who::Member), 1 => Just(Who::Outsider)]
}

fn provider() -> impl Strategy<Value = Provider> {
    prop_oneof![Just(Provider::Qbo), Just(Provider::Gmail)]
}

/// Operations, weighted towards the flows that change state.
pub fn op() -> impl Strategy<Value = Op> {
    let replica = 0..2usize;
    prop_oneof![
        6 => (who_connects(), provider(), replica.clone()).prop_map(|(who, provider, replica)| Op::Authorize { who, provider, replica }),
        8 => (0..8usize, prop_oneof![6 => Just(None), 1 => provider().prop_map(Some)], prop_oneof![3 => Just(false), 1 => Just(true)], replica.clone(), who_connects())
            .prop_map(|(state, path, denied, replica, presenter)| Op::Callback { state, presenter, path, denied, replica }),
        5 => (who(), replica.clone()).prop_map(|(who, replica)| Op::Activate { who, replica }),
        2 => (who(), provider()).prop_map(|(who, provider)| Op::Disconnect { who, provider }),
        2 => (who(), provider()).prop_map(|(who, provider)| Op::Revoke { who, provider }),
        3 => (provider(), replica).prop_map(|(provider, replica)| Op::Sync { provider, replica }),
        1 => Just(Op::ListConnections),
        2 => prop_oneof![Just(170i64), Just(700), Just(3500)].prop_map(|seconds| Op::AdvanceClock { seconds }),
        1 => any::<bool>().prop_map(|on| Op::TokenFault { on }),
        1 => Just(Op::ExpiredToken),
    ]
}
