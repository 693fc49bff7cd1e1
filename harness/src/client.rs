//! [`ApiClient`]: the one HTTP client of the service's API. The scenario runner, the state
//! machine, the integration tests, `serve` and the load test's invariant checks all send requests
//! through it, so the actor tag ([`Actor::HEADER`]) and the reading of an answer exist once (the
//! paths are [`crate::operation`]'s). Every error answer can be held to the target's contract ([`crate::target::Contract`]).
//!
//! Past 500 lines on purpose: the client, its one request type, its one answer type and the
//! failure classes every report prints are one vocabulary, and its tests include a small server
//! of their own (a kept-alive connection that outlives its listener).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harbor_service::domain::{Actor, Provider, WorkspaceId};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::fake_provider::{self, Consent};
use crate::operation::{Routes, WorkspaceOp};

/// How long a pooled connection may sit idle before the client drops it instead of reusing it.
/// Servers close idle keep-alive connections on their own clocks — the reference's hyper once its
/// header-read timeout passes (10 s as the harness starts it), gunicorn's async workers after 2 s,
/// Node after 5 s — and a request written on a connection just as its server closes it is lost
/// (`connection lost before the answer`) through no fault of the target's: an explore run's setup
/// met that once in 27,750 schedules. Dropping the connection first, well before any of those
/// servers would, keeps the race out of every run.
pub const POOL_IDLE: Duration = Duration::from_secs(1);

/// The one way the harness builds its HTTP client of a target: redirects are not followed (the
/// fake provider's consent answers with one, which the caller must see) and idle connections
/// are dropped after [`POOL_IDLE`]. Callers add their timeouts and pool sizes.
pub fn http_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(POOL_IDLE)
}

/// The replicas' base URLs and one connection pool. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    target: Arc<Addressing>,
}

/// Where the target's replicas are and how its API is spelt.
#[derive(Debug)]
struct Addressing {
    bases: Vec<String>,
    routes: Routes,
    /// For a replica taken down by a fault: a new connection for every request, none kept.
    unpooled: reqwest::Client,
    /// Per replica: whether it is taken down (stopping, crashed), so that its kept-alive
    /// connections are not reused ([`ApiClient::stop_reusing_connections`]). Shared by every
    /// clone, whatever routes it speaks.
    taken_down: Arc<[AtomicBool]>,
}

/// A request could not be sent or its answer not read.
///
/// Its `Display` is what traces, reports and flake signatures hold, so it is stable between runs
/// and carries no secret: the path without its query (a callback's query holds an OAuth code and
/// state), and what failed as a class (`connection lost before the answer`) instead of the
/// transport's text, which names the URL and a port that changes between runs. `detail` gives the
/// transport's own words, without the URL, for diagnostics.
#[derive(Debug, thiserror::Error)]
#[error("{method} {}: {}", path_without_query(path), self.failure())]
pub struct ClientError {
    /// The method.
    pub method: Method,
    /// The path, query included (never displayed).
    pub path: String,
    /// What failed.
    #[source]
    pub source: reqwest::Error,
}

impl ClientError {
    /// What failed, as a class that is the same on every run that fails the same way (no path:
    /// paths hold generated ids).
    pub fn failure(&self) -> &'static str {
        failure_class(&self.source)
    }

    /// The transport's error chain without the URL (which can hold an OAuth code).
    pub fn detail(&self) -> String {
        let mut out = self.source.to_string();
        if let Some(url) = self.source.url() {
            out = out.replace(url.as_str(), &path_without_query(url.path()));
        }
        let mut cause = std::error::Error::source(&self.source);
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }
}

/// `path` with its query, if any, replaced by `?…`.
pub fn path_without_query(path: &str) -> String {
    match path.split_once('?') {
        Some((p, _)) => format!("{p}?…"),
        None => path.to_owned(),
    }
}

/// What a transport failure was, in words that are the same on every run that fails the same way.
fn failure_class(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "no connection (refused or unreachable)"
    } else if e.is_decode() || e.is_body() {
        "answer cut off or unreadable"
    } else if e.is_redirect() {
        "redirect refused"
    } else {
        "connection lost before the answer"
    }
}

