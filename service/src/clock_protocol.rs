//! The clock protocol over HTTP, version 1 (`docs/SYNC-POINTS-PROTOCOL.md`, "The clock"): what
//! lets a harness that started the service as a separate process move its clock, as the
//! in-process harness moves the shared [`crate::clock::Clock`]. Mounted with the sync-point
//! protocol, only when sync points are enabled — which the configuration refuses under the
//! production profile — so a production service answers `404` here like on any unknown path.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::state::AppState;
use crate::syncpoint_protocol::Refusal;

/// The farthest the clock may be moved from the system clock, either way: ten years. Far beyond
/// any expiry a scenario moves past, and far from the times the service cannot work with: an
/// offset near `i64::MAX` milliseconds made every later reading of the clock panic, and one that
/// puts "now" before 1970 reads every fresh rate-limit bucket as written in the future.
pub const MAX_OFFSET_MS: i64 = 10 * 366 * 24 * 3_600 * 1_000;

/// Where the protocol lives.
pub const BASE: &str = "/__harbor/clock/v1";

/// The protocol's routes.
pub fn routes() -> Router<AppState> {
    Router::new().route(BASE, get(read).put(set))
}

/// `PUT`'s body: the offset from the system clock, in milliseconds (negative: behind it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetOffset {
    offset_ms: i64,
}

/// `GET`: the current offset.
async fn read(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "offset_ms": state.clock.offset().num_milliseconds() }))
}

/// `PUT {"offset_ms": N}`: sets the offset (absolute, so repeating it moves nothing twice). A
/// body that is not that object, or an offset beyond [`MAX_OFFSET_MS`], is refused with 400 in
/// the protocol's error shape, the clock unmoved.
async fn set(State(state): State<AppState>, body: Bytes) -> Response {
    let offset_ms = match serde_json::from_slice::<SetOffset>(&body) {
        Ok(SetOffset { offset_ms }) if (-MAX_OFFSET_MS..=MAX_OFFSET_MS).contains(&offset_ms) => {
            offset_ms
        }
        Ok(_) => {
            return Refusal(
                StatusCode::BAD_REQUEST,
                "OFFSET_OUT_OF_RANGE",
                format!("offset_ms is at most {MAX_OFFSET_MS} either way (ten years)"),
            )
            .into_response()
        }
        Err(e) => {
            return Refusal(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!("the body is {{\"offset_ms\": N}}: {e}"),
            )
            .into_response()
        }
    };
    state.clock.set_offset(offset_ms);
    Json(json!({ "offset_ms": state.clock.offset().num_milliseconds() })).into_response()
}
