//! Cancellation of reads a request runs on a blocking thread. A request's
//! work on such a thread outlives its future: when the client goes away or
//! `LEVIATHAN_REQUEST_TIMEOUT_SECS` fires, the future is dropped, but a walk
//! of the chain or an index scan would run on to its end, for nobody. The
//! HTTP edge (`api::limits`) makes a [`Token`] per request and cancels it when
//! the request's future is dropped; `api::blocking` runs the work under it
//! ([`run_with`]); long read-only walks call [`check`] between items and stop
//! with [`Cancelled`].
//!
//! This module owns the flag and the current thread's token. It never
//! cancels work that writes: only read-only walks check it, and work run
//! outside a request (the background verifier, the CLIs) has no token, so
//! [`check`] never fails there.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The work was cancelled: its request's client went away, or its time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the request was cancelled before its read finished (its client went away, or \
     LEVIATHAN_REQUEST_TIMEOUT_SECS passed)"
)]
pub struct Cancelled;

/// One request's cancellation flag. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Token(Arc<AtomicBool>);

impl Token {
    pub fn new() -> Token {
        Token::default()
    }

    /// Cancels the work running under this token (and any started later).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Token>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread under `token`: [`check`] inside it fails once
/// the token is cancelled. The thread's previous token is restored after.
pub fn run_with<R>(token: &Token, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Token>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| *c.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.borrow_mut().replace(token.clone())));
    f()
}

/// Runs `f` so that nothing in it is cancelled, even inside a request's
/// work: for work that must finish once started (a backup).
pub fn uncancellable<R>(f: impl FnOnce() -> R) -> R {
    run_with(&Token::new(), f)
}

/// `Err(Cancelled)` when the work this thread runs was cancelled; `Ok`
/// outside [`run_with`]. Cheap (a thread-local read and a relaxed load):
/// call it per item of a walk.
pub fn check() -> Result<(), Cancelled> {
    CURRENT.with(|c| match &*c.borrow() {
        Some(t) if t.is_cancelled() => Err(Cancelled),
        _ => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_fails_only_inside_a_cancelled_token_and_the_previous_is_restored() {
        assert_eq!(check(), Ok(()));
        let outer = Token::new();
        let inner = Token::new();
        run_with(&outer, || {
            assert_eq!(check(), Ok(()));
            run_with(&inner, || {
                inner.cancel();
                assert_eq!(check(), Err(Cancelled));
            });
            // Back under the outer token, which is not cancelled.
            assert_eq!(check(), Ok(()));
            outer.cancel();
            assert_eq!(check(), Err(Cancelled));
        });
        assert_eq!(check(), Ok(()));
        // Another thread never sees this thread's token.
        let t = Token::new();
        t.cancel();
        run_with(&t, || {
            std::thread::spawn(|| assert_eq!(check(), Ok(())))
                .join()
                .unwrap();
        });
    }
}
