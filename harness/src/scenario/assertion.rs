//! Assertions: facts about the state at the end of a run (`[[assert]]`) or at a point of it
//! (`do = "assert"`), typed at load and evaluated against the target. The ones that hold after
//! any schedule (tokens bound, no lock held, no leak) call the shared [`crate::oracles`].

use std::collections::BTreeSet;

use harbor_service::domain::Provider;
use serde_json::{json, Value};

use super::check::{problem, Checker, Problem};
use super::executor::Executor;
use super::expect::{glob_match, json_eq, toml_to_json};
use super::format;
use super::outcome::Failure;
use super::trace::EventKind;
use crate::fake_provider::Counters;
use crate::target::Capability;

/// A checked assertion.
#[derive(Clone, Debug)]
pub struct Assertion {
    /// What it checks, for the report.
    pub note: Option<String>,
    /// The check.
    pub check: Check,
}

/// What an assertion checks.
#[derive(Clone, Debug)]
pub enum Check {
    /// A `SELECT` (placeholders allowed) compared with rows or a single value.
    Sql {
        /// The statement as written.
        sql: String,
        /// What it must return.
        want: SqlWant,
    },
    /// Redis keys matching a pattern (after the scenario's prefix).
    RedisKeys {
        /// The glob pattern.
        pattern: String,
        /// How many must match.
        equals: Value,
        /// And each one's TTL range in seconds, inclusive.
        ttl_between: Option<[i64; 2]>,
    },
    /// A fake-provider counter.
    ProviderCounter {
        /// The provider.
        provider: Provider,
        /// The counter (a field of [`Counters`]).
        counter: String,
        /// Its expected value.
        equals: Value,
    },
    /// No backend holds or awaits this tenant's workspace lock.
    NoLockHeld {
        /// The tenant.
        tenant: String,
    },
    /// No issued code or token anywhere an attacker could look.
    NoCanaryLeaks,
    /// Every stored token decrypts only for its own row.
    TokensBound,
    /// Live grants at the provider and CONNECTED rows match one to one (up to `lost_at_most`
    /// live grants stored nowhere).
    GrantsAccounted {
        /// How many live grants may be stored nowhere.
        lost_at_most: usize,
    },
}

/// What a SQL assertion's statement must return.
#[derive(Clone, Debug)]
pub enum SqlWant {
    /// Exactly these rows (placeholders allowed in values).
    Rows(Vec<toml::Table>),
    /// One row of one column with this value.
    Equals(Value),
}

impl Assertion {
    /// Checks a written assertion: exactly one kind per table, and its fields.
    pub fn parse(a: &format::Assertion, cx: &Checker, place: &str) -> Result<Self, Problem> {
        let kinds = a.kinds();
        if kinds.len() != 1 {
            return Err(problem(
                place,
                format!(
                    "expected exactly one of sql, redis_keys, provider_counter, no_lock_held, no_canary_leaks, tokens_bound, grants_accounted; found {}",
                    if kinds.is_empty() { "none".to_owned() } else { kinds.join(", ") }
                ),
            ));
        }
        if a.ttl_between.is_some() && a.redis_keys.is_none() {
            return Err(problem(
                format!("{place}.ttl_between"),
                "ttl_between goes with redis_keys",
            ));
        }
        if a.rows.is_some() && a.sql.is_none() {
            return Err(problem(format!("{place}.rows"), "rows goes with sql"));
        }
        if a.lost_at_most.is_some() && a.grants_accounted.is_none() {
            return Err(problem(
                format!("{place}.lost_at_most"),
                "lost_at_most goes with grants_accounted",
            ));
        }
        if a.equals.is_some() && !matches!(kinds[0], "sql" | "redis_keys" | "provider_counter") {
            return Err(problem(
                format!("{place}.equals"),
                "equals goes with sql, redis_keys or provider_counter",
            ));
        }
        let equals = |kind: &str| {
            a.equals
                .as_ref()
                .map(toml_to_json)
                .ok_or_else(|| problem(place, format!("{kind} needs equals")))
        };
        let check = if let Some(sql) = &a.sql {
            cx.placeholders(&format!("{place}.sql"), sql)?;
            let want = match (&a.rows, &a.equals) {
                (Some(rows), None) => SqlWant::Rows(rows.clone()),
                (None, Some(v)) => SqlWant::Equals(toml_to_json(v)),
                _ => return Err(problem(place, "sql needs exactly one of rows or equals")),
            };
            Check::Sql {
                sql: sql.clone(),
                want,
            }
        } else if let Some(pattern) = &a.redis_keys {
            Check::RedisKeys {
                pattern: pattern.clone(),
                equals: equals("redis_keys")?,
                ttl_between: a.ttl_between,
            }
        } else if let Some(c) = &a.provider_counter {
            let (provider, counter) =
                provider_counter(cx, &format!("{place}.provider_counter"), c)?;
            Check::ProviderCounter {
                provider,
                counter,
                equals: equals("provider_counter")?,
            }
        } else if let Some(t) = &a.no_lock_held {
            Check::NoLockHeld {
                tenant: cx.tenant(&format!("{place}.no_lock_held"), t)?,
            }
        } else if let Some(on) = a.no_canary_leaks {
            if !on {
                return Err(problem(
                    format!("{place}.no_canary_leaks"),
                    "write no_canary_leaks = true, or leave the assertion out",
                ));
            }
            Check::NoCanaryLeaks
        } else if let Some(on) = a.grants_accounted {
            if !on {
                return Err(problem(
                    format!("{place}.grants_accounted"),
                    "write grants_accounted = true, or leave the assertion out",
                ));
            }
            Check::GrantsAccounted {
                lost_at_most: a.lost_at_most.unwrap_or(0),
            }
        } else {
            if a.tokens_bound != Some(true) {
                return Err(problem(
                    format!("{place}.tokens_bound"),
                    "write tokens_bound = true, or leave the assertion out",
                ));
            }
            Check::TokensBound
        };
        Ok(Assertion {
            note: a.note.clone(),
            check,
        })
    }

