//! Checking a written HTTP step: its actor, workspace, provider, replicas, copies, parking and
//! expectations, once, into a [`RequestStep`].

use super::*;

/// `expect_blocked`, checked (shared with `release`).
pub fn expect_blocked(
    raw: &RawExpectBlocked,
    cx: &Checker,
    place: &str,
    actor: &str,
) -> Result<ExpectBlocked, Problem> {
    cx.actor(&format!("{place}.expect_blocked.on"), &raw.on)?;
    if raw.on == actor {
        return Err(problem(
            format!("{place}.expect_blocked.on"),
            "an actor cannot block on itself",
        ));
    }
    let object = raw
        .object
        .as_deref()
        .map(|o| cx.tenant(&format!("{place}.expect_blocked.object"), o))
        .transpose()?;
    Ok(ExpectBlocked {
        on: raw.on.clone(),
        how: if raw.queued {
            crate::evidence::BlockedBy::QueuedAhead
        } else {
            crate::evidence::BlockedBy::Holder
        },
        lock: raw.lock.clone(),
        object,
    })
}

impl RequestStep {
    /// Checks a written HTTP step of `kind`.
    pub fn parse(
        kind: CallKind,
        r: RawRequest,
        cx: &mut Checker,
        place: &str,
    ) -> Result<Self, Problem> {
        let spec = cx.actor(&format!("{place}.actor"), &r.actor)?.clone();
        let tenant = match &r.workspace {
            Some(w) => Some(cx.tenant(&format!("{place}.workspace"), w)?),
            None => spec.user.as_ref().map(|u| u.tenant.clone()),
        };
        if tenant.is_none() && r.each_of.is_none() && kind != CallKind::Http {
            return Err(problem(
                format!("{place}.workspace"),
                "the actor has no user, so the step must name its workspace",
            ));
        }
        let replica = cx.replica(&format!("{place}.replica"), r.replica)?;
        let callback_replica = cx.replica(
            &format!("{place}.replica"),
            r.callback_replica.unwrap_or(r.replica),
        )?;
        let provider = match kind {
            CallKind::Op(WorkspaceOp::Authorize)
            | CallKind::Op(WorkspaceOp::Callback)
            | CallKind::Connect
            | CallKind::Op(WorkspaceOp::Disconnect)
            | CallKind::Op(WorkspaceOp::Revoke)
            | CallKind::Op(WorkspaceOp::Sync) => {
                Some(cx.provider(&format!("{place}.provider"), r.provider.as_deref())?)
            }
            _ => None,
        };
        if r.denied && kind != CallKind::Op(WorkspaceOp::Callback) {
            return Err(problem(
                format!("{place}.denied"),
                "denied goes with do = \"callback\"",
            ));
        }
        let call = match kind {
            CallKind::Http => {
                let method = r
                    .method
                    .as_deref()
                    .ok_or_else(|| problem(place, "needs method"))?;
                if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method) {
                    return Err(problem(
                        format!("{place}.method"),
                        "expected GET, POST, PUT, PATCH or DELETE",
                    ));
                }
                let path = r.path.clone().ok_or_else(|| problem(place, "needs path"))?;
                cx.placeholders(&format!("{place}.path"), &path)?;
                let method = Method::from_bytes(method.as_bytes())
                    .map_err(|e| problem(format!("{place}.method"), e.to_string()))?;
                Call::Http {
                    method,
                    path,
                    body: r.body.as_ref().map(toml_to_json),
                }
            }
            CallKind::Op(WorkspaceOp::Callback) => {
                let consent_of = match &r.consent_of {
                    Some(c) => cx.actor(&format!("{place}.consent_of"), c)?.name.clone(),
                    None => r.actor.clone(),
                };
                Call::Callback {
                    provider: provider.unwrap_or(Provider::Qbo),
                    consent_of,
                    denied: r.denied,
                }
            }
            _ => Call::Workspace {
                kind,
                tenant: tenant.clone(),
                provider,
                callback_replica,
            },
        };
        if r.consent_of.is_some() && kind != CallKind::Op(WorkspaceOp::Callback) {
            cx.actor(
                &format!("{place}.consent_of"),
                r.consent_of.as_deref().unwrap_or_default(),
            )?;
        }
        for (k, v) in &r.headers {
            cx.placeholders(&format!("{place}.headers.{k}"), v)?;
        }
        for e in r
            .expect
            .iter()
            .chain(r.expect_all.iter())
            .chain(r.expect_counts.iter().map(|c| &c.expect))
            .chain(&r.expect_any)
        {
            cx.expectation(&format!("{place}.expect"), e)?;
        }
        let copies = match (&r.each_of, r.concurrency) {
            (_, Some(0)) => {
                return Err(problem(
                    format!("{place}.concurrency"),
                    "expected at least 1",
                ))
            }
            (Some(set), _) => Some(Copies::EachOf(
                cx.tenant_set(&format!("{place}.each_of"), set)?,
            )),
            (None, Some(n)) => Some(Copies::Concurrency(n)),
            (None, None) => None,
        };
        let runs_in_background = r.park_at.is_some() || r.expect_blocked.is_some() || r.background;
        let mode = match copies {
            Some(copies) => {
                if r.park_at.is_some() || r.expect_blocked.is_some() {
                    return Err(problem(place, "concurrency/each_of apply to HTTP steps that are not parked or blocked (no park_at or expect_blocked)"));
                }
                if r.expect.is_some() {
                    return Err(problem(format!("{place}.expect"), "a step with concurrency/each_of is checked with expect_all, expect_counts and expect_any, not expect"));
                }
                if r.background {
                    let expects = r.expect_all.is_some()
                        || !r.expect_counts.is_empty()
                        || !r.expect_any.is_empty();
                    cx.start_background(place, &r.actor, Checked::when(expects))?;
                }
                let expect = CopiesExpect {
                    all: r.expect_all.clone(),
                    counts: r.expect_counts.clone(),
                    any: r.expect_any.clone(),
                };
                Mode::Copies {
                    copies,
                    all_replicas: r.all_replicas,
                    expect,
                    background: r.background,
                }
            }
            None => {
                if r.expect_all.is_some() || !r.expect_counts.is_empty() || !r.expect_any.is_empty()
                {
                    return Err(problem(
                        place,
                        "expect_all, expect_counts and expect_any need concurrency or each_of",
                    ));
                }
                let park = match &r.park_at {
                    Some(p) => {
                        let point = cx.sync_point(&format!("{place}.park_at"), p)?;
                        // The request that reaches the point runs on the step's replica (a
                        // `connect`'s callback on its callback replica).
                        let on = if kind == CallKind::Connect && point.starts_with("oauth.callback")
                        {
                            callback_replica
                        } else {
                            replica
                        };
                        Some((on, point))
                    }
                    None => None,
                };
                let expect_blocked = r
                    .expect_blocked
                    .as_ref()
                    .map(|b| expect_blocked(b, cx, place, &r.actor))
                    .transpose()?;
                if runs_in_background {
                    cx.start_background(place, &r.actor, Checked::when(r.expect.is_some()))?;
                }
                Mode::Once {
                    park,
                    expect_blocked,
                    background: r.background,
                    expect: r.expect.clone(),
                }
            }
        };
        Ok(RequestStep {
            actor: r.actor,
            call,
            replica,
            headers: r.headers.into_iter().collect(),
            mode,
        })
    }
}
