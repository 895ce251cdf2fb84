//! Projector abuse: components and guests built to hurt the host (huge
//! declared memories, enormous op lists and property documents, unbounded
//! recursion, imports outside the projector world). Each is stopped by a cap
//! with its own cause, deterministically, and a real server refuses the
//! bundle with a JSON error, stores nothing and keeps serving
//! (docs/PROJECTORS.md, "Limits and what a projector cannot do").

use crate::common::wasm::*;
use crate::common::{bundle, event as bundle_event, refused, serve_command, sha256_hex, Server};
use crate::projection::source;
use leviathan::projection::{
    Failure, LoadError, ProjectorSet, MAX_COPY_BYTES, MAX_OPS_PER_RUN, MAX_OUTPUT_BYTES,
    MAX_PROPERTIES_BYTES,
};
use serde_json::json;

/// `name@0.1.0`, handling `abuse.NAME` only, owning the node type `Thing-NAME`
/// (a set's projectors may not share a type).
fn describe(name: &str) -> Describe<'static> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let name: &'static str = leak(name.to_owned());
    let handles: &'static [&'static str] =
        Box::leak(vec![leak(format!("abuse.{name}"))].into_boxed_slice());
    let node_types: &'static [&'static str] =
        Box::leak(vec![leak(format!("Thing-{name}"))].into_boxed_slice());
    Describe {
        name,
        version: "0.1.0",
        handles,
        node_types,
        edge_types: &[],
    }
}

/// Size of one `op` in the canonical ABI (discriminant + the largest case).
const OP_SIZE: u32 = 36;

/// A guest whose `project` builds, at run time, a list of `count` ops that
/// all point at the same strings: `delete-node("x")` when `props_bytes` is
/// `None`, else `put-node("x", "Thing-NAME", P)` where P is one JSON object of
/// `props_bytes` bytes (`{"a":"xxx…"}`) shared by every op.
fn list_projector(name: &str, count: u32, props_bytes: Option<u32>) -> Vec<u8> {
    let mut d = Data::default();
    let (id_p, id_l) = d.str("x");
    let (ty_p, ty_l) = d.str(&format!("Thing-{name}"));
    let make_props = match props_bytes {
        None => String::new(),
        Some(n) => {
            assert!(n >= 10);
            format!(
                r#"(local.set $props (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (i32.const {n})))
    (memory.fill (local.get $props) (i32.const 120) (i32.const {n}))
    (i32.store (local.get $props) (i32.const 0x2261227b))
    (i32.store16 offset=4 (local.get $props) (i32.const 0x223a))
    (i32.store16 (i32.add (local.get $props) (i32.const {tail})) (i32.const 0x7d22))"#,
                tail = n - 2
            )
        }
    };
    let store_op = match props_bytes {
        None => format!(
            "(i32.store8 (local.get $op) (i32.const 2))
      (i32.store offset=4 (local.get $op) (i32.const {id_p}))
      (i32.store offset=8 (local.get $op) (i32.const {id_l}))"
        ),
        Some(n) => format!(
            "(i32.store8 (local.get $op) (i32.const 0))
      (i32.store offset=4 (local.get $op) (i32.const {id_p}))
      (i32.store offset=8 (local.get $op) (i32.const {id_l}))
      (i32.store offset=12 (local.get $op) (i32.const {ty_p}))
      (i32.store offset=16 (local.get $op) (i32.const {ty_l}))
      (i32.store offset=20 (local.get $op) (local.get $props))
      (i32.store offset=24 (local.get $op) (i32.const {n}))"
        ),
    };
    let body = format!(
        r#"(local $list i32) (local $op i32) (local $i i32) (local $r i32) (local $props i32)
    {make_props}
    (local.set $list (call $alloc (i32.const 0) (i32.const 0) (i32.const 4) (i32.const {bytes})))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (i32.const {count})))
        (local.set $op (i32.add (local.get $list) (i32.mul (local.get $i) (i32.const {OP_SIZE}))))
        {store_op}
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (local.set $r (call $alloc (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 12)))
    (i32.store (local.get $r) (i32.const 0))
    (i32.store offset=4 (local.get $r) (local.get $list))
    (i32.store offset=8 (local.get $r) (i32.const {count}))
    (local.get $r)"#,
        bytes = count * OP_SIZE,
    );
    component(&projector_wat(&describe(name), d, "", "", &body))
}

/// A guest whose `project` recurses without end.
fn recursing_projector(name: &str) -> Vec<u8> {
    let mut d = Data::default();
    let result = d.ok_ops(&[]);
    component(&projector_wat(
        &describe(name),
        d,
        "",
        "(func $down (param $n i64) (result i64)
           (i64.add (call $down (i64.add (local.get $n) (i64.const 1))) (i64.const 1)))",
        &format!("(drop (call $down (i64.const 0))) (i32.const {result})"),
    ))
}

