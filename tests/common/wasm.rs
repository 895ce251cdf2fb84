//! Test-only builders of real projector components: core modules written in
//! WAT (canonical ABI by hand), given the `projector` world's type metadata
//! with `wit-component` and encoded as components, so tests need no wasm
//! toolchain. Also a small in-memory `GraphView` test double. Never used by the
//! crate itself.

use leviathan::digest::Sha256;
use leviathan::graph::{Direction, Edge, GraphView, Node, NodeId, Properties};

/// A node id for a test op or node.
pub fn nid(s: &str) -> NodeId {
    NodeId::new("node id", s).expect("test ids are not empty")
}
use leviathan::projection::EventInput;
use leviathan::seq::Seq;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use wit_parser::Resolve;

/// Where static data starts in a test guest's memory.
const DATA_BASE: u32 = 1024;
/// Where the bump heap starts (page 1; the module starts with 2 pages).
const HEAP_BASE: u32 = 65536;

/// What a test guest says in `describe`.
pub struct Describe<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub handles: &'a [&'a str],
    pub node_types: &'a [&'a str],
    pub edge_types: &'a [&'a str],
}

impl Default for Describe<'_> {
    fn default() -> Self {
        Describe {
            name: "core",
            version: "1.0.0",
            handles: &["attempt.created", "topo.*"],
            node_types: &["attempt", "run"],
            edge_types: &["part_of"],
        }
    }
}

/// One op a test guest returns from static data.
pub enum StaticOp<'a> {
    PutNode {
        id: &'a str,
        node_type: &'a str,
        properties: &'a str,
    },
    MergeNode {
        id: &'a str,
        node_type: &'a str,
        properties: &'a str,
        create_if_absent: bool,
    },
    DeleteNode(&'a str),
    PutEdge {
        edge_type: &'a str,
        from: &'a str,
        to: &'a str,
        properties: &'a str,
    },
    DeleteEdge {
        edge_type: &'a str,
        from: &'a str,
        to: &'a str,
    },
}

/// The static data segment of a test guest, laid out at `DATA_BASE`.
#[derive(Default)]
pub struct Data {
    bytes: Vec<u8>,
}

impl Data {
    fn align(&mut self, a: usize) {
        while !self.bytes.len().is_multiple_of(a) {
            self.bytes.push(0);
        }
    }

    /// Appends `b` (aligned to `align`) and returns its address.
    pub fn put(&mut self, b: &[u8], align: usize) -> u32 {
        self.align(align);
        let at = DATA_BASE + self.bytes.len() as u32;
        self.bytes.extend_from_slice(b);
        at
    }

    /// Reserves `n` zero bytes, returns their address.
    pub fn zeros(&mut self, n: usize, align: usize) -> u32 {
        self.put(&vec![0; n], align)
    }

    /// A string: (address, length).
    pub fn str(&mut self, s: &str) -> (u32, u32) {
        (self.put(s.as_bytes(), 1), s.len() as u32)
    }

    fn words(&mut self, words: &[u32]) -> u32 {
        let b: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.put(&b, 4)
    }

    fn string_list(&mut self, items: &[&str]) -> (u32, u32) {
        let mut words = Vec::new();
        for s in items {
            let (p, l) = self.str(s);
            words.extend([p, l]);
        }
        (self.words(&words), items.len() as u32)
    }

    /// The `description` record; returns its address.
    pub fn description(&mut self, d: &Describe<'_>) -> u32 {
        let name = self.str(d.name);
        let version = self.str(d.version);
        let handles = self.string_list(d.handles);
        let nodes = self.string_list(d.node_types);
        let edges = self.string_list(d.edge_types);
        self.words(&[
            name.0, name.1, version.0, version.1, handles.0, handles.1, nodes.0, nodes.1, edges.0,
            edges.1,
        ])
    }

