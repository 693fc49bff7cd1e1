//! [`FaultProxy`]: a TCP proxy between the service's replicas and one of their dependencies, that
//! the harness can stall or cut — the smallest nemesis that makes "Redis stops answering" or "the
//! database connection is gone" a step of a scenario without touching the shared servers other
//! scenarios run on.
//!
//! The replicas of a [`crate::service::ServiceUnderTest`] reach Redis, and PostgreSQL for their
//! requests, through one proxy each; the harness's own clients (assertions, lock-table evidence,
//! `sql` and `redis` steps, leak search) go to the servers directly, so a stalled proxy never
//! blinds the evidence.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a scenario can do to a dependency or a replica (`do = "fault"`, `fault = "…"`).
///
/// The `*_pause`, `*_down` and `*_drop_connections` faults act on the proxies between the
/// replicas and the servers; `redis_client_kill`, `redis_flush` and `postgres_terminate_*` are
/// done by the servers themselves; `replica_*` act on the service's own processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Redis stops answering: bytes in both directions are held (connections stay open), and new
    /// connections are accepted but get no answer — like a server frozen by SIGSTOP.
    RedisPause,
    /// Redis answers again; held bytes flow.
    RedisResume,
    /// Every open connection to Redis is closed at once by the network (the proxy).
    RedisDropConnections,
    /// The Redis server is gone: open connections are cut and new ones refused (nothing listens).
    RedisDown,
    /// The Redis server is back (the data it held is as the scenario left it; see `redis_flush`).
    RedisUp,
    /// A restart of a Redis that does not persist: down, every key of the service lost, and up
    /// again after `for_ms`.
    RedisRestart,
    /// Every key under the service's prefix is deleted (what a restart without persistence loses).
    RedisFlush,
    /// The replicas' PostgreSQL connections stop answering (bytes held both ways).
    PostgresPause,
    /// They answer again.
    PostgresResume,
    /// Every open PostgreSQL connection of the replicas is cut: each backend ends (and with it
    /// its transaction and its locks) as it would when a replica's host loses the network.
    PostgresDropConnections,
    /// The next `COMMIT` a replica sends reaches the server and is carried out, and then its
    /// reply is lost: the connection is cut after the server has answered, before the answer
    /// reaches the replica (which cannot tell a lost reply from a failed commit).
    PostgresLoseCommitReply,
    /// The server is gone: open connections are cut, new ones refused.
    PostgresDown,
    /// The server is back (committed data intact, as after a restart).
    PostgresUp,
    /// Down, and up again after `for_ms`: a server restart.
    PostgresRestart,
    /// The server ends the backend of one actor's request (`pg_terminate_backend`, found by the
    /// actor's tag in `application_name`): its transaction and locks go with it.
    PostgresTerminateActor,
    /// The server ends every backend of the service on the scenario's database.
    PostgresTerminateAll,
    /// The provider's token, revocation and resource endpoints stop answering (the service's
    /// calls run into its provider timeout).
    ProviderPause,
    /// They answer again.
    ProviderResume,
    /// Nothing listens at the provider's back channel: connections are refused.
    ProviderDown,
    /// The provider listens again.
    ProviderUp,
    /// A replica's process dies: its runtime is dropped with every request, pooled connection and
    /// task in it, the way a killed process loses them (the kernel closes its sockets).
    ReplicaCrash,
    /// A crashed replica starts again on the same address.
    ReplicaRestart,
    /// A replica stops gracefully, as on SIGTERM in a rolling deploy: it stops accepting, finishes
    /// its connections and the work its requests handed to tasks (within the service's shutdown
    /// bound), then its process ends. `replica_restart` starts it again.
    ReplicaStop,
}

/// A fault as a scenario step or an exploration asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What happens.
    pub kind: FaultKind,
    /// The replica it is done to (`None`: every replica's link to the dependency).
    pub replica: Option<usize>,
    /// For `postgres_terminate_actor`: the actor whose backend is ended.
    pub actor: Option<String>,
    /// For restarts: how long the server stays down.
    pub down_for: std::time::Duration,
}

/// What a fault did, once its effect was visible.
///
/// `effect` is the same on every correct run and goes into the trace's flake signature;
/// `measured` holds what varies between runs (how long the server took to notice, how many
/// backends or keys there were, a rebound port): kept in the trace, left out of the comparison.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultDone {
    /// What was done and its observed effect (`replica 0 crashed; its backends ended`).
    pub effect: String,
    /// What was measured on the way (`2 backend(s) within 9 ms`), if anything.
    pub measured: Option<String>,
}

impl FaultDone {
    /// An effect with nothing measured.
    pub fn effect(effect: impl Into<String>) -> Self {
        FaultDone {
            effect: effect.into(),
            measured: None,
        }
    }

