//! The deterministic WASI subset as a guest sees it: clocks, randomness and
//! stdio.

use crate::common::wasm::*;
use crate::projection::{source, with_limits};
use leviathan::graph::Op;
use leviathan::projection::{Limits, ProjectorSet};

const WASI_CLOCKS: &str = r#"
package wasi:clocks@0.2.0;
interface wall-clock {
    record datetime { seconds: u64, nanoseconds: u32 }
    now: func() -> datetime;
    resolution: func() -> datetime;
}
"#;

const WASI_RANDOM: &str = r#"
package wasi:random@0.2.0;
interface random {
    get-random-bytes: func(len: u64) -> list<u8>;
    get-random-u64: func() -> u64;
}
"#;

const WASI_WORLD: &str = r#"
package leviathan:test-wasi;
world wasi-projector {
    include leviathan:projector/projector@1.0.0;
    import wasi:clocks/wall-clock@0.2.0;
    import wasi:random/random@0.2.0;
}
"#;

/// A guest importing `wasi:clocks/wall-clock` and `wasi:random/random`: it
/// returns two nodes whose ids are the decimal wall-clock seconds and a random
/// u64.
fn wasi_projector() -> Vec<u8> {
    let desc = Describe {
        name: "wasi-guest",
        version: "1.0.0",
        handles: &["clock.read"],
        node_types: &["clock", "dice"],
        edge_types: &[],
    };
    let mut d = Data::default();
    let clk = d.zeros(16, 8);
    let buf = d.zeros(64, 1);
    let result = d.ok_ops(&[
        StaticOp::PutNode {
            id: "placeholder",
            node_type: "clock",
            properties: "{}",
        },
        StaticOp::PutNode {
            id: "placeholder",
            node_type: "dice",
            properties: "{}",
        },
    ]);
    let imports = r#"
  (import "wasi:clocks/wall-clock@0.2.0" "now" (func $now (param i32)))
  (import "wasi:random/random@0.2.0" "get-random-u64" (func $rand (result i64)))"#;
    let body = format!(
        r#"(local $ops i32) (local $p i32)
    (local.set $ops (i32.load (i32.const {res4})))
    (call $now (i32.const {clk}))
    (local.set $p (call $utoa (i64.load (i32.const {clk})) (i32.const {end1})))
    (i32.store offset=4 (local.get $ops) (local.get $p))
    (i32.store offset=8 (local.get $ops) (i32.sub (i32.const {end1}) (local.get $p)))
    (local.set $p (call $utoa (call $rand) (i32.const {end2})))
    (i32.store offset=40 (local.get $ops) (local.get $p))
    (i32.store offset=44 (local.get $ops) (i32.sub (i32.const {end2}) (local.get $p)))
    (i32.const {result})"#,
        res4 = result + 4,
        end1 = buf + 32,
        end2 = buf + 64,
    );
    component_for_world(
        &projector_wat(&desc, d, imports, "", &body),
        &[WASI_CLOCKS, WASI_RANDOM],
        Some((WASI_WORLD, "wasi-projector")),
    )
}

fn node_ids(ops: &[Op]) -> Vec<String> {
    ops.iter()
        .map(|op| match op {
            Op::PutNode { id, .. } => id.to_string(),
            other => panic!("unexpected op {other:?}"),
        })
        .collect()
}

#[test]
fn wasi_guest_sees_the_event_time_and_event_seeded_randomness() {
    let set = ProjectorSet::load(vec![source(wasi_projector())], None).unwrap();
    let graph = MemGraph::default();
    let mut ev = event(3, "e3", "clock.read");
    ev.timestamp = "2024-05-06T07:08:09.250Z";
    let expected_secs = chrono::DateTime::parse_from_rfc3339(ev.timestamp)
        .unwrap()
        .timestamp()
        .to_string();

    let first = node_ids(&set.project(&ev, &graph).unwrap());
    assert_eq!(
        first[0], expected_secs,
        "wall clock is the event's timestamp"
    );
    let again = node_ids(&set.project(&ev, &graph).unwrap());
    assert_eq!(first, again, "same event, same randomness");

    let mut other = ev;
    other.event_hash = leviathan::digest::Sha256::of(b"another event");
    let third = node_ids(&set.project(&other, &graph).unwrap());
    assert_eq!(third[0], expected_secs);
    assert_ne!(third[1], first[1], "randomness follows the event hash");

    // A new load (a restart) gives the same answer for the same event.
    let set2 = ProjectorSet::load(vec![source(wasi_projector())], None).unwrap();
    assert_eq!(node_ids(&set2.project(&ev, &graph).unwrap()), first);

    // A malformed timestamp is reported, not guessed.
    let mut bad = ev;
    bad.timestamp = "yesterday";
    assert_eq!(
        set.project(&bad, &graph).unwrap_err().code(),
        "invalid_event"
    );
}

