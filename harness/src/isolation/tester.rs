//! Runs a spec's permutations with the semantics of PostgreSQL's isolation tester, so that its
//! output can be compared with an expected file: each step is sent on its session's connection;
//! while it has not answered, the tester asks the lock tables whether it waits on another session
//! ([`crate::evidence::waits_among`], every [`crate::evidence::POLL_INTERVAL`]) and, if so,
//! reports `<waiting ...>` and goes on; a waiting step is reported `<... completed>` when it
//! answers, in the order the tester would find it; a step whose session is still busy waits for
//! that session first. Blocker markers hold a step's completion back. Notices are printed when
//! their connection is read, prefixed by the session's name.
//!
//! Unlike the tester, a step that is still running after the step timeout ends the spec as a
//! failure carrying the lock table — never a pass, never a silent cancel.
//!
//! Past 500 lines on purpose: the tester's semantics (when a step counts as waiting, completion
//! order, blocker markers, notices) are one state machine; split, its invariants would be spread
//! over files.

use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::oneshot;

use super::permutations::{permutations, PStep};
use super::print::print_table;
use super::session::{Item, Message, SessionConn, StepResult};
use super::spec::{Blocker, Spec};
use crate::evidence::{self, LockRow, SessionWait};

/// How a spec is run.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long a step may run (waiting or not) before the spec fails.
    pub step_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            step_timeout: Duration::from_secs(60),
        }
    }
}

/// The proof behind one `<waiting ...>`: who the step waited for, from the lock tables.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WaitProof {
    /// The permutation (0-based).
    pub permutation: usize,
    /// The step.
    pub step: String,
    /// From sending the step to seeing it wait.
    pub detected_after_ms: f64,
    /// The backends it waited for and the lock it awaited, read in one statement (`None` for a
    /// `(*)` marker, which needs no proof).
    pub wait: Option<SessionWait>,
}

/// What stopped a spec before its end.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Fatal {
    /// What happened.
    pub message: String,
    /// `pg_locks` when it happened (for a step that ran out of time).
    pub locks: Vec<LockRow>,
}

/// A spec's run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Tested {
    /// The output, in the isolation tester's format.
    pub output: String,
    /// Permutations run.
    pub permutations: usize,
    /// Steps sent.
    pub steps: usize,
    /// Every `<waiting ...>`, with its proof.
    pub waits: Vec<WaitProof>,
    /// Teardown errors and unused steps (the tester's warnings).
    pub warnings: Vec<String>,
    /// What ended the run early, if anything.
    pub fatal: Option<Fatal>,
}

struct Active {
    step: PStep,
    rx: oneshot::Receiver<StepResult>,
    result: Option<StepResult>,
    sent: Instant,
    notice_targets: Vec<usize>,
}

struct Tester<'a> {
    spec: &'a Spec,
    opts: &'a Options,
    control: SessionConn,
    sessions: Vec<SessionConn>,
    pids: Vec<i32>,
    evidence: PgPool,
    active: Vec<Option<Active>>,
    total_notices: Vec<usize>,
    notifies: Vec<Vec<(String, String, i32)>>,
    any_new_notice: bool,
    permutation: usize,
    tested: Tested,
}

const NONBLOCK: u8 = 1;
const RETRY: u8 = 2;

