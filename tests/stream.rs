//! `GET /v1/events/stream` (Server-Sent Events) against a real server: events as
//! `/v1/events` serves them, resume after a disconnect without loss or
//! duplicates (`Last-Event-ID` and `?after_seq=`), the type and target filters,
//! heartbeats, the cut-off of a client that does not keep up, the cap on open
//! streams, and streams that end at shutdown.
//!
//! The client is a plain TCP socket speaking HTTP/1.0, so that the response
//! body is the raw event stream (delimited by the connection's close) and the
//! test decides exactly when bytes are read.
#![cfg_attr(test, allow(clippy::unwrap_used))]

use crate::common;

use common::{bundle, event, events, Server, TOKEN};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One message of the stream.
#[derive(Debug, Clone, PartialEq)]
enum Msg {
    Event { id: u64, data: Value },
    Named { event: String, data: Value },
    Comment(String),
}

struct Stream {
    r: BufReader<TcpStream>,
}

/// Opens `/v1/events/stream{query}`; `None` and the (status, body) when the
/// answer is not 200.
fn open(s: &Server, query: &str, last_event_id: Option<u64>) -> Result<Stream, (u16, Value)> {
    open_as(s, query, last_event_id, TOKEN)
}

/// [`open`] with another bearer token.
fn open_as(
    s: &Server,
    query: &str,
    last_event_id: Option<u64>,
    token: &str,
) -> Result<Stream, (u16, Value)> {
    let addr = s.base.trim_start_matches("http://");
    // A small receive buffer (no autotuning): a client that stops reading
    // must be seen by the server, not absorbed by the kernel (loopback's
    // tcp_rmem allows up to 32 MiB here).
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    let sa: std::net::SocketAddr = addr.parse().unwrap();
    sock.connect(&sa.into()).unwrap();
    let mut tcp: TcpStream = sock.into();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "GET /v1/events/stream{query} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
    );
    if let Some(id) = last_event_id {
        req.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(tcp);
    let mut status_line = String::new();
    r.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut content_type = String::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l.trim().is_empty() {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-type:") {
            content_type = v.trim().to_string();
        }
    }
    if status != 200 {
        let mut body = String::new();
        r.read_to_string(&mut body).unwrap();
        return Err((status, serde_json::from_str(&body).unwrap_or(Value::Null)));
    }
    // The charset too: clients that take it from the header (Python's
    // requests) decode the stream as Latin-1 without it.
    assert_eq!(content_type, "text/event-stream; charset=utf-8");
    Ok(Stream { r })
}

impl Stream {
    /// The next message; `None` at the end of the stream.
    fn next(&mut self) -> Option<Msg> {
        let (mut id, mut name, mut data) = (None, None, String::new());
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l).unwrap() == 0 {
                return None;
            }
            let l = l.trim_end_matches(['\n', '\r']);
            if l.is_empty() {
                if data.is_empty() && id.is_none() && name.is_none() {
                    continue;
                }
                let data: Value = serde_json::from_str(&data).unwrap();
                return Some(match name {
                    Some(event) => Msg::Named { event, data },
                    None => Msg::Event {
                        id: id.expect("every event has an id"),
                        data,
                    },
                });
            }
            if let Some(c) = l.strip_prefix(':') {
                if data.is_empty() && id.is_none() {
                    return Some(Msg::Comment(c.trim().to_string()));
                }
                continue;
            }
            let (f, v) = l.split_once(':').unwrap_or((l, ""));
            let v = v.strip_prefix(' ').unwrap_or(v);
            match f {
                "id" => id = Some(v.parse::<u64>().unwrap()),
                "event" => name = Some(v.to_string()),
                "data" => data.push_str(v),
                "retry" => {}
                other => panic!("unexpected field {other:?}"),
            }
        }
    }

    /// The next event, skipping comments (heartbeats, the opening line).
    fn event(&mut self) -> Msg {
        loop {
            match self.next() {
                Some(Msg::Comment(_)) => continue,
                Some(m) => return m,
                None => panic!("the stream ended"),
            }
        }
    }

    /// The next `n` events' (seq, data).
    fn events(&mut self, n: usize) -> Vec<(u64, Value)> {
        (0..n)
            .map(|_| match self.event() {
                Msg::Event { id, data } => (id, data),
                other => panic!("expected an event, got {other:?}"),
            })
            .collect()
    }

    /// The opening comment: `stream open after_seq=N head_seq=H`.
    fn opening(&mut self) -> String {
        match self.next() {
            Some(Msg::Comment(c)) => c,
            other => panic!("expected the opening comment, got {other:?}"),
        }
    }
}

