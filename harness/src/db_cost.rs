//! What each kind of request costs the database, counted on the wire: the reference service (two
//! replicas, their PostgreSQL links through counting proxies, [`crate::faults::tally`]) answers
//! requests of one kind one at a time on replica 0, each on a workspace made ready for it
//! beforehand (on replica 1 only where a kind says so), and the
//! round trips, statements, transactions and connections that crossed are divided by the number
//! of requests. Nothing else talks to the database meanwhile: the outbox worker is told to look
//! once an hour, and every count is read once the link has been quiet (work a request leaves
//! running after its answer is counted with it). Redis commands are counted from the server's
//! `MONITOR` feed: those naming this service's keys (the server may be shared with other tests),
//! a script's own calls left out, the script loaded before anything is counted.

use std::time::Duration;

use harbor_service::domain::Provider;
use harbor_service::lifecycle::ConnectionStatus;

use crate::faults::tally::Counts;
use crate::fixtures::TenantWorkspace;
use crate::identity::TokenKind;
use crate::operation::WorkspaceOp;
use crate::provision::Infra;
use crate::target::started::{ServiceOptions, Started};
use crate::target::{Target, TenantSpec};

/// One kind of request, as measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `GET …/connections` by a member.
    ListConnections,
    /// `POST …/authorize` of a workspace not connected, by its owner, whom this replica has
    /// already read as the workspace's owner (a list of the connections, uncounted).
    Authorize,
    /// The same, as the caller's first request to the replica: it reads the membership before
    /// it asks Redis.
    AuthorizeCallerNew,
    /// The callback of a flow just authorized on the same replica (a code exchange at the
    /// provider), by a caller the replica has therefore seen.
    Callback,
    /// The same, authorized on the other replica: the caller's first request to this one, whose
    /// tenant it has to read.
    CallbackCallerNew,
    /// The first activation of a connected, entitled workspace.
    Activate,
    /// The same activation again (answered from the row it wrote).
    ActivateAgain,
    /// A sync of a connected workspace whose token is fresh (fetch and store).
    Sync,
    /// A disconnect of a connected workspace (its grant revoked).
    Disconnect,
    /// A revoke of a connected workspace.
    Revoke,
}

impl Kind {
    /// Every kind, in the table's order.
    pub const ALL: [Kind; 10] = [
        Kind::ListConnections,
        Kind::Authorize,
        Kind::AuthorizeCallerNew,
        Kind::Callback,
        Kind::CallbackCallerNew,
        Kind::Activate,
        Kind::ActivateAgain,
        Kind::Sync,
        Kind::Disconnect,
        Kind::Revoke,
    ];

    /// Its name in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ListConnections => "list_connections",
            Kind::Authorize => "authorize",
            Kind::AuthorizeCallerNew => "authorize (caller new to the replica)",
            Kind::Callback => "callback",
            Kind::CallbackCallerNew => "callback (caller new to the replica)",
            Kind::Activate => "activate",
            Kind::ActivateAgain => "activate (again)",
            Kind::Sync => "sync",
            Kind::Disconnect => "disconnect",
            Kind::Revoke => "revoke",
        }
    }

    fn op(self) -> WorkspaceOp {
        match self {
            Kind::ListConnections => WorkspaceOp::ListConnections,
            Kind::Authorize | Kind::AuthorizeCallerNew => WorkspaceOp::Authorize,
            Kind::Callback | Kind::CallbackCallerNew => WorkspaceOp::Callback,
            Kind::Activate | Kind::ActivateAgain => WorkspaceOp::Activate,
            Kind::Sync => WorkspaceOp::Sync,
            Kind::Disconnect => WorkspaceOp::Disconnect,
            Kind::Revoke => WorkspaceOp::Revoke,
        }
    }
}

/// One row of the table: a kind's mean cost per request.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    /// The kind.
    pub kind: &'static str,
    /// Requests counted.
    pub requests: usize,
    /// Round trips per request.
    pub round_trips: f64,
    /// Statements per request (`BEGIN` and `COMMIT` included).
    pub statements: f64,
    /// Transactions per request.
    pub transactions: f64,
    /// Connections the pool opened per request.
    pub connections: f64,
    /// Round trips per request that only prepared statements (the statement cache of a pooled
    /// connection that had not run them yet).
    pub prepares: f64,
    /// Round trips per request that did nothing (the pool's liveness pings).
    pub pings: f64,
    /// Commands per request sent to Redis (a script's call is one; what it runs is not counted);
    /// `None` where the server gave no `MONITOR` feed, or the feed failed before this kind's count
    /// was read (why is said on standard error; the table says not counted).
    pub redis_commands: Option<f64>,
}

