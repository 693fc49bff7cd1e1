//! `harbor-load activation`: the activation endpoint of a service running in another process
//! (`harbor-certify serve --bench-file`) beside its raw ceiling — the same transaction through raw
//! sqlx on the same database ([`harbor_harness::target::started::ceiling::raw_activation`]) — at each concurrency,
//! on distinct workspaces (one per client) and on one hot workspace, back to back, for a fixed
//! time each, in rounds that alternate the two sides. Throughput is completed activations per
//! second; every answer must be 200.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harbor_harness::client::ApiClient;
use harbor_harness::operation::WorkspaceOp;
use harbor_harness::stats::{median, percentile};
use harbor_harness::target::started::serve::{BenchTenants, BenchUser};
use harbor_service::domain::Provider;
use serde::Serialize;

use crate::process::{Sampler, Usage};

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// `service` or `raw`.
    pub side: &'static str,
    /// `distinct` or `hot`.
    pub workload: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Completed activations per second, over every round.
    pub per_second: f64,
    /// Completed activations per second in each round, in order.
    pub per_round: Vec<f64>,
    /// The service side only: the median of its rounds' rates over the raw side's in the same
    /// rounds. Each round measured both sides seconds apart, where a host's pace moves by a tenth
    /// over minutes, so this is the figure the bench judges, not the ratio of the totals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_raw: Option<f64>,
    /// Failed activations (must be 0).
    pub failures: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// How long each activation held the workspace lock, from the statement that took it to the
    /// commit: the mean, ms (the service's from its `Server-Timing` header, the raw side's
    /// measured the same way). On the hot workspace it is what bounds the throughput.
    pub lock_held_mean_ms: f64,
    /// Its median, ms.
    pub lock_held_p50_ms: f64,
    /// The service process while it served, over every round: its peak RSS, its CPU seconds
    /// summed (service side, with a pid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Runs every workload × concurrency `rounds` times; each round measures the raw side and then the
/// service for `seconds` each. A point sums its side's rounds and keeps each round's rate
/// (`per_round`), so that a ratio can be taken round by round: the two sides of one round ran
/// seconds apart, where a host's pace moves by a tenth over minutes.
pub async fn run(
    bench: &BenchTenants,
    clients: &[usize],
    seconds: f64,
    rounds: usize,
    service_pid: Option<u32>,
) -> Result<Vec<Point>, String> {
    let most = clients.iter().copied().max().unwrap_or(1);
    if bench.activation.len() < most {
        return Err(format!("{} bench workspaces for up to {most} clients: start serve with --bench-activation-tenants {most}", bench.activation.len()));
    }
    let rounds = rounds.max(1);
    let raw = sqlx::postgres::PgPoolOptions::new()
        .max_connections(most as u32)
        .connect(&bench.request_database_url)
        .await
        .map_err(|e| format!("the raw side's login: {e}"))?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(most)
        .build()
        .map_err(|e| e.to_string())?;
    let client = ApiClient::new(http, bench.base_urls.clone());
    let window = Duration::from_secs_f64(seconds);
    let mut points = Vec::new();
    for &n in clients {
        for workload in ["distinct", "hot"] {
            // Distinct: client k always activates workspace k. Hot: every client the first one.
            let users: Vec<BenchUser> = (0..n)
                .map(|k| bench.activation[if workload == "hot" { 0 } else { k }].clone())
                .collect();
            let mut tallies = [Tally::default(), Tally::default()];
            for _ in 0..rounds {
                for (side, tally) in ["raw", "service"].into_iter().zip(tallies.iter_mut()) {
                    let sampler = (side == "service")
                        .then(|| service_pid.map(Sampler::start))
                        .flatten();
                    let (raw, client) = (raw.clone(), client.clone());
                    let measured = drive(window, &users, move |u| {
                        let (raw, client) = (raw.clone(), client.clone());
                        async move {
                            if side == "raw" {
                                harbor_harness::target::started::ceiling::raw_activation(
                                    &raw, &u.tenant,
                                )
                                .await
                                .ok()
                                .map(|held| Some(held.as_secs_f64() * 1e3))
                            } else {
                                client
                                    .operation(
                                        WorkspaceOp::Activate,
                                        u.tenant.workspace,
                                        Provider::Qbo,
                                        "",
                                    )
                                    .on_replica(
                                        u.tenant.workspace.0.as_u128() as usize % client.replicas(),
                                    )
                                    .bearer(Some(u.token.clone()))
                                    .send()
                                    .await
                                    .ok()
                                    .filter(|a| a.status.is_success())
                                    .map(|a| a.server_timing_ms("lock"))
                            }
                        }
                    })
                    .await;
                    let usage = match sampler {
                        Some(s) => s.finish().await,
                        None => None,
                    };
                    tally.add(measured, window, usage);
                }
            }
            let [raw_tally, service_tally] = tallies;
            let raw_point = raw_tally.point("raw", workload, n);
            let mut service_point = service_tally.point("service", workload, n);
            service_point.ratio_to_raw =
                ratio_to_raw(&service_point.per_round, &raw_point.per_round);
            for point in [raw_point, service_point] {
                let side = point.side;
                eprintln!("harbor-load activation: {side:<7} {workload:<8} {n:>3} clients: {:>7.0}/s over {rounds} round(s) ({}; p50 {:.1} ms, p99 {:.1} ms, lock held {:.2} ms mean, {:.2} ms p50, {} failed)", point.per_second, point.per_round.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" / "), point.p50_ms, point.p99_ms, point.lock_held_mean_ms, point.lock_held_p50_ms, point.failures);
                points.push(point);
            }
        }
    }
    raw.close().await;
    Ok(points)
}

