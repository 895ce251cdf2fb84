//! A connection's write timeout (`LEVIATHAN_WRITE_TIMEOUT_SECS`): a
//! connection that takes none of an answer's bytes for that long is closed.
//!
//! An event stream lengthens its connection's timeout by
//! `LEVIATHAN_STREAM_STALL_SECS` while it runs: its own stall limit must come
//! first. A stream only learns that its client stopped reading when the
//! client reads again (the HTTP layer asks for the next event once the socket
//! takes bytes); with the plain timeout, a client that paused for longer than
//! it was cut off without the `lagged` event, and with both at their defaults
//! (30 s) the timeout always won. A client that never reads again is still
//! closed, after both.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_io_timeout::TimeoutStream;

/// One connection's write timeout, shared by the connection and the requests
/// it serves (a request extension).
#[derive(Clone, Debug)]
pub struct WriteTimeout {
    base: Duration,
    /// The timeout now, in milliseconds.
    now_ms: Arc<AtomicU64>,
}

impl WriteTimeout {
    pub fn new(base: Duration) -> WriteTimeout {
        WriteTimeout {
            base,
            now_ms: Arc::new(AtomicU64::new(millis(base))),
        }
    }

    /// The timeout is `base + by` until the guard is dropped.
    pub fn lengthen(&self, by: Duration) -> Lengthened {
        self.now_ms
            .store(millis(self.base.saturating_add(by)), Ordering::Relaxed);
        Lengthened(self.clone())
    }

    fn now(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Restores the connection's own write timeout when dropped.
#[derive(Debug)]
pub struct Lengthened(WriteTimeout);

impl Drop for Lengthened {
    fn drop(&mut self) {
        self.0.now_ms.store(millis(self.0.base), Ordering::Relaxed);
    }
}

/// A TCP connection whose writes time out after its [`WriteTimeout`] (the
/// value when a write starts waiting; a change resets the wait).
pub struct TimedIo {
    inner: Pin<Box<TimeoutStream<TcpStream>>>,
    timeout: WriteTimeout,
    applied: u64,
}

impl TimedIo {
    pub fn new(stream: TcpStream, timeout: WriteTimeout) -> TimedIo {
        let applied = timeout.now();
        let mut inner = TimeoutStream::new(stream);
        inner.set_write_timeout(Some(Duration::from_millis(applied)));
        TimedIo {
            inner: Box::pin(inner),
            timeout,
            applied,
        }
    }

    /// Applies a timeout changed since the last write.
    fn sync(&mut self) {
        let now = self.timeout.now();
        if now != self.applied {
            self.applied = now;
            self.inner
                .as_mut()
                .set_write_timeout_pinned(Some(Duration::from_millis(now)));
        }
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().inner.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.sync();
        this.inner.as_mut().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.sync();
        this.inner.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.sync();
        this.inner.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.sync();
        this.inner.as_mut().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lengthened_timeout_is_restored_when_its_guard_drops() {
        let t = WriteTimeout::new(Duration::from_secs(30));
        assert_eq!(t.now(), 30_000);
        let guard = t.clone().lengthen(Duration::from_secs(30));
        assert_eq!(t.now(), 60_000);
        drop(guard);
        assert_eq!(t.now(), 30_000);
    }
}
