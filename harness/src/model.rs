//! The reference model of the service's workspace flows: what every response and the stored state
//! must be after a sequence of operations, in plain Rust, with no I/O. The state-machine tests
//! ([`crate::statemachine`]) run the same operations against the real service and compare.
//!
//! It is written from the service's contract, not from its code: the lifecycle table in
//! [`next_status`] is the model's own (a bug in `lifecycle::next_status` shows up as a
//! disagreement, not as a shared mistake).

use std::collections::BTreeMap;

use harbor_service::domain::Provider;
use harbor_service::lifecycle::ConnectionStatus;

/// How long an OAuth state lives (seconds).
pub const STATE_TTL: i64 = 600;
/// How long the fake provider's access tokens live (seconds).
pub const TOKEN_TTL: i64 = 3600;
/// How close to expiry a sync refreshes first (seconds; the harness's configuration).
pub const REFRESH_MARGIN: i64 = 300;

/// Who makes a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Who {
    /// The owner of workspace A.
    Owner,
    /// A plain member of workspace A.
    Member,
    /// The owner of another tenant's workspace (a verified user, not a member of A).
    Outsider,
}

/// A connection of workspace A, as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// Its status.
    pub status: ConnectionStatus,
    /// The status a failed authorization returns to.
    pub settled: ConnectionStatus,
    /// The flow a `PENDING` connection waits for.
    pub pending_flow: Option<u64>,
    /// When its access token expires (model clock), while `CONNECTED`.
    pub expires_at: Option<i64>,
}

/// An OAuth state the service issued.
#[derive(Clone, Debug)]
pub struct IssuedState {
    /// Who started the flow.
    pub by: Who,
    /// For which provider.
    pub provider: Provider,
    /// When (model clock).
    pub created_at: i64,
    /// Whether a callback has consumed it.
    pub consumed: bool,
    /// The flow it belongs to.
    pub flow: u64,
}

/// What a response must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The HTTP status.
    pub status: u16,
    /// The stable error code, for errors.
    pub code: Option<&'static str>,
    /// A body field that must have this value (`status`, `already_completed`, `refreshed`).
    pub field: Option<(&'static str, serde_json::Value)>,
}

impl Expected {
    fn ok(field: &'static str, value: impl Into<serde_json::Value>) -> Self {
        Self {
            status: 200,
            code: None,
            field: Some((field, value.into())),
        }
    }

    /// An error answer: `status` with the stable `code`.
    pub fn error(status: u16, code: &'static str) -> Self {
        Self {
            status,
            code: Some(code),
            field: None,
        }
    }
}

/// Calls a provider must have received from the service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// Codes exchanged for tokens (`code_exchanges_ok`).
    pub exchanges: u64,
    /// Revocations: a revoke, or a fresh grant the service could not use (superseded, or the
    /// connection changed meanwhile) and gave back.
    pub revocations: u64,
    /// Refreshes answered with tokens (`refreshes_ok`).
    pub refreshes: u64,
}

/// A lifecycle transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Authorize.
    Start,
    /// A callback stores a grant.
    Complete,
    /// A callback failed after its exchange was refused.
    Fail,
    /// Disconnect.
    Disconnect,
    /// Revoke.
    Revoke,
}

/// The model's own lifecycle table.
pub fn next_status(
    from: ConnectionStatus,
    settled: ConnectionStatus,
    t: Transition,
) -> Option<ConnectionStatus> {
    use ConnectionStatus::*;
    match (t, from) {
        (Transition::Start, NotConnected | Disconnected | Revoked | Pending) => Some(Pending),
        (Transition::Complete, Pending) => Some(Connected),
        (Transition::Fail, Pending) => Some(settled),
        (Transition::Disconnect, Connected | Pending | Revoked) => Some(Disconnected),
        (Transition::Revoke, Connected) => Some(Revoked),
        _ => None,
    }
}