/// Runs a projector built with `describe(name)` on an `abuse.NAME` event.
fn run_one(name: &str, bytes: Vec<u8>) -> Result<Vec<leviathan::graph::Op>, Failure> {
    let set = ProjectorSet::load(vec![source(bytes)], None).unwrap();
    let event_type = format!("abuse.{name}");
    set.project(&event(1, "e1", &event_type), &MemGraph::default())
        .map_err(|e| {
            assert!(e.is_deterministic(), "{e}");
            e.failure
        })
}

#[test]
fn an_op_list_over_the_cap_is_refused_as_too_many_ops() {
    let cap = MAX_OPS_PER_RUN as u32;
    let ops = run_one("many", list_projector("many", cap, None)).unwrap();
    assert_eq!(ops.len(), MAX_OPS_PER_RUN, "the cap itself is allowed");
    let err = run_one("many", list_projector("many", cap + 1, None)).unwrap_err();
    assert_eq!(
        err,
        Failure::TooManyOps {
            count: MAX_OPS_PER_RUN + 1,
            limit: MAX_OPS_PER_RUN
        }
    );
    // A million ops never reach the count: the host stops copying first.
    let err = run_one("flood", list_projector("flood", 1_000_000, None)).unwrap_err();
    assert!(
        matches!(&err, Failure::OutputTooLarge { reason } if reason.contains("stopped copying")),
        "{err:?}"
    );
}

#[test]
fn an_enormous_property_document_is_refused_as_output_too_large() {
    // One document just over the per-op cap.
    let err = run_one(
        "fat",
        list_projector("fat", 1, Some(MAX_PROPERTIES_BYTES as u32 + 1)),
    )
    .unwrap_err();
    assert_eq!(err.code(), "output_too_large");
    assert!(err.to_string().contains("property document"), "{err}");
    // Documents under the cap whose sum is over the per-event cap.
    let each = 7 << 20;
    let count = (MAX_OUTPUT_BYTES / each) as u32 + 1;
    let err = run_one("wide", list_projector("wide", count, Some(each as u32))).unwrap_err();
    assert_eq!(err.code(), "output_too_large");
    assert!(err.to_string().contains("per event"), "{err}");
    // One big document shared by every op of a list under the op cap: the
    // text the host would copy is 4 MiB x 10,000; it stops at MAX_COPY_BYTES.
    let err = run_one(
        "alias",
        list_projector("alias", MAX_OPS_PER_RUN as u32, Some(4 << 20)),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(&MAX_COPY_BYTES.to_string()),
        "{err}"
    );
    // A document under every cap goes through.
    let ops = run_one("fine", list_projector("fine", 2, Some(1 << 20))).unwrap();
    assert_eq!(ops.len(), 2);
}

#[test]
fn unbounded_recursion_is_a_stack_overflow_every_time() {
    let set = ProjectorSet::load(vec![source(recursing_projector("deep"))], None).unwrap();
    let failures: Vec<Failure> = (0..2)
        .map(|_| {
            set.project(&event(1, "e1", "abuse.deep"), &MemGraph::default())
                .unwrap_err()
                .failure
        })
        .collect();
    assert_eq!(
        failures[0],
        Failure::StackOverflow { limit: 512 << 10 },
        "{}",
        failures[0]
    );
    assert_eq!(failures[0], failures[1]);
    assert_eq!(failures[0].code(), "stack_overflow");
}

