//! What crosses a PostgreSQL link, counted from the wire: the proxy frames the protocol's messages
//! in both directions (it changes none of them) and counts the round trips (each `ReadyForQuery`
//! the server sends ends one), the statements (each `CommandComplete` or `ErrorResponse`), the
//! transactions (each return to idle after at least one statement) and the connections opened
//! (whose first `ReadyForQuery` is the start-up's, not a request's). Exact where a timing or a
//! server-wide statistic would not be: `pg_stat_database` counts every client of the server.
//!
//! The client's side is framed too, for one fault: it tells the proxy when the client runs a
//! statement on its own — an `Execute` sent while the server last said it was idle, outside any
//! transaction block — whose commit is the statement's own
//! ([`crate::faults::FaultKind::PostgresLoseStatementReply`]).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The counts of one link (every connection through one proxy), since it started. Updated once
/// per `ReadyForQuery`: one lock, not an atomic per count.
#[derive(Debug, Default)]
pub struct Tally(Mutex<Counts>);

/// A reading of a [`Tally`] (or the sum of several, or a difference of two).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Exchanges that ended with the server ready for the next query (a simple query, or an
    /// extended-protocol `Sync`), start-ups left out.
    pub round_trips: u64,
    /// Statements the server completed or refused.
    pub statements: u64,
    /// Returns to idle after at least one statement: explicit transactions and single
    /// statements run on their own.
    pub transactions: u64,
    /// Connections opened.
    pub connections: u64,
    /// Round trips that only prepared statements (parsed and described them: a statement cache
    /// that had not seen them on this connection).
    pub prepares: u64,
    /// Round trips that did nothing at all: the pool's liveness pings.
    pub pings: u64,
}

impl Counts {
    /// What happened between `self` (earlier) and `later`.
    pub fn until(self, later: Counts) -> Counts {
        self.zip(later, |earlier, later| later - earlier)
    }

    /// The sum of two readings.
    pub fn plus(self, other: Counts) -> Counts {
        self.zip(other, |a, b| a + b)
    }

    /// `f` of each count of `self` and the same count of `other`.
    fn zip(self, other: Counts, f: fn(u64, u64) -> u64) -> Counts {
        Counts {
            round_trips: f(self.round_trips, other.round_trips),
            statements: f(self.statements, other.statements),
            transactions: f(self.transactions, other.transactions),
            connections: f(self.connections, other.connections),
            prepares: f(self.prepares, other.prepares),
            pings: f(self.pings, other.pings),
        }
    }
}

impl Tally {
    /// What it has counted so far.
    pub fn read(&self) -> Counts {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, change: impl FnOnce(&mut Counts)) {
        change(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// The length word of the start-up codes that are not a start-up message: `SSLRequest`,
/// `GSSENCRequest`, `CancelRequest` (each is followed by another untyped message, or nothing).
const PRE_STARTUP_CODES: [u32; 3] = [80_877_103, 80_877_104, 80_877_102];

/// What `ServerFramer::status` holds before the server's first `ReadyForQuery`.
const NOT_READY: u8 = 0;

/// One connection's framers, one per direction, sharing whether the client asked for TLS (the
/// server then answers one unframed byte) and the transaction status of the server's last
/// `ReadyForQuery`.
pub(super) fn framers(tally: Arc<Tally>) -> (ClientFramer, ServerFramer) {
    let asked_tls = Arc::new(AtomicBool::new(false));
    let status = Arc::new(AtomicU8::new(NOT_READY));
    (
        ClientFramer {
            buf: Vec::new(),
            typed: false,
            asked_tls: asked_tls.clone(),
            header: Vec::with_capacity(5),
            skip: 0,
            server_status: status.clone(),
        },
        ServerFramer {
            buf: Vec::new(),
            tally,
            asked_tls,
            status,
            tls_answered: false,
            opaque: false,
            started: false,
            statements_since_ready: 0,
            parsed_since_ready: false,
            readies: 0,
        },
    )
}

/// Frames what the client sends: the start-up (whether TLS was asked for), then each typed
/// message's kind, skipping its body without copying it.
pub(super) struct ClientFramer {
    /// The start-up's bytes until it is whole.
    buf: Vec<u8>,
    typed: bool,
    asked_tls: Arc<AtomicBool>,
    /// The kind and length of the typed message being read, until all five bytes are in.
    header: Vec<u8>,
    /// How many bytes of the current message's body are still to come.
    skip: usize,
    /// The transaction status of the server's last `ReadyForQuery` (`I`, `T`, `E`).
    server_status: Arc<AtomicU8>,
}

/// What some bytes the client sent carried, as far as the faults care.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Sent {
    /// They end an `Execute` sent while the server was idle: a statement run on its own,
    /// committed by itself. (The client waits for each `ReadyForQuery` before it sends more, so
    /// the last one the server sent is the status its next statement runs in.)
    pub alone: bool,
    /// They end a `Sync`: what the client sends next is another exchange.
    pub synced: bool,
}

impl ClientFramer {
    /// Takes the next bytes the client sent.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Sent {
        if self.typed {
            return self.feed_typed(bytes);
        }
        self.feed_start_up(bytes);
        if !self.typed {
            return Sent::default();
        }
        // What the start-up's messages left of the buffer is the first typed bytes.
        let rest = std::mem::take(&mut self.buf);
        self.feed_typed(&rest)
    }

    fn feed_typed(&mut self, mut bytes: &[u8]) -> Sent {
        let mut sent = Sent::default();
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (5 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() < 5 {
                break;
            }
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]);
            // `E`: Execute (the server's `E` is an error; this side has no such message).
            sent.alone |=
                self.header[0] == b'E' && self.server_status.load(Ordering::SeqCst) == b'I';
            sent.synced |= self.header[0] == b'S';
            self.skip = (len as usize).saturating_sub(4);
            self.header.clear();
        }
        sent
    }

    /// The untyped start-up messages, buffered until each is whole.
    fn feed_start_up(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while !self.typed && self.buf.len() >= 8 {
            let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            let code = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]);
            let len = len as usize;
            if self.buf.len() < len || len < 8 {
                return;
            }
            if code == PRE_STARTUP_CODES[0] {
                self.asked_tls.store(true, Ordering::SeqCst);
            }
            if !PRE_STARTUP_CODES.contains(&code) {
                self.typed = true;
            }
            self.buf.drain(..len);
        }
    }
}