/// The whole model: workspace A's connections and activation, the issued states, the clock.
#[derive(Clone, Debug)]
pub struct Model {
    /// Seconds the harness has moved the service's clock.
    pub clock: i64,
    /// Workspace A's connections.
    pub connections: BTreeMap<Provider, Connection>,
    /// Whether workspace A is activated.
    pub activated: bool,
    /// Every state issued, in order.
    pub states: Vec<IssuedState>,
    /// Whether the provider's token endpoint answers 500.
    pub token_fault: bool,
    /// What each provider must have counted.
    pub counters: BTreeMap<Provider, Counted>,
    next_flow: u64,
}

impl Model {
    /// Workspace A, entitled, nothing connected, on `providers`.
    pub fn new(providers: &[Provider]) -> Self {
        let fresh = Connection {
            status: ConnectionStatus::NotConnected,
            settled: ConnectionStatus::NotConnected,
            pending_flow: None,
            expires_at: None,
        };
        Self {
            clock: 0,
            connections: providers.iter().map(|p| (*p, fresh.clone())).collect(),
            activated: false,
            states: Vec::new(),
            token_fault: false,
            counters: providers.iter().map(|p| (*p, Counted::default())).collect(),
            next_flow: 0,
        }
    }

    /// What an operation did outside the database, taken from `ran` (this model with the
    /// operation applied in full): the states it consumed in Redis and the calls the provider
    /// counted. Nothing it would have committed — its connection and activation changes — is
    /// kept. How a request interrupted between its provider call and its commit leaves the world.
    pub fn keep_outside_effects(&mut self, ran: Model) {
        self.states = ran.states;
        self.counters = ran.counters;
    }

    fn count(&mut self, provider: Provider) -> &mut Counted {
        self.counters.entry(provider).or_default()
    }

    /// States issued and not consumed (still in Redis: their TTL is real time).
    pub fn unconsumed_states(&self) -> usize {
        self.states.iter().filter(|s| !s.consumed).count()
    }

    fn apply(&mut self, provider: Provider, t: Transition) -> Option<ConnectionStatus> {
        let c = self.connections.get_mut(&provider)?;
        let to = next_status(c.status, c.settled, t)?;
        c.status = to;
        if to != ConnectionStatus::Pending {
            c.settled = to;
            c.pending_flow = None;
        }
        if to != ConnectionStatus::Connected {
            c.expires_at = None;
        }
        Some(to)
    }

    /// `POST …/authorize` by `who` (a member of A). Records the state when it succeeds.
    pub fn authorize(&mut self, who: Who, provider: Provider) -> Expected {
        match who {
            Who::Outsider => return Expected::error(404, "NOT_FOUND"),
            // Connecting needs the role disconnecting needs (hardening round 2, item 10).
            Who::Member => return Expected::error(403, "FORBIDDEN"),
            Who::Owner => {}
        }
        match self.apply(provider, Transition::Start) {
            None => Expected::error(409, "INVALID_TRANSITION"),
            Some(status) => {
                self.next_flow += 1;
                let flow = self.next_flow;
                self.connections
                    .get_mut(&provider)
                    .expect("modelled")
                    .pending_flow = Some(flow);
                self.states.push(IssuedState {
                    by: who,
                    provider,
                    created_at: self.clock,
                    consumed: false,
                    flow,
                });
                Expected::ok("status", status.as_str())
            }
        }
    }

