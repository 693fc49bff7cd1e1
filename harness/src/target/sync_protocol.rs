//! The harness's side of the sync-point protocol over HTTP (`docs/SYNC-POINTS-PROTOCOL.md`): arm,
//! observe and release a target's named points through its API, for a target the harness did not
//! start in-process — and of the clock protocol beside it ([`set_clock_offset`]). Requests go
//! through the one [`ApiClient`].

use std::time::Duration;

use harbor_syncpoint::SlotState;
use reqwest::Method;

use crate::client::{Answer, ApiClient};

/// Where the protocol lives on a target.
pub const BASE: &str = "/__harbor/sync/v1";

/// Where the clock protocol lives on a target.
pub const CLOCK: &str = "/__harbor/clock/v1";

/// Sets the clock of `replica` of `client`'s target `offset_ms` from its system clock (absolute:
/// repeating it moves nothing twice).
pub async fn set_clock_offset(
    client: &ApiClient,
    replica: usize,
    offset_ms: i64,
) -> Result<(), String> {
    let a = client
        .request(Method::PUT, CLOCK)
        .on_replica(replica)
        .json(serde_json::json!({ "offset_ms": offset_ms }))
        .send()
        .await
        .map_err(|e| e.detail())?;
    if a.status.is_success() && a.body["offset_ms"] == offset_ms {
        Ok(())
    } else {
        Err(format!(
            "the clock protocol: PUT {CLOCK} answered {} {}",
            a.status,
            a.raw.chars().take(200).collect::<String>()
        ))
    }
}

/// One replica's sync points, over HTTP.
#[derive(Clone, Debug)]
pub struct SyncPointsOverHttp {
    client: ApiClient,
    replica: usize,
}

impl SyncPointsOverHttp {
    /// The protocol on `replica` of `client`'s target.
    pub fn new(client: ApiClient, replica: usize) -> Self {
        Self { client, replica }
    }

    async fn send(&self, method: Method, path: String) -> Result<Answer, String> {
        self.client
            .request(method, path)
            .on_replica(self.replica)
            .send()
            .await
            .map_err(|e| e.detail())
    }

    fn refused(what: &str, a: &Answer) -> String {
        format!(
            "sync points over HTTP: {what} answered {} {}",
            a.status,
            a.error_code().unwrap_or(a.raw.as_str())
        )
    }

    /// The points the target offers, after checking it speaks version 1 (a `404`: it does not
    /// offer the protocol, or has it off).
    pub async fn points(&self) -> Result<Vec<String>, String> {
        let a = self.send(Method::GET, BASE.to_owned()).await?;
        if !a.status.is_success() || a.body["version"] != 1 {
            return Err(Self::refused(&format!("GET {BASE}"), &a));
        }
        let points: Vec<String> = a.body["points"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if points.is_empty() {
            // Nothing could ever be parked: every interleaving would silently run as one.
            return Err(format!(
                "sync points over HTTP: GET {BASE} lists no points (a `points` array of names is required)"
            ));
        }
        Ok(points)
    }

    /// Arms `actor`'s slot at `point`.
    pub async fn arm(&self, actor: &str, point: &str) -> Result<(), String> {
        let path = format!("{BASE}/{actor}/{point}");
        let a = self.send(Method::PUT, path.clone()).await?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(Self::refused(&format!("PUT {path}"), &a))
        }
    }

    /// The slot's state (`None`: not armed), after waiting up to `wait` for a request to park.
    pub async fn state(
        &self,
        actor: &str,
        point: &str,
        wait: Option<Duration>,
    ) -> Result<Option<SlotState>, String> {
        let mut path = format!("{BASE}/{actor}/{point}");
        if let Some(w) = wait {
            path.push_str(&format!("?wait=parked&timeout_ms={}", w.as_millis()));
        }
        let a = self.send(Method::GET, path.clone()).await?;
        if !a.status.is_success() {
            return Err(Self::refused(&format!("GET {path}"), &a));
        }
        match a.body["state"].as_str() {
            Some("none") => Ok(None),
            Some("armed") => Ok(Some(SlotState::Armed)),
            Some("parked") => Ok(Some(SlotState::Parked)),
            Some("released") => Ok(Some(SlotState::Released)),
            _ => Err(Self::refused(&format!("GET {path}"), &a)),
        }
    }

    /// Lets the request parked at the slot go on (or disarms a slot nobody reached).
    pub async fn release(&self, actor: &str, point: &str) -> Result<(), String> {
        let path = format!("{BASE}/{actor}/{point}");
        let a = self.send(Method::DELETE, path.clone()).await?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(Self::refused(&format!("DELETE {path}"), &a))
        }
    }

    /// Releases every parked request and drops every armed slot.
    pub async fn release_all(&self) -> Result<(), String> {
        let a = self.send(Method::DELETE, BASE.to_owned()).await?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(Self::refused(&format!("DELETE {BASE}"), &a))
        }
    }
}
