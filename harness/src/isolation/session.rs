//! One spec session's connection: a `tokio-postgres` client whose connection task forwards the
//! server's notices and notifications, in arrival order, to the tester — which prints them when it
//! reads that connection, as libpq's notice processor does — and steps sent with the simple query
//! protocol (text results, every statement's result, as `PQsendQuery` gets them).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

use super::print::Table;

/// What a session's connection received besides results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A notice, formatted as libpq's default verbosity does (`NOTICE:  …` and its `DETAIL:` /
    /// `HINT:` lines).
    Notice(String),
    /// A `NOTIFY` delivered to this session.
    Notify {
        /// The channel.
        channel: String,
        /// The payload.
        payload: String,
        /// The sending backend.
        pid: i32,
    },
}

/// One result of a step's statements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A statement that returned rows (possibly none).
    Table(Table),
    /// A statement that returned no rows.
    Command,
    /// The error that ended the step: `SEVERITY:  primary message`, or the client's message.
    Error(String),
}

/// A step's results, in order.
pub type StepResult = Vec<Item>;

/// A connected session.
pub struct SessionConn {
    /// Its name (or `control connection`).
    pub name: String,
    /// Its backend's process id.
    pub pid: i32,
    client: Arc<tokio_postgres::Client>,
    link: Arc<Mutex<Link>>,
    messages: mpsc::UnboundedReceiver<Message>,
}

/// The connection, driven by its own task and — to read what already arrived, as libpq's
/// `PQconsumeInput` does — by the tester. Both poll it with the task's waker, so the task is
/// still woken when more arrives.
struct Link {
    connection:
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    tx: mpsc::UnboundedSender<Message>,
    waker: Option<Waker>,
    ended: bool,
}

impl Link {
    /// Processes everything the socket holds, forwarding notices and notifications in order;
    /// ready when the connection has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.ended {
            return Poll::Ready(());
        }
        loop {
            match self.connection.poll_message(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    let forwarded = match message {
                        AsyncMessage::Notice(e) => Message::Notice(notice_text(&e)),
                        AsyncMessage::Notification(n) => Message::Notify {
                            channel: n.channel().to_owned(),
                            payload: n.payload().to_owned(),
                            pid: n.process_id(),
                        },
                        _ => continue,
                    };
                    let _ = self.tx.send(forwarded);
                }
                Poll::Ready(Some(Err(_)) | None) => {
                    self.ended = true;
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl SessionConn {
    /// Connects to `url` tagged with `application_name`.
    pub async fn connect(url: &str, name: &str, application_name: &str) -> Result<Self, String> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("session {name}: bad database URL: {e}"))?;
        config.application_name(application_name);
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| format!("session {name}: cannot connect: {e}"))?;
        let (tx, messages) = mpsc::unbounded_channel();
        let link = Arc::new(Mutex::new(Link {
            connection,
            tx,
            waker: None,
            ended: false,
        }));
        let driven = Arc::clone(&link);
        tokio::spawn(futures::future::poll_fn(move |cx| {
            let mut link = driven.lock().unwrap_or_else(|e| e.into_inner());
            link.waker = Some(cx.waker().clone());
            link.drive(cx)
        }));
        let client = Arc::new(client);
        let pid = client
            .simple_query("SELECT pg_backend_pid()")
            .await
            .ok()
            .and_then(|m| {
                m.into_iter().find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
                    _ => None,
                })
            })
            .ok_or_else(|| format!("session {name}: cannot read its backend pid"))?;
        Ok(SessionConn {
            name: name.to_owned(),
            pid,
            client,
            link,
            messages,
        })
    }

    /// Sends `sql` and returns at once; the results arrive on the returned channel.
    pub fn send(&self, sql: &str) -> oneshot::Receiver<StepResult> {
        let (tx, rx) = oneshot::channel();
        let client = Arc::clone(&self.client);
        let sql = sql.to_owned();
        tokio::spawn(async move {
            let _ = tx.send(run(&client, &sql).await);
        });
        rx
    }

    /// Runs `sql` to completion (setup and teardown blocks).
    pub async fn exec(&self, sql: &str) -> StepResult {
        run(&self.client, sql).await
    }

    /// What arrived since the last call, in order: the socket is read first, so a notice the
    /// server sent before the tester looked is never left behind.
    pub fn drain(&mut self) -> Vec<Message> {
        {
            let mut link = self.link.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(waker) = link.waker.clone() {
                let _ = link.drive(&mut Context::from_waker(&waker));
            }
        }
        let mut out = Vec::new();
        while let Ok(m) = self.messages.try_recv() {
            out.push(m);
        }
        out
    }

    /// Asks the server to cancel the running statement.
    pub async fn cancel(&self) -> Result<(), String> {
        self.client
            .cancel_token()
            .cancel_query(NoTls)
            .await
            .map_err(|e| e.to_string())
    }
}

async fn run(client: &tokio_postgres::Client, sql: &str) -> StepResult {
    let mut items = Vec::new();
    let mut stream = match client.simple_query_raw(sql).await {
        Ok(s) => Box::pin(s),
        Err(e) => return vec![Item::Error(error_text(&e))],
    };
    let mut table: Option<Table> = None;
    while let Some(message) = stream.next().await {
        match message {
            Ok(SimpleQueryMessage::RowDescription(columns)) => {
                table = Some(Table {
                    columns: columns.iter().map(|c| c.name().to_owned()).collect(),
                    rows: Vec::new(),
                });
            }
            Ok(SimpleQueryMessage::Row(row)) => {
                if let Some(t) = table.as_mut() {
                    t.rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_owned))
                            .collect(),
                    );
                }
            }
            Ok(SimpleQueryMessage::CommandComplete(_)) => {
                items.push(table.take().map_or(Item::Command, Item::Table));
            }
            Ok(_) => {}
            Err(e) => {
                // A statement that fails after sending rows yields only its error, as libpq's
                // results do: the rows received so far are dropped with it. The step ends only
                // at ReadyForQuery, which the server sends after the aborted transaction has
                // let its locks go — so read on to the stream's end.
                items.push(Item::Error(error_text(&e)));
                while let Some(Ok(_)) = stream.next().await {}
                break;
            }
        }
    }
    items
}

/// `SEVERITY:  message` for a server error (what the tester prints: the primary message only,
/// since details may hold transaction ids), or the client library's own message.
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}:  {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

fn notice_text(e: &tokio_postgres::error::DbError) -> String {
    let mut s = format!("{}:  {}\n", e.severity(), e.message());
    if let Some(d) = e.detail() {
        s.push_str(&format!("DETAIL:  {d}\n"));
    }
    if let Some(h) = e.hint() {
        s.push_str(&format!("HINT:  {h}\n"));
    }
    s
}
