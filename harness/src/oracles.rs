//! Checks of the stored state that hold after any schedule, shared by scenarios, the load test and
//! the state machine: one implementation each, so they cannot drift apart.
//!
//! Past 500 lines with its unit tests: the oracles are the one place they must not drift, so they
//! are kept in one file with the checks that each can fail.

use harbor_service::domain::{ConnectionId, Provider, TenantId, WorkspaceId};

use crate::evidence::AdvisoryKey;
use crate::fake_provider::GrantStanding;
use crate::target::{StoredToken, TokenInspector};
use secrecy::ExposeSecret;
use sqlx::PgPool;

/// How many revocation intents the outbox holds for its workers to deliver: of `workspace`, or of
/// the whole database. A parked intent (a grant of a Google account whose consent another
/// connection still holds) waits for that holder's end, not for the provider, so it is not
/// counted; a scenario that parks one reads `revocation_outbox.parked_account` itself.
pub async fn outbox_intents(db: &PgPool, workspace: Option<WorkspaceId>) -> Result<i64, String> {
    sqlx::query_scalar(
        "SELECT count(*) FROM revocation_outbox WHERE parked_account IS NULL AND ($1::uuid IS NULL OR workspace_id = $1)",
    )
    .bind(workspace)
    .fetch_one(db)
    .await
    .map_err(|e| format!("reading the outbox: {e}"))
}

/// Polls until the outbox holds no intent (of `workspace`, or at all), read from the database —
/// the bounded wait every technique takes before judging `grants_accounted`. `Ok` is how long it
/// took; `Err` says how many intents were still there after `limit`.
pub async fn until_outbox_empty(
    db: &PgPool,
    workspace: Option<WorkspaceId>,
    limit: std::time::Duration,
) -> Result<std::time::Duration, String> {
    let started = std::time::Instant::now();
    loop {
        let left = outbox_intents(db, workspace).await?;
        if left == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= limit {
            return Err(format!(
                "{left} revocation intent(s) still in the outbox after {limit:?}"
            ));
        }
        tokio::time::sleep(crate::evidence::POLL_INTERVAL).await;
    }
}

/// Every stored token (access and refresh) decrypts for its own row — tenant, connection,
/// provider, field and grant — and no two connections share one; over the whole database, or
/// (`workspace`) over one workspace's connections. `Ok` describes what was checked; `Err` names the
/// first broken row.
pub async fn tokens_bound(
    db: &PgPool,
    ring: &dyn TokenInspector,
    workspace: Option<WorkspaceId>,
) -> Result<String, String> {
    type Row = (
        ConnectionId,
        TenantId,
        String,
        Option<uuid::Uuid>,
        Vec<u8>,
        Option<Vec<u8>>,
    );
    // Two statements, not one with `$1 IS NULL OR workspace_id = $1`: prepared once and then
    // run with a generic plan, that one scanned the whole table for every workspace's check —
    // after every explored schedule, on a table that grows by a row or more with each.
    macro_rules! stored {
        ($filter:literal) => {
            concat!(
                "SELECT id, tenant_id, provider, grant_id, access_token, refresh_token ",
                "FROM connections WHERE access_token IS NOT NULL",
                $filter
            )
        };
    }
    let rows: Vec<Row> = match workspace {
        Some(workspace) => {
            sqlx::query_as(stored!(" AND workspace_id = $1"))
                .bind(workspace)
                .fetch_all(db)
                .await
        }
        None => sqlx::query_as(stored!("")).fetch_all(db).await,
    }
    .map_err(|e| e.to_string())?;
    let mut seen = std::collections::HashSet::new();
    for (id, tenant, provider, grant, access, refresh) in &rows {
        let provider = Provider::parse(provider).map_err(|e| e.to_string())?;
        for (refresh, sealed) in [(false, Some(access)), (true, refresh.as_ref())] {
            let Some(sealed) = sealed else { continue };
            let at = StoredToken {
                tenant: *tenant,
                connection: *id,
                provider,
                refresh,
                grant: *grant,
            };
            let plain = ring
                .open(sealed, &at)
                .map_err(|e| format!("connection {id}: {e}"))?;
            if !seen.insert(plain.expose_secret().to_owned()) {
                return Err(format!(
                    "connection {id} shares a token with another connection"
                ));
            }
        }
    }
    Ok(format!(
        "{} stored connections: every token decrypts only for its own row and grant, none shared",
        rows.len()
    ))
}

