//! A target profile: the TOML file (`docs/TARGET-PROFILE.md`) an auditor writes to certify a
//! service Harbor did not compile in — how to start one replica of it, how its API spells Harbor's
//! operations and answers, how identity and fixtures are made, where its workspace lock is, and
//! which capabilities it offers. [`Profile::load`] parses and checks it whole, so every mistake is
//! an error naming the file and the field (or line and column), never a panic or a request sent
//! with a misspelt placeholder.
//!
//! - [`template`]: `{name}` placeholders, checked per field at load.
//! - [`values`]: what the placeholders of a replica's environment stand for.
//! - [`boundary`]: what a profile changes in a started target — fixtures, the workspace lock,
//!   bearer tokens.
//! - `deployed`: a target already running (`[deployed]`), reached instead of started.
//!
//! Longer than most files on purpose: the file as written (`File` and its sections) and the
//! checks that turn it into a `Profile` are read together, field by field.

pub mod boundary;
mod deployed;
pub mod template;
pub mod values;

use deployed::deployed;
pub use deployed::Deployed;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use harbor_service::domain::Provider;
use reqwest::Method;
use serde::Deserialize;

use crate::operation::{Routes, WorkspaceOp};
use crate::target::Capability;
use template::Template;

/// The profile format this harness reads.
pub const FORMAT: u32 = 1;

/// A checked target profile.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The file it was read from.
    pub path: PathBuf,
    /// A SHA-256 of the file's bytes, for the report.
    pub digest: String,
    /// The target's name.
    pub name: String,
    /// The path answering 200 once a replica serves.
    pub readiness: String,
    /// The path of its OpenAPI document, if it publishes one (answers are then held to it).
    pub openapi: Option<String>,
    /// Where it says which version it is: a path and a JSON pointer into its answer.
    pub version: Option<(String, String)>,
    /// How to start one replica (empty for a deployed target).
    pub lifecycle: Lifecycle,
    /// Where an already-deployed target answers (`None`: the harness starts it from
    /// `lifecycle`).
    pub deployed: Option<Deployed>,
    /// How its API spells Harbor's operations and answers.
    pub routes: Routes,
    /// The claims of the bearer tokens the harness signs, as templates.
    pub claims: Vec<(String, Template)>,
    /// SQL giving the workspace lock's `classid` and `objid` for `{workspace}`.
    pub workspace_lock: Option<Template>,
    /// The state queries ([`crate::target::state_queries::STATE_QUERIES`]) in the target's schema.
    pub queries: BTreeMap<String, Template>,
    /// The target's own schema (SQL the harness applies to a template database as the owner),
    /// when it is not the reference's.
    pub schema: Option<String>,
    /// The modes the target can be started in (the first is the default), and the one chosen:
    /// `{mode}` in the lifecycle.
    pub modes: Vec<String>,
    /// The mode chosen (`--target-mode`).
    pub mode: Option<String>,
    /// SQL making a tenant with its workspace and three members.
    pub create_tenant: Template,
    /// SQL putting a workspace's connection in a status.
    pub set_connection_status: Template,
    /// The name each connection status has in the target's database (absent: Harbor's name).
    pub status_names: BTreeMap<String, String>,
    /// Whether the target speaks the sync-point protocol.
    pub sync_points: bool,
    /// Whether the target speaks the clock protocol.
    pub clock: bool,
    /// Whether stored tokens are sealed in the reference's format with the keys given as
    /// `{token_keys}`.
    pub harbor_token_format: bool,
    /// Capabilities the profile declines although it could offer them.
    pub decline: BTreeSet<Capability>,
}

/// How to start one replica of the target.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    /// The program and its arguments (a relative program path is the profile directory's).
    pub command: Vec<String>,
    /// The directory it starts in: the profile's.
    pub cwd: PathBuf,
    /// How long a replica may take to answer its readiness path.
    pub ready_timeout: Duration,
    /// Variables of the harness's own environment passed on as they are (besides `PATH`, `HOME`
    /// and the like: nothing else of the harness's environment reaches a replica).
    pub inherit: Vec<String>,
    /// Its environment, as templates.
    pub env: Vec<(String, Template)>,
    /// Files the harness writes for it, by name (`{file:NAME}` is the path).
    pub files: Vec<(String, FileTemplate)>,
}

