//! What a step's checks may consult while a file loads: the declared names (tenants, sets,
//! actors, replicas, sync points, providers, placeholders), and which actors have a step running
//! in the background at this point of the file. A leaf, like mini-redis's `Parse`: the step files
//! use it, and it knows nothing of them; [`super::load`] fills it and calls each step's `parse`.

use std::collections::{BTreeSet, HashMap};

use harbor_service::domain::Provider;
use harbor_service::syncpoints::SYNC_POINTS;

use super::actor::{ActorSpec, MemberRole, UserRef};

/// Where a check failed, and what was expected.
pub type Problem = (String, String);

/// A [`Problem`] at `place`.
pub fn problem(place: impl Into<String>, message: impl Into<String>) -> Problem {
    (place.into(), message.into())
}

/// What a step's checks may consult: the declared names, and which actors have a step running in
/// the background at this point of the file.
pub struct Checker {
    tenants: BTreeSet<String>,
    sets: BTreeSet<String>,
    actors: Vec<ActorSpec>,
    /// Replicas the scenario runs.
    pub replicas: usize,
    /// Actors with a step running in the background, and whether that step says what its outcome
    /// must be.
    background: HashMap<String, Checked>,
}

/// Whether a background step carries an expectation of its outcome (`expect`, `expect_all`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    /// It says what its outcome must be.
    Expected,
    /// It says nothing of its outcome.
    Unexpected,
}

impl Checked {
    /// `Expected` when the step says anything of its outcome.
    pub fn when(expects: bool) -> Self {
        if expects {
            Checked::Expected
        } else {
            Checked::Unexpected
        }
    }
}

impl Checker {
    /// A checker for a scenario of `replicas` replicas, nothing declared yet.
    pub fn new(replicas: usize) -> Self {
        Self {
            tenants: BTreeSet::new(),
            sets: BTreeSet::new(),
            actors: Vec::new(),
            replicas,
            background: HashMap::new(),
        }
    }

    /// Declares a tenant; false when the name is taken.
    pub fn declare_tenant(&mut self, name: &str) -> bool {
        self.tenants.insert(name.to_owned())
    }

    /// Declares a tenant set.
    pub fn declare_set(&mut self, prefix: &str) {
        self.sets.insert(prefix.to_owned());
    }

    /// Declares an actor.
    pub fn declare_actor(&mut self, actor: ActorSpec) {
        self.actors.push(actor);
    }

    /// The actors declared so far.
    pub fn actors(&self) -> &[ActorSpec] {
        &self.actors
    }

    /// The declared actors, once checking is done.
    pub fn into_actors(self) -> Vec<ActorSpec> {
        self.actors
    }

    /// A declared tenant.
    pub fn tenant(&self, place: &str, name: &str) -> Result<String, Problem> {
        if self.tenants.contains(name) {
            Ok(name.to_owned())
        } else {
            Err(problem(
                place,
                format!(
                    "unknown tenant {name:?} (declared: {})",
                    list(&self.tenants)
                ),
            ))
        }
    }

    /// A declared tenant set.
    pub fn tenant_set(&self, place: &str, name: &str) -> Result<String, Problem> {
        if self.sets.contains(name) {
            Ok(name.to_owned())
        } else {
            Err(problem(
                place,
                format!(
                    "unknown tenant set {name:?} (declared: {})",
                    list(&self.sets)
                ),
            ))
        }
    }

    /// A declared actor.
    pub fn actor(&self, place: &str, name: &str) -> Result<&ActorSpec, Problem> {
        self.actors.iter().find(|a| a.name == name).ok_or_else(|| {
            let names: BTreeSet<String> = self.actors.iter().map(|a| a.name.clone()).collect();
            problem(
                place,
                format!("unknown actor {name:?} (declared: {})", list(&names)),
            )
        })
    }

    /// A user reference `<tenant>.owner`, `<tenant>.admin` or `<tenant>.member`.
    pub fn user(&self, place: &str, user: &str) -> Result<UserRef, Problem> {
        let wrong = || {
            problem(
                place,
                format!("expected <tenant>.owner, <tenant>.admin or <tenant>.member, got {user:?}"),
            )
        };
        let (tenant, role) = user.rsplit_once('.').ok_or_else(wrong)?;
        let role = match role {
            "owner" => MemberRole::Owner,
            "admin" => MemberRole::Admin,
            "member" => MemberRole::Member,
            _ => return Err(wrong()),
        };
        Ok(UserRef {
            tenant: self.tenant(place, tenant)?,
            role,
        })
    }

    /// A provider name.
    pub fn provider(&self, place: &str, raw: Option<&str>) -> Result<Provider, Problem> {
        let raw = raw.ok_or_else(|| problem(place, "needs provider = qbo, gmail, slack or box"))?;
        Provider::parse(raw).map_err(|_| {
            problem(
                place,
                format!("unknown provider {raw:?}: expected qbo, gmail, slack or box"),
            )
        })
    }

