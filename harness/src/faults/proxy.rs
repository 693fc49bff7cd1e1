//! The TCP proxy itself ([`FaultProxy`]): what each [`ProxyAction`] does to the bytes and
//! connections through it — held, cut, refused, or (for a PostgreSQL `COMMIT`, or a statement run
//! on its own) let through with its answer lost.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::tally::{self, Counts, Tally};
use super::ProxyAction;

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
    /// How many of the next `COMMIT`s never reach the server: the connection that sends one is
    /// cut instead, and the server rolls its transaction back.
    lose_commits: u32,
    /// How many of the next statements run on their own (outside a transaction block, so each
    /// commits by itself) have their reply lost, as `lose_commit_replies` for a `COMMIT`.
    lose_statement_replies: u32,
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
    /// What crossed it, for a PostgreSQL link ([`FaultProxy::start_postgres`]).
    tally: Option<Arc<Tally>>,
    /// What its connections share with it.
    shared: Shared,
    task: JoinHandle<()>,
}

/// What every connection through one proxy shares with it.
#[derive(Clone, Default)]
struct Shared {
    /// How many connections' bytes the last pause held ([`FaultProxy::held`]).
    held: Arc<AtomicU64>,
    /// What a statement run on its own must carry for a lost-statement-reply fault to take it
    /// ([`FaultProxy::aim_statement_replies`]).
    aim: Aim,
    /// How many connections a lost-commit or lost-reply fault has cut ([`FaultProxy::struck`]).
    struck: Arc<AtomicU64>,
}

/// Bytes a statement's messages must carry (`None`: any statement).
type Aim = Arc<Mutex<Option<Vec<u8>>>>;