impl ApiClient {
    /// A client of the replicas at `bases` (`http://127.0.0.1:port`), sharing `http`'s pool.
    pub fn new(http: reqwest::Client, bases: Vec<String>) -> Self {
        let unpooled = http_builder()
            .pool_max_idle_per_host(0)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a reqwest client without TLS configuration builds");
        Self {
            http,
            target: Arc::new(Addressing {
                taken_down: bases.iter().map(|_| AtomicBool::new(false)).collect(),
                bases,
                routes: Routes::reference(),
                unpooled,
            }),
        }
    }

    /// The same client, speaking a target's own routes and answers (a target profile's).
    pub fn with_routes(mut self, routes: Routes) -> Self {
        let target = &self.target;
        self.target = Arc::new(Addressing {
            bases: target.bases.clone(),
            routes,
            unpooled: target.unpooled.clone(),
            taken_down: target.taken_down.clone(),
        });
        self
    }

    /// How the target spells operations and answers.
    pub fn routes(&self) -> &Routes {
        &self.target.routes
    }

    /// The request that does `op` on `workspace`'s `provider` connection, on the target's own
    /// route (`callback_query`: the consent's query, for the callback); replica 0 unless told
    /// otherwise.
    pub fn operation(
        &self,
        op: WorkspaceOp,
        workspace: WorkspaceId,
        provider: Provider,
        callback_query: &str,
    ) -> Call {
        let (method, path) = self
            .target
            .routes
            .request(op, workspace, provider, callback_query);
        self.request(method, path)
    }

    /// A client with its own pool ([`http_builder`]).
    pub fn with_bases(bases: Vec<String>) -> Self {
        let http = http_builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("a reqwest client without TLS configuration builds");
        Self::new(http, bases)
    }