/// One side's measurements of one workload and concurrency, summed over its rounds.
#[derive(Default)]
struct Tally {
    failed: u64,
    per_round: Vec<f64>,
    latencies: Vec<f64>,
    held: Vec<f64>,
    /// Each round's usage of the service process (`None` where it was not sampled or could not
    /// be read).
    usages: Vec<Option<Usage>>,
}

impl Tally {
    /// Adds one round: what [`drive`] returned for a window of `window`, and the service's usage.
    fn add(
        &mut self,
        (done, failed, latencies, held): (u64, u64, Vec<f64>, Vec<f64>),
        window: Duration,
        usage: Option<Usage>,
    ) {
        self.failed += failed;
        self.per_round.push(done as f64 / window.as_secs_f64());
        self.latencies.extend(latencies);
        self.held.extend(held);
        self.usages.push(usage);
    }

    /// The rounds as one point: every round's window is the same, so the rate over all of them is
    /// the mean of the rounds' rates; the usage is summed (CPU) and peaked (RSS) only if every
    /// round has one, so a round that could not be read never leaves a total short.
    fn point(self, side: &'static str, workload: &'static str, clients: usize) -> Point {
        let usage = self
            .usages
            .into_iter()
            .collect::<Option<Vec<Usage>>>()
            .and_then(|each| {
                each.into_iter().reduce(|a, b| Usage {
                    rss_peak_mib: a.rss_peak_mib.max(b.rss_peak_mib),
                    cpu_seconds: a.cpu_seconds + b.cpu_seconds,
                })
            });
        Point {
            side,
            workload,
            clients,
            per_second: self.per_round.iter().sum::<f64>() / self.per_round.len().max(1) as f64,
            per_round: self.per_round,
            ratio_to_raw: None,
            failures: self.failed,
            p50_ms: percentile(&self.latencies, 0.50).unwrap_or(0.0),
            p99_ms: percentile(&self.latencies, 0.99).unwrap_or(0.0),
            lock_held_mean_ms: self.held.iter().sum::<f64>() / self.held.len().max(1) as f64,
            lock_held_p50_ms: percentile(&self.held, 0.50).unwrap_or(0.0),
            usage,
        }
    }
}

/// Every user loops `once` (`None`: it failed; `Some(held)`: it succeeded, holding the lock for
/// `held` ms if it says) through a warm-up and then the window; returns what started in the
/// window: completed, failed, each completion's latency in ms, and each lock hold time said.
async fn drive<F, Fut>(
    window: Duration,
    users: &[BenchUser],
    once: F,
) -> (u64, u64, Vec<f64>, Vec<f64>)
where
    F: Fn(BenchUser) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Option<Option<f64>>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // A warm-up first, not counted: pools fill, HTTP connections open, caches settle — the window
    // measures the steady state, whatever its length.
    let measure_from = Instant::now() + (window / 2).min(Duration::from_secs(1));
    let until = measure_from + window;
    let tasks: Vec<_> = users
        .iter()
        .cloned()
        .map(|u| {
            let (once, done, failed) = (once.clone(), done.clone(), failed.clone());
            tokio::spawn(async move {
                let (mut latencies, mut held) = (Vec::new(), Vec::new());
                while Instant::now() < until {
                    let started = Instant::now();
                    let outcome = once(u.clone()).await;
                    if started < measure_from {
                        continue;
                    }
                    match outcome {
                        Some(said) => {
                            done.fetch_add(1, Ordering::Relaxed);
                            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                            held.extend(said);
                        }
                        None => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                (latencies, held)
            })
        })
        .collect();
    let (mut all, mut all_held) = (Vec::new(), Vec::new());
    for t in tasks {
        let (latencies, held) = t.await.unwrap_or_default();
        all.extend(latencies);
        all_held.extend(held);
    }
    (
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        all,
        all_held,
    )
}

/// The median of the rounds' ratios of `service` to `raw` (each a rate per round, in order), or
/// `None` when they do not pair up or a raw round completed nothing.
fn ratio_to_raw(service: &[f64], raw: &[f64]) -> Option<f64> {
    if service.len() != raw.len() || raw.iter().any(|r| *r <= 0.0) {
        return None;
    }
    let each: Vec<f64> = service.iter().zip(raw).map(|(s, r)| s / r).collect();
    median(&each)
}

#[cfg(test)]
mod tests {
    use super::ratio_to_raw;

    #[test]
    fn the_ratio_to_raw_is_the_median_of_the_rounds_ratios() {
        // Round ratios 0.9, 0.5 (a slow moment on the service's side alone), 0.8: the median is
        // 0.8, where the totals' ratio would be 0.733.
        let r = ratio_to_raw(&[900.0, 500.0, 800.0], &[1000.0; 3]).unwrap();
        assert!((r - 0.8).abs() < 1e-9, "{r}");
        // An even count: the mean of the middle two.
        let r = ratio_to_raw(&[70.0, 90.0], &[100.0, 100.0]).unwrap();
        assert!((r - 0.8).abs() < 1e-9, "{r}");
    }

    #[test]
    fn rounds_that_do_not_pair_up_have_no_ratio() {
        assert_eq!(ratio_to_raw(&[600.0], &[1000.0, 1000.0]), None);
        assert_eq!(ratio_to_raw(&[600.0], &[0.0]), None);
        assert_eq!(ratio_to_raw(&[], &[]), None);
    }
}
