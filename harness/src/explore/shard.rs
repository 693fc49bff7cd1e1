//! Which sets a `--shard K/N` job explores, and in which order. Dealt round robin, the shards of
//! every triple differ by a quarter in schedules, and the largest set alone (947 schedules) is
//! half a job: a CI matrix waits for its slowest job. Given the durations an earlier run measured
//! (`--weights`, its `explore.json`), the sets are ordered longest first and each goes to the
//! shard with the least time so far (longest processing time first), so the jobs end together.
//! The order carries into a service's two queues (the sets that may share it, then those that
//! must run alone): each starts with its longest. Every job computes the same split from the
//! same file; a lock-probe run's report names its sets with the probe added, so it weighs
//! nothing here (every set then weighs the median).
//!
//! A CI matrix starts from a fresh clone, with no earlier report: `--shard` without `--weights`
//! uses the weights bundled with the harness (`weights.json` beside this file: every triple of
//! the default operations, measured by a full run) when they know every set of the split, and
//! deals round robin otherwise. Every exploration (not a kill matrix) writes its own
//! `weights.json` beside its `explore.json`; a full `--depth 3` run's is what the bundled file
//! is refreshed from when the operations change (a unit test says when it no longer covers
//! them).

use std::collections::BTreeMap;
use std::path::Path;

use super::ops::Operation;

/// Which part of a split a `--shard K/N` job explored, written in its report so that `merge` can
/// tell a complete split from one with a job missing (whose sets no other report lists).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardOf {
    /// K: this job's part, from 1.
    pub index: usize,
    /// N: the parts of the split.
    pub of: usize,
    /// The sets of the whole split, every part's together.
    pub sets_in_split: usize,
}

/// What an earlier run measured of each set: its wall time in milliseconds.
#[derive(Clone, Debug)]
pub struct Weights {
    by_set: BTreeMap<Vec<Operation>, f64>,
}

impl Weights {
    /// The durations of the sets in an `explore.json` (a shard's, or `merge`'s of all shards).
    /// A set listed twice (two shards' files concatenated by hand) keeps its longest time.
    pub fn from_report(report: &serde_json::Value) -> Result<Self, String> {
        let sets = report["sets"]
            .as_array()
            .ok_or("not an explore.json: it has no `sets`")?;
        let mut by_set = BTreeMap::new();
        for (i, set) in sets.iter().enumerate() {
            let ops: Vec<Operation> = serde_json::from_value(set["operations"].clone())
                .map_err(|e| format!("set {}: its `operations`: {e}", i + 1))?;
            let millis = set["duration_ms"]
                .as_f64()
                .filter(|m| m.is_finite() && *m >= 0.0)
                .ok_or(format!("set {}: no `duration_ms`", i + 1))?;
            let slot = by_set.entry(key(&ops)).or_insert(0.0_f64);
            *slot = slot.max(millis);
        }
        Ok(Self { by_set })
    }

    /// The weights bundled with the harness ([`BUNDLED`]).
    pub fn bundled() -> Result<Self, String> {
        let report = serde_json::from_str(BUNDLED)
            .map_err(|e| format!("the bundled weights are not JSON: {e}"))?;
        Self::from_report(&report).map_err(|e| format!("the bundled weights: {e}"))
    }

    /// Whether every one of `sets` was measured.
    pub fn covers(&self, sets: &[Vec<Operation>]) -> bool {
        sets.iter().all(|s| self.knows(s))
    }

    /// A weights file of a run's sets: each set's operations and time, one set a line (the
    /// bundled file's form; any `explore.json` reads the same).
    pub fn file_of<'a>(
        sets: impl IntoIterator<Item = (&'a [Operation], f64)>,
        measured: &str,
    ) -> String {
        let lines: Vec<String> = sets
            .into_iter()
            .map(|(ops, ms)| {
                serde_json::json!({ "operations": ops, "duration_ms": (ms * 10.0).round() / 10.0 })
                    .to_string()
            })
            .collect();
        format!(
            "{{\"measured\":{},\"sets\":[\n{}]}}\n",
            serde_json::Value::from(measured),
            lines.join(",\n")
        )
    }

    /// [`Self::from_report`] of the file at `path`.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--weights {}: {e}", path.display()))?;
        let report = serde_json::from_str(&text)
            .map_err(|e| format!("--weights {}: not JSON: {e}", path.display()))?;
        Self::from_report(&report).map_err(|e| format!("--weights {}: {e}", path.display()))
    }

    /// Whether the file measured `ops`.
    pub fn knows(&self, ops: &[Operation]) -> bool {
        self.by_set.contains_key(&key(ops))
    }

    /// Whether the file measured no set.
    pub fn is_empty(&self) -> bool {
        self.by_set.is_empty()
    }

    /// The measured time of `ops`, or, for a set the earlier run did not have, the median of
    /// those it had (a new operation's sets are then spread like any others).
    fn of(&self, ops: &[Operation]) -> f64 {
        self.by_set
            .get(&key(ops))
            .copied()
            .unwrap_or_else(|| self.median())
    }

    fn median(&self) -> f64 {
        let all: Vec<f64> = self.by_set.values().copied().collect();
        crate::stats::median(&all).unwrap_or(1.0)
    }
}

/// The bundled weights: every triple of the default operations, as a full run measured them.
pub const BUNDLED: &str = include_str!("weights.json");

