//! `harbor-certify merge`: joins the `explore.json` files of the shards of one exploration
//! (`explore --shard K/N`) into one: the sets and violations of all, the counts summed.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use super::{CANNOT_RUN, NOT_CERTIFIED};
use crate::explore::shard::ShardOf;

/// What to merge.
#[derive(clap::Args, Clone, Debug)]
pub struct MergeArgs {
    /// The shards' `explore.json` files.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Where the merged report is written.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Exit 0 even when a shard's systematic set was cut short, as `explore --allow-incomplete`
    /// does (without it the merge of an incomplete exploration exits 1, as its shard did).
    #[arg(long)]
    pub allow_incomplete: bool,
    /// Exit 0 even when a shard's target could not serve some sets, as `explore --allow-skipped`
    /// does.
    #[arg(long)]
    pub allow_skipped: bool,
}

/// Joins shard reports; `Err` names the file that is not one.
pub fn merge_reports(shards: &[Value]) -> Result<Value, String> {
    for (i, shard) in shards.iter().enumerate() {
        if shard.get("correct_build").is_some() {
            return Err(format!(
                "shard {} is a kill matrix's report, not one exploration's",
                i + 1
            ));
        }
        for key in [
            "schema_version",
            "sets",
            "violations",
            "schedules_explored",
            "schedules_per_s",
        ] {
            if shard.get(key).is_none() {
                return Err(format!("shard {} is not an explore.json (no {key})", i + 1));
            }
        }
    }
    check_split(shards)?;
    let mut merged = shards.first().cloned().ok_or("nothing to merge")?;
    // The whole split, not its first part.
    if let Some(fields) = merged.as_object_mut() {
        fields.remove("shard");
    }
    for (i, shard) in shards.iter().enumerate().skip(1) {
        if shard["schema_version"] != merged["schema_version"]
            || shard["mode"] != merged["mode"]
            || shard["flaws"] != merged["flaws"]
            || shard["target"] != merged["target"]
        {
            return Err(format!(
                "shard {} is another exploration (schema, mode, flaws or target differ)",
                i + 1
            ));
        }
        for key in ["operations", "violations", "sets"] {
            let more = shard[key].as_array().cloned().unwrap_or_default();
            merged[key]
                .as_array_mut()
                .ok_or(format!("shard 1 has no {key}"))?
                .extend(more);
        }
        // The sets a target could not serve: absent from shards written before they were kept.
        let skipped = shard["skipped"].as_array().cloned().unwrap_or_default();
        match merged["skipped"].as_array_mut() {
            Some(list) => list.extend(skipped),
            None => merged["skipped"] = Value::from(skipped),
        }
        for key in ["schedules_total", "schedules_explored", "schedules_pruned"] {
            merged[key] =
                Value::from(merged[key].as_u64().unwrap_or(0) + shard[key].as_u64().unwrap_or(0));
        }
        // Shards run side by side: the merged wall time is the longest shard's.
        let longest = merged["duration_ms"]
            .as_f64()
            .unwrap_or(0.0)
            .max(shard["duration_ms"].as_f64().unwrap_or(0.0));
        merged["duration_ms"] = Value::from(longest);
    }
    // Shards of one split are disjoint: a set in two of them was split from different lists
    // (another `--weights` file, another `--depth`), and the merged counts would claim it twice.
    let mut seen = std::collections::BTreeSet::new();
    for ops in merged["operations"].as_array().into_iter().flatten() {
        let mut key: Vec<String> = ops
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| o.to_string())
            .collect();
        key.sort();
        if !seen.insert(key) {
            return Err(format!(
                "the set {ops} is in more than one shard: were they all split from the same list and the same --weights file?"
            ));
        }
    }
    let explored = merged["schedules_explored"].as_f64().unwrap_or(0.0);
    let rates: Vec<f64> = shards
        .iter()
        .filter_map(|s| {
            Some(
                s["schedules_explored"].as_f64()?
                    / s["schedules_per_s"].as_f64().filter(|r| *r > 0.0)?,
            )
        })
        .collect();
    merged["schedules_per_s"] = Value::from(explored / rates.iter().sum::<f64>().max(1e-9));
    // Each shard started its own services (one, from files written before they were counted,
    // with the fault proxies every service had then).
    let services: u64 = shards
        .iter()
        .map(|s| s["services"].as_u64().unwrap_or(1))
        .sum();
    merged["services"] = Value::from(services);
    let proxied: u64 = shards
        .iter()
        .map(|s| {
            s["services_with_fault_proxies"]
                .as_u64()
                .unwrap_or_else(|| s["services"].as_u64().unwrap_or(1))
        })
        .sum();
    merged["services_with_fault_proxies"] = Value::from(proxied);
    Ok(merged)
}

