//! What the service's process costs while it is loaded: its resident memory (sampled from
//! `/proc/<pid>/status`) and the CPU time it used (`/proc/<pid>/stat`, user + system), for the
//! macro bench's RSS and CPU-per-request figures. Linux only; elsewhere nothing is sampled.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// CPU seconds (user + system) the process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The process's resident set, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Samples a process's RSS every 100 ms while a load runs; [`Sampler::finish`] gives the peak and
/// the CPU seconds used since [`Sampler::start`].
pub struct Sampler {
    pid: u32,
    cpu_at_start: Option<f64>,
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// What a [`Sampler`] saw.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Usage {
    /// Peak resident memory, MiB.
    pub rss_peak_mib: f64,
    /// CPU seconds used during the load.
    pub cpu_seconds: f64,
}

impl Sampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, halt) = (peak_kib.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !halt.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self {
            pid,
            cpu_at_start: cpu_seconds(pid),
            peak_kib,
            stop,
            task,
        }
    }

    /// Stops and reports.
    pub async fn finish(self) -> Option<Usage> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let cpu = cpu_seconds(self.pid)? - self.cpu_at_start?;
        Some(Usage {
            rss_peak_mib: self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0,
            cpu_seconds: cpu,
        })
    }
}
