//! Loading and checking scenario files. Everything that can be known before a scenario runs is
//! checked here — unknown fields, actors, sync points, tenants, providers, counters, placeholders
//! — and reported with the file, the place in it and what was expected.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use harbor_service::domain::{Actor, Provider};
use harbor_service::syncpoints::SYNC_POINTS;

use super::model::{Action, Assertion, Expect, Scenario, Step};

/// A scenario file that cannot run, and why.
#[derive(Debug, Clone)]
pub struct ScenarioError {
    /// The file.
    pub file: PathBuf,
    /// Where in it (`line 4, column 9` or `steps[3].actor`).
    pub place: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.place, self.message)
    }
}

impl std::error::Error for ScenarioError {}

/// A checked scenario and the file it came from.
#[derive(Clone, Debug)]
pub struct LoadedScenario {
    /// The file.
    pub file: PathBuf,
    /// The scenario.
    pub scenario: Scenario,
}

/// The counters of the fake provider a `provider_counter` can name.
pub const PROVIDER_COUNTERS: &[&str] = &[
    "authorize",
    "code_exchanges",
    "code_exchanges_ok",
    "refreshes",
    "refreshes_ok",
    "refreshes_invalid_grant",
    "revocations",
    "resource_reads",
    "resource_unauthorized",
];

const LOCK_TYPES: &[&str] = &["advisory", "tuple", "transactionid", "relation"];

/// Every `*.toml` file under `dir`, sorted by name.
pub fn scenario_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Parses and checks one file.
pub fn load_file(file: &Path) -> Result<LoadedScenario, ScenarioError> {
    let text = std::fs::read_to_string(file).map_err(|e| ScenarioError {
        file: file.to_owned(),
        place: "file".into(),
        message: format!("cannot read: {e}"),
    })?;
    let scenario: Scenario = toml::from_str(&text).map_err(|e| {
        let place = match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}")
            }
            None => "file".into(),
        };
        ScenarioError { file: file.to_owned(), place, message: e.message().to_owned() }
    })?;
    check(&scenario).map_err(|(place, message)| ScenarioError { file: file.to_owned(), place, message })?;
    Ok(LoadedScenario { file: file.to_owned(), scenario })
}

/// Loads every file, then checks that ids are unique across them.
pub fn load_all(files: &[PathBuf]) -> Result<Vec<LoadedScenario>, Vec<ScenarioError>> {
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match load_file(f) {
            Ok(s) => loaded.push(s),
            Err(e) => errors.push(e),
        }
    }
    let mut seen: std::collections::HashMap<String, PathBuf> = Default::default();
    for s in &loaded {
        if let Some(first) = seen.insert(s.scenario.id.clone(), s.file.clone()) {
            errors.push(ScenarioError {
                file: s.file.clone(),
                place: "id".into(),
                message: format!("id {} is already used by {}", s.scenario.id, first.display()),
            });
        }
    }
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

type Problem = (String, String);

fn problem(place: impl Into<String>, message: impl Into<String>) -> Problem {
    (place.into(), message.into())
}

struct Names {
    tenants: BTreeSet<String>,
    sets: BTreeSet<String>,
    actors: BTreeSet<String>,
}