/// Every part of one split, once each, where the reports say which part they are (reports
/// written before that was recorded say nothing, and are merged as given): a missing part's sets
/// are listed in no report, so without this a merge would pass them as if explored.
fn check_split(shards: &[Value]) -> Result<(), String> {
    let parts: Vec<Option<ShardOf>> = shards
        .iter()
        .map(|s| {
            s.get("shard")
                .and_then(|p| serde_json::from_value(p.clone()).ok())
        })
        .collect();
    let Some(first) = parts.iter().flatten().next().copied() else {
        return Ok(());
    };
    let mut seen = std::collections::BTreeSet::new();
    for (i, part) in parts.iter().enumerate() {
        let Some(part) = part else {
            return Err(format!(
                "shard {} does not say which part of a split it is, and others do",
                i + 1
            ));
        };
        if (part.of, part.sets_in_split) != (first.of, first.sets_in_split) {
            return Err(format!(
                "shard {} is part {}/{} of a split of {} sets, another part {}/{} of {}: two splits",
                i + 1,
                part.index,
                part.of,
                part.sets_in_split,
                first.index,
                first.of,
                first.sets_in_split
            ));
        }
        if !seen.insert(part.index) {
            return Err(format!("part {}/{} is given twice", part.index, part.of));
        }
    }
    let missing: Vec<String> = (1..=first.of)
        .filter(|k| !seen.contains(k))
        .map(|k| format!("{k}/{}", first.of))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "part(s) {} of the split are missing: their sets are in no report given",
            missing.join(", ")
        ))
    }
}

/// Reads, merges, writes.
pub fn merge(args: MergeArgs) -> ExitCode {
    let mut shards = Vec::new();
    for path in &args.shards {
        match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
        {
            Ok(v) => shards.push(v),
            Err(e) => {
                eprintln!("harbor-certify: {}: {e}", path.display());
                return ExitCode::from(CANNOT_RUN);
            }
        }
    }
    let merged = match merge_reports(&shards) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("harbor-certify: {e}");
            return ExitCode::from(CANNOT_RUN);
        }
    };
    if let Err(e) = std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&merged).unwrap_or_default(),
    ) {
        eprintln!("harbor-certify: {}: {e}", args.out.display());
        return ExitCode::from(CANNOT_RUN);
    }
    let violations = merged["violations"].as_array().map_or(0, Vec::len);
    println!(
        "merged {} shard(s): {} sets, {} schedules explored, {} pruned, {violations} violation(s) → {}",
        shards.len(),
        merged["sets"].as_array().map_or(0, Vec::len),
        merged["schedules_explored"],
        merged["schedules_pruned"],
        args.out.display()
    );
    // What `explore` itself refuses, the merge refuses too: sets not complete (systematic), and
    // says what the shards could not serve.
    let (incomplete, skipped) = shortfalls(&merged);
    if skipped > 0 {
        println!(
            "SKIPPED: {skipped} set(s) the target could not serve{}",
            if args.allow_skipped {
                " (allowed by --allow-skipped)"
            } else {
                ""
            }
        );
    }
    if incomplete > 0 {
        println!(
            "INCOMPLETE: not every schedule of {incomplete} set(s) ran{}",
            if args.allow_incomplete {
                " (allowed by --allow-incomplete)"
            } else {
                ""
            }
        );
    }
    if violations == 0
        && (incomplete == 0 || args.allow_incomplete)
        && (skipped == 0 || args.allow_skipped)
    {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_CERTIFIED)
    }
}