/// Measures every kind, `requests` of each, on a reference service started on `infra`.
pub async fn measure(infra: &Infra, requests: usize) -> Result<Vec<Row>, String> {
    let options = ServiceOptions {
        replicas: 2,
        sync_points: false,
        outbox_interval: Duration::from_secs(3600),
        ..ServiceOptions::default()
    };
    let started = Started::start(infra, options)
        .await
        .map_err(|e| format!("the service did not start: {e}"))?;
    let prefix = started.env.redis_key_prefix.clone();
    // A server that refuses `MONITOR` (an ACL without it, a managed service) leaves the Redis
    // column unmeasured, said so, and the database's counts still taken.
    let mut redis = match RedisCommands::watch(&infra.redis_url, prefix).await {
        Ok(redis) => Some(redis),
        Err(e) => {
            eprintln!("harbor-certify db-cost: Redis commands not counted: MONITOR: {e}");
            None
        }
    };
    let result = measure_on(&started, &mut redis, requests.max(1)).await;
    let stopped = started.stop().await;
    let rows = result?;
    stopped.map_err(|e| format!("clean-up: {e}"))?;
    Ok(rows)
}

async fn measure_on(
    started: &Started,
    redis: &mut Option<RedisCommands>,
    requests: usize,
) -> Result<Vec<Row>, String> {
    // A flow authorized, uncounted: the rate-limit script is then in Redis's cache, and no
    // counted request pays for loading it (a `NOSCRIPT` answer, the script sent, a second try).
    prepare(started, Kind::Callback).await?;
    let mut rows = Vec::new();
    for kind in Kind::ALL {
        // Made ready first, and not counted: the workspaces, their flows, their first activation.
        let mut ready = Vec::with_capacity(requests);
        for _ in 0..requests {
            ready.push(prepare(started, kind).await?);
        }
        let before = quiet_counts(started).await?;
        let redis_before = RedisCommands::count_if(redis).await;
        for (t, query) in &ready {
            let who = if matches!(kind, Kind::ListConnections | Kind::Sync) {
                t.member
            } else {
                t.owner
            };
            let (method, path) =
                started
                    .client
                    .routes()
                    .request(kind.op(), t.workspace, Provider::Qbo, query);
            let answer = started
                .client
                .request(method, path)
                .bearer(Some(started.bearer(who, TokenKind::Valid)))
                .send()
                .await
                .map_err(|e| format!("{}: {e}", kind.as_str()))?;
            if !answer.status.is_success() {
                return Err(format!(
                    "{} answered {} {}: only a request that did its work is counted",
                    kind.as_str(),
                    answer.status,
                    answer.body
                ));
            }
        }
        let counted = before.until(quiet_counts(started).await?);
        let redis_commands = RedisCommands::count_if(redis)
            .await
            .zip(redis_before)
            .map(|(after, before)| after - before);
        let per = |n: u64| n as f64 / requests as f64;
        rows.push(Row {
            kind: kind.as_str(),
            requests,
            round_trips: per(counted.round_trips),
            statements: per(counted.statements),
            transactions: per(counted.transactions),
            connections: per(counted.connections),
            prepares: per(counted.prepares),
            pings: per(counted.pings),
            redis_commands: redis_commands.map(per),
        });
    }
    Ok(rows)
}

/// A workspace in the state `kind` needs, and the callback's query when it is a callback.
async fn prepare(started: &Started, kind: Kind) -> Result<(TenantWorkspace, String), String> {
    let spec = TenantSpec {
        name: format!("wire-{}", uuid::Uuid::new_v4().simple()),
        entitled: true,
        qbo: ConnectionStatus::NotConnected,
    };
    let t = started.create_tenant(&spec).await?;
    let target: &dyn Target = started;
    match kind {
        Kind::Authorize => {
            owners_request(started, &t, WorkspaceOp::ListConnections).await?;
            Ok((t, String::new()))
        }
        Kind::AuthorizeCallerNew => Ok((t, String::new())),
        Kind::Callback => {
            let consent =
                crate::target::start_flow(target, t.owner, t.workspace, Provider::Qbo).await?;
            Ok((t, consent.callback_query()))
        }
        Kind::CallbackCallerNew => {
            let consent =
                crate::target::start_flow_on(target, 1, t.owner, t.workspace, Provider::Qbo)
                    .await?;
            Ok((t, consent.callback_query()))
        }
        _ => {
            crate::target::connect(target, t.owner, t.workspace, Provider::Qbo).await?;
            if kind == Kind::ActivateAgain {
                owners_request(started, &t, WorkspaceOp::Activate).await?;
            }
            Ok((t, String::new()))
        }
    }
}

/// A request of the workspace owner's to replica 0, made ready beforehand (not counted); it must
/// succeed.
async fn owners_request(
    started: &Started,
    t: &TenantWorkspace,
    op: WorkspaceOp,
) -> Result<(), String> {
    let (method, path) = started
        .client
        .routes()
        .request(op, t.workspace, Provider::Qbo, "");
    let answer = started
        .client
        .request(method, path)
        .bearer(Some(started.bearer(t.owner, TokenKind::Valid)))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !answer.status.is_success() {
        return Err(format!(
            "the owner's {op:?} made beforehand answered {}",
            answer.status
        ));
    }
    Ok(())
}

