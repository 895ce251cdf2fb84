//! Progress bars of the offline commands (`verify`, `export`, `import`):
//! drawn on stderr only when it is a terminal, so scripts and logs never see
//! them; and the events-per-second figure every report gives.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// `count` over `seconds`, 0 when no time passed (a report's
/// `events_per_second`).
pub fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// A bar for `len` events, labelled `what`; hidden unless stderr is a
/// terminal (indicatif draws nothing to a stderr that is not one).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {human_pos}/{human_len} events, {per_sec}, eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}
