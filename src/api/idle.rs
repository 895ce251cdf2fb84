//! Which open connections are idle, so that a new connection at
//! `LEVIATHAN_MAX_CONNECTIONS` can take the place of an idle one.
//!
//! Without it, a client that opened connections and sent nothing (or
//! nothing more after a 401: no token is needed to open one) held the cap
//! for as long as the header read timeout let each of them live, reopening
//! them as they were closed, and every other client got 503. Now a new
//! connection at the cap closes the connection idle the longest (idle for
//! at least [`MIN_IDLE`]) and takes its place.
//!
//! Owns: each connection's busy count and idle time, and the signal to
//! close. Never closes a connection with a request in progress: a request
//! is in progress from its headers until its answer's body has been sent
//! or dropped, so an event stream is busy for as long as it runs.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A connection must have been idle this long to be closed for a new one:
/// a client that has just connected is about to send its request.
pub const MIN_IDLE: Duration = Duration::from_millis(500);

/// The open connections within the cap.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
}

/// One connection's state.
#[derive(Debug)]
pub struct Conn {
    /// Requests in progress (HTTP/1.1: at most one; counted for safety).
    busy: AtomicUsize,
    /// Since when nothing has been in progress.
    idle_since: Mutex<Instant>,
    /// Chosen to make room, and not yet closed or found busy.
    closing: AtomicBool,
    close: tokio::sync::Notify,
}

/// A connection's place in [`Connections`], given back when dropped.
pub struct Registration {
    id: u64,
    connections: Arc<Connections>,
    pub conn: Arc<Conn>,
}

impl Connections {
    /// A new connection, idle from now.
    pub fn register(self: &Arc<Self>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            closing: AtomicBool::new(false),
            close: tokio::sync::Notify::new(),
        });
        self.lock().insert(id, conn.clone());
        Registration {
            id,
            connections: self.clone(),
            conn,
        }
    }

    /// Tells the connection idle the longest (at least `min_idle`) to close;
    /// false if none is.
    pub fn close_one_idle(&self, min_idle: Duration) -> bool {
        let open = self.lock();
        let now = Instant::now();
        let oldest = open
            .values()
            .filter(|c| !c.closing.load(Ordering::Acquire) && c.busy.load(Ordering::Acquire) == 0)
            .filter_map(|c| {
                let since = *c.idle_since.lock().unwrap_or_else(PoisonError::into_inner);
                (now.saturating_duration_since(since) >= min_idle).then_some((since, c))
            })
            .min_by_key(|(since, _)| *since);
        let Some((_, conn)) = oldest else {
            return false;
        };
        conn.closing.store(true, Ordering::Release);
        conn.close.notify_one();
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

impl Conn {
    /// A request in progress until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Resolves once the connection was chosen to make room for another.
    pub async fn asked_to_close(&self) {
        self.close.notified().await;
    }

    /// Whether the connection may close now: nothing in progress. If
    /// something is (a request arrived after it was chosen), it stays open
    /// and may be chosen again later.
    pub fn close_now(&self) -> bool {
        if self.busy.load(Ordering::Acquire) == 0 {
            return true;
        }
        self.closing.store(false, Ordering::Release);
        false
    }
}

/// A request in progress on its connection.
#[derive(Debug)]
pub struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body that keeps its request in progress until it has been
/// sent or dropped.
pub struct Tracked<B> {
    inner: B,
    _busy: Busy,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, busy: Busy) -> Tracked<B> {
        Tracked { inner, _busy: busy }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_idle_the_longest_is_chosen_and_a_busy_one_never() {
        let conns = Arc::new(Connections::default());
        let a = conns.register();
        std::thread::sleep(Duration::from_millis(5));
        let b = conns.register();
        let busy_a = a.conn.busy();
        // a is busy: b is the only idle one, and only past min_idle.
        assert!(!conns.close_one_idle(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(conns.close_one_idle(Duration::from_millis(1)));
        assert!(b.conn.closing.load(Ordering::Acquire));
        assert!(!a.conn.closing.load(Ordering::Acquire));
        // b is chosen already; a is busy: nothing more to close.
        assert!(!conns.close_one_idle(Duration::ZERO));
        // A request arrived on b before it closed: it stays, and can be chosen again.
        let busy_b = b.conn.busy();
        assert!(!b.conn.close_now());
        drop(busy_a);
        std::thread::sleep(Duration::from_millis(5));
        drop(busy_b);
        // Each is idle since its request ended: a's ended first.
        assert!(conns.close_one_idle(Duration::ZERO));
        assert!(a.conn.closing.load(Ordering::Acquire));
        assert!(a.conn.close_now());
        drop(a);
        assert_eq!(conns.lock().len(), 1);
    }
}
