//! The isolation-spec language, as PostgreSQL's isolation tester reads it: `setup` blocks, one
//! `teardown`, sessions (each an optional `setup`, named steps, an optional `teardown`), and
//! `permutation` lines whose steps may carry blocker markers — `(*)`, `(other_step)` and
//! `(other_step notices N)`. Parsed once into [`Spec`]; every error names file, line and column.

use std::path::Path;

pub use super::lex::SpecError;
use super::lex::{lex, Lexed, Token};

/// A parsed and checked spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// The `setup` blocks, run in order on the control connection before each permutation.
    pub setup: Vec<String>,
    /// The `teardown` block, run on the control connection after each permutation.
    pub teardown: Option<String>,
    /// The sessions, in file order.
    pub sessions: Vec<Session>,
    /// The `permutation` lines (none: every interleaving of the sessions' steps).
    pub permutations: Vec<Permutation>,
    /// Steps declared but used by no permutation (the tester warns about them).
    pub unused_steps: Vec<String>,
}

/// One session: a connection of its own and the steps it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    /// Its name (printed before its notices).
    pub name: String,
    /// SQL run on its connection before each permutation.
    pub setup: Option<String>,
    /// Its steps, in file order.
    pub steps: Vec<StepDef>,
    /// SQL run on its connection after each permutation.
    pub teardown: Option<String>,
}

/// A named step of a session.
#[derive(Clone, Debug, PartialEq)]
pub struct StepDef {
    /// Its name, unique in the spec.
    pub name: String,
    /// The SQL it sends.
    pub sql: String,
}

/// One `permutation` line.
#[derive(Clone, Debug, PartialEq)]
pub struct Permutation {
    /// Its steps, in order.
    pub steps: Vec<PermutationStep>,
}

/// A step of a permutation, with its blocker markers.
#[derive(Clone, Debug, PartialEq)]
pub struct PermutationStep {
    /// The step's name.
    pub name: String,
    /// What must happen before it is reported complete.
    pub blockers: Vec<Blocker>,
}

/// A blocker marker of a permutation step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// `(*)`: report the step as waiting when it is sent, whatever happens.
    Once,
    /// `(other)`: not complete while step `other` is running.
    Step(String),
    /// `(other notices N)`: not complete until `other`'s session has sent N more notices.
    Notices(String, usize),
}

