//! `do = "redis"`: one Redis command on the service's Redis (`{prefix}` is the scenario's key
//! prefix), from the harness's own connection.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::scenario::check::{problem, Checker, Problem};
use crate::scenario::executor::Executor;
use crate::scenario::format::Expect;
use crate::scenario::outcome::{Failure, Outcome};
use crate::scenario::trace::EventKind;

/// A Redis step as written.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// Who acts (for the trace).
    pub actor: String,
    /// A note for the trace.
    pub note: Option<String>,
    /// The command and its arguments.
    pub redis: Vec<String>,
    /// What the outcome must be.
    pub expect: Option<Expect>,
}

/// A checked Redis step.
#[derive(Clone, Debug)]
pub struct RedisStep {
    /// Who acts.
    pub actor: String,
    /// The command and its arguments (placeholders resolved when run).
    pub command: Vec<String>,
    /// What the outcome must be.
    pub expect: Option<Expect>,
}

impl RedisStep {
    /// Checks a written Redis step.
    pub fn parse(r: RawRedis, cx: &mut Checker, place: &str) -> Result<Self, Problem> {
        cx.actor(&format!("{place}.actor"), &r.actor)?;
        if r.redis.is_empty() {
            return Err(problem(place, "needs redis = [\"COMMAND\", args…]"));
        }
        for a in &r.redis {
            cx.placeholders(&format!("{place}.redis"), a)?;
        }
        if let Some(e) = &r.expect {
            cx.expectation(&format!("{place}.expect"), e)?;
        }
        Ok(RedisStep {
            actor: r.actor,
            command: r.redis,
            expect: r.expect,
        })
    }

    /// Runs the command and checks its outcome.
    pub async fn apply(
        &self,
        ex: &mut Executor<'_>,
        i: usize,
        note: Option<&str>,
    ) -> Result<(), Failure> {
        let args: Vec<String> = self.command.iter().map(|a| ex.subst(a)).collect();
        ex.event(
            Some(i),
            Some(&self.actor),
            EventKind::Launched,
            args.join(" "),
            None,
        );
        ex.annotate(note);
        let url = ex
            .target()
            .redis()
            .map(|r| r.url.to_owned())
            .ok_or_else(|| Failure::at(Some(i), "the target has no Redis access"))?;
        let result: Result<redis::Value, redis::RedisError> = async {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            let mut cmd = redis::cmd(&args[0]);
            for a in &args[1..] {
                cmd.arg(a);
            }
            cmd.query_async(&mut conn).await
        }
        .await;
        let outcome = match result {
            Ok(v) => Outcome {
                ok: true,
                body: Value::String(format!("{v:?}")),
                ..Outcome::default()
            },
            Err(e) => Outcome {
                ok: false,
                error: Some(e.to_string()),
                ..Outcome::default()
            },
        };
        ex.expect_outcome(i, &self.actor, &outcome, self.expect.as_ref())
    }
}
