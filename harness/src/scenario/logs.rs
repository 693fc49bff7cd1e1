//! [`LogCapture`]: the service's logs, kept in memory for the leak search. The in-process replicas
//! log through `tracing`; `harbor-certify run` installs the capture as the global subscriber so
//! `no_canary_leaks` can search everything the service wrote.

use std::sync::{Arc, Mutex};

/// Everything logged since the capture was installed (capped at 64 MiB; the oldest half is dropped
/// when the cap is reached).
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    text: Vec<u8>,
    /// Bytes dropped from the front so far (positions stay meaningful across drops).
    dropped: u64,
}

/// A position in the capture, from [`LogCapture::mark`].
#[derive(Clone, Copy, Debug)]
pub struct LogMark(u64);

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
        let stderr = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "harbor_harness=warn".into()),
            );
        tracing_subscriber::registry()
            .with(captured)
            .with(stderr)
            .try_init()
            .ok()
            .map(|_| capture)
    }

    /// The current end of the capture: a scenario marks its start and searches from there.
    pub fn mark(&self) -> LogMark {
        let c = self.0.lock().expect("log capture");
        LogMark(c.dropped + c.text.len() as u64)
    }

    /// Everything logged since `mark`, or `None` if part of it was dropped at the cap (a leak
    /// search must then fail rather than pass on what is left).
    pub fn text_since(&self, mark: LogMark) -> Option<String> {
        let c = self.0.lock().expect("log capture");
        let start = usize::try_from(mark.0.checked_sub(c.dropped)?).ok()?;
        Some(String::from_utf8_lossy(&c.text[start.min(c.text.len())..]).into_owned())
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut c = self.0.lock().expect("log capture");
        if c.text.len() + buf.len() > CAP {
            let half = c.text.len() / 2;
            c.text.drain(..half);
            c.dropped += half as u64;
        }
        c.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