#[test]
fn a_component_declaring_huge_resources_is_refused_at_load() {
    let memory = r#"(memory (export "memory") 2)"#;
    let many_tables: String = (0..17)
        .map(|i| format!("(table $t{i} 1 funcref)"))
        .collect();
    // (what replaces the 2-page memory declaration, what the refusal names)
    let cases = [
        // 4 GiB of initial memory, over the pool's 64 MiB slots.
        (r#"(memory (export "memory") 65536)"#.to_owned(), "memory"),
        // A million-element table, over the pool's 20,000.
        (format!("{memory} (table 1000000 funcref)"), "table"),
        // 17 tables, over the 16 a component may have.
        (format!("{memory} {many_tables}"), "table"),
    ];
    for (declaration, resource) in cases {
        let wat = projector_wat(&describe("huge"), Data::default(), "", "", "(i32.const 0)")
            .replace(memory, &declaration);
        let bytes = component(&wat);
        assert!(bytes.len() < 4096, "{}", bytes.len());
        let e = ProjectorSet::load(vec![source(bytes)], None).expect_err("must not load");
        let text = e.to_string();
        assert!(matches!(e, LoadError::Component { index: 0, .. }), "{text}");
        assert!(
            text.contains("projector source #0")
                && text.contains("pooling allocator")
                && text.contains(resource),
            "{text}"
        );
    }
}

const EVIL: &str = r#"
package evil:x;
interface y {
    steal: func();
}
"#;

const EVIL_WORLD: &str = r#"
package leviathan:test-evil;
world evil-projector {
    include leviathan:projector/projector@1.0.0;
    import evil:x/y;
}
"#;

const WASI_HTTP: &str = r#"
package wasi:http@0.2.0;
interface outgoing-handler {
    handle: func();
}
"#;

const HTTP_WORLD: &str = r#"
package leviathan:test-http;
world http-projector {
    include leviathan:projector/projector@1.0.0;
    import wasi:http/outgoing-handler@0.2.0;
}
"#;

/// A projector that imports `func` of `module` besides its world.
fn importing_projector(module: &str, func: &str, package: &str, world: (&str, &str)) -> Vec<u8> {
    let mut d = Data::default();
    let result = d.ok_ops(&[]);
    component_for_world(
        &projector_wat(
            &describe("importer"),
            d,
            &format!(r#"(import "{module}" "{func}" (func $f))"#),
            "",
            &format!("(call $f) (i32.const {result})"),
        ),
        &[package],
        Some(world),
    )
}

#[test]
fn imports_outside_the_projector_world_are_refused_at_load() {
    let e = ProjectorSet::load(
        vec![source(importing_projector(
            "evil:x/y",
            "steal",
            EVIL,
            (EVIL_WORLD, "evil-projector"),
        ))],
        None,
    )
    .expect_err("must not load");
    let text = e.to_string();
    assert!(
        text.contains("checking imports") && text.contains("evil:x/y"),
        "{text}"
    );
    // A WASI interface the host does not provide fails at linking, naming it.
    let e = ProjectorSet::load(
        vec![source(importing_projector(
            "wasi:http/outgoing-handler@0.2.0",
            "handle",
            WASI_HTTP,
            (HTTP_WORLD, "http-projector"),
        ))],
        None,
    )
    .expect_err("must not load");
    let text = e.to_string();
    assert!(
        text.contains("linking") && text.contains("wasi:http/outgoing-handler"),
        "{text}"
    );
}

#[test]
fn a_server_refuses_to_start_with_a_projector_importing_outside_its_world() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("evil.wasm");
    let bytes = importing_projector("evil:x/y", "steal", EVIL, (EVIL_WORLD, "evil-projector"));
    std::fs::write(&p, &bytes).unwrap();
    let mut cmd = serve_command(&dir.path().join("data"));
    cmd.env("LEVIATHAN_PROJECTORS", format!("core,{}", p.display()));
    let err = refused(cmd);
    assert!(
        err.contains("evil:x/y")
            && err.contains("projector source #1")
            && err.contains(&sha256_hex(&bytes)),
        "{err}"
    );
}

#[test]
fn a_server_refuses_abusive_output_and_recursion_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: Vec<u8>| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    // Each guest handles only `abuse.NAME`.
    let many = write(
        "many.wasm",
        list_projector("many", MAX_OPS_PER_RUN as u32 + 1, None),
    );
    let fat = write(
        "fat.wasm",
        list_projector("fat", 1, Some(MAX_PROPERTIES_BYTES as u32 + 1)),
    );
    let deep = write("deep.wasm", recursing_projector("deep"));
    let projectors = format!("core,{many},{fat},{deep}");
    let data = tempfile::tempdir().unwrap();
    let s = Server::start_in(data.path(), &[("LEVIATHAN_PROJECTORS", &projectors)]);
    for (etype, cause, projector) in [
        ("abuse.many", "too_many_ops", "many@0.1.0"),
        ("abuse.fat", "output_too_large", "fat@0.1.0"),
        ("abuse.deep", "stack_overflow", "deep@0.1.0"),
    ] {
        let evs = vec![
            bundle_event(
                "good-1",
                "attempt.created",
                json!({"attempt_id": "a1", "task_id": "t"}),
            ),
            bundle_event(&format!("bad-{etype}"), etype, json!({})),
        ];
        let (st, r) = s.ingest(&bundle(&format!("b-{etype}"), evs));
        assert_eq!(st, 422, "{etype}: {r}");
        assert_eq!(r["error"]["code"], "projection_failed", "{r}");
        assert_eq!(r["error"]["details"]["cause"], cause, "{r}");
        assert_eq!(r["error"]["details"]["projector"], projector, "{r}");
        assert_eq!(r["error"]["details"]["event_index"], 1, "{r}");
        assert_eq!(s.get("/v1/log/head").1["seq"], 0, "nothing stored");
        assert_eq!(s.get("/v1/graph/nodes/a1").0, 404);
    }
    let (st, r) = s.ingest(&bundle(
        "fine",
        vec![bundle_event(
            "good-1",
            "attempt.created",
            json!({"attempt_id": "a1", "task_id": "t"}),
        )],
    ));
    assert_eq!(st, 200, "{r}");
    assert_eq!(s.get("/v1/graph/nodes/a1").0, 200);
}

