//! Reads criterion's estimates and reports each service function as a ratio to its raw ceiling
//! measured in the same run (`benches/benches/ceilings.rs`; see `benches/README.md`).

use std::path::Path;

/// One comparison: the service's function, the raw ceiling, and the goal for their ratio.
pub struct Pair {
    /// The name in the ratios table (`seal`, `open`, `state`, `jwt`).
    pub name: &'static str,
    /// The criterion group.
    pub group: &'static str,
    /// The service's benchmark id within the group.
    pub service: &'static str,
    /// The raw ceiling's benchmark id within the group.
    pub raw: &'static str,
    /// The ratio the service should reach (raw time / service time).
    pub goal: f64,
}

/// The mean time of a benchmark in nanoseconds, from criterion's `estimates.json`.
pub fn mean_ns(criterion_dir: &Path, group: &str, id: &str) -> Option<f64> {
    let path = criterion_dir
        .join(group)
        .join(id)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["mean"]["point_estimate"].as_f64()
}

/// The ratios table as text, and as JSON (`{"name": {"service_ns", "raw_ns", "ratio", "goal"}}`).
pub fn ratios(criterion_dir: &Path, pairs: &[Pair]) -> (String, serde_json::Value) {
    let mut text = String::from(
        "ratio = raw ceiling time / service time (1.0 = as fast as the raw operation)\n",
    );
    let mut json = serde_json::Map::new();
    for p in pairs {
        match (
            mean_ns(criterion_dir, p.group, p.service),
            mean_ns(criterion_dir, p.group, p.raw),
        ) {
            (Some(service), Some(raw)) => {
                let ratio = raw / service;
                text.push_str(&format!(
                    "  {:<24} service {:>10.0} ns   raw {:>10.0} ns   ratio {:.2}×   goal ≥ {:.1}× {}\n",
                    p.name,
                    service,
                    raw,
                    ratio,
                    p.goal,
                    if ratio >= p.goal { "met" } else { "NOT MET" }
                ));
                json.insert(p.name.to_owned(), serde_json::json!({ "service_ns": service, "raw_ns": raw, "ratio": ratio, "goal": p.goal }));
            }
            _ => text.push_str(&format!("  {:<24} (not measured in this run)\n", p.name)),
        }
    }
    (text, serde_json::Value::Object(json))
}