    /// Adds what it needs of a target.
    pub fn requires(&self, needs: &mut BTreeSet<Capability>) {
        let more: &[Capability] = match &self.check {
            Check::Sql { sql, .. }
                if crate::target::state_queries::sql_is_portable(sql)
                    && crate::target::state_queries::reads_whole_database(sql) =>
            {
                &[Capability::Database, Capability::IsolatedDatabase]
            }
            Check::Sql { sql, .. } if crate::target::state_queries::sql_is_portable(sql) => {
                &[Capability::Database]
            }
            Check::Sql { .. } => &[Capability::Database, Capability::ReferenceSchema],
            Check::NoLockHeld { .. } => &[Capability::Database, Capability::WorkspaceLock],
            Check::RedisKeys { .. } => &[Capability::Redis, Capability::ReferenceSchema],
            Check::ProviderCounter { .. } => &[Capability::ProviderControl],
            Check::NoCanaryLeaks => &[
                Capability::Database,
                Capability::IsolatedDatabase,
                Capability::Redis,
                Capability::ProviderControl,
            ],
            Check::TokensBound => &[
                Capability::Database,
                Capability::ReferenceSchema,
                Capability::TokenKeys,
            ],
            Check::GrantsAccounted { .. } => &[
                Capability::Database,
                Capability::ReferenceSchema,
                Capability::TokenKeys,
                Capability::ProviderControl,
            ],
        };
        needs.extend(more.iter().copied());
    }