/// The sum of every replica's PostgreSQL link, read once it has not moved for a while: work a
/// request left running after its answer (a revocation, an audit row) lands in its count.
async fn quiet_counts(started: &Started) -> Result<Counts, String> {
    let read = || {
        started
            .links(None)
            .map(|l| l.postgres.counts().unwrap_or_default())
            .fold(Counts::default(), Counts::plus)
    };
    if !started.has_fault_proxies() {
        return Err("the replicas reach PostgreSQL directly: nothing counts their traffic".into());
    }
    let mut last = read();
    let mut still = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = read();
        if now == last {
            still += 1;
            if still >= 8 {
                return Ok(now);
            }
        } else {
            still = 0;
            last = now;
        }
    }
    Err("the database link never went quiet for 200 ms in 5 s".into())
}

/// The commands Redis received that name a key under one prefix (one service's: the server may
/// serve other tests meanwhile), counted from a `MONITOR` connection. The feed lags the commands;
/// a count is read once a marker this counter sends after them has come through (the feed shows
/// commands in the order the server ran them).
struct RedisCommands {
    feed: std::pin::Pin<Box<dyn futures::Stream<Item = String> + Send>>,
    marker: redis::aio::MultiplexedConnection,
    /// `"<prefix>`, as a key under the prefix starts in the feed's quoted arguments.
    quoted_prefix: String,
    /// This counter's own: another counter on the same server (a db-cost run beside this one)
    /// sends markers too, and one of theirs must not end a count of this one's.
    marker_id: uuid::Uuid,
    seen: u64,
    markers_sent: u64,
}

impl RedisCommands {
    /// A counter on the server at `url`, shown working: its first marker came through. (A server
    /// that refuses `MONITOR` answers it with an error the client does not report; its feed then
    /// stays silent.)
    async fn watch(url: &str, prefix: String) -> Result<Self, String> {
        let connect = async {
            let client = redis::Client::open(url)?;
            let feed = client
                .get_async_monitor()
                .await?
                .into_on_message::<String>();
            let marker = client.get_multiplexed_async_connection().await?;
            Ok::<_, redis::RedisError>((feed, marker))
        };
        let (feed, marker) = connect.await.map_err(|e| e.to_string())?;
        let mut counter = Self {
            feed: Box::pin(feed),
            marker,
            quoted_prefix: format!("\"{prefix}"),
            seen: 0,
            marker_id: uuid::Uuid::new_v4(),
            markers_sent: 0,
        };
        counter.count().await?;
        Ok(counter)
    }

    /// [`Self::count`] of a counter, if there is one. A counter that fails (the feed ended or
    /// fell silent: Redis restarted, the connection cut) is given up, said on standard error, and
    /// the rest of the run leaves Redis uncounted: the database's counts are still taken.
    async fn count_if(counter: &mut Option<Self>) -> Option<u64> {
        let counted = counter.as_mut()?.count().await;
        counted
            .inspect_err(|e| {
                eprintln!("harbor-certify db-cost: Redis commands no longer counted: {e}");
                *counter = None;
            })
            .ok()
    }

    /// Commands seen so far, every command sent before this call included.
    async fn count(&mut self) -> Result<u64, String> {
        use futures::StreamExt;
        self.markers_sent += 1;
        let marker = format!(
            "harbor-db-cost-{}-{}",
            self.marker_id.simple(),
            self.markers_sent
        );
        let _: String = redis::cmd("ECHO")
            .arg(&marker)
            .query_async(&mut self.marker)
            .await
            .map_err(|e| format!("Redis: {e}"))?;
        let quoted = format!("\"{marker}\"");
        loop {
            let line = tokio::time::timeout(Duration::from_secs(5), self.feed.next())
                .await
                .map_err(|_| format!("Redis's MONITOR feed did not show {marker} within 5 s"))?
                .ok_or("Redis's MONITOR feed ended")?;
            if line.ends_with(&quoted) {
                return Ok(self.seen);
            }
            // `<time> [<db> <client>] "<command>" "<argument>" …`: `lua` in place of the client
            // is a script's own call, part of the script's one command.
            let from_script = line.contains(" lua] ");
            if !from_script && line.contains(&self.quoted_prefix) {
                self.seen += 1;
            }
        }
    }
}

/// The table as Markdown.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| request | round trips | of which pings | of which prepares | statements | transactions | connections opened | Redis commands |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
            r.kind,
            r.round_trips,
            r.pings,
            r.prepares,
            r.statements,
            r.transactions,
            r.connections,
            r.redis_commands
                .map_or("not counted (see standard error)".to_owned(), |n| format!(
                    "{n:.2}"
                ))
        ));
    }
    out
}
