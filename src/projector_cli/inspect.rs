//! `leviathan projector inspect FILE`: loads a component as the server does
//! (compiled, imports checked, linked, `describe` called and checked) and
//! shows what it is. A file that is not a loadable projector is an error
//! (exit 1) whose message names the stage that refused it.

use super::LoadArgs;
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, serde::Serialize)]
struct Inspection {
    file: String,
    size: usize,
    sha256: String,
    world: World,
    name: String,
    version: String,
    handles: Vec<String>,
    node_types: Vec<String>,
    edge_types: Vec<String>,
    imports: Vec<String>,
    /// Whether it imports any `wasi:` interface (it then runs with the host's
    /// deterministic WASI subset, at some cost per event).
    wasi: bool,
    /// Whether it imports `graph` (then it runs in log order; else the server
    /// may run it ahead of order, in parallel).
    reads_graph: bool,
}

#[derive(Debug, serde::Serialize)]
struct World {
    ok: bool,
    world: &'static str,
    /// The contract's version its imports name (`1.0.0`), if it imports any
    /// of the contract's interfaces.
    contract_version: Option<String>,
}

pub(crate) fn run(file: &Path, json: bool, load: &LoadArgs) -> anyhow::Result<ExitCode> {
    let loaded = super::load(file, false, load)?;
    let info = &loaded.set.projectors()[loaded.index];
    let imports = loaded.set.imports(loaded.index).to_vec();
    let contract_version = imports
        .iter()
        .filter_map(|i| i.strip_prefix("leviathan:projector/"))
        .find_map(|i| i.split_once('@').map(|(_, v)| v.to_owned()));
    let report = Inspection {
        file: file.display().to_string(),
        size: loaded.size,
        sha256: info.digest.to_hex(),
        world: World {
            ok: true,
            world: "leviathan:projector/projector",
            contract_version,
        },
        name: info.name.clone(),
        version: info.version.clone(),
        handles: info.handles.clone(),
        node_types: info.node_types.clone(),
        edge_types: info.edge_types.clone(),
        wasi: imports.iter().any(|i| i.starts_with("wasi:")),
        reads_graph: imports
            .iter()
            .any(|i| i.starts_with("leviathan:projector/graph@")),
        imports,
    };
    if json {
        super::print(&serde_json::to_string_pretty(&report)?)?;
    } else {
        super::print(&render(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn render(r: &Inspection) -> String {
    let list = |xs: &[String]| {
        if xs.is_empty() {
            "(none)".to_owned()
        } else {
            xs.join(", ")
        }
    };
    let wasi: Vec<String> = r
        .imports
        .iter()
        .filter(|i| i.starts_with("wasi:"))
        .cloned()
        .collect();
    format!(
        "file         {}\n\
         size         {} bytes\n\
         sha256       {}\n\
         world        {}: ok (loads, links and describes itself as the server requires){}\n\
         name         {}\n\
         version      {}\n\
         handles      {}\n\
         node types   {}\n\
         edge types   {}\n\
         imports      {}\n\
         wasi         {}\n\
         reads graph  {}\n",
        r.file,
        r.size,
        r.sha256,
        r.world.world,
        r.world
            .contract_version
            .as_deref()
            .map(|v| format!(", contract {v}"))
            .unwrap_or_default(),
        r.name,
        r.version,
        list(&r.handles),
        list(&r.node_types),
        list(&r.edge_types),
        list(&r.imports),
        if wasi.is_empty() {
            "none".to_owned()
        } else {
            format!("yes (deterministic subset): {}", wasi.join(", "))
        },
        if r.reads_graph { "yes" } else { "no" },
    )
}
