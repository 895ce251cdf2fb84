//! `nodes show ID [--as-of SEQ]` (`GET /v1/graph/nodes/{id}?as_of_seq=`) and
//! `nodes history ID` (`GET /v1/graph/nodes/{id}/history`): one node now or
//! as it stood right after a seq, and every change that made it, oldest first.

use super::client::Client;
use super::error::CtlError;
use super::output::{cell, clean, show, Out, Style, Table};
use crate::wire;

/// `nodes show ID [--as-of SEQ]`.
pub fn node(
    c: &Client,
    out: &mut Out,
    json: bool,
    id: &str,
    as_of: Option<u64>,
) -> Result<(), CtlError> {
    let q: Vec<(&str, String)> = as_of
        .map(|n| ("as_of_seq", n.to_string()))
        .into_iter()
        .collect();
    let r = c.get(&["v1", "graph", "nodes", id], &q)?;
    if json {
        return out.raw(&r.raw);
    }
    let n: wire::Node = r.parse()?;
    let mut fields = vec![
        ("node".to_string(), show(&n.node_id)),
        ("type".to_string(), show(&n.node_type)),
        (
            "created".to_string(),
            format!("{} (seq {})", show(&n.created_at), show(&n.created_seq)),
        ),
        (
            "updated".to_string(),
            format!("{} (seq {})", show(&n.updated_at), show(&n.updated_seq)),
        ),
    ];
    if let Some(seq) = as_of {
        fields.push(("as of seq".to_string(), seq.to_string()));
    }
    for (k, v) in &n.properties {
        fields.push((clean(k), cell(v)));
    }
    out.fields(&fields)
}

/// `nodes history ID [--limit N] [--cursor C]`.
pub fn history(
    c: &Client,
    out: &mut Out,
    json: bool,
    id: &str,
    limit: Option<u64>,
    cursor: Option<String>,
) -> Result<(), CtlError> {
    let mut q = Vec::new();
    if let Some(l) = limit {
        q.push(("limit", l.to_string()));
    }
    if let Some(cur) = cursor {
        q.push(("cursor", cur));
    }
    let r = c.get(&["v1", "graph", "nodes", id, "history"], &q)?;
    if json {
        return out.raw(&r.raw);
    }
    let page: wire::NodeHistoryPage = r.parse()?;
    let mut t =
        Table::new(&["SEQ", "EVENT TYPE", "EVENT ID", "PROJECTOR", "OP", "RESULT"]).right(0);
    for ch in &page.changes {
        let result = match &ch.node {
            Some(n) => format!("{} properties", n.properties.len()),
            None => "deleted".to_string(),
        };
        t.row(vec![
            format!("{}.{}", ch.seq, ch.ord),
            show(&ch.event_type),
            show(&ch.event_id),
            ch.projector.as_deref().map_or_else(|| "-".into(), clean),
            cell(ch.op.get("op").unwrap_or(&serde_json::Value::Null)),
            result,
        ]);
    }
    if t.is_empty() {
        out.line(&format!("no changes of {}", clean(id)))?;
    } else {
        out.table(&t)?;
    }
    if page.history_from.0 > 1 {
        out.line(&out.paint(
            Style::Dim,
            &format!(
                "the history starts at seq {} (run `leviathan rebuild` to index earlier seqs)",
                page.history_from
            ),
        ))?;
    }
    super::read::more(
        out,
        page.next_cursor.as_deref(),
        "nodes history",
        Some(id),
        &[("--limit", limit.map(|l| l.to_string()))],
    )
}