fn typed(id: &str, t: &str, target: &str) -> Value {
    let mut e = event(
        id,
        t,
        json!({"attempt_id": format!("a-{id}"), "task_id": "t1", "target_id": target, "attempt_number": 1}),
    );
    if t == "job.started" {
        e["payload"] = json!({"job": id});
    }
    e
}

#[test]
fn streams_what_events_serves_and_resumes_without_loss_or_duplicates() {
    let s = Server::start();
    for b in 0..3 {
        s.ingest(&bundle(&format!("b{b}"), events(&format!("b{b}"), 10)));
    }
    let all = s.all_events();
    assert_eq!(all.len(), 30);

    // From the start: ids are seqs, data is the event exactly as /v1/events has it.
    let mut st = open(&s, "?after_seq=0", None).unwrap();
    assert_eq!(st.opening(), "stream open after_seq=0 head_seq=30");
    let first = st.events(12);
    for (i, (id, data)) in first.iter().enumerate() {
        assert_eq!(*id, i as u64 + 1);
        assert_eq!(data, &all[i]);
    }
    // The client goes away; more is appended meanwhile.
    drop(st);
    s.ingest(&bundle("b3", events("b3", 10)));
    // It comes back with Last-Event-ID (which wins over the URL's after_seq, as
    // a browser resends the original URL).
    let mut st = open(&s, "?after_seq=0", Some(12)).unwrap();
    assert_eq!(st.opening(), "stream open after_seq=12 head_seq=40");
    let rest = st.events(28);
    let seqs: Vec<u64> = first.iter().chain(&rest).map(|(id, _)| *id).collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "no loss, no duplicate");
    let all = s.all_events();
    for (id, data) in &rest {
        assert_eq!(data, &all[*id as usize - 1]);
    }
    // Live: a bundle ingested now arrives on the open stream.
    let t = Instant::now();
    s.ingest(&bundle("b4", events("b4", 2)));
    let live = st.events(2);
    assert_eq!(live.iter().map(|e| e.0).collect::<Vec<_>>(), [41, 42]);
    assert_eq!(live[1].1["event_id"], "b4-1");
    assert!(t.elapsed() < Duration::from_secs(5));

    // Without a position it starts at the head: only new events.
    let mut st = open(&s, "", None).unwrap();
    assert_eq!(st.opening(), "stream open after_seq=42 head_seq=42");
    s.ingest(&bundle("b5", events("b5", 1)));
    assert_eq!(st.events(1)[0].0, 43);

    // U+2028, U+2029 and U+0085 in an id or a payload are sent escaped
    // (the same JSON value): clients that split lines at them (Python's
    // str.splitlines) would cut the event.
    let odd = "odd\u{2028}id";
    let (st, r) = s.ingest(&bundle(
        "odd",
        vec![event(
            odd,
            "note.odd",
            json!({"text": "a\u{2029}b\u{2028}c\u{85}d"}),
        )],
    ));
    assert_eq!(st, 200, "{r}");
    let seq = r["first_seq"].as_u64().unwrap();
    let mut raw = open(&s, &format!("?after_seq={}", seq - 1), None).unwrap();
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.starts_with("data:")) {
        let mut l = String::new();
        raw.r.read_line(&mut l).unwrap();
        lines.push(l);
    }
    let data = lines.last().unwrap();
    assert!(
        !data.contains(['\u{85}', '\u{2028}', '\u{2029}']),
        "{data:?}"
    );
    assert!(data.contains("\\u2028"), "{data:?}");
    let value: Value = serde_json::from_str(data.trim_start_matches("data:").trim()).unwrap();
    let (_, stored) = s.get(&format!("/v1/events?after_seq={}&limit=1", seq - 1));
    assert_eq!(value, stored["events"][0]);
    assert_eq!(value["event_id"], odd);

    // Bad positions and filters are refused with the JSON error shape.
    let (st, body) = open(&s, "?after_seq=-1", None).err().unwrap();
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (422, Some("invalid_query"))
    );
    let (st, body) = open(&s, "", Some(0))
        .map(|_| ())
        .map_or_else(|e| e, |_| (200, Value::Null));
    assert_eq!(st, 200, "Last-Event-ID 0 is the start of the log: {body}");
    // A position this log has not reached (a saved id from a store restored
    // since, or another server's) is refused after a short wait for the
    // head, not taken: the stream would skip every event up to it.
    let head = s.get("/v1/log/head").1["seq"].as_u64().unwrap();
    let t = Instant::now();
    let (st, body) = open(&s, "", Some(head + 3)).err().unwrap();
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (400, Some("invalid_last_event_id")),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["head_seq"], head, "{body}");
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "no wait for the head"
    );
    let (st, body) = open(&s, &format!("?after_seq={}", head + 1), None)
        .err()
        .unwrap();
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (422, Some("invalid_query")),
        "{body}"
    );
    // One the head reaches while it waits is served from there.
    let ingest = {
        let s2 = s.client.clone();
        let url = s.url("/v1/events/ingest");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            s2.post(url)
                .bearer_auth(TOKEN)
                .json(&bundle("b6", events("b6", 2)))
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let mut st = open(&s, "", Some(head + 1)).unwrap();
    assert_eq!(ingest.join().unwrap(), 200);
    assert_eq!(
        st.opening(),
        format!("stream open after_seq={} head_seq={}", head + 1, head + 2)
    );
    assert_eq!(st.events(1)[0].0, head + 2);
    // A `*` other than a final `.*`, and types no event can have (which
    // would stream nothing, silently).
    for filter in [
        "attempt*",
        ".*",
        "ATTEMPT.failed",
        "attempt",
        "Attempt.*",
        "a..b.*",
    ] {
        let (st, body) = open(&s, &format!("?type={filter}"), None).err().unwrap();
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (422, Some("invalid_query")),
            "{filter}: {body}"
        );
    }
    // No token: 401 like every v1 route.
    let r = s.client.get(s.url("/v1/events/stream")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[test]
fn filters_by_exact_type_prefix_and_target() {
    let s = Server::start();
    s.ingest(&bundle(
        "mix",
        vec![
            typed("e1", "attempt.created", "radix"),
            typed("e2", "job.started", "radix"),
            typed("e3", "attempt.failed", "radix"),
            typed("e4", "attempt.created", "other"),
            typed("e5", "attempt.started", "radix"),
        ],
    ));
    // `target` filters on the event's target (the bundle's here: "radix" for all).
    let ids = |q: &str, n: usize| -> Vec<u64> {
        let mut st = open(&s, q, None).unwrap();
        st.opening();
        st.events(n).into_iter().map(|e| e.0).collect()
    };
    assert_eq!(ids("?after_seq=0&type=attempt.created", 2), [1, 4]);
    assert_eq!(ids("?after_seq=0&type=attempt.*", 4), [1, 3, 4, 5]);
    assert_eq!(ids("?after_seq=0&type=job.started", 1), [2]);
    // Then live: only matching events arrive (the next one after a skipped one).
    let mut st = open(&s, "?after_seq=0&type=attempt.failed&target=prod", None).unwrap();
    st.opening();
    s.ingest(&json!({"target": "prod", "bundle_id": "p1", "events": [
        typed("p1", "attempt.created", "prod"),
        typed("p2", "attempt.failed", "prod"),
    ]}));
    s.ingest(&bundle("r1", vec![typed("r1", "attempt.failed", "radix")]));
    s.ingest(&json!({"target": "prod", "bundle_id": "p3", "events": [typed("p3", "attempt.failed", "prod")]}));
    let got = st.events(2);
    assert_eq!(got.iter().map(|e| e.0).collect::<Vec<_>>(), [7, 9]);
    assert_eq!(got[0].1["event_id"], "p2");
    assert_eq!(got[1].1["target"], "prod");
    // A prefix stream (read from the type index) follows types that did not
    // exist when it opened, in log order across types, past pages of other
    // events (more than a page's 4,096 records between two matches).
    let mut st = open(&s, "?after_seq=9&type=deploy.*", None).unwrap();
    st.opening();
    for chunk in 0..5 {
        let events: Vec<Value> = (0..1000)
            .map(|i| typed(&format!("n{chunk}-{i}"), "job.started", "radix"))
            .collect();
        s.ingest(&bundle(&format!("noise{chunk}"), events));
    }
    s.ingest(&bundle(
        "d1",
        vec![
            typed("d1", "deploy.started", "radix"),
            typed("d2", "job.started", "radix"),
            typed("d3", "deploy.finished", "radix"),
            typed("d4", "deploy.started", "radix"),
        ],
    ));
    let got = st.events(3);
    assert_eq!(
        got.iter().map(|e| e.0).collect::<Vec<_>>(),
        [5010, 5012, 5013]
    );
    assert_eq!(got[1].1["event_type"], "deploy.finished");
}

#[test]
fn idle_streams_get_heartbeats_and_end_at_shutdown() {
    let mut s = Server::start_with(&[("LEVIATHAN_STREAM_HEARTBEAT_SECS", "0.2")]);
    let mut st = open(&s, "", None).unwrap();
    st.opening();
    assert_eq!(st.next(), Some(Msg::Comment("heartbeat".into())));
    assert_eq!(st.next(), Some(Msg::Comment("heartbeat".into())));
    // SIGTERM: the open stream ends (it does not hold shutdown until its timeout).
    let t = Instant::now();
    let status = s.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        t.elapsed()
    );
    while let Some(m) = st.next() {
        assert_eq!(m, Msg::Comment("heartbeat".into()));
    }
}

