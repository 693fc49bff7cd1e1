//! Loading: a file ([`super::format`]) becomes a typed [`Scenario`] ([`super::typed`]) or an error
//! naming the file, the place in it and what was expected. Everything that can be known before a
//! scenario runs is checked here, once — unknown fields, actors, sync points, tenants, providers,
//! counters, placeholders — and each step kind checks its own fields in its file under
//! [`super::step`], through the [`Checker`] this module lends it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harbor_service::domain::Actor;
use harbor_service::flaws::Flaw;
use harbor_service::lifecycle::ConnectionStatus;
use harbor_service::ratelimit::Quota;

use super::actor::ActorSpec;
use super::assertion::Assertion;
use super::check::{problem, Checker, Problem};
use super::file::ScenarioFile;
use super::format::TokenChoice;
use super::step::{Step, StepKind};
use super::typed::{Scenario, ServiceSettings, Tenant};
use crate::catalogue::{AREAS, THREATS};

/// A scenario file that cannot run, and why.
#[derive(Debug, Clone)]
pub struct ScenarioError {
    /// The file.
    pub file: PathBuf,
    /// Where in it (`line 4, column 9` or `step 4 (do = "sync").actor`; steps count from 1).
    pub place: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.file.display(),
            self.place,
            self.message
        )
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
    /// The SHA-256 of the text it was loaded from (hex): what a record of its run names, so a
    /// replay of a file edited since is refused.
    pub sha256: String,
}

/// Every `*.toml` file under `dir`, sorted by name.
pub fn scenario_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    files_with_extension(dir, "toml")
}

/// Every `*.<extension>` file directly in `dir`, sorted by name.
pub fn files_with_extension(dir: &Path, extension: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == extension))
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
    load_str(file, &text)
}

/// Parses and checks `text` as if read from `file`.
pub fn load_str(file: &Path, text: &str) -> Result<LoadedScenario, ScenarioError> {
    let raw: ScenarioFile = toml::from_str(text).map_err(|e| ScenarioError {
        file: file.to_owned(),
        place: place_of(text, &e),
        message: with_suggestion(e.message()),
    })?;
    let scenario = check(raw).map_err(|(place, message)| ScenarioError {
        file: file.to_owned(),
        place,
        message,
    })?;
    use sha2::Digest;
    Ok(LoadedScenario {
        file: file.to_owned(),
        scenario,
        sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
    })
}

/// serde's "unknown field `provder`, expected one of `a`, `provider`, …" (or "unknown variant")
/// with the nearest expected name put first: "did you mean `provider`?".
fn with_suggestion(message: &str) -> String {
    let Some(rest) = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))
    else {
        return message.to_owned();
    };
    let Some((typo, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    let nearest = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (strsim::damerau_levenshtein(typo, name), name))
        .filter(|(distance, name)| *distance <= 2.max(name.len() / 3))
        .min();
    match nearest {
        Some((_, name)) => format!("{message}; did you mean `{name}`?"),
        None => message.to_owned(),
    }
}

/// `line L, column C` of a parse error. A step's unknown field is reported by the parser at its
/// table's header; the field itself is found after it, so the line points at the typo.
fn place_of(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return "file".into();
    };
    let mut at = span.start.min(text.len());
    if let Some(field) = e
        .message()
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
    {
        if let Some(offset) = text[at..].find(&format!("\n{field}")) {
            at += offset + 1;
        }
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {column}")
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
                message: format!(
                    "id {} is already used by {}",
                    s.scenario.id,
                    first.display()
                ),
            });
        }
    }
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