/// The grants the provider holds live (a usable refresh token) and the CONNECTED connections match
/// one to one: each connection's refresh token is live at the provider, no grant is stored twice,
/// and no live grant is stored nowhere (a grant lost silently — exchanged, then neither stored nor
/// revoked). A grant whose refresh token outlived its provider's lifetime and that nothing
/// revoked since still needs accounting for: given back (an attempt ends it at the fake, refused
/// or not), or held by a CONNECTED connection that keeps an end (`refresh_expires_at`) no later
/// than the provider's — how the service knows not to rest on it (a minute's leeway: the
/// service dates the end when the answer reaches it). A live grant no row holds is accounted for when it is one consent with a grant a row
/// does hold (Google's: every grant of an account to the client ends with any one of them, so the
/// last holder's revocation ends it). Up to `lost_at_most` live grants stored nowhere are tolerated — only a scenario that
/// kills a replica mid-load asks for any: the token answers in flight when it died reached no one.
/// `Ok` counts what matched; `Err` names the first mismatch.
pub async fn grants_accounted(
    db: &PgPool,
    ring: &dyn TokenInspector,
    provider: &crate::fake_provider::FakeProvider,
    lost_at_most: usize,
) -> Result<String, String> {
    let rows: Vec<ConnectedRow> = sqlx::query_as(&format!(
        "SELECT {CONNECTED_COLUMNS} FROM connections WHERE status = 'CONNECTED'"
    ))
    .fetch_all(db)
    .await
    .map_err(|e| e.to_string())?;
    let mut live = provider.unended_grants();
    let mut held = std::collections::BTreeSet::new();
    let mut ended_by_themselves = 0;
    for row in &rows {
        let (id, p, family, standing) = grant_held(ring, provider, row)?;
        match (standing, row.5) {
            (GrantStanding::Live, _) => {}
            (GrantStanding::Expired { on }, Some(kept))
                if kept <= on + chrono::Duration::minutes(1) =>
            {
                ended_by_themselves += 1;
            }
            (GrantStanding::Expired { on }, Some(kept)) => {
                return Err(format!(
                    "connection {id} keeps its grant's end as {kept}, but the provider ended it \
                     on {on}: the service would rest on an ended grant"
                ))
            }
            (GrantStanding::Expired { on }, None) => {
                return Err(format!(
                    "connection {id} holds a grant the provider ended on {on}, and keeps no end \
                     for it: the service would rest on an ended grant"
                ))
            }
            (GrantStanding::Ended, _) => return Err(not_honoured(id)),
        }
        if !held.insert((p, family)) {
            return Err(format!(
                "connection {id} holds a grant another connection holds too"
            ));
        }
        live.remove(&(p, family));
    }
    // What a stored grant's consent covers: given up by its own row, left to the last holder.
    let mut shared = 0;
    for (p, family) in &held {
        for other in provider.same_consent(*family) {
            if live.remove(&(*p, other)) {
                shared += 1;
            }
        }
    }
    let mut held_note = if shared > 0 {
        format!(" ({shared} more live under the consent of a stored one, ended with it)")
    } else {
        String::new()
    };
    if ended_by_themselves > 0 {
        held_note.push_str(&format!(
            "; {ended_by_themselves} CONNECTED connection(s) past their grant's end at the provider, each keeping that end"
        ));
    }
    let stored = held.len() - ended_by_themselves;
    match live.iter().next() {
        Some((p, family)) if live.len() > lost_at_most => Err(format!("{} grant(s) at the provider that nothing ended are stored nowhere (first: {p} grant {family}): exchanged, then neither stored nor revoked{}", live.len(), if lost_at_most > 0 { format!(" (at most {lost_at_most} allowed)") } else { String::new() })),
        Some(_) => Ok(format!("{stored} live grant(s), each stored by exactly one CONNECTED connection{held_note}; {} stored nowhere, within the {lost_at_most} allowed for token answers in flight when a replica died", live.len())),
        None => Ok(format!("{stored} live grant(s), each stored by exactly one CONNECTED connection{held_note}")),
    }
}

