//! `invalidate ID --reason TEXT`: appends an `attempt.invalidated` event through
//! `POST /v1/attempts/{id}/invalidate`. It first asks the server for the event it
//! would append (`?dry_run=true`), shows it and asks for confirmation on a
//! terminal; without a terminal it refuses unless `--yes` is given, before
//! contacting the server. `--dry-run` prints the server's dry run and changes
//! nothing.

use super::client::{Client, Json};
use super::confirm;
use super::error::CtlError;
use super::output::{cell, show, Out, Style};
use super::{InvalidateArgs, Settings};
use crate::wire;
use reqwest::Method;
use serde_json::json;

fn post(c: &Client, args: &InvalidateArgs, dry_run: bool) -> Result<Json, CtlError> {
    let mut body = json!({"reason": args.reason});
    if let Some(actor) = &args.actor {
        body["actor_id"] = json!(actor);
    }
    let query = if dry_run {
        vec![("dry_run", "true".to_string())]
    } else {
        vec![]
    };
    let url = c.endpoint(&["v1", "attempts", &args.id, "invalidate"], &query);
    let what = format!("POST {}", super::client::display_path(&url));
    c.json(c.request(Method::POST, url, true).json(&body), &what)
}

/// What the server's dry run says will happen.
fn plan(v: &wire::InvalidationPlan, colour: bool) -> String {
    let event = serde_json::to_string_pretty(&v.event).unwrap_or_default();
    let status = cell(&v.current_status);
    format!(
        "{} attempt {} (current status: {}, target: {})\n\
         by appending this event to the log (an append cannot be undone):\n{}\n",
        super::output::paint(colour, Style::Yellow, "would invalidate"),
        show(&v.attempt_id),
        super::output::paint(colour, Style::for_status(&status), &status),
        show(&v.target),
        event
    )
}

pub fn invalidate(
    settings: &Settings,
    out: &mut Out,
    json: bool,
    args: &InvalidateArgs,
) -> Result<(), CtlError> {
    let c = settings.client()?;
    if args.dry_run {
        let r = post(&c, args, true)?;
        if json {
            return out.raw(&r.raw);
        }
        out.text(&plan(&r.parse()?, out.colour))?;
        return out.line("dry run: nothing was changed");
    }
    if !args.yes {
        if !confirm::can_ask() {
            return Err(CtlError::Usage(format!(
                "refusing to invalidate attempt {:?} without confirmation: stdin is not a \
                 terminal, so nobody can be asked. Check with --dry-run, then pass --yes",
                args.id
            )));
        }
        // Also checks the attempt exists and the reason is accepted.
        let r = post(&c, args, true)?;
        let colour =
            super::output::colour_wanted(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        let p: wire::InvalidationPlan = r.parse()?;
        eprint!("{}", plan(&p, colour));
        if !confirm::ask(&format!("Invalidate attempt {}?", show(&p.attempt_id)))? {
            return Err(CtlError::Failed(
                "not confirmed: nothing was changed".into(),
            ));
        }
    }
    let r = post(&c, args, false)?;
    if json {
        return out.raw(&r.raw);
    }
    let v: wire::Invalidated = r.parse()?;
    out.line(&format!(
        "{} attempt {}: event {} appended at seq {} (head hash {})",
        out.paint(Style::Yellow, "invalidated"),
        show(&v.attempt_id),
        show(&v.event_id),
        show(&v.seq),
        show(&v.head_hash),
    ))
}
