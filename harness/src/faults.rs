//! [`FaultProxy`]: a TCP proxy between the service's replicas and one of their dependencies, that
//! the harness can stall or cut — the smallest nemesis that makes "Redis stops answering" or "the
//! database connection is gone" a step of a scenario without touching the shared servers other
//! scenarios run on.
//!
//! The replicas of a [`crate::service::ServiceUnderTest`] reach Redis, and PostgreSQL for their
//! requests, through one proxy each; the harness's own clients (assertions, lock-table evidence,
//! `sql` and `redis` steps, leak search) go to the servers directly, so a stalled proxy never
//! blinds the evidence.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a scenario can do to a dependency (`do = "fault"`, `fault = "…"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Redis stops answering: bytes in both directions are held (connections stay open), and new
    /// connections are accepted but get no answer — like a server frozen by SIGSTOP.
    RedisPause,
    /// Redis answers again; held bytes flow.
    RedisResume,
    /// Every open connection to Redis is closed at once (`CLIENT KILL` of every service client).
    RedisDropConnections,
    /// The replicas' PostgreSQL connections stop answering (bytes held both ways).
    PostgresPause,
    /// They answer again.
    PostgresResume,
    /// Every open PostgreSQL connection of the replicas is cut: each backend ends (and with it
    /// its transaction and its locks) as it would when a replica's host loses the network.
    PostgresDropConnections,
}

/// Which dependency a fault is done to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dependency {
    /// Redis.
    Redis,
    /// PostgreSQL (the replicas' request connections).
    Postgres,
}

impl FaultKind {
    /// The name used in scenario files and traces.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::RedisPause => "redis_pause",
            FaultKind::RedisResume => "redis_resume",
            FaultKind::RedisDropConnections => "redis_drop_connections",
            FaultKind::PostgresPause => "postgres_pause",
            FaultKind::PostgresResume => "postgres_resume",
            FaultKind::PostgresDropConnections => "postgres_drop_connections",
        }
    }

    /// The dependency it is done to.
    pub fn dependency(self) -> Dependency {
        match self {
            FaultKind::RedisPause | FaultKind::RedisResume | FaultKind::RedisDropConnections => Dependency::Redis,
            FaultKind::PostgresPause | FaultKind::PostgresResume | FaultKind::PostgresDropConnections => Dependency::Postgres,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Mode {
    paused: bool,
    /// Bumped to close every connection open at that moment.
    generation: u64,
}

/// A TCP proxy to `upstream` on a free port of 127.0.0.1, stopped when dropped.
pub struct FaultProxy {
    local: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding 127.0.0.1:<free port> to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let local = listener.local_addr()?;
        let mode = Arc::new(watch::Sender::new(Mode::default()));
        let accept_mode = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = accept_mode.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    forward(client, server, mode).await;
                });
            }
        });
        Ok(Self { local, mode, task })
    }

    /// The address to connect to instead of the upstream.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Applies a fault (to whichever dependency this proxy stands before).
    pub fn apply(&self, fault: FaultKind) {
        self.mode.send_modify(|m| match fault {
            FaultKind::RedisPause | FaultKind::PostgresPause => m.paused = true,
            FaultKind::RedisResume | FaultKind::PostgresResume => m.paused = false,
            FaultKind::RedisDropConnections | FaultKind::PostgresDropConnections => m.generation += 1,
        });
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Open connections end when they see the sender gone.
    }
}

/// Copies both ways until either side closes, holding bytes while paused and closing both sides
/// when the generation moves on.
async fn forward(client: TcpStream, server: TcpStream, mode: watch::Receiver<Mode>) {
    let born = mode.borrow().generation;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, mode.clone(), born);
    let down = pump(server_read, client_write, mode, born);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    born: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.wait_for(|m| m.generation != born) => {
                let _ = changed;
                return;
            }
        };
        // Held, not dropped, while paused: a stalled server, not a lossy one.
        match mode.wait_for(|m| !m.paused || m.generation != born).await {
            Ok(m) if m.generation == born => {}
            _ => return,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pauses_resumes_and_drops() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = upstream.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = FaultProxy::start(addr).await.unwrap();
        let mut c = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let mut b = [0u8; 4];
        c.write_all(b"ping").await.unwrap();
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");

        proxy.apply(FaultKind::RedisPause);
        c.write_all(b"held").await.unwrap();
        let stalled = tokio::time::timeout(std::time::Duration::from_millis(200), c.read_exact(&mut b)).await;
        assert!(stalled.is_err(), "no answer while paused");
        proxy.apply(FaultKind::RedisResume);
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"held", "held bytes flow after resume");

        proxy.apply(FaultKind::RedisDropConnections);
        let n = c.read(&mut b).await.unwrap_or(0);
        assert_eq!(n, 0, "the connection is closed");
    }
}