    /// `result::ok(list<op>)` as static data; returns the result's address.
    pub fn ok_ops(&mut self, ops: &[StaticOp<'_>]) -> u32 {
        // op: discriminant u8 at 0, payload at 4; 36 bytes.
        let mut words: Vec<u32> = Vec::new();
        for op in ops {
            let mut w: Vec<u32> = Vec::new();
            match op {
                StaticOp::PutNode {
                    id,
                    node_type,
                    properties,
                } => {
                    w.push(0);
                    for s in [id, node_type, properties] {
                        let (p, l) = self.str(s);
                        w.extend([p, l]);
                    }
                }
                StaticOp::MergeNode {
                    id,
                    node_type,
                    properties,
                    create_if_absent,
                } => {
                    w.push(1);
                    for s in [id, node_type, properties] {
                        let (p, l) = self.str(s);
                        w.extend([p, l]);
                    }
                    w.push(u32::from(*create_if_absent));
                }
                StaticOp::DeleteNode(id) => {
                    w.push(2);
                    let (p, l) = self.str(id);
                    w.extend([p, l]);
                }
                StaticOp::PutEdge {
                    edge_type,
                    from,
                    to,
                    properties,
                } => {
                    w.push(3);
                    for s in [edge_type, from, to, properties] {
                        let (p, l) = self.str(s);
                        w.extend([p, l]);
                    }
                }
                StaticOp::DeleteEdge {
                    edge_type,
                    from,
                    to,
                } => {
                    w.push(4);
                    for s in [edge_type, from, to] {
                        let (p, l) = self.str(s);
                        w.extend([p, l]);
                    }
                }
            }
            w.resize(9, 0);
            words.extend(w);
        }
        let list = self.words(&words);
        self.words(&[0, list, ops.len() as u32])
    }

    /// `result::err(projection-error)` as static data; returns its address.
    pub fn err(&mut self, code: &str, message: &str) -> u32 {
        let c = self.str(code);
        let m = self.str(message);
        self.words(&[1, c.0, c.1, m.0, m.1])
    }

    fn wat(&self) -> String {
        let mut s = format!("(data (i32.const {DATA_BASE}) \"");
        for b in &self.bytes {
            write!(s, "\\{b:02x}").unwrap();
        }
        s.push_str("\")");
        s
    }
}

/// Parameters of the core `project` function, named (the `event` record
/// flattened by the canonical ABI).
const PROJECT_PARAMS: &str = "(param $seq i64) (param $id_p i32) (param $id_l i32) \
    (param $et_p i32) (param $et_l i32) (param $ts_p i32) (param $ts_l i32) \
    (param $actor_d i32) (param $actor_p i32) (param $actor_l i32) \
    (param $tg_p i32) (param $tg_l i32) (param $pl_p i32) (param $pl_l i32)";

/// A projector guest as core-module WAT. `body` is the body of `project`
/// (must leave the address of a result record on the stack); `imports` and
/// `funcs` are spliced in; `data` holds what `body` refers to.
pub fn projector_wat(
    desc: &Describe<'_>,
    mut data: Data,
    imports: &str,
    funcs: &str,
    body: &str,
) -> String {
    let description = data.description(desc);
    let data_wat = data.wat();
    format!(
        r#"(module
  {imports}
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const {HEAP_BASE}))
  {data_wat}
  (func $alloc (export "cabi_realloc") (param $old i32) (param $old_len i32) (param $align i32) (param $len i32) (result i32)
    (local $p i32)
    (local.set $p
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.xor (i32.sub (local.get $align) (i32.const 1)) (i32.const -1))))
    (global.set $heap (i32.add (local.get $p) (local.get $len)))
    (block $done
      (loop $grow
        (br_if $done (i32.le_u (global.get $heap) (i32.shl (memory.size) (i32.const 16))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $grow)))
    (local.get $p))
  ;; Writes the decimal digits of $v ending just before $end; returns the start.
  (func $utoa (param $v i64) (param $end i32) (result i32)
    (local $p i32)
    (local.set $p (local.get $end))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10))) (i32.const 48)))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $v) (i64.const 0))))
    (local.get $p))
  {funcs}
  (func (export "describe") (result i32) (i32.const {description}))
  (func (export "project") {PROJECT_PARAMS} (result i32)
    {body})
)"#
    )
}

/// A guest whose `project` returns the static result at `result`.
pub fn static_projector(desc: &Describe<'_>, build: impl FnOnce(&mut Data) -> u32) -> Vec<u8> {
    let mut data = Data::default();
    let result = build(&mut data);
    component(&projector_wat(
        desc,
        data,
        "",
        "",
        &format!("(i32.const {result})"),
    ))
}