const WASI_IO: &str = r#"
package wasi:io@0.2.0;
interface error {
    resource error;
}
interface streams {
    use error.{error};
    variant stream-error {
        last-operation-failed(error),
        closed,
    }
    resource output-stream {
        blocking-write-and-flush: func(contents: list<u8>) -> result<_, stream-error>;
    }
}
"#;

const WASI_CLI: &str = r#"
package wasi:cli@0.2.0;
interface stdout {
    use wasi:io/streams@0.2.0.{output-stream};
    get-stdout: func() -> output-stream;
}
interface stderr {
    use wasi:io/streams@0.2.0.{output-stream};
    get-stderr: func() -> output-stream;
}
"#;

const WASI_STDIO_WORLD: &str = r#"
package leviathan:test-stdio;
world stdio-projector {
    include leviathan:projector/projector@1.0.0;
    import wasi:cli/stdout@0.2.0;
    import wasi:cli/stderr@0.2.0;
}
"#;

/// A guest that writes `line` `times` times to stdout, then either returns no
/// ops or (if `panic_message` is set) writes it to stderr and traps, the way a
/// Rust guest panics.
fn stdio_projector(line: &str, times: u32, panic_message: Option<&str>) -> Vec<u8> {
    let desc = Describe {
        name: "chatty",
        version: "1.0.0",
        handles: &["say.*"],
        node_types: &[],
        edge_types: &[],
    };
    let mut d = Data::default();
    let (lp, ll) = d.str(line);
    let (pp, pl) = d.str(panic_message.unwrap_or(""));
    let ret = d.zeros(12, 4);
    let result = d.ok_ops(&[]);
    let imports = r#"
  (import "wasi:cli/stdout@0.2.0" "get-stdout" (func $get_stdout (result i32)))
  (import "wasi:cli/stderr@0.2.0" "get-stderr" (func $get_stderr (result i32)))
  (import "wasi:io/streams@0.2.0" "[method]output-stream.blocking-write-and-flush" (func $write (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.0" "[resource-drop]output-stream" (func $drop_stream (param i32)))"#;
    let panic = if panic_message.is_some() {
        format!(
            "(local.set $s (call $get_stderr))
    (call $write (local.get $s) (i32.const {pp}) (i32.const {pl}) (i32.const {ret}))
    unreachable"
        )
    } else {
        String::new()
    };
    let body = format!(
        r#"(local $s i32) (local $i i32)
    (local.set $s (call $get_stdout))
    (block $done
      (loop $again
        (br_if $done (i32.ge_u (local.get $i) (i32.const {times})))
        (call $write (local.get $s) (i32.const {lp}) (i32.const {ll}) (i32.const {ret}))
        (if (i32.load8_u (i32.const {ret})) (then unreachable))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $again)))
    (call $drop_stream (local.get $s))
    {panic}
    (i32.const {result})"#
    );
    component_for_world(
        &projector_wat(&desc, d, imports, "", &body),
        &[WASI_IO, WASI_CLI],
        Some((WASI_STDIO_WORLD, "stdio-projector")),
    )
}

/// Captures everything logged through `tracing` while `f` runs.
fn logs_of<R>(f: impl FnOnce() -> R) -> (R, String) {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let r = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (r, text)
}

#[test]
fn guest_stdout_goes_to_tracing_capped_and_a_panic_message_reaches_the_error() {
    let limits = Limits {
        output_bytes: 100,
        ..Limits::default()
    };
    let set = ProjectorSet::load(
        vec![with_limits(
            stdio_projector("hello from guest\n", 1, None),
            limits.clone(),
        )],
        None,
    )
    .unwrap();
    let (ops, logs) = logs_of(|| set.project(&event(1, "e1", "say.hi"), &MemGraph::default()));
    assert_eq!(ops.unwrap(), vec![]);
    assert!(logs.contains("hello from guest"), "{logs}");
    assert!(logs.contains("stdout"), "{logs}");

    // 50 lines of 17 bytes, 100 kept: the guest never sees an error.
    let set = ProjectorSet::load(
        vec![with_limits(
            stdio_projector("0123456789abcdef\n", 50, None),
            limits.clone(),
        )],
        None,
    )
    .unwrap();
    let (ops, logs) = logs_of(|| set.project(&event(1, "e1", "say.lots"), &MemGraph::default()));
    assert_eq!(ops.unwrap(), vec![]);
    assert!(logs.contains("dropped_bytes=750"), "{logs}");

    let set = ProjectorSet::load(
        vec![with_limits(
            stdio_projector(
                "about to fail\n",
                1,
                Some("panicked at src/lib.rs:3:5: boom\n"),
            ),
            limits,
        )],
        None,
    )
    .unwrap();
    let err = set
        .project(&event(9, "e9", "say.boom"), &MemGraph::default())
        .unwrap_err();
    assert_eq!(err.code(), "trap");
    assert_eq!(
        err.to_string(),
        "projector chatty@1.0.0 failed on event 9 (e9): trap: wasm `unreachable` instruction executed \
         (guest stderr: panicked at src/lib.rs:3:5: boom)"
    );
}

const SUBSET_CLI: &str = r#"
package wasi:cli@0.2.0;
interface environment {
    get-environment: func() -> list<tuple<string, string>>;
    get-arguments: func() -> list<string>;
    initial-cwd: func() -> option<string>;
}
"#;

const SUBSET_FILESYSTEM: &str = r#"
package wasi:filesystem@0.2.0;
interface types {
    resource descriptor;
}
interface preopens {
    use types.{descriptor};
    get-directories: func() -> list<tuple<descriptor, string>>;
}
"#;

const SUBSET_CLOCKS: &str = r#"
package wasi:clocks@0.2.0;
interface monotonic-clock {
    type instant = u64;
    now: func() -> instant;
}
"#;

const SUBSET_RANDOM: &str = r#"
package wasi:random@0.2.0;
interface insecure-seed {
    insecure-seed: func() -> tuple<u64, u64>;
}
"#;

/// The part of `wasi:sockets` a guest needs to try to open a TCP socket.
const SUBSET_SOCKETS: &str = r#"
package wasi:sockets@0.2.0;
interface network {
    resource network;
    enum error-code {
        unknown, access-denied, not-supported, invalid-argument, out-of-memory, timeout,
        concurrency-conflict, not-in-progress, would-block, invalid-state, new-socket-limit,
        address-not-bindable, address-in-use, remote-unreachable, connection-refused,
        connection-reset, connection-aborted, datagram-too-large, name-unresolvable,
        temporary-resolver-failure, permanent-resolver-failure,
    }
    enum ip-address-family { ipv4, ipv6 }
}
interface tcp {
    resource tcp-socket;
}
interface tcp-create-socket {
    use network.{error-code, ip-address-family};
    use tcp.{tcp-socket};
    create-tcp-socket: func(address-family: ip-address-family) -> result<tcp-socket, error-code>;
}
"#;

const SUBSET_WORLD: &str = r#"
package leviathan:test-subset;
world subset-projector {
    include leviathan:projector/projector@1.0.0;
    import wasi:cli/environment@0.2.0;
    import wasi:filesystem/preopens@0.2.0;
    import wasi:clocks/monotonic-clock@0.2.0;
    import wasi:random/insecure-seed@0.2.0;
    import wasi:sockets/tcp-create-socket@0.2.0;
}
"#;

/// What [`subset_projector`] reports, in the order of its nodes.
const SUBSET_PROBES: [&str; 8] = [
    "environment variables",
    "arguments",
    "initial cwd present",
    "preopened directories",
    "monotonic clock",
    "tcp socket refused (result discriminant)",
    "tcp error code",
    "insecure seed (low half)",
];

/// A guest that looks for what the sandbox must not give it: environment
/// variables, arguments, a working directory, preopened directories, a moving
/// monotonic clock and a TCP socket; and reads the insecure random seed. It
/// returns one node per probe ([`SUBSET_PROBES`]), its id the decimal value.
fn subset_projector() -> Vec<u8> {
    let desc = Describe {
        name: "subset-guest",
        version: "1.0.0",
        handles: &["probe.wasi"],
        node_types: &["probe"],
        edge_types: &[],
    };
    let mut d = Data::default();
    let ret = d.zeros(16, 8);
    let buf = d.zeros(24 * SUBSET_PROBES.len(), 1);
    let placeholders: Vec<StaticOp<'_>> = SUBSET_PROBES
        .iter()
        .map(|_| StaticOp::PutNode {
            id: "placeholder",
            node_type: "probe",
            properties: "{}",
        })
        .collect();
    let result = d.ok_ops(&placeholders);
    let imports = r#"
  (import "wasi:cli/environment@0.2.0" "get-environment" (func $get_env (param i32)))
  (import "wasi:cli/environment@0.2.0" "get-arguments" (func $get_args (param i32)))
  (import "wasi:cli/environment@0.2.0" "initial-cwd" (func $cwd (param i32)))
  (import "wasi:filesystem/preopens@0.2.0" "get-directories" (func $preopens (param i32)))
  (import "wasi:clocks/monotonic-clock@0.2.0" "now" (func $mono (result i64)))
  (import "wasi:random/insecure-seed@0.2.0" "insecure-seed" (func $seed (param i32)))
  (import "wasi:sockets/tcp-create-socket@0.2.0" "create-tcp-socket" (func $tcp (param i32 i32)))"#;
    // Node `i`'s id is the decimal of `value`, written into its own slot of `buf`.
    let set_id = |i: usize, value: &str| {
        let end = buf + 24 * (i as u32 + 1);
        format!(
            "(local.set $p (call $utoa {value} (i32.const {end})))
    (i32.store offset={idp} (local.get $ops) (local.get $p))
    (i32.store offset={idl} (local.get $ops) (i32.sub (i32.const {end}) (local.get $p)))",
            idp = 36 * i + 4,
            idl = 36 * i + 8,
        )
    };
    let len_at = |off: u32| format!("(i64.extend_i32_u (i32.load (i32.const {})))", ret + off);
    let byte_at = |off: u32| format!("(i64.extend_i32_u (i32.load8_u (i32.const {})))", ret + off);
    let body = [
        "(local $ops i32) (local $p i32)".to_string(),
        format!("(local.set $ops (i32.load (i32.const {})))", result + 4),
        format!("(call $get_env (i32.const {ret}))"),
        set_id(0, &len_at(4)),
        format!("(call $get_args (i32.const {ret}))"),
        set_id(1, &len_at(4)),
        format!("(call $cwd (i32.const {ret}))"),
        set_id(2, &byte_at(0)),
        format!("(call $preopens (i32.const {ret}))"),
        set_id(3, &len_at(4)),
        set_id(4, "(call $mono)"),
        format!("(call $tcp (i32.const 0) (i32.const {ret}))"),
        set_id(5, &byte_at(0)),
        set_id(6, &byte_at(4)),
        format!("(call $seed (i32.const {ret}))"),
        set_id(7, &format!("(i64.load (i32.const {ret}))")),
        format!("(i32.const {result})"),
    ]
    .join("\n    ");
    component_for_world(
        &projector_wat(&desc, d, imports, "", &body),
        &[
            SUBSET_CLI,
            SUBSET_FILESYSTEM,
            SUBSET_CLOCKS,
            SUBSET_RANDOM,
            SUBSET_SOCKETS,
        ],
        Some((SUBSET_WORLD, "subset-projector")),
    )
}

/// The deterministic WASI subset as a guest sees it: no environment (though
/// the host process has one), no arguments, no working directory, no
/// preopened directories, a monotonic clock stopped at 0, TCP refused with
/// `access-denied`, and an insecure seed derived from the event hash.
#[test]
fn a_wasi_guest_finds_no_files_env_args_or_network_and_frozen_time() {
    assert!(
        std::env::vars().next().is_some(),
        "the host has an environment"
    );
    let set = ProjectorSet::load(vec![source(subset_projector())], None).unwrap();
    let graph = MemGraph::default();
    let ev = event(3, "e3", "probe.wasi");
    let probes = node_ids(&set.project(&ev, &graph).unwrap());
    let seen: Vec<(&str, &str)> = SUBSET_PROBES
        .iter()
        .zip(&probes)
        .map(|(name, v)| (*name, v.as_str()))
        .take(7)
        .collect();
    assert_eq!(
        seen,
        [
            ("environment variables", "0"),
            ("arguments", "0"),
            ("initial cwd present", "0"),
            ("preopened directories", "0"),
            ("monotonic clock", "0"),
            ("tcp socket refused (result discriminant)", "1"),
            // access-denied, the second case of `error-code`.
            ("tcp error code", "1"),
        ]
    );
    // The seed is the event's: the same again, on a new load too; another
    // event hash gives another seed.
    assert_eq!(node_ids(&set.project(&ev, &graph).unwrap()), probes);
    let set2 = ProjectorSet::load(vec![source(subset_projector())], None).unwrap();
    assert_eq!(node_ids(&set2.project(&ev, &graph).unwrap()), probes);
    let mut other = event(3, "e3", "probe.wasi");
    other.event_hash = leviathan::digest::Sha256::of(b"another event");
    let other_probes = node_ids(&set.project(&other, &graph).unwrap());
    assert_eq!(other_probes[..7], probes[..7]);
    assert_ne!(
        other_probes[7], probes[7],
        "the seed follows the event hash"
    );
}
