//! The state a scenario reads through `{query:NAME:T}` / `{query:NAME}` placeholders: a small
//! vocabulary ([`STATE_QUERIES`]) each target answers in its own schema — the reference's here
//! ([`reference`]), a profile's in its `[database.queries]` — and the rule that tells SQL written
//! against no schema from SQL written against the reference's ([`sql_is_portable`]). A profile's
//! state query must be one statement ([`is_one_statement`]): scenarios splice it into their own
//! SQL, and `explore` sends it as a simple query, which would run a second one as well.

/// The state queries a scenario's SQL may name as `{query:NAME:T}` (on tenant T's workspace) or
/// `{query:NAME}` (on the whole database): the vocabulary a target's own schema answers in, so one
/// scenario file reads state on any target with database evidence. Each is one statement; its
/// columns are part of its meaning.
pub const STATE_QUERIES: &[(&str, &str)] = &[
    (
        "token_holders",
        "rows of `provider`, `status`: every connection holding an access token, by provider (no workspace)",
    ),
    (
        "all_activations",
        "one row, `count`: how many activations the whole database holds (no workspace)",
    ),
    (
        "qbo_status",
        "one row, `status`: the workspace's QuickBooks connection status in Harbor's names",
    ),
    (
        "activations",
        "one row, `count`: how many activations the workspace has",
    ),
    (
        "lock_qbo_row",
        "locks the workspace's QuickBooks connection row FOR UPDATE (a row-lock probe)",
    ),
];

/// The state queries over the whole database (no workspace in them).
pub const WHOLE_DATABASE_QUERIES: &[&str] = &["token_holders", "all_activations"];

/// Whether `sql` (as written in a scenario) names a state query over the whole database
/// ([`WHOLE_DATABASE_QUERIES`], with or without a tenant: the query ignores it): on a database
/// others use too, it would read their rows.
pub fn reads_whole_database(sql: &str) -> bool {
    sql.match_indices("{query:").any(|(at, _)| {
        let inside = sql[at + "{query:".len()..].split('}').next().unwrap_or("");
        let name = inside.split(':').next().unwrap_or("");
        WHOLE_DATABASE_QUERIES.contains(&name)
    })
}

/// Whether `sql` (as written in a scenario) is written against no schema: it reads state only
/// through `{query:…}` placeholders, locks through `{workspace_lock:…}`, reads only PostgreSQL's
/// own `pg_*` views, or is transaction control alone. Any other SQL is written against the
/// reference service's schema.
pub fn sql_is_portable(sql: &str) -> bool {
    sql.split(';').all(|statement| {
        let words: Vec<String> = statement
            .split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect();
        let text = words.join(" ");
        let control = matches!(text.as_str(), "" | "begin" | "commit" | "rollback");
        // Exactly one placeholder, nothing around it.
        let query =
            text.starts_with("{query:") && text.ends_with('}') && text.matches('{').count() == 1;
        let lock = text.starts_with("select pg_advisory")
            && text.contains("{workspace_lock:")
            && !words.iter().any(|w| w == "from" || w == "join");
        control || query || lock || reads_only_the_catalogue(&words)
    })
}

/// Whether a statement's words read only PostgreSQL's `pg_*` relations: each `FROM` and `JOIN`
/// names one, and no `FROM` clause lists several (a comma join could name anything).
fn reads_only_the_catalogue(words: &[String]) -> bool {
    let mut sources = 0;
    for (i, w) in words.iter().enumerate() {
        if w == "from" || w == "join" {
            let Some(next) = words.get(i + 1) else {
                return false;
            };
            if !next.starts_with("pg_") || next.contains(',') || next.contains('(') {
                return false;
            }
            // A comma right after the relation or its alias: another relation follows.
            if words[i + 1..].iter().take(3).any(|w| w.contains(',')) {
                return false;
            }
            sources += 1;
        }
    }
    sources > 0
}

/// The state query `name` on the reference schema.
pub fn reference(name: &str, workspace: harbor_service::domain::WorkspaceId) -> Option<String> {
    let w = workspace.0;
    Some(match name {
        "qbo_status" => format!(
            "SELECT status FROM connections WHERE workspace_id = '{w}' AND provider = 'qbo'"
        ),
        "all_activations" => "SELECT count(*) AS count FROM workspace_activations".to_owned(),
        "token_holders" => "SELECT provider, status FROM connections WHERE access_token IS NOT NULL ORDER BY provider".to_owned(),
        "activations" => {
            format!("SELECT count(*) AS count FROM workspace_activations WHERE workspace_id = '{w}'")
        }
        "lock_qbo_row" => format!(
            "SELECT status FROM connections WHERE workspace_id = '{w}' AND provider = 'qbo' FOR UPDATE"
        ),
        _ => return None,
    })
}