/// A file the harness writes for each replica.
#[derive(Clone, Debug)]
pub enum FileTemplate {
    /// Text with placeholders.
    Text(Template),
    /// A JSON document whose string leaves are templates.
    Json(serde_json::Value),
}

/// Why a profile cannot be used. Its message names the file and the place.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ProfileError {
    /// The profile's path.
    pub path: String,
    /// What is wrong, and where.
    pub message: String,
}

// ---- the file as written ----------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: u32,
    target: TargetSection,
    lifecycle: Option<LifecycleSection>,
    deployed: Option<DeployedSection>,
    #[serde(default)]
    identity: IdentitySection,
    operations: BTreeMap<String, OperationSection>,
    #[serde(default)]
    answers: AnswersSection,
    #[serde(default)]
    providers: BTreeMap<String, String>,
    #[serde(default)]
    database: DatabaseSection,
    fixtures: FixturesSection,
    #[serde(default)]
    sync_points: Option<ProtocolSection>,
    #[serde(default)]
    clock: Option<ProtocolSection>,
    #[serde(default)]
    tokens: Option<TokensSection>,
    #[serde(default)]
    capabilities: CapabilitiesSection,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetSection {
    name: String,
    #[serde(default = "default_readiness")]
    readiness: String,
    openapi: Option<String>,
    version: Option<VersionSection>,
    #[serde(default)]
    modes: Vec<String>,
}