impl Names {
    fn tenant(&self, place: &str, name: &str) -> Result<(), Problem> {
        if self.tenants.contains(name) {
            Ok(())
        } else {
            Err(problem(place, format!("unknown tenant {name:?} (declared: {})", list(&self.tenants))))
        }
    }
    fn actor(&self, place: &str, name: &str) -> Result<(), Problem> {
        if self.actors.contains(name) {
            Ok(())
        } else {
            Err(problem(place, format!("unknown actor {name:?} (declared: {})", list(&self.actors))))
        }
    }
    fn user(&self, place: &str, user: &str) -> Result<(), Problem> {
        let (tenant, role) = user
            .rsplit_once('.')
            .ok_or_else(|| problem(place, format!("expected <tenant>.owner or <tenant>.member, got {user:?}")))?;
        if role != "owner" && role != "member" {
            return Err(problem(place, format!("expected <tenant>.owner or <tenant>.member, got {user:?}")));
        }
        self.tenant(place, tenant)
    }
    /// Checks `{workspace:x}`, `{tenant:x}`, `{user:x.owner}` and `{prefix}` placeholders.
    fn placeholders(&self, place: &str, text: &str) -> Result<(), Problem> {
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else { break };
            let inner = &after[..close];
            match inner.split_once(':') {
                Some(("workspace" | "tenant", t)) => self.tenant(place, t)?,
                Some(("user", u)) => self.user(place, u)?,
                None if inner == "prefix" => {}
                _ if inner.contains(|c: char| c.is_whitespace() || c == '"' || c == ',') => {}
                _ => {
                    return Err(problem(
                        place,
                        format!("unknown placeholder {{{inner}}}: expected {{workspace:T}}, {{tenant:T}}, {{user:T.owner}} or {{prefix}}"),
                    ))
                }
            }
            rest = &after[close + 1..];
        }
        Ok(())
    }
}

fn list(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "none".into()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn provider(place: &str, raw: Option<&String>) -> Result<Provider, Problem> {
    let raw = raw.ok_or_else(|| problem(place, "needs provider = qbo, gmail, slack or box"))?;
    Provider::parse(raw).map_err(|_| problem(place, format!("unknown provider {raw:?}: expected qbo, gmail, slack or box")))
}

fn sync_point(place: &str, point: &str) -> Result<(), Problem> {
    if SYNC_POINTS.contains(&point) {
        Ok(())
    } else {
        Err(problem(place, format!("unknown sync point {point:?} (the service has: {})", SYNC_POINTS.join(", "))))
    }
}

fn check(s: &Scenario) -> Result<(), Problem> {
    if s.id.is_empty() || !s.id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-') {
        return Err(problem("id", format!("expected upper-case letters, digits and '-', got {:?}", s.id)));
    }
    let areas: Vec<&str> = crate::report::catalogue::AREAS.iter().map(|a| a.key).collect();
    if !areas.contains(&s.area.as_str()) {
        return Err(problem("area", format!("unknown area {:?}: expected {}", s.area, areas.join(", "))));
    }
    for (i, t) in s.threats.iter().enumerate() {
        if !crate::report::catalogue::THREATS.iter().any(|x| x.name == t) {
            let names: Vec<&str> = crate::report::catalogue::THREATS.iter().map(|x| x.name).collect();
            return Err(problem(format!("threats[{i}]"), format!("unknown threat {t:?}: expected one of the threat matrix's rows: {}", names.join("; "))));
        }
    }
    for (i, f) in s.catches.iter().enumerate() {
        if harbor_service::flaws::Flaw::parse(f).is_none() {
            let names: Vec<&str> = harbor_service::flaws::Flaw::ALL.iter().map(|f| f.name()).collect();
            return Err(problem(format!("catches[{i}]"), format!("unknown flaw {f:?}: expected one of {}", names.join(", "))));
        }
    }
    if s.service.replicas == 0 || s.service.replicas > 8 {
        return Err(problem("service.replicas", "expected 1 to 8"));
    }
    for (name, raw) in [("service.rate_limit_tenant", &s.service.rate_limit_tenant), ("service.rate_limit_failed_states", &s.service.rate_limit_failed_states)] {
        if let Some(raw) = raw {
            raw.parse::<harbor_service::ratelimit::Quota>().map_err(|e| problem(name, e))?;
        }
    }
    let mut names = Names { tenants: BTreeSet::new(), sets: BTreeSet::new(), actors: BTreeSet::new() };
    for (i, t) in s.tenants.iter().enumerate() {
        let place = format!("tenants[{i}]");
        if !names.tenants.insert(t.name.clone()) {
            return Err(problem(place, format!("tenant {:?} is declared twice", t.name)));
        }
        for (p, status) in &t.connections {
            provider(&format!("{place}.connections"), Some(p))?;
            harbor_service::lifecycle::ConnectionStatus::parse(status).map_err(|_| {
                problem(format!("{place}.connections.{p}"), format!("unknown status {status:?}: expected NOT_CONNECTED, PENDING, CONNECTED, DISCONNECTED or REVOKED"))
            })?;
        }
        for p in &t.oauth {
            provider(&format!("{place}.oauth"), Some(p))?;
        }
    }
    for (i, set) in s.tenant_sets.iter().enumerate() {
        if set.count == 0 || set.count > 500 {
            return Err(problem(format!("tenant_sets[{i}].count"), "expected 1 to 500"));
        }
        names.sets.insert(set.prefix.clone());
    }
    for (i, a) in s.actors.iter().enumerate() {
        let place = format!("actors[{i}]");
        Actor::parse(&a.name).map_err(|e| problem(format!("{place}.name"), e.to_string()))?;
        if !names.actors.insert(a.name.clone()) {
            return Err(problem(place, format!("actor {:?} is declared twice", a.name)));
        }
        if let Some(u) = &a.user {
            names.user(&format!("{place}.user"), u)?;
        }
    }
    if s.steps.is_empty() {
        return Err(problem("steps", "a scenario needs at least one step"));
    }
    // One backend per actor: an actor's HTTP requests and its SQL session would both carry its
    // tag, and the lock tables could not say which one is meant.
    for a in &s.actors {
        let sql = s.steps.iter().any(|st| st.actor.as_ref() == Some(&a.name) && st.action == Action::Sql);
        let other = s.steps.iter().any(|st| {
            st.actor.as_ref() == Some(&a.name)
                && !matches!(st.action, Action::Sql | Action::Wait | Action::Release | Action::Redis)
        });
        if sql && other {
            return Err(problem("actors", format!("actor {:?} runs both SQL and HTTP steps; give each its own actor", a.name)));
        }
    }
    let mut background: HashSet<String> = HashSet::new();
    for (i, step) in s.steps.iter().enumerate() {
        check_step(s, &names, &mut background, &format!("steps[{i}] (do = {:?})", step.action), step)?;
    }
    for (i, a) in s.assertions.iter().enumerate() {
        check_assertion(&names, &format!("assert[{i}]"), a)?;
    }
    Ok(())
}