/// A CONNECTED connection's row: id, tenant, provider, grant id, sealed refresh token, and the
/// grant's end as the row keeps it ([`CONNECTED_COLUMNS`]).
type ConnectedRow = (
    ConnectionId,
    TenantId,
    String,
    Option<uuid::Uuid>,
    Option<Vec<u8>>,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// The columns of a [`ConnectedRow`].
const CONNECTED_COLUMNS: &str =
    "id, tenant_id, provider, grant_id, refresh_token, refresh_expires_at";

/// Why a CONNECTED row fails when its refresh token was spent or revoked at the provider.
fn not_honoured(id: ConnectionId) -> String {
    format!("connection {id} holds a refresh token the provider no longer honours")
}

/// The grant a CONNECTED row holds and where it stands at the provider: its refresh token
/// opened and found among the provider's, or why not.
fn grant_held(
    ring: &dyn TokenInspector,
    provider: &crate::fake_provider::FakeProvider,
    (id, tenant, p, grant, refresh, _): &ConnectedRow,
) -> Result<(ConnectionId, Provider, u64, GrantStanding), String> {
    let p = Provider::parse(p).map_err(|e| e.to_string())?;
    let sealed = refresh
        .as_ref()
        .ok_or_else(|| format!("CONNECTED connection {id} holds no refresh token"))?;
    let at = StoredToken {
        tenant: *tenant,
        connection: *id,
        provider: p,
        refresh: true,
        grant: *grant,
    };
    let token = ring
        .open(sealed, &at)
        .map_err(|e| format!("connection {id}: {e}"))?;
    let (family, standing) = provider
        .grant_of(token.expose_secret())
        .ok_or_else(|| not_honoured(*id))?;
    Ok((*id, p, family, standing))
}

/// Every CONNECTED connection of `workspace` holds a grant the provider still honours (a store
/// that committed must not be followed by giving its grant back).
pub async fn stored_grants_live(
    db: &PgPool,
    ring: &dyn TokenInspector,
    provider: &crate::fake_provider::FakeProvider,
    workspace: WorkspaceId,
) -> Result<String, String> {
    let rows: Vec<ConnectedRow> = sqlx::query_as(&format!(
        "SELECT {CONNECTED_COLUMNS} FROM connections WHERE status = 'CONNECTED' AND workspace_id = $1"
    ))
    .bind(workspace)
    .fetch_all(db)
    .await
    .map_err(|e| e.to_string())?;
    for row in &rows {
        let (id, _, _, standing) = grant_held(ring, provider, row)?;
        if standing != GrantStanding::Live {
            return Err(not_honoured(id));
        }
    }
    Ok(format!(
        "{} CONNECTED connection(s), each holding a live grant",
        rows.len()
    ))
}

/// No backend holds or awaits `workspace`'s advisory lock (its key as `locks::lock_key_for_workspace`
/// derives it): the lock manager says it is free when the lock is tried. A lock found held is read
/// from `pg_locks` to name who holds it; one let go in between was still held at the try, and
/// fails the check all the same. (A try the server refuses — a standby takes no advisory lock —
/// leaves the judgement to `pg_locks`.) `Ok` describes what was checked; `Err` lists the locks.
pub async fn no_workspace_lock_held(
    db: &PgPool,
    workspace: WorkspaceId,
    key: AdvisoryKey,
) -> Result<String, String> {
    let tried = crate::evidence::advisory_lock_free(db, key).await;
    if let Ok(true) = tried {
        return Ok(format!(
            "no backend holds or awaits workspace {workspace}'s lock"
        ));
    }
    let locks = crate::evidence::lock_snapshot(db)
        .await
        .map_err(|e| e.to_string())?;
    let held: Vec<_> = locks.iter().filter(|l| l.is_advisory(key)).collect();
    match (held.is_empty(), tried) {
        (false, _) => Err(format!(
            "workspace {workspace}'s lock is still held or awaited: {held:?}"
        )),
        (true, Ok(_)) => Err(format!(
            "workspace {workspace}'s lock was held when tried, and let go before pg_locks could name its holder"
        )),
        (true, Err(_)) => Ok(format!(
            "no backend holds or awaits workspace {workspace}'s lock"
        )),
    }
}

/// [`no_workspace_lock_held`], allowing the lock up to `bound` to go: a service whose transaction
/// ends as its connection closes after the answer (a request teardown) frees it a moment later.
/// A lock still held once `bound` is over is left held (`Err` lists it).
pub async fn until_no_workspace_lock_held(
    db: &PgPool,
    workspace: WorkspaceId,
    key: AdvisoryKey,
    bound: std::time::Duration,
) -> Result<String, String> {
    let waiting = std::time::Instant::now();
    loop {
        match no_workspace_lock_held(db, workspace, key).await {
            Err(_) if waiting.elapsed() < bound => {
                tokio::time::sleep(crate::evidence::POLL_INTERVAL).await
            }
            done => return done,
        }
    }
}

/// At most one activation row per workspace (the `UNIQUE(workspace_id)` idempotency, checked from
/// the outside). `Err` counts the workspaces activated more than once.
pub async fn one_activation_per_workspace(db: &PgPool) -> Result<String, String> {
    let duplicated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT workspace_id FROM workspace_activations GROUP BY workspace_id HAVING count(*) > 1) d",
    )
    .fetch_one(db)
    .await
    .map_err(|e| e.to_string())?;
    if duplicated > 0 {
        Err(format!(
            "{duplicated} workspace(s) activated more than once"
        ))
    } else {
        Ok("no workspace is activated more than once".into())
    }
}