    /// One of the service's sync points.
    pub fn sync_point(&self, place: &str, point: &str) -> Result<&'static str, Problem> {
        SYNC_POINTS
            .iter()
            .find(|p| **p == point)
            .copied()
            .ok_or_else(|| {
                problem(
                    place,
                    format!(
                        "unknown sync point {point:?} (the service has: {})",
                        SYNC_POINTS.join(", ")
                    ),
                )
            })
    }

    /// A replica index.
    pub fn replica(&self, place: &str, replica: usize) -> Result<usize, Problem> {
        if replica < self.replicas {
            Ok(replica)
        } else {
            Err(problem(
                place,
                format!(
                    "the scenario runs {} replica(s), numbered from 0",
                    self.replicas
                ),
            ))
        }
    }

    /// Checks an expectation: its placeholders, and no empty substring (`error_contains = ""`
    /// or `body_contains = [""]` would hold of any outcome: an expectation that cannot fail).
    pub fn expectation(&self, place: &str, e: &super::format::Expect) -> Result<(), Problem> {
        if *e == super::format::Expect::default() {
            return Err(problem(
                place,
                "an empty expectation holds of every outcome: name a status, a code, a body \
                 field or what the answer must (not) contain",
            ));
        }
        let texts = e.body_excludes.iter().chain(&e.body_contains);
        for x in texts.clone().chain(e.error_contains.iter()) {
            if x.is_empty() {
                return Err(problem(
                    place,
                    "an empty substring matches every outcome: name what the answer must (not) contain",
                ));
            }
        }
        for x in texts {
            self.placeholders(place, x)?;
        }
        Ok(())
    }

    /// Checks `{workspace:x}`, `{tenant:x}`, `{user:x.owner}` and `{prefix}` placeholders.
    pub fn placeholders(&self, place: &str, text: &str) -> Result<(), Problem> {
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else { break };
            let inner = &after[..close];
            match inner.split_once(':') {
                Some(("workspace" | "tenant" | "workspace_lock", t)) => {
                    self.tenant(place, t)?;
                }
                Some(("user", u)) => {
                    self.user(place, u)?;
                }
                Some(("query", q)) => {
                    let (query, tenant) = match q.split_once(':') {
                        Some((query, t)) => (query, Some(t)),
                        None => (q, None),
                    };
                    if !crate::target::state_queries::STATE_QUERIES.iter().any(|(n, _)| *n == query) {
                        return Err(problem(
                            place,
                            format!("unknown state query {{query:{q}}}: expected one of {}", crate::target::state_queries::STATE_QUERIES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")),
                        ));
                    }
                    if let Some(t) = tenant {
                        self.tenant(place, t)?;
                    }
                }
                None if inner == "prefix" => {}
                _ if inner.contains(|c: char| c.is_whitespace() || c == '"' || c == ',') => {}
                _ => {
                    return Err(problem(
                        place,
                        format!("unknown placeholder {{{inner}}}: expected {{workspace:T}}, {{tenant:T}}, {{workspace_lock:T}}, {{query:NAME:T}}, {{user:T.owner}} or {{prefix}}"),
                    ))
                }
            }
            rest = &after[close + 1..];
        }
        Ok(())
    }

    /// Records that `actor` now has a step running in the background.
    pub fn start_background(
        &mut self,
        place: &str,
        actor: &str,
        checked: Checked,
    ) -> Result<(), Problem> {
        if self.background.contains_key(actor) {
            return Err(problem(place, format!("actor {actor:?} already has a step running in the background; wait for it first")));
        }
        self.background.insert(actor.to_owned(), checked);
        Ok(())
    }

    /// Records that `actor`'s background step is collected (its outcome checked).
    pub fn end_background(&mut self, place: &str, actor: &str) -> Result<(), Problem> {
        self.background.remove(actor).map(|_| ()).ok_or_else(|| {
            problem(
                place,
                format!("actor {actor:?} has no step running in the background to wait for"),
            )
        })
    }

    /// Records that `actor`'s background step is dropped unanswered (a hang-up): refused when
    /// that step says what its outcome must be, an expectation nothing would ever check.
    pub fn drop_background(&mut self, place: &str, actor: &str) -> Result<(), Problem> {
        match self.background.remove(actor) {
            Some(Checked::Unexpected) => Ok(()),
            Some(Checked::Expected) => Err(problem(
                place,
                format!("actor {actor:?}'s background step says what its outcome must be, but a hang-up never reads its answer; drop its expect"),
            )),
            None => Err(problem(
                place,
                format!("actor {actor:?} has no step running in the background to hang up"),
            )),
        }
    }
}

fn list(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "none".into()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}