/// A guest that calls the `graph` import's `get-node` `calls` times with an
/// id of `id_len` zero bytes (from fresh memory pages), then returns no ops.
fn reading_projector(name: &str, calls: u32, id_len: u32) -> Vec<u8> {
    let mut d = Data::default();
    let result = d.ok_ops(&[]);
    let ret = d.zeros(48, 8);
    let imports = r#"
  (import "leviathan:projector/graph@1.0.0" "get-node" (func $get_node (param i32 i32 i32)))"#;
    let pages = id_len.div_ceil(65536) + 1;
    component(&projector_wat(
        &describe(name),
        d,
        imports,
        "",
        &format!(
            r#"(local $i i32) (local $id i32)
    (local.set $id (i32.shl (memory.grow (i32.const {pages})) (i32.const 16)))
    (block $done (loop $again
      (br_if $done (i32.ge_u (local.get $i) (i32.const {calls})))
      (call $get_node (local.get $id) (i32.const {id_len}) (i32.const {ret}))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $again)))
    (i32.const {result})"#
        ),
    ))
}

fn real_store() -> (tempfile::TempDir, leviathan::graph::GraphStore) {
    let dir = tempfile::tempdir().unwrap();
    let db = leviathan::storage::open_database(&dir.path().join("store")).unwrap();
    let graph = leviathan::graph::GraphStore::open(&db).unwrap();
    (dir, graph)
}

/// An id no node can have (over the graph's 1 KiB, up to the store's 64 KiB
/// key limit and past it) is answered "no such node" without reaching the
/// store, whose key limit would otherwise end the thread that projects.
#[test]
fn a_graph_read_with_an_oversized_id_finds_nothing_and_harms_nothing() {
    let (_dir, graph) = real_store();
    let staging = graph.staging().unwrap();
    for id_len in [1025, 65_535, 70_000] {
        let set =
            ProjectorSet::load(vec![source(reading_projector("huge", 1, id_len))], None).unwrap();
        let ops = set
            .project(&event(1, "e1", "abuse.huge"), &staging)
            .unwrap_or_else(|e| panic!("{id_len}: {e}"));
        assert!(ops.is_empty());
    }
}

/// The host's work behind `graph` calls is not counted in fuel, so each run
/// has a read budget: past `MAX_GRAPH_CALLS_PER_RUN` calls, or its bytes,
/// the run ends as a trap naming the budget, every time the same.
#[test]
fn graph_reads_past_the_budget_end_the_run_deterministically() {
    let (_dir, graph) = real_store();
    let staging = graph.staging().unwrap();
    let run = |calls: u32, id_len: u32| {
        let set = ProjectorSet::load(
            vec![source(reading_projector("reads", calls, id_len))],
            None,
        )
        .unwrap();
        set.project(&event(1, "e1", "abuse.reads"), &staging)
    };
    assert!(run(100_000, 8).is_ok(), "the budget itself is allowed");
    for _ in 0..2 {
        let err = run(100_001, 8).unwrap_err();
        assert!(err.is_deterministic(), "{err}");
        assert_eq!(err.code(), "trap", "{err}");
        assert!(
            err.to_string()
                .contains("graph reads over the limit of 100000 calls per event"),
            "{err}"
        );
        // A recorded message is part of the state digest: no runtime
        // backtrace (its frame offsets and format are the runtime's).
        assert!(
            !err.to_string().contains("backtrace") && !err.to_string().contains("0x"),
            "{err}"
        );
    }
    // 1,100 reads of a 60,000-byte id pass 64 MiB.
    let err = run(1_200, 60_000).unwrap_err();
    assert!(err.to_string().contains("bytes per event"), "{err}");
}

/// A description with a name, version or type past the limits is refused
/// at load, naming it, rather than failing later where the name is a key.
#[test]
fn a_description_past_the_limits_is_refused_at_load() {
    let long = "n".repeat(70_000);
    let leak: &'static str = Box::leak(long.into_boxed_str());
    let cases = [
        (
            Describe {
                name: leak,
                ..describe("x")
            },
            "name is 70000 bytes long",
        ),
        (
            Describe {
                node_types: Box::leak(vec![&leak[..300]].into_boxed_slice()),
                ..describe("x")
            },
            "node type is 300 bytes long, over the limit of 256",
        ),
    ];
    for (desc, why) in cases {
        let bytes = static_projector(&desc, |d| d.ok_ops(&[]));
        let err = ProjectorSet::load(vec![source(bytes)], None).unwrap_err();
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
}