/// How many sets of a merged report are not complete (systematic mode; a set stopped at its
/// violation is counted by the violation, as `explore` counts it), and how many the shards could
/// not serve.
fn shortfalls(merged: &Value) -> (usize, usize) {
    let systematic = merged["mode"] == "systematic";
    let stopped_at_violation = |s: &Value| s["anomalies"].as_array().is_some_and(|a| !a.is_empty());
    let incomplete = merged["sets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| systematic && s["complete"] != true && !stopped_at_violation(s))
        .count();
    (incomplete, merged["skipped"].as_array().map_or(0, Vec::len))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_set_cut_short_or_skipped_is_counted() {
        let merged = serde_json::json!({ "mode": "systematic", "skipped": [{}],
            "sets": [{ "complete": true }, { "complete": false }, {},
                     { "complete": false, "anomalies": ["double_activation"] }] });
        assert_eq!(super::shortfalls(&merged), (2, 1));
        let random = serde_json::json!({ "mode": "random", "sets": [{ "complete": false }] });
        assert_eq!(super::shortfalls(&random), (0, 0));
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn shards_sum_and_concatenate() {
        let shard = |n: u64, v: Value| {
            // One set a shard, its own.
            let ops = json!([["activate", n.to_string()]]);
            json!({ "schema_version": 1, "mode": "systematic", "flaws": [], "operations": ops, "sets": [{}],
                    "violations": v, "schedules_total": n, "schedules_explored": n, "schedules_pruned": 0,
                    "duration_ms": 1000.0 * n as f64, "schedules_per_s": 10.0 })
        };
        let merged = merge_reports(&[
            shard(10, json!([])),
            shard(20, json!([{ "anomaly": "hang" }])),
        ])
        .unwrap();
        assert_eq!(merged["schedules_explored"], 30);
        assert_eq!(merged["sets"].as_array().unwrap().len(), 2);
        assert_eq!(merged["violations"].as_array().unwrap().len(), 1);
        assert_eq!(merged["duration_ms"], 20000.0);
        // Files from before `services` was written count one service each, with its proxies.
        assert_eq!(merged["services"], 2);
        assert_eq!(merged["services_with_fault_proxies"], 2);
        let mut four = shard(5, json!([]));
        four["services"] = json!(4);
        assert_eq!(
            merge_reports(&[shard(1, json!([])), four]).unwrap()["services"],
            5
        );
        // The same set in two shards (listed in another order): split from different lists.
        let twice = merge_reports(&[shard(2, json!([])), {
            let mut s = shard(4, json!([]));
            s["operations"] = json!([["2", "activate"]]);
            s
        }]);
        assert!(twice.unwrap_err().contains("in more than one shard"));
        let mut other = shard(1, json!([]));
        other["flaws"] = json!(["no-row-lock"]);
        assert!(
            merge_reports(&[shard(1, json!([])), other]).is_err(),
            "another exploration"
        );
        assert!(merge_reports(&[json!({})]).is_err(), "not an explore.json");
        // Parts that say which they are: all of the split, once each, or no merge.
        let part = |k: u64, of: u64| {
            let mut s = shard(k, json!([]));
            s["shard"] = json!({ "index": k, "of": of, "sets_in_split": 3 });
            s
        };
        let whole = merge_reports(&[part(1, 3), part(3, 3), part(2, 3)]).unwrap();
        assert!(whole.get("shard").is_none(), "the merge is the whole split");
        let missing = merge_reports(&[part(1, 3), part(3, 3)]).unwrap_err();
        assert!(missing.contains("2/3"), "{missing}");
        let mut again = part(2, 3);
        again["operations"] = json!([["activate", "again"]]);
        assert!(merge_reports(&[part(1, 3), part(2, 3), again])
            .unwrap_err()
            .contains("twice"));
        assert!(merge_reports(&[part(1, 2), part(2, 3)])
            .unwrap_err()
            .contains("two splits"));
        assert!(merge_reports(&[part(1, 2), shard(2, json!([]))])
            .unwrap_err()
            .contains("does not say"));
        assert!(
            merge_reports(&[json!({ "correct_build": {} })]).is_err(),
            "a kill matrix"
        );
    }
}