fn check_expect(names: &Names, place: &str, e: &Expect) -> Result<(), Problem> {
    for x in e.body_excludes.iter().chain(&e.body_contains) {
        names.placeholders(place, x)?;
    }
    Ok(())
}

fn check_step(s: &Scenario, names: &Names, background: &mut HashSet<String>, place: &str, step: &Step) -> Result<(), Problem> {
    let needs_actor = !matches!(step.action, Action::AdvanceClock | Action::Provider | Action::Assert | Action::Fault);
    let actor = match (&step.actor, needs_actor) {
        (Some(a), _) => {
            names.actor(&format!("{place}.actor"), a)?;
            Some(a.clone())
        }
        (None, true) => return Err(problem(place, "needs actor")),
        (None, false) => None,
    };
    let actor_def = actor.as_ref().and_then(|a| s.actors.iter().find(|d| &d.name == a));
    if let Some(w) = &step.workspace {
        names.tenant(&format!("{place}.workspace"), w)?;
    }
    let http_like = matches!(
        step.action,
        Action::Http
            | Action::Activate
            | Action::Authorize
            | Action::Callback
            | Action::Connect
            | Action::Disconnect
            | Action::Revoke
            | Action::Sync
            | Action::ListConnections
            | Action::ListDocuments
    );
    if http_like && step.each_of.is_none() && actor_def.is_some_and(|a| a.user.is_none()) && step.workspace.is_none() && step.action != Action::Http {
        return Err(problem(format!("{place}.workspace"), "the actor has no user, so the step must name its workspace"));
    }
    if step.replica >= s.service.replicas || step.callback_replica.is_some_and(|r| r >= s.service.replicas) {
        return Err(problem(format!("{place}.replica"), format!("the scenario runs {} replica(s), numbered from 0", s.service.replicas)));
    }
    match step.action {
        Action::Authorize | Action::Callback | Action::Connect | Action::Disconnect | Action::Revoke | Action::Sync => {
            provider(&format!("{place}.provider"), step.provider.as_ref())?;
        }
        Action::Provider => {
            provider(&format!("{place}.provider"), step.provider.as_ref())?;
            if let Some(f) = &step.token_fault {
                if !["server_error", "invalid_grant", "none"].contains(&f.as_str()) {
                    return Err(problem(format!("{place}.token_fault"), "expected server_error, invalid_grant or none"));
                }
            }
        }
        Action::Http => {
            let method = step.method.as_deref().ok_or_else(|| problem(place, "needs method"))?;
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method) {
                return Err(problem(format!("{place}.method"), "expected GET, POST, PUT, PATCH or DELETE"));
            }
            let path = step.path.as_deref().ok_or_else(|| problem(place, "needs path"))?;
            names.placeholders(&format!("{place}.path"), path)?;
        }
        Action::Sql => {
            let sql = step.sql.as_deref().ok_or_else(|| problem(place, "needs sql"))?;
            names.placeholders(&format!("{place}.sql"), sql)?;
            if let Some(t) = &step.tenant {
                names.tenant(&format!("{place}.tenant"), t)?;
            }
            if let Some(r) = &step.role {
                if !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(problem(format!("{place}.role"), "a role name of [A-Za-z0-9_]"));
                }
            }
        }
        Action::Redis => {
            let cmd = step.redis.as_ref().filter(|c| !c.is_empty()).ok_or_else(|| problem(place, "needs redis = [\"COMMAND\", args…]"))?;
            for a in cmd {
                names.placeholders(&format!("{place}.redis"), a)?;
            }
        }
        Action::AdvanceClock => {
            step.seconds.ok_or_else(|| problem(place, "needs seconds"))?;
        }
        Action::Release => {
            let point = step.point.as_deref().ok_or_else(|| problem(place, "needs point"))?;
            sync_point(&format!("{place}.point"), point)?;
        }
        Action::Wait => {
            let a = actor.as_ref().expect("checked above");
            if !background.remove(a) {
                return Err(problem(place, format!("actor {a:?} has no step running in the background to wait for")));
            }
        }
        Action::Assert => {
            let check = step.check.as_ref().ok_or_else(|| problem(place, "needs check = { … }"))?;
            check_assertion(names, &format!("{place}.check"), check)?;
        }
        Action::Fault => {
            step.fault.ok_or_else(|| problem(place, "needs fault = \"redis_pause\" | \"redis_resume\" | \"redis_drop_connections\" | \"postgres_pause\" | \"postgres_resume\" | \"postgres_drop_connections\""))?;
        }
        Action::Activate | Action::ListConnections | Action::ListDocuments => {}
    }
    if let Some(c) = &step.consent_of {
        names.actor(&format!("{place}.consent_of"), c)?;
    }
    if step.denied && step.action != Action::Callback {
        return Err(problem(format!("{place}.denied"), "denied goes with do = \"callback\""));
    }
    for (k, v) in &step.headers {
        names.placeholders(&format!("{place}.headers.{k}"), v)?;
    }
    if let Some(p) = &step.park_at {
        sync_point(&format!("{place}.park_at"), p)?;
    }
    if let Some(b) = &step.expect_blocked {
        names.actor(&format!("{place}.expect_blocked.on"), &b.on)?;
        if Some(&b.on) == actor.as_ref() {
            return Err(problem(format!("{place}.expect_blocked.on"), "an actor cannot block on itself"));
        }
        for l in &b.lock {
            if !LOCK_TYPES.contains(&l.as_str()) {
                return Err(problem(format!("{place}.expect_blocked.lock"), format!("unknown lock type {l:?}: expected {}", LOCK_TYPES.join(", "))));
            }
        }
        if let Some(o) = &b.object {
            names.tenant(&format!("{place}.expect_blocked.object"), o)?;
        }
    }
    let many = step.concurrency.is_some() || step.each_of.is_some();
    if let Some(set) = &step.each_of {
        if !names.sets.contains(set) {
            return Err(problem(format!("{place}.each_of"), format!("unknown tenant set {set:?} (declared: {})", list(&names.sets))));
        }
    }
    if step.concurrency == Some(0) {
        return Err(problem(format!("{place}.concurrency"), "expected at least 1"));
    }
    // On a `release`, `expect_blocked` says the released request must then block: it runs on in
    // the background it was parked in, not in a new one.
    let runs_in_background =
        step.action != Action::Release && (step.park_at.is_some() || step.expect_blocked.is_some() || step.background);
    if many && (runs_in_background || !http_like) {
        return Err(problem(place, "concurrency/each_of apply to HTTP steps that run to completion (no park_at, expect_blocked or background)"));
    }
    if many && step.expect.is_some() {
        return Err(problem(format!("{place}.expect"), "a step with concurrency/each_of is checked with expect_all and expect_counts, not expect"));
    }
    if step.expect.is_some() && matches!(step.action, Action::Release | Action::Wait | Action::AdvanceClock | Action::Provider | Action::Assert | Action::Fault) {
        return Err(problem(format!("{place}.expect"), "this action has no outcome to expect; put the expectation on the step that launched the request"));
    }
    if !many && (step.expect_all.is_some() || !step.expect_counts.is_empty()) {
        return Err(problem(place, "expect_all and expect_counts need concurrency or each_of"));
    }
    if runs_in_background {
        if !(http_like || step.action == Action::Sql) {
            return Err(problem(place, "only HTTP and SQL steps can run in the background"));
        }
        let a = actor.expect("background steps have actors");
        if !background.insert(a.clone()) {
            return Err(problem(place, format!("actor {a:?} already has a step running in the background; wait for it first")));
        }
    }
    for e in step.expect.iter().chain(step.expect_all.iter()).chain(step.expect_counts.iter().map(|c| &c.expect)) {
        check_expect(names, &format!("{place}.expect"), e)?;
    }
    Ok(())
}