    /// The callback of state `index`, presented by `presenter` at `path_provider`'s callback,
    /// with the user's consent or (`denied`) without it.
    pub fn callback(
        &mut self,
        index: usize,
        presenter: Who,
        path_provider: Provider,
        denied: bool,
    ) -> Expected {
        let clock = self.clock;
        let token_fault = self.token_fault;
        let Some(state) = self.states.get_mut(index) else {
            return Expected::error(400, "OAUTH_STATE_INVALID");
        };
        if state.consumed {
            return Expected::error(400, "OAUTH_STATE_INVALID");
        }
        state.consumed = true;
        if clock - state.created_at > STATE_TTL {
            return Expected::error(400, "OAUTH_STATE_INVALID");
        }
        if presenter != state.by || path_provider != state.provider {
            return Expected::error(403, "OAUTH_STATE_MISMATCH");
        }
        let (provider, flow) = (state.provider, state.flow);
        let waits_for_this_flow = |m: &Model| {
            let c = &m.connections[&provider];
            c.status == ConnectionStatus::Pending && c.pending_flow == Some(flow)
        };
        if denied || token_fault {
            if waits_for_this_flow(self) {
                self.apply(provider, Transition::Fail);
            }
            return if denied {
                Expected::error(403, "CONSENT_DENIED")
            } else {
                Expected::error(502, "PROVIDER_ERROR")
            };
        }
        // The code is exchanged; a grant that cannot be stored is given back at once.
        self.count(provider).exchanges += 1;
        let c = &self.connections[&provider];
        if c.status == ConnectionStatus::Pending && c.pending_flow != Some(flow) {
            self.count(provider).revocations += 1;
            return Expected::error(409, "AUTHORIZATION_SUPERSEDED");
        }
        match self.apply(provider, Transition::Complete) {
            None => {
                self.count(provider).revocations += 1;
                Expected::error(409, "INVALID_TRANSITION")
            }
            Some(status) => {
                self.connections
                    .get_mut(&provider)
                    .expect("modelled")
                    .expires_at = Some(clock + TOKEN_TTL);
                Expected::ok("status", status.as_str())
            }
        }
    }

    /// `POST …/activation` by `who`.
    pub fn activate(&mut self, who: Who) -> Expected {
        if who == Who::Outsider {
            return Expected::error(404, "NOT_FOUND");
        }
        if self.activated {
            return Expected::ok("already_completed", true);
        }
        if self.connections.get(&Provider::Qbo).map(|c| c.status)
            != Some(ConnectionStatus::Connected)
        {
            return Expected::error(409, "ACTIVATION_NOT_READY");
        }
        self.activated = true;
        Expected::ok("already_completed", false)
    }

    /// `POST …/disconnect` or `…/revoke` by `who`.
    pub fn end(&mut self, who: Who, provider: Provider, t: Transition) -> Expected {
        match who {
            Who::Outsider => return Expected::error(404, "NOT_FOUND"),
            Who::Member => return Expected::error(403, "FORBIDDEN"),
            Who::Owner => {}
        }
        let had_grant = self.connections[&provider].status == ConnectionStatus::Connected;
        match self.apply(provider, t) {
            None => Expected::error(409, "INVALID_TRANSITION"),
            Some(status) => {
                // Revoke and disconnect both give a held grant back at the provider.
                self.count(provider).revocations += u64::from(had_grant);
                Expected::ok("status", status.as_str())
            }
        }
    }