impl FaultProxy {
    /// Starts forwarding 127.0.0.1:<free port> to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        Self::start_counting(upstream, None).await
    }

    /// Starts forwarding to a PostgreSQL server, counting the round trips, statements and
    /// transactions that cross ([`FaultProxy::counts`]).
    pub async fn start_postgres(upstream: SocketAddr) -> std::io::Result<Self> {
        Self::start_counting(upstream, Some(Arc::default())).await
    }

    /// What has crossed a PostgreSQL link since it started (`None`: not one).
    pub fn counts(&self) -> Option<Counts> {
        self.tally.as_ref().map(|t| t.read())
    }

    async fn start_counting(
        upstream: SocketAddr,
        tally: Option<Arc<Tally>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let local = listener.local_addr()?;
        let mode = Arc::new(watch::Sender::new(Mode::default()));
        let upstream_ends: Arc<Mutex<BTreeSet<SocketAddr>>> = Arc::default();
        let (follow, followed) = watch::channel(0);
        let shared = Shared::default();
        let task = tokio::spawn(serve(
            listener,
            upstream,
            mode.clone(),
            follow,
            upstream_ends.clone(),
            tally.clone(),
            shared.clone(),
        ));
        Ok(Self {
            local,
            mode,
            followed,
            upstream_ends,
            tally,
            shared,
            task,
        })
    }

    /// How many connections have had a request held by the current (or last) pause: evidence
    /// that a request reached the stalled dependency and is waiting on it (not just on its way).
    /// A connection counts once per pause (its later bytes queue behind the held ones).
    pub fn held(&self) -> u64 {
        self.shared.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many connections the lost-commit and lost-reply faults have cut since the proxy
    /// started: evidence that an armed one struck, rather than waiting still or disarmed unused.
    pub fn struck(&self) -> u64 {
        self.shared.struck.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Aims the lost-statement-reply faults armed from now on (`ProxyAction::LoseNextStatementReply`)
    /// at statements whose messages carry `bytes` — such as one actor's tag, bound as a
    /// parameter by every statement that tags itself — so that another client's statement run
    /// on its own meanwhile (a worker's sweep) does not take the fault; `None`, at any.
    pub fn aim_statement_replies(&self, bytes: Option<Vec<u8>>) {
        *self
            .shared
            .aim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = bytes;
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
                ProxyAction::Pause => {
                    // Counted from this pause on: an earlier pause's requests prove nothing now.
                    self.shared
                        .held
                        .store(0, std::sync::atomic::Ordering::SeqCst);
                    m.paused = true;
                }
                ProxyAction::Resume => {
                    m.paused = false;
                    m.lose_commit_replies = 0;
                    m.lose_commits = 0;
                    m.lose_statement_replies = 0;
                    self.aim_statement_replies(None);
                }
                ProxyAction::Drop => m.generation += 1,
                ProxyAction::Down => {
                    m.down = true;
                    m.generation += 1;
                }
                ProxyAction::Up => m.down = false,
                ProxyAction::LoseNextCommitReply => m.lose_commit_replies += 1,
                ProxyAction::LoseNextCommit => m.lose_commits += 1,
                ProxyAction::LoseNextStatementReply => m.lose_statement_replies += 1,
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
    tally: Option<Arc<Tally>>,
    shared: Shared,
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
        let framers = tally.clone().map(tally::framers);
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let end = server.local_addr().ok();
            if let Some(e) = end {
                ends.lock().map(|mut s| s.insert(e)).ok();
            }
            forward(client, server, conn_mode, arming, born, framers, shared).await;
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
    framers: Option<(tally::ClientFramer, tally::ServerFramer)>,
    Shared { held, aim, struck }: Shared,
) {
    let (client_framer, server_framer) = match framers {
        Some((c, s)) => (Some(c), Some(s)),
        None => (None, None),
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Set when this connection's client sent a `COMMIT`, or a statement run on its own, whose
    // reply is to be lost.
    let doomed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let up = pump(
        client_read,
        server_write,
        mode.clone(),
        born,
        Direction::ToServer {
            arming,
            doomed: doomed.clone(),
            framer: client_framer,
            held_reads: held,
            aim,
            aimed_at: false,
            struck: struck.clone(),
        },
    );
    let down = pump(
        server_read,
        client_write,
        mode,
        born,
        Direction::ToClient {
            doomed,
            framer: server_framer,
            struck,
        },
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

/// Which way a pump copies, with what the lost-reply faults need on each side.
enum Direction {
    /// Client to server: spots a `COMMIT` (or, framed, a statement run on its own) and, while a
    /// fault for it is armed, dooms the connection.
    ToServer {
        arming: Arc<watch::Sender<Mode>>,
        doomed: Arc<std::sync::atomic::AtomicBool>,
        framer: Option<tally::ClientFramer>,
        /// Counts the reads a pause held ([`FaultProxy::held`]).
        held_reads: Arc<AtomicU64>,
        /// What an armed lost-statement-reply fault is aimed at.
        aim: Aim,
        /// Whether the exchange being sent (since the last `Sync`) carried what it is aimed at.
        aimed_at: bool,
        /// Counts the connections cut before a `COMMIT` reached the server.
        struck: Arc<AtomicU64>,
    },
    /// Server to client: a doomed connection's answer is dropped, up to the server's next
    /// `ReadyForQuery` (framed: by then it has carried the statement or the commit out, however
    /// many pieces a long answer leaves in), and the connection cut.
    ToClient {
        doomed: Arc<std::sync::atomic::AtomicBool>,
        framer: Option<tally::ServerFramer>,
        /// Counts the connections cut once their answer was lost.
        struck: Arc<AtomicU64>,
    },
}

/// Takes one of the armed `COMMIT` faults `count` picks out of the mode, if one is armed.
fn take_armed(arming: &watch::Sender<Mode>, count: fn(&mut Mode) -> &mut u32) -> bool {
    arming.send_if_modified(|m| {
        let armed = count(m);
        let took = *armed > 0;
        if took {
            *armed -= 1;
        }
        took
    })
}

/// Copies `from` to `to`. Returns the write half when `from` ended after bytes had been held by a
/// pause (so the caller can keep the other side open for the late delivery), `None` otherwise.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    born: u64,
    mut direction: Direction,
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
        let paused = mode.borrow().paused;
        if let (true, Direction::ToServer { held_reads, .. }) = (paused, &direction) {
            held_reads.fetch_add(1, Ordering::SeqCst);
        }
        held |= paused;
        match mode.wait_for(|m| !m.paused || m.generation != born).await {
            Ok(m) if m.generation == born => {}
            _ => return None,
        }
        // The client's side is framed before it is delivered: whether these bytes run a
        // statement on its own, and one the armed fault is aimed at, decides what happens to them.
        let alone = match &mut direction {
            Direction::ToServer {
                framer: Some(f),
                aim,
                aimed_at,
                ..
            } => {
                let sent = f.feed(&buf[..n]);
                if mode.borrow().lose_statement_replies > 0 {
                    let aim = aim
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    *aimed_at |= aim.as_ref().is_none_or(|bytes| {
                        buf[..n].windows(bytes.len()).any(|w| w == bytes.as_slice())
                    });
                }
                let alone = sent.alone && *aimed_at;
                if sent.synced {
                    *aimed_at = false;
                }
                alone
            }
            _ => false,
        };
        match &direction {
            Direction::ToServer {
                arming,
                doomed,
                struck,
                ..
            } if buf[..n]
                .windows(COMMIT_MESSAGE.len())
                .any(|w| w == COMMIT_MESSAGE) =>
            {
                if take_armed(arming, |m| &mut m.lose_commits) {
                    // Never delivered: the connection ends here, its transaction with it.
                    struck.fetch_add(1, Ordering::SeqCst);
                    return None;
                }
                if take_armed(arming, |m| &mut m.lose_commit_replies) {
                    doomed.store(true, Ordering::SeqCst);
                }
            }
            Direction::ToServer { arming, doomed, .. }
                if alone && take_armed(arming, |m| &mut m.lose_statement_replies) =>
            {
                doomed.store(true, Ordering::SeqCst);
            }
            _ => {}
        }
        if let Direction::ToClient {
            doomed,
            framer,
            struck,
        } = &mut direction
        {
            if doomed.load(Ordering::SeqCst) {
                // The answer is lost: dropped, not delivered, and the link cut once the server
                // says it is ready again (an unframed link: at its first bytes).
                let ready = match framer {
                    Some(f) => {
                        let before = f.readies();
                        f.feed(&buf[..n]);
                        f.readies() > before
                    }
                    None => true,
                };
                if ready {
                    struck.fetch_add(1, Ordering::SeqCst);
                    return None;
                }
                continue;
            }
        }
        // Counted as delivered (a PostgreSQL link's framers only read).
        if let Direction::ToClient {
            framer: Some(f), ..
        } = &mut direction
        {
            f.feed(&buf[..n]);
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
        assert_eq!(proxy.held(), 0, "nothing held while flowing");

        proxy.apply(ProxyAction::Pause).await;
        c.write_all(b"held").await.unwrap();
        let stalled =
            tokio::time::timeout(std::time::Duration::from_millis(200), c.read_exact(&mut b)).await;
        assert!(stalled.is_err(), "no answer while paused");
        assert_eq!(proxy.held(), 1, "the request reached the pause and is held");
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