/// Runs every permutation of `spec` (named `name`) on the database at `database_url` (which its
/// setup blocks prepare and its teardown blocks clean). Each connection's `application_name` is
/// `isolation/NAME/SESSION`, as under PostgreSQL's own test driver, so that specs which look
/// their sessions up in `pg_stat_activity` find them.
pub async fn run(spec: &Spec, name: &str, database_url: &str, opts: &Options) -> Tested {
    let mut tested = Tested::default();
    let evidence = match PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            tested.fatal = Some(Fatal {
                message: format!("cannot open the evidence connection: {e}"),
                locks: Vec::new(),
            });
            return tested;
        }
    };
    let control = match SessionConn::connect(
        database_url,
        "control connection",
        &format!("isolation/{name}/control connection"),
    )
    .await
    {
        Ok(c) => c,
        Err(message) => {
            tested.fatal = Some(Fatal {
                message,
                locks: Vec::new(),
            });
            return tested;
        }
    };
    let mut sessions = Vec::new();
    for s in &spec.sessions {
        let app = format!("isolation/{name}/{}", s.name);
        match SessionConn::connect(database_url, &s.name, &app).await {
            Ok(c) => sessions.push(c),
            Err(message) => {
                tested.fatal = Some(Fatal {
                    message,
                    locks: Vec::new(),
                });
                return tested;
            }
        }
    }
    // PostgreSQL's tester writes these to its standard error, which its regression driver puts
    // in the output it compares: so they are part of the output here too, where they appear
    // there, and an expected file that lacks one fails.
    for step in &spec.unused_steps {
        tested.warnings.push(format!("unused step name: {step}"));
        tested
            .output
            .push_str(&format!("unused step name: {step}\n"));
    }
    tested.output.push_str(&format!(
        "Parsed test spec with {} sessions\n",
        spec.sessions.len()
    ));
    let n = spec.sessions.len();
    let mut tester = Tester {
        spec,
        opts,
        control,
        pids: sessions.iter().map(|s| s.pid).collect(),
        sessions,
        evidence,
        active: (0..n).map(|_| None).collect(),
        total_notices: vec![0; n],
        notifies: vec![Vec::new(); n],
        any_new_notice: false,
        permutation: 0,
        tested,
    };
    for (k, steps) in permutations(spec).iter().enumerate() {
        tester.permutation = k;
        tester.tested.permutations += 1;
        if let Err(fatal) = tester.run_permutation(steps).await {
            for a in tester.active.iter().flatten() {
                let _ = tester.sessions[a.step.session].cancel().await;
            }
            tester.tested.fatal = Some(fatal);
            break;
        }
    }
    tester.evidence.close().await;
    tester.tested
}

