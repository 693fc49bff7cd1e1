//! The sync-point protocol over HTTP, version 1 (`docs/SYNC-POINTS-PROTOCOL.md`): what lets a
//! harness that did not start the service in-process arm, observe and release the same named
//! points the in-process harness drives through the shared controller. Mounted only when sync
//! points are enabled — which the configuration refuses under the production profile — so a
//! production service answers `404` here like on any unknown path.
//!
//! A slot is `(actor, point)`: the actor is the tag a request carries in `x-harbor-actor`, the
//! point one of [`SYNC_POINTS`]. Answers are JSON: `{"state": …}`, or a refusal in the service's
//! error shape `{"error": {"code": …, "message": …}}` (with the `x-request-id` header every answer
//! carries).

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use harbor_syncpoint::{SlotKey, SlotState, SyncError, SyncPoints};
use serde::Deserialize;
use serde_json::json;

use crate::domain::Actor;
use crate::state::AppState;
use crate::syncpoints::SYNC_POINTS;

/// Where the protocol lives.
pub const BASE: &str = "/__harbor/sync/v1";

/// The longest a `wait=parked` observation may be asked to wait.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The protocol's routes (merged into the service's router when sync points are enabled).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(BASE, get(describe).delete(release_all))
        .route(
            &format!("{BASE}/{{actor}}/{{point}}"),
            put(arm).get(observe).delete(release),
        )
}

fn controller(state: &AppState) -> Option<&SyncPoints> {
    state.sync_points.as_ref().map(|h| h.controller())
}

/// A refused request: its status, stable code and message, in the service's error shape.
pub(crate) struct Refusal(pub StatusCode, pub &'static str, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let Refusal(status, code, message) = self;
        (
            status,
            Json(json!({ "error": { "code": code, "message": message } })),
        )
            .into_response()
    }
}

fn state_name(state: Option<SlotState>) -> &'static str {
    match state {
        None => "none",
        Some(SlotState::Armed) => "armed",
        Some(SlotState::Parked) => "parked",
        Some(SlotState::Released) => "released",
    }
}

/// The slot named by the path, or why it cannot be one.
fn slot(actor: &str, point: &str) -> Result<SlotKey, Refusal> {
    if !SYNC_POINTS.contains(&point) {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "UNKNOWN_POINT",
            format!("{point:?} is not a sync point of this service (GET {BASE} lists them)"),
        ));
    }
    Actor::parse(actor)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, "BAD_ACTOR", e.to_string()))?;
    Ok(SlotKey::new(actor, point))
}

/// The controller and the slot a slot route names: `404` when sync points are off, a refusal when
/// the path names no slot.
fn slot_of<'s>(
    state: &'s AppState,
    actor: &str,
    point: &str,
) -> Result<(&'s SyncPoints, SlotKey), Box<Response>> {
    let sync = controller(state).ok_or_else(|| Box::new(StatusCode::NOT_FOUND.into_response()))?;
    let key = slot(actor, point).map_err(|r| Box::new(r.into_response()))?;
    Ok((sync, key))
}

/// `GET /__harbor/sync/v1`: the protocol version and the points this service has.
async fn describe(State(state): State<AppState>) -> Response {
    match controller(&state) {
        Some(_) => Json(json!({
            "protocol": "harbor-sync-points",
            "version": 1,
            "points": SYNC_POINTS,
        }))
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `PUT …/{actor}/{point}`: arm the slot; the actor's next request to reach the point parks.
async fn arm(
    State(state): State<AppState>,
    Path((actor, point)): Path<(String, String)>,
) -> Response {
    let (sync, key) = match slot_of(&state, &actor, &point) {
        Ok(found) => found,
        Err(r) => return *r,
    };
    match sync.arm(key) {
        Ok(()) => (StatusCode::CREATED, Json(json!({ "state": "armed" }))).into_response(),
        Err(e @ SyncError::AlreadyArmed(_)) => {
            Refusal(StatusCode::CONFLICT, "ALREADY_ARMED", e.to_string()).into_response()
        }
        Err(e) => Refusal(StatusCode::CONFLICT, "REFUSED", e.to_string()).into_response(),
    }
}

/// How long to wait for a parked request before answering.
#[derive(Debug, Deserialize)]
struct Wait {
    /// `parked`: answer once a request is parked at the slot (or at the timeout).
    wait: Option<String>,
    /// The most to wait, in milliseconds (default 0, at most 60 000).
    timeout_ms: Option<u64>,
}

/// `GET …/{actor}/{point}[?wait=parked&timeout_ms=N]`: the slot's state, after waiting for a
/// request to park there when asked to.
async fn observe(
    State(state): State<AppState>,
    Path((actor, point)): Path<(String, String)>,
    Query(wait): Query<Wait>,
) -> Response {
    let (sync, key) = match slot_of(&state, &actor, &point) {
        Ok(found) => found,
        Err(r) => return *r,
    };
    match wait.wait.as_deref() {
        None => {}
        Some("parked") => {
            let limit = Duration::from_millis(wait.timeout_ms.unwrap_or(0)).min(MAX_WAIT);
            let _ = tokio::time::timeout(limit, sync.until(key.clone(), SlotState::Parked)).await;
        }
        Some(other) => {
            return Refusal(
                StatusCode::BAD_REQUEST,
                "BAD_WAIT",
                format!("wait={other:?}: the only wait is `parked`"),
            )
            .into_response()
        }
    }
    Json(json!({ "state": state_name(sync.state(&key)) })).into_response()
}

/// `DELETE …/{actor}/{point}`: let the parked request go on, or disarm a slot nobody reached.
async fn release(
    State(state): State<AppState>,
    Path((actor, point)): Path<(String, String)>,
) -> Response {
    let (sync, key) = match slot_of(&state, &actor, &point) {
        Ok(found) => found,
        Err(r) => return *r,
    };
    // One step: a request arriving between a read of the slot and a disarm would stay parked.
    match sync.clear(&key) {
        Some(SlotState::Parked) | Some(SlotState::Released) => {
            Json(json!({ "state": "released" })).into_response()
        }
        Some(SlotState::Armed) => Json(json!({ "state": "disarmed" })).into_response(),
        None => Refusal(
            StatusCode::NOT_FOUND,
            "NOT_ARMED",
            format!("nothing is armed or parked at {key}"),
        )
        .into_response(),
    }
}

/// `DELETE /__harbor/sync/v1`: release every parked request and drop every armed slot.
async fn release_all(State(state): State<AppState>) -> Response {
    match controller(&state) {
        Some(sync) => {
            sync.release_all();
            StatusCode::NO_CONTENT.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