/// Frames what the server sends, and counts.
pub(super) struct ServerFramer {
    buf: Vec<u8>,
    tally: Arc<Tally>,
    asked_tls: Arc<AtomicBool>,
    /// The transaction status of the last `ReadyForQuery`, for the client's framer.
    status: Arc<AtomicU8>,
    tls_answered: bool,
    /// A TLS session: nothing on it is readable, so nothing more is counted.
    opaque: bool,
    started: bool,
    statements_since_ready: u64,
    parsed_since_ready: bool,
    /// `ReadyForQuery` messages framed so far, the start-up's included.
    readies: u64,
}

impl ServerFramer {
    /// How many `ReadyForQuery` messages it has framed: one more once the server has finished
    /// what it was answering.
    pub(super) fn readies(&self) -> u64 {
        self.readies
    }

    /// Takes the next bytes the server sent.
    pub(super) fn feed(&mut self, bytes: &[u8]) {
        if self.opaque {
            return;
        }
        self.buf.extend_from_slice(bytes);
        if !self.tls_answered && self.asked_tls.load(Ordering::SeqCst) && !self.buf.is_empty() {
            // One unframed byte: `N` (the start-up follows in clear) or `S` (a TLS session).
            self.tls_answered = true;
            if self.buf.remove(0) == b'S' {
                self.opaque = true;
                self.buf = Vec::new();
                return;
            }
        }
        while self.buf.len() >= 5 {
            let kind = self.buf[0];
            let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
            let total = 1 + len as usize;
            if self.buf.len() < total {
                return;
            }
            match kind {
                b'C' | b'E' => self.statements_since_ready += 1,
                // ParseComplete: a statement prepared.
                b'1' => self.parsed_since_ready = true,
                b'Z' => {
                    let status = self.buf.get(5).copied().unwrap_or(b'I');
                    self.ready(status);
                }
                _ => {}
            }
            self.buf.drain(..total);
        }
    }