    /// From now on every request to `replica` opens a connection of its own: a fault is about
    /// to stop or crash it. A connection kept alive from before would make a request sent after
    /// the fault race the server's closing of it — lost on the way, or, in a graceful stop, even
    /// taken up and served — where a new connection is refused, the same way in every run (an
    /// explored schedule's replay diverged on that race).
    pub fn stop_reusing_connections(&self, replica: usize) {
        if let Some(flag) = self.target.taken_down.get(replica) {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// `replica` was started again: its requests share the pool once more.
    pub fn reuse_connections(&self, replica: usize) {
        if let Some(flag) = self.target.taken_down.get(replica) {
            flag.store(false, Ordering::SeqCst);
        }
    }

    /// How many replicas it can address.
    pub fn replicas(&self) -> usize {
        self.target.bases.len()
    }

    /// Polls every replica's `/readyz` in turn until each has answered 200, within `limit`: how
    /// many were ready when it returned (all of them, unless the limit ran out). It asks for a
    /// fresh check (`?fresh=true`), which a test instance honours and any other ignores.
    pub async fn until_ready(&self, limit: std::time::Duration) -> usize {
        let started = std::time::Instant::now();
        let mut ready = 0;
        while ready < self.replicas() && started.elapsed() < limit {
            let answer = self
                .request(Method::GET, "/readyz?fresh=true")
                .on_replica(ready)
                .send()
                .await;
            if answer.is_ok_and(|a| a.status.is_success()) {
                ready += 1;
            } else {
                tokio::time::sleep(crate::evidence::POLL_INTERVAL).await;
            }
        }
        ready
    }

    /// The URL of `path` on `replica`.
    pub fn url(&self, replica: usize, path: &str) -> String {
        format!("{}{}", self.target.bases[replica], path)
    }

    /// A request to build and send; replica 0 unless told otherwise.
    pub fn request(&self, method: Method, path: impl Into<String>) -> Call {
        Call {
            client: self.clone(),
            method,
            path: path.into(),
            replica: 0,
            bearer: None,
            actor: None,
            headers: Vec::new(),
            body: None,
        }
    }

    /// The callback delivering a consent's `query` for `provider`, on the target's own route (a
    /// callback names no workspace: its state does).
    pub fn callback(&self, provider: Provider, query: &str) -> Call {
        self.operation(
            WorkspaceOp::Callback,
            WorkspaceId(uuid::Uuid::nil()),
            provider,
            query,
        )
    }

    /// Plays the user's browser at the provider: opens `authorization_url` and returns the
    /// redirect back to the service.
    pub async fn consent(&self, authorization_url: &str) -> Result<Consent, String> {
        fake_provider::consent(&self.http, authorization_url).await
    }

    /// Authorize on `replica` (with `bearer`, tagged `actor`) and consent at the provider. The
    /// answer is returned whatever it is; the consent only when the authorization succeeded.
    pub async fn authorize_and_consent(
        &self,
        replica: usize,
        bearer: Option<&str>,
        actor: Option<&str>,
        workspace: WorkspaceId,
        provider: Provider,
    ) -> Result<(Answer, Option<Result<Consent, String>>), ClientError> {
        let answer = self
            .operation(WorkspaceOp::Authorize, workspace, provider, "")
            .on_replica(replica)
            .bearer(bearer)
            .actor(actor)
            .send()
            .await?;
        let consent = match answer.authorization_url.as_deref() {
            Some(url) if answer.status.is_success() => Some(self.consent(url).await),
            _ => None,
        };
        Ok((answer, consent))
    }
}

/// One request being built. Owns what it needs, so it can be sent from a spawned task.
#[derive(Clone, Debug)]
pub struct Call {
    client: ApiClient,
    method: Method,
    path: String,
    replica: usize,
    bearer: Option<String>,
    actor: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<Value>,
}

impl Call {
    /// Send it to this replica.
    pub fn on_replica(mut self, replica: usize) -> Self {
        self.replica = replica;
        self
    }

    /// Present this bearer token (none: no `Authorization` header).
    pub fn bearer<S: AsRef<str>>(mut self, token: Option<S>) -> Self {
        self.bearer = token.map(|t| t.as_ref().to_owned());
        self
    }

    /// Tag the request with this actor ([`Actor::HEADER`]); the service names its transaction after
    /// it, so the lock tables can say whose it is.
    pub fn actor<S: AsRef<str>>(mut self, actor: Option<S>) -> Self {
        self.actor = actor.map(|a| a.as_ref().to_owned());
        self
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Send this JSON body.
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// The client it is sent with.
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// Sends it and reads the whole answer.
    pub async fn send(self) -> Result<Answer, ClientError> {
        let fail = |source| ClientError {
            method: self.method.clone(),
            path: self.path.clone(),
            source,
        };
        let target = &self.client.target;
        let taken_down =
            (target.taken_down.get(self.replica)).is_some_and(|flag| flag.load(Ordering::SeqCst));
        let http = if taken_down {
            &target.unpooled
        } else {
            &self.client.http
        };
        let mut req = http.request(
            self.method.clone(),
            self.client.url(self.replica, &self.path),
        );
        if let Some(a) = &self.actor {
            req = req.header(Actor::HEADER, a);
        }
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(b) = &self.body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(fail)?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (request_id, retry_after, content_type, server_timing) = (
            header("x-request-id"),
            header("retry-after"),
            header("content-type"),
            header("server-timing"),
        );
        let status = resp.status();
        let raw = resp.text().await.map_err(fail)?;
        let body = serde_json::from_str(&raw).unwrap_or_else(|_| Value::String(raw.clone()));
        let routes = &self.client.target.routes;
        Ok(Answer {
            code: routes.error_code(&body),
            authorization_url: routes.authorization_url(&body),
            method: self.method,
            path: self.path,
            status,
            body,
            raw,
            request_id,
            retry_after,
            content_type,
            server_timing,
        })
    }
}

/// A finished exchange.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The request's method.
    pub method: Method,
    /// The request's path (with its query).
    pub path: String,
    /// The status.
    pub status: StatusCode,
    /// The body as JSON (a JSON string holding the text when it is not JSON).
    pub body: Value,
    /// The body as sent.
    pub raw: String,
    /// The stable error code, where the target's routes say answers hold it.
    pub code: Option<String>,
    /// The authorization URL, where the target's routes say an `authorize` answer holds it.
    pub authorization_url: Option<String>,
    /// The `x-request-id` header.
    pub request_id: Option<String>,
    /// The `retry-after` header.
    pub retry_after: Option<String>,
    /// The `content-type` header.
    pub content_type: Option<String>,
    /// The `server-timing` header (only a service told to send it: `HARBOR_SERVER_TIMING`).
    pub server_timing: Option<String>,
}

impl Answer {
    /// The duration of metric `name` in `Server-Timing` (`name;dur=<ms>`), in milliseconds.
    pub fn server_timing_ms(&self, name: &str) -> Option<f64> {
        self.server_timing
            .as_deref()?
            .split(',')
            .find_map(|metric| {
                let mut parts = metric.trim().split(';');
                (parts.next()? == name).then_some(())?;
                parts.find_map(|p| p.trim().strip_prefix("dur=")?.parse().ok())
            })
    }
}

impl Answer {
    /// The stable error code of an error body (`error.code` on the reference service).
    pub fn error_code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Checks an error answer: status, code, and a request id in the body equal to the header's.
    pub fn check_error(&self, status: StatusCode, code: &str) -> Result<(), String> {
        if self.status != status || self.error_code() != Some(code) {
            return Err(format!(
                "expected {status} {code}, got {} {}: {}",
                self.status,
                self.error_code().unwrap_or("(no code)"),
                self.body
            ));
        }
        let in_body = self.body["error"]["request_id"].as_str();
        if in_body.is_none() || in_body != self.request_id.as_deref() {
            return Err(format!(
                "the body's request_id {in_body:?} is not the x-request-id header {:?}",
                self.request_id
            ));
        }
        Ok(())
    }

    /// [`Answer::check_error`], panicking with the reason (for tests).
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        if let Err(e) = self.check_error(status, code) {
            panic!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers every request on the connection it accepted and keeps it open, and
    /// then stops listening: a replica whose kept-alive connection outlives its listener.
    #[tokio::test]
    async fn a_replica_taken_down_gets_a_new_connection_not_the_kept_alive_one() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            drop(listener);
            let mut buf = [0u8; 4096];
            loop {
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
            }
        });
        let client = ApiClient::with_bases(vec![base]);
        let get = |c: &ApiClient| c.request(Method::GET, "/x").send();
        assert_eq!(get(&client).await.unwrap().status, StatusCode::OK);
        // The listener is gone; the kept-alive connection would still answer.
        let clone = client.clone();
        assert_eq!(get(&clone).await.unwrap().status, StatusCode::OK);
        clone.stop_reusing_connections(0);
        let refused = get(&client).await.expect_err("a new connection is refused");
        assert_eq!(refused.failure(), "no connection (refused or unreachable)");
        client.reuse_connections(0);
        assert_eq!(get(&client).await.unwrap().status, StatusCode::OK);
        server.abort();
    }

    #[test]
    fn server_timing_is_read_by_metric_name() {
        let answer = |header: Option<&str>| Answer {
            method: Method::POST,
            path: "/".into(),
            status: StatusCode::OK,
            body: Value::Null,
            raw: String::new(),
            code: None,
            authorization_url: None,
            request_id: None,
            retry_after: None,
            content_type: None,
            server_timing: header.map(str::to_owned),
        };
        let a = answer(Some("db;dur=2, lock;desc=\"held\";dur=0.512"));
        assert_eq!(a.server_timing_ms("lock"), Some(0.512));
        assert_eq!(a.server_timing_ms("db"), Some(2.0));
        assert_eq!(a.server_timing_ms("lo"), None, "a prefix is another metric");
        assert_eq!(answer(Some("lock")).server_timing_ms("lock"), None);
        assert_eq!(answer(None).server_timing_ms("lock"), None);
    }
}
