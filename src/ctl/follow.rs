//! `events follow`: prints events as they are appended, like `tail -f`, by paging
//! `GET /v1/events?after_seq=` in log order and sleeping briefly when caught up.
//! Every line starts with the event's seq (with `--json`, one event object per
//! line, as the server sent it), so that a script can resume with
//! `--after-seq <last seq>`. By default it starts at the current head; it stops
//! after `--max-events` or `--max-time`, or when the server goes away (exit 3,
//! with the seq to resume from).

use super::client::Client;
use super::error::CtlError;
use super::output::Out;
use crate::wire;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::time::{Duration, Instant};

const PAGE: u64 = 1000;

#[derive(Debug, clap::Args)]
pub struct FollowArgs {
    /// Print events after this seq (0: from the start of the log). Default: the
    /// current head, i.e. only new events.
    #[arg(long, value_name = "SEQ")]
    pub after_seq: Option<u64>,
    /// Stop after printing this many events.
    #[arg(long, value_name = "N")]
    pub max_events: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs)]
    pub max_time: Option<f64>,
    /// Seconds between polls once caught up.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = super::parse_secs)]
    pub interval: f64,
}

/// `wire::EventsPage`, with each event kept as the server's bytes for `--json`.
#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    next_after_seq: u64,
}

pub fn follow(c: &Client, out: &mut Out, json: bool, args: &FollowArgs) -> Result<(), CtlError> {
    let deadline = args
        .max_time
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let mut after = match args.after_seq {
        Some(s) => s,
        None => {
            c.get(&["v1", "log", "head"], &[])?
                .parse::<wire::Head>()?
                .seq
                .0
        }
    };
    if !json {
        eprintln!(
            "following {} after seq {after} (Ctrl-C to stop)",
            c.url().url
        );
    }
    let mut printed = 0u64;
    let interval = Duration::from_secs_f64(args.interval);
    loop {
        let want = match args.max_events {
            Some(max) if printed >= max => return Ok(()),
            Some(max) => (max - printed).min(PAGE),
            None => PAGE,
        };
        let q = [
            ("after_seq", after.to_string()),
            ("limit", want.to_string()),
        ];
        let r = c
            .get(&["v1", "events"], &q)
            .map_err(|e| resume_hint(e, after))?;
        let page: Page = serde_json::from_str(&r.raw).map_err(|e| CtlError::BadResponse {
            what: "GET /v1/events".into(),
            detail: e.to_string(),
        })?;
        let mut text = String::new();
        for raw in &page.events {
            let e: wire::Event =
                serde_json::from_str(raw.get()).map_err(|e| CtlError::BadResponse {
                    what: "GET /v1/events".into(),
                    detail: e.to_string(),
                })?;
            if json {
                text.push_str(raw.get());
            } else {
                text.push_str(&line(&e));
            }
            text.push('\n');
            after = e.seq.0;
        }
        printed += page.events.len() as u64;
        after = after.max(page.next_after_seq);
        out.text(&text)?;
        if (page.events.len() as u64) < want {
            // Caught up: wait, unless time is up.
            let mut nap = interval;
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    return Ok(());
                }
                nap = nap.min(d - now);
            }
            std::thread::sleep(nap);
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
    }
}

/// One event as a line: seq first, then fixed-width columns.
fn line(e: &wire::Event) -> String {
    let row = super::read::event_row(e);
    format!(
        "{:>6}  {:<27}  {:<24}  {}  target={}  attempt={}  actor={}",
        row[0], row[1], row[2], row[3], row[4], row[5], row[6],
    )
}

fn resume_hint(e: CtlError, after: u64) -> CtlError {
    match e {
        CtlError::Unreachable { url, cause, .. } => CtlError::Unreachable {
            url,
            cause,
            hint: format!("\n  resume with: leviathanctl events follow --after-seq {after}"),
        },
        other => other,
    }
}
