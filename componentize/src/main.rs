//! `componentize IN.wasm OUT.wasm`: turns the core module that
//! `cargo build --target wasm32-unknown-unknown` produces for a wit-bindgen
//! guest into a WebAssembly component that `spoa-host` loads.
//!
//! wit-bindgen embeds the world's type information in a custom section of the
//! core module; wit-component reads it and wraps the module. No WASI adapter is
//! involved: guests built this way import exactly what the WIT world names.
//!
//! `componentize --wasi-adapter OUT.wasm` writes the WASI preview 1 reactor
//! adapter of the `wasi-preview1-component-adapter-provider` crate, for C
//! guests whose wasi-libc calls import preview 1 (`make c-tools`).

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, output] = args.as_slice()
        && flag == "--wasi-adapter"
    {
        let adapter =
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;
        std::fs::write(output, adapter).with_context(|| format!("writing {output}"))?;
        eprintln!("componentize: the WASI preview 1 reactor adapter -> {output}");
        return Ok(());
    }
    let [input, output] = args.as_slice() else {
        bail!("usage: componentize IN.wasm OUT.wasm, or componentize --wasi-adapter OUT.wasm");
    };
    let module = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .with_context(|| format!("{input}: not a wit-bindgen core module"))?
        .validate(true)
        .encode()
        .with_context(|| format!("{input}: encoding the component"))?;
    std::fs::write(output, &component).with_context(|| format!("writing {output}"))?;
    eprintln!(
        "componentize: {input} -> {output} ({} bytes)",
        component.len()
    );
    Ok(())
}