    /// An effect with what was measured on the way.
    pub fn measured(effect: impl Into<String>, measured: impl Into<String>) -> Self {
        FaultDone {
            effect: effect.into(),
            measured: Some(measured.into()),
        }
    }
}

/// What a fault is done to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dependency {
    /// Redis.
    Redis,
    /// PostgreSQL (the replicas' request connections).
    Postgres,
    /// The OAuth provider's back channel (token, revocation and resource endpoints).
    Provider,
    /// A replica of the service itself.
    Replica,
}

/// What a proxy does to its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyAction {
    /// Hold bytes both ways.
    Pause,
    /// Let them flow.
    Resume,
    /// Close every open connection.
    Drop,
    /// Close every open connection and stop listening.
    Down,
    /// Let the next PostgreSQL `COMMIT` through, then cut its connection once the server has
    /// answered, so the answer is lost.
    LoseNextCommitReply,
    /// Listen again.
    Up,
}

impl FaultKind {
    /// Every fault, in the order of the documentation.
    pub const ALL: [FaultKind; 23] = [
        FaultKind::RedisPause,
        FaultKind::RedisResume,
        FaultKind::RedisDropConnections,
        FaultKind::RedisDown,
        FaultKind::RedisUp,
        FaultKind::RedisRestart,
        FaultKind::RedisFlush,
        FaultKind::PostgresPause,
        FaultKind::PostgresResume,
        FaultKind::PostgresDropConnections,
        FaultKind::PostgresLoseCommitReply,
        FaultKind::PostgresDown,
        FaultKind::PostgresUp,
        FaultKind::PostgresRestart,
        FaultKind::PostgresTerminateActor,
        FaultKind::PostgresTerminateAll,
        FaultKind::ProviderPause,
        FaultKind::ProviderResume,
        FaultKind::ProviderDown,
        FaultKind::ProviderUp,
        FaultKind::ReplicaCrash,
        FaultKind::ReplicaRestart,
        FaultKind::ReplicaStop,
    ];