fn check(s: ScenarioFile) -> Result<Scenario, Problem> {
    if s.id.is_empty()
        || !s
            .id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(problem(
            "id",
            format!(
                "expected upper-case letters, digits and '-', got {:?}",
                s.id
            ),
        ));
    }
    if !AREAS.iter().any(|a| a.key == s.area) {
        let areas: Vec<&str> = AREAS.iter().map(|a| a.key).collect();
        return Err(problem(
            "area",
            format!("unknown area {:?}: expected {}", s.area, areas.join(", ")),
        ));
    }
    for (i, t) in s.threats.iter().enumerate() {
        if !THREATS.iter().any(|x| x.name == t) {
            let names: Vec<&str> = THREATS.iter().map(|x| x.name).collect();
            return Err(problem(
                format!("threats[{i}]"),
                format!(
                    "unknown threat {t:?}: expected one of the threat matrix's rows: {}",
                    names.join("; ")
                ),
            ));
        }
    }
    let mut catches = Vec::new();
    for (i, f) in s.catches.iter().enumerate() {
        let flaw = Flaw::parse(f).ok_or_else(|| {
            let names: Vec<&str> = Flaw::ALL.iter().map(|f| f.name()).collect();
            problem(
                format!("catches[{i}]"),
                format!("unknown flaw {f:?}: expected one of {}", names.join(", ")),
            )
        })?;
        catches.push(flaw);
    }
    if s.service.replicas == 0 || s.service.replicas > 8 {
        return Err(problem("service.replicas", "expected 1 to 8"));
    }
    let quota = |name: &str, raw: &Option<String>| -> Result<Option<Quota>, Problem> {
        raw.as_deref()
            .map(|r| r.parse::<Quota>().map_err(|e| problem(name, e)))
            .transpose()
    };
    let service = ServiceSettings {
        replicas: s.service.replicas,
        rate_limit_tenant: quota("service.rate_limit_tenant", &s.service.rate_limit_tenant)?,
        rate_limit_failed_states: quota(
            "service.rate_limit_failed_states",
            &s.service.rate_limit_failed_states,
        )?,
        step_timeout: Duration::from_millis(s.service.step_timeout_ms),
        database_max_connections: s.service.database_max_connections,
        database_acquire_timeout: s
            .service
            .database_acquire_timeout_ms
            .map(Duration::from_millis),
        provider_timeout: s.service.provider_timeout_ms.map(Duration::from_millis),
    };
    let mut cx = Checker::new(service.replicas);
    let mut tenants = Vec::new();
    for (i, t) in s.tenants.iter().enumerate() {
        let place = format!("tenants[{i}]");
        if !cx.declare_tenant(&t.name) {
            return Err(problem(
                place,
                format!("tenant {:?} is declared twice", t.name),
            ));
        }
        let mut connections = Vec::new();
        for (p, status) in &t.connections {
            let provider = cx.provider(&format!("{place}.connections"), Some(p))?;
            let status = ConnectionStatus::parse(status).map_err(|_| {
                problem(format!("{place}.connections.{p}"), format!("unknown status {status:?}: expected NOT_CONNECTED, PENDING, CONNECTED, DISCONNECTED or REVOKED"))
            })?;
            connections.push((provider, status));
        }
        let oauth = t
            .oauth
            .iter()
            .map(|p| cx.provider(&format!("{place}.oauth"), Some(p)))
            .collect::<Result<_, _>>()?;
        tenants.push(Tenant {
            name: t.name.clone(),
            entitled: t.entitled,
            connections,
            oauth,
        });
    }
    for (i, set) in s.tenant_sets.iter().enumerate() {
        if set.count == 0 || set.count > 2000 {
            return Err(problem(
                format!("tenant_sets[{i}].count"),
                "expected 1 to 2000",
            ));
        }
        cx.declare_set(&set.prefix);
    }
    for (i, a) in s.actors.iter().enumerate() {
        let place = format!("actors[{i}]");
        Actor::parse(&a.name).map_err(|e| problem(format!("{place}.name"), e.to_string()))?;
        if cx.actors().iter().any(|d| d.name == a.name) {
            return Err(problem(
                place,
                format!("actor {:?} is declared twice", a.name),
            ));
        }
        let user = a
            .user
            .as_deref()
            .map(|u| cx.user(&format!("{place}.user"), u))
            .transpose()?;
        let token = match a.token {
            TokenChoice::None => None,
            TokenChoice::Kind(k) => Some(k),
        };
        cx.declare_actor(ActorSpec {
            name: a.name.clone(),
            user,
            token,
            role: a.role.clone(),
        });
    }
    if s.steps.is_empty() {
        return Err(problem("steps", "a scenario needs at least one step"));
    }
    let mut steps = Vec::with_capacity(s.steps.len());
    for (i, raw) in s.steps.into_iter().enumerate() {
        let place = format!("step {} (do = \"{}\")", i + 1, raw.kind_name());
        steps.push(Step::parse(raw, &mut cx, &place)?);
    }
    // One backend per actor: an actor's HTTP requests and its SQL session would both carry its
    // tag, and the lock tables could not say which one is meant.
    for a in cx.actors() {
        let mine = || {
            steps
                .iter()
                .filter(|st| st.actor() == Some(a.name.as_str()))
        };
        let sql = mine().any(|st| matches!(st.kind, StepKind::Sql(_)));
        let http = mine().any(|st| matches!(st.kind, StepKind::Request(_)));
        if sql && http {
            return Err(problem(
                "actors",
                format!(
                    "actor {:?} runs both SQL and HTTP steps; give each its own actor",
                    a.name
                ),
            ));
        }
    }
    let mut assertions = Vec::with_capacity(s.assertions.len());
    for (i, a) in s.assertions.iter().enumerate() {
        assertions.push(Assertion::parse(a, &cx, &format!("assertion {}", i + 1))?);
    }
    Ok(Scenario {
        id: s.id,
        title: s.title,
        source: s.source,
        severity: s.severity,
        area: s.area,
        requirements: s.requirements,
        threats: s.threats,
        catches,
        description: s.description,
        service,
        tenants,
        tenant_sets: s.tenant_sets,
        actors: cx.into_actors(),
        steps,
        assertions,
    })
}

