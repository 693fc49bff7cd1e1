//! What a step produced ([`Outcome`]), why a run failed ([`Failure`]), and one run's record
//! ([`ScenarioRun`]).

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::trace::Trace;
use crate::client::Answer;
use crate::fake_provider::Consent;

/// Why a run failed (or, with `skipped`, why it did not run).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Failure {
    /// The step (`None`: a final assertion or the set-up).
    pub step: Option<usize>,
    /// What was expected and what happened.
    pub message: String,
    /// Lock tables and backends when it failed, for blocking-related failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Value>,
    /// True when the environment, not the service, failed (the run could not happen).
    pub environment: bool,
    /// True when the target cannot serve the scenario (the message says what it lacks).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

impl Failure {
    /// Where it failed, as people count: `step 3` (the file's third step), or `at the end` (a
    /// final assertion, the set-up). Load errors count the same way.
    pub fn place(&self) -> String {
        self.step
            .map_or("at the end".to_owned(), |s| format!("step {}", s + 1))
    }
}

impl Failure {
    /// A failure of step `step` (or of the run).
    pub fn at(step: Option<usize>, message: impl Into<String>) -> Self {
        Failure {
            step,
            message: message.into(),
            diagnostics: None,
            environment: false,
            skipped: false,
        }
    }

    /// The target cannot serve the scenario: `why` says what it lacks (the message is
    /// `SKIPPED: why`).
    pub fn skipped(why: impl std::fmt::Display) -> Self {
        Failure {
            skipped: true,
            ..Failure::at(None, format!("SKIPPED: {why}"))
        }
    }

    /// The environment failed: nothing was learnt about the service.
    pub fn environment(message: impl Into<String>) -> Self {
        Failure {
            environment: true,
            ..Failure::at(None, message)
        }
    }

    /// With the lock tables and backends attached.
    pub fn with_diagnostics(mut self, diagnostics: Value) -> Self {
        self.diagnostics = Some(diagnostics);
        self
    }
}

/// One run of one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioRun {
    /// What happened, in order, and the schedule followed.
    pub trace: Trace,
    /// Empty when the run passed.
    pub failures: Vec<Failure>,
    /// Expectations and assertions that held.
    pub checks: usize,
    /// Wall time of the run, set-up and clean-up included.
    pub duration: Duration,
}

/// A step's result: an HTTP answer, a SQL result, or a Redis reply.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// HTTP status (0: not an HTTP step, or the request failed).
    pub status: u16,
    /// The JSON body, or the rows of a `SELECT`.
    pub body: Value,
    /// The raw body.
    pub raw: String,
    /// The stable error code of an HTTP error answer, read where the target's routes say.
    pub code: Option<String>,
    /// The authorization URL of an `authorize` answer, read where the target's routes say.
    pub authorization_url: Option<String>,
    /// The consent an `authorize` obtained at the provider.
    pub consent: Option<Consent>,
    /// HTTP 2xx, or the statement/command succeeded.
    pub ok: bool,
    /// Why it did not produce an answer.
    pub error: Option<String>,
    /// The request an HTTP answer answered (method, path and query), for the contract check.
    pub request: Option<(String, String)>,
    /// The answer's `x-request-id`: a failure quotes what the service logged under it.
    pub request_id: Option<String>,
}

impl Outcome {
    /// An HTTP answer.
    pub fn from_answer(a: Answer) -> Self {
        Outcome {
            status: a.status.as_u16(),
            ok: a.status.is_success(),
            request: Some((a.method.to_string(), a.path.clone())),
            body: a.body,
            raw: a.raw,
            code: a.code,
            authorization_url: a.authorization_url,
            request_id: a.request_id,
            ..Outcome::default()
        }
    }

    /// Something failed before an answer.
    pub fn failed(error: impl Into<String>) -> Self {
        Outcome {
            error: Some(error.into()),
            ..Outcome::default()
        }
    }

    /// A request that got no answer: its first line (what `summary` shows and flake checks compare)
    /// is the failure's class; the method, the path without its query and the transport's words
    /// follow for diagnostics.
    pub fn transport_failure(e: &crate::client::ClientError) -> Self {
        Outcome::failed(format!(
            "request failed: {}\n{e}: {}",
            e.failure(),
            e.detail()
        ))
    }

    /// What repeated runs are compared on: the status plus the fields that say what happened.
    pub fn summary(&self) -> String {
        if self.status == 0 {
            return match &self.error {
                None => "ok".to_owned(),
                Some(e) => format!("error: {}", e.lines().next().unwrap_or_default()),
            };
        }
        match self.code.as_deref() {
            Some(code) => format!("{} {code}", self.status),
            None => match (
                self.body.get("status").and_then(Value::as_str),
                self.body.get("already_completed"),
                self.body.get("refreshed"),
            ) {
                (Some(s), _, _) => format!("{} {s}", self.status),
                (None, Some(done), _) => format!("{} already_completed={done}", self.status),
                (None, None, Some(refreshed)) => format!("{} refreshed={refreshed}", self.status),
                _ => self.status.to_string(),
            },
        }
    }
}