    /// A `ReadyForQuery` with the transaction status `status` (`I` idle, `T` in a transaction,
    /// `E` in a failed one).
    fn ready(&mut self, status: u8) {
        let statements = std::mem::take(&mut self.statements_since_ready);
        let parsed = std::mem::take(&mut self.parsed_since_ready);
        self.status.store(status, Ordering::SeqCst);
        self.readies += 1;
        if !self.started {
            // The start-up's own: a connection, not a request's round trip.
            self.started = true;
            self.tally.count(|c| c.connections += 1);
            return;
        }
        // Back to idle after a statement: a transaction ended — a lone statement, or the
        // `COMMIT` or `ROLLBACK` of one begun earlier (itself a statement). A ping runs none.
        let ended = status == b'I' && statements > 0;
        self.tally.count(|c| {
            c.round_trips += 1;
            c.statements += statements;
            c.transactions += u64::from(ended);
            match (statements, parsed) {
                (0, true) => c.prepares += 1,
                (0, false) => c.pings += 1,
                _ => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn untyped(code: u32, rest: &[u8]) -> Vec<u8> {
        let mut m = (rest.len() as u32 + 8).to_be_bytes().to_vec();
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(rest);
        m
    }

    #[test]
    fn a_transaction_a_lone_statement_and_a_ping_are_told_apart_in_any_chunking() {
        let tally = Arc::new(Tally::default());
        let (mut client, mut server) = framers(tally.clone());
        // TLS asked for and refused, then the start-up.
        client.feed(&untyped(PRE_STARTUP_CODES[0], &[]));
        client.feed(&untyped(196_608, b"user\0harbor\0\0"));
        let mut wire = vec![b'N'];
        wire.extend(message(b'R', &0u32.to_be_bytes()));
        wire.extend(message(b'Z', b"I"));
        // BEGIN; SELECT … (one simple query, two statements), an UPDATE, COMMIT.
        wire.extend(message(b'C', b"BEGIN\0"));
        wire.extend(message(b'C', b"SELECT 1\0"));
        wire.extend(message(b'Z', b"T"));
        wire.extend(message(b'C', b"UPDATE 1\0"));
        wire.extend(message(b'Z', b"T"));
        wire.extend(message(b'C', b"COMMIT\0"));
        wire.extend(message(b'Z', b"I"));
        // A statement prepared, then run on its own, then a ping (no statement).
        wire.extend(message(b'1', b""));
        wire.extend(message(b't', &[0, 0]));
        wire.extend(message(b'Z', b"I"));
        wire.extend(message(b'C', b"SELECT 1\0"));
        wire.extend(message(b'Z', b"I"));
        wire.extend(message(b'Z', b"I"));
        // Fed a byte at a time: framing must not depend on how the bytes arrive.
        for b in &wire {
            server.feed(std::slice::from_ref(b));
        }
        assert_eq!(
            tally.read(),
            Counts {
                round_trips: 6,
                statements: 5,
                transactions: 2,
                connections: 1,
                prepares: 1,
                pings: 1,
            }
        );
    }

    #[test]
    fn the_client_framer_spots_a_statement_run_on_its_own_in_any_chunking() {
        let tally = Arc::new(Tally::default());
        let (mut client, mut server) = framers(tally);
        let execute = |client: &mut ClientFramer, wire: &[u8]| {
            // A byte at a time: the Execute is spotted in the chunk that completes its header.
            wire.iter()
                .map(|b| client.feed(std::slice::from_ref(b)).alone)
                .fold(false, |a, b| a | b)
        };
        // The start-up and the first typed message in one chunk.
        let mut wire = untyped(196_608, b"user\0harbor\0\0");
        wire.extend(message(b'P', b"\0SELECT 1\0\0\0"));
        assert!(
            !client.feed(&wire).alone,
            "no statement run before the server is ready"
        );
        server.feed(&message(b'Z', b"I"));
        let run = [
            message(b'B', &[0; 10]),
            message(b'E', b"\0\0\0\0\0"),
            message(b'S', b""),
        ]
        .concat();
        assert!(
            execute(&mut client, &run),
            "an Execute while idle runs on its own"
        );
        server.feed(&message(b'Z', b"I"));
        assert!(
            !execute(&mut client, &message(b'S', b"")),
            "a ping runs nothing"
        );
        assert!(!execute(&mut client, &message(b'Q', b"BEGIN\0")));
        server.feed(&message(b'Z', b"T"));
        assert!(!execute(&mut client, &run), "inside a transaction block");
        server.feed(&message(b'Z', b"T"));
        assert!(!execute(&mut client, &message(b'Q', b"COMMIT\0")));
        server.feed(&message(b'Z', b"I"));
        assert_eq!(
            client.feed(&run),
            Sent {
                alone: true,
                synced: true
            },
            "idle again, in one chunk"
        );
    }

    #[test]
    fn a_failed_transaction_rolled_back_is_one_transaction() {
        let tally = Arc::new(Tally::default());
        let (mut client, mut server) = framers(tally.clone());
        client.feed(&untyped(196_608, b"\0"));
        let mut wire = message(b'Z', b"I");
        wire.extend(message(b'C', b"BEGIN\0"));
        wire.extend(message(b'Z', b"T"));
        wire.extend(message(b'E', b"SERROR\0\0"));
        wire.extend(message(b'Z', b"E"));
        wire.extend(message(b'C', b"ROLLBACK\0"));
        wire.extend(message(b'Z', b"I"));
        server.feed(&wire);
        let read = tally.read();
        assert_eq!(
            (read.transactions, read.round_trips, read.connections),
            (1, 3, 1)
        );
    }
}
