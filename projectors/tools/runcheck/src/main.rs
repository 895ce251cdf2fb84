//! `runcheck <core.wasm>`: load the component in wasmtime 48.0.8 (the host's
//! pinned version, engine configured as the host does: fuel, NaN
//! canonicalisation, deterministic relaxed SIMD), then
//! - check `describe()` against the native rules' constants;
//! - project a corpus of events, each on a fresh instance, and require the
//!   component's result to equal the native rules' result exactly (ops or
//!   error), and the fuel used to be identical across two runs;
//! - project one large payload (memory growth path);
//! - time fresh-instance projection of a typical ~600-byte attempt.created.
//!
//! Exit status 1 on any mismatch.

#[path = "../../../core/src/json.rs"]
#[allow(dead_code)]
mod json;
#[path = "../../../core/src/rules.rs"]
#[allow(dead_code)]
mod rules;

use anyhow::{bail, Context, Result};
use std::time::Instant;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store};

wasmtime::component::bindgen!({
    world: "projector",
    path: "../../../wit",
});

use leviathan::projector::types as wit;

/// Store data: also the resource limiter, recording the largest memory size
/// the guest asked for (initial memory included).
#[derive(Default)]
struct Host {
    max_memory: usize,
}

impl wasmtime::ResourceLimiter for Host {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        self.max_memory = self.max_memory.max(desired);
        Ok(desired <= 64 << 20)
    }
    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 10_000)
    }
}

impl leviathan::projector::types::Host for Host {}

impl leviathan::projector::graph::Host for Host {
    fn get_node(&mut self, _id: String) -> Option<wit::Node> {
        None
    }
    fn edges(&mut self, _id: String, _dir: wit::Direction, _t: Option<String>, _limit: u32) -> Vec<wit::Edge> {
        Vec::new()
    }
}

/// A comparable rendering of an op.
fn show_wit(op: &wit::Op) -> String {
    match op {
        wit::Op::PutNode(n) => format!("put-node {} {} {}", n.id, n.node_type, n.properties),
        wit::Op::MergeNode(n) => {
            format!("merge-node {} {} {} create={}", n.id, n.node_type, n.properties, n.create_if_absent)
        }
        wit::Op::DeleteNode(id) => format!("delete-node {id}"),
        wit::Op::PutEdge(e) => format!("put-edge {} {} {} {}", e.edge_type, e.from, e.to, e.properties),
        wit::Op::DeleteEdge(k) => format!("delete-edge {} {} {}", k.edge_type, k.from, k.to),
    }
}

fn show_native(op: &rules::Op) -> String {
    match op {
        rules::Op::PutNode { id, node_type, properties } => format!("put-node {id} {node_type} {properties}"),
        rules::Op::MergeNode { id, node_type, properties, create_if_absent } => {
            format!("merge-node {id} {node_type} {properties} create={create_if_absent}")
        }
        rules::Op::PutEdge { edge_type, from, to, properties } => format!("put-edge {edge_type} {from} {to} {properties}"),
    }
}

type Outcome = Result<Vec<String>, (String, String)>;

struct Runner {
    engine: Engine,
    pre: ProjectorPre<Host>,
}

impl Runner {
    fn new(path: &str, pooled: bool) -> Result<Self> {
        let mut config = Config::new();
        if pooled {
            // The fastest host measured for a fresh instance per event:
            // pooling, keep the guest's whole initial memory (128 KiB) resident.
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.linear_memory_keep_resident(128 << 10);
            pool.table_keep_resident(128 << 10);
            pool.total_memories(64);
            pool.total_tables(64);
            pool.total_core_instances(64);
            pool.total_component_instances(64);
            pool.max_memory_size(64 << 20);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        config.consume_fuel(true);
        config.cranelift_nan_canonicalization(true);
        config.wasm_relaxed_simd(false);
        config.relaxed_simd_deterministic(true);
        let engine = Engine::new(&config)?;
        let component = Component::from_file(&engine, path).map_err(|e| anyhow::anyhow!("loading {path}: {e:?}"))?;
        let mut linker = Linker::<Host>::new(&engine);
        Projector::add_to_linker::<_, HasSelf<_>>(&mut linker, |h| h)?;
        let pre = ProjectorPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Runner { engine, pre })
    }

    fn store(&self) -> Result<Store<Host>> {
        let mut store = Store::new(&self.engine, Host::default());
        store.limiter(|h| h as &mut dyn wasmtime::ResourceLimiter);
        store.set_fuel(1_000_000_000)?;
        Ok(store)
    }

    /// Project on a fresh instance; returns the outcome and the fuel used.
    fn project(&self, ev: &rules::Event) -> Result<(Outcome, u64)> {
        self.project_mem(ev).map(|(o, f, _)| (o, f))
    }