/// Every CONNECTED connection holds tokens (a callback never commits CONNECTED without them).
pub async fn connected_have_tokens(db: &PgPool) -> Result<String, String> {
    let bare: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM connections WHERE status = 'CONNECTED' AND access_token IS NULL",
    )
    .fetch_one(db)
    .await
    .map_err(|e| e.to_string())?;
    if bare > 0 {
        Err(format!("{bare} CONNECTED connection(s) without tokens"))
    } else {
        Ok("every CONNECTED connection holds tokens".into())
    }
}

/// No document outlives the grant it was fetched under: every stored document's connection is
/// `CONNECTED` and holds the grant the document names (a disconnect, a revoke, a refused refresh
/// or a new grant takes the provider's documents in its own transaction); over the whole
/// database, or (`workspace`) over one workspace. `Err` counts the documents held otherwise.
pub async fn documents_under_live_grants(
    db: &PgPool,
    workspace: Option<WorkspaceId>,
) -> Result<String, String> {
    let orphaned: i64 = sqlx::query_scalar(&format!(
        "{ORPHANED_DOCUMENTS} AND ($1::uuid IS NULL OR d.workspace_id = $1)"
    ))
    .bind(workspace)
    .fetch_one(db)
    .await
    .map_err(|e| format!("reading the documents: {e}"))?;
    if orphaned > 0 {
        Err(format!(
            "{orphaned} document(s) kept after the grant they were fetched under ended, \
             or held as another grant's"
        ))
    } else {
        Ok("every document belongs to its CONNECTED connection's grant".into())
    }
}

/// The query of [`documents_under_live_grants`] over the whole database: how many documents are
/// held under a connection that is not `CONNECTED`, or as a grant it does not hold (on the
/// reference's schema; a document that names no grant, stored before migration 0025 or by a
/// release before it, is held to the status alone). Saved
/// reproductions assert it as it is.
pub const ORPHANED_DOCUMENTS: &str = "SELECT count(*) FROM documents d LEFT JOIN connections c \
     ON c.workspace_id = d.workspace_id AND c.provider = d.provider \
     WHERE (c.status IS DISTINCT FROM 'CONNECTED' \
        OR (d.grant_id IS NOT NULL AND d.grant_id IS DISTINCT FROM c.grant_id))";

/// Where a leak search looks, besides the responses: everything an attacker with a backup, the
/// cache or the log stream would see.
pub struct LeakSources<'a> {
    /// A full `pg_dump` of the database.
    pub pg_dump: &'a str,
    /// Every Redis key and value under the prefix, as JSON.
    pub redis: &'a str,
    /// The service's logs.
    pub logs: &'a str,
    /// Every response body.
    pub responses: &'a [String],
}

