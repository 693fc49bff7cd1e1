//! The clock protocol over HTTP, version 1 (`docs/SYNC-POINTS-PROTOCOL.md`, "The clock"): what
//! lets a harness that started the service as a separate process move its clock, as the
//! in-process harness moves the shared [`crate::clock::Clock`]. Mounted with the sync-point
//! protocol, only when sync points are enabled — which the configuration refuses under the
//! production profile — so a production service answers `404` here like on any unknown path.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::state::AppState;

/// Where the protocol lives.
pub const BASE: &str = "/__harbor/clock/v1";

/// The protocol's routes.
pub fn routes() -> Router<AppState> {
    Router::new().route(BASE, get(read).put(set))
}

/// `PUT`'s body: the offset from the system clock, in milliseconds (negative: behind it).
#[derive(Deserialize)]
struct SetOffset {
    offset_ms: i64,
}

/// `GET`: the current offset.
async fn read(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "offset_ms": state.clock.offset().num_milliseconds() }))
}

/// `PUT {"offset_ms": N}`: sets the offset (absolute, so repeating it moves nothing twice).
async fn set(
    State(state): State<AppState>,
    Json(body): Json<SetOffset>,
) -> (StatusCode, Json<Value>) {
    state.clock.set_offset(body.offset_ms);
    (
        StatusCode::OK,
        Json(json!({ "offset_ms": state.clock.offset().num_milliseconds() })),
    )
}
