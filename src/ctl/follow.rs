//! `events follow`: prints events as they are appended, like `tail -f`, from the
//! server's event stream (`GET /v1/events/stream`, Server-Sent Events). Every
//! line starts with the event's seq (with `--json`, one event object per line,
//! as the server sent it), so that a script can resume with
//! `--after-seq <last seq>`. By default it starts at the current head; it stops
//! after `--max-events` or `--max-time`, or when the server goes away (exit 3,
//! with the seq to resume from). When the server ends the stream (it fell
//! behind, or the server restarts), it reconnects after the last seq printed,
//! so nothing is lost or printed twice.

use super::client::Client;
use super::error::CtlError;
use super::output::Out;
use crate::wire;
use reqwest::Method;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct FollowArgs {
    /// Print events after this seq (0: from the start of the log). Default: the
    /// current head, i.e. only new events.
    #[arg(long, value_name = "SEQ")]
    pub after_seq: Option<u64>,
    /// Only events of this type (`attempt.failed`), or of a prefix (`attempt.*`).
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Only events of this target.
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,
    /// Stop after printing this many events.
    #[arg(long, value_name = "N")]
    pub max_events: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs)]
    pub max_time: Option<f64>,
    /// Seconds to wait before reconnecting when the server ended the stream.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = super::parse_secs)]
    pub interval: f64,
}

/// One message of the stream.
#[derive(Default)]
struct Message {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

enum Ended {
    /// `--max-events` or `--max-time` reached.
    Done,
    /// The server ended the stream; reconnect after the last seq printed.
    Reconnect,
}

pub fn follow(c: &Client, out: &mut Out, json: bool, args: &FollowArgs) -> Result<(), CtlError> {
    let deadline = args
        .max_time
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let mut after = args.after_seq;
    let mut printed = 0u64;
    let mut announced = false;
    loop {
        let ended = follow_once(
            c,
            out,
            json,
            args,
            deadline,
            &mut after,
            &mut printed,
            &mut announced,
        )
        .map_err(|e| resume_hint(e, after))?;
        match ended {
            Ended::Done => return Ok(()),
            Ended::Reconnect => {
                let mut nap = Duration::from_secs_f64(args.interval);
                if let Some(d) = deadline {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(());
                    }
                    nap = nap.min(d - now);
                }
                std::thread::sleep(nap);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn follow_once(
    c: &Client,
    out: &mut Out,
    json: bool,
    args: &FollowArgs,
    deadline: Option<Instant>,
    after: &mut Option<u64>,
    printed: &mut u64,
    announced: &mut bool,
) -> Result<Ended, CtlError> {
    let mut q = Vec::new();
    if let Some(a) = *after {
        q.push(("after_seq", a.to_string()));
    }
    if let Some(t) = &args.event_type {
        q.push(("type", t.clone()));
    }
    if let Some(t) = &args.target {
        q.push(("target", t.clone()));
    }
    let url = c.endpoint(&["v1", "events", "stream"], &q);
    let mut req = c
        .request(Method::GET, url, false)
        .header(reqwest::header::ACCEPT, "text/event-stream");
    if let Some(d) = deadline {
        let left = d.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Ended::Done);
        }
        // Covers reading the body too: the read that outlives it fails, and
        // the deadline says why.
        req = req.timeout(left);
    }
    if args.max_events.is_some_and(|m| *printed >= m) {
        return Ok(Ended::Done);
    }
    let resp = match c.send(req) {
        Ok(r) => r,
        Err(CtlError::Unreachable { .. }) if deadline.is_some_and(|d| Instant::now() >= d) => {
            return Ok(Ended::Done)
        }
        Err(e) => return Err(e),
    };
    let mut lines = BufReader::new(resp);
    let mut msg = Message::default();
    let mut line = String::new();
    loop {
        line.clear();
        let n = match lines.read_line(&mut line) {
            Ok(n) => n,
            Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => return Ok(Ended::Done),
            Err(e) => {
                return Err(CtlError::Unreachable {
                    url: c.url().clone(),
                    cause: format!("the event stream broke: {e}"),
                    hint: String::new(),
                })
            }
        };
        if n == 0 {
            return Ok(Ended::Reconnect);
        }
        let l = line.trim_end_matches(['\n', '\r']);
        if !l.is_empty() {
            if let Some(comment) = l.strip_prefix(':') {
                // `: stream open after_seq=N head_seq=H`: where it starts.
                if let Some(rest) = comment.trim().strip_prefix("stream open after_seq=") {
                    let start: Option<u64> =
                        rest.split_whitespace().next().and_then(|s| s.parse().ok());
                    if after.is_none() {
                        *after = start;
                    }
                    if !*announced && !json {
                        eprintln!(
                            "following {} after seq {} (Ctrl-C to stop)",
                            c.url().url,
                            start.unwrap_or(0)
                        );
                    }
                    *announced = true;
                }
                continue;
            }
            let (field, value) = match l.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (l, ""),
            };
            match field {
                "id" => msg.id = Some(value.to_string()),
                "event" => msg.event = Some(value.to_string()),
                "data" => {
                    if !msg.data.is_empty() {
                        msg.data.push('\n');
                    }
                    msg.data.push_str(value);
                }
                _ => {}
            }
            continue;
        }
        // A blank line ends a message.
        let m = std::mem::take(&mut msg);
        match m.event.as_deref() {
            None | Some("message") if !m.data.is_empty() => {
                let e: wire::Event =
                    serde_json::from_str(&m.data).map_err(|e| CtlError::BadResponse {
                        what: "GET /v1/events/stream".into(),
                        detail: e.to_string(),
                    })?;
                let mut text = if json { m.data } else { line_of(&e) };
                text.push('\n');
                out.text(&text)?;
                *after = Some(e.seq.0);
                *printed += 1;
                if args.max_events.is_some_and(|max| *printed >= max) {
                    return Ok(Ended::Done);
                }
            }
            Some("lagged") => {
                eprintln!(
                    "the server says this client fell behind; resuming after seq {}",
                    after.unwrap_or(0)
                );
                return Ok(Ended::Reconnect);
            }
            Some("error") => {
                return Err(CtlError::BadResponse {
                    what: "GET /v1/events/stream".into(),
                    detail: format!("the server ended the stream with an error: {}", m.data),
                })
            }
            _ => {}
        }
    }
}

/// One event as a line: seq first, then fixed-width columns.
fn line_of(e: &wire::Event) -> String {
    let row = super::read::event_row(e);
    format!(
        "{:>6}  {:<27}  {:<24}  {}  target={}  attempt={}  actor={}",
        row[0], row[1], row[2], row[3], row[4], row[5], row[6],
    )
}

fn resume_hint(e: CtlError, after: Option<u64>) -> CtlError {
    match (e, after) {
        (CtlError::Unreachable { url, cause, .. }, Some(after)) => CtlError::Unreachable {
            url,
            cause,
            hint: format!("\n  resume with: leviathanctl events follow --after-seq {after}"),
        },
        (other, _) => other,
    }
}