#[test]
fn at_most_max_streams_are_open() {
    let s = Server::start_with(&[
        ("LEVIATHAN_MAX_STREAMS", "2"),
        ("LEVIATHAN_STREAM_HEARTBEAT_SECS", "0.2"),
    ]);
    let mut a = open(&s, "", None).unwrap();
    let mut b = open(&s, "", None).unwrap();
    a.opening();
    b.opening();
    let (status, body) = open(&s, "", None).err().unwrap();
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "too_many_streams");
    assert_eq!(body["error"]["details"]["setting"], "LEVIATHAN_MAX_STREAMS");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2 event streams"));
    // Other routes are not affected.
    assert_eq!(s.get("/v1/log/head").0, 200);
    // A client that leaves frees its place (once the server notices: its next
    // heartbeat write fails).
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        match open(&s, "", None) {
            Ok(c) => break c,
            Err((503, _)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    c.opening();
    s.ingest(&bundle("x", events("x", 1)));
    assert_eq!(c.events(1)[0].0, 1);
    assert_eq!(b.events(1)[0].0, 1);
}

/// `total` events of 8 KiB (bundles of 100): more than the socket buffers
/// and the HTTP layer hold for a client that does not read.
fn ingest_big_events(s: &Server, total: u64) {
    let filler = "x".repeat(8 * 1024);
    for b in 0..(total / 100) {
        let evs = (0..100)
            .map(|i| event(&format!("big-{b}-{i}"), "job.log", json!({"line": filler})))
            .collect();
        assert_eq!(s.ingest(&bundle(&format!("big-{b}"), evs)).0, 200);
    }
}

/// Reads nothing from `st` until the bytes waiting in its socket have not
/// grown for `steady` (polled every `poll`): the server's writes wait from
/// then on. Not a fixed time: a server starved of CPU had not filled the
/// buffers within a fixed 2 s. Returns when they last grew.
fn until_the_socket_stops_filling(st: &Stream, steady: Duration, poll: Duration) -> Instant {
    let socket = st.r.get_ref().try_clone().unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut peek = vec![0u8; 1 << 20];
    let waiting = |peek: &mut [u8]| socket.peek(peek).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut since) = (waiting(&mut peek), Instant::now());
    while last == 0 || since.elapsed() < steady {
        assert!(
            Instant::now() < deadline,
            "the server never filled the socket: {last} bytes"
        );
        std::thread::sleep(poll);
        let now = waiting(&mut peek);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    socket.set_nonblocking(false).unwrap();
    since
}

#[test]
fn a_client_that_falls_behind_is_told_and_closed_then_resumes() {
    // A small buffer and a short stall limit; events of 8 KiB, 16 MiB in all:
    // more than the socket buffers and the HTTP layer hold for a client that
    // does not read.
    let s = Server::start_with(&[
        ("LEVIATHAN_STREAM_BUFFER", "16"),
        ("LEVIATHAN_STREAM_STALL_SECS", "0.5"),
        ("LEVIATHAN_SYNC", "none"),
    ]);
    let total = 2000u64;
    ingest_big_events(&s, total);
    let mut st = open(&s, "?after_seq=0", None).unwrap();
    st.opening();
    // The client stops reading: this pause is the behaviour under test. It
    // lasts until the server has been unable to send for twice the stall
    // limit (the bytes waiting in this socket no longer grow), not a fixed
    // time: a server starved of CPU had not filled the buffers within a
    // fixed 2 s, saw no stall, and the loop below then waited for ever.
    until_the_socket_stops_filling(&st, Duration::from_secs(1), Duration::from_millis(100));
    let mut seqs = Vec::new();
    let lagged = loop {
        assert!(
            (seqs.len() as u64) < total,
            "every event was sent and no `lagged`: the server saw no stall"
        );
        match st.next() {
            Some(Msg::Event { id, .. }) => seqs.push(id),
            Some(Msg::Named { event, data }) => {
                assert_eq!(event, "lagged");
                break data;
            }
            Some(Msg::Comment(_)) => {}
            None => panic!(
                "the stream ended without saying why after {} events",
                seqs.len()
            ),
        }
    };
    assert!(
        st.next().is_none(),
        "the stream ends after the lagged event"
    );
    let n = seqs.len() as u64;
    assert!(n > 0 && n < total, "cut off after {n} of {total}");
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "what it got has no gap");
    assert_eq!(lagged["code"], "lagged");
    assert_eq!(lagged["last_seq"], n);
    assert!(lagged["message"]
        .as_str()
        .unwrap()
        .contains("LEVIATHAN_STREAM_STALL_SECS"));
    // It resumes where it was cut off and, reading promptly, gets the rest.
    let mut st = open(&s, "", Some(n)).unwrap();
    st.opening();
    let rest: Vec<u64> = st
        .events((total - n) as usize)
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(rest, (n + 1..=total).collect::<Vec<_>>());
}