    /// The name used in scenario files and traces.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::RedisPause => "redis_pause",
            FaultKind::RedisResume => "redis_resume",
            FaultKind::RedisDropConnections => "redis_drop_connections",
            FaultKind::RedisDown => "redis_down",
            FaultKind::RedisUp => "redis_up",
            FaultKind::RedisRestart => "redis_restart",
            FaultKind::RedisFlush => "redis_flush",
            FaultKind::PostgresPause => "postgres_pause",
            FaultKind::PostgresResume => "postgres_resume",
            FaultKind::PostgresDropConnections => "postgres_drop_connections",
            FaultKind::PostgresLoseCommitReply => "postgres_lose_commit_reply",
            FaultKind::PostgresDown => "postgres_down",
            FaultKind::PostgresUp => "postgres_up",
            FaultKind::PostgresRestart => "postgres_restart",
            FaultKind::PostgresTerminateActor => "postgres_terminate_actor",
            FaultKind::PostgresTerminateAll => "postgres_terminate_all",
            FaultKind::ProviderPause => "provider_pause",
            FaultKind::ProviderResume => "provider_resume",
            FaultKind::ProviderDown => "provider_down",
            FaultKind::ProviderUp => "provider_up",
            FaultKind::ReplicaCrash => "replica_crash",
            FaultKind::ReplicaRestart => "replica_restart",
            FaultKind::ReplicaStop => "replica_stop",
        }
    }

    /// What it is done to.
    pub fn dependency(self) -> Dependency {
        use FaultKind::*;
        match self {
            RedisPause | RedisResume | RedisDropConnections | RedisDown | RedisUp
            | RedisRestart | RedisFlush => Dependency::Redis,
            PostgresPause
            | PostgresResume
            | PostgresDropConnections
            | PostgresLoseCommitReply
            | PostgresDown
            | PostgresUp
            | PostgresRestart
            | PostgresTerminateActor
            | PostgresTerminateAll => Dependency::Postgres,
            ProviderPause | ProviderResume | ProviderDown | ProviderUp => Dependency::Provider,
            ReplicaCrash | ReplicaRestart | ReplicaStop => Dependency::Replica,
        }
    }

    /// The proxy action it is, when it is one.
    pub fn proxy_action(self) -> Option<ProxyAction> {
        use FaultKind::*;
        Some(match self {
            RedisPause | PostgresPause | ProviderPause => ProxyAction::Pause,
            RedisResume | PostgresResume | ProviderResume => ProxyAction::Resume,
            RedisDropConnections | PostgresDropConnections => ProxyAction::Drop,
            RedisDown | PostgresDown | ProviderDown => ProxyAction::Down,
            RedisUp | PostgresUp | ProviderUp => ProxyAction::Up,
            PostgresLoseCommitReply => ProxyAction::LoseNextCommitReply,
            _ => return None,
        })
    }

    /// Whether it opens a window a later fault closes (pause, down, crash), closes one, or
    /// neither: the report shades the window in the sequence diagram.
    pub fn window(self) -> Option<bool> {
        use FaultKind::*;
        match self {
            RedisPause | RedisDown | PostgresPause | PostgresDown | ProviderPause
            | ProviderDown | ReplicaCrash | ReplicaStop => Some(true),
            RedisResume | RedisUp | PostgresResume | PostgresUp | ProviderResume | ProviderUp
            | ReplicaRestart => Some(false),
            _ => None,
        }
    }

    /// Whether the step names an actor (whose backend is ended).
    pub fn needs_actor(self) -> bool {
        self == FaultKind::PostgresTerminateActor
    }

    /// Whether the step names a replica.
    pub fn needs_replica(self) -> bool {
        matches!(
            self,
            FaultKind::ReplicaCrash | FaultKind::ReplicaRestart | FaultKind::ReplicaStop
        )
    }

    /// Whether `for_ms` applies (the length of a restart's outage).
    pub fn takes_duration(self) -> bool {
        matches!(self, FaultKind::RedisRestart | FaultKind::PostgresRestart)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Mode {
    paused: bool,
    /// Counts changes, so `apply` can wait until the listener has followed.
    version: u64,
    /// Nothing listens.
    down: bool,
    /// Bumped to close every connection open at that moment.
    generation: u64,
    /// How many of the next `COMMIT`s have their reply lost (each connection that sends one
    /// takes one).
    lose_commit_replies: u32,
}

/// A TCP proxy to `upstream` on a free port of 127.0.0.1, stopped when dropped.
pub struct FaultProxy {
    local: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    /// The last `Mode::version` the listener has followed (dropped or bound again).
    followed: watch::Receiver<u64>,
    /// The local address of each open connection to the upstream (what the server sees as the
    /// client: `pg_stat_activity.client_port`, Redis `CLIENT LIST addr`).
    upstream_ends: Arc<Mutex<BTreeSet<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding 127.0.0.1:<free port> to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let local = listener.local_addr()?;
        let mode = Arc::new(watch::Sender::new(Mode::default()));
        let upstream_ends: Arc<Mutex<BTreeSet<SocketAddr>>> = Arc::default();
        let (follow, followed) = watch::channel(0);
        let task = tokio::spawn(serve(
            listener,
            upstream,
            mode.clone(),
            follow,
            upstream_ends.clone(),
        ));
        Ok(Self {
            local,
            mode,
            followed,
            upstream_ends,
            task,
        })
    }

    /// The address to connect to instead of the upstream.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Does `action` to the connections through this proxy; returns once the listener follows
    /// (after `Down`, a connection is refused; after `Up`, one is accepted).
    pub async fn apply(&self, action: ProxyAction) {
        let mut version = 0;
        self.mode.send_modify(|m| {
            m.version += 1;
            version = m.version;
            match action {
                ProxyAction::Pause => m.paused = true,
                ProxyAction::Resume => m.paused = false,
                ProxyAction::Drop => m.generation += 1,
                ProxyAction::Down => {
                    m.down = true;
                    m.generation += 1;
                }
                ProxyAction::Up => m.down = false,
                ProxyAction::LoseNextCommitReply => m.lose_commit_replies += 1,
            }
        });
        let mut followed = self.followed.clone();
        let _ = followed.wait_for(|v| *v >= version).await;
    }

    /// The client-side addresses of the open upstream connections, as the server sees them.
    pub fn upstream_ends(&self) -> Vec<SocketAddr> {
        self.upstream_ends
            .lock()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Open connections end when they see the sender gone.
    }
}

/// Accepts while up; while down, nothing listens on the port (connections are refused), and it
/// is bound again when the proxy comes up.
async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    follow: watch::Sender<u64>,
    ends: Arc<Mutex<BTreeSet<SocketAddr>>>,
) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    let mut listener = Some(listener);
    let mut watch = mode.subscribe();
    loop {
        let now = *watch.borrow_and_update();
        match (&listener, now.down) {
            (Some(_), true) => listener = None,
            (None, false) => match TcpListener::bind(local).await {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    // The port is briefly unavailable after the close; try again.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
            },
            _ => {}
        }
        follow.send_replace(now.version);
        let accepted = match &listener {
            Some(current) => tokio::select! {
                accepted = current.accept() => accepted.ok(),
                changed = watch.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    None
                }
            },
            None => {
                if watch.changed().await.is_err() {
                    return;
                }
                None
            }
        };
        let Some((client, _)) = accepted else {
            continue;
        };
        // The generation seen before `accept`: a drop or down that lands while the connection is
        // being accepted must cut it too (read after, it would count as born after the cut).
        let born = now.generation;
        let conn_mode = mode.subscribe();
        let arming = mode.clone();
        let ends = ends.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let end = server.local_addr().ok();
            if let Some(e) = end {
                ends.lock().map(|mut s| s.insert(e)).ok();
            }
            forward(client, server, conn_mode, arming, born).await;
            if let Some(e) = end {
                ends.lock().map(|mut s| s.remove(&e)).ok();
            }
        });
    }
}