/// Whether `sql` is at most one statement: nothing but blanks and comments after a `;` that is
/// not inside a string, a quoted name, a comment or a dollar-quoted body.
pub fn is_one_statement(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut ended = false;
    while i < bytes.len() {
        let rest = &sql[i..];
        let skip = if rest.starts_with("--") {
            rest.find('\n').unwrap_or(rest.len())
        } else if rest.starts_with("/*") {
            rest.find("*/").map_or(rest.len(), |end| end + 2)
        } else if bytes[i].is_ascii_whitespace() {
            1
        } else if ended {
            return false;
        } else if bytes[i] == b';' {
            ended = true;
            1
        } else if matches!(bytes[i], b'\'' | b'"') {
            // A doubled quote inside is two quoted runs back to back: the same scan.
            rest[1..]
                .find(bytes[i] as char)
                .map_or(rest.len(), |end| end + 2)
        } else if let Some(tag) = dollar_tag(rest) {
            rest[tag.len()..]
                .find(tag)
                .map_or(rest.len(), |end| end + 2 * tag.len())
        } else {
            rest.chars().next().map_or(1, char::len_utf8)
        };
        i += skip;
    }
    true
}

/// The opening tag of a dollar-quoted body at the start of `s` (`$$`, `$body$`), not a
/// parameter (`$1`).
fn dollar_tag(s: &str) -> Option<&str> {
    let after = s.strip_prefix('$')?;
    let name = after.find('$')?;
    let tag = &after[..name];
    let named = tag.is_empty()
        || (tag.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    named.then(|| &s[..name + 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_statement_is_told_from_a_semicolon_inside_one() {
        for one in [
            "SELECT status FROM connections WHERE workspace_id = '{workspace}'",
            "SELECT count(*) AS count FROM activations;",
            "SELECT ';' AS a, \"odd;name\" FROM t -- a comment; SELECT 2\n",
            "SELECT 'it''s; fine' /* ; */ ;  -- trailing\n  ",
            "SELECT $$a; b$$, $body$c; d$body$, $1",
            "SELECT 1 /* unterminated ; SELECT 2",
        ] {
            assert!(is_one_statement(one), "{one}");
        }
        for two in [
            "SELECT set_config('harbor.tenant_id', '1', false); SELECT status FROM connections",
            "SELECT 1;SELECT 2",
            "SELECT 'a;' ; DELETE FROM t",
            "SELECT $$;$$; SELECT 2",
            "SELECT 1; /* c */ SELECT 2",
        ] {
            assert!(!is_one_statement(two), "{two}");
        }
    }

    #[test]
    fn a_state_query_without_a_tenant_reads_the_whole_database() {
        assert!(reads_whole_database("{query:all_activations}"));
        assert!(reads_whole_database("BEGIN; {query:token_holders}"));
        assert!(reads_whole_database("{query:all_activations:acme}"));
        assert!(!reads_whole_database("{query:activations:acme}"));
        assert!(!reads_whole_database(
            "SELECT pg_advisory_xact_lock({workspace_lock:acme})"
        ));
    }

    #[test]
    fn portable_sql_names_no_table_of_a_schema() {
        for portable in [
            "{query:qbo_status:acme}",
            "BEGIN; {query:lock_qbo_row:acme}",
            "BEGIN; SELECT pg_advisory_xact_lock({workspace_lock:acme})",
            "COMMIT",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'harbor:A'",
        ] {
            assert!(sql_is_portable(portable), "{portable}");
        }
        for reference in [
            "SELECT status FROM connections",
            "BEGIN; UPDATE connections SET status = 'X'",
            "SELECT count(*) FROM pg_locks l JOIN workspaces w ON true",
            "SELECT pg_advisory_xact_lock(1, 2)",
            "SELECT 1 FROM pg_locks l, connections c",
            "SELECT 1 FROM pg_locks, connections",
            "SELECT 1 FROM\nconnections",
            "SELECT count(*) FROM pg_stat_activity WHERE pid IN (SELECT pid FROM\nconnections)",
            "{query:qbo_status:acme} UNION SELECT status FROM connections",
        ] {
            assert!(!sql_is_portable(reference), "{reference}");
        }
        for (name, _) in STATE_QUERIES {
            let w = harbor_service::domain::WorkspaceId(uuid::Uuid::nil());
            assert!(reference(name, w).is_some(), "the reference answers {name}");
        }
    }
}