/// With the stall limit equal to the connection's write timeout (both 30 s by
/// default), a client that pauses for longer than both but less than their
/// sum still gets the `lagged` event when it reads again: the stream's
/// connection is not cut off by the write timeout first.
#[test]
fn a_paused_client_is_told_it_lagged_though_the_write_timeout_is_the_stall_limit() {
    let s = Server::start_with(&[
        ("LEVIATHAN_STREAM_BUFFER", "16"),
        ("LEVIATHAN_STREAM_STALL_SECS", "2"),
        ("LEVIATHAN_WRITE_TIMEOUT_SECS", "2"),
        ("LEVIATHAN_SYNC", "none"),
    ]);
    // 8 MiB of events: more than the socket buffers hold.
    let total = 1000u64;
    ingest_big_events(&s, total);
    let mut st = open(&s, "?after_seq=0", None).unwrap();
    st.opening();
    // Not reading until the bytes waiting in the socket have stopped growing
    // (the server's writes wait from then on), then 3 s more: past the stall
    // limit and the write timeout, within their sum.
    let since =
        until_the_socket_stops_filling(&st, Duration::from_millis(300), Duration::from_millis(50));
    std::thread::sleep(Duration::from_secs(3).saturating_sub(since.elapsed()));
    let mut got = 0u64;
    let lagged = loop {
        match st.next() {
            Some(Msg::Event { .. }) => got += 1,
            Some(Msg::Named { event, data }) => {
                assert_eq!(event, "lagged", "{data}");
                break data;
            }
            Some(Msg::Comment(_)) => {}
            None => panic!("the connection was closed after {got} events without `lagged`"),
        }
    };
    assert_eq!(lagged["last_seq"], got, "{lagged}");
    assert!(got < total, "{got}");
    assert!(
        st.next().is_none(),
        "the stream ends after the lagged event"
    );
}