/// A set's identity whatever order its operations were listed in.
fn key(ops: &[Operation]) -> Vec<Operation> {
    let mut sorted = ops.to_vec();
    sorted.sort();
    sorted
}

/// The sets of shard `k` of `n` (1-based), in the order to explore them: round robin without
/// weights; with them, the longest-first split, each shard's sets longest first.
pub fn select(
    sets: Vec<Vec<Operation>>,
    shard: Option<(usize, usize)>,
    weights: Option<&Weights>,
) -> Vec<Vec<Operation>> {
    let Some(weights) = weights else {
        let Some((k, n)) = shard else { return sets };
        return sets
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % n == k - 1)
            .map(|(_, s)| s)
            .collect();
    };
    let mut order: Vec<(f64, Vec<Operation>)> =
        sets.into_iter().map(|s| (weights.of(&s), s)).collect();
    // Longest first; equal times keep the sets' own order (the sort is stable), so every job
    // computes the same split.
    order.sort_by(|a, b| b.0.total_cmp(&a.0));
    let Some((k, n)) = shard else {
        return order.into_iter().map(|(_, s)| s).collect();
    };
    let mut loads = vec![0.0_f64; n];
    let mut mine = Vec::new();
    for (weight, set) in order {
        // The least loaded shard; the first of equals.
        let least = (0..n)
            .min_by(|a, b| loads[*a].total_cmp(&loads[*b]))
            .unwrap_or(0);
        loads[least] += weight;
        if least == k - 1 {
            mine.push(set);
        }
    }
    mine
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;

    fn report(sets: &[(&[Operation], f64)]) -> serde_json::Value {
        serde_json::json!({
            "sets": sets.iter().map(|(ops, ms)| serde_json::json!({
                "operations": ops, "duration_ms": ms,
            })).collect::<Vec<_>>()
        })
    }

    #[test]
    fn without_weights_the_sets_are_dealt_round_robin() {
        let sets = vec![vec![Activate], vec![Callback], vec![Disconnect], vec![Sync]];
        assert_eq!(
            select(sets.clone(), Some((2, 2)), None),
            vec![vec![Callback], vec![Sync]]
        );
        assert_eq!(select(sets.clone(), None, None), sets);
    }

    #[test]
    fn with_weights_the_shards_are_balanced_and_each_starts_with_its_longest_set() {
        let weights = Weights::from_report(&report(&[
            (&[Activate, Callback], 100.0),
            (&[Sync, Activate], 60.0),
            (&[Disconnect], 50.0),
            (&[Revoke], 10.0),
        ]))
        .unwrap();
        let sets = vec![
            vec![Revoke],
            vec![Disconnect],
            vec![Activate, Sync],
            vec![Callback, Activate],
        ];
        let first = select(sets.clone(), Some((1, 2)), Some(&weights));
        let second = select(sets.clone(), Some((2, 2)), Some(&weights));
        // 100 alone against 60 + 50, then the 10 to the lighter first shard.
        assert_eq!(first, vec![vec![Callback, Activate], vec![Revoke]]);
        assert_eq!(second, vec![vec![Activate, Sync], vec![Disconnect]]);
        // Every set in exactly one shard; without a shard, all of them longest first.
        assert_eq!(first.len() + second.len(), sets.len());
        assert_eq!(
            select(sets, None, Some(&weights))[0],
            vec![Callback, Activate]
        );
    }

    #[test]
    fn a_set_the_earlier_run_did_not_have_weighs_the_median() {
        let weights = Weights::from_report(&report(&[
            (&[Activate], 30.0),
            (&[Callback], 10.0),
            (&[Sync], 20.0),
        ]))
        .unwrap();
        assert_eq!(weights.of(&[Revoke]), 20.0);
        assert!(weights.knows(&[Callback]) && !weights.knows(&[Revoke]));
    }

    #[test]
    fn the_bundled_weights_know_every_triple_of_the_default_operations() {
        let bundled = Weights::bundled().expect("the bundled weights parse");
        let triples = crate::explore::multisets(&Operation::by_default(), 3);
        let unknown: Vec<_> = triples.iter().filter(|s| !bundled.knows(s)).collect();
        assert!(
            unknown.is_empty(),
            "harness/src/explore/weights.json does not know {} triple(s), e.g. {:?}: copy in the \
             weights.json of a full `explore --depth 3` run",
            unknown.len(),
            unknown.first()
        );
    }

    #[test]
    fn a_runs_weights_file_reads_back_as_the_times_it_was_written_from() {
        let written = Weights::file_of(
            [(&[Activate, Callback][..], 12.34), (&[Sync][..], 5.0)],
            "a test",
        );
        let read = Weights::from_report(&serde_json::from_str(&written).unwrap()).unwrap();
        assert_eq!(read.of(&[Callback, Activate]), 12.3);
        assert_eq!(read.of(&[Sync]), 5.0);
        assert!(read.covers(&[vec![Sync]]) && !read.covers(&[vec![Sync], vec![Revoke]]));
    }

    #[test]
    fn a_file_that_is_not_an_exploration_report_is_refused() {
        assert!(Weights::from_report(&serde_json::json!({"scenarios": []})).is_err());
        assert!(Weights::from_report(
            &serde_json::json!({"sets": [{"operations": ["nope"], "duration_ms": 1}]})
        )
        .is_err());
        assert!(
            Weights::from_report(&serde_json::json!({"sets": [{"operations": ["activate"]}]}))
                .is_err()
        );
    }
}
