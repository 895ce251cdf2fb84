//! Loading a set: the compiled cache, and what is refused at load time.

use crate::common::wasm::*;
use crate::projection::{expected_good_ops, good_projector, source};
use leviathan::projection::{LoadError, ProjectorSet, ProjectorSource};

#[test]
fn compiled_cache_is_written_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bytes = good_projector();
    let cwasm = |p: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
                    .collect()
            })
            .unwrap_or_default()
    };

    let first = ProjectorSet::load(vec![source(bytes.clone())], Some(&cache)).unwrap();
    assert_eq!(first.cache_hits(), 0);
    let files = cwasm(&cache);
    assert_eq!(files.len(), 1, "one compiled file written");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&leviathan::digest::Sha256::of(&bytes).to_hex()));
    let written = std::fs::read(&files[0]).unwrap();

    let second = ProjectorSet::load(vec![source(bytes.clone())], Some(&cache)).unwrap();
    assert_eq!(second.cache_hits(), 1, "second load deserializes");
    assert_eq!(
        std::fs::read(&files[0]).unwrap(),
        written,
        "the file is read, not rewritten (a hit only marks it used)"
    );
    assert_eq!(
        second
            .project(&event(1, "e1", "attempt.created"), &MemGraph::default())
            .unwrap(),
        expected_good_ops()
    );
    assert_eq!(second.projectors(), first.projectors());

    // A damaged cache file costs a recompile, not a failure.
    std::fs::write(&files[0], b"garbage").unwrap();
    let third = ProjectorSet::load(vec![source(bytes.clone())], Some(&cache)).unwrap();
    assert_eq!(third.cache_hits(), 0);
    assert_eq!(
        third
            .project(&event(1, "e1", "attempt.created"), &MemGraph::default())
            .unwrap(),
        expected_good_ops()
    );
    let fourth = ProjectorSet::load(vec![source(bytes)], Some(&cache)).unwrap();
    assert_eq!(fourth.cache_hits(), 1, "the rewritten file is used again");
}

fn load_err(sources: Vec<ProjectorSource>) -> LoadError {
    ProjectorSet::load(sources, None).expect_err("load must fail")
}

#[test]
fn bad_descriptions_and_components_are_refused_at_load() {
    let bad = |d: Describe<'_>| load_err(vec![source(static_projector(&d, |x| x.ok_ops(&[])))]);
    for (d, needle) in [
        (
            Describe {
                name: "",
                ..Describe::default()
            },
            "name is empty",
        ),
        (
            Describe {
                version: "",
                ..Describe::default()
            },
            "version is empty",
        ),
        (
            Describe {
                handles: &[],
                ..Describe::default()
            },
            "handles no event types",
        ),
        (
            Describe {
                handles: &["a*b"],
                ..Describe::default()
            },
            "neither an exact name",
        ),
        (
            Describe {
                handles: &["*"],
                ..Describe::default()
            },
            "neither an exact name",
        ),
        (
            Describe {
                handles: &[".*"],
                ..Describe::default()
            },
            "neither an exact name",
        ),
        (
            Describe {
                handles: &["Alert.Fired"],
                ..Describe::default()
            },
            "can never match",
        ),
        (
            Describe {
                handles: &["deploys"],
                ..Describe::default()
            },
            "can never match",
        ),
        (
            Describe {
                handles: &["Deploy.*"],
                ..Describe::default()
            },
            "can never match",
        ),
        (
            Describe {
                node_types: &[""],
                ..Describe::default()
            },
            "node type is empty",
        ),
    ] {
        let e = bad(d);
        assert!(e.to_string().contains(needle), "{e}");
        assert!(e.to_string().contains("checking describe output"), "{e}");
    }

    let e = load_err(vec![source(good_projector()), source(good_projector())]);
    assert!(
        matches!(
            e,
            LoadError::Duplicate {
                first: 0,
                second: 1,
                ..
            }
        ),
        "{e}"
    );

    let core_module = wat::parse_str("(module)").unwrap();
    let e = load_err(vec![source(core_module)]);
    assert!(e.to_string().contains("compiling"), "{e}");

    let foreign =
        wat::parse_str(r#"(component (import "example:other/thing" (instance)))"#).unwrap();
    let e = load_err(vec![source(foreign)]);
    assert!(e.to_string().contains("checking imports"), "{e}");
    assert!(e.to_string().contains("example:other/thing"), "{e}");
}

#[test]
fn describe_trap_is_a_load_error() {
    let mut d = Data::default();
    let r = d.ok_ops(&[]);
    let wat = projector_wat(&Describe::default(), d, "", "", &format!("(i32.const {r})")).replace(
        "(func (export \"describe\") (result i32)",
        "(func (export \"describe\") (result i32) unreachable",
    );
    let e = load_err(vec![source(component(&wat))]);
    assert!(e.to_string().contains("calling describe"), "{e}");
    assert!(e.to_string().contains("unreachable"), "{e}");
}