impl Tester<'_> {
    async fn run_permutation(&mut self, steps: &[PStep]) -> Result<(), Fatal> {
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        self.tested
            .output
            .push_str(&format!("\nstarting permutation: {}\n", names.join(" ")));
        for sql in &self.spec.setup {
            let result = self.exec(None, sql).await?;
            if let Some(e) = self.print_last(&result) {
                return Err(self.fatal(format!("setup failed: {e}")).await);
            }
        }
        for s in 0..self.sessions.len() {
            if let Some(sql) = self.spec.sessions[s].setup.clone() {
                let result = self.exec(Some(s), &sql).await?;
                if let Some(e) = self.print_last(&result) {
                    let name = self.sessions[s].name.clone();
                    return Err(self
                        .fatal(format!("setup of session {name} failed: {e}"))
                        .await);
                }
            }
        }
        let mut waiting: Vec<PStep> = Vec::new();
        for step in steps {
            let s = step.session;
            if self.active[s].is_some() {
                let started = Instant::now();
                while let Some(old) = self.active[s].as_ref().map(|a| a.step.clone()) {
                    if !self.try_complete_step(&old, RETRY).await? {
                        waiting.retain(|w| w.name != old.name);
                    }
                    waiting = self.try_complete_steps(waiting, NONBLOCK | RETRY).await?;
                    if self.active[s].is_some() && started.elapsed() > 2 * self.opts.step_timeout {
                        return Err(self.fatal(format!("step {} timed out", old.name)).await);
                    }
                }
            }
            let notice_targets = step
                .blockers
                .iter()
                .map(|b| match b {
                    Blocker::Notices(other, n) => {
                        let (os, _) = self.spec.find(other).expect("checked at parse time");
                        n + self.total_notices[os]
                    }
                    _ => 0,
                })
                .collect();
            self.active[s] = Some(Active {
                step: step.clone(),
                rx: self.sessions[s].send(&step.sql),
                result: None,
                sent: Instant::now(),
                notice_targets,
            });
            self.tested.steps += 1;
            let must_wait = self.try_complete_step(step, NONBLOCK).await?;
            waiting = self.try_complete_steps(waiting, NONBLOCK | RETRY).await?;
            if must_wait {
                waiting.push(step.clone());
            }
        }
        let waiting = self.try_complete_steps(waiting, RETRY).await?;
        if !waiting.is_empty() {
            return Err(self
                .fatal("failed to complete permutation due to mutually-blocking steps".into())
                .await);
        }
        for s in 0..self.sessions.len() {
            if let Some(sql) = self.spec.sessions[s].teardown.clone() {
                let result = self.exec(Some(s), &sql).await?;
                if let Some(e) = self.print_last(&result) {
                    let name = &self.sessions[s].name;
                    let line = format!("teardown of session {name} failed: {e}");
                    self.tested.output.push_str(&format!("{line}\n"));
                    self.tested.warnings.push(line);
                }
            }
        }
        if let Some(sql) = &self.spec.teardown {
            let result = self.exec(None, sql).await?;
            if let Some(e) = self.print_last(&result) {
                let line = format!("teardown failed: {e}");
                self.tested.output.push_str(&format!("{line}\n"));
                self.tested.warnings.push(line);
            }
        }
        Ok(())
    }

    /// Session `s`'s connection, or the control connection.
    fn conn(&self, s: Option<usize>) -> &SessionConn {
        s.map_or(&self.control, |s| &self.sessions[s])
    }

    /// Runs a setup or teardown block on session `s`'s connection (`None`: the control
    /// connection) to its end, reading what the session received; one still running after the
    /// step timeout ends the spec, with the lock table.
    async fn exec(&mut self, s: Option<usize>, sql: &str) -> Result<StepResult, Fatal> {
        match tokio::time::timeout(self.opts.step_timeout, self.conn(s).exec(sql)).await {
            Ok(result) => {
                match s {
                    Some(s) => self.read_input(s),
                    None => {
                        self.control.drain();
                    }
                }
                Ok(result)
            }
            Err(_) => {
                let whose = s.map_or("the spec's".to_owned(), |s| {
                    format!("session {}'s", self.sessions[s].name)
                });
                let fatal = self
                    .fatal(format!(
                        "{whose} setup or teardown block still running after {:.0} s (the step timeout)",
                        self.opts.step_timeout.as_secs_f64()
                    ))
                    .await;
                let _ = self.conn(s).cancel().await;
                Err(fatal)
            }
        }
    }

    /// Prints a setup or teardown block's result the way `PQexec` returns it (the last
    /// statement's); returns its error, if that is what it was.
    fn print_last(&mut self, result: &StepResult) -> Option<String> {
        match result.last() {
            Some(Item::Table(t)) => {
                print_table(&mut self.tested.output, t);
                None
            }
            Some(Item::Error(e)) => Some(e.clone()),
            _ => None,
        }
    }

    async fn try_complete_steps(
        &mut self,
        mut waiting: Vec<PStep>,
        flags: u8,
    ) -> Result<Vec<PStep>, Fatal> {
        loop {
            self.any_new_notice = false;
            let before = waiting.len();
            let mut have_blocker = false;
            let mut w = 0;
            while w < waiting.len() {
                let step = waiting[w].clone();
                if self.try_complete_step(&step, flags).await? {
                    have_blocker |= !step.blockers.is_empty();
                    w += 1;
                } else {
                    waiting.remove(w);
                }
            }
            if !(have_blocker && (waiting.len() < before || self.any_new_notice)) {
                return Ok(waiting);
            }
        }
    }

    /// Waits for `step` to answer or (with `NONBLOCK`) to wait on another session; returns
    /// whether it is still not complete.
    async fn try_complete_step(&mut self, step: &PStep, flags: u8) -> Result<bool, Fatal> {
        let s = step.session;
        let retry = flags & RETRY != 0;
        if !retry && step.blockers.contains(&Blocker::Once) {
            self.print_waiting(step, None);
            return Ok(true);
        }
        let started = Instant::now();
        loop {
            let active = self.active[s].as_mut().expect("the step is running");
            if active.result.is_some() {
                break;
            }
            match tokio::time::timeout(evidence::POLL_INTERVAL, &mut active.rx).await {
                Ok(result) => {
                    active.result = Some(result.unwrap_or_else(|_| {
                        vec![Item::Error("the session's connection ended".into())]
                    }));
                    break;
                }
                Err(_) => {
                    if flags & NONBLOCK != 0 {
                        let wait = evidence::waits_among(&self.evidence, self.pids[s], &self.pids)
                            .await
                            .map_err(|e| Fatal {
                                message: format!("lock wait query failed: {e}"),
                                locks: Vec::new(),
                            })?;
                        if let Some(wait) = wait {
                            self.read_input(s);
                            let active = self.active[s].as_mut().expect("the step is running");
                            match active.rx.try_recv() {
                                Ok(result) => {
                                    active.result = Some(result);
                                    break;
                                }
                                Err(oneshot::error::TryRecvError::Closed) => {
                                    active.result = Some(vec![Item::Error(
                                        "the session's connection ended".into(),
                                    )]);
                                    break;
                                }
                                Err(oneshot::error::TryRecvError::Empty) => {}
                            }
                            if !retry {
                                self.print_waiting(step, Some(wait));
                            }
                            return Ok(true);
                        }
                    }
                    if started.elapsed() > self.opts.step_timeout {
                        // The lock table is read before the cancel, which would end the wait.
                        let fatal = self
                            .fatal(format!(
                                "step {} still running after {:.0} s (the step timeout)",
                                step.name,
                                self.opts.step_timeout.as_secs_f64()
                            ))
                            .await;
                        let _ = self.sessions[s].cancel().await;
                        return Err(fatal);
                    }
                }
            }
            self.read_input(s);
        }
        self.read_input(s);
        if self.has_blocker(step) {
            if !retry {
                self.print_waiting(step, None);
            }
            return Ok(true);
        }
        let active = self.active[s].take().expect("the step is running");
        let out = &mut self.tested.output;
        if retry {
            out.push_str(&format!("step {}: <... completed>\n", step.name));
        } else {
            out.push_str(&format!("step {}: {}\n", step.name, step.sql));
        }
        for item in active.result.unwrap_or_default() {
            match item {
                Item::Table(t) => print_table(out, &t),
                Item::Error(e) => {
                    out.push_str(&e);
                    out.push('\n');
                }
                Item::Command => {}
            }
        }
        self.read_input(s);
        for (channel, payload, pid) in std::mem::take(&mut self.notifies[s]) {
            let from = self
                .sessions
                .iter()
                .find(|c| c.pid == pid)
                .map_or(format!("PID {pid}"), |c| c.name.clone());
            self.tested.output.push_str(&format!(
                "{}: NOTIFY \"{channel}\" with payload \"{payload}\" from {from}\n",
                self.sessions[s].name
            ));
        }
        Ok(false)
    }

    fn has_blocker(&self, step: &PStep) -> bool {
        let active = self.active[step.session].as_ref();
        step.blockers.iter().enumerate().any(|(i, b)| match b {
            Blocker::Once => false,
            Blocker::Step(other) => {
                let (os, _) = self.spec.find(other).expect("checked at parse time");
                self.active[os]
                    .as_ref()
                    .is_some_and(|a| &a.step.name == other)
            }
            Blocker::Notices(other, _) => {
                let (os, _) = self.spec.find(other).expect("checked at parse time");
                let target = active.map_or(0, |a| a.notice_targets[i]);
                self.total_notices[os] < target
            }
        })
    }

    fn print_waiting(&mut self, step: &PStep, wait: Option<SessionWait>) {
        self.tested
            .output
            .push_str(&format!("step {}: {} <waiting ...>\n", step.name, step.sql));
        let after = self.active[step.session]
            .as_ref()
            .map_or(0.0, |a| a.sent.elapsed().as_secs_f64() * 1000.0);
        self.tested.waits.push(WaitProof {
            permutation: self.permutation,
            step: step.name.clone(),
            detected_after_ms: after,
            wait,
        });
    }

    /// Reads what session `s`'s connection received: its notices are printed now, its
    /// notifications when its step completes.
    fn read_input(&mut self, s: usize) {
        for m in self.sessions[s].drain() {
            match m {
                Message::Notice(text) => {
                    let name = &self.sessions[s].name;
                    self.tested.output.push_str(&format!("{name}: {text}"));
                    self.total_notices[s] += 1;
                    self.any_new_notice = true;
                }
                Message::Notify {
                    channel,
                    payload,
                    pid,
                } => self.notifies[s].push((channel, payload, pid)),
            }
        }
    }

    async fn fatal(&self, message: String) -> Fatal {
        Fatal {
            message,
            locks: evidence::lock_snapshot(&self.evidence)
                .await
                .unwrap_or_default(),
        }
    }
}