    /// `POST …/sync`: refreshes first when the token is within the margin.
    pub fn sync(&mut self, provider: Provider) -> Expected {
        let clock = self.clock;
        let token_fault = self.token_fault;
        let c = self.connections.get_mut(&provider).expect("modelled");
        if c.status != ConnectionStatus::Connected {
            return Expected::error(409, "CONNECTION_NOT_CONNECTED");
        }
        let stale = c.expires_at.is_some_and(|at| at <= clock + REFRESH_MARGIN);
        if !stale {
            return Expected::ok("refreshed", false);
        }
        if token_fault {
            return Expected::error(502, "PROVIDER_ERROR");
        }
        c.expires_at = Some(clock + TOKEN_TTL);
        self.count(provider).refreshes += 1;
        Expected::ok("refreshed", true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectionStatus::*;

    #[test]
    fn a_full_flow_activates_once() {
        let mut m = Model::new(&[Provider::Qbo]);
        assert_eq!(m.activate(Who::Owner).code, Some("ACTIVATION_NOT_READY"));
        assert_eq!(
            m.authorize(Who::Member, Provider::Qbo).code,
            Some("FORBIDDEN")
        );
        assert_eq!(m.authorize(Who::Owner, Provider::Qbo).status, 200);
        assert_eq!(
            m.callback(0, Who::Owner, Provider::Qbo, false).field,
            Some(("status", "CONNECTED".into()))
        );
        assert_eq!(
            m.callback(0, Who::Owner, Provider::Qbo, false).code,
            Some("OAUTH_STATE_INVALID"),
            "consumed once"
        );
        assert_eq!(
            m.activate(Who::Member).field,
            Some(("already_completed", false.into()))
        );
        assert_eq!(
            m.activate(Who::Owner).field,
            Some(("already_completed", true.into()))
        );
    }

    #[test]
    fn states_are_bound_expire_and_flows_supersede() {
        let mut m = Model::new(&[Provider::Qbo, Provider::Gmail]);
        m.authorize(Who::Owner, Provider::Qbo);
        m.authorize(Who::Owner, Provider::Qbo);
        assert_eq!(
            m.callback(0, Who::Owner, Provider::Qbo, false).code,
            Some("AUTHORIZATION_SUPERSEDED")
        );
        assert_eq!(
            m.callback(1, Who::Member, Provider::Qbo, false).code,
            Some("OAUTH_STATE_MISMATCH"),
            "another user's state"
        );
        m.authorize(Who::Owner, Provider::Gmail);
        assert_eq!(
            m.callback(2, Who::Owner, Provider::Qbo, false).code,
            Some("OAUTH_STATE_MISMATCH"),
            "wrong provider"
        );
        m.authorize(Who::Owner, Provider::Gmail);
        m.clock += STATE_TTL + 1;
        assert_eq!(
            m.callback(3, Who::Owner, Provider::Gmail, false).code,
            Some("OAUTH_STATE_INVALID"),
            "expired"
        );
        assert_eq!(m.connections[&Provider::Gmail].status, Pending);
    }

    #[test]
    fn a_denied_or_failed_flow_returns_to_the_settled_status() {
        let mut m = Model::new(&[Provider::Qbo]);
        m.authorize(Who::Owner, Provider::Qbo);
        m.callback(0, Who::Owner, Provider::Qbo, false);
        m.end(Who::Owner, Provider::Qbo, Transition::Revoke);
        m.authorize(Who::Owner, Provider::Qbo);
        assert_eq!(
            m.callback(1, Who::Owner, Provider::Qbo, true).code,
            Some("CONSENT_DENIED")
        );
        assert_eq!(m.connections[&Provider::Qbo].status, Revoked);
        m.token_fault = true;
        m.authorize(Who::Owner, Provider::Qbo);
        assert_eq!(
            m.callback(2, Who::Owner, Provider::Qbo, false).code,
            Some("PROVIDER_ERROR")
        );
        assert_eq!(m.connections[&Provider::Qbo].status, Revoked);
        assert_eq!(
            m.end(Who::Member, Provider::Qbo, Transition::Disconnect)
                .code,
            Some("FORBIDDEN")
        );
    }

    #[test]
    fn syncs_refresh_inside_the_margin_only() {
        let mut m = Model::new(&[Provider::Gmail]);
        assert_eq!(
            m.sync(Provider::Gmail).code,
            Some("CONNECTION_NOT_CONNECTED")
        );
        m.authorize(Who::Owner, Provider::Gmail);
        m.callback(0, Who::Owner, Provider::Gmail, false);
        assert_eq!(
            m.sync(Provider::Gmail).field,
            Some(("refreshed", false.into()))
        );
        m.clock += TOKEN_TTL - REFRESH_MARGIN + 10;
        m.token_fault = true;
        assert_eq!(m.sync(Provider::Gmail).code, Some("PROVIDER_ERROR"));
        m.token_fault = false;
        assert_eq!(
            m.sync(Provider::Gmail).field,
            Some(("refreshed", true.into()))
        );
        assert_eq!(
            m.sync(Provider::Gmail).field,
            Some(("refreshed", false.into()))
        );
    }
}