    /// Evaluates it now: `Ok` describes what held, `Err` what did not.
    pub async fn evaluate(&self, ex: &Executor<'_>) -> Result<String, String> {
        let target = ex.target();
        let db = || target.need_database();
        let redis = || target.need_redis();
        match &self.check {
            Check::Sql { sql: written, want } => {
                let sql = ex.subst(written);
                let wrapped = format!(
                    "SELECT coalesce(json_agg(t), '[]'::json) FROM ({}) t",
                    sql.trim().trim_end_matches(';')
                );
                let sql = written.trim();
                let rows: Value = sqlx::query_scalar(&wrapped)
                    .fetch_one(db()?)
                    .await
                    .map_err(|e| format!("{sql}: {e}"))?;
                match want {
                    SqlWant::Rows(want) => {
                        let want = ex.subst_json(&Value::Array(
                            want.iter()
                                .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
                                .collect(),
                        ));
                        if json_eq(&rows, &want) {
                            Ok(format!("{sql} = {want}"))
                        } else {
                            Err(format!("{sql}: expected rows {want}, got {rows}"))
                        }
                    }
                    SqlWant::Equals(want) => {
                        let single = rows
                            .as_array()
                            .filter(|r| r.len() == 1)
                            .and_then(|r| r[0].as_object())
                            .filter(|o| o.len() == 1);
                        let Some(got) = single.and_then(|o| o.values().next()).cloned() else {
                            return Err(format!(
                                "{sql}: `equals` needs exactly one row of one column, got {rows}"
                            ));
                        };
                        if json_eq(&got, want) {
                            Ok(format!("{sql} = {want}"))
                        } else {
                            Err(format!("{sql}: expected {want}, got {got}"))
                        }
                    }
                }
            }
            Check::RedisKeys {
                pattern,
                equals,
                ttl_between,
            } => {
                let redis = redis()?;
                let entries = crate::evidence::redis_dump(redis.url, redis.prefix)
                    .await
                    .map_err(|e| e.to_string())?;
                let matching: Vec<_> = entries
                    .iter()
                    .filter(|e| glob_match(pattern, &e.key[redis.prefix.len()..]))
                    .collect();
                if !json_eq(&json!(matching.len()), equals) {
                    return Err(format!(
                        "expected {equals} Redis key(s) matching {pattern}, found {}",
                        matching.len()
                    ));
                }
                if let Some([lo, hi]) = ttl_between {
                    if let Some(bad) = matching.iter().find(|e| e.ttl < *lo || e.ttl > *hi) {
                        return Err(format!(
                            "{} has TTL {} s, expected {lo}..={hi}",
                            &bad.key[redis.prefix.len()..],
                            bad.ttl
                        ));
                    }
                }
                let ttls: Vec<i64> = matching.iter().map(|e| e.ttl).collect();
                Ok(format!(
                    "{} Redis key(s) matching {pattern} (TTL {ttls:?})",
                    matching.len()
                ))
            }
            Check::ProviderCounter {
                provider,
                counter,
                equals,
            } => {
                let fake = target.need_provider()?;
                let got = fake
                    .counters(*provider)
                    .get(counter)
                    .map_or(Value::Null, |v| json!(v));
                if json_eq(&got, equals) {
                    Ok(format!("provider {provider}.{counter} = {got}"))
                } else {
                    Err(format!(
                        "provider {provider}.{counter}: expected {equals}, got {got}"
                    ))
                }
            }
            Check::NoLockHeld { tenant } => {
                let workspace = ex.tenant(tenant).workspace;
                let key = target
                    .workspace_lock(workspace)
                    .ok_or("the target does not name its workspace lock")?;
                crate::oracles::no_workspace_lock_held(db()?, workspace, key)
                    .await
                    .map_err(|e| format!("{tenant}: {e}"))
            }
            Check::NoCanaryLeaks => ex.leak_search().await,
            Check::TokensBound => {
                let ring = target.need_tokens()?;
                crate::oracles::tokens_bound(db()?, ring, None).await
            }
            Check::GrantsAccounted { lost_at_most } => {
                let ring = target.need_tokens()?;
                let fake = target.need_provider()?;
                crate::oracles::grants_accounted(db()?, ring, fake, *lost_at_most).await
            }
        }
    }
}

/// Checks a written `<provider>.<counter>` (`qbo.refreshes`) against the fake provider's counters.
pub fn provider_counter(
    cx: &Checker,
    at: &str,
    written: &str,
) -> Result<(Provider, String), Problem> {
    let (p, counter) = written
        .split_once('.')
        .ok_or_else(|| problem(at, "expected <provider>.<counter>"))?;
    let provider = cx.provider(at, Some(p))?;
    let names = Counters::names();
    if !names.iter().any(|n| n == counter) {
        return Err(problem(
            at,
            format!("unknown counter {counter:?}: expected {}", names.join(", ")),
        ));
    }
    Ok((provider, counter.to_owned()))
}

impl Assertion {
    /// Checks it now (at step `step`, or at the end) and records the verdict in the trace.
    pub async fn check(&self, ex: &mut Executor<'_>, step: Option<usize>) -> Result<(), Failure> {
        match self.evaluate(ex).await {
            Ok(detail) => {
                ex.count_check();
                ex.event(step, None, EventKind::Checked, detail, None);
                // What was found stays in the trace beside the note that says why it matters.
                ex.annotate(self.note.as_deref());
                Ok(())
            }
            Err(message) => Err(Failure::at(
                step,
                match &self.note {
                    Some(n) => format!("{n}: {message}"),
                    None => message,
                },
            )),
        }
    }
}