/// Copies both ways until either side closes, holding bytes while paused and closing both sides
/// when the generation moves on.
async fn forward(
    client: TcpStream,
    server: TcpStream,
    mode: watch::Receiver<Mode>,
    arming: Arc<watch::Sender<Mode>>,
    born: u64,
) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Set when this connection's client sent a `COMMIT` whose reply is to be lost.
    let doomed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let up = pump(
        client_read,
        server_write,
        mode.clone(),
        born,
        Direction::ToServer {
            arming,
            doomed: doomed.clone(),
        },
    );
    let down = pump(
        server_read,
        client_write,
        mode,
        born,
        Direction::ToClient { doomed },
    );
    tokio::pin!(down);
    tokio::select! {
        kept = up => {
            if let Some(_server_write) = kept {
                // The client left while its bytes were held: they were delivered late, as a slow
                // network delivers them, so the server must see a whole request rather than a
                // connection that ends under it. Its answer finds nobody.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), &mut down).await;
            }
        }
        _ = &mut down => {}
    }
}

/// PostgreSQL's simple-query message for `COMMIT` (what sqlx sends to end a transaction): `Q`,
/// the length 11, the text with its terminating zero.
const COMMIT_MESSAGE: &[u8] = b"Q\x00\x00\x00\x0bCOMMIT\x00";

/// Which way a pump copies, with what the lost-commit-reply fault needs on each side.
enum Direction {
    /// Client to server: spots a `COMMIT` and, while one is armed, dooms the connection.
    ToServer {
        arming: Arc<watch::Sender<Mode>>,
        doomed: Arc<std::sync::atomic::AtomicBool>,
    },
    /// Server to client: a doomed connection's next answer is dropped and the connection cut.
    ToClient {
        doomed: Arc<std::sync::atomic::AtomicBool>,
    },
}

/// Copies `from` to `to`. Returns the write half when `from` ended after bytes had been held by a
/// pause (so the caller can keep the other side open for the late delivery), `None` otherwise.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    born: u64,
    direction: Direction,
) -> Option<tokio::net::tcp::OwnedWriteHalf> {
    use std::sync::atomic::Ordering;
    let mut buf = vec![0u8; 16 * 1024];
    let mut held = false;
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return held.then_some(to),
                Ok(n) => n,
            },
            changed = mode.wait_for(|m| m.generation != born) => {
                let _ = changed;
                return None;
            }
        };
        // Held, not dropped, while paused: a stalled server, not a lossy one.
        held |= mode.borrow().paused;
        match mode.wait_for(|m| !m.paused || m.generation != born).await {
            Ok(m) if m.generation == born => {}
            _ => return None,
        }
        match &direction {
            Direction::ToServer { arming, doomed }
                if buf[..n]
                    .windows(COMMIT_MESSAGE.len())
                    .any(|w| w == COMMIT_MESSAGE) =>
            {
                let took = arming.send_if_modified(|m| {
                    let armed = m.lose_commit_replies > 0;
                    if armed {
                        m.lose_commit_replies -= 1;
                    }
                    armed
                });
                if took {
                    doomed.store(true, Ordering::SeqCst);
                }
            }
            // The server has carried the commit out and answered: the answer is lost.
            Direction::ToClient { doomed } if doomed.load(Ordering::SeqCst) => return None,
            _ => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return None;
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

        proxy.apply(ProxyAction::Pause).await;
        c.write_all(b"held").await.unwrap();
        let stalled =
            tokio::time::timeout(std::time::Duration::from_millis(200), c.read_exact(&mut b)).await;
        assert!(stalled.is_err(), "no answer while paused");
        proxy.apply(ProxyAction::Resume).await;
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"held", "held bytes flow after resume");

        proxy.apply(ProxyAction::Drop).await;
        let n = c.read(&mut b).await.unwrap_or(0);
        assert_eq!(n, 0, "the connection is closed");

        proxy.apply(ProxyAction::Down).await;
        let refused = TcpStream::connect(proxy.local_addr()).await;
        assert!(refused.is_err(), "nothing listens while down");
        proxy.apply(ProxyAction::Up).await;
        let mut c = TcpStream::connect(proxy.local_addr())
            .await
            .expect("listening again after up");
        c.write_all(b"back").await.unwrap();
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"back");
        assert_eq!(
            proxy.upstream_ends().len(),
            1,
            "one open upstream connection is known"
        );
    }
}
