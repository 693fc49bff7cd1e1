//! Matching a step's outcome against what the file expects: pure functions, unit-tested here, so
//! the executor only decides *when* to check, never *how*.

use serde_json::Value;

use super::format::Expect;
use super::outcome::Outcome;

/// A TOML value as JSON.
pub fn toml_to_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// JSON equality with numbers compared by value (`1` equals `1.0`) and objects compared key by key.
/// Two integers are compared exactly: through `f64` every integer past 2^53 would equal its
/// neighbour (a bigint lock key, an `objid`).
pub fn json_eq(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
            a.as_f64() == b.as_f64()
        }
        (Value::Number(a), Value::Number(b)) => {
            a.as_i64().map(i128::from).or(a.as_u64().map(i128::from))
                == b.as_i64().map(i128::from).or(b.as_u64().map(i128::from))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && b.iter()
                    .all(|(k, y)| a.get(k).is_some_and(|x| json_eq(x, y)))
        }
        _ => actual == expected,
    }
}

/// The value at a dotted path (`error.code`, `connections.0.status`).
pub fn lookup<'v>(body: &'v Value, dotted: &str) -> Option<&'v Value> {
    dotted.split('.').try_fold(body, |v, k| match v {
        Value::Array(items) => k.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => v.get(k),
    })
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Checks `outcome` against `e`; `subst` resolves placeholders in expected strings and rows.
/// `Err` says what was expected and what happened.
pub fn check(outcome: &Outcome, e: &Expect, subst: &dyn Fn(&str) -> String) -> Result<(), String> {
    if let Some(s) = e.status {
        if outcome.status != s {
            return Err(format!("expected status {s}, got {}", outcome.summary()));
        }
    }
    if let Some(c) = &e.code {
        if outcome.code.as_deref() != Some(c.as_str()) {
            return Err(format!(
                "expected error code {c}, got {}",
                outcome.summary()
            ));
        }
    }
    for (path, want) in &e.body {
        let want = toml_to_json(want);
        match lookup(&outcome.body, path) {
            Some(got) if json_eq(got, &want) => {}
            got => {
                return Err(format!(
                    "expected body.{path} = {want}, got {}",
                    got.map_or("nothing".to_owned(), Value::to_string)
                ))
            }
        }
    }
    for x in &e.body_excludes {
        let x = subst(x);
        if outcome.raw.contains(&x) {
            return Err(format!("the body contains {x:?}"));
        }
    }
    for x in &e.body_contains {
        let x = subst(x);
        if !outcome.raw.contains(&x) {
            return Err(format!("the body does not contain {x:?}"));
        }
    }
    if let Some(ok) = e.ok {
        if outcome.ok != ok {
            return Err(format!("expected ok = {ok}, got {}", outcome.summary()));
        }
    }
    if let Some(x) = &e.error_contains {
        if !outcome
            .error
            .as_deref()
            .unwrap_or_default()
            .contains(x.as_str())
        {
            return Err(format!(
                "expected an error containing {x:?}, got {}",
                outcome.summary()
            ));
        }
    }
    if let Some(rows) = &e.rows {
        let want = Value::Array(
            rows.iter()
                .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
                .collect(),
        );
        let want: Value = serde_json::from_str(&subst(&want.to_string())).unwrap_or(want);
        if !json_eq(&outcome.body, &want) {
            return Err(format!("expected rows {want}, got {}", outcome.body));
        }
    }
    if let (Some(error), None, None) = (&outcome.error, e.ok, &e.error_contains) {
        return Err(format!("{} ({error})", outcome.summary()));
    }
    // A server error passes only an expectation that names it: one that asks only what the body
    // holds (or lacks) would otherwise let a crash through as a check that held.
    if outcome.status >= 500 && e.status.is_none() && e.code.is_none() {
        return Err(format!(
            "{} (a server error, and the expectation names no status or code)",
            outcome.summary()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(status: u16, body: Value) -> Outcome {
        Outcome {
            status,
            raw: body.to_string(),
            code: crate::operation::Routes::reference().error_code(&body),
            ok: (200..300).contains(&status),
            body,
            ..Outcome::default()
        }
    }

    fn expect(toml_text: &str) -> Expect {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn status_code_and_body_fields_must_all_match() {
        let o = answer(409, json!({"error": {"code": "ACTIVATION_NOT_READY"}}));
        let same = |s: &str| s.to_owned();
        assert!(check(
            &o,
            &expect("status = 409\ncode = \"ACTIVATION_NOT_READY\""),
            &same
        )
        .is_ok());
        let wrong = check(&o, &expect("status = 200"), &same).unwrap_err();
        assert_eq!(wrong, "expected status 200, got 409 ACTIVATION_NOT_READY");
        let ok = answer(200, json!({"already_completed": false, "n": 1}));
        assert!(check(
            &ok,
            &expect("body = { already_completed = false, n = 1.0 }"),
            &same
        )
        .is_ok());
        assert!(
            check(&ok, &expect("body = { already_completed = true }"), &same)
                .unwrap_err()
                .contains("body.already_completed")
        );
    }

    #[test]
    fn placeholders_are_resolved_before_searching_the_body() {
        let o = answer(200, json!({"workspace": "w-123"}));
        let subst = |s: &str| s.replace("{workspace:a}", "w-123");
        assert!(check(&o, &expect("body_contains = [\"{workspace:a}\"]"), &subst).is_ok());
        assert!(check(&o, &expect("body_excludes = [\"{workspace:a}\"]"), &subst).is_err());
    }

    #[test]
    fn an_error_fails_unless_it_was_expected() {
        let o = Outcome {
            error: Some("connection refused".into()),
            ..Outcome::default()
        };
        let same = |s: &str| s.to_owned();
        assert!(check(&o, &Expect::default(), &same).is_err());
        assert!(check(
            &o,
            &expect("ok = false\nerror_contains = \"refused\""),
            &same
        )
        .is_ok());
    }

    #[test]
    fn integers_are_compared_exactly() {
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(json_eq(
            &json!(9_007_199_254_740_993_i64),
            &json!(9_007_199_254_740_993_i64)
        ));
        assert!(!json_eq(
            &json!(9_007_199_254_740_993_i64),
            &json!(9_007_199_254_740_992_i64)
        ));
        assert!(json_eq(&json!(u64::MAX), &json!(u64::MAX)));
        assert!(!json_eq(&json!(-1), &json!(u64::MAX)));
    }

    #[test]
    fn a_server_error_passes_only_an_expectation_that_names_it() {
        let o = answer(500, json!({"error": {"code": "INTERNAL"}}));
        let same = |s: &str| s.to_owned();
        let refused = check(&o, &expect("body_excludes = [\"token\"]"), &same).unwrap_err();
        assert!(refused.contains("names no status or code"), "{refused}");
        assert!(check(&o, &expect("status = 500"), &same).is_ok());
        assert!(check(&o, &expect("code = \"INTERNAL\""), &same).is_ok());
        let fine = answer(404, json!({"error": {"code": "NOT_FOUND"}}));
        assert!(check(&fine, &expect("body_excludes = [\"token\"]"), &same).is_ok());
    }

    #[test]
    fn globs_and_dotted_paths() {
        assert!(glob_match("oauth:state:*", "oauth:state:abc"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("a*c", "abd"));
        let body = json!({"connections": [{"status": "CONNECTED"}]});
        assert_eq!(
            lookup(&body, "connections.0.status"),
            Some(&json!("CONNECTED"))
        );
        assert_eq!(lookup(&body, "connections.1.status"), None);
    }
}
