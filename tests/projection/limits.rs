//! The sandbox's defaults: what a projector gets when its `LEVIATHAN_PROJECTORS`
//! entry sets no limits (docs/PROJECTORS.md, "Limits": 50,000,000 fuel, 64 MiB
//! of linear memory, 20,000 table elements, 32 instances). Each limit is
//! probed from a guest at the boundary: the most it may use works, one step
//! more fails.

use crate::common::wasm::*;
use leviathan::projection::{Failure, Limits, ProjectorSet};

const DEFAULT_FUEL: u64 = 50_000_000;
const DEFAULT_MEMORY_BYTES: usize = 64 << 20;
const DEFAULT_TABLE_ELEMENTS: u32 = 20_000;
const PAGE: u32 = 64 << 10;
/// Pages every test guest starts with (`projector_wat`).
const INITIAL_PAGES: u32 = 2;

fn describe(name: &str) -> Describe<'_> {
    Describe {
        name,
        version: "1.0.0",
        handles: &["probe.*"],
        node_types: &["Probe"],
        edge_types: &[],
    }
}

/// Loads `bytes` the way the server does, from a `LEVIATHAN_PROJECTORS` entry
/// naming only its file: every limit is the default.
fn load_as_configured(bytes: Vec<u8>) -> ProjectorSet {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.wasm");
    std::fs::write(&path, bytes).unwrap();
    let specs = leviathan::projector_specs::parse(&path.display().to_string()).unwrap();
    assert_eq!(specs[0].limits, Limits::default());
    leviathan::projector_specs::load(
        &specs,
        None,
        leviathan::projector_specs::DEFAULT_MAX_COMPONENT_BYTES,
    )
    .unwrap()
}

fn run(
    set: &ProjectorSet,
) -> Result<Vec<leviathan::graph::Op>, leviathan::projection::ProjectionError> {
    set.project(&event(1, "e1", "probe.it"), &MemGraph::default())
}

#[test]
fn the_defaults_are_the_documented_ones() {
    let d = Limits::default();
    assert_eq!(
        (d.fuel, d.memory_bytes, d.table_elements, d.instances),
        (
            DEFAULT_FUEL,
            DEFAULT_MEMORY_BYTES,
            DEFAULT_TABLE_ELEMENTS as usize,
            32
        )
    );
}

#[test]
fn an_endless_loop_stops_at_the_default_fuel() {
    let set = load_as_configured(body_projector(&describe("looper"), "(loop $l (br $l))"));
    let err = run(&set).unwrap_err();
    assert_eq!(
        err.failure,
        Failure::OutOfFuel {
            limit: DEFAULT_FUEL
        }
    );
    // A bounded loop well inside the budget finishes.
    let set = load_as_configured(body_projector(
        &describe("counter"),
        "(local $i i32)
         (loop $l
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $l (i32.lt_u (local.get $i) (i32.const 1000000))))",
    ));
    assert_eq!(run(&set).unwrap(), vec![]);
}

/// A guest that grows its memory by `pages` at once (a refused grow traps).
fn grower(pages: u32) -> Vec<u8> {
    body_projector(
        &describe("grower"),
        &format!(
            "(if (i32.eq (memory.grow (i32.const {pages})) (i32.const -1)) (then unreachable))"
        ),
    )
}

#[test]
fn memory_grows_to_the_default_limit_and_no_further() {
    let max_pages = DEFAULT_MEMORY_BYTES as u32 / PAGE;
    let set = load_as_configured(grower(max_pages - INITIAL_PAGES));
    assert_eq!(run(&set).unwrap(), vec![], "64 MiB in all is allowed");
    let set = load_as_configured(grower(max_pages - INITIAL_PAGES + 1));
    let err = run(&set).unwrap_err();
    assert_eq!(
        err.failure,
        Failure::MemoryLimit {
            limit: DEFAULT_MEMORY_BYTES
        }
    );
}

/// A guest with a one-element table that grows it by `elements` at once.
fn table_grower(elements: u32) -> Vec<u8> {
    let mut d = Data::default();
    let result = d.ok_ops(&[]);
    component(&projector_wat(
        &describe("tables"),
        d,
        "",
        "(table $t 1 funcref)",
        &format!(
            "(if (i32.eq (table.grow $t (ref.null func) (i32.const {elements})) (i32.const -1))
               (then unreachable))
             (i32.const {result})"
        ),
    ))
}

#[test]
fn a_table_grows_to_the_default_limit_and_no_further() {
    let set = load_as_configured(table_grower(DEFAULT_TABLE_ELEMENTS - 1));
    assert_eq!(
        run(&set).unwrap(),
        vec![],
        "20,000 elements in all are allowed"
    );
    let set = load_as_configured(table_grower(DEFAULT_TABLE_ELEMENTS));
    let err = run(&set).unwrap_err();
    assert_eq!(err.code(), "trap", "{err}");
    assert!(err.is_deterministic(), "{err}");
}