struct Parser<'a> {
    tokens: Vec<Lexed>,
    at: usize,
    file: &'a Path,
    /// The token of each step's name, in declaration order.
    step_at: Vec<usize>,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.at].token
    }

    fn error(&self, message: String) -> SpecError {
        let t = &self.tokens[self.at];
        SpecError {
            file: self.file.to_path_buf(),
            line: t.line,
            column: t.column,
            message,
        }
    }

    fn expected(&self, what: &str) -> SpecError {
        self.error(format!("expected {what}, found {}", self.peek()))
    }

    fn keyword(&mut self, k: &str) -> bool {
        if matches!(self.peek(), Token::Keyword(w) if *w == k) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn punct(&mut self, c: char) -> bool {
        if matches!(self.peek(), Token::Punct(p) if *p == c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self, what: &str) -> Result<String, SpecError> {
        match self.peek().clone() {
            Token::Ident(name) => {
                self.at += 1;
                Ok(name)
            }
            _ => Err(self.expected(what)),
        }
    }

    fn sql(&mut self, what: &str) -> Result<String, SpecError> {
        match self.peek().clone() {
            Token::Sql(sql) => {
                self.at += 1;
                Ok(sql)
            }
            _ => Err(self.expected(&format!("{what}'s SQL block `{{ … }}`"))),
        }
    }

    fn session(&mut self) -> Result<Session, SpecError> {
        let name = self.ident("a session name")?;
        let setup = if self.keyword("setup") {
            Some(self.sql("the session's setup")?)
        } else {
            None
        };
        let mut steps = Vec::new();
        while self.keyword("step") {
            self.step_at.push(self.at);
            let name = self.ident("a step name")?;
            let sql = self.sql(&format!("step {name}"))?;
            steps.push(StepDef { name, sql });
        }
        if steps.is_empty() {
            return Err(self.expected(&format!("a `step` of session {name}")));
        }
        let teardown = if self.keyword("teardown") {
            Some(self.sql("the session's teardown")?)
        } else {
            None
        };
        Ok(Session {
            name,
            setup,
            steps,
            teardown,
        })
    }

    fn permutation_step(&mut self) -> Result<PermutationStep, SpecError> {
        let name = self.ident("a step name")?;
        let mut blockers = Vec::new();
        if self.punct('(') {
            loop {
                if self.punct('*') {
                    blockers.push(Blocker::Once);
                } else {
                    let other = self.ident("`*` or a blocking step's name")?;
                    if self.keyword("notices") {
                        match self.peek().clone() {
                            Token::Int(n) => {
                                self.at += 1;
                                blockers.push(Blocker::Notices(other, n));
                            }
                            _ => return Err(self.expected("a number of notices")),
                        }
                    } else {
                        blockers.push(Blocker::Step(other));
                    }
                }
                if self.punct(')') {
                    break;
                }
                if !self.punct(',') {
                    return Err(self.expected("`,` or `)`"));
                }
            }
        }
        Ok(PermutationStep { name, blockers })
    }
}

/// Parses and checks a spec's text.
pub fn parse(text: &str, file: &Path) -> Result<Spec, SpecError> {
    let mut p = Parser {
        tokens: lex(text, file)?,
        at: 0,
        file,
        step_at: Vec::new(),
    };
    let mut setup = Vec::new();
    let mut teardown = None;
    while p.keyword("setup") {
        setup.push(p.sql("setup")?);
    }
    if p.keyword("teardown") {
        teardown = Some(p.sql("teardown")?);
    }
    let mut sessions = Vec::new();
    while p.keyword("session") {
        sessions.push(p.session()?);
    }
    if sessions.is_empty() {
        return Err(p.expected("`setup`, `teardown` or a `session`"));
    }
    let mut permutations = Vec::new();
    let mut permutation_at = Vec::new();
    while p.keyword("permutation") {
        let mut at = vec![p.at];
        let mut steps = vec![p.permutation_step()?];
        while matches!(p.peek(), Token::Ident(_)) {
            at.push(p.at);
            steps.push(p.permutation_step()?);
        }
        permutation_at.push(at);
        permutations.push(Permutation { steps });
    }
    if !matches!(p.peek(), Token::End) {
        return Err(p.expected("a `permutation` or the end of the file"));
    }
    let mut spec = Spec {
        setup,
        teardown,
        sessions,
        permutations,
        unused_steps: Vec::new(),
    };
    check(&mut spec, &p, &permutation_at)?;
    Ok(spec)
}

/// The tester's post-parse checks: unique step names, permutations naming declared steps, and
/// blockers naming a step of the same permutation in another session.
fn check(spec: &mut Spec, p: &Parser<'_>, permutation_at: &[Vec<usize>]) -> Result<(), SpecError> {
    let at = |token: usize, message: String| {
        let t = &p.tokens[token];
        SpecError {
            file: p.file.to_path_buf(),
            line: t.line,
            column: t.column,
            message,
        }
    };
    let mut seen = std::collections::BTreeMap::new();
    let mut k = 0;
    for (s, session) in spec.sessions.iter().enumerate() {
        for step in &session.steps {
            if seen.insert(step.name.clone(), s).is_some() {
                return Err(at(
                    p.step_at[k],
                    format!("duplicate step name {:?}", step.name),
                ));
            }
            k += 1;
        }
    }
    let mut used = std::collections::BTreeSet::new();
    for (k, perm) in spec.permutations.iter().enumerate() {
        for (j, ps) in perm.steps.iter().enumerate() {
            let token = permutation_at[k][j];
            let Some(&own) = seen.get(&ps.name) else {
                return Err(at(
                    token,
                    format!("undefined step {:?} in permutation", ps.name),
                ));
            };
            used.insert(ps.name.clone());
            for b in &ps.blockers {
                let other = match b {
                    Blocker::Once => continue,
                    Blocker::Step(o) | Blocker::Notices(o, _) => o,
                };
                if !perm.steps.iter().any(|s| &s.name == other) {
                    return Err(at(
                        token,
                        format!(
                            "undefined blocking step {other:?} referenced in permutation step {:?}",
                            ps.name
                        ),
                    ));
                }
                if seen.get(other) == Some(&own) {
                    return Err(at(
                        token,
                        format!(
                            "permutation step {:?} cannot block on its own session",
                            ps.name
                        ),
                    ));
                }
            }
        }
    }
    if !spec.permutations.is_empty() {
        spec.unused_steps = seen
            .keys()
            .filter(|n| !used.contains(*n))
            .cloned()
            .collect();
    }
    Ok(())
}

impl Spec {
    /// The session and index within it of the step named `name`.
    pub fn find(&self, name: &str) -> Option<(usize, &StepDef)> {
        self.sessions.iter().enumerate().find_map(|(s, session)| {
            session
                .steps
                .iter()
                .find(|st| st.name == name)
                .map(|st| (s, st))
        })
    }

    /// Every step, sessions in order: the global step numbering schedules use.
    pub fn all_steps(&self) -> Vec<(usize, &StepDef)> {
        self.sessions
            .iter()
            .enumerate()
            .flat_map(|(s, session)| session.steps.iter().map(move |st| (s, st)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Spec, SpecError> {
        parse(text, Path::new("t.spec"))
    }

    #[test]
    fn blocks_keep_inner_newlines_and_lose_the_spaces_by_the_braces() {
        let spec = parse_str(
            "setup { CREATE TABLE t (a int); }\nteardown { DROP TABLE t; }\n\
             session s1\nstep a {  SELECT 1;  }\nstep b {\n  SELECT 2;\n}\n\
             session \"s 2\"\nsetup { BEGIN; }\nstep c { SELECT 3; }\nteardown { COMMIT; }\n\
             permutation a c(*) b(c, c notices 2)\n",
        )
        .unwrap();
        assert_eq!(spec.setup, vec!["CREATE TABLE t (a int);"]);
        assert_eq!(spec.sessions[0].steps[0].sql, "SELECT 1;");
        assert_eq!(spec.sessions[0].steps[1].sql, "\n  SELECT 2;\n");
        assert_eq!(spec.sessions[1].name, "s 2");
        assert_eq!(
            spec.permutations[0].steps[2].blockers,
            vec![Blocker::Step("c".into()), Blocker::Notices("c".into(), 2)]
        );
        assert_eq!(spec.permutations[0].steps[1].blockers, vec![Blocker::Once]);
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = parse_str("session s1\nstep a { SELECT 1; }\npermutation a b\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 15));
        assert!(e.message.contains("undefined step \"b\""), "{e}");
        let e = parse_str("session s1\nstep a SELECT 1\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 8));
        assert!(
            e.to_string()
                .starts_with("t.spec:2:8: expected step a's SQL block"),
            "{e}"
        );
        let e = parse_str("session s1\nstep a { SELECT 1; }\nstep a { SELECT 2; }\n").unwrap_err();
        assert!(e.message.contains("duplicate step name"), "{e}");
        let e = parse_str("session s1\nstep a { SELECT 1; }\nstep b { x }\npermutation a(b) b\n")
            .unwrap_err();
        assert!(e.message.contains("own session"), "{e}");
        let e = parse_str("session s1\nstep a { SELECT 1; \n").unwrap_err();
        assert!(e.message.contains("unterminated SQL block"), "{e}");
        let e = parse_str("session s1\nstep a { x }\nsession s2\nstep b { y }\nstep a { z }\n")
            .unwrap_err();
        assert_eq!((e.line, e.column), (5, 6), "at the second `a`: {e}");
        let e = parse_str("teardown { x }\nsetup { y }\nsession s1\nstep a { z }\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1), "setup after teardown: {e}");
        let spec = parse_str("session s\u{e9}\nstep \u{e9}t\u{e9}$1 { x }\n").unwrap();
        assert_eq!(spec.sessions[0].steps[0].name, "\u{e9}t\u{e9}$1");
        let e = parse_str("session s1 ; step a {x}").unwrap_err();
        assert_eq!((e.line, e.column), (1, 12));
    }
}
