//! The order statistics the harness's figures are summarised with — the median and the
//! nearest-rank percentile — in one place, so that a figure in a shard plan, a load test and a
//! bench is taken the same way.

/// The median of `values` (the mean of the middle two for an even count), or `None` if there are
/// none. NaNs sort last ([`f64::total_cmp`]).
pub fn median(values: &[f64]) -> Option<f64> {
    let sorted = sorted(values);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[mid]),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
    }
}

/// The `q`-quantile of `values` by nearest rank (`q` in `[0, 1]`: 0.5 the median's lower or upper
/// middle, 0.99 the 99th percentile), or `None` if there are none.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let sorted = sorted(values);
    let last = sorted.len().checked_sub(1)?;
    let rank = (last as f64 * q.clamp(0.0, 1.0)).round() as usize;
    Some(sorted[rank.min(last)])
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_value_and_of_an_even_one_the_middle_twos_mean() {
        assert_eq!(median(&[0.9, 0.5, 0.8]), Some(0.8));
        assert_eq!(median(&[0.7, 0.9]), Some(0.8));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn a_percentile_is_the_nearest_ranked_value() {
        let values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&values, 0.99), Some(99.0));
        assert_eq!(percentile(&values, 0.0), Some(1.0));
        assert_eq!(percentile(&values, 1.0), Some(100.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
