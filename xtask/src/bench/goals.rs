//! The bench's goals and their verdicts: each goal names a figure of `ratios` and the bound it
//! should keep (at least, or at most). The bench reports every verdict — met, missed, or not
//! measured in this run — and never fails on one: speed is reported, not asserted.

use serde_json::{json, Map, Value};

/// Which side of its bound a figure should stay on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    /// The figure should be this much or more (a throughput, a ratio to a ceiling).
    AtLeast(f64),
    /// The figure should be this much or less (a cost, a memory peak).
    AtMost(f64),
}

impl Bound {
    /// Whether `value` keeps the bound.
    pub fn kept_by(self, value: f64) -> bool {
        match self {
            Bound::AtLeast(bound) => value >= bound,
            Bound::AtMost(bound) => value <= bound,
        }
    }

    /// As `bench.md` shows it: `≥ 0.8`, `≤ 7`.
    pub fn to_text(self) -> String {
        match self {
            Bound::AtLeast(bound) => format!("≥ {bound}"),
            Bound::AtMost(bound) => format!("≤ {bound}"),
        }
    }

    fn to_json(self) -> Value {
        match self {
            Bound::AtLeast(bound) => json!({ "at_least": bound }),
            Bound::AtMost(bound) => json!({ "at_most": bound }),
        }
    }
}

/// Every goal, by the figure it bounds (the issue that set it says why each is where it is).
pub const GOALS: &[(&str, Bound)] = &[
    ("activation_distinct_50", Bound::AtLeast(0.6)),
    ("activation_hot_50", Bound::AtLeast(0.8)),
    ("seal", Bound::AtLeast(0.9)),
    ("open", Bound::AtLeast(0.9)),
    ("state", Bound::AtLeast(0.8)),
    ("jwt", Bound::AtLeast(0.9)),
    ("flows_per_s_100", Bound::AtLeast(500.0)),
    ("rss_mib_100", Bound::AtMost(64.0)),
    // The catalogue through the process target, over the catalogue in-process.
    ("catalogue_process_over_in_process", Bound::AtMost(1.5)),
    // Transactions of one flow (authorize, callback, sync, activation, disconnect), from db-cost.
    ("transactions_per_flow", Bound::AtMost(7.0)),
    // Exploration in the release build, every triple of activate, callback and disconnect
    // (2,449 schedules), four lanes.
    ("exploration_schedules_per_s", Bound::AtLeast(100.0)),
];

/// The bound of `figure`, if it has a goal.
pub fn bound_of(figure: &str) -> Option<Bound> {
    GOALS.iter().find(|(f, _)| *f == figure).map(|(_, b)| *b)
}

/// The goals as `bench.json` records them: `{figure: {"at_least": x}}` or `{"at_most": x}`.
pub fn goals_json() -> Value {
    let map: Map<String, Value> = GOALS
        .iter()
        .map(|(figure, bound)| ((*figure).to_owned(), bound.to_json()))
        .collect();
    Value::Object(map)
}

/// Every goal's verdict on `ratios`: `{"met": [...], "missed": [...], "not_measured": [...]}`,
/// each a list of figure names in the goals' order.
pub fn verdicts(ratios: &Value) -> Value {
    let (mut met, mut missed, mut not_measured) = (vec![], vec![], vec![]);
    for (figure, bound) in GOALS {
        match ratios[*figure].as_f64() {
            Some(value) if bound.kept_by(value) => met.push(*figure),
            Some(_) => missed.push(*figure),
            None => not_measured.push(*figure),
        }
    }
    json!({ "met": met, "missed": missed, "not_measured": not_measured })
}

/// The request kinds one full flow makes, as `harbor-certify db-cost` names them: by a caller
/// who has made requests to the replica before (its authorize and callback rows; the rows for a
/// caller new to the replica are beside them in the table, not in the sum).
pub const FLOW_KINDS: [&str; 5] = ["authorize", "callback", "sync", "activate", "disconnect"];

/// One flow's database cost from db-cost's rows: `(transactions, round_trips, redis_commands)`
/// summed over [`FLOW_KINDS`]; `None` if a kind is missing, the Redis sum `None` if any kind's
/// Redis commands were not counted.
pub fn per_flow(db_cost: &Value) -> Option<(f64, f64, Option<f64>)> {
    let rows = db_cost.as_array()?;
    let (mut transactions, mut round_trips, mut redis) = (0.0, 0.0, Some(0.0));
    for kind in FLOW_KINDS {
        let row = rows.iter().find(|r| r["kind"] == kind)?;
        transactions += row["transactions"].as_f64()?;
        round_trips += row["round_trips"].as_f64()?;
        redis = redis
            .zip(row["redis_commands"].as_f64())
            .map(|(a, b)| a + b);
    }
    Some((transactions, round_trips, redis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_on_the_wrong_side_of_its_bound_is_missed_either_way() {
        let ratios = json!({
            "activation_hot_50": 0.79, "jwt": 0.9, "transactions_per_flow": 9.0,
            "rss_mib_100": 64.0, "seal": 1.2
        });
        let v = verdicts(&ratios);
        let has = |list: &str, figure: &str| {
            v[list]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f.as_str() == Some(figure))
        };
        assert!(
            has("missed", "activation_hot_50"),
            "below an at-least bound"
        );
        assert!(
            has("missed", "transactions_per_flow"),
            "above an at-most bound"
        );
        assert!(has("met", "jwt"), "an at-least bound met exactly");
        assert!(has("met", "rss_mib_100"), "an at-most bound met exactly");
        assert!(has("met", "seal"));
        assert!(has("not_measured", "flows_per_s_100"));
        let counted = ["met", "missed", "not_measured"]
            .iter()
            .map(|l| v[*l].as_array().unwrap().len())
            .sum::<usize>();
        assert_eq!(counted, GOALS.len(), "every goal has one verdict");
    }

    #[test]
    fn a_flow_costs_the_sum_of_its_requests_and_nothing_without_all_of_them() {
        let row = |kind: &str, tx: f64, rt: f64, redis: f64| json!({ "kind": kind, "transactions": tx, "round_trips": rt, "redis_commands": redis });
        let rows = json!([
            row("list_connections", 1.0, 5.0, 0.0),
            row("authorize", 1.0, 9.25, 2.0),
            row("callback", 3.0, 18.05, 3.0),
            row("sync", 2.0, 13.1, 0.0),
            row("activate", 1.0, 8.2, 0.0),
            row("disconnect", 2.0, 15.1, 0.0),
        ]);
        let (tx, rt, redis) = per_flow(&rows).unwrap();
        assert_eq!(tx, 9.0);
        assert!((rt - 63.7).abs() < 1e-9, "{rt}");
        assert_eq!(redis, Some(5.0));
        let uncounted = json!([
            row("authorize", 1.0, 9.25, 2.0),
            row("callback", 3.0, 18.05, 3.0),
            row("sync", 2.0, 13.1, 0.0),
            row("activate", 1.0, 8.2, 0.0),
            json!({ "kind": "disconnect", "transactions": 2.0, "round_trips": 15.1, "redis_commands": null }),
        ]);
        let (tx, _, redis) = per_flow(&uncounted).unwrap();
        assert_eq!(
            (tx, redis),
            (9.0, None),
            "Redis not counted, the database still is"
        );
        let partial = json!([row("authorize", 1.0, 9.0, 2.0)]);
        assert_eq!(per_flow(&partial), None);
    }
}
