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

/// A service function and its raw ceiling measured turn about in one process: rounds of
/// [`ROUND`] calls of each, alternating which goes first, and the median of the rounds' ratios.
/// Host noise (another process, a frequency change) then falls on both sides of a round alike,
/// where criterion's one-after-the-other measurements let it fall on one.
#[derive(Clone, Copy, Debug)]
pub struct Interleaved {
    /// The median of the rounds' service times, per call.
    pub service_ns: f64,
    /// The median of the rounds' raw times, per call.
    pub raw_ns: f64,
    /// The median of the rounds' ratios (raw / service).
    pub ratio: f64,
    /// How many rounds.
    pub rounds: usize,
}

/// Calls of each side in one round.
pub const ROUND: usize = 2_000;

/// Rounds measured (after one round of each to warm up).
pub const ROUNDS: usize = 41;

/// Measures `service` and `raw` turn about ([`Interleaved`]).
pub fn interleaved(mut service: impl FnMut(), mut raw: impl FnMut()) -> Interleaved {
    fn time(f: &mut impl FnMut()) -> f64 {
        let start = std::time::Instant::now();
        for _ in 0..ROUND {
            f();
        }
        start.elapsed().as_nanos() as f64 / ROUND as f64
    }
    time(&mut service);
    time(&mut raw);
    let (mut services, mut raws, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let median = |values: &[f64]| harbor_harness::stats::median(values).unwrap_or(f64::NAN);
    for round in 0..ROUNDS {
        let (s, r) = if round % 2 == 0 {
            let s = time(&mut service);
            (s, time(&mut raw))
        } else {
            let r = time(&mut raw);
            (time(&mut service), r)
        };
        services.push(s);
        raws.push(r);
        ratios.push(r / s);
    }
    Interleaved {
        service_ns: median(&services),
        raw_ns: median(&raws),
        ratio: median(&ratios),
        rounds: ROUNDS,
    }
}

impl Interleaved {
    /// As a ratios entry (`service_ns`, `raw_ns`, `ratio`, `goal`, `rounds`, `summary`).
    pub fn json(&self, goal: f64) -> serde_json::Value {
        let summary = format!(
            "service {:>10.0} ns   raw {:>10.0} ns   ratio {:.2}×   goal ≥ {:.1}× {}",
            self.service_ns,
            self.raw_ns,
            self.ratio,
            goal,
            if self.ratio >= goal { "met" } else { "NOT MET" }
        );
        serde_json::json!({
            "service_ns": self.service_ns, "raw_ns": self.raw_ns, "ratio": self.ratio,
            "goal": goal, "rounds": self.rounds, "method": "interleaved", "summary": summary,
        })
    }
}
