//! What crosses a PostgreSQL link, counted from the wire: the proxy frames the protocol's messages
//! in both directions (it changes none of them) and counts the round trips (each `ReadyForQuery`
//! the server sends ends one), the statements (each `CommandComplete` or `ErrorResponse`), the
//! transactions (each return to idle after at least one statement) and the connections opened
//! (whose first `ReadyForQuery` is the start-up's, not a request's). Exact where a timing or a
//! server-wide statistic would not be: `pg_stat_database` counts every client of the server.

use std::sync::atomic::{AtomicBool, Ordering};
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

/// One connection's framers, one per direction, sharing whether the client asked for TLS (the
/// server then answers one unframed byte).
pub(super) fn framers(tally: Arc<Tally>) -> (ClientFramer, ServerFramer) {
    let asked_tls = Arc::new(AtomicBool::new(false));
    (
        ClientFramer {
            buf: Vec::new(),
            typed: false,
            asked_tls: asked_tls.clone(),
        },
        ServerFramer {
            buf: Vec::new(),
            tally,
            asked_tls,
            tls_answered: false,
            opaque: false,
            started: false,
            statements_since_ready: 0,
            parsed_since_ready: false,
        },
    )
}

/// Frames what the client sends, only to know when the start-up is over and whether TLS was
/// asked for.
pub(super) struct ClientFramer {
    buf: Vec<u8>,
    typed: bool,
    asked_tls: Arc<AtomicBool>,
}

impl ClientFramer {
    /// Takes the next bytes the client sent.
    pub(super) fn feed(&mut self, bytes: &[u8]) {
        if self.typed {
            // Nothing after the start-up matters on this side.
            return;
        }
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
    tls_answered: bool,
    /// A TLS session: nothing on it is readable, so nothing more is counted.
    opaque: bool,
    started: bool,
    statements_since_ready: u64,
    parsed_since_ready: bool,
}

impl ServerFramer {
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