/// A token removed from the tokens file (and the file reloaded, SIGHUP) is
/// refused by new requests, and a stream it opened before ends at the reload
/// with an `error` event, `unauthorized`: it never carries an event appended
/// after the revocation.
#[test]
fn a_revoked_tokens_open_stream_ends_at_the_reload() {
    const VIEWER: &str = "viewer-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let line = |name: &str, roles: &str, token: &str| {
        format!("{name} {roles} {}\n", common::sha256_hex(token.as_bytes()))
    };
    let ops = line("ops", "read,ingest,admin", TOKEN);
    std::fs::write(&file, line("viewer", "read", VIEWER) + &ops).unwrap();
    let s = Server::start_with(&[
        ("LEVIATHAN_TOKENS_FILE", file.to_str().unwrap()),
        ("LEVIATHAN_CONTROL_PLANE_TOKEN", ""),
    ]);
    let mut stream = open_as(&s, "", None, VIEWER).unwrap();
    assert_eq!(s.ingest(&bundle("before", events("before", 1))).0, 200);
    assert_eq!(stream.events(1)[0].1["event_id"], "before-0");

    std::fs::write(&file, &ops).unwrap();
    s.signal("-HUP");
    match stream.event() {
        Msg::Named { event, data } => {
            assert_eq!(event, "error", "{data}");
            assert_eq!(data["code"], "unauthorized", "{data}");
        }
        other => panic!("expected the stream's end, got {other:?}"),
    }
    assert_eq!(s.ingest(&bundle("after", events("after", 1))).0, 200);
    loop {
        match stream.next() {
            None => break,
            Some(Msg::Comment(_)) => continue,
            Some(m) => panic!("the revoked stream went on: {m:?}"),
        }
    }
    assert_eq!(open_as(&s, "", None, VIEWER).err().map(|e| e.0), Some(401));
}

