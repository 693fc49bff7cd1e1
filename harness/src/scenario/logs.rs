//! [`LogCapture`]: the service's logs, kept in memory for the leak search. The in-process replicas
//! log through `tracing`; `harbor-certify run` installs the capture as the global subscriber so
//! `no_canary_leaks` can search everything the service wrote.

use std::sync::{Arc, Mutex};

/// Everything logged since the capture was installed (capped at 64 MiB; the oldest half is dropped
/// when the cap is reached).
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>, Arc<std::sync::atomic::AtomicBool>);

const CAP: usize = 64 << 20;

impl LogCapture {
    /// Installs the capture as the global `tracing` subscriber (debug level and above, every
    /// target), next to a standard-error layer filtered by `RUST_LOG` (default: the harness's own warnings; the service's logs are expected
    /// to contain errors when scenarios provoke them).
    /// `None` if another subscriber is already installed.
    pub fn install() -> Option<Self> {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        use tracing_subscriber::Layer;
        let capture = Self::default();
        let writer = capture.clone();
        let captured = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG);
        let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "harbor_harness=warn".into()),
        );
        tracing_subscriber::registry().with(captured).with(stderr).try_init().ok().map(|_| capture)
    }

    /// Whether the cap was ever reached, so some logs are gone (a leak search must then fail).
    pub fn dropped_some(&self) -> bool {
        self.1.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The captured text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log capture")).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut v = self.0.lock().expect("log capture");
        if v.len() + buf.len() > CAP {
            let half = v.len() / 2;
            v.drain(..half);
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        v.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
