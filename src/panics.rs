//! Panics turned into errors where a thread must not vanish silently (the
//! writer, the follower, a generation build, a request handler). It owns the
//! reading of a panic's payload; it must never swallow a panic without
//! returning it as an error to report.

use std::any::Any;

/// The text of a panic's payload (`panic!` gives a `&str` or a `String`).
pub fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".into())
}

/// Runs `f`; a panic in it becomes an error saying that `what` panicked.
pub fn caught<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(anyhow::anyhow!("{what} panicked: {}", message(p.as_ref()))))
}

/// The hidden test hook `LEVIATHAN_TEST_PANIC_ON_EVENT=<event id>`:
/// projecting that event panics, wherever it is projected (the writer, a
/// generation build, a rebuild, the async follower), so the test suites can
/// check that each turns the panic into a visible failure. The variable is
/// read once; unset (as in production) this is one load and a compare.
pub fn test_hook_on_event(event_id: &str) {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let id = ID.get_or_init(|| {
        std::env::var("LEVIATHAN_TEST_PANIC_ON_EVENT")
            .ok()
            .filter(|s| !s.is_empty())
    });
    if id.as_deref() == Some(event_id) {
        panic!("LEVIATHAN_TEST_PANIC_ON_EVENT: projecting event {event_id:?} panics on purpose");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let r: anyhow::Result<()> = caught("the round", || panic!("boom {}", 7));
        assert_eq!(r.unwrap_err().to_string(), "the round panicked: boom 7");
        let r: anyhow::Result<()> = caught("x", || std::panic::panic_any(42u8));
        assert!(r.unwrap_err().to_string().contains("non-string"));
        assert_eq!(caught("x", || Ok(3)).unwrap(), 3);
    }
}