/// The peak memory (VmHWM, bytes) of a process.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb << 10
}

/// A stream reads about 1 MiB ahead of its client, whatever the events'
/// size: twenty streams opened at the start of a log of ~900 KiB events
/// must not each read a chunk of 64 of them (~55 MiB a stream, 1.1 GB).
#[test]
fn streams_of_large_events_read_about_a_mebibyte_ahead_each() {
    let s = Server::start();
    let big = "x".repeat(900 << 10);
    for b in 0..8 {
        let evs: Vec<_> = (0..10)
            .map(|i| {
                event(
                    &format!("l-{b}-{i}"),
                    "note.large",
                    json!({"blob": big.clone()}),
                )
            })
            .collect();
        let (st, r) = s.ingest(&bundle(&format!("l-{b}"), evs));
        assert_eq!(st, 200, "{r}");
    }
    let before = peak_rss(s.pid());
    let mut streams: Vec<Stream> = (0..20)
        .map(|_| open(&s, "?after_seq=0", None).unwrap())
        .collect();
    for st in &mut streams {
        st.opening();
    }
    // Each client takes one event (so each stream has read its page).
    for st in &mut streams {
        assert_eq!(st.events(1)[0].0, 1);
    }
    let grew = peak_rss(s.pid()).saturating_sub(before);
    assert!(
        grew < 300 << 20,
        "20 streams raised the peak RSS by {} MiB",
        grew >> 20
    );
}