/// Where `text` holds a value the fake provider issued: `hbcanary-<provider>-<kind>-` followed by
/// at least eight hex digits of its random part (a kind named alone, `hbcanary-qbo-at-…`, is not
/// a value).
pub fn find_issued_value(text: &str) -> Option<usize> {
    let prefix = format!("{}-", crate::fake_provider::CANARY_PREFIX);
    let mut from = 0;
    while let Some(found) = text[from..].find(&prefix) {
        let at = from + found;
        let rest = &text[at + prefix.len()..];
        let mut parts = rest.splitn(3, '-');
        let (provider, kind, random) = (parts.next(), parts.next(), parts.next());
        let issued = provider.is_some_and(|p| Provider::parse(p).is_ok())
            && kind.is_some_and(|k| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            && random.is_some_and(|r| r.chars().take_while(char::is_ascii_hexdigit).count() >= 8);
        if issued {
            return Some(at);
        }
        from = at + prefix.len();
    }
    None
}

/// An issued value as a message may name it: its provider and kind, never its random part.
pub fn issued_value_kind(canary: &str) -> String {
    let mut parts = canary.splitn(4, '-');
    let (prefix, provider, kind) = (parts.next(), parts.next(), parts.next());
    match (prefix, provider, kind) {
        (Some(a), Some(p), Some(k)) => format!("{a}-{p}-{k}-…"),
        _ => "an issued value".to_owned(),
    }
}

/// No file under `dir` (a report folder: reports, traces, diagrams) holds a code or token the fake
/// provider issued ([`find_issued_value`]): this needs no list of what was issued, and a report is
/// never allowed to hold one, whatever run wrote it. `Err` names the file and the value's kind.
pub fn report_folder_free_of_issued_values(dir: &std::path::Path) -> Result<(), String> {
    let needles = forbidden_in_reports();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            // A file that cannot be read is not known to be clean.
            let bytes = std::fs::read(&path)
                .map_err(|e| format!("{}: cannot be read, so not searched: {e}", path.display()))?;
            let text = String::from_utf8_lossy(&bytes);
            if let Some(at) = find_issued_value(&text) {
                let value: String = text[at..].chars().take(64).collect();
                return Err(format!(
                    "{} holds a code or token the provider issued ({}): a report must never hold one",
                    path.display(),
                    issued_value_kind(&value)
                ));
            }
            let lower = text.to_ascii_lowercase();
            for (what, form, needle) in &needles {
                let haystack = if *form == "hex" { &lower } else { &*text };
                if haystack.contains(needle.as_str()) {
                    return Err(format!(
                        "{} holds {what} ({form}): a report must never hold one",
                        path.display()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What a report may not hold beyond a plain issued value, each as (what it is, its form, the
/// text to look for): the start of every issued value (`hbcanary-<provider>-`) hex- or
/// base64-encoded, as a dumped row or a quoted body may hold one; and the fake's client secrets,
/// as they are and form-encoded (how HTTP Basic carries them), in any of those forms.
fn forbidden_in_reports() -> Vec<(String, &'static str, String)> {
    let mut needles = Vec::new();
    for provider in Provider::ALL {
        let secret = crate::fake_provider::FakeProvider::client_secret(provider);
        let form_encoded: String =
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let what = format!("the fake provider's client secret for {provider}");
        for value in [secret, form_encoded] {
            needles.push((what.clone(), "text", value.clone()));
            for (form, needle) in encoded_forms(value.as_bytes()) {
                needles.push((what.clone(), form, needle));
            }
        }
        let start = format!("{}-{provider}-", crate::fake_provider::CANARY_PREFIX);
        for (form, needle) in encoded_forms(start.as_bytes()) {
            needles.push((
                format!("a code or token the provider issued (of {start}…)"),
                form,
                needle,
            ));
        }
    }
    needles
}

/// `value` as the encodings a stored or dumped copy can have it in: lowercase hex (how `pg_dump`
/// writes bytea), and base64 and base64url at each of the three alignments it can have inside a
/// longer encoded blob (only the characters that encode `value` alone, at least nine).
pub fn encoded_forms(value: &[u8]) -> Vec<(&'static str, String)> {
    use base64::Engine;
    let mut forms = vec![("hex", hex::encode(value))];
    for engine in [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for shift in 0..3usize {
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(value);
            let encoded = engine.encode(&bytes);
            // Drop the characters that mix in the filler bytes, and the last, partial group.
            let skip = if shift == 0 { 0 } else { 4 };
            let keep = encoded.len().saturating_sub(4);
            if keep > skip + 8 {
                forms.push(("base64", encoded[skip..keep].to_owned()));
            }
        }
    }
    forms
}

/// No issued code or token (`canaries`) appears in any source — as text, as hex (how `pg_dump`
/// writes bytea), or as base64 / base64url at each of the three alignments it can have inside a
/// longer encoded blob. `Err` names every source with each kind of value found there and the
/// form it was in, in the order the values were issued: a service whose logs hold codes and whose
/// database holds tokens in the clear is told both, not the first one found.
pub fn no_canary_leaks(canaries: &[String], sources: &LeakSources<'_>) -> Result<(), String> {
    if canaries.is_empty() {
        return Err("the fake provider issued nothing: the leak search would prove nothing".into());
    }
    let places: [(&str, &str); 3] = [
        ("pg_dump", sources.pg_dump),
        ("Redis", sources.redis),
        ("logs", sources.logs),
    ];
    let mut found: Vec<(&str, String, &str)> = Vec::new();
    for canary in canaries {
        let mut forms = vec![("text", canary.clone())];
        forms.extend(encoded_forms(canary.as_bytes()));
        let shown = issued_value_kind(canary);
        for (form, needle) in &forms {
            let responses = sources
                .responses
                .iter()
                .any(|r| r.contains(needle.as_str()));
            let leaked = places
                .iter()
                .filter(|(_, text)| text.contains(needle.as_str()))
                .map(|(name, _)| *name)
                .chain(responses.then_some("a response"));
            for place in leaked {
                // Each place once per kind of value (every code is "…-code-…"), in its first form.
                if !found.iter().any(|(p, s, _)| *p == place && *s == shown) {
                    found.push((place, shown.clone(), form));
                }
            }
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    Err(found
        .iter()
        .map(|(place, shown, form)| {
            format!("{place} contains an issued token or code ({form}: {shown})")
        })
        .collect::<Vec<_>>()
        .join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_folder_holding_an_issued_value_is_refused() {
        let dir = std::env::temp_dir().join(format!("harbor-leak-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("traces")).unwrap();
        std::fs::write(
            dir.join("report.md"),
            "expect body_excludes = [\"hbcanary\"]; pg_dump contains an issued token (hex: hbcanary-qbo-at-…)",
        )
        .unwrap();
        assert!(report_folder_free_of_issued_values(&dir).is_ok());
        std::fs::write(
            dir.join("traces/X.json"),
            "GET /v1/oauth/qbo/callback?code=hbcanary-qbo-code-00ff00ff11&state=s",
        )
        .unwrap();
        let err = report_folder_free_of_issued_values(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.contains("X.json") && err.contains("hbcanary-qbo-code-…"),
            "{err}"
        );
        assert!(
            !err.contains("00ff"),
            "the message names the kind, not the value: {err}"
        );
    }

    #[test]
    fn a_report_folder_holding_an_issued_value_encoded_is_refused() {
        use base64::Engine;
        let token = "hbcanary-gmail-at-0123456789abcdef";
        let secret = crate::fake_provider::FakeProvider::client_secret(Provider::Box);
        let encodings = [
            secret.clone(),
            base64::engine::general_purpose::STANDARD.encode(format!("harbor-box:{secret}")),
            format!("\\x{}", hex::encode(token)),
            hex::encode(token).to_uppercase(),
            base64::engine::general_purpose::STANDARD.encode(token),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("xy{token}")),
        ];
        for encoded in encodings {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("report.md"), format!("row: {encoded}")).unwrap();
            let err = report_folder_free_of_issued_values(dir.path()).unwrap_err();
            assert!(err.contains("report.md"), "{encoded}: {err}");
        }
    }

    #[test]
    fn a_canary_is_found_as_text_hex_and_inside_base64() {
        use base64::Engine;
        let canary = "hbcanary-access-0123456789abcdef".to_owned();
        let clean = LeakSources {
            pg_dump: "nothing",
            redis: "{}",
            logs: "",
            responses: &[],
        };
        assert!(no_canary_leaks(std::slice::from_ref(&canary), &clean).is_ok());
        assert!(
            no_canary_leaks(&[], &clean).is_err(),
            "an empty search proves nothing"
        );
        let hex = hex::encode(canary.as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("xy{canary}z"));
        for (dump, redis, logs) in [
            (canary.as_str(), "", ""),
            ("", hex.as_str(), ""),
            ("", "", b64.as_str()),
        ] {
            let leaky = LeakSources {
                pg_dump: dump,
                redis,
                logs,
                responses: &[],
            };
            assert!(
                no_canary_leaks(std::slice::from_ref(&canary), &leaky).is_err(),
                "{dump}|{redis}|{logs}"
            );
        }
        let responses = [format!("{{\"t\":\"{canary}\"}}")];
        let in_response = LeakSources {
            pg_dump: "",
            redis: "",
            logs: "",
            responses: &responses,
        };
        assert!(no_canary_leaks(std::slice::from_ref(&canary), &in_response)
            .unwrap_err()
            .contains("response"));
        // Every place is named, not only the first.
        let code = "hbcanary-gmail-code-0123456789abcdef".to_owned();
        let everywhere = LeakSources {
            pg_dump: &hex,
            redis: "",
            logs: &code,
            responses: &responses,
        };
        let said = no_canary_leaks(&[code.clone(), canary], &everywhere).unwrap_err();
        assert!(
            said.starts_with("logs contains an issued token or code (text: "),
            "{said}"
        );
        for place in ["pg_dump contains", "a response contains"] {
            assert!(said.contains(place), "{said}");
        }
        assert_eq!(said.matches("; ").count(), 2, "each place once: {said}");
    }
}