    /// Also returns the largest memory size (bytes) the guest reached.
    fn project_mem(&self, ev: &rules::Event) -> Result<(Outcome, u64, usize)> {
        let mut store = self.store()?;
        let inst = self.pre.instantiate(&mut store)?;
        let event = wit::Event {
            seq: ev.seq,
            event_id: ev.event_id.into(),
            event_type: ev.event_type.into(),
            timestamp: ev.timestamp.into(),
            actor_id: ev.actor_id.map(Into::into),
            target: ev.target.into(),
            payload: ev.payload.into(),
        };
        let out = inst.call_project(&mut store, &event)?;
        let fuel = 1_000_000_000 - store.get_fuel()?;
        Ok((
            out.map(|ops| ops.iter().map(show_wit).collect()).map_err(|e| (e.code, e.message)),
            fuel,
            store.data().max_memory,
        ))
    }
}

fn native(ev: &rules::Event) -> Outcome {
    rules::project(ev).map(|ops| ops.iter().map(show_native).collect()).map_err(|e| (e.code.to_owned(), e.message))
}

fn corpus() -> Vec<(&'static str, String)> {
    let mut c: Vec<(&'static str, String)> = [
        ("target.registered", r#"{"default_branch":"main","extra":"x","name":"radix","repo_url":"u","target_id":"radix"}"#),
        ("target.updated", r#"{"default_branch":"trunk","target_id":"radix"}"#),
        ("task.created", r#"{"acceptance_criteria":["a"],"allowed_paths":["src/"],"created_at":"2026-01-20T09:00:00Z","estimated_size":"small","node_id":"x","node_type":"Task","priority":"high","scope":"s","status":"pending","target_id":"radix","task_id":"task-001","title":"T"}"#),
        ("task.updated", r#"{"priority":"low","task_id":"t1"}"#),
        ("task.completed", r#"{"completed_at":"2026-01-24T10:00:00.123456","status":"failed","task_id":"t1","target_id":"radix"}"#),
        ("task.blocked", r#"{"task_id":"t1"}"#),
        ("attempt.created", r#"{"attempt_id":"a1","attempt_number":"2","status":"created","task_id":"task-001"}"#),
        ("attempt.started", r#"{"attempt_id":"a1","started_at":"2026-01-24T12:00:00+05:30","status":"running"}"#),
        ("attempt.succeeded", r#"{"attempt_id":"a1","pr_number":42,"pr_url":"https://github.com/org/repo/pull/42"}"#),
        ("attempt.failed", r#"{"attempt_id":"a1","error_summary":"boom\n\"quoted\"","failure_type":"worker_error"}"#),
        ("attempt.invalidated", r#"{"attempt_id":"a1","reason":"flaky"}"#),
        ("job.submitted", r#"{"attempt_id":"a1","job_id":"job-1"}"#),
        ("job.failed", r#"{"attempt_id":"a1","job_id":"job-1","exit_code":2.0}"#),
        ("artifact.created", r#"{"artifact_id":"artifact-1a2b3c4d","artifact_type":"log","attempt_id":"a1","sha256":"ab","size_bytes":1024,"storage_path":"file:///x"}"#),
        ("pr.created", r#"{"attempt_id":"a1","pr_number":null,"pr_url":"https://github.com/org/repo/pull/placeholder"}"#),
        ("pr.created", r#"{"pr_url":""}"#),
        ("pr.merged", r#"{"attempt_id":"a1","pr_number":"42"}"#),
        ("pr.closed", r#"{"pr_number":42}"#),
        ("tests.started", r#"{"attempt_id":"a1","scope":"unit","test_run_id":"tr1"}"#),
        ("tests.passed", r#"{"test_count":"12","test_run_id":"tr1"}"#),
        ("tests.failed", r#"{"failure_count":1,"test_run_id":"tr1"}"#),
        ("tests.skipped", r#"{"test_run_id":"tr1"}"#),
        ("model.call_started", r#"{"attempt_id":"a1","call_id":"c1","cost_usd":"0.25","model":"m"}"#),
        ("model.call_completed", r#"{"call_id":"c1","tokens_output":7}"#),
        ("custom.thing", r#"{"k":"é","n":1.0}"#),
        // Errors.
        ("attempt.created", r#"{"task_id":"t"}"#),
        ("attempt.created", r#"{"attempt_id":7}"#),
        ("attempt.started", r#"{"attempt_id":"a1","started_at":"yesterday"}"#),
        ("task.created", r#"{"allowed_paths":"src/","task_id":"t1"}"#),
        ("pr.created", r#"{"pr_number":"abc"}"#),
        ("tests.passed", r#"{"passed":"yes","test_run_id":"tr1"}"#),
        ("target.registered", r#"[1,2]"#),
    ]
    .into_iter()
    .map(|(t, p)| (t, p.to_owned()))
    .collect();
    c.push(("attempt.created", typical_payload()));
    c.push(("artifact.created", large_payload()));
    c
}

/// About 600 bytes, the size of a typical `attempt.created` payload (the
/// benchmark event the host's per-event cost was first measured with).
fn typical_payload() -> String {
    let p = r#"{"attempt_id":"attempt-7f3c2a91-4b5e-4d2a-9c1f-2e8b7a6d5c4b","attempt_number":1,"branch_name":"leviathan/task-backlog-0042-attempt-1","commit_sha":"4b825dc642cb6eb9a060e54bf8d69288fbee4904","created_at":"2026-01-24T10:00:00.123456Z","executor":"k8s","image":"registry.example.com/leviathan/worker:2026.01.24","node_id":"attempt-7f3c2a91-4b5e-4d2a-9c1f-2e8b7a6d5c4b","node_type":"Attempt","notes":"first attempt after backlog load; scheduler picked the smallest estimated task","status":"created","target_id":"radix","task_id":"task-backlog-0042","worker":{"cpu":"500m","memory":"1Gi","namespace":"leviathan-workers"}}"#;
    p.to_owned()
}

/// About 300 KB: forces the allocator to grow memory.
fn large_payload() -> String {
    let mut items = String::new();
    for i in 0..3000 {
        if i > 0 {
            items.push(',');
        }
        items.push_str(&format!(r#""src/module_{i:05}/file_with_a_fairly_long_name_{i}.rs""#));
    }
    format!(r#"{{"artifact_id":"artifact-big","attempt_id":"a1","files":[{items}],"note":"{}"}}"#, "x".repeat(100_000))
}

fn main() -> Result<()> {
    let path = std::env::args().nth(1).context("usage: runcheck <core.wasm>")?;
    let runner = Runner::new(&path, false)?;

    // describe()
    let mut store = runner.store()?;
    let d = runner.pre.instantiate(&mut store)?.call_describe(&mut store)?;
    let want = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if d.name != rules::NAME
        || d.version != rules::VERSION
        || d.handles != want(rules::HANDLES)
        || d.node_types != want(rules::NODE_TYPES)
        || d.edge_types != want(rules::EDGE_TYPES)
    {
        bail!("describe() differs from the native constants: {d:?}");
    }
    println!("describe: {} {} handles {:?}", d.name, d.version, d.handles);

    let mut failures = 0;
    let events = corpus();
    for (i, (event_type, payload)) in events.iter().enumerate() {
        let ev = rules::Event {
            seq: i as u64 + 1,
            event_id: "evt-0123456789abcdef",
            event_type,
            timestamp: "2026-01-24T10:00:00Z",
            actor_id: if i % 2 == 0 { Some("worker-a1") } else { None },
            target: "radix",
            payload,
        };
        let (got, fuel, mem) = runner.project_mem(&ev)?;
        let (again, fuel2) = runner.project(&ev)?;
        let want = native(&ev);
        let ok = got == want && again == got && fuel == fuel2;
        if !ok {
            failures += 1;
            println!("MISMATCH {event_type} {payload:.200}\n  component: {got:.500?}\n  native:    {want:.500?}\n  fuel {fuel} / {fuel2}");
        } else {
            let summary = match &got {
                Ok(ops) => format!("{} ops", ops.len()),
                Err((code, _)) => format!("error {code}"),
            };
            println!("ok {event_type:22} payload {:>6} B  fuel {fuel:>9}  memory {:>4} KiB  {summary}", payload.len(), mem >> 10);
        }
    }

    // Timing: fresh Store + instance per event, as the host does.
    let payload = typical_payload();
    let ev = rules::Event {
        seq: 1,
        event_id: "evt-1",
        event_type: "attempt.created",
        timestamp: "2026-01-24T10:00:00Z",
        actor_id: Some("worker-a1"),
        target: "radix",
        payload: &payload,
    };
    let (_, fuel, mem) = runner.project_mem(&ev)?;
    println!("typical event: {} B payload, fuel {fuel}, guest memory {} KiB", payload.len(), mem >> 10);
    for (name, pooled) in [("on-demand", false), ("pooling, keep-resident 128 KiB", true)] {
        let r = Runner::new(&path, pooled)?;
        for _ in 0..500 {
            let _ = std::hint::black_box(r.project(&ev)?);
        }
        let n = 20_000;
        let t = Instant::now();
        for _ in 0..n {
            let _ = std::hint::black_box(r.project(&ev)?);
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("timing ({name}): {per:.2} µs/event, fresh Store + instance + call + drop");
    }
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(rules::project(&ev).unwrap());
    }
    println!("native rules (reference): {:.2} µs/event", t.elapsed().as_secs_f64() * 1e6 / n as f64);

    if failures > 0 {
        bail!("{failures} of {} events differ", events.len());
    }
    println!("all {} events: component == native rules, fuel deterministic", events.len());
    Ok(())
}