/// A guest whose `project` runs `body` (WAT instructions) then returns an
/// empty op list.
pub fn body_projector(desc: &Describe<'_>, body: &str) -> Vec<u8> {
    let mut data = Data::default();
    let result = data.ok_ops(&[]);
    component(&projector_wat(
        desc,
        data,
        "",
        "",
        &format!("{body}\n(i32.const {result})"),
    ))
}

fn wit_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("wit")
}

/// Encodes a core module (WAT) as a component of the `projector` world.
pub fn component(core_wat: &str) -> Vec<u8> {
    component_for_world(core_wat, &[], None)
}

/// Encodes a core module (WAT) as a component of a world. `extra_packages` are
/// WIT package texts added after `wit/`; `world` is `(package text, world
/// name)` of the world to target, else the `projector` world.
pub fn component_for_world(
    core_wat: &str,
    extra_packages: &[&str],
    world: Option<(&str, &str)>,
) -> Vec<u8> {
    let mut resolve = Resolve::default();
    let (main, _) = resolve.push_dir(wit_dir()).expect("wit/ parses");
    for (i, text) in extra_packages.iter().enumerate() {
        resolve
            .push_str(format!("extra{i}.wit"), text)
            .expect("extra WIT parses");
    }
    let world = match world {
        Some((text, name)) => {
            let pkg = resolve
                .push_str("world.wit", text)
                .expect("world WIT parses");
            resolve
                .select_world(&[pkg], Some(name))
                .expect("world exists")
        }
        None => resolve
            .select_world(&[main], Some("projector"))
            .expect("projector world"),
    };
    let mut module = wat::parse_str(core_wat).unwrap_or_else(|e| panic!("WAT: {e}\n{core_wat}"));
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embed metadata");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("module accepted")
        .validate(true)
        .encode()
        .expect("component encodes")
}

/// An event for tests.
pub fn event<'a>(seq: u64, event_id: &'a str, event_type: &'a str) -> EventInput<'a> {
    EventInput {
        seq: Seq(seq),
        event_id,
        event_type,
        timestamp: "2024-05-06T07:08:09Z",
        actor_id: Some("alice"),
        target: "run-1",
        payload_json: r#"{"attempt_id":"a1"}"#,
        event_hash: Sha256::of(event_id.as_bytes()),
    }
}

/// In-memory graph test double (stands in for the graph store, not wasmtime).
#[derive(Default)]
pub struct MemGraph {
    pub nodes: BTreeMap<String, Node>,
    pub edges: Vec<Edge>,
}

impl MemGraph {
    pub fn with_node(mut self, id: &str, node_type: &str, props: serde_json::Value) -> Self {
        let properties: Properties = props.as_object().expect("object").clone();
        self.nodes.insert(
            id.to_owned(),
            Node {
                id: nid(id),
                node_type: node_type.to_owned(),
                properties,
                created_seq: Seq(1),
                updated_seq: Seq(2),
                created_at: "2024-01-01T00:00:00Z".into(),
                updated_at: "2024-01-01T00:00:00Z".into(),
            },
        );
        self
    }

    pub fn with_edge(
        mut self,
        from: &str,
        edge_type: &str,
        to: &str,
        props: serde_json::Value,
    ) -> Self {
        self.edges.push(Edge {
            edge_type: edge_type.to_owned(),
            from: nid(from),
            to: nid(to),
            properties: props.as_object().expect("object").clone(),
            created_seq: Seq(3),
        });
        self
    }
}

impl GraphView for MemGraph {
    fn get_node(&self, id: &str) -> Option<Node> {
        self.nodes.get(id).cloned()
    }

    fn edges(&self, id: &str, dir: Direction, edge_type: Option<&str>, limit: usize) -> Vec<Edge> {
        self.edges
            .iter()
            .filter(|e| match dir {
                Direction::Outgoing => e.from == id,
                Direction::Incoming => e.to == id,
                Direction::Both => e.from == id || e.to == id,
            })
            .filter(|e| edge_type.is_none_or(|t| e.edge_type == t))
            .take(limit)
            .cloned()
            .collect()
    }
}
