//! `componentize new <core.wasm> <out.wasm>`: wrap a core module built with
//! wit-bindgen (its `component-type` custom section names the world) into a
//! component with wit-component, validating the result.
//!
//! `componentize inspect <component.wasm>`: print the component's imports and
//! exports (WIT names); exit 1 if it is not a component or imports any `wasi:`
//! interface.

use anyhow::{bail, Context, Result};
use std::process::ExitCode;
use wit_component::{ComponentEncoder, DecodedWasm};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("componentize: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["new", input, output] => {
            let module = std::fs::read(input).with_context(|| format!("reading {input}"))?;
            let component = ComponentEncoder::default()
                .module(&module)
                .context("reading the module's component-type metadata")?
                .validate(true)
                .encode()
                .context("encoding the component")?;
            validate(&component)?;
            std::fs::write(output, &component).with_context(|| format!("writing {output}"))?;
            Ok(ExitCode::SUCCESS)
        }
        ["inspect", input] => {
            let bytes = std::fs::read(input).with_context(|| format!("reading {input}"))?;
            inspect(&bytes)
        }
        _ => {
            eprintln!("usage: componentize new <core.wasm> <component.wasm>\n       componentize inspect <component.wasm>");
            Ok(ExitCode::from(2))
        }
    }
}

fn validate(bytes: &[u8]) -> Result<()> {
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(bytes)
        .context("validating the component")?;
    Ok(())
}

fn inspect(bytes: &[u8]) -> Result<ExitCode> {
    validate(bytes)?;
    let (resolve, world) = match wit_component::decode(bytes).context("decoding the component")? {
        DecodedWasm::Component(resolve, world) => (resolve, world),
        DecodedWasm::WitPackage(..) => bail!("not a component: a WIT package"),
    };
    let w = &resolve.worlds[world];
    let mut wasi = Vec::new();
    for (key, _) in &w.imports {
        let name = resolve.name_world_key(key);
        println!("import {name}");
        if name.starts_with("wasi:") {
            wasi.push(name);
        }
    }
    for (key, _) in &w.exports {
        println!("export {}", resolve.name_world_key(key));
    }
    if !wasi.is_empty() {
        eprintln!("componentize: the component imports WASI: {}", wasi.join(", "));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