#[cfg(test)]
mod tests {
    /// A hang-up never reads its request's answer: an expectation on that request is refused at
    /// load time (it could never fail), and the request without one loads.
    #[test]
    fn a_hung_up_request_may_not_say_what_its_answer_must_be() {
        let text = |expect: &str| {
            format!(
                "id = \"HANG\"\ntitle = \"t\"\nsource = \"s\"\nseverity = \"low\"\narea = \"concurrency\"\n\n\
                 [[tenants]]\nname = \"acme\"\n\n[[actors]]\nname = \"A\"\nuser = \"acme.owner\"\n\n\
                 [[steps]]\nactor = \"A\"\ndo = \"activate\"\nbackground = true\n{expect}\n\
                 [[steps]]\nactor = \"A\"\ndo = \"hang_up\"\n"
            )
        };
        let file = std::path::Path::new("HANG.toml");
        assert!(super::load_str(file, &text("")).is_ok());
        let refused = super::load_str(file, &text("expect = { ok = false }")).expect_err("refused");
        assert!(
            refused
                .to_string()
                .contains("a hang-up never reads its answer"),
            "{refused}"
        );
        // An empty substring holds of any outcome.
        let empty = text("").replace(
            "background = true\n",
            "expect = { ok = false, error_contains = \"\" }\n",
        );
        let refused = super::load_str(file, &empty).expect_err("refused");
        assert!(
            refused.to_string().contains("an empty substring"),
            "{refused}"
        );
    }

    #[test]
    fn a_typo_gets_the_nearest_expected_name() {
        let m = "unknown field `provder`, expected one of `do`, `actor`, `provider`, `replica`";
        assert!(super::with_suggestion(m).ends_with("did you mean `provider`?"));
        let m = "unknown variant `activte`, expected one of `authorize`, `activate`";
        assert!(super::with_suggestion(m).ends_with("did you mean `activate`?"));
        let m = "unknown field `zzzzzzzz`, expected one of `do`, `actor`";
        assert_eq!(super::with_suggestion(m), m);
    }
}