fn default_readiness() -> String {
    "/readyz".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionSection {
    path: String,
    pointer: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleSection {
    command: Vec<String>,
    #[serde(default = "default_ready_timeout")]
    ready_timeout_seconds: u64,
    #[serde(default)]
    inherit: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    files: BTreeMap<String, FileSection>,
}

fn default_ready_timeout() -> u64 {
    30
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeployedSection {
    pub(super) urls: Vec<String>,
    pub(super) database_url: Option<String>,
    pub(super) signing_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSection {
    text: Option<String>,
    json: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct IdentitySection {
    #[serde(default)]
    claims: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OperationSection {
    method: String,
    path: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AnswersSection {
    error_code: Option<String>,
    authorization_url: Option<String>,
    #[serde(default)]
    codes: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DatabaseSection {
    workspace_lock: Option<String>,
    schema: Option<String>,
    #[serde(default)]
    queries: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixturesSection {
    create_tenant: String,
    set_connection_status: String,
    #[serde(default)]
    status_names: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtocolSection {
    protocol: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensSection {
    format: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CapabilitiesSection {
    #[serde(default)]
    decline: Vec<String>,
}

// ---- placeholders each field allows ----------------------------------------------------------

const ROUTE_NAMES: &[&str] = &["workspace", "provider", "query"];
const CLAIM_NAMES: &[&str] = &["user", "issuer", "audience", "iat", "nbf", "exp"];
const LOCK_NAMES: &[&str] = &["workspace", "mode"];
const TENANT_NAMES: &[&str] = &[
    "tenant",
    "workspace",
    "owner",
    "admin",
    "member",
    "name",
    "workspace_name",
    "owner_email",
    "admin_email",
    "member_email",
    "entitled",
    "qbo_status",
    "qbo_settled_status",
];
const STATUS_NAMES: &[&str] = &["workspace", "provider", "status", "settled_status"];
/// The token sealing format the harness can open (the reference's AES-256-GCM, row-bound).
pub const HARBOR_TOKEN_FORMAT: &str = "harbor-aes-256-gcm-v1";

impl Profile {
    /// Reads and checks the profile at `path`.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let fail = |message: String| ProfileError {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let text = String::from_utf8(bytes.clone()).map_err(|_| fail("not UTF-8".into()))?;
        let file: File = toml::from_str(&text).map_err(|e| fail(toml_error(&text, &e)))?;
        let digest = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        let cwd = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Self::check(file, path.to_path_buf(), digest, cwd).map_err(fail)
    }

    fn check(file: File, path: PathBuf, digest: String, cwd: PathBuf) -> Result<Self, String> {
        if file.format != FORMAT {
            return Err(format!(
                "format = {}: this harness reads format {FORMAT}",
                file.format
            ));
        }
        let t = &file.target;
        if t.name.trim().is_empty() {
            return Err("target.name: empty".into());
        }
        for (field, p) in [
            ("target.readiness", Some(&t.readiness)),
            ("target.openapi", t.openapi.as_ref()),
        ] {
            if let Some(p) = p {
                if !p.starts_with('/') {
                    return Err(format!(
                        "{field}: {p:?} is not a path (it must start with /)"
                    ));
                }
            }
        }
        let version = match &t.version {
            Some(v) => {
                if !v.path.starts_with('/') {
                    return Err(format!(
                        "target.version.path: {:?} must start with /",
                        v.path
                    ));
                }
                pointer("target.version.pointer", &v.pointer)?;
                Some((v.path.clone(), v.pointer.clone()))
            }
            None => None,
        };
        let routes = routes(&file)?;
        let mut claims = Vec::new();
        let claim_source = if file.identity.claims.is_empty() {
            default_claims()
        } else {
            file.identity.claims.clone()
        };
        for (name, raw) in claim_source {
            let tpl = parse_listed(&format!("identity.claims.{name}"), &raw, CLAIM_NAMES)?;
            claims.push((name, tpl));
        }
        if !claims.iter().any(|(_, t)| t.names().any(|n| n == "user")) {
            return Err(
                "identity.claims: no claim holds {user}: the target could not tell users apart"
                    .into(),
            );
        }
        let schema = match &file.database.schema {
            Some(rel) => Some(
                std::fs::read_to_string(cwd.join(rel))
                    .map_err(|e| format!("database.schema: cannot read {rel}: {e}"))?,
            ),
            None => None,
        };
        let mut queries = BTreeMap::new();
        for (name, raw) in &file.database.queries {
            if !crate::target::state_queries::STATE_QUERIES
                .iter()
                .any(|(n, _)| n == name)
            {
                return Err(format!(
                    "database.queries.{name}: unknown state query (known: {})",
                    crate::target::state_queries::STATE_QUERIES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !crate::target::state_queries::is_one_statement(raw) {
                return Err(format!(
                    "database.queries.{name}: one statement, without a second after a `;` (scenarios splice it into their own SQL)"
                ));
            }
            queries.insert(
                name.clone(),
                parse_listed(&format!("database.queries.{name}"), raw, LOCK_NAMES)?,
            );
        }
        let (lifecycle, deployed) = match (&file.lifecycle, &file.deployed) {
            (Some(l), None) => (lifecycle(l, cwd)?, None),
            (None, Some(d)) => {
                if file.database.schema.is_some() {
                    return Err("database.schema: a deployed target's schema is its own; the harness applies none (leave it out)".into());
                }
                (Lifecycle::none(cwd.clone()), Some(deployed(d, &cwd)?))
            }
            (Some(_), Some(_)) => {
                return Err("[lifecycle] and [deployed]: a profile either starts its target or reaches a deployed one, not both".into())
            }
            (None, None) => {
                return Err("neither [lifecycle] (how to start one replica) nor [deployed] (where it already answers)".into())
            }
        };
        if deployed.is_some() && !t.modes.is_empty() {
            return Err("target.modes: a deployed target runs in the mode it was deployed in (leave modes out)".into());
        }
        if lifecycle.uses("mode") && t.modes.is_empty() {
            return Err("lifecycle: {mode} is used but target.modes names none".into());
        }
        if !t.modes.is_empty() && !lifecycle.uses("mode") {
            return Err("target.modes: no lifecycle template uses {mode}".into());
        }
        let workspace_lock = match &file.database.workspace_lock {
            Some(raw) => Some(parse_listed("database.workspace_lock", raw, LOCK_NAMES)?),
            None => None,
        };
        let create_tenant = parse_listed(
            "fixtures.create_tenant",
            &file.fixtures.create_tenant,
            TENANT_NAMES,
        )?;
        let set_connection_status = parse_listed(
            "fixtures.set_connection_status",
            &file.fixtures.set_connection_status,
            STATUS_NAMES,
        )?;
        for status in file.fixtures.status_names.keys() {
            if harbor_service::lifecycle::ConnectionStatus::parse(status).is_err() {
                return Err(format!("fixtures.status_names.{status}: not a connection status (NOT_CONNECTED, PENDING, CONNECTED, DISCONNECTED, REVOKED)"));
            }
        }
        let sync_points = protocol("sync_points", &file.sync_points)?;
        let clock = protocol("clock", &file.clock)?;
        let harbor_token_format = match &file.tokens {
            Some(t) if t.format == HARBOR_TOKEN_FORMAT => true,
            Some(t) => {
                return Err(format!(
                    "tokens.format = {:?}: the harness opens only {HARBOR_TOKEN_FORMAT:?} (leave [tokens] out otherwise)",
                    t.format
                ))
            }
            None => false,
        };
        let mut decline = BTreeSet::new();
        for name in &file.capabilities.decline {
            use clap::ValueEnum;
            let c = Capability::from_str(name, false).map_err(|_| {
                format!(
                    "capabilities.decline: unknown capability {name:?} (known: {})",
                    Capability::ALL.map(Capability::name).join(", ")
                )
            })?;
            decline.insert(c);
        }
        Ok(Self {
            path,
            digest,
            name: t.name.clone(),
            readiness: t.readiness.clone(),
            openapi: t.openapi.clone(),
            version,
            lifecycle,
            deployed,
            routes,
            claims,
            workspace_lock,
            queries,
            schema,
            mode: t.modes.first().cloned(),
            modes: t.modes.clone(),
            create_tenant,
            set_connection_status,
            status_names: file.fixtures.status_names,
            sync_points,
            clock,
            harbor_token_format,
            decline,
        })
    }

    /// What the target offers, each with the profile's reason, and what it does not, each with
    /// why.
    pub fn capabilities(&self) -> BTreeMap<Capability, Result<String, String>> {
        // How the target is reached decides most; the protocols and the lock's name are the
        // profile's either way.
        let mut out = match &self.deployed {
            Some(d) => self.deployed_capabilities(d),
            None => self.lifecycle_capabilities(),
        };
        let database = out[&Capability::Database].is_ok();
        out.insert(
            Capability::WorkspaceLock,
            match (&self.workspace_lock, database) {
                (Some(_), true) => Ok("database.workspace_lock names it".to_owned()),
                (None, _) => Err("the profile names no database.workspace_lock".to_owned()),
                (Some(_), false) => Err(
                    "database.workspace_lock is named, but there is no database to take it in"
                        .to_owned(),
                ),
            },
        );
        out.insert(
            Capability::SyncPoints,
            if self.sync_points {
                Ok("[sync_points] protocol = 1 (docs/SYNC-POINTS-PROTOCOL.md)".to_owned())
            } else {
                Err("the profile has no [sync_points] section".to_owned())
            },
        );
        out.insert(
            Capability::Clock,
            if self.clock {
                Ok(
                    "[clock] protocol = 1: the harness sets each replica's offset over HTTP"
                        .to_owned(),
                )
            } else {
                Err("the profile has no [clock] section (the clock protocol)".to_owned())
            },
        );
        for c in &self.decline {
            out.insert(*c, Err("declined by [capabilities] decline".to_owned()));
        }
        out
    }

    /// What a target the harness starts from `lifecycle` offers by being started so.
    fn lifecycle_capabilities(&self) -> BTreeMap<Capability, Result<String, String>> {
        let uses = |prefix: &str| self.lifecycle.uses(prefix);
        let mut out = BTreeMap::new();
        let database = if uses("database_url") {
            Ok("the harness's PostgreSQL database, given as {database_url}".to_owned())
        } else {
            Err("no lifecycle template uses {database_url}".to_owned())
        };
        out.insert(Capability::Database, database.clone());
        out.insert(
            Capability::IsolatedDatabase,
            database.clone().map(|_| {
                "the database is made for the run, and holds only what the harness made".to_owned()
            }),
        );
        // A fault also needs its link taken from the harness (`Capability::to_fault`): Redis
        // faults the Redis capability, provider faults the provider control.
        out.insert(
            Capability::Faults,
            database.clone().map(|_| {
                "the links its templates take ({database_url}, and {redis_url} and the providers' URLs where used) go through the harness's fault proxies"
                    .to_owned()
            }),
        );
        out.insert(
            Capability::Crash,
            Ok(
                "the harness starts each replica from lifecycle.command and kills it with SIGKILL"
                    .to_owned(),
            ),
        );
        out.insert(
            Capability::ProviderControl,
            if uses("provider:") {
                Ok("its providers are the harness's fake ones, given as {provider:…}".to_owned())
            } else {
                Err("no lifecycle template uses a {provider:…} endpoint".to_owned())
            },
        );
        out.insert(
            Capability::Redis,
            if uses("redis_url") && uses("redis_prefix") {
                Ok("the harness's Redis, given as {redis_url} with {redis_prefix}".to_owned())
            } else {
                Err("no lifecycle template uses both {redis_url} and {redis_prefix}".to_owned())
            },
        );
        out.insert(
            Capability::TokenKeys,
            if self.harbor_token_format && uses("token_keys") {
                Ok(format!("tokens are sealed as {HARBOR_TOKEN_FORMAT} with the keys given as {{token_keys}}"))
            } else {
                Err(format!("tokens are not declared sealed as {HARBOR_TOKEN_FORMAT} with {{token_keys}}"))
            },
        );
        out.insert(
            Capability::ReferenceSchema,
            match &self.schema {
                None => Ok("the database is made from the reference's migrations".to_owned()),
                Some(_) => Err("the target has its own schema (database.schema)".to_owned()),
            },
        );
        out
    }

    /// Why its target cannot be given what `setup` sets: a `[service]` knob whose placeholder
    /// no lifecycle template uses (`None`: it can).
    pub fn cannot_set(&self, setup: &crate::target::Setup) -> Option<String> {
        let knobs = [
            (
                "database_max_connections",
                setup.database_max_connections.is_some(),
            ),
            (
                "database_acquire_timeout_ms",
                setup.database_acquire_timeout.is_some(),
            ),
            ("provider_timeout_ms", setup.provider_timeout.is_some()),
            ("rate_limit_tenant", setup.rate_limit_tenant.is_some()),
            ("rate_limit_address", setup.rate_limit_address.is_some()),
            (
                "rate_limit_failed_states",
                setup.rate_limit_failed_states.is_some(),
            ),
        ];
        if let Some(d) = &self.deployed {
            if setup.replicas > d.urls.len() {
                return Some(format!(
                    "the scenario needs {} replicas and the deployed target has {} (deployed.urls)",
                    setup.replicas,
                    d.urls.len()
                ));
            }
        }
        let missing: Vec<&str> = knobs
            .iter()
            .filter(|(name, set)| *set && !self.lifecycle.uses(name))
            .map(|(name, _)| *name)
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "the scenario sets {} and the target's profile takes no {}",
                missing.join(", "),
                missing
                    .iter()
                    .map(|n| format!("{{{n}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    /// The capabilities offered.
    pub fn offered(&self) -> BTreeSet<Capability> {
        self.capabilities()
            .into_iter()
            .filter_map(|(c, r)| r.is_ok().then_some(c))
            .collect()
    }

    /// The same profile, started in `mode` (one of `target.modes`).
    pub fn in_mode(mut self, mode: &str) -> Result<Self, ProfileError> {
        if !self.modes.iter().any(|m| m == mode) {
            return Err(ProfileError {
                path: self.path.display().to_string(),
                message: format!(
                    "--target-mode {mode}: target.modes offers {}",
                    if self.modes.is_empty() {
                        "none".to_owned()
                    } else {
                        self.modes.join(", ")
                    }
                ),
            });
        }
        self.mode = Some(mode.to_owned());
        Ok(self)
    }

    /// The target's name with its mode, for reports (`flask-seed (v1)`).
    pub fn title(&self) -> String {
        match &self.mode {
            Some(m) => format!("{} ({m})", self.name),
            None => self.name.clone(),
        }
    }

    /// The name `status` has in the target's database.
    pub fn status_name(&self, status: harbor_service::lifecycle::ConnectionStatus) -> String {
        self.status_names
            .get(status.as_str())
            .cloned()
            .unwrap_or_else(|| status.as_str().to_owned())
    }

    /// The name `provider` has in the target's paths and database.
    pub fn provider_name(&self, provider: Provider) -> String {
        self.routes
            .provider_names
            .get(&provider)
            .cloned()
            .unwrap_or_else(|| provider.as_str().to_owned())
    }
}

impl Lifecycle {
    /// No lifecycle: a deployed target's (nothing to start, no template).
    fn none(cwd: PathBuf) -> Self {
        Self {
            command: Vec::new(),
            cwd,
            ready_timeout: Duration::from_secs(default_ready_timeout()),
            inherit: Vec::new(),
            env: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Whether any environment or file template uses a placeholder starting with `prefix`.
    pub fn uses(&self, prefix: &str) -> bool {
        let in_template = |t: &Template| t.names().any(|n| n.starts_with(prefix));
        self.env.iter().any(|(_, t)| in_template(t))
            || self.files.iter().any(|(_, f)| match f {
                FileTemplate::Text(t) => in_template(t),
                FileTemplate::Json(v) => json_templates(v).iter().any(in_template),
            })
    }
}

/// The claims the reference service expects, when the profile names none.
fn default_claims() -> BTreeMap<String, String> {
    [
        ("sub", "{user}"),
        ("iss", "{issuer}"),
        ("aud", "{audience}"),
        ("iat", "{iat}"),
        ("nbf", "{nbf}"),
        ("exp", "{exp}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn routes(file: &File) -> Result<Routes, String> {
    let mut routes = Routes::reference();
    let known: Vec<&str> = WorkspaceOp::ALL.iter().map(|o| o.as_str()).collect();
    for (name, op) in &file.operations {
        let which = WorkspaceOp::parse(name).ok_or_else(|| {
            format!(
                "operations.{name}: unknown operation (known: {})",
                known.join(", ")
            )
        })?;
        let method =
            Method::from_bytes(op.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
                format!(
                    "operations.{name}.method: {:?} is not an HTTP method",
                    op.method
                )
            })?;
        if !op.path.starts_with('/') {
            return Err(format!(
                "operations.{name}.path: {:?} must start with /",
                op.path
            ));
        }
        let tpl = parse_listed(&format!("operations.{name}.path"), &op.path, ROUTE_NAMES)?;
        if which == WorkspaceOp::Callback && !tpl.names().any(|n| n == "query") {
            return Err(format!(
                "operations.{name}.path: the callback must carry the consent's {{query}}"
            ));
        }
        routes.requests.insert(which, (method, op.path.clone()));
    }
    let missing: Vec<&str> = WorkspaceOp::ALL
        .iter()
        .filter(|o| !file.operations.contains_key(o.as_str()))
        .map(|o| o.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "operations: {} missing (every operation needs its route)",
            missing.join(", ")
        ));
    }
    for (harbor, theirs) in &file.providers {
        let p = Provider::parse(harbor).map_err(|_| {
            format!("providers.{harbor}: unknown provider (known: qbo, gmail, slack, box)")
        })?;
        routes.provider_names.insert(p, theirs.clone());
    }
    if let Some(p) = &file.answers.error_code {
        pointer("answers.error_code", p)?;
        routes.error_code = p.clone();
    }
    // A mapping names one of Harbor's codes, or it would turn a wrong answer into an unknown
    // one that no expectation can ever match.
    let harbor_codes: BTreeSet<&str> = harbor_service::contract::ERRORS
        .iter()
        .flat_map(|op| (op.errors)())
        .map(|e| e.status_and_code().1)
        .collect();
    for (theirs, ours) in &file.answers.codes {
        if !harbor_codes.contains(ours.as_str()) {
            return Err(format!(
                "answers.codes.{theirs}: {ours:?} is not one of Harbor's error codes ({})",
                harbor_codes.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    routes.code_names = file.answers.codes.clone();
    if let Some(p) = &file.answers.authorization_url {
        pointer("answers.authorization_url", p)?;
        routes.authorization_url = p.clone();
    }
    Ok(routes)
}

fn lifecycle(l: &LifecycleSection, cwd: PathBuf) -> Result<Lifecycle, String> {
    if l.command.is_empty() || l.command[0].trim().is_empty() {
        return Err(
            "lifecycle.command: empty (it names the program that starts one replica)".into(),
        );
    }
    let file_names: BTreeSet<&str> = l.files.keys().map(String::as_str).collect();
    let allowed = |n: &str| values::known(n, &file_names);
    // The command is not a template: a `{port}` there would reach the program as those six
    // characters. (Other braces — a shell's `${PORT}`, a script's — are the program's own.)
    for arg in &l.command {
        let placeholder = arg
            .split('{')
            .skip(1)
            .filter_map(|after| after.split_once('}').map(|(name, _)| name))
            .find(|name| allowed(name));
        if let Some(name) = placeholder {
            return Err(format!(
                "lifecycle.command: {arg:?} names {{{name}}}, but the command is not a template — pass the values through lifecycle.env"
            ));
        }
    }
    let known = values::KNOWN_HELP;
    let mut files = Vec::new();
    for (name, f) in &l.files {
        let place = format!("lifecycle.files.{name}");
        // The name becomes a file in the replica's own folder, nowhere else.
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!(
                "{place}: a file's name is letters, digits, '_', '-' and '.', not starting with '.'"
            ));
        }
        let tpl = match (&f.text, &f.json) {
            (Some(text), None) => FileTemplate::Text(parse_checked(&place, text, &allowed, known)?),
            (None, Some(json)) => {
                let value = serde_json::to_value(json).map_err(|e| format!("{place}.json: {e}"))?;
                for raw in json_strings(&value) {
                    parse_checked(&format!("{place}.json"), raw, &allowed, known)?;
                }
                FileTemplate::Json(value)
            }
            _ => return Err(format!("{place}: give exactly one of text or json")),
        };
        files.push((name.clone(), tpl));
    }
    let mut env = Vec::new();
    for (name, raw) in &l.env {
        env.push((
            name.clone(),
            parse_checked(&format!("lifecycle.env.{name}"), raw, &allowed, known)?,
        ));
    }
    if !env.iter().any(|(_, t)| t.names().any(|n| n == "port")) {
        return Err("lifecycle.env: no variable holds {port}: the harness could not tell a replica where to listen".into());
    }
    Ok(Lifecycle {
        command: l.command.clone(),
        cwd,
        ready_timeout: Duration::from_secs(l.ready_timeout_seconds.max(1)),
        inherit: l.inherit.clone(),
        env,
        files,
    })
}

/// Every string leaf of `v`.
fn json_strings(v: &serde_json::Value) -> Vec<&str> {
    match v {
        serde_json::Value::String(s) => vec![s],
        serde_json::Value::Array(a) => a.iter().flat_map(json_strings).collect(),
        serde_json::Value::Object(o) => o.values().flat_map(json_strings).collect(),
        _ => Vec::new(),
    }
}

/// Every string leaf of `v`, parsed (the profile's checks made them parse).
fn json_templates(v: &serde_json::Value) -> Vec<Template> {
    json_strings(v)
        .into_iter()
        .filter_map(|s| Template::parse(s).ok())
        .collect()
}

fn parse_checked(
    place: &str,
    raw: &str,
    allowed: &dyn Fn(&str) -> bool,
    known: &str,
) -> Result<Template, String> {
    let tpl = Template::parse(raw).map_err(|e| format!("{place}: {e}"))?;
    tpl.check(allowed, known)
        .map_err(|e| format!("{place}: {e}"))?;
    Ok(tpl)
}

/// [`parse_checked`] for a field whose placeholders are the names in `list`.
fn parse_listed(place: &str, raw: &str, list: &[&str]) -> Result<Template, String> {
    parse_checked(place, raw, &|n| list.contains(&n), &list.join(", "))
}

/// Whether a `[sync_points]` or `[clock]` section declares the protocol version the harness
/// speaks (`false`: the section is absent).
fn protocol(place: &str, section: &Option<ProtocolSection>) -> Result<bool, String> {
    match section {
        Some(s) if s.protocol == 1 => Ok(true),
        Some(s) => Err(format!(
            "{place}.protocol = {}: this harness speaks protocol 1",
            s.protocol
        )),
        None => Ok(false),
    }
}

fn pointer(place: &str, p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') {
        Ok(())
    } else {
        Err(format!(
            "{place}: {p:?} is not a JSON pointer (it starts with /, like /error/code)"
        ))
    }
}

/// A TOML error with its line and column.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {col}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

#[cfg(test)]
mod tests;