fn check_assertion(names: &Names, place: &str, a: &Assertion) -> Result<(), Problem> {
    let kinds = a.kinds();
    if kinds.len() != 1 {
        return Err(problem(
            place,
            format!(
                "expected exactly one of sql, redis_keys, provider_counter, no_lock_held, no_canary_leaks, tokens_bound; found {}",
                if kinds.is_empty() { "none".to_owned() } else { kinds.join(", ") }
            ),
        ));
    }
    if a.ttl_between.is_some() && a.redis_keys.is_none() {
        return Err(problem(format!("{place}.ttl_between"), "ttl_between goes with redis_keys"));
    }
    if a.rows.is_some() && a.sql.is_none() {
        return Err(problem(format!("{place}.rows"), "rows goes with sql"));
    }
    if a.equals.is_some() && !matches!(kinds[0], "sql" | "redis_keys" | "provider_counter") {
        return Err(problem(format!("{place}.equals"), "equals goes with sql, redis_keys or provider_counter"));
    }
    match kinds[0] {
        "sql" => {
            names.placeholders(&format!("{place}.sql"), a.sql.as_deref().unwrap_or_default())?;
            if a.rows.is_none() == a.equals.is_none() {
                return Err(problem(place, "sql needs exactly one of rows or equals"));
            }
        }
        "redis_keys" | "provider_counter" => {
            if a.equals.is_none() {
                return Err(problem(place, format!("{} needs equals", kinds[0])));
            }
            if let Some(c) = &a.provider_counter {
                let (p, counter) = c.split_once('.').ok_or_else(|| problem(format!("{place}.provider_counter"), "expected <provider>.<counter>"))?;
                provider(&format!("{place}.provider_counter"), Some(&p.to_owned()))?;
                if !PROVIDER_COUNTERS.contains(&counter) {
                    return Err(problem(format!("{place}.provider_counter"), format!("unknown counter {counter:?}: expected {}", PROVIDER_COUNTERS.join(", "))));
                }
            }
        }
        "no_lock_held" => names.tenant(&format!("{place}.no_lock_held"), a.no_lock_held.as_deref().unwrap_or_default())?,
        _ => {}
    }
    Ok(())
}
